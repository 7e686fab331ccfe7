"""Candidate embedders: how PE maps candidate captions to the vectors private samples vote against.

Both implement the engine's :class:`spti.pe.engine.CandidateEmbedder` protocol
(``embedder(texts, iteration=t) -> (len(texts), d) array``):

- :class:`TextCandidateEmbedder` (text voting; Aug-PE): the caption's text embedding, or with lookahead L
  the mean embedding of L of its variations;
- :class:`ImageCandidateEmbedder` (image voting; SPTI): the image features of the caption's renders.

Both cache by content (:mod:`spti.data.cache`), so the parents kept from one iteration to the next are
never embedded (or rendered) twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from spti.data.cache import FeatureCache, RenderCache, render_seed
from spti.hashing import content_key
from spti.log import progress
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

    def __call__(self, texts: Sequence[str], *, iteration: int) -> np.ndarray:
        if not self.lookahead:
            return self.embed_texts(texts)
        groups = self.generator.variations(texts, self.lookahead, iteration=iteration, stage="lookahead")
        flat = [v for g in groups for v in g]
        emb = self.embed_texts(flat).reshape(len(texts), self.lookahead, -1)
        return emb.mean(axis=1)  # not renormalised: L2 to the mean, as Aug-PE


class ImageCandidateEmbedder:
    """SPTI image voting: render each candidate (``renders`` seeds; averaged = PE's lookahead in image
    space), embed the renders with the image embedder, normalise. Renders and features are cached, so kept
    parents are never rendered twice and the release reuses the loop's renders. Batch sizes are the
    renderer's and the image embedder's own (``batch_size`` of each backend)."""

    def __init__(self, render_cache: RenderCache, image_embedder, *, renders: int, base_seed: int,
                 feature_cache: FeatureCache, normalize: bool = True):
        self.render_cache = render_cache
        self.image_embedder = image_embedder
        self.renders = max(1, int(renders))
        self.base_seed = base_seed
        self.features = feature_cache
        self.normalize = normalize

    def __call__(self, texts: Sequence[str], *, iteration: int) -> np.ndarray:
        from PIL import Image

        pairs = [(t, render_seed(self.base_seed, j)) for t in texts for j in range(self.renders)]
        keys = [content_key(self.render_cache.renderer.cache_key, self.image_embedder.cache_key, t, str(s)) for t, s in pairs]
        need = [i for i, k in enumerate(keys) if k not in self.features]
        if need:
            need_pairs = [pairs[i] for i in need]
            paths = self.render_cache.get_paths(need_pairs, desc=f"rendering candidates (iteration {iteration})")
            bs = self.image_embedder.batch_size
            for b in progress(range(0, len(need), bs), desc="embedding renders", total=math.ceil(len(need) / bs)):
                imgs = []
                for p in paths[b : b + bs]:
                    with Image.open(p) as im:
                        imgs.append(im.convert("RGB"))
                self.features.put_many([keys[i] for i in need[b : b + bs]], self.image_embedder.embed(imgs))
        feats = np.stack([self.features.get(k) for k in keys]).astype(np.float32)
        if self.normalize:
            feats = normalize_rows(feats)
        return feats.reshape(len(texts), self.renders, -1).mean(axis=1)
