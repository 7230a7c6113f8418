"""A remote engine (vLLM, llama-server) that streams a reasoning model's thought as reasoning_content: the
client turns it into ReasoningDelta events, apart from the answer's TextDelta events."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from localchat.chat import ChatSession
from localchat.engine.api import ReasoningDelta, TextDelta
from localchat.engine.remote import RemoteEngineClient, RemoteTemplate
from localchat.types import Message, ModelInfo, SamplingParams

CHUNKS = [{"reasoning_content": "The user "}, {"reasoning_content": "greets me."},
          {"reasoning": "OpenRouter's name.", "content": "Hel"}, {"content": "lo!"}]


class _Handler(BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, delta in enumerate(CHUNKS):
            event = {"choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if i == len(CHUNKS) - 1 else None}]}
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def client():
    """A remote engine client of a fake server that streams CHUNKS (and keeps every request body)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Handler.bodies.clear()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1"
        yield RemoteEngineClient(endpoint, "qwen3", None, ModelInfo(path="remote", n_ctx=4096))
    finally:
        server.shutdown()


def test_reasoning_content_deltas_become_reasoning_events(client):
    gen = client.generate([Message("user", "hi")], SamplingParams(max_tokens=20))
    events = list(gen)
    assert events == [ReasoningDelta("The user "), ReasoningDelta("greets me."), ReasoningDelta("OpenRouter's name."),
                      TextDelta("Hel"), TextDelta("lo!")]
    assert gen.text == "Hello!" and gen.finish_reason == "stop"
    # no OpenAI-compatible call ends a running thought; the budget goes with the request instead
    budgeted = client.generate([Message("user", "hi")], SamplingParams(max_tokens=20, reasoning_budget=64))
    assert budgeted.end_thought() is False
    list(budgeted)
    assert _Handler.bodies[-1]["thinking_budget_tokens"] == 64
    assert "thinking_budget_tokens" not in _Handler.bodies[0]


def test_thinking_on_or_off_goes_to_the_server_as_its_template_switch(client):
    for thinking, expected in (("off", {"enable_thinking": False}), ("on", {"enable_thinking": True}),
                               ("default", None)):
        session = ChatSession(client, RemoteTemplate(), model_id="qwen3", thinking=thinking)
        list(session.send("hi"))
        assert _Handler.bodies[-1].get("chat_template_kwargs") == expected, thinking
        assert _Handler.bodies[-1]["messages"] == [{"role": "user", "content": "hi"}]
