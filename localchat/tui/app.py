"""The localchat app: the screens, the background model tasks, and the bridge to the workspace.

The state the screens share (loaded model, conversation, the reply in flight) lives in a Workspace, which knows
nothing of Textual: screens call its methods and render its state. The workspace does its work in threads and
reports each change as an event; `_forward` turns it into a Textual message (post_message is the one
thread-safe Textual call). Background work never raises into Textual (that would end the app with a traceback):
it becomes a notification saying what to do.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.theme import Theme
from textual.worker import Worker, WorkerState

from localchat import workspace as ws
from localchat.errors import LocalchatError
from localchat.tui.commands import palette_commands
from localchat.tui.events import Failed, ModelsChanged, ReplyDelta, TaskFinished, TaskProgress, WorkspaceChanged
from localchat.tui.format import human_size
from localchat.tui.runner import TaskRunner
from localchat.tui.screens.chat import ChatScreen
from localchat.tui.screens.picker import ModelPicker, PickerItem
from localchat.tui.streaming import ReplyBuffer
from localchat.workspace import Workspace

if TYPE_CHECKING:
    from localchat.chat import ChatSession
    from localchat.engine.api import Engine
    from localchat.services import Services
    from localchat.store import ConversationStore
    from localchat.types import ModelInfo

log = logging.getLogger("localchat.tui")


class LocalchatApp(App):
    TITLE = "localchat"
    BINDINGS = [
        Binding("ctrl+o", "switch_model", "Switch model"),
        Binding("f1", "help", "Help"),
        Binding("f2", "models", "Models"),
        Binding("f3", "settings", "Settings"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, services: Services, model_id: str | None = None, offer_model: str | None = None) -> None:
        super().__init__()
        self.services = services
        self.start_model = model_id  # loaded at start (installed)
        self.offer_model = offer_model  # offered on the welcome screen (nothing usable installed)
        self.workspace = Workspace(services, self._forward)
        self.tasks = TaskRunner(self)
        self._deltas: ReplyBuffer | None = None  # the streaming reply's text, filled by the turn's thread
        self._thinking_models: set[str] = set()  # models seen thinking (a remote one has no template to tell)
        self._load_timer: Timer | None = None
        self._log_ready = False
        self._context_used = 0
        self.chat = ChatScreen()

    # The workspace's state, read-only (tests and benchmarks read it here).
    @property
    def engine(self) -> Engine | None:
        return self.workspace.engine

    @property
    def model_id(self) -> str | None:
        return self.workspace.model_id

    @property
    def loading(self) -> str | None:
        return self.workspace.loading

    @property
    def session(self) -> ChatSession:
        return self.workspace.session

    @property
    def store(self) -> ConversationStore | None:
        return self.workspace.store

    @property
    def busy(self) -> bool:
        """A reply is in flight, or still being drawn after the model finished it."""
        return self.workspace.busy or self.chat.replying

    def get_default_screen(self) -> Screen:
        return self.chat

    def on_mount(self) -> None:
        theme = self.services.config.theme
        if theme and theme in self.available_themes:
            self.theme = theme
        self.theme_changed_signal.subscribe(self, self._theme_changed)

    def on_ready(self) -> None:
        """The first frame is on screen: start the slow work (model, store) in the background."""
        gc.freeze()  # what start-up made lives as long as the app: later full collections need not walk it
        self.workspace.open_store()
        if self.start_model is not None:
            self.workspace.load(self.start_model)
        else:
            from localchat.tui.screens.welcome import WelcomeScreen

            self.chat.status.model = "no model"
            self.push_screen(WelcomeScreen(self.offer_model))

    # --- from the workspace ---------------------------------------------------------------------

    def _forward(self, change: ws.WorkspaceEvent) -> None:
        """From any thread: hand a workspace change to the event loop. Reply text goes into the ReplyBuffer
        the chat screen takes from (a message per token would cost the event loop a dispatch per token)."""
        if isinstance(change, ws.ReplyText):
            if self._deltas is not None:
                self._deltas.put(change.text, change.thought)
            return
        if isinstance(change, ws.ReplyStarted):
            chat = self.chat

            def wake() -> None:
                chat.post_message(ReplyDelta())

            self._deltas = ReplyBuffer(wake)
            chat.post_message(WorkspaceChanged(change, self._deltas))
        elif isinstance(change, (ws.ReplyFinished, ws.TurnWaiting)):
            self.chat.post_message(WorkspaceChanged(change))
        else:
            self.post_message(WorkspaceChanged(change))

    @on(WorkspaceChanged)
    def _workspace_changed(self, message: WorkspaceChanged) -> None:
        change = message.change
        if isinstance(change, ws.LoadStarted):
            self._show_loading()
            self.chat.status.add_class("busy")
            if self._load_timer is None:
                self._load_timer = self.set_interval(0.5, self._show_loading)
        elif isinstance(change, ws.ModelReady):
            self._model_ready(change)
        elif isinstance(change, ws.LoadFailed):
            self._loading_done()
            still_on = f"; still on {change.still_on}" if change.still_on else ""
            self.chat.status.state = f"{change.model_id} failed to load{still_on}"
            self.notify(change.error, title=f"{change.model_id} failed to load", severity="error", timeout=15)
        elif isinstance(change, ws.StoreReady):
            self.chat.refresh_conversations()
        elif isinstance(change, ws.StoreFailed):
            self.notify(change.error, title="Conversations will not be saved", severity="error", timeout=15)
        elif isinstance(change, ws.InternalError):
            self.log_exception(change.error)

    def _model_ready(self, change: ws.ModelReady) -> None:
        if self.workspace.loading is None:
            self._loading_done()
        status = self.chat.status
        status.state = ""
        status.model = self._model_label(change.model_id)
        status.hardware = self._hardware_label(change.info)
        self.show_thinking()
        self.show_context(0 if not self.session.messages else None)
        self.sub_title = self.services.entry(change.model_id).name
        if change.previous_id is not None and change.previous_id != change.model_id:
            self.notify(f"switched to {change.model_id} in {change.seconds:.1f} s; the conversation continues",
                        timeout=4)
        if change.continued:
            self.chat.note(f"continuing with {change.model_id}")
        for warning in change.warnings:
            self.notify(warning, severity="warning", timeout=8)

    def _show_loading(self) -> None:
        loading = self.workspace.loading
        if loading is None:
            return
        seconds = self.workspace.load_seconds
        elapsed = f" {seconds:.0f} s" if seconds >= 1 else ""
        reason = f" ({self.workspace.load_reason})" if self.workspace.load_reason else ""
        self.chat.status.state = f"loading {loading}…{elapsed}{reason}"

    def _loading_done(self) -> None:
        if self._load_timer is not None:
            self._load_timer.stop()
            self._load_timer = None
        self.chat.status.remove_class("busy")

    def _model_label(self, model_id: str) -> str:
        entry = self.services.entry(model_id)
        return f"{entry.id} {entry.quant or ''}".strip()

    @staticmethod
    def _hardware_label(info: ModelInfo) -> str:
        gpu = f"GPU {info.n_gpu_layers}/{info.n_layer} layers" if info.n_gpu_layers else "CPU"
        return f"{gpu}, flash attn {'on' if info.flash_attn else 'off'}"

    def show_context(self, used: int | None) -> None:
        """Update the context meter (None: keep the last count, e.g. after a swap, until the next turn)."""
        status = self.chat.status
        engine = self.workspace.engine
        if engine is None:
            status.clear_context()
            return
        if used is None:
            used = self._context_used
        self._context_used = used
        status.set_context(used, engine.info.n_ctx, self.session.dropped)

    @property
    def reasoning_model(self) -> bool:
        """The loaded model thinks: its template writes the tags or its vocabulary has them (as the engine
        decides), or it was seen thinking (a remote model)."""
        from localchat.reasoning import of_model

        engine, model_id = self.workspace.engine, self.workspace.model_id
        if engine is None or model_id is None:
            return False
        return model_id in self._thinking_models or of_model(engine.info.chat_template, engine.info.think_tags) is not None

    def model_thought(self) -> None:
        """A reply of the loaded model streamed a thought."""
        if self.workspace.model_id is not None and self.workspace.model_id not in self._thinking_models:
            self._thinking_models.add(self.workspace.model_id)
            self.show_thinking()

    def show_thinking(self) -> None:
        """ "think: on" beside a reasoning model's name: the thinking choice its next reply is rendered with."""
        model_id = self.workspace.model_id
        thinking = self.services.config.thinking_for(model_id)
        self.chat.status.thinking = f"think: {thinking}" if self.reasoning_model else ""

    def switch_model(self, model_id: str) -> None:
        """Quick swap: keep the conversation, load another installed model (stops a streaming reply)."""
        refused = self.workspace.switch_model(model_id)
        if refused is not None:
            self.notify(refused.reason, severity=refused.severity, timeout=3)

    def action_switch_model(self) -> None:
        items = []
        try:
            installed = self.tasks.installed_models()
        except LocalchatError as exc:
            self.notify(str(exc), title="Cannot list the installed models", severity="error")
            return
        for model_id, rec in installed.items():
            entry = self.services.entry(model_id)
            items.append(PickerItem(model_id, " · ".join(p for p in (entry.quant or "", human_size(rec.size)) if p)))
        if not items:
            self.notify("no model is installed: open Models (F2) to pull one", severity="warning")
            return

        def picked(model_id: str | None) -> None:
            if model_id:
                self.switch_model(model_id)

        self.push_screen(ModelPicker(items, self.workspace.model_id, self.workspace.previous_model_id), picked)

    # --- settings -------------------------------------------------------------------------------

    def settings_saved(self, load_changed: bool, what: str) -> None:
        """Apply saved settings: sampling and system prompt next turn; load options by reloading the model."""
        self.notify(self.workspace.settings_saved(load_changed, what), timeout=4)
        self.show_thinking()

    def _theme_changed(self, theme: Theme) -> None:
        if self.services.config.theme != theme.name:
            self.services.config.theme = theme.name
            self.save_config()

    @work(thread=True, group="config", exit_on_error=False)
    def save_config(self) -> None:
        try:
            self.services.config.save(self.services.paths.config_file)
        except (OSError, LocalchatError) as exc:
            self.post_message(Failed("Could not save the settings", f"{exc}: check that the config folder is writable"))

    # --- background tasks, errors ---------------------------------------------------------------

    @on(TaskProgress)
    def _task_progress(self, event: TaskProgress) -> None:
        self.tasks.progress(event)

    @on(TaskFinished)
    def _task_finished(self, event: TaskFinished) -> None:
        self.tasks.finished(event)

    @on(ModelsChanged)
    def _models_changed(self, event: ModelsChanged) -> None:
        for screen in self.screen_stack:
            refresh = getattr(screen, "models_changed", None)
            if refresh is not None:
                refresh()

    @on(Failed)
    def _failed(self, event: Failed) -> None:
        self.notify(event.error, title=event.title, severity="error", timeout=15)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:  # a bug: report it, keep running
            error = event.worker.error
            self.log_exception(error)
            self.notify(f"{error!r}; details are in {self._log_path}",
                        title="Internal error", severity="error", timeout=20)

    @property
    def _log_path(self) -> Path:
        return self.services.paths.log_dir / "tui.log"

    def log_exception(self, error: BaseException | None) -> None:
        """Write a traceback to log_dir/tui.log (never to the terminal, which the app owns)."""
        if not self._log_ready:
            path = self._log_path
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(handler)
            log.propagate = False
            self._log_ready = True
        log.error("unexpected error", exc_info=(type(error), error, error.__traceback__) if error else None)

    # --- screens and the command palette --------------------------------------------------------

    def action_help(self) -> None:
        from localchat.tui.screens.help import HelpScreen

        self.push_screen(HelpScreen())

    def action_models(self) -> None:
        from localchat.tui.screens.models import ModelsScreen

        if not isinstance(self.screen, ModelsScreen):
            self.push_screen(ModelsScreen())

    def action_import_model(self) -> None:
        from localchat.tui.screens.models import ModelsScreen

        ModelsScreen.ask_import(self)

    def action_settings(self) -> None:
        from localchat.tui.screens.settings import SettingsScreen

        if not isinstance(self.screen, SettingsScreen):
            self.push_screen(SettingsScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from palette_commands(self)

    async def on_unmount(self) -> None:
        self.tasks.cancel_all()
        self.workspace.shutdown()


def make_app(services: Services, model_id: str | None = None) -> LocalchatApp:
    """Build the app with its services: used by the CLI and by the tests alike.

    `model_id`: the model to open (default: the one used last, else the default, else any installed one).
    If it is not installed, or nothing is, the app opens on a welcome screen that offers to install it.
    """
    from localchat.services import DEFAULT_MODEL

    if model_id is None:
        model_id = services.default_model_id()
        if model_id is None:
            return LocalchatApp(services, None, offer_model=DEFAULT_MODEL)
    remote = model_id in services.catalog and services.catalog.get(model_id).is_remote  # nothing to install
    if not remote and not services.registry.is_installed(model_id):
        return LocalchatApp(services, None, offer_model=model_id)
    return LocalchatApp(services, model_id)
