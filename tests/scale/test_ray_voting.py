"""Sharded voting on a local Ray cluster (started here with 2 CPUs; tasks take 0.5 CPU each, as
shared/FACTS.md advises on 2 cores): the summed partial vote vectors equal the single-process histogram."""

from __future__ import annotations

import numpy as np
import pytest

from spti.pe.histogram import normalize_rows, vote_histogram

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a Ray cluster starts in 3-6 s; the module takes ~15 s on 2 cores


@pytest.fixture(scope="module")
def cluster():
    """The session's local 2-CPU cluster (tests/support/ray_local.py, shared with tests/executor): started once,
    never shut down here, so other Ray tests keep theirs."""
    try:
        from support.ray_local import start_local_ray
    except ImportError:  # pragma: no cover - the shared helper is absent
        if not ray.is_initialized():
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        return ray
    return start_local_ray()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((3001, 32)).astype(np.float32)
    k = normalize_rows(rng.standard_normal((150, 32))).reshape(75, 2, 32).mean(1)  # lookahead means
    k = np.vstack([k, k[:15]])  # duplicates: ties
    path = tmp_path_factory.mktemp("feat") / "features.npy"
    np.save(path, q)
    owners = rng.integers(0, 400, size=len(q))
    return {"q": q, "mm": np.load(path, mmap_mode="r"), "k": k,
            "w_int": rng.integers(0, 4, size=len(q)).astype(np.float64),
            "w_frac": 1.0 / np.bincount(owners)[owners]}


@pytest.mark.parametrize("transport", ["memmap", "object_store"])
def test_sharded_votes_equal_the_single_process_histogram(cluster, data, transport):
    from spti.scale.ray_voting import ray_vote_histogram

    feats = data["mm"] if transport == "memmap" else data["q"]
    for w, exact in ((None, True), (data["w_int"], True), (data["w_frac"], False)):
        want = vote_histogram(data["q"], data["k"], weights=w, show_progress=False)
        got = ray_vote_histogram(feats, data["k"], weights=w, shards=3, num_cpus=0.5, transport=transport,
                                 chunk_size=256, show_progress=False)
        if exact:
            assert np.array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_the_config_switch_votes_on_the_running_cluster(cluster, data):
    """``pe.nn_backend: ray`` is what the engine passes: vote_histogram shards over the connected cluster
    (default resources: one task per CPU)."""
    want = vote_histogram(data["mm"], data["k"], weights=data["w_int"], show_progress=False)
    got = vote_histogram(data["mm"], data["k"], weights=data["w_int"], backend="ray", show_progress=False)
    assert np.array_equal(got, want)
    got = vote_histogram(data["q"][:700], data["k"], backend="ray:numpy", show_progress=False, normalize=False)
    assert np.array_equal(got, vote_histogram(data["q"][:700], data["k"], normalize=False, show_progress=False))
