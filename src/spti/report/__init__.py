"""The run report: one self-contained HTML file (``report.html``) per run folder.

``build_report(run_dir)`` reads the run folder (only ``manifest.json`` is required) and embeds
everything — images, plots, CSS — so that the file can be opened anywhere without network access.
"""

from __future__ import annotations

from spti.report.html import build_report

__all__ = ["build_report"]
