"""The decode loop itself (in this process), and its stop-string helpers."""

from __future__ import annotations

import pytest

from localchat.engine.llama.model import NativeModel, _find_stop, _stop_prefix_len, plan_offload
from localchat.types import LoadOptions, SamplingParams
from tests.support.ggufgen import CHAT_PROMPT

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def native_tiny(tiny_model):
    model = NativeModel(tiny_model, LoadOptions(n_ctx=512))
    yield model
    model.close()


def test_each_character_is_yielded_whole_once_its_last_byte_arrives(native_tiny):
    pieces = list(native_tiny.generate(CHAT_PROMPT, GREEDY, lambda: False))
    assert pieces == ["H", "i", " ", "你", "好", "🙂", "!"]
    assert native_tiny.last_usage["completion_tokens"] == 13


def test_max_tokens_inside_a_character_cuts_it_instead_of_showing_it_broken(native_tiny):
    # tokens: H i ' ' E4 BD A0 ... -> the 5th token ends in the middle of 你
    pieces = list(native_tiny.generate(CHAT_PROMPT, SamplingParams(temperature=0, max_tokens=5), lambda: False))
    assert "".join(pieces) == "Hi "
    assert native_tiny.last_usage["finish_reason"] == "length"


def test_cancel_is_checked_every_token(native_tiny):
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) > 3

    pieces = list(native_tiny.generate(CHAT_PROMPT, GREEDY, cancelled))
    usage = native_tiny.last_usage
    assert usage["finish_reason"] == "cancelled"
    assert "".join(pieces) == "Hi "
    # one poll before the prompt's single chunk, then one per token: the 4th poll comes after 3 tokens
    assert usage["completion_tokens"] == 3


def test_kv_cache_keeps_the_tokens_it_holds(native_tiny):
    list(native_tiny.generate(CHAT_PROMPT, GREEDY, lambda: False))
    prompt_tokens = native_tiny.tokenize(CHAT_PROMPT)
    # the prompt and every generated token but the last (sampled, never decoded) sit in the cache
    assert native_tiny.cached[: len(prompt_tokens)] == prompt_tokens
    assert len(native_tiny.cached) == len(prompt_tokens) + 13


@pytest.mark.parametrize(
    ("text", "stops", "found", "hold"),
    [
        ("hello wor", ("world",), -1, 3),
        ("hello world", ("world",), 6, 0),
        ("abc", ("x",), -1, 0),
        ("ab<|", ("<|im_end|>", "b<"), 1, 3),
        ("aaa", ("aab",), -1, 2),
    ],
)
def test_stop_helpers(text, stops, found, hold):
    assert _find_stop(text, stops) == found
    if found < 0:
        assert _stop_prefix_len(text, stops) == hold


def test_offload_plan_on_a_cpu_only_build():
    assert plan_offload("auto", False).n_gpu_layers == 0
    assert plan_offload("auto", True).n_gpu_layers == -1
    assert plan_offload(12, False).n_gpu_layers == 0
    assert "no GPU offload" in plan_offload(12, False).note
    assert plan_offload(12, True).n_gpu_layers == 12
