"""Tools and structured output in the chat layer (ChatSession on a real engine worker, the single-stream path
the TUI and `localchat run` use): the calls come out as ToolCallDelta events and `turn.tool_calls`, a
result goes back with answer_tool() and the model answers it with resume()."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from localchat.chat import ChatSession
from localchat.engine.api import ReasoningDelta, TextDelta, ToolCallDelta
from localchat.structured import schema_constraint
from localchat.templates import from_gguf
from localchat.tools import ToolsError, parse_tools
from localchat.types import SamplingParams
from tests.support.toolmodels import (
    ANSWER,
    ARGUMENTS,
    MODELS,
    PERSON,
    THOUGHT,
    WEATHER,
    make_tool_model,
    valid_weather,
)

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=200)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("toolmodels")
    return {m: make_tool_model(d, m) for m in ("weather", "stubborn", "thinking-person")}


def session(start, models, model_id, **kwargs):
    template = from_gguf(MODELS[model_id][0]["chat_template"])
    kwargs.setdefault("sampling", GREEDY)
    return ChatSession(start(models[model_id]), template, model_id=model_id, **kwargs)


def test_a_turn_calls_a_tool_and_the_next_answers_its_result(start, models):
    chat = session(start, models, "weather", tools=parse_tools([WEATHER]))
    turn = chat.send("What is the weather in Paris?")
    events = list(turn)
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0].name == "get_weather" and deltas[0].id == turn.tool_calls[0].id
    assert not [e for e in events if isinstance(e, TextDelta) and e.text]
    [call] = turn.tool_calls
    assert json.loads(call.arguments) == ARGUMENTS and turn.status == "complete"
    assert chat.messages[-1].tool_calls == (call,)  # the call is history for the next prompt
    with pytest.raises(ToolsError, match="no earlier assistant message called"):
        chat.answer_tool("call_nobody", "21 C")
    chat.answer_tool(call.id, "sunny, 21 C")
    answer = chat.resume()
    assert answer.run() == ANSWER and answer.tool_calls == ()
    assert [m.role for m in chat.messages] == ["user", "assistant", "tool", "assistant"]


def test_the_grammar_holds_in_the_chat_layer(start, models):
    chat = session(start, models, "stubborn", tools=parse_tools([WEATHER], "required", False))
    turn = chat.send("Weather?")
    turn.run()
    [call] = turn.tool_calls
    assert valid_weather(json.loads(call.arguments)), call.arguments


def test_json_schema_waits_for_the_thought_to_close(start, models):
    """What `localchat run --json-schema` does with a model whose prompt opens a thought."""
    sampling = replace(GREEDY, grammar=schema_constraint(PERSON).to_dict())
    chat = session(start, models, "thinking-person", sampling=sampling)
    turn = chat.send("Who?")
    events = list(turn)
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == THOUGHT
    data = json.loads(turn.text)
    assert data["name"] == "Ada" and isinstance(data["age"], int)
