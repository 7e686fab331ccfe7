"""The class-size stage of labelled runs (issue 12): the budget of a labelled config, the noisy class counts
saved once and reused on resume (never redrawn), public priors, and the ledger's composition and checks."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from spti.config import Config
from spti.data.run import RunDir
from spti.errors import BudgetError, ConfigError, RunFolderError
from spti.pe.histogram import contribution_weights, vote_weights
from spti.privacy import Ledger, NoiseSource, PrivacyBudget
from spti.privacy.class_counts import CLASS_COUNTS_FILE, LABEL_SET_ASSUMPTION, allocate_sizes
from spti.stages.budget import (
    BudgetMismatchError,
    class_sizes_stage,
    make_budget,
    saved_class_counts,
    write_ledger,
)

NAMES = ["bird", "cat", "dog"]
#: 30 private rows of 10 users; class weights bird 1.5, cat 2.5, dog 6 (user 0 has rows in two classes)
OWNERS = np.repeat(np.arange(10), [4, 2] + [3] * 8)
INDEX = np.array([0, 1, 0, 1] + [0, 0] + [1] * 6 + [2] * 18)


def _cfg(**privacy) -> Config:
    pr = {"privacy.insecure_noise_seed": None, "pe.iterations": 3, "data.labels_from_subfolders": True}
    pr.update({f"privacy.{k}": v for k, v in privacy.items()})
    return Config().merged(pr)


def _labels() -> SimpleNamespace:
    return SimpleNamespace(names=list(NAMES), index=INDEX.copy(), descriptions=list(NAMES))


class CountingNoise(NoiseSource):
    """A secure NoiseSource that counts its draws and fails on a second one (a redraw would be a bug)."""

    def __init__(self, allowed: int = 1) -> None:
        super().__init__()
        self.calls, self.allowed = 0, allowed

    def gaussian(self, shape, sigma, iteration):
        self.calls += 1
        assert self.calls <= self.allowed, "the class counts were drawn twice"
        assert iteration == 0
        return super().gaussian(shape, sigma, iteration)

    def discrete_gaussian(self, shape, sigma, iteration, *, scale=1):
        self.calls += 1
        assert self.calls <= self.allowed, "the class counts were drawn twice"
        assert iteration == 0
        return super().discrete_gaussian(shape, sigma, iteration, scale=scale)


def _weights(budget: PrivacyBudget, user: bool = True) -> np.ndarray:
    return vote_weights(OWNERS if user else None, len(OWNERS), noise=budget.noise, grid=budget.grid)


# ------------------------------------------------------------------------------------------- make_budget
def test_make_budget_plans_the_class_counts_of_a_labelled_dp_run():
    plain = make_budget(Config().merged({"pe.iterations": 3}), 1000)
    assert plain.class_count_sigma is None
    b = make_budget(_cfg(class_count_share=0.1), 1000)
    assert b.class_count_sigma is not None and b.epsilon == pytest.approx(1.0)
    assert b.sigma > plain.sigma
    assert make_budget(_cfg(class_sizes="uniform"), 1000).class_count_sigma is None
    assert make_budget(_cfg(class_sizes="prior", class_prior={"cat": 1}), 1000).class_count_sigma is None
    assert make_budget(_cfg(not_private=True, epsilon=None), 1000).class_count_sigma == 0.0
    s = make_budget(_cfg(sigma=5.0, epsilon=None), 1000)
    assert s.sigma == 5.0 and s.class_count_sigma is not None
    d = make_budget(_cfg(noise="discrete"), 1000)
    assert d.noise == "discrete" and d.grid == 1 and d.class_count_sigma is not None


# ------------------------------------------------------------------------------------------- the stage
@pytest.mark.parametrize("noise_kind", ["gaussian", "discrete"])
def test_counts_are_saved_once_and_reused_on_resume(tmp_path, noise_kind):
    cfg = _cfg(noise=noise_kind, unit="user", epsilon=50.0)
    run = RunDir(tmp_path / "run")
    budget = make_budget(cfg, 10)
    noise = CountingNoise()
    released = []
    sizes = class_sizes_stage(run, cfg, budget, _labels(), _weights(budget), 60, noise,
                              on_release=lambda: released.append(True))
    assert noise.calls == 1 and released == [True]
    assert sizes.dtype == np.int64 and sizes.sum() == 60 and sizes.min() >= 1
    path = tmp_path / "run" / CLASS_COUNTS_FILE
    with np.load(path, allow_pickle=False) as z:
        assert int(z["num_classes"]) == 3 and float(z["sigma"]) == budget.class_count_sigma
        noisy = z["noisy_counts"]
    assert np.array_equal(sizes, allocate_sizes(noisy, 60))
    exact = np.bincount(INDEX, weights=contribution_weights(OWNERS, len(OWNERS)), minlength=3)
    assert not np.array_equal(noisy, exact)  # noise was added (a continuous/discrete draw is never exactly 0)
    saved = saved_class_counts(run.checkpoints)
    assert saved.sigma == budget.class_count_sigma and saved.noise == noise_kind and saved.iteration == 0

    # resume: a noise source that would fail on any draw; the saved counts are reused
    again = class_sizes_stage(run, cfg, make_budget(cfg, 10), _labels(), _weights(budget), 60, CountingNoise(0))
    assert np.array_equal(again, sizes)


def test_counts_at_high_epsilon_follow_the_private_sizes(tmp_path):
    cfg = _cfg(unit="user", epsilon=2000.0, delta=1e-3)
    budget = make_budget(cfg, 10)
    assert budget.class_count_sigma < 0.1
    sizes = class_sizes_stage(RunDir(tmp_path / "run"), cfg, budget, _labels(), _weights(budget), 120,
                              NoiseSource(insecure_seed=11))  # fixed noise: the bound below cannot flake
    exact = np.bincount(INDEX, weights=contribution_weights(OWNERS, len(OWNERS)), minlength=3)
    # 120 seats for 10 users' weight: 12 seats per unit of weight, so noise within 3σ_c (< 0.3) moves a class
    # by at most ~4 seats
    assert sizes.sum() == 120 and np.abs(sizes - allocate_sizes(exact, 120)).max() <= 4


def test_resume_with_another_share_or_mode_is_refused(tmp_path):
    cfg = _cfg(unit="user")
    run = RunDir(tmp_path / "run")
    budget = make_budget(cfg, 10)
    class_sizes_stage(run, cfg, budget, _labels(), _weights(budget), 30, CountingNoise())
    other = _cfg(unit="user", class_count_share=0.2)
    with pytest.raises(BudgetMismatchError, match="class counts"):
        class_sizes_stage(run, other, make_budget(other, 10), _labels(), _weights(budget), 30, CountingNoise(0))
    with pytest.raises(BudgetMismatchError, match="class counts"):
        write_ledger(run, other, make_budget(other, 10))
    assert json.loads(run.privacy_path.read_text())["mechanisms"][0]["sigma"] == budget.class_count_sigma
    uniform = _cfg(unit="user", class_sizes="uniform")
    with pytest.raises(BudgetMismatchError, match="class_sizes is now 'uniform'"):
        class_sizes_stage(run, uniform, make_budget(uniform, 10), _labels(), _weights(budget), 30, CountingNoise(0))
    with pytest.raises(BudgetMismatchError, match="plans none"):
        write_ledger(run, uniform, make_budget(uniform, 10))
    more = SimpleNamespace(names=[*NAMES, "eel"], index=INDEX.copy(), descriptions=[*NAMES, "eel"])
    with pytest.raises(RunFolderError, match="for 3 classes"):
        class_sizes_stage(run, cfg, budget, more, _weights(budget), 30, CountingNoise(0))


def test_not_private_run_uses_exact_counts_but_never_stores_them(tmp_path):
    cfg = _cfg(not_private=True, epsilon=None)
    run = RunDir(tmp_path / "run")
    budget = make_budget(cfg, 30)
    w = _weights(budget, user=False)
    sizes = class_sizes_stage(run, cfg, budget, _labels(), w, 30, CountingNoise(1))
    exact = np.bincount(INDEX, minlength=3).astype(float)
    assert np.array_equal(sizes, allocate_sizes(exact, 30))
    with np.load(tmp_path / "run" / CLASS_COUNTS_FILE, allow_pickle=False) as z:
        assert "noisy_counts" not in z.files and float(z["sigma"]) == 0.0
    assert np.array_equal(class_sizes_stage(run, cfg, budget, _labels(), w, 30, CountingNoise(0)), sizes)
    d = write_ledger(run, cfg, budget)
    assert d["private"] is False and d["class_counts_released"] is True
    assert any(m["name"] == "dp_class_counts" and m["sigma"] == 0.0 for m in d["mechanisms"])
    # resumed as a private run: refused (the populations were sized from exact counts)
    private = _cfg()
    with pytest.raises(BudgetMismatchError, match="without noise"):
        write_ledger(run, private, make_budget(private, 30))
    with pytest.raises(BudgetMismatchError):
        class_sizes_stage(run, private, make_budget(private, 30), _labels(), w, 30, CountingNoise(0))


def test_public_priors_draw_nothing(tmp_path):
    run = RunDir(tmp_path / "run")
    cfg = _cfg(class_sizes="uniform")
    b = make_budget(cfg, 30)
    assert class_sizes_stage(run, cfg, b, _labels(), _weights(b), 10, CountingNoise(0)).tolist() == [4, 3, 3]
    cfg = _cfg(class_sizes="prior", class_prior={"dog": 3, "bird": 1})
    assert class_sizes_stage(run, cfg, b, _labels(), _weights(b), 10, CountingNoise(0)).tolist() == [3, 1, 6]
    assert not (tmp_path / "run" / CLASS_COUNTS_FILE).exists()
    bad = _cfg(class_sizes="prior", class_prior={"dog": 3, "wolf": 1})
    with pytest.raises(ConfigError, match="'wolf'"):
        class_sizes_stage(run, bad, b, _labels(), _weights(b), 10, CountingNoise(0))
    d = write_ledger(run, cfg, b)
    assert LABEL_SET_ASSUMPTION in d["trust_assumptions"]
    assert any(p["name"] == "class_sizes" and "public prior" in p["description"] for p in d["processing"])
    assert "class_counts_released" not in d and all(m["name"] != "dp_class_counts" for m in d["mechanisms"])


def test_a_budget_without_class_counts_is_refused(tmp_path):
    cfg = _cfg()
    plain = PrivacyBudget.from_epsilon(1.0, 3, 30)
    with pytest.raises(BudgetError, match="plans no class counts"):
        class_sizes_stage(RunDir(tmp_path / "run"), cfg, plain, _labels(), np.ones(30), 10, CountingNoise(0))


@pytest.mark.parametrize("noise_kind", ["gaussian", "discrete"])
def test_ledger_composes_the_saved_counts_with_the_histograms(tmp_path, noise_kind):
    cfg = _cfg(noise=noise_kind, unit="user", delta=1e-3)
    run = RunDir(tmp_path / "run")
    budget = make_budget(cfg, 10)
    d = write_ledger(run, cfg, budget)
    assert d["class_counts_released"] is False and d["spent"]["epsilon"] == 0.0
    assert LABEL_SET_ASSUMPTION in d["trust_assumptions"]
    class_sizes_stage(run, cfg, budget, _labels(), _weights(budget), 30, CountingNoise(),
                      on_release=lambda: write_ledger(run, cfg, budget))
    d = json.loads(run.privacy_path.read_text())
    assert d["class_counts_released"] is True and 0 < d["spent"]["epsilon"] < budget.epsilon
    counts = [m for m in d["mechanisms"] if m["name"] == "dp_class_counts"]
    assert len(counts) == 1 and counts[0]["count"] == 1 and counts[0]["sigma"] == budget.class_count_sigma
    # the T histograms, saved as the engine saves them
    how = {} if noise_kind == "gaussian" else {"noise": np.str_("discrete"), "grid": np.int64(budget.grid)}
    for t in range(1, 4):
        (run.checkpoints / f"iter_{t:03d}").mkdir(parents=True)
        np.savez(run.checkpoints / f"iter_{t:03d}" / "noisy_histogram.npz", noisy_counts=np.zeros(4),
                 sigma=np.float64(budget.sigma), iteration=np.int64(t), **how)
    d = write_ledger(run, cfg, budget)
    assert d["within_budget"] is True and d["private"] is True
    assert d["spent"]["epsilon"] == pytest.approx(budget.epsilon, rel=1e-6)
    assert d["spent"]["epsilon"] <= budget.epsilon * (1 + 1e-9)
    assert d["planned"]["class_count_sigma"] == budget.class_count_sigma
    assert any(p["name"] == "class_sizes" and "post-processing" in p["description"] for p in d["processing"])
    back = Ledger.read(run.privacy_path)  # privacy.json reads back, the counts' mechanism included
    assert back.budget == budget and back.total().epsilon == pytest.approx(d["spent"]["epsilon"], rel=1e-12)
