"""The grammar text and lazy triggers the worker builds from an OutputConstraint (compiled and sampled in
tests/server/test_tool_calls.py and tests/engine/test_chat_tools.py, on a real model)."""

from __future__ import annotations

import re

from localchat.engine.llama.grammar import to_gbnf, trigger
from localchat.structured import OutputConstraint, tools_constraint
from localchat.tools import parse_tools

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def root(grammar: str) -> str:
    return next(line for line in grammar.splitlines() if line.startswith("root ::="))


def test_tool_choice_picks_the_trigger():
    auto = tools_constraint(parse_tools([WEATHER]), "json")
    required = tools_constraint(parse_tools([WEATHER], "required"), "json")
    assert auto is not None and required is not None
    assert trigger(auto) == re.escape("<tool_call>") and trigger(required) is None
    assert trigger(OutputConstraint("json")) is None
    thinking_auto = OutputConstraint(**{**auto.__dict__, "after": "</think>"})
    pattern = trigger(thinking_auto)
    assert pattern is not None and re.search(pattern, "</think>\n\n<tool_call>\n").group(1) == "<tool_call>"
    assert re.search(pattern, "<tool_call> in the thought") is None  # a call inside the thought is thought
    assert trigger(OutputConstraint("json", after="</think>")) == re.escape("</think>")


def test_the_grammar_starts_after_the_thought_when_told():
    plain = to_gbnf(OutputConstraint("json"))
    after = to_gbnf(OutputConstraint("json", after="</think>"))
    assert root(after).startswith('root ::= "</think>" [ \\t\\n]* answer') and "answer ::=" in after
    assert "</think>" not in plain


def test_a_call_without_parallel_calls_is_one_block():
    one = to_gbnf(tools_constraint(parse_tools([WEATHER], "required", False), "json"))
    many = to_gbnf(tools_constraint(parse_tools([WEATHER], "required"), "json"))
    assert root(one) == "root ::= call" and root(many) == 'root ::= call ( "\\n" call )*'
    assert '"<tool_call>\\n{\\"name\\": \\"get_weather\\", \\"arguments\\": "' in one
    xml = to_gbnf(tools_constraint(parse_tools([WEATHER], "required"), "xml"))
    assert "<function=get_weather>" in xml and "<parameter=city>" in xml
