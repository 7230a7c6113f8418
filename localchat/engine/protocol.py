"""Frames between the parent and a model worker: a 4-byte big-endian length, then a UTF-8 JSON object.

JSON, not pickle: the worker parses untrusted GGUF files with native code, so the parent must never run
what comes out of it (unpickling can execute code). Each frame kind is a dataclass; on the wire it is its
fields plus "op" (the kind's name). decode() checks every field's type, so a frame the other side got
wrong is a ProtocolError the reader can answer, never a KeyError deep in a thread.

parent -> worker
  Load(path, options)            Generate(id, prompt, sampling)       Count(id, texts)   answered even
  Cancel(id)                     Shutdown()                                              mid-generation
  EndThought(id)                 a reasoning model's thought is closed now; its answer follows
  Embed(id, texts, truncate)     one vector per text, computed on the worker's main thread
  SaveState(id, path, template, prompt)   LoadState(id, path, template)   (queued like a generation)
worker -> parent
  Loaded(info)                   ModelInfo fields without "path"
  Delta(id, text)                batched: about every 25 ms, the first at once
  Done(id, usage)                Counts(id, counts)
  Embedded(id, vectors, prompt_tokens)
  StateDone(id, tokens, note)    tokens a saved / loaded state covers; 0 and a note: none (or refused)
  Error(id | None, kind, text, hint)
     kind: load (the model did not load) | context (prompt or embedding input longer than the window)
           | request (bad input) | schema (a grammar that cannot compile)
           | engine (llama.cpp failed) | internal (a bug in the worker)
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import IO, Any, Callable, ClassVar, cast

from localchat.types import LoadOptions, SamplingParams, Usage

_HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 30


class ProtocolError(ValueError):
    """A frame that is not one of the kinds below, or whose fields have the wrong types. The length prefix
    was honoured, so the stream is still in step; `id` is the request it names, if it names one."""

    def __init__(self, message: str, rid: int | None = None) -> None:
        super().__init__(message)
        self.rid = rid


# -- parent -> worker --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Load:
    op: ClassVar[str] = "load"
    path: str
    options: LoadOptions = field(default_factory=LoadOptions)


@dataclass(frozen=True, slots=True)
class Generate:
    op: ClassVar[str] = "generate"
    id: int
    prompt: str
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True, slots=True)
class Count:
    op: ClassVar[str] = "count"
    id: int
    texts: list[str]


@dataclass(frozen=True, slots=True)
class Embed:
    op: ClassVar[str] = "embed"
    id: int
    texts: list[str]
    truncate: bool = False  # cut an input longer than the window instead of refusing it


@dataclass(frozen=True, slots=True)
class Cancel:
    op: ClassVar[str] = "cancel"
    id: int


@dataclass(frozen=True, slots=True)
class EndThought:
    op: ClassVar[str] = "end_thought"
    id: int


@dataclass(frozen=True, slots=True)
class SaveState:
    """Write the state of the longest prefix of `prompt` the worker holds to `path` (issue 15)."""
    op: ClassVar[str] = "save_state"
    id: int
    path: str
    template: str
    prompt: str


@dataclass(frozen=True, slots=True)
class LoadState:
    """Read a state SaveState wrote, for the next prompts that start with its tokens."""
    op: ClassVar[str] = "load_state"
    id: int
    path: str
    template: str


@dataclass(frozen=True, slots=True)
class Shutdown:
    op: ClassVar[str] = "shutdown"


# -- worker -> parent --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Loaded:
    op: ClassVar[str] = "loaded"
    info: dict[str, Any]  # ModelInfo fields without "path" (the parent knows it)


@dataclass(frozen=True, slots=True)
class Delta:
    op: ClassVar[str] = "delta"
    id: int
    text: str


@dataclass(frozen=True, slots=True)
class Done:
    op: ClassVar[str] = "done"
    id: int
    usage: Usage


@dataclass(frozen=True, slots=True)
class Counts:
    op: ClassVar[str] = "counts"
    id: int
    counts: list[int]


@dataclass(frozen=True, slots=True)
class StateDone:
    op: ClassVar[str] = "state_done"
    id: int
    tokens: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class Embedded:
    op: ClassVar[str] = "embedded"
    id: int
    vectors: list[list[float]]  # L2-normalised, one per text
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class Error:
    op: ClassVar[str] = "error"
    id: int | None
    kind: str
    text: str
    hint: str = ""


ToWorker = Load | Generate | Count | Embed | Cancel | EndThought | Shutdown | SaveState | LoadState
FromWorker = Loaded | Delta | Done | Counts | Embedded | StateDone | Error
Frame = ToWorker | FromWorker


# -- wire form ---------------------------------------------------------------------------------------

def _wire(frame: Frame) -> dict[str, Any]:
    if type(frame) is Delta:  # the hot path: one every 25 ms while a reply streams
        return {"op": "delta", "id": frame.id, "text": frame.text}
    if isinstance(frame, Load):
        return {"op": "load", "path": frame.path, "options": frame.options.to_dict()}
    if isinstance(frame, Generate):
        return {"op": "generate", "id": frame.id, "prompt": frame.prompt, "sampling": frame.sampling.to_dict()}
    if isinstance(frame, Done):
        return {"op": "done", "id": frame.id, "usage": frame.usage.to_dict()}
    if isinstance(frame, Count):
        return {"op": "count", "id": frame.id, "texts": list(frame.texts)}
    if isinstance(frame, Counts):
        return {"op": "counts", "id": frame.id, "counts": list(frame.counts)}
    if isinstance(frame, Cancel):
        return {"op": "cancel", "id": frame.id}
    if isinstance(frame, EndThought):
        return {"op": "end_thought", "id": frame.id}
    if isinstance(frame, Embed):
        return {"op": "embed", "id": frame.id, "texts": list(frame.texts), "truncate": frame.truncate}
    if isinstance(frame, Embedded):
        return {"op": "embedded", "id": frame.id, "vectors": frame.vectors, "prompt_tokens": frame.prompt_tokens}
    if isinstance(frame, Loaded):
        return {"op": "loaded", "info": frame.info}
    if isinstance(frame, Error):
        return {"op": "error", "id": frame.id, "kind": frame.kind, "text": frame.text, "hint": frame.hint}
    if isinstance(frame, Shutdown):
        return {"op": "shutdown"}
    if isinstance(frame, SaveState):
        return {"op": "save_state", "id": frame.id, "path": frame.path, "template": frame.template,
                "prompt": frame.prompt}
    if isinstance(frame, LoadState):
        return {"op": "load_state", "id": frame.id, "path": frame.path, "template": frame.template}
    if isinstance(frame, StateDone):
        return {"op": "state_done", "id": frame.id, "tokens": frame.tokens, "note": frame.note}
    raise TypeError(f"not a protocol frame: {frame!r}")


def _field(msg: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = msg.get(name)
    if not isinstance(value, kind) or type(value) is bool:  # a bool is an int to Python, never a valid field here
        raise ProtocolError(f"a {msg.get('op')!r} frame needs {name!r} as {_names(kind)}, not {value!r}"[:300],
                            _rid(msg))
    return value


def _names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))


def _rid(msg: dict[str, Any]) -> int | None:
    rid = msg.get("id")
    return rid if type(rid) is int else None


def _str_list(msg: dict[str, Any], name: str) -> list[str]:
    items = _field(msg, name, list)
    if not all(type(t) is str for t in items):
        raise ProtocolError(f"a {msg['op']!r} frame needs {name!r} as a list of str", _rid(msg))
    return cast("list[str]", items)


def _int_list(msg: dict[str, Any], name: str) -> list[int]:
    items = _field(msg, name, list)
    if not all(type(n) is int for n in items):
        raise ProtocolError(f"a {msg['op']!r} frame needs {name!r} as a list of int", _rid(msg))
    return cast("list[int]", items)


def _flag(msg: dict[str, Any], name: str) -> bool:
    value = msg.get(name, False)
    if type(value) is not bool:
        raise ProtocolError(f"a {msg['op']!r} frame needs {name!r} as bool, not {value!r}"[:300], _rid(msg))
    return value


def _vectors(msg: dict[str, Any]) -> list[list[float]]:
    rows = _field(msg, "vectors", list)
    for row in rows:
        if not isinstance(row, list) or not all(type(v) in (float, int) for v in row):
            raise ProtocolError(f"a {msg['op']!r} frame needs 'vectors' as lists of numbers", _rid(msg))
    return cast("list[list[float]]", rows)


def _delta(m: dict[str, Any]) -> Delta:
    rid, text = m.get("id"), m.get("text")
    if type(rid) is int and type(text) is str:  # the hot path: two type checks, no helper calls
        return Delta(rid, text)
    return Delta(_field(m, "id", int), _field(m, "text", str))


def _optional_id(m: dict[str, Any]) -> int | None:
    return None if m.get("id") is None else _field(m, "id", int)


_DECODERS: dict[str, Callable[[dict[str, Any]], Frame]] = {
    "delta": _delta,
    "load": lambda m: Load(_field(m, "path", str), LoadOptions.from_dict(_field(m, "options", dict))),
    "generate": lambda m: Generate(_field(m, "id", int), _field(m, "prompt", str),
                                   SamplingParams.from_dict(_field(m, "sampling", dict))),
    "count": lambda m: Count(_field(m, "id", int), _str_list(m, "texts")),
    "embed": lambda m: Embed(_field(m, "id", int), _str_list(m, "texts"), _flag(m, "truncate")),
    "embedded": lambda m: Embedded(_field(m, "id", int), _vectors(m), _field(m, "prompt_tokens", int)),
    "cancel": lambda m: Cancel(_field(m, "id", int)),
    "end_thought": lambda m: EndThought(_field(m, "id", int)),
    "shutdown": lambda m: Shutdown(),
    "loaded": lambda m: Loaded(_field(m, "info", dict)),
    "done": lambda m: Done(_field(m, "id", int), Usage.from_dict(_field(m, "usage", dict))),
    "counts": lambda m: Counts(_field(m, "id", int), _int_list(m, "counts")),
    "save_state": lambda m: SaveState(_field(m, "id", int), _field(m, "path", str), _field(m, "template", str),
                                      _field(m, "prompt", str)),
    "load_state": lambda m: LoadState(_field(m, "id", int), _field(m, "path", str), _field(m, "template", str)),
    "state_done": lambda m: StateDone(_field(m, "id", int), _field(m, "tokens", int),
                                      _field(m, "note", str) if "note" in m else ""),
    "error": lambda m: Error(_optional_id(m), _field(m, "kind", str), _field(m, "text", str),
                             _field(m, "hint", str) if "hint" in m else ""),
}


def decode(msg: object) -> Frame:
    """The frame a parsed JSON payload describes; ProtocolError if it describes none."""
    if not isinstance(msg, dict):
        raise ProtocolError(f"a frame must be a JSON object, not {type(msg).__name__}")
    decoder = _DECODERS.get(msg.get("op"))  # type: ignore[arg-type]
    if decoder is None:
        raise ProtocolError(f"unknown frame {str(msg.get('op'))[:50]!r}", _rid(msg))
    try:
        return decoder(msg)
    except ProtocolError:
        raise
    except (TypeError, ValueError) as e:  # e.g. an unexpected field inside options or sampling
        raise ProtocolError(f"a malformed {msg['op']!r} frame: {e}"[:300], _rid(msg)) from None


def encode(frame: Frame) -> bytes:
    # surrogatepass: a str with a lone surrogate (from a broken terminal paste) must not kill the pipe
    payload = json.dumps(_wire(frame), ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return _HEADER.pack(len(payload)) + payload


def write_frame(out: IO[bytes], frame: Frame) -> None:
    out.write(encode(frame))
    out.flush()


def read_frame(inp: IO[bytes]) -> Frame | None:
    """The next frame, or None at end of stream (the other side exited or closed the pipe).

    Raises ProtocolError for a payload that is no valid frame (the stream stays in step: read on), and a
    plain ValueError for a length beyond MAX_FRAME (the stream cannot be trusted: stop reading).
    """
    header = inp.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is larger than the protocol allows")
    payload = inp.read(size)
    if len(payload) < size:
        return None
    try:
        msg = json.loads(payload.decode("utf-8", "surrogatepass"))
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError both are
        raise ProtocolError(f"a frame that is not UTF-8 JSON: {e}"[:300]) from None
    return decode(msg)
