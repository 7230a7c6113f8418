"""The models the server keeps loaded: workers started through Services.start_engine, least recently used
evicted first, and a fair first-come-first-served turn per model: as many requests at once as the worker has
parallel slots (one, unless it was loaded with `parallel`), the rest wait in arrival order.

asyncio only (no web framework): the app awaits `lease(model_id)`; loading and closing workers run in
threads so the event loop never blocks on them.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator, Literal

if TYPE_CHECKING:
    from localchat.engine.api import ChatTemplate, Engine
    from localchat.services import Services


class FifoTurn:
    """Up to `capacity` turns at once, handed out strictly in arrival order; a waiter that is cancelled
    leaves the line."""

    def __init__(self, capacity: int = 1) -> None:
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self.capacity = capacity
        self.in_use = 0

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    @property
    def held(self) -> bool:
        return self.in_use > 0

    async def acquire(self) -> None:
        if self.in_use < self.capacity and not self._waiters:
            self.in_use += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the turn was handed over just as we were cancelled: pass it on
            raise
        finally:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass

    def release(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)  # the turn passes directly; `in_use` stays
                return
        self.in_use -= 1


@dataclass(eq=False)
class Slot:
    """One model in the pool: its worker once loaded, and the line of requests that want it."""

    model_id: str
    engine: Engine | None = None
    template: ChatTemplate | None = None
    warnings: list[str] = field(default_factory=list)
    error: BaseException | None = None
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    turn: FifoTurn = field(default_factory=FifoTurn)
    users: int = 0  # requests queued for or using this slot; it is evicted only at 0
    draining: bool = False  # chosen for eviction: takes no new users
    last_used: float = field(default_factory=time.monotonic)

    @property
    def state(self) -> str:
        if self.error is not None:
            return "failed"
        if not self.loaded.is_set():
            return "loading"
        return "draining" if self.draining else "ready"


class ModelPool:
    """Up to `max_models` loaded models; requests for a model beyond that wait for the least recently used
    one to finish its line and be closed (its worker process ends, so its memory goes back to the system).

    All bookkeeping runs on the event loop without awaiting in between, so it needs no lock; waiters
    sleep on `_changed`, an event replaced each time the pool changes.
    """

    def __init__(self, services: Services, max_models: int = 1, parallel: int | Literal["auto"] = 1) -> None:
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self.services = services
        self.max_models = max_models
        self.parallel = parallel
        self._slots: collections.OrderedDict[str, Slot] = collections.OrderedDict()
        self._changed: asyncio.Event | None = None
        self._closing: list[threading.Thread] = []
        self.loads = 0
        self.evictions = 0

    def resident(self) -> list[Slot]:
        return list(self._slots.values())

    def get(self, model_id: str) -> Slot | None:
        return self._slots.get(model_id)

    @asynccontextmanager
    async def lease(self, model_id: str) -> AsyncIterator[Slot]:
        """Wait for `model_id` to be loaded and for this request's turn on it (first come, first served);
        raises what loading raised. The turn passes to the next request when the block ends."""
        slot = await self._acquire(model_id)
        try:
            yield slot
        finally:
            slot.last_used = time.monotonic()
            slot.turn.release()
            self._leave(slot)

    def unload(self, model_id: str) -> None:
        """Close a model once its line is empty (Ollama's keep_alive); a request that comes meanwhile waits
        for a fresh load."""
        slot = self._slots.get(model_id)
        if slot is not None and slot.loaded.is_set() and not slot.draining:
            self._drain(slot)
            self._notify()

    async def close(self) -> None:
        """Close every worker (server shutdown)."""
        slots = list(self._slots.values())
        self._slots.clear()
        self._notify()
        for slot in slots:
            if slot.engine is not None:
                await asyncio.to_thread(slot.engine.close)
        for thread in self._closing:
            await asyncio.to_thread(thread.join)

    # --- joining, loading, evicting ---------------------------------------------------------------

    async def _acquire(self, model_id: str) -> Slot:
        while True:
            slot = await self._join(model_id)
            try:
                await slot.loaded.wait()
                if slot.error is not None:
                    raise slot.error
                await slot.turn.acquire()
            except BaseException:  # cancelled in the line (the client went away) or the load failed
                self._leave(slot)
                raise
            if slot.engine is not None and slot.engine.alive:
                slot.last_used = time.monotonic()
                return slot
            # The worker died while we waited (a crash in the request before ours): start it afresh.
            slot.turn.release()
            self._leave(slot)

    async def _join(self, model_id: str) -> Slot:
        while True:
            slot = self._slots.get(model_id)
            if slot is not None and not slot.draining:
                slot.users += 1
                self._slots.move_to_end(model_id)
                return slot
            if slot is None and len(self._slots) < self.max_models:
                slot = Slot(model_id, users=1)
                self._slots[model_id] = slot
                asyncio.get_running_loop().create_task(self._load(slot))
                return slot
            if slot is None and not any(s.draining for s in self._slots.values()):
                self._drain(min(self._slots.values(), key=lambda s: s.last_used))
                continue  # it may have been idle and closed at once
            # Wait for the draining model (ours, or the one making room) to finish its line and close.
            await self._changed_event().wait()

    def _changed_event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _drain(self, victim: Slot) -> None:
        victim.draining = True
        if victim.users == 0:
            self._evict(victim)

    def _evict(self, slot: Slot) -> None:
        if self._slots.get(slot.model_id) is slot:
            del self._slots[slot.model_id]
        if slot.engine is not None:
            self.evictions += 1
            engine, slot.engine = slot.engine, None
            thread = threading.Thread(target=engine.close, name=f"close-{slot.model_id}", daemon=True)
            thread.start()
            self._closing = [t for t in self._closing if t.is_alive()] + [thread]
        self._notify()

    def _leave(self, slot: Slot) -> None:
        slot.users -= 1
        dead = slot.engine is not None and not slot.engine.alive
        if dead:
            slot.draining = True  # new requests wait for a fresh worker instead of joining a dead one
        if slot.users == 0 and (slot.draining or slot.error is not None):
            self._evict(slot)
        self._notify()

    async def _load(self, slot: Slot) -> None:
        try:
            engine, slot.template, slot.warnings = await asyncio.to_thread(self._start, slot.model_id)
            self.loads += 1
            slot.engine = engine
            slot.turn.capacity = max(1, getattr(engine.info, "parallel", 1) or 1)  # before anyone takes a turn
            if self._slots.get(slot.model_id) is not slot:  # evicted while loading: nobody waits for it
                self._evict(slot)
        except BaseException as exc:  # noqa: BLE001 - every waiter gets the reason
            slot.error = exc
            if self._slots.get(slot.model_id) is slot:
                del self._slots[slot.model_id]  # the next request tries again
        finally:
            slot.loaded.set()
            self._notify()

    def _start(self, model_id: str) -> tuple[Engine, ChatTemplate, list[str]]:
        engine = self.services.start_engine(model_id, parallel=self.parallel)
        try:
            info = engine.info
            entry = self.services.entry(model_id)
            template, warnings = self.services.chat_template(
                entry, info.chat_template, getattr(info, "bos_token", None), getattr(info, "eos_token", None))
        except BaseException:
            engine.close()
            raise
        return engine, template, list(warnings)
