"""Where a model's files come from: a Hugging Face hub id or a local path, and whether the hub may be asked.

Why one module: backends used to guess "is this a local path?" with two different rules and read
``HF_HUB_OFFLINE`` with two spellings, so the same config string could mean a folder to one backend and a
hub id to another. Every backend now asks these three functions, and reports a model that failed to load
with :func:`load_error`. Standard library only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from spti.errors import BackendError, ConfigError

#: Values of ``HF_HUB_OFFLINE`` that mean "on", compared case-insensitively (as huggingface_hub reads it).
_TRUE = frozenset({"1", "on", "yes", "true"})
#: ``C:`` at the start: a Windows drive. A hub id never contains a colon.
_DRIVE = re.compile(r"^[A-Za-z]:")


def hub_offline_default() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value: the default of every backend's
    ``local_files_only`` option, so spti and the hub library agree on whether the network may be used."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def resolve_local_files_only(option: bool | None) -> bool:
    """A backend's ``local_files_only`` option: the user's value when given, else :func:`hub_offline_default`."""
    return hub_offline_default() if option is None else bool(option)


def looks_like_local_path(model: str) -> bool:
    """True when ``model`` is meant as a local path rather than a hub id.

    A hub id is ``name`` or ``org/name`` (letters, digits, ``-``, ``_``, ``.``). Anything rooted or relative
    (``/``, ``~``, ``./``, ``../``), with a backslash or a drive letter, with more than one ``/``, or that
    exists on disk is a path. Why guess at all: a mistyped local folder must not silently turn into a hub
    lookup (offline that gives a confusing "not in cache" message; online it could fetch an unrelated
    public model).
    """
    return (
        model.startswith(("/", "~", "./", "../"))
        or model in (".", "..")
        or "\\" in model
        or os.path.isabs(model)
        or bool(_DRIVE.match(model))
        or model.count("/") > 1
        or os.path.exists(model)
    )


def local_model_path(model: str, who: str) -> Path | None:
    """The existing local path ``model`` names (``~`` expanded; a file or a folder), or ``None`` for a hub
    id. Raises :class:`ConfigError` (prefixed with ``who``) when ``model`` looks like a path that does not
    exist, so that the user hears about the typo instead of a hub error."""
    path = Path(model).expanduser()
    if path.exists():
        return path
    if looks_like_local_path(model):
        raise ConfigError(
            f"{who}: local model folder {str(path)!r} does not exist; give an existing folder (written by "
            "save_pretrained or downloaded from the hub) or a Hugging Face hub id like 'org/name'"
        )
    return None


def load_error(what: str, model_id: str, local_files_only: bool, exc: BaseException) -> BackendError:
    """The error of a model (``what``: "LLM", "text embedder", ...) that failed to load from the hub or a
    folder; with ``local_files_only`` it says that offline mode may be why. Raise it ``from exc``."""
    hint = (
        " (local_files_only is on: the model must already be in the Hugging Face cache or be a local folder)"
        if local_files_only
        else ""
    )
    return BackendError(f"could not load {what} {model_id!r}{hint}: {exc}")
