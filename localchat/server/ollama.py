"""Ollama's API on the same server: /api/version, tags, show, ps, chat, generate, embed (and the older
embeddings).

Tools that speak only Ollama (editor assistants, oterm, home automation) point at Ollama's port:
`localchat serve --ollama-port 11434` listens there too (or `--port 11434` for one port). Replies are
NDJSON when streamed (Ollama streams by default), errors are `{"error": ...}`. Model names may carry
Ollama's `:latest` tag; `/api/tags` lists every installed model as `ID:latest`. Generation goes through
the same pool and jobs as the OpenAI routes; `format` ("json" or a schema) becomes the worker's grammar.

`options`: the sampling ones map to ours (num_predict is max_tokens); num_ctx is accepted up to the
window the model is loaded with (config.yaml's load.n_ctx sets that) and refused above it; options that
choose how a model is loaded (num_gpu, num_thread, num_batch, use_mmap, ...) are ignored, because the
model is loaded once for every client by config.yaml; samplers we do not have (mirostat, tfs_z,
typical_p) are refused unless they are set to their no-op value (mirostat's own settings and
penalize_newline are ignored, as Ollama does); an unknown option is refused.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import replace
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from localchat import __version__
from localchat.engine.api import ToolCallDelta
from localchat.errors import ConfigError, GGUFError
from localchat.server import thinking as think_api
from localchat.server.jobs import Delta, Done, Failed, Job, Thought
from localchat.server.schema import ApiError, _message, bad, parse_json
from localchat.structured import OutputConstraint, SchemaError, schema_constraint, tools_constraint
from localchat.tools import ToolRequest, ToolsError, parse_tools, template_format
from localchat.tooluse import constrain
from localchat.types import Message, SamplingParams, ToolCall, Usage

if TYPE_CHECKING:
    from localchat.server.app import _Api

# The Ollama release whose API this mirrors; clients that check a minimum version compare against it.
OLLAMA_VERSION = "0.12.0"
TAG = ":latest"
# Ollama's option names -> ours (num_predict is max_tokens; the rest are spelled alike).
_OPTIONS = {"temperature": float, "top_p": float, "top_k": int, "min_p": float, "seed": int, "repeat_penalty": float,
            "repeat_last_n": int, "presence_penalty": float, "frequency_penalty": float}
_LOAD_OPTIONS = {"num_keep", "num_batch", "num_gpu", "main_gpu", "use_mmap", "use_mlock", "num_thread", "numa",
                 "low_vram", "vocab_only", "f16_kv", "logits_all", "embedding_only"}
_NO_OP = {"mirostat": 0, "tfs_z": 1.0, "typical_p": 1.0}  # samplers we do not have
# Without effect here as in Ollama today: mirostat's settings while mirostat is off (refused above when on),
# and penalize_newline, which Ollama itself no longer applies (older clients send its default, true).
_IGNORED = {"mirostat_eta", "mirostat_tau", "penalize_newline"}
_HANDLED = {"num_predict", "stop", "num_ctx"}


def mount_ollama(app: FastAPI, api: "_Api") -> None:
    ollama = OllamaApi(api)
    app.add_api_route("/", ollama.root, methods=["GET", "HEAD"])
    app.add_api_route("/api/version", ollama.version, methods=["GET"])
    app.add_api_route("/api/tags", ollama.tags, methods=["GET"])
    app.add_api_route("/api/show", ollama.show, methods=["POST"])
    app.add_api_route("/api/ps", ollama.ps, methods=["GET"])
    app.add_api_route("/api/chat", ollama.chat, methods=["POST"])
    app.add_api_route("/api/generate", ollama.generate, methods=["POST"])
    app.add_api_route("/api/embed", ollama.embed, methods=["POST"])
    app.add_api_route("/api/embeddings", ollama.embeddings, methods=["POST"])
    for path, methods in _MANAGEMENT.items():
        app.add_api_route(path, _not_here, methods=methods)


# Ollama's model management: models come from localchat's catalog and sources, through its CLI.
_MANAGEMENT = {"/api/pull": ["POST"], "/api/push": ["POST"], "/api/create": ["POST"], "/api/copy": ["POST"],
               "/api/delete": ["DELETE"], "/api/blobs/{digest}": ["HEAD", "POST"]}


async def _not_here(request: Request) -> Response:
    raise ApiError(501, f"{request.url.path} is not served by localchat: models are managed with its command line "
                        "(`localchat pull ID`, `localchat import FILE.gguf`, `localchat rm ID`; `localchat list` "
                        "shows the catalog)")


def ollama_error(error: ApiError) -> Response:
    """Ollama's error shape: one message, the status code says the rest."""
    return JSONResponse({"error": error.message}, status_code=error.status)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


class OllamaApi:
    def __init__(self, api: "_Api") -> None:
        self.api = api
        self.expiry: dict[str, asyncio.TimerHandle] = {}

    # --- listing ----------------------------------------------------------------------------------

    async def root(self) -> Response:
        return PlainTextResponse("localchat is running (Ollama API under /api, OpenAI API under /v1)")

    async def version(self) -> dict:
        return {"version": OLLAMA_VERSION, "localchat": __version__}

    async def tags(self) -> dict:
        return {"models": [self._card(m) for m in self.api._available()]}

    async def ps(self) -> dict:
        models = []
        for slot in self.api.pool.resident():
            if slot.engine is None:
                continue
            card = self._card(slot.model_id)
            timer = self.expiry.get(slot.model_id)
            expires = time.time() + (timer.when() - asyncio.get_running_loop().time()) if timer else None
            card.update(expires_at=_iso(expires) if expires else "0001-01-01T00:00:00Z",
                        size_vram=card["size"] if slot.engine.info.n_gpu_layers else 0,
                        context_length=slot.engine.info.n_ctx)
            del card["modified_at"]
            models.append(card)
        return {"models": models}

    async def show(self, request: Request) -> dict:
        data = await self._body(request)
        name = data.get("model") or data.get("name")
        model_id = self._model(name)
        entry = self.api.services.entry(model_id)
        record = self.api.services.registry.get(model_id)
        metadata = await asyncio.to_thread(self._metadata, record.path if record else None)
        arch = str(metadata.get("general.architecture", ""))
        info = {k: v for k, v in metadata.items() if not k.startswith("tokenizer.") and isinstance(v, (str, int, float))}
        sampling = self.api.services.config.sampling_for(model_id)
        parameters = "\n".join(f"{k} {v}" for k, v in (("temperature", sampling.temperature), ("top_p", sampling.top_p),
                                                        ("top_k", sampling.top_k), ("num_predict", sampling.max_tokens)))
        template = metadata.get("tokenizer.chat_template")
        return {"modelfile": f"# localchat model {model_id} ({entry.name})\nFROM {record.path if record else ''}\n",
                "parameters": parameters, "template": template if isinstance(template, str) else "",
                "details": {**self._details(model_id, arch),
                            "parameter_size": str(metadata.get("general.size_label") or "")}, "model_info": info,
                "capabilities": self._capabilities(metadata),
                "modified_at": _iso(record.installed_at if record else 0)}

    @staticmethod
    def _capabilities(metadata: dict) -> list[str]:
        """What Ollama's clients look for: an embedding model (its metadata names a pooling) embeds only;
        a chat model completes, calls tools when its template renders them, thinks when it knows the
        tags. No vision: images are refused."""
        from localchat.reasoning import detect

        arch = str(metadata.get("general.architecture", ""))
        if metadata.get(f"{arch}.pooling_type") not in (None, 0):
            return ["embedding"]
        template = metadata.get("tokenizer.chat_template")
        source = template if isinstance(template, str) else None
        capabilities = ["completion"]
        if template_format(source) is not None:
            capabilities.append("tools")
        if detect(source) is not None:
            capabilities.append("thinking")
        return capabilities

    @staticmethod
    def _metadata(path: Any) -> dict:
        if path is None:
            return {}
        from localchat.gguf import read_gguf

        try:
            return dict(read_gguf(path).metadata)
        except (GGUFError, OSError):
            return {}

    def _card(self, model_id: str) -> dict:
        record = self.api.services.registry.get(model_id)
        digest = record.files[0].sha256 if record and record.files else ""
        return {"name": model_id + TAG, "model": model_id + TAG, "modified_at": _iso(record.installed_at if record else 0),
                "size": record.size if record else 0, "digest": digest, "details": self._details(model_id)}

    def _details(self, model_id: str, family: str = "") -> dict:
        entry = self.api.services.entry(model_id)
        return {"parent_model": "", "format": "gguf", "family": family, "families": [family] if family else None,
                "parameter_size": "", "quantization_level": entry.quant or ""}

    # --- generation -------------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        data = await self._body(request)
        model_id = self._model(data.get("model"))
        raw = data.get("messages") or []
        if not isinstance(raw, list):
            raise bad("'messages' must be a list of {role, content} objects")
        messages = ollama_messages(raw)
        sampling, keep_alive, stream = self._settings(model_id, data)
        tools, response_format = ollama_tools(data.get("tools")), ollama_format(data.get("format"))
        if tools is not None and response_format is not None:
            raise bad("'format' and 'tools' cannot constrain one reply together: send one of them")
        name = data["model"]
        if not messages:
            return await self._loaded(model_id, name, keep_alive, {"message": {"role": "assistant", "content": ""}})
        prepare = self._thinking(model_id, name, data.get("think"), sampling, messages, tools=tools,
                                 response_format=response_format)

        return await self._reply(request, model_id, name, prepare, keep_alive, stream, chat=True)

    async def generate(self, request: Request) -> Response:
        data = await self._body(request)
        model_id = self._model(data.get("model"))
        prompt, system = data.get("prompt", ""), data.get("system")
        if not isinstance(prompt, str) or (system is not None and not isinstance(system, str)):
            raise bad("'prompt' and 'system' must be text")
        for unsupported in ("suffix", "images", "context"):
            if data.get(unsupported):
                raise bad(f"'{unsupported}' is not supported by this server"
                          + ("; send the conversation to /api/chat" if unsupported == "context" else ""))
        sampling, keep_alive, stream = self._settings(model_id, data)
        if data.get("tools"):
            raise bad("'tools' need a conversation: send them to /api/chat")
        sampling = constrain(sampling, None, ollama_format(data.get("format")), "json")
        name = data["model"]
        if not prompt:
            return await self._loaded(model_id, name, keep_alive, {"response": ""})
        raw = data.get("raw") is True
        messages = ([Message("system", system)] if system else []) + [Message("user", prompt)]
        prepare = self._thinking(model_id, name, data.get("think"), sampling, messages, raw=prompt if raw else None)

        return await self._reply(request, model_id, name, prepare, keep_alive, stream, chat=False)

    def _thinking(self, model_id: str, name: str, think: Any, sampling: SamplingParams, messages: list[Message],
                  raw: str | None = None, tools: ToolRequest | None = None,
                  response_format: OutputConstraint | None = None) -> Any:
        """prepare(slot) for a reply, thinking as `think` says (else as the config says for the model)."""
        choice, budget = think_api.ollama_think(think)
        thinking = think_api.thinking_for(self.api.services, model_id, choice)
        if budget is not None:
            sampling = replace(sampling, reasoning_budget=budget)

        def prepare(slot: Any) -> tuple:
            if think not in (None, False) and not think_api.reasons(slot):
                raise ConfigError(f'"{name}" does not support thinking')  # Ollama's answer, word for word
            if raw is not None:
                return raw, sampling
            return think_api.render(slot, messages, thinking, sampling, tools, response_format)

        return prepare

    async def embed(self, request: Request) -> dict:
        from localchat.server.embeddings import ollama_embed

        return await self._embed_with(request, ollama_embed)

    async def embeddings(self, request: Request) -> dict:
        from localchat.server.embeddings import ollama_legacy_embedding

        return await self._embed_with(request, ollama_legacy_embedding)

    async def _embed_with(self, request: Request, answer: Any) -> dict:
        """/api/embed and the older /api/embeddings: the model held while `answer` computes the vectors."""
        data = await self._body(request)
        model_id = self._model(data.get("model"))
        keep_alive = keep_alive_seconds(data.get("keep_alive"))
        self._hold(model_id)
        try:
            result: dict = await answer(self.api, model_id, data)
            return result
        finally:
            self._release(model_id, keep_alive)

    async def _reply(self, request: Request, model_id: str, name: str, prepare: Any, keep_alive: float | None,
                     stream: bool, chat: bool) -> Response:
        started = time.perf_counter()
        self._hold(model_id)
        job = self.api._start(model_id, prepare)
        job.on_finished(lambda _job: self._release(model_id, keep_alive))
        if not stream:
            done = await self.api._run_to_end(request, job)
            return JSONResponse(_final(name, done, started, chat, done.text, done.reasoning, done.tool_calls))
        from localchat.server.app import _watch_disconnect, to_api_error

        watcher = asyncio.create_task(_watch_disconnect(request, job))
        try:
            first = await job.next()  # the turn and the first text: errors still get a status code
        except BaseException:
            job.cancel()
            watcher.cancel()
            raise
        if isinstance(first, Failed):
            watcher.cancel()
            raise to_api_error(first.error)
        return StreamingResponse(_ndjson(job, first, name, started, chat, watcher), media_type="application/x-ndjson")

    async def _loaded(self, model_id: str, name: str, keep_alive: float | None, part: dict) -> Response:
        """An empty prompt loads the model (or, with keep_alive 0, unloads it), as Ollama does."""
        if keep_alive == 0:
            self.api.pool.unload(model_id)
            reason = "unload"
        else:
            async with self.api.pool.lease(model_id):
                pass
            self._release(model_id, keep_alive)
            reason = "load"
        return JSONResponse({"model": name, "created_at": _now(), **part, "done": True, "done_reason": reason})

    # keep_alive: how long a model stays loaded after its last request (Ollama's default is 5 minutes;
    # here a model stays until the pool needs its place unless a request says otherwise).
    def _hold(self, model_id: str) -> None:
        timer = self.expiry.pop(model_id, None)
        if timer is not None:
            timer.cancel()

    def _release(self, model_id: str, keep_alive: float | None) -> None:
        if keep_alive is None or keep_alive < 0:
            return
        if keep_alive == 0:
            self.api.pool.unload(model_id)
            return
        self._hold(model_id)
        self.expiry[model_id] = asyncio.get_running_loop().call_later(keep_alive, self._expire, model_id)

    def _expire(self, model_id: str) -> None:
        self.expiry.pop(model_id, None)
        self.api.pool.unload(model_id)

    # --- request parts ----------------------------------------------------------------------------

    async def _body(self, request: Request) -> dict:
        from localchat.server.app import read_body

        return parse_json(await read_body(request, self.api.settings.max_body_bytes))

    def _model(self, name: Any) -> str:
        if not isinstance(name, str) or not name.strip():
            raise bad("'model' is required: GET /api/tags lists the installed models")
        model_id = name[:-len(TAG)] if name.endswith(TAG) else name
        try:
            return self.api._resolve(model_id)
        except ApiError as exc:
            raise ApiError(404, f"model '{name}' not found; {exc.message.split('; ', 1)[-1]}") from None

    def _settings(self, model_id: str, data: dict) -> tuple[SamplingParams, float | None, bool]:
        options = data.get("options") or {}
        if not isinstance(options, dict):
            raise bad("'options' must be an object")
        self._check_options(model_id, options)
        overrides: dict[str, Any] = {}
        for key, kind in _OPTIONS.items():
            value = options.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise bad(f"option '{key}' must be a {'whole ' if kind is int else ''}number")
            overrides[key] = kind(value)
        predict = options.get("num_predict")
        if predict is not None:
            if isinstance(predict, bool) or not isinstance(predict, int):
                raise bad("option 'num_predict' must be a whole number (-1: until the model stops)")
            if predict > 0:
                overrides["max_tokens"] = predict
            elif predict < 0:  # -1 / -2: until the model stops or the context is full
                overrides["max_tokens"] = self.api.services.config.load_options_for(model_id).n_ctx
        stop = options.get("stop")
        if stop is not None:
            if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
                raise bad("option 'stop' must be a list of strings")
            overrides["stop"] = tuple(stop)
        stream = data.get("stream", True)
        if not isinstance(stream, bool):
            raise bad("'stream' must be true or false")
        return self.api._sampling(model_id, overrides), keep_alive_seconds(data.get("keep_alive")), stream

    def _check_options(self, model_id: str, options: dict) -> None:
        for key, value in options.items():
            if key in _OPTIONS or key in _HANDLED or key in _LOAD_OPTIONS or key in _IGNORED:
                continue
            if key in _NO_OP:
                if value is not None and value != _NO_OP[key]:
                    raise bad(f"option '{key}' is not supported by this server (leave it at {_NO_OP[key]!r}); "
                              "use temperature, top_p, top_k, min_p and the penalties")
                continue
            raise bad(f"unknown option '{key}'")
        num_ctx = options.get("num_ctx")
        if num_ctx is None:
            return
        if isinstance(num_ctx, bool) or not isinstance(num_ctx, int) or num_ctx < 1:
            raise bad("option 'num_ctx' must be a positive whole number")
        window = self._window(model_id)
        if num_ctx > window:
            raise bad(f"option num_ctx {num_ctx} is larger than the {window}-token window '{model_id}' is loaded "
                      f"with; set models.{model_id}.load.n_ctx in config.yaml (the server loads a model once "
                      "for every client)")

    def _window(self, model_id: str) -> int:
        slot = self.api.pool.get(model_id)
        if slot is not None and slot.engine is not None:
            return slot.engine.info.n_ctx
        return int(self.api._card(model_id)["max_model_len"])


def keep_alive_seconds(value: Any) -> float | None:
    """Ollama's keep_alive: seconds as a number, or a duration such as "10m", "1h30m", "0"; negative keeps
    the model loaded. None when not given."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return float(text)
        parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
        if parts and "".join(n + u for n, u in parts) == text.lstrip("-"):
            scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
            total = sum(float(n) * scale[u] for n, u in parts)
            return -total if text.startswith("-") else total
    raise bad(f"'keep_alive' must be seconds or a duration such as \"5m\" (got {value!r})")


_OLLAMA_ROLES = {"system", "user", "assistant", "tool"}


def ollama_messages(raw: list) -> list[Message]:
    """Ollama's messages: calls carry no ids, and a `tool` message names the function (`tool_name`) or
    simply follows the calls in order. Ids are given here so the conversation reads like OpenAI's."""
    messages: list[Message] = []
    pending: list[ToolCall] = []
    for i, item in enumerate(raw):
        if isinstance(item, dict) and item.get("images"):
            raise bad(f"messages[{i}]: images are not supported by this server")
        if isinstance(item, dict) and item.get("role") not in _OLLAMA_ROLES:
            raise bad(f"messages[{i}].role must be system, user, assistant or tool (got {item.get('role')!r})")
        if isinstance(item, dict) and item.get("role") == "assistant" and item.get("tool_calls"):
            calls = item["tool_calls"]
            if isinstance(calls, list):
                item = {**item, "tool_calls": [{**c, "id": c.get("id") or f"call_{i}_{n}"} if isinstance(c, dict) else c
                                               for n, c in enumerate(calls)]}
        if isinstance(item, dict) and item.get("role") == "assistant" and isinstance(item.get("thinking"), str):
            item = {**item, "reasoning_content": item["thinking"]}  # Ollama's name for a thought sent back
        if isinstance(item, dict) and item.get("role") == "tool" and not item.get("tool_call_id"):
            wanted = item.get("tool_name")
            match = next((c for c in pending if wanted is None or c.name == wanted), None)
            if match is None:
                raise bad(f"messages[{i}] is a tool result, but no earlier assistant message called "
                          f"{repr(wanted) if wanted else 'a tool'} that is still unanswered")
            item = {**item, "tool_call_id": match.id}
        message = _message(item, i)
        if message.role == "assistant":
            pending = list(message.tool_calls)
        elif message.role == "tool":
            pending = [c for c in pending if c.id != message.tool_call_id]
        messages.append(message)
    return messages


def ollama_tools(raw: Any) -> ToolRequest | None:
    """`tools` as OpenAI spells them (Ollama has no tool_choice: the model decides), schemas checked."""
    try:
        tools = parse_tools(raw)
        tools_constraint(tools, "json")
    except (ToolsError, SchemaError) as exc:
        raise bad(exc.message) from None
    return tools


def ollama_calls(calls: tuple[ToolCall, ...]) -> list[dict]:
    """Calls in Ollama's shape: arguments as an object (and the id, which newer clients send back)."""
    out = []
    for i, call in enumerate(calls):
        try:
            arguments = json.loads(call.arguments)
        except ValueError:  # a call cut off by num_predict: what came, as text
            arguments = {"_raw": call.arguments}
        out.append({"id": call.id, "function": {"index": i, "name": call.name, "arguments": arguments}})
    return out


def ollama_format(raw: Any) -> OutputConstraint | None:
    """`format`: "json", or a JSON schema object."""
    if raw in (None, ""):
        return None
    if raw == "json":
        return OutputConstraint("json")
    if isinstance(raw, dict):
        try:
            return schema_constraint(raw, "format")
        except SchemaError as exc:
            raise bad(exc.message) from None
    raise bad("'format' must be \"json\" or a JSON schema object")


def _durations(usage: Usage, started: float) -> dict:
    return {"total_duration": int((time.perf_counter() - started) * 1e9), "load_duration": 0,
            "prompt_eval_count": usage.prompt_tokens, "prompt_eval_duration": int(usage.prompt_seconds * 1e9),
            "eval_count": usage.completion_tokens, "eval_duration": int(usage.decode_seconds * 1e9)}


def _part(text: str, chat: bool, thinking: str = "", calls: tuple[ToolCall, ...] = ()) -> dict:
    """A reply's text; a reasoning model's thought goes in `thinking` beside it, as Ollama sends it."""
    if not chat:
        return {"response": text, **({"thinking": thinking} if thinking else {})}
    message: dict[str, Any] = {"role": "assistant", "content": text, **({"thinking": thinking} if thinking else {})}
    if calls:
        message["tool_calls"] = ollama_calls(calls)
    return {"message": message}


def _final(name: str, done: Done, started: float, chat: bool, text: str, thinking: str = "",
           calls: tuple[ToolCall, ...] = ()) -> dict:
    reason = "length" if done.finish_reason == "length" else "stop"  # Ollama ends a call with "stop" too
    return {"model": name, "created_at": _now(), **_part(text, chat, thinking, calls), "done": True,
            "done_reason": reason,
            **_durations(done.usage, started)}


def _line(payload: dict) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


async def _ndjson(job: Job, first: Any, name: str, started: float, chat: bool,
                  watcher: asyncio.Task) -> AsyncIterator[bytes]:
    from localchat.server.app import to_api_error

    try:
        event = first
        while True:
            if isinstance(event, Delta):
                yield _line({"model": name, "created_at": _now(), **_part(event.text, chat), "done": False})
            elif isinstance(event, Thought):
                yield _line({"model": name, "created_at": _now(), **_part("", chat, event.text), "done": False})
            elif isinstance(event, ToolCallDelta):
                pass  # the whole call goes out with Done
            elif isinstance(event, Done):
                if event.tool_calls:  # Ollama streams a call whole, in a line of its own
                    yield _line({"model": name, "created_at": _now(), **_part("", chat, calls=event.tool_calls),
                                 "done": False})
                yield _line(_final(name, event, started, chat, ""))
                return
            else:  # failed mid-reply: Ollama ends the stream with an error line
                yield _line({"error": to_api_error(event.error).message})
                return
            event = await job.next()
    finally:  # also when the client went away
        watcher.cancel()
        job.cancel()
