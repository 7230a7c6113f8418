"""How many threads llama.cpp should decode with right now, when the user left it to us (n_threads auto).

llama.cpp's CPU threads meet at a barrier after every operation of the graph and spin while they wait.
That is fastest on idle cores, but when another program keeps one of those cores busy, a decoding thread
waits for the scheduler to hand it a time slice while its partner spins, and decoding collapses: on a
2-core machine with one busy core, SmolLM2 decodes at 44 tokens/s with 2 threads and 96 with 1 (178 with
2 on idle cores). So the worker measures how much CPU *other* processes used since it last looked
(/proc/stat minus its own CPU time) and decodes with the cores they leave free, between 1 and the
physical cores. It looks a quarter of a second into each reply, then twice a second, always over time
in which it was decoding itself (a reply starts with the last choice).

Linux only (/proc/stat); elsewhere the thread count stays fixed.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable, NamedTuple

CHECK_SECONDS = 0.5  # how often the choice is revisited while a reply streams
FIRST_CHECK_SECONDS = 0.25  # the first look in a reply, over the time since the reply started


class CpuSample(NamedTuple):
    wall: float  # monotonic seconds
    busy: float  # CPU-seconds all processes on the machine were running, from /proc/stat
    own: float  # CPU-seconds this process used (all its threads)


def read_sample() -> CpuSample | None:
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 8 or fields[0] != b"cpu":
        return None
    # user nice system idle iowait irq softirq steal ...; guest time is already inside user
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    steal = int(fields[8]) if len(fields) > 8 else 0
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    t = os.times()
    return CpuSample(time.monotonic(), (user + nice + system + irq + softirq + steal) / hz, t.user + t.system)


class ThreadGovernor:
    """Picks a thread count in [1, max_threads] from the CPU the rest of the machine used lately."""

    def __init__(self, max_threads: int, sampler: Callable[[], CpuSample | None] = read_sample,
                 machine_cpus: int | None = None, usable_cpus: int | None = None) -> None:
        self.max_threads = max(1, max_threads)
        self.current = self.max_threads
        self.others = 0.0  # CPUs other processes kept busy in the last window
        self._sampler = sampler
        self._machine = machine_cpus or os.cpu_count() or 1  # what /proc/stat's busy time is spread over
        if usable_cpus is None:
            try:
                usable_cpus = len(os.sched_getaffinity(0))
            except AttributeError:
                usable_cpus = self._machine
        self._usable = max(1, usable_cpus)
        self._mark = sampler()
        self.enabled = self._mark is not None and self.max_threads > 1

    def mark(self) -> None:
        """Start the next window now (the next choose() judges only what happens from here)."""
        if self.enabled:
            self._mark = self._sampler() or self._mark

    def choose(self, min_window: float = CHECK_SECONDS) -> int:
        """The thread count for what comes next; unchanged when the window since the last look is shorter
        than min_window (too little to judge) or the machine cannot be measured."""
        if not self.enabled:
            return self.current
        now = self._sampler()
        if now is None or self._mark is None:
            return self.current
        window = now.wall - self._mark.wall
        if window < min_window:
            return self.current
        others = max(0.0, (now.busy - self._mark.busy) - (now.own - self._mark.own)) / window
        self._mark = now
        self.others = others
        free = min(float(self._usable), self._machine - others)  # in logical CPUs
        per_thread = self._usable / self.max_threads  # logical CPUs per physical core (2 with SMT)
        self.current = max(1, min(self.max_threads, math.floor(free / per_thread + 0.5)))
        return self.current
