"""Small I/O helpers used everywhere: atomic writes and JSON Lines.

Why atomic: a run killed at any moment (OOM, pre-emption, Ctrl-C) must leave every file either in its old
state or its new one, never half-written, so that resuming can trust what it finds.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from spti.errors import DiskFullError, InputError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: errno values of a full disk or an exhausted quota.
NO_SPACE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT") if hasattr(errno, n))


def no_space_error(folder: str | os.PathLike, e: OSError) -> DiskFullError:
    """The error a full disk becomes: where, and that the same command resumes once space is freed."""
    return DiskFullError(
        f"no space left in {folder} ({e.strerror or 'disk full'}); free space and run the same command again "
        "(the run resumes where it stopped)",
        errno=e.errno,
        filename=e.filename if isinstance(e.filename, str) else None,
    )


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file in the same folder, fsynced, then renamed).
    A full disk or quota raises :class:`DiskFullError` naming the folder; the temporary file is removed
    whatever happens."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        if e.errno in NO_SPACE_ERRNOS:
            raise no_space_error(path.parent, e) from e
        raise
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, sort_keys=False, default=_json_default, ensure_ascii=False)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, dumps(obj) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    atomic_write_text(path, "".join(dumps(dict(r), indent=None) + "\n" for r in rows))


def _not_utf8(path: str | os.PathLike, lineno: int, raw: bytes, e: UnicodeDecodeError) -> InputError:
    return InputError(
        f"{path}: line {lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); spti reads "
        "text files as UTF-8: convert the file (e.g. from Latin-1: iconv -f latin1 -t utf-8)"
    )


def iter_text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file (a leading byte-order mark is dropped). A line that is
    not UTF-8 raises InputError naming the file, the line and the expected encoding (never the content)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, lineno, raw, e) from None


def check_utf8(path: str | os.PathLike) -> None:
    """InputError (naming the first line that is not UTF-8) unless the whole file is UTF-8 text: lets a
    reader that decodes in large chunks (csv) report the line, not a traceback."""
    for _ in iter_text_lines(path):
        pass


def iter_jsonl(
    path: str | os.PathLike, *, on_bad_line: Callable[[int, str], None] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the objects of a JSON Lines file; blank lines are skipped. Errors name the line number
    (never the line's content, which may be private).

    A line that is not a JSON object (or not UTF-8, or nested too deeply to parse) raises InputError; with
    ``on_bad_line`` it is skipped instead and reported as ``on_bad_line(line number, "is not valid JSON" |
    "is not a JSON object")`` (the report reads whatever a run folder holds and turns such lines into
    notes). A UTF-8 byte-order mark at the start of the file is accepted."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if on_bad_line is not None:
                    on_bad_line(lineno, "is not valid JSON")
                    continue
                raise _not_utf8(path, lineno, raw, e) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                if on_bad_line is not None:
                    on_bad_line(lineno, "is not valid JSON")
                    continue
                raise InputError(f"{path}: line {lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            except RecursionError:
                if on_bad_line is not None:
                    on_bad_line(lineno, "is not valid JSON")
                    continue
                raise InputError(f"{path}: line {lineno}: JSON nested too deeply to read") from None
            if not isinstance(obj, dict):
                if on_bad_line is not None:
                    on_bad_line(lineno, "is not a JSON object")
                    continue
                raise InputError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
            yield obj


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """np.savez to a temporary file then rename (no pickle: allow_pickle is off on load)."""
    import io as _io

    buf = _io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    import io as _io

    buf = _io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
