"""The localchat app: holds the workspace state (loaded model, conversation, background tasks) and the screens.

Screens and widgets only show state and post messages. The work runs in thread workers through the services:
loading a model (services.start_engine), a chat turn (ChatSession, in the chat screen), downloads and store
access. Workers never raise into Textual (that would end the app with a traceback): they post a message that
becomes a notification saying what to do.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any, Iterable

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from localchat.errors import LocalchatError
from localchat.tui.commands import palette_commands
from localchat.tui.events import (Failed, ModelLoaded, ModelLoadFailed, ModelsChanged, StoreReady, TaskFinished,
                                  TaskProgress)
from localchat.tui.format import human_size
from localchat.tui.runner import TaskRunner
from localchat.tui.screens.chat import ChatScreen
from localchat.tui.screens.picker import ModelPicker, PickerItem

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

    def __init__(self, services: Any, model_id: str | None = None, offer_model: str | None = None) -> None:
        super().__init__()
        self.services = services
        self.start_model = model_id  # loaded at start (installed)
        self.offer_model = offer_model  # offered on the welcome screen (nothing usable installed)
        self.engine: Any = None
        self.template: Any = None
        self.model_id: str | None = None
        self.previous_model_id: str | None = None
        self.loading: str | None = None
        self.session: Any = None
        self.turn: Any = None  # the ChatTurn streaming now
        self.busy = False  # from sending until the reply has finished
        self.store: Any = None
        self.tasks = TaskRunner(self)
        self._load_seq = 0
        self._load_started = 0.0
        self._load_reason: str | None = None
        self._load_timer: Any = None
        self._reload_after_reply: str | None = None
        self._conversation_system: str | None = None  # the system prompt an opened conversation was started with
        self._log_ready = False
        self._context_used = 0
        self._retired: list[Any] = []  # engines replaced while a reply was still finishing on them
        self.chat = ChatScreen()

    def get_default_screen(self) -> Screen:
        return self.chat

    def on_mount(self) -> None:
        theme = self.services.config.theme
        if theme and theme in self.available_themes:
            self.theme = theme
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self.session = self._new_session()

    def on_ready(self) -> None:
        """The first frame is on screen: start the slow work (model, store) in the background."""
        gc.freeze()  # what start-up made lives as long as the app: later full collections need not walk it
        self._open_store()
        if self.start_model is not None:
            self.load_model(self.start_model)
        else:
            from localchat.tui.screens.welcome import WelcomeScreen

            self.chat.status.model = "no model"
            self.push_screen(WelcomeScreen(self.offer_model))

    # --- the loaded model -----------------------------------------------------------------------

    def load_model(self, model_id: str, reason: str | None = None) -> None:
        """Start loading `model_id` in the background; the conversation continues on it once loaded."""
        self._load_seq += 1
        self.loading = model_id
        self._load_started = time.monotonic()
        self._load_reason = reason
        self._show_loading()
        self.chat.status.add_class("busy")
        if self._load_timer is None:
            self._load_timer = self.set_interval(0.5, self._show_loading)
        self._load_worker(model_id, self._load_seq)

    def _show_loading(self) -> None:
        if self.loading is None:
            return
        seconds = time.monotonic() - self._load_started
        elapsed = f" {seconds:.0f} s" if seconds >= 1 else ""
        reason = f" ({self._load_reason})" if self._load_reason else ""
        self.chat.status.state = f"loading {self.loading}…{elapsed}{reason}"

    def _loading_done(self) -> None:
        self.loading = None
        if self._load_timer is not None:
            self._load_timer.stop()
            self._load_timer = None
        self.chat.status.remove_class("busy")

    @work(thread=True, group="load", exit_on_error=False)
    def _load_worker(self, model_id: str, seq: int) -> None:
        engine = None
        try:
            engine = self.services.start_engine(model_id)
            entry = self.services.entry(model_id)
            info = engine.info
            template, warnings = self.services.chat_template(entry, info.chat_template, info.bos_token, info.eos_token)
        except Exception as exc:  # LocalchatError says what to do; anything else is a bug, logged
            if not isinstance(exc, LocalchatError):
                self.log_exception(exc)
            if engine is not None:
                engine.close()
            self.post_message(ModelLoadFailed(model_id, str(exc) if isinstance(exc, LocalchatError)
                                              else f"internal error: {exc!r} (see {self._log_path})", seq))
            return
        self.post_message(ModelLoaded(model_id, engine, template, list(warnings), seq))

    @on(ModelLoaded)
    def _model_loaded(self, event: ModelLoaded) -> None:
        if event.seq != self._load_seq:  # a newer load was asked for meanwhile
            self._close_engine(event.engine)
            return
        old, old_id = self.engine, self.model_id
        self.engine, self.template, self.model_id = event.engine, event.template, event.model_id
        self._loading_done()
        if old_id != event.model_id:
            self.previous_model_id = old_id
        self.session.use_model(event.engine, event.template, event.model_id)
        self._apply_settings_to_session()
        if old is not None and old is not event.engine:
            if self.busy:  # the stopped reply is still winding down on it: close it once that is over
                self._retired.append(old)
            else:
                self._close_engine(old)
        status = self.chat.status
        status.state = ""
        status.model = self._model_label(event.model_id)
        status.hardware = self._hardware_label(event.engine.info)
        self.show_context(0 if not self.session.messages else None)
        self.sub_title = self.services.entry(event.model_id).name
        seconds = time.monotonic() - self._load_started
        if old_id is not None and old_id != event.model_id:
            self.notify(f"switched to {event.model_id} in {seconds:.1f} s; the conversation continues", timeout=4)
            if self.session.messages:
                self.chat.note(f"continuing with {event.model_id}")
        for warning in event.warnings:
            self.notify(warning, severity="warning", timeout=8)

    @on(ModelLoadFailed)
    def _model_failed(self, event: ModelLoadFailed) -> None:
        if event.seq != self._load_seq:
            return
        self._loading_done()
        status = self.chat.status
        status.state = f"{event.model_id} failed to load" + (f"; still on {self.model_id}" if self.model_id else "")
        self.notify(event.error, title=f"{event.model_id} failed to load", severity="error", timeout=15)

    @work(thread=True, group="close", exit_on_error=False)
    def _close_engine(self, engine: Any) -> None:
        engine.close()  # the worker process ends, so its memory goes back to the system

    def _model_label(self, model_id: str) -> str:
        entry = self.services.entry(model_id)
        return f"{entry.id} {entry.quant or ''}".strip()

    @staticmethod
    def _hardware_label(info: Any) -> str:
        gpu = f"GPU {info.n_gpu_layers}/{info.n_layer} layers" if info.n_gpu_layers else "CPU"
        return f"{gpu}, flash attn {'on' if info.flash_attn else 'off'}"

    def show_context(self, used: int | None) -> None:
        """Update the context meter (None: keep the last count, e.g. after a swap, until the next turn)."""
        status = self.chat.status
        if self.engine is None:
            status.clear_context()
            return
        if used is None:
            used = self._context_used
        self._context_used = used
        status.set_context(used, self.engine.info.n_ctx, self.session.dropped)

    def switch_model(self, model_id: str) -> None:
        """Quick swap: keep the conversation, load another installed model (stops a streaming reply)."""
        if model_id == self.model_id and self.engine is not None and self.engine.alive:
            self.notify(f"{model_id} is already loaded", timeout=3)
            return
        if model_id == self.loading:
            return
        if self.turn is not None:
            self.turn.cancel()
        self.load_model(model_id)

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

        self.push_screen(ModelPicker(items, self.model_id, self.previous_model_id), picked)

    # --- the conversation -----------------------------------------------------------------------

    def _new_session(self, history: list | None = None, conversation_id: int | None = None) -> Any:
        from localchat.chat import ChatSession

        return ChatSession(self.engine, self.template, model_id=self.model_id or "", history=history,
                           sampling=self.services.config.sampling_for(self.model_id),
                           system=self._system_prompt(), store=self.store, conversation_id=conversation_id)

    def _system_prompt(self) -> str | None:
        return self._conversation_system or self.services.config.system_prompt_for(self.model_id)

    def _apply_settings_to_session(self) -> None:
        self.session.sampling = self.services.config.sampling_for(self.model_id)
        self.session.system = self._system_prompt()

    def new_session(self) -> None:
        self._conversation_system = None
        self.session = self._new_session()

    def open_conversation(self, conv: Any) -> None:
        """Continue a saved conversation with the loaded model."""
        self._conversation_system = conv.system
        history = [m.to_message() for m in conv.messages if m.content]
        self.session = self._new_session(history, conv.id)
        self.show_context(0)

    def ready_to_chat(self, text: str) -> bool:
        """Whether a turn can start now; says why not (and reloads a model whose worker died)."""
        if self.engine is None:
            if self.loading:
                self.notify(f"{self.loading} is still loading; send again in a moment", severity="warning")
            else:
                self.notify("no model is loaded: press Ctrl+O to pick one, or F2 for the catalog", severity="warning")
            return False
        if not self.engine.alive:
            self.notify("the model's worker had stopped; loading it again (the conversation is kept)")
            self.load_model(self.model_id)
            return False
        return True

    def reply_finished(self) -> None:
        while self._retired:
            self._close_engine(self._retired.pop())
        if self._reload_after_reply:
            reason, self._reload_after_reply = self._reload_after_reply, None
            self.load_model(self.model_id, reason)

    # --- settings -------------------------------------------------------------------------------

    def settings_saved(self, load_changed: bool, what: str) -> None:
        """Apply saved settings: sampling and system prompt next turn; load options by reloading the model."""
        self._apply_settings_to_session()
        if not load_changed or self.model_id is None:
            self.notify("settings saved; they apply from the next reply", timeout=4)
            return
        reason = f"applying {what}"
        if self.busy:
            self._reload_after_reply = reason
            self.notify(f"settings saved; {self.model_id} reloads with the new {what} after this reply")
        else:
            self.notify(f"settings saved; reloading {self.model_id} with the new {what}")
            self.load_model(self.model_id, reason)

    def _theme_changed(self, theme: Any) -> None:
        if self.services.config.theme != theme.name:
            self.services.config.theme = theme.name
            self.save_config()

    @work(thread=True, group="config", exit_on_error=False)
    def save_config(self) -> None:
        try:
            self.services.config.save(self.services.paths.config_file)
        except (OSError, LocalchatError) as exc:
            self.post_message(Failed("Could not save the settings", f"{exc}: check that the config folder is writable"))

    # --- store ----------------------------------------------------------------------------------

    @work(thread=True, group="store-open", exit_on_error=False)
    def _open_store(self) -> None:
        try:
            store = self.services.store
        except (LocalchatError, ImportError) as exc:
            self.post_message(Failed("Conversations will not be saved", str(exc)))
            return
        self.post_message(StoreReady(store))

    @on(StoreReady)
    def _store_ready(self, event: StoreReady) -> None:
        self.store = event.store
        if self.session is not None and self.session.store is None:
            self.session.store = event.store
        self.chat.refresh_conversations()

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
    def _log_path(self) -> Any:
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
        if self.turn is not None:
            self.turn.cancel()
        self.tasks.cancel_all()
        if self.engine is not None:
            self.engine.close()


def make_app(services: Any, model_id: str | None = None) -> LocalchatApp:
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
