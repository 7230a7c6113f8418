"""Checkpoints end to end: ChatSession over a real worker on the tiny hybrid model (tiny qwen35, whose cache
cannot be cut back) with a Qwen3.5-style template (the prompt opens the thought, the history drops it). Each
chat scenario evaluates only its new tokens: the next turn, regenerate, an edit of the last message, two
conversations alternating, and a conversation reopened after a restart of the worker (its state on disk);
a state on disk from another model file, other settings or a damaged file is refused and the turn is
evaluated in full, with the same answer."""

from __future__ import annotations

import functools

import pytest

from localchat.chat import ChatSession
from localchat.engine.llama.sequence import TAIL
from localchat.reasoning import detect, template_kwargs
from localchat.template_sandbox import SandboxedTemplate
from localchat.templates import with_thinking
from localchat.types import SamplingParams
from tests.support.ggufgen import make_tiny_qwen35_gguf
from tests.support.thinking_templates import ANSWER, PRE_OPENED, THOUGHT

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=64)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt-chat")
    return {
        "a": make_tiny_qwen35_gguf(d / "a.gguf", reply=ANSWER, thought=THOUGHT, think_opened=True,
                                   chat_template=PRE_OPENED),
        # the same shapes and vocabulary size, another file (another answer): its states are not a's
        "b": make_tiny_qwen35_gguf(d / "b.gguf", reply="Yo there!", thought=THOUGHT, think_opened=True,
                                   chat_template=PRE_OPENED),
    }


@pytest.fixture
def start(start):
    """tests/engine/conftest.py's start, on one thread."""
    return functools.partial(start, n_threads=1)


@pytest.fixture
def store(tmp_path):
    from localchat.store.database import ConversationStore

    s = ConversationStore.open(tmp_path / "data" / "conversations.db")
    yield s
    s.close()


def session(engine, system: str, **kw) -> ChatSession:
    fmt = detect(engine.info.chat_template)
    template = with_thinking(SandboxedTemplate(engine.info.chat_template), template_kwargs(fmt, "default"))
    return ChatSession(engine, template, model_id="tiny", sampling=GREEDY, system=system, **kw)


def question(i: int) -> str:
    return f"question {i}: tell me something about the number {i} please"


def new_tokens(engine, before: str | None, prompt: str) -> int:
    """Tokens of `prompt` past what it shares with the prompt before it (as text)."""
    n = 0
    if before is not None:
        while n < min(len(before), len(prompt)) and before[n] == prompt[n]:
            n += 1
    return engine.count_tokens([prompt[n:]])[0]


def turn(s: ChatSession, kind: str = "send", text: str = ""):
    t = s.regenerate() if kind == "regenerate" else s.edit_last(text) if kind == "edit" else s.send(text)
    t.run()
    assert (t.reasoning, t.text) == (THOUGHT, ANSWER)
    return t


def test_next_turn_with_a_thinking_template_evaluates_only_the_new_tokens(start, models):
    engine = start(models["a"])
    s = session(engine, "conversation A")
    before = None
    for i in range(1, 7):
        t = turn(s, text=question(i))
        u = t.usage
        new = new_tokens(engine, before, t.plan.prompt)
        if before is None:
            assert u.prompt_eval_tokens == u.prompt_tokens
        else:  # the old thought is gone from the history: resumed TAIL tokens before the last prompt's end
            assert new <= u.prompt_eval_tokens <= new + TAIL, (i, u, new)
        before = t.plan.prompt
    assert u.prompt_tokens > 4 * u.prompt_eval_tokens


def test_regenerate_and_edit_resume_at_the_checkpoint_and_the_edited_message(start, models):
    engine = start(models["a"])
    s = session(engine, "conversation A")
    for i in range(1, 4):
        turn(s, text=question(i))
    regen = turn(s, "regenerate")
    start_at, gen_at = regen.plan.starts
    assert regen.plan.prompt[gen_at:] == "<|im_start|>assistant\n<think>\n"
    # the same prompt again: from the start of its generation prompt, or TAIL tokens before the end where
    # that is closer (the tiny vocabulary spells "assistant" in bytes)
    assert regen.usage.prompt_eval_tokens == min(TAIL, engine.count_tokens([regen.plan.prompt[gen_at:]])[0])
    edit = turn(s, "edit", "question 3, edited: something else about the number 3")
    start_at = edit.plan.starts[0]
    assert edit.plan.prompt[:start_at].endswith("<|im_start|>user\n")
    suffix = engine.count_tokens([edit.plan.prompt[start_at:]])[0]
    assert edit.usage.prompt_eval_tokens == suffix  # from the start of the edited message's text
    again = turn(s, "edit", "question 3, edited twice")
    assert again.usage.prompt_eval_tokens == engine.count_tokens([again.plan.prompt[again.plan.starts[0]:]])[0]


def test_two_conversations_alternating_each_resume_where_they_were(start, models):
    engine = start(models["a"])
    a, b = session(engine, "conversation A"), session(engine, "conversation B")
    before: dict[int, str | None] = {id(a): None, id(b): None}
    for i in range(1, 5):
        for s in (a, b):
            t = turn(s, text=question(10 * i + (s is b)))
            new = new_tokens(engine, before[id(s)], t.plan.prompt)
            if i == 1:
                assert t.usage.prompt_eval_tokens == t.usage.prompt_tokens
            else:  # the other conversation's turn parked this one's state (a full checkpoint) at the start of
                # its generation prompt, restored now: the reply's header is evaluated again
                header = engine.count_tokens(["<|im_start|>assistant\n"])[0]
                assert new <= t.usage.prompt_eval_tokens <= new + header, (i, t.usage, new)
            before[id(s)] = t.plan.prompt


def _three_turns(engine, store):
    s = session(engine, "conversation A", store=store)
    for i in range(1, 4):
        last = turn(s, text=question(i))
    assert s.park() > 0
    path = s.checkpoint_path()
    assert path is not None and path.exists() and path.parent == store.path.parent / "checkpoints"
    return s.conversation_id, path, last.plan.prompt


def _reopen(engine, store, cid) -> ChatSession:
    conv = store.conversation(cid)
    return session(engine, "conversation A", store=store, conversation_id=cid,
                   history=[m.to_message() for m in conv.messages if m.content])


def test_a_conversation_reopened_after_a_restart_resumes_from_its_state_on_disk(start, models, store):
    first = start(models["a"])
    cid, _, before = _three_turns(first, store)
    first.close()
    engine = start(models["a"])  # a new worker: nothing cached
    s = _reopen(engine, store, cid)
    covered = s.unpark()
    assert covered > 0
    prefix = s.resume_prefix()
    t = turn(s, text=question(4))
    assert prefix and t.plan.prompt.startswith(prefix)
    assert t.usage.prompt_eval_tokens == t.usage.prompt_tokens - covered
    new = new_tokens(engine, before, t.plan.prompt)  # as if the conversation had never been left
    assert new <= t.usage.prompt_eval_tokens <= new + TAIL


@pytest.mark.parametrize("how", ["other settings", "other model file", "truncated", "altered"])
def test_a_stale_or_damaged_state_on_disk_is_refused_and_the_turn_evaluated_in_full(start, models, store, how):
    first = start(models["a"])
    cid, path, _ = _three_turns(first, store)
    first.close()
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:-1000])
    elif how == "altered":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    engine = start(models["b"] if how == "other model file" else models["a"],
                   **({"n_ctx": 1024} if how == "other settings" else {}))
    s = _reopen(engine, store, cid)
    assert s.unpark() == 0
    t = s.send(question(4))
    t.run()
    assert t.text == ("Yo there!" if how == "other model file" else ANSWER)
    assert t.usage.prompt_eval_tokens == t.usage.prompt_tokens
