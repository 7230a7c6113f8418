"""A reply with tools or a response format, for any engine: the prompt rendered with the tools, the
sampling carrying the grammar, and the engine's generation wrapped so that it yields ToolCallDelta events
and ends with finish_reason "tool_calls". The server, the CLI and the chat session all use this, so a
remote engine or the TUI gets the same behaviour as the local one.

A remote engine's server renders the chat and parses the calls itself (llama-server --jinja, vLLM, Ollama,
another localchat serve): its messages pass through with their calls and results, the tools ride on the
sampling as OpenAI's fields (SamplingParams.tools), no grammar is set for them, and its generation yields
the calls the server streams (localchat.engine.remote.RemoteGeneration), so nothing is wrapped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any

from localchat.engine.api import Event, FinishReason, Generation, Prompt, TextDelta
from localchat.reasoning import detect
from localchat.structured import OutputConstraint, tools_constraint
from localchat.tools import ToolCallParser, ToolFormat, ToolRequest, chatml_messages, jinja_messages, template_format
from localchat.types import Message, SamplingParams, ToolCall, Usage


def prepare(template: Any, messages: Sequence[Message], tools: ToolRequest | None,
            response_format: OutputConstraint | None, sampling: SamplingParams,
            ) -> tuple[Prompt, SamplingParams, Callable[[Generation], Generation]]:
    """Everything a reply with tools or a response format needs: the prompt (tools rendered the model's
    way), the sampling carrying the grammar, and `wrap(generation)`, which sees the engine's generation
    through the tool-call parser when tools may be called (and leaves it as it is otherwise)."""
    prompt = render(template, messages, tools)
    if response_format is not None:
        sampling = replace(sampling, grammar=response_format.to_dict())
    return (prompt, *for_prompt(template, prompt, tools, sampling))


def for_prompt(template: Any, prompt: Prompt, tools: ToolRequest | None, sampling: SamplingParams,
               ) -> tuple[SamplingParams, Callable[[Generation], Generation]]:
    """For a rendered prompt: the sampling with its grammar (the tools', else the one it carries, as
    `--json` sets it), held back until a thought the prompt opened has closed; and the `wrap` of `prepare`."""
    if server_renders(template):
        return for_server(sampling, tools), lambda generation: generation
    form = tool_form(template)
    fmt = OutputConstraint.from_dict(sampling.grammar) if sampling.grammar is not None else None
    constrained = constrain(sampling, tools, fmt, form, thought_close(template, prompt))

    def wrap(generation: Generation) -> Generation:
        if tools is None or not tools.active:
            return generation
        return ToolCallingGeneration(generation, tools, form)

    return constrained, wrap


def server_renders(template: Any) -> bool:
    """The template of a remote engine (localchat.engine.remote.RemoteTemplate): the server renders."""
    return getattr(template, "name", None) == "remote"


def for_server(sampling: SamplingParams, tools: ToolRequest | None) -> SamplingParams:
    """The sampling of a reply a server renders: the tools as OpenAI's fields (tool_choice "none" too, so
    the model still sees the functions its history called). Tools take precedence over a response format,
    as in `constrain`; the remote engine sends that one as OpenAI's `response_format`."""
    if tools is None:
        return sampling
    return replace(sampling, tools=tools.to_openai(), grammar=None if tools.active else sampling.grammar)


def tool_form(template: Any) -> ToolFormat:
    """How the model writes a call: its own template's form, else Qwen2.5's JSON (what we render)."""
    return template_format(getattr(template, "source", None)) or "json"


def render(template: Any, messages: Sequence[Message], tools: ToolRequest | None,
           add_generation_prompt: bool = True) -> Any:
    """The prompt. A GGUF template that knows tools renders them itself (Qwen3's XML form, Hermes, ...);
    a native ChatML renderer, or a GGUF template without a tool section, gets Qwen2.5's form."""
    has_tools = any(m.tool_calls or m.role == "tool" for m in messages)
    if server_renders(template) or (tools is None and not has_tools):  # the server gets calls and results as they are
        return template.render(list(messages), add_generation_prompt=add_generation_prompt)
    source = getattr(template, "source", None)
    if template_format(source) is not None and hasattr(template, "render_dicts"):
        listed = [t.to_dict() for t in tools.offered()] if tools is not None and tools.active else None
        return template.render_dicts(jinja_messages(messages), tools=listed, add_generation_prompt=add_generation_prompt)
    offered = tools if tools is not None and tools.active else None
    default_system = getattr(template, "default_system", None)
    return template.render(chatml_messages(messages, offered, default_system), add_generation_prompt=add_generation_prompt)


def constrain(sampling: SamplingParams, tools: ToolRequest | None, response_format: OutputConstraint | None,
              form: ToolFormat, after: str | None = None) -> SamplingParams:
    """The sampling with the grammar this reply needs (tools take precedence; none: unchanged). `after`:
    the reply starts in a thought, and the grammar holds once this close tag is written."""
    constraint = tools_constraint(tools, form) or response_format
    if constraint is None:
        return sampling
    return replace(sampling, grammar=replace(constraint, after=after).to_dict())


def thought_close(template: Any, prompt: Any) -> str | None:
    """The close tag of a thought the prompt leaves open (Qwen3.5, QwQ with thinking on), else None: a grammar
    from the first token would force the call or the JSON into the thought."""
    fmt = detect(getattr(template, "source", None))
    if fmt is None or not isinstance(prompt, str) or not fmt.opens_in_thought(prompt):
        return None
    return fmt.close_tag


class ToolCallingGeneration:
    """An engine's generation seen through the tool-call parser: text outside calls as TextDelta, calls
    as ToolCallDelta; `tool_calls` and `finish_reason` "tool_calls" once it ended with calls. With
    parallel calls off the engine is stopped after the first call."""

    def __init__(self, inner: Generation, tools: ToolRequest, form: ToolFormat) -> None:
        self.inner = inner
        self.parser = ToolCallParser(tools, form)
        self._text: list[str] = []
        self._stopped = False

    @property
    def id(self) -> str:
        return self.inner.id

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def usage(self) -> Usage | None:
        return self.inner.usage

    @usage.setter
    def usage(self, value: Usage | None) -> None:
        self.inner.usage = value

    @property
    def finish_reason(self) -> FinishReason | None:
        reason = self.inner.finish_reason
        if self.parser.calls and (reason == "stop" or self._stopped):
            return "tool_calls"
        return reason

    @finish_reason.setter
    def finish_reason(self, value: FinishReason | None) -> None:
        self.inner.finish_reason = value

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(self.parser.calls)

    def __iter__(self) -> Iterator[Event]:
        for event in self.inner:
            if not isinstance(event, TextDelta):
                yield event  # reasoning passes through untouched
                continue
            yield from self._out(self.parser.feed(event.text))
            if self.parser.finished and not self._stopped:
                self._stopped = True
                self.inner.cancel()
        yield from self._out(self.parser.finish())

    def _out(self, events: list[Event]) -> Iterator[Event]:
        for event in events:
            if isinstance(event, TextDelta):
                self._text.append(event.text)
            yield event

    def cancel(self) -> None:
        self.inner.cancel()

    def end_thought(self) -> bool:
        return self.inner.end_thought()

    def __enter__(self) -> ToolCallingGeneration:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cancel()
