"""One GGUF through the whole load path a user's file takes: our header check, then an engine worker.

Shared by `scripts/fuzz load` and tests/robustness/test_load_corpus.py. Every case must end in one of:
  refused          read_gguf refused it (GGUFError) before llama.cpp saw a byte
  refused-load     the worker's llama.cpp refused it (ModelLoadError)
  crashed-worker   the worker died (WorkerCrashed, with a message); the parent carries on
  loaded           it loaded, tokenized and generated a few tokens (or failed to with EngineError)
Anything else (another exception, an empty message, an internal error of the reader) is a bug: it raises.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from localchat.errors import EngineError, GGUFError, ModelLoadError, WorkerCrashed
from localchat.types import LoadOptions, SamplingParams
from tests.support import ggufmutate as gm

OUTCOMES = ("refused", "refused-load", "crashed-worker", "loaded")


@dataclass
class LoadResult:
    outcome: str
    message: str = ""


def _message(exc: Exception) -> str:
    text = getattr(exc, "message", "") or str(exc)
    if not text.strip():
        raise AssertionError(f"{type(exc).__name__} without a message")
    return text


def load_outcome(data: bytes, workdir: Path, n_ctx: int = 64) -> LoadResult:
    """Write `data` as a model file under `workdir`, check it, load it in a worker, generate a little."""
    from localchat.engine.client import EngineClient
    from localchat.gguf import read_gguf

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "case.gguf"
    path.write_bytes(data)
    try:
        read_gguf(path)
    except GGUFError as e:
        if "internal error" in e.message:  # the reader's safety net caught one of its own bugs
            raise AssertionError(e.message) from e
        return LoadResult("refused", _message(e))
    options = LoadOptions(n_ctx=n_ctx, n_gpu_layers=0, n_threads=1, n_batch=64)
    try:
        client = EngineClient.start(path, options, workdir / "logs")
    except WorkerCrashed as e:
        return LoadResult("crashed-worker", _message(e))
    except ModelLoadError as e:
        return LoadResult("refused-load", _message(e))
    try:
        client.count_tokens(["hello"])
        generation = client.generate("hello", SamplingParams(temperature=0.0, max_tokens=4))
        text = "".join(event.text for event in generation)  # TextDelta events
        return LoadResult("loaded", f"generated {text!r}")
    except WorkerCrashed as e:
        return LoadResult("crashed-worker", _message(e))
    except EngineError as e:  # the model loaded but cannot run this prompt (e.g. a vocabulary cut short)
        return LoadResult("loaded", f"loaded; generation refused: {_message(e)}")
    finally:
        client.close()


def load_inputs(rng: random.Random, n: int) -> Iterator[tuple[bytes, None]]:
    """Mutations of a tiny loadable model, in three kinds taken in turn: random structural damage (mostly
    refused by our reader); metadata values, tensor dimensions and types (hyperparameters llama.cpp must
    check itself, so more of them reach the worker); and tensors whose data offsets overlap or move."""
    base = gm.tiny_gguf_bytes()
    lay = gm.layout(base)
    semantic = [i for i, f in enumerate(lay.fields) if f.kind in ("value", "dim", "ggml_type")]
    offsets = [f for f in lay.fields if f.kind == "offset"]
    for i in range(n):
        kind = i % 3
        if kind == 0:
            data = gm.apply(base, lay, gm.random_mutations(rng))
        elif kind == 1:
            data = gm.apply(base, lay, [("field", rng.choice(semantic), rng.getrandbits(32))
                                        for _ in range(rng.randint(1, 3))])
        else:
            buf = bytearray(base)
            for _ in range(rng.randint(1, 2)):
                a, b = rng.choice(offsets), rng.choice(offsets)
                value = struct.unpack_from("<Q", base, b.offset)[0] + rng.choice([0, 0, 32, -32, 1])
                buf[a.offset:a.offset + 8] = struct.pack("<Q", value % (1 << 64))
            data = bytes(buf)
        yield data, None
