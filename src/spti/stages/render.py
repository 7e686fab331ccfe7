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

Labelled runs: each caption comes with its class (an index into the label set's names); every image rendered
from it carries the class name in ``metadata.jsonl``'s ``label`` column and the classes go to
``release/labels.json`` (:func:`spti.data.release.write_labels`), so that the release is an ImageFolder with
labels. The class of a caption is DP output like the caption itself; the label set is public by the run's
stated assumption (:mod:`spti.data.labels`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from spti.config import Config
from spti.data.cache import RenderCache, render_seed
from spti.data.io import atomic_write_json, iter_jsonl, read_jsonl
from spti.data.release import write_images, write_labels
from spti.data.run import RunDir
from spti.errors import InputError
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


def build_run_renderer(run_dir: RunDir, cfg: Config, rcfg: dict[str, Any], *, executor=None):
    """The renderer ``rcfg`` names, configured for this run (:func:`renderer_config`), built by ``executor``
    or else by the command's executor (:func:`spti.executor.active_executor`: with Ray, a proxy whose model
    lives on the replicas, and every render goes through the cluster), else here."""
    from spti.executor import active_executor

    c = renderer_config(run_dir, cfg, rcfg)
    ex = executor if executor is not None else active_executor()
    if ex is not None:
        return ex.backend("renderer", c)
    from spti.models.renderer import build_renderer

    return build_renderer(c)


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


def caption_label_names(
    cfg: Config, n: int, labels: Sequence[int] | Sequence[str] | Any, label_names: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """(the class name of each of ``n`` captions, the class names) from ``labels``: class indices into
    ``label_names`` (what the engine hands over), or class names. With names and no ``label_names`` the
    classes are the names used plus those of ``cfg.classes``, sorted (as :class:`~spti.data.labels.LabelSet`
    builds them)."""
    import numpy as np

    labels = list(labels.tolist() if isinstance(labels, np.ndarray) else labels)
    if len(labels) != n:
        raise InputError(f"render: {len(labels)} labels for {n} captions (one label per caption)")
    if all(isinstance(x, str) for x in labels):
        names = list(label_names) if label_names is not None else sorted(set(labels) | set(cfg.classes))
        unknown = sorted(set(labels) - set(names))
        if unknown:
            raise InputError(f"render: labels {unknown[:5]} are not among the class names {names[:20]}")
        return [str(x) for x in labels], [str(x) for x in names]
    if label_names is None:
        raise InputError("render: class indices need the class names (label_names)")
    names = [str(x) for x in label_names]
    out = []
    for x in labels:
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or not 0 <= int(x) < len(names):
            raise InputError(f"render: a label must be a class index in [0, {len(names)}) or a class name, got {x!r}")
        out.append(names[int(x)])
    return out, names


def render_stage(run_dir: RunDir, cfg: Config, texts: Sequence[str], renderer=None, *,
                 labels: Sequence[int] | Sequence[str] | None = None,
                 label_names: Sequence[str] | None = None, executor=None) -> list[dict[str, str]]:
    """Render the DP captions into release/images + metadata.jsonl with ``renderer`` (default: the release
    renderer of the config, or its loop renderer). Renders already in the cache (image voting's loop
    renders, or a previous interrupted render stage) are reused.

    Labelled runs: ``labels`` holds each caption's class (an index into ``label_names``, the label set's
    names, or a class name: :func:`caption_label_names`); every metadata row gets ``"label": <name>`` and
    ``release/labels.json`` lists the classes with their descriptions (``cfg.classes.get(name, name)``).
    Without ``labels`` the release is unlabelled (a stale labels.json is removed). ``executor``: where a
    renderer built here runs (:func:`build_run_renderer`)."""
    per_caption: list[str] | None = None
    names: list[str] | None = None
    if labels is not None:
        per_caption, names = caption_label_names(cfg, len(texts), labels, label_names)
    stats: Counter = Counter(run_dir.stats().get("renderer_calls", {}))
    renderer = renderer or build_run_renderer(run_dir, cfg, cfg.release_renderer or cfg.renderer, executor=executor)
    cache = RenderCache(run_dir.cache, renderer, stats, "release")
    stats.setdefault("release", 0)
    pairs = release_pairs(texts, cfg.render.images_per_caption, cfg.render.seed)
    paths = cache.get_paths(pairs, desc="rendering the release")
    image_labels = None
    if per_caption is not None:  # release_pairs: images_per_caption pairs per caption, in caption order
        image_labels = [lab for lab in per_caption for _ in range(cfg.render.images_per_caption)]
    rows = write_images(run_dir.release, [(t, p) for (t, _), p in zip(pairs, paths, strict=True)], labels=image_labels)
    write_labels(run_dir.release, names, None if names is None else [cfg.classes.get(n, n) for n in names])
    run_dir.update_stats("renderer_calls", stats)
    run_dir.update_manifest(models={"release_renderer": renderer.info()})
    extra = {} if names is None else {"classes": len(names)}
    run_dir.mark_stage("render", images=len(rows), renderer_calls=int(stats["release"]), **extra)
    return rows


def caption_rows_labels(run_dir: RunDir, rows: Sequence[Mapping[str, Any]]) -> tuple[list[str] | None, list[str] | None]:
    """``spti render --captions FILE``: (labels, label names) when every row of FILE has a ``label`` (e.g. a
    labelled run's ``release/dp_captions.jsonl``), else (None, None). The class names are the release's
    labels.json when it lists every label used, else None (:func:`caption_label_names` then builds them)."""
    import json

    labels = [r.get("label") for r in rows]
    if not rows or not all(isinstance(x, str) and x for x in labels):
        return None, None
    names = None
    path = run_dir.release / "labels.json"
    if path.is_file():
        try:
            listed = [str(n) for n in json.loads(path.read_text(encoding="utf-8"))["names"]]
        except (OSError, ValueError, KeyError, TypeError):
            listed = []
        if listed and set(labels) <= set(listed):
            names = listed
    return labels, names  # type: ignore[return-value]


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
