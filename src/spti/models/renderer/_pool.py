"""The public pool of the ``retrieval`` renderer: which files it holds, and the checks that keep private
images out of it (see :mod:`spti.models.renderer.retrieval`, whose renders are pool images released byte for
byte). Messages and logs name the public pool only, never the private data or how many copies were found."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from spti.data.decode import IMAGE_EXTENSIONS
from spti.data.io import atomic_write_jsonl, read_jsonl
from spti.errors import ConfigError, InputError
from spti.hashing import sha256_file
from spti.log import logger, progress

__all__ = ["list_pool", "private_copies", "refuse_overlap"]


def list_pool(root: Path) -> list[str]:
    """Image files under ``root`` (recursive), as sorted POSIX paths relative to ``root``.

    Sorted so that pool indices, the cache key and the retrieved images do not depend on the file system's
    directory order. Hidden files and folders (``.name``) are skipped: they are usually thumbnails or
    partial downloads, and this is where spti's own cache may live.
    """
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            files.append(Path(dirpath, name).relative_to(root).as_posix())
    files.sort()
    return files


def refuse_overlap(pool_dir: Path, files: list[str], private: Path) -> None:
    """ConfigError when the pool folder ``pool_dir`` (holding ``files``, from :func:`list_pool`) and the
    private data share files by location. The messages name the (public) pool only, never the private path."""
    try:
        pool = pool_dir.resolve()
        priv = private.resolve()
    except (OSError, RuntimeError) as e:  # a link loop; the message would name the private path
        raise ConfigError(
            f"renderer retrieval: cannot resolve the pool or the private data path ({type(e).__name__})"
        ) from None
    if pool == priv:
        raise ConfigError(
            f"renderer retrieval: the public pool {str(pool_dir)!r} is the private data folder; its images "
            "would be released verbatim. Point 'pool' (data.public_pool) at a folder of public images"
        )
    if priv in pool.parents:
        raise ConfigError(
            f"renderer retrieval: the public pool {str(pool_dir)!r} lies inside the private data; its "
            "images would be released verbatim. Point 'pool' (data.public_pool) at a folder of public images"
        )
    if pool in priv.parents:
        raise ConfigError(
            f"renderer retrieval: the public pool {str(pool_dir)!r} contains the private data; private "
            "images would be released verbatim. Move the private data out of the pool folder"
        )
    if not priv.is_dir():
        return  # a listing file: the hash check covers the images it names
    for rel in files:
        try:
            real = (pool_dir / rel).resolve()
        except (OSError, RuntimeError):
            continue  # unreadable: dropped when the pool is captioned
        if real == priv or priv in real.parents:
            raise ConfigError(
                f"renderer retrieval: pool file {rel!r} under {str(pool_dir)!r} is a link into the private "
                "data; its image would be released verbatim. Remove the link from the pool"
            )


def private_copies(
    pool_dir: Path, files: list[str], fingerprint: str, cache_dir: Path | None, exclude_hashes: Iterable[str] | None
) -> frozenset[str]:
    """Pool files whose bytes have a sha256 in ``exclude_hashes`` (the private images'). The pool's hashes
    are cached in ``cache_dir`` under the pool's ``fingerprint`` (public data)."""
    if exclude_hashes is None:
        return frozenset()
    if isinstance(exclude_hashes, (str, bytes)):
        raise ConfigError("renderer retrieval: exclude_hashes must be a list of sha256 hex digests")
    private = {str(h).lower() for h in exclude_hashes}
    if not private:
        return frozenset()
    hashes = _pool_hashes(pool_dir, files, fingerprint, cache_dir)
    out = frozenset(rel for rel, h in hashes.items() if h in private)
    if out:
        logger.warning(
            "retrieval: some public pool images are byte-identical to private images and are left out of the "
            "pool (a retrieval render is released as it is)"
        )
    return out


def _pool_hashes(pool_dir: Path, files: list[str], fingerprint: str, cache_dir: Path | None) -> dict[str, str]:
    """sha256 of every pool file, cached in cache_dir by the pool's fingerprint (public data)."""
    path = cache_dir / f"retrieval-pool-{fingerprint}.sha256.jsonl" if cache_dir else None
    if path is not None and path.is_file():
        try:
            rows = {str(r["file"]): str(r["sha256"]) for r in read_jsonl(path)}
            if set(rows) == set(files):
                return rows
        except (OSError, InputError, KeyError, TypeError):
            pass
        logger.warning("retrieval: ignoring unusable pool hash cache %s", path)
    hashes: dict[str, str] = {}
    for rel in progress(files, desc="hashing pool", total=len(files), unit="file"):
        try:
            hashes[rel] = sha256_file(pool_dir / rel)
        except OSError:
            hashes[rel] = ""  # unreadable: it is dropped when the pool is captioned
    if path is not None:
        atomic_write_jsonl(path, ({"file": f, "sha256": h} for f, h in hashes.items()))
    return hashes
