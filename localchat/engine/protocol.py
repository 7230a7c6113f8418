"""Frames between the parent and a model worker: a 4-byte big-endian length, then a UTF-8 JSON object.

JSON, not pickle: the worker parses untrusted GGUF files with native code, so the parent must never run
what comes out of it (unpickling can execute code); plain dicts of str/int/float/bool/list cost nothing
to encode at the few dozen frames a second a reply needs. Every frame carries "op":

parent -> worker
  {"op": "load", "path": str, "options": LoadOptions dict}
  {"op": "generate", "id": int, "prompt": str, "sampling": SamplingParams dict}
  {"op": "count", "id": int, "texts": [str, ...]}          answered even while a generation runs
  {"op": "cancel", "id": int}
  {"op": "shutdown"}
worker -> parent
  {"op": "loaded", "info": ModelInfo dict without "path"}
  {"op": "delta", "id": int, "text": str}                  batched: about every 25 ms, the first at once
  {"op": "done", "id": int, "usage": Usage dict}
  {"op": "counts", "id": int, "counts": [int, ...]}
  {"op": "error", "id": int | None, "kind": str, "text": str, "hint": str}
     kind: load (the model did not load) | context (prompt longer than the window) | request (bad input)
           | engine (llama.cpp failed) | internal (a bug in the worker)
"""

from __future__ import annotations

import json
import struct
from typing import BinaryIO

_HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 30


def encode(msg: dict) -> bytes:
    # surrogatepass: a str with a lone surrogate (from a broken terminal paste) must not kill the pipe
    payload = json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return _HEADER.pack(len(payload)) + payload


def write_frame(out: BinaryIO, msg: dict) -> None:
    out.write(encode(msg))
    out.flush()


def read_frame(inp: BinaryIO) -> dict | None:
    """The next frame, or None at end of stream (the other side exited or closed the pipe)."""
    header = inp.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is larger than the protocol allows")
    payload = inp.read(size)
    if len(payload) < size:
        return None
    return json.loads(payload.decode("utf-8", "surrogatepass"))
