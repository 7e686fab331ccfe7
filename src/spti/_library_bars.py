"""Turning off the progress bars of the libraries spti drives, whenever they are imported.

Why more than ``TQDM_DISABLE`` / ``HF_HUB_DISABLE_PROGRESS_BARS``: tqdm reads ``TQDM_DISABLE`` when tqdm is
imported, and diffusers' bars ("Loading pipeline components...") ignore the hub's switch, so a process that
imported tqdm before ``--no-progress`` (any library caller, a notebook) still printed "Loading weights"
bars. transformers and diffusers each have a ``disable_progress_bar()``: it is called at once for a
library already imported, and right after its import for one imported later (a tiny import hook that
looks at two module names and nothing else).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

#: logging module of a library -> its function that turns its bars off.
LIBRARY_BARS: dict[str, str] = {
    "transformers.utils.logging": "disable_progress_bar",
    "diffusers.utils.logging": "disable_progress_bar",
    "huggingface_hub.utils": "disable_progress_bars",
}


def _quiet(module: ModuleType, name: str) -> None:
    fn = getattr(module, LIBRARY_BARS[name], None)
    if callable(fn):
        try:
            fn()
        except Exception:  # noqa: BLE001 - a library's bar switch must never break an import
            pass


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader, then turns the module's bars off; everything else is the real loader's."""

    def __init__(self, loader: Any, name: str):
        self._loader = loader
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _quiet(module, self._name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._loader, attr)


class _QuietOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name not in LIBRARY_BARS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader, name)
                return spec
        return None


def disable_library_bars() -> None:
    """Turn the libraries' bars off now (those imported) and on import (the others)."""
    for name in LIBRARY_BARS:
        module = sys.modules.get(name)
        if module is not None:
            _quiet(module, name)
    if not any(isinstance(f, _QuietOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietOnImport())
