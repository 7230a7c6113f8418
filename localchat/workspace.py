"""The app's state without Textual: the current model, loading and retiring engines, the turn, a waiting message.

The TUI renders this state and calls these methods; nothing here imports Textual. Slow work (starting an
engine, running a turn, closing an engine, opening the store) runs in threads the workspace starts, and every
change is reported to one listener as a typed event, from whichever thread made it: the listener must be
thread-safe (the TUI's forwards each event with `post_message`).

Rules kept here, in one place:
- One turn at a time: while a reply streams (or a message waits for the model) another is refused.
- A message sent while the model loads waits and is answered once it is ready; if the load fails, it is
  handed back (ReplyFinished with started=False) with a note saying why.
- A swap mid-reply stops the reply; the old engine is closed once that reply has wound down on it.
- Settings that change how a model loads reload it now, or after the reply that is streaming.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from localchat.chat import ChatSession, ChatTurn
from localchat.engine.api import Event, ReasoningDelta, TextDelta
from localchat.errors import LocalchatError
from localchat.types import Message, ModelInfo, Usage

if TYPE_CHECKING:
    from localchat.engine.api import ChatTemplate, Engine
    from localchat.services import Services
    from localchat.store import ConversationStore
    from localchat.store.records import Conversation

log = logging.getLogger("localchat.workspace")

STREAMING = "a reply is still streaming: press Esc to stop it first"
TurnKind = Literal["send", "edit", "regenerate"]

# --- what the listener hears ------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadStarted:
    model_id: str
    reason: str | None  # why (e.g. "applying context size"), shown beside "loading…"


@dataclass(frozen=True)
class ModelReady:
    model_id: str
    previous_id: str | None  # the model it replaced (None at start)
    info: ModelInfo
    warnings: list[str]  # about the chat template, for the user
    seconds: float  # since the load was asked for
    continued: bool  # another model took over a conversation that has messages


@dataclass(frozen=True)
class LoadFailed:
    model_id: str
    error: str  # what to do, for the user
    still_on: str | None  # the model that stays loaded


@dataclass(frozen=True)
class TurnWaiting:
    """A message was accepted while `model_id` loads; it is answered once the model is ready."""

    model_id: str
    text: str


@dataclass(frozen=True)
class ReplyStarted:
    notice: str | None  # older messages left out of the window, a template fallback
    prompt_tokens: int
    model_id: str
    info: ModelInfo


@dataclass(frozen=True)
class ReplyText:
    text: str  # the answer's next piece
    thought: bool = False  # a reasoning model's thought (ReasoningDelta), not the answer


@dataclass(frozen=True)
class ReplyFinished:
    status: str  # complete | length | cancelled | error
    usage: Usage | None
    error: str | None = None
    started: bool = True  # False: no reply began, the message goes back to the input (`text`)
    warning: str | None = None  # the reply went on, but something else failed (saving it)
    text: str = ""  # the message that was not answered (started=False)
    note: str | None = None  # why it was handed back, shown in the conversation


@dataclass(frozen=True)
class StoreReady:
    store: ConversationStore


@dataclass(frozen=True)
class StoreFailed:
    error: str


@dataclass(frozen=True)
class InternalError:
    """A bug (not a LocalchatError): the host logs it; the event that follows tells the user."""

    error: BaseException


WorkspaceEvent = (LoadStarted | ModelReady | LoadFailed | TurnWaiting | ReplyStarted | ReplyText | ReplyFinished
                  | StoreReady | StoreFailed | InternalError)
Listener = Callable[[WorkspaceEvent], None]


@dataclass(frozen=True)
class Refused:
    """Why a request was not taken, for the user."""

    reason: str
    severity: Literal["information", "warning"] = "warning"


@dataclass(frozen=True)
class _TurnRequest:
    kind: TurnKind
    text: str = ""


@dataclass
class _Load:
    model_id: str
    reason: str | None
    seq: int
    started: float = field(default_factory=time.monotonic)


def _text_of(event: Event) -> ReplyText | None:
    """The text (answer or thought) an event of a turn carries."""
    if isinstance(event, (TextDelta, ReasoningDelta)) and event.text:
        return ReplyText(event.text, thought=type(event) is ReasoningDelta)
    return None


class Workspace:
    def __init__(self, services: Services, listener: Listener) -> None:
        self.services = services
        self._emit = listener
        self._lock = threading.RLock()
        self._engine: Engine | None = None
        self._template: ChatTemplate | None = None
        self._model_id: str | None = None
        self._previous_model_id: str | None = None
        self._load: _Load | None = None
        self._load_seq = 0
        self._turn: ChatTurn | None = None
        self._busy = False
        self._stop_requested = False  # Esc before the turn's thread had a turn to cancel
        self._waiting: _TurnRequest | None = None  # sent while the model loads
        self._retired: list[Engine] = []  # replaced while a reply was still finishing on them
        self._reload_after_reply: str | None = None
        self._conversation_system: str | None = None  # the system prompt an opened conversation started with
        self._store: ConversationStore | None = None
        self._session = self._new_session()

    # --- state, read by the UI ------------------------------------------------------------------------

    @property
    def engine(self) -> Engine | None:
        return self._engine

    @property
    def template(self) -> ChatTemplate | None:
        return self._template

    @property
    def model_id(self) -> str | None:
        return self._model_id

    @property
    def previous_model_id(self) -> str | None:
        return self._previous_model_id

    @property
    def loading(self) -> str | None:
        """The model being loaded, if any."""
        load = self._load
        return load.model_id if load is not None else None

    @property
    def load_reason(self) -> str | None:
        load = self._load
        return load.reason if load is not None else None

    @property
    def load_seconds(self) -> float:
        load = self._load
        return time.monotonic() - load.started if load is not None else 0.0

    @property
    def session(self) -> ChatSession:
        return self._session

    @property
    def turn(self) -> ChatTurn | None:
        return self._turn

    @property
    def busy(self) -> bool:
        """From a message being taken until its reply has ended (waiting for the model included)."""
        return self._busy

    @property
    def waiting(self) -> bool:
        """A message waits for the model to load."""
        return self._waiting is not None

    @property
    def store(self) -> ConversationStore | None:
        return self._store

    def refuse_if_busy(self) -> Refused | None:
        """What to tell a user who asks for something that needs no reply in flight."""
        return Refused(STREAMING) if self._busy else None

    def last_user_message(self) -> str | None:
        return next((m.content for m in reversed(self._session.messages) if m.role == "user"), None)

    # --- models ---------------------------------------------------------------------------------------

    def load(self, model_id: str, reason: str | None = None) -> None:
        """Start loading `model_id` in the background; the conversation continues on it once loaded."""
        with self._lock:
            self._load_seq += 1
            load = self._load = _Load(model_id, reason, self._load_seq)
        self._emit(LoadStarted(model_id, reason))
        self._thread(f"load {model_id}", lambda: self._run_load(load))

    def switch_model(self, model_id: str) -> Refused | None:
        """Quick swap: keep the conversation, load another model (stops a streaming reply)."""
        with self._lock:
            engine = self._engine
            if model_id == self._model_id and engine is not None and engine.alive:
                return Refused(f"{model_id} is already loaded", "information")
            if model_id == self.loading:
                return None
            if self._turn is not None:
                self._turn.cancel()
        self.load(model_id)
        return None

    def _run_load(self, load: _Load) -> None:
        self._park_before_swap(load.model_id)
        engine: Engine | None = None
        try:
            engine = self.services.start_engine(load.model_id)
            info = engine.info
            entry = self.services.entry(load.model_id)
            template, warnings = self.services.chat_template(entry, info.chat_template, info.bos_token,
                                                             info.eos_token)
        except Exception as exc:  # a LocalchatError says what to do; anything else is a bug, reported
            if engine is not None:
                engine.close()
            self._load_failed(load, self._user_error(exc))
            return
        self._loaded(load, engine, template, warnings)

    def _park_before_swap(self, model_id: str) -> None:
        """The open conversation's state on the model being swapped out goes to disk first, so a swap back
        resumes it (one file per conversation and model). Not while a reply streams: it keeps no state."""
        with self._lock:
            session, engine = self._session, self._engine
            if self._busy or engine is None or not engine.alive or self._model_id == model_id:
                return
        self._switch_state(session, None, background=False)

    def _loaded(self, load: _Load, engine: Engine, template: ChatTemplate, warnings: list[str]) -> None:
        with self._lock:
            if load.seq != self._load_seq:  # a newer load was asked for meanwhile (or the app is ending)
                self._close_later(engine)
                return
            old, old_id = self._engine, self._model_id
            self._engine, self._template, self._model_id = engine, template, load.model_id
            self._load = None
            if old_id != load.model_id:
                self._previous_model_id = old_id
            self._session.use_model(engine, template, load.model_id)
            self._apply_settings()
            if old is not None and old is not engine:
                if self._turn is not None:  # the stopped reply is still winding down on it
                    self._retired.append(old)
                else:
                    self._close_later(old)
            continued = old_id is not None and old_id != load.model_id and bool(self._session.messages)
            waiting, self._waiting = self._waiting, None
            session = self._session
        self._emit(ModelReady(load.model_id, old_id, engine.info, list(warnings), time.monotonic() - load.started,
                              continued))
        if session.conversation_id is not None:
            # an opened conversation's saved state, for this model: before the waiting message is answered
            self._switch_state(None, session, background=False)
        if waiting is not None:
            self._run_turn(waiting)  # this thread has nothing else to do: it answers the message

    def _load_failed(self, load: _Load, error: str) -> None:
        with self._lock:
            if load.seq != self._load_seq:
                return
            self._load = None
            waiting, self._waiting = self._waiting, None
            if waiting is not None:
                self._busy = False
            still_on = self._model_id
        self._emit(LoadFailed(load.model_id, error, still_on))
        if waiting is not None:
            self._emit(ReplyFinished("error", None, started=False, text=waiting.text,
                                     note=f"{load.model_id} failed to load: your message was not sent and is "
                                          "back in the input"))

    def _close_later(self, engine: Engine) -> None:
        self._thread("close engine", engine.close)  # the worker process ends: its memory goes back

    # --- the conversation -----------------------------------------------------------------------------

    def _new_session(self, history: list[Message] | None = None, conversation_id: int | None = None) -> ChatSession:
        return ChatSession(self._engine, self._template, model_id=self._model_id or "", history=history,
                           sampling=self.services.config.sampling_for(self._model_id),
                           system=self._system_prompt(), store=self._store, conversation_id=conversation_id,
                           thinking=self.services.config.thinking_for(self._model_id))

    def _system_prompt(self) -> str | None:
        return self._conversation_system or self.services.config.system_prompt_for(self._model_id)

    def _apply_settings(self) -> None:
        self._session.sampling = self.services.config.sampling_for(self._model_id)
        self._session.system = self._system_prompt()
        self._session.thinking = self.services.config.thinking_for(self._model_id)

    def new_session(self) -> None:
        """A fresh conversation (a reply still streaming ends in the old one)."""
        with self._lock:
            self._conversation_system = None
            left, self._session = self._session, self._new_session()
            busy = self._busy
        self._switch_state(None if busy else left, None)

    def open_conversation(self, conv: Conversation) -> None:
        """Continue a saved conversation with the loaded model."""
        with self._lock:
            self._conversation_system = conv.system
            history = [m.to_message() for m in conv.messages if m.content]
            left, self._session = self._session, self._new_session(history, conv.id)
            busy, opened = self._busy, self._session
        self._switch_state(None if busy else left, opened)

    def _switch_state(self, left: ChatSession | None, opened: ChatSession | None, background: bool = True) -> None:
        """The model's state of the conversation left goes to disk, the one opened comes back from it
        (issue 15): in the background, in this order (the worker answers them in turn, before a reply
        asked for later). A conversation left while its reply streams keeps no state."""
        if left is not None and (left.conversation_id is None or not left.messages):
            left = None
        if opened is not None and opened.conversation_id is None:
            opened = None
        if left is None and opened is None:
            return

        def run() -> None:
            for session, move, what in ((left, ChatSession.park, "saved"), (opened, ChatSession.unpark, "restored")):
                if session is None:
                    continue
                try:
                    move(session)
                except LocalchatError as exc:  # the worker went away meanwhile: the state is only a saving
                    log.info("conversation state not %s: %s", what, exc)

        if background:
            self._thread("conversation state", run)
        else:
            run()

    def settings_saved(self, load_changed: bool, what: str) -> str:
        """Apply saved settings: sampling and system prompt next turn; load options by reloading the model.
        Returns what to tell the user."""
        with self._lock:
            self._apply_settings()
            model_id = self._model_id
            if not load_changed or model_id is None:
                return "settings saved; they apply from the next reply"
            reason = f"applying {what}"
            if self._busy:
                self._reload_after_reply = reason
                return f"settings saved; {model_id} reloads with the new {what} after this reply"
        self.load(model_id, reason)
        return f"settings saved; reloading {model_id} with the new {what}"

    # --- turns ----------------------------------------------------------------------------------------

    def request_turn(self, kind: TurnKind, text: str = "") -> Refused | Literal["started", "waiting"]:
        """Send (or edit, or regenerate): started now, waiting for the model that loads, or refused."""
        reload: str | None = None
        with self._lock:
            if self._busy:
                return Refused(STREAMING)
            if kind == "regenerate" and self.last_user_message() is None:
                return Refused("there is no message to answer yet: send one first")
            engine, loading = self._engine, self.loading
            request = _TurnRequest(kind, text)
            if engine is None or not engine.alive:
                if loading is not None:
                    self._busy, self._waiting = True, request
                    outcome: Refused | Literal["started", "waiting"] = "waiting"
                elif engine is None:
                    return Refused("no model is loaded: press Ctrl+O to pick one, or F2 for the catalog")
                else:
                    reload = self._model_id
                    outcome = Refused("the model's worker had stopped; loading it again (the conversation is "
                                      "kept)", "information")
            else:
                self._busy, self._stop_requested = True, False
                outcome = "started"
        if outcome == "waiting" and loading is not None:
            self._emit(TurnWaiting(loading, text))
        elif outcome == "started":
            self._thread("turn", lambda: self._run_turn(request))
        elif reload is not None:
            self.load(reload)
        return outcome

    def stop(self) -> bool:
        """Stop the reply (or take back the message waiting for the model); False if there was none."""
        with self._lock:
            waiting, self._waiting = self._waiting, None
            if waiting is not None:
                self._busy = False
            elif self._turn is not None:
                self._turn.cancel()
                return True
            elif self._busy:
                self._stop_requested = True  # the turn's thread cancels it as soon as it has one
                return True
            else:
                return False
        self._emit(ReplyFinished("cancelled", None, started=False, text=waiting.text))
        return True

    def _run_turn(self, request: _TurnRequest) -> None:
        with self._lock:
            self._stop_requested = False
            session = self._session
        try:
            if request.kind == "regenerate":
                turn = session.regenerate()
            elif request.kind == "edit":
                turn = session.edit_last(request.text)
            else:
                turn = session.send(request.text)
        except Exception as exc:  # a bug must not leave the workspace busy either
            self._end_turn(ReplyFinished("error", None, self._user_error(exc), started=False, text=request.text))
            return
        with self._lock:
            self._turn = turn
            if self._stop_requested:
                turn.cancel()
            info = session.require_engine().info
        self._emit(ReplyStarted(turn.notice, turn.plan.prompt_tokens, session.model_id, info))
        try:
            for event in turn:
                text = _text_of(event)
                if text is not None:
                    self._emit(text)
        except Exception as exc:
            self._end_turn(ReplyFinished("error", turn.usage, self._user_error(exc)))
            return
        store_error = turn.store_error
        self._end_turn(ReplyFinished(turn.status, turn.usage, warning=str(store_error) if store_error else None))

    def _end_turn(self, finished: ReplyFinished) -> None:
        with self._lock:
            self._turn = None
            self._busy = False
            retired, self._retired = self._retired, []
            reload, self._reload_after_reply = self._reload_after_reply, None
            model_id = self._model_id
        self._emit(finished)
        for engine in retired:
            self._close_later(engine)
        if reload is not None and model_id is not None:
            self.load(model_id, reload)

    # --- store, shutdown, errors ----------------------------------------------------------------------

    def open_store(self) -> None:
        """Open the conversation store in the background; the session saves into it from then on."""
        self._thread("open store", self._run_open_store)

    def _run_open_store(self) -> None:
        try:
            store = self.services.store
        except (LocalchatError, ImportError) as exc:
            self._emit(StoreFailed(str(exc)))
            return
        with self._lock:
            self._store = store
            if self._session.store is None:
                self._session.store = store
        self._emit(StoreReady(store))

    def shutdown(self) -> None:
        """Stop the reply and close every engine now (the app is ending); the open conversation's state
        goes to disk first, so it resumes after a restart."""
        with self._lock:
            session = None if self._busy else self._session
        self._switch_state(session, None, background=False)
        with self._lock:
            if self._turn is not None:
                self._turn.cancel()
            engines = [e for e in (self._engine, *self._retired) if e is not None]
            self._engine, self._retired = None, []
            self._load_seq += 1  # a load still running closes what it started
        for engine in engines:
            engine.close()

    def _user_error(self, exc: BaseException) -> str:
        if isinstance(exc, LocalchatError):
            return str(exc)
        log.error("unexpected error", exc_info=exc)
        self._emit(InternalError(exc))
        return f"internal error: {exc!r} (details are in the log)"

    def _thread(self, name: str, target: Callable[[], None]) -> None:
        threading.Thread(target=target, name=f"workspace {name}", daemon=True).start()
