"""Rendering with tools through the model's own template, and a generation seen through the parser."""

from __future__ import annotations

import json
from pathlib import Path

from localchat.engine.api import TextDelta, ToolCallDelta
from localchat.structured import OutputConstraint, parse_response_format
from localchat.templates import NATIVE, from_gguf
from localchat.tools import jinja_messages, parse_tools
from localchat.tooluse import ToolCallingGeneration, constrain, for_prompt, prepare, render, tool_form
from localchat.types import Message, SamplingParams, ToolCall, Usage

TEMPLATES = Path(__file__).parent / "templates"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                          "required": ["city"]}}}
CALL = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
CONVERSATION = [Message("user", "Weather in Paris?"), Message("assistant", "", (CALL,)),
                Message("tool", "sunny, 21 C", tool_call_id="call_1")]


def test_qwen3_coder_renders_tools_and_calls_in_its_xml_form():
    template = from_gguf((TEMPLATES / "Qwen3-Coder.jinja").read_text())
    assert tool_form(template) == "xml"
    prompt = render(template, CONVERSATION, parse_tools([WEATHER]))
    assert "<name>get_weather</name>" in prompt
    assert "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>" in prompt
    assert "<tool_response>\nsunny, 21 C\n</tool_response>" in prompt and prompt.endswith("<|im_start|>assistant\n")


def test_qwen35_renders_tools_in_its_own_system_block():
    template = from_gguf((TEMPLATES / "Qwen3.5-4B.jinja").read_text())
    assert tool_form(template) == "xml"
    prompt = render(template, CONVERSATION, parse_tools([WEATHER]))
    assert prompt.startswith("<|im_start|>system\n# Tools") and '"name": "get_weather"' in prompt
    assert "<function=get_weather>\n<parameter=city>\nParis\n</parameter>" in prompt


def test_native_chatml_gets_qwen25s_json_form():
    template = NATIVE["smollm2"]
    assert tool_form(template) == "json"
    prompt = render(template, CONVERSATION, parse_tools([WEATHER]))
    assert prompt.startswith("<|im_start|>system\n" + template.default_system + "\n\n# Tools")
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert render(template, [Message("user", "hi")], None) == template.render([Message("user", "hi")])


def test_tool_choice_none_renders_history_without_offering_tools():
    prompt = render(NATIVE["qwen"], CONVERSATION, parse_tools([WEATHER], "none"))
    assert "# Tools" not in prompt and "<tool_response>" in prompt


def test_constrain_puts_the_grammar_on_the_sampling():
    plain = SamplingParams()
    assert constrain(plain, None, None, "json") is plain
    fmt = parse_response_format({"type": "json_object"})
    assert OutputConstraint.from_dict(constrain(plain, None, fmt, "json").grammar) == fmt
    tools = constrain(plain, parse_tools([WEATHER], "required"), None, "xml").grammar
    assert tools["kind"] == "tools" and tools["form"] == "xml" and not tools["lazy"]
    assert SamplingParams.from_dict(constrain(plain, parse_tools([WEATHER]), None, "json").to_dict()).grammar["lazy"]


class FakeGeneration:
    """Stands in for an engine's generation: yields the given pieces as TextDelta."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces
        self.cancelled = False
        self.usage: Usage | None = None
        self.finish_reason = None
        self.id = "gen-1"
        self.text = ""

    def __iter__(self):
        for piece in self.pieces:
            if self.cancelled:
                break
            self.text += piece
            yield TextDelta(piece)
        self.usage = Usage(completion_tokens=len(self.pieces))
        self.finish_reason = "cancelled" if self.cancelled else "stop"

    def cancel(self) -> None:
        self.cancelled = True


def test_generation_yields_calls_and_finishes_with_tool_calls():
    reply = 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    gen = ToolCallingGeneration(FakeGeneration([reply[i:i + 4] for i in range(0, len(reply), 4)]),
                                parse_tools([WEATHER]), "json")
    events = list(gen)
    assert gen.text == "Let me look." and gen.finish_reason == "tool_calls"
    assert [c.name for c in gen.tool_calls] == ["get_weather"] and json.loads(gen.tool_calls[0].arguments) == {
        "city": "Paris"}
    assert isinstance(events[0], TextDelta) and any(isinstance(e, ToolCallDelta) for e in events)


def test_parallel_off_stops_the_engine_after_one_call():
    one = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "A"}}\n</tool_call>'
    inner = FakeGeneration([one, "\n", one.replace('"A"', '"B"'), "more text"])
    gen = ToolCallingGeneration(inner, parse_tools([WEATHER], None, False), "json")
    list(gen)
    assert inner.cancelled and gen.finish_reason == "tool_calls" and len(gen.tool_calls) == 1


def test_plain_replies_keep_their_finish_reason():
    gen = ToolCallingGeneration(FakeGeneration(["no ", "call"]), parse_tools([WEATHER]), "json")
    assert "".join(e.text for e in gen) == "no call" and gen.finish_reason == "stop" and gen.tool_calls == ()


def test_a_prompt_that_opens_a_thought_holds_the_grammar_until_it_closes():
    qwen35 = from_gguf((TEMPLATES / "Qwen3.5-4B.jinja").read_text())
    ask = [Message("user", "Weather in Paris?")]
    for choice in ("auto", "required"):
        prompt, sampling, _ = prepare(qwen35, ask, parse_tools([WEATHER], choice), None, SamplingParams())
        assert prompt.endswith("<think>\n") and sampling.grammar["after"] == "</think>"
    off = qwen35.with_variables(enable_thinking=False)  # the prompt closes the thought itself
    assert prepare(off, ask, parse_tools([WEATHER]), None, SamplingParams())[1].grammar["after"] is None
    fmt = parse_response_format({"type": "json_object"})
    assert prepare(qwen35, ask, None, fmt, SamplingParams())[1].grammar["after"] == "</think>"
    assert prepare(NATIVE["qwen"], ask, None, fmt, SamplingParams())[1].grammar["after"] is None


def test_for_prompt_keeps_a_grammar_the_sampling_carries_and_wraps_only_with_tools():
    qwen35 = from_gguf((TEMPLATES / "Qwen3.5-4B.jinja").read_text())
    json_sampling = SamplingParams(grammar=OutputConstraint("json").to_dict())
    sampling, wrap = for_prompt(qwen35, "<|im_start|>assistant\n<think>\n", None, json_sampling)
    assert sampling.grammar["kind"] == "json" and sampling.grammar["after"] == "</think>"
    inner = FakeGeneration(["x"])
    assert wrap(inner) is inner
    _, wrap = for_prompt(NATIVE["qwen"], "prompt", parse_tools([WEATHER]), SamplingParams())
    assert isinstance(wrap(inner), ToolCallingGeneration)


def test_tool_rendering_keeps_an_old_thought_for_the_template_to_judge():
    thought = Message("assistant", "", (CALL,), reasoning="They want Paris.")
    assert jinja_messages([thought])[0]["reasoning_content"] == "They want Paris."
