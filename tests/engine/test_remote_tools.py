"""Tool calls and structured output on a remote engine: the tools go to the server as OpenAI's body fields
(not rendered into a system message), the calls it streams as `tool_calls` pieces come back as
ToolCallDelta events and `turn.tool_calls`, and the tool results go back in OpenAI's message shape. The
server here is a fake OpenAI-compatible one on 127.0.0.1 that replays scripted chunks."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from localchat.chat import ChatSession
from localchat.engine.api import ReasoningDelta, TextDelta, ToolCallDelta
from localchat.engine.remote import RemoteEngineClient, RemoteTemplate
from localchat.structured import parse_response_format
from localchat.tools import parse_tools
from localchat.tooluse import prepare
from localchat.types import Message, ModelInfo, SamplingParams, ToolCall

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}

# a call as llama-server and vLLM stream it: id and name first, the arguments in fragments
CALL_CHUNKS = [
    {"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]},
]
ANSWER_CHUNKS = [{"content": "It is sunny "}, {"content": "in Paris."}]


class FakeServer:
    """Answers each POST with the next scripted reply (a list of deltas and its finish reason)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.replies: list[tuple[list[dict], str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                fake.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                deltas, finish = fake.replies.pop(0) if fake.replies else ([{"content": "ok"}], "stop")
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for i, delta in enumerate(deltas):
                    last = i == len(deltas) - 1
                    event = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish if last else None}]}
                    self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                usage = {"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": len(deltas)}}
                self.wfile.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.http.server_address[1]}/v1"


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    threading.Thread(target=fake.http.serve_forever, daemon=True).start()
    try:
        yield fake
    finally:
        fake.http.shutdown()
        fake.http.server_close()


def _client(server: FakeServer) -> RemoteEngineClient:
    return RemoteEngineClient(server.endpoint, "qwen3", None, ModelInfo(path="remote", n_ctx=8192))


def _session(server: FakeServer, tools, system: str | None = None) -> ChatSession:
    return ChatSession(_client(server), RemoteTemplate(), model_id="qwen3", system=system, tools=tools,
                       sampling=SamplingParams(max_tokens=100))


def test_a_tool_call_round_trip_goes_through_the_servers_own_tool_fields(server):
    server.replies = [(CALL_CHUNKS, "tool_calls"), (ANSWER_CHUNKS, "stop")]
    session = _session(server, parse_tools([WEATHER]), system="Be brief.")
    turn = session.send("Weather in Paris?")
    events = list(turn)

    first = server.bodies[0]
    assert first["tools"] == [WEATHER] and first["tool_choice"] == "auto" and "parallel_tool_calls" not in first
    # the server renders the tools: no tool listing of ours in the system message, no grammar, no format
    assert first["messages"] == [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Weather in Paris?"}]
    assert "response_format" not in first and "grammar" not in first
    assert events == [ToolCallDelta(0, "call_abc", "get_weather", ""), ToolCallDelta(0, None, None, '{"city": '),
                      ToolCallDelta(0, None, None, '"Paris"}')]
    assert turn.tool_calls == (ToolCall("call_abc", "get_weather", '{"city": "Paris"}'),)
    assert turn.generation.finish_reason == "tool_calls" and turn.status == "complete" and turn.text == ""

    session.answer_tool("call_abc", "sunny, 21 C")
    answer = session.resume()
    assert "".join(e.text for e in answer if isinstance(e, TextDelta)) == "It is sunny in Paris."
    second = server.bodies[1]
    assert second["messages"][2:] == [
        {"role": "assistant", "content": "",
         "tool_calls": [{"id": "call_abc", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "content": "sunny, 21 C", "tool_call_id": "call_abc"}]
    assert second["tools"] == [WEATHER]
    assert answer.tool_calls == () and answer.generation.finish_reason == "stop"
    assert session.messages[-1] == Message("assistant", "It is sunny in Paris.")


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    ("none", None, {"tool_choice": "none"}),
    ("required", None, {"tool_choice": "required"}),
    ({"type": "function", "function": {"name": "get_time"}}, None,
     {"tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
    ("auto", False, {"tool_choice": "auto", "parallel_tool_calls": False}),
])
def test_tool_choice_and_parallel_calls_map_to_the_openai_fields(server, choice, parallel, expected):
    list(_session(server, parse_tools([WEATHER, TIME], choice, parallel)).send("What time is it?"))
    body = server.bodies[-1]
    assert body["tools"] == [WEATHER, TIME]  # "none" too: the model still knows what its history called
    assert {k: body[k] for k in ("tool_choice", "parallel_tool_calls") if k in body} == expected


def test_a_server_that_writes_the_call_as_text_gives_text(server):
    written = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    server.replies = [([{"content": written[:20]}, {"content": written[20:]}], "stop")]
    turn = _session(server, parse_tools([WEATHER])).send("Weather in Paris?")
    assert turn.run() == written
    assert turn.tool_calls == () and turn.generation.finish_reason == "stop" and turn.status == "complete"


def test_parallel_calls_whole_in_one_chunk_with_a_thought_and_text(server):
    # Ollama's /v1 sends a call whole; a server may send the arguments as an object or leave out the id
    server.replies = [([{"reasoning_content": "Two calls.", "content": "Checking.", "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                                       "arguments": '{"city": "Oslo"}'}},
        {"index": 1, "type": "function", "function": {"name": "get_time", "arguments": {"zone": "CET"}}}]}],
        "tool_calls")]
    generation = _client(server).generate([Message("user", "Oslo?")], SamplingParams(max_tokens=50))
    events = list(generation)
    generated_id = generation.tool_calls[1].id
    assert events == [ReasoningDelta("Two calls."), TextDelta("Checking."),
                      ToolCallDelta(0, "call_1", "get_weather", '{"city": "Oslo"}'),
                      ToolCallDelta(1, generated_id, "get_time", '{"zone": "CET"}')]
    assert generated_id.startswith("call_")
    assert generation.tool_calls == (ToolCall("call_1", "get_weather", '{"city": "Oslo"}'),
                                     ToolCall(generated_id, "get_time", '{"zone": "CET"}'))
    assert generation.text == "Checking." and generation.finish_reason == "tool_calls"


@pytest.mark.parametrize(("response_format", "expected"), [
    ({"type": "json_object"}, {"type": "json_object"}),
    ({"type": "json_schema", "json_schema": {"name": "city", "schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
     {"type": "json_schema", "json_schema": {"name": "response", "strict": True, "schema": {
         "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}),
])
def test_a_response_format_goes_to_the_server_as_openais(server, response_format, expected):
    prompt, sampling, wrap = prepare(RemoteTemplate(), [Message("user", "A city?")], None,
                                     parse_response_format(response_format), SamplingParams(max_tokens=50))
    assert prompt == [Message("user", "A city?")]
    list(wrap(_client(server).generate(prompt, sampling)))
    assert server.bodies[-1]["response_format"] == expected
    assert "tools" not in server.bodies[-1]


def test_the_remote_template_keeps_calls_and_results():
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    messages = [Message("user", "Weather?"), Message("assistant", "", (call,), reasoning="Look it up."),
                Message("tool", "sunny", tool_call_id="call_1")]
    assert RemoteTemplate().render(messages) == [Message("user", "Weather?"), Message("assistant", "", (call,)),
                                                 Message("tool", "sunny", tool_call_id="call_1")]


def test_prepare_for_a_remote_engine_sets_no_grammar_and_wraps_nothing():
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    conversation = [Message("user", "Weather?"), Message("assistant", "", (call,)),
                    Message("tool", "sunny", tool_call_id="call_1")]
    as_json = SamplingParams(grammar={"kind": "json"})  # what --json puts on the sampling
    prompt, sampling, wrap = prepare(RemoteTemplate(), conversation, parse_tools([WEATHER], "required"), None, as_json)
    assert prompt == conversation
    assert sampling.grammar is None and sampling.tools == {"tools": [WEATHER], "tool_choice": "required"}
    generation = object()
    assert wrap(generation) is generation  # type: ignore[arg-type]  # the remote generation reads the calls itself
    # tool_choice "none": the tools still go along, and a response format holds
    _, sampling, _ = prepare(RemoteTemplate(), conversation, parse_tools([WEATHER], "none"), None, as_json)
    assert sampling.grammar == {"kind": "json"} and sampling.tools == {"tools": [WEATHER], "tool_choice": "none"}
