"""Tool requests, rendering through the Qwen2.5 template, and the incremental tool-call parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localchat.engine.api import TextDelta, ToolCallDelta
from localchat.templates import NATIVE, from_gguf
from localchat.tools import (
    ToolCallParser,
    ToolsError,
    chatml_messages,
    check_conversation,
    jinja_messages,
    parse_tools,
    template_format,
)
from localchat.types import Message, ToolCall

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
TEMPLATES = Path(__file__).parent / "templates"


def _run(parser: ToolCallParser, text: str, step: int) -> list:
    events = []
    for i in range(0, len(text), step):
        events += parser.feed(text[i:i + step])
    return events + parser.finish()


def _text(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def _arguments(events, index: int) -> str:
    return "".join(e.arguments for e in events if isinstance(e, ToolCallDelta) and e.index == index)


# --- requests --------------------------------------------------------------------------------------


def test_tool_choice_forms():
    assert parse_tools(None) is None
    req = parse_tools([WEATHER, TIME])
    assert req.choice == "auto" and req.parallel and [t.name for t in req.offered()] == ["get_weather", "get_time"]
    named = parse_tools([WEATHER, TIME], {"type": "function", "function": {"name": "get_time"}}, False)
    assert named.choice == "named" and not named.parallel and [t.name for t in named.offered()] == ["get_time"]
    assert not parse_tools([WEATHER], "none").active
    assert parse_tools([WEATHER], "required").choice == "required"


@pytest.mark.parametrize("tools,choice,param,words", [
    ([{"type": "function", "function": {"description": "no name"}}], None, "tools[0].function.name", "no name"),
    ([{"type": "function", "function": {"name": "bad name!"}}], None, "tools[0].function.name", "letters"),
    ([WEATHER, WEATHER], None, "tools[1].function.name", "two tools"),
    ([WEATHER], {"type": "function", "function": {"name": "nope"}}, "tool_choice", "not among the tools"),
    ([WEATHER], "sometimes", "tool_choice", "must be"),
    (None, "required", "tool_choice", "needs 'tools'"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}], None,
     "tools[0].function.parameters", "type \"object\""),
])
def test_bad_tools_name_the_field(tools, choice, param, words):
    with pytest.raises(ToolsError) as info:
        parse_tools(tools, choice)
    assert info.value.param == param and words in info.value.message


def test_tool_messages_must_answer_a_call():
    call = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    ok = [Message("user", "hi"), Message("assistant", "", (call,)), Message("tool", "sunny", tool_call_id="call_1")]
    check_conversation(ok)
    with pytest.raises(ToolsError, match=r"messages\[2\] answers tool_call_id 'call_9'"):
        check_conversation([*ok[:2], Message("tool", "x", tool_call_id="call_9")])
    with pytest.raises(ToolsError, match="answered already"):
        check_conversation([*ok, Message("tool", "again", tool_call_id="call_1")])
    with pytest.raises(ToolsError, match="without 'tool_call_id'"):
        check_conversation([ok[0], Message("tool", "x")])


# --- rendering -------------------------------------------------------------------------------------


QWEN25 = (TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja")


def test_chatml_rendering_is_byte_identical_to_qwen25s_own_template():
    """The native ChatML renderer plus chatml_messages gives exactly what Qwen2.5's Jinja template renders
    with `tools`, so the prompt of the next turn extends this one (KV cache reuse) and the model sees
    its own training format."""
    req = parse_tools([WEATHER, TIME])
    calls = (ToolCall("call_1", "get_weather", '{"city":"Paris"}'), ToolCall("call_2", "get_time", "{}"))
    conversation = [Message("user", "Weather and time in Paris?"), Message("assistant", "Checking.", calls),
                    Message("tool", "sunny", tool_call_id="call_1"), Message("tool", "12:00", tool_call_id="call_2"),
                    Message("assistant", "Sunny, noon."), Message("user", "Thanks")]
    own = from_gguf(QWEN25.read_text())
    tools = [t.to_dict() for t in req.tools]
    for messages in (conversation, [Message("system", "Be brief."), *conversation]):
        expected = own._template.render(messages=jinja_messages(messages), tools=tools, add_generation_prompt=True,
                                        bos_token="", eos_token="")
        ours = NATIVE["qwen"].render(chatml_messages(messages, req, NATIVE["qwen"].default_system))
        assert ours == expected


def test_rendering_without_tools_is_unchanged():
    messages = [Message("user", "hi"), Message("assistant", "hello")]
    assert chatml_messages(messages, None, None) == messages


def test_template_format_follows_the_template():
    assert template_format(None) is None
    assert template_format("{{ messages }}") is None
    assert template_format("{% if tools %}<tool_call>{% endif %}") == "json"
    assert template_format("{% if tools %}<tool_call>\n<function={{ name }}>{% endif %}") == "xml"


# --- parsing ---------------------------------------------------------------------------------------


JSON_REPLY = ('I will check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par\\"is", "days": 3}}\n'
              '</tool_call>\n<tool_call>\n{"arguments": {}, "name": "get_time"}\n</tool_call>')


@pytest.mark.parametrize("step", [1, 2, 5, 1000])
def test_json_calls_parse_the_same_in_any_chunking(step):
    parser = ToolCallParser(parse_tools([WEATHER, TIME]))
    events = _run(parser, JSON_REPLY, step)
    assert _text(events) == "I will check."
    assert [(c.name, json.loads(c.arguments)) for c in parser.calls] == [
        ("get_weather", {"city": 'Par"is', "days": 3}), ("get_time", {})]
    assert json.loads(_arguments(events, 0)) == {"city": 'Par"is', "days": 3}
    heads = [e for e in events if isinstance(e, ToolCallDelta) and e.id]
    assert [(h.index, h.name) for h in heads] == [(0, "get_weather"), (1, "get_time")]
    assert heads[0].id.startswith("call_") and heads[0].id != heads[1].id
    assert all(e.id is None and e.name is None for e in events if isinstance(e, ToolCallDelta) and e not in heads)


def test_json_arguments_stream_before_the_call_closes():
    parser = ToolCallParser(parse_tools([WEATHER]))
    events = parser.feed('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa')
    assert [(e.name, e.arguments) for e in events] == [("get_weather", ""), (None, '{"city": "Pa')]


def test_parallel_off_stops_after_the_first_call():
    parser = ToolCallParser(parse_tools([WEATHER, TIME], None, False))
    _run(parser, JSON_REPLY, 3)
    assert parser.finished and [c.name for c in parser.calls] == ["get_weather"]


def test_xml_calls_convert_parameters_by_schema():
    reply = ("<tool_call>\n<function=get_weather>\n<parameter=city>\n42 Main St\nNew York\n</parameter>\n"
             "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>")
    parser = ToolCallParser(parse_tools([WEATHER]), "xml")
    events = _run(parser, reply, 4)
    assert json.loads(parser.calls[0].arguments) == {"city": "42 Main St\nNew York", "days": 3}
    assert events[0].name == "get_weather" and json.loads(_arguments(events, 0)) == {"city": "42 Main St\nNew York",
                                                                                     "days": 3}


def test_text_that_only_looks_like_a_call_is_kept():
    parser = ToolCallParser(parse_tools([WEATHER]))
    text = "a < b and <tool_ca is not a tag; <tool_call>not json</tool_call> end"
    events = _run(parser, text, 3)
    assert _text(events) == "a < b and <tool_ca is not a tag;<tool_call>not json</tool_call> end"
    assert parser.calls == []


def test_a_reply_without_calls_passes_through_whole():
    parser = ToolCallParser(parse_tools([WEATHER]))
    text = "Hello 你好,\nno tools needed.\n"
    assert _text(_run(parser, text, 1)) == text
