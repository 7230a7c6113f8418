"""Function calling and structured output through `localchat serve`, with the official `openai` and `ollama`
clients and tiny crafted models (tests/support/toolmodels.py) that answer with a fixed `<tool_call>` block.

Every test runs against a server on each decode path: `--parallel 4` (continuous batching, as `serve`
defaults to) and `--parallel 1` (the single-stream loop the TUI and `localchat run` use).
"""

from __future__ import annotations

import json

import ollama
import openai
import pytest
import requests

from tests.server.conftest import start_server
from tests.support.models import register_local_model
from tests.support.toolmodels import (
    ANSWER,
    ARGUMENTS,
    CALL,
    CLOCK,
    MODELS,
    PERSON,
    WEATHER,
    make_tool_model,
    valid_weather,
)

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module", params=["4", "1"], ids=["batched", "single"])
def server(request, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    home = tmp_path_factory.mktemp("serve") / "home"
    for model_id, (_, template) in MODELS.items():
        register_local_model(home, make_tool_model(models, model_id), model_id, template=template)
    server = start_server(home, "--model", "weather", "--max-models", "8", "--parallel", request.param)
    assert server.health()["models"][0]["parallel"] == int(request.param)
    yield server
    server.stop()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)


def ask(client, model="weather", **kwargs):
    kwargs.setdefault("messages", ASK)
    return client.chat.completions.create(model=model, temperature=0, max_tokens=200, **kwargs)


# --- OpenAI -------------------------------------------------------------------------------------------


def test_round_trip_call_result_answer(client):
    first = ask(client, tools=[WEATHER, CLOCK])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == ARGUMENTS
    history = [*ASK, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    final = ask(client, tools=[WEATHER, CLOCK], messages=history)
    assert final.choices[0].message.content == ANSWER and not final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "stop"


def test_tool_call_streams_as_openai_deltas(client):
    chunks = list(ask(client, tools=[WEATHER], stream=True))
    pieces = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert pieces[0].id.startswith("call_") and pieces[0].function.name == "get_weather" and pieces[0].index == 0
    assert all(p.id is None and p.function.name is None and p.index == 0 for p in pieces[1:])
    assert json.loads("".join(p.function.arguments or "" for p in pieces)) == ARGUMENTS
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_parallel_calls_come_in_order_and_parallel_false_keeps_one(client):
    chunks = list(ask(client, model="twice", tools=[WEATHER], stream=True))
    pieces = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    firsts = [p for p in pieces if p.id is not None]
    assert [p.index for p in firsts] == [0, 1] and firsts[0].id != firsts[1].id
    cities = [json.loads("".join(p.function.arguments for p in pieces if p.index == i))["city"] for i in (0, 1)]
    assert cities == ["Paris", "London"]
    whole = ask(client, model="twice", tools=[WEATHER]).choices[0].message.tool_calls
    assert [json.loads(c.function.arguments)["city"] for c in whole] == ["Paris", "London"]
    one = ask(client, model="twice", tools=[WEATHER], parallel_tool_calls=False).choices[0]
    assert len(one.message.tool_calls) == 1 and one.finish_reason == "tool_calls"


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_tool_choice_required_or_named_gives_a_call(client, choice):
    reply = ask(client, tools=[WEATHER, CLOCK], tool_choice=choice, parallel_tool_calls=False)
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == ARGUMENTS


def test_tool_choice_none_offers_no_tools_and_parses_no_calls(client):
    offered = ask(client, tools=[WEATHER])
    reply = ask(client, tools=[WEATHER], tool_choice="none")
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == CALL  # the model's text as it wrote it: nothing was parsed
    assert reply.usage.prompt_tokens < offered.usage.prompt_tokens  # the tool list is not in the prompt


@pytest.mark.parametrize("choice", ["auto", "required"])
def test_the_grammar_keeps_arguments_valid_when_the_model_is_not(client, choice):
    reply = ask(client, model="stubborn", tools=[WEATHER], tool_choice=choice, parallel_tool_calls=False)
    [call] = reply.choices[0].message.tool_calls
    arguments = json.loads(call.function.arguments)
    assert arguments["city"] == "Paris" and valid_weather(arguments), arguments
    unconstrained = ask(client, model="stubborn", tools=[WEATHER], tool_choice="none")
    assert '"unit": "kelvin"' in unconstrained.choices[0].message.content  # what it says left alone


def test_qwen3_coder_xml_calls_parse_and_stream(client):
    reply = ask(client, model="coder", tools=[WEATHER])
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    chunks = list(ask(client, model="coder", tools=[WEATHER], tool_choice="required", stream=True))
    pieces = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert pieces[0].function.name == "get_weather"
    assert json.loads("".join(p.function.arguments or "" for p in pieces)) == {"city": "Paris"}


def test_strict_json_schema_output_validates(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for stream in (False, True):
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in ask(client, model="person", stream=True,
                                                                          response_format=fmt) if c.choices)
        else:
            text = ask(client, model="person", response_format=fmt).choices[0].message.content
        data = json.loads(text)  # the model says "age": "old"; the grammar makes it a number
        assert set(data) == {"name", "age"} and data["name"] == "Ada" and isinstance(data["age"], int)


@pytest.mark.parametrize("choice", ["auto", "required"])
def test_a_model_that_thinks_first_calls_after_its_thought(client, choice):
    """Qwen3.5's prompt opens the thought: the grammar waits for `</think>`, so the thought stays free and
    the call after it is still constrained (from the first token, it would force the call into the thought)."""
    reply = ask(client, model="thinker", tools=[WEATHER], tool_choice=choice)
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert reply.choices[0].finish_reason == "tool_calls"


def test_json_schema_holds_after_a_thought(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    data = json.loads(ask(client, model="thinking-person", response_format=fmt).choices[0].message.content)
    assert data["name"] == "Ada" and isinstance(data["age"], int)


BAD_REQUESTS = [
    ({"tools": [{"type": "function", "function": {"parameters": {"type": "object"}}}]}, "tools[0].function.name",
     "no name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"code": {"type": "string", "pattern": "^[[:alpha:]]+$"}}}}}]},
     "tools[0].function.parameters.properties.code.pattern", "grammar cannot express"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_wether"}}},
     "tool_choice", "not among the tools"),
    ({"tools": [WEATHER], "messages": [*ASK, {"role": "tool", "tool_call_id": "call_x", "content": "21 C"}]},
     "messages[1].tool_call_id", "no earlier assistant message called"),
]


@pytest.mark.parametrize(("extra", "param", "words"), BAD_REQUESTS)
def test_bad_tool_requests_get_openais_error_shape(client, extra, param, words):
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, **extra)
    error = info.value.body
    assert error["param"] == param and words in error["message"] and error["type"] == "invalid_request_error"


# --- Ollama -------------------------------------------------------------------------------------------


@pytest.fixture
def ollama_client(server):
    return ollama.Client(host=server.url)


def test_ollama_round_trip_with_tool_calls(ollama_client):
    first = ollama_client.chat("weather", messages=ASK, tools=[WEATHER], options={"temperature": 0})
    [call] = first.message.tool_calls
    assert call.function.name == "get_weather" and dict(call.function.arguments) == ARGUMENTS
    assert first.done_reason == "stop" and not first.message.content
    history = [*ASK, first.message, {"role": "tool", "content": "sunny, 21 C", "tool_name": "get_weather"}]
    final = ollama_client.chat("weather", messages=history, tools=[WEATHER], options={"temperature": 0})
    assert final.message.content == ANSWER and not final.message.tool_calls


def test_ollama_streams_a_call_whole(ollama_client):
    parts = list(ollama_client.chat("weather", messages=ASK, tools=[WEATHER], stream=True,
                                    options={"temperature": 0}))
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [("get_weather", ARGUMENTS)]
    assert parts[-1].done and "".join(p.message.content or "" for p in parts) == ""


def test_ollama_show_lists_tools_for_a_template_that_has_them(ollama_client):
    assert "tools" in ollama_client.show("weather").capabilities
    assert "tools" not in ollama_client.show("person").capabilities


def test_ollama_format_schema_validates(ollama_client):
    reply = ollama_client.chat("person", messages=ASK, format=PERSON, options={"temperature": 0})
    data = json.loads(reply.message.content)
    assert data["name"] == "Ada" and isinstance(data["age"], int)
    generated = ollama_client.generate("person", "Who?", format=PERSON, options={"temperature": 0})
    assert isinstance(json.loads(generated.response)["age"], int)


@pytest.mark.parametrize(("body", "words"), [
    ({"tools": [{"type": "function", "function": {}}]}, "no name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"n": {"type": "int"}}}}}]}, "properties.n.type"),
    ({"messages": [*ASK, {"role": "tool", "content": "21 C", "tool_name": "get_weather"}]}, "no earlier assistant"),
    ({"tools": [WEATHER], "format": "json"}, "cannot constrain one reply together"),
])
def test_bad_ollama_tool_requests_get_its_error_shape(server, ollama_client, body, words):
    payload = {"model": "weather", "messages": ASK, "stream": False, **body}
    resp = requests.post(server.url + "/api/chat", json=payload, timeout=30)
    assert resp.status_code == 400 and set(resp.json()) == {"error"} and words in resp.json()["error"]
    with pytest.raises(ollama.ResponseError) as info:
        ollama_client.chat("weather", messages=payload["messages"], tools=body.get("tools"),
                           format=body.get("format"))
    assert info.value.status_code == 400 and words in info.value.error
