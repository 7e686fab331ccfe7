"""Tests of the black-box ε audit (spti.audit): it must see no noise, a planted weight-2 record, halved
noise and a forgotten user-level weight split as violations, and must not accuse the real mechanism.

Every audit here draws its noise from an insecure seeded NoiseSource, so each test is deterministic; the
trial counts were chosen so that the bounds clear the claim by a margin (measured over many seeds)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from spti.audit import (
    AUDIT_FILE,
    HistogramMechanism,
    audit_histogram_mechanism,
    audit_run,
    clopper_pearson,
    epsilon_lower_bound,
    gaussian_noise_fn,
    per_release_epsilon,
    read_audit,
)
from spti.audit.mechanism import _WithCanary
from spti.pe.histogram import contribution_weights, normalize_rows, vote_histogram
from spti.privacy import NoiseSource, sigma_from_epsilon

DELTA = 1e-5
SIGMA = sigma_from_epsilon(1.0, DELTA, 1)  # one histogram (T = 1) at epsilon = 1
CLAIM = per_release_epsilon(SIGMA, DELTA)
TRIALS = 100_000


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    priv = rng.standard_normal((500, 16)).astype(np.float32)
    cand = normalize_rows(rng.standard_normal((200, 16)).astype(np.float32))
    return priv, cand


def _mech(sigma: float = SIGMA, seed: int = 1, **kw) -> HistogramMechanism:
    return HistogramMechanism.gaussian(sigma, noise=NoiseSource(insecure_seed=seed), **kw)


def _audit(data, mech, **kw):
    priv, cand = data
    kw.setdefault("trials", TRIALS)
    return audit_histogram_mechanism(priv, cand, mechanism=mech, delta=DELTA, claimed_epsilon=CLAIM, **kw)


def test_claim_is_the_per_histogram_epsilon() -> None:
    assert CLAIM == pytest.approx(1.0, rel=1e-6)
    assert per_release_epsilon(0.0, DELTA) == math.inf


# ---------------------------------------------------------------------------------------------- (a)
def test_no_noise_gives_a_large_bound(data) -> None:
    mech = _mech(0.0)
    r = audit_histogram_mechanism(*data, mechanism=mech, trials=20_000, delta=0.0, claimed_epsilon=math.inf)
    assert r.fpr == 0 and r.fnr == 0
    # limited only by the trials: ln(n_eval / ln(2/alpha)) ~ ln(15000 / 3.7) ~ 8.3
    assert r.epsilon_lower_bound > 8
    assert not r.violation  # an infinite claim is never violated
    r1 = _audit(data, mech, trials=20_000)
    assert r1.epsilon_lower_bound > 3 * CLAIM and r1.violation


# ---------------------------------------------------------------------------------------------- (b)
def test_real_mechanism_stays_below_the_claim(data) -> None:
    r = _audit(data, _mech())
    assert 0 < r.epsilon_lower_bound < CLAIM
    assert not r.violation
    assert r.sensitivity == {"l1": 1.0, "l2": 1.0, "changed_bins": 1, "bound": 1.0, "ok": True, "canary_weight": 1.0}
    assert r.canary["rows"] == 1 and r.canary["unit"] == "record"
    # the auto canary sits on a bin that D votes for least
    priv, cand = data
    clean = vote_histogram(priv, cand, show_progress=False)
    assert clean[r.canary["target_bin"]] == clean.min()
    assert "VIOLATION" not in r.describe()


def test_real_mechanism_with_secure_noise_stays_below_the_claim(data) -> None:
    r = _audit(data, HistogramMechanism.gaussian(SIGMA), trials=40_000, full_histogram=False)
    assert r.epsilon_lower_bound < CLAIM
    assert "secure" in r.mechanism["noise"] and "INSECURE" not in r.mechanism["noise"]


# ---------------------------------------------------------------------------------------------- (c)
def test_record_voting_with_weight_two_is_caught(data) -> None:
    n_private = data[0].shape[0]

    def buggy_weights(owners, n_rows):  # one record (the canary, appended after the private rows) counts twice
        w = contribution_weights(owners, n_rows).copy()
        w[n_private:] *= 2
        return w

    r = _audit(data, replace(_mech(), weights_fn=buggy_weights))
    assert r.sensitivity["l2"] == pytest.approx(2.0) and not r.sensitivity["ok"]
    assert r.epsilon_lower_bound > CLAIM and r.violation
    assert "VIOLATION" in r.describe() and "SENSITIVITY" in r.describe()


def test_a_vote_function_with_a_bug_is_caught(data) -> None:
    def double_vote(features, candidates, weights):  # every vote counted twice
        return 2 * vote_histogram(features, candidates, weights=weights, show_progress=False)

    r = _audit(data, replace(_mech(), vote_fn=double_vote))
    assert r.violation and not r.sensitivity["ok"]


# ---------------------------------------------------------------------------------------------- (d)
def test_halved_sigma_is_caught(data) -> None:
    real = gaussian_noise_fn(SIGMA, NoiseSource(insecure_seed=2))

    def half_noise(counts, draw):  # the sampler adds only half the noise it should
        return counts + 0.5 * (real(counts, draw) - counts)

    r = _audit(data, replace(_mech(), noise_fn=half_noise))
    assert r.sensitivity["ok"]  # the votes are fine; only the noise is wrong
    assert r.epsilon_lower_bound > CLAIM and r.violation


# ---------------------------------------------------------------------------------------------- (e)
@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (0, 50_000), (48, 50_000), (1, 1)])
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_clopper_pearson_matches_scipy(k: int, n: int, alpha: float) -> None:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method="exact")
    lo, hi = clopper_pearson(k, n, alpha)
    assert lo == pytest.approx(ci.low, abs=1e-12) and hi == pytest.approx(ci.high, abs=1e-12)
    # one-sided at alpha = the two-sided interval's end at 2 alpha
    ci2 = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    assert clopper_pearson(k, n, alpha, "upper") == pytest.approx(ci2.high, abs=1e-12)
    assert clopper_pearson(k, n, alpha, "lower") == pytest.approx(ci2.low, abs=1e-12)


def test_clopper_pearson_is_vectorised_and_checks_input() -> None:
    ks = np.array([0, 5, 10])
    up = clopper_pearson(ks, 10, 0.05, "upper")
    assert up.shape == (3,) and up[-1] == 1.0 and np.all(np.diff(up) > 0)
    with pytest.raises(ValueError):
        clopper_pearson(11, 10, 0.05)
    with pytest.raises(ValueError):
        clopper_pearson(1, 10, 0.05, "middle")


def test_bound_is_small_when_the_datasets_are_indistinguishable() -> None:
    rng = np.random.default_rng(5)
    r = epsilon_lower_bound(rng.standard_normal(20_000), rng.standard_normal(20_000), delta=DELTA)
    assert r["epsilon_lower_bound"] < 0.15
    assert r["selection_trials"] == 5_000 and r["evaluation_trials"] == 15_000


def test_bound_matches_the_formula_at_the_chosen_threshold() -> None:
    rng = np.random.default_rng(6)
    s0, s1 = rng.standard_normal(10_000), rng.standard_normal(10_000) + 2.0
    r = epsilon_lower_bound(s0, s1, delta=1e-3, alpha=0.1, selection_fraction=0.5)
    e0, e1 = s0[5000:], s1[5000:]
    kf, kn = int(np.sum(e0 >= r["tau"])), int(np.sum(e1 < r["tau"]))
    fu, nu = clopper_pearson(kf, 5000, 0.05, "upper"), clopper_pearson(kn, 5000, 0.05, "upper")
    want = max(math.log((1 - 1e-3 - nu) / fu), math.log((1 - 1e-3 - fu) / nu))
    assert r["epsilon_lower_bound"] == pytest.approx(max(want, 0.0))
    assert r["fpr_upper"] == pytest.approx(fu) and r["fnr_upper"] == pytest.approx(nu)


# ---------------------------------------------------------------------------------------------- (f)
def test_user_level_canary_with_three_rows(data) -> None:
    priv, cand = data
    owners = [f"u{i % 120}" for i in range(priv.shape[0])]
    r = audit_histogram_mechanism(priv, cand, mechanism=_mech(), owners=owners, canary_rows=3, trials=TRIALS,
                                  delta=DELTA, claimed_epsilon=CLAIM)
    assert r.canary["rows"] == 3 and r.canary["unit"] == "user"
    assert r.sensitivity["canary_weight"] == pytest.approx(1.0)
    assert r.sensitivity["l2"] == pytest.approx(1.0) and r.sensitivity["ok"]
    assert r.epsilon_lower_bound < CLAIM

    # the bug a user-level run must not have: forgetting to split a user's weight over its rows
    def record_weights(owners, n_rows):
        return contribution_weights(None, n_rows)

    bad = audit_histogram_mechanism(priv, cand, mechanism=replace(_mech(seed=3), weights_fn=record_weights),
                                    owners=owners, canary_rows=3, trials=TRIALS, delta=DELTA, claimed_epsilon=CLAIM)
    assert bad.sensitivity["l2"] == pytest.approx(3.0)
    assert bad.violation and bad.epsilon_lower_bound > 1.5 * CLAIM


def test_auto_canary_lands_on_a_least_voted_bin_with_unnormalised_candidates(data) -> None:
    priv, _ = data
    cand = np.random.default_rng(9).standard_normal((50, 16)).astype(np.float32)  # like lookahead means: not unit
    r = audit_histogram_mechanism(priv, cand, mechanism=_mech(0.0), trials=200)
    clean = vote_histogram(priv, cand, show_progress=False)
    assert r.canary["landed_as_intended"] and r.private["clean_count_d"] == clean.min() == 0


def test_a_multi_row_canary_needs_owners(data) -> None:
    with pytest.raises(ValueError, match="owners"):
        audit_histogram_mechanism(*data, mechanism=_mech(), canary_rows=3, trials=100)


# ---------------------------------------------------------------------------------------------- discrete
@pytest.mark.parametrize("scale,rows", [(1, 1), (6, 3)])
def test_the_discrete_sampler_plugs_in(data, scale: int, rows: int) -> None:
    discrete = pytest.importorskip("spti.privacy.discrete")
    add, grid = getattr(discrete, "add_discrete_noise", None), getattr(discrete, "grid_weights", None)
    if add is None or grid is None:
        pytest.skip("spti.privacy.discrete has no add_discrete_noise / grid_weights")
    priv, cand = data
    owners = [f"u{i % 120}" for i in range(priv.shape[0])] if rows > 1 else None

    def mech(sigma: float, seed: int) -> HistogramMechanism:
        src = NoiseSource(insecure_seed=seed)
        return HistogramMechanism(
            noise_fn=lambda counts, draw: add(counts, sigma, iteration=draw, source=src, scale=scale)[0],
            weights_fn=lambda o, n: grid(o, n, scale), sensitivity=scale, sigma=sigma,
            noise_description=f"discrete gaussian, grid {scale}")

    kw = dict(owners=owners, canary_rows=rows, trials=TRIALS, full_histogram=False, delta=DELTA, claimed_epsilon=CLAIM)
    ok = audit_histogram_mechanism(priv, cand, mechanism=mech(SIGMA, 21), **kw)
    assert ok.sensitivity["ok"] and ok.sensitivity["l2"] == scale
    assert ok.epsilon_lower_bound < CLAIM
    bad = audit_histogram_mechanism(priv, cand, mechanism=mech(SIGMA / 2, 22), **kw)
    assert bad.violation


# ---------------------------------------------------------------------------------------------- (g)
def test_thresholded_release(data) -> None:
    h = 5.0
    mech = _mech(threshold=h)
    out = mech.release(np.broadcast_to(np.array([0.0, 3.0, 100.0]), (2000, 3)), 0)
    assert np.all((out == 0) | (out >= h))  # the thresholded release: zero below H
    r = _audit(data, mech)
    assert r.mechanism["threshold"] == h
    assert r.test["tau_minus_clean"] >= h  # the best test sits above H: below it everything is 0
    assert r.epsilon_lower_bound < CLAIM
    r2 = _audit(data, _mech(SIGMA / 2, seed=4, threshold=h))
    assert r2.violation


def test_canary_given_by_the_caller_and_full_or_bin_only_draws_agree(data) -> None:
    priv, cand = data
    r_full = _audit(data, _mech(0.0), canary=cand[7], trials=1000)
    r_bin = _audit(data, _mech(0.0), canary=cand[7], trials=1000, full_histogram=False)
    assert r_full.canary["target_bin"] == r_bin.canary["target_bin"] == 7
    assert r_full.epsilon_lower_bound == r_bin.epsilon_lower_bound > 3


def test_canary_rows_are_appended_without_copying_the_private_set(tmp_path, data) -> None:
    priv, cand = data
    np.save(tmp_path / "f.npy", priv)
    mm = np.load(tmp_path / "f.npy", mmap_mode="r")
    extra = cand[:3]
    both = _WithCanary(mm, extra)
    full = np.concatenate([priv, extra])
    assert both.shape == full.shape and len(both) == 503
    for s in (slice(0, 100), slice(450, 502), slice(499, 503), slice(500, 503), slice(0, 4096)):
        np.testing.assert_array_equal(both[s], full[s])
    np.testing.assert_array_equal(np.asarray(both), full)
    np.testing.assert_array_equal(vote_histogram(both, cand, chunk_size=64, show_progress=False),
                                  vote_histogram(full, cand, chunk_size=64, show_progress=False))


def test_result_serialises(data) -> None:
    r = audit_histogram_mechanism(*data, mechanism=_mech(0.0), trials=1000, claimed_epsilon=math.inf)
    d = r.to_dict()
    json.dumps(d, allow_nan=False)  # JSON-safe: inf written as "inf"
    assert d["summary"]["claimed_epsilon"] == "inf" and d["summary"]["epsilon_estimate"] == "inf"
    s = r.summary()
    assert "target_bin" not in s["canary"] and "tau" not in s["test"]
    assert d["private"]["target_bin"] == r.canary["target_bin"]


# ---------------------------------------------------------------------------------------------- audit_run
def test_audit_run_on_an_image_voting_run(tmp_path) -> None:

    from support.fakes import write_colour_squares

    from spti.pipeline import run

    write_colour_squares(tmp_path / "private")
    cfg = {
        "out": str(tmp_path / "run"), "seed": 3, "progress": False,
        "data": {"private": str(tmp_path / "private"), "users_from_subfolders": True},
        "privacy": {"epsilon": 2.0, "unit": "user", "delta": 1e-3, "insecure_noise_seed": 7},
        "generation": {"domain": "a coloured object", "min_length": 3, "max_length": 20},
        "pe": {"iterations": 2, "population": 6, "variations": 2, "voting": "image", "lookahead": 2, "threshold": 0.5},
        "captioner": {"backend": "support.fakes:ColourCaptioner"},
        "llm": {"backend": "support.fakes:ScriptedLLM"},
        "text_embedder": {"backend": "support.fakes:BowEmbedder"},
        "renderer": {"backend": "support.fakes:SolidRenderer"},
        "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"},
    }
    rd = run(cfg)
    release_before = sorted(p.relative_to(rd.release) for p in rd.release.rglob("*"))
    r = audit_run(rd.path, trials=20_000, noise=NoiseSource(insecure_seed=11))
    assert r.candidates["source"] == "cache" and r.candidates["iteration"] == 2
    assert r.canary["unit"] == "user" and r.canary["rows"] == 3
    assert r.sensitivity["ok"] and r.mechanism["threshold"] == 0.5
    assert r.iterations == 2 and r.claimed_epsilon_run == pytest.approx(2.0)
    assert 1.0 < r.claimed_epsilon < 2.0  # one of two histograms: more than half of the T-fold epsilon
    assert not r.violation
    assert (rd.path / AUDIT_FILE).is_file()
    assert read_audit(rd.path)["epsilon_lower_bound"] == pytest.approx(r.epsilon_lower_bound)
    assert sorted(p.relative_to(rd.release) for p in rd.release.rglob("*")) == release_before


def test_audit_run_on_a_text_run_and_its_synthetic_fallback(tmp_path) -> None:
    import shutil

    from spti.config import Config
    from spti.pipeline import evolve_texts

    rows = [{"text": f"A {c} {o} in a {p}.", "user_id": f"u{i % 4}"}
            for i, (c, o, p) in enumerate([("red", "car", "garage"), ("red", "dog", "park"), ("blue", "car", "park"),
                                           ("red", "lamp", "kitchen"), ("green", "chair", "beach")] * 3)]
    f = tmp_path / "private.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {
        "out": str(tmp_path / "run"), "seed": 3, "progress": False,
        "data": {"private": str(f), "user_column": "user_id"},
        "privacy": {"epsilon": 4.0, "unit": "user", "delta": 1e-3, "insecure_noise_seed": 7},
        "generation": {"domain": "a coloured object", "min_length": 3, "max_length": 20},
        "pe": {"iterations": 1, "population": 6, "variations": 2},
        "llm": {"backend": "support.fakes:ScriptedLLM"},
        "text_embedder": {"backend": "support.fakes:BowEmbedder"},
    }
    rd = evolve_texts(Config.from_dict(cfg))
    r = audit_run(rd.path, trials=5_000, noise=NoiseSource(insecure_seed=12))
    assert r.candidates["source"] == "cache" and r.canary["unit"] == "user" and r.sensitivity["ok"]
    for d in rd.cache.glob("text-*"):
        shutil.rmtree(d)
    r2 = audit_run(rd.path, trials=5_000, noise=NoiseSource(insecure_seed=12), write=False)
    assert r2.candidates["source"] == "synthetic" and r2.candidates["count"] == r.candidates["count"]
    assert r2.sensitivity["ok"] and not r2.violation
    assert read_audit(rd.path)["candidates"]["source"] == "cache"  # write=False left the file alone
