"""FeatureCache: a cache is a shortcut, never a reason to lose a run."""

from __future__ import annotations

import logging

import numpy as np

from spti.data.cache import FeatureCache


def _fill(directory, batches):
    cache = FeatureCache(directory, "f")
    for keys, vecs in batches:
        cache.put_many(keys, np.asarray(vecs, dtype=np.float32))
    return cache


def test_reloads_what_was_written(tmp_path):
    _fill(tmp_path, [(["a", "b"], [[1, 0], [0, 1]]), (["c"], [[2, 2]])])
    again = FeatureCache(tmp_path, "f")
    assert len(again) == 3
    np.testing.assert_array_equal(again.get("c"), [2, 2])


def test_corrupt_shard_is_set_aside_and_recomputed(tmp_path, caplog):
    _fill(tmp_path, [(["a"], [[1, 0]]), (["b"], [[0, 1]]), (["c"], [[3, 3]])])
    shards = sorted((tmp_path / "f").glob("shard-*.npz"))
    shards[1].write_bytes(b"not an npz file")  # a copy cut short / a disk error
    with caplog.at_level(logging.WARNING, logger="spti"):
        cache = FeatureCache(tmp_path, "f")
    assert "set aside" in caplog.text and "shard-000001.npz" in caplog.text
    assert "a" in cache and "c" in cache and "b" not in cache
    calls = []

    def embed(items):
        calls.append(list(items))
        return np.array([[0, 1]] * len(items), dtype=np.float32)

    out = cache.compute(["a", "b", "c"], ["A", "B", "C"], embed)
    assert calls == [["B"]]  # only the lost vector is computed again
    np.testing.assert_array_equal(out, [[1, 0], [0, 1], [3, 3]])
    # the new shard never overwrites a good one, and the unreadable one is kept aside (not deleted)
    names = sorted(p.name for p in (tmp_path / "f").iterdir())
    assert names == ["shard-000000.npz", "shard-000001.npz.corrupt", "shard-000002.npz", "shard-000003.npz"]
    reloaded = FeatureCache(tmp_path, "f")
    assert len(reloaded) == 3 and reloaded._shards == 4


def test_shard_with_mismatched_arrays_is_set_aside(tmp_path):
    (tmp_path / "f").mkdir()
    np.savez(tmp_path / "f" / "shard-000000.npz", keys=np.array([b"a", b"b"], dtype="S64"),
             vectors=np.zeros((3, 2), np.float32))
    cache = FeatureCache(tmp_path, "f")
    assert len(cache) == 0
    assert (tmp_path / "f" / "shard-000000.npz.corrupt").exists()
