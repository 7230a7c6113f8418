"""First run: no model installed. Offers one (the built-in default) and installs it with a progress bar."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Label, Static

from localchat.errors import LocalchatError
from localchat.tui.format import context_label, human_size, sources_label
from localchat.tui.tasks import ModelTask
from localchat.tui.widgets.tasks import TaskPanel


class WelcomeScreen(Screen):
    BINDINGS = [
        Binding("f2", "app.models", "Browse the catalog"),
        Binding("ctrl+q", "app.quit", "Quit"),
    ]
    DEFAULT_CSS = """
    WelcomeScreen { align: center middle; }
    WelcomeScreen > Vertical { width: 96; max-width: 95%; height: auto; border: thick $primary; padding: 1 2; }
    WelcomeScreen .title { text-style: bold; margin-bottom: 1; }
    WelcomeScreen .model { margin: 1 0; padding: 0 1; background: $boost; }
    WelcomeScreen .error { color: $text-error; margin-top: 1; }
    WelcomeScreen .buttons { height: auto; margin-top: 1; }
    WelcomeScreen .buttons Button { margin-right: 1; }
    WelcomeScreen TaskPanel { border-top: none; padding: 0; margin-top: 1; }
    """

    def __init__(self, model_id: str | None) -> None:
        super().__init__()
        self.model_id = model_id

    def compose(self) -> ComposeResult:
        entry = self._entry()
        with Vertical():
            yield Label("Welcome to localchat", classes="title")
            yield Static("Private chat with AI models that run on this computer. Nothing you type leaves it.\n"
                         "No model is installed yet. Install this one to start (you can add others later, F2):",
                         markup=False)
            yield Static(self._describe(entry), classes="model", markup=False)
            yield TaskPanel()
            yield Static("", id="error", classes="error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Install", id="install", variant="primary", disabled=entry is None)
                yield Button("Cancel", id="cancel", disabled=True)
                yield Button("Import a file…", id="import")
                yield Button("Browse the catalog", id="catalog")
                yield Button("Quit", id="quit")
        yield Footer()

    def _entry(self) -> Any:
        if self.model_id is None:
            return None
        try:
            return self.app.services.entry(self.model_id)
        except LocalchatError:
            return None

    @staticmethod
    def _describe(entry: Any) -> str:
        if entry is None:
            return "No model to offer: browse the catalog (F2) and pull one."
        facts = [f for f in (entry.quant, human_size(entry.size) if entry.size else None,
                             f"{context_label(entry.context)} context" if entry.context else None,
                             f"from {sources_label(entry)}") if f]
        return f"{entry.name} ({entry.id})\n" + " · ".join(facts)

    def on_mount(self) -> None:
        self.query_one("#install", Button).focus()
        self.show_tasks(list(self.app.tasks.active.values()))

    @on(Button.Pressed, "#install")
    def _install(self) -> None:
        self.query_one("#error", Static).update("")
        if self.app.tasks.pull(self.model_id):
            self._set_running(True)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.app.tasks.cancel(self.model_id)

    @on(Button.Pressed, "#import")
    def _import(self) -> None:
        from localchat.tui.screens.models import ModelsScreen

        ModelsScreen.ask_import(self.app)

    @on(Button.Pressed, "#catalog")
    def _catalog(self) -> None:
        self.app.action_models()

    @on(Button.Pressed, "#quit")
    def _quit(self) -> None:
        self.app.exit()

    def _set_running(self, running: bool) -> None:
        self.query_one("#install", Button).disabled = running
        self.query_one("#cancel", Button).disabled = not running
        if not running:
            self.query_one("#install", Button).focus()

    def show_tasks(self, tasks: list[ModelTask]) -> None:
        self.query_one(TaskPanel).show_tasks([t for t in tasks if t.model_id == self.model_id])

    def task_finished(self, event: Any) -> None:
        if event.model_id != self.model_id:
            return
        self._set_running(False)
        if event.error:
            self.query_one("#error", Static).update(f"{event.error}\nPress Install to try again.")
        elif event.cancelled:
            self.query_one("#error", Static).update("Cancelled. Press Install to resume the download.")

    def models_changed(self) -> None:
        """A model got installed (here, from the models screen, an import): the chat takes over."""
        if self.app.tasks.installed_models():
            self._done = True
            if self.app.screen is self:
                self.dismiss()

    def on_screen_resume(self) -> None:
        if getattr(self, "_done", False):
            self.dismiss()
