"""Local Hugging Face captioners: BLIP-style image-to-text, Florence-2 and chat VLMs, behind one backend.

Config (``{"backend": "hf", ...}``)::

    model            hub id ("Salesforce/blip-image-captioning-large", "florence-community/Florence-2-large",
                     "Qwen/Qwen2.5-VL-7B-Instruct", "HuggingFaceTB/SmolVLM-256M-Instruct") or a local folder
    mode             "auto" (default) | "image-to-text" | "florence" | "chat"
    prompt           None -> per mode: image-to-text: no prompt (unconditional captioning; a text here is a
                     BLIP-style caption *prefix*, stripped from the output); florence: "<MORE_DETAILED_CAPTION>"
                     (any of "<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>"); chat:
                     "Describe the image."
    max_new_tokens   77 (CLIP-based renderers read at most 77 tokens; short captions also keep the LLM's
                     variation prompts short)
    trim_incomplete  True: a caption cut off by max_new_tokens is trimmed back to its last full sentence
    num_beams        1 (greedy; overrides a checkpoint's own default, e.g. Florence-2's 3). Decoding is always
                     deterministic (no sampling): the same images give the same captions, so a run can be
                     resumed or reproduced.
    generate_kwargs  extra ``model.generate`` options, e.g. {"repetition_penalty": 1.3}; sampling is refused
    max_image_side   None; resize larger images (keeping the aspect) first. Chat VLMs with dynamic resolution
                     (Qwen2-VL) spend tokens, time and memory in proportion to the pixels.
    batch_size 8, device "auto" (cuda when visible, else cpu), dtype "auto" (float32 on CPU, bfloat16 on GPUs
    that support it, else float16), revision None, local_files_only (default: HF_HUB_OFFLINE),
    trust_remote_code False
    strict           False; True: one image per forward pass, in float32 (batch_size and dtype are forced),
                     so each caption depends on its own image only, bit for bit. Batched fp16/bf16
                     captioning is not bit-for-bit independent per image (padding, batch-dependent kernels);
                     strict mode is for the private pre-processing of a run (see :mod:`spti.models._strict`).

The model is loaded when the backend is built, so a wrong path or an uncached hub id fails before any image
is read. ``stats`` counts images, empty captions and captions cut off by max_new_tokens (never their text).

Why one backend and not one per family: the user names a model and spti picks the right recipe from the
model's config (``model_type``) and processor (does it have a chat template?), so a config never has to know
which of three code paths a checkpoint needs; ``mode`` overrides the guess.

The recipes (how each mode builds inputs and cleans outputs) live in ``_hf_recipes``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from spti.errors import BackendError, ConfigError, InputError, SptiError
from spti.log import logger, progress
from spti.models._checks import positive_int
from spti.models._hub import local_model_path, resolve_local_files_only
from spti.models._strict import strict_options
from spti.models._torch import (
    TorchModels,
    dtype_name,
    resolve_device,
    resolve_dtype,
    transformers_dtype_kwarg,
)
from spti.models.captioner import REGISTRY, Captioner
from spti.models.captioner._hf_recipes import MODES, clean_caption, default_prompt, detect_mode, model_inputs

DEFAULT_MAX_NEW_TOKENS = 77

#: generate() options that would make captions random, or that spti sets itself
_FORBIDDEN_GENERATE_KWARGS = frozenset(
    {"do_sample", "temperature", "top_p", "top_k", "max_new_tokens", "num_beams", "num_return_sequences"}
)


@REGISTRY.register("hf")
class HFCaptioner(TorchModels, Captioner):
    """Caption images with a local transformers model (see the module docstring for the options)."""

    sends_data_off_machine = False
    _torch_models = ("_model", "_processor", "_tok")  # dropped by close()

    def __init__(
        self,
        model: str,
        *,
        mode: str = "auto",
        prompt: str | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        trim_incomplete: bool = True,
        num_beams: int = 1,
        generate_kwargs: Mapping[str, Any] | None = None,
        max_image_side: int | None = None,
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
        revision: str | None = None,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
        strict: bool = False,
    ) -> None:
        if not isinstance(model, (str, os.PathLike)) or not str(model):
            raise ConfigError("captioner 'hf': 'model' must be a hub id or a local folder")
        self.strict = strict
        batch_size, dtype = strict_options(strict, batch_size=batch_size, dtype=dtype, where="captioner 'hf'")
        if mode not in MODES:
            raise ConfigError(f"captioner 'hf': mode must be one of {', '.join(MODES)}, got {mode!r}")
        dtype_name(dtype, "captioner 'hf'")
        for name, value in (
            ("max_new_tokens", max_new_tokens),
            ("num_beams", num_beams),
            ("batch_size", batch_size),
        ):
            positive_int(value, name, "captioner 'hf'")
        if max_image_side is not None and (not isinstance(max_image_side, int) or max_image_side < 16):
            raise ConfigError(
                f"captioner 'hf': max_image_side must be an integer >= 16 or null, got {max_image_side!r}"
            )
        if prompt is not None and not isinstance(prompt, str):
            raise ConfigError("captioner 'hf': prompt must be a string or null")
        gen_extra = dict(generate_kwargs or {})
        bad = sorted(_FORBIDDEN_GENERATE_KWARGS & gen_extra.keys())
        if bad:
            raise ConfigError(
                f"captioner 'hf': generate_kwargs may not set {bad}: use the backend's own max_new_tokens and "
                "num_beams options; sampling is not allowed (captions must be reproducible)"
            )
        if not isinstance(device, str) or not device:
            raise ConfigError("captioner 'hf': device must be 'auto', 'cpu', 'cuda' or 'cuda:N'")

        self.model_name = os.fspath(model)
        self.revision = revision
        self.local_files_only = resolve_local_files_only(local_files_only)
        self.trust_remote_code = bool(trust_remote_code)
        self.max_new_tokens = max_new_tokens
        self.trim_incomplete = bool(trim_incomplete)
        self.num_beams = num_beams
        self.generate_kwargs = gen_extra
        self.max_image_side = max_image_side
        self.batch_size = batch_size
        #: counts only, never texts: the pipeline copies them into stats.json
        self.stats: dict[str, int] = {"images": 0, "empty": 0, "truncated": 0}

        self.device = resolve_device(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self._model: Any = None
        self._processor: Any = None
        self._tok: Any = None
        self._load()
        self.mode = detect_mode(
            mode,
            model_name=self.model_name,
            model_type=self.model_type,
            is_florence=self.model_type == "florence2" or "Florence2" in type(self._model).__name__,
            has_chat_template=self._has_chat_template(),
        )
        self.prompt = default_prompt(self.mode, prompt)
        self._prepare_mode()

    # ------------------------------------------------------------------ loading
    def _source(self) -> str:
        path = local_model_path(self.model_name, "captioner 'hf'")
        if path is not None:
            if not path.is_dir():
                raise ConfigError(
                    f"captioner 'hf': model {str(path)!r} is a file; give the model's folder or a Hugging Face "
                    "hub id such as 'Salesforce/blip-image-captioning-large'"
                )
            if not (path / "config.json").is_file():
                raise ConfigError(
                    f"captioner 'hf': {str(path)!r} has no config.json; point 'model' at a folder written by "
                    "save_pretrained or downloaded from the hub"
                )
            return str(path)
        return self.model_name

    def _load(self) -> None:
        try:
            import transformers
            from transformers import AutoConfig
        except ImportError as e:  # pragma: no cover - depends on the installation
            raise BackendError("captioner 'hf' needs transformers and torch: pip install 'spti[hf]'") from e

        source = self._source()
        common: dict[str, Any] = {
            "revision": self.revision,
            "local_files_only": self.local_files_only,
            "trust_remote_code": self.trust_remote_code,
        }
        try:
            self._config = AutoConfig.from_pretrained(source, **common)
            self._processor, self._tok = self._load_processor(source, common)
            self._model = self._load_model(source, common)
        except (OSError, ValueError, KeyError, TypeError, ImportError) as e:
            # TypeError too: the registry would otherwise report it as a bad option of ours
            raise self._load_error(source, e) from e
        self._model.eval()
        self.model_type = str(getattr(self._config, "model_type", "") or "")
        self.commit = getattr(self._config, "_commit_hash", None)
        self.transformers_version = transformers.__version__
        logger.info(
            "captioner hf: loaded %s (%s, %s) on %s in %s",
            source,
            self.model_type or "?",
            type(self._model).__name__,
            self.device,
            str(self.torch_dtype).replace("torch.", ""),
        )

    @staticmethod
    def _load_processor(source: str, common: dict[str, Any]) -> tuple[Any, Any]:
        """(what turns images [+ text] into model inputs, the tokenizer that decodes the output).

        Most checkpoints have a processor class bundling both. VisionEncoderDecoder ones (ViT+GPT-2) do not:
        AutoProcessor then gives just the tokenizer or just the image processor, and the other part is
        loaded on its own.
        """
        from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, PreTrainedTokenizerBase

        proc = AutoProcessor.from_pretrained(source, **common)
        tok = getattr(proc, "tokenizer", None)
        if tok is not None and not isinstance(proc, PreTrainedTokenizerBase):
            return proc, tok
        if isinstance(proc, PreTrainedTokenizerBase):
            return AutoImageProcessor.from_pretrained(source, **common), proc
        return proc, AutoTokenizer.from_pretrained(source, **common)

    def _load_model(self, source: str, common: dict[str, Any]) -> Any:
        import transformers

        kwargs = {**common, transformers_dtype_kwarg(): self.torch_dtype}
        classes = [
            getattr(transformers, n, None)
            for n in ("AutoModelForImageTextToText", "AutoModelForVision2Seq", "AutoModelForCausalLM")
        ]
        last: Exception | None = None
        for cls in classes:
            if cls is None:
                continue
            try:
                model = cls.from_pretrained(source, config=self._config, **kwargs)
            except ValueError as e:  # "Unrecognized configuration class ... for this kind of AutoModel"
                if "Unrecognized configuration class" not in str(e):
                    raise
                last = e
                continue
            return model.to(self.device)
        raise ValueError(
            f"no image-to-text model class in transformers {transformers.__version__} fits it ({last})"
        )

    def _load_error(self, source: str, e: Exception) -> SptiError:
        kind = type(e).__name__
        rev = self.revision or "default"
        if isinstance(e, ImportError):
            return BackendError(f"captioner 'hf': loading {source!r} needs a missing package ({kind}: {e})")
        if "trust_remote_code" in str(e) and not self.trust_remote_code:
            return BackendError(
                f"captioner 'hf': {source!r} needs custom code from its repository; if you trust it set "
                "trust_remote_code: true (or use a copy of the model that transformers supports natively)"
            )
        if isinstance(e, OSError) and not os.path.isdir(source) and self.local_files_only:
            return BackendError(
                f"captioner 'hf': {source!r} (revision {rev}) is not in the local Hugging Face cache and offline "
                "mode is on (HF_HUB_OFFLINE=1 or local_files_only: true). Download it first with "
                f"`hf download {source}` on a machine with access, or set 'model' to a local folder."
            )
        if isinstance(e, OSError) and not os.path.isdir(source):
            return BackendError(
                f"captioner 'hf': could not fetch {source!r} (revision {rev}): check the hub id, your access to it "
                f"(HF_TOKEN for gated models) and the network, or set 'model' to a local folder ({kind}: {e})"
            )
        return BackendError(
            f"captioner 'hf': could not load {source!r} (revision {rev}); if its model type is newer than "
            f"transformers {self._transformers_version()}, upgrade transformers ({kind}: {e})"
        )

    @staticmethod
    def _transformers_version() -> str:
        import transformers

        return transformers.__version__

    # ------------------------------------------------------------------ modes
    def _has_chat_template(self) -> bool:
        return bool(
            getattr(self._processor, "chat_template", None) or getattr(self._tok, "chat_template", None)
        )

    def _prepare_mode(self) -> None:
        tok = self._tok
        if self.mode == "chat":
            # decoder-only batches must be padded on the left, or every shorter prompt would be continued
            # after its padding
            tok.padding_side = "left"
        if getattr(tok, "pad_token", None) is None and getattr(tok, "eos_token", None):
            tok.pad_token = tok.eos_token
        self._special_ids = set(getattr(tok, "all_special_ids", []) or [])
        gen_cfg = getattr(self._model, "generation_config", None)
        for attr in ("eos_token_id", "pad_token_id"):
            v = getattr(gen_cfg, attr, None)
            self._special_ids.update(v if isinstance(v, list) else [] if v is None else [v])
        forward = inspect.signature(self._model.forward).parameters
        self._accepts_token_type_ids = "token_type_ids" in forward or self.mode == "image-to-text"
        self._echoes: list[str] = []
        if self.mode == "image-to-text" and self.prompt:
            if getattr(self._processor, "tokenizer", None) is None:
                raise ConfigError(
                    f"captioner 'hf': {self.model_name!r} captions from the image alone and takes no prompt; "
                    "remove 'prompt'"
                )
            ids = tok(self.prompt, add_special_tokens=False)["input_ids"]
            self._echoes = [self.prompt, tok.decode(ids, skip_special_tokens=True)]

    # ------------------------------------------------------------------ captioning
    def _prepare_image(self, img: Any, i: int) -> Image.Image:
        if not isinstance(img, Image.Image):
            raise InputError(f"captioner 'hf': item {i} is a {type(img).__name__}, not a PIL image")
        if img.mode != "RGB":
            img = img.convert("RGB")
        if self.max_image_side and max(img.size) > self.max_image_side:
            img = img.copy()
            img.thumbnail((self.max_image_side, self.max_image_side), Image.Resampling.BICUBIC)
        return img

    def _generate(self, images: list[Image.Image]) -> list[str]:
        import torch

        inputs = model_inputs(self.mode, self._processor, images, self.prompt, self.transformers_version)
        if "token_type_ids" in inputs and not self._accepts_token_type_ids:
            del inputs["token_type_ids"]  # BERT-style tokenizers emit them; most decoders refuse them
        inputs = inputs.to(self.device)
        # pixel values must match the weights' dtype; BatchFeature.to(dtype) only casts floating tensors
        inputs = inputs.to(dtype=self.torch_dtype) if hasattr(inputs, "to") else inputs
        try:
            with torch.inference_mode():
                out = self._model.generate(
                    **inputs,
                    max_new_tokens=self.max_new_tokens,
                    num_beams=self.num_beams,
                    do_sample=False,
                    **self.generate_kwargs,
                )
        except torch.cuda.OutOfMemoryError as e:
            raise BackendError(
                f"captioner 'hf': out of GPU memory on a batch of {len(images)} images; lower batch_size "
                "(or set max_image_side, or dtype: bfloat16)"
            ) from e
        if not isinstance(out, torch.Tensor):  # a ModelOutput when return_dict_in_generate is set
            out = out.sequences
        out = out.cpu()
        input_ids = inputs.get("input_ids") if hasattr(inputs, "get") else None
        if input_ids is not None:
            input_ids = input_ids.cpu()
            n_in = input_ids.shape[1]
            if out.shape[1] >= n_in and torch.equal(out[:, :n_in], input_ids):
                out = out[:, n_in:]  # decoder-only: the prompt comes back first
        if out.shape[1] == 0:
            return [""] * len(images)
        truncated = [int(row[-1]) not in self._special_ids for row in out]
        texts = self._tok.batch_decode(out, skip_special_tokens=True)
        captions = []
        for text, cut in zip(texts, truncated, strict=True):
            captions.append(clean_caption(text, self.mode, self._echoes, cut, self.trim_incomplete))
            self.stats["truncated"] += int(cut)
        return captions

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per image, in order; an image the model says nothing about gets "" (counted in
        ``stats["empty"]`` and logged as a count; the caller decides whether to drop it)."""
        if self._model is None:
            raise BackendError("captioner 'hf' was closed; build a new one")
        prepared = [self._prepare_image(img, i) for i, img in enumerate(images)]
        captions: list[str] = []
        before = dict(self.stats)
        starts = range(0, len(prepared), self.batch_size)
        for s in progress(starts, desc="captioning", total=len(starts), unit="batch"):
            captions.extend(self._generate(prepared[s : s + self.batch_size]))
        empty = sum(1 for c in captions if not c)
        self.stats["images"] += len(captions)
        self.stats["empty"] += empty
        if empty:
            logger.warning("captioner hf: %d of %d images got an empty caption", empty, len(captions))
        cut = self.stats["truncated"] - before["truncated"]
        if cut:
            logger.info(
                "captioner hf: %d of %d captions reached max_new_tokens=%d%s",
                cut,
                len(captions),
                self.max_new_tokens,
                " and were trimmed to their last full sentence" if self.trim_incomplete else "",
            )
        return captions

    # ------------------------------------------------------------------ Backend
    def info(self) -> dict[str, Any]:
        import torch

        return {
            "backend": self.backend_name,
            "model": self.model_name,
            "revision": self.revision,
            "commit": self.commit,
            "model_type": self.model_type,
            "mode": self.mode,
            "prompt": self.prompt,
            "max_new_tokens": self.max_new_tokens,
            "trim_incomplete": self.trim_incomplete,
            "num_beams": self.num_beams,
            "generate_kwargs": self.generate_kwargs,
            "max_image_side": self.max_image_side,
            "dtype": str(self.torch_dtype).replace("torch.", ""),
            "trust_remote_code": self.trust_remote_code,
            **({"strict": True, "batch_size": self.batch_size} if self.strict else {}),
            "transformers": self.transformers_version,
            "torch": torch.__version__,
        }
