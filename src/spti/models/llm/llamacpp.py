"""``llamacpp``: GGUF models through llama-cpp-python. The offline default LLM of spti.

Why the default: on 2 CPU cores it loads the bundled SmolLM2-135M-Instruct in 0.2 s and writes 130-145
tokens/s in 210 MB of RAM (FACTS), faster than transformers at batch 8 with a seventh of the memory.

Reproducibility: every conversation gets its own seed derived from the call's ``seed`` and its index, and
the model state is reset before each one, so a reply depends only on (model, conversation, seed, index),
not on what the model generated before (llama.cpp would otherwise reuse a cached prompt prefix, whose
logits can differ in the last bits from a fresh evaluation). ``reuse_prompt_prefix: true`` trades that
for speed: on CPU a prompt token costs about as much as a generated one, so reusing a long shared
system prompt can save a good part of the time.

Threads: prompt evaluation uses as many threads as generation (llama-cpp-python's default would use every
logical CPU for it). llama.cpp's threads wait for each other by spinning, so they collapse when another
process takes a core: on 2 cores with one busy process, 2 threads write 0.31x the tokens/s of the idle
machine, 1 thread 0.67x (but 0.68x when idle), ``OMP_WAIT_POLICY=PASSIVE`` 0.55x (0.47x idle).
``n_threads: auto`` (the default) follows the load, re-measured about once a second
(:class:`spti._threads.FreeCores`): 1.04x idle, 0.65x busy (benchmarks/bench_llm_threads.py).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spti._threads import FreeCores, available_cpus
from spti.errors import BackendError, ConfigError
from spti.log import logger, progress
from spti.models._hub import resolve_local_files_only
from spti.models._offline import SMOLLM2_DIST, bundled_version
from spti.models.llm import LLM, REGISTRY, Conversation, derive_seed
from spti.models.llm.gguf import split_gguf

_INSTALL_HINT = "pip install 'spti[llamacpp]' (compiles llama.cpp: a few minutes)"


def _default_threads() -> int:
    """The most threads worth using: all CPUs this process may use on small machines (an idle 2-vCPU
    machine: 2 threads 0.45 s per caption, 1 thread 0.79 s), half of them on larger ones (physical cores
    on hyper-threaded servers, llama.cpp's own choice). With ``n_threads: auto`` (the default) fewer are
    used while other processes keep cores busy."""
    n = available_cpus()
    return n if n <= 4 else max(n // 2, 1)


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as e:
        raise BackendError(f"llama-cpp-python is not installed: {_INSTALL_HINT}") from e
    return llama_cpp


def resolve_gguf_file(
    model: str | None, gguf_file: str | None, *, revision: str | None, local_files_only: bool
) -> tuple[Path, bool]:
    """Local path of the GGUF file to load and whether it is the bundled one.

    A hub repo is fetched with ``hf_hub_download`` (one exact file: a repo holds many quantisations),
    honouring ``revision`` and ``local_files_only`` like every other Hugging Face backend.
    """
    where, name, bundled = split_gguf(model, gguf_file)
    local = Path(where) / name
    if local.is_file():
        return local, bundled
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise BackendError(f"downloading {where!r} needs huggingface_hub: pip install huggingface_hub") from e
    try:
        path = hf_hub_download(where, name, revision=revision, local_files_only=local_files_only)
    except Exception as e:  # huggingface_hub raises many types (offline, 404, auth, network)
        hint = (
            " (local_files_only is on: it must already be in the Hugging Face cache)"
            if local_files_only
            else ""
        )
        raise BackendError(f"could not get {name!r} from {where!r}{hint}: {e}") from e
    return Path(path), False


@REGISTRY.register("llamacpp")
class LlamaCppLLM(LLM):
    """A GGUF chat model run by llama.cpp, one conversation at a time.

    Options: ``model`` (default: the bundled SmolLM2; a ``.gguf`` path, a folder, or a hub repo with
    ``gguf_file``), ``gguf_file``, ``revision``, ``local_files_only``, ``device`` (``auto`` offloads all
    layers to the GPU when llama.cpp was built with GPU support), ``n_ctx`` (prompt + reply tokens),
    ``n_threads`` (default ``auto``: at most all CPUs available to this process up to 4, half of them
    above, and fewer while other processes keep cores busy, re-checked about once a second; an integer
    fixes it),
    ``reuse_prompt_prefix`` (see the module docstring), ``chat_format`` (default: the GGUF's own template) and
    the extra sampling filters ``top_k``, ``min_p``, ``repeat_penalty``, off by default so that sampling
    depends on temperature and top_p only, as in the other backends.

    ``splittable``: reply ``i`` is seeded ``derive_seed(seed, first_index + i)`` and evaluated from a fresh
    context, so a round cut into calls gives the replies of one call (with ``reuse_prompt_prefix`` replies
    depend on what ran before in any case, in their last bits).
    """

    splittable = True

    def __init__(
        self,
        model: str | None = None,
        *,
        gguf_file: str | None = None,
        revision: str | None = None,
        local_files_only: bool | None = None,
        device: str = "auto",
        n_ctx: int = 2048,
        n_threads: int | str | None = None,
        reuse_prompt_prefix: bool = False,
        chat_format: str | None = None,
        top_k: int = 0,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
    ) -> None:
        if not isinstance(n_ctx, int) or n_ctx < 16:
            raise ConfigError(f"n_ctx must be an integer >= 16, got {n_ctx!r}")
        if n_threads is not None and n_threads != "auto" and (
            not isinstance(n_threads, int) or isinstance(n_threads, bool) or n_threads < 1
        ):
            raise ConfigError(f"n_threads must be a positive integer, 'auto' or null, got {n_threads!r}")
        llama_cpp = _import_llama_cpp()
        lfo = resolve_local_files_only(local_files_only)
        self.path, self.bundled = resolve_gguf_file(model, gguf_file, revision=revision, local_files_only=lfo)
        self.model_id = str(model) if model else None
        self.revision = revision
        self.n_ctx = n_ctx
        self.auto_threads = n_threads in (None, "auto")
        self.n_threads = _default_threads() if self.auto_threads else int(n_threads)  # type: ignore[arg-type]
        self._free = FreeCores(self.n_threads) if self.auto_threads else None
        if self._free is not None:
            time.sleep(0.25)  # a first look at the other processes' CPU use before the first reply
        self._threads_now = self._free.threads(force=True) if self._free is not None else self.n_threads
        self.threads_used: dict[int, int] = {}  # replies per thread count (auto: shows the adaptation)
        self.reuse_prompt_prefix = bool(reuse_prompt_prefix)
        self.chat_format = chat_format
        self.top_k, self.min_p, self.repeat_penalty = int(top_k), float(min_p), float(repeat_penalty)
        self.n_gpu_layers = self._gpu_layers(llama_cpp, device)
        self._version = getattr(llama_cpp, "__version__", "?")
        logger.info(
            "loading LLM %s with llama.cpp (n_ctx %d, GPU layers %d)",
            self.path.name,
            n_ctx,
            self.n_gpu_layers,
        )
        try:
            self._llm: Any = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=n_ctx,
                n_threads=self._threads_now,
                n_threads_batch=self._threads_now,
                n_gpu_layers=self.n_gpu_layers,
                chat_format=chat_format,
                seed=0,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as e:
            raise BackendError(f"llama.cpp could not load {self.path}: {e}") from e

    @staticmethod
    def _gpu_layers(llama_cpp: Any, device: str | None) -> int:
        dev = "auto" if device is None else str(device).lower()
        gpu = bool(getattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)())
        if dev == "cpu":
            return 0
        if dev == "auto":
            return -1 if gpu else 0
        if dev.startswith("cuda") or dev == "mps":
            if not gpu:
                raise BackendError(
                    f"device {device!r} requested but this llama-cpp-python build has no GPU support; "
                    "reinstall it with CMAKE_ARGS='-DGGML_CUDA=on' or use device: cpu"
                )
            return -1
        raise ConfigError(f"bad device {device!r}; use auto, cpu or cuda")

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
        if seed is None:
            # llama-cpp-python would fall back to a fixed seed; unseeded calls should vary.
            seed = random.SystemRandom().getrandbits(31)
        replies: list[str] = []
        failures: list[str] = []
        for i, messages in enumerate(progress(convs, desc="LLM replies", unit="reply")):
            self._adapt_threads()
            if not self.reuse_prompt_prefix:
                self._llm.reset()  # see the module docstring
            try:
                out = self._llm.create_chat_completion(
                    messages=messages,
                    max_tokens=max_new_tokens,
                    temperature=float(temperature),
                    top_p=float(top_p),
                    top_k=self.top_k,
                    min_p=self.min_p,
                    repeat_penalty=self.repeat_penalty,
                    seed=derive_seed(seed, first_index + i),
                )
                text = out["choices"][0]["message"]["content"] or ""
            except (ValueError, RuntimeError, KeyError, IndexError) as e:
                # Typically a prompt longer than n_ctx. Prompts are not private; the error names sizes.
                failures.append(f"{type(e).__name__}: {e}")
                text = ""
            replies.append(text.strip())
        if failures:
            logger.warning(
                "llama.cpp failed on %d of %d conversations (first: %s)",
                len(failures),
                len(convs),
                failures[0],
            )
            if len(failures) == len(convs):
                raise BackendError(f"llama.cpp failed on every conversation; first error: {failures[0]}")
        return replies

    def _adapt_threads(self) -> None:
        """``n_threads: auto``: before each reply, as many threads as the other processes leave cores free
        (:class:`spti._threads.FreeCores`, re-measured at most once a second), at most ``n_threads``."""
        if self._free is not None:
            n = self._free.threads()
            if n != self._threads_now:
                import llama_cpp

                llama_cpp.llama_set_n_threads(self._llm.ctx, n, n)
                logger.debug("llama.cpp: %d thread(s) (other processes use %.1f cores)", n, self._free.others)
                self._threads_now = n
        self.threads_used[self._threads_now] = self.threads_used.get(self._threads_now, 0) + 1

    def info(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "backend": self.backend_name,
            "model": self.model_id,
            "gguf_file": self.path.name,
            "revision": self.revision,
            "file_size": os.path.getsize(self.path) if self.path.is_file() else None,
            "n_ctx": self.n_ctx,
            "n_gpu_layers": self.n_gpu_layers,
            "n_threads": "auto" if self.auto_threads else self.n_threads,
            "max_threads": self.n_threads,
            "reuse_prompt_prefix": self.reuse_prompt_prefix,
            "chat_format": self.chat_format,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty,
            "llama_cpp": self._version,
        }
        if self.bundled:
            d["model"] = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1)"
            d["bundled"] = f"{SMOLLM2_DIST}=={bundled_version(SMOLLM2_DIST)}"
        return d

    def _closed(self) -> bool:
        return self._llm is None

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None and hasattr(llm, "close"):
            llm.close()
