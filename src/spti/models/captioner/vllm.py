"""Captioner backend ``vllm``: a vision-language model (Qwen2-VL, Qwen2.5-VL, LLaVA, LLaVA-NeXT, Phi-3.5-vision,
InternVL, SmolVLM ... any model vLLM lists as multimodal with a chat template) on vLLM's offline engine.

Why next to ``hf`` and ``openai``: the paper's setting captions 300,000 private images with a 7B VLM. ``hf``
generates one padded batch at a time; vLLM schedules every request of a ``caption()`` call with continuous
batching and paged attention, which is where the throughput of a GPU comes from. ``openai`` against
``vllm serve`` gets the same engine but sends the private images over HTTP (and needs ``allow_remote``); this
backend keeps them in the process, so :attr:`sends_data_off_machine` stays False.

Config (``{"backend": "vllm", ...}``)::

    model                  hub id ("Qwen/Qwen2.5-VL-7B-Instruct", "llava-hf/llava-1.5-7b-hf") or a local folder
    prompt                 "Describe the image."; the user turn's text, after the image
    system_prompt          None; a system turn first (some chat templates refuse one: then leave it unset)
    max_new_tokens         77 (CLIP-based renderers read at most 77 tokens)
    trim_incomplete        True: a caption cut off by max_new_tokens is trimmed back to its last full sentence
    temperature 0.0, top_p 1.0   0 is greedy decoding (the default: a caption should be the model's best guess)
    seed                   0; per-image sampling seeds derive from it and from the image's pixels
    max_image_side         None; larger images are downscaled (aspect kept) first. Qwen2-VL's dynamic resolution
                           spends tokens, time and KV cache in proportion to the pixels
    image_input            "data_uri" (default: a lossless PNG ``image_url`` part, accepted by every vLLM with
                           multimodal ``LLM.chat``) | "pil" (an ``image_pil`` part: no PNG encode/decode, needs a
                           vLLM whose chat parser knows ``image_pil``)
    batch_size             128 images per ``caption()`` call (vLLM batches inside a call; the pipeline and the
                           executor cut tasks at this size)
    chat_template          None (the model's own); a Jinja template for checkpoints that ship none
    revision, dtype "auto", tensor_parallel_size 1, gpu_memory_utilization 0.9, max_model_len None,
    max_num_seqs None, mm_processor_kwargs None (e.g. {"max_pixels": 1003520} for Qwen2-VL),
    engine_kwargs {} (other ``vllm.LLM`` arguments, e.g. {"enforce_eager": true}), local_files_only (default:
    HF_HUB_OFFLINE), trust_remote_code False

The vLLM API used (offline, multimodal chat), from vLLM's documentation "Multimodal Inputs"
(https://docs.vllm.ai/en/latest/features/multimodal_inputs.html, section "Offline Inference" / "Image
Inputs": "If using the LLM.chat method, you can pass images directly in the message content using various
formats: image URLs, PIL Image objects, or pre-computed embeddings"): ``LLM(model=..., limit_mm_per_prompt=
{"image": 1})`` once, then ``LLM.chat(conversations, sampling_params=[one SamplingParams per conversation])``
where each conversation is ``[{"role": "user", "content": [{"type": "image_url", "image_url": {"url":
"data:image/png;base64,..."}}, {"type": "text", "text": prompt}]}]`` (the same OpenAI-style message as
``vllm serve`` takes; the model's chat template places the image tokens, so no per-family prompt strings such
as LLaVA's ``USER: <image>`` are needed). vLLM is imported only when the backend is built and is not a
dependency of spti: ``pip install 'spti[vllm]'`` (a CUDA GPU). Untested here: no GPU and no vLLM in spti's
CI; the request building, seeds and options are tested (tests/models/test_captioner_vllm.py).

**Seeds and batching.** Every image gets its own ``SamplingParams`` seed, derived from ``seed`` and a hash of
its pixels (:func:`image_seed`), never from its position in a call, so a caption does not depend on how the
pipeline or the Ray executor cut the private set into calls. With the default ``temperature: 0`` no seed is
sent (greedy decoding needs none). vLLM itself does not promise bit-identical outputs across batch
compositions (its "Reproducibility" notes: batched kernels may differ in the last bits, which can flip a
greedy token); the private captions are computed once per run folder and stored, so a resume reuses them.

**LLM data parallelism on Ray (issue 11, requirement 5).** A PE generation round's reply ``i`` is seeded
with ``derive_seed(seed, i)``; the ``vllm`` LLM backend is ``splittable`` (one seed per request, taking a
``first_index``), so the executor cuts a round into calls of ``executor.llm_chunk`` conversations that run on
one vLLM engine per GPU with the replies of one call; several ``vllm serve`` nodes behind the ``openai``
backend are the other way (docs/SCALING.md explains the choice against Ray Data's LLM processor). Captioning is different: 300k independent images, one seed per image from its content, so the
``vllm`` captioner runs data-parallel as an ordinary executor stage (one replica per GPU), loaded once per
captioning job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from spti.errors import BackendError, ConfigError, InputError
from spti.hashing import content_key
from spti.log import logger, progress
from spti.models._checks import positive_int
from spti.models._hub import resolve_local_files_only
from spti.models._torch import dtype_name, free_memory
from spti.models.captioner import REGISTRY, Captioner
from spti.models.captioner._hf_recipes import finish_caption
from spti.models.captioner.openai_api import image_data_uri
from spti.models.llm import check_sampling
from spti.models.llm.vllm import _import_vllm, resolve_model_path

DEFAULT_PROMPT = "Describe the image."
DEFAULT_MAX_NEW_TOKENS = 77
IMAGE_INPUTS = ("data_uri", "pil")

#: ``vllm.LLM`` arguments this backend sets itself; ``engine_kwargs`` may not override them.
_OWN_ENGINE_ARGS = frozenset({
    "model", "revision", "dtype", "tensor_parallel_size", "gpu_memory_utilization", "max_model_len",
    "max_num_seqs", "mm_processor_kwargs", "limit_mm_per_prompt", "trust_remote_code",
})


def prepare_image(image: Any, max_side: int | None, index: int = 0) -> Image.Image:
    """An RGB image no larger than ``max_side`` on either side (aspect kept, never upscaled; BICUBIC, as the
    ``hf`` captioner does). The caller's image is never modified."""
    if not isinstance(image, Image.Image):
        raise InputError(f"captioner 'vllm': item {index} is a {type(image).__name__}, not a PIL image")
    img = image if image.mode == "RGB" else image.convert("RGB")
    if max_side is not None and max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return img


def image_seed(image: Image.Image, seed: int) -> int:
    """A 31-bit sampling seed for ``image``: a hash of ``seed`` and the image's size and pixels.

    Why the pixels and not the position: the same private image must get the same caption whatever call,
    batch or Ray task it lands in. Two identical images share a seed (and, with the same model, a caption),
    which is what captioning a duplicate should give. The seed is as private as the image: never logged.
    """
    img = image if image.mode == "RGB" else image.convert("RGB")
    pixels = hashlib.sha256(img.tobytes()).hexdigest()
    digest = content_key("spti:caption", str(int(seed)), f"{img.width}x{img.height}", pixels)
    return int(digest[:8], 16) & 0x7FFFFFFF


def image_part(image: Image.Image, image_input: str = "data_uri") -> dict[str, Any]:
    """The message content part that carries ``image`` to ``LLM.chat``: an ``image_url`` with a lossless PNG
    data URI, or an ``image_pil`` part holding the image itself."""
    if image_input == "pil":
        return {"type": "image_pil", "image_pil": image}
    if image_input == "data_uri":
        return {"type": "image_url", "image_url": {"url": image_data_uri(image, "png", None)}}
    raise ConfigError(f"captioner 'vllm': image_input must be one of {', '.join(IMAGE_INPUTS)}, got {image_input!r}")


def caption_conversation(part: Mapping[str, Any], prompt: str, system_prompt: str | None = None) -> list[dict[str, Any]]:
    """One chat conversation asking for the caption of one image: the image first, then the prompt (the
    order the Qwen2-VL and LLaVA model cards use)."""
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": [dict(part), {"type": "text", "text": prompt}]})
    return messages


def caption_sampling_kwargs(
    seeds: Sequence[int | None], *, max_new_tokens: int, temperature: float, top_p: float
) -> list[dict[str, Any]]:
    """Keyword arguments of one ``vllm.SamplingParams`` per image (``seeds``: one per image, see
    :func:`image_seed`). Greedy (temperature 0) sends no seed and ``top_p`` 1."""
    check_sampling(max_new_tokens, temperature, top_p)
    greedy = temperature == 0
    return [
        {
            "n": 1,
            "max_tokens": int(max_new_tokens),
            "temperature": float(temperature),
            "top_p": 1.0 if greedy else float(top_p),
            "seed": None if greedy or s is None else int(s),
        }
        for s in seeds
    ]


def build_requests(
    images: Sequence[Any],
    *,
    prompt: str = DEFAULT_PROMPT,
    system_prompt: str | None = None,
    max_image_side: int | None = None,
    image_input: str = "data_uri",
    seed: int = 0,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """The conversations and the ``SamplingParams`` keyword arguments, one each per image, that
    :meth:`VLLMCaptioner.caption` passes to ``LLM.chat``. A pure function of the images and the options (no
    engine), so what reaches vLLM is tested without a GPU; each image's request depends on that image only."""
    prepared = [prepare_image(img, max_image_side, i) for i, img in enumerate(images)]
    convs = [caption_conversation(image_part(img, image_input), prompt, system_prompt) for img in prepared]
    seeds = [None if temperature == 0 else image_seed(img, seed) for img in prepared]
    params = caption_sampling_kwargs(seeds, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    return convs, params


def engine_args(
    path: str,
    model_id: str,
    *,
    revision: str | None = None,
    dtype: str = "auto",
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = 0.9,
    max_model_len: int | None = None,
    max_num_seqs: int | None = None,
    mm_processor_kwargs: Mapping[str, Any] | None = None,
    trust_remote_code: bool = False,
    engine_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of ``vllm.LLM``: ``path`` is what :func:`~spti.models.llm.vllm.resolve_model_path`
    returned for ``model_id`` (a cached snapshot folder drops ``revision``, which it already pins). One image
    per prompt (``limit_mm_per_prompt``): vLLM reserves encoder and KV memory for that many per request."""
    clash = sorted(_OWN_ENGINE_ARGS & dict(engine_kwargs or {}).keys())
    if clash:
        raise ConfigError(f"captioner 'vllm': engine_kwargs may not set {clash}: use the backend's own options")
    kwargs: dict[str, Any] = {
        **dict(engine_kwargs or {}),
        "model": path,
        "revision": None if path != model_id else revision,
        "dtype": dtype,
        "tensor_parallel_size": tensor_parallel_size,
        "gpu_memory_utilization": gpu_memory_utilization,
        "trust_remote_code": bool(trust_remote_code),
        "limit_mm_per_prompt": {"image": 1},
    }
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if max_num_seqs is not None:
        kwargs["max_num_seqs"] = max_num_seqs
    if mm_processor_kwargs:
        kwargs["mm_processor_kwargs"] = dict(mm_processor_kwargs)
    return kwargs


@REGISTRY.register("vllm")
class VLLMCaptioner(Captioner):
    """Caption images with a VLM on vLLM's offline engine (options: see the module docstring)."""

    sends_data_off_machine = False

    def __init__(
        self,
        model: str | None = None,
        *,
        prompt: str = DEFAULT_PROMPT,
        system_prompt: str | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        trim_incomplete: bool = True,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        max_image_side: int | None = None,
        image_input: str = "data_uri",
        batch_size: int = 128,
        chat_template: str | None = None,
        revision: str | None = None,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        max_num_seqs: int | None = None,
        mm_processor_kwargs: Mapping[str, Any] | None = None,
        engine_kwargs: Mapping[str, Any] | None = None,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        who = "captioner 'vllm'"
        # every option is checked before vLLM is imported: a config error shows on any machine
        if not isinstance(model, str) or not model:
            raise ConfigError(f"{who} needs 'model': a hub id or a local folder of a vision-language model")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"{who}: prompt must be a non-empty string")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ConfigError(f"{who}: system_prompt must be a string or null")
        positive_int(max_new_tokens, "max_new_tokens", who)
        positive_int(batch_size, "batch_size", who)
        positive_int(tensor_parallel_size, "tensor_parallel_size", who)
        if max_model_len is not None:
            positive_int(max_model_len, "max_model_len", who)
        if max_num_seqs is not None:
            positive_int(max_num_seqs, "max_num_seqs", who)
        try:
            check_sampling(max_new_tokens, temperature, top_p)
        except (ConfigError, TypeError) as e:  # check_sampling speaks of the LLM; say whose option it is
            raise ConfigError(f"{who}: {e}") from None
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"{who}: seed must be an integer, got {seed!r}")
        if max_image_side is not None and (
            isinstance(max_image_side, bool) or not isinstance(max_image_side, int) or max_image_side < 16
        ):
            raise ConfigError(f"{who}: max_image_side must be an integer >= 16 or null, got {max_image_side!r}")
        if image_input not in IMAGE_INPUTS:
            raise ConfigError(f"{who}: image_input must be one of {', '.join(IMAGE_INPUTS)}, got {image_input!r}")
        if not 0 < gpu_memory_utilization <= 1:
            raise ConfigError(f"{who}: gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}")
        if chat_template is not None and not isinstance(chat_template, str):
            raise ConfigError(f"{who}: chat_template must be a string (a Jinja template) or null")
        for name, value in (("mm_processor_kwargs", mm_processor_kwargs), ("engine_kwargs", engine_kwargs)):
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"{who}: {name} must be a mapping or null, got {type(value).__name__}")
        extra = dict(engine_kwargs or {})
        clash = sorted(_OWN_ENGINE_ARGS & extra.keys())
        if clash:
            raise ConfigError(f"{who}: engine_kwargs may not set {clash}: use the backend's own options")
        self.model_id, self.revision, self.dtype = model, revision, dtype_name(dtype, who)
        self.prompt, self.system_prompt = prompt, system_prompt
        self.max_new_tokens, self.trim_incomplete = int(max_new_tokens), bool(trim_incomplete)
        self.temperature, self.top_p, self.seed = float(temperature), float(top_p), int(seed)
        self.max_image_side, self.image_input = max_image_side, image_input
        self.batch_size, self.chat_template = int(batch_size), chat_template
        self.tensor_parallel_size, self.max_model_len = tensor_parallel_size, max_model_len
        self.mm_processor_kwargs = dict(mm_processor_kwargs) if mm_processor_kwargs else None
        #: counts only, never texts: the pipeline copies them into stats.json
        self.stats: dict[str, int] = {"images": 0, "empty": 0, "truncated": 0}

        vllm = _import_vllm()
        path = resolve_model_path(self.model_id, revision, resolve_local_files_only(local_files_only))
        kwargs = engine_args(path, self.model_id, revision=revision, dtype=self.dtype,
                             tensor_parallel_size=tensor_parallel_size,
                             gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                             max_num_seqs=max_num_seqs, mm_processor_kwargs=self.mm_processor_kwargs,
                             trust_remote_code=trust_remote_code, engine_kwargs=extra)
        logger.info("loading captioner %s with vLLM (tensor parallel %d)", self.model_id, tensor_parallel_size)
        try:
            self._engine: Any = vllm.LLM(**kwargs)
        except Exception as e:  # vLLM raises anything from ValueError to CUDA errors at start-up
            raise BackendError(f"vLLM could not load the captioner {self.model_id!r}: {e}") from e
        self._SamplingParams = vllm.SamplingParams
        self._version = getattr(vllm, "__version__", "?")
        #: where the engine runs (what --calibrate reports); vLLM's platform when it says, else CUDA
        platform = getattr(getattr(vllm, "platforms", None), "current_platform", None)
        self.device = str(getattr(platform, "device_type", None) or "cuda")

    # ------------------------------------------------------------------ requests
    def requests(self, images: Sequence[Any]) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
        """What ``caption()`` hands to ``LLM.chat`` for ``images``: see :func:`build_requests`."""
        return build_requests(images, prompt=self.prompt, system_prompt=self.system_prompt,
                              max_image_side=self.max_image_side, image_input=self.image_input, seed=self.seed,
                              max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p)

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per image, in order; a caption the model leaves empty is "" (counted, never logged)."""
        if getattr(self, "_engine", None) is None:
            raise BackendError("captioner 'vllm' was closed; build a new one")
        captions: list[str] = []
        cut = 0
        starts = range(0, len(images), self.batch_size)
        for s in progress(starts, desc="captioning (vLLM)", total=len(starts), unit="batch"):
            convs, kws = self.requests(images[s : s + self.batch_size])
            params = [self._SamplingParams(**kw) for kw in kws]
            extra = {"chat_template": self.chat_template} if self.chat_template else {}
            outputs = self._engine.chat(convs, sampling_params=params, use_tqdm=False, **extra)
            if len(outputs) != len(convs):
                raise BackendError(f"captioner 'vllm': {len(outputs)} outputs for {len(convs)} images")
            for o in outputs:
                first = o.outputs[0] if o.outputs else None
                truncated = getattr(first, "finish_reason", None) == "length"
                cut += int(truncated)
                captions.append(finish_caption(first.text if first else "", truncated, self.trim_incomplete))
        empty = sum(1 for c in captions if not c)
        self.stats["images"] += len(captions)
        self.stats["empty"] += empty
        self.stats["truncated"] += cut
        if empty:
            logger.warning("captioner vllm: %d of %d images got an empty caption", empty, len(captions))
        if cut:
            logger.info("captioner vllm: %d of %d captions reached max_new_tokens=%d", cut, len(captions),
                        self.max_new_tokens)
        return captions

    # ------------------------------------------------------------------ Backend
    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend_name,
            "model": self.model_id,
            "revision": self.revision,
            "dtype": self.dtype,
            "prompt": self.prompt,
            "system_prompt": self.system_prompt,
            "max_new_tokens": self.max_new_tokens,
            "trim_incomplete": self.trim_incomplete,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "max_image_side": self.max_image_side,
            "chat_template": self.chat_template,
            "mm_processor_kwargs": self.mm_processor_kwargs,
            "tensor_parallel_size": self.tensor_parallel_size,
            "max_model_len": self.max_model_len,
            "vllm": getattr(self, "_version", "?"),
        }

    def close(self) -> None:
        engine, self._engine = getattr(self, "_engine", None), None
        if engine is not None:
            del engine
            free_memory(None)
