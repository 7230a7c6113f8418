"""The chat app: a conversation pane, a multi-line input and a status line.

Widgets only show state and post messages; model loading and generation run in thread workers through
the services and post their results back as messages (see events.py).
"""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Markdown

from localchat.errors import LocalchatError
from localchat.tui.events import ModelLoaded, ModelLoadFailed, ReplyDelta, ReplyFinished, ReplyStarted
from localchat.tui.widgets.chatlog import ChatLog, MessageBlock
from localchat.tui.widgets.prompt import PromptInput
from localchat.tui.widgets.statusbar import StatusBar


class LocalchatApp(App):
    TITLE = "localchat"
    CSS = """
    Screen { layout: vertical; }
    """
    BINDINGS = [
        Binding("escape", "stop", "Stop reply", show=True),
        Binding("ctrl+n", "new_chat", "New chat", show=True),
        Binding("ctrl+q", "quit", "Quit", show=True, priority=True),
    ]

    def __init__(self, services: Any, model_id: str | None = None) -> None:
        super().__init__()
        self.services = services
        self.model_id = model_id
        self.engine: Any = None
        self.session: Any = None
        self.turn: Any = None  # the ChatTurn streaming now
        self.busy = False  # from submit until the reply has finished
        self.template: Any = None
        self._reply_block: MessageBlock | None = None
        self._stream: Any = None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield ChatLog(id="chat")
        yield PromptInput(id="prompt")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(PromptInput).focus()
        if self.model_id is None:
            self.status.state = "no model installed: run `localchat pull smollm2-135m-instruct`"
            return
        self.load_model(self.model_id)

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    # --- model loading --------------------------------------------------------------------------

    def load_model(self, model_id: str) -> None:
        self.status.state = f"loading {model_id}…"
        self._load_worker(model_id)

    @work(thread=True, exclusive=True, group="load")
    def _load_worker(self, model_id: str) -> None:
        try:
            engine = self.services.start_engine(model_id)
            entry = self.services.entry(model_id)
            info = engine.info
            template, warnings = self.services.chat_template(
                entry, info.chat_template, getattr(info, "bos_token", None), getattr(info, "eos_token", None)
            )
        except LocalchatError as exc:
            self.post_message(ModelLoadFailed(model_id, str(exc)))
            return
        self.post_message(ModelLoaded(model_id, engine, template, warnings))

    @on(ModelLoaded)
    def _model_loaded(self, event: ModelLoaded) -> None:
        old = self.engine
        self.engine = event.engine
        self.model_id = event.model_id
        self.template = event.template
        if self.session is None:
            self.session = self._new_session()
        else:
            self.session.use_model(event.engine, event.template, event.model_id)
        if old is not None and old is not event.engine:
            old.close()
        entry = self.services.entry(event.model_id)
        info = event.engine.info
        self.status.model = f"{entry.id} {entry.quant or ''}".strip()
        gpu = f"GPU {info.n_gpu_layers}/{info.n_layer} layers" if info.n_gpu_layers else "CPU"
        self.status.hardware = f"{gpu}, flash attn {'on' if info.flash_attn else 'off'}"
        self.status.state = ""
        self.status.set_context(0, info.n_ctx, 0)
        self.sub_title = entry.name
        for warning in event.warnings:
            self.notify(warning, severity="warning", timeout=8)

    @on(ModelLoadFailed)
    def _model_failed(self, event: ModelLoadFailed) -> None:
        self.status.state = f"{event.model_id} failed to load"
        self.notify(event.error, title="Model failed to load", severity="error", timeout=15)

    def _new_session(self) -> Any:
        from localchat.chat import ChatSession

        return ChatSession(
            self.engine, self.template, model_id=self.model_id,
            sampling=self.services.config.sampling_for(self.model_id),
            system=self.services.config.system_prompt_for(self.model_id),
            store=self._store(),
        )

    def _store(self) -> Any:
        try:
            return self.services.store
        except (LocalchatError, ImportError) as exc:
            self.notify(f"conversations will not be saved: {exc}", severity="warning", timeout=10)
            return None

    # --- chatting -------------------------------------------------------------------------------

    @on(PromptInput.Submitted)
    async def _submitted(self, event: PromptInput.Submitted) -> None:
        if self.busy:
            self.notify("a reply is still streaming: press Esc to stop it first", severity="warning")
            return
        if self.session is None or self.engine is None:
            self.notify("no model is loaded yet", severity="warning")
            return
        if not self.engine.alive:  # the worker died earlier: load the model again, keep the conversation
            self.notify("the model's worker had stopped; loading it again", severity="information")
            self.load_model(self.model_id)
            self.query_one(PromptInput).text = event.text
            return
        chat = self.query_one(ChatLog)
        await chat.add_message("user", event.text)
        self.busy = True
        self.status.state = "thinking…"
        self._reply_worker(event.text)

    @work(thread=True, exclusive=True, group="reply")
    def _reply_worker(self, text: str) -> None:
        try:
            turn = self.session.send(text)
        except LocalchatError as exc:
            self.post_message(ReplyFinished("error", None, str(exc)))
            return
        self.turn = turn
        self.post_message(ReplyStarted(turn.notice, turn.plan.prompt_tokens))
        try:
            for delta in turn:
                self.post_message(ReplyDelta(delta))
        except LocalchatError as exc:
            self.post_message(ReplyFinished("error", turn.usage, str(exc)))
            return
        self.post_message(ReplyFinished(turn.status, turn.usage))

    @on(ReplyStarted)
    async def _reply_started(self, event: ReplyStarted) -> None:
        chat = self.query_one(ChatLog)
        if event.notice:
            await chat.add_notice(event.notice)
            self.notify(event.notice, severity="warning", timeout=8)
        self._reply_block = await chat.add_message("assistant")
        self._stream = Markdown.get_stream(self._reply_block)
        self.status.state = "replying…"
        self.status.set_context(event.prompt_tokens, self.engine.info.n_ctx, self.session.dropped)

    @on(ReplyDelta)
    async def _reply_delta(self, event: ReplyDelta) -> None:
        if self._stream is not None:
            await self._stream.write(event.text)

    @on(ReplyFinished)
    async def _reply_finished(self, event: ReplyFinished) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        block = self._reply_block
        self._reply_block = None
        self.turn = None
        self.busy = False
        usage = event.usage
        if block is not None and event.status in ("cancelled", "error"):
            block.add_class(event.status)
        if usage is not None:
            self.status.speed = f"{usage.tokens_per_second:.1f} tok/s, TTFT {usage.ttft * 1000:.0f} ms"
            self.status.set_context(usage.prompt_tokens + usage.completion_tokens, self.engine.info.n_ctx,
                                    self.session.dropped)
        self.status.state = {"cancelled": "stopped", "length": "stopped at max tokens", "error": "error"}.get(event.status, "")
        if event.error:
            self.notify(event.error, title="Reply failed", severity="error", timeout=15)

    def action_stop(self) -> None:
        if self.turn is not None:
            self.turn.cancel()
            self.status.state = "stopping…"

    async def action_new_chat(self) -> None:
        self.action_stop()
        if self.engine is not None:
            self.session = self._new_session()
        await self.query_one(ChatLog).clear_messages()
        self.status.speed = ""
        if self.engine is not None:
            self.status.set_context(0, self.engine.info.n_ctx, 0)

    async def on_unmount(self) -> None:
        if self.turn is not None:
            self.turn.cancel()
        if self.engine is not None:
            self.engine.close()


def make_app(services: Any, model_id: str | None = None) -> LocalchatApp:
    """Build the app with its services: used by the CLI and by the tests alike."""
    return LocalchatApp(services, model_id if model_id is not None else services.default_model_id())
