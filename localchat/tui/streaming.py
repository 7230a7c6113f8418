"""Streaming a reply into its Markdown widget at a pace the machine can afford.

Every append re-lays out the screen and re-renders the growing block, and on a small CPU that work competes
with the model's own decoding (llama.cpp uses every core). Textual's MarkdownStream appends as fast as it
can; this one batches deltas and waits between appends long enough that the UI's own CPU time stays near a
fixed share of the wall clock (and never more than 20 or fewer than 1 update a second). Where the model leaves a
core free that is ~20 updates a second; on a small, busy CPU it backs off instead of slowing the model down.

While a reply streams, Python's cyclic garbage collector is paused (as Textual does while scrolling): a full
collection walks every object of the app and stalls the event loop for tens of milliseconds. It resumes when
the reply ends; streaming creates little cyclic garbage meanwhile.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

MIN_INTERVAL = 0.05  # seconds between appends, at most 20 a second
MAX_INTERVAL = 1.0  # at least 1 a second, however slow the machine
GC_RESUME_DELAY = 0.3  # seconds after the reply ends
CPU_SHARE = 0.03  # aim: the event loop's thread uses at most this share of one core while a reply streams...
SPARE_CORE_SHARE = 0.15  # ...or this much where the model leaves a core free (more threads than it uses, or a GPU)


def cpu_share_for(info: Any, cpus: int | None) -> float:
    """How much of a core the UI may spend on a streaming reply without slowing the model down.

    llama.cpp runs one thread per physical core and waits at a barrier after every step for the slowest of
    them: where it uses every CPU, whatever the UI takes delays each token. Where a CPU is left over (more
    logical CPUs than model threads) or the GPU does the work, the UI can afford smoother updates.
    """
    threads = getattr(info, "n_threads", 0) or (cpus or 1)
    on_gpu = bool(info.n_layer) and info.n_gpu_layers >= info.n_layer
    return SPARE_CORE_SHARE if on_gpu or (cpus or 1) > threads else CPU_SHARE


class DeltaBuffer:
    """Text from the worker thread, taken by the event loop when it is ready for more.

    The worker only posts a wake-up message when the stream has gone idle (found nothing last time it looked);
    while text keeps coming, the stream takes it on its own schedule. A message per token would cost the event
    loop a dispatch per token.
    """

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self._parts: list[str] = []
        self._idle = True  # the stream waits for a wake-up

    def put(self, text: str) -> None:
        """From the worker thread."""
        with self._lock:
            self._parts.append(text)
            if not self._idle:
                return
            self._idle = False
        self._wake()

    def take(self) -> str:
        """On the event loop: everything so far ("" means the stream goes idle until the next wake-up)."""
        with self._lock:
            text = "".join(self._parts)
            self._parts.clear()
            self._idle = not text
        return text


@dataclass
class ReplyPiece:
    """What a reply said since the last look: thought text (a reasoning model's), then answer text."""

    thought: str = ""
    answer: str = ""

    def __bool__(self) -> bool:
        return bool(self.thought or self.answer)


class ReplyBuffer:
    """A reply's thought and answer, each in its own DeltaBuffer (one wake-up for both).

    The model writes its whole thought before its answer, so once answer text is taken, every piece of the
    thought put before it is already in the thought buffer: `take` looks there again and never hands over
    answer text ahead of thought text that preceded it."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.thought = DeltaBuffer(wake)
        self.answer = DeltaBuffer(wake)

    def put(self, text: str, thought: bool = False) -> None:
        """From the worker thread."""
        (self.thought if thought else self.answer).put(text)

    def take(self) -> ReplyPiece:
        thought = self.thought.take()
        answer = self.answer.take()
        if answer:
            thought += self.thought.take()
        return ReplyPiece(thought, answer)


class ReplyStream:
    """Appends what `source()` returns (text, or a ReplyPiece) to a widget's `append`, paced as the module
    says, until stopped. Nothing (an empty string or piece) means the source has gone idle."""

    def __init__(self, widget: Any, source: Callable[[], Any], cpu_share: float = CPU_SHARE) -> None:
        self.widget = widget
        self.source = source
        self.cpu_share = cpu_share
        self._wake = asyncio.Event()  # text arrived while idle
        self._stop = asyncio.Event()  # the reply has ended
        self._task: asyncio.Task | None = None
        self._gc_was_enabled = False
        self.appends = 0

    def start(self) -> "ReplyStream":
        self._gc_was_enabled = _pause_gc()
        self._task = asyncio.create_task(self._run())
        return self

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Append what is still waiting, then end."""
        self._stop.set()
        self._wake.set()
        try:
            if self._task is not None:
                await self._task
                self._task = None
        finally:
            if self._gc_was_enabled:
                _resume_gc_later()

    def abandon(self) -> None:
        """The screen is going away: stop without appending anything more."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._gc_was_enabled:
            resume_gc()
            self._gc_was_enabled = False

    async def _run(self) -> None:
        cpu = time.thread_time()
        while True:
            stopping = self._stop.is_set()
            text = self.source()
            if text:
                await self.widget.append(text)
                self.appends += 1
            elif stopping:
                return
            else:
                await self._wake.wait()
                self._wake.clear()
                continue
            if stopping:
                continue  # take what came in during the last append
            # CPU this thread used since the last append: mostly the layout and render that append caused.
            now = time.thread_time()
            cost, cpu = now - cpu, now
            interval = min(MAX_INTERVAL, max(MIN_INTERVAL, cost / self.cpu_share))
            try:
                await asyncio.wait_for(self._stop.wait(), interval)
            except asyncio.TimeoutError:
                pass


_resume_handle: asyncio.TimerHandle | None = None  # the pending gc.enable() of the last reply


def _pause_gc() -> bool:
    """Pause the collector; True if it was running (or only waiting to resume after the previous reply)."""
    global _resume_handle
    if _resume_handle is not None:
        _resume_handle.cancel()
        _resume_handle = None
        return True
    was_enabled = gc.isenabled()
    gc.disable()
    return was_enabled


def _resume_gc_later() -> None:
    """Resume once the last text has been drawn: the collection that follows takes tens of milliseconds."""
    global _resume_handle
    _resume_handle = asyncio.get_running_loop().call_later(GC_RESUME_DELAY, resume_gc)


def resume_gc() -> None:
    """Let the collector run again now (the app is closing, or a screen went away mid-reply)."""
    global _resume_handle
    if _resume_handle is not None:
        _resume_handle.cancel()
        _resume_handle = None
    gc.enable()
