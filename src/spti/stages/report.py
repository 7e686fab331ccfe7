"""The last stage: the run's self-contained HTML report (``report.html``), built by :mod:`spti.report`."""

from __future__ import annotations

from spti.data.run import RunDir
from spti.log import logger


def report_stage(run_dir: RunDir) -> None:
    """Write report.html; a missing optional dependency of the report skips it with a note in the log."""
    try:
        from spti.report import build_report

        build_report(run_dir.path)
    except ImportError:  # pragma: no cover - report extras missing
        logger.info("report skipped (pip install 'spti[report]')")
