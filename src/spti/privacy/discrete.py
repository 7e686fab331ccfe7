"""Exact discrete Gaussian noise on integer vote counts, and its honest privacy accounting.

Why this exists. spti's default noise is a floating-point Gaussian: numpy draws doubles and adds them to the
vote counts. The formal guarantee is for real-valued noise, and floating-point samplers are known to leak
(Mironov, CCS 2012; Jin et al., IEEE S&P 2022). ``privacy.noise: discrete`` instead adds *integer* noise
from the discrete Gaussian N_Z(0, σ²), P[Y = y] ∝ exp(−y²/2σ²) on the integers (Canonne, Kamath & Steinke,
"The Discrete Gaussian for Differential Privacy", NeurIPS 2020, arXiv:2004.00010; "CKS" below), to integer
counts, sampled *exactly* by CKS Algorithms 1–3 with integer arithmetic only (no floating point anywhere in
an accept/reject decision) and with randomness from the operating system's CSPRNG (``secrets``).

The trade-off (why the continuous Gaussian stays the default).

* Continuous (default): its privacy curve is exactly the Gaussian's, so spti accounts it *exactly* with
  Gaussian DP (no slack at all), but the guarantee is for idealised real-valued noise, not for the doubles
  numpy produces.
* Discrete (``privacy.noise: discrete``): no floating-point attack surface (the noisy counts are integers
  on a grid, the sampler is exact), but its privacy curve is not exactly the Gaussian's, so spti accounts it
  with a bound *proven* for it: ρ-zero-concentrated DP per histogram, ρ = Δ₂²/(2σ²) (CKS Thm. 4 for one
  changed coordinate, Thm. 14 for several), ρ added over iterations, then converted to (ε, δ) by CKS's
  tight conversion (Prop. 12 / Cor. 13). That conversion is not tight for Gaussians: at the same σ the
  discrete sampler is charged more ε than the continuous one — about 7-10 % at δ = 1e-6 for typical PE
  budgets (σ = 14.2, T = 10: ε = 1.010 instead of 0.936), 2-7 % when ε is large, up to ~30 % when ε ≪ 1 and
  δ is large. Equivalently, the same (ε, δ) needs ~5-7 % more noise (ε = 1, T = 10, δ = 1e-6: σ = 14.33
  instead of 13.36). ``spti privacy`` prints both (:func:`compare_noise`). The noise itself is no worse: its
  zCDP is exactly the continuous Gaussian's and its variance is slightly *below* σ²; the gap is the price of
  accounting with a bound that is proven for it (at record level a numerical privacy-loss-distribution
  accountant of the discrete Gaussian would recover most of it: dp_accounting gives 0.941 for the example
  above; spti does not use it yet). Sampling costs ~10-30 ms per 14,000-bin histogram on a
  busy 2-core machine, 0.15-0.4 % of the voting of 20k x 14k x 384 measured in the same run
  (benchmarks/bench_noise.py); the plain scalar Python version of the same algorithm would take 0.5-1.3 s.

Integer grid for user-level votes. Record-level votes are already integers (each record adds 1 to one bin:
L1 = L2 sensitivity 1). User-level votes give each of a user's k rows weight 1/k; on a grid of resolution
``scale`` = s every row gets an integer weight, s // k or s // k + 1 (the first s mod k rows of the user, in
row order, get the +1), so each user's weights sum to exactly s (:func:`grid_weights`). Removing a user then
changes the integer counts by a non-negative vector of L1 norm s, hence L2 ≤ s. The sampler adds
N_Z(0, σ_grid²) with σ_grid ≥ s·σ and the noisy counts are divided by s (:func:`add_discrete_noise`), so
the privacy is that of noise multiplier σ. With s = 2520 (:data:`DEFAULT_USER_SCALE`) the weights are
exactly 1/k for every user with k ≤ 10 rows; a user with more than s rows gives weight 0 to the rows past
the s-th (keep s above the largest number of rows per user).

σ is given as a float; the sampler needs an exact rational σ². :func:`exact_sigma` rounds σ_grid² = (s·σ)²
*up* to t·m/D (D a power of two chosen so that every integer of the sampler fits in 64 bits; relative error
below ~3e-8 for σ_grid ≥ 1), so the noise is never smaller than claimed; the accounting uses that exact σ².

Timing: CKS's sampler is a rejection sampler, so its running time depends on the noise drawn. spti samples a
whole histogram at once and never releases per-bin timings; this is a small residual channel, stated here.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from spti.errors import BudgetError, ConfigError, InputError
from spti.privacy.accountant import (
    epsilon_for_rho,
    epsilon_from_sigma,
    rho_for_epsilon,
    validate_delta,
    validate_epsilon,
    validate_iterations,
    validate_sigma,
    validate_unit,
)

if TYPE_CHECKING:  # pragma: no cover
    from spti.privacy.noise import NoiseSource

__all__ = [
    "DEFAULT_USER_SCALE",
    "NOISE_KINDS",
    "DiscreteSigma",
    "NoiseComparison",
    "RandomBits",
    "add_discrete_noise",
    "compare_noise",
    "epsilon_discrete",
    "exact_sigma",
    "grid_weights",
    "rho_discrete",
    "sample_discrete_gaussian",
    "sample_discrete_gaussian_reference",
    "sigma_for_epsilon_discrete",
    "validate_scale",
]

#: Values of ``privacy.noise``: the floating-point Gaussian (default) and the exact discrete Gaussian.
NOISE_KINDS = ("gaussian", "discrete")

#: Grid resolution for user-level votes: lcm(1..10), so 1/k is exact for users with up to 10 rows.
DEFAULT_USER_SCALE = 2520

#: Name written to manifests and ledgers.
SAMPLER_NAME = "discrete_gaussian (Canonne-Kamath-Steinke 2020, Alg. 1-3, exact integer arithmetic)"

# Every integer the vectorised sampler handles stays below 2^62 (int64-safe; uniform sampling below m by
# rejection from 64 random bits then rejects less than a quarter of draws). Anything larger is finished
# by the scalar Python-int code path of the same algorithm (exact, just slower; essentially never taken).
_LIMIT = 1 << 62
# σ_grid² = t·m/D is chosen with 2·t·m·D ≤ 2^52, so Bernoulli(r/(2tmD·K)) stays vectorised up to K = 2^10.
_DEN_LIMIT = 1 << 52
_U64_MAX = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
# Squares of |D·|y| − m| below 2^62 are computed in int64; larger ones (|y| ≳ 100 σ) in Python ints.
_SQRT_LIMIT = 1 << 31
# In "g successes of Bernoulli(1/e) in a row", at most this many are drawn per element in one vector pass.
_RUN_CAP = 64
_INSECURE_LABEL = b"spti/privacy/discrete-gaussian/v1"


# ---------------------------------------------------------------------------------------------------------
# Validation and the exact σ.
# ---------------------------------------------------------------------------------------------------------


def validate_scale(scale: Any) -> int:
    """Return the integer grid resolution s ≥ 1 (votes are multiplied by s before the noise)."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale < 1:
        raise ConfigError(
            f"scale (the integer vote grid) must be an integer >= 1, got {scale!r}; use 1 for record-level "
            f"votes and e.g. {DEFAULT_USER_SCALE} for user-level votes"
        )
    return int(scale)


@dataclass(frozen=True)
class DiscreteSigma:
    """The exact noise parameter of the discrete sampler: σ_grid² = t·m/D, a rational ≥ (scale·σ)².

    ``sigma`` is the noise multiplier the user asked for (std per unit of sensitivity); ``scale`` the
    vote grid; ``t = ⌊scale·σ⌋ + 1`` the discrete Laplace scale of CKS Algorithm 3 (any t ≥ 1 is correct;
    this one is CKS's efficient choice); ``denominator`` D is a power of two.
    """

    sigma: float
    scale: int
    t: int
    m: int
    denominator: int

    @property
    def sigma2_grid(self) -> Fraction:
        """σ_grid² exactly (on the grid, i.e. in units of 1/scale votes)."""
        return Fraction(self.t * self.m, self.denominator)

    @property
    def sigma_effective(self) -> float:
        """The noise multiplier actually used, √(σ_grid²)/scale (≥ ``sigma``), as a float."""
        return math.sqrt(self.t * self.m / self.denominator) / self.scale

    def rho(self) -> float:
        """zCDP ρ of ONE histogram with grid sensitivity Δ₂ ≤ scale: scale²/(2σ_grid²), rounded up."""
        exact = Fraction(self.scale * self.scale * self.denominator, 2 * self.t * self.m)
        r = float(exact)
        return math.nextafter(r, math.inf) if Fraction(r) < exact else r

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe record (the exact σ² as the string "numerator/denominator")."""
        d = asdict(self)
        q = self.sigma2_grid
        d["sigma2_grid"] = f"{q.numerator}/{q.denominator}"
        d["sigma_effective"] = self.sigma_effective
        return d


def exact_sigma(sigma: float, scale: int = 1) -> DiscreteSigma:
    """Round σ_grid² = (scale·σ)² *up* to the exact rational the sampler uses (see :class:`DiscreteSigma`).

    D = 2^k is the largest power of two with 2·t·m·D ≤ 2^52, where m = ⌈(scale·σ)²·D/t⌉: the relative
    excess of σ² is at most t/(D·σ_grid²), below ~3e-8 for σ_grid ≥ 1 (below 1e-5 down to σ_grid = 0.01).
    The float σ is a dyadic rational, so (scale·σ)² is computed exactly.
    """
    s = validate_sigma(sigma)
    sc = validate_scale(scale)
    target = Fraction(s) * sc
    t = math.floor(target) + 1
    target2 = target * target

    def m_den(k: int) -> tuple[int, int]:
        d = 1 << k
        m = math.ceil(target2 * d / t)
        return m, 2 * t * m * d

    k = min(60, max(0, int(25.5 - math.log2(float(target)))))  # 2σ²D² ≈ 2^52; corrected exactly below
    while k > 0 and m_den(k)[1] > _DEN_LIMIT:
        k -= 1
    while m_den(k + 1)[1] <= _DEN_LIMIT:
        k += 1
    m, den = m_den(k)
    if den > _DEN_LIMIT:
        raise BudgetError(
            f"sigma x scale = {float(target):.6g} is too large for the discrete sampler (at most about "
            f"{2**25:.3g}); use a smaller vote grid scale"
        )
    return DiscreteSigma(sigma=s, scale=sc, t=t, m=m, denominator=1 << k)


# ---------------------------------------------------------------------------------------------------------
# Randomness: uniform integers from 64-bit words, secure or explicitly insecure.
# ---------------------------------------------------------------------------------------------------------


class RandomBits:
    """Uniform random integers for the sampler, from a stream of 64-bit words.

    :meth:`secure_source` reads the words from the operating system's CSPRNG (``secrets.token_bytes``).
    :meth:`insecure_source` (tests and debugging only: NOT private) reads them from numpy's PCG64 seeded with
    sha256(label, seed, iteration), so the noise of iteration t is a function of (seed, t) only.
    All integers are produced by exact rejection sampling: no modulo bias, no floating point.
    """

    def __init__(self, words: Callable[[int], np.ndarray], *, secure: bool) -> None:
        self._words = words
        self.secure = secure

    @classmethod
    def secure_source(cls) -> RandomBits:
        return cls(
            lambda n: np.frombuffer(secrets.token_bytes(8 * n), dtype="<u8").astype(np.uint64), secure=True
        )

    @classmethod
    def insecure_source(cls, seed: int, iteration: int) -> RandomBits:
        digest = hashlib.sha256(_INSECURE_LABEL + f"/{int(seed)}/{int(iteration)}".encode()).digest()
        bit_gen = np.random.PCG64(np.random.SeedSequence(int.from_bytes(digest, "big")))
        return cls(lambda n: bit_gen.random_raw(n).astype(np.uint64), secure=False)

    def uint64(self, n: int) -> np.ndarray:
        """``n`` uniform 64-bit words."""
        return self._words(int(n))

    def below(self, m: np.ndarray) -> np.ndarray:
        """Uniform integers in [0, m_i) for every entry of the int64 array ``m`` (1 ≤ m_i ≤ 2^62).

        Rejection: a 64-bit word r is accepted when r < ⌊(2^64−1)/m⌋·m (a multiple of m), so r mod m is
        exactly uniform; fewer than a quarter of words are rejected.
        """
        mu = np.asarray(m, dtype=np.int64).astype(np.uint64)
        out = np.empty(mu.shape[0], dtype=np.int64)
        todo = np.arange(mu.shape[0])
        while todo.size:
            mm = mu[todo]
            r = self.uint64(todo.size)
            ok = r < (_U64_MAX // mm) * mm
            out[todo[ok]] = (r[ok] % mm[ok]).astype(np.int64)
            todo = todo[~ok]
        return out

    def below_int(self, m: int) -> int:
        """One uniform Python int in [0, m), any size (exact rejection on ⌈log2 m⌉ random bits)."""
        if m <= 1:
            return 0
        bits = (m - 1).bit_length()
        words = (bits + 63) // 64
        mask = (1 << bits) - 1
        while True:
            r = 0
            for w in self.uint64(words).tolist():
                r = (r << 64) | int(w)
            r &= mask
            if r < m:
                return r


# ---------------------------------------------------------------------------------------------------------
# CKS Algorithms 1-3: scalar reference (Python ints) ...
# ---------------------------------------------------------------------------------------------------------


def _bern_exp_unit_py(num: int, den: int, bits: RandomBits, k: int = 1) -> bool:
    """Bernoulli(exp(−num/den)) for 0 ≤ num ≤ den (CKS Alg. 1, γ ≤ 1), continuing from counter ``k``.

    K ← 1; while Bernoulli(γ/K): K ← K + 1; return K odd. P[K odd] = Σ (−γ)^j/j! = e^(−γ).
    """
    while bits.below_int(den * k) < num:
        k += 1
    return k % 2 == 1


def _bern_exp_py(num: int, den: int, bits: RandomBits) -> bool:
    """Bernoulli(exp(−num/den)) for any num/den ≥ 0 (CKS Alg. 1): ⌊γ⌋ draws of Bernoulli(1/e), then the rest."""
    for _ in range(num // den):
        if not _bern_exp_unit_py(1, 1, bits):
            return False
    return _bern_exp_unit_py(num % den, den, bits)


def _dlap_py(t: int, bits: RandomBits) -> int:
    """One sample of the discrete Laplace P[Y = y] ∝ exp(−|y|/t) (CKS Alg. 2 with s = 1)."""
    while True:
        u = bits.below_int(t)
        if not _bern_exp_unit_py(u, t, bits):
            continue
        v = 0
        while _bern_exp_unit_py(1, 1, bits):
            v += 1
        x = u + t * v
        b = bits.below_int(2)
        if b == 1 and x == 0:
            continue
        return -x if b else x


def _dgauss_accept_py(y: int, params: DiscreteSigma, bits: RandomBits) -> bool:
    """CKS Alg. 3's test Bernoulli(exp(−(|y| − σ²/t)²/(2σ²))) with σ² = t·m/D, i.e.
    γ = (D|y| − m)² / (2·t·m·D), in Python ints."""
    e = params.denominator * abs(y) - params.m
    return _bern_exp_py(e * e, 2 * params.t * params.m * params.denominator, bits)


def sample_discrete_gaussian_reference(n: int, params: DiscreteSigma, bits: RandomBits) -> list[int]:
    """``n`` i.i.d. samples of N_Z(0, σ_grid²), one at a time, exactly as CKS Algorithm 3 states it.

    Slow (pure Python, tens of µs per sample); kept as the readable reference that the vectorised
    :func:`sample_discrete_gaussian` is tested against.
    """
    out = []
    while len(out) < n:
        y = _dlap_py(params.t, bits)
        if _dgauss_accept_py(y, params, bits):
            out.append(y)
    return out


# ---------------------------------------------------------------------------------------------------------
# ... and the same algorithms vectorised over numpy int64 arrays.
#
# Batching keeps them exact: a rejection sampler run on an i.i.d. stream of proposals yields i.i.d. accepted
# samples, whatever the batch sizes, and keeping the first n accepted (a choice that depends on the
# acceptance pattern only, never on the values) keeps them i.i.d. Likewise the run lengths between failures
# of an i.i.d. Bernoulli stream are i.i.d. geometric variables.
# ---------------------------------------------------------------------------------------------------------


def _bern_exp_unit(num: np.ndarray, den: np.ndarray, bits: RandomBits) -> np.ndarray:
    """Element-wise Bernoulli(exp(−num/den)), 0 ≤ num ≤ den ≤ 2^62 (CKS Alg. 1 with γ ≤ 1), vectorised."""
    num = np.asarray(num, dtype=np.int64)
    den = np.broadcast_to(np.asarray(den, dtype=np.int64), num.shape)
    result = np.empty(num.shape[0], dtype=bool)
    idx = np.arange(num.shape[0])
    k = np.ones(num.shape[0], dtype=np.int64)
    while idx.size:
        d = den[idx]
        over = k > _LIMIT // d
        if over.any():  # K grew past the int64 range (probability ~1/1024!): finish in Python ints
            for j, kj in zip(idx[over].tolist(), k[over].tolist()):
                result[j] = _bern_exp_unit_py(int(num[j]), int(den[j]), bits, int(kj))
            keep = ~over
            idx, k, d = idx[keep], k[keep], d[keep]
            if not idx.size:
                break
        success = bits.below(d * k) < num[idx]
        stop = ~success
        result[idx[stop]] = (k[stop] & 1) == 1
        idx = idx[success]
        k = k[success] + 1
    return result


def _bern_exp1(n: int, bits: RandomBits) -> np.ndarray:
    """``n`` i.i.d. Bernoulli(1/e) draws."""
    return _bern_exp_unit(np.ones(n, dtype=np.int64), np.ones(n, dtype=np.int64), bits)


def _geometric_exp1(n: int, bits: RandomBits) -> np.ndarray:
    """``n`` i.i.d. counts of Bernoulli(1/e) successes before the first failure (CKS Alg. 2's V)."""
    out = np.empty(n, dtype=np.int64)
    filled = 0
    carry = 0  # successes at the end of the previous chunk, belonging to the next variable
    while filled < n:
        size = int((n - filled) * 1.7) + 32
        draws = _bern_exp1(size, bits)
        zeros = np.flatnonzero(~draws)
        if zeros.size == 0:
            carry += size
            continue
        runs = np.diff(np.concatenate(([-1], zeros))) - 1
        runs[0] += carry
        take = min(runs.size, n - filled)
        out[filled : filled + take] = runs[:take]
        filled += take
        carry = size - 1 - int(zeros[-1])
    return out


def _all_successes(g: np.ndarray, bits: RandomBits) -> np.ndarray:
    """Element-wise: do g_i independent Bernoulli(1/e) draws all succeed? (probability e^(−g_i))."""
    ok = np.ones(g.shape[0], dtype=bool)
    cap = np.minimum(g, _RUN_CAP)
    total = int(cap.sum())
    if total:
        draws = _bern_exp1(total, bits)
        failures = np.concatenate(([0], np.cumsum(~draws)))
        ends = np.cumsum(cap)
        ok = failures[ends] - failures[ends - cap] == 0
    for j in np.flatnonzero(ok & (g > _RUN_CAP)).tolist():  # probability < e^(−64) each
        for _ in range(int(g[j]) - _RUN_CAP):
            if not _bern_exp_unit_py(1, 1, bits):
                ok[j] = False
                break
    return ok


def _dlap_batch(size: int, t: int, bits: RandomBits) -> np.ndarray:
    """i.i.d. discrete Laplace(t) samples from ``size`` proposals of CKS Alg. 2 (about 0.63·size of them)."""
    tt = np.full(size, t, dtype=np.int64)
    u = bits.below(tt)
    u = u[_bern_exp_unit(u, tt, bits)]
    v = _geometric_exp1(u.shape[0], bits)
    if np.any(v > (_LIMIT - t) // t):  # needs ≥ 2^21 successes of Bernoulli(1/e) in a row: impossible
        raise OverflowError("discrete Laplace proposal beyond 2^62")  # pragma: no cover
    x = u + t * v
    neg = bits.below(np.full(x.shape[0], 2, dtype=np.int64)) == 1
    keep = ~(neg & (x == 0))
    return np.where(neg, -x, x)[keep]


def _dgauss_accept(y: np.ndarray, params: DiscreteSigma, bits: RandomBits) -> np.ndarray:
    """CKS Alg. 3's acceptance test for every proposal in ``y`` (see :func:`_dgauss_accept_py`)."""
    d, m = params.denominator, params.m
    den = 2 * params.t * m * d  # ≤ 2^52 by construction of DiscreteSigma
    a = np.abs(y)
    fits = a <= (_LIMIT - m) // d
    e = np.where(fits, np.abs(d * np.where(fits, a, 0) - m), 0)
    fits &= e < _SQRT_LIMIT
    accept = np.zeros(y.shape[0], dtype=bool)
    vi = np.flatnonzero(fits)
    num = e[vi] * e[vi]
    g, r = num // den, num % den
    survive = _all_successes(g, bits)
    si = np.flatnonzero(survive)
    accept[vi[si]] = _bern_exp_unit(r[si], np.int64(den), bits)
    for j in np.flatnonzero(~fits).tolist():  # |y| ≳ 100 σ: exact test in Python ints
        accept[j] = _dgauss_accept_py(int(y[j]), params, bits)
    return accept


def sample_discrete_gaussian(n: int, params: DiscreteSigma, bits: RandomBits) -> np.ndarray:
    """``n`` i.i.d. samples of the discrete Gaussian N_Z(0, σ_grid²) as an int64 array (exact).

    CKS Algorithm 3: propose Y from the discrete Laplace with scale t = ⌊σ⌋ + 1 (Algorithm 2), accept with
    probability exp(−(|Y| − σ²/t)²/(2σ²)) (Algorithm 1). Every decision compares uniform random integers with
    integers; nothing is rounded. Vectorised over batches of proposals (see the note above).
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ConfigError(f"number of samples must be a non-negative integer, got {n!r}")
    out = np.empty(int(n), dtype=np.int64)
    filled = 0
    while filled < n:
        need = int(n) - filled
        y = _dlap_batch(int(need * 2.2) + 16, params.t, bits)
        acc = y[_dgauss_accept(y, params, bits)]
        take = min(acc.shape[0], need)
        out[filled : filled + take] = acc[:take]
        filled += take
    return out


# ---------------------------------------------------------------------------------------------------------
# Integer votes and adding the noise.
# ---------------------------------------------------------------------------------------------------------


def grid_weights(owners: Sequence | np.ndarray | None, n_rows: int, scale: int) -> np.ndarray:
    """Integer vote weight of every row on a grid of resolution ``scale``: each owner's weights sum to
    exactly ``scale`` (the integer version of :func:`spti.pe.histogram.contribution_weights`).

    An owner with k rows gives scale // k to each row and one more to its first scale mod k rows (in row
    order): exact integer arithmetic, no rounding drift, and never more than ``scale`` per owner, so the
    L1 (hence L2) sensitivity of the integer vote vector is ``scale``. ``owners=None`` means one row per
    owner (record level): every row weighs ``scale``.
    """
    sc = validate_scale(scale)
    if isinstance(n_rows, bool) or not isinstance(n_rows, numbers.Integral) or n_rows < 0:
        raise InputError(f"n_rows must be a non-negative integer, got {n_rows!r}")
    if owners is None:
        return np.full(int(n_rows), sc, dtype=np.int64)
    owners = np.asarray(owners)
    if owners.ndim != 1 or owners.shape[0] != n_rows:
        raise InputError(f"owners has {owners.shape[0] if owners.ndim else 0} entries for {n_rows} rows")
    if n_rows == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse, counts = np.unique(owners, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(n_rows, dtype=np.int64)
    rank[order] = np.arange(n_rows) - starts[inverse[order]]
    counts = counts.astype(np.int64)
    base, rem = sc // counts, sc % counts
    return base[inverse] + (rank < rem[inverse]).astype(np.int64)


def _integer_counts(counts: Any) -> np.ndarray:
    a = np.asarray(counts)
    if a.dtype == bool or a.dtype.kind not in "iuf":
        raise InputError(f"vote counts must be numbers, got dtype {a.dtype}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise InputError("vote counts must be finite")
        if np.any(np.abs(a) >= 2.0**53) or np.any(a != np.round(a)):
            raise InputError(
                "the discrete sampler needs integer vote counts (below 2^53); vote with grid_weights(...) "
                "so that every count is an integer"
            )
    elif a.dtype.kind == "u" and a.size and int(a.max()) >= 2**53:
        raise InputError("vote counts must be below 2^53")
    out = a.astype(np.int64)
    if out.size and int(np.abs(out).max()) >= 2**53:
        raise InputError("vote counts must be below 2^53 in absolute value")
    return out


def add_discrete_noise(
    counts: Any,
    sigma: float,
    *,
    iteration: int,
    source: NoiseSource,
    scale: int = 1,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Add exact discrete Gaussian noise to an integer vote histogram on the grid ``scale``.

    ``counts`` are the integer votes (record level: plain counts with ``scale = 1``; user level: the sums
    of :func:`grid_weights` with the same ``scale``; integral floats as returned by ``np.bincount`` are
    accepted). Returns ``(noisy, record)``: ``noisy = (counts + N_Z(0, σ_grid²)) / scale`` as float64 (the
    division is post-processing), and a JSON-safe ``record`` of what was done — the sampler, the exact σ²,
    the grid, ρ per histogram, whether the randomness was secure — never the noise or the counts.
    ``sigma = 0`` adds no noise (explicitly not-private runs only).
    """
    from spti.privacy.noise import NoiseSource

    if not isinstance(source, NoiseSource):
        raise ConfigError(f"source must be a NoiseSource, got {type(source).__name__}")
    sc = validate_scale(scale)
    c = _integer_counts(counts)
    s = validate_sigma(sigma, allow_zero=True)
    record: dict[str, Any] = {"noise": "discrete", "secure": source.secure, "scale": sc, "sigma": s}
    if s == 0.0:
        record.update(sampler="none (sigma = 0: not private)", rho=math.inf)
        return c.astype(np.float64) / sc, record
    params = exact_sigma(s, sc)
    noise = source.discrete_gaussian(c.shape, s, iteration, scale=sc)
    record.update(
        sampler=SAMPLER_NAME,
        sigma2_grid=params.to_dict()["sigma2_grid"],
        sigma_effective=params.sigma_effective,
        rho=params.rho(),
    )
    return (c + noise).astype(np.float64) / sc, record


# ---------------------------------------------------------------------------------------------------------
# Accounting: zCDP per histogram (proven for the discrete Gaussian), composed and converted to (ε, δ).
# ---------------------------------------------------------------------------------------------------------

_THEOREM = {
    "record": (
        "CKS 2020 Thm. 4: one record changes a single bin by its integer vote (scale), and the 1-D discrete "
        "Gaussian with integer shift D is D^2/(2 sigma_grid^2)-zCDP; T histograms compose to T rho; "
        "(eps, delta) by CKS Prop. 12 / Cor. 13"
    ),
    "user": (
        "CKS 2020 Thm. 14: one user changes the integer grid votes by a vector of L2 norm <= scale, and "
        "independent discrete Gaussians in every bin are (L2^2/(2 sigma_grid^2))-zCDP; T histograms compose "
        "to T rho; (eps, delta) by CKS Prop. 12 / Cor. 13"
    ),
}


def rho_discrete(sigma: float, iterations: int, *, unit: str = "record", scale: int = 1) -> float:
    """Total zCDP ρ of T discrete-Gaussian histograms with noise multiplier σ on the grid ``scale``.

    Per histogram ρ = Δ₂²/(2σ_grid²) with Δ₂ = scale (record level: one bin changes by scale, CKS Thm. 4;
    user level: the user's integer votes sum to scale, so L2 ≤ L1 = scale, CKS Thm. 14 — the multivariate
    theorem is dimension-free, so the number of bins does not enter). σ_grid² is the exact rounded-up value
    of :func:`exact_sigma`, so ρ ≤ T/(2σ²). Composition: ρ adds up (Bun & Steinke 2016, Lemma 2.3).
    """
    validate_unit(unit)
    t = validate_iterations(iterations)
    return t * exact_sigma(sigma, scale).rho()


def epsilon_discrete(
    sigma: float, iterations: int, delta: float, *, unit: str = "record", scale: int = 1
) -> float:
    """ε spent by T histograms with exact discrete Gaussian noise of multiplier σ, at δ.

    A *proven* upper bound: ρ from :func:`rho_discrete`, converted by CKS's tight zCDP → (ε, δ) conversion
    (:func:`spti.privacy.accountant.epsilon_for_rho`). Always ≥ the continuous Gaussian's exact ε at the
    same σ (:func:`spti.privacy.accountant.epsilon_from_sigma`): see :func:`compare_noise`.
    """
    d = validate_delta(delta)
    return epsilon_for_rho(rho_discrete(sigma, iterations, unit=unit, scale=scale), d)


def sigma_for_epsilon_discrete(
    epsilon: float, iterations: int, delta: float, *, unit: str = "record", scale: int = 1
) -> float:
    """The smallest noise multiplier σ (up to ~1e-10) with ``epsilon_discrete(σ, T, δ) <= ε``.

    ρ_total = :func:`~spti.privacy.accountant.rho_for_epsilon` (ε, δ), σ = √(T/(2ρ_total)), then nudged
    up until the exact (rounded-up) sampler parameter spends at most ε.
    """
    e = validate_epsilon(epsilon)
    t = validate_iterations(iterations)
    d = validate_delta(delta)
    validate_unit(unit)
    sc = validate_scale(scale)
    sigma = math.sqrt(t / (2.0 * rho_for_epsilon(e, d))) * (1.0 + 1e-12)
    for _ in range(200):
        if epsilon_discrete(sigma, t, d, unit=unit, scale=sc) <= e:
            return sigma
        sigma *= 1.0 + 1e-10
    raise BudgetError(  # pragma: no cover - the roots are accurate to ~1e-15
        f"could not calibrate the discrete sigma for epsilon = {e:g}, delta = {d:g}, T = {t}"
    )


@dataclass(frozen=True)
class NoiseComparison:
    """One row of ``spti privacy``: what the exact discrete sampler costs in ε next to the continuous one.

    ``epsilon_continuous``: exact GDP accounting of the floating-point Gaussian (tight).
    ``epsilon_discrete``: the proven zCDP bound for the discrete sampler (what spti charges for it).
    ``epsilon_continuous_zcdp``: the same zCDP conversion applied to the continuous Gaussian; it differs from
    ``epsilon_discrete`` only by the rounding of σ, which shows that the extra ε comes from the looser
    accounting, not from worse noise.
    """

    sigma: float
    iterations: int
    delta: float
    unit: str
    scale: int
    sigma_exact: float
    rho: float
    epsilon_continuous: float
    epsilon_discrete: float
    epsilon_continuous_zcdp: float
    theorem: str

    @property
    def extra_epsilon(self) -> float:
        return self.epsilon_discrete - self.epsilon_continuous

    @property
    def extra_percent(self) -> float:
        return 100.0 * self.extra_epsilon / self.epsilon_continuous if self.epsilon_continuous > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["extra_epsilon"] = self.extra_epsilon
        d["extra_percent"] = self.extra_percent
        return d

    def describe(self) -> str:
        return (
            f"sigma = {self.sigma:.4g}, T = {self.iterations}, delta = {self.delta:.3g} ({self.unit} level): "
            f"continuous Gaussian epsilon = {self.epsilon_continuous:.4g} (exact GDP); exact discrete "
            f"Gaussian epsilon = {self.epsilon_discrete:.4g} (zCDP bound, +{self.extra_percent:.1f}%)"
        )


def compare_noise(
    sigma: float, iterations: int, delta: float, *, unit: str = "record", scale: int = 1
) -> NoiseComparison:
    """ε of the continuous Gaussian (exact GDP) next to ε of the discrete sampler (proven zCDP bound)."""
    s = validate_sigma(sigma)
    t = validate_iterations(iterations)
    d = validate_delta(delta)
    u = validate_unit(unit)
    params = exact_sigma(s, scale)
    rho = t * params.rho()
    return NoiseComparison(
        sigma=s,
        iterations=t,
        delta=d,
        unit=u,
        scale=params.scale,
        sigma_exact=params.sigma_effective,
        rho=rho,
        epsilon_continuous=epsilon_from_sigma(s, t, d),
        epsilon_discrete=epsilon_for_rho(rho, d),
        epsilon_continuous_zcdp=epsilon_for_rho(t / (2.0 * s * s), d),
        theorem=_THEOREM[u],
    )
