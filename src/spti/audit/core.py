"""The audit of one histogram release (steps 1–3 of :mod:`spti.audit`): the canary and D' = D ∪ {canary},
the clean histograms of both through the real vote, the sensitivity check, and the noisy releases reduced
to the test statistic; the bound itself comes from :mod:`spti.audit.stats`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from spti.audit.mechanism import HistogramMechanism, _WithCanary
from spti.audit.result import AuditResult
from spti.audit.stats import SELECTION_FRACTION, epsilon_lower_bound
from spti.errors import InputError
from spti.log import logger

__all__ = ["audit_histogram_mechanism"]

# Elements drawn per noise call (rows × bins); ~16 MB of float64, so a call stays cache- and memory-light.
_DRAW_ELEMENTS = 1 << 21
_ATOL = 1e-9


def audit_histogram_mechanism(
    private_features: Any,
    candidate_features: np.ndarray,
    *,
    mechanism: HistogramMechanism,
    owners: Sequence | None = None,
    trials: int = 100_000,
    canary: str | np.ndarray = "auto",
    canary_rows: int = 1,
    alpha: float = 0.05,
    delta: float = 0.0,
    claimed_epsilon: float | None = None,
    full_histogram: bool = True,
    selection_fraction: float = SELECTION_FRACTION,
) -> AuditResult:
    """Audit one histogram release of ``mechanism`` on the private set ``private_features`` (N, d; may be
    memory-mapped) voting for ``candidate_features`` (M, d, as the run passes them to the vote).

    ``owners``: who owns each private row (user-level runs), None for one row per record. ``canary``:
    "auto" (a copy of the candidate D votes for least, ``canary_rows`` times) or an array of canary rows
    (k, d). A canary with several rows is one new user and needs ``owners``. ``trials``: releases drawn
    for D and again for D'. ``full_histogram``: draw noise for every bin as the engine does (default), or
    only for the bins that differ (same statistic, M times less work; valid for any elementwise sampler).
    ``delta``/``claimed_epsilon``: the claim to compare with (the per-histogram ε; see
    :func:`per_release_epsilon`).
    """
    t0 = time.perf_counter()
    trials = int(trials)
    if trials < 8:
        raise InputError("an audit needs at least 8 trials per dataset (10^4 to 10^5 are typical)")
    if not (0 < alpha < 1):
        raise InputError(f"alpha must be in (0, 1), got {alpha}")
    cand = np.asarray(candidate_features, dtype=np.float32)
    n, m = int(private_features.shape[0]), int(cand.shape[0])
    if cand.ndim != 2 or m == 0:
        raise InputError("the audit needs a non-empty (M, d) candidate feature matrix")
    if private_features.shape[1] != cand.shape[1]:
        raise InputError(f"private features have dim {private_features.shape[1]} but candidates have {cand.shape[1]}")
    if owners is not None and len(owners) != n:
        raise InputError(f"owners has {len(owners)} entries for {n} private rows")

    # ------------------------------------------------------------ D: the real clean histogram
    w_d = mechanism.weights(owners, n)
    clean_d = mechanism.clean_histogram(private_features, cand, w_d)
    if clean_d.shape != (m,):
        raise InputError(f"the vote returned shape {clean_d.shape}, expected ({m},)")

    # ------------------------------------------------------------ the canary and D' = D ∪ {canary}
    if isinstance(canary, str):
        if canary != "auto":
            raise InputError(f"canary must be 'auto' or an array of feature rows, got {canary!r}")
        target = _auto_target(mechanism, clean_d, cand)
        rows = np.repeat(cand[target : target + 1], int(canary_rows), axis=0)
        how = ("auto: copies of the least-voted candidate whose copy votes for itself (all the canary's weight "
               "on one bin that holds the fewest other votes)")
    else:
        rows = np.atleast_2d(np.asarray(canary, dtype=np.float32))
        target = None
        how = "given by the caller"
    k = int(rows.shape[0])
    if k < 1 or rows.shape[1] != cand.shape[1]:
        raise InputError(f"canary rows must have shape (k >= 1, {cand.shape[1]})")
    if owners is None and k > 1:
        raise InputError("a canary of several rows is one user: pass owners (user-level runs)")
    owners_dp = None
    if owners is not None:
        taken = {str(o) for o in owners}
        cid = "spti-audit-canary"
        while cid in taken:
            cid += "_"
        owners_dp = [*owners, *([cid] * k)]
    w_dp = mechanism.weights(owners_dp, n + k)
    clean_dp = mechanism.clean_histogram(_WithCanary(private_features, rows), cand, w_dp)
    diff = clean_dp - clean_d
    changed = np.flatnonzero(np.abs(diff) > _ATOL)
    l1, l2 = float(np.abs(diff).sum()), float(np.linalg.norm(diff))
    bound = float(mechanism.sensitivity)
    sensitivity = {"l1": l1, "l2": l2, "changed_bins": int(changed.size), "bound": bound,
                   "ok": l2 <= bound * (1 + 1e-9), "canary_weight": float(np.sum(w_dp[n:]))}
    if not sensitivity["ok"]:
        logger.warning("audit: one canary changed the clean histogram by L2 = %.4g > %g (sensitivity bug)", l2, bound)
    intended = target
    if changed.size:
        bins, u = changed, diff[changed] / l2
        target = int(bins[np.argmax(np.abs(diff[bins]))])  # where the canary's vote actually landed
    else:  # nothing moved (e.g. a zero weight): test the intended bin, the bound will be ~0
        bins, u = np.array([target if target is not None else 0]), np.ones(1)
        target = int(bins[0])

    # ------------------------------------------------------------ draw the releases
    base_d = clean_d if full_histogram else clean_d[bins]
    base_dp = clean_dp if full_histogram else clean_dp[bins]
    cols = bins if full_histogram else np.arange(bins.size)
    s_d = _draw_statistics(mechanism, base_d, cols, u, trials, parity=0)
    s_dp = _draw_statistics(mechanism, base_dp, cols, u, trials, parity=1)
    base_stat = float(clean_d[bins] @ u)

    res = epsilon_lower_bound(s_d, s_dp, delta=delta, alpha=alpha, selection_fraction=selection_fraction)
    seconds = time.perf_counter() - t0
    result = AuditResult(
        epsilon_lower_bound=res["epsilon_lower_bound"],
        epsilon_estimate=res["epsilon_estimate"],
        claimed_epsilon=claimed_epsilon,
        delta=float(delta),
        alpha=float(alpha),
        trials=trials,
        selection_trials=res["selection_trials"],
        evaluation_trials=res["evaluation_trials"],
        fpr=res["fpr"],
        fnr=res["fnr"],
        fpr_upper=res["fpr_upper"],
        fnr_upper=res["fnr_upper"],
        test={
            "statistic": ("released value of the canary's bin" if bins.size == 1 else
                          f"released values of the {bins.size} changed bins projected on the clean difference"),
            "rule": "say D' (canary present) when statistic >= tau",
            "tau": res["tau"],
            "tau_minus_clean": res["tau"] - base_stat,
            "threshold_choice": f"best bound on the first {res['selection_trials']} trials, evaluated on the rest",
        },
        canary={"how": how, "rows": k, "weight": sensitivity["canary_weight"],
                "unit": "user" if owners is not None else "record", "target_bin": target,
                "landed_as_intended": intended is None or intended == target},
        sensitivity=sensitivity,
        mechanism={**mechanism.describe(), "full_histogram": bool(full_histogram), "bins": m},
        seconds=round(seconds, 3),
        private={"clean_count_d": base_stat, "private_rows": n},
    )
    logger.info("audit: %s (%.1f s)", result.describe(), seconds)
    return result


def _auto_target(mechanism: HistogramMechanism, clean_d: np.ndarray, cand: np.ndarray, tries: int = 64) -> int:
    """The least-voted candidate (ties: lowest index) on which a copy of itself lands when it votes.

    Why the check: the vote normalises private rows but not the candidates (lookahead means are not unit
    vectors), so a copy of candidate j may be nearest to another candidate. Voting one row against the
    candidates costs one (1 × M) product; the first of the ``tries`` least-voted candidates that keeps its
    copy wins (else the least-voted one: the canary then lands elsewhere, which the audit reports)."""
    order = np.argsort(clean_d, kind="stable")
    for j in order[:tries]:
        j = int(j)
        h = mechanism.clean_histogram(cand[j : j + 1], cand, np.ones(1))
        if h.shape == clean_d.shape and h[j] > 0:
            return j
    return int(order[0])


def _draw_statistics(mechanism: HistogramMechanism, base: np.ndarray, cols: np.ndarray, u: np.ndarray,
                     trials: int, *, parity: int) -> np.ndarray:
    """``trials`` releases of the clean histogram ``base``, reduced to the test statistic. D uses even
    draw numbers and D' odd ones, so a seeded (insecure) source gives the two datasets independent noise."""
    width = base.shape[0]
    batch = max(1, min(trials, _DRAW_ELEMENTS // max(width, 1)))
    out = np.empty(trials, dtype=np.float64)
    for i, start in enumerate(range(0, trials, batch)):
        b = min(batch, trials - start)
        counts = np.broadcast_to(base, (b, width))  # read-only: a noise_fn cannot corrupt the clean counts
        released = mechanism.release(counts, 2 * i + parity)
        out[start : start + b] = released[:, cols] @ u
    return out
