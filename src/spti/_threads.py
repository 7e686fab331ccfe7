"""Threads: a thread pool that never keeps an interrupted process alive, and how many cores the other
processes on the machine leave free (for compute threads that must not outnumber the free cores).

Why not :class:`concurrent.futures.ThreadPoolExecutor`: its workers are joined when the pool is left (the
``with`` block, ``shutdown(wait=True)``) *and* again at interpreter exit, so after Ctrl-C the process
waits for every call already running to finish: an HTTP request hanging until its timeout (and retries),
a decode of a huge image, a read that blocks. spti's answer to Ctrl-C must come within seconds, so:

* the workers are daemon threads, which the interpreter does not wait for at exit;
* leaving the pool on KeyboardInterrupt (or SystemExit, GeneratorExit: any BaseException that is not an
  Exception) cancels the calls not started and does not wait for the running ones; leaving it normally, or
  on an ordinary error, waits for them as ThreadPoolExecutor does (a failed batch does not leave requests
  running behind the caller's back).

Same interface as ThreadPoolExecutor for what spti uses: ``submit``, ``map``, ``shutdown``, a context
manager; futures are :class:`concurrent.futures.Future`.

:class:`FreeCores`: llama.cpp's threads wait for each other at every layer by spinning, so with as many
threads as cores and one core taken by another process, generation slows down 3x (measured with a busy
loop, benchmarks/bench_llm_threads.py) to 70x (beside a test suite). It measures, from ``/proc/stat``, the CPU the *other* processes used since the
last look (the machine's busy time minus this process's own), and says how many threads fit.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["DaemonThreadPool", "FreeCores", "available_cpus"]

R = TypeVar("R")

_STOP = object()


class DaemonThreadPool:
    """Up to ``max_workers`` daemon threads, started on demand."""

    _ids = itertools.count()

    def __init__(self, max_workers: int, thread_name_prefix: str = "spti-pool"):
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self._max = max_workers
        self._prefix = f"{thread_name_prefix}-{next(self._ids)}"
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._shutdown = False

    # ------------------------------------------------------------------ work
    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to a pool that was shut down")
            fut: Future[R] = Future()
            self._queue.put((fut, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max:
                t = threading.Thread(target=self._work, name=f"{self._prefix}_{len(self._threads)}", daemon=True)
                t.start()
                self._threads.append(t)
            return fut

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fut, fn, args, kwargs = item
            if fut.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as e:  # noqa: BLE001 - handed to the caller through the future
                    fut.set_exception(e)
                else:
                    fut.set_result(result)
            del item, fut, fn, args, kwargs
            self._idle.release()

    def map(self, fn: Callable[..., R], items: Iterable[Any]) -> Iterator[R]:
        """Like ``Executor.map``: all submitted at once, results in input order."""
        futures = [self.submit(fn, x) for x in items]

        def results() -> Iterator[R]:
            try:
                for f in futures:
                    yield f.result()
            finally:
                for f in futures:
                    f.cancel()

        return results()

    # ------------------------------------------------------------------ shutdown
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _STOP:
                        item[0].cancel()
            for _ in self._threads:
                self._queue.put(_STOP)
            threads = list(self._threads)
        if wait:
            for t in threads:
                t.join()

    def __enter__(self) -> DaemonThreadPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        interrupted = exc_type is not None and not issubclass(exc_type, Exception)
        self.shutdown(wait=not interrupted, cancel_futures=interrupted)


# ---------------------------------------------------------------------------------------------- free cores
def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _machine_busy_seconds() -> float | None:
    """CPU-seconds the whole machine spent busy since boot (``/proc/stat``), or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            vals = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = sum(vals) - vals[3] - vals[4]  # minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class FreeCores:
    """How many of ``max_threads`` compute threads fit beside the other processes' current CPU use.

    ``threads()`` looks at most every ``interval`` seconds; in between it returns its last answer. The
    answer is ``floor(cpus - others + slack)`` clipped to ``[1, max_threads]``, where ``others`` is the CPU
    (in cores) that processes other than this one used since the previous look. ``slack`` (0.3 cores)
    ignores the shells, editors and daemons of an otherwise idle machine. The machine's CPUs are counted,
    not this process's affinity share, because ``/proc/stat`` counts them all. Off Linux (no
    ``/proc/stat``) the answer is always ``max_threads``.

    Why sampled rather than fixed: a fixed thread count is wrong half the time on a shared laptop (on 2
    cores, 2 llama.cpp threads are 3x slower beside one busy process, 1 thread is 1.5x slower on an idle
    machine); processes start and stop during a run of minutes, so the choice is revisited while working.
    """

    def __init__(self, max_threads: int, *, interval: float = 1.0, slack: float = 0.3):
        self.max_threads = max(int(max_threads), 1)
        self.interval = float(interval)
        self.slack = float(slack)
        self.cpus = os.cpu_count() or 1
        self.others = 0.0
        self._last = self.max_threads
        self._t: float | None = None
        self._busy: float | None = None
        self._own = 0.0
        self.start()

    def start(self) -> None:
        """Begin a new measuring window (call right before the work whose threads are to be chosen)."""
        self._t, self._busy, self._own = time.monotonic(), _machine_busy_seconds(), _own_seconds()

    def threads(self, *, force: bool = False) -> int:
        """The thread count for the next piece of work (re-measured when ``interval`` has passed, or now
        with ``force``)."""
        if self._busy is None or self._t is None:
            return self.max_threads
        now = time.monotonic()
        dt = now - self._t
        if dt <= 0 or (dt < self.interval and not force):
            return self._last
        busy, own = _machine_busy_seconds(), _own_seconds()
        if busy is None:
            return self.max_threads
        self.others = max(busy - self._busy - (own - self._own), 0.0) / dt
        self._t, self._busy, self._own = now, busy, own
        self._last = int(min(max(int(self.cpus - self.others + self.slack), 1), self.max_threads))
        return self._last
