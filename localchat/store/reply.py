"""Writing an assistant reply while it streams, so a crash loses at most the last flush interval of it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from localchat.errors import Cancelled, StoreError
from localchat.store.records import FINAL_STATUSES

if TYPE_CHECKING:
    from localchat.store.database import ConversationStore

FLUSH_INTERVAL = 0.5  # seconds between write-throughs while a reply streams


class ReplyWriter:
    """One assistant message being generated. Its row exists from the start with status 'partial'.

    `append` buffers deltas and writes the whole text so far through to the database when the last write is
    `flush_interval` seconds old, so a kill -9 or power cut loses at most that much of the reply and leaves
    the message marked partial. `finish` writes the final text, status and usage. Thread-safe through the
    store's lock; one writer is driven by one thread (the chat turn).
    Used as a context manager it finishes the reply itself: 'error' on an exception ('cancelled' on
    Cancelled or KeyboardInterrupt), 'complete' on a normal exit that did not finish it.
    """

    def __init__(self, store: "ConversationStore", conversation_id: int, message_id: int,
                 flush_interval: float = FLUSH_INTERVAL) -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.message_id = message_id
        self.flush_interval = flush_interval
        self.status: str = "partial"
        self._parts: list[str] = []
        self._thought: list[str] = []  # a reasoning model's thought, streamed apart from the answer
        self._written = (0, 0)  # characters of (answer, thought) already on disk
        self._last_flush = time.monotonic()

    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @property
    def reasoning(self) -> str:
        if len(self._thought) > 1:
            self._thought = ["".join(self._thought)]
        return self._thought[0] if self._thought else ""

    @property
    def finished(self) -> bool:
        return self.status != "partial"

    def append(self, delta: str) -> None:
        self._add(self._parts, delta)

    def append_reasoning(self, delta: str) -> None:
        self._add(self._thought, delta)

    def _add(self, parts: list[str], delta: str) -> None:
        if self.finished:
            raise StoreError(f"reply {self.message_id} was already finished ({self.status}); start a new one")
        if delta:
            parts.append(delta)
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Write the text so far now (nothing happens when nothing new arrived)."""
        text, thought = self.text, self.reasoning
        if (len(text), len(thought)) != self._written:
            self.store._write_reply(self.message_id, text, reasoning=thought)
            self._written = (len(text), len(thought))
        self._last_flush = time.monotonic()

    def finish(self, status: str = "complete", usage: Any = None) -> None:
        """Final text, status (complete | cancelled | error) and usage: a dict with any of prompt_tokens,
        completion_tokens, ttft, tokens_per_second, reasoning_tokens, thinking_seconds (e.g. `Usage.to_dict()`),
        or an object with `to_dict()`."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"a reply finishes as one of {', '.join(FINAL_STATUSES)}, not {status!r}")
        if self.finished:
            raise StoreError(f"reply {self.message_id} was already finished ({self.status})")
        self.store._write_reply(self.message_id, self.text, status=status, usage=usage, reasoning=self.reasoning)
        self._written = (len(self.text), len(self.reasoning))
        self.status = status

    def __enter__(self) -> "ReplyWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.finished:
            return
        if exc_type is None:
            self.finish("complete")
        else:
            cancelled = issubclass(exc_type, (Cancelled, KeyboardInterrupt))
            try:
                self.finish("cancelled" if cancelled else "error")
            except StoreError:
                pass  # the original exception says more; the row stays 'partial' with what was flushed

    def __repr__(self) -> str:
        return f"<ReplyWriter message={self.message_id} {self.status} {len(self.text)} chars>"
