"""The two image sets an evaluation compares, loaded the way :func:`spti.metrics.evaluate.evaluate` accepts
them: the private (real) set and the synthetic set.

Why apart from the metrics: turning "a folder, a release, an ingestion or a list of PIL images" into one
ordered, lazily loaded :class:`ImageSet` is its own job, and every metric then works on the same indices
(``names[i]``, ``items[i]``), whatever the input was.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spti.errors import ConfigError, InputError
from spti.hashing import sha256_file

__all__ = ["ImageSet", "display_name", "real_set", "subset", "synthetic_set"]


@dataclass
class ImageSet:
    """An ordered list of images, each a file path or an in-memory PIL image, loaded lazily per batch so
    that 50k images never sit in memory at once."""

    items: list[Path | Image.Image]
    names: list[str]  # release-relative file name, private record id ("img-000012") or "#i"
    source: str
    captions: list[str | None] | None = None
    private: bool = False  # names and paths of a private set never reach a log message
    info: dict[str, Any] = field(default_factory=dict)  # e.g. the ingest summary (counts only)
    bad: set[int] = field(default_factory=set)  # indices that could not be read
    hashes: dict[int, str] = field(default_factory=dict)
    # Pixel limit when decoding: ingested records were already checked against the run's own limit;
    # other files get Pillow's default, so that one gigantic file cannot exhaust memory.
    max_pixels: int | None | str = "default"
    # The class label of each image (accuracy metrics): a release's ``label`` column, an ImageFolder's
    # sub-folder, or given with a list of images; None where unknown.
    labels: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> Image.Image | None:
        """The i-th image as RGB, decoded like ingestion does (EXIF orientation, alpha on white), or None
        when it cannot be read (counted, not logged by name: private file names are private)."""
        item = self.items[i]
        if isinstance(item, Image.Image):
            return item if item.mode == "RGB" else item.convert("RGB")
        from spti.data.decode import DEFAULT_MAX_PIXELS, load_image

        try:
            return load_image(
                item, max_pixels=DEFAULT_MAX_PIXELS if self.max_pixels == "default" else self.max_pixels
            )
        except (InputError, OSError, ValueError):
            self.bad.add(i)
            return None

    def content_hash(self, i: int) -> str:
        """sha256 of the file's bytes (or of the decoded pixels for an in-memory image): the cache key
        must change when the content does, whatever the file is called."""
        h = self.hashes.get(i)
        if h is None:
            item = self.items[i]
            if isinstance(item, Image.Image):
                d = hashlib.sha256()
                d.update(f"{item.mode}:{item.size[0]}x{item.size[1]}:".encode())
                d.update(item.tobytes())
                h = d.hexdigest()
            else:
                h = sha256_file(item)
            self.hashes[i] = h
        return h


def display_name(s: ImageSet, i: int) -> str | None:
    """A path the report can open (absolute for files; None for in-memory images)."""
    item = s.items[i]
    return None if isinstance(item, Image.Image) else str(Path(item).resolve())


def _release_metadata(folder: Path) -> Path | None:
    for cand in (folder / "metadata.jsonl", folder / "release" / "metadata.jsonl"):
        if cand.is_file():
            return cand
    return None


def real_set(data: Any) -> ImageSet:
    """The private set: a path goes through :func:`spti.data.images.ingest` (folder, ImageFolder or
    listing; verified, deduplicated exactly as the pipeline saw it), an ``IngestResult`` or a list of
    ``ImageRecord`` (e.g. the run's ``private/ingest.jsonl``) is used as is, a list of PIL images too."""
    records = getattr(data, "records", None)
    if isinstance(data, (str, os.PathLike)):
        from spti.data.images import ingest
        from spti.log import progress_enabled

        res = ingest(data, private_dir=None, progress=progress_enabled())
        s = _from_records(res.records, str(Path(data)))
        s.info = {"ingest": res.summary()}
        return s
    if records is not None:
        return _from_records(list(records), f"<{len(records)} ingested records>")
    items = list(data)
    if items and all(hasattr(r, "path") and hasattr(r, "sha256") for r in items):
        return _from_records(items, f"<{len(items)} ingested records>")
    return _pil_set(items, "real", None, private=True)


def _from_records(records: Sequence[Any], source: str) -> ImageSet:
    if not records:
        raise InputError("real images: no usable image")
    return ImageSet(
        [Path(r.path) for r in records],
        [str(getattr(r, "id", f"#{i}")) for i, r in enumerate(records)],
        source,
        private=True,
        hashes={i: str(r.sha256) for i, r in enumerate(records)},
        max_pixels=None,
    )


def _pil_set(imgs: list[Any], what: str, captions: Sequence[str] | None, *, private: bool) -> ImageSet:
    if not imgs:
        raise InputError(f"{what} images: the list is empty")
    for i, im in enumerate(imgs):
        if not isinstance(im, Image.Image):
            raise InputError(f"{what} images: item {i} is a {type(im).__name__}, not a PIL image")
    caps_list: list[str | None] | None = None
    if captions is not None:
        if len(captions) != len(imgs):
            raise InputError(f"{len(captions)} captions for {len(imgs)} {what} images")
        caps_list = list(captions)
    return ImageSet(
        list(imgs), [f"#{i}" for i in range(len(imgs))], f"<{len(imgs)} in-memory images>", caps_list, private
    )


def synthetic_set(data: Any, captions: Sequence[str] | None) -> ImageSet:
    """The synthetic set: a release folder (metadata.jsonl gives files and captions, in order), a run
    folder with ``release/``, any folder of images (read recursively), or a list of PIL images."""
    if not isinstance(data, (str, os.PathLike)):
        return _pil_set(list(data), "synthetic", captions, private=False)
    folder = Path(data)
    if not folder.is_dir():
        raise InputError(f"synthetic images: {folder} is not a folder")
    meta = _release_metadata(folder)
    if meta is not None:
        from spti.data.io import iter_jsonl

        base = meta.parent
        from spti.metrics.labelled import label_name, label_names_file

        items: list[Path | Image.Image] = []
        names: list[str] = []
        caps: list[str | None] = []
        labels: list[str | None] = []
        class_names = label_names_file(base)
        for lineno, row in enumerate(iter_jsonl(meta), 1):
            fn = row.get("file_name")
            if not isinstance(fn, str) or not fn:
                raise InputError(f"{meta}: line {lineno} has no 'file_name' string")
            items.append(base / fn)
            names.append(fn)
            text = row.get("text")
            caps.append(text if isinstance(text, str) else None)
            labels.append(label_name(row.get("label"), class_names))
        if not items:
            raise InputError(f"synthetic images: {meta} lists no images")
        if captions is not None:
            raise ConfigError(
                "captions= is for a list of images; a release folder has its own metadata.jsonl"
            )
        return ImageSet(items, names, str(base), caps,
                        labels=labels if any(lb is not None for lb in labels) else None)
    from spti.data.decode import IMAGE_EXTENSIONS
    from spti.data.listing import list_images

    paths = list_images(folder)
    if not paths:
        raise InputError(
            f"synthetic images: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {folder}"
        )
    rels = [p.relative_to(folder).as_posix() for p in paths]
    # an ImageFolder (every image in a first-level sub-folder): the sub-folder is the label
    sub = [r.split("/", 1)[0] if "/" in r else None for r in rels]
    return ImageSet(list(paths), rels, str(folder), labels=sub if all(sub) else None)


def subset(s: ImageSet, max_images: int | None, seed: int) -> ImageSet:
    """A seeded random subset (kept in original order): taking the *first* N files would bias the metric
    whenever files are sorted by class. This randomness is for evaluation only, never DP noise."""
    if max_images is None or len(s) <= max_images:
        return s
    keep = [
        int(i) for i in np.sort(np.random.default_rng(seed).choice(len(s), size=max_images, replace=False))
    ]
    return ImageSet(
        [s.items[i] for i in keep],
        [s.names[i] for i in keep],
        s.source,
        [s.captions[i] for i in keep] if s.captions is not None else None,
        s.private,
        s.info,
        hashes={new: s.hashes[old] for new, old in enumerate(keep) if old in s.hashes},
        max_pixels=s.max_pixels,
        labels=[s.labels[i] for i in keep] if s.labels is not None else None,
    )
