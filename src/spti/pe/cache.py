"""A content-addressed feature cache: key (sha256 of what was embedded + the backend's cache_key) ->
vector, in memory and, optionally, on disk.

Why: PE embeds the kept parents again in every iteration and a resumed run re-embeds everything it had;
with the cache each text (or render) is embedded once per run. Disk shards are npz files written atomically
(no pickle); a shard that is half-written cannot exist, so a killed run never leaves a corrupt cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from spti.data.io import atomic_save_npz, load_npz


def content_key(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


class FeatureCache:
    def __init__(self, directory: str | Path | None = None, namespace: str = "features"):
        self.directory = Path(directory) / namespace if directory is not None else None
        self._mem: dict[str, np.ndarray] = {}
        self._shards = 0
        if self.directory is not None and self.directory.is_dir():
            for f in sorted(self.directory.glob("shard-*.npz")):
                z = load_npz(f)
                for k, v in zip(z["keys"], z["vectors"]):
                    self._mem[k.decode() if isinstance(k, bytes) else str(k)] = v
                self._shards += 1

    def __len__(self) -> int:
        return len(self._mem)

    def __contains__(self, key: str) -> bool:
        return key in self._mem

    def get(self, key: str) -> np.ndarray | None:
        return self._mem.get(key)

    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        new = [(k, v) for k, v in zip(keys, vectors) if k not in self._mem]
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
            if vecs.shape[0] != len(missing):
                raise RuntimeError(f"embedder returned {vecs.shape[0]} vectors for {len(missing)} items")
            self.put_many(list(missing), vecs)
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._mem[k] for k in keys])
