"""A stand-in for a backend whose model lives on Ray replicas: the role's methods (``caption``, ``embed``,
``render``, ``generate``) run as an executor map; ``info()``, ``cache_key``, ``batch_size``, ``input_size`` and
``dim`` come from one replica's description (:meth:`spti.executor.base.Executor.describe`).

Why: the code that calls a backend in many places (the render cache, the candidate embedders, the metrics'
feature extractors) keeps calling a backend; with the Ray executor it gets this proxy instead of a model
loaded on the driver. Cost: every call is one executor run (on Ray: one Ray Data job whose replicas load the
model), so the proxy suits calls that carry a whole stage's items (a PE iteration's renders); a loop that
calls once per small batch should use :meth:`~spti.executor.base.Executor.stream` instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spti.executor.tasks import BackendInfo, LLMCall, Step

__all__ = ["RemoteBackend"]


class RemoteBackend:
    """Implements the methods of ``role`` by running ``config``'s backend through ``executor``."""

    def __init__(self, executor: Any, role: str, config: Mapping[str, Any] | str, description: BackendInfo):
        self.executor = executor
        self.role = role
        self.config = config
        self.description = description
        self.backend_name = description.backend_name
        self.batch_size = description.batch_size
        self.input_size = description.input_size
        self.sends_data_off_machine = description.sends_data_off_machine

    def __repr__(self) -> str:
        return f"RemoteBackend({self.role}, {self.backend_name!r}, executor={self.executor.kind})"

    def info(self) -> dict[str, Any]:
        return dict(self.description.info)

    @property
    def cache_key(self) -> str:
        return self.description.cache_key

    @property
    def dim(self) -> int:
        if self.description.dim is None:
            raise AttributeError(f"{self.role} {self.backend_name!r} did not report its feature width")
        return self.description.dim

    def _step(self, name: str) -> Step:
        return Step(self.role, self.config, batch_size=self.batch_size, name=name)

    def caption(self, images: Sequence[Any]) -> list[str]:
        return self.executor.map(self._step("captioning"), list(images))

    def embed(self, items: Sequence[Any]) -> Any:
        import numpy as np

        rows = self.executor.map(self._step("embedding"), list(items))
        if not rows:
            return np.zeros((0, self.description.dim or 0), dtype=np.float32)
        return np.stack([np.asarray(r, dtype=np.float32) for r in rows])

    def render(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Any]:
        import io

        from PIL import Image

        out = []
        if len(prompts) != len(seeds):
            raise ValueError(f"render: {len(prompts)} prompts but {len(seeds)} seeds")
        for png in self.executor.map(self._step("rendering"), list(zip(prompts, seeds))):
            with Image.open(io.BytesIO(png)) as im:
                out.append(im.convert("RGB"))
        return out

    @property
    def splittable(self) -> bool:
        """The backend class's ``splittable`` (see :class:`spti.models.llm.LLM`)."""
        from spti.executor import is_splittable

        return self.role == "llm" and is_splittable(self)

    def generate(self, conversations: Sequence[Any], *, max_new_tokens: int = 64, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int | None = None, first_index: int = 0) -> list[str]:
        """One round of replies. For a ``splittable`` backend with a seed the round is cut into calls of
        ``executor.llm_chunk`` conversations that run on all LLM replicas at once (the same replies as one
        call); otherwise it is one call on one replica."""
        from spti.executor.tasks import split_call

        call = LLMCall(list(conversations), max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                       seed=seed, first_index=int(first_index))
        calls = split_call(call, self.executor.llm_chunk) if seed is not None and self.splittable else [call]
        out: list[str] = []
        for replies in self.executor.map(self._step("LLM calls"), calls):
            out.extend(replies)
        return out

    def close(self) -> None:
        """Nothing held here: the replicas end with their Ray Data job."""
