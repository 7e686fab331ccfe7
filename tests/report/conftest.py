"""Fixtures of the report tests. This folder goes on sys.path so that the test modules can import the
shared run-folder builder by name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from report_run_fixture import make_run  # noqa: E402


@pytest.fixture()
def run_folder(tmp_path: Path) -> Path:
    """A complete hand-made run folder (see report_run_fixture.make_run)."""
    return make_run(tmp_path / "run")
