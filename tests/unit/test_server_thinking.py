"""What clients send about thinking, parsed; what replies carry of it (no model needed)."""

from __future__ import annotations

import json

import pytest

from localchat.server.schema import ApiError, ResponseBuilder, parse_chat, usage_dict
from localchat.types import Usage

HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("extra, thinking", [
    ({}, "default"),
    ({"chat_template_kwargs": {"enable_thinking": False}}, "off"),
    ({"chat_template_kwargs": {"enable_thinking": True}}, "on"),
    ({"reasoning_effort": "none"}, "off"),
    ({"reasoning_effort": "minimal"}, "off"),
    ({"reasoning_effort": "high"}, "on"),
    ({"think": False}, "off"),
])
def test_thinking_switches_clients_send(extra, thinking):
    assert parse_chat({"messages": HI, **extra}).thinking == thinking


def test_thinking_budget_and_its_llama_server_name():
    assert parse_chat({"messages": HI, "thinking_budget": 64}).sampling["reasoning_budget"] == 64
    assert parse_chat({"messages": HI, "reasoning_budget": 0}).sampling["reasoning_budget"] == 0
    assert parse_chat({"messages": HI, "reasoning_budget": -1}).sampling["reasoning_budget"] is None
    assert parse_chat({"messages": HI, "thinking_budget_tokens": 32}).sampling["reasoning_budget"] == 32
    assert parse_chat({"messages": HI, "reasoning_budget_tokens": 16}).sampling["reasoning_budget"] == 16


@pytest.mark.parametrize("level, budget", [("low", 1024), ("medium", 4096), ("high", None)])
def test_an_effort_level_is_a_thinking_budget(level, budget):
    req = parse_chat({"messages": HI, "reasoning_effort": level})
    assert req.thinking == "on" and req.sampling.get("reasoning_budget") == budget
    explicit = parse_chat({"messages": HI, "reasoning_effort": level, "thinking_budget_tokens": 8})
    assert explicit.sampling["reasoning_budget"] == 8, "an explicit budget wins"


@pytest.mark.parametrize("extra", [{"chat_template_kwargs": {"enable_thinking": "no"}}, {"chat_template_kwargs": []},
                                   {"reasoning_effort": "max"}, {"thinking_budget": -5}, {"think": "yes"}])
def test_bad_thinking_settings_are_refused(extra):
    with pytest.raises(ApiError) as err:
        parse_chat({"messages": HI, **extra})
    assert err.value.status == 400


def test_a_thought_sent_back_is_kept_apart_from_the_answer():
    req = parse_chat({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello", "reasoning_content": "greet back"},
        {"role": "user", "content": "and?"},
        {"role": "assistant", "content": "More", "reasoning": "OpenRouter's name for it"},
        {"role": "user", "content": "ok"}]})
    assert [(m.content, m.reasoning) for m in req.messages if m.role == "assistant"] == [
        ("Hello", "greet back"), ("More", "OpenRouter's name for it")]


def test_replies_carry_reasoning_content_and_reasoning_tokens():
    builder = ResponseBuilder("qwen3", chat=True)
    usage = Usage(prompt_tokens=5, prompt_eval_tokens=5, completion_tokens=9, reasoning_tokens=6)
    message = builder.complete("Hi!", "stop", usage, reasoning="think")["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Hi!", "reasoning_content": "think"}
    assert usage_dict(usage)["completion_tokens_details"] == {"reasoning_tokens": 6}
    assert "reasoning_content" not in builder.complete("Hi!", "stop", usage)["choices"][0]["message"]
    chunk = json.loads(builder.chunk(reasoning="th", first=True)[len(b"data: "):])
    assert chunk["choices"][0]["delta"] == {"role": "assistant", "reasoning_content": "th"}
