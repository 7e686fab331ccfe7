"""PRDC against a direct loop-based transcription of Naeem et al. 2020; chunking must not matter."""

from __future__ import annotations

import numpy as np
import pytest

from spti.errors import InputError
from spti.metrics.prdc import kth_nn_distances, nearest_neighbour, prdc


def _reference_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Deliberately naive: Python loops, np.linalg.norm, sorted lists (independent of the chunked code)."""

    def dist(x, y):
        return float(np.linalg.norm(x - y))

    def kth_radius(data, i):
        ds = sorted(dist(data[i], data[j]) for j in range(len(data)) if j != i)
        return ds[k - 1]

    rr = [kth_radius(real, i) for i in range(len(real))]
    fr = [kth_radius(fake, j) for j in range(len(fake))]
    precision = np.mean([any(dist(r, f) < rr[i] for i, r in enumerate(real)) for f in fake])
    recall = np.mean([any(dist(r, f) < fr[j] for j, f in enumerate(fake)) for r in real])
    density = sum(dist(r, f) < rr[i] for f in fake for i, r in enumerate(real)) / (k * len(fake))
    coverage = np.mean([min(dist(r, f) for f in fake) < rr[i] for i, r in enumerate(real)])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


@pytest.mark.parametrize("seed", [0, 1])
def test_prdc_matches_reference(seed):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(40, 6))
    fake = rng.normal(loc=0.4, scale=1.3, size=(33, 6))
    got = prdc(real, fake, nearest_k=5)
    ref = _reference_prdc(real, fake, 5)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    assert got["n_real"] == 40 and got["n_synthetic"] == 33 and got["nearest_k"] == 5
    # The metrics really do react to the data (a test that cannot fail is no test).
    assert 0 < got["precision"] < 1 and 0 < got["coverage"] < 1


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(57, 4)), rng.normal(size=(61, 4)) * 1.1
    full = prdc(real, fake, chunk_size=10_000)
    for cs in (1, 7, 16):
        assert prdc(real, fake, chunk_size=cs) == pytest.approx(full), cs


def test_identical_sets_are_perfect():
    x = np.random.default_rng(6).normal(size=(30, 3))
    r = prdc(x, x.copy())
    assert r["precision"] == 1.0 and r["recall"] == 1.0 and r["coverage"] == 1.0


def test_knn_helpers():
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    d1, i1 = kth_nn_distances(x, 1, chunk_size=3)
    np.testing.assert_allclose(d1, [1, 1, 2, 4])
    np.testing.assert_array_equal(i1, [1, 0, 1, 2])
    d2, _ = kth_nn_distances(x, 2, chunk_size=1)
    np.testing.assert_allclose(d2, [3, 2, 3, 6])
    d, i = nearest_neighbour(np.array([[2.9], [-5.0]]), x, chunk_size=1)
    np.testing.assert_allclose(d, [0.1, 5.0])
    np.testing.assert_array_equal(i, [2, 0])


def test_too_few_samples():
    with pytest.raises(InputError, match="more than 5"):
        prdc(np.zeros((5, 2)), np.ones((10, 2)))
    with pytest.raises(InputError, match="dimension"):
        prdc(np.zeros((10, 2)), np.ones((10, 3)))
