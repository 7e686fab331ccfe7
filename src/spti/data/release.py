"""The release folder: what a user hands over, and nothing private.

Layout (Hugging Face ImageFolder, loadable with ``datasets.load_dataset("imagefolder", data_dir=...)``)::

    release/dp_captions.jsonl     {"text": ...}                 the DP captions
    release/images/00000.png
    release/metadata.jsonl        {"file_name": "images/00000.png", "text": ...}
    release/privacy.json          the budget ledger
    release/manifest.json         versions, models, budget (no private paths)
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from spti.data.io import atomic_write_bytes, atomic_write_json, atomic_write_jsonl

#: Manifest keys that may hold the user's private paths; dropped from the release copy.
_PRIVATE_KEYS = ("data", "out", "private_paths")


def public_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    m = {k: v for k, v in manifest.items() if k not in _PRIVATE_KEYS}
    if isinstance(m.get("config"), dict):
        m["config"] = {k: v for k, v in m["config"].items() if k not in _PRIVATE_KEYS}
    return m


def write_captions(release: Path, texts: Sequence[str]) -> None:
    atomic_write_jsonl(release / "dp_captions.jsonl", ({"text": t} for t in texts))


def png_bytes(img: Image.Image) -> bytes:
    """How spti stores an image it made (a render, a release image): RGB, PNG-encoded."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_images(release: Path, items: Sequence[tuple[str, Image.Image | Path]]) -> list[dict[str, str]]:
    """Write ``(caption, image or path to a cached PNG)`` pairs as images/NNNNN.png + metadata.jsonl.
    Existing files of a previous (interrupted) release are replaced atomically one by one."""
    images_dir = release / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(items))))
    rows = []
    for i, (text, img) in enumerate(items):
        name = f"images/{i:0{width}d}.png"
        target = release / name
        if isinstance(img, Path):
            if img.suffix.lower() == ".png":
                tmp = target.with_suffix(".png.tmp")
                shutil.copyfile(img, tmp)
                tmp.replace(target)
            else:
                with Image.open(img) as im:
                    atomic_write_bytes(target, png_bytes(im))
        else:
            atomic_write_bytes(target, png_bytes(img))
        rows.append({"file_name": name, "text": text})
    # stale images of an earlier, larger release would be picked up by ImageFolder: remove them
    keep = {r["file_name"].split("/", 1)[1] for r in rows}
    for f in images_dir.iterdir():
        if f.name not in keep:
            f.unlink()
    atomic_write_jsonl(release / "metadata.jsonl", rows)
    return rows


def write_release_docs(release: Path, privacy: dict[str, Any], manifest: dict[str, Any]) -> None:
    release.mkdir(parents=True, exist_ok=True)
    atomic_write_json(release / "privacy.json", privacy)
    atomic_write_json(release / "manifest.json", public_manifest(manifest))
