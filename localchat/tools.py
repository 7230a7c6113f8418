"""Function calling without a web framework or llama_cpp: the request's tools checked, rendered into the
prompt the way the model's own template does it, and the model's output parsed back into tool calls.

Two wire forms exist among the models we serve, both inside `<tool_call>...</tool_call>`:
- "json": Qwen2.5 / Hermes, `{"name": ..., "arguments": {...}}` (also what we render for a plain ChatML
  template, which has no tool section of its own);
- "xml": Qwen3.5 / Qwen3-Coder, `<function=NAME>` with one `<parameter=P>` block per argument.
The server, the CLI and the chat layer all go through this module, so they agree on both.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from localchat.engine.api import Event, TextDelta, ToolCallDelta
from localchat.errors import LocalchatError
from localchat.types import Message, ToolCall

ToolFormat = Literal["json", "xml"]
OPEN, CLOSE = "<tool_call>", "</tool_call>"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # OpenAI's rule (plus '.', which some MCP bridges use)
_NO_PARAMETERS: dict = {"type": "object", "properties": {}}


class ToolsError(LocalchatError):
    """A request's tools, tool_choice or tool messages are wrong; `param` names the field to fix."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(_NO_PARAMETERS))
    strict: bool = False

    def to_dict(self) -> dict:
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = dict(self.parameters)
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolRequest:
    """What a request asked for. `choice` "named" forces `named`; `parallel` False stops after one call."""

    tools: tuple[ToolSpec, ...]
    choice: Literal["auto", "none", "required", "named"] = "auto"
    named: str | None = None
    parallel: bool = True

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.choice != "none"

    def spec(self, name: str) -> ToolSpec | None:
        return next((t for t in self.tools if t.name == name), None)

    def offered(self) -> tuple[ToolSpec, ...]:
        """The tools the model may call: only the named one when tool_choice names one."""
        return tuple(t for t in self.tools if self.choice != "named" or t.name == self.named)

    def to_openai(self) -> dict[str, Any]:
        """The request as OpenAI's body fields (`tools`, `tool_choice`, `parallel_tool_calls`): what a
        remote engine sends to a server that renders the tools and parses the calls itself."""
        choice: Any = self.choice if self.choice != "named" else {"type": "function", "function": {"name": self.named}}
        tools = [t.to_dict() for t in self.tools]
        for tool, spec in zip(tools, self.tools):  # not in to_dict: the prompt we render stays Qwen's own
            if spec.strict:
                tool["function"]["strict"] = True
        fields: dict[str, Any] = {"tools": tools, "tool_choice": choice}
        if not self.parallel:  # OpenAI's default is true; a server that does not know the field is not bothered
            fields["parallel_tool_calls"] = False
        return fields


def parse_tools(tools: Any, tool_choice: Any = None, parallel_tool_calls: Any = None) -> ToolRequest | None:
    """OpenAI's `tools`, `tool_choice` and `parallel_tool_calls`, checked; None when no tools were given."""
    if tool_choice is not None and not tools:
        raise ToolsError("'tool_choice' needs 'tools': give the functions the model may call", "tool_choice")
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list):
        raise ToolsError("'tools' must be a list of {\"type\": \"function\", \"function\": {...}} objects", "tools")
    specs: list[ToolSpec] = []
    for i, raw in enumerate(tools):
        spec = _tool(raw, f"tools[{i}]")
        if any(s.name == spec.name for s in specs):
            raise ToolsError(f"tools[{i}]: two tools are named '{spec.name}'; give each function its own name",
                             f"tools[{i}].function.name")
        specs.append(spec)
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise ToolsError("'parallel_tool_calls' must be true or false", "parallel_tool_calls")
    parallel = parallel_tool_calls is not False
    if tool_choice is None or tool_choice in ("auto", "none", "required"):
        return ToolRequest(tuple(specs), tool_choice or "auto", None, parallel)
    name = tool_choice.get("function", {}).get("name") if isinstance(tool_choice, dict) else None
    if not isinstance(name, str) or (isinstance(tool_choice, dict) and tool_choice.get("type") != "function"):
        raise ToolsError("'tool_choice' must be \"auto\", \"none\", \"required\" or "
                         "{\"type\": \"function\", \"function\": {\"name\": NAME}}", "tool_choice")
    if not any(s.name == name for s in specs):
        raise ToolsError(f"'tool_choice' names '{name}', which is not among the tools "
                         f"({', '.join(s.name for s in specs)})", "tool_choice")
    return ToolRequest(tuple(specs), "named", name, parallel)


def _tool(raw: Any, where: str) -> ToolSpec:
    if not isinstance(raw, dict) or raw.get("type", "function") != "function":
        raise ToolsError(f"{where} must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}", where)
    function = raw.get("function")
    if not isinstance(function, dict):
        raise ToolsError(f"{where}.function must be an object with a 'name'", f"{where}.function")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise ToolsError(f"{where}.function has no name: every tool needs a 'name' the model calls it by",
                         f"{where}.function.name")
    if not _NAME.fullmatch(name):
        raise ToolsError(f"{where}.function.name '{name}' must be 1-64 letters, digits, '_', '-' or '.'",
                         f"{where}.function.name")
    description = function.get("description") or ""
    if not isinstance(description, str):
        raise ToolsError(f"{where}.function.description must be text", f"{where}.function.description")
    parameters = function.get("parameters", _NO_PARAMETERS)
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise ToolsError(f"{where}.function.parameters must be a JSON schema of type \"object\"",
                         f"{where}.function.parameters")
    strict = function.get("strict", False)
    if not isinstance(strict, bool):
        raise ToolsError(f"{where}.function.strict must be true or false", f"{where}.function.strict")
    return ToolSpec(name, description, parameters, strict)


def check_conversation(messages: Sequence[Message]) -> None:
    """Every `tool` message answers a call an earlier assistant message made, once."""
    pending: set[str] = set()
    for i, m in enumerate(messages):
        if m.role == "assistant":
            pending = {c.id for c in m.tool_calls}
        elif m.role == "tool":
            if not m.tool_call_id:
                raise ToolsError(f"messages[{i}] is a 'tool' message without 'tool_call_id': say which call it "
                                 "answers", f"messages[{i}].tool_call_id")
            if m.tool_call_id not in pending:
                raise ToolsError(f"messages[{i}] answers tool_call_id '{m.tool_call_id}', which no earlier assistant "
                                 "message called (or which was answered already)", f"messages[{i}].tool_call_id")
            pending.discard(m.tool_call_id)
        else:
            pending = set()


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


# --- rendering -----------------------------------------------------------------------------------------


def template_format(source: str | None) -> ToolFormat | None:
    """The tool form a GGUF's own template speaks, or None when it renders no tools at all."""
    if not source or "tools" not in source:
        return None
    return "xml" if "<function=" in source else "json"


def chatml_messages(messages: Sequence[Message], request: ToolRequest | None,
                    default_system: str | None) -> list[Message]:
    """The conversation as plain messages that a ChatML renderer turns into exactly what Qwen2.5's own
    template renders with `tools` (the tool list in the system message, calls as `<tool_call>` JSON in the
    assistant's text, results as `<tool_response>` in a user message), so the prompt stays byte-stable."""
    out: list[Message] = []
    rest = list(messages)
    if request is not None and request.tools:
        system = rest.pop(0).content if rest and rest[0].role == "system" else (default_system or "")
        listing = "".join("\n" + json.dumps(t.to_dict(), ensure_ascii=False) for t in request.offered())
        out.append(Message("system", system + "\n\n# Tools\n\nYou may call one or more functions to assist with the "
                           "user query.\n\nYou are provided with function signatures within <tools></tools> XML "
                           "tags:\n<tools>" + listing + "\n</tools>\n\nFor each function call, return a json object "
                           "with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                           "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>"))
    for m in rest:
        if m.role == "assistant" and m.tool_calls:
            calls = [f"{OPEN}\n{{\"name\": \"{c.name}\", \"arguments\": {_canonical(c.arguments)}}}\n{CLOSE}"
                     for c in m.tool_calls]
            out.append(Message("assistant", "\n".join(([m.content] if m.content else []) + calls)))
        elif m.role == "tool":
            response = f"<tool_response>\n{m.content}\n</tool_response>"
            if out and out[-1].role == "user" and out[-1].content.startswith("<tool_response>") and _after_tool(rest, m):
                out[-1] = Message("user", out[-1].content + "\n" + response)
            else:
                out.append(Message("user", response))
        else:
            out.append(Message(m.role, m.content))
    return out


def _after_tool(messages: list[Message], m: Message) -> bool:
    i = next(i for i, x in enumerate(messages) if x is m)
    return i > 0 and messages[i - 1].role == "tool"


def _canonical(arguments: str) -> str:
    """Arguments as Jinja's `tojson` writes them (the template renders a dict, not the text we were sent)."""
    try:
        return json.dumps(json.loads(arguments), ensure_ascii=False)
    except ValueError:
        return arguments


def jinja_messages(messages: Sequence[Message]) -> list[dict]:
    """Messages for a GGUF's own template: tool calls with their arguments as a dict, which is what the
    Qwen templates iterate (`arguments|items`) or serialise (`arguments|tojson`)."""
    out = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.reasoning:  # the template decides whether an old thought reaches the prompt
            d["reasoning_content"] = m.reasoning
        if m.tool_calls:
            d["tool_calls"] = [{"id": c.id, "type": "function",
                                "function": {"name": c.name, "arguments": _as_dict(c.arguments)}}
                               for c in m.tool_calls]
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out


def _as_dict(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return {}


# --- parsing the model's output ------------------------------------------------------------------------


_JSON_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_XML_FUNCTION = re.compile(r"\s*<function=([^>\n]+)>")
_XML_PARAMETER = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.S)


class ToolCallParser:
    """Turns streamed model text into TextDelta and ToolCallDelta events, incrementally.

    Text that might be the start of `<tool_call>` (and whitespace before it) is held back until it is
    known not to be. A JSON call streams: a first delta with its id and name once the name is complete,
    then the arguments as they arrive. An XML call gives its name first and its arguments (converted to
    JSON by the function's schema) when `</function>` arrives. A block that does not parse is passed on
    as text, as the model wrote it. `finished` turns true once one call is complete and parallel calls
    are off: the caller stops the generation there.
    """

    def __init__(self, request: ToolRequest | None = None, form: ToolFormat = "json") -> None:
        self.request = request
        self.form = form
        self.calls: list[ToolCall] = []
        self.finished = False
        self._buf = ""  # held-back text, or the body of the call being read
        self._in_call = False
        self._call_id: str | None = None
        self._name: str | None = None
        self._args_at = 0  # where the arguments value starts in the call's body (JSON form)
        self._args_sent = 0  # characters of it already streamed

    def feed(self, text: str) -> list[Event]:
        if self.finished:
            return []
        self._buf += text
        events: list[Event] = []
        while not self.finished:
            before = (self._in_call, len(self._buf))
            events += self._call_step() if self._in_call else self._text_step()
            if (self._in_call, len(self._buf)) == before:
                break
        return events

    def finish(self) -> list[Event]:
        """The generation ended: what was held back, and a started call as far as it got."""
        if self.finished or not self._buf:
            return []
        buf, self._buf = self._buf, ""
        if not self._in_call:
            return [TextDelta(buf)]
        if self._call_id is None:
            return [TextDelta(OPEN + buf)]
        return []  # a call cut off (max_tokens): its name and streamed arguments stand

    def _text_step(self) -> list[Event]:
        start = self._buf.find(OPEN)
        if start >= 0:  # the whitespace before a call is the template's separator, not answer text
            text, self._buf, self._in_call = self._buf[:start].rstrip(), self._buf[start + len(OPEN):], True
            return [TextDelta(text)] if text else []
        keep = _partial_suffix(self._buf, OPEN)
        text = self._buf[:len(self._buf) - keep].rstrip()
        if not text:
            return []
        self._buf = self._buf[len(text):]
        return [TextDelta(text)]

    def _call_step(self) -> list[Event]:
        end = self._buf.find(CLOSE)
        body = self._buf if end < 0 else self._buf[:end]
        events: list[Event] = []
        if self.form == "json":
            events += self._stream_json(body, complete=end >= 0)
        elif self._call_id is None and (m := _XML_FUNCTION.match(body)):
            self._start_call(m.group(1).strip(), events)
        if end < 0:
            return events
        self._buf = self._buf[end + len(CLOSE):]
        self._in_call = False
        events += self._close_call(body)
        return events

    def _start_call(self, name: str, events: list[Event]) -> None:
        self._call_id, self._name = new_call_id(), name
        events.append(ToolCallDelta(len(self.calls), self._call_id, name, ""))

    def _stream_json(self, body: str, complete: bool) -> list[Event]:
        events: list[Event] = []
        if self._call_id is None:
            m = _JSON_HEAD.match(body)
            if m is None:
                return events
            try:
                name = json.loads(f'"{m.group(1)}"')
            except ValueError:
                return events
            self._start_call(name, events)
            self._args_at = m.end()
        if self._args_sent == 0:  # the head may have matched before the space after "arguments":
            self._args_at += len(body[self._args_at:]) - len(body[self._args_at:].lstrip())
        value = body[self._args_at:]
        end = _json_value_end(value)
        upto = end if end is not None else len(value)
        if not complete and end is None:
            upto = max(self._args_sent, len(value.rstrip()))  # whitespace may be the value's end
        piece = value[self._args_sent:upto]
        if piece:
            self._args_sent = upto
            events.append(ToolCallDelta(len(self.calls), None, None, piece))
        return events

    def _close_call(self, body: str) -> list[Event]:
        if self._call_id is not None and self._name is not None:
            arguments = self._xml_arguments(body) if self.form == "xml" else body[self._args_at:][:self._args_sent]
            call = ToolCall(self._call_id, self._name, arguments)
            events: list[Event] = []
            if self.form == "xml":
                events.append(ToolCallDelta(len(self.calls), None, None, arguments))
        else:  # not the streamed shape: the whole block at once, or the text as written
            parsed = _parse_json_call(body)
            if parsed is None:
                return [TextDelta(OPEN + body + CLOSE)]
            call = ToolCall(new_call_id(), *parsed)
            events = [ToolCallDelta(len(self.calls), call.id, call.name, call.arguments)]
        self.calls.append(call)
        self._call_id = self._name = None
        self._args_sent = 0
        if self.request is not None and not self.request.parallel:
            self.finished = True
        return events

    def _xml_arguments(self, body: str) -> str:
        spec = self.request.spec(self._name or "") if self.request else None
        properties = (spec.parameters.get("properties") or {}) if spec else {}
        arguments: dict[str, Any] = {}
        for name, raw in _XML_PARAMETER.findall(body):
            kind = (properties.get(name.strip()) or {}).get("type")
            arguments[name.strip()] = raw if kind == "string" else _json_or_text(raw)
        return json.dumps(arguments, ensure_ascii=False)


def _parse_json_call(body: str) -> tuple[str, str] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):
        return data["name"], arguments
    return data["name"], json.dumps(arguments, ensure_ascii=False)


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def _json_value_end(text: str) -> int | None:
    """Where the JSON value at the start of `text` (after whitespace) ends, or None if it has not yet."""
    depth, in_string, escaped, started = 0, False, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                if depth == 0:
                    return i + 1
        elif ch in "{[":
            depth, started = depth + 1, True
        elif ch in "}]":
            depth -= 1
            if depth <= 0:
                return i + 1
        elif ch == '"':
            in_string, started = True, True
        elif not ch.isspace() and depth == 0 and started is False:
            started = True  # a bare number, true, false or null: ends at the next delimiter
        elif depth == 0 and started and (ch.isspace() or ch in ",}"):
            return i
    return None
