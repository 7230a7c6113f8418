"""n_threads auto: decode with the cores other programs leave free (llama.cpp's spinning threads collapse
when they share a core with a busy program)."""

from __future__ import annotations

from localchat.engine.threads import CpuSample, ThreadGovernor, read_sample


class FakeMachine:
    """A /proc/stat and os.times() whose clocks the test moves."""

    def __init__(self) -> None:
        self.wall = self.busy = self.own = 0.0

    def run(self, seconds: float, others: float, own: float) -> None:
        """`seconds` pass while other processes keep `others` CPUs busy and this one `own`."""
        self.wall += seconds
        self.busy += seconds * (others + own)
        self.own += seconds * own

    def sample(self) -> CpuSample:
        return CpuSample(self.wall, self.busy, self.own)


def governor(machine: FakeMachine, cores: int, logical: int | None = None) -> ThreadGovernor:
    logical = logical or cores
    return ThreadGovernor(cores, sampler=machine.sample, machine_cpus=logical, usable_cpus=logical)


def test_idle_machine_keeps_every_core_even_while_we_use_them_all():
    m = FakeMachine()
    g = governor(m, 4)
    m.run(2.0, others=0.05, own=4.0)  # our own spinning threads do not count
    assert g.choose() == 4


def test_a_busy_program_takes_a_core_and_gives_it_back():
    m = FakeMachine()
    g = governor(m, 2)
    m.run(1.0, others=0.7, own=1.3)  # a CPU hog squeezed by our two spinning threads
    assert g.choose() == 1
    m.run(1.0, others=1.0, own=1.0)
    assert g.choose() == 1
    m.run(1.0, others=0.02, own=1.0)  # the hog ended
    assert g.choose() == 2


def test_never_below_one_thread_and_rounds_half_a_core_up():
    m = FakeMachine()
    g = governor(m, 8)
    m.run(1.0, others=12.0, own=0.5)  # more load than the machine has CPUs (steal, a bigger host)
    assert g.choose() == 1
    m.run(1.0, others=2.5, own=5.0)
    assert g.choose() == 6  # 5.5 free cores -> 6


def test_hyperthreads_count_as_half_a_core():
    m = FakeMachine()
    g = governor(m, 4, logical=8)  # 4 physical cores, 8 logical CPUs
    m.run(1.0, others=2.0, own=4.0)  # two logical CPUs busy elsewhere: 6 free = 3 cores
    assert g.choose() == 3


def test_a_short_window_keeps_the_last_choice():
    m = FakeMachine()
    g = governor(m, 2)
    m.run(1.0, others=1.0, own=1.0)
    assert g.choose() == 1
    m.run(0.1, others=0.0, own=2.0)
    assert g.choose(min_window=0.25) == 1  # too short to judge: back-to-back requests keep the choice
    m.run(0.5, others=0.0, own=2.0)
    assert g.choose(min_window=0.25) == 2  # judged over the whole 0.6 s since the last look


def test_one_core_or_no_proc_stat_means_no_governing():
    m = FakeMachine()
    assert not governor(m, 1).enabled
    g = ThreadGovernor(4, sampler=lambda: None)
    assert not g.enabled and g.choose() == 4


def test_reads_this_machine():
    s = read_sample()
    if s is None:  # not Linux
        return
    assert s.busy > 0 and s.own > 0 and s.wall > 0


def test_a_new_window_forgets_the_idle_time_before_a_reply():
    m = FakeMachine()
    g = governor(m, 2)
    m.run(2.0, others=2.0, own=0.0)  # between replies another model's worker was decoding; it is done now
    g.mark()  # a reply starts
    m.run(0.3, others=0.0, own=2.0)
    assert g.choose(min_window=0.25) == 2
