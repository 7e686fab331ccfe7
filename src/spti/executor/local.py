"""The local executor: every step runs in this process, task after task (what spti always did).

Why it cuts work into the same tasks as the Ray executor: a backend whose output depends on its batch (padding,
half-precision kernels) then gives the same bytes here and on a cluster, because both make the same backend
calls. With one task per backend batch (the default) the calls are exactly those of a single local pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from spti.executor.base import Executor
from spti.executor.tasks import BackendInfo, Entry, Step, Worker, advance, build_backend, describe_backend

__all__ = ["LocalExecutor"]


class LocalExecutor(Executor):
    """Runs steps in-process. A model is built once per distinct (role, config) and kept until
    :meth:`close`, so calling a stage again (every PE iteration) does not reload it; a step that carries a
    live ``backend`` uses it as is (and does not close it)."""

    kind = "local"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._workers: dict[Any, Worker] = {}

    def worker(self, step: Step) -> Worker:
        if step.backend is not None:
            key: Any = ("live", id(step.backend), step.batch_size, step.max_pixels)
        else:
            key = (step.role, json.dumps(step.config, sort_keys=True, default=str), step.batch_size, step.max_pixels)
        w = self._workers.get(key)
        if w is None:
            w = self._workers[key] = Worker(step)
        w.step = step  # same model; this call's link and name
        return w

    def describe(self, step: Step) -> BackendInfo:
        return describe_backend(self.worker(step).backend, step.role)

    def backend(self, role: str, config: Any) -> Any:
        return build_backend(role, config)

    def _execute(self, steps: Sequence[Step], tasks: list[list[Entry]], desc: str) -> Iterator[tuple[int, list[Entry]]]:
        from spti.log import Progress

        workers = [self.worker(s) for s in steps]
        with Progress(desc, sum(len(t) for t in tasks), "item") as bar:
            for ti, entries in enumerate(tasks):
                n = len(entries)
                for k, w in enumerate(workers):
                    entries = advance(w, entries, last=k == len(workers) - 1)
                bar.update(n)
                yield ti, entries

    def close(self) -> None:
        workers, self._workers = list(self._workers.values()), {}
        for w in workers:
            w.close()
