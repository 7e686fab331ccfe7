import json

import pytest

from spti.config import Config
from spti.data.io import atomic_write_json, read_json
from spti.data.release import public_manifest
from spti.data.run import RunDir
from spti.errors import RunFolderError


def cfg(**pe):
    return Config.from_dict({"data": {"private": "/secret/patients"}, "pe": pe})


def test_new_run_writes_config_and_manifest(tmp_path):
    run_dir = RunDir.open(tmp_path / "run", cfg(iterations=3), command="test")
    assert run_dir.load_config().pe.iterations == 3
    m = run_dir.manifest()
    assert m["spti_version"] and m["seed"] == 0 and "numpy" in m["libraries"]
    assert run_dir.private.is_dir() and run_dir.checkpoints.is_dir()


def test_same_settings_resume_different_settings_refused(tmp_path):
    run_dir = RunDir.open(tmp_path / "run", cfg(iterations=3), command="a")
    RunDir.open(tmp_path / "run", cfg(iterations=4), command="nothing computed yet: anything may change")
    RunDir.open(tmp_path / "run", cfg(iterations=3), command="a")
    (run_dir.checkpoints / "iter_000").mkdir()
    (run_dir.checkpoints / "iter_000" / "population.jsonl").write_text("{}")
    RunDir.open(tmp_path / "run", cfg(iterations=3), command="b")  # resume
    assert RunDir(tmp_path / "run").manifest()["resumed"] is True
    with pytest.raises(RunFolderError, match="pe.iterations"):
        RunDir.open(tmp_path / "run", cfg(iterations=4), command="c")
    # post-processing settings may change between stages
    c = cfg(iterations=3)
    c.renderer = {"backend": "retrieval"}
    RunDir.open(tmp_path / "run", c, command="d")
    # ... except the renderer of image voting, whose renders took part in the selection
    iv = Config.from_dict({"data": {"private": "/secret/patients"}, "pe": {"iterations": 3, "voting": "image"}})
    r2 = RunDir.open(tmp_path / "iv", iv, command="a")
    (r2.checkpoints / "iter_000").mkdir()
    iv2 = Config.from_dict(iv.to_dict())
    iv2.renderer = {"backend": "retrieval"}
    with pytest.raises(RunFolderError, match="renderer"):
        RunDir.open(tmp_path / "iv", iv2, command="b")


def test_caption_stage_locks_only_data_and_captioner(tmp_path):
    run_dir = RunDir.open(tmp_path / "run", cfg(), command="caption")
    (run_dir.private / "captions").mkdir()
    (run_dir.private / "ingest.jsonl").write_text("{}")
    c = cfg()
    c.generation.domain = "a photo of a bedroom"  # the evolve stage has not started: free to change
    RunDir.open(tmp_path / "run", c, command="run")
    c.captioner = {"backend": "hf", "model": "x"}
    with pytest.raises(RunFolderError, match="captioner"):
        RunDir.open(tmp_path / "run", c, command="run")


def test_a_foreign_folder_is_never_overwritten(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(RunFolderError, match="not an spti run"):
        RunDir.open(tmp_path / "mine", cfg(), command="x")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError):
        RunDir.open(tmp_path / "file", cfg(), command="x")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert read_json(tmp_path / "a.json") == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_public_manifest_drops_private_paths():
    m = {"config": {"data": {"private": "/secret"}, "out": "/x", "pe": {}}, "seed": 1}
    pm = public_manifest(m)
    assert "/secret" not in json.dumps(pm) and pm["seed"] == 1


def test_resume_removes_temporary_files_of_interrupted_atomic_writes(tmp_path):
    run_dir = RunDir.open(tmp_path / "run", cfg(), command="a")
    (run_dir.checkpoints / "iter_000").mkdir()
    stale = run_dir.checkpoints / "iter_000" / ".population.jsonl.abc123.tmp"
    stale.write_text("half a file")
    RunDir.open(tmp_path / "run", cfg(), command="b")
    assert not stale.exists()
