"""Memorization audit: a planted copy is flagged, independent samples are not."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spti.errors import InputError
from spti.metrics.memorization import memorization_audit


def test_planted_copy_is_flagged():
    rng = np.random.default_rng(0)
    private = rng.normal(size=(200, 32))
    synthetic = rng.normal(size=(50, 32))
    synthetic[17] = private[123]  # exact copy
    synthetic[30] = private[5] + 1e-3 * rng.normal(size=32)  # near copy
    res = memorization_audit(private, synthetic, chunk_size=16)
    assert res.flagged == [17, 30]
    assert res.nn_index[17] == 123 and res.nn_distance[17] == pytest.approx(0.0, abs=1e-6)
    assert res.closest_pairs[0]["synthetic"] == 17 and res.closest_pairs[0]["private"] == 123
    assert res.closest_pairs[0]["flagged"] and not res.closest_pairs[2]["flagged"]
    d = res.to_dict()
    json.dumps(d)  # JSON-ready
    assert d["n_flagged"] == 2 and len(d["nn_distance"]) == 50 and d["threshold"] == 0.5


def test_independent_samples_flag_nothing():
    rng = np.random.default_rng(1)
    private = rng.normal(size=(300, 32))
    synthetic = rng.normal(size=(100, 32))
    res = memorization_audit(private, synthetic)
    assert res.flagged == []
    assert 0.7 < float(np.median(res.ratio)) < 1.5
    # The reference is the median private-to-private NN distance (self excluded: it would be 0).
    assert res.reference_distance == pytest.approx(float(np.median(res.private_nn_distance)))
    assert res.reference_distance > 0


def test_threshold_and_percentile_are_configurable():
    rng = np.random.default_rng(2)
    private = rng.normal(size=(100, 8))
    synthetic = rng.normal(size=(40, 8))
    loose = memorization_audit(private, synthetic, threshold=10.0)
    assert len(loose.flagged) == 40
    low_ref = memorization_audit(private, synthetic, reference_percentile=5.0)
    high_ref = memorization_audit(private, synthetic, reference_percentile=95.0)
    assert low_ref.reference_distance < high_ref.reference_distance


def test_errors():
    with pytest.raises(InputError, match="at least 2 private"):
        memorization_audit(np.zeros((1, 3)), np.zeros((2, 3)))
    with pytest.raises(InputError, match="dimension"):
        memorization_audit(np.zeros((4, 3)), np.zeros((2, 2)))
