"""Multi-turn: the KV cache of earlier turns is reused, so turn 10 evaluates only its new message."""

from __future__ import annotations

import pytest

from localchat.chat import ChatSession
from localchat.templates import native
from localchat.types import SamplingParams

# Long user messages, so turn 10's prompt holds thousands of tokens while each new message is a few dozen.
TOPICS = ["rivers", "mountains", "deserts", "forests", "oceans", "glaciers", "volcanoes", "islands", "lakes", "caves"]


def user_message(i: int) -> str:
    return (f"Question {i + 1}: tell me about {TOPICS[i]}. I am writing a long essay about the geography of "
            f"the world and I want to understand how {TOPICS[i]} form, where the largest ones are, and why "
            "they matter to the people who live near them. Please answer in two sentences.")


@pytest.mark.slow
def test_turn_10_evaluates_only_its_new_message(start, smollm2_path):
    client = start(smollm2_path, n_ctx=4096)
    template = native("smollm2")
    session = ChatSession(client, template, model_id="smollm2", sampling=SamplingParams(temperature=0.0, max_tokens=16))
    usages = []
    for i in range(10):
        turn = session.send(user_message(i))
        assert turn.run().strip()
        usages.append(turn.usage)

    first, last = usages[0], usages[-1]
    assert session.dropped == 0  # the whole conversation is in the prompt
    assert last.prompt_tokens > 5 * first.prompt_tokens
    # Turn 1 evaluates the system prompt and its message; every later turn only what was added since.
    new_message = f"<|im_end|>\n<|im_start|>user\n{user_message(9)}<|im_end|>\n<|im_start|>assistant\n"
    new_tokens = client.count_tokens([new_message])[0]
    for usage in usages[1:]:
        # the previous reply re-tokenizes differently at most at its edges; everything before is reused
        assert usage.prompt_eval_tokens <= new_tokens + 4, usages
    assert last.prompt_eval_tokens <= first.prompt_eval_tokens
    assert last.prompt_eval_tokens >= new_tokens - 2  # and the new message itself was evaluated
