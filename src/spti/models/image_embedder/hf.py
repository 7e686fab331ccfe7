"""Image embedders ``dinov2`` and ``clip``: Hugging Face vision models (hub id or local folder).

``dinov2`` returns the final-layer-normed CLS token of ``Dinov2Model`` (as FD_DINOv2 uses it; ``pooling:
mean`` averages the patch tokens instead). ``clip`` returns ``CLIPModel.get_image_features`` (the projected
image embedding, not normalised). The image processor is loaded from the same folder/id, so resizing and
normalisation are the checkpoint's own.

Config keys (both)::

    backend: dinov2            # or clip
    model: facebook/dinov2-large   # clip: openai/clip-vit-large-patch14; or a local save_pretrained folder
    revision: null             # a hub branch, tag or commit
    local_files_only: null     # null: the HF_HUB_OFFLINE environment variable
    device: auto
    dtype: auto                # auto = float32 (metrics need it; embedding is cheap next to rendering);
                               # float16 / bfloat16 on a GPU for speed
    batch_size: 32
    pooling: cls               # dinov2 only: cls | mean
    strict: false              # true: one image per forward pass in float32 (batch_size 1, dtype float32),
                               # so each image's features depend on that image only, bit for bit
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spti.errors import BackendError, ConfigError
from spti.log import logger, progress
from spti.models._checks import check_batch_size, check_images
from spti.models._fingerprint import file_sha256, short_hash
from spti.models._hub import resolve_local_files_only
from spti.models._strict import strict_options
from spti.models._torch import TorchModels, dtype_name, resolve_device, resolve_dtype
from spti.models.image_embedder import REGISTRY, ImageEmbedder

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _local_weights_sha256(folder: Path) -> str | None:
    """One sha256 over the weight files of a local model folder (names and contents), so a manifest can
    tell two different local checkpoints with the same folder name apart. ``None`` if none found."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}:{file_sha256(p)}\n".encode())
    return h.hexdigest()


class _HFImageEmbedder(TorchModels, ImageEmbedder):
    """Shared loading, batching and manifest logic; subclasses pick the model class and the features."""

    _torch_models = ("_net",)  # dropped by close()

    default_model: str = ""
    kind: str = ""

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
        revision: str | None = None,
        local_files_only: bool | None = None,
        strict: bool = False,
    ):
        self.model_id = os.fspath(model) if model is not None else self.default_model
        if not self.model_id:
            raise ConfigError(f"{self.kind}: 'model' must be a hub id or a local folder")
        batch_size = check_batch_size(batch_size)
        batch_size, dtype = strict_options(strict, batch_size=batch_size, dtype=dtype, where=self.kind)
        self.strict = strict
        self.batch_size = batch_size
        self.device = resolve_device(device)
        if dtype_name(dtype) == "float16" and self.device == "cpu":
            raise ConfigError("dtype float16 is not supported on the CPU; use float32 or bfloat16")
        # auto = float32: metrics compare these features, and embedding is cheap next to rendering
        self.dtype = resolve_dtype(dtype, self.device, auto="float32")
        self.revision = revision
        self.local_files_only = resolve_local_files_only(local_files_only)
        kwargs: dict[str, Any] = {"revision": revision, "local_files_only": self.local_files_only}
        try:
            from transformers import AutoConfig, AutoImageProcessor

            config = AutoConfig.from_pretrained(self.model_id, **kwargs)
            # transformers only warns when a checkpoint of another architecture is loaded (and initialises
            # the weights it lacks at random): features from such a model would be silently meaningless.
            if config.model_type != self.kind:
                raise BackendError(
                    f"{self.kind}: {self.model_id!r} is a {config.model_type!r} model, not a {self.kind!r} one"
                )
            self.processor = AutoImageProcessor.from_pretrained(self.model_id, **kwargs)
            net, loading = self._model_class().from_pretrained(
                self.model_id, config=config, output_loading_info=True, **kwargs
            )
        except (OSError, ValueError, KeyError) as e:
            if isinstance(e, BackendError):
                raise
            hint = (
                " (local_files_only / HF_HUB_OFFLINE is set: the files must already be in the Hugging Face "
                "cache, or give a local folder)"
                if self.local_files_only
                else ""
            )
            raise BackendError(
                f"{self.kind}: cannot load model or image processor {self.model_id!r}{hint}: "
                f"{type(e).__name__}: {e}"
            ) from e
        if loading.get("missing_keys"):
            missing = sorted(loading["missing_keys"])
            raise BackendError(
                f"{self.kind}: the checkpoint {self.model_id!r} lacks {len(missing)} weights of "
                f"{type(net).__name__} (e.g. {', '.join(missing[:3])}); they would be random"
            )
        self._net = net.to(device=self.device, dtype=self.dtype).eval()
        self._dim = self._output_dim(net.config)
        self._commit = getattr(net.config, "_commit_hash", None)
        self._weights_sha256: str | None = None
        self._hashed = False
        logger.info("%s image embedder: %s on %s (%d-d)", self.kind, self.model_id, self.device, self._dim)

    # -- subclass hooks
    def _model_class(self) -> Any:
        raise NotImplementedError

    def _output_dim(self, config: Any) -> int:
        raise NotImplementedError

    def _features(self, pixel_values: Any) -> Any:
        raise NotImplementedError

    def _options(self) -> dict[str, Any]:
        return {}

    # -- the role
    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        if self._net is None:
            raise ConfigError(f"{self.kind} image embedder was closed; build a new one")
        images = check_images(images, f"{self.kind} image embedder")
        out = np.zeros((len(images), self._dim), dtype=np.float32)
        starts = range(0, len(images), self.batch_size)
        for s in progress(starts, desc=f"{self.kind} features", total=len(starts), unit="batch"):
            chunk = [im.convert("RGB") for im in images[s : s + self.batch_size]]
            pixels = self.processor(images=chunk, return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                feats = self._features(pixels.to(device=self.device, dtype=self.dtype))
            out[s : s + len(chunk)] = feats.float().cpu().numpy()
        return out

    def info(self) -> dict[str, Any]:
        if not self._hashed:  # lazily: hashing a large local checkpoint takes seconds
            folder = Path(self.model_id).expanduser()
            self._weights_sha256 = _local_weights_sha256(folder) if folder.is_dir() else None
            self._hashed = True
        return {
            "backend": self.backend_name,
            "model": self.model_id,
            "revision": self.revision,
            "commit": self._commit,
            "weights_sha256": self._weights_sha256,
            "processor": type(self.processor).__name__,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device,
            "dim": self._dim,
            **self._options(),
            **({"strict": True} if self.strict else {}),
        }

    @property
    def cache_key(self) -> str:
        info = self.info()
        ident = info["weights_sha256"] or f"{info['model']}@{info['commit'] or info['revision']}"
        return short_hash(
            f"{self.backend_name}|{ident}|{info['dtype']}|{info['processor']}|{sorted(self._options().items())}"
            + ("|strict" if self.strict else "")
        )


@REGISTRY.register("dinov2")
class Dinov2Embedder(_HFImageEmbedder):
    """DINOv2 image features: the CLS token after the final layer norm (``pooling: cls``, the FD_DINOv2
    convention) or the mean of the patch tokens (``pooling: mean``)."""

    default_model = "facebook/dinov2-large"
    kind = "dinov2"

    def __init__(self, model: str | os.PathLike | None = None, pooling: str = "cls", **kwargs: Any):
        if pooling not in ("cls", "mean"):
            raise ConfigError(f"dinov2: pooling must be 'cls' or 'mean', got {pooling!r}")
        self.pooling = pooling
        super().__init__(model, **kwargs)

    def _model_class(self) -> Any:
        from transformers import Dinov2Model

        return Dinov2Model

    def _output_dim(self, config: Any) -> int:
        return int(config.hidden_size)

    def _features(self, pixel_values: Any) -> Any:
        hidden = self._net(pixel_values=pixel_values).last_hidden_state  # layer-normed
        if self.pooling == "cls":
            return hidden[:, 0]
        return hidden[:, 1:].mean(dim=1)

    def _options(self) -> dict[str, Any]:
        return {"pooling": self.pooling}


@REGISTRY.register("clip")
class CLIPEmbedder(_HFImageEmbedder):
    """CLIP image embeddings (``CLIPModel.get_image_features``: pooled vision output through the visual
    projection), not normalised."""

    default_model = "openai/clip-vit-large-patch14"
    kind = "clip"

    def _model_class(self) -> Any:
        from transformers import CLIPModel

        return CLIPModel

    def _output_dim(self, config: Any) -> int:
        return int(config.projection_dim)

    def _features(self, pixel_values: Any) -> Any:
        import torch

        out = self._net.get_image_features(pixel_values=pixel_values)
        # transformers < 5 returns the tensor; 5.x returns a ModelOutput whose pooler_output is projected.
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """CLIP text embeddings in the same joint space as :meth:`embed` (``get_text_features``), for the
        CLIP score of image vs caption. The tokenizer comes from the same folder / hub id, loaded on first
        use; texts longer than the text encoder's context are truncated, as CLIP-score implementations do."""
        import torch
        from transformers import AutoTokenizer

        if self._net is None:
            raise ConfigError("clip image embedder was closed; build a new one")
        tok = getattr(self, "_tokenizer", None)
        if tok is None:
            try:
                tok = AutoTokenizer.from_pretrained(
                    self.model_id, revision=self.revision, local_files_only=self.local_files_only
                )
            except (OSError, ValueError) as e:
                raise BackendError(f"clip: no tokenizer for {self.model_id!r}: {type(e).__name__}: {e}") from e
            self._tokenizer = tok
        max_len = int(self._net.config.text_config.max_position_embeddings)
        if getattr(tok, "model_max_length", None):
            max_len = min(max_len, int(tok.model_max_length))
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for s in range(0, len(texts), self.batch_size):
            batch = tok(list(texts[s : s + self.batch_size]), padding=True, truncation=True, max_length=max_len,
                        return_tensors="pt").to(self.device)
            with torch.inference_mode():
                f = self._net.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            f = f if isinstance(f, torch.Tensor) else f.pooler_output
            out[s : s + f.shape[0]] = f.float().cpu().numpy()
        return out
