"""Fréchet distance: closed forms, identities, and agreement with clean-fid's own function."""

from __future__ import annotations

import numpy as np
import pytest

from spti.errors import InputError
from spti.metrics.frechet import feature_stats, fid_from_features, frechet_distance


def _diag_closed_form(mu1, v1, mu2, v2) -> float:
    return float(np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2.0 * np.sqrt(v1 * v2)))


def test_diagonal_gaussians_closed_form():
    rng = np.random.default_rng(0)
    d = 7
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(_diag_closed_form(mu1, v1, mu2, v2), rel=1e-9, abs=1e-9)


def test_full_covariance_one_dimensional_and_commuting_case():
    # 1-d: (m1-m2)^2 + (s1 - s2)^2 with s the standard deviations.
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == (
        pytest.approx(4.0 + 1.0)
    )
    # Same rotation for both covariances (they commute): distance of eigenvalues.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a, b = rng.uniform(0.5, 2.0, 5), rng.uniform(0.5, 2.0, 5)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu = rng.normal(size=5)
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(float(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)))


def test_identity_and_symmetry():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 16))
    b = rng.normal(loc=0.3, scale=1.4, size=(200, 16))
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-8)
    ab, ba = fid_from_features(a, b), fid_from_features(b, a)
    assert ab > 1.0
    assert ab == pytest.approx(ba, rel=1e-8)


def test_feature_stats_float64_and_unbiased():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    mu, s = feature_stats(x)
    assert mu.dtype == np.float64 and s.dtype == np.float64
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(s, np.cov(x.astype(np.float64), rowvar=False))


def test_singular_covariances_use_eps_offset():
    # Fewer samples than dimensions: singular covariances, the result must still be finite and >= 0.
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 20)), rng.normal(size=(5, 20))
    v = fid_from_features(a, b)
    assert np.isfinite(v) and v >= 0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(InputError, match="at least 2"):
        feature_stats(np.zeros((1, 3)))
    with pytest.raises(InputError, match="same d"):
        fid_from_features(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(InputError, match="NaN"):
        feature_stats(np.array([[0.0, np.nan], [1.0, 2.0]]))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_matches_clean_fid():
    cleanfid_fid = pytest.importorskip("cleanfid.fid", reason="clean-fid is not installed")
    rng = np.random.default_rng(4)
    a = rng.normal(size=(400, 32))
    b = rng.normal(size=(350, 32)) @ rng.normal(scale=0.5, size=(32, 32)) + 0.2
    mu1, s1 = feature_stats(a)
    mu2, s2 = feature_stats(b)
    try:
        ref = float(cleanfid_fid.frechet_distance(mu1, s1, mu2, s2))
    except TypeError:  # clean-fid passes disp=False, which a future scipy may drop
        pytest.skip("clean-fid's frechet_distance is incompatible with this scipy")
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9, abs=1e-9)
