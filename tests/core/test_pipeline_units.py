"""Pipeline pieces that need no model: budgets, remote-captioner opt-in, release pairs, ledger."""

import json

import pytest

from spti.config import Config
from spti.data.run import RunDir
from spti.errors import ConfigError
from spti.stages.budget import make_budget, write_ledger
from spti.stages.private import captioner_config, captioning_record
from spti.stages.render import release_pairs


def _saved_histograms(run_dir, count, sigma, **how):
    """Checkpoints as the engine leaves them: the ledger is composed from these files, not from a count."""
    import numpy as np

    from spti.data.io import atomic_save_npz

    for t in range(1, count + 1):
        atomic_save_npz(run_dir.checkpoints / f"iter_{t:03d}" / "noisy_histogram.npz", noisy_counts=np.zeros(3),
                        sigma=np.float64(sigma), iteration=np.int64(t), **how)


def test_remote_captioner_needs_explicit_opt_in_and_is_recorded(tmp_path):
    cfg = Config.from_dict({"data": {"private": "x"}, "captioner": {"backend": "openai", "model": "gpt-4o-mini"}})
    with pytest.raises(ConfigError, match="PRIVATE images"):
        captioner_config(cfg)
    cfg.allow_remote_captioner = True
    assert captioner_config(cfg)["allow_remote"] is True

    run_dir = RunDir.open(tmp_path / "r", cfg, command="t")
    b = make_budget(cfg, 1000)
    rec = captioning_record({"backend": "openai", "base_url": "https://api.example.test/v1"})
    assert rec["remote"] is True
    d = write_ledger(run_dir, cfg, b, captioner=rec)
    assert any("remote captioning service" in t and "api.example.test" in t for t in d["trust_assumptions"])
    assert captioning_record({"backend": "efficientnet-lite0"})["remote"] is False
    assert json.loads(run_dir.privacy_path.read_text())["histograms_planned"] == 10


def test_ledger_reports_what_was_spent_so_far(tmp_path):
    cfg = Config.from_dict({"data": {"private": "x"}, "pe": {"iterations": 4}})
    run_dir = RunDir.open(tmp_path / "r", cfg, command="t")
    b = make_budget(cfg, 5000)
    none = write_ledger(run_dir, cfg, b)
    assert none["mechanisms"] == [] and none["spent"]["epsilon"] == 0
    _saved_histograms(run_dir, 2, b.sigma)
    half = write_ledger(run_dir, cfg, b)
    _saved_histograms(run_dir, 4, b.sigma)
    full = write_ledger(run_dir, cfg, b)
    assert half["spent"]["epsilon"] < full["spent"]["epsilon"] == pytest.approx(1.0, rel=1e-6)
    assert half["mechanisms"][0]["count"] == 2 and half["mechanisms"][0]["l2_sensitivity"] == 1.0
    assert half["histograms_released"] == 2 and full["histograms_released"] == 4


def test_not_private_runs_are_labelled(tmp_path):
    cfg = Config.from_dict({"data": {"private": "x"}, "privacy": {"not_private": True, "epsilon": None}})
    b = make_budget(cfg.validate(), 100)
    assert b.private is False and b.sigma == 0
    run_dir = RunDir.open(tmp_path / "r", cfg, command="t")
    _saved_histograms(run_dir, 3, 0.0)
    d = write_ledger(run_dir, cfg, b)
    assert d["private"] is False and d["mechanisms"][0]["count"] == 3


def test_release_pairs_give_fresh_seeds_to_repeated_captions():
    pairs = release_pairs(["a", "b", "a"], 2, 10)
    assert pairs == [("a", 10), ("a", 11), ("b", 10), ("b", 11), ("a", 12), ("a", 13)]


def test_metrics_file_keeps_the_curve_and_the_final_metrics(tmp_path):
    """metrics.json has one writer: the per-iteration rows and the final metrics each keep the other's."""
    from spti.stages.evaluate import MetricsFile

    run_dir = RunDir.open(tmp_path / "r", Config.from_dict({"data": {"private": "x"}}), command="t")
    mf = MetricsFile(run_dir)
    mf.add_iteration({"iteration": 1, "fid": 2.0})
    mf.add_iteration({"iteration": 0, "fid": 3.0})
    mf.add_iteration({"iteration": 1, "fid": 1.5})  # a resumed run replaces, never duplicates
    assert mf.has_iteration(0) and not mf.has_iteration(2)
    d = mf.read()
    assert d["per_iteration"] == [{"iteration": 0, "fid": 3.0}, {"iteration": 1, "fid": 1.5}]
    assert d["differentially_private"] is False
    mf.write_final({"differentially_private": False, "metrics": {"fid": {"value": 1.0}}})
    d = mf.read()
    assert d["metrics"] == {"fid": {"value": 1.0}} and [r["iteration"] for r in d["per_iteration"]] == [0, 1]
    mf.add_iteration({"iteration": 2, "fid": 1.0})
    assert mf.read()["metrics"] == {"fid": {"value": 1.0}} and mf.has_iteration(2)


def test_open_run_requires_out_and_attaches_the_run_log(tmp_path):
    from spti.log import logger
    from spti.stages import open_run

    with pytest.raises(ConfigError, match="--out"):
        open_run(Config.from_dict({"data": {"private": "x"}}), "t")
    cfg = Config.from_dict({"out": str(tmp_path / "r"), "data": {"private": "x"}})
    level = logger.level
    run_dir = open_run(cfg, "t")
    try:
        logger.info("hello from the test")
        assert "hello from the test" in (run_dir.path / "spti.log").read_text()
        # post-processing (spti render) uses an existing run as it is: no validation, config not rewritten
        before = run_dir.config_path.read_text()
        bad = Config.from_dict({"out": str(tmp_path / "r"), "privacy": {"epsilon": 1.0, "sigma": 2.0}})
        assert open_run(bad, "render", post_processing=True).path == run_dir.path
        assert run_dir.config_path.read_text() == before
        with pytest.raises(ConfigError):
            open_run(bad, "t")
    finally:
        for h in list(logger.handlers):
            if getattr(h, "_spti_run_log", None):
                logger.removeHandler(h)
                h.close()
        logger.setLevel(level)


def test_lower_floors_do_not_import_the_pipeline():
    import subprocess
    import sys

    code = ("import sys, spti, spti.data.run, spti.data.cache, spti.text, spti.pe.engine; "
            "print(sorted(m for m in sys.modules if m.startswith(('spti.pipeline', 'spti.stages'))), spti.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("[]")
