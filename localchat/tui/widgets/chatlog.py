"""The conversation pane: one Markdown block per message (code highlighted, click a code block to copy it)."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Label, Markdown, Static
from textual.widgets._markdown import MarkdownFence

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

    def __init__(self, role: str, text: str = "", author: str | None = None) -> None:
        super().__init__(classes=role)
        self.role = role
        self.author = author or ROLE_LABELS.get(role, role)
        self.block = MessageBlock(role, text)

    def compose(self) -> ComposeResult:
        with Horizontal(classes="header"):
            yield Label(self.author, classes="who", markup=False)
            yield CopyButton(self.block)
        yield self.block

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

    async def add_message(self, role: str, text: str = "", author: str | None = None) -> MessageBlock:
        view = MessageView(role, text, author)
        await self.mount(view)
        self.anchor()
        return view.block

    async def add_notice(self, text: str, kind: str = "warning") -> Notice:
        notice = Notice(text, markup=False, classes=kind)
        await self.mount(notice)
        self.anchor()
        return notice

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
