"""``vllm``: vLLM's offline engine, for GPU users generating many captions.

Why offer it next to ``openai`` (which also talks to ``vllm serve``): no server to start and keep alive,
and one ``LLM.chat`` call schedules a whole PE generation round with continuous batching.

vLLM is imported only when the backend is built; it is not a dependency of spti (``spti[vllm]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spti.errors import BackendError, ConfigError
from spti.log import logger
from spti.models._hub import resolve_local_files_only
from spti.models._torch import dtype_name, free_memory
from spti.models.llm import LLM, REGISTRY, Conversation, check_sampling, derive_seed

_INSTALL_HINT = "pip install 'spti[vllm]' (needs a CUDA GPU)"


def sampling_params_kwargs(
    n: int, *, max_new_tokens: int, temperature: float, top_p: float, seed: int | None, first_index: int = 0
) -> list[dict[str, Any]]:
    """Keyword arguments of one ``vllm.SamplingParams`` per conversation.

    One per conversation because each gets its own seed (derived from ``seed`` and its index), which makes
    a reply independent of how vLLM batches or orders the requests (and of how a round is cut into calls:
    ``first_index`` is the index of the first conversation in the round). Temperature 0 is vLLM's greedy mode;
    ``top_p`` is then irrelevant and set to 1. ``top_k`` is left at vLLM's default (off), so sampling
    depends on temperature and top_p only, as in the other backends.
    """
    check_sampling(max_new_tokens, temperature, top_p)
    greedy = temperature == 0
    return [
        {
            "n": 1,
            "max_tokens": max_new_tokens,
            "temperature": float(temperature),
            "top_p": 1.0 if greedy else float(top_p),
            "seed": None if seed is None else derive_seed(seed, first_index + i),
        }
        for i in range(n)
    ]


def resolve_model_path(model: str, revision: str | None, local_files_only: bool) -> str:
    """What to hand to vLLM as ``model``.

    vLLM has no ``local_files_only`` argument (it reads ``HF_HUB_OFFLINE`` at import time), so with
    ``local_files_only`` on we resolve a hub id to its cached snapshot folder ourselves and fail here, with
    a clear message, if it is not cached.
    """
    local = Path(model).expanduser()
    if local.exists():
        return str(local)
    if not local_files_only:
        return model
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model, revision=revision, local_files_only=True)
    except Exception as e:  # huggingface_hub raises several types for "not cached"
        raise BackendError(
            f"vllm: {model!r} is not a local folder and not in the Hugging Face cache (local_files_only is "
            f"on): {e}"
        ) from e


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise BackendError(f"vLLM is not installed: {_INSTALL_HINT}") from e
    return vllm


@REGISTRY.register("vllm")
class VLLMLLM(LLM):
    """vLLM offline engine. Options: ``model`` (hub id or local path, required), ``revision``, ``dtype``,
    ``tensor_parallel_size``, ``gpu_memory_utilization``, ``max_model_len``, ``seed`` (engine seed),
    ``local_files_only`` (default ``HF_HUB_OFFLINE``), ``trust_remote_code``.

    ``splittable``: one seed per request (:func:`sampling_params_kwargs`), so a round cut into calls on several
    replicas gives the replies of one call."""

    splittable = True

    def __init__(
        self,
        model: str | None = None,
        *,
        revision: str | None = None,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        seed: int = 0,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if not model:
            raise ConfigError("llm backend 'vllm' needs 'model': a hub id or a local path")
        dtype = dtype_name(dtype)
        if not isinstance(tensor_parallel_size, int) or tensor_parallel_size < 1:
            raise ConfigError(
                f"tensor_parallel_size must be a positive integer, got {tensor_parallel_size!r}"
            )
        if not 0 < gpu_memory_utilization <= 1:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}")
        vllm = _import_vllm()
        self.model_id, self.revision, self.dtype = str(model), revision, str(dtype)
        self.tensor_parallel_size = tensor_parallel_size
        self.max_model_len = max_model_len
        self.engine_seed = seed
        lfo = resolve_local_files_only(local_files_only)
        path = resolve_model_path(self.model_id, revision, lfo)
        logger.info("loading LLM %s with vLLM (tensor parallel %d)", self.model_id, tensor_parallel_size)
        kwargs: dict[str, Any] = {
            "model": path,
            "revision": None if path != self.model_id else revision,
            "dtype": self.dtype,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "seed": seed,
            "trust_remote_code": bool(trust_remote_code),
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        try:
            self._engine: Any = vllm.LLM(**kwargs)
        except Exception as e:  # vLLM raises anything from ValueError to CUDA errors at start-up
            raise BackendError(f"vLLM could not load {self.model_id!r}: {e}") from e
        self._SamplingParams = vllm.SamplingParams
        self._version = getattr(vllm, "__version__", "?")

    def generate(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        first_index: int = 0,
    ) -> list[str]:
        convs = self.prepare(conversations, max_new_tokens, temperature, top_p)
        if not convs:
            return []
        params = [
            self._SamplingParams(**kw)
            for kw in sampling_params_kwargs(
                len(convs), max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                first_index=first_index,
            )
        ]
        outputs = self._engine.chat(convs, sampling_params=params, use_tqdm=False)
        return [(o.outputs[0].text if o.outputs else "").strip() for o in outputs]

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend_name,
            "model": self.model_id,
            "revision": self.revision,
            "dtype": self.dtype,
            "tensor_parallel_size": self.tensor_parallel_size,
            "max_model_len": self.max_model_len,
            "engine_seed": self.engine_seed,
            "vllm": self._version,
        }

    def _closed(self) -> bool:
        return self._engine is None

    def close(self) -> None:
        engine, self._engine = getattr(self, "_engine", None), None
        if engine is not None:
            del engine
            free_memory(None)
