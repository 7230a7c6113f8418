"""Embedding requests parsed and checked (OpenAI's and Ollama's shapes), and the vectors encoded."""

from __future__ import annotations

import base64
import struct

import pytest

from localchat.server.embeddings import MAX_INPUTS, encode, parse_ollama, parse_openai, shorten
from localchat.server.schema import ApiError


def test_openai_inputs():
    assert parse_openai({"input": "one"}).inputs == ["one"]
    req = parse_openai({"model": "m", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 8})
    assert req.inputs == ["a", "b"] and req.base64 and req.dimensions == 8 and not req.truncate
    assert parse_ollama({"model": "m", "input": "x"}).truncate and not parse_ollama({"input": "x", "truncate": False}).truncate


@pytest.mark.parametrize("body,param,words", [
    ({"input": ""}, "input", "empty"),
    ({"input": ["ok", "  "]}, "input[1]", "empty"),
    ({"input": []}, "input", "non-empty"),
    ({"input": [1, 2, 3]}, "input[0]", "token arrays"),
    ({"input": ["x"] * (MAX_INPUTS + 1)}, "input", f"at most {MAX_INPUTS}"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format", "float"),
    ({"input": "x", "dimensions": 0}, "dimensions", "positive"),
])
def test_bad_inputs_name_the_field(body, param, words):
    with pytest.raises(ApiError) as info:
        parse_openai(body)
    assert info.value.status == 400 and info.value.param == param and words in info.value.message


def test_encoding_and_shortening():
    vector = [0.6, 0.8, 0.0]
    assert encode(vector, False) is vector
    assert struct.unpack("<3f", base64.b64decode(encode(vector, True))) == pytest.approx(tuple(vector))
    assert shorten([0.6, 0.8, 0.0], 1) == [1.0] and shorten(vector, None) is vector
