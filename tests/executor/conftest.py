"""A local Ray cluster for the executor tests (2 CPUs, as the development machines have), started once per
test session when a test asks for it; skipped when Ray is not installed."""

from __future__ import annotations

import pytest
from support.ray_local import start_local_ray


@pytest.fixture(scope="session")
def ray_cluster():
    ray = start_local_ray()
    yield ray
    ray.shutdown()
