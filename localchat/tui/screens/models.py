"""The models screen: the whole catalog as a table; pull (in the background), cancel, delete, verify, switch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label
from textual.widgets.data_table import CellDoesNotExist

from localchat.errors import LocalchatError
from localchat.tui.events import Failed
from localchat.tui.format import context_label, human_size, sources_label
from localchat.tui.screens.dialogs import ConfirmDialog, TextDialog
from localchat.tui.tasks import ModelTask
from localchat.tui.widgets.tasks import TaskPanel

COLUMNS = (("", "mark"), ("Model", "id"), ("Name", "name"), ("Quant", "quant"), ("Size", "size"),
           ("Context", "context"), ("Sources", "sources"), ("State", "state"))


@dataclass
class ModelRow:
    id: str
    name: str
    quant: str
    size: int | None
    context: int | None
    sources: str
    installed: bool


@dataclass
class CatalogRows(Message):
    rows: list[ModelRow]


class ModelsScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back to chat"),
        Binding("enter", "choose", "Switch / pull", show=False),
        Binding("p", "pull", "Pull"),
        Binding("c", "cancel", "Cancel pull"),
        Binding("v", "verify", "Verify"),
        Binding("delete,d", "delete", "Delete"),
        Binding("i", "import", "Import file"),
    ]
    DEFAULT_CSS = """
    ModelsScreen DataTable { height: 1fr; }
    ModelsScreen #hint { color: $text-muted; padding: 0 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, ModelRow] = {}

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield DataTable(cursor_type="row", zebra_stripes=True, id="catalog")
        yield TaskPanel()
        yield Label("Enter: switch to an installed model, or pull one · ● installed · ▶ in use", id="hint")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Models"
        table = self.query_one(DataTable)
        for label, key in COLUMNS:
            table.add_column(label, key=key)
        table.focus()
        self.show_tasks(list(self.app.tasks.active.values()))
        self.models_changed()

    # --- data -----------------------------------------------------------------------------------

    def models_changed(self) -> None:
        self._rows_worker()

    @work(thread=True, exclusive=True, group="rows", exit_on_error=False)
    def _rows_worker(self) -> None:
        services = self.app.services
        try:
            installed = self.app.tasks.installed_models()
            rows = [ModelRow(e.id, e.name, e.quant or "", installed[e.id].size if e.id in installed else e.size,
                             e.context, sources_label(e), e.id in installed) for e in services.catalog]
        except LocalchatError as exc:
            self.post_message(Failed("Cannot read the catalog", str(exc)))
            return
        self.post_message(CatalogRows(rows))

    @on(CatalogRows)
    def _show_rows(self, event: CatalogRows) -> None:
        table = self.query_one(DataTable)
        keep = self.selected_id()
        self.rows = {r.id: r for r in event.rows}
        table.clear()
        for row in event.rows:
            table.add_row(*self._cells(row), key=row.id)
        if keep in self.rows:
            table.move_cursor(row=table.get_row_index(keep))

    def _cells(self, row: ModelRow) -> tuple:
        app = self.app
        mark = "▶" if row.id == app.model_id else ("●" if row.installed else "")
        # Text, not str: a DataTable reads a str as markup, and names are data.
        return (mark, Text(row.id), Text(row.name), Text(row.quant), human_size(row.size) if row.size else "",
                context_label(row.context), row.sources, Text(self._state(row)))

    def _state(self, row: ModelRow) -> str:
        app = self.app
        task = app.tasks.active.get(row.id)
        if task is not None:
            pct = f" {task.fraction * 100:.0f}%" if task.fraction is not None else ""
            return task.summary().split(" ", 1)[0] + pct
        if row.id == app.loading:
            return "loading…"
        if row.id == app.model_id:
            return "in use"
        return "installed" if row.installed else ""

    def show_tasks(self, tasks: list[ModelTask]) -> None:
        self.query_one(TaskPanel).show_tasks(tasks)
        table = self.query_one(DataTable)
        for model_id, row in self.rows.items():
            state = self._state(row)
            try:
                table.update_cell(model_id, "state", Text(state), update_width=True)
            except CellDoesNotExist:  # the row went away in a refresh
                pass

    def selected_id(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    # --- actions --------------------------------------------------------------------------------

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_choose()

    def action_choose(self) -> None:
        row = self.rows.get(self.selected_id() or "")
        if row is None:
            return
        if row.installed:
            self.app.switch_model(row.id)
            self.app.pop_screen()
            return
        if row.id in self.app.tasks.active:
            self.notify(f"{row.id} is being pulled; c cancels it", timeout=4)
            return
        size = f" ({human_size(row.size)})" if row.size else ""

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.app.tasks.pull(row.id)

        self.app.push_screen(ConfirmDialog(f"Pull {row.id}?", f"{row.name}{size} will be downloaded from "
                                           f"{row.sources} and checked before use. You can keep chatting meanwhile.",
                                           "Pull"), confirmed)

    def action_pull(self) -> None:
        row = self.rows.get(self.selected_id() or "")
        if row is None:
            return
        if row.installed:
            self.notify(f"{row.id} is already installed (v verifies its files)", timeout=4)
            return
        self.app.tasks.pull(row.id)

    def action_cancel(self) -> None:
        model_id = self.selected_id()
        if model_id is None or not self.app.tasks.cancel(model_id):
            self.notify("nothing is running for this model", severity="warning", timeout=4)

    def _installed_row(self):
        """The selected row if its model is installed (else a warning, and None)."""
        row = self.rows.get(self.selected_id() or "")
        if row is not None and not row.installed:
            self.notify(f"{row.id} is not installed", severity="warning", timeout=4)
            return None
        return row

    def action_verify(self) -> None:
        if (row := self._installed_row()) is not None:
            self.app.tasks.verify(row.id)

    def action_delete(self) -> None:
        if (row := self._installed_row()) is not None:
            self.ask_delete(self.app, row.id, row.size)

    @staticmethod
    def ask_delete(app: Any, model_id: str, size: int | None) -> None:
        """Confirm, then remove an installed model's files (never the model in use)."""
        if model_id in (app.model_id, app.loading):
            app.notify(f"{model_id} is in use: switch to another model first (Ctrl+O)", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                app.tasks.remove(model_id)

        app.push_screen(ConfirmDialog(f"Delete {model_id}?", f"Its files ({human_size(size)}) will be removed from "
                                      "disk. You can pull it again later.", "Delete", danger=True), confirmed)

    def action_import(self) -> None:
        self.ask_import(self.app)

    @staticmethod
    def ask_import(app: Any) -> None:
        def chosen(path: str | None) -> None:
            if path:
                app.tasks.import_path(path)

        app.push_screen(TextDialog("Import a model", placeholder="/media/usb/model.gguf or models.lcb",
                                   help="The path of a .gguf file (split GGUF: its first part), or of a bundle "
                                        "(.lcb) made by `localchat bundle export`. Every file is checked before "
                                        "it is installed."), chosen)

    def task_finished(self, event: Any) -> None:
        self.show_tasks(list(self.app.tasks.active.values()))
