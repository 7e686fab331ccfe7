"""Render the DP captions into the release (``release/images/`` + ``metadata.jsonl``).

Rendering is post-processing of DP output: it spends no budget. Renders go through the run's
:class:`spti.data.cache.RenderCache`, so the release reuses what the PE loop (image voting), the
per-iteration evaluator or an interrupted render stage already made; every renderer call is counted in
``stats.json``'s ``renderer_calls``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from spti.config import Config
from spti.data.cache import RenderCache, render_seed
from spti.data.release import write_images
from spti.data.run import RunDir


def renderer_config(run_dir: RunDir, cfg: Config, rcfg: dict[str, Any]) -> dict[str, Any]:
    """A renderer's backend config completed from the run: the retrieval renderer gets the run's cache
    folder, captioner, text embedder and public pool unless ``rcfg`` names its own."""
    c = dict(rcfg)
    if c.get("backend") == "retrieval":
        c.setdefault("cache_dir", str(run_dir.cache / "retrieval"))
        c.setdefault("captioner", dict(cfg.captioner))
        c.setdefault("text_embedder", dict(cfg.text_embedder))
        if cfg.data.public_pool and not c.get("pool"):
            c["pool"] = cfg.data.public_pool
    return c


def build_run_renderer(run_dir: RunDir, cfg: Config, rcfg: dict[str, Any]):
    """The renderer ``rcfg`` names, configured for this run (:func:`renderer_config`)."""
    from spti.models.renderer import build_renderer

    return build_renderer(renderer_config(run_dir, cfg, rcfg))


def release_pairs(texts: Sequence[str], per_caption: int, base_seed: int) -> list[tuple[str, int]]:
    """(caption, seed) for every release image; a caption selected twice gets fresh seeds the second time."""
    seen: Counter = Counter()
    pairs = []
    for t in texts:
        occ = seen[t]
        seen[t] += 1
        for j in range(per_caption):
            pairs.append((t, render_seed(base_seed, occ * per_caption + j)))
    return pairs


def render_stage(run_dir: RunDir, cfg: Config, texts: Sequence[str], renderer=None) -> list[dict[str, str]]:
    """Render the DP captions into release/images + metadata.jsonl with ``renderer`` (default: the release
    renderer of the config, or its loop renderer). Renders already in the cache (image voting's loop
    renders, or a previous interrupted render stage) are reused."""
    stats: Counter = Counter(run_dir.stats().get("renderer_calls", {}))
    renderer = renderer or build_run_renderer(run_dir, cfg, cfg.release_renderer or cfg.renderer)
    cache = RenderCache(run_dir.cache, renderer, stats, "release")
    stats.setdefault("release", 0)
    pairs = release_pairs(texts, cfg.render.images_per_caption, cfg.render.seed)
    paths = cache.get_paths(pairs, desc="rendering the release")
    rows = write_images(run_dir.release, [(t, p) for (t, _), p in zip(pairs, paths)])
    run_dir.update_stats("renderer_calls", stats)
    run_dir.update_manifest(models={"release_renderer": renderer.info()})
    run_dir.mark_stage("render", images=len(rows), renderer_calls=int(stats["release"]))
    return rows
