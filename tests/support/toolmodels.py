"""Tiny crafted models that call tools (or answer JSON), and the templates they are served with.

The tiny model's next token depends on its current token only. Its crafted template (Qwen2.5's, tools
included) ends the prompt after a tool result with a tab, and the model answers that prompt with its own
reply (ggufgen `answers`): that is what makes a round trip (call, tool result, final answer) possible.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.ggufgen import make_tiny_gguf

TEMPLATES = Path(__file__).parents[1] / "unit" / "templates"
QWEN25 = (TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text()
CODER = (TEMPLATES / "Qwen3-Coder.jinja").read_text()
QWEN35 = (TEMPLATES / "Qwen3.5-4B.jinja").read_text()  # opens a thought in its generation prompt
_GEN = "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}"
assert _GEN in QWEN25
TOOLS_TEMPLATE = QWEN25.replace(_GEN, "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
                                      "{%- if messages[-1].role == 'tool' %}{{- '\\t' }}{%- endif %}{%- endif %}")

ANSWER = "It is sunny in Paris."
THOUGHT = "The user wants the weather."
WEATHER_SCHEMA = {"type": "object", "required": ["city"], "additionalProperties": False,
                  "properties": {"city": {"type": "string"},
                                 "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                            "parameters": WEATHER_SCHEMA}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
ARGUMENTS = {"city": "Paris", "unit": "celsius"}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": ' + json.dumps(ARGUMENTS) + "}\n</tool_call>"
TWO_CALLS = CALL + "\n" + CALL.replace("Paris", "London")  # parallel calls, as Qwen2.5 writes them
# The same call with a unit the schema does not allow: only the grammar keeps it out of the reply.
BAD_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "kelvin"}}\n</tool_call>'
XML_CALL = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"
PERSON = {"type": "object", "required": ["name", "age"], "additionalProperties": False,
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
BAD_PERSON = '{"name": "Ada", "age": "old"}'  # "age" must be an integer: the grammar makes it one

# model id -> (make_tiny_gguf arguments, catalog template)
MODELS: dict[str, tuple[dict, str]] = {
    "weather": ({"reply": CALL, "answers": {"\t": ANSWER}, "chat_template": TOOLS_TEMPLATE}, "gguf"),
    "twice": ({"reply": TWO_CALLS, "chat_template": TOOLS_TEMPLATE}, "gguf"),
    "stubborn": ({"reply": BAD_CALL, "chat_template": TOOLS_TEMPLATE}, "gguf"),
    "coder": ({"reply": XML_CALL, "chat_template": CODER}, "gguf"),
    "person": ({"reply": BAD_PERSON}, "chatml"),
    "thinker": ({"reply": XML_CALL, "thought": THOUGHT, "think_opened": True, "chat_template": QWEN35}, "gguf"),
    "thinking-person": ({"reply": BAD_PERSON, "thought": THOUGHT, "think_opened": True, "chat_template": QWEN35},
                        "gguf"),
}


def make_tool_model(directory: Path, model_id: str) -> Path:
    return make_tiny_gguf(directory / f"{model_id}.gguf", **MODELS[model_id][0])


def valid_weather(arguments: dict) -> bool:
    """WEATHER_SCHEMA, checked by hand (no jsonschema here)."""
    return (set(arguments) <= {"city", "unit"} and isinstance(arguments.get("city"), str)
            and arguments.get("unit", "celsius") in ("celsius", "fahrenheit"))
