"""ChatSession with tiny reasoning models: the thinking switch goes through the template's own variable (or,
for a template without one, the engine's budget 0), the history follows the template (Qwen3 drops old
thoughts, another keeps them), and every turn evaluates only what is new (prefix reuse holds)."""

from __future__ import annotations

import os

import pytest

from localchat.chat import ChatSession
from localchat.template_sandbox import SandboxedTemplate
from localchat.types import SamplingParams
from tests.support.ggufgen import make_tiny_gguf
from tests.support.thinking_templates import ANSWER, KEEPS_THOUGHTS, PRE_OPENED, QWEN3_STYLE, THOUGHT

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=200)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("reasoning-chat")
    return {
        "qwen3": make_tiny_gguf(d / "qwen3.gguf", reply=ANSWER, thought=THOUGHT, chat_template=QWEN3_STYLE),
        "opened": make_tiny_gguf(d / "opened.gguf", reply=ANSWER, thought=THOUGHT, think_opened=True,
                                 chat_template=PRE_OPENED),
        "keeps": make_tiny_gguf(d / "keeps.gguf", reply=ANSWER, thought=THOUGHT, chat_template=KEEPS_THOUGHTS),
    }


def _session(engine, thinking="default") -> ChatSession:
    return ChatSession(engine, SandboxedTemplate(engine.info.chat_template), model_id="tiny", sampling=GREEDY,
                       thinking=thinking)


@pytest.mark.parametrize(("model", "thinking"), [("qwen3", "default"), ("qwen3", "off"), ("opened", "default")])
def test_every_turn_evaluates_only_what_is_new(start, models, model, thinking):
    engine = start(models[model])
    session = _session(engine, thinking)
    prompts, usages = [], []
    for i in range(4):
        turn = session.send(f"question {i}")
        assert turn.run() == ANSWER
        assert turn.reasoning == ("" if thinking == "off" else THOUGHT)
        prompts.append(turn.plan.prompt)
        usages.append(turn.usage)
    assert usages[0].prompt_eval_tokens == usages[0].prompt_tokens
    for before, prompt, usage in zip(prompts, prompts[1:], usages[1:]):
        assert THOUGHT not in prompt, "the template drops old thoughts"
        # the cache holds the last prompt and its reply: reused up to where the new prompt leaves them (the
        # reply's thought is not sent back, so that is the end of the old prompt, or its opened <think>)
        shared = os.path.commonprefix([before, prompt])
        assert usage.prompt_eval_tokens == usage.prompt_tokens - engine.count_tokens([shared])[0]
        # what is evaluated again of the old prompt is at most its generation prompt's thought tags
        assert before[len(shared):] in ("", "<think>\n", "<think>\n\n</think>\n\n")


def test_thinking_off_sets_the_templates_own_switch(start, models):
    engine = start(models["qwen3"])
    session = _session(engine, "off")
    turn = session.send("hello")
    assert turn.plan.prompt.endswith("<think>\n\n</think>\n\n")
    assert (turn.run(), turn.reasoning, turn.usage.reasoning_tokens) == (ANSWER, "", 0)
    session.thinking = "on"
    turn = session.send("again")
    assert not turn.plan.prompt.endswith("</think>\n\n")
    assert (turn.run(), turn.reasoning) == (ANSWER, THOUGHT)


def test_thinking_off_without_a_switch_closes_the_thought_at_once(start, models):
    engine = start(models["keeps"])
    session = _session(engine, "off")
    turn = session.send("hello")
    assert turn.run() == ANSWER and turn.reasoning == ""
    assert turn.usage.reasoning_tokens == 3  # <think>, then the forced "\n" and </think>


def test_a_template_that_keeps_thoughts_gets_them_back(start, models):
    engine = start(models["keeps"])
    session = _session(engine)
    assert session.send("hello").run() == ANSWER
    turn = session.send("again")
    assert THOUGHT in turn.plan.prompt, "this template sends old thoughts back"
    assert turn.run() == ANSWER and turn.reasoning == THOUGHT


def test_a_turns_thought_ends_when_asked(start, models):
    engine = start(models["qwen3"])
    turn = _session(engine).send("hello")
    assert turn.end_thought() is True
    assert turn.run() == ANSWER and turn.reasoning == "" and turn.usage.reasoning_tokens == 3
    assert turn.end_thought() is False
