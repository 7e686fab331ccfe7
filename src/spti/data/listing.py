"""Finding image files: the candidates of an ingestion (folder, ImageFolder, listing file) and
:func:`list_images`, the plain sorted listing of a folder of images (a release, a folder to evaluate).

Why apart from decoding and ingestion: the report and the metrics list the files of a folder without
ingesting it, and both listings must walk folders by the same rules (hidden entries skipped, links
followed without looping, sorted by relative path so that the order is the same on every machine).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spti.data.decode import IMAGE_EXTENSIONS, regular_file_reason
from spti.data.io import iter_jsonl
from spti.data.labels import clean_label
from spti.data.users import clean_user_id
from spti.errors import ConfigError, InputError

__all__ = ["Candidate", "find_candidates", "list_images"]

_METADATA_NAMES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
_LISTING_SUFFIXES = (".jsonl", ".csv", ".parquet")
_PATH_COLUMNS = ("path", "file_name")


@dataclass
class Candidate:
    """A file an ingestion will try to decode (``reason`` set: skipped before decoding). ``label``: its
    class in a labelled ingestion (None: none found; :class:`~spti.data.labels.EmptyLabel`: a blank value)."""

    rel: str
    path: Path | None
    user_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # set when the file is skipped before decoding
    detail: str = ""
    label: str | None = None


def _walk(root: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, str, str]]]:
    """Every non-hidden file under ``root`` (relative POSIX path, path), plus unreadable folders.

    Symbolic links are followed, except a directory link that points to one of its own ancestors (a
    loop). A second link to a folder elsewhere is walked again: its files are then exact duplicates,
    which deduplication reduces to the first by sorted path, deterministically. FIFOs, sockets and
    devices are returned with the unreadable folders, as "not_a_regular_file" (never opened: opening a FIFO
    blocks until someone writes to it); broken links are returned as files, so that decoding reports them
    ("missing")."""
    files: list[tuple[str, Path]] = []
    errors: list[tuple[str, str, str]] = []
    st = root.stat()
    stack: list[tuple[Path, str, frozenset[tuple[int, int]]]] = [
        (root, "", frozenset({(st.st_dev, st.st_ino)}))
    ]
    while stack:
        d, rel_d, ancestors = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            errors.append((rel_d or ".", "unreadable", str(e)))
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            rel = f"{rel_d}/{e.name}" if rel_d else e.name
            try:
                is_dir = e.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                try:
                    s = e.stat(follow_symlinks=True)
                except OSError as err:
                    errors.append((rel, "unreadable", str(err)))
                    continue
                key = (s.st_dev, s.st_ino)
                if key in ancestors:
                    continue  # a link loop
                stack.append((Path(e.path), rel, ancestors | {key}))
                continue
            try:
                regular = e.is_file(follow_symlinks=True)  # no system call for a plain file on most systems
            except OSError:
                regular = False
            if not regular and regular_file_reason(e.path) == "not_a_regular_file":
                # a FIFO, socket or device: never listed, never opened (opening a FIFO blocks forever)
                errors.append((rel, "not_a_regular_file", "not a regular file"))
                continue
            files.append((rel, Path(e.path)))  # a broken link stays: decoding reports it as "missing"
    return files, errors


def _json_safe(value: Any) -> Any:
    """Keep listing columns that JSON can hold; stringify the rest (dates ...). Binary columns (e.g.
    embedded image bytes) are dropped by the caller: they do not belong in a records file."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items() if not isinstance(v, (bytes, bytearray))}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _read_rows(listing: Path) -> list[dict[str, Any]]:
    suffix = listing.suffix.lower()
    try:
        if suffix == ".jsonl":
            return list(iter_jsonl(listing))
        if suffix == ".csv":
            with open(listing, encoding="utf-8-sig", newline="") as f:
                return [dict(r) for r in csv.DictReader(f)]
        if suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise InputError(
                    f"{listing}: reading Parquet needs pyarrow: pip install 'spti[parquet]'"
                ) from None
            return pq.read_table(listing).to_pylist()
    except UnicodeDecodeError as e:
        raise InputError(f"{listing}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except InputError:
        raise
    except OSError as e:
        raise InputError(f"{listing}: cannot be read: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - pyarrow / csv errors
        raise InputError(f"{listing}: cannot be parsed as {suffix[1:]}: {type(e).__name__}") from None
    raise InputError(f"{listing}: a listing must end in .parquet, .csv or .jsonl")


def _first_folder(rel: str) -> str | None:
    """The first-level sub-folder of a relative path (None for a file at the top, or an absolute path)."""
    parts = Path(rel).parts
    return parts[0] if (not Path(rel).is_absolute() and len(parts) > 1) else None


def _from_listing(
    listing: Path,
    base: Path,
    user_column: str | None,
    users_from_subfolders: bool,
    label_column: str | None = None,
    labels_from_subfolders: bool = False,
) -> list[Candidate]:
    rows = _read_rows(listing)
    columns: set[str] = set()
    for r in rows:
        columns.update(r)
    path_col = next((c for c in _PATH_COLUMNS if c in columns), None)
    if rows and path_col is None:
        raise InputError(
            f"{listing}: needs a 'path' or 'file_name' column naming the images; found columns "
            f"{sorted(columns)}"
        )
    if user_column is not None and rows and user_column not in columns:
        raise InputError(
            f"{listing}: user_column {user_column!r} is not a column; found columns {sorted(columns)}"
        )
    if label_column is not None and rows and label_column not in columns:
        raise InputError(
            f"{listing}: label_column {label_column!r} is not a column; found columns {sorted(columns)}"
        )
    out: list[Candidate] = []
    for i, row in enumerate(rows):
        value = row.get(path_col) if path_col else None
        if not isinstance(value, str) or not value.strip():
            out.append(Candidate(rel=f"<row {i + 1}>", path=None, reason="missing", detail="no path"))
            continue
        rel = value.strip()
        p = Path(rel)
        path = p if p.is_absolute() else base / p
        meta = {
            str(k): _json_safe(v)
            for k, v in row.items()
            if k not in (path_col, user_column, label_column) and not isinstance(v, (bytes, bytearray))
        }
        c = Candidate(rel=rel, path=path, metadata=meta)
        if user_column is not None:
            c.user_id = clean_user_id(row.get(user_column))
        elif users_from_subfolders:
            c.user_id = _first_folder(rel)
        if label_column is not None:
            c.label = clean_label(row.get(label_column))
        elif labels_from_subfolders:
            c.label = _first_folder(rel)
        out.append(c)
    return out


def find_candidates(
    source: Path,
    user_column: str | None,
    users_from_subfolders: bool,
    label_column: str | None = None,
    labels_from_subfolders: bool = False,
) -> tuple[list[Candidate], str]:
    """The candidate files of an ingestion source and its kind ("listing", "imagefolder" or "folder"),
    unsorted; user ids are attached from ``user_column`` or the first sub-folder, labels (a labelled
    ingestion) from ``label_column`` (normalised by :func:`~spti.data.labels.clean_label`) or the first
    sub-folder. A file without a label gets ``label=None``: the caller decides what that means."""
    labels = (label_column, labels_from_subfolders)
    if source.is_file():
        if source.suffix.lower() not in _LISTING_SUFFIXES:
            raise InputError(
                f"{source}: not a folder and not a listing (.parquet, .csv or .jsonl with a 'path' column)"
            )
        return _from_listing(source, source.parent, user_column, users_from_subfolders, *labels), "listing"
    metadata = [source / n for n in _METADATA_NAMES if (source / n).is_file()]
    if len(metadata) > 1:
        raise InputError(
            f"{source}: holds several metadata files ({', '.join(m.name for m in metadata)}); keep one"
        )
    if metadata:
        return _from_listing(metadata[0], source, user_column, users_from_subfolders, *labels), "imagefolder"
    if user_column is not None:
        raise ConfigError(
            f"user_column={user_column!r} needs a metadata.jsonl/.csv/.parquet in {source} or a listing "
            "file; for a plain folder use users_from_subfolders=True"
        )
    if label_column is not None:
        raise ConfigError(
            f"label_column={label_column!r} needs a metadata.jsonl/.csv/.parquet in {source} or a listing "
            "file; for a plain folder of class sub-folders (<folder>/<class>/<image>) use "
            "labels_from_subfolders=True"
        )
    files, errors = _walk(source)
    out = [Candidate(rel=rel, path=None, reason=reason, detail=d) for rel, reason, d in errors]
    for rel, path in files:
        c = Candidate(rel=rel, path=path)
        if users_from_subfolders:
            c.user_id = rel.split("/", 1)[0] if "/" in rel else None
        if labels_from_subfolders:
            c.label = rel.split("/", 1)[0] if "/" in rel else None
        out.append(c)
    return out, "folder"


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """All image files (by extension, :data:`~spti.data.decode.IMAGE_EXTENSIONS`) under ``folder``,
    recursively, walked like ingestion walks a folder (hidden entries skipped), sorted by relative path so
    that the order — and so a ``max_images`` subset — is the same on every machine."""
    root = Path(folder)
    files, _ = _walk(root)
    found = [(rel, path) for rel, path in files if Path(rel).suffix.lower() in IMAGE_EXTENSIONS]
    return [path for _, path in sorted(found)]
