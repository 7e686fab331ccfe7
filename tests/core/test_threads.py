"""spti._threads.DaemonThreadPool: ThreadPoolExecutor's behaviour for what spti uses, with workers that an
interrupted process does not wait for. FreeCores: how many compute threads fit beside the other processes."""

from __future__ import annotations

import threading
import time

import pytest

import spti._threads as threads_mod
from spti._threads import DaemonThreadPool, FreeCores, available_cpus


def test_results_in_order_and_errors_raised():
    with DaemonThreadPool(3) as pool:
        assert list(pool.map(lambda x: x * x, range(10))) == [x * x for x in range(10)]
        f = pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            f.result()
    assert all(t.daemon for t in pool._threads) and len(pool._threads) <= 3


def test_an_ordinary_error_waits_for_running_calls_an_interrupt_does_not():
    finished = threading.Event()

    def slow():
        time.sleep(0.3)
        finished.set()

    with pytest.raises(ValueError):
        with DaemonThreadPool(2) as pool:
            pool.submit(slow)
            raise ValueError
    assert finished.is_set()  # like ThreadPoolExecutor: a failed batch leaves nothing running behind

    started, release = threading.Event(), threading.Event()
    queued = []

    def block():
        started.set()
        release.wait(30)

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with DaemonThreadPool(1) as pool:
            pool.submit(block)
            queued.append(pool.submit(lambda: None))
            started.wait(5)
            raise KeyboardInterrupt
    assert time.monotonic() - t0 < 5 and queued[0].cancelled()
    release.set()


# ---------------------------------------------------------------------------------------------- FreeCores
class _Clock:
    """The machine as FreeCores sees it: wall time, the machine's busy CPU-seconds, this process's own."""

    def __init__(self):
        self.t, self.busy, self.own = 100.0, 1000.0, 10.0

    def advance(self, seconds: float, *, ours: float, others: float) -> None:
        self.t += seconds
        self.own += ours * seconds
        self.busy += (ours + others) * seconds


@pytest.fixture()
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(threads_mod.time, "monotonic", lambda: c.t)
    monkeypatch.setattr(threads_mod, "_machine_busy_seconds", lambda: c.busy)
    monkeypatch.setattr(threads_mod, "_own_seconds", lambda: c.own)
    monkeypatch.setattr(threads_mod.os, "cpu_count", lambda: 2)
    return c


def test_free_cores_leaves_a_core_to_a_busy_process_and_takes_it_back(clock):
    free = FreeCores(2)
    assert free.threads() == 2  # nothing measured yet: the most
    clock.advance(1.5, ours=1.3, others=0.7)  # our 2 threads and one busy process share the 2 cores
    assert free.threads() == 1 and free.others == pytest.approx(0.7)
    clock.advance(0.5, ours=1.0, others=1.0)
    assert free.threads() == 1  # within the interval: the last answer, not re-measured
    clock.advance(1.0, ours=1.0, others=1.0)
    assert free.threads() == 1
    clock.advance(1.0, ours=1.0, others=0.1)  # the other process ended; a shell's 0.1 core is not a reason
    assert free.threads() == 2
    clock.advance(0.2, ours=1.0, others=1.0)
    assert free.threads() == 2 and free.threads(force=True) == 1  # force: measure now


def test_free_cores_bounds(clock, monkeypatch):
    free = FreeCores(1)
    clock.advance(2.0, ours=0.0, others=0.0)
    assert free.threads() == 1  # never above max_threads
    free = FreeCores(2)
    clock.advance(2.0, ours=0.0, others=2.0)
    assert free.threads() == 1  # never below 1
    monkeypatch.setattr(threads_mod, "_machine_busy_seconds", lambda: None)  # not Linux
    assert FreeCores(2).threads(force=True) == 2


def test_free_cores_on_the_real_machine():
    assert available_cpus() >= 1
    free = FreeCores(available_cpus(), interval=0.0)
    time.sleep(0.05)
    assert 1 <= free.threads() <= available_cpus() and free.others >= 0.0
