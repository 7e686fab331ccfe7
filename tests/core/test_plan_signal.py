"""The dry-run plan's votes-vs-noise section (issue 14): expected votes per candidate next to σ."""

import json

import pytest

from spti.cli import main


def _images(tmp_path, n):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(n):
        Image.new("RGB", (8, 8), (i % 256, 0, 0)).save(d / f"{i}.png")
    return d


@pytest.fixture(autouse=True)
def _no_hub_offline(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the default renderer's hub id need not be cached


def test_plan_warns_when_sigma_exceeds_votes_per_candidate(tmp_path, capsys, caplog):
    import logging

    d = _images(tmp_path, 30)
    with caplog.at_level(logging.WARNING, logger="spti"):
        assert main(["run", "--data", str(d), "--domain", "x", "--out", str(tmp_path / "o"), "--voting", "image",
                     "--population", "10", "--variations", "2", "--iterations", "3", "--epsilon", "1",
                     "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    s = plan["signal"]
    assert s["candidates_per_iteration"] == 30 and s["votes_per_candidate"] == pytest.approx(1.0)
    assert s["sigma"] == pytest.approx(plan["privacy"]["sigma"], rel=1e-3) and s["sigma"] > 1.0
    assert "signal drowns" in s["warning"] and s["fixes"]
    assert any("signal drowns" in r.getMessage() for r in caplog.records)


def test_plan_is_quiet_when_votes_exceed_sigma_or_without_noise(tmp_path, capsys):
    d = _images(tmp_path, 40)
    base = ["run", "--data", str(d), "--domain", "x", "--out", str(tmp_path / "o"), "--voting", "image",
            "--population", "2", "--variations", "1", "--iterations", "1", "--dry-run"]
    assert main([*base, "--epsilon", "4"]) == 0
    s = json.loads(capsys.readouterr().out)["signal"]
    assert s["votes_per_candidate"] == pytest.approx(10.0) and "warning" not in s
    assert s["votes_per_sigma"] > 1
