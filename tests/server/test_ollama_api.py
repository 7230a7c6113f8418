"""The official `ollama` client against `localchat serve`'s Ollama API, with a tiny real model."""

from __future__ import annotations

import json

import ollama
import pytest
import requests

from localchat.server.ollama import keep_alive_seconds
from localchat.server.schema import ApiError
from tests.support.server import serve_tiny

REPLY = "Hi 你好🙂!"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    yield from serve_tiny(tmp_path_factory, tiny_model)


@pytest.fixture
def client(server):
    return ollama.Client(host=server.url)


def test_version_tags_show_ps(client, server):
    assert requests.get(server.url + "/api/version", timeout=10).json()["version"].count(".") == 2
    models = client.list().models
    assert [m.model for m in models] == ["tiny:latest"]
    assert models[0].details.format == "gguf" and models[0].size > 0 and len(models[0].digest) == 64
    shown = client.show("tiny")
    assert "completion" in shown.capabilities
    assert shown.modelinfo["general.architecture"] == "llama"
    assert "<|im_start|>" in shown.template
    running = client.ps().models
    assert [m.model for m in running] == ["tiny:latest"] and running[0].context_length > 0


def test_chat_streamed_and_not(client):
    messages = [{"role": "user", "content": "hello"}]
    reply = client.chat(model="tiny", messages=messages, stream=False)
    assert reply.message.role == "assistant" and reply.message.content == REPLY
    assert reply.done and reply.done_reason == "stop" and reply.eval_count > 0 and reply.prompt_eval_count > 0
    parts = list(client.chat(model="tiny:latest", messages=messages, stream=True, options={"temperature": 0}))
    assert "".join(p.message.content for p in parts) == REPLY
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done and parts[-1].eval_duration > 0


def test_generate_with_options_and_raw(client):
    out = client.generate(model="tiny", prompt="hello", options={"num_predict": 3, "seed": 1}, stream=False)
    assert out.response == REPLY[:3] and out.done_reason == "length"
    streamed = "".join(p.response for p in client.generate(model="tiny", prompt="hi", system="Be brief.", stream=True))
    assert streamed == REPLY
    raw = client.generate(model="tiny", prompt="<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", raw=True)
    assert raw.response == REPLY


def test_ndjson_lines_on_the_wire(server):
    resp = requests.post(server.url + "/api/chat", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]},
                         stream=True, timeout=60)
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in resp.iter_lines() if line]
    assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"] and "total_duration" in lines[-1]


def test_empty_prompt_loads_and_keep_alive_zero_unloads(client, server):
    loaded = client.generate(model="tiny", prompt="")
    assert loaded.done_reason == "load"
    unloaded = client.generate(model="tiny", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    server.wait_health(lambda h: h["models"] == [])
    assert client.ps().models == []
    assert client.chat(model="tiny", messages=[{"role": "user", "content": "again"}]).message.content == REPLY


def test_errors_in_ollamas_shape(client, server):
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="nope", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 404 and "model 'nope' not found" in info.value.error and "tiny" in info.value.error
    for body, words in [({"model": "tiny", "messages": "x"}, "'messages' must be a list"),
                        ({"model": "tiny", "prompt": "x", "options": {"top_k": 1.5}}, "whole number"),
                        ({"model": "tiny", "prompt": "x", "keep_alive": "soon"}, "keep_alive"),
                        ({"model": "tiny", "prompt": "x", "think": True}, "does not support thinking"),
                        ({"prompt": "x"}, "'model' is required")]:
        path = "/api/chat" if "messages" in body else "/api/generate"
        resp = requests.post(server.url + path, json=body, timeout=30)
        assert resp.status_code == 400 and set(resp.json()) == {"error"} and words in resp.json()["error"], resp.text
    missing = requests.get(server.url + "/api/nothing", timeout=10)
    assert missing.status_code == 404 and set(missing.json()) == {"error"}


@pytest.mark.parametrize("value,seconds", [(None, None), (0, 0.0), ("0", 0.0), ("5m", 300.0), ("1h30m", 5400.0),
                                           ("-1", -1.0), (-1, -1.0), ("250ms", 0.25), (30, 30.0)])
def test_keep_alive_durations(value, seconds):
    assert keep_alive_seconds(value) == seconds


def test_keep_alive_nonsense_is_refused():
    with pytest.raises(ApiError, match="keep_alive"):
        keep_alive_seconds("5 minutes")


def test_ollama_tool_messages_get_ids_and_answer_their_calls():
    from localchat.server.ollama import ollama_messages

    calls = [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
             {"function": {"name": "get_time", "arguments": {}}}]
    messages = ollama_messages([{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": calls},
                                {"role": "tool", "content": "12:00", "tool_name": "get_time"},
                                {"role": "tool", "content": "sunny"}])
    first, second = messages[1].tool_calls
    assert json.loads(first.arguments) == {"city": "Paris"} and first.id != second.id
    assert [m.tool_call_id for m in messages[2:]] == [second.id, first.id]
    with pytest.raises(ApiError, match="no earlier assistant message called 'get_news'"):
        ollama_messages([{"role": "user", "content": "x"}, {"role": "tool", "content": "?", "tool_name": "get_news"}])


def test_ollama_format():
    from localchat.server.ollama import ollama_format

    assert ollama_format(None) is None and ollama_format("json").kind == "json"
    assert ollama_format({"type": "object", "properties": {"a": {"type": "integer"}}}).kind == "schema"
    with pytest.raises(ApiError, match="format.properties.a.type"):
        ollama_format({"type": "object", "properties": {"a": {"type": "int"}}})
    with pytest.raises(ApiError, match="must be \"json\""):
        ollama_format("yaml")


def test_a_tool_without_a_name_is_refused_with_the_field_to_fix(server):
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "x"}]}
    bad_tool = requests.post(server.url + "/v1/chat/completions",
                             json={**chat, "tools": [{"type": "function", "function": {}}]}, timeout=30)
    assert bad_tool.status_code == 400 and bad_tool.json()["error"]["param"] == "tools[0].function.name"
