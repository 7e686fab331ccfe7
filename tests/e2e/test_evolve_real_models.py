"""`spti evolve` with the real bundled models: SmolLM2-135M-Instruct (GGUF, llama.cpp) and all-MiniLM-L6-v2,
on a small real caption set (tests/data/bedroom_captions.jsonl)."""

import json
from pathlib import Path

import pytest

from spti.cli import main

DATA = Path(__file__).resolve().parents[1] / "data" / "bedroom_captions.jsonl"


@pytest.mark.slow
def test_spti_evolve_with_smollm2_and_minilm(tmp_path):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("sentence_transformers")
    out = tmp_path / "run"
    rc = main([
        "evolve", "--private", str(DATA), "--domain", "a photo of a bedroom", "--epsilon", "4",
        "--iterations", "2", "--population", "6", "--variations", "2", "--out", str(out), "--no-progress",
    ])
    assert rc == 0
    rel = [json.loads(x)["text"] for x in (out / "release" / "dp_captions.jsonl").read_text().splitlines()]
    assert len(rel) == 6 and all(len(t.split()) >= 3 for t in rel)
    private = {json.loads(x)["text"] for x in DATA.read_text().splitlines()}
    assert not private & set(rel)  # the release is written by the LLM, never copied from private data
    ledger = json.loads((out / "privacy.json").read_text())
    assert ledger["private"] is True and ledger["mechanisms"][0]["count"] == 2
    assert ledger["spent"]["epsilon"] == pytest.approx(4.0, rel=1e-6)
    man = json.loads((out / "manifest.json").read_text())
    assert man["noise"]["secure"] is True
    assert man["models"]["llm"]["backend"] == "llamacpp"
    assert "SmolLM2" in json.dumps(man["models"]["llm"]) or "smollm" in json.dumps(man["models"]["llm"]).lower()
    stats = json.loads((out / "stats.json").read_text())["evolve"]
    assert stats["random.llm_calls"] >= 6 and stats["histograms_released"] == 2
    log = (out / "spti.log").read_text()
    assert all(t not in log for t in private)
