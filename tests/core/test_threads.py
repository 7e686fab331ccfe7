"""spti._threads.DaemonThreadPool: ThreadPoolExecutor's behaviour for what spti uses, with workers that an
interrupted process does not wait for."""

from __future__ import annotations

import threading
import time

import pytest

from spti._threads import DaemonThreadPool


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
