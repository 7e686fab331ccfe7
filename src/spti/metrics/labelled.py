"""Labelled image sets for the accuracy metrics: a real labelled set read from disk (an ImageFolder, or a
listing / metadata file with a ``label`` column), the label names of a release, and the deterministic
train/test split of a single real set.

Why a reader of its own (not the ingestion's): the real labelled *test* set is not the private data of a
run; it is not deduplicated or budgeted, only listed and decoded on demand. Labels are matched between sets
**by name** (a string): the release's ``metadata.jsonl`` ``label`` column holds names (``labels.json``
maps integer labels to names), an ImageFolder's sub-folders are names.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spti.errors import InputError
from spti.log import logger
from spti.metrics.imagesets import ImageSet

__all__ = [
    "LABEL_COLUMN",
    "LabelledImages",
    "label_name",
    "label_names_file",
    "read_labelled",
    "stratified_halves",
]

LABEL_COLUMN = "label"
_LISTING_SUFFIXES = (".jsonl", ".csv")
_METADATA_NAMES = ("metadata.jsonl", "metadata.csv")
_PATH_COLUMNS = ("file_name", "path")


def label_name(value: Any, names: Sequence[str] | None = None) -> str | None:
    """A label value as its class name: a string as is (stripped), an integer through ``names`` (the
    ``labels.json`` of a release, the ``datasets`` ClassLabel convention) or as its decimal text; None for a
    missing or empty value."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)) and names is not None and 0 <= int(value) < len(names):
        return str(names[int(value)])
    try:  # the ingestion's normalisation, so that names match the release's ("3", 3, 3.0 are one class)
        from spti.data.labels import clean_label
    except ImportError:  # pragma: no cover - older tree
        text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value).strip()
        return text or None
    out = clean_label(value)
    return str(out) if out else None


def label_names_file(folder: Path) -> list[str] | None:
    """The class names of a release (``labels.json``: ``{"names": [...]}``) when the folder has one."""
    p = folder / "labels.json"
    if not p.is_file():
        return None
    from spti.data.io import read_json

    try:
        d = read_json(p)
    except (OSError, ValueError):
        return None
    names = d.get("names") if isinstance(d, dict) else d
    return [str(n) for n in names] if isinstance(names, list) else None


@dataclass
class LabelledImages:
    """Images with a class label each (a real labelled set, or the run's private images when the user asks
    for them explicitly: ``run_private``). The decoded pixels of the CNN are kept per resolution, so that the
    per-iteration evaluation decodes the real test set once."""

    images: ImageSet
    labels: list[str]
    run_private: bool = False  # the run's own private training images (accuracy_on_private only)
    description: str = ""
    _pixels: dict[int, tuple[np.ndarray, list[int]]] = field(default_factory=dict, repr=False)
    _halves: dict[int, tuple[LabelledImages, LabelledImages]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.images):
            raise InputError(f"{len(self.labels)} labels for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def source(self) -> str:
        return self.images.source

    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for lb in self.labels:
            out[lb] = out.get(lb, 0) + 1
        return dict(sorted(out.items()))

    def take(self, idx: Sequence[int], description: str) -> LabelledImages:
        """The images at ``idx`` (in that order), keeping the known content hashes."""
        s = self.images
        idx = [int(i) for i in idx]
        sub = ImageSet(
            [s.items[i] for i in idx],
            [s.names[i] for i in idx],
            s.source,
            None,
            s.private,
            s.info,
            hashes={n: s.hashes[o] for n, o in enumerate(idx) if o in s.hashes},
            max_pixels=s.max_pixels,
            labels=[self.labels[i] for i in idx],
        )
        return LabelledImages(sub, [self.labels[i] for i in idx], self.run_private, description)

    def halves(self, seed: int) -> tuple[LabelledImages, LabelledImages]:
        """``(train, test)``: the set split in two by :func:`stratified_halves` (kept, so that repeated
        evaluations — one per PE iteration — reuse the same objects and their decoded pixels)."""
        if seed not in self._halves:
            tr, te = stratified_halves(self.labels, seed)
            self._halves[seed] = (
                self.take(tr, f"the train half of {self.source} (stratified split, seed {seed})"),
                self.take(te, f"the test half of {self.source} (stratified split, seed {seed})"),
            )
        return self._halves[seed]

    def pixels(self, size: int) -> tuple[np.ndarray, list[int]]:
        """The readable images as a ``(N, 3, size, size)`` uint8 array and their indices (cached)."""
        if size not in self._pixels:
            self._pixels[size] = load_pixels(self.images, size)
        return self._pixels[size]


def load_pixels(s: ImageSet, size: int) -> tuple[np.ndarray, list[int]]:
    """Every readable image of ``s`` resized to ``size``×``size`` RGB, as ``(N, 3, size, size)`` uint8, and
    the indices of those images (an unreadable one is left out and counted by the set)."""
    from PIL import Image

    arrs, kept = [], []
    for i in range(len(s)):
        im = s.load(i)
        if im is None:
            continue
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        arrs.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
        kept.append(i)
    if not arrs:
        raise InputError(f"{s.source if not s.private else 'the real labelled set'}: no image could be read")
    return np.stack(arrs), kept


def stratified_halves(labels: Sequence[str], seed: int) -> tuple[list[int], list[int]]:
    """A deterministic split into a train and a test half, per class (a seeded permutation of each class's
    indices; the first ``n // 2`` train, the rest test, so a class of one image is only tested). Why
    stratified: each class keeps its share on both sides, and the split does not depend on file order."""
    by_class: dict[str, list[int]] = {}
    for i, lb in enumerate(labels):
        by_class.setdefault(lb, []).append(i)
    train: list[int] = []
    test: list[int] = []
    for k, (_, idx) in enumerate(sorted(by_class.items())):
        perm = np.random.default_rng([int(seed), 0xACC, k]).permutation(len(idx))
        n_train = len(idx) // 2
        train.extend(idx[j] for j in perm[:n_train])
        test.extend(idx[j] for j in perm[n_train:])
    return sorted(train), sorted(test)


def _rows(listing: Path) -> list[dict[str, Any]]:
    from spti.data.io import iter_jsonl

    try:
        if listing.suffix.lower() == ".jsonl":
            return list(iter_jsonl(listing))
        with open(listing, encoding="utf-8-sig", newline="") as f:
            return [dict(r) for r in csv.DictReader(f)]
    except UnicodeDecodeError as e:
        raise InputError(f"{listing}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise InputError(f"{listing}: cannot be read: {e.strerror or e}") from None


def _from_listing(listing: Path, label_column: str) -> LabelledImages:
    rows = _rows(listing)
    base = listing.parent
    names = label_names_file(base)
    items: list[Any] = []
    rels: list[str] = []
    labels: list[str] = []
    missing = 0
    for lineno, row in enumerate(rows, 1):
        fn = next((row[c] for c in _PATH_COLUMNS if isinstance(row.get(c), str) and row[c]), None)
        if fn is None:
            raise InputError(f"{listing}: row {lineno} has no 'file_name' (or 'path') value")
        if label_column not in row:
            raise InputError(f"{listing}: row {lineno} has no {label_column!r} column (the class label)")
        lb = label_name(row[label_column], names)
        if lb is None:
            missing += 1
            continue
        items.append(base / fn)
        rels.append(fn)
        labels.append(lb)
    if missing:
        logger.warning("accuracy: %d image(s) of the labelled set have no label and are left out", missing)
    if not items:
        raise InputError(f"{listing}: no labelled image")
    return LabelledImages(ImageSet(items, rels, str(base), private=True, labels=list(labels)), labels)


def _from_subfolders(folder: Path) -> LabelledImages:
    from spti.data.listing import list_images

    paths = list_images(folder)
    items: list[Any] = []
    rels: list[str] = []
    labels: list[str] = []
    loose = 0
    for p in paths:
        rel = p.relative_to(folder).as_posix()
        if "/" not in rel:
            loose += 1
            continue
        items.append(p)
        rels.append(rel)
        labels.append(rel.split("/", 1)[0])
    if loose:
        logger.warning("accuracy: %d image(s) directly in the labelled folder (not in a class sub-folder) are "
                       "left out", loose)
    if not items:
        raise InputError(
            f"{folder}: no labelled image: put each class's images in a sub-folder named after the class "
            "(ImageFolder), or give a metadata.jsonl / metadata.csv with 'file_name' and 'label' columns"
        )
    return LabelledImages(ImageSet(items, rels, str(folder), private=True, labels=list(labels)), labels)


def read_labelled(path: str | os.PathLike[str], *, label_column: str = LABEL_COLUMN) -> LabelledImages:
    """A labelled image set from disk: a listing file (``.jsonl`` / ``.csv`` with ``file_name`` or ``path``
    and ``label_column``, paths relative to the file), a folder with such a ``metadata.jsonl`` /
    ``metadata.csv`` (a release; a run folder's ``release/``), or an ImageFolder (``<class>/<image>``).
    Integer labels are mapped to names through a ``labels.json`` next to the listing (a release's)."""
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() not in _LISTING_SUFFIXES:
            raise InputError(f"{p}: a labelled listing must be a .jsonl or .csv file")
        return _from_listing(p, label_column)
    if not p.is_dir():
        raise InputError(f"labelled images: {p} is neither a folder nor a listing file")
    for d in (p, p / "release"):
        for name in _METADATA_NAMES:
            if (d / name).is_file():
                return _from_listing(d / name, label_column)
    return _from_subfolders(p)
