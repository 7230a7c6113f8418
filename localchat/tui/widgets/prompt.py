"""Multi-line message input: Enter sends; Shift+Enter, Alt+Enter or Ctrl+J start a new line.

Up on an empty input asks to edit the last message (as in chat apps), the same as the Edit last action.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = ("shift+enter", "alt+enter", "ctrl+j")
PLACEHOLDER = "Message (Enter to send, Shift+Enter or Ctrl+J for a new line)"


class PromptInput(TextArea):
    DEFAULT_CSS = """
    PromptInput { height: auto; max-height: 10; min-height: 3; margin: 0 1; }
    PromptInput.editing { border: tall $warning; }
    """

    @dataclass
    class Submitted(Message):
        text: str

    class EditLast(Message):
        """Up was pressed on an empty input."""

    def __init__(self, **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)
        self.placeholder = PLACEHOLDER

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            text = self.text
            if text.strip():
                self.post_message(self.Submitted(text))
                self.clear()
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        if event.key == "up" and not self.text:
            event.stop()
            event.prevent_default()
            self.post_message(self.EditLast())
            return
        await super()._on_key(event)

    def set_text(self, text: str) -> None:
        """Replace the content and put the cursor at its end."""
        self.text = text
        self.move_cursor(self.document.end)
