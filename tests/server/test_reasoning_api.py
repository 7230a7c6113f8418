"""Reasoning models over `localchat serve`: the official openai client reads `reasoning_content` (replies and
stream deltas) and turns thinking off or limits it in the dialects clients use; the official ollama client
gets `thinking` and sends `think`. Tiny reasoning models with test templates; the server decodes them on its
batched path (parallel auto)."""

from __future__ import annotations

import ollama
import openai
import pytest

from tests.support.ggufgen import make_tiny_gguf
from tests.support.models import register_local_model
from tests.support.server import start_server
from tests.support.thinking_templates import ANSWER, KEEPS_THOUGHTS, QWEN3_STYLE, THOUGHT

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("serve-reasoning")
    home = d / "home"
    thinker = make_tiny_gguf(d / "thinker.gguf", reply=ANSWER, thought=THOUGHT, chat_template=QWEN3_STYLE)
    noswitch = make_tiny_gguf(d / "noswitch.gguf", reply=ANSWER, thought=THOUGHT, chat_template=KEEPS_THOUGHTS)
    register_local_model(home, thinker, "thinker", template="gguf")
    register_local_model(home, noswitch, "noswitch", template="gguf")
    register_local_model(home, tiny_model, "tiny")
    server = start_server(home, "--model", "thinker", "--max-models", "3")
    yield server
    server.stop()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)


def chat(client, model="thinker", messages=HELLO, **extra):
    return client.chat.completions.create(model=model, messages=messages, temperature=0,
                                          extra_body={"repeat_penalty": 1.0, **extra})


def test_a_reply_carries_its_thought_in_reasoning_content(client):
    reply = chat(client)
    message = reply.choices[0].message
    assert message.content == ANSWER and (message.model_extra or {}).get("reasoning_content") == THOUGHT
    assert reply.choices[0].finish_reason == "stop"
    assert 0 < reply.usage.completion_tokens_details.reasoning_tokens < reply.usage.completion_tokens


def test_a_streamed_reply_carries_its_thought_in_the_deltas(client):
    thought, answer = "", ""
    for chunk in client.chat.completions.create(model="thinker", messages=HELLO, temperature=0, stream=True,
                                                extra_body={"repeat_penalty": 1.0}):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        thought += (delta.model_extra or {}).get("reasoning_content") or ""
        answer += delta.content or ""
    assert (thought, answer) == (THOUGHT, ANSWER)


@pytest.mark.parametrize("model", ["thinker", "noswitch"])
@pytest.mark.parametrize("extra", [{"chat_template_kwargs": {"enable_thinking": False}},
                                   {"reasoning_effort": "none"}, {"thinking_budget_tokens": 0}])
def test_thinking_turned_off(client, model, extra):
    message = chat(client, model, **extra).choices[0].message
    assert message.content == ANSWER and not (message.model_extra or {}).get("reasoning_content")


def test_a_thinking_budget_shortens_the_thought_and_the_answer_follows(client):
    message = chat(client, thinking_budget_tokens=5).choices[0].message
    thought = (message.model_extra or {}).get("reasoning_content")
    assert message.content == ANSWER and thought and THOUGHT.startswith(thought) and thought != THOUGHT


@pytest.mark.parametrize(("model", "kept"), [("thinker", False), ("noswitch", True)])
def test_a_thought_sent_back_reaches_the_prompt_as_the_template_says(client, model, kept):
    def prompt_tokens(reasoning):
        history = [*HELLO, {"role": "assistant", "content": ANSWER, **reasoning}, {"role": "user", "content": "again"}]
        return chat(client, model, history).usage.prompt_tokens

    with_thought = prompt_tokens({"reasoning_content": THOUGHT})
    assert (with_thought > prompt_tokens({})) is kept
    assert prompt_tokens({"reasoning": THOUGHT}) == with_thought, "OpenRouter's name for it too"


def test_ollama_think_and_thinking(server):
    client = ollama.Client(host=server.url)
    reply = client.chat(model="thinker", messages=HELLO, think=True, options={"temperature": 0, "repeat_penalty": 1})
    assert (reply.message.content, reply.message.thinking) == (ANSWER, THOUGHT)
    off = client.chat(model="thinker", messages=HELLO, think=False, options={"temperature": 0, "repeat_penalty": 1})
    assert off.message.content == ANSWER and not off.message.thinking
    parts = list(client.chat(model="thinker", messages=HELLO, think="low", stream=True,
                             options={"temperature": 0, "repeat_penalty": 1}))
    assert "".join(p.message.thinking or "" for p in parts) == THOUGHT
    assert "".join(p.message.content for p in parts) == ANSWER
    generated = client.generate(model="noswitch", prompt="hello", think=False, options={"temperature": 0})
    assert generated.response == ANSWER and not generated.thinking
    assert "thinking" in client.show("thinker").capabilities and "thinking" not in client.show("tiny").capabilities
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="tiny", messages=HELLO, think=True)
    assert info.value.status_code == 400 and "does not support thinking" in info.value.error
