"""Tiny reasoning models through the real engine (worker, pipe, client) with the test templates: the reply's
thought and answer come apart as the splitter streams them, the template's switch turns thinking off, and
dropping old thoughts from the history keeps the prefix reuse (only the new turn is evaluated).

The client splits the worker's text (localchat.reasoning.ReasoningSplitter); the worker's budget and end-now
are tested in tests/engine/test_thought_control.py."""

from __future__ import annotations

import pytest

from localchat.engine import EngineClient
from localchat.engine.api import TextDelta
from localchat.reasoning import ReasoningDelta, detect, template_kwargs
from localchat.template_sandbox import SandboxedTemplate
from localchat.templates import with_thinking
from localchat.types import LoadOptions, Message, SamplingParams
from tests.support.ggufgen import make_tiny_gguf
from tests.support.thinking_templates import ANSWER, PRE_OPENED, QWEN3_STYLE, THOUGHT

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("reasoning")
    return {
        "closed": make_tiny_gguf(d / "closed.gguf", reply=ANSWER, thought=THOUGHT, chat_template=QWEN3_STYLE),
        "opened": make_tiny_gguf(d / "opened.gguf", reply=ANSWER, thought=THOUGHT, think_opened=True,
                                 chat_template=PRE_OPENED),
    }


@pytest.fixture
def start(tmp_path):
    clients: list[EngineClient] = []

    def _start(path):
        client = EngineClient.start(path, LoadOptions(n_ctx=1024), tmp_path / "logs")
        clients.append(client)
        return client

    yield _start
    for client in clients:
        client.close()


def _reply(engine, prompt: str, sampling: SamplingParams = GREEDY):
    """(thought, answer, usage) of one greedy reply, as the client's events bring them."""
    gen = engine.generate(prompt, sampling)
    events = list(gen)
    thought = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert answer == gen.text, "the generation's text is the answer alone"
    return thought, answer, gen.usage


def _template(engine, thinking="default"):
    fmt = detect(engine.info.chat_template)
    return with_thinking(SandboxedTemplate(engine.info.chat_template), template_kwargs(fmt, thinking))


def test_a_closed_thought_and_its_answer_come_apart(start, models):
    engine = start(models["closed"])
    assert detect(engine.info.chat_template).switch == "enable_thinking"
    prompt = _template(engine).render([Message("user", "hello")])
    thought, answer, _ = _reply(engine, prompt)
    assert (thought, answer) == (THOUGHT, ANSWER)


def test_thinking_off_goes_through_the_templates_switch(start, models):
    engine = start(models["closed"])
    prompt = _template(engine, "off").render([Message("user", "hello")])
    assert prompt.endswith("<think>\n\n</think>\n\n")
    assert _reply(engine, prompt)[:2] == ("", ANSWER)


def test_a_pre_opened_thought_starts_the_reply_inside_it(start, models):
    engine = start(models["opened"])
    prompt = _template(engine).render([Message("user", "hello")])
    assert prompt.endswith("<think>\n")
    assert _reply(engine, prompt)[:2] == (THOUGHT, ANSWER)


def test_a_thought_that_would_reach_max_tokens_leaves_room_for_the_answer(start, models):
    engine = start(models["closed"])
    prompt = _template(engine).render([Message("user", "hello")])
    thought, answer, usage = _reply(engine, prompt, SamplingParams(**{**GREEDY.to_dict(), "max_tokens": 8}))
    # the worker closed the thought early (tests/engine/test_thought_control.py): the answer has begun
    assert thought and THOUGHT.startswith(thought) and answer and ANSWER.startswith(answer)
    assert usage.finish_reason == "length" and usage.completion_tokens == 8


def test_dropping_the_old_thought_keeps_the_prefix_reuse(start, models):
    engine = start(models["closed"])
    template = _template(engine)
    first = [Message("user", "hello")]
    prompt1 = template.render(first)
    thought, answer, usage1 = _reply(engine, prompt1)
    assert usage1.prompt_eval_tokens == usage1.prompt_tokens
    second = [*first, Message("assistant", answer, reasoning=thought), Message("user", "again")]
    prompt2 = template.render(second)
    assert THOUGHT not in prompt2, "Qwen3's template drops the old thought"
    _, _, usage2 = _reply(engine, prompt2)
    # Everything up to the old reply is reused; the reply as the template renders it and the new message are new.
    n1, n2 = engine.count_tokens([prompt1, prompt2])
    assert usage2.prompt_tokens == n2
    assert usage2.prompt_eval_tokens == n2 - n1
