"""The engine interface everyone codes against: what a generation yields and what an engine offers.

EngineClient (a local worker process) and RemoteEngineClient (an OpenAI-compatible server) both conform;
tests/engine/test_contract.py runs one suite against each. ChatSession, the workspace, the CLI and the
server hold an `Engine` and iterate `Event`s: `for event in generation: if isinstance(event, TextDelta)`.
Stdlib and localchat.types only, so anything may import it cheaply.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, runtime_checkable

from typing_extensions import Self

from localchat.types import Embeddings, Message, ModelInfo, SamplingParams, Usage

__all__ = ["answer_text",
    "ChatTemplate", "Engine", "Event", "FinishReason", "Generation", "Prompt", "ReasoningDelta", "StatefulEngine",
    "TextDelta",
    "ToolCallDelta", "Usage", "answer_text",
]

FinishReason = Literal["stop", "length", "cancelled", "tool_calls"]  # tool_calls: issue 17 uses it
Prompt = str | list[Message]  # a rendered prompt, or messages for an engine with its own template


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


Event = TextDelta | ReasoningDelta | ToolCallDelta


@runtime_checkable
class Generation(Protocol):
    """One reply. Iterating yields Event objects (today only TextDelta) and ends normally after a cancel;
    an engine failure raises EngineError (WorkerCrashed for a dead worker). Dropping it cancels it."""

    usage: Usage | None  # set at the end
    finish_reason: FinishReason | None  # set at the end

    @property
    def id(self) -> str: ...

    @property
    def text(self) -> str: ...  # answer text received so far

    def __iter__(self) -> Iterator[Event]: ...

    def cancel(self) -> None: ...  # thread-safe, idempotent

    # Close a reasoning model's thought now, so the answer follows (thread-safe). True when a thought was
    # open (or may still open) and will be closed; False when there is none to close.
    def end_thought(self) -> bool: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


@runtime_checkable
class Engine(Protocol):
    """A loaded model. `close()` is idempotent; after it `alive` is False."""

    info: ModelInfo

    @property
    def alive(self) -> bool: ...

    def generate(self, prompt: Prompt, sampling: SamplingParams) -> Generation: ...

    def count_tokens(self, texts: Sequence[Prompt]) -> list[int]: ...

    def embed(self, texts: Sequence[str], truncate: bool = False) -> Embeddings:
        """One L2-normalised vector per text (`.vectors`) and the tokens they took (`.prompt_tokens`).
        EngineContextOverflow for a text longer than the engine embeds at once, unless `truncate`."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


@runtime_checkable
class StatefulEngine(Protocol):
    """An engine that can keep a conversation's state on disk (the local worker; issue 15). Both return
    (tokens the state covers, why none: a stale or damaged file, nothing held); neither raises for that."""

    def save_state(self, prompt: Prompt, path: Path, template: str) -> tuple[int, str]: ...

    def load_state(self, path: Path, template: str) -> tuple[int, str]: ...


@runtime_checkable
class ChatTemplate(Protocol):
    """localchat.templates renderers (a prompt string) and the remote pass-through (the messages)."""

    name: str

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> Prompt: ...


def answer_text(events: Iterable[Event]) -> str:
    """The answer text of a stream of events (reasoning and tool calls left out)."""
    return "".join(e.text for e in events if isinstance(e, TextDelta))
