"""The executor interface: map a model stage over a list of items, in input order, on this process or on a
Ray cluster, with the same bytes either way.

Why an interface and not a flag inside each stage: the stages (captioning, private embeddings, candidate
renders and their features, the release render, evaluation features, LLM calls) all do the same thing:
items in, one backend call per batch, outputs back in order. The executor owns *where* that runs; the stages
keep owning *what* is done with the outputs (shards, caches, the ledger), so resume, the render cache and the
ledger work unchanged whatever the executor.

Three ways to use it:

* :meth:`Executor.map`: one step, all outputs in input order;
* :meth:`Executor.stream`: one step or a chain, ``(item range, outputs)`` per finished task, as tasks
  finish (a caller writes its resumable shards from these);
* :meth:`Executor.chain`: several steps (``variations -> render -> embed``) as one streaming pipeline: the
  second step starts on the first task while the first step works on the next one.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from spti.errors import BackendError
from spti.executor.tasks import BackendInfo, Entry, LLMCall, Step, assemble, batch_size_hint, make_tasks

__all__ = ["Executor", "in_order"]


class Executor(abc.ABC):
    """Runs :class:`~spti.executor.tasks.Step` s over items. Subclasses implement :meth:`_execute`."""

    kind: str = "?"

    def __init__(self, *, batches_per_task: int = 1, batch_size: int | None = None, llm_chunk: int = 64):
        #: items per task = the first step's batch size x this (a task is the unit of work a replica takes)
        self.batches_per_task = max(1, int(batches_per_task))
        #: items per task, overriding the rule above (``executor.batch_size``)
        self.batch_size = batch_size
        #: conversations per LLM call when a round of a ``splittable`` LLM is cut into calls (``executor.llm_chunk``):
        #: the unit of LLM work a replica takes, and of the renders that stream after it (spti.pe.stream)
        self.llm_chunk = max(1, int(llm_chunk))

    # -------------------------------------------------------------------------------- to implement
    @abc.abstractmethod
    def _execute(self, steps: Sequence[Step], tasks: list[list[Entry]], desc: str) -> Iterator[tuple[int, list[Entry]]]:
        """Run every task through ``steps``; yield ``(task index, leaves)`` once per task, in any order."""

    @abc.abstractmethod
    def describe(self, step: Step) -> BackendInfo:
        """The backend's ``info()``, cache key, batch size, input size and feature width, from the replica
        side (a Ray executor builds one replica for it, once per step config; the driver loads no model)."""

    @abc.abstractmethod
    def backend(self, role: str, config: Mapping[str, Any] | str) -> Any:
        """A backend of ``role`` for code that calls backends directly: the model itself on the local
        executor (built as ``build_*(config)`` builds it, owned by the caller), a
        :class:`~spti.executor.proxy.RemoteBackend` on Ray."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release what the executor holds (models built by a local executor). Safe to call twice."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------- shared
    def task_size(self, step: Step) -> int:
        """Items per task for a chain starting with ``step``: a whole number of the backend's batches, so the
        batches inside each task are the batches a single local pass would make."""
        if self.batch_size is not None:
            return max(1, int(self.batch_size))
        return batch_size_hint(step) * self.batches_per_task

    def stream(self, steps: Step | Sequence[Step], items: Sequence[Any], *, desc: str | None = None,
               split_every: int | None = None, task_size: int | None = None) -> Iterator[tuple[range, list[Any]]]:
        """``(item indices, results)`` per finished task, in completion order. With one step a result is the
        item's output; with a chain it is the list of the item's leaves (see :meth:`chain`). ``split_every``:
        no task crosses a multiple of it (a stage writing shards of that many items gets each shard's
        batches cut from the shard's start, as its own loop over shards would). ``task_size``: items per
        task instead of :meth:`task_size` (a chain whose later step must batch as a stage's own loop would:
        a common multiple of both steps' batch sizes).

        Every task is yielded exactly once: a task that comes back twice (a retry whose first answer also
        arrived) or never raises :class:`BackendError` instead of yielding duplicates or leaving a gap."""
        steps = [steps] if isinstance(steps, Step) else list(steps)
        if not steps:
            raise ValueError("executor: no steps")
        items = list(items)
        ranges = make_tasks(len(items), task_size or self.task_size(steps[0]), split_every)
        tasks = [[((i,), (), items[i]) for i in r] for r in ranges]
        seen: set[int] = set()
        single = len(steps) == 1
        for ti, leaves in self._execute(steps, tasks, desc or steps[0].label):
            if ti in seen or not 0 <= ti < len(ranges):
                raise BackendError(f"executor: task {ti} of the {steps[0].label} stage came back twice")
            seen.add(ti)
            r = ranges[ti]
            per_root = assemble_range(r, leaves)
            if single:
                if any(len(t) != 1 for t in per_root):
                    raise BackendError(f"executor: a task of the {steps[0].label} stage lost or repeated an item")
                yield r, [t[0][-1] for t in per_root]
            else:
                yield r, per_root
        if len(seen) != len(ranges):
            raise BackendError(f"executor: {len(ranges) - len(seen)} task(s) of the {steps[0].label} stage never "
                               "came back; the stage did not complete")

    def map(self, step: Step, items: Sequence[Any], *, desc: str | None = None) -> list[Any]:
        """The outputs of ``step`` for ``items``, in input order (see :mod:`spti.executor.tasks` for what an
        item and an output are per role)."""
        out: list[Any] = [None] * len(items)
        for r, outputs in self.stream(step, items, desc=desc):
            out[r.start : r.stop] = outputs
        return out

    def chain(self, steps: Sequence[Step], items: Sequence[Any], *, desc: str | None = None,
              task_size: int | None = None) -> list[list[tuple[Any, ...]]]:
        """Run ``steps`` as one pipeline. For each input item, the list of its *leaves* in order; a leaf is
        the tuple of the items it went through after the first step, then the last step's output. E.g.
        ``[llm, renderer, image_embedder]`` with a link making ``(reply, seed)`` pairs: one leaf per render,
        ``((reply, seed), png_bytes, features)``."""
        out: list[Any] = [None] * len(items)
        for r, per_root in self.stream(list(steps), items, desc=desc, task_size=task_size):
            out[r.start : r.stop] = per_root
        return out

    # -------------------------------------------------------------------------------- per role
    def caption(self, config: Mapping[str, Any] | None, images: Sequence[Any], *, backend: Any = None,
                max_pixels: int | None = None) -> list[str]:
        """Captions of images (private image records, PNG bytes, paths or PIL images)."""
        return self.map(Step("captioner", config, backend=backend, max_pixels=max_pixels, name="captioning"), images)

    def embed_images(self, config: Mapping[str, Any] | None, images: Sequence[Any], *, backend: Any = None,
                     max_pixels: int | None = None) -> np.ndarray:
        """Image features, float32, one row per image."""
        rows = self.map(Step("image_embedder", config, backend=backend, max_pixels=max_pixels,
                             name="embedding images"), images)
        return _stack(rows)

    def embed_texts(self, config: Mapping[str, Any] | None, texts: Sequence[str], *, backend: Any = None) -> np.ndarray:
        """Text features, float32, one row per text."""
        return _stack(self.map(Step("text_embedder", config, backend=backend, name="embedding texts"), list(texts)))

    def render(self, config: Mapping[str, Any] | None, prompts: Sequence[str], seeds: Sequence[int], *,
               backend: Any = None) -> list[bytes]:
        """PNG bytes of each ``(prompt, seed)`` render (what :class:`~spti.data.cache.RenderCache` stores)."""
        if len(prompts) != len(seeds):
            raise ValueError(f"render: {len(prompts)} prompts but {len(seeds)} seeds")
        return self.map(Step("renderer", config, backend=backend, name="rendering"), list(zip(prompts, seeds)))

    def generate(self, config: Mapping[str, Any] | None, calls: Sequence[LLMCall], *, backend: Any = None) -> list[list[str]]:
        """The replies of each ``generate`` call, as given (calls run in parallel; a call is not cut here: the
        caller cuts a round of a ``splittable`` LLM with :func:`~spti.executor.tasks.split_call`)."""
        return self.map(Step("llm", config, backend=backend, name="LLM calls"), list(calls))


def in_order(results: Iterator[tuple[range, list[Any]]]) -> Iterator[tuple[range, list[Any]]]:
    """:meth:`Executor.stream`'s results put back in input order, each as soon as every task before it is
    in. Why: a stage that appends to a cache in chunks (the feature cache's shards) writes the same files
    whatever order the replicas finished in."""
    held: dict[int, tuple[range, list[Any]]] = {}
    nxt = 0
    for r, outputs in results:
        held[r.start] = (r, outputs)
        while nxt in held:
            rr, oo = held.pop(nxt)
            nxt = rr.stop
            yield rr, oo
    for start in sorted(held):  # only when a stage's tasks left a gap, which stream() already refuses
        yield held[start]


def assemble_range(r: range, leaves: list[Entry]) -> list[list[tuple[Any, ...]]]:
    """Per item of task ``r``, its leaves in order (paths start with the global item index)."""
    shifted = [((p[0] - r.start, *p[1:]), t, x) for p, t, x in leaves]
    if any(not 0 <= p[0] < len(r) for p, _, _ in shifted):
        raise BackendError("executor: a task returned an item that is not its own")
    return assemble(len(r), shifted)


def _stack(rows: list[Any]) -> np.ndarray:
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([np.asarray(r, dtype=np.float32) for r in rows])
