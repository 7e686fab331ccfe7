"""A thread pool that never keeps an interrupted process alive.

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
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["DaemonThreadPool"]

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
