"""Render the DP captions into the release (``release/images/`` + ``metadata.jsonl``).

Rendering is post-processing of DP output: it spends no budget. Renders go through the run's
:class:`spti.data.cache.RenderCache`, so the release reuses what the PE loop (image voting), the
per-iteration evaluator or an interrupted render stage already made; every renderer call is counted in
``stats.json``'s ``renderer_calls``.

Two privacy rules live here. (1) A retrieval renderer's public pool never overlaps the private data: the
run's ``data.private`` and the sha256 of every ingested private image are always passed to it
(:func:`renderer_config`), so a private image cannot be released verbatim as a "render". (2) ``spti render
--captions FILE`` renders whatever captions it is given; the release may carry the run's ledger only when
they are the run's own DP captions (:func:`caption_provenance`, :func:`mark_release_coverage`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from spti.config import Config
from spti.data.cache import RenderCache, render_seed
from spti.data.io import atomic_write_json, iter_jsonl, read_jsonl
from spti.data.release import write_images
from spti.data.run import RunDir
from spti.hashing import content_key

#: What release/privacy.json says when the rendered captions are not the run's DP output.
NOT_COVERED = "not covered: these captions were not produced by this run's DP mechanism"
NOT_COVERED_SCHEMA = "spti.release-not-covered"


def renderer_config(run_dir: RunDir, cfg: Config, rcfg: dict[str, Any]) -> dict[str, Any]:
    """A renderer's backend config completed from the run: the retrieval renderer gets the run's cache
    folder, captioner, text embedder and public pool unless ``rcfg`` names its own, and ALWAYS the run's
    private data (``private_root``) and the content hashes of its ingested images (``exclude_hashes``,
    added to any the config gives): the pool must not hold private images, and a config cannot opt out."""
    c = dict(rcfg)
    if c.get("backend") == "retrieval":
        c.setdefault("cache_dir", str(run_dir.cache / "retrieval"))
        c.setdefault("captioner", dict(cfg.captioner))
        c.setdefault("text_embedder", dict(cfg.text_embedder))
        if cfg.data.public_pool and not c.get("pool"):
            c["pool"] = cfg.data.public_pool
        if cfg.data.private:
            c["private_root"] = cfg.data.private
        hashes = private_image_hashes(run_dir)
        if hashes or c.get("exclude_hashes"):
            c["exclude_hashes"] = sorted(hashes | {str(h).lower() for h in c.get("exclude_hashes") or ()})
    return c


def private_image_hashes(run_dir: RunDir) -> set[str]:
    """sha256 of every ingested private image (``private/ingest.jsonl``; empty before ingestion or in a
    ``spti evolve`` run). Duplicates share the kept record's hash, so every private file's bytes are in."""
    path = run_dir.private / "ingest.jsonl"
    if not path.is_file():
        return set()
    return {str(r["sha256"]).lower() for r in iter_jsonl(path) if r.get("sha256")}


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
    rows = write_images(run_dir.release, [(t, p) for (t, _), p in zip(pairs, paths, strict=True)])
    run_dir.update_stats("renderer_calls", stats)
    run_dir.update_manifest(models={"release_renderer": renderer.info()})
    run_dir.mark_stage("render", images=len(rows), renderer_calls=int(stats["release"]))
    return rows


# ---------------------------------------------------------------------------------- spti render --captions
def captions_digest(texts: Sequence[str]) -> str:
    """sha256 of a caption list (order and content; :func:`spti.hashing.content_key`)."""
    return content_key(*[str(t) for t in texts])


def caption_provenance(run_dir: RunDir, texts: Sequence[str]) -> dict[str, Any]:
    """Are ``texts`` this run's own DP captions?

    The reference is the population of the last PE iteration saved in ``checkpoints/`` (the engine's own
    output; the ledger counts the histograms behind it), or, when the run has no checkpoint,
    ``release/dp_captions.jsonl``. Covered means: the same captions in the same order, and a ledger
    (privacy.json) exists. A subset, a re-ordering or an edit is not covered: whether it is still
    post-processing of DP output depends on how it was made, which spti cannot check.
    Returns ``{"covered": bool, "reference": ..., "captions_sha256": ...}`` (no caption text)."""
    digest = captions_digest(texts)
    ref_name, ref_texts = _dp_reference(run_dir)
    covered = ref_texts is not None and captions_digest(ref_texts) == digest and run_dir.privacy_path.is_file()
    return {"covered": bool(covered), "reference": ref_name, "captions_sha256": digest}


def _dp_reference(run_dir: RunDir) -> tuple[str | None, list[str] | None]:
    its = sorted(
        int(p.parent.name[5:]) for p in run_dir.checkpoints.glob("iter_*/population.jsonl") if p.parent.name[5:].isdigit()
    )
    if its:
        rel = f"checkpoints/iter_{its[-1]:03d}/population.jsonl"
    elif (run_dir.release / "dp_captions.jsonl").is_file():
        rel = "release/dp_captions.jsonl"
    else:
        return None, None
    return rel, [str(r["text"]) for r in read_jsonl(run_dir.path / rel)]


def mark_release_coverage(run_dir: RunDir, provenance: dict[str, Any]) -> None:
    """After ``spti render --captions``: when the captions are not the run's DP output, replace the ledger
    copied into release/ by a privacy.json that says so.

    Why a privacy.json that says "not covered" rather than none plus a NOTICE file: whoever receives the
    release looks for privacy.json; an explicit statement in that file cannot be mistaken for a missing
    one, and it replaces a ledger that an earlier, covered render left there, which "delete and add a
    NOTICE" would have to remember to do."""
    if provenance.get("covered"):
        return
    atomic_write_json(run_dir.release / "privacy.json", {
        "schema": NOT_COVERED_SCHEMA,
        "schema_version": 1,
        "covered": False,
        "private": False,
        "statement": NOT_COVERED,
        "explanation": (
            "release/images and release/metadata.jsonl were rendered by `spti render --captions` from a caption "
            "file that is not this run's DP output (checked by content hash against "
            f"{provenance.get('reference') or 'the run, which has no DP captions'}). No differential-privacy "
            "guarantee of this run applies to them; whatever produced the captions decides their privacy."
        ),
        "captions_sha256": provenance.get("captions_sha256"),
    })
    from spti.data.io import read_json
    from spti.data.release import write_card

    # the dataset card was written from the run's ledger: it must now say "not covered" too
    manifest = run_dir.release / "manifest.json"
    write_card(run_dir.release, read_json(run_dir.release / "privacy.json"),
               read_json(manifest) if manifest.is_file() else {})
