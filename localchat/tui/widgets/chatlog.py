"""The conversation pane: one Markdown block per message (code highlighted, click a code block to copy it), a
reasoning model's thought in a ThoughtBlock above its answer.

The pane follows a streaming reply while the reader is at the bottom and never moves while they have scrolled
up (Textual's anchor: scrolling up releases it, scrolling back to the end restores it).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Label, Markdown, Static
from textual.widgets._markdown import MarkdownFence

from localchat.tui.streaming import ReplyPiece
from localchat.tui.widgets.thought import ThoughtBlock

ROLE_LABELS = {"user": "You", "assistant": "Assistant", "system": "System"}


@dataclass
class CopyRequested(Message):
    """Copy `text` to the clipboard; `what` names it for the notification ("code block", "reply")."""

    text: str
    what: str


class CodeFence(MarkdownFence):
    """A highlighted code block; a click copies its code."""

    DEFAULT_CSS = """
    CodeFence:hover { background: $accent 15%; }
    """

    def on_mount(self) -> None:
        self.tooltip = "click to copy this code block"

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self.post_message(CopyRequested(self.code, "code block"))


class MessageBlock(Markdown):
    """One message rendered as Markdown."""

    BLOCKS = {**Markdown.BLOCKS, "fence": CodeFence, "code_block": CodeFence}
    DEFAULT_CSS = """
    MessageBlock { padding: 0 1; margin: 0; }
    MessageBlock > *:last-child { margin-bottom: 0; }
    """

    def __init__(self, role: str, text: str = "") -> None:
        super().__init__(text, classes=role)
        self.role = role

    @property
    def code_blocks(self) -> list[str]:
        return [fence.code for fence in self.query(MarkdownFence)]


class CopyButton(Label):
    DEFAULT_CSS = """
    CopyButton { color: $text-muted; width: auto; }
    CopyButton:hover { color: $accent; text-style: underline; }
    """

    def __init__(self, block: MessageBlock) -> None:
        super().__init__("copy")
        self.block = block

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self.post_message(CopyRequested(self.block.source, "reply" if self.block.role == "assistant" else "message"))


class MessageView(Vertical):
    """A header line (who wrote it, a copy link) above the message's Markdown."""

    DEFAULT_CSS = """
    MessageView { height: auto; margin: 0 1 1 1; border-left: thick $success; }
    MessageView.user { background: $boost; border-left: thick $accent; }
    MessageView.cancelled { border-left: thick $warning; }
    MessageView.error { border-left: thick $error; }
    MessageView > .header { height: 1; padding: 0 1; }
    MessageView > .header > .who { width: 1fr; color: $text-muted; text-style: bold; }
    """

    def __init__(self, role: str, text: str = "", author: str | None = None,
                 thought: ThoughtBlock | None = None) -> None:
        super().__init__(classes=role)
        self.role = role
        self.author = author or ROLE_LABELS.get(role, role)
        self.block = MessageBlock(role, text)
        self.thought = thought

    def compose(self) -> ComposeResult:
        with Horizontal(classes="header"):
            yield Label(self.author, classes="who", markup=False)
            yield CopyButton(self.block)
        if self.thought is not None:
            yield self.thought
        yield self.block

    async def add_thought(self, thought: ThoughtBlock) -> ThoughtBlock:
        """A thought that began streaming: above the answer."""
        self.thought = thought
        await self.mount(thought, before=self.block)
        return thought

    def mark(self, status: str) -> None:
        """Show how the message ended (cancelled, error)."""
        self.set_class(status == "cancelled", "cancelled")
        self.set_class(status == "error", "error")


class Notice(Static):
    DEFAULT_CSS = """
    Notice { margin: 0 2 1 2; color: $text-warning; text-style: italic; }
    Notice.info { color: $text-muted; }
    """


class ChatLog(VerticalScroll):
    """Scrolls with the reply while the user stays at the bottom (anchor), stays put if they scroll up."""

    DEFAULT_CSS = """
    ChatLog { height: 1fr; }
    ChatLog > .empty { color: $text-muted; margin: 1 2; }
    """

    @property
    def following(self) -> bool:
        """At the bottom, following new text (not scrolled up by the reader)."""
        return self.is_anchored and not self._anchor_released  # Textual keeps this flag; no public getter

    def _follow(self, jump: bool) -> None:
        # The first message anchors the pane; after that it follows only while the reader is at the bottom,
        # unless they just acted (sent a message, opened a conversation): then it jumps to the end.
        if jump or not self.is_anchored:
            self.anchor()

    async def add_message(self, role: str, text: str = "", author: str | None = None,
                          thought: ThoughtBlock | None = None) -> MessageBlock:
        view = MessageView(role, text, author, thought)
        await self.mount(view)
        self._follow(jump=role == "user")
        return view.block

    async def add_notice(self, text: str, kind: str = "warning") -> Notice:
        notice = Notice(text, markup=False, classes=kind)
        await self.mount(notice)
        self._follow(jump=False)
        return notice

    def in_view(self, widget: Widget) -> bool:
        """Whether some of `widget` is on screen in the pane."""
        return widget.region.overlaps(self.content_region)  # both in screen coordinates

    def last_thought(self) -> ThoughtBlock | None:
        for view in reversed(self.views()):
            if view.thought is not None:
                return view.thought
        return None

    async def clear_messages(self) -> None:
        await self.remove_children()

    def views(self) -> list[MessageView]:
        return list(self.query_children(MessageView))

    def last_block(self, role: str) -> MessageBlock | None:
        for view in reversed(self.views()):
            if view.role == role:
                return view.block
        return None

    async def drop_tail(self, include_last_user: bool) -> None:
        """Remove what follows the last user message (its replies and notices), and that message too if asked."""
        children = list(self.children)
        last_user = max((i for i, c in enumerate(children) if isinstance(c, MessageView) and c.role == "user"),
                        default=None)
        if last_user is None:
            return
        start = last_user if include_last_user else last_user + 1
        doomed = children[start:]
        if doomed:
            await self.remove_children(doomed)


class StreamingReply:
    """Where a streaming reply's pieces go (a ReplyStream appends to it): the thought into a ThoughtBlock above
    the answer, made on the first thought text (a model that does not reason never gets one), the answer into
    the Markdown block. The thought folds when the answer begins, unless the reader has scrolled up to it."""

    def __init__(self, log: ChatLog, view: MessageView) -> None:
        self.log = log
        self.view = view
        self.ended_early = False  # the user ended the thought (ChatScreen.thought_ended_early)

    @property
    def thought(self) -> ThoughtBlock | None:
        return self.view.thought

    @property
    def thinking(self) -> bool:
        return self.view.thought is not None and self.view.thought.live

    async def append(self, piece: ReplyPiece) -> None:
        if piece.thought:
            block = self.view.thought or await self.view.add_thought(ThoughtBlock(live=True))
            block.append(piece.thought)
        if piece.answer:
            self.end_thought()
            await self.view.block.append(piece.answer)

    def end_thought(self, tokens: int | None = None) -> None:
        """The answer began, or the reply ended: the thought stops being live."""
        block = self.view.thought
        if block is not None and block.live:
            reading = not self.log.following and self.log.in_view(block)
            block.finish(tokens, fold=not reading, ended_early=self.ended_early)
