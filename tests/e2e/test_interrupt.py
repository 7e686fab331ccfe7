"""Ctrl-C stops every stage within seconds (issue 10.2), worker threads included: a real ``spti`` process
gets SIGINT in the middle of ingestion (slow decodes on the ingestion's thread pool), captioning and
rendering (an OpenAI-compatible server that does not answer: the requests hang on the HTTP client's thread
pool), and must exit with status 130 and the resume hint, without waiting for the work in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from support.fake_openai import FakeOpenAIServer

TESTS = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
       "SPTI_TEST_KEY": "sk-test"}
HINT = "interrupted; run the same command again to resume"
#: How long an interrupted command may take to exit. The work in flight would take a minute.
PROMPT_EXIT_S = 5.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def images(folder: Path, n: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (16, 16), (20 * i % 255, 40, 200)).save(folder / f"{i:03d}.png")
    return folder


def _default_sigint() -> None:
    """In the child, before exec: SIGINT delivered and at its default, as from a shell. A child inherits an
    ignored or blocked SIGINT from its parent, and in a full test session some library loaded earlier in the
    pytest process can leave one behind (seen once, in a fresh venv, not reproduced alone): the command under
    test must start as a user's would."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(cmd: list[str], tmp_path: Path, ready: Callable[[str], bool]) -> tuple[int, str, float]:
    """Start ``cmd``, wait until ``ready(stdout so far)``, send SIGINT; (status, stderr, seconds to exit)."""
    out, err = open(tmp_path / "stdout", "w+"), open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen(cmd, env=ENV, stdout=out, stderr=err, text=True, preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 120
        while not ready((tmp_path / "stdout").read_text()):
            assert proc.poll() is None, (tmp_path / "stderr").read_text()[-3000:]
            assert time.monotonic() < deadline, "the command never reached the stage to interrupt"
            time.sleep(0.05)
        time.sleep(0.3)  # well inside the stage
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close(), err.close()
    return rc, (tmp_path / "stderr").read_text(), took


def test_sigint_during_ingestion_stops_the_decoding_threads(tmp_path):
    data = images(tmp_path / "data", 40)
    driver = (
        "import sys, time\n"
        "import spti.data.images as m\n"
        "def slow(path, max_pixels):\n"
        "    print('decoding', flush=True)\n"
        "    time.sleep(60)\n"  # a decode that takes a minute (a huge image, a slow network disk)
        "m._verify = slow\n"
        "from spti.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    cmd = [sys.executable, "-c", driver, "caption", "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress"]
    rc, err, took = interrupt(cmd, tmp_path, lambda out: "decoding" in out)
    assert rc == 130 and HINT in err, err[-3000:]
    assert took < PROMPT_EXIT_S, f"took {took:.1f}s to stop"
    assert not (tmp_path / "run" / ".lock").exists()


def _remote(srv: FakeOpenAIServer, **extra) -> dict:
    return {"model": "m", "base_url": srv.base_url, "api_key_env": "SPTI_TEST_KEY", "concurrency": 4,
            "timeout": 120, "max_retries": 0, **extra}


def test_sigint_during_captioning_does_not_wait_for_requests_in_flight(tmp_path):
    data = images(tmp_path / "data", 12)
    with FakeOpenAIServer() as srv:
        srv.hang_next(100, seconds=60)
        cfgp = tmp_path / "c.yaml"
        cfgp.write_text(json.dumps({"captioner": {"backend": "openai", **_remote(srv)}}))
        cmd = [sys.executable, "-m", "spti.cli", "caption", "--config", str(cfgp), "--data", str(data),
               "--out", str(tmp_path / "run"), "--allow-remote-captioner", "--no-progress"]
        rc, err, took = interrupt(cmd, tmp_path, lambda out: len(srv.requests) >= 2)
    assert rc == 130 and HINT in err, err[-3000:]
    assert took < PROMPT_EXIT_S, f"took {took:.1f}s to stop"


def test_sigint_during_rendering_does_not_wait_for_requests_in_flight(tmp_path):
    caps = tmp_path / "caps.jsonl"
    caps.write_text("".join(json.dumps({"text": f"a red square number {i}"}) + "\n" for i in range(8)))
    with FakeOpenAIServer() as srv:
        srv.hang_next(100, seconds=60)
        cfgp = tmp_path / "c.yaml"
        cfgp.write_text(json.dumps({"renderer": {"backend": "openai", **_remote(srv, size="32x32")}}))
        cmd = [sys.executable, "-m", "spti.cli", "render", "--config", str(cfgp), "--captions", str(caps),
               "--out", str(tmp_path / "run"), "--no-progress"]
        rc, err, took = interrupt(cmd, tmp_path, lambda out: len(srv.requests) >= 2)
    assert rc == 130 and HINT in err, err[-3000:]
    assert took < PROMPT_EXIT_S, f"took {took:.1f}s to stop"
