"""Progress reaches every kind of output (issue 13, point 3): a tqdm bar on a terminal; when stderr is not a
terminal (CI, SLURM, Ray, nohup), a log line at most every interval per long step with done/total, rate and
ETA, and a closing line. ``--no-progress`` turns the bars off, not the log lines; an interval of 0 does."""

from __future__ import annotations

import io
import logging
import re
import time

import pytest

import spti.log as log


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.fixture()
def records(monkeypatch):
    """The spti logger's INFO messages, captured."""
    got: list[str] = []

    class H(logging.Handler):
        def emit(self, r):
            got.append(r.getMessage())

    h = H(logging.INFO)
    old = log.logger.level
    log.logger.addHandler(h)
    log.logger.setLevel(logging.INFO)
    monkeypatch.setattr(log, "_PROGRESS_ENABLED", True)
    monkeypatch.delenv("SPTI_PROGRESS", raising=False)
    yield got
    log.logger.removeHandler(h)
    log.logger.setLevel(old)


def _slow_step(n: int = 6, pause: float = 0.03) -> list[int]:
    out = []
    for i in log.progress(range(n), desc="fake step", unit="batch"):
        time.sleep(pause)
        out.append(i)
    return out


_LINE = re.compile(r"^fake step: (\d+)/6 batch \((\d+)%\), [\d.e+]+ (batch/s|s/batch), elapsed \d+s, ETA (\d+s|\?)$")


def test_not_a_terminal_logs_done_total_rate_and_eta(monkeypatch, records):
    monkeypatch.setattr(log.sys, "stderr", _Stream(tty=False))
    monkeypatch.setattr(log, "_PROGRESS_INTERVAL", 0.01)
    assert _slow_step() == list(range(6))  # the items pass through unchanged
    lines = [m for m in records if m.startswith("fake step")]
    progress_lines = [m for m in lines if _LINE.match(m)]
    assert progress_lines, lines
    done = [int(_LINE.match(m).group(1)) for m in progress_lines]
    assert done == sorted(done) and 1 <= done[0] and done[-1] <= 6
    assert lines[-1].startswith("fake step: done, 6/6 batch in "), lines
    assert log.sys.stderr.getvalue() == ""  # no bar drawn into a file


def test_lines_come_at_most_once_per_interval(monkeypatch, records):
    monkeypatch.setattr(log.sys, "stderr", _Stream(tty=False))
    monkeypatch.setattr(log, "_PROGRESS_INTERVAL", 3600.0)
    _slow_step(pause=0.0)
    assert not [m for m in records if m.startswith("fake step")]  # a short step says nothing


def test_a_terminal_gets_a_bar_and_no_log_lines(monkeypatch, records):
    stream = _Stream(tty=True)
    monkeypatch.setattr(log.sys, "stderr", stream)
    monkeypatch.setattr(log, "_PROGRESS_INTERVAL", 0.01)
    import tqdm.auto

    bars = []

    class FakeBar:
        def __init__(self, **kw):
            self.kw, self.n, self.closed = kw, 0, False
            bars.append(self)

        def update(self, n):
            self.n += n

        def close(self):
            self.closed = True

    monkeypatch.setattr(tqdm.auto, "tqdm", FakeBar)
    _slow_step()
    assert not [m for m in records if m.startswith("fake step")]
    assert len(bars) == 1 and bars[0].n == 6 and bars[0].closed and bars[0].kw["total"] == 6


def test_no_progress_turns_bars_off_but_keeps_the_log_lines(monkeypatch, records):
    monkeypatch.setattr(log.sys, "stderr", _Stream(tty=True))
    monkeypatch.setattr(log, "_PROGRESS_ENABLED", False)
    monkeypatch.setattr(log, "_PROGRESS_INTERVAL", 0.01)
    _slow_step()
    assert [m for m in records if _LINE.match(m)]
    monkeypatch.setattr(log, "_PROGRESS_INTERVAL", None)  # SPTI_PROGRESS_INTERVAL=0: off entirely
    records.clear()
    _slow_step()
    assert not [m for m in records if m.startswith("fake step")]


@pytest.mark.parametrize(
    ("raw", "want"),
    [("", 30.0), ("5", 5.0), ("0.5", 0.5), ("0", None), ("off", None), ("junk", 30.0), ("-3", None)],
)
def test_interval_from_the_environment(monkeypatch, raw, want):
    monkeypatch.setenv("SPTI_PROGRESS_INTERVAL", raw)
    assert log._interval_from_env() == want


def test_progress_updated_from_threads_counts_every_item(monkeypatch, records):
    """The HTTP backends update one Progress from their worker threads."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(log.sys, "stderr", _Stream(tty=False))
    monkeypatch.setattr(log, "_PROGRESS_INTERVAL", 0.001)
    with log.Progress("threaded", 200, "request") as p, ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda _: (time.sleep(0.0005), p.update(1)), range(200)))
    assert p.done == 200
    assert any(m.startswith("threaded: done, 200/200 request") for m in records)
