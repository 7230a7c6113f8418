"""What the store hands out: plain dataclasses, no database handles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from localchat.types import Message, Role

ROLES: tuple[str, ...] = ("system", "user", "assistant")
# partial: being written, or its writer died (kill -9, power cut) before finishing it.
STATUSES: tuple[str, ...] = ("complete", "partial", "cancelled", "error")
FINAL_STATUSES: tuple[str, ...] = ("complete", "cancelled", "error")
METRICS: tuple[str, ...] = ("prompt_tokens", "completion_tokens", "ttft", "tokens_per_second", "reasoning_tokens",
                            "thinking_seconds")


@dataclass
class StoredMessage:
    id: int
    conversation_id: int
    position: int  # 0, 1, 2 ... within its conversation (the system prompt lives on the conversation)
    role: Role
    content: str
    status: str = "complete"
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft: float | None = None  # seconds from request to first token
    tokens_per_second: float | None = None
    created: float = 0.0  # unix seconds
    updated: float = 0.0
    reasoning: str = ""  # the thought of a reasoning model's reply, apart from its answer (content)
    reasoning_tokens: int | None = None  # of completion_tokens, how many were thought
    thinking_seconds: float | None = None

    def to_message(self) -> Message:
        return Message(self.role, self.content, reasoning=self.reasoning)

    def metrics(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in METRICS if getattr(self, k) is not None}


@dataclass
class Conversation:
    id: int
    title: str
    model: str | None
    system: str | None
    settings: dict[str, Any]
    created: float
    updated: float
    messages: list[StoredMessage] = field(default_factory=list)

    def chat_messages(self) -> list[Message]:
        """The history to send to a model: the system prompt, then every message that has text.

        Partial and cancelled replies are kept (the user saw them); empty ones (failed before any token) are not.
        A reply's thought goes with it; whether it reaches the prompt is the model's template's decision.
        """
        out = [Message("system", self.system)] if self.system else []
        out.extend(m.to_message() for m in self.messages if m.content)
        return out

    @property
    def last_message(self) -> StoredMessage | None:
        return self.messages[-1] if self.messages else None


@dataclass(frozen=True)
class ConversationSummary:
    id: int
    title: str
    model: str | None
    message_count: int
    created: float
    updated: float  # last activity


@dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    title: str
    message_id: int
    role: Role
    snippet: str  # plain text around the hit; "…" where it was cut
    highlights: tuple[tuple[int, int], ...] = ()  # (start, end) offsets into `snippet` of the matched text

    def marked(self, open: str = "[", close: str = "]") -> str:
        """The snippet with each match wrapped in `open`/`close` (e.g. ANSI codes or Rich markup)."""
        out, pos = [], 0
        for start, end in self.highlights:
            out += [self.snippet[pos:start], open, self.snippet[start:end], close]
            pos = end
        out.append(self.snippet[pos:])
        return "".join(out)


def metrics_from(usage: Any) -> dict[str, Any]:
    """The metrics we keep from a usage report: a dict (e.g. `Usage.to_dict()`) or an object with `to_dict()`."""
    if usage is None:
        return {}
    data = usage.to_dict() if hasattr(usage, "to_dict") else dict(usage)
    out: dict[str, Any] = {}
    for key in METRICS:
        value = data.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = int(value) if key.endswith("_tokens") else float(value)
    return out
