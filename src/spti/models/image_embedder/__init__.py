"""The image-embedder role: image features for image voting (SPTI) and for metrics (FID & co).

Backends: ``inception`` (the FID Inception-v3, clean-fid protocol), ``dinov2``, ``clip`` (Hugging Face
ids or local paths) and ``efficientnet-lite0`` (bundled, offline).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np
from PIL import Image

from spti.models.base import Backend
from spti.models.registry import Registry


class ImageEmbedder(Backend):
    #: Images per call the pipeline hands to ``embed()``; a backend with a ``batch_size`` option sets it.
    batch_size: int = 32

    @abstractmethod
    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return raw float32 features of shape (len(images), dim) (not normalised: the Fréchet distance
        needs raw features; voting normalises its own copy). Images are RGB PIL images of any size."""

    @property
    @abstractmethod
    def dim(self) -> int: ...


REGISTRY: Registry[ImageEmbedder] = Registry("image_embedder", __name__, ImageEmbedder)

#: ``build_image_embedder({"backend": name, **options})`` (or just a name): a configured backend.
build_image_embedder = REGISTRY.build
