"""A local Ray cluster for tests (2 CPUs, as the development machines have): :func:`start_local_ray` is what
the ``ray_cluster`` fixtures of tests/executor and tests/e2e call, once per test session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]


def start_local_ray() -> Any:
    """``ray`` with a 2-CPU local instance started (skips the test when Ray Data is not installed). The
    replicas import plug-in backends as "support.fakes:Class", like the driver: tests/ is on their path."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    if not ray.is_initialized():
        path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path, "SPTI_NO_PROGRESS": "1"}})
    return ray
