"""``hf``: any causal LM with a chat template, through transformers.

Why batched generation with left padding: PE asks for thousands of short completions; on a GPU (and even
on 2 CPU cores, FACTS: 23 -> 98 tokens/s from batch 1 to 8) batching is the main speed lever. Left
padding keeps every prompt's last token at the end of the row, so with an attention mask a conversation
gets the same greedy reply alone or in a batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from spti.errors import BackendError, ConfigError
from spti.log import logger, progress
from spti.models._checks import check_batch_size
from spti.models._hub import load_error, resolve_local_files_only
from spti.models._torch import TorchModels, resolve_device, resolve_dtype, transformers_dtype_kwarg
from spti.models.llm import LLM, REGISTRY, Conversation, derive_seed

# ----------------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _seeded(seed: int | None, device: str) -> Iterator[None]:
    """Seed torch for one ``generate`` call without disturbing the caller's global RNG state."""
    if seed is None:
        yield
        return
    import torch

    cuda = device.startswith("cuda")
    devices = [torch.device(device).index or 0] if cuda else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.manual_seed(seed)
        yield


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


# ----------------------------------------------------------------------------------------------- backend


@REGISTRY.register("hf")
class HFLLM(TorchModels, LLM):
    """A transformers causal LM (hub id or local folder) with its tokenizer's chat template.

    Options: ``model`` (required), ``revision``, ``tokenizer`` (load the tokenizer from elsewhere, e.g.
    when a GGUF file's embedded tokenizer is unusable), ``device``, ``dtype``, ``batch_size``,
    ``local_files_only`` (default: ``HF_HUB_OFFLINE``), ``trust_remote_code`` (off: running a repo's code
    is an explicit decision) and ``top_k`` (0 = off, so that sampling depends on temperature and top_p
    only, as in the other backends).
    """

    _torch_models = ("_model", "_tok")  # dropped by close()

    def __init__(
        self,
        model: str | None = None,
        *,
        revision: str | None = None,
        tokenizer: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        local_files_only: bool | None = None,
        trust_remote_code: bool = False,
        top_k: int = 0,
    ) -> None:
        self._model: Any = None
        self._tok: Any = None
        if not model:
            raise ConfigError(f"llm backend {self.backend_name!r} needs 'model': a hub id or a local path")
        check_batch_size(batch_size)
        if not isinstance(top_k, int) or top_k < 0:
            raise ConfigError(f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")
        self.model_id = str(model)
        self.revision = revision
        self.tokenizer_id = str(tokenizer) if tokenizer else None
        self.batch_size = batch_size
        self.local_files_only = resolve_local_files_only(local_files_only)
        self.trust_remote_code = bool(trust_remote_code)
        self.top_k = top_k
        self.device = resolve_device(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self._load()

    # -- loading -------------------------------------------------------------------------------------

    def _extra_load_kwargs(self) -> dict[str, Any]:
        """Subclass hook (``gguf`` adds ``gguf_file``)."""
        return {}

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        common = {
            "revision": self.revision,
            "local_files_only": self.local_files_only,
            "trust_remote_code": self.trust_remote_code,
        }
        extra = self._extra_load_kwargs()
        model_kwargs: dict[str, Any] = {**common, **extra, transformers_dtype_kwarg(): self.torch_dtype}
        if self.device != "cpu":
            model_kwargs["device_map"] = self.device  # load straight onto the GPU, not via CPU RAM
        logger.info("loading LLM %s (%s, %s)", self.model_id, self.device, self.torch_dtype)
        try:
            if self.tokenizer_id:
                tok = AutoTokenizer.from_pretrained(self.tokenizer_id, **common)
            else:
                tok = AutoTokenizer.from_pretrained(self.model_id, **common, **extra)
            model = AutoModelForCausalLM.from_pretrained(self.model_id, **model_kwargs)
        except Exception as e:  # hub, config, tokenizer and weight errors come in many types
            raise load_error("LLM", self.model_id, self.local_files_only, e) from e
        if self.device == "cpu":
            model = model.to("cpu")
        model.eval()

        if not getattr(tok, "chat_template", None):
            raise BackendError(
                f"the tokenizer of {self.model_id!r} has no chat template; use an instruction-tuned chat "
                "model (or give 'tokenizer' pointing to one with a template)"
            )
        tok.padding_side = "left"
        if tok.pad_token is None:
            # Any existing token will do: padded positions are masked out and never decoded.
            for candidate in (tok.eos_token, tok.unk_token, tok.bos_token):
                if candidate is not None:
                    tok.pad_token = candidate
                    break
            else:
                raise BackendError(f"the tokenizer of {self.model_id!r} has no pad, eos, unk or bos token")
        self._tok, self._model = tok, model
        self._torch_version = torch.__version__
        # Stop at the end of the assistant turn: some checkpoints name only one of the tokenizer's eos
        # and the generation config's eos (e.g. <|eot_id|> vs <|end_of_text|>); stop at any of them.
        eos = getattr(model.generation_config, "eos_token_id", None)
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        if tok.eos_token_id is not None and tok.eos_token_id not in eos_ids:
            eos_ids.append(tok.eos_token_id)
        self._eos_ids = eos_ids or None

    # -- generation ----------------------------------------------------------------------------------

    def generate(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        convs = self.prepare(conversations, max_new_tokens, temperature, top_p)
        if not convs:
            return []
        tok = self._tok
        prompts = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in convs]
        # Longest first: similar lengths share a batch (less padding) and an out-of-memory error shows
        # on the first batch rather than after an hour.
        lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        replies = [""] * len(prompts)
        batches = [order[k : k + self.batch_size] for k in range(0, len(order), self.batch_size)]
        for b, idx in enumerate(progress(batches, desc="LLM batches", unit="batch")):
            batch_seed = None if seed is None else derive_seed(seed, b)
            texts = self._generate_batch(
                [prompts[i] for i in idx], max_new_tokens, temperature, top_p, batch_seed
            )
            for i, t in zip(idx, texts):
                replies[i] = t
        return replies

    def _generate_batch(
        self, prompts: list[str], max_new_tokens: int, temperature: float, top_p: float, seed: int | None
    ) -> list[str]:
        import torch

        tok, model = self._tok, self._model
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": self._eos_ids,
        }
        if temperature > 0:
            kwargs.update(
                do_sample=True, temperature=float(temperature), top_p=float(top_p), top_k=self.top_k
            )
        else:  # greedy (sampling flags left unset: transformers warns about flags greedy ignores)
            kwargs["do_sample"] = False
        try:
            with torch.inference_mode(), _seeded(seed, self.device):
                out = model.generate(**enc, **kwargs)
        except torch.cuda.OutOfMemoryError as e:
            if len(prompts) == 1:
                raise BackendError(
                    f"out of GPU memory generating one reply with {self.model_id!r}; use a smaller model, "
                    "dtype float16/bfloat16 or a smaller max_new_tokens"
                ) from e
            half = len(prompts) // 2
            self.batch_size = max(1, half)
            logger.warning(
                "LLM out of GPU memory at batch %d; retrying with batch_size %d", len(prompts), half
            )
            torch.cuda.empty_cache()
            s1 = None if seed is None else derive_seed(seed, 1)
            s2 = None if seed is None else derive_seed(seed, 2)
            return self._generate_batch(prompts[:half], max_new_tokens, temperature, top_p, s1) + (
                self._generate_batch(prompts[half:], max_new_tokens, temperature, top_p, s2)
            )
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        return [t.strip() for t in tok.batch_decode(new_tokens, skip_special_tokens=True)]

    # -- manifest ------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        config = getattr(self._model, "config", None)
        return {
            "backend": self.backend_name,
            "model": self.model_id,
            "revision": self.revision,
            # The exact hub commit the weights came from (None for local folders).
            "commit": getattr(config, "_commit_hash", None),
            "tokenizer": self.tokenizer_id,
            "dtype": str(self.torch_dtype).replace("torch.", ""),
            "device": self.device,
            "top_k": self.top_k,
            "transformers": _transformers_version(),
            "torch": self._torch_version,
        }

    def _closed(self) -> bool:
        return self._model is None
