"""Embeddings over HTTP: OpenAI's /v1/embeddings and Ollama's /api/embed, answered by the model's worker.

Ollama's legacy /api/embeddings ({prompt} -> {embedding}) is answered too. Any installed model answers
(as Ollama's do): an embedding model pools as its metadata says, a chat model
by the mean over its tokens; vectors are L2-normalised. Inputs come in one batch; an empty input, too
many inputs, or one longer than the model's window is refused with the index to fix (Ollama's
`truncate`, on by default there, cuts long inputs instead).
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request

from localchat.errors import ContextOverflowError, EngineRequestError
from localchat.server.schema import ApiError, bad, parse_json

if TYPE_CHECKING:
    from localchat.server.app import _Api

MAX_INPUTS = 2048  # OpenAI's own limit per request


@dataclass
class EmbeddingRequest:
    model: str | None
    inputs: list[str]
    truncate: bool = False
    base64: bool = False
    dimensions: int | None = None


def parse_inputs(raw: Any, name: str = "input") -> list[str]:
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise bad(f"'{name}' must be a non-empty string or list of strings", name)
    if len(texts) > MAX_INPUTS:
        raise bad(f"'{name}' has {len(texts)} items; at most {MAX_INPUTS} per request", name)
    for i, text in enumerate(texts):
        where = name if isinstance(raw, str) else f"{name}[{i}]"
        if not isinstance(text, str):
            raise bad(f"{where} must be text (token arrays are not supported)", where)
        if not text.strip():
            raise bad(f"{where} is empty: there is nothing to embed", where)
    return texts


def parse_openai(data: dict) -> EmbeddingRequest:
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise bad("'model' must be a model id (GET /v1/models lists them)", "model")
    fmt = data.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise bad("'encoding_format' must be \"float\" or \"base64\"", "encoding_format")
    return EmbeddingRequest(model, parse_inputs(data.get("input")), False, fmt == "base64",
                            _dimensions(data.get("dimensions")))


def parse_ollama(data: dict) -> EmbeddingRequest:
    truncate = data.get("truncate", True)
    if not isinstance(truncate, bool):
        raise bad("'truncate' must be true or false")
    return EmbeddingRequest(data.get("model"), parse_inputs(data.get("input")), truncate, False,
                            _dimensions(data.get("dimensions")))


def _dimensions(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad("'dimensions' must be a positive whole number", "dimensions")
    return value


def shorten(vector: list[float], dimensions: int | None) -> list[float]:
    """Matryoshka-style: the first `dimensions` values, normalised again (Qwen3-Embedding is trained for it)."""
    if dimensions is None or dimensions >= len(vector):
        return vector
    head = vector[:dimensions]
    norm = sum(v * v for v in head) ** 0.5 or 1.0
    return [v / norm for v in head]


def encode(vector: list[float], as_base64: bool) -> Any:
    if not as_base64:
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


async def embed(api: "_Api", req: EmbeddingRequest, model_id: str) -> tuple[list[list[float]], int]:
    """The vectors and the prompt tokens they took, computed by the model's engine on its turn."""
    if api.stopping:
        raise ApiError(503, "the server is shutting down", type="server_error", code="server_shutdown")
    async with api.pool.lease(model_id) as slot:
        assert slot.engine is not None
        try:
            result = await asyncio.to_thread(slot.engine.embed, req.inputs, req.truncate)
        except ContextOverflowError as exc:  # an input longer than the window: the message names it
            raise ApiError(400, exc.message, param="input", code="context_length_exceeded") from None
        except EngineRequestError as exc:
            raise bad(exc.message, "input") from None
    return [shorten(v, req.dimensions) for v in result.vectors], result.prompt_tokens


async def openai_embeddings(api: "_Api", request: Request) -> dict:
    from localchat.server.app import read_body

    req = parse_openai(parse_json(await read_body(request, api.settings.max_body_bytes)))
    model_id = api._resolve(req.model)
    vectors, tokens = await embed(api, req, model_id)
    return {"object": "list", "model": model_id,
            "data": [{"object": "embedding", "index": i, "embedding": encode(v, req.base64)}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def ollama_embed(api: "_Api", model_id: str, data: dict) -> dict:
    started = time.perf_counter()
    req = parse_ollama(data)
    vectors, tokens = await embed(api, req, model_id)
    return {"model": data.get("model"), "embeddings": vectors,
            "total_duration": int((time.perf_counter() - started) * 1e9), "load_duration": 0,
            "prompt_eval_count": tokens}


async def ollama_legacy_embedding(api: "_Api", model_id: str, data: dict) -> dict:
    """Ollama's older /api/embeddings: one `prompt`, one `embedding` (normalised here too)."""
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise bad("'prompt' must be a non-empty string: the text to embed", "prompt")
    vectors, _ = await embed(api, EmbeddingRequest(model_id, [prompt], truncate=True), model_id)
    return {"embedding": vectors[0]}
