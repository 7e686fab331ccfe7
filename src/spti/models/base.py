"""What every backend of every role has in common."""

from __future__ import annotations

import abc
from typing import Any

from spti.models._fingerprint import json_hash


class Backend(abc.ABC):  # noqa: B024 - the roles declare the abstract methods
    """Common surface of all backends.

    ``info()`` goes into the run manifest (model id, revision or weights hash, options), so that a reader of
    a release knows exactly which models produced it. ``cache_key`` identifies everything that changes the
    backend's *output* (model, weights, resolution, steps ...): caches of embeddings and renders are keyed
    by it, so two different models never share a cache entry.

    An abstract base class: each role declares its methods with ``@abstractmethod``, so a backend that
    lacks one (a renderer without ``render()``) fails when it is built, not in the middle of a run.
    """

    backend_name: str = "?"
    #: Image backends (captioner, image embedder): the smallest image side the model needs, or None. The
    #: pipeline's image loader downscales larger images to it as soon as they are decoded (JPEG: while
    #: decoding), so a batch of huge files costs O(batch x input size) memory; None: full size.
    input_size: int | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every backend class's role methods and ``info()`` are guarded (:mod:`spti.models._guard`):
        inside a pipeline stage a failure names the backend and the stage; ``info()`` never carries a
        credential into a manifest."""
        super().__init_subclass__(**kwargs)
        from spti.models._guard import guard_class

        guard_class(cls)

    def info(self) -> dict[str, Any]:
        return {"backend": self.backend_name}

    @property
    def cache_key(self) -> str:
        return json_hash(self.info())

    def close(self) -> None:  # noqa: B027 - optional: most backends hold nothing to release
        """Release resources (GPU memory, server connections). Safe to call twice."""
