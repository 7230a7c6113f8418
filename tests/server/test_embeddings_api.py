"""/v1/embeddings with the official openai client, /api/embed and /api/embeddings with the official ollama
client, on a tiny generated embedding model and a tiny chat model; errors in each API's shape."""

from __future__ import annotations

import base64
import math
import re
import struct

import ollama
import openai
import pytest
import requests

from tests.server.conftest import start_server
from tests.support.embedgen import PARAPHRASES, UNRELATED
from tests.support.models import register_local_model


def cosine(a, b) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model, tiny_embedding_model):
    home = tmp_path_factory.mktemp("serve") / "home"
    register_local_model(home, tiny_model, "tiny")
    register_local_model(home, tiny_embedding_model, "embed", context=512)
    server = start_server(home, "--model", "embed", "--max-models", "2", "--ollama-port", "0")
    yield server
    server.stop()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)


@pytest.fixture
def ollama_client(server):
    """The ollama client on the second port (`--ollama-port`), as a tool that assumes 11434 would reach it."""
    found = re.search(r"Ollama API also on (http://127\.0\.0\.1:\d+)", server.log.read_text())
    assert found, server.log.read_text()
    assert found.group(1) != server.url
    return ollama.Client(host=found.group(1))


def test_openai_embeddings_rank_a_paraphrase_first_with_usage(client):
    reply = client.embeddings.create(model="embed", input=[*PARAPHRASES, UNRELATED])
    a, b, other = (d.embedding for d in sorted(reply.data, key=lambda d: d.index))
    assert cosine(a, b) > cosine(a, other) + 0.1
    assert abs(sum(x * x for x in a) - 1.0) < 1e-6 and len(a) == 64
    assert reply.usage.prompt_tokens == reply.usage.total_tokens > 3 and reply.model == "embed"


def test_one_string_base64_and_dimensions(client, server):
    single = client.embeddings.create(model="embed", input=PARAPHRASES[0]).data[0].embedding
    raw = requests.post(server.v1 + "/embeddings", timeout=60, json={
        "model": "embed", "input": PARAPHRASES[0], "encoding_format": "base64"}).json()
    decoded = struct.unpack("<64f", base64.b64decode(raw["data"][0]["embedding"]))
    assert max(abs(x - y) for x, y in zip(decoded, single)) < 1e-6
    short = client.embeddings.create(model="embed", input=PARAPHRASES[0], dimensions=16).data[0].embedding
    assert len(short) == 16 and abs(sum(x * x for x in short) - 1.0) < 1e-6


def test_a_chat_model_answers_too(client):
    reply = client.embeddings.create(model="tiny", input=["hello", "hello there"])
    assert len(reply.data) == 2 and len(reply.data[0].embedding) > 0


def test_openai_errors_say_what_to_fix(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="embed", input=["fine", "  "])
    assert info.value.body["param"] == "input[1]" and "empty" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="embed", input=["cat " * 400])
    body = info.value.body
    assert body["code"] == "context_length_exceeded" and body["param"] == "input"
    assert "input[0] is 800 tokens" in body["message"] and "at most 512" in body["message"]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")


def test_ollama_embed_and_the_legacy_route(ollama_client):
    reply = ollama_client.embed(model="embed", input=[*PARAPHRASES, UNRELATED])
    a, b, other = reply.embeddings
    assert cosine(a, b) > cosine(a, other) + 0.1 and reply.prompt_eval_count > 3
    one = ollama_client.embed(model="embed:latest", input=PARAPHRASES[0]).embeddings
    assert len(one) == 1 and max(abs(x - y) for x, y in zip(one[0], a)) < 1e-6
    legacy = ollama_client.embeddings(model="embed", prompt=PARAPHRASES[0]).embedding
    assert max(abs(x - y) for x, y in zip(legacy, a)) < 1e-6
    # Ollama truncates a long input by default; truncate=false refuses it with the numbers
    assert len(ollama_client.embed(model="embed", input="cat " * 400).embeddings) == 1
    with pytest.raises(ollama.ResponseError) as info:
        ollama_client.embed(model="embed", input="cat " * 400, truncate=False)
    assert info.value.status_code == 400 and "800 tokens" in info.value.error and "512" in info.value.error


def test_ollama_embed_errors_in_ollamas_shape(server):
    for body, words in [({"model": "embed", "input": []}, "non-empty"),
                        ({"model": "embed", "input": ""}, "empty"),
                        ({"input": "x"}, "'model' is required")]:
        resp = requests.post(server.url + "/api/embed", json=body, timeout=30)
        assert resp.status_code == 400 and set(resp.json()) == {"error"} and words in resp.json()["error"], resp.text
    legacy = requests.post(server.url + "/api/embeddings", json={"model": "embed", "prompt": ""}, timeout=30)
    assert legacy.status_code == 400 and "'prompt'" in legacy.json()["error"]


def test_embed_keep_alive_zero_unloads(ollama_client, server):
    ollama_client.embed(model="tiny", input="hello", keep_alive=0)
    server.wait_health(lambda h: "tiny" not in [m["id"] for m in h["models"]])
    assert "tiny:latest" not in [m.model for m in ollama_client.ps().models]


def test_show_says_an_embedding_model_embeds_only(ollama_client):
    assert ollama_client.show("embed").capabilities == ["embedding"]
    assert ollama_client.show("tiny").capabilities == ["completion"]
