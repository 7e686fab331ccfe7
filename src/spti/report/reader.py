"""Reading a run folder for the report: every part optional, every problem a note, no file outside the
run folder (or inside ``private/``) pulled in; and the redaction of private paths from the config."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class RunReader:
    """Reads the optional parts of a run folder; every problem becomes a note, never an exception."""

    def __init__(self, root: Path):
        self.root = root
        self.notes: list[str] = []

    def json(self, rel: str) -> Any:
        p = self.root / rel
        if not p.is_file():
            return None
        try:
            with open(p, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            self.notes.append(f"{rel} could not be read ({type(e).__name__}); that part is omitted")
            return None

    def jsonl(self, rel: str | Path) -> list[dict[str, Any]] | None:
        p = self.root / rel
        if not p.is_file():
            return None
        from spti.data.io import iter_jsonl

        name = Path(rel).as_posix()

        def bad_line(lineno: int, what: str) -> None:
            self.notes.append(f"{name}: line {lineno} {what}; skipped")

        try:
            return list(iter_jsonl(p, on_bad_line=bad_line))
        except OSError as e:
            self.notes.append(f"{name} could not be read ({type(e).__name__})")
            return None

    def text(self, rel: str) -> str | None:
        p = self.root / rel
        if not p.is_file():
            return None
        try:
            return p.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            self.notes.append(f"{rel} could not be read ({type(e).__name__})")
            return None

    def inside(self, path: Path, *, allow_private: bool) -> Path | None:
        """``path`` resolved, if it lies inside the run folder and (unless allowed) outside private/:
        a row of a jsonl file must not be able to pull an arbitrary or private file into the report."""
        try:
            rp = path.resolve()
            root = self.root.resolve()
        except OSError:
            return None
        if root != rp and root not in rp.parents:
            return None
        if not allow_private and (root / "private" == rp or (root / "private") in rp.parents):
            return None
        return rp


_PRIVATE_CONFIG_KEYS = {"private", "data", "out", "private_paths", "path", "paths"}
_COMMAND_KEYS = ("command", "last_command")
#: Keys whose string value is a path to redact: the private data, and the accuracy metrics' real labelled
#: sets (``evaluate.real_labelled`` / ``real_train``), often held-out private data too.
_PATH_KEYS = ("private", "real_labelled", "real_train")


def redact(obj: Any) -> Any:
    """Config/manifest with paths to the private collection replaced and command lines cut to their
    subcommand (a run folder of an older spti recorded ``spti run --data /secret/...``): a report may be
    shared more widely than the run folder, and private file names are private. Credentials are replaced by
    :func:`spti.redact.redact_secrets` (idempotent: run folders of an older spti may still hold them)."""
    from spti.data.run import command_name
    from spti.redact import redact_secrets

    obj = redact_secrets(obj)
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if k in _COMMAND_KEYS and isinstance(v, str):
                out[k] = command_name(v)
                continue
            if k == "data" and isinstance(v, Mapping):
                out[k] = {
                    kk: ("<redacted>" if kk in _PRIVATE_CONFIG_KEYS or "path" in str(kk) else vv)
                    for kk, vv in v.items()
                }
            elif k in ("out", "private_paths") or (k in _PATH_KEYS and isinstance(v, str)):
                out[k] = "<redacted>"
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj
