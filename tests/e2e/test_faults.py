"""Fault injection that stays (issue 10.8): real ``spti`` processes killed with SIGKILL at 20+ points,
two commands on one run folder, a disk that fills up.

Kill points are *observed*, not planted: a point is "file X of the run folder has just appeared" (plus a
short wait so that the next step is under way), and the process is then SIGKILLed from outside. The fakes
of ``support.slow_fakes`` add small delays so that each stage lasts long enough to be hit: ingestion
(a patched per-file decode delay), captioning, the generation / voting / selection of every iteration,
rendering and the report, for text voting and for image voting. After every kill the same command is
started again, to be killed at the next point; after the last point it runs to the end.

What must hold, with secure noise (a redrawn histogram would have different bytes): the run completes; T
noisy histograms, each byte-identical to the first time it was seen; a release consistent with the last
population and the ledger; no temporary file and no lock file left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from PIL import Image

TESTS = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "yellow": (230, 220, 40)}

#: ``spti`` with a per-file decode delay (the only way to make ingesting 60 tiny files take long enough to
#: be killed in the middle); everything else is the real command line.
DRIVER = (
    "import os, sys, time\n"
    "import spti.data.images as m\n"
    "_verify, _delay = m._verify, float(os.environ.get('SPTI_TEST_DECODE_DELAY', '0'))\n"
    "def slow(path, max_pixels):\n"
    "    time.sleep(_delay)\n"
    "    return _verify(path, max_pixels)\n"
    "m._verify = slow\n"
    "from spti.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]


def private_images(root: Path, n: int = 60) -> Path:
    mix = ["red"] * 6 + ["blue"] * 3 + ["green"] * 2 + ["yellow"]
    for i in range(n):
        root.mkdir(parents=True, exist_ok=True)
        im = Image.new("RGB", (16, 16), COLOURS[mix[i % len(mix)]])
        im.putpixel((0, 0), (i, i, i))  # every file distinct: no duplicates
        im.save(root / f"img{i:03d}.png")
    return root


@dataclass
class Point:
    """Kill ``delay`` seconds after ``files`` (a glob under the run folder) first matches something."""

    label: str
    files: str
    delay: float = 0.0

    def reached(self, run: Path) -> bool:
        return any(run.glob(self.files))


def pe_points(T: int) -> list[Point]:
    pts: list[Point] = []
    for t in range(1, T + 1):
        pts += [
            Point(f"generation {t}", f"checkpoints/iter_{t - 1:03d}/population.jsonl", 0.15),
            Point(f"voting {t}", f"checkpoints/iter_{t:03d}/candidates.jsonl", 0.05),
            Point(f"selection {t}", f"checkpoints/iter_{t:03d}/noisy_histogram.npz", 0.0),
        ]
    return pts


def histograms(run: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in sorted(run.glob("checkpoints/iter_*/noisy_histogram.npz"))}


def leftovers(run: Path) -> list[str]:
    return [str(p.relative_to(run)) for p in run.rglob("*")
            if p.name.endswith(".tmp") or ".tmp." in p.name or p.name == ".lock"]


def kill_at_points(cmd: list[str], run: Path, points: list[Point], env: dict[str, str]) -> list[str]:
    """Run ``cmd`` again and again, SIGKILLing it at each point in turn; finally let it finish. Checks after
    every kill that no histogram seen before has changed. Returns the labels of the points hit."""
    seen: dict[str, bytes] = {}
    hit: list[str] = []
    for pt in points:
        if pt.reached(run):  # the previous kill landed after this point's file: nothing to wait for
            continue
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not pt.reached(run) and proc.poll() is None:
            assert time.monotonic() < deadline, f"never reached {pt.label}"
            time.sleep(0.003)
        if pt.delay and proc.poll() is None:
            time.sleep(pt.delay)
        if proc.poll() is None:
            proc.kill()
            hit.append(pt.label)
        rc = proc.wait()
        err = proc.stderr.read()
        proc.stderr.close()
        assert rc in (0, -9), f"{pt.label}: exit {rc}\n{err[-3000:]}"
        now = histograms(run)
        for k, b in seen.items():
            assert now[k] == b, f"the noisy histogram of {k} was rewritten after the kill at {pt.label}"
        seen.update(now)
        if rc == 0:
            break
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    now = histograms(run)
    for k, b in seen.items():
        assert now[k] == b, f"the noisy histogram of {k} was rewritten by the final run"
    return hit


def check_release(run: Path, T: int, N: int, per_caption: int) -> None:
    assert sorted(histograms(run)) == [f"iter_{t:03d}" for t in range(1, T + 1)]
    last = [json.loads(x)["text"] for x in (run / "checkpoints" / f"iter_{T:03d}" / "population.jsonl").read_text().splitlines()]
    released = [json.loads(x)["text"] for x in (run / "release" / "dp_captions.jsonl").read_text().splitlines()]
    assert released == last and len(released) == N
    meta = [json.loads(x) for x in (run / "release" / "metadata.jsonl").read_text().splitlines()]
    assert len(meta) == N * per_caption
    names = {p.name for p in (run / "release").rglob("*.png")}
    assert len(names) == N * per_caption
    assert all(Path(str(m.get("file_name") or m.get("path") or m.get("image"))).name in names for m in meta), meta[:2]
    ledger = json.loads((run / "privacy.json").read_text())
    assert ledger["histograms_released"] == T and ledger["mechanisms"][0]["count"] == T
    assert json.loads((run / "release" / "privacy.json").read_text())["histograms_released"] == T
    assert (run / "report.html").is_file()
    assert not leftovers(run), leftovers(run)


def write_config(path: Path, **over) -> Path:
    d = {
        "seed": 1,
        "progress": False,
        "generation": {"domain": "a coloured object", "variation_mode": "rephrase"},
        "privacy": {"epsilon": 2.0},  # secure noise: a histogram drawn twice would not be byte-identical
        "captioner": {"backend": "support.slow_fakes:SlowColourCaptioner", "delay": 0.02},
        "llm": {"backend": "support.fakes:ScriptedLLM", "delay": 0.03},
        "text_embedder": {"backend": "support.slow_fakes:SlowBowEmbedder", "delay": 0.3},
        "image_embedder": {"backend": "support.slow_fakes:SlowMeanColourEmbedder", "delay": 0.1},
        "renderer": {"backend": "support.slow_fakes:SlowSolidRenderer", "delay": 0.05},
    }
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    path.write_text(yaml.safe_dump(d))
    return path


def run_cmd(cfgp: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", DRIVER, "run", "--config", str(cfgp), "--data", str(data), "--out", str(out),
            "--no-progress", *extra]


def test_sigkill_at_every_stage_text_and_image_voting(tmp_path):
    env = {**ENV, "SPTI_TEST_DECODE_DELAY": "0.02"}
    data = private_images(tmp_path / "private")
    hits: list[str] = []

    # ---- text voting: ingest, caption, embed, 3 iterations x (generation, voting, selection), render, report
    T, N = 3, 8
    run = tmp_path / "text"
    cfgp = write_config(tmp_path / "text.yaml")
    points = [
        Point("ingest", "manifest.json", 0.15),
        Point("caption", "private/ingest.jsonl", 0.3),
        Point("embed private captions", "private/captions/shard-*.jsonl", 0.0),
        Point("generation 0", "private/text_features-*.npy", 0.1),
        *pe_points(T),
        Point("render", f"checkpoints/iter_{T:03d}/population.jsonl", 0.2),
        Point("report", "release/privacy.json", 0.0),
    ]
    cmd = run_cmd(cfgp, data, run, "--iterations", str(T), "--population", str(N), "--variations", "2")
    hits += [f"text: {h}" for h in kill_at_points(cmd, run, points, env)]
    check_release(run, T, N, 1)

    # ---- image voting: ingest, embed images, 2 iterations x (generation, voting, selection), render, report
    T, N = 2, 6
    run = tmp_path / "image"
    cfgp = write_config(tmp_path / "image.yaml", renderer={"delay": 0.02}, render={"images_per_caption": 2})
    points = [
        Point("ingest", "manifest.json", 0.15),
        Point("embed private images", "private/ingest.jsonl", 0.2),
        Point("generation 0", "private/image_features-*.npy", 0.1),
        *pe_points(T),
        Point("render", f"checkpoints/iter_{T:03d}/population.jsonl", 0.1),
        Point("report", "release/privacy.json", 0.0),
    ]
    cmd = run_cmd(cfgp, data, run, "--voting", "image", "--iterations", str(T), "--population", str(N),
                  "--variations", "2")
    hits += [f"image: {h}" for h in kill_at_points(cmd, run, points, env)]
    check_release(run, T, N, 2)

    print(f"{len(hits)} kill points hit: {hits}")
    assert len(hits) >= 20, hits


def test_two_commands_on_one_run_folder(tmp_path):
    """Two `spti run` on the same --out: the second fails at once naming the first's pid; the first
    completes with T histograms drawn once."""
    data = private_images(tmp_path / "private", 24)
    T, N = 2, 6
    run = tmp_path / "run"
    cfgp = write_config(tmp_path / "c.yaml")
    cmd = run_cmd(cfgp, data, run, "--iterations", str(T), "--population", str(N), "--variations", "2")
    first = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "private" / "ingest.jsonl").exists():
            assert first.poll() is None, first.stderr.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        second = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"in use by another spti process (pid {first.pid})" in second.stderr
        assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        first.stderr.close()
    check_release(run, T, N, 1)
    log = (run / "spti.log").read_text()
    assert all(log.count(f"iteration {t}/{T}: ") == 1 for t in range(1, T + 1)), log


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small disk needs `mount -t tmpfs` as root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()[:200]}")


def test_a_full_disk_stops_with_a_clear_message_and_resumes(tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "1m")
    try:
        data = private_images(tmp_path / "private", 24)
        T, N = 2, 6
        run = disk / "run"
        cfgp = write_config(tmp_path / "c.yaml", captioner={"delay": 0}, text_embedder={"delay": 0},
                            llm={"delay": 0}, renderer={"delay": 0})
        cmd = run_cmd(cfgp, data, run, "--iterations", str(T), "--population", str(N), "--variations", "2")
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as f:  # fill the disk, then give back ~40 KB: the run starts,
            try:  # then a write fails
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        with open(filler, "r+b") as f:
            f.truncate(max(0, filler.stat().st_size - 40 * 1024 + free))
        full = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
        assert full.returncode == 2, full.stderr[-3000:]
        assert "no space left in" in full.stderr and "free space and run the same command again" in full.stderr
        assert "Traceback" not in full.stderr, full.stderr[-3000:]
        filler.unlink()
        done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        check_release(run, T, N, 1)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
