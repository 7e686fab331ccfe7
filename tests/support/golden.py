"""A normalised digest of a whole run folder, for the byte-identity test of refactors.

Why a digest and not a copy: the run folder holds PNGs (whose bytes depend on zlib), float features from
torch (whose last bits depend on the CPU's kernels), timestamps and library versions. The digest keeps
everything a refactor could change by mistake — every file's name, every JSON/JSONL value, every image's
pixels, every array's shape and (rounded) values, the log's messages, the report's text — and drops only
versions, timestamps and the run's absolute location.

Regenerate the golden files only when a change of behaviour is intended:
    python -m pytest tests/e2e/test_golden_run.py --update-golden
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

#: Keys whose values are versions, timestamps or machine facts: never part of the behaviour.
VOLATILE_KEYS = {"created", "finished", "spti_version", "python", "platform", "libraries", "version",
                 "timestamp", "generated", "elapsed_s", "seconds", "wall_s"}
_TS = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:[+-]\d\d:\d\d|Z)?")
_B64 = re.compile(r"data:[a-z/+.-]+;base64,[A-Za-z0-9+/=]+")
_HTML_VOLATILE = re.compile(r"(&quot;(?:libraries|python|platform|spti_version)&quot;: )(?:\{[^{}]*\}|&quot;[^&]*&quot;)", re.S)
_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d+(?:e[+-]?\d+)?")


def _round(x: float) -> float | str:
    if not np.isfinite(x):
        return str(x)
    return float(f"{x:.5g}")


_SITE = re.compile(r"\S*?/(?:site|dist)-packages/")


def _norm(obj: Any, root: str) -> Any:
    if isinstance(obj, dict):
        return {k: _norm(v, root) for k, v in sorted(obj.items()) if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_norm(v, root) for v in obj]
    if isinstance(obj, float):
        return _round(obj)
    if isinstance(obj, str):
        return _SITE.sub("<site-packages>/", _TS.sub("<time>", obj.replace(root, "<run>")))
    return obj


def _text(s: str, root: str) -> str:
    s = s.replace(root, "<run>")
    s = _SITE.sub("<site-packages>/", s)
    s = _B64.sub("<data>", s)
    s = _TS.sub("<time>", s)
    return _FLOAT.sub(lambda m: repr(_round(float(m.group()))), s)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:20]


def _array(a: np.ndarray) -> dict[str, Any]:
    a = np.asarray(a)
    out: dict[str, Any] = {"shape": list(a.shape), "dtype": str(a.dtype)}
    if a.dtype.kind in "iub" or a.dtype.kind in "US":
        out["sha"] = _sha(np.ascontiguousarray(a).tobytes())
    elif a.dtype.kind == "f" and a.size:
        f = a.astype(np.float64)
        out["sum"] = _round(float(f.sum()))
        out["abs_sum"] = _round(float(np.abs(f).sum()))
    return out


def file_digest(p: Path, root: str) -> Any:
    suffix = p.suffix.lower()
    if suffix == ".json":
        return _norm(json.loads(p.read_text(encoding="utf-8")), root)
    if suffix == ".jsonl":
        return [_norm(json.loads(x), root) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
    if suffix in (".png", ".jpg", ".jpeg", ".webp"):
        from PIL import Image

        with Image.open(p) as im:
            return {"size": list(im.size), "mode": im.mode, "pixels": _sha(np.asarray(im).tobytes())}
    if suffix == ".npy":
        return _array(np.load(p, mmap_mode="r"))
    if suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            return {k: _array(z[k]) for k in sorted(z.files)}
    if suffix == ".log":
        lines = [re.sub(r"^<time> ", "", _text(x, root)) for x in p.read_text(encoding="utf-8").splitlines()]
        return lines
    if suffix in (".yaml", ".yml", ".txt", ".md", ".csv"):
        return _text(p.read_text(encoding="utf-8"), root).splitlines()
    if suffix in (".html",):
        html = _text(p.read_text(encoding="utf-8"), root)
        html = re.sub(r"<script.*?</script>", "<script/>", html, flags=re.S)
        # the manifest dump in the report's details: versions and machine facts (as VOLATILE_KEYS in JSON)
        html = _HTML_VOLATILE.sub(r"\1<volatile>", html)
        return _sha(html.encode())
    return _sha(p.read_bytes())


def run_digest(run_path: Path, *, skip: tuple[str, ...] = (), base: Path | None = None) -> dict[str, Any]:
    """``{relative path: normalised content}`` for every file of a run folder. ``base``: a folder that
    holds the run and its inputs (a test's tmp_path), replaced by ``<run>`` in every text."""
    run_path = Path(run_path)
    root = str(Path(base or run_path).resolve())
    out: dict[str, Any] = {}
    for p in sorted(run_path.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(run_path).as_posix()
        if any(rel == s or rel.startswith(s.rstrip("/") + "/") for s in skip):
            continue
        out[rel] = file_digest(p, root)
    return out


def dumps(d: dict[str, Any]) -> str:
    buf = io.StringIO()
    json.dump(d, buf, indent=1, sort_keys=True, ensure_ascii=False)
    return buf.getvalue() + "\n"
