import numpy as np
import pytest

from spti.errors import ConfigError
from spti.pe.selection import select, threshold_counts


def test_threshold_zeroes_small_and_negative_counts():
    c = threshold_counts(np.array([-2.0, 0.5, 1.0, 3.0]), 1.0)
    assert c.tolist() == [0.0, 0.0, 1.0, 3.0]
    assert threshold_counts(np.array([-1.0, 0.2]), 0.0).tolist() == [0.0, 0.2]


def test_rank_selection_is_top_n_with_index_tiebreak():
    c = np.array([1.0, 5.0, 5.0, 0.0, 3.0])
    assert select(c, 3, "rank").tolist() == [1, 2, 4]
    assert select(c, 7, "rank").tolist() == [1, 2, 4, 0, 3, 1, 2]  # cycles when N > candidates


def test_sample_selection_is_proportional():
    rng = np.random.default_rng(0)
    c = np.array([0.0, 1.0, 3.0])
    idx = select(c, 20000, "sample", rng=rng)
    freq = np.bincount(idx, minlength=3) / 20000
    assert freq[0] == 0
    assert freq[2] / freq[1] == pytest.approx(3, rel=0.1)
    # all zero -> uniform
    idx = select(np.zeros(4), 4000, "sample", rng=rng)
    assert set(idx.tolist()) == {0, 1, 2, 3}


def test_select_errors():
    with pytest.raises(ConfigError):
        select(np.ones(3), 2, "best")
    with pytest.raises(ConfigError):
        select(np.ones(3), 2, "sample")  # no rng
    with pytest.raises(ConfigError):
        select(np.ones(0), 2)
