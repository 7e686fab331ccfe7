"""Class-conditional voting (issue 12): each private row votes only among its own class's candidates, and
the concatenated vote vector keeps L2 sensitivity 1 with labels and users (parallel composition)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spti.errors import InputError
from spti.pe.classes import class_vote_histogram
from spti.pe.histogram import contribution_weights, vote_weights
from spti.privacy.discrete import grid_weights


def brute_force(priv, plab, cands, clab, weights):
    """Reference: every row's nearest candidate of its own class (ties: lowest index), by a Python loop."""
    out = np.zeros(len(cands))
    for x, c, w in zip(priv, plab, weights):
        mine = np.flatnonzero(clab == c)
        if mine.size == 0:
            continue
        d = ((cands[mine] - x) ** 2).sum(axis=1)
        out[mine[int(np.argmin(d))]] += w
    return out


def random_set(seed, n=None):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40)) if n is None else n
    k = int(rng.integers(1, 5))  # classes
    m = int(rng.integers(1, 15))  # candidates
    priv = rng.normal(size=(n, 3)).astype(np.float32)
    cands = rng.normal(size=(m, 3)).astype(np.float32)
    plab = rng.integers(0, k, size=n)
    clab = rng.integers(0, k, size=m)  # some classes may have no candidate: their rows do not vote
    owners = [f"u{i}" for i in rng.integers(0, max(1, n // 3), size=n)]  # a user's rows may span classes
    return priv, plab, cands, clab, owners


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_each_row_votes_for_its_nearest_candidate_of_its_own_class(seed):
    priv, plab, cands, clab, owners = random_set(seed)
    w = contribution_weights(owners, len(priv))
    got = class_vote_histogram(priv, cands, private_labels=plab, candidate_labels=clab, weights=w,
                               normalize=False, chunk_size=7, show_progress=False)
    np.testing.assert_allclose(got, brute_force(priv, plab, cands, clab, w), atol=1e-9)
    voting = np.isin(plab, clab)  # rows of a class without candidates give no vote
    assert got.sum() == pytest.approx(w[voting].sum())


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), grid=st.sampled_from([None, 1, 6]))
def test_removing_one_user_changes_the_concatenated_vote_vector_by_at_most_one(seed, grid):
    """The property the accountant relies on, with labels and users: for every user, the clean vote vector
    over all classes' candidates moves by <= 1 in L2 when the user is removed (on the discrete sampler's
    integer grid: <= grid, i.e. <= 1 after the division by grid)."""
    priv, plab, cands, clab, owners = random_set(seed)

    def votes(keep):
        own = [o for o, k in zip(owners, keep) if k]
        if grid is None:
            w = vote_weights(own, len(own))
        else:
            w = grid_weights(own, len(own), grid).astype(np.float64)
        return class_vote_histogram(priv[keep], cands, private_labels=plab[keep], candidate_labels=clab, weights=w,
                                    show_progress=False)

    full = votes(np.ones(len(priv), dtype=bool))
    scale = 1 if grid is None else grid
    for user in set(owners):
        without = votes(np.array([o != user for o in owners]))
        assert np.linalg.norm(full - without) <= scale * (1 + 1e-9)
        assert np.abs(full - without).sum() <= scale * (1 + 1e-9)  # L1 too: the weight moves, it never doubles


def test_memmap_rows_are_read_in_chunks_and_agree(tmp_path):
    priv, plab, cands, clab, _ = random_set(4, n=50)
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=priv.shape)
    mm[:] = priv
    mm.flush()
    ro = np.load(tmp_path / "f.npy", mmap_mode="r")
    a = class_vote_histogram(ro, cands, private_labels=plab, candidate_labels=clab, chunk_size=3, show_progress=False)
    b = class_vote_histogram(priv, cands, private_labels=plab, candidate_labels=clab, chunk_size=4096,
                             show_progress=False)
    np.testing.assert_array_equal(a, b)


def test_one_class_is_the_unlabelled_histogram():
    from spti.pe.histogram import vote_histogram

    priv, _, cands, _, owners = random_set(9, n=30)
    w = contribution_weights(owners, len(priv))
    a = class_vote_histogram(priv, cands, private_labels=np.zeros(len(priv), int),
                             candidate_labels=np.zeros(len(cands), int), weights=w, show_progress=False)
    np.testing.assert_array_equal(a, vote_histogram(priv, cands, weights=w, show_progress=False))


def test_bad_label_shapes_are_clear_errors():
    priv, plab, cands, clab, _ = random_set(1, n=5)
    with pytest.raises(InputError, match="private labels"):
        class_vote_histogram(priv, cands, private_labels=plab[:-1], candidate_labels=clab)
    with pytest.raises(InputError, match="candidate labels"):
        class_vote_histogram(priv, cands, private_labels=plab, candidate_labels=clab[:-1])
    with pytest.raises(InputError, match="weights"):
        class_vote_histogram(priv, cands, private_labels=plab, candidate_labels=clab, weights=np.ones(2))
