"""What every backend of every role has in common."""

from __future__ import annotations

import hashlib
import json
from typing import Any


class Backend:
    """Common surface of all backends.

    ``info()`` goes into the run manifest (model id, revision or weights hash, options), so that a reader of
    a release knows exactly which models produced it. ``cache_key`` identifies everything that changes the
    backend's *output* (model, weights, resolution, steps ...): caches of embeddings and renders are keyed
    by it, so two different models never share a cache entry.
    """

    backend_name: str = "?"

    def info(self) -> dict[str, Any]:
        return {"backend": self.backend_name}

    @property
    def cache_key(self) -> str:
        blob = json.dumps(self.info(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def close(self) -> None:
        """Release resources (GPU memory, server connections). Safe to call twice."""
