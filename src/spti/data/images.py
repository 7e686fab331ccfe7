"""Ingestion of a private image collection: find, verify, deduplicate, and load lazily.

Module map: decoding one file and the list of formats live in :mod:`spti.data.decode`, finding the
candidate files (folder walk, ImageFolder, listings) in :mod:`spti.data.listing`; this module turns
candidates into verified, deduplicated :class:`ImageRecord` s and streams them back in batches.

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

Labels (class-conditional runs, :mod:`spti.data.labels`): ``labels_from_subfolders`` takes each image's class
from its first-level sub-folder (``<folder>/<class>/<image>``), ``label_column`` from a column of the
listing / metadata file; they combine with either source of user ids (not the same one). A labelled
ingestion refuses, with an error, images that have no label or an empty one: silently dropping them would
change the class sizes behind the user's back, and guessing a class is worse. The label is saved with each
record in ``private/ingest.jsonl`` (private, like the rest of the file) so that a resumed run keeps it.

Duplicates (same sha256 of the file bytes) are counted once, keeping the first by sorted relative path.
That also holds across classes: the same image filed under two classes is kept once, with the label of its
first copy by sorted path (a warning says that this happened, not how often), so a record never votes twice
and each record has exactly one class.
With user ids (user-level DP) files are deduplicated *within each user only*: deduplicating across users
would make one user's presence change which images another user contributes (drop user A and user B's
copy, previously removed as A's duplicate, reappears), so two users would change between neighbouring
datasets and the per-user sensitivity the accountant assumes would no longer hold. Within one user, and
without users, deduplication is a function of that unit's own data and keeps the sensitivity intact.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from spti._threads import DaemonThreadPool
from spti.data.decode import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    SKIP_REASONS,
    UnusableImageError,
    check_max_pixels,
    decode_file,
    load_image,
    strict_pil,
)
from spti.data.io import atomic_write_jsonl, iter_jsonl
from spti.data.listing import Candidate, find_candidates
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

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ImageRecord:
    """One verified, deduplicated private image.

    ``id`` ("img-000123") is the record's rank in sorted order, so it is stable for an unchanged
    collection and, unlike a content hash, reveals nothing about the image when it appears in a log or an
    error message. ``width``/``height`` are after EXIF orientation. ``rel`` is the path relative to the
    source (or as written in the listing) and is the sort key; ``metadata`` holds the listing's other
    columns (private, like everything here). ``label``: the image's class name in a labelled ingestion
    (None otherwise; written to ``ingest.jsonl`` only when set, so unlabelled runs keep their format).
    """

    id: str
    path: Path
    user_id: str | None
    sha256: str
    width: int
    height: int
    rel: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)
    label: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "path": str(self.path),
            "rel": self.rel,
            "user_id": self.user_id,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "metadata": dict(self.metadata),
        }
        if self.label is not None:
            out["label"] = self.label
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ImageRecord:
        try:
            user = obj.get("user_id")
            label = obj.get("label")
            return cls(
                id=str(obj["id"]),
                path=Path(obj["path"]),
                user_id=None if user is None else str(user),
                sha256=str(obj["sha256"]),
                width=int(obj["width"]),
                height=int(obj["height"]),
                rel=str(obj.get("rel", "")),
                metadata=dict(obj.get("metadata") or {}),
                label=None if label is None else str(label),
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

    @property
    def labelled(self) -> bool:
        """Whether every record carries a label (a labelled ingestion)."""
        return bool(self.records) and all(r.label is not None for r in self.records)

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
# Verification


def _ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map`` over a thread pool that keeps at most ``4 * workers`` tasks in flight (300,000 pending
    futures would cost hundreds of MB) and yields results in input order (determinism)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    # daemon workers: Ctrl-C (or closing this generator) does not wait for the decodes in flight
    with DaemonThreadPool(max_workers=workers, thread_name_prefix="spti-images") as ex:
        it = iter(items)
        window: deque[Future[R]] = deque(ex.submit(fn, x) for x in itertools.islice(it, 4 * workers))
        try:
            while window:
                fut = window.popleft()
                for x in itertools.islice(it, 1):
                    window.append(ex.submit(fn, x))
                yield fut.result()
        finally:
            for f in window:
                f.cancel()


def _verify(path: Path, max_pixels: int | None) -> tuple[str, int, int] | UnusableImageError:
    try:
        im, sha = decode_file(path, max_pixels, want_hash=True)
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
    label_column: str | None = None,
    labels_from_subfolders: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    workers: int = 4,
    progress: bool = True,
) -> IngestResult:
    """Find, fully decode, hash and deduplicate every image of ``source`` (folder, ImageFolder or
    listing; see the module docstring). Bad files are skipped with a reason, never raised.

    ``user_column`` (a metadata/listing column) or ``users_from_subfolders`` (first-level folder name)
    give each image a user id for user-level DP; an image without one is skipped ("missing_user").
    ``label_column`` or ``labels_from_subfolders`` give each image a class label (a labelled ingestion;
    labels and user ids must come from different sources); an image without a label, or with an empty
    one, is an InputError (module docstring).
    ``max_pixels=None`` removes the pixel limit. When ``private_dir`` is given, ``ingest.jsonl`` and
    ``skipped.jsonl`` are written there atomically.

    Raises InputError if the source is missing or yields no usable image (the message gives counts per
    reason, never a file name); ConfigError for invalid arguments.
    """
    max_pixels = check_max_pixels(max_pixels)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if user_column is not None and users_from_subfolders:
        raise ConfigError("give either user_column or users_from_subfolders=True, not both")
    if user_column is not None and (not isinstance(user_column, str) or not user_column):
        raise ConfigError(f"user_column must be a non-empty column name, got {user_column!r}")
    _check_label_source(user_column, users_from_subfolders, label_column, labels_from_subfolders)
    src = Path(source).expanduser().absolute()
    if not src.exists():
        raise InputError(f"image source not found: {src}")
    users = user_column is not None or users_from_subfolders

    candidates, kind = find_candidates(src, user_column, users_from_subfolders, label_column, labels_from_subfolders)
    candidates.sort(key=lambda c: c.rel)
    labelled = label_column is not None or labels_from_subfolders

    skipped: list[tuple[str, str]] = []
    details: dict[str, str] = {}
    to_decode: list[Candidate] = []
    for c in candidates:
        if c.reason is None and users and c.user_id is None:
            c.reason = "missing_user"
        if c.reason is not None:
            skipped.append((c.rel, c.reason))
            if c.detail:
                details[c.rel] = c.detail
        else:
            to_decode.append(c)
    if labelled:  # before decoding anything: a listing's rows, and the files of a folder that look like images
        _check_labels(src, kind, label_column, [
            c.label for c in to_decode if kind != "folder" or Path(c.rel).suffix.lower() in IMAGE_EXTENSIONS
        ])

    records: list[ImageRecord] = []
    duplicate_of: list[tuple[str, str]] = []
    first_by_key: dict[tuple[str | None, str], str] = {}
    label_by_key: dict[tuple[str | None, str], str | None] = {}
    relabelled = False
    show = progress  # the argument shadows spti.log.progress inside this function
    with strict_pil():
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
                relabelled = relabelled or label_by_key[key] != c.label
                continue
            rid = f"img-{len(records):06d}"
            first_by_key[key] = rid
            label_by_key[key] = c.label
            assert c.path is not None
            label = None if c.label is None else str(c.label)
            records.append(ImageRecord(rid, c.path, c.user_id, sha, w, h, rel=c.rel, metadata=c.metadata,
                                       label=label))
    skipped.sort(key=lambda s: s[0])
    if labelled:  # a file whose name did not look like an image but that decoded as one
        _check_labels(src, kind, label_column, [r.label for r in records])
    if relabelled:
        logger.warning("some identical images carry different labels; each is kept once, with the label of its "
                       "first copy by sorted path (private/skipped.jsonl lists the duplicates)")

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


def _check_label_source(
    user_column: str | None, users_from_subfolders: bool, label_column: str | None, labels_from_subfolders: bool
) -> None:
    """Labels come from one source, and not from the one that names the users."""
    if label_column is not None and (not isinstance(label_column, str) or not label_column):
        raise ConfigError(f"label_column must be a non-empty column name, got {label_column!r}")
    if label_column is not None and labels_from_subfolders:
        raise ConfigError("give either label_column or labels_from_subfolders=True, not both")
    if labels_from_subfolders and users_from_subfolders:
        raise ConfigError("labels and users cannot both come from the sub-folders: take one of them from a "
                          "column (label_column or user_column)")
    if label_column is not None and label_column == user_column:
        raise ConfigError("label_column and user_column must be different columns")


def _check_labels(src: Path, kind: str, label_column: str | None, labels: Sequence[str | None]) -> None:
    """Refuse a labelled ingestion in which some image has no label or an empty one. The message names the
    source and the setting, never a file and never how many (both private)."""
    missing = any(lab is None for lab in labels)
    empty = any(lab is not None and not lab for lab in labels)
    if not (missing or empty):
        return
    if label_column is None:  # labels from the sub-folders: a file at the top (or an absolute listing path)
        where = "their path in the listing does not start with a class folder" if kind != "folder" else (
            "they are not inside a class sub-folder")
        raise InputError(
            f"labels_from_subfolders: some images of {src} have no label: {where} (expected "
            "<folder>/<class>/<image>); move them into their class's folder or remove them"
        )
    what = "no label (an empty cell, null or NaN)" if missing else "an empty label (a blank string)"
    raise InputError(
        f"label_column {label_column!r}: some images of {src} have {what}; give every image a non-empty "
        "label or remove its row"
    )


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
    target_size: int | None = None,
) -> Iterator[tuple[list[ImageRecord], list[Image.Image]]]:
    """Yield (records, RGB images) in batches of ``batch_size`` (the last may be smaller), decoding each
    batch on a small thread pool. Only one batch of images is alive at a time, so 300,000 images
    stream through in bounded memory.

    With ``verify_hash`` (default) the bytes are re-hashed: a file replaced since ingestion would
    otherwise be captioned under a record that describes another image. A file that is gone, unreadable,
    changed or no longer decodes raises InputError naming the record id (not the file).

    ``target_size``: the consumer's input size (a backend's ``input_size``); each image is downscaled while
    it is decoded so that its shorter side stays between ``target_size`` and twice that, bounding a batch's
    memory by the model's input rather than by the files' pixel counts. None: full size.
    """
    if target_size is not None and (isinstance(target_size, bool) or not isinstance(target_size, int) or target_size < 1):
        raise ConfigError(f"target_size must be a positive integer or None, got {target_size!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    max_pixels = check_max_pixels(max_pixels)

    def one(rec: ImageRecord) -> Image.Image:
        try:
            im, sha = decode_file(rec.path, max_pixels, want_hash=verify_hash, target_size=target_size)
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
    # daemon workers: Ctrl-C (or closing this generator) does not wait for the decodes in flight
    ex = DaemonThreadPool(max_workers=workers, thread_name_prefix="spti-batches") if workers > 1 else None
    interrupted = False
    try:
        while True:
            batch = list(itertools.islice(it, batch_size))
            if not batch:
                return
            with strict_pil():
                images = list(ex.map(one, batch)) if ex is not None else [one(r) for r in batch]
            yield batch, images
    except BaseException as e:
        interrupted = not isinstance(e, Exception)
        raise
    finally:
        if ex is not None:
            ex.shutdown(wait=not interrupted, cancel_futures=True)
