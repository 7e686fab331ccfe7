"""The Ray executor: each step is a Ray Data ``map_batches`` over an actor pool; a chain of steps is one
streaming Ray Data pipeline.

How a stage runs. The driver cuts the items into tasks (a whole number of the backend's batches, the same
tasks as the local executor), one Ray Data row per task. Each step is ``map_batches(_Replica, batch_size=1,
compute=ActorPoolStrategy(...))``: every actor of the pool builds its backend ONCE, from the same config dict
the local path uses (``build_captioner(config)`` & co.), then runs the tasks it is given with
:class:`spti.executor.tasks.Worker`, the code the local executor runs. One replica per GPU
(``gpus_per_replica: 1``) or per CPU slot (``cpus_per_replica``, fractional allowed).

Same bytes: same backend, same task boundaries, same batches, same decode, same seeds (a seed is part of each
item: render seeds, LLM call seeds). Results come back keyed by task index and are put in input order by the
driver, which also refuses a task that comes back twice or never.

Faults: the actors run with ``max_restarts`` / ``max_task_retries``: when a replica's process dies (killed,
out of memory, a node lost), Ray starts a new one (which builds its backend again) and re-runs the task it
held; the first answer of a task that died never arrived, so nothing is duplicated. A backend that *raises*
is not retried (it would fail the same way): the error comes back as a value and is raised on the driver.

Privacy: an exception inside a replica is turned into its class name and spti's own message before it leaves
the actor (a library's message, or a traceback with its chained causes, could quote a private input); the
backend call runs inside :func:`spti.models._guard.backend_stage`, as in a local stage.

Data locality: private images are read by the replicas from their paths, and renders come back as PNG bytes
that the driver writes into the run folder as today. On a multi-node cluster the private data (and the
models) must be at the same paths on every node (shared storage); the run folder is written by the driver.

Ray is imported only inside functions: ``import spti.executor`` does not need it.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from spti.errors import BackendError, ConfigError, SptiError
from spti.executor.base import Executor
from spti.executor.tasks import BackendInfo, Entry, Step
from spti.log import logger

__all__ = ["RayExecutor", "Resources"]

# the name of the stage a replica reports failures under when the driver was in none
_DEFAULT_STAGE = "ray executor"


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one replica of a step asks Ray for, and how many replicas a step gets at most."""

    workers: int
    cpus: float
    gpus: float


def _safe_error(e: BaseException, role: str) -> tuple[str, str]:
    """(class name, message) that may leave a replica: spti's own errors keep their message (written never
    to quote private data); anything else is named by its type only."""
    if isinstance(e, SptiError):
        return type(e).__name__, str(e)
    return "BackendError", (f"{role.replace('_', ' ')} replica failed: {type(e).__name__} (message withheld: "
                            "it may quote a private input)")


def _raise_safe(err: tuple[str, str]) -> None:
    import spti.errors as errors

    name, msg = err
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SptiError)) or cls is errors.DiskFullError:
        cls = BackendError
    raise cls(msg)


class _Replica:
    """A Ray Data callable class: one model replica of one step. Built once per actor (Ray Data calls
    ``__init__`` in the actor, and again in a restarted one)."""

    def __init__(self, step: Step, last: bool, stage: str | None):
        from spti.models._guard import backend_stage

        self.last = last
        self.stage = stage or _DEFAULT_STAGE
        self.role = step.role
        self.worker = None
        self.error: tuple[str, str] | None = None
        try:
            with backend_stage(self.stage):
                from spti.executor.tasks import Worker

                self.worker = Worker(step)
        except Exception as e:  # noqa: BLE001 - returned to the driver as a safe error on the first task
            self.error = _safe_error(e, self.role)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np

        from spti.executor.tasks import advance
        from spti.models._guard import backend_stage

        out = []
        for payload in batch["task"]:
            status, value = pickle.loads(payload)
            if status == "ok":
                if self.error is not None:
                    status, value = "err", self.error
                else:
                    try:
                        with backend_stage(self.stage):
                            value = advance(self.worker, value, last=self.last)
                    except Exception as e:  # noqa: BLE001 - see _safe_error
                        status, value = "err", _safe_error(e, self.role)
            out.append(pickle.dumps((status, value), protocol=pickle.HIGHEST_PROTOCOL))
        arr = np.empty(len(out), dtype=object)
        arr[:] = out
        return {"i": np.asarray(batch["i"]), "task": arr}


def _describe_remote(step: Step, stage: str | None) -> tuple[str, Any]:
    """A Ray task: build the step's backend once and describe it (see Executor.describe)."""
    from spti.executor.tasks import Worker, describe_backend
    from spti.models._guard import backend_stage

    try:
        with backend_stage(stage or _DEFAULT_STAGE):
            w = Worker(step)
            try:
                return "ok", describe_backend(w.backend, step.role)
            finally:
                w.close()
    except Exception as e:  # noqa: BLE001 - see _safe_error
        return "err", _safe_error(e, step.role)


class RayExecutor(Executor):
    """Runs steps on a Ray cluster through Ray Data.

    ``address``: None starts (or reuses) a Ray instance in this process's machine; ``"auto"`` joins the
    cluster started with ``ray start``; ``"ray://host:10001"`` a remote one. ``workers``: replicas per step
    (None: one per GPU when ``gpus_per_replica`` > 0, else one per ``cpus_per_replica`` CPUs of the cluster).
    ``roles``: per-role overrides ``{"renderer": {"gpus_per_replica": 1, "workers": 8}}``. ``max_restarts``
    / ``max_task_retries``: how often a dead replica is restarted and its task re-run before the stage fails
    (None: Ray Data's default for actor pools, without limit; Ray deprecates passing them, so only a value
    the user set is passed).
    ``init_kwargs``: extra arguments for ``ray.init`` (e.g. ``runtime_env``) when this executor starts Ray.
    """

    kind = "ray"

    def __init__(self, *, address: str | None = None, workers: int | None = None, cpus_per_replica: float = 1.0,
                 gpus_per_replica: float = 0.0, roles: Mapping[str, Mapping[str, Any]] | None = None,
                 max_restarts: int | None = None, max_task_retries: int | None = None, init_kwargs: Mapping[str, Any] | None = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
            raise ConfigError(f"executor.workers must be a positive integer or null, got {workers!r}")
        if not cpus_per_replica > 0 or not gpus_per_replica >= 0:
            raise ConfigError("executor: cpus_per_replica must be > 0 and gpus_per_replica >= 0")
        self.address = address
        self.workers = workers
        self.cpus_per_replica = float(cpus_per_replica)
        self.gpus_per_replica = float(gpus_per_replica)
        self.roles = {k: dict(v) for k, v in (roles or {}).items()}
        self.max_restarts = None if max_restarts is None else int(max_restarts)
        self.max_task_retries = None if max_task_retries is None else int(max_task_retries)
        self.init_kwargs = dict(init_kwargs or {})
        self._started_ray = False
        self._described: dict[str, BackendInfo] = {}

    # ------------------------------------------------------------------------------------------ Ray
    def _ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise ConfigError("executor 'ray' needs Ray Data: pip install 'spti[ray]' (or 'ray[data]')") from None
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                  "log_to_driver": True, **self.init_kwargs}
            ray.init(address=self.address, **kw)
            self._started_ray = True
        return ray

    def resources(self, step: Step) -> Resources:
        """The replicas and per-replica resources of ``step`` (role overrides over the executor's defaults)."""
        o = self.roles.get(step.role, {})
        cpus = float(o.get("cpus_per_replica", self.cpus_per_replica))
        gpus = float(o.get("gpus_per_replica", self.gpus_per_replica))
        workers = o.get("workers", self.workers)
        if workers is None:
            total = self._ray().cluster_resources()
            workers = int(total.get("GPU", 0) // gpus) if gpus > 0 else int(total.get("CPU", 1) // cpus)
        return Resources(max(1, int(workers)), cpus, gpus)

    def describe(self, step: Step) -> BackendInfo:
        import json

        from spti.models._guard import current_stage

        key = step.role + json.dumps(step.config, sort_keys=True, default=str)
        if key not in self._described:
            ray = self._ray()
            res = self.resources(step)
            fn = ray.remote(num_cpus=res.cpus, num_gpus=res.gpus or 0, max_retries=1)(_describe_remote)
            status, value = ray.get(fn.remote(step.portable(), current_stage()))
            if status == "err":
                _raise_safe(value)
            self._described[key] = value
        return self._described[key]

    def backend(self, role: str, config: Any) -> Any:
        from spti.executor.proxy import RemoteBackend

        return RemoteBackend(self, role, config, self.describe(Step(role, config)))

    def _execute(self, steps: Sequence[Step], tasks: list[list[Entry]], desc: str) -> Iterator[tuple[int, list[Entry]]]:
        from spti.log import Progress
        from spti.models._guard import current_stage

        self._ray()
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # spti's own progress below; Ray's bars would flood a log file
        portable = [s.portable() for s in steps]
        rows = [{"i": ti, "task": pickle.dumps(("ok", t), protocol=pickle.HIGHEST_PROTOCOL)} for ti, t in enumerate(tasks)]
        if not rows:
            return
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        stage = current_stage()
        retries = {k: v for k, v in (("max_restarts", self.max_restarts), ("max_task_retries", self.max_task_retries))
                   if v is not None}
        for k, step in enumerate(portable):
            res = self.resources(step)
            if k == 0:  # no more replicas than tasks: an idle replica would still load its model
                res = dataclasses.replace(res, workers=max(1, min(res.workers, len(tasks))))
            # one step: a fixed pool; a chain: each step's pool grows to its size as work reaches it, so steps
            # that together ask for more than the cluster has still start (a fixed pool per step would wait)
            compute = (ray.data.ActorPoolStrategy(size=res.workers) if len(portable) == 1
                       else ray.data.ActorPoolStrategy(min_size=1, max_size=res.workers))
            with warnings.catch_warnings():  # Ray >= 2.60 warns that these go through **ray_remote_args
                warnings.simplefilter("ignore", DeprecationWarning)
                ds = self._map(ds, step, k == len(portable) - 1, stage, res, compute, retries)
        if logger.getEffectiveLevel() > logging.DEBUG:  # one INFO block per dataset (per PE iteration): too chatty
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        with Progress(desc, sum(len(t) for t in tasks), "item") as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for ti, payload in zip(batch["i"], batch["task"]):
                    status, value = pickle.loads(payload)
                    if status == "err":
                        _raise_safe(value)
                    bar.update(len(tasks[int(ti)]))
                    yield int(ti), value
        logger.debug("ray executor: %s done (%d tasks)", desc, len(tasks))

    @staticmethod
    def _map(ds: Any, step: Step, last: bool, stage: str | None, res: Resources, compute: Any,
             retries: Mapping[str, int]) -> Any:
        import inspect

        extra: dict[str, Any] = dict(retries)
        if "udf_modifying_row_count" in inspect.signature(ds.map_batches).parameters:  # Ray >= 2.5x
            extra["udf_modifying_row_count"] = False  # one row (task) in, one row out
        return ds.map_batches(
            _Replica,
            fn_constructor_kwargs={"step": step, "last": last, "stage": stage},
            batch_size=1,
            batch_format="numpy",
            compute=compute,
            num_cpus=res.cpus,
            num_gpus=res.gpus if res.gpus > 0 else None,
            **extra,
        )

    def close(self) -> None:
        """Shut Ray down if this executor started it (a cluster it joined is left running)."""
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False
