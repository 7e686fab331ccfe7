"""Renderer ``retrieval``: a caption renders as the public image whose caption is nearest to it.

This is Private Evolution's "nearest image" API and spti's offline renderer: it needs no text-to-image
model, only a folder of *public* images, a captioner and a text embedder. The pool is captioned once
(lazily, on the first call that needs it) and its caption embeddings are cached on disk, so later runs and
later instances start instantly. A prompt is embedded with the same text embedder and answered with the
pool image of highest cosine similarity.

With ``top_k > 1`` the seed chooses among the k nearest images (rank ``seed % k``), so that PE's several
seeds per caption give several *different* images, deterministically: the same (prompt, seed) always
returns the same image, and consecutive seeds walk through the k nearest.

Pool images and their captions are public data, so captions may appear in debug logs; the prompts (which
are differentially private captions in spti, but may be anything a library user passes) are not logged.

The pool must not overlap the private data. A retrieval render *is* a pool image, copied into the release
byte for byte; a private image that also sits in the pool would therefore be published verbatim under a DP
claim. With ``private_root`` the backend refuses a pool folder equal to, inside or containing the private
data (symbolic links resolved, also those of single pool files); with ``exclude_hashes`` (the sha256 of every
ingested private image, which spti's render stage passes from ``private/ingest.jsonl``) pool files with the
same bytes are left out of the index, with a warning that names neither the files nor how many. Only exact
copies are caught: a re-encoded or resized copy of a private image is not (the ``memorization`` metric is
the tool for near-copies). Both checks, and the listing of the pool, are in :mod:`spti.models.renderer._pool`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spti.data.decode import IMAGE_EXTENSIONS
from spti.data.io import atomic_save_npy, atomic_write_jsonl, read_jsonl
from spti.errors import BackendError, ConfigError, InputError
from spti.hashing import content_key
from spti.log import logger, progress
from spti.models._checks import check_batch_size, positive_int
from spti.models._fingerprint import json_hash, stat_fingerprint
from spti.models.captioner import Captioner, build_captioner
from spti.models.renderer import REGISTRY, Renderer
from spti.models.renderer._pool import list_pool, private_copies, refuse_overlap
from spti.models.text_embedder import TextEmbedder, build_text_embedder

#: Rows of prompt embeddings scored against the pool at once (bounds the similarity matrix in memory).
_PROMPT_CHUNK = 1024


def _load_rgb(path: Path) -> Image.Image:
    """Open an image fully into memory as RGB (a copy: the file is closed on return)."""
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB") if im.mode != "RGB" else im.copy()


def _normalise(x: np.ndarray) -> np.ndarray:
    """Rows to unit L2 norm. The text-embedder contract already promises this; renormalising is cheap and
    keeps cosine similarity correct for a plug-in embedder that forgets."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@REGISTRY.register("retrieval")
class RetrievalRenderer(Renderer):
    """Nearest public image by caption embedding.

    Options:
        pool: folder of public images (searched recursively; the extensions spti reads everywhere,
            :data:`spti.data.decode.IMAGE_EXTENSIONS`).
        captioner: captioner config (``{"backend": ..., ...}``, a backend name, or a built Captioner) used
            once to caption the pool. It is built only when the pool index is not cached, and closed after
            indexing when spti built it.
        text_embedder: text-embedder config (or a built TextEmbedder) for pool captions and prompts.
        cache_dir: optional folder for the pool index (``*.captions.jsonl`` and ``*.embeddings.npy``),
            keyed by the pool's file-list fingerprint and the captioner's and embedder's cache keys, so a
            change to any of them re-indexes instead of reusing stale entries. Captions are keyed without
            the embedder: switching embedders does not re-caption.
        top_k: the seed picks among this many nearest images (default 1: always the nearest).
        batch_size: pool images captioned per captioner call.
        private_root: the private data (a folder, or a listing file). The pool may not be that folder,
            lie inside it or contain it, and no pool file may resolve into it (ConfigError). spti's stages
            always pass the run's ``data.private``.
        exclude_hashes: sha256 hex digests of private image files; pool files with the same bytes are
            never retrieved. spti's stages pass the hashes of every ingested private image. The pool's file
            hashes are computed once and cached in ``cache_dir`` (keyed like the index).
    """

    def __init__(
        self,
        pool: str | os.PathLike,
        captioner: Mapping[str, Any] | str | Captioner,
        text_embedder: Mapping[str, Any] | str | TextEmbedder,
        cache_dir: str | os.PathLike | None = None,
        top_k: int = 1,
        batch_size: int = 16,
        private_root: str | os.PathLike | None = None,
        exclude_hashes: Iterable[str] | None = None,
    ):
        if pool is None or str(pool) == "":
            raise ConfigError("renderer retrieval: 'pool' (a folder of public images) is required")
        self.pool = Path(pool).expanduser()
        if not self.pool.is_dir():
            raise ConfigError(
                f"renderer retrieval: pool folder {str(self.pool)!r} does not exist or is not a folder"
            )
        positive_int(top_k, "top_k", "renderer retrieval")
        check_batch_size(batch_size, "renderer retrieval")
        if captioner is None:
            raise ConfigError("renderer retrieval: 'captioner' (a captioner config) is required")
        if text_embedder is None:
            raise ConfigError("renderer retrieval: 'text_embedder' (a text embedder config) is required")
        self.top_k = top_k
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None

        self._files = list_pool(self.pool)
        if not self._files:
            raise InputError(
                f"renderer retrieval: no images found under {str(self.pool)!r} "
                f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))}, recursively)"
            )
        # file names, sizes and mtimes: a pool replaced in place is re-indexed, without reading every image
        self._fingerprint = stat_fingerprint(self.pool, self._files)
        self._checks_private = private_root is not None or exclude_hashes is not None
        if private_root is not None and str(private_root) != "":
            refuse_overlap(self.pool, self._files, Path(private_root).expanduser())
        #: pool files (relative paths) byte-identical to a private image: never indexed, never returned.
        #: Derived from private data: not logged, not in info().
        self._excluded: frozenset[str] = private_copies(
            self.pool, self._files, self._fingerprint, self.cache_dir, exclude_hashes
        )

        self._captioner_cfg = captioner
        self._captioner: Captioner | None = captioner if isinstance(captioner, Captioner) else None
        self._owns_captioner = self._captioner is None
        self._embedder: TextEmbedder = (
            text_embedder if isinstance(text_embedder, TextEmbedder) else build_text_embedder(text_embedder)
        )
        self._owns_embedder = not isinstance(text_embedder, TextEmbedder)
        # Filled by _ensure_index(): the indexed files (unreadable ones are dropped), captions, embeddings.
        self._index_files: list[str] | None = None
        self._captions: list[str] | None = None
        self._emb: np.ndarray | None = None
        self._captioner_key: str | None = None
        self._captioner_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ backend surface
    def _get_captioner(self) -> Captioner:
        if self._captioner is None:
            self._captioner = build_captioner(self._captioner_cfg)
        return self._captioner

    def _captioner_meta(self) -> tuple[str, dict[str, Any]]:
        # Remembered so that info() keeps working (and stays the same) after the captioner is closed.
        if self._captioner_key is None:
            cap = self._get_captioner()
            self._captioner_key, self._captioner_info = cap.cache_key, cap.info()
        return self._captioner_key, self._captioner_info

    def _captioner_cache_key(self) -> str:
        return self._captioner_meta()[0]

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend_name,
            "pool": str(self.pool),
            "pool_files": len(self._files),
            "pool_fingerprint": self._fingerprint,
            "captioner": self._captioner_meta()[1],
            "captioner_key": self._captioner_cache_key(),
            "text_embedder": self._embedder.info(),
            "text_embedder_key": self._embedder.cache_key,
            "top_k": self.top_k,
            **({"private_overlap_check": True} if self._checks_private else {}),
        }

    @property
    def cache_key(self) -> str:
        """Keyed by :meth:`info` and, when pool files were left out as private copies, by which: renders
        cached before the exclusion (which may be private copies) are then never reused. The key names a
        folder in the run's cache/ only; it is not published."""
        info = self.info()
        if self._excluded:
            info = {**info, "excluded": content_key(*sorted(self._excluded))}
        return json_hash(info)

    @property
    def pool_size(self) -> int:
        """Number of images that can be retrieved (builds the pool index if needed: unreadable files found
        while captioning are left out)."""
        self._ensure_index()
        assert self._index_files is not None
        return len(self._index_files)

    @property
    def pool_files(self) -> list[str]:
        """Relative paths of the indexed pool images, in index order (what ``nearest`` indices refer to)."""
        self._ensure_index()
        assert self._index_files is not None
        return list(self._index_files)

    @property
    def pool_captions(self) -> list[str]:
        """Captions of the pool images, in index order (public data)."""
        self._ensure_index()
        assert self._captions is not None
        return list(self._captions)

    def close(self) -> None:
        if self._owns_captioner and self._captioner is not None:
            self._captioner.close()
            self._captioner = None
        if self._owns_embedder:
            self._embedder.close()

    # ------------------------------------------------------------------ pool index
    def _cache_paths(self) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        cap_key = self._captioner_cache_key()
        stem = f"retrieval-pool-{self._fingerprint}-cap-{cap_key}"
        return (
            self.cache_dir / f"{stem}.captions.jsonl",
            self.cache_dir / f"{stem}-emb-{self._embedder.cache_key}.embeddings.npy",
        )

    def _ensure_index(self) -> None:
        if self._emb is not None:
            return
        paths = self._cache_paths()
        files: list[str] | None = None
        captions: list[str] | None = None
        if paths is not None and paths[0].is_file():
            files, captions = self._read_captions(paths[0])
        if captions is None:
            files, captions = self._caption_pool()
            if paths is not None:
                atomic_write_jsonl(paths[0], ({"file": f, "caption": c} for f, c in zip(files, captions)))
        assert files is not None
        if self._owns_captioner and self._captioner is not None:
            self._captioner.close()  # the pool is captioned: free the captioning model's memory
            self._captioner = None
        if not files:
            raise InputError(f"renderer retrieval: none of the images under {str(self.pool)!r} could be read")

        emb: np.ndarray | None = None
        if paths is not None and paths[1].is_file():
            try:
                emb = np.load(paths[1], allow_pickle=False)
            except (OSError, ValueError) as e:
                logger.warning("retrieval: ignoring unreadable embedding cache %s (%s)", paths[1], e)
            if emb is not None and (emb.ndim != 2 or emb.shape[0] != len(files)):
                logger.warning("retrieval: embedding cache %s does not match the pool; recomputing", paths[1])
                emb = None
            if emb is not None:
                logger.info("retrieval: loaded cached pool index (%d images) from %s", len(files), paths[1])
        if emb is None:
            emb = self._embed_texts(captions, desc="embedding pool captions")
            if paths is not None:
                atomic_save_npy(paths[1], emb)
        if self._excluded:
            # the caches hold the whole pool (they do not depend on the private data); the index does not
            keep = [i for i, f in enumerate(files) if f not in self._excluded]
            if not keep:
                raise InputError(
                    f"renderer retrieval: every image under {str(self.pool)!r} is a copy of a private image; "
                    "the pool must hold public images"
                )
            files, captions, emb = [files[i] for i in keep], [captions[i] for i in keep], np.asarray(emb)[keep]
        self._index_files, self._captions, self._emb = files, captions, _normalise(emb)

    def _read_captions(self, path: Path) -> tuple[list[str] | None, list[str] | None]:
        """Read a caption cache; ``(None, None)`` when it is unusable (then the pool is re-captioned)."""
        try:
            rows = read_jsonl(path)
            files = [str(r["file"]) for r in rows]
            captions = [str(r["caption"]) for r in rows]
        except (OSError, InputError, KeyError) as e:
            logger.warning("retrieval: ignoring unreadable caption cache %s (%s)", path, e)
            return None, None
        if not set(files) <= set(self._files):
            logger.warning("retrieval: caption cache %s names files outside the pool; re-captioning", path)
            return None, None
        logger.info("retrieval: loaded %d cached pool captions from %s", len(captions), path)
        return files, captions

    def _caption_pool(self) -> tuple[list[str], list[str]]:
        captioner = self._get_captioner()
        n = len(self._files)
        logger.info(
            "retrieval: captioning %d pool images from %s (once; cached if cache_dir is set)", n, self.pool
        )
        files: list[str] = []
        captions: list[str] = []
        skipped = 0
        batches = [self._files[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        for batch in progress(batches, desc="captioning pool", total=len(batches), unit="batch"):
            images: list[Image.Image] = []
            kept: list[str] = []
            for rel in batch:
                try:
                    images.append(_load_rgb(self.pool / rel))
                    kept.append(rel)
                except (OSError, ValueError, Image.DecompressionBombError) as e:
                    skipped += 1
                    logger.warning("retrieval: skipping unreadable pool image %s (%s)", self.pool / rel, e)
            if not images:
                continue
            out = captioner.caption(images)
            if len(out) != len(images):
                raise BackendError(
                    f"retrieval: captioner returned {len(out)} captions for {len(images)} pool images"
                )
            for rel, cap in zip(kept, out):
                logger.debug("retrieval: pool caption %s: %s", rel, cap)  # public data
            files.extend(kept)
            captions.extend(str(c) for c in out)
        if skipped:
            logger.warning("retrieval: %d of %d pool images could not be read and were left out", skipped, n)
        return files, captions

    def _embed_texts(self, texts: Sequence[str], desc: str | None = None) -> np.ndarray:
        chunk = max(256, self.batch_size)
        parts = []
        starts = range(0, len(texts), chunk)
        it = progress(starts, desc=desc, total=len(starts), unit="chunk") if desc else starts
        for i in it:
            part = np.asarray(self._embedder.embed(list(texts[i : i + chunk])), dtype=np.float32)
            if part.ndim != 2 or part.shape[0] != len(texts[i : i + chunk]):
                raise BackendError(
                    f"retrieval: text embedder returned shape {part.shape} for {len(texts[i : i + chunk])} texts"
                )
            parts.append(part)
        return _normalise(np.concatenate(parts, axis=0))

    # ------------------------------------------------------------------ retrieval
    def nearest(self, prompts: Sequence[str], k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` (default ``top_k``) nearest pool images of each prompt by cosine similarity.

        Returns ``(indices, similarities)``, both of shape ``(len(prompts), k')`` with
        ``k' = min(k, pool_size)``, best first; ties go to the lower pool index (stable order), so the
        answer is deterministic. Indices refer to ``pool_files``.
        """
        k = positive_int(self.top_k if k is None else k, "k", "renderer retrieval")
        if isinstance(prompts, str):
            raise TypeError("nearest() takes a sequence of prompts, not a single string")
        self._ensure_index()
        assert self._emb is not None
        k = min(k, self._emb.shape[0])
        n = len(prompts)
        if n == 0:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        q = self._embed_texts(list(prompts))
        if q.shape[1] != self._emb.shape[1]:
            raise BackendError(
                f"retrieval: prompt embeddings have dimension {q.shape[1]} but the pool index has "
                f"{self._emb.shape[1]}"
            )
        idx = np.empty((n, k), dtype=np.int64)
        sim = np.empty((n, k), dtype=np.float32)
        for s in range(0, n, _PROMPT_CHUNK):
            scores = q[s : s + _PROMPT_CHUNK] @ self._emb.T
            # Stable sort of negated scores: ties resolve to the lower index, identically on every machine.
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            idx[s : s + _PROMPT_CHUNK] = order
            sim[s : s + _PROMPT_CHUNK] = np.take_along_axis(scores, order, axis=1)
        return idx, sim

    def render(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        """One pool image (an RGB copy) per (prompt, seed): the nearest, or with ``top_k > 1`` the one of
        rank ``seed % k`` among the k nearest."""
        if isinstance(prompts, str):
            raise TypeError("render() takes a sequence of prompts, not a single string")
        if len(prompts) != len(seeds):
            raise ConfigError(f"renderer retrieval: {len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return []
        idx, _ = self.nearest(prompts)
        k = idx.shape[1]
        assert self._index_files is not None
        images: list[Image.Image] = []
        for row, seed in zip(idx, seeds):
            rank = int(seed) % k
            path = self.pool / self._index_files[int(row[rank])]
            try:
                images.append(_load_rgb(path))
            except (OSError, ValueError) as e:
                raise BackendError(f"retrieval: pool image {str(path)!r} can no longer be read: {e}") from e
        return images
