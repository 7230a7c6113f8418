"""Messages that workers post back to the app and its screens (post_message is the one thread-safe Textual call)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

# --- models -------------------------------------------------------------------------------------


@dataclass
class ModelLoaded(Message):
    model_id: str
    engine: Any
    template: Any
    warnings: list[str]
    seq: int = 0  # which load request this answers (a newer request makes it stale)


@dataclass
class ModelLoadFailed(Message):
    model_id: str
    error: str
    seq: int = 0


@dataclass
class TaskProgress(Message):
    """A pull or verify of `model_id` moved on (progress is a DownloadProgress)."""

    model_id: str
    progress: Any


@dataclass
class TaskFinished(Message):
    """A pull or verify ended: `error` is None on success; `cancelled` when the user stopped it."""

    model_id: str
    kind: str  # pull | verify | import
    error: str | None = None
    cancelled: bool = False
    problems: list[str] | None = None  # what verify found
    installed: list[str] | None = None  # model ids an import installed


@dataclass
class ModelsChanged(Message):
    """Installed models changed (pull, remove, import): lists and tables refresh."""


# --- chat ---------------------------------------------------------------------------------------


@dataclass
class ReplyStarted(Message, bubble=False):
    notice: str | None
    prompt_tokens: int


class ReplyDelta(Message, bubble=False):
    """New text is waiting in the chat screen's DeltaBuffer."""


@dataclass
class ReplyFinished(Message, bubble=False):
    status: str  # complete | length | cancelled | error
    usage: Any
    error: str | None = None
    started: bool = True  # False: the turn failed before generation began (the message was not sent)
    warning: str | None = None  # the reply went on, but something else failed (saving it)


# --- conversations ------------------------------------------------------------------------------


@dataclass
class StoreReady(Message):
    store: Any


@dataclass
class ConversationsListed(Message):
    conversations: list[Any]  # ConversationSummary


@dataclass
class SearchResults(Message):
    query: str
    hits: list[Any]  # SearchHit


@dataclass
class ConversationLoaded(Message):
    conversation: Any  # store Conversation with messages


@dataclass
class Failed(Message):
    """Some background work failed: shown as an error notification that says what to do."""

    title: str
    error: str
