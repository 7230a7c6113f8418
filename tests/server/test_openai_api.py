"""The official openai client and plain `requests` against `localchat serve` with a tiny real model."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import openai
import pytest
import requests

from tests.support.server import serve_tiny

REPLY = "Hi 你好🙂!"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    """One server for the module: these tests only read from it (starting one costs a model load)."""
    yield from serve_tiny(tmp_path_factory, tiny_model)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)


def test_models_lists_installed_models(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny"]
    assert models[0].owned_by == "localchat"
    assert client.models.retrieve("tiny").id == "tiny"


def test_chat_completion(client):
    r = client.chat.completions.create(model="tiny", messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}])
    assert r.object == "chat.completion" and r.model == "tiny"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == REPLY
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_completion_stream_with_and_without_include_usage(client):
    chunks = list(client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None and last.usage.completion_tokens > 0  # usage always on the last chunk

    chunks = list(client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0  # OpenAI's own usage chunk
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY


def test_text_completion_and_its_stream(client):
    r = client.completions.create(model="tiny", prompt="<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert r.object == "text_completion"
    assert r.choices[0].text == REPLY and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens > 0

    chunks = list(client.completions.create(model="tiny", prompt="<|im_start|>assistant\n", stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == REPLY
    assert chunks[-1].usage.completion_tokens > 0


def test_sampling_parameters_are_applied(client):
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=3,
                                       temperature=0, top_p=0.5, seed=7, presence_penalty=0.1,
                                       frequency_penalty=0.1)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], stop=["你"])
    assert r.choices[0].message.content == "Hi " and r.choices[0].finish_reason == "stop"


def test_tutorial_style_root_endpoint(server):
    r = requests.post(server.url + "/", json={"prompt": "hello", "history": [], "max_length": 2048,
                                              "top_p": 0.7, "temperature": 0.95}, timeout=60)
    assert r.status_code == 200
    body = r.json()
    assert body["response"] == REPLY and body["status"] == 200
    assert body["history"] == [["hello", REPLY]]
    assert len(body["time"]) == len("2024-01-01 12:00:00")
    # The next call sends the history back, as the tutorial scripts do.
    again = requests.post(server.url + "/", json={"prompt": "more", "history": body["history"]}, timeout=60).json()
    assert again["history"] == [["hello", REPLY], ["more", REPLY]]
    # ChatGLM3-style history of role/content objects comes back in that shape.
    dicts = requests.post(server.url + "/", json={"prompt": "q", "history": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, timeout=60).json()
    assert dicts["history"][-2:] == [{"role": "user", "content": "q"}, {"role": "assistant", "content": REPLY}]
    # max_length counts the prompt too: too small to leave room for a reply is a 400.
    r = requests.post(server.url + "/", json={"prompt": "hello", "max_length": 5}, timeout=60)
    assert r.status_code == 400 and "max_length" in r.json()["error"]["message"]


def test_health(server, client):
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
    health = server.wait_health(lambda h: not h["models"][0]["busy"])
    assert health["status"] == "ok"
    # serve decodes several replies at once: its slots (parallel, auto: 4 on a CPU) and those running
    assert health["models"] == [{"id": "tiny", "state": "ready", "busy": False, "running": 0, "parallel": 4,
                                 "queued": 0}]
    assert health["generations"]["completed"] >= 1


@pytest.mark.parametrize("body, words", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (json.dumps({"model": "tiny", "messages": []}).encode(), "messages"),
    (json.dumps({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}).encode(), "role"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": -1}).encode(),
     "temperature"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "top_p": 1.5}).encode(), "top_p"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}).encode(),
     "max_tokens"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}).encode(),
     "temperature"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 3}).encode(), "n must be 1"),
    (json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stop": [""]}).encode(), "stop"),
])
def test_bad_requests_are_400_with_openai_error_json(server, body, words):
    r = requests.post(server.v1 + "/chat/completions", data=body, headers={"Content-Type": "application/json"},
                      timeout=60)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and words in error["message"]


def test_bad_parameters_through_the_openai_client(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], temperature=-2)
    assert "temperature" in str(err.value)


def test_prompt_longer_than_the_context_window_is_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="ab " * 3000)
    assert err.value.code == "context_length_exceeded"


def test_unknown_model_is_404_listing_the_available_ones(client, server):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert "tiny" in str(err.value)
    r = requests.post(server.v1 + "/completions", json={"model": "qwen2.5-7b-instruct", "prompt": "x"}, timeout=60)
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "model_not_found" and error["available"] == ["tiny"]
    assert "not installed" in error["message"]
    assert requests.get(server.v1 + "/models/nope", timeout=60).status_code == 404


def test_unknown_route_is_an_openai_error(server):
    r = requests.get(server.v1 + "/engines", timeout=60)
    assert r.status_code == 404 and "error" in r.json()


def test_body_over_the_limit_is_413_before_it_is_read(server):
    # The declared length alone decides: the server answers without waiting for the 64 MiB.
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 67108864\r\n\r\n{\"model\":")
        reply = _read_response(sock)
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"request_too_large" in reply
    # A chunked body (no declared length) is cut off once it passes the limit.
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * 65536
        for _ in range(4 * 1024 * 1024 // len(piece) + 1):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        reply = _read_response(sock)
    assert reply.startswith(b"HTTP/1.1 413")
    # Plain clients see it too.
    r = requests.post(server.v1 + "/completions", data=b"x" * (4 * 1024 * 1024 + 1), timeout=60)
    assert r.status_code == 413


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        part = sock.recv(65536)
        if not part:
            break
        data += part
    return data
