"""Candidate embedders: how PE maps candidate captions to the vectors private samples vote against.

Both implement the engine's :class:`spti.pe.engine.CandidateEmbedder` protocol
(``embedder(texts, iteration=t) -> (len(texts), d) array``):

- :class:`TextCandidateEmbedder` (text voting; Aug-PE): the caption's text embedding, or with lookahead L
  the mean embedding of L of its variations;
- :class:`ImageCandidateEmbedder` (image voting; SPTI): the image features of the caption's renders.

Both cache by content (:mod:`spti.data.cache`), so the parents kept from one iteration to the next are
never embedded (or rendered) twice.

Labelled runs pass ``labels`` (the class of every candidate): text lookahead writes each candidate's
variations with its class's description and stream; image voting renders the caption as it is (the class
is in the caption the LLM wrote), so it ignores them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from spti.data.cache import FeatureCache, RenderCache, render_seed
from spti.errors import BackendError
from spti.hashing import content_key
from spti.log import logger, progress
from spti.pe.generation import TextGenerator
from spti.pe.histogram import normalize_rows


class TextCandidateEmbedder:
    """Text voting: candidates embedded by a text embedder (cached by content). With ``lookahead`` L > 0
    a candidate is represented by the mean embedding of L of its variations (Aug-PE's lookahead)."""

    def __init__(self, embedder, *, cache: FeatureCache | None = None, generator: TextGenerator | None = None,
                 lookahead: int = 0, normalize: bool = True):
        self.embedder = embedder
        self.cache = cache if cache is not None else FeatureCache()
        self.generator = generator
        self.lookahead = int(lookahead)
        self.normalize = normalize
        if self.lookahead and generator is None:
            raise ValueError("lookahead needs the text generator")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        key = self.embedder.cache_key
        keys = [content_key(key, t) for t in texts]
        vecs = self.cache.compute(keys, list(texts), lambda items: self.embedder.embed(items))
        return normalize_rows(vecs) if self.normalize else vecs

    def __call__(self, texts: Sequence[str], *, iteration: int, labels: Sequence[int] | None = None) -> np.ndarray:
        if not self.lookahead:
            return self.embed_texts(texts)
        if labels is None:
            groups = self.generator.variations(texts, self.lookahead, iteration=iteration, stage="lookahead")
        else:  # per class: its description and its own stream, as the engine's variations
            labels = np.asarray(labels, dtype=np.int64)
            groups = [[] for _ in texts]
            for c in np.unique(labels).tolist():
                members = np.flatnonzero(labels == c).tolist()
                per = self.generator.variations([texts[i] for i in members], self.lookahead, iteration=iteration,
                                                stage="lookahead", label=c)
                for i, g in zip(members, per):
                    groups[i] = g
        flat = [v for g in groups for v in g]
        emb = self.embed_texts(flat).reshape(len(texts), self.lookahead, -1)
        return emb.mean(axis=1)  # not renormalised: L2 to the mean, as Aug-PE


class ImageCandidateEmbedder:
    """SPTI image voting: render each candidate (``renders`` seeds; averaged = PE's lookahead in image
    space), embed the renders with the image embedder, normalise. Renders and features are cached, so kept
    parents are never rendered twice and the release reuses the loop's renders. Batch sizes are the
    renderer's and the image embedder's own (``batch_size`` of each backend). With models on an executor's
    replicas (Ray: :meth:`spti.executor.Executor.backend` proxies), rendering and embedding stream through
    one pipeline (:meth:`_render_and_embed_remote`)."""

    def __init__(self, render_cache: RenderCache, image_embedder, *, renders: int, base_seed: int,
                 feature_cache: FeatureCache, normalize: bool = True, stream=None):
        self.render_cache = render_cache
        self.image_embedder = image_embedder
        self.renders = max(1, int(renders))
        self.base_seed = base_seed
        self.features = feature_cache
        self.normalize = normalize
        #: a :class:`spti.pe.stream.RenderStream` whose rounds rendered and embedded candidates already
        self.stream = stream

    @property
    def seeds(self) -> tuple[int, ...]:
        """The render seeds of every candidate (one per render; more than one = lookahead in image space)."""
        return tuple(render_seed(self.base_seed, j) for j in range(self.renders))

    def __call__(self, texts: Sequence[str], *, iteration: int, labels: Sequence[int] | None = None) -> np.ndarray:
        pairs = [(t, s) for t in texts for s in self.seeds]
        keys = [content_key(self.render_cache.renderer.cache_key, self.image_embedder.cache_key, t, str(s)) for t, s in pairs]
        need = [i for i, k in enumerate(keys) if k not in self.features]
        vectors = self._streamed_rows(pairs, need)
        missing = [i for i in need if pairs[i] not in vectors]
        if vectors:
            logger.debug("candidates: %d of %d renders to embed came from the render stream",
                         len(need) - len(missing), len(need))
        if missing and self._remote():
            self._render_and_embed_remote(pairs, missing, iteration, vectors)
        elif missing:
            self._render_and_embed_local(pairs, keys, need, missing, iteration, vectors)
        if self._write_ready(pairs, keys, need, vectors, 0) != len(need):
            raise RuntimeError("candidates: a render was neither streamed, rendered nor embedded")
        feats = np.stack([self.features.get(k) for k in keys]).astype(np.float32)
        if self.normalize:
            feats = normalize_rows(feats)
        return feats.reshape(len(texts), self.renders, -1).mean(axis=1)

    def _streamed_rows(self, pairs: list[tuple[str, int]], need: list[int]) -> dict[tuple[str, int], np.ndarray]:
        """The rows the round's render stream made for ``need`` (the same features, already there); the
        stream's other rows (texts that did not become candidates: dropped duplicates) are let go."""
        if self.stream is None:
            return {}
        rows = {pairs[i]: self.stream.prefetched[pairs[i]] for i in need if pairs[i] in self.stream.prefetched}
        self.stream.clear()
        return rows

    def _write_ready(self, pairs: list[tuple[str, int]], keys: list[str], need: list[int],
                     vectors: dict[tuple[str, int], np.ndarray], done: int) -> int:
        """Write into the feature cache the slices of ``need`` (in order, the embedder's batch size each) from
        ``done`` on whose rows are all in ``vectors``; returns how far it got. One writer for every path, so
        the cache's shards are the same whether rows were streamed, rendered here or on Ray."""
        bs = max(1, int(self.image_embedder.batch_size))
        while done < len(need):
            chunk = need[done : done + bs]
            if any(pairs[i] not in vectors for i in chunk):
                break
            self.features.put_many([keys[i] for i in chunk], np.stack([vectors[pairs[i]] for i in chunk]))
            done += len(chunk)
        return done

    def _render_and_embed_local(self, pairs: list[tuple[str, int]], keys: list[str], need: list[int],
                                missing: list[int], iteration: int, vectors: dict[tuple[str, int], np.ndarray]) -> None:
        """Render ``missing`` (the render cache makes what it lacks) and embed the renders in batches of the
        embedder's size, writing the feature cache as slices of ``need`` complete (a crash keeps them)."""
        from PIL import Image

        paths = self.render_cache.get_paths([pairs[i] for i in missing],
                                            desc=f"rendering candidates (iteration {iteration})")
        bs = max(1, int(self.image_embedder.batch_size))
        done = 0
        for b in progress(range(0, len(missing), bs), desc="embedding renders", total=math.ceil(len(missing) / bs)):
            imgs = []
            for p in paths[b : b + bs]:
                with Image.open(p) as im:
                    imgs.append(im.convert("RGB"))
            rows = np.asarray(self.image_embedder.embed(imgs), dtype=np.float32)
            if rows.ndim != 2 or rows.shape[0] != len(imgs):  # an embedder dropped an item: say so, as the cache does
                raise BackendError(f"embedder returned {rows.shape[0] if rows.ndim else 0} vectors for {len(imgs)} "
                                   "items; an embedder must return exactly one per item, in order")
            for i, vec in zip(missing[b : b + bs], rows):
                vectors[pairs[i]] = vec
            done = self._write_ready(pairs, keys, need, vectors, done)

    def _remote(self) -> bool:
        from spti.executor import is_remote

        return is_remote(self.image_embedder) or is_remote(self.render_cache.renderer)

    def _render_and_embed_remote(self, pairs: list[tuple[str, int]], need: list[int], iteration: int,
                                 vectors: dict[tuple[str, int], np.ndarray]) -> None:
        """The Ray path (requirement 2: stream, don't stage). Renders that are missing flow through one
        ``renderer -> image_embedder`` pipeline (:meth:`spti.executor.Executor.stream` of a chain), so the
        embedders start on the first renders while the renderers make the rest; each finished task's PNGs go
        into the render cache at once. Renders already cached but not embedded are embedded from their files.

        Same bytes as the local path: tasks are a common multiple of both batch sizes, so (when no render of
        the iteration was cached, the usual case) each backend gets the batches of the local loops; the
        features go into the feature cache in ``need`` order, in slices of the embedder's batch size, after
        the iteration's renders are all in (by the caller, :meth:`_write_ready`): the same cache shards as the
        local path writes. Fills ``vectors``."""
        from spti.executor import is_remote, step_for

        cache, embedder = self.render_cache, self.image_embedder
        bs = max(1, int(embedder.batch_size))
        todo = cache.missing([pairs[i] for i in need])
        if todo and is_remote(embedder) and is_remote(cache.renderer) and embedder.executor is cache.renderer.executor:
            ex, render = step_for("renderer", cache.renderer, name=f"rendering candidates (iteration {iteration})")
            _, embed = step_for("image_embedder", embedder, name="embedding renders")
            size = math.lcm(max(1, int(cache.renderer.batch_size)), bs) * ex.batches_per_task
            for r, per_pair in ex.stream([render, embed], todo, desc=render.label, task_size=size):
                cache.stats[cache.stage_counter] += len(r)
                for k, leaves in zip(r, per_pair, strict=True):
                    ((png, vec),) = leaves  # one render, one feature row per pair
                    cache.store(todo[k], png)
                    vectors[todo[k]] = vec
        elif todo:  # one of the two runs here: render first (on the renderer's executor), then embed
            cache.get_paths(todo, desc=f"rendering candidates (iteration {iteration})")
        rest = list(dict.fromkeys(pairs[i] for i in need if pairs[i] not in vectors))
        if rest:  # renders cached but not embedded (a resumed iteration): their bytes travel, not their paths,
            # so the replicas need not see the run folder
            ex, step = step_for("image_embedder", embedder, name="embedding renders")
            for p, vec in zip(rest, ex.map(step, [cache.path(t, s).read_bytes() for t, s in rest]), strict=True):
                vectors[p] = vec
