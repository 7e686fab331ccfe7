"""Where model stages run: in this process (:class:`LocalExecutor`, the default) or on a Ray cluster
(:class:`RayExecutor`: Ray Data ``map_batches`` over actor pools, one model replica per GPU or CPU slot).

Both run the same :class:`~spti.executor.tasks.Worker` code on the same tasks, so a stage gives the same bytes
on either (see :mod:`spti.executor.tasks`). Ray is optional and imported only when a Ray executor runs.

``make_executor(cfg)`` builds the executor a config's ``executor`` section asks for (``kind: local`` or
``ray``); :mod:`spti.executor.calibrate` measures each configured model and prints what a run would cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from spti.executor.base import Executor
from spti.executor.local import LocalExecutor
from spti.executor.tasks import ROLES, LLMCall, Step, build_backend

if TYPE_CHECKING:  # pragma: no cover
    from spti.executor.ray import RayExecutor

__all__ = ["ROLES", "Executor", "LLMCall", "LocalExecutor", "RayExecutor", "Step", "activate", "active_executor",
           "build_backend", "is_remote", "is_splittable", "make_executor", "render_pairs", "step_for"]

KINDS = ("local", "ray")


def __getattr__(name: str) -> Any:
    if name == "RayExecutor":  # the module imports Ray only when used, but keep even it out of `import spti`
        from spti.executor.ray import RayExecutor

        return RayExecutor
    raise AttributeError(name)


def make_executor(cfg: Any = None, **overrides: Any) -> Executor:
    """The executor of a :class:`~spti.config.Config` (its ``executor`` section), of an executor section given
    directly (a mapping or dataclass), or the local one when there is none. ``overrides``: keyword
    arguments that replace the section's values (``kind="ray"`` for ``--executor ray``)."""
    from spti.errors import ConfigError

    sec = getattr(cfg, "executor", cfg)
    if sec is None:
        d: dict[str, Any] = {}
    elif isinstance(sec, dict):
        d = dict(sec)
    elif hasattr(sec, "__dataclass_fields__"):
        import dataclasses

        d = dataclasses.asdict(sec)
    else:
        raise ConfigError(f"executor: expected a config or an executor section, got {type(sec).__name__}")
    d.update({k: v for k, v in overrides.items() if v is not None})
    kind = d.pop("kind", "local") or "local"
    common = {k: d.pop(k) for k in ("batches_per_task", "batch_size", "llm_chunk") if k in d}
    if kind == "local":
        return LocalExecutor(**common)
    if kind == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:  # say so now, not after the private data was read
            raise ConfigError("executor 'ray' needs Ray Data: pip install 'spti[ray]' (or 'ray[data]')")
        from spti.executor.ray import RayExecutor

        known = ("address", "workers", "cpus_per_replica", "gpus_per_replica", "roles", "max_restarts",
                 "max_task_retries", "init_kwargs")
        return RayExecutor(**common, **{k: d[k] for k in known if k in d})
    raise ConfigError(f"executor.kind must be one of {', '.join(KINDS)}, got {kind!r}")


# ---------------------------------------------------------------------------------------------- for the stages
_ACTIVE: ContextVar[Executor | None] = ContextVar("spti_executor", default=None)


@contextlib.contextmanager
def activate(executor: Executor | None) -> Iterator[Executor | None]:
    """Make ``executor`` the one that code building its own models uses (:func:`active_executor`) while the
    block runs. Why a context and not an argument everywhere: a command opens one executor
    (``pipeline.run``), and stages that build a model deep inside another owner's code (the per-iteration
    evaluator's renderer, the ceiling renders) then run it on the same executor without every signature on
    the way growing an ``executor`` parameter."""
    token = _ACTIVE.set(executor)
    try:
        yield executor
    finally:
        _ACTIVE.reset(token)


def active_executor() -> Executor | None:
    """The executor of the command that is running (:func:`activate`), or None outside one (local)."""
    return _ACTIVE.get()


def is_remote(backend: Any) -> bool:
    """True for a :class:`~spti.executor.proxy.RemoteBackend` (its model lives on the executor's replicas)."""
    from spti.executor.proxy import RemoteBackend

    return isinstance(backend, RemoteBackend)


def is_splittable(llm: Any) -> bool:
    """Whether ``llm``'s calls may be cut into parts with ``first_index`` (:attr:`spti.models.llm.LLM.splittable`).
    A :class:`~spti.executor.proxy.RemoteBackend` answers for the backend class of its config (known on the
    driver without loading the model)."""
    if is_remote(llm):
        from spti.executor.tasks import backend_class

        try:
            return bool(getattr(backend_class("llm", llm.config), "splittable", False))
        except Exception:  # noqa: BLE001 - an unknown class cannot be split; the normal path reports errors
            return False
    return bool(getattr(type(llm), "splittable", False))


def step_for(role: str, backend: Any, *, executor: Executor | None = None, config: Any = None,
             **kwargs: Any) -> tuple[Executor, Step]:
    """The executor and the :class:`Step` that run ``backend`` over a stage's items.

    A :class:`~spti.executor.proxy.RemoteBackend` runs on its own executor, from its config, with the batch
    size its replica reported (so the driver cuts tasks as the replicas batch). A live backend runs on
    ``executor`` (default: a fresh :class:`LocalExecutor`, which holds nothing to close for a live backend)
    as it is: the same backend calls, on the same batches, as a stage's own loop would make."""
    if is_remote(backend):
        return backend.executor, Step(role, backend.config, batch_size=backend.batch_size, **kwargs)
    return executor or LocalExecutor(), Step(role, config, backend=backend, **kwargs)


def render_pairs(seeds: tuple[int, ...]) -> Any:
    """A chain link to a renderer: each text (an LLM step's replies, or a text output) -> one ``(text, seed)``
    render item per seed (PE's ``renders`` per candidate, seeds from :func:`spti.data.cache.render_seed`).
    Picklable, so it travels to Ray replicas."""
    import functools

    return functools.partial(_render_pairs, tuple(int(s) for s in seeds))


def _render_pairs(seeds: tuple[int, ...], item: Any, output: Any) -> list[tuple[str, int]]:
    texts = [output] if isinstance(output, str) else list(output)
    return [(t, s) for t in texts for s in seeds]
