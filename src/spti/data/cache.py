"""The run's content-addressed caches: feature vectors (:class:`FeatureCache`) and renders
(:class:`RenderCache`), both under ``<run>/cache/``.

Why one module: every stage that embeds or renders (the PE loop, the per-iteration evaluator, the release,
evaluation) reuses what an earlier stage or an interrupted run already computed; keeping both caches here
gives them one keying rule (:func:`spti.hashing.content_key` of the backend's ``cache_key`` and the content)
and one way of writing (atomic, no pickle), so a killed run never leaves a corrupt entry.

Feature shards are npz files (``keys`` + ``vectors``); renders are PNG files named by their key. Both can
hold things derived from private data (the evaluation cache holds private embeddings): they live in the run
folder, never in release/.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spti.data.io import atomic_save_npz, atomic_write_bytes, load_npz
from spti.data.release import png_bytes
from spti.errors import BackendError
from spti.hashing import content_key
from spti.log import logger, progress

__all__ = ["FeatureCache", "RenderCache", "render_seed"]


class FeatureCache:
    """key (sha256 of what was embedded + the backend's cache_key) -> vector, in memory and, when
    ``directory`` is given, on disk in ``directory/namespace/shard-NNNNNN.npz``.

    Why: PE embeds the kept parents again in every iteration and a resumed run re-embeds everything it had;
    with the cache each text (or render) is embedded once per run. Each :meth:`put_many` writes one new
    shard atomically, so a half-written shard cannot exist."""

    def __init__(self, directory: str | Path | None = None, namespace: str = "features"):
        self.directory = Path(directory) / namespace if directory is not None else None
        self._mem: dict[str, np.ndarray] = {}
        self._shards = 0  # the number of the next shard written
        if self.directory is not None and self.directory.is_dir():
            for f in sorted(self.directory.glob("shard-*.npz*")):
                self._shards = max(self._shards, _shard_number(f) + 1)
                if f.suffix != ".npz":
                    continue  # a shard set aside as unreadable by an earlier run
                try:
                    z = load_npz(f)
                    keys, vectors = z["keys"], np.asarray(z["vectors"], dtype=np.float32)
                    if vectors.ndim != 2 or keys.shape[0] != vectors.shape[0]:
                        raise ValueError("keys and vectors do not match")
                except Exception as e:  # noqa: BLE001 - any unreadable shard: recompute, never lose the run
                    # A cache is only ever a shortcut: an unreadable shard (a disk error, a copy cut short)
                    # is set aside and its vectors are computed again, instead of failing the whole run.
                    aside = f.with_name(f.name + ".corrupt")
                    f.replace(aside)
                    logger.warning("feature cache: %s could not be read (%s); set aside as %s, its vectors "
                                   "will be computed again", f.name, type(e).__name__, aside.name)
                    continue
                for k, v in zip(keys, vectors):
                    self._mem[k.decode() if isinstance(k, bytes) else str(k)] = v

    def __len__(self) -> int:
        return len(self._mem)

    def __contains__(self, key: str) -> bool:
        return key in self._mem

    def get(self, key: str) -> np.ndarray | None:
        return self._mem.get(key)

    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store vectors for keys not yet cached (first one wins); one new disk shard for all of them."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(keys) and (vectors.ndim != 2 or vectors.shape[0] != len(keys)):  # an embedder dropped an item
            raise BackendError(f"embedder returned {vectors.shape[0] if vectors.ndim else 0} vectors for "
                               f"{len(keys)} items; an embedder must return exactly one per item, in order")
        new = [(k, v) for k, v in zip(keys, vectors, strict=True) if k not in self._mem]
        for k, v in new:
            self._mem[k] = v
        if self.directory is not None and new:
            self.directory.mkdir(parents=True, exist_ok=True)
            ks = np.array([k for k, _ in new], dtype="S64")
            vs = np.stack([v for _, v in new])
            atomic_save_npz(self.directory / f"shard-{self._shards:06d}.npz", keys=ks, vectors=vs)
            self._shards += 1

    def compute(self, keys: Sequence[str], items: Sequence, fn: Callable[[list], np.ndarray]) -> np.ndarray:
        """Vectors for ``items`` (identified by ``keys``): cached ones looked up, the rest computed by one
        call ``fn(missing_items)`` and stored. Duplicate keys are computed once."""
        missing: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in self._mem and k not in missing:
                missing[k] = i
        if missing:
            vecs = np.asarray(fn([items[i] for i in missing.values()]), dtype=np.float32)
            if vecs.ndim != 2 or vecs.shape[0] != len(missing):
                raise BackendError(f"embedder returned {vecs.shape[0] if vecs.ndim else 0} vectors for {len(missing)} items")
            self.put_many(list(missing), vecs)
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._mem[k] for k in keys])


def _shard_number(path: Path) -> int:
    """NNNNNN of ``shard-NNNNNN.npz`` (or ``.npz.corrupt``); -1 for a name that does not parse."""
    stem = path.name.split(".", 1)[0]
    try:
        return int(stem.removeprefix("shard-"))
    except ValueError:
        return -1


def render_seed(base: int, j: int) -> int:
    """The seed of a caption's ``j``-th render. One rule for the PE loop, the per-iteration evaluator and the
    release, so that each finds the renders the others made in the :class:`RenderCache`."""
    return int(base) + int(j)


class RenderCache:
    """Renders keyed by (renderer cache_key, caption, seed), stored as PNG in ``root/renders/<cache_key>/``.

    Why: the release reuses the renders made in the PE loop (image voting) or by the per-iteration evaluator
    instead of calling the model again, and an interrupted render stage resumes where it stopped. Every call
    to the renderer is counted in ``stats[stage_counter]`` (the run's ``renderer_calls`` statistics)."""

    def __init__(self, root: Path, renderer: Any, stats: Counter, stage_counter: str):
        self.renderer = renderer
        self.dir = Path(root) / "renders" / renderer.cache_key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stats = stats
        self.stage_counter = stage_counter

    def path(self, text: str, seed: int) -> Path:
        """Where the render of ``text`` with ``seed`` is (or will be) stored."""
        return self.dir / f"{content_key(text, str(seed))[:40]}.png"

    def get_paths(self, pairs: Sequence[tuple[str, int]], desc: str = "rendering") -> list[Path]:
        """Paths of the renders of ``(text, seed)`` pairs, rendering those not cached yet in batches of the
        renderer's own ``batch_size``."""
        batch_size = self.renderer.batch_size
        todo = self.missing(pairs)
        if _remote(self.renderer):
            self._render_remote(todo, desc)
            return [self.path(t, s) for t, s in pairs]
        for b in progress(range(0, len(todo), batch_size), desc=desc, total=math.ceil(len(todo) / batch_size) if todo else 0):
            chunk = todo[b : b + batch_size]
            images = self.renderer.render([t for t, _ in chunk], [s for _, s in chunk])
            if len(images) != len(chunk):  # a plug-in renderer that drops a prompt must not shift the others
                name = getattr(self.renderer, "backend_name", "?")
                name = name if name != "?" else f"{type(self.renderer).__module__}:{type(self.renderer).__qualname__}"
                raise BackendError(f"renderer {name!r} returned {len(images)} images for {len(chunk)} prompts; a "
                                   "renderer must return exactly one per prompt, in order")
            self.stats[self.stage_counter] += len(chunk)
            for (t, s), img in zip(chunk, images, strict=True):
                atomic_write_bytes(self.path(t, s), png_bytes(img))
        return [self.path(t, s) for t, s in pairs]

    def missing(self, pairs: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
        """The distinct ``(text, seed)`` pairs of ``pairs`` whose render is not cached yet, in order."""
        todo, seen = [], set()
        for t, s in pairs:
            p = self.path(t, s)
            if not p.is_file() and p not in seen:
                todo.append((t, s))
                seen.add(p)
        return todo

    def store(self, pair: tuple[str, int], png: bytes) -> Path:
        """Write one render's PNG bytes (what a renderer step of :mod:`spti.executor` returns: exactly
        ``png_bytes(image)``, what :meth:`get_paths` writes) into the cache; returns its path."""
        p = self.path(*pair)
        atomic_write_bytes(p, png)
        return p

    def _render_remote(self, todo: list[tuple[str, int]], desc: str) -> None:
        """Render ``todo`` on the renderer's executor (a Ray cluster): tasks of the replicas' batch size, each
        task's PNGs written as soon as it is back, so an interrupted stage keeps every finished render."""
        from spti.executor import step_for

        ex, step = step_for("renderer", self.renderer, name=desc)
        for r, pngs in ex.stream(step, todo, desc=desc):
            self.stats[self.stage_counter] += len(r)
            for k, png in zip(r, pngs, strict=True):
                self.store(todo[k], png)


def _remote(backend: Any) -> bool:
    from spti.executor import is_remote

    return is_remote(backend)
