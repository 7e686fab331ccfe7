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


def test_systematic_selection_gives_each_candidate_floor_or_ceil_of_its_share():
    from spti.pe.selection import select

    c = np.array([0.0, 1.0, 3.0, 6.0, 0.0, 2.5])
    p = c / c.sum()
    for seed in range(50):
        idx = select(c, 17, "systematic", rng=np.random.default_rng(seed))
        seats = np.bincount(idx, minlength=len(c))
        assert seats.sum() == 17
        assert np.all(seats >= np.floor(p * 17)) and np.all(seats <= np.ceil(p * 17))
        assert seats[0] == 0 and seats[4] == 0  # zero counts: never selected
        assert np.all(np.diff(idx) >= 0)  # seats come in candidate order


def test_systematic_selection_is_unbiased_and_uniform_on_zero_counts():
    from spti.pe.selection import select

    rng = np.random.default_rng(1)
    c = np.array([1.0, 1.0, 1.0])  # 2 seats among 3 equal candidates: each in 2/3 of the draws
    hits = np.zeros(3)
    for _ in range(3000):
        hits += np.bincount(select(c, 2, "systematic", rng=rng), minlength=3)
    assert hits / 3000 == pytest.approx([2 / 3] * 3, abs=0.05)
    assert sorted(select(np.zeros(4), 4, "systematic", rng=rng).tolist()) == [0, 1, 2, 3]
    with pytest.raises(ConfigError):
        select(np.ones(3), 2, "systematic")  # no rng


def test_effective_threshold_in_units_of_sigma():
    from spti.config import PEConfig
    from spti.pe.selection import effective_threshold

    assert effective_threshold(PEConfig(), 5.0) == 0.0
    assert effective_threshold(PEConfig(threshold_sigmas=1.5), 4.0) == pytest.approx(6.0)
    assert effective_threshold(PEConfig(threshold=10.0, threshold_sigmas=1.0), 4.0) == 10.0  # the larger one
    assert effective_threshold(PEConfig(threshold=2.0, threshold_sigmas=3.0), 0.0) == 2.0  # ε = ∞: σ = 0
    c = threshold_counts(np.array([3.0, 5.9, 6.0, 9.0]), effective_threshold(PEConfig(threshold_sigmas=1.5), 4.0))
    assert c.tolist() == [0.0, 0.0, 6.0, 9.0]


def test_config_accepts_the_new_selection_and_threshold_keys():
    from spti.config import Config

    cfg = Config.from_dict({"pe": {"selection": "systematic", "threshold_sigmas": 1.0, "dedup": False}}).validate(need_private=False)
    assert cfg.pe.selection == "systematic" and cfg.pe.threshold_sigmas == 1.0 and cfg.pe.dedup is False
    with pytest.raises(ConfigError):
        Config.from_dict({"pe": {"threshold_sigmas": -1.0}}).validate(need_private=False)
