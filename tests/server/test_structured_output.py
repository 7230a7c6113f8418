"""Structured output through `localchat serve` with the official openai client and a real Qwen model:
the grammar runs in the worker, so the reply always parses and follows the schema."""

from __future__ import annotations

import json

import openai
import pytest

from tests.server.conftest import start_server
from tests.support.models import register_local_model

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "languages"],
          "properties": {"name": {"type": "string", "maxLength": 40}, "age": {"type": "integer"},
                         "languages": {"type": "array", "items": {"type": "string", "enum": ["en", "fr", "zh"]},
                                       "maxItems": 3}}}


@pytest.fixture(scope="module")
def client(tmp_path_factory, qwen_coder_path):
    home = tmp_path_factory.mktemp("serve") / "home"
    register_local_model(home, qwen_coder_path, "qwen", template="qwen")
    server = start_server(home, "--model", "qwen")
    yield openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)
    server.stop()


def test_strict_json_schema_reply_parses_and_validates(client):
    reply = client.chat.completions.create(
        model="qwen", temperature=0, max_tokens=120,
        messages=[{"role": "user", "content": "Invent a person who speaks French and English."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}})
    data = json.loads(reply.choices[0].message.content)
    assert set(data) == {"name", "age", "languages"} and isinstance(data["age"], int)
    assert isinstance(data["name"], str) and set(data["languages"]) <= {"en", "fr", "zh"}
    assert reply.choices[0].finish_reason == "stop"


def test_json_object_reply_streams_and_parses(client):
    parts = client.chat.completions.create(
        model="qwen", temperature=0, max_tokens=120, stream=True, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Give the capital of France as JSON."}])
    text = "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
    assert isinstance(json.loads(text), dict)


def test_a_schema_that_cannot_be_a_grammar_is_a_400_naming_the_path(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="qwen", messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
                "type": "object", "properties": {"code": {"type": "string", "pattern": "^[[:alpha:]]+$"}}}}})
    error = info.value.body
    assert error["param"] == "response_format.json_schema.schema.properties.code.pattern"
    assert error["code"] == "invalid_schema" and "[:" in error["message"]
