"""Every key binding, built from the bindings themselves so it cannot drift from what the keys do."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

from localchat.tui.commands import binding_rows


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 100; max-width: 95%; height: 90%; border: thick $primary; background: $surface; padding: 0 1;
    }
    HelpScreen .title { text-style: bold; padding: 0 1; }
    HelpScreen .hint { color: $text-muted; padding: 0 1; }
    HelpScreen DataTable { height: 1fr; }
    """
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close help")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("localchat keys", classes="title")
            yield DataTable(cursor_type="row", zebra_stripes=True)
            yield Label("Ctrl+P searches every action. Esc closes this help.", classes="hint")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Where", "Keys", "What it does")
        for where, keys, what in binding_rows():
            table.add_row(where, keys, what)
        table.focus()
