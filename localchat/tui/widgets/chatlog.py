"""The conversation pane: one Markdown block per message, the last one streaming."""

from __future__ import annotations

from textual.containers import VerticalScroll
from textual.widgets import Markdown, Static


class MessageBlock(Markdown):
    """One message rendered as Markdown (code blocks highlighted)."""

    DEFAULT_CSS = """
    MessageBlock { margin: 0 1 1 1; padding: 0 1; }
    MessageBlock.user { background: $boost; border-left: thick $accent; }
    MessageBlock.assistant { border-left: thick $success; }
    MessageBlock.cancelled { border-left: thick $warning; }
    MessageBlock.error { border-left: thick $error; }
    """

    def __init__(self, role: str, text: str = "") -> None:
        super().__init__(text, classes=role)
        self.role = role
        self.text = text


class Notice(Static):
    DEFAULT_CSS = """
    Notice { margin: 0 2 1 2; color: $warning; text-style: italic; }
    """


class ChatLog(VerticalScroll):
    """Scrolls with the reply while the user stays at the bottom (anchor), stays put if they scroll up."""

    DEFAULT_CSS = """
    ChatLog { height: 1fr; }
    """

    async def add_message(self, role: str, text: str = "") -> MessageBlock:
        block = MessageBlock(role, text)
        await self.mount(block)
        self.anchor()
        return block

    async def add_notice(self, text: str) -> None:
        await self.mount(Notice(text))
        self.anchor()

    async def clear_messages(self) -> None:
        await self.remove_children()
