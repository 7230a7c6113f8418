"""One request's generation: wait for the model's turn, run the engine in a thread, hand the text to the
response through an asyncio queue. Cancelling the job (the client went away) takes it out of the line,
or stops the worker's generation at once; the turn passes on only when the worker has really stopped.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from localchat.engine.api import Generation, ReasoningDelta, TextDelta, ToolCallDelta
from localchat.errors import Cancelled, LocalchatError
from localchat.types import SamplingParams, ToolCall, Usage


@dataclass
class Delta:
    text: str


@dataclass
class Thought:
    text: str  # a reasoning model's thought, apart from the answer (reasoning_content, Ollama's thinking)


@dataclass
class Done:
    usage: Usage
    finish_reason: str  # stop | length | cancelled | tool_calls
    text: str
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass
class Failed:
    error: BaseException


@dataclass
class ServerStats:
    """Counters for /health. `cancelled` counts generations the engine itself reported as cancelled."""

    requests: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    left_queue: int = 0  # clients that went away before their turn
    completion_tokens: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# prepare(slot) -> (prompt, sampling) or (prompt, sampling, wrap): runs in the generation thread (it may
# render a long template or count tokens); raising there fails the job before anything was sent. `wrap`
# sees the engine's generation through something (the tool-call parser: localchat.tooluse).
Prepare = Callable[[Any], "tuple[Any, SamplingParams] | tuple[Any, SamplingParams, Callable[[Generation], Generation]]"]


@dataclass(eq=False)
class Job:
    pool: Any
    stats: ServerStats
    model_id: str
    prepare: Prepare
    slot: Any = None
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    _task: asyncio.Task | None = None
    _generation: Any = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> "Job":
        self.stats.requests += 1
        self._task = asyncio.get_running_loop().create_task(self._produce())
        return self

    async def next(self) -> Delta | Thought | ToolCallDelta | Done | Failed:
        return await self.events.get()

    def on_finished(self, callback: Callable[["Job"], None]) -> None:
        """Call `callback(job)` once the job is over (its turn passed on)."""
        self._task.add_done_callback(lambda _task: callback(self))

    def cancel(self) -> None:
        """The client went away: leave the line, or stop the generation (idempotent, event loop only).
        Cancelling once is enough: a second cancel would cut short the wait for the worker to stop."""
        if self._task is not None and not self._task.done() and not self._stop.is_set():
            self._stop.set()
            self._task.cancel()

    @property
    def finished(self) -> bool:
        return self._task is not None and self._task.done()

    # --- the producer ---------------------------------------------------------------------------

    async def _produce(self) -> None:
        loop = asyncio.get_running_loop()
        in_turn = False
        try:
            async with self.pool.lease(self.model_id) as slot:
                in_turn = True
                self.slot = slot
                done = loop.create_future()
                threading.Thread(target=self._run, args=(slot, loop, done), daemon=True,
                                 name=f"generate-{self.model_id}").start()
                try:
                    await asyncio.shield(done)
                except asyncio.CancelledError:
                    self._cancel_generation()
                    # Keep the turn until the worker has stopped, so the next request starts at once.
                    await asyncio.shield(done)
                    raise
        except asyncio.CancelledError:
            if not in_turn:  # gone before its turn: nothing ran; tell whoever still reads the events
                self.stats.left_queue += 1
                self.events.put_nowait(Failed(Cancelled("the client went away before its turn")))
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the client as an error response
            self.stats.failed += 1
            self.events.put_nowait(Failed(exc))

    def _run(self, slot: Any, loop: asyncio.AbstractEventLoop, done: asyncio.Future) -> None:
        """The generation thread: the engine's blocking iterator, bridged to the event loop."""
        put = self.events.put_nowait
        outcome: Any = None
        try:
            prompt, sampling, *wrap = self.prepare(slot)
            generation = slot.engine.generate(prompt, sampling)
            if wrap:
                generation = wrap[0](generation)
            with self._lock:
                self._generation = generation
            if self._stop.is_set():
                generation.cancel()
            thought: list[str] = []
            for event in generation:
                if isinstance(event, TextDelta):
                    loop.call_soon_threadsafe(put, Delta(event.text))
                elif isinstance(event, ReasoningDelta):
                    thought.append(event.text)
                    loop.call_soon_threadsafe(put, Thought(event.text))
                elif isinstance(event, ToolCallDelta):
                    loop.call_soon_threadsafe(put, event)
            usage = generation.usage or Usage()
            outcome = Done(usage, generation.finish_reason or usage.finish_reason or "stop", generation.text,
                           "".join(thought), tuple(getattr(generation, "tool_calls", ())))
        except BaseException as exc:  # noqa: BLE001 - LocalchatError or a bug: the client hears of it
            if not isinstance(exc, LocalchatError):
                exc = LocalchatError(f"internal error: {type(exc).__name__}: {exc}")
            outcome = Failed(exc)
        finally:
            loop.call_soon_threadsafe(self._deliver, outcome, done)

    def _deliver(self, outcome: Any, done: asyncio.Future) -> None:
        """On the event loop: count the outcome, hand it to the response, let the producer go on."""
        if isinstance(outcome, Done):
            if outcome.finish_reason == "cancelled":
                self.stats.cancelled += 1
            else:
                self.stats.completed += 1
                self.stats.completion_tokens += outcome.usage.completion_tokens
        elif isinstance(outcome, Failed):
            self.stats.failed += 1
        if outcome is not None:
            self.events.put_nowait(outcome)
        if not done.done():
            done.set_result(None)

    def _cancel_generation(self) -> None:
        with self._lock:
            generation = self._generation
        if generation is not None:
            generation.cancel()
