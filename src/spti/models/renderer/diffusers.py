"""Renderer ``diffusers``: any text-to-image pipeline diffusers' ``AutoPipelineForText2Image`` can load.

``model`` is a Hugging Face hub id or a local folder saved with ``save_pretrained``; the default is
``stabilityai/sdxl-turbo`` with its recommended settings (4 steps, no classifier-free guidance, 512×512),
which renders PE's many candidates cheaply. A small table (``FAMILIES``, in ``_families``) holds known-good
settings for a few model families, matched by the model id's (or folder's) name; every explicit option
overrides it, and a model outside the table runs with its pipeline's own defaults.

Reproducibility: each image gets its own CPU ``torch.Generator`` seeded with its seed (a list of
generators for a batch), so the same (prompt, seed) gives the same initial noise whatever else is in the
batch, on any device. (Batched GPU kernels can still differ in the last bits from an unbatched call; the
images are then equal to within rounding.)

Safety checker (Stable Diffusion 1.x/2.x): it stays as the model ships it unless ``safety_checker: false``
is set explicitly; then it is not loaded at all. With the checker on, a flagged render comes back black
(diffusers' behaviour); spti logs how many were flagged (a count only). Turn it off only if your use of
the model's licence allows it.

``info()`` (and so ``cache_key``) holds everything that changes the pixels: model, revision and resolved
hub commit (or a fingerprint of a local folder's files), pipeline class, steps, guidance, size, negative
prompt, extra call arguments, dtype, variant, safety checker and the diffusers version, so renders made
with different settings never share a cache entry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from spti.errors import BackendError, ConfigError
from spti.log import logger, progress
from spti.models._checks import check_batch_size, positive_int
from spti.models._fingerprint import folder_fingerprint
from spti.models._hub import local_model_path, resolve_local_files_only
from spti.models._torch import TorchModels, dtype_name
from spti.models.renderer import REGISTRY, Renderer
from spti.models.renderer._families import DEFAULT_MODEL, match_family

#: Call arguments spti sets itself; ``extra_call_kwargs`` may not override them.
_RESERVED_CALL_KWARGS = frozenset(
    {"prompt", "generator", "output_type", "num_images_per_prompt", "return_dict", "latents", "prompt_embeds"}
)
#: Call arguments that have their own option; putting them in ``extra_call_kwargs`` is ambiguous.
_OPTION_CALL_KWARGS = frozenset(
    {"num_inference_steps", "guidance_scale", "height", "width", "negative_prompt"}
)


def _dtype_kwarg() -> str:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (the old name warns, and goes in 1.0); older releases
    only know ``torch_dtype``. Probe for the helper that came with the rename."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


def _optional_positive_int(name: str, value: Any) -> int | None:
    return None if value is None else positive_int(value, name, "renderer diffusers")


@REGISTRY.register("diffusers")
class DiffusersRenderer(TorchModels, Renderer):
    """Text-to-image with a diffusers pipeline.

    Options (all optional): ``model`` (hub id or local folder; default ``stabilityai/sdxl-turbo``),
    ``revision``, ``variant`` ("auto": the family's fp16 variant when loading a hub model in float16;
    None for the default weights), ``local_files_only`` (default: ``HF_HUB_OFFLINE``), ``device``
    ("auto" | "cpu" | "cuda" | "cuda:1" | "mps"), ``dtype`` ("auto": the family's GPU dtype, float16 by
    default, on an accelerator and float32 on CPU), ``num_inference_steps``, ``guidance_scale``,
    ``height``, ``width``, ``negative_prompt``, ``batch_size`` (images per pipeline call, default 4),
    ``enable_cpu_offload`` (model CPU offload via accelerate: less GPU memory, slower),
    ``safety_checker`` (None: as the model ships; False: not loaded), ``extra_call_kwargs`` (a dict passed
    to every pipeline call, e.g. ``{"max_sequence_length": 256}``).
    """

    _torch_models = ("_pipe",)  # dropped by close()

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        revision: str | None = None,
        variant: str | None = "auto",
        local_files_only: bool | None = None,
        device: str = "auto",
        dtype: str = "auto",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        negative_prompt: str | None = None,
        batch_size: int = 4,
        enable_cpu_offload: bool = False,
        safety_checker: bool | None = None,
        extra_call_kwargs: Mapping[str, Any] | None = None,
    ):
        if not isinstance(model, (str, os.PathLike)) or not str(model):
            raise ConfigError(
                f"renderer diffusers: 'model' must be a hub id or a local folder, got {model!r}"
            )
        model = os.fspath(model)
        path = local_model_path(model, "renderer diffusers")
        if path is not None and not path.is_dir():
            raise ConfigError(f"renderer diffusers: model {model!r} is a file; give the pipeline's folder")
        self.is_local = path is not None
        self.model = str(path.resolve()) if path is not None else model
        dtype = dtype_name(dtype, "renderer diffusers")
        if not isinstance(device, str) or not device:
            raise ConfigError(
                f"renderer diffusers: 'device' must be a string like 'auto' or 'cuda:0', got {device!r}"
            )
        if guidance_scale is not None and (
            isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float))
        ):
            raise ConfigError(
                f"renderer diffusers: 'guidance_scale' must be a number, got {guidance_scale!r}"
            )
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ConfigError(
                f"renderer diffusers: 'negative_prompt' must be a string, got {negative_prompt!r}"
            )
        if safety_checker not in (None, True, False):
            raise ConfigError(
                f"renderer diffusers: 'safety_checker' must be true, false or null, got {safety_checker!r}"
            )
        if extra_call_kwargs is not None and not isinstance(extra_call_kwargs, Mapping):
            raise ConfigError("renderer diffusers: 'extra_call_kwargs' must be a mapping")
        extra = dict(extra_call_kwargs or {})
        bad = sorted(set(extra) & _RESERVED_CALL_KWARGS)
        if bad:
            raise ConfigError(
                f"renderer diffusers: extra_call_kwargs may not set {bad}: spti sets them itself"
            )
        dup = sorted(set(extra) & _OPTION_CALL_KWARGS)
        if dup:
            raise ConfigError(f"renderer diffusers: set {dup} as renderer options, not in extra_call_kwargs")

        self.family = match_family(self.model)
        fam = self.family
        self.revision = revision
        self.variant_option = variant
        self.local_files_only = resolve_local_files_only(local_files_only)
        self.device_option = device
        self.dtype_option = dtype
        self.num_inference_steps = _optional_positive_int("num_inference_steps", num_inference_steps) or (
            fam.num_inference_steps if fam else None
        )
        self.guidance_scale = (
            float(guidance_scale) if guidance_scale is not None else (fam.guidance_scale if fam else None)
        )
        self.height = _optional_positive_int("height", height) or (fam.height if fam else None)
        self.width = _optional_positive_int("width", width) or (fam.width if fam else None)
        self.negative_prompt = negative_prompt
        self.batch_size = check_batch_size(batch_size, "renderer diffusers")
        self.enable_cpu_offload = bool(enable_cpu_offload)
        self.safety_checker = safety_checker
        self.call_kwargs: dict[str, Any] = {**(dict(fam.call_kwargs) if fam else {}), **extra}

        self._pipe: Any = None
        self._model_index: dict[str, Any] | None = None
        self._commit: str | None = None
        self._fingerprint: str | None = None
        self._device: str | None = None

    # ------------------------------------------------------------------ resolution
    def _torch(self) -> Any:
        try:
            import torch
        except ImportError as e:
            raise BackendError("renderer diffusers needs torch and diffusers: pip install 'spti[hf]'") from e
        return torch

    def resolved_device(self) -> str:
        if self._device is None:
            if self.device_option != "auto":
                self._device = self.device_option
            else:
                torch = self._torch()
                if torch.cuda.is_available():
                    self._device = "cuda"
                elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                    self._device = "mps"
                else:
                    self._device = "cpu"
        return self._device

    def resolved_dtype(self) -> str:
        """float32 on CPU (half precision there is slow or unsupported), else the family's GPU dtype."""
        if self.dtype_option != "auto":
            return self.dtype_option
        if self.resolved_device() == "cpu":
            return "float32"
        return self.family.gpu_dtype if self.family else "float16"

    def resolved_variant(self) -> str | None:
        if self.variant_option != "auto":
            return self.variant_option or None
        # Only for hub downloads: a local folder may hold just the default weights.
        if self.family and self.family.variant and not self.is_local and self.resolved_dtype() == "float16":
            return self.family.variant
        return None

    def _load_model_index(self) -> dict[str, Any]:
        """Read ``model_index.json`` (small; no weights): the pipeline class and the hub commit, so that
        ``info()`` is complete before (or without) loading the weights."""
        if self._model_index is not None:
            return self._model_index
        try:
            from diffusers import AutoPipelineForText2Image
        except ImportError as e:
            raise BackendError("renderer diffusers needs torch and diffusers: pip install 'spti[hf]'") from e
        try:
            config, commit = AutoPipelineForText2Image.load_config(
                self.model,
                revision=self.revision,
                local_files_only=self.local_files_only,
                return_commit_hash=True,
            )
        except Exception as e:  # diffusers wraps hub errors in OSError, but be safe for every failure
            raise self._load_error(e) from e
        self._model_index = dict(config)
        self._commit = commit
        if self.is_local:
            self._fingerprint = folder_fingerprint(Path(self.model))
        return self._model_index

    def _load_error(self, e: BaseException) -> BackendError:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if self.is_local:
            return BackendError(
                f"renderer diffusers: cannot load the pipeline in {self.model!r} ({type(e).__name__}: {first}). "
                "Is it a folder written by a diffusers pipeline's save_pretrained (with model_index.json)?"
            )
        if self.local_files_only:
            return BackendError(
                f"renderer diffusers: model {self.model!r} is not in the local Hugging Face cache and offline "
                "mode is on (HF_HUB_OFFLINE or local_files_only). Download it first on a machine with hub "
                f"access (`huggingface-cli download {self.model}`), or set 'model' to a local folder "
                f"(no folder {self.model!r} exists here). ({type(e).__name__}: {first})"
            )
        return BackendError(
            f"renderer diffusers: cannot load model {self.model!r} from the Hugging Face hub "
            f"({type(e).__name__}: {first}). Check the id (no local folder of that name exists), revision, "
            "your network and, for gated models, that you accepted the licence and are logged in "
            "(`huggingface-cli login`)."
        )

    def info(self) -> dict[str, Any]:
        import diffusers

        index = self._load_model_index()
        return {
            "backend": self.backend_name,
            "model": self.model,
            "revision": self.revision,
            "commit": self._commit,
            "local_fingerprint": self._fingerprint,
            "pipeline_class": index.get("_class_name"),
            "family": self.family.name if self.family else None,
            "num_inference_steps": self.num_inference_steps,  # None: the pipeline's own default
            "guidance_scale": self.guidance_scale,
            "height": self.height,
            "width": self.width,
            "negative_prompt": self.negative_prompt,
            "extra_call_kwargs": dict(sorted(self.call_kwargs.items())),
            "dtype": self.resolved_dtype(),
            "variant": self.resolved_variant(),
            "safety_checker": "off" if self.safety_checker is False else "as shipped",
            "diffusers_version": diffusers.__version__,
        }

    # ------------------------------------------------------------------ loading
    @property
    def pipeline(self) -> Any:
        """The loaded diffusers pipeline (loaded on first access)."""
        if self._pipe is None:
            self._pipe = self._load()
        return self._pipe

    def _load(self) -> Any:
        torch = self._torch()
        from diffusers import AutoPipelineForText2Image

        index = self._load_model_index()
        device, dtype = self.resolved_device(), self.resolved_dtype()
        kwargs: dict[str, Any] = {
            _dtype_kwarg(): getattr(torch, dtype),
            "local_files_only": self.local_files_only,
        }
        if self.revision is not None:
            kwargs["revision"] = self.revision
        variant = self.resolved_variant()
        if variant:
            kwargs["variant"] = variant
        if self.safety_checker is False and "safety_checker" in index:
            kwargs["safety_checker"] = None  # not even loaded
            if "requires_safety_checker" in index:
                kwargs["requires_safety_checker"] = False
        if dtype == "float16" and device == "cpu":
            logger.warning(
                "renderer diffusers: float16 on CPU is slow or unsupported; consider dtype float32"
            )
        logger.info(
            "renderer diffusers: loading %s (%s, %s on %s%s)",
            self.model,
            index.get("_class_name"),
            dtype,
            device,
            f", variant {variant}" if variant else "",
        )
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(self.model, **kwargs)
        except Exception as e:
            raise self._load_error(e) from e
        if self.safety_checker is True and getattr(pipe, "safety_checker", None) is None:
            logger.warning("renderer diffusers: safety_checker is true but %s ships none", self.model)
        try:
            if self.enable_cpu_offload and device != "cpu":
                pipe.enable_model_cpu_offload(device=device)
            else:
                if self.enable_cpu_offload:
                    logger.warning("renderer diffusers: enable_cpu_offload ignored on device cpu")
                pipe = pipe.to(device)
        except Exception as e:
            raise BackendError(f"renderer diffusers: cannot move the pipeline to {device!r}: {e}") from e
        pipe.set_progress_bar_config(disable=True)  # spti shows one bar over batches instead
        return pipe

    # ------------------------------------------------------------------ rendering
    def render(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        """One RGB image per (prompt, seed), in order, ``batch_size`` per pipeline call."""
        if isinstance(prompts, str):
            raise TypeError("render() takes a sequence of prompts, not a single string")
        if len(prompts) != len(seeds):
            raise ConfigError(f"renderer diffusers: {len(prompts)} prompts but {len(seeds)} seeds")
        for s in seeds:
            if isinstance(s, bool) or not hasattr(s, "__index__"):
                raise ConfigError(f"renderer diffusers: seeds must be integers, got {type(s).__name__}")
        if not prompts:
            return []
        torch = self._torch()
        pipe = self.pipeline
        call: dict[str, Any] = dict(self.call_kwargs)
        for key in ("num_inference_steps", "guidance_scale", "height", "width"):
            if getattr(self, key) is not None:
                call[key] = getattr(self, key)

        out: list[Image.Image] = []
        flagged = 0
        starts = range(0, len(prompts), self.batch_size)
        for i in progress(starts, desc="rendering", total=len(starts), unit="batch"):
            batch_prompts = [str(p) for p in prompts[i : i + self.batch_size]]
            # One CPU generator per image: its noise depends on its own seed only, not on the batch.
            gens = [
                torch.Generator(device="cpu").manual_seed(int(s) & 0xFFFF_FFFF_FFFF_FFFF)
                for s in seeds[i : i + self.batch_size]
            ]
            if self.negative_prompt is not None:
                call["negative_prompt"] = [self.negative_prompt] * len(batch_prompts)
            try:
                result = pipe(prompt=batch_prompts, generator=gens, output_type="pil", **call)
            except Exception as e:
                hint = ""
                if "out of memory" in str(e).lower():
                    hint = " Lower 'batch_size', the image size, or set 'enable_cpu_offload: true'."
                raise BackendError(
                    f"renderer diffusers: the pipeline failed on a batch of {len(batch_prompts)} "
                    f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}).{hint}"
                ) from e
            images = list(result.images)
            if len(images) != len(batch_prompts):
                raise BackendError(
                    f"renderer diffusers: pipeline returned {len(images)} images for {len(batch_prompts)} prompts"
                )
            nsfw = getattr(result, "nsfw_content_detected", None)
            if nsfw:
                flagged += sum(bool(x) for x in nsfw)
            out.extend(im if im.mode == "RGB" else im.convert("RGB") for im in images)
        if flagged:
            logger.warning(
                "renderer diffusers: the safety checker blacked out %d of %d renders "
                "(set safety_checker: false to disable it, if the model's licence allows)",
                flagged,
                len(prompts),
            )
        return out
