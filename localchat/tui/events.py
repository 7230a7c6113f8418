"""Messages that workers post to the app (post_message is the one thread-safe Textual call)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class ModelLoaded(Message):
    model_id: str
    engine: Any
    template: Any
    warnings: list[str]


@dataclass
class ModelLoadFailed(Message):
    model_id: str
    error: str


@dataclass
class ReplyStarted(Message):
    notice: str | None
    prompt_tokens: int


@dataclass
class ReplyDelta(Message):
    text: str


@dataclass
class ReplyFinished(Message):
    status: str
    usage: Any
    error: str | None = None
