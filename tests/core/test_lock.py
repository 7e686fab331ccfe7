"""One writer per run folder (issue 10.1): an OS lock on <run>/.lock held for the whole command, re-entrant
within a process, gone with its holder; and noisy histograms that are written once, never replaced."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.fakes import COLOURS, OBJECTS, PLACES, BowEmbedder, ScriptedLLM, caption

from spti.config import Config, GenerationConfig, PEConfig
from spti.data.lock import LOCK_NAME, save_npz_once, write_once
from spti.data.run import RunDir
from spti.errors import RunFolderError

TESTS = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def cfg(**pe) -> Config:
    return Config.from_dict({"data": {"private": "/secret/patients"}, "pe": pe})


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that takes the folder's lock and keeps it until killed."""
    code = (
        "import sys, time\n"
        "from spti.data.lock import lock_run_folder\n"
        "held = lock_run_folder(sys.argv[1])\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_at_once_naming_the_holder(tmp_path):
    run = RunDir.open(tmp_path / "run", cfg(), command="run")
    run.close()
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # removed when the last hold goes
    holder = hold_lock(tmp_path / "run")
    try:
        t0 = time.monotonic()
        with pytest.raises(RunFolderError, match=rf"in use by another spti process \(pid {holder.pid}\)"):
            RunDir.open(tmp_path / "run", cfg(), command="run")
        assert time.monotonic() - t0 < 2
        # post-processing commands (spti render) lock too
        from spti.stages import open_run

        c = cfg()
        c.out = str(tmp_path / "run")
        with pytest.raises(RunFolderError, match=str(holder.pid)):
            open_run(c, "render", post_processing=True)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # SIGKILL: the kernel dropped the lock; the stale file (with a dead pid) does not block anyone
    assert (tmp_path / "run" / LOCK_NAME).exists()
    with RunDir.open(tmp_path / "run", cfg(), command="run") as run:
        assert (tmp_path / "run" / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    a = RunDir.open(tmp_path / "run", cfg(), command="run")
    b = RunDir.open(tmp_path / "run", cfg(), command="run")  # spti.run() twice, the demo's open then run's
    a.close()
    assert (tmp_path / "run" / LOCK_NAME).exists()  # b still holds it
    proc = subprocess.run([sys.executable, "-m", "spti.cli", "report", str(tmp_path / "run")], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"pid {os.getpid()}" in proc.stderr, proc.stderr
    del b  # garbage collection gives the hold up too
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_new_folder_is_locked_before_anything_is_written_and_foreign_folders_get_no_lock_file(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(RunFolderError, match="not an spti run"):
        RunDir.open(tmp_path / "mine", cfg(), command="x")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["thesis.tex"]
    # a brand new folder: another process that created it and holds its lock wins, nothing is written
    (tmp_path / "new").mkdir()
    holder = hold_lock(tmp_path / "new")
    try:
        with pytest.raises(RunFolderError, match=str(holder.pid)):
            RunDir.open(tmp_path / "new", cfg(), command="x")
        assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()
    # a first command killed right after creating the folder: its skeleton is a new run folder
    (tmp_path / "new" / "private").mkdir()
    RunDir.open(tmp_path / "new", cfg(), command="x").close()
    assert RunDir(tmp_path / "new").is_run()


def test_two_real_evolve_commands_on_one_folder_spend_the_budget_once(tmp_path):
    priv = tmp_path / "private.jsonl"
    priv.write_text("".join(json.dumps({"text": caption(c, o, p)}) + "\n" for c in COLOURS for o in OBJECTS for p in PLACES))
    cfgp = tmp_path / "c.yaml"
    cfgp.write_text(
        "llm: {backend: 'support.fakes:ScriptedLLM', delay: 0.02}\n"
        "text_embedder: {backend: 'support.fakes:BowEmbedder'}\n"
        "generation: {variation_mode: rephrase}\n"
    )
    out = tmp_path / "run"
    T = 3
    cmd = [sys.executable, "-m", "spti.cli", "evolve", "--config", str(cfgp), "--private", str(priv), "--domain", "toys",
           "--epsilon", "2", "--iterations", str(T), "--population", "10", "--variations", "2", "--out", str(out),
           "--no-progress"]
    first = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "iter_000" / "population.jsonl").exists():
        assert first.poll() is None, first.stderr.read()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    t0 = time.monotonic()
    second = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"in use by another spti process (pid {first.pid})" in second.stderr
    assert time.monotonic() - t0 < 30  # at once: no model loaded, nothing computed
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    hists = sorted(out.glob("checkpoints/iter_*/noisy_histogram.npz"))
    assert len(hists) == T
    log = (out / "spti.log").read_text()
    for t in range(1, T + 1):  # each histogram drawn (and written) once
        assert log.count(f"iteration {t}/{T}: ") == 1, log
    ledger = json.loads((out / "privacy.json").read_text())
    assert ledger["mechanisms"][0]["count"] == T
    assert not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------------------------------ write once
def test_write_once_never_replaces_a_file(tmp_path):
    p = tmp_path / "h.npz"
    save_npz_once(p, x=np.arange(3))
    before = p.read_bytes()
    with pytest.raises(FileExistsError):
        save_npz_once(p, x=np.arange(4))
    with pytest.raises(FileExistsError):
        write_once(p, b"other")
    assert p.read_bytes() == before
    assert sorted(q.name for q in tmp_path.iterdir()) == ["h.npz"]  # no temporary file left


def test_engine_refuses_to_overwrite_a_histogram_that_appears_while_it_votes(tmp_path):
    """Even without the lock (a second process that got past it), noise is never drawn twice into the
    same iteration's file: the histogram that is already there stays, byte for byte."""
    from spti.pe.candidates import TextCandidateEmbedder
    from spti.pe.engine import PrivateEvolution
    from spti.pe.generation import TextGenerator
    from spti.privacy import NoiseSource

    emb = BowEmbedder()
    inner = TextCandidateEmbedder(emb)
    intruder = {}

    def embed(texts, *, iteration):
        target = tmp_path / f"iter_{iteration:03d}" / "noisy_histogram.npz"
        if iteration == 2 and not target.exists():  # "another process" releases iteration 2 meanwhile
            save_npz_once(target, noisy_counts=np.zeros(len(texts)), sigma=np.float64(1), iteration=np.int64(2))
            intruder["bytes"] = target.read_bytes()
        return inner(texts, iteration=iteration)

    gen = TextGenerator(ScriptedLLM(), GenerationConfig(variation_mode="rephrase"), seed=0)
    engine = PrivateEvolution(
        cfg=PEConfig(iterations=3, population=6, variations=2), generator=gen, embed_candidates=embed,
        private_features=emb.embed([caption("red", "car", "park")] * 5), weights=None, sigma=1.0,
        noise=NoiseSource(), checkpoint_dir=tmp_path,
    )
    with pytest.raises(RunFolderError, match="another process"):
        engine.run()
    assert (tmp_path / "iter_002" / "noisy_histogram.npz").read_bytes() == intruder["bytes"]
    assert not list(tmp_path.rglob("*.tmp"))
