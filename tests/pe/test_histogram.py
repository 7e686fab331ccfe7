import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spti.errors import InputError
from spti.pe.histogram import contribution_weights, nearest_candidates, normalize_rows, vote_histogram


def brute_nearest(q, k):
    d = ((q[:, None, :] - k[None, :, :]) ** 2).sum(-1)
    return d.argmin(1)


def test_nearest_matches_brute_force_including_non_unit_keys():
    rng = np.random.default_rng(0)
    q = normalize_rows(rng.normal(size=(300, 16)))
    k = rng.normal(size=(50, 16)).astype(np.float32)  # not unit: lookahead means
    assert np.array_equal(nearest_candidates(q, k, chunk_size=37), brute_nearest(q, k))


def test_faiss_backend_agrees_with_numpy():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(1)
    q = normalize_rows(rng.normal(size=(500, 32)))
    k = normalize_rows(rng.normal(size=(80, 32)))
    a = vote_histogram(q, k, backend="numpy", chunk_size=64)
    b = vote_histogram(q, k, backend="faiss", chunk_size=64)
    assert np.array_equal(a, b)


def test_chunking_and_memmap_do_not_change_votes(tmp_path):
    rng = np.random.default_rng(2)
    q = rng.normal(size=(1000, 8)).astype(np.float32)
    k = normalize_rows(rng.normal(size=(30, 8)))
    path = tmp_path / "f.npy"
    np.save(path, q)
    mm = np.load(path, mmap_mode="r")
    full = vote_histogram(q, k, chunk_size=10_000)
    assert np.array_equal(full, vote_histogram(mm, k, chunk_size=7))
    assert full.sum() == pytest.approx(1000)


def test_votes_go_to_the_nearest_candidate():
    k = np.eye(3, dtype=np.float32)
    q = np.array([[1, 0.1, 0], [0.9, 0, 0.1], [0, 0, 5]], dtype=np.float32)
    assert vote_histogram(q, k).tolist() == [2.0, 0.0, 1.0]


def test_contribution_weights_sum_to_one_per_owner():
    w = contribution_weights(["a", "b", "a", "a", "c"], 5)
    assert w.tolist() == pytest.approx([1 / 3, 1, 1 / 3, 1 / 3, 1])
    assert contribution_weights(None, 4).tolist() == [1, 1, 1, 1]
    with pytest.raises(InputError):
        contribution_weights(["a"], 2)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(InputError, match="no candidates"):
        vote_histogram(np.ones((2, 3)), np.zeros((0, 3)))
    with pytest.raises(InputError, match="dim"):
        vote_histogram(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(InputError, match="weights"):
        vote_histogram(np.ones((2, 3)), np.ones((2, 3)), weights=np.array([1.0, -1.0]))


# ----------------------------------------------------------------------------- sensitivity properties
feat = arrays(np.float32, st.tuples(st.integers(1, 25), st.just(4)), elements=st.floats(-3, 3, width=32))


@settings(max_examples=60, deadline=None)
@given(private=feat, cands=arrays(np.float32, st.tuples(st.integers(1, 8), st.just(4)), elements=st.floats(-3, 3, width=32)),
       drop=st.integers(0, 1000))
def test_removing_one_record_changes_votes_by_at_most_one(private, cands, drop):
    """Record level: add/remove one record moves the vote vector by <= 1 in L2."""
    i = drop % private.shape[0]
    full = vote_histogram(private, cands)
    less = vote_histogram(np.delete(private, i, axis=0), cands)
    assert np.linalg.norm(full - less) <= 1 + 1e-9


@settings(max_examples=60, deadline=None)
@given(private=feat, cands=arrays(np.float32, st.tuples(st.integers(1, 8), st.just(4)), elements=st.floats(-3, 3, width=32)),
       owners=st.lists(st.integers(0, 4), min_size=25, max_size=25), drop=st.integers(0, 4))
def test_removing_one_user_changes_votes_by_at_most_one(private, cands, owners, drop):
    """User level (or several embeddings per record): all rows of one owner removed -> L2 change <= 1."""
    owners = np.array(owners[: private.shape[0]])
    full = vote_histogram(private, cands, weights=contribution_weights(owners, len(owners)))
    keep = owners != drop
    if keep.sum() == 0:
        less = np.zeros_like(full)
    else:
        less = vote_histogram(private[keep], cands, weights=contribution_weights(owners[keep], int(keep.sum())))
    assert np.linalg.norm(full - less) <= 1 + 1e-9
    assert full.sum() == pytest.approx(len(set(owners.tolist())))
