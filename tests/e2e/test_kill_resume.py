"""A run killed with SIGKILL in the middle of PE resumes without redrawing noise (secure noise: a redraw
would change the saved histograms), and leaves no half-written file."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.fakes import COLOURS, OBJECTS, PLACES, caption

TESTS = Path(__file__).resolve().parents[1]


def test_sigkill_mid_run_then_resume(tmp_path):
    priv = tmp_path / "private.jsonl"
    priv.write_text("".join(json.dumps({"text": caption(c, o, p)}) + "\n" for c in COLOURS for o in OBJECTS for p in PLACES))
    cfgp = tmp_path / "c.yaml"
    cfgp.write_text(
        "llm: {backend: 'support.fakes:ScriptedLLM', delay: 0.05}\n"
        "text_embedder: {backend: 'support.fakes:BowEmbedder'}\n"
        "generation: {variation_mode: rephrase}\n"
    )
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "spti.cli", "evolve", "--config", str(cfgp), "--private", str(priv), "--domain", "toys",
           "--epsilon", "2", "--iterations", "5", "--population", "10", "--variations", "2", "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = out / "checkpoints" / "iter_002" / "noisy_histogram.npz"
    deadline = time.monotonic() + 120
    while not target.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the run never reached iteration 2"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "release" / "dp_captions.jsonl").exists()  # killed before the end
    saved = {t: (out / "checkpoints" / f"iter_{t:03d}" / "noisy_histogram.npz").read_bytes() for t in (1, 2)}

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for t, b in saved.items():
        assert (out / "checkpoints" / f"iter_{t:03d}" / "noisy_histogram.npz").read_bytes() == b
    ledger = json.loads((out / "privacy.json").read_text())
    assert ledger["mechanisms"][0]["count"] == 5 and ledger["within_budget"] is True
    assert len((out / "release" / "dp_captions.jsonl").read_text().splitlines()) == 10
    assert "resuming" in (out / "spti.log").read_text()
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert not leftovers, leftovers
