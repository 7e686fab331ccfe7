"""Ingestion of a private image collection: find, verify, deduplicate, and load lazily.

Why this module is defensive: a private collection can hold 300,000 files gathered over years, and one
zero-byte, truncated, corrupt or gigantic file among them must never kill a run that has already spent
hours (or privacy budget). Every candidate file is therefore *fully decoded once* here, and anything that
cannot be used is skipped with a reason instead of raising. Later stages (captioners, embedders) read the
images again through :func:`iter_batches`, which never holds more than one batch in memory.

Sources (:func:`ingest`):

* a folder, walked recursively (hidden entries, whose name starts with ".", are ignored; symbolic links
  are followed, but a link back to one of its own ancestors is not, so link loops end);
* a Hugging Face ImageFolder: a folder with ``metadata.jsonl``, ``metadata.csv`` or ``metadata.parquet``
  at its root whose ``file_name`` column names the images relative to that folder (other columns are kept
  in :attr:`ImageRecord.metadata`; files the metadata does not list are ignored, as ``datasets`` does);
* a listing file (``.parquet``, ``.csv`` or ``.jsonl``) with a ``path`` (or ``file_name``) column;
  relative paths are resolved against the listing's folder.

Privacy rules followed here: file names and contents are private. Log messages and the
:meth:`IngestResult.summary` carry counts only; per-file reasons go to ``private_dir/skipped.jsonl``;
exception messages name the source folder or a record id, never a file inside the collection.

Duplicates (same sha256 of the file bytes) are counted once, keeping the first by sorted relative path.
With user ids (user-level DP) files are deduplicated *within each user only*: deduplicating across users
would make one user's presence change which images another user contributes (drop user A and user B's
copy, previously removed as A's duplicate, reappears), so two users would change between neighbouring
datasets and the per-user sensitivity the accountant assumes would no longer hold. Within one user, and
without users, deduplication is a function of that unit's own data and keeps the sensitivity intact.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import math
import os
import stat
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from spti.data.io import atomic_write_jsonl, iter_jsonl
from spti.errors import ConfigError, InputError
from spti.log import logger, progress

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SKIP_REASONS",
    "ImageRecord",
    "IngestResult",
    "UnusableImageError",
    "ingest",
    "iter_batches",
    "load_image",
]

#: Same default as Pillow's ``Image.MAX_IMAGE_PIXELS`` (a 1024 MiB RGB canvas / 3 bytes per pixel / 4).
DEFAULT_MAX_PIXELS: int | None = 89_478_485

#: Why a file was skipped. Stable strings: they are the keys of ``summary()["skip_reasons"]``.
SKIP_REASONS: dict[str, str] = {
    "empty": "zero-byte file",
    "not_an_image": "not an image, or a format spti does not read (JPEG, PNG, WebP, BMP, TIFF, GIF only)",
    "corrupt": "the image data could not be decoded",
    "truncated": "the file ends before the image data does",
    "too_many_pixels": "more pixels than max_pixels (possible decompression bomb)",
    "unreadable": "the file or folder could not be read (permissions or I/O error)",
    "missing": "listed but not found, or a broken symbolic link",
    "unsupported_mode": "a pixel format that cannot be converted to RGB",
    "missing_user": "user-level DP was asked for but the file has no user id",
    "out_of_memory": "decoding ran out of memory",
    "changed": "the file's content changed since ingestion",
}

#: The Pillow formats spti opens. Restricting ``Image.open`` to these keeps Pillow's rarer (and more
#: fragile, e.g. EPS through Ghostscript) parsers away from untrusted files. MPO is how Pillow opens many
#: phone JPEGs; DIB is BMP without the file header.
_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "DIB", "TIFF", "GIF")

_METADATA_NAMES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
_LISTING_SUFFIXES = (".jsonl", ".csv", ".parquet")
_PATH_COLUMNS = ("path", "file_name")

T = TypeVar("T")
R = TypeVar("R")


class UnusableImageError(InputError):
    """An image file cannot be used. ``reason`` is one of :data:`SKIP_REASONS`; ``detail`` is the
    underlying library message, which may contain the file's name and so belongs in private files only
    (it is deliberately not part of the exception message)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"image is unusable: {reason} ({SKIP_REASONS.get(reason, reason)})")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageRecord:
    """One verified, deduplicated private image.

    ``id`` ("img-000123") is the record's rank in sorted order, so it is stable for an unchanged
    collection and, unlike a content hash, reveals nothing about the image when it appears in a log or an
    error message. ``width``/``height`` are after EXIF orientation. ``rel`` is the path relative to the
    source (or as written in the listing) and is the sort key; ``metadata`` holds the listing's other
    columns (private, like everything here).
    """

    id: str
    path: Path
    user_id: str | None
    sha256: str
    width: int
    height: int
    rel: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "rel": self.rel,
            "user_id": self.user_id,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ImageRecord:
        try:
            user = obj.get("user_id")
            return cls(
                id=str(obj["id"]),
                path=Path(obj["path"]),
                user_id=None if user is None else str(user),
                sha256=str(obj["sha256"]),
                width=int(obj["width"]),
                height=int(obj["height"]),
                rel=str(obj.get("rel", "")),
                metadata=dict(obj.get("metadata") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"ingestion record is missing or has a malformed field: {e}") from None


@dataclass
class IngestResult:
    """What :func:`ingest` found.

    ``skipped`` lists (relative path, reason) for every file that could not be used (private: it names
    files). Duplicates are not in ``skipped``: ``duplicates`` counts them and ``duplicate_of`` lists
    (relative path, id of the record kept instead). ``skip_details`` maps a skipped path to the library's
    error message, for the owner's eyes only.
    """

    records: list[ImageRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: int = 0
    num_users: int | None = None
    duplicate_of: list[tuple[str, str]] = field(default_factory=list)
    skip_details: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Counts only (no file name, no hash, no user id): safe to log, to put in stats.json and to
        publish."""
        reasons = Counter(reason for _, reason in self.skipped)
        return {
            "images": len(self.records),
            "skipped": len(self.skipped),
            "duplicates": int(self.duplicates),
            "users": self.num_users,
            "skip_reasons": {r: reasons[r] for r in sorted(reasons)},
        }

    def save(self, private_dir: str | os.PathLike[str]) -> None:
        """Write ``skipped.jsonl`` then ``ingest.jsonl`` atomically. ``ingest.jsonl`` is written last
        because its presence is what :meth:`load` (and resuming) trusts."""
        d = Path(private_dir)
        _write_skipped(d, self.skipped, self.skip_details, self.duplicate_of)
        atomic_write_jsonl(d / "ingest.jsonl", (r.to_json() for r in self.records))

    @classmethod
    def load(cls, private_dir: str | os.PathLike[str]) -> IngestResult:
        """Reload a previous ingestion (to resume a run) without decoding any image again."""
        d = Path(private_dir)
        path = d / "ingest.jsonl"
        if not path.is_file():
            raise InputError(f"no previous ingestion in {d}: {path.name} is missing; run the ingestion again")
        records = [ImageRecord.from_json(obj) for obj in iter_jsonl(path)]
        if not records:
            raise InputError(f"{path} lists no image; run the ingestion again")
        skipped: list[tuple[str, str]] = []
        details: dict[str, str] = {}
        dups: list[tuple[str, str]] = []
        sk = d / "skipped.jsonl"
        if sk.is_file():
            for obj in iter_jsonl(sk):
                p, reason = str(obj.get("path", "")), str(obj.get("reason", ""))
                if reason == "duplicate":
                    dups.append((p, str(obj.get("duplicate_of", ""))))
                else:
                    skipped.append((p, reason))
                    if obj.get("detail"):
                        details[p] = str(obj["detail"])
        return cls(
            records=records,
            skipped=skipped,
            duplicates=len(dups),
            num_users=_count_users(records),
            duplicate_of=dups,
            skip_details=details,
        )


# --------------------------------------------------------------------------------------------------
# Pillow's global switches


_PIL_LOCK = threading.Lock()
_PIL_DEPTH = 0
_PIL_SAVED: tuple[int | None, bool] | None = None


@contextmanager
def _strict_pil() -> Iterator[None]:
    """Within this block: Pillow's own pixel limit is off (spti checks ``max_pixels`` itself, so that a
    caller can raise the limit above Pillow's 2x hard error and so that no DecompressionBombWarning is
    emitted from worker threads) and truncated files raise even if someone set
    ``ImageFile.LOAD_TRUNCATED_IMAGES = True``. These are module globals of Pillow, so a reentrant
    counter restores the caller's values when the last user (any thread) leaves; while ingestion runs,
    other Pillow code in the process sees the same settings.
    """
    global _PIL_DEPTH, _PIL_SAVED
    with _PIL_LOCK:
        if _PIL_DEPTH == 0:
            _PIL_SAVED = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
            Image.MAX_IMAGE_PIXELS = None
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        _PIL_DEPTH += 1
    try:
        yield
    finally:
        with _PIL_LOCK:
            _PIL_DEPTH -= 1
            if _PIL_DEPTH == 0 and _PIL_SAVED is not None:
                Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = _PIL_SAVED
                _PIL_SAVED = None


# --------------------------------------------------------------------------------------------------
# Decoding one file


def _check_max_pixels(max_pixels: int | None) -> int | None:
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ConfigError(f"max_pixels must be a positive integer or None (no limit), got {max_pixels!r}")
    return max_pixels


def _scale_to_uint8(arr: Any, *, is_float: bool) -> Any:
    """Map high-bit-depth samples to 0..255 by their nominal range, so a mid-grey 16-bit pixel (32768)
    becomes 128 rather than being clipped to white as ``Image.convert("L")`` would do. Nominal ranges:
    integers within 0..65535 are 16-bit samples; floats within 0..1 are unit samples; anything else is
    stretched from its own minimum to its maximum (no nominal range can be assumed)."""
    a = np.asarray(arr, dtype=np.float64)
    finite = a[np.isfinite(a)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 0.0
    if is_float and lo >= 0.0 and hi <= 1.0:
        scaled = a * 255.0
    elif not is_float and lo >= 0.0 and hi <= 65535.0:
        scaled = a / 257.0
    elif hi > lo:
        scaled = (a - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(a)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _composite_on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any mode Pillow reads from our formats to 8-bit RGB; transparency is composited on white
    (a transparent background shown as black would change what a captioner sees)."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        try:
            arr = np.asarray(im)
        except Exception as e:  # e.g. I;16S, which numpy cannot view
            raise UnusableImageError("unsupported_mode", f"mode {mode}: {e}") from None
        if arr.ndim != 2:
            raise UnusableImageError("unsupported_mode", f"mode {mode} with shape {arr.shape}")
        grey = Image.fromarray(_scale_to_uint8(arr, is_float=(mode == "F")), mode="L")
        return grey.convert("RGB")
    has_alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or (
        mode in ("1", "L", "P", "RGB") and im.info.get("transparency") is not None
    )
    try:
        if has_alpha:
            return _composite_on_white(im)
        if mode == "RGB":
            return im
        return im.convert("RGB")
    except (ValueError, OSError) as e:  # e.g. LAB, which Pillow does not convert without a profile
        raise UnusableImageError("unsupported_mode", f"mode {mode}: {e}") from None


def _classify_decode_error(e: BaseException) -> UnusableImageError:
    msg = f"{type(e).__name__}: {e}"
    if isinstance(e, UnusableImageError):
        return e
    if isinstance(e, UnidentifiedImageError):
        return UnusableImageError("not_an_image", msg)
    if isinstance(e, Image.DecompressionBombError):
        return UnusableImageError("too_many_pixels", msg)
    if isinstance(e, MemoryError):
        return UnusableImageError("out_of_memory", msg)
    if isinstance(e, EOFError) or "truncated" in str(e).lower():
        return UnusableImageError("truncated", msg)
    return UnusableImageError("corrupt", msg)


_OPEN_FORMATS: tuple[str, ...] | None = None


def _open_formats() -> tuple[str, ...]:
    """The formats of :data:`_FORMATS` that this Pillow build can open. ``Image.init()`` is needed first:
    ``Image.open(formats=...)`` only knows the plugins already imported (MPO, WebP and TIFF are not
    among Pillow's pre-imported ones)."""
    global _OPEN_FORMATS
    if _OPEN_FORMATS is None:
        Image.init()
        _OPEN_FORMATS = tuple(f for f in _FORMATS if f in Image.OPEN)
    return _OPEN_FORMATS


def _decode(f: IO[bytes], max_pixels: int | None) -> Image.Image:
    """Fully decode the first frame of the image in ``f`` and return it in RGB, EXIF-oriented."""
    try:
        im = Image.open(f, formats=_open_formats())
    except Exception as e:  # noqa: BLE001 - any parser failure means "skip this file"
        raise _classify_decode_error(e) from None
    try:
        # Checked from the header, before any pixel is allocated.
        if max_pixels is not None and im.width * im.height > max_pixels:
            raise UnusableImageError("too_many_pixels", f"{im.width}x{im.height} > {max_pixels}")
        im.load()  # the full decode; truncation raises because LOAD_TRUNCATED_IMAGES is off here
        # Some formats (GIF) may grow the canvas while loading.
        if max_pixels is not None and im.width * im.height > max_pixels:
            raise UnusableImageError("too_many_pixels", f"{im.width}x{im.height} > {max_pixels}")
        try:
            ImageOps.exif_transpose(im, in_place=True)
        except Exception:  # noqa: BLE001 - a malformed EXIF block loses the orientation, not the image
            pass
        return _to_rgb(im)
    except Exception as e:  # noqa: BLE001
        raise _classify_decode_error(e) from None


def _sha256_of(f: IO[bytes]) -> str:
    f.seek(0)
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def _load(path: Path, max_pixels: int | None, *, want_hash: bool) -> tuple[Image.Image, str | None]:
    """Open, check and decode one file; hash its bytes after decoding (the decode has just read them, so
    hashing is served from the page cache, and a non-image is rejected before reading it all).

    Raises UnusableImageError and nothing else (except BaseException such as KeyboardInterrupt)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError as e:
        raise UnusableImageError("missing", str(e)) from None
    except OSError as e:  # PermissionError, IsADirectoryError, EIO ...
        raise UnusableImageError("unreadable", str(e)) from None
    with f:
        try:
            st = os.fstat(f.fileno())
        except OSError as e:
            raise UnusableImageError("unreadable", str(e)) from None
        if not stat.S_ISREG(st.st_mode):
            raise UnusableImageError("not_an_image", "not a regular file")
        if st.st_size == 0:
            raise UnusableImageError("empty")
        im = _decode(f, max_pixels)
        if not want_hash:
            return im, None
        try:
            return im, _sha256_of(f)
        except OSError as e:
            raise UnusableImageError("unreadable", str(e)) from None


def load_image(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load one image as an 8-bit RGB ``PIL.Image``: fully decoded (a truncated file raises even if
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is set), EXIF orientation applied, alpha composited on white,
    16-bit and float greys scaled (not clipped), GIF/animated files reduced to their first frame.

    Raises :class:`UnusableImageError` (an InputError) with a ``reason`` from :data:`SKIP_REASONS`.
    """
    max_pixels = _check_max_pixels(max_pixels)
    with _strict_pil():
        im, _ = _load(Path(path), max_pixels, want_hash=False)
    return im


# --------------------------------------------------------------------------------------------------
# Finding candidates


@dataclass
class _Candidate:
    rel: str
    path: Path | None
    user_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # set when the file is skipped before decoding
    detail: str = ""


def _walk(root: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, str, str]]]:
    """Every non-hidden file under ``root`` (relative POSIX path, path), plus unreadable folders.

    Symbolic links are followed, except a directory link that points to one of its own ancestors (a
    loop). A second link to a folder elsewhere is walked again: its files are then exact duplicates,
    which deduplication reduces to the first by sorted path, deterministically. Non-regular entries and
    broken links are returned too, so that decoding reports them ("not_an_image" / "missing")."""
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
            else:
                files.append((rel, Path(e.path)))
    return files, errors


def _clean_user(value: Any) -> str | None:
    """A user id as a string; None for missing values (None, "", NaN). Integral floats (how pandas and
    some CSV tools store an integer column with gaps) lose their ".0" so "12" and 12.0 are one user."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    s = str(value).strip()
    return s or None


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


def _from_listing(
    listing: Path, base: Path, user_column: str | None, users_from_subfolders: bool
) -> list[_Candidate]:
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
    out: list[_Candidate] = []
    for i, row in enumerate(rows):
        value = row.get(path_col) if path_col else None
        if not isinstance(value, str) or not value.strip():
            out.append(_Candidate(rel=f"<row {i + 1}>", path=None, reason="missing", detail="no path"))
            continue
        rel = value.strip()
        p = Path(rel)
        path = p if p.is_absolute() else base / p
        meta = {
            str(k): _json_safe(v)
            for k, v in row.items()
            if k not in (path_col, user_column) and not isinstance(v, (bytes, bytearray))
        }
        c = _Candidate(rel=rel, path=path, metadata=meta)
        if user_column is not None:
            c.user_id = _clean_user(row.get(user_column))
        elif users_from_subfolders:
            parts = Path(rel).parts
            c.user_id = parts[0] if (not p.is_absolute() and len(parts) > 1) else None
        out.append(c)
    return out


def _find_candidates(
    source: Path, user_column: str | None, users_from_subfolders: bool
) -> tuple[list[_Candidate], str]:
    if source.is_file():
        if source.suffix.lower() not in _LISTING_SUFFIXES:
            raise InputError(
                f"{source}: not a folder and not a listing (.parquet, .csv or .jsonl with a 'path' column)"
            )
        return _from_listing(source, source.parent, user_column, users_from_subfolders), "listing"
    metadata = [source / n for n in _METADATA_NAMES if (source / n).is_file()]
    if len(metadata) > 1:
        raise InputError(
            f"{source}: holds several metadata files ({', '.join(m.name for m in metadata)}); keep one"
        )
    if metadata:
        return _from_listing(metadata[0], source, user_column, users_from_subfolders), "imagefolder"
    if user_column is not None:
        raise ConfigError(
            f"user_column={user_column!r} needs a metadata.jsonl/.csv/.parquet in {source} or a listing "
            "file; for a plain folder use users_from_subfolders=True"
        )
    files, errors = _walk(source)
    out = [_Candidate(rel=rel, path=None, reason=reason, detail=d) for rel, reason, d in errors]
    for rel, path in files:
        c = _Candidate(rel=rel, path=path)
        if users_from_subfolders:
            c.user_id = rel.split("/", 1)[0] if "/" in rel else None
        out.append(c)
    return out, "folder"


# --------------------------------------------------------------------------------------------------
# Verification


def _ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map`` over a thread pool that keeps at most ``4 * workers`` tasks in flight (300,000 pending
    futures would cost hundreds of MB) and yields results in input order (determinism)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spti-images")
    try:
        it = iter(items)
        window: deque[Future[R]] = deque(ex.submit(fn, x) for x in itertools.islice(it, 4 * workers))
        while window:
            fut = window.popleft()
            for x in itertools.islice(it, 1):
                window.append(ex.submit(fn, x))
            yield fut.result()
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _verify(path: Path, max_pixels: int | None) -> tuple[str, int, int] | UnusableImageError:
    try:
        im, sha = _load(path, max_pixels, want_hash=True)
    except UnusableImageError as e:
        return e
    except Exception as e:  # noqa: BLE001 - belt and braces: one file never kills the run
        return UnusableImageError("corrupt", f"{type(e).__name__}: {e}")
    w, h = im.size
    im.close()
    assert sha is not None
    return sha, w, h


def _count_users(records: Sequence[ImageRecord]) -> int | None:
    if not records or any(r.user_id is None for r in records):
        return None
    return len({r.user_id for r in records})


def _write_skipped(
    d: Path,
    skipped: Sequence[tuple[str, str]],
    details: Mapping[str, str],
    duplicate_of: Sequence[tuple[str, str]],
) -> None:
    rows: list[dict[str, Any]] = []
    for p, reason in skipped:
        row: dict[str, Any] = {"path": p, "reason": reason}
        if details.get(p):
            row["detail"] = details[p]
        rows.append(row)
    rows.extend({"path": p, "reason": "duplicate", "duplicate_of": rid} for p, rid in duplicate_of)
    atomic_write_jsonl(d / "skipped.jsonl", rows)


def ingest(
    source: str | os.PathLike[str],
    *,
    private_dir: str | os.PathLike[str] | None = None,
    user_column: str | None = None,
    users_from_subfolders: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    workers: int = 4,
    progress: bool = True,
) -> IngestResult:
    """Find, fully decode, hash and deduplicate every image of ``source`` (folder, ImageFolder or
    listing; see the module docstring). Bad files are skipped with a reason, never raised.

    ``user_column`` (a metadata/listing column) or ``users_from_subfolders`` (first-level folder name)
    give each image a user id for user-level DP; an image without one is skipped ("missing_user").
    ``max_pixels=None`` removes the pixel limit. When ``private_dir`` is given, ``ingest.jsonl`` and
    ``skipped.jsonl`` are written there atomically.

    Raises InputError if the source is missing or yields no usable image (the message gives counts per
    reason, never a file name); ConfigError for invalid arguments.
    """
    max_pixels = _check_max_pixels(max_pixels)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if user_column is not None and users_from_subfolders:
        raise ConfigError("give either user_column or users_from_subfolders=True, not both")
    if user_column is not None and (not isinstance(user_column, str) or not user_column):
        raise ConfigError(f"user_column must be a non-empty column name, got {user_column!r}")
    src = Path(source).expanduser().absolute()
    if not src.exists():
        raise InputError(f"image source not found: {src}")
    users = user_column is not None or users_from_subfolders

    candidates, kind = _find_candidates(src, user_column, users_from_subfolders)
    candidates.sort(key=lambda c: c.rel)

    skipped: list[tuple[str, str]] = []
    details: dict[str, str] = {}
    to_decode: list[_Candidate] = []
    for c in candidates:
        if c.reason is None and users and c.user_id is None:
            c.reason = "missing_user"
        if c.reason is not None:
            skipped.append((c.rel, c.reason))
            if c.detail:
                details[c.rel] = c.detail
        else:
            to_decode.append(c)

    records: list[ImageRecord] = []
    duplicate_of: list[tuple[str, str]] = []
    first_by_key: dict[tuple[str | None, str], str] = {}
    show = progress  # the argument shadows spti.log.progress inside this function
    with _strict_pil():
        results = _ordered_map(lambda c: _verify(c.path, max_pixels), to_decode, workers)  # type: ignore[arg-type]  # path is set when reason is None
        if show:
            results = _log_progress(results, total=len(to_decode))
        for c, res in zip(to_decode, results):
            if isinstance(res, UnusableImageError):
                skipped.append((c.rel, res.reason))
                if res.detail:
                    details[c.rel] = res.detail
                continue
            sha, w, h = res
            key = (c.user_id, sha)  # user_id is None without users: global deduplication
            if key in first_by_key:
                duplicate_of.append((c.rel, first_by_key[key]))
                continue
            rid = f"img-{len(records):06d}"
            first_by_key[key] = rid
            assert c.path is not None
            records.append(ImageRecord(rid, c.path, c.user_id, sha, w, h, rel=c.rel, metadata=c.metadata))
    skipped.sort(key=lambda s: s[0])

    result = IngestResult(
        records=records,
        skipped=skipped,
        duplicates=len(duplicate_of),
        num_users=_count_users(records) if users else None,
        duplicate_of=duplicate_of,
        skip_details=details,
    )
    summary = result.summary()
    if not records:
        where = ""
        if private_dir is not None:
            _write_skipped(Path(private_dir), skipped, details, duplicate_of)
            where = f"; per-file reasons are in {Path(private_dir) / 'skipped.jsonl'}"
        reasons = ", ".join(f"{n} {r}" for r, n in summary["skip_reasons"].items()) or "no file found"
        raise InputError(
            f"no usable image in {src} ({kind}): {len(candidates)} candidate file(s), skipped: {reasons}"
            f"{where}"
        )
    if private_dir is not None:
        result.save(private_dir)
    logger.info(
        "ingested %d images (%d skipped: %s; %d duplicates%s)",
        summary["images"],
        summary["skipped"],
        ", ".join(f"{r}={n}" for r, n in summary["skip_reasons"].items()) or "none",
        summary["duplicates"],
        f"; {summary['users']} users" if summary["users"] is not None else "",
    )
    return result


def _log_progress(results: Iterator[R], *, total: int) -> Iterator[R]:
    return progress(results, desc="verifying images", total=total, unit="img")


# --------------------------------------------------------------------------------------------------
# Lazy loading for captioners and embedders


def iter_batches(
    records: Iterable[ImageRecord],
    batch_size: int,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    *,
    workers: int = 4,
    verify_hash: bool = True,
) -> Iterator[tuple[list[ImageRecord], list[Image.Image]]]:
    """Yield (records, RGB images) in batches of ``batch_size`` (the last may be smaller), decoding each
    batch on a small thread pool. Only one batch of images is alive at a time, so 300,000 images
    stream through in bounded memory.

    With ``verify_hash`` (default) the bytes are re-hashed: a file replaced since ingestion would
    otherwise be captioned under a record that describes another image. A file that is gone, unreadable,
    changed or no longer decodes raises InputError naming the record id (not the file).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    max_pixels = _check_max_pixels(max_pixels)

    def one(rec: ImageRecord) -> Image.Image:
        try:
            im, sha = _load(rec.path, max_pixels, want_hash=verify_hash)
        except UnusableImageError as e:
            raise InputError(
                f"image {rec.id} can no longer be used ({e.reason}: {SKIP_REASONS.get(e.reason, '')}); "
                "the collection changed since ingestion: run the ingestion again"
            ) from None
        if verify_hash and sha != rec.sha256:
            raise InputError(
                f"image {rec.id} changed since ingestion (different content); run the ingestion again"
            )
        return im

    it = iter(records)
    ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spti-batches") if workers > 1 else None
    try:
        while True:
            batch = list(itertools.islice(it, batch_size))
            if not batch:
                return
            with _strict_pil():
                images = list(ex.map(one, batch)) if ex is not None else [one(r) for r in batch]
            yield batch, images
    finally:
        if ex is not None:
            ex.shutdown(wait=True, cancel_futures=True)
