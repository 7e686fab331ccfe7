"""A private image set whose every count is a distinctive number, and a captioner whose private captions
carry a distinctive word: what the release-privacy tests look for in ``release/`` (and must not find).

Counts (chosen so that no setting, version or file name of a small run can equal them by chance):
37 images ingested, 13 skipped (corrupt files), 11 duplicates, 19 users (sub-folders), 17 empty captions.
Distinctive words: "kangaroo" in the data folder's name (a private path), "userzeta" in the user folders,
"wombat" in the file names, "quokkasecret" in every non-empty private caption.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from spti.models.captioner import Captioner

IMAGES, SKIPPED, DUPLICATES, USERS, EMPTY_CAPTIONS = 37, 13, 11, 19, 17
PATH_WORD, USER_WORD, FILE_WORD, CAPTION_WORD = "kangaroo", "userzeta", "wombat", "quokkasecret"
INSECURE_SEED = 7919

_RGB = {"green": (30, 200, 30), "red": (220, 30, 30), "blue": (30, 30, 220), "yellow": (230, 220, 40)}


def make_private_set(parent: Path) -> Path:
    """Write the private set under ``parent/kangaroo-private-data`` and return that folder."""
    root = parent / f"{PATH_WORD}-private-data"
    rng = np.random.default_rng(0)
    files: list[Path] = []
    for i in range(IMAGES):
        colour = "green" if i < EMPTY_CAPTIONS else ("red", "blue", "yellow")[i % 3]
        d = root / f"{USER_WORD}-{i % USERS:02d}"
        d.mkdir(parents=True, exist_ok=True)
        px = np.clip(np.array(_RGB[colour], dtype=np.int16) + rng.integers(-12, 13, size=(16, 16, 3)), 0, 255)
        f = d / f"{FILE_WORD}-{i:03d}.png"
        Image.fromarray(px.astype(np.uint8), "RGB").save(f)
        files.append(f)
    for j in range(DUPLICATES):  # a copy in the same user's folder: one duplicate each
        src = files[j]
        (src.parent / f"{FILE_WORD}-dup-{j:03d}.png").write_bytes(src.read_bytes())
    for k in range(SKIPPED):
        (root / f"{USER_WORD}-{k % USERS:02d}" / f"{FILE_WORD}-broken-{k:03d}.png").write_bytes(
            b"\x89PNG\r\n\x1a\nnot really"
        )
    return root


class SecretCaptioner(Captioner):
    """Names the dominant colour with the private word; green images get an empty caption."""

    def info(self):
        return {"backend": "secret-colour"}

    def caption(self, images):
        out = []
        for im in images:
            mean = np.asarray(im.convert("RGB"), dtype=float).reshape(-1, 3).mean(0)
            name = min(_RGB, key=lambda k: float(((np.array(_RGB[k]) - mean) ** 2).sum()))
            out.append("" if name == "green" else f"A {name} {CAPTION_WORD} square.")
        return out
