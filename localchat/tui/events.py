"""Messages that workers post back to the app and its screens (post_message is the one thread-safe Textual call)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from localchat.sources import DownloadProgress
    from localchat.store.records import Conversation, ConversationSummary, SearchHit
    from localchat.tui.streaming import ReplyBuffer
    from localchat.tui.widgets.chatlog import StreamingReply
    from localchat.types import Usage
    from localchat.workspace import WorkspaceEvent

# --- models -------------------------------------------------------------------------------------


@dataclass
class TaskProgress(Message):
    """A pull or verify of `model_id` moved on (progress is a DownloadProgress)."""

    model_id: str
    progress: DownloadProgress


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
class WorkspaceChanged(Message, bubble=False):
    """A workspace event, on the event loop. Reply events carry the ReplyBuffer their text streams into."""

    change: WorkspaceEvent
    deltas: ReplyBuffer | None = None


class ReplyDelta(Message, bubble=False):
    """New text is waiting in the reply's ReplyBuffer."""


@dataclass
class TokensCounted(Message, bubble=False):
    """A reply's thought and answer in tokens: while it streams, and once at the end (`usage` set: the turn's
    own counters). `approximate`: estimated from the model's tokenizer, not counted by the engine."""

    reply: StreamingReply
    thought: int
    answer: int
    usage: Usage | None = None
    approximate: bool = True


# --- conversations ------------------------------------------------------------------------------


@dataclass
class ConversationsListed(Message):
    conversations: list[ConversationSummary]


@dataclass
class SearchResults(Message):
    query: str
    hits: list[SearchHit]


@dataclass
class ConversationLoaded(Message):
    conversation: Conversation  # with its messages


@dataclass
class Failed(Message):
    """Some background work failed: shown as an error notification that says what to do."""

    title: str
    error: str
