"""The workspace's rules, driven without Textual: fake engines for the state rules, the tiny model for a real turn."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import pytest

from localchat import workspace as ws
from localchat.config import Config
from localchat.engine.api import ChatTemplate, Engine, Event, FinishReason, Prompt
from localchat.errors import NotInstalledError
from localchat.paths import Paths
from localchat.services import Services
from localchat.templates import native
from localchat.types import ModelInfo, SamplingParams, Usage
from localchat.workspace import Refused, Workspace

WAIT = 30.0


class FakeGeneration:
    """Yields nothing: it ends when released, whether or not it was cancelled (a reply winding down)."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.cancelled = threading.Event()
        self.usage: Usage | None = None
        self.finish_reason: FinishReason | None = None

    @property
    def id(self) -> str:
        return "fake"

    @property
    def text(self) -> str:
        return ""

    def __iter__(self) -> Iterator[Event]:
        assert self.release.wait(WAIT)
        self.usage = Usage()
        self.finish_reason = "cancelled" if self.cancelled.is_set() else "stop"
        return iter(())

    def cancel(self) -> None:
        self.cancelled.set()

    def __enter__(self) -> FakeGeneration:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cancel()


class FakeEngine:
    def __init__(self, model_id: str, release: threading.Event) -> None:
        self.info = ModelInfo(path=f"/models/{model_id}.gguf", n_ctx=2048)
        self.model_id = model_id
        self.release = release
        self.closed = threading.Event()
        self.generations: list[FakeGeneration] = []
        self.states: list[tuple[str, str]] = []  # ("save" | "load", the checkpoint file's name)

    def save_state(self, prompt: Prompt, path: Path, template: str) -> tuple[int, str]:
        self.states.append(("save", path.name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"state")
        return 10, ""

    def load_state(self, path: Path, template: str) -> tuple[int, str]:
        self.states.append(("load", path.name))
        return 10, ""

    @property
    def alive(self) -> bool:
        return not self.closed.is_set()

    def generate(self, prompt: Prompt, sampling: SamplingParams) -> FakeGeneration:
        generation = FakeGeneration(self.release)
        self.generations.append(generation)
        return generation

    def count_tokens(self, texts: Sequence[Prompt]) -> list[int]:
        return [len(t) // 4 + 1 for t in texts]

    def close(self) -> None:
        self.closed.set()

    def __enter__(self) -> FakeEngine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class FakeServices(Services):
    """The real composition root (config, catalog, store in a temp home) with engines that start on cue."""

    def __init__(self, paths: Paths, config: Config) -> None:
        super().__init__(paths, config)
        self.loads: dict[str, threading.Event] = {}  # model id -> set to let its load finish
        self.failing: set[str] = set()
        self.replies = threading.Event()  # set to let every reply end
        self.started: list[FakeEngine] = []

    def start_engine(self, model_id: str, n_ctx: int | None = None, n_gpu_layers: int | str | None = None) -> Engine:
        gate = self.loads.get(model_id)
        if gate is not None:
            assert gate.wait(WAIT)
        if model_id in self.failing:
            raise NotInstalledError(f"model '{model_id}' is not installed", hint=f"run `localchat pull {model_id}`")
        engine = FakeEngine(model_id, self.replies)
        self.started.append(engine)
        return engine

    def chat_template(self, entry: object, gguf_template: str | None, bos: str | None = None,
                      eos: str | None = None) -> tuple[ChatTemplate, list[str]]:
        return native("chatml"), []  # type: ignore[return-value]


class Recorder:
    """The listener: every event, from any thread, and a way to wait for one."""

    def __init__(self) -> None:
        self.events: list[ws.WorkspaceEvent] = []
        self._changed = threading.Condition()

    def __call__(self, event: ws.WorkspaceEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait(self, kind: type, count: int = 1) -> list[ws.WorkspaceEvent]:
        with self._changed:
            ok = self._changed.wait_for(lambda: len(self.of(kind)) >= count, WAIT)
        assert ok, f"no {kind.__name__} within {WAIT} s; events: {self.events}"
        return self.of(kind)

    def of(self, kind: type) -> list[ws.WorkspaceEvent]:
        return [e for e in self.events if isinstance(e, kind)]


def eventually(predicate: object, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.fixture
def services(paths: Paths) -> FakeServices:
    return FakeServices(paths, Config.load_file(paths.config_file))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


SMOL, QWEN = "smollm2-135m-instruct", "qwen2.5-0.5b-instruct"  # shipped catalog ids (no files needed here)


def loaded(services: FakeServices, recorder: Recorder, model_id: str = SMOL) -> Workspace:
    workspace = Workspace(services, recorder)
    workspace.load(model_id)
    recorder.wait(ws.ModelReady)
    return workspace


def test_one_turn_at_a_time_and_the_refusal_says_how_to_stop(services: FakeServices, recorder: Recorder) -> None:
    workspace = loaded(services, recorder)
    assert workspace.request_turn("send", "hello") == "started"
    recorder.wait(ws.ReplyStarted)
    assert workspace.busy and workspace.turn is not None
    assert workspace.request_turn("send", "again") == Refused(ws.STREAMING)
    assert workspace.refuse_if_busy() == Refused(ws.STREAMING)
    assert "press Esc" in ws.STREAMING
    services.replies.set()
    finished = recorder.wait(ws.ReplyFinished)[0]
    assert isinstance(finished, ws.ReplyFinished) and finished.status == "complete" and finished.started
    assert not workspace.busy and workspace.turn is None and workspace.refuse_if_busy() is None
    assert [m.content for m in workspace.session.messages] == ["hello"]  # the fake answered nothing


def test_switching_conversations_parks_the_one_left_and_resumes_the_one_opened(services: FakeServices,
                                                                               recorder: Recorder) -> None:
    workspace = loaded(services, recorder)
    workspace.open_store()
    recorder.wait(ws.StoreReady)
    store = services.store
    ids = []
    for name in ("a", "b"):
        cid = store.create_conversation(model=SMOL)
        store.add_message(cid, "user", f"hello {name}")
        store.add_message(cid, "assistant", f"hi {name}")
        ids.append(cid)
    workspace.open_conversation(store.conversation(ids[0]))  # no state on disk yet: nothing to load
    path = workspace.session.checkpoint_path()
    assert path is not None and path.parent == store.path.parent / "checkpoints"
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / f"conversation-{ids[1]}-{SMOL}.ckpt").write_bytes(b"saved before")
    workspace.open_conversation(store.conversation(ids[1]))
    engine = services.started[-1]
    eventually(lambda: len(engine.states) == 2, "the state of a saved, that of b loaded")
    assert engine.states == [("save", f"conversation-{ids[0]}-{SMOL}.ckpt"), ("load", f"conversation-{ids[1]}-{SMOL}.ckpt")]
    workspace.shutdown()  # the conversation open at the end is saved too
    assert engine.states[-1] == ("save", f"conversation-{ids[1]}-{SMOL}.ckpt")


def test_a_swap_saves_the_state_on_the_model_left_and_a_swap_back_loads_it(services: FakeServices,
                                                                          recorder: Recorder) -> None:
    workspace = loaded(services, recorder)
    workspace.open_store()
    recorder.wait(ws.StoreReady)
    store = services.store
    cid = store.create_conversation(model=SMOL)
    store.add_message(cid, "user", "hello")
    store.add_message(cid, "assistant", "hi")
    workspace.open_conversation(store.conversation(cid))
    smol = services.started[-1]
    assert workspace.switch_model(QWEN) is None
    recorder.wait(ws.ModelReady, 2)
    qwen = services.started[-1]
    assert smol.states == [("save", f"conversation-{cid}-{SMOL}.ckpt")]
    assert qwen.states == []  # nothing saved for this model yet
    assert workspace.switch_model(SMOL) is None
    recorder.wait(ws.ModelReady, 3)
    again = services.started[-1]
    assert qwen.states == [("save", f"conversation-{cid}-{QWEN}.ckpt")]
    eventually(lambda: again.states == [("load", f"conversation-{cid}-{SMOL}.ckpt")], "smol's own state loaded")
    workspace.shutdown()


def test_without_a_model_a_message_is_refused_with_what_to_do(services: FakeServices, recorder: Recorder) -> None:
    workspace = Workspace(services, recorder)
    refused = workspace.request_turn("send", "hello")
    assert isinstance(refused, Refused) and "Ctrl+O" in refused.reason
    assert not workspace.busy
    assert isinstance(workspace.request_turn("regenerate"), Refused)


def test_a_message_sent_while_loading_waits_and_is_answered_once_ready(services: FakeServices,
                                                                       recorder: Recorder) -> None:
    services.loads[SMOL] = threading.Event()
    workspace = Workspace(services, recorder)
    workspace.load(SMOL)
    assert workspace.loading == SMOL
    assert workspace.request_turn("send", "first question") == "waiting"
    waiting = recorder.wait(ws.TurnWaiting)[0]
    assert waiting == ws.TurnWaiting(SMOL, "first question")
    assert workspace.busy and workspace.waiting
    assert workspace.request_turn("send", "second") == Refused(ws.STREAMING)  # one at a time, waiting included
    services.replies.set()
    services.loads[SMOL].set()
    recorder.wait(ws.ReplyFinished)
    order = [type(e) for e in recorder.events if not isinstance(e, ws.LoadStarted)]
    assert order == [ws.TurnWaiting, ws.ModelReady, ws.ReplyStarted, ws.ReplyFinished]
    assert [m.content for m in workspace.session.messages] == ["first question"]
    assert not workspace.busy and not workspace.waiting


def test_a_failed_load_hands_the_waiting_message_back(services: FakeServices, recorder: Recorder) -> None:
    services.loads[SMOL] = threading.Event()
    services.failing.add(SMOL)
    workspace = Workspace(services, recorder)
    workspace.load(SMOL)
    assert workspace.request_turn("send", "do not lose me") == "waiting"
    services.loads[SMOL].set()
    failed = recorder.wait(ws.LoadFailed)[0]
    back = recorder.wait(ws.ReplyFinished)[0]
    assert isinstance(failed, ws.LoadFailed) and "localchat pull" in failed.error
    assert isinstance(back, ws.ReplyFinished) and not back.started and back.text == "do not lose me"
    assert back.note is not None and "failed to load" in back.note and "back in the input" in back.note
    assert not workspace.busy and workspace.loading is None and workspace.session.messages == []


def test_esc_takes_a_waiting_message_back(services: FakeServices, recorder: Recorder) -> None:
    services.loads[SMOL] = threading.Event()
    workspace = Workspace(services, recorder)
    workspace.load(SMOL)
    workspace.request_turn("send", "never mind")
    assert workspace.stop()
    back = recorder.wait(ws.ReplyFinished)[0]
    assert isinstance(back, ws.ReplyFinished) and back.status == "cancelled" and back.text == "never mind"
    assert not workspace.busy
    services.loads[SMOL].set()
    recorder.wait(ws.ModelReady)
    assert not recorder.of(ws.ReplyStarted) and workspace.session.messages == []
    assert not workspace.stop()  # nothing left to stop


def test_a_swap_mid_reply_closes_the_old_engine_after_the_reply(services: FakeServices, recorder: Recorder) -> None:
    workspace = loaded(services, recorder)
    first = services.started[0]
    workspace.request_turn("send", "hello")
    recorder.wait(ws.ReplyStarted)
    assert workspace.switch_model(QWEN) is None
    assert first.generations[0].cancelled.is_set()  # the swap stops the reply...
    ready = recorder.wait(ws.ModelReady, 2)[1]
    assert isinstance(ready, ws.ModelReady) and ready.previous_id == SMOL and ready.continued
    assert workspace.model_id == QWEN and workspace.previous_model_id == SMOL
    assert not first.closed.is_set()  # ...which still winds down on the old engine
    services.replies.set()
    finished = recorder.wait(ws.ReplyFinished)[0]
    assert isinstance(finished, ws.ReplyFinished) and finished.status == "cancelled"
    eventually(first.closed.is_set, "the old engine closed after the reply")
    assert not services.started[1].closed.is_set()


def test_swapping_to_the_loaded_model_says_so(services: FakeServices, recorder: Recorder) -> None:
    workspace = loaded(services, recorder)
    refused = workspace.switch_model(SMOL)
    assert refused is not None and "already loaded" in refused.reason
    assert len(services.started) == 1


def test_a_newer_load_wins_and_the_stale_engine_is_closed(services: FakeServices, recorder: Recorder) -> None:
    services.loads[SMOL] = threading.Event()
    workspace = Workspace(services, recorder)
    workspace.load(SMOL)
    workspace.load(QWEN)
    recorder.wait(ws.ModelReady)
    services.loads[SMOL].set()
    eventually(lambda: len(services.started) == 2 and services.started[1].closed.is_set(), "stale engine closed")
    assert workspace.model_id == QWEN and len(recorder.of(ws.ModelReady)) == 1


def test_load_settings_saved_mid_reply_reload_after_it(services: FakeServices, recorder: Recorder) -> None:
    workspace = loaded(services, recorder)
    workspace.request_turn("send", "hello")
    recorder.wait(ws.ReplyStarted)
    said = workspace.settings_saved(True, "context size")
    assert "after this reply" in said and workspace.loading is None
    services.replies.set()
    recorder.wait(ws.ReplyFinished)
    started = recorder.wait(ws.LoadStarted, 2)[1]
    assert started == ws.LoadStarted(SMOL, "applying context size")
    recorder.wait(ws.ModelReady, 2)
    eventually(services.started[0].closed.is_set, "the replaced engine closed")


def test_a_dead_worker_is_reloaded_and_the_message_kept(services: FakeServices, recorder: Recorder) -> None:
    workspace = loaded(services, recorder)
    services.started[0].closed.set()  # the worker process died
    services.loads[SMOL] = threading.Event()
    refused = workspace.request_turn("send", "still there?")
    assert isinstance(refused, Refused) and "loading it again" in refused.reason
    assert workspace.loading == SMOL and not workspace.busy
    assert workspace.request_turn("send", "still there?") == "waiting"  # sent again while it reloads: it waits
    services.replies.set()
    services.loads[SMOL].set()
    recorder.wait(ws.ReplyFinished)
    assert workspace.engine is services.started[1]
    assert [m.content for m in workspace.session.messages] == ["still there?"]


def test_a_real_turn_on_the_tiny_model(tiny_model: Path, localchat_home: Path, recorder: Recorder) -> None:
    from tests.support.models import register_local_model

    workspace = Workspace(register_local_model(localchat_home, tiny_model), recorder)
    workspace.open_store()
    recorder.wait(ws.StoreReady)
    workspace.load("tiny")
    assert workspace.request_turn("send", "hello") == "waiting"  # sent before the model is ready
    finished = recorder.wait(ws.ReplyFinished)[0]
    try:
        assert isinstance(finished, ws.ReplyFinished) and finished.status == "complete", finished
        text = "".join(e.text for e in recorder.of(ws.ReplyText))  # type: ignore[union-attr]
        assert text == "Hi 你好🙂!"
        assert [m.content for m in workspace.session.messages] == ["hello", "Hi 你好🙂!"]
        store = workspace.store
        assert store is not None and workspace.session.conversation_id is not None
        saved = store.conversation(workspace.session.conversation_id).messages
        assert [m.content for m in saved] == ["hello", "Hi 你好🙂!"]
    finally:
        workspace.shutdown()
    assert workspace.engine is None
