"""Every voting backend (numpy, torch on CPU / CUDA, faiss), chunk size and shard layout gives the same votes,
and exact ties go to the lowest candidate index (the fp32 near-tie re-decision of nearest_candidates)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spti.config import Config
from spti.errors import ConfigError, InputError
from spti.pe.histogram import (
    nearest_candidates,
    normalize_rows,
    parse_backend,
    partial_votes,
    release_histogram,
    release_votes,
    shard_ranges,
    sum_partials,
    vote_histogram,
)
from spti.privacy.noise import NoiseSource


def exact_nearest(q, k):
    """Reference: float64 score of the fp32 inputs, ties -> lowest index."""
    q = np.asarray(q, np.float32).astype(np.float64)
    k = np.asarray(k, np.float32).astype(np.float64)
    s = q @ k.T - 0.5 * (k * k).sum(1)
    return np.argmax(s == s.max(1, keepdims=True), axis=1)


def bow(rng, n, vocab, words):
    """Unit bag-of-words vectors: exact ties everywhere (the golden runs' BowEmbedder)."""
    out = np.zeros((n, vocab), np.float32)
    for i in range(n):
        out[i, rng.choice(vocab, rng.integers(1, words + 1), replace=False)] = 1.0
    return normalize_rows(out)


def _torch():
    return pytest.importorskip("torch")


def test_an_exact_tie_goes_to_the_lowest_index_whatever_the_blas_sums():
    # from the golden text run: fp32 BLAS scores these two 0.3333334 vs 0.33333337 (summation order);
    # exactly they tie, so the lower index wins, on every backend and at every position
    q = normalize_rows(np.eye(12, dtype=np.float32)[[0, 5, 9]].sum(0, keepdims=True))
    a = np.zeros((1, 12), np.float32)
    a[0, [0, 2, 5, 8, 9]] = 1
    b = np.zeros((1, 12), np.float32)
    b[0, [0, 1, 5, 9, 11]] = 1
    a, b = normalize_rows(a), normalize_rows(b)
    filler = normalize_rows(np.eye(12, dtype=np.float32)[[3, 4, 6]])
    for keys, want in ((np.vstack([filler, b, a]), 3), (np.vstack([a, filler, b]), 0)):
        assert nearest_candidates(q, keys, show_progress=False).tolist() == [want]
        if _has_torch():
            assert nearest_candidates(q, keys, backend="torch", device="cpu", show_progress=False).tolist() == [want]


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def test_duplicate_candidates_and_bag_of_words_ties_match_the_exact_rule():
    rng = np.random.default_rng(5)
    k = bow(rng, 120, 16, 4)
    k = np.vstack([k, k[:30]])  # exact duplicates, later indices
    q = bow(rng, 2000, 16, 4)
    want = exact_nearest(q, k)
    assert (want < 120).all()  # a duplicate never wins over its first copy
    for chunk in (7, 4096):
        assert np.array_equal(nearest_candidates(q, k, chunk_size=chunk, show_progress=False), want)


def test_torch_cpu_gives_numpys_histogram_on_random_data_and_lookahead_means():
    _torch()
    rng = np.random.default_rng(0)
    q = rng.standard_normal((3000, 48)).astype(np.float32)
    unit = normalize_rows(rng.standard_normal((400, 48)))
    means = unit.reshape(200, 2, 48).mean(1)  # lookahead means: not unit vectors
    for keys in (unit, means, np.vstack([means, means[:50]])):
        for normalize in (True, False):
            a = vote_histogram(q, keys, backend="numpy", normalize=normalize, show_progress=False)
            b = vote_histogram(q, keys, backend="torch", device="cpu", normalize=normalize, show_progress=False,
                               chunk_size=333)
            assert np.array_equal(a, b)


def test_torch_ties_equal_numpys():
    _torch()
    rng = np.random.default_rng(1)
    k = bow(rng, 60, 10, 3)
    k = np.vstack([k, k])
    q = bow(rng, 1500, 10, 3)
    w = rng.integers(1, 4, size=1500).astype(np.float64)
    a = vote_histogram(q, k, weights=w, backend="numpy", show_progress=False)
    b = vote_histogram(q, k, weights=w, backend="torch:cpu", show_progress=False, chunk_size=100)
    assert np.array_equal(a, b)
    assert np.array_equal(nearest_candidates(q, k, backend="torch", device="cpu", show_progress=False),
                          exact_nearest(q, k))


def test_torch_reads_a_read_only_memmap(tmp_path):
    _torch()
    rng = np.random.default_rng(2)
    q = rng.standard_normal((500, 8)).astype(np.float32)
    np.save(tmp_path / "f.npy", q)
    mm = np.load(tmp_path / "f.npy", mmap_mode="r")
    k = normalize_rows(rng.standard_normal((20, 8)))
    assert np.array_equal(vote_histogram(mm, k, backend="torch:cpu", normalize=False, show_progress=False),
                          vote_histogram(q, k, normalize=False, show_progress=False))


@pytest.mark.skipif(not _has_torch(), reason="no torch")
def test_torch_cuda_gives_numpys_histogram():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(3)
    q = rng.standard_normal((20_000, 256)).astype(np.float32)
    keys = normalize_rows(rng.standard_normal((3000, 256))).reshape(1500, 2, 256).mean(1)
    keys = np.vstack([keys, keys[:100]])
    torch.set_float32_matmul_precision("high")  # a process that allows TF32 elsewhere: voting must not use it
    try:
        a = vote_histogram(q, keys, backend="numpy", show_progress=False)
        b = vote_histogram(q, keys, backend="torch", show_progress=False)  # auto: CUDA
        assert np.array_equal(a, b)
        assert torch.get_float32_matmul_precision() == "high"  # restored
    finally:
        torch.set_float32_matmul_precision("highest")
    k2 = bow(np.random.default_rng(4), 50, 12, 4)
    q2 = bow(np.random.default_rng(5), 4000, 12, 4)
    assert np.array_equal(nearest_candidates(q2, k2, backend="torch", device="cuda", show_progress=False),
                          exact_nearest(q2, k2))


def test_tf32_guard_restores_either_torch_api():
    torch = _torch()
    from spti.pe.histogram import _ExactFp32Matmul

    prev = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        with _ExactFp32Matmul(torch):
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(prev)


def test_faiss_agrees_on_ties_too():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(6)
    k = bow(rng, 80, 12, 4)
    k = np.vstack([k, k[:20]])
    q = bow(rng, 1000, 12, 4)
    assert np.array_equal(nearest_candidates(q, k, backend="faiss", show_progress=False), exact_nearest(q, k))


small = arrays(np.float32, st.tuples(st.integers(1, 40), st.just(5)), elements=st.integers(-3, 3).map(float))


@settings(max_examples=80, deadline=None)
@given(q=small, k=arrays(np.float32, st.tuples(st.integers(1, 12), st.just(5)), elements=st.integers(-2, 2).map(float)),
       chunk=st.integers(1, 50))
def test_integer_features_follow_the_exact_rule(q, k, chunk):
    """Small integers: many exact ties and equal distances, on any chunking."""
    assert np.array_equal(nearest_candidates(q, k, chunk_size=chunk, show_progress=False), exact_nearest(q, k))


# ----------------------------------------------------------------------------- sharded voting
def test_shard_ranges_partition_the_rows():
    for n, s in ((10, 3), (5, 8), (1, 1), (100, 7)):
        r = shard_ranges(n, s)
        assert r[0][0] == 0 and r[-1][1] == n and all(a < b for a, b in r)
        assert all(r[i][1] == r[i + 1][0] for i in range(len(r) - 1))
        assert len(r) == min(n, s)
    with pytest.raises(InputError):
        shard_ranges(5, 0)


def test_partials_sum_to_the_single_process_histogram():
    rng = np.random.default_rng(7)
    q = rng.standard_normal((2001, 16)).astype(np.float32)
    k = normalize_rows(rng.standard_normal((90, 16)))
    k = np.vstack([k, k[:10]])
    w_int = rng.integers(0, 3, size=2001).astype(np.float64)
    owners = rng.integers(0, 300, size=2001)
    w_frac = 1.0 / np.bincount(owners)[owners]
    for w, exact in ((None, True), (w_int, True), (w_frac, False)):
        full = vote_histogram(q, k, weights=w, show_progress=False)
        for shards in (1, 3, 7):
            parts = [partial_votes(q, k, r, weights=w, chunk_size=64) for r in shard_ranges(len(q), shards)]
            got = sum_partials(parts, len(k))
            if exact:
                assert np.array_equal(got, full)
            else:
                np.testing.assert_allclose(got, full, rtol=0, atol=1e-9)


def test_release_votes_adds_the_noise_once():
    rng = np.random.default_rng(8)
    q = rng.standard_normal((500, 8)).astype(np.float32)
    k = normalize_rows(rng.standard_normal((40, 8)))
    parts = [partial_votes(q, k, r) for r in shard_ranges(500, 4)]
    a, rec = release_votes(parts, 40, 2.0, noise=NoiseSource(insecure_seed=3), iteration=1)
    b, _ = release_histogram(vote_histogram(q, k, show_progress=False), 2.0, noise=NoiseSource(insecure_seed=3),
                             iteration=1)
    assert np.array_equal(a, b) and rec["noise"] == "gaussian"
    with pytest.raises(InputError, match="shape"):
        sum_partials([np.zeros(3)], 4)


def test_backend_names():
    assert parse_backend("torch:cuda:1") == ("torch", "cuda:1")
    assert parse_backend("ray:torch") == ("ray", "torch")
    assert parse_backend("numpy") == ("numpy", None)
    for bad in ("gpu", "numpy:fast", "ray:ray", "faiss:x"):
        with pytest.raises(InputError):
            parse_backend(bad)
    with pytest.raises(InputError, match="local backend"):
        partial_votes(np.ones((2, 3)), np.ones((2, 3)), (0, 2), backend="ray")


@pytest.mark.parametrize("name", ["torch", "torch:cuda:1", "ray", "ray:torch", "auto", "faiss"])
def test_config_accepts_the_backends(name):
    Config.from_dict({"pe": {"nn_backend": name}}).validate(need_private=False)


@pytest.mark.parametrize("name", ["gpu", "numpy:x", "faiss:gpu"])
def test_config_rejects_unknown_backends(name):
    with pytest.raises(ConfigError, match="nn_backend"):
        Config.from_dict({"pe": {"nn_backend": name}}).validate(need_private=False)
