"""Small user-facing fixes of issue 10.6: the libraries' loading bars obey --no-progress / progress: false,
and the epsilon = inf error names the flag that exists."""

from __future__ import annotations

import subprocess
import sys

import pytest

from spti.cli import main


def test_epsilon_inf_error_names_the_real_flag(capsys):
    assert main(["privacy", "--epsilon", "inf", "--iterations", "3", "--num-private", "100"]) == 2
    err = capsys.readouterr().err
    assert "--not-private" in err and "--no-privacy" not in err


def test_library_loading_bars_are_off_even_when_tqdm_was_imported_first():
    """TQDM_DISABLE is read when tqdm is imported: a library caller (or a notebook) that imported tqdm
    before spti's set_progress(False) still got diffusers' "Loading pipeline components..." bars."""
    pytest.importorskip("diffusers")
    code = (
        "import tqdm\n"
        "from spti.log import set_progress\n"
        "set_progress(False)\n"
        "from diffusers.utils.logging import tqdm as dbar\n"
        "from transformers.utils.logging import tqdm as tbar\n"
        "for _ in dbar(range(3), desc='Loading pipeline components...'): pass\n"
        "for _ in tbar(range(3), desc='Loading weights'): pass\n"
        "print('done')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Loading" not in proc.stderr, proc.stderr[-2000:]


def test_progress_false_in_the_config_turns_bars_off(tmp_path, monkeypatch):
    import spti.log as log
    from spti.config import Config
    from spti.stages import open_run

    monkeypatch.setattr(log, "_PROGRESS_ENABLED", True)
    for k in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(k, raising=False)
    c = Config.from_dict({"out": str(tmp_path / "run"), "progress": False})
    open_run(c, "render", post_processing=True).close()
    assert not log.progress_enabled()
