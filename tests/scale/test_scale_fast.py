"""The Ray-free parts of spti.scale: import hygiene (Ray stays an optional extra), the memory-mapped shard
descriptor, and argument checks that answer before any cluster is contacted."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from spti.errors import InputError
from spti.scale.ray_voting import MemmapShard, memmap_location, ray_vote_histogram


def test_import_spti_and_spti_privacy_never_import_ray():
    code = (
        "import sys, spti, spti.scale, spti.scale.ray_voting, spti.pe.histogram, spti.config\n"
        "from spti.cli import main\n"
        "main(['privacy','--epsilon','1','--iterations','10','--num-private','300000'])\n"
        "print('RAY', sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "RAY []" in out and "TORCH False" in out


def test_memmap_location_finds_the_rows_of_a_view(tmp_path):
    x = np.arange(7 * 5 * 1000, dtype=np.float32).reshape(7000, 5)
    np.save(tmp_path / "f.npy", x)
    mm = np.load(tmp_path / "f.npy", mmap_mode="r")
    for view in (mm, mm[1234:5678], mm[6999:]):
        fn, dt, off, shape = memmap_location(view)
        got = MemmapShard(fn, dt, off, shape, 0, shape[0]).open()
        assert np.array_equal(got, np.asarray(view))
    assert memmap_location(np.asarray(mm)) is None  # a plain array: goes through the object store
    assert memmap_location(mm[:, :2]) is None  # not C-contiguous


def test_a_missing_file_is_an_error_without_its_path(tmp_path):
    secret = tmp_path / "patients-of-dr-x" / "features.npy"
    with pytest.raises(InputError) as e:
        MemmapShard(str(secret), "<f4", 128, (10, 4), 0, 10).open()
    assert "patients" not in str(e.value) and "storage every node sees" in str(e.value)


def test_bad_arguments_fail_before_ray_is_contacted():
    q, k = np.ones((4, 3), np.float32), np.ones((2, 3), np.float32)
    with pytest.raises(InputError, match="transport"):
        ray_vote_histogram(q, k, transport="nfs")
    with pytest.raises(InputError, match="local backend"):
        ray_vote_histogram(q, k, backend="ray")
    with pytest.raises(InputError, match="no candidates"):
        ray_vote_histogram(q, k[:0])
    with pytest.raises(InputError, match="dim"):
        ray_vote_histogram(q, np.ones((2, 4), np.float32))
    assert ray_vote_histogram(q[:0], k).tolist() == [0.0, 0.0]  # nothing to vote: no cluster needed


def test_ray_options_come_from_the_executor_section():
    from spti.config import Config
    from spti.scale.ray_voting import ray_options_from_config

    assert ray_options_from_config(object()) == {}
    cfg = Config()
    if not hasattr(cfg, "executor"):
        pytest.skip("this tree has no executor section")
    assert ray_options_from_config(cfg) == {}
    cfg.executor.address = "auto"
    cfg.executor.roles = {"voting": {"workers": 8, "gpus_per_replica": 1}}
    assert ray_options_from_config(cfg) == {"address": "auto", "shards": 8, "num_gpus": 1}
