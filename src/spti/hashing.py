"""Content hashes: the one home for hashing files, streams and tuples of strings.

Why one module: the same chunked sha256 was written in several places (ingestion, caches, weight
fingerprints); a single, tested helper means every hash spti records is computed the same way. Lowest
floor of the package: imports nothing from spti.
"""

from __future__ import annotations

import hashlib
import os
from typing import IO

CHUNK = 1 << 20  # 1 MiB reads: large files are hashed in constant memory


def sha256_stream(f: IO[bytes], *, rewind: bool = True) -> str:
    """sha256 hex digest of a binary stream read in chunks (from its start when ``rewind``)."""
    if rewind:
        f.seek(0)
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes, in constant memory."""
    with open(path, "rb") as f:
        return sha256_stream(f, rewind=False)


def content_key(*parts: str) -> str:
    """sha256 of a tuple of strings, each terminated by a NUL byte (so ("ab", "c") != ("a", "bc"))."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()
