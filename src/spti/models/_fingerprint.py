"""Short, stable identities of weights files, folders and option sets, for manifests and cache keys.

Why one module: every backend records which weights produced its output and keys caches by what changes
that output; the hashes must be computed the same way everywhere (a cache key that changes by accident
throws a cache away, one that fails to change mixes results). File contents are hashed by
:mod:`spti.hashing`; this module adds the cheap identities built on top of it. Standard library only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from spti.hashing import sha256_file


def short_hash(text: str) -> str:
    """First 16 hex digits of the sha256 of ``text`` (UTF-8): the length of every spti cache key."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def json_hash(obj: Any) -> str:
    """:func:`short_hash` of ``obj`` as canonical JSON (sorted keys; non-JSON values as ``str``)."""
    return short_hash(json.dumps(obj, sort_keys=True, default=str))


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a weights file, cached by (path, size, mtime): manifests record it, and re-hashing a
    100 MB file for every backend instance would cost seconds."""
    p = Path(path).resolve()
    st = p.stat()
    return _file_sha256_cached(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _file_sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def stat_fingerprint(root: Path, files: Iterable[str]) -> str:
    """Hash of a list of files (POSIX paths relative to ``root``) with each file's size and mtime.

    Why not the contents: a model folder or an image pool can hold gigabytes that would be read at every
    start. A file replaced in place changes its mtime, which is what build tools rely on too.
    """
    h = hashlib.sha256()
    for rel in files:
        st = (root / rel).stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def folder_fingerprint(folder: Path) -> str:
    """:func:`stat_fingerprint` of every file under ``folder`` (recursive, sorted)."""
    files = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
    return stat_fingerprint(folder, files)
