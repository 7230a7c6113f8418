"""The worker's thought control on tiny reasoning models, through the real engine (worker, pipe, client): a
budget closes the thought and the answer follows, end_thought() closes it now, a thought that would use the
whole allowance is closed so the answer gets room, and a model that does not reason is left alone. Both
decode paths: single-stream (parallel 1) and continuous batching (parallel 2)."""

from __future__ import annotations

import pytest

from localchat.engine import EngineClient
from localchat.engine.api import ReasoningDelta, TextDelta
from localchat.reasoning import detect
from localchat.structured import OutputConstraint
from localchat.template_sandbox import SandboxedTemplate
from localchat.types import LoadOptions, Message, SamplingParams
from tests.support.ggufgen import CHAT_PROMPT, TINY_REPLY, make_tiny_gguf
from tests.support.thinking_templates import ANSWER, LONG_THOUGHT, PRE_OPENED, QWEN3_STYLE, THOUGHT

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0)


def greedy(**changes) -> SamplingParams:
    return SamplingParams(**{**GREEDY.to_dict(), **changes})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("thought-control")
    return {
        "closed": make_tiny_gguf(d / "closed.gguf", reply=ANSWER, thought=THOUGHT, chat_template=QWEN3_STYLE),
        "opened": make_tiny_gguf(d / "opened.gguf", reply=ANSWER, thought=THOUGHT, think_opened=True,
                                 chat_template=PRE_OPENED),
        # 48 blocks (zero weights: the same reply) slow it to some milliseconds a token, so an end-now sent on
        # the first words reaches the worker while it still thinks (a 2-block model can finish first)
        "long": make_tiny_gguf(d / "long.gguf", reply=ANSWER, thought=LONG_THOUGHT, chat_template=QWEN3_STYLE,
                               n_ctx_train=4096, n_layer=48),
        "plain": make_tiny_gguf(d / "plain.gguf"),
        # a thinking template, but no <think>/</think> tokens: the client splits, the worker cannot close
        "template_only": make_tiny_gguf(d / "template-only.gguf", chat_template=QWEN3_STYLE),
    }


@pytest.fixture(params=[1, 2], ids=["single", "batched"])
def start(request, tmp_path):
    clients: list[EngineClient] = []

    def _start(path, n_ctx=1024):
        client = EngineClient.start(path, LoadOptions(n_ctx=n_ctx, parallel=request.param), tmp_path / "logs")
        clients.append(client)
        return client

    yield _start
    for client in clients:
        client.close()


def _prompt(engine) -> str:
    return SandboxedTemplate(engine.info.chat_template).render([Message("user", "hello")])


def _split(gen):
    events = list(gen)
    thought = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, TextDelta))
    return thought, answer, gen.usage


def test_the_worker_reports_the_tags_of_a_reasoning_model_only(start, models):
    engine = start(models["closed"])
    assert engine.info.think_tags is not None and len(set(engine.info.think_tags)) == 2
    assert start(models["plain"]).info.think_tags is None


def test_a_budget_closes_the_thought_and_the_answer_follows(start, models):
    engine = start(models["closed"])
    thought, answer, usage = _split(engine.generate(_prompt(engine), greedy(reasoning_budget=5)))
    assert answer == ANSWER and usage.finish_reason == "stop"
    assert thought and THOUGHT.startswith(thought) and len(thought) < len(THOUGHT) // 2
    # <think> and four thought tokens, then the budget: the forced "\n" and </think> count as thought too
    assert usage.reasoning_tokens == 7


def test_without_a_budget_the_model_closes_its_own_thought(start, models):
    engine = start(models["closed"])
    thought, answer, usage = _split(engine.generate(_prompt(engine), GREEDY))
    assert (thought, answer) == (THOUGHT, ANSWER)
    assert 0 < usage.reasoning_tokens < usage.completion_tokens


def test_a_budget_of_zero_closes_a_template_opened_thought_before_its_first_token(start, models):
    engine = start(models["opened"])
    prompt = _prompt(engine)
    assert detect(engine.info.chat_template).opens_in_thought(prompt)
    thought, answer, usage = _split(engine.generate(prompt, greedy(reasoning_budget=0)))
    assert (thought, answer) == ("", ANSWER)
    assert usage.reasoning_tokens == 2  # the forced "\n" and </think>


def test_a_thought_that_would_reach_max_tokens_is_closed_so_the_answer_gets_room(start, models):
    engine = start(models["long"], n_ctx=2048)
    thought, answer, usage = _split(engine.generate(_prompt(engine), greedy(max_tokens=40)))
    assert LONG_THOUGHT.startswith(thought) and len(thought) < len(LONG_THOUGHT)
    assert answer == ANSWER, "a quarter of max_tokens is kept for the answer"
    assert usage.completion_tokens <= 40 and usage.reasoning_tokens <= 40 - 40 // 4


def test_end_thought_mid_stream_closes_it_and_the_answer_follows(start, models):
    engine = start(models["long"], n_ctx=2048)
    gen = engine.generate(_prompt(engine), greedy(max_tokens=1500))
    thought, answer, asked = "", "", None
    for event in gen:
        if isinstance(event, ReasoningDelta):
            thought += event.text
            if asked is None:
                asked = gen.end_thought()
        else:
            answer += event.text
    assert asked is True
    assert LONG_THOUGHT.startswith(thought) and len(thought) < len(LONG_THOUGHT) // 2
    assert answer == ANSWER and gen.finish_reason == "stop"
    assert gen.end_thought() is False, "the reply has ended"


def test_end_thought_before_the_first_token_closes_the_thought_as_it_opens(start, models):
    engine = start(models["closed"])
    gen = engine.generate(_prompt(engine), GREEDY)
    assert gen.end_thought() is True
    thought, answer, usage = _split(gen)
    assert (thought, answer) == ("", ANSWER)
    assert usage.reasoning_tokens == 3  # <think>, then the forced "\n" and </think>


def test_a_thought_cut_by_a_stop_string_is_never_closed(start, models):
    engine = start(models["closed"])
    thought, answer, usage = _split(engine.generate(_prompt(engine), greedy(stop=("Yes",))))
    assert (thought, answer) == ("Let me think. ", "") and usage.finish_reason == "stop"


def test_a_model_that_does_not_reason_is_unchanged(start, models):
    engine = start(models["plain"])
    gen = engine.generate(CHAT_PROMPT, greedy(reasoning_budget=0))
    assert gen.end_thought() is False
    events = list(gen)
    assert all(isinstance(e, TextDelta) for e in events) and gen.text == TINY_REPLY
    assert gen.usage.reasoning_tokens is None


def test_a_json_reply_after_a_thought_the_budget_closed_is_json(start, models):
    """The grammar waits for the thought's close tag; when the budget closes the thought, the forced tags
    reach the grammar too, so the answer after them is constrained (it would be the model's plain text)."""
    engine = start(models["long"], n_ctx=2048)
    grammar = OutputConstraint("json", after="</think>").to_dict()
    thought, answer, usage = _split(engine.generate(_prompt(engine), greedy(max_tokens=60, reasoning_budget=8,
                                                                           grammar=grammar)))
    assert LONG_THOUGHT.startswith(thought) and len(thought) < 80
    # the grammar holds from the close tag on: JSON's leading whitespace or an object, never the free answer
    # (the tiny model's greedy pick is whitespace here, until max_tokens)
    assert answer != ANSWER and (not answer.strip() or answer.lstrip().startswith("{")), answer
    assert usage.completion_tokens == 60


def test_end_thought_is_refused_where_the_worker_cannot_close_the_thought(start, models):
    engine = start(models["template_only"])
    assert engine.info.think_tags is None
    gen = engine.generate(_prompt(engine), greedy())
    assert gen.end_thought() is False  # nothing would close it: the TUI rings instead of saying "ended early"
    list(gen)
