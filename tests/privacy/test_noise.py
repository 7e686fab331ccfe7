"""Tests of the DP noise source: secure by default, reproducible per iteration only when asked, never tied
to numpy's global state, and of the right distribution."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy import stats

from spti.errors import BudgetError, ConfigError
from spti.privacy import NoiseSource


def test_secure_draws_differ_between_instances_and_calls() -> None:
    a, b = NoiseSource(), NoiseSource()
    assert a.secure and a.insecure_seed is None
    x1 = a.gaussian(64, 1.0, iteration=1)
    x2 = a.gaussian(64, 1.0, iteration=1)  # same iteration, new entropy
    y1 = b.gaussian(64, 1.0, iteration=1)
    assert not np.array_equal(x1, x2)
    assert not np.array_equal(x1, y1)
    assert a.describe() == {"secure": True, "source": "os-entropy"}


def test_secure_noise_ignores_numpy_global_seed() -> None:
    np.random.seed(0)
    x = NoiseSource().gaussian(32, 1.0, 1)
    np.random.seed(0)
    y = NoiseSource().gaussian(32, 1.0, 1)
    assert not np.array_equal(x, y)


def test_insecure_is_reproducible_per_iteration_and_order_independent() -> None:
    a = NoiseSource(insecure_seed=123)
    first = [a.gaussian((4, 5), 2.0, t) for t in range(1, 4)]
    # A "resumed" source drawing only iteration 3 (after other draws) reproduces it exactly.
    b = NoiseSource(insecure_seed=123)
    b.gaussian(7, 1.0, 99)
    np.testing.assert_array_equal(b.gaussian((4, 5), 2.0, 3), first[2])
    np.testing.assert_array_equal(b.gaussian((4, 5), 2.0, 1), first[0])
    np.testing.assert_array_equal(a.gaussian((4, 5), 2.0, 1), first[0])  # repeated call, same draw
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], NoiseSource(insecure_seed=124).gaussian((4, 5), 2.0, 1))
    # Documented derivation: SeedSequence(seed, spawn_key=(t,)).
    expected = np.random.Generator(np.random.PCG64(np.random.SeedSequence(123, spawn_key=(2,))))
    np.testing.assert_array_equal(first[1], expected.standard_normal((4, 5)) * 2.0)


def test_insecure_is_independent_of_global_state_and_does_not_consume_it() -> None:
    np.random.seed(1)
    x = NoiseSource(insecure_seed=5).gaussian(16, 1.0, 2)
    np.random.seed(2)
    np.random.random(10)
    state = np.random.get_state()
    y = NoiseSource(insecure_seed=5).gaussian(16, 1.0, 2)
    np.testing.assert_array_equal(x, y)
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2] == after[2]
    NoiseSource().gaussian(16, 1.0, 2)
    after2 = np.random.get_state()
    assert np.array_equal(state[1], after2[1]) and state[2] == after2[2]


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_insecure_warns_and_describes() -> None:
    # A handler on the spti logger itself: works whether or not the logger propagates to the root.
    spti_logger = logging.getLogger("spti")
    handler = _ListHandler()
    spti_logger.addHandler(handler)
    try:
        src = NoiseSource(insecure_seed=123)
    finally:
        spti_logger.removeHandler(handler)
    assert any(
        r.levelno == logging.WARNING and "NOT differentially private" in r.getMessage()
        for r in handler.records
    )
    d = src.describe()
    assert d["secure"] is False and d["insecure_seed"] == 123 and "NOT differentially private" in d["warning"]
    assert not src.secure and "123" in repr(src)


@pytest.mark.parametrize("sigma", [0.5, 13.5])
def test_distribution_is_gaussian_with_std_sigma(sigma: float) -> None:
    x = NoiseSource(insecure_seed=7).gaussian(200_000, sigma, 1)
    assert x.dtype == np.float64 and x.shape == (200_000,)
    assert np.std(x) == pytest.approx(sigma, rel=0.01)
    assert abs(np.mean(x)) < 5 * sigma / np.sqrt(x.size)
    assert stats.kstest(x / sigma, "norm").pvalue > 1e-4
    y = NoiseSource().gaussian(200_000, sigma, 1)
    assert np.std(y) == pytest.approx(sigma, rel=0.02)


def test_zero_sigma_gives_zeros_and_shapes() -> None:
    z = NoiseSource().gaussian((3, 2), 0.0, 1)
    assert z.shape == (3, 2) and z.dtype == np.float64 and not z.any()
    assert NoiseSource(insecure_seed=1).gaussian(0, 1.0, 1).shape == (0,)
    assert NoiseSource(insecure_seed=1).gaussian(np.int64(3), 1.0, np.int64(0)).shape == (3,)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"shape": 3, "sigma": -1.0, "iteration": 1}, BudgetError),
        ({"shape": 3, "sigma": float("nan"), "iteration": 1}, BudgetError),
        ({"shape": 3, "sigma": float("inf"), "iteration": 1}, BudgetError),
        ({"shape": 3, "sigma": "1", "iteration": 1}, BudgetError),
        ({"shape": 3, "sigma": 1.0, "iteration": -1}, ConfigError),
        ({"shape": 3, "sigma": 1.0, "iteration": 1.0}, ConfigError),
        ({"shape": -3, "sigma": 1.0, "iteration": 1}, ConfigError),
        ({"shape": (2.5,), "sigma": 1.0, "iteration": 1}, ConfigError),
        ({"shape": "3", "sigma": 1.0, "iteration": 1}, ConfigError),
    ],
)
def test_invalid_arguments(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        NoiseSource(insecure_seed=1).gaussian(**kwargs)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "1"])
def test_invalid_seed(seed: object) -> None:
    with pytest.raises(ConfigError, match="insecure_seed"):
        NoiseSource(insecure_seed=seed)  # type: ignore[arg-type]
