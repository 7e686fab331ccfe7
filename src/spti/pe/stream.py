"""Stream, don't stage: a PE generation round whose replies are rendered and embedded while the LLM is still
writing the rest (image voting).

Why: in image voting every new candidate is rendered and embedded. Staged, an iteration is "all LLM calls,
then all renders, then all features", and on a cluster the renderers' GPUs wait while the LLM writes. Here the
round is cut into LLM calls of ``executor.llm_chunk`` conversations; each call is the root of one executor
chain ``llm -> renderer -> image_embedder``, so on Ray (three actor pools of one Ray Data pipeline) the
renderers start on the first call's replies and the LLM replicas work on several calls at once.

Same replies as one long call. Only an LLM backend that declares ``splittable`` is cut: reply ``i`` of its
calls depends only on conversation ``i``, the sampling parameters and ``derive_seed(seed, first_index + i)``
(llamacpp, vllm, openai), so the calls ``LLMCall(conversations[s:s+c], first_index=s)`` give exactly the
replies of the whole round in one call. Other backends (transformers ``hf``/``gguf``, which batch by prompt
length across the whole call) keep one call per round and are rendered in the embedding stage, as before.

Same bytes on every executor. The chain's tasks are the same on the local executor (run one after the other)
and on Ray, so renders and feature rows are the same. Each call's link (:func:`prefetch_link`) cleans every
reply exactly as the generator will (the same :func:`spti.text.clean_caption` call) and makes render items for
the usable ones that are not known already (the round's parents, whose renders are cached); the raw replies
travel along as pass-through leaves (:class:`~spti.executor.tasks.Passthrough`). The driver keeps:

* the raw replies in round order — the generator cleans, counts and retries them exactly as without streaming;
* each render's PNG, written into the render cache at once (a crash keeps every finished render);
* each render's feature row, held in memory (:attr:`RenderStream.prefetched`) until
  :class:`~spti.pe.candidates.ImageCandidateEmbedder` writes it into the feature cache in the order of its own
  loop, so the cache's shards do not depend on which call finished first.

A reply that the generator later drops (a duplicate removed by ``pe.dedup``) was rendered for nothing; a text
written twice in two different calls is rendered twice (the second write of the same bytes changes nothing).
Both are counted in the run's ``renderer_calls``.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from spti.errors import BackendError
from spti.executor import is_splittable
from spti.log import logger

__all__ = ["RenderStream", "prefetch_link", "text_digest"]


def text_digest(text: str) -> bytes:
    """A short digest of a caption: what the link compares against known texts (the texts themselves would
    travel to every LLM task; 16 bytes each do not)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def prefetch_link(clean: Callable[[str], tuple[str | None, str]], seeds: tuple[int, ...], known: frozenset[bytes],
                  item: Any, output: Sequence[str]) -> list[Any]:
    """The chain link after an LLM call: per reply, a pass-through of ``(index, raw reply)``, then one
    ``(text, seed)`` render item per seed for a usable reply whose text is neither known (``known``: digests)
    nor already seen in this call. Top-level and picklable: it runs on the LLM replica."""
    from spti.executor.tasks import Passthrough

    out: list[Any] = []
    seen: set[bytes] = set()
    for i, raw in enumerate(output):
        out.append(Passthrough((i, raw)))
        text, _ = clean(raw)
        if text is None:
            continue
        d = text_digest(text)
        if d in known or d in seen:
            continue
        seen.add(d)
        out.extend((text, int(s)) for s in seeds)
    return out


class RenderStream:
    """Runs a generation round as ``llm -> renderer -> image_embedder`` chains (see the module docstring).

    ``llm``, ``render_cache.renderer`` and ``image_embedder`` must all be live models (local executor) or all
    proxies of one Ray executor: :meth:`possible` says whether they can stream."""

    def __init__(self, llm: Any, render_cache: Any, image_embedder: Any, *, seeds: Sequence[int], chunk: int,
                 executor: Any = None, stats: Counter | None = None):
        self.llm = llm
        self.render_cache = render_cache
        self.image_embedder = image_embedder
        self.seeds = tuple(int(s) for s in seeds)
        self.chunk = max(1, int(chunk))
        self.executor = executor
        #: (text, seed) -> feature row of the renders made by the chains, until the embedder takes them
        self.prefetched: dict[tuple[str, int], np.ndarray] = {}
        #: ``<stage>.streamed_calls`` / ``<stage>.streamed_renders`` (the run's evolve statistics)
        self.stats: Counter = stats if stats is not None else Counter()

    @staticmethod
    def possible(llm: Any, renderer: Any, image_embedder: Any) -> bool:
        """Whether the three backends can form one chain: a splittable LLM, and all three live or all three
        proxies of the same executor."""
        from spti.executor import is_remote

        if not is_splittable(llm):
            return False
        remote = [is_remote(b) for b in (llm, renderer, image_embedder)]
        if not any(remote):
            return True
        return all(remote) and llm.executor is renderer.executor is image_embedder.executor

    def take(self, pair: tuple[str, int]) -> np.ndarray | None:
        """The feature row of a streamed render (removed from the stream), or None."""
        return self.prefetched.pop(pair, None)

    def clear(self) -> None:
        self.prefetched.clear()

    def generate(self, conversations: Sequence[Any], *, max_new_tokens: int, temperature: float, top_p: float,
                 seed: int | None, clean: Callable[[str], tuple[str | None, str]], known: Iterable[str] = (),
                 desc: str = "LLM calls", stage: str = "llm") -> list[str]:
        """The raw replies of ``llm.generate(conversations, ...)``, rendering and embedding the usable ones
        on the way. ``clean``: the generator's cleaning (a picklable callable); ``known``: texts whose renders
        exist (not rendered again). Without a seed a round cannot be cut into calls with the same replies: one
        plain call then."""
        convs = list(conversations)
        if seed is None or not convs:
            return list(self.llm.generate(convs, max_new_tokens=max_new_tokens, temperature=temperature,
                                          top_p=top_p, seed=seed))
        from spti.executor import active_executor, step_for
        from spti.executor.tasks import LLMCall, Passthrough

        calls = [LLMCall(convs[s : s + self.chunk], max_new_tokens=max_new_tokens, temperature=temperature,
                         top_p=top_p, seed=int(seed), first_index=s) for s in range(0, len(convs), self.chunk)]
        link = functools.partial(prefetch_link, clean, self.seeds, frozenset(text_digest(t) for t in known))
        local = self.executor if self.executor is not None else active_executor()
        if local is not None and local.kind != "local":
            local = None  # live models run on a local executor, never on a Ray one
        ex, llm_step = step_for("llm", self.llm, executor=local, link=link, name=desc)
        _, render_step = step_for("renderer", self.render_cache.renderer, executor=ex,
                                  name="rendering candidates")
        _, embed_step = step_for("image_embedder", self.image_embedder, executor=ex, name="embedding renders")
        replies: list[str | None] = [None] * len(convs)
        rendered = 0
        for r, per_root in ex.stream([llm_step, render_step, embed_step], calls, desc=desc, task_size=1):
            for k, leaves in zip(r, per_root, strict=True):
                call = calls[k]
                got = 0
                for trail in leaves:
                    head = trail[0]
                    if isinstance(head, Passthrough):
                        i, raw = head.value
                        if not 0 <= i < len(call.conversations) or replies[call.first_index + i] is not None:
                            raise BackendError("LLM stream: a reply came back twice or out of its call")
                        replies[call.first_index + i] = raw
                        got += 1
                        continue
                    pair, png, vec = trail
                    pair = (str(pair[0]), int(pair[1]))
                    self.render_cache.store(pair, png)
                    self.prefetched[pair] = np.asarray(vec, dtype=np.float32)
                    rendered += 1
                if got != len(call.conversations):
                    raise BackendError(f"LLM backend returned {got} replies for {len(call.conversations)} prompts")
        self.render_cache.stats[self.render_cache.stage_counter] += rendered
        self.stats[f"{stage}.streamed_calls"] += len(calls)
        self.stats[f"{stage}.streamed_renders"] += rendered
        logger.debug("LLM stream: %d calls, %d renders made on the way", len(calls), rendered)
        return [r if r is not None else "" for r in replies]
