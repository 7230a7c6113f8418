"""A reasoning model's thought: a dim block that streams live above the answer and folds into one line
("Thought for 12 s · 840 tokens") when the answer begins. A click on its header (or the chat screen's key)
opens and folds it again.

Plain text, not Markdown: a thought is scratch work, and rendering it as Markdown is what made a `<think>`
paragraph vanish as HTML before. One Static holds it; appends replace its content (cheap next to Markdown).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static

from localchat.reasoning import thought_line


class ThoughtHeader(Static):
    DEFAULT_CSS = """
    ThoughtHeader { color: $text-muted; text-style: italic; height: 1; }
    ThoughtHeader:hover { color: $accent; }
    """

    def on_click(self, event: events.Click) -> None:
        event.stop()
        block = self.parent
        if isinstance(block, ThoughtBlock):
            block.toggle()


class ThoughtBlock(Vertical):
    """The thought of one reply. `live` while it streams; `folded` shows the header line only."""

    DEFAULT_CSS = """
    ThoughtBlock { height: auto; padding: 0 1; margin: 0 0 1 0; }
    ThoughtBlock > .body { color: $text-muted; text-style: dim; padding: 0 0 0 2; }
    ThoughtBlock.folded > .body { display: none; }
    """

    @dataclass
    class Toggled(Message):
        block: "ThoughtBlock"
        folded: bool

    def __init__(self, text: str = "", tokens: int | None = None, seconds: float | None = None,
                 live: bool = False) -> None:
        super().__init__(classes="" if live else "folded")
        self._parts = [text] if text else []
        self.tokens = tokens
        self.seconds = seconds
        self.live = live
        self.ended_early = False  # the user ended it (the chat screen's key) before the model did
        self.approximate = False  # `tokens` is an estimate (the engine did not count the thought itself)
        self.started = time.monotonic()
        self._header = ThoughtHeader(self._title(), markup=False)
        self._body = Static(text, classes="body", markup=False)

    def compose(self) -> ComposeResult:
        yield self._header
        yield self._body

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def folded(self) -> bool:
        return self.has_class("folded")

    def _title(self) -> str:
        marker = "▸ " if self.has_class("folded") else "▾ "
        about = "~" if self.approximate else ""
        if self.live:
            count = f" {about}{self.tokens:,} tokens" if self.tokens else ""
            return marker + "Thinking…" + count
        early = " (ended early)" if self.ended_early else ""
        line = thought_line(None, self.seconds) + (f" · {about}{self.tokens:,} tokens" if self.tokens else "")
        return marker + line + early

    def append(self, text: str) -> None:
        if text:
            self._parts.append(text)
            self._body.update(self.text)

    def set_tokens(self, tokens: int | None, approximate: bool = False) -> None:
        """The thought's length so far (live) or in the end, as counted or estimated."""
        if tokens is not None and (tokens, approximate) != (self.tokens, self.approximate):
            self.tokens = tokens
            self.approximate = approximate
            self._header.update(self._title())

    def finish(self, tokens: int | None = None, seconds: float | None = None, fold: bool = True,
               ended_early: bool = False) -> None:
        """The thought has ended: show how long it took; fold it unless the reader is looking at it."""
        self.live = False
        self.ended_early = self.ended_early or ended_early
        self.tokens = tokens if tokens is not None else self.tokens
        self.seconds = seconds if seconds is not None else round(time.monotonic() - self.started, 1)
        self.set_class(fold, "folded")
        self._header.update(self._title())

    def toggle(self) -> None:
        """Open or fold it; a live thought may be folded too (a wall of thinking one does not want to watch)."""
        self.toggle_class("folded")
        self._header.update(self._title())
        self.post_message(self.Toggled(self, self.folded))
