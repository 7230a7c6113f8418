"""The engine interface everyone codes against (local copy of /work/notes/api.md for the workspace branch;
the engine branch owns this module and its version wins the merge)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Protocol, Union

from typing_extensions import Self

from localchat.types import Message, ModelInfo, SamplingParams, Usage

FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]  # tool_calls: issue 17 uses it
Prompt = Union[str, list[Message]]  # a rendered prompt, or messages for an engine with its own template


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str  # answer text


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str  # thinking text (issue 14 emits it; defined now)


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    id: str | None
    name: str | None
    arguments: str  # issue 17 (defined now)


Event = Union[TextDelta, ReasoningDelta, ToolCallDelta]


class Generation(Protocol):
    """Iterating yields Event objects (today only TextDelta)."""

    usage: Usage | None  # set at the end
    finish_reason: FinishReason | None  # set at the end

    @property
    def id(self) -> str: ...

    @property
    def text(self) -> str: ...  # answer text received so far

    def __iter__(self) -> Iterator[Event]: ...

    def cancel(self) -> None: ...  # thread-safe, idempotent

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class Engine(Protocol):
    info: ModelInfo

    @property
    def alive(self) -> bool: ...

    def generate(self, prompt: Prompt, sampling: SamplingParams) -> Generation: ...

    def count_tokens(self, texts: Sequence[Prompt]) -> list[int]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class ChatTemplate(Protocol):
    """localchat.templates renderers and the remote pass-through."""

    name: str

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> Prompt: ...
