"""`spti demo` at a small size: real data, real bundled weights, no network."""

import json

import pytest

from spti.cli import main


@pytest.mark.slow
def test_demo_small(tmp_path, capsys):
    pytest.importorskip("llama_cpp")
    from spti.demo import find_fashion_mnist

    try:
        find_fashion_mnist()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"Fashion-MNIST not installed: {e}")
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--num-private", "120", "--pool-size", "120", "--population", "8",
               "--iterations", "1", "--variations", "1", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "iteration 0 (no private data)" in text and "release" in text and "report.html" in text
    meta = (out / "release" / "metadata.jsonl").read_text().splitlines()
    assert len(meta) == 8
    cfg = (out / "config.yaml").read_text()
    assert "examples:" in cfg  # public few-shot examples, from the public pool
    ledger = json.loads((out / "privacy.json").read_text())
    assert ledger["private"] is True and ledger["spent"]["epsilon"] == pytest.approx(1.0, rel=1e-6)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"fd-efficientnet", "prdc", "memorization"} <= set(metrics["metrics"])
    assert (out / "report.html").stat().st_size > 10_000

    # `spti audit` in the demo's setting: the run's own candidates (text voting, from the feature cache), the
    # real secure sampler, a bound below the claim, and the report's audit section
    capsys.readouterr()
    assert main(["audit", str(out), "--trials", "20000", "--report"]) == 0
    said = capsys.readouterr().out
    assert "consistent with the claim" in said and "claimed epsilon per histogram" in said
    summary = json.loads((out / "private" / "audit.json").read_text())["summary"]
    assert summary["candidates"]["source"] == "cache" and summary["sensitivity"]["ok"]
    assert summary["epsilon_lower_bound"] < summary["claimed_epsilon"] and summary["seconds"] < 120
    assert "Empirical privacy audit" in (out / "report.html").read_text()
    assert not (out / "release" / "audit.json").exists()
