"""Pipeline pieces that need no model: budgets, remote-captioner opt-in, release pairs, ledger."""

import json

import pytest

from spti.config import Config
from spti.data.run import RunDir
from spti.errors import ConfigError
from spti.pipeline import _captioner_cfg, _captioning_record, make_budget, release_pairs, write_ledger


def test_remote_captioner_needs_explicit_opt_in_and_is_recorded(tmp_path):
    cfg = Config.from_dict({"data": {"private": "x"}, "captioner": {"backend": "openai", "model": "gpt-4o-mini"}})
    with pytest.raises(ConfigError, match="PRIVATE images"):
        _captioner_cfg(cfg)
    cfg.allow_remote_captioner = True
    assert _captioner_cfg(cfg)["allow_remote"] is True

    run = RunDir.open(tmp_path / "r", cfg, command="t")
    b = make_budget(cfg, 1000)
    rec = _captioning_record({"backend": "openai", "base_url": "https://api.example.test/v1"})
    assert rec["remote"] is True
    d = write_ledger(run, cfg, b, released=0, captioner=rec)
    assert any("remote captioning service" in t and "api.example.test" in t for t in d["trust_assumptions"])
    assert _captioning_record({"backend": "efficientnet-lite0"})["remote"] is False
    assert json.loads(run.privacy_path.read_text())["histograms_planned"] == 10


def test_ledger_reports_what_was_spent_so_far(tmp_path):
    cfg = Config.from_dict({"data": {"private": "x"}, "pe": {"iterations": 4}})
    run = RunDir.open(tmp_path / "r", cfg, command="t")
    b = make_budget(cfg, 5000)
    half = write_ledger(run, cfg, b, released=2)
    full = write_ledger(run, cfg, b, released=4)
    assert half["spent"]["epsilon"] < full["spent"]["epsilon"] == pytest.approx(1.0, rel=1e-6)
    assert half["mechanisms"][0]["count"] == 2 and half["mechanisms"][0]["l2_sensitivity"] == 1.0
    none = write_ledger(run, cfg, b, released=0)
    assert none["mechanisms"] == [] and none["spent"]["epsilon"] == 0


def test_not_private_runs_are_labelled(tmp_path):
    cfg = Config.from_dict({"data": {"private": "x"}, "privacy": {"not_private": True, "epsilon": None}})
    b = make_budget(cfg.validate(), 100)
    assert b.private is False and b.sigma == 0
    run = RunDir.open(tmp_path / "r", cfg, command="t")
    d = write_ledger(run, cfg, b, released=3)
    assert d["private"] is False


def test_release_pairs_give_fresh_seeds_to_repeated_captions():
    pairs = release_pairs(["a", "b", "a"], 2, 10)
    assert pairs == [("a", 10), ("a", 11), ("b", 10), ("b", 11), ("a", 12), ("a", 13)]
