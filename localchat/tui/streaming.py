"""Streaming a reply into its Markdown widget at a pace the machine can afford.

Every append re-lays out the screen and re-renders the growing block, and on a small CPU that work competes
with the model's own decoding (llama.cpp uses every core). Textual's MarkdownStream appends as fast as it
can; this one batches deltas and waits between appends long enough that the UI's own CPU time stays near a
fixed share of the wall clock (and never under 20 or over 2 updates a second). On a fast machine that is
~20 updates a second; on a busy laptop it backs off instead of slowing the model down.

While a reply streams, Python's cyclic garbage collector is paused (as Textual does while scrolling): a full
collection walks every object of the app and stalls the event loop for tens of milliseconds. It resumes when
the reply ends; streaming creates little cyclic garbage meanwhile.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any, Callable

MIN_INTERVAL = 0.05  # seconds between appends, at most 20 a second
MAX_INTERVAL = 0.5  # at least 2 a second, however slow the machine
CPU_SHARE = 0.05  # aim: the event loop's thread uses at most this share of one core while a reply streams


class DeltaBuffer:
    """Hands text from the worker thread to the event loop with at most one wake-up message in flight.

    Posting one message per token costs the event loop a dispatch per token; this posts a message only when
    the loop has taken everything before, so a busy loop gets fewer, bigger batches.
    """

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._lock = threading.Lock()
        self._parts: list[str] = []
        self._posted = False

    def put(self, text: str) -> None:
        """From the worker thread."""
        with self._lock:
            self._parts.append(text)
            if self._posted:
                return
            self._posted = True
        self._wake()

    def take(self) -> str:
        """On the event loop, when woken."""
        with self._lock:
            text = "".join(self._parts)
            self._parts.clear()
            self._posted = False
        return text


class ReplyStream:
    def __init__(self, widget: Any, cpu_share: float = CPU_SHARE) -> None:
        self.widget = widget
        self.cpu_share = cpu_share
        self._pending: list[str] = []
        self._wake = asyncio.Event()  # text is waiting
        self._stop = asyncio.Event()  # the reply has ended
        self._task: asyncio.Task | None = None
        self._gc_was_enabled = False
        self.appends = 0

    def start(self) -> "ReplyStream":
        self._gc_was_enabled = gc.isenabled()
        gc.disable()
        self._task = asyncio.create_task(self._run())
        return self

    def write(self, text: str) -> None:
        if text:
            self._pending.append(text)
            self._wake.set()

    async def stop(self) -> None:
        """Append what is still pending, then end."""
        self._stop.set()
        self._wake.set()
        try:
            if self._task is not None:
                await self._task
                self._task = None
        finally:
            if self._gc_was_enabled:
                gc.enable()

    def abandon(self) -> None:
        """The screen is going away: stop without appending anything more."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._gc_was_enabled:
            gc.enable()
            self._gc_was_enabled = False

    async def _run(self) -> None:
        cpu = time.thread_time()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending:
                text = "".join(self._pending)
                self._pending.clear()
                await self.widget.append(text)
                self.appends += 1
            if self._stop.is_set():
                if self._pending:
                    continue
                return
            # CPU this thread used since the last append: mostly the layout and render that append caused.
            now = time.thread_time()
            cost, cpu = now - cpu, now
            interval = min(MAX_INTERVAL, max(MIN_INTERVAL, cost / self.cpu_share))
            try:
                await asyncio.wait_for(self._stop.wait(), interval)
            except asyncio.TimeoutError:
                pass
