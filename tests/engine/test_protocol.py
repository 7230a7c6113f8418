"""The worker pipe's typed frames: every kind survives the wire, and a frame that is no frame is a
ProtocolError the reader answers (the stream stays in step), never a crash of either side."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys

import pytest

from localchat.engine import protocol
from localchat.engine.protocol import (
    Cancel,
    Count,
    Counts,
    Delta,
    Done,
    Embed,
    Embedded,
    EndThought,
    Error,
    Generate,
    Load,
    Loaded,
    ProtocolError,
    Shutdown,
)
from localchat.types import LoadOptions, SamplingParams, Usage

FRAMES = [
    Load("/models/tiny.gguf", LoadOptions(n_ctx=512, n_gpu_layers=0, flash_attn="off")),
    Generate(7, "<|im_start|>user\n你好\ud800<|im_end|>\n", SamplingParams(temperature=0.0, stop=("\n\n",), seed=3)),
    Count(8, ["a", "🙂"]),
    Cancel(7),
    EndThought(7),
    Shutdown(),
    Loaded({"architecture": "llama", "n_ctx": 512, "notes": ["x"]}),
    Delta(7, "Hi 你好🙂!"),
    Done(7, Usage(prompt_tokens=24, completion_tokens=13, finish_reason="length", threads=2)),
    Counts(8, [1, 4]),
    Embed(9, ["a cat", "🙂"], True),
    Embedded(9, [[0.6, 0.8], [1.0, 0.0]], 5),
    Error(None, "load", "no such file", "run `localchat pull ID`"),
    Error(7, "context", "too long"),
]


def raw(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_every_frame_kind_round_trips(frame):
    stream = io.BytesIO(protocol.encode(frame))
    assert protocol.read_frame(stream) == frame
    assert protocol.read_frame(stream) is None  # end of stream


@pytest.mark.parametrize(("payload", "rid", "why"), [
    (b'{"op": "teleport", "id": 3}', 3, "unknown frame"),
    (b'{"id": 3}', 3, "unknown frame"),
    (b'[1, 2]', None, "JSON object"),
    (b'{"op": "delta", "id": "3", "text": "x"}', None, "'id'"),
    (b'{"op": "delta", "id": 3, "text": 5}', 3, "'text'"),
    (b'{"op": "cancel", "id": true}', None, "'id'"),
    (b'{"op": "counts", "id": 4, "counts": [1, "2"]}', 4, "list of int"),
    (b'{"op": "generate", "id": 5, "prompt": "x", "sampling": {"stop": 3}}', 5, "malformed"),
    (b'{"op": "done", "id": 6}', 6, "'usage'"),
    (b'{"op": "error", "id": 2, "kind": "engine"}', 2, "'text'"),
    (b'{"op": "embed", "id": 7, "texts": ["a"], "truncate": 1}', 7, "'truncate' as bool"),
    (b'{"op": "embedded", "id": 7, "vectors": [[0.1, "x"]], "prompt_tokens": 1}', 7, "lists of numbers"),
    (b'\xff\xfe not json', None, "UTF-8 JSON"),
    (b'{"op": "delta", "id": 3, ', None, "UTF-8 JSON"),
])
def test_a_malformed_frame_is_a_protocol_error_and_the_stream_stays_in_step(payload, rid, why):
    stream = io.BytesIO(raw(payload) + protocol.encode(Delta(1, "next")))
    with pytest.raises(ProtocolError, match=why) as caught:
        protocol.read_frame(stream)
    assert caught.value.rid == rid
    assert protocol.read_frame(stream) == Delta(1, "next")


def test_an_oversized_length_stops_reading():
    stream = io.BytesIO(struct.pack(">I", protocol.MAX_FRAME + 1) + b"{}")
    with pytest.raises(ValueError) as caught:
        protocol.read_frame(stream)
    assert not isinstance(caught.value, ProtocolError)


def test_a_truncated_frame_is_the_end_of_the_stream():
    assert protocol.read_frame(io.BytesIO(protocol.encode(Delta(1, "cut"))[:-2])) is None


def test_the_wire_form_is_plain_json_with_an_op():
    payload = protocol.encode(Delta(3, "hi"))[4:]
    assert json.loads(payload) == {"op": "delta", "id": 3, "text": "hi"}


@pytest.mark.slow  # starts a real worker process (no model), as the guard in tests/conftest.py requires
def test_the_worker_answers_a_malformed_request_and_carries_on():
    """A real worker (no model needed): garbage gets an error frame naming it, later requests still work."""
    worker = subprocess.Popen([sys.executable, "-m", "localchat.engine.worker"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        worker.stdin.write(raw(b'{"op": "generate", "id": 9, "prompt": 42}'))
        worker.stdin.write(raw(b'{"op": "teleport"}'))
        worker.stdin.write(protocol.encode(Delta(1, "a frame only the worker sends")))
        worker.stdin.write(protocol.encode(Count(10, ["abc"])))
        worker.stdin.flush()
        replies = [protocol.read_frame(worker.stdout) for _ in range(4)]
        worker.stdin.write(protocol.encode(Shutdown()))
        worker.stdin.flush()
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert all(isinstance(r, Error) and r.kind == "request" for r in replies), replies
    assert replies[0].id == 9 and "'prompt'" in replies[0].text
    assert replies[1].id is None and "teleport" in replies[1].text
    assert "delta" in replies[2].text
    assert replies[3].id == 10 and "no model is loaded" in replies[3].text
