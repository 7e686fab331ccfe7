"""The ``spti`` logger and progress bars.

One named logger (``spti``) so that applications can route or silence spti's messages. Rule: nothing
private (captions, file contents, embeddings, private file names) is ever passed to it; counts, sizes,
timings, model ids, metric values and the user's own paths are fine.

Hence the run's log file (``spti.log``) is NOT differentially private: it holds exact counts computed from
the private data (images ingested, skipped, duplicates, users, empty captions) and metric values measured
against it. It is the data owner's diagnostic record and says so in its first line
(:data:`RUN_LOG_HEADER`); only ``release/`` is meant to be published. Why not a DP log instead: every
``logger`` call of every module (and of plug-in backends) would have to be policed for counts forever, and a
log without the number of skipped files is useless to the person who must fix their data.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger("spti")

#: The first line of every run log file (written when the file is created).
RUN_LOG_HEADER = (
    "# spti run log. NOT differentially private: this log holds counts computed from private data and metric "
    "values; keep it with the run, do not publish it."
)

T = TypeVar("T")

_PROGRESS_ENABLED = os.environ.get("SPTI_NO_PROGRESS", "") in ("", "0")


def set_progress(enabled: bool) -> None:
    """Turn tqdm progress bars on or off for the whole process (``--no-progress`` on the CLI)."""
    global _PROGRESS_ENABLED
    _PROGRESS_ENABLED = bool(enabled)
    if not enabled:  # also silence the bars of the libraries spti drives (tqdm >= 4.66, huggingface_hub)
        os.environ["TQDM_DISABLE"] = "1"
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        from spti._library_bars import disable_library_bars

        disable_library_bars()  # the env vars come too late for a library (or tqdm) already imported


def progress_enabled() -> bool:
    return _PROGRESS_ENABLED


def _interval_from_env() -> float | None:
    """``SPTI_PROGRESS_INTERVAL``: seconds between progress log lines (default 30); ``0`` or ``off`` turns
    the log lines off. A malformed value keeps the default rather than failing a run over a display setting."""
    raw = os.environ.get("SPTI_PROGRESS_INTERVAL", "").strip().lower()
    if raw in ("", "default"):
        return DEFAULT_PROGRESS_INTERVAL
    if raw in ("0", "off", "none", "no", "false"):
        return None
    try:
        v = float(raw)
    except ValueError:
        return DEFAULT_PROGRESS_INTERVAL
    return v if v > 0 and math.isfinite(v) else None


#: Seconds between two progress log lines of one step when no bar is drawn.
DEFAULT_PROGRESS_INTERVAL = 30.0
_PROGRESS_INTERVAL: float | None = _interval_from_env()


def set_progress_interval(seconds: float | None) -> None:
    """Seconds between the progress log lines of a long step when no bar is drawn (stderr is not a terminal,
    or bars are off); None or 0 turns the log lines off. Also set by ``SPTI_PROGRESS_INTERVAL``."""
    global _PROGRESS_INTERVAL
    _PROGRESS_INTERVAL = float(seconds) if seconds and seconds > 0 else None


def progress_interval() -> float | None:
    return _PROGRESS_INTERVAL


def _bars_wanted() -> bool:
    """A tqdm bar is drawn when progress is on and stderr is a terminal (``SPTI_PROGRESS=1`` forces it)."""
    if not _PROGRESS_ENABLED:
        return False
    return os.environ.get("SPTI_PROGRESS", "") == "1" or sys.stderr.isatty()


def _duration(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


class Progress:
    """The progress of one long step (captioning, rendering, embedding, voting, LLM calls).

    Why two forms: a tqdm bar is right on a terminal, but in CI, SLURM, Ray or under ``nohup`` stderr is a
    file and a bar is either absent or a flood of carriage returns, so a long step printed nothing for
    minutes. There, the step logs one line (logger ``spti``, INFO) at most every :func:`progress_interval`
    seconds — done/total, rate, ETA — and a last line when it ends, if it logged any. The lines count work
    items (batches, shards, replies), never their content. Thread-safe: :meth:`update` may be called from
    worker threads (the HTTP backends' requests)."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "it"):
        self.desc, self.total, self.unit = desc, total, unit
        self.done = 0
        self._lock = threading.Lock()
        self._bar: Any = None
        self._interval: float | None = None
        if _bars_wanted():
            from tqdm.auto import tqdm

            self._bar = tqdm(desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)
        else:
            self._interval = _PROGRESS_INTERVAL
        self._start = time.monotonic()
        self._last = self._start
        self._logged = False

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
                return
            if self._interval is None:
                return
            now = time.monotonic()
            if now - self._last >= self._interval:
                self._last = now
                self._logged = True
                logger.info("%s", self._line(now))

    def _line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        rate_s = f"{rate:.3g} {self.unit}/s" if rate >= 0.1 or rate == 0 else f"{1 / rate:.3g} s/{self.unit}"
        if self.total:
            pct = 100.0 * self.done / self.total
            eta = _duration((self.total - self.done) / rate) if rate > 0 else "?"
            return (f"{self.desc}: {self.done}/{self.total} {self.unit} ({pct:.0f}%), {rate_s}, "
                    f"elapsed {_duration(elapsed)}, ETA {eta}")
        return f"{self.desc}: {self.done} {self.unit}, {rate_s}, elapsed {_duration(elapsed)}"

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            elif self._logged:  # a long step said where it was: say that it ended too
                self._logged = False
                elapsed = time.monotonic() - self._start
                of = f"/{self.total}" if self.total else ""
                logger.info("%s: done, %d%s %s in %s", self.desc, self.done, of, self.unit, _duration(elapsed))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate ``iterable`` while reporting progress (:class:`Progress`): a tqdm bar on a terminal, a log
    line at most every :func:`progress_interval` seconds otherwise (or when bars are off).

    ``--no-progress`` / ``progress: false`` turn the bars off, not the log lines (they cost one line per
    interval and are what a batch job's log needs); ``SPTI_PROGRESS_INTERVAL=0`` turns the log lines off."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if not _bars_wanted() and _PROGRESS_INTERVAL is None:
        yield from iterable
        return
    with Progress(desc, total, unit) as p:
        for x in iterable:
            yield x
            p.update(1)


def setup_logging(level: int | str = logging.INFO) -> None:
    """Configure the ``spti`` logger for the CLI: a concise stderr handler, unless the application already
    configured the root logger (then spti's records simply propagate to it). Library users keep control:
    this is only called by the CLI. (Each run also writes its own ``spti.log``: see :func:`attach_run_log`.)"""
    logger.setLevel(level)
    if logging.getLogger().handlers:
        return
    if not any(getattr(h, "_spti_console", False) for h in logger.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s spti: %(message)s", "%H:%M:%S"))
        h._spti_console = True  # type: ignore[attr-defined]
        logger.addHandler(h)


def attach_run_log(path: str | os.PathLike) -> None:
    """Send the ``spti`` logger's records (INFO and up) to the run's own log file at ``path``.

    Why: every run keeps its own log (``spti.log``: counts, timings, model ids, metric values — no caption,
    image or private file name), whether it was started from the CLI or from Python. A new file starts with
    :data:`RUN_LOG_HEADER`, which says that the log is not differentially private. One run log at a time: a
    handler of an earlier run folder in the same process is detached; attaching the same file twice is a
    no-op."""
    target = str(Path(path).resolve())
    for h in list(logger.handlers):
        if getattr(h, "_spti_run_log", None) not in (None, target):
            logger.removeHandler(h)
            h.close()
    if not any(getattr(h, "_spti_run_log", None) == target for h in logger.handlers):
        p = Path(target)
        if not p.is_file() or p.stat().st_size == 0:
            with open(p, "a", encoding="utf-8") as f:
                f.write(RUN_LOG_HEADER + "\n")
        fh = logging.FileHandler(target, encoding="utf-8")
        fh.setLevel(logging.INFO)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        fh._spti_run_log = target  # type: ignore[attr-defined]
        logger.addHandler(fh)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
