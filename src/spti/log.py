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
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

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


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar unless progress bars are disabled (or stderr is not a terminal
    and ``SPTI_PROGRESS`` does not force them)."""
    force = os.environ.get("SPTI_PROGRESS", "") == "1"
    if not _PROGRESS_ENABLED or (not force and not sys.stderr.isatty()):
        yield from iterable
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)


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
