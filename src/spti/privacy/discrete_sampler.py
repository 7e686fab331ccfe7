"""The exact discrete Gaussian sampler: Canonne, Kamath & Steinke 2020, Algorithms 1–3, integer arithmetic only.

What the noise is, why it exists and how it is accounted: :mod:`spti.privacy.discrete`. This module draws it:
:class:`RandomBits` turns 64-bit words (the OS CSPRNG, or an explicitly insecure seeded stream for tests)
into exactly uniform integers, and :func:`sample_discrete_gaussian` runs CKS's rejection sampler on them,
vectorised over numpy int64 arrays; :func:`sample_discrete_gaussian_reference` is the same algorithm one
sample at a time in Python ints, the readable reference the fast one is tested against.
"""

from __future__ import annotations

import hashlib
import numbers
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from spti.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from spti.privacy.discrete import DiscreteSigma

__all__ = ["RandomBits", "sample_discrete_gaussian", "sample_discrete_gaussian_reference"]

# Every integer the vectorised sampler handles stays below 2^62 (int64-safe; uniform sampling below m by
# rejection from 64 random bits then rejects less than a quarter of draws). Anything larger is finished
# by the scalar Python-int code path of the same algorithm (exact, just slower; essentially never taken).
_LIMIT = 1 << 62
_U64_MAX = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
# Squares of |D·|y| − m| below 2^62 are computed in int64; larger ones (|y| ≳ 100 σ) in Python ints.
_SQRT_LIMIT = 1 << 31
# In "g successes of Bernoulli(1/e) in a row", at most this many are drawn per element in one vector pass.
_RUN_CAP = 64
_INSECURE_LABEL = b"spti/privacy/discrete-gaussian/v1"


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
