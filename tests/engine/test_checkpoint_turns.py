"""Checkpoints through the worker: a hybrid model (tiny qwen35) reuses its cache where a prompt leaves it
before its end, and `checkpoint_ram: 0` shows what it would cost without them."""

from __future__ import annotations

import pytest

from localchat.engine.llama.sequence import TAIL
from localchat.types import SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=8)
# A Qwen3.5-style generation prompt ends "<think>\n" (two tokens in Qwen's vocabulary; the tiny vocabulary
# spells it in bytes, so one byte stands in for it), and the history renders the reply without it.
THINK = "<|im_start|>assistant\n\t"


@pytest.fixture(scope="module")
def tiny_qwen35(tmp_path_factory):
    from tests.support.ggufgen import make_tiny_qwen35_gguf

    return make_tiny_qwen35_gguf(tmp_path_factory.mktemp("models") / "tiny-qwen35.gguf")


def user(i: int) -> str:
    return f"<|im_start|>user\nquestion {i}: tell me something about the number {i} please<|im_end|>\n"


def reply_usage(client, prompt: str):
    with client.generate(prompt, GREEDY) as gen:
        text = "".join(e.text for e in gen)
    return text, gen.usage


@pytest.mark.parametrize("ram", [None, 0])
def test_hybrid_model_next_turn_regenerate_and_switch(start, tiny_qwen35, ram):
    client = start(tiny_qwen35, checkpoint_ram=ram)
    system = "<|im_start|>system\nconversation A<|im_end|>\n"
    history = system + user(1)
    answer, first = reply_usage(client, history + THINK)
    evaluated = []
    for i in range(2, 5):  # the history renders the answer without the <think> the model was given
        history += f"<|im_start|>assistant\n{answer}<|im_end|>\n" + user(i)
        _, usage = reply_usage(client, history + THINK)
        evaluated.append(usage.prompt_eval_tokens)
    new = client.count_tokens([f"{answer}<|im_end|>\n" + user(4) + THINK])[0]
    _, regen = reply_usage(client, history + THINK)
    _, other = reply_usage(client, "<|im_start|>system\nconversation B<|im_end|>\n" + user(9) + THINK)
    history += f"<|im_start|>assistant\n{answer}<|im_end|>\n" + user(5)
    _, back = reply_usage(client, history + THINK)
    back_new = client.count_tokens([f"{answer}<|im_end|>\n" + user(5) + THINK])[0]
    if ram == 0:  # no checkpoints: every prompt that leaves the cache is evaluated from its first token
        assert evaluated[-1] == usage.prompt_tokens and regen.prompt_eval_tokens == regen.prompt_tokens
        assert back.prompt_eval_tokens == back.prompt_tokens
        return
    # From the checkpoint TAIL tokens before the previous prompt's end: those and the new ones.
    assert evaluated[-1] <= new + TAIL < first.prompt_tokens + new
    assert regen.prompt_eval_tokens == TAIL
    assert other.prompt_eval_tokens == other.prompt_tokens
    assert back.prompt_eval_tokens <= back_new + TAIL  # conversation A was parked, then restored
