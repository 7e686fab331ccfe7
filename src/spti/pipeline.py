"""The SPTI pipeline: ingest -> caption -> evolve (DP) -> render -> evaluate -> report.

Every stage reads and writes the run folder (:class:`spti.data.run.RunDir`) and can be re-entered: a stage
that finished is skipped, one that was interrupted continues from its last atomic shard or checkpoint.
``spti.run(config)`` does what ``spti run`` does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spti.config import Config
from spti.data.io import atomic_save_npy, atomic_write_jsonl, read_jsonl
from spti.data.release import write_captions, write_images, write_release_docs
from spti.data.run import RunDir
from spti.errors import ConfigError, InputError
from spti.log import logger, progress
from spti.pe.cache import FeatureCache, content_key
from spti.pe.engine import PrivateEvolution, TextCandidateEmbedder
from spti.pe.generation import TextGenerator
from spti.pe.histogram import contribution_weights

SHARD = 1024  # images per captioning / embedding shard (the unit of resumption)


# ====================================================================== privacy plumbing
def make_budget(cfg: Config, num_units: int):
    """The run's budget for N = ``num_units`` records or users (validates every parameter)."""
    from spti.privacy import PrivacyBudget

    pr, T = cfg.privacy, cfg.pe.iterations
    if pr.not_private:
        return PrivacyBudget.not_private(T, num_units, unit=pr.unit)
    if pr.sigma is not None:
        return PrivacyBudget.from_sigma(pr.sigma, T, num_units, delta=pr.delta, unit=pr.unit)
    return PrivacyBudget.from_epsilon(pr.epsilon, T, num_units, delta=pr.delta, unit=pr.unit)


def make_noise(cfg: Config):
    from spti.privacy import NoiseSource

    seed = cfg.privacy.insecure_noise_seed
    return NoiseSource(insecure_seed=seed) if seed is not None else NoiseSource()


def write_ledger(run: RunDir, cfg: Config, budget, *, released: int, captioner: dict | None = None,
                 voting: str = "text") -> dict:
    """privacy.json: what the run has spent so far (``released`` histograms) and what it will spend.
    ``captioner``: ``{"remote": bool, "where": url}`` when private images were captioned (text voting)."""
    from spti.privacy import Ledger

    ledger = Ledger(budget=budget)
    if released > 0:
        ledger.add_mechanism(
            "pe_voting_histogram",
            kind="gaussian_histogram",
            count=released,
            sigma=budget.sigma,
            l2_sensitivity=1.0,
            unit=budget.unit,
            description=(
                f"one noisy nearest-neighbour vote histogram per PE iteration ({voting} voting); each "
                f"{budget.unit} contributes total vote weight <= 1 (add/remove-one adjacency)"
            ),
        )
    if captioner is not None:
        ledger.add_processing(
            "captioning",
            "each private image is captioned independently; the captions are private and are used only "
            "through the noisy histograms (pre-processing, no budget)",
        )
        if captioner.get("remote"):
            ledger.add_trust_assumption(
                f"private images were sent to a remote captioning service ({captioner.get('where')}); "
                "the DP guarantee covers the release, not what that provider sees or keeps"
            )
    ledger.add_processing(
        "embedding", "private samples are embedded independently to vote; embeddings stay in private/ (no budget)"
    )
    ledger.add_processing(
        "llm_and_rendering",
        "the LLM and the text-to-image model only see the domain description, public examples and DP "
        "candidates (post-processing of DP output, no budget)",
    )
    d = ledger.to_dict()
    d["planned"] = budget.to_dict()
    d["histograms_released"] = released
    d["histograms_planned"] = cfg.pe.iterations
    ledger_path = run.privacy_path
    from spti.data.io import atomic_write_json

    atomic_write_json(ledger_path, d)
    return d


# ====================================================================== shared stage helpers
@dataclass
class PrivateSet:
    """What PE votes with: one feature row per private sample, and who owns each row."""

    features: np.ndarray
    owners: list[str] | None
    num_units: int
    unit: str

    def weights(self) -> np.ndarray:
        return contribution_weights(self.owners, self.features.shape[0])


def _models_info(**backends) -> dict[str, Any]:
    return {k: (v.info() if v is not None else None) for k, v in backends.items()}


def _render_seed(base: int, j: int) -> int:
    return int(base) + int(j)


@dataclass
class EvolveOutcome:
    population: list[str]
    budget: Any
    stats: Counter = field(default_factory=Counter)


def evolve(
    run: RunDir,
    cfg: Config,
    private: PrivateSet,
    *,
    llm,
    embed_candidates_factory: Callable[[TextGenerator], Any],
    captioner: dict | None = None,
    stop_after: int | None = None,
    on_iteration=None,
) -> EvolveOutcome:
    """The DP stage shared by ``spti evolve`` (text) and ``spti run`` (text or image voting)."""
    budget = make_budget(cfg, private.num_units)
    noise = make_noise(cfg)
    stats: Counter = Counter(run.stats().get("evolve", {}))
    generator = TextGenerator(llm, cfg.generation, seed=cfg.seed, stats=stats)
    engine = PrivateEvolution(
        cfg=cfg.pe,
        generator=generator,
        embed_candidates=embed_candidates_factory(generator),
        private_features=private.features,
        weights=private.weights(),
        sigma=budget.sigma,
        noise=noise,
        checkpoint_dir=run.checkpoints,
        seed=cfg.seed,
        stats=stats,
        stop_after=stop_after,
        on_iteration=on_iteration,
    )
    released = engine.histograms_released()
    write_ledger(run, cfg, budget, released=released, captioner=captioner, voting=cfg.pe.voting)
    run.update_manifest(
        privacy=budget.to_dict(),
        noise=noise.describe(),
        num_private=private.num_units,
        unit=private.unit,
        num_private_rows=int(private.features.shape[0]),
    )
    logger.info("privacy: %s", budget.describe())

    def on_histogram(t: int) -> None:
        write_ledger(run, cfg, budget, released=engine.histograms_released(), captioner=captioner, voting=cfg.pe.voting)
        run.update_stats("evolve", stats)

    engine.on_histogram = on_histogram
    try:
        population = engine.run()
    finally:
        run.update_stats("evolve", stats)
    write_ledger(run, cfg, budget, released=engine.histograms_released(), captioner=captioner, voting=cfg.pe.voting)
    write_captions(run.release, population)
    run.mark_stage("evolve", population=len(population), iterations=cfg.pe.iterations)
    return EvolveOutcome(population, budget, stats)


def finish_release_docs(run: RunDir, cfg: Config) -> None:
    import json

    privacy = json.loads(run.privacy_path.read_text()) if run.privacy_path.is_file() else {}
    m = run.manifest()
    m["config"] = cfg.to_dict()
    write_release_docs(run.release, privacy, m)


# ====================================================================== spti evolve (texts)
def evolve_texts(cfg: Config, *, command: str = "evolve", stop_after: int | None = None) -> RunDir:
    """Aug-PE on a private text file: the ``spti evolve`` command."""
    from spti.data.texts import read_texts
    from spti.models.llm import build_llm
    from spti.models.text_embedder import build_text_embedder

    cfg.validate()
    if cfg.pe.voting != "text":
        raise ConfigError("spti evolve works on texts: pe.voting must be 'text'")
    if not cfg.out:
        raise ConfigError("an output folder is required (--out)")
    texts = read_texts(cfg.data.private, text_column=cfg.data.text_column, user_column=cfg.data.user_column)
    run = RunDir.open(cfg.out, cfg, command=command)
    _attach_logfile(run)
    logger.info("private texts: %d rows, %d %ss", len(texts.texts), texts.num_units if cfg.privacy.unit == "user" else len(texts.texts), cfg.privacy.unit)
    embedder = build_text_embedder(cfg.text_embedder)
    features = _embed_private_texts(run, embedder, texts.texts)
    owners = texts.owners(cfg.privacy.unit)
    num_units = texts.num_units if cfg.privacy.unit == "user" else len(texts.texts)
    private = PrivateSet(features, owners, num_units, cfg.privacy.unit)
    llm = build_llm(cfg.llm)
    run.update_manifest(models=_models_info(llm=llm, text_embedder=embedder))
    cache = FeatureCache(run.cache, f"text-{embedder.cache_key}")
    evolve(
        run, cfg, private, llm=llm, stop_after=stop_after,
        embed_candidates_factory=lambda gen: TextCandidateEmbedder(
            embedder, cache=cache, generator=gen, lookahead=cfg.pe.lookahead, normalize=cfg.pe.normalize
        ),
    )
    finish_release_docs(run, cfg)
    logger.info("release: %s", run.release)
    return run


def _attach_logfile(run: RunDir) -> None:
    """Every run keeps its own log (``spti.log``: counts, timings, model ids — nothing private), whether it
    was started from the CLI or from Python. One run log at a time: a handler of an earlier run folder in
    the same process is detached."""
    import logging

    path = (run.path / "spti.log").resolve()
    for h in list(logger.handlers):
        if getattr(h, "_spti_run_log", None) not in (None, str(path)):
            logger.removeHandler(h)
            h.close()
    if not any(getattr(h, "_spti_run_log", None) == str(path) for h in logger.handlers):
        fh = logging.FileHandler(path, encoding="utf-8")
        fh.setLevel(logging.INFO)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        fh._spti_run_log = str(path)  # type: ignore[attr-defined]
        logger.addHandler(fh)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)


def _embed_private_texts(run: RunDir, embedder, texts: Sequence[str]) -> np.ndarray:
    """Embed the private texts once; the features stay in private/ (resume reuses them)."""
    path = run.private / f"text_features-{embedder.cache_key}.npy"
    if path.is_file():
        feats = np.load(path, mmap_mode="r")
        if feats.shape[0] == len(texts):
            return feats
    rows = []
    batch = 512
    for s in progress(range(0, len(texts), batch), desc="embedding private texts", total=math.ceil(len(texts) / batch)):
        rows.append(np.asarray(embedder.embed(list(texts[s : s + batch])), dtype=np.float32))
    feats = np.concatenate(rows) if rows else np.zeros((0, embedder.dim), np.float32)
    atomic_save_npy(path, feats)
    return np.load(path, mmap_mode="r")


# ====================================================================== images: ingest, caption, embed
def ingest_stage(run: RunDir, cfg: Config):
    from spti.data.images import IngestResult, ingest

    if run.stage_done("ingest") and (run.private / "ingest.jsonl").is_file():
        return IngestResult.load(run.private)
    result = ingest(
        cfg.data.private,
        private_dir=run.private,
        user_column=cfg.data.user_column,
        users_from_subfolders=cfg.data.users_from_subfolders,
        max_pixels=cfg.data.max_pixels,
        progress=cfg.progress,
    )
    summary = result.summary()
    run.update_stats("ingest", summary)
    run.mark_stage("ingest", **{k: v for k, v in summary.items() if isinstance(v, (int, float))})
    logger.info("ingested: %s", ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, dict)))
    return result


def _units(cfg: Config, result) -> tuple[list[str] | None, int]:
    if cfg.privacy.unit == "user":
        owners = [r.user_id for r in result.records]
        if any(o is None for o in owners):
            raise InputError("privacy.unit is 'user' but some images have no user id")
        return owners, len(set(owners))
    return None, len(result.records)


def caption_stage(run: RunDir, cfg: Config, result, captioner=None) -> list[str]:
    """Caption every private image; captions go to private/captions/ in shards of SHARD images, so an
    interrupted run re-captions at most one shard."""
    from spti.data.images import iter_batches
    from spti.models.captioner import build_captioner

    records = result.records
    shard_dir = run.private / "captions"
    shard_dir.mkdir(parents=True, exist_ok=True)
    n_shards = math.ceil(len(records) / SHARD)
    missing = [s for s in range(n_shards) if not (shard_dir / f"shard-{s:06d}.jsonl").is_file()]
    if missing:
        captioner = captioner or build_captioner(_captioner_cfg(cfg))
        bs = int(cfg.captioner.get("batch_size", 16) or 16)
        for s in progress(missing, desc="captioning", total=len(missing), unit="shard"):
            recs = records[s * SHARD : (s + 1) * SHARD]
            rows = []
            for batch_recs, images in iter_batches(recs, bs, max_pixels=cfg.data.max_pixels):
                caps = captioner.caption(images)
                for r, c in zip(batch_recs, caps):
                    rows.append({"id": r.id, "user_id": r.user_id, "text": c})
            atomic_write_jsonl(shard_dir / f"shard-{s:06d}.jsonl", rows)
        run.update_manifest(models={"captioner": captioner.info()})
    captions: list[str] = []
    empty = 0
    for s in range(n_shards):
        for row in read_jsonl(shard_dir / f"shard-{s:06d}.jsonl"):
            t = row["text"] or ""
            empty += not t.strip()
            captions.append(t)
    if empty:
        logger.warning("%d private images got an empty caption (they still vote)", empty)
    run.mark_stage("caption", captions=len(captions), empty=empty)
    return captions


def _captioner_cfg(cfg: Config) -> dict[str, Any]:
    c = dict(cfg.captioner)
    from spti.models.captioner import REGISTRY

    cls = REGISTRY.get(c["backend"])
    if getattr(cls, "sends_data_off_machine", False):
        if not cfg.allow_remote_captioner:
            raise ConfigError(
                f"captioner backend {c['backend']!r} sends your PRIVATE images to a remote service. If that is "
                "acceptable, pass --allow-remote-captioner (config: allow_remote_captioner: true); it is recorded "
                "in privacy.json as a trust assumption"
            )
        c.setdefault("allow_remote", True)
    return c


def _captioning_record(ccfg: dict[str, Any]) -> dict[str, Any]:
    """What the ledger says about captioning, from the config alone (a resumed run need not load the model)."""
    from spti.models.captioner import REGISTRY

    cls = REGISTRY.get(ccfg["backend"])
    return {"remote": bool(getattr(cls, "sends_data_off_machine", False)),
            "where": ccfg.get("base_url", "the provider's default endpoint")}


def embed_private_images(run: RunDir, cfg: Config, result, embedder) -> np.ndarray:
    """Private image features (for image voting), in shards then one memory-mapped .npy in private/."""
    from spti.data.images import iter_batches

    key = embedder.cache_key
    final = run.private / f"image_features-{key}.npy"
    records = result.records
    if final.is_file():
        f = np.load(final, mmap_mode="r")
        if f.shape[0] == len(records):
            return f
    shard_dir = run.private / f"image_features-{key}"
    shard_dir.mkdir(parents=True, exist_ok=True)
    n_shards = math.ceil(len(records) / SHARD)
    bs = int(cfg.image_embedder.get("batch_size", 32) or 32)
    for s in progress(range(n_shards), desc="embedding private images", total=n_shards, unit="shard"):
        p = shard_dir / f"shard-{s:06d}.npy"
        if p.is_file():
            continue
        feats = [embedder.embed(images) for _, images in iter_batches(records[s * SHARD : (s + 1) * SHARD], bs, max_pixels=cfg.data.max_pixels)]
        atomic_save_npy(p, np.concatenate(feats).astype(np.float32))
    dim = int(np.load(shard_dir / "shard-000000.npy", mmap_mode="r").shape[1])
    tmp = final.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(records), dim))
    for s in range(n_shards):
        out[s * SHARD : (s + 1) * SHARD] = np.load(shard_dir / f"shard-{s:06d}.npy")
    out.flush()
    del out
    tmp.replace(final)
    for p in shard_dir.glob("shard-*.npy"):
        p.unlink()
    shard_dir.rmdir()
    return np.load(final, mmap_mode="r")


# ====================================================================== rendering with a cache
class RenderCache:
    """Renders keyed by (renderer cache_key, caption, seed), stored as PNG in cache/renders/. The release
    reuses the renders made in the loop (image voting) instead of calling the model again."""

    def __init__(self, root: Path, renderer, stats: Counter, stage_counter: str):
        self.renderer = renderer
        self.dir = Path(root) / "renders" / renderer.cache_key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stats = stats
        self.stage_counter = stage_counter

    def path(self, text: str, seed: int) -> Path:
        return self.dir / f"{content_key(text, str(seed))[:40]}.png"

    def get_paths(self, pairs: Sequence[tuple[str, int]], batch_size: int = 8, desc: str = "rendering") -> list[Path]:
        from spti.data.io import atomic_write_bytes

        todo, seen = [], set()
        for t, s in pairs:
            p = self.path(t, s)
            if not p.is_file() and p not in seen:
                todo.append((t, s))
                seen.add(p)
        for b in progress(range(0, len(todo), batch_size), desc=desc, total=math.ceil(len(todo) / batch_size) if todo else 0):
            chunk = todo[b : b + batch_size]
            images = self.renderer.render([t for t, _ in chunk], [s for _, s in chunk])
            self.stats[self.stage_counter] += len(chunk)
            for (t, s), img in zip(chunk, images):
                import io

                buf = io.BytesIO()
                img.convert("RGB").save(buf, format="PNG")
                atomic_write_bytes(self.path(t, s), buf.getvalue())
        return [self.path(t, s) for t, s in pairs]


def release_pairs(texts: Sequence[str], per_caption: int, base_seed: int) -> list[tuple[str, int]]:
    """(caption, seed) for every release image; a caption selected twice gets fresh seeds the second time."""
    seen: Counter = Counter()
    pairs = []
    for t in texts:
        occ = seen[t]
        seen[t] += 1
        for j in range(per_caption):
            pairs.append((t, _render_seed(base_seed, occ * per_caption + j)))
    return pairs


def render_stage(run: RunDir, cfg: Config, texts: Sequence[str], renderer=None) -> list[dict[str, str]]:
    """Render the DP captions into release/images + metadata.jsonl. Renders already in the cache (image
    voting's loop renders, or a previous interrupted render stage) are reused."""
    from spti.models.renderer import build_renderer

    stats: Counter = Counter(run.stats().get("renderer_calls", {}))
    rcfg = cfg.release_renderer or cfg.renderer
    renderer = renderer or build_renderer(_renderer_cfg(run, cfg, rcfg))
    cache = RenderCache(run.cache, renderer, stats, "release")
    stats.setdefault("release", 0)
    pairs = release_pairs(texts, cfg.render.images_per_caption, cfg.render.seed)
    bs = int(rcfg.get("batch_size", 8) or 8)
    paths = cache.get_paths(pairs, batch_size=bs, desc="rendering the release")
    rows = write_images(run.release, [(t, p) for (t, _), p in zip(pairs, paths)])
    run.update_stats("renderer_calls", stats)
    run.update_manifest(models={"release_renderer": renderer.info()})
    run.mark_stage("render", images=len(rows), renderer_calls=int(stats["release"]))
    return rows


def _renderer_cfg(run: RunDir, cfg: Config, rcfg: dict[str, Any]) -> dict[str, Any]:
    c = dict(rcfg)
    if c.get("backend") == "retrieval":
        c.setdefault("cache_dir", str(run.cache / "retrieval"))
        c.setdefault("captioner", dict(cfg.captioner))
        c.setdefault("text_embedder", dict(cfg.text_embedder))
        if cfg.data.public_pool and not c.get("pool"):
            c["pool"] = cfg.data.public_pool
    return c


class ImageCandidateEmbedder:
    """SPTI image voting: render each candidate (``renders`` seeds; averaged = PE's lookahead in image
    space), embed the renders with the image embedder, normalise. Renders and features are cached, so kept
    parents are never rendered twice and the release reuses the loop's renders."""

    def __init__(self, render_cache: RenderCache, image_embedder, *, renders: int, base_seed: int,
                 feature_cache: FeatureCache, normalize: bool = True, batch_size: int = 8):
        self.render_cache = render_cache
        self.image_embedder = image_embedder
        self.renders = max(1, int(renders))
        self.base_seed = base_seed
        self.features = feature_cache
        self.normalize = normalize
        self.batch_size = batch_size

    def __call__(self, texts: Sequence[str], *, iteration: int) -> np.ndarray:
        from PIL import Image

        from spti.pe.histogram import normalize_rows

        pairs = [(t, _render_seed(self.base_seed, j)) for t in texts for j in range(self.renders)]
        keys = [content_key(self.render_cache.renderer.cache_key, self.image_embedder.cache_key, t, str(s)) for t, s in pairs]
        need = [i for i, k in enumerate(keys) if k not in self.features]
        if need:
            need_pairs = [pairs[i] for i in need]
            paths = self.render_cache.get_paths(need_pairs, batch_size=self.batch_size, desc=f"rendering candidates (iteration {iteration})")
            bs = 32
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


# ====================================================================== spti run
def run(config: Config | dict | str | Path, *, stop_after: int | None = None, stop_before: str | None = None,
        command: str = "run") -> RunDir:
    """The whole pipeline. ``stop_before``/``stop_after`` are test hooks that simulate a crash."""
    from spti.models.llm import build_llm

    cfg = _as_config(config)
    cfg.validate()
    if not cfg.out:
        raise ConfigError("an output folder is required (--out)")
    run_dir = RunDir.open(cfg.out, cfg, command=command)
    _attach_logfile(run_dir)
    result = ingest_stage(run_dir, cfg)
    owners, num_units = _units(cfg, result)
    if stop_before == "caption":
        raise _StoppedStage("caption")
    captioner = captioning = None
    if cfg.pe.voting == "text":
        from spti.models.captioner import build_captioner
        from spti.models.text_embedder import build_text_embedder

        ccfg = _captioner_cfg(cfg)
        captioning = _captioning_record(ccfg)
        if not (run_dir.private / "captions").is_dir() or not run_dir.stage_done("caption"):
            captioner = build_captioner(ccfg)
        captions = caption_stage(run_dir, cfg, result, captioner=captioner)
        if stop_before == "evolve":
            raise _StoppedStage("evolve")
        embedder = build_text_embedder(cfg.text_embedder)
        features = _embed_private_texts(run_dir, embedder, captions)
        cache = FeatureCache(run_dir.cache, f"text-{embedder.cache_key}")

        def factory(gen):
            return TextCandidateEmbedder(embedder, cache=cache, generator=gen, lookahead=cfg.pe.lookahead, normalize=cfg.pe.normalize)

        models = {"text_embedder": embedder}
        loop_renderer = None
    else:
        from spti.models.image_embedder import build_image_embedder
        from spti.models.renderer import build_renderer

        image_embedder = build_image_embedder(cfg.image_embedder)
        features = embed_private_images(run_dir, cfg, result, image_embedder)
        if stop_before == "evolve":
            raise _StoppedStage("evolve")
        loop_renderer = build_renderer(_renderer_cfg(run_dir, cfg, cfg.renderer))
        stats: Counter = Counter(run_dir.stats().get("renderer_calls", {}))
        stats.setdefault("evolve", 0)
        rcache = RenderCache(run_dir.cache, loop_renderer, stats, "evolve")
        fcache = FeatureCache(run_dir.cache, f"render-features-{image_embedder.cache_key}")

        def factory(gen):
            return ImageCandidateEmbedder(
                rcache, image_embedder, renders=max(1, cfg.pe.lookahead), base_seed=cfg.render.seed,
                feature_cache=fcache, normalize=cfg.pe.normalize,
                batch_size=int(cfg.renderer.get("batch_size", 8) or 8),
            )

        models = {"image_embedder": image_embedder, "renderer": loop_renderer}
    private = PrivateSet(features, owners, num_units, cfg.privacy.unit)
    llm = build_llm(cfg.llm)
    run_dir.update_manifest(models=_models_info(llm=llm, **models))
    on_iteration = None
    if cfg.evaluate.per_iteration and cfg.evaluate.metrics:
        if cfg.pe.voting == "text":
            from spti.models.renderer import build_renderer

            stats = Counter(run_dir.stats().get("renderer_calls", {}))
            eval_renderer = build_renderer(_renderer_cfg(run_dir, cfg, cfg.release_renderer or cfg.renderer))
            rcache = RenderCache(run_dir.cache, eval_renderer, stats, "per_iteration")
            loop_renderer = eval_renderer if cfg.release_renderer is None else None
        on_iteration = PerIterationEvaluator(run_dir, cfg, rcache, result)
    try:
        outcome = evolve(run_dir, cfg, private, llm=llm, embed_candidates_factory=factory, captioner=captioning,
                         stop_after=stop_after, on_iteration=on_iteration)
    finally:
        if cfg.pe.voting == "image" or on_iteration is not None:
            run_dir.update_stats("renderer_calls", stats)
    if stop_before == "render":
        raise _StoppedStage("render")
    same = cfg.release_renderer is None
    render_stage(run_dir, cfg, outcome.population, renderer=loop_renderer if same else None)
    finish_release_docs(run_dir, cfg)
    if cfg.evaluate.metrics:
        evaluate_stage(run_dir, cfg)
    try:
        from spti.report import build_report

        build_report(run_dir.path)
    except ImportError:  # pragma: no cover - report extras missing
        logger.info("report skipped (pip install 'spti[report]')")
    logger.info("done: release in %s", run_dir.release)
    return run_dir


_SPACE_OF_BACKEND = {"efficientnet-lite0": "efficientnet", "inception": "inception", "dinov2": "dinov2", "clip": "clip"}


def _eval_space(cfg: Config) -> str | None:
    return cfg.evaluate.space or _SPACE_OF_BACKEND.get(cfg.image_embedder.get("backend", ""))


def _eval_embedders(cfg: Config) -> dict[str, Any]:
    """The run's own image embedder serves its feature space in evaluation (same options, e.g. the
    demo's ``invert``); other spaces use evaluate()'s defaults."""
    space = _SPACE_OF_BACKEND.get(cfg.image_embedder.get("backend", ""))
    return {space: dict(cfg.image_embedder)} if space else {}


def evaluate_stage(run: RunDir, cfg: Config) -> dict:
    """Final metrics of the release against the private images (NOT differentially private)."""
    from spti.data.images import IngestResult
    from spti.metrics.evaluate import evaluate

    res = evaluate(
        IngestResult.load(run.private),
        run.release,
        metrics=tuple(cfg.evaluate.metrics),
        embedders=_eval_embedders(cfg),
        prdc_space=_eval_space(cfg),
        memorization_space=_eval_space(cfg),
        out=run.path / "metrics.json",
        cache_dir=run.cache / "eval",
        max_images=cfg.evaluate.max_images,
    )
    run.mark_stage("evaluate", metrics=list(cfg.evaluate.metrics))
    return res


def _curve_values(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of one evaluation worth a curve: each metric's ``value``, or for PRDC its four scores."""
    out: dict[str, float] = {}
    for name, entry in metrics.items():
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("value"), (int, float)):
            out[name] = float(entry["value"])
        for k in ("precision", "recall", "density", "coverage"):
            if isinstance(entry.get(k), (int, float)):
                out[f"{name}.{k}"] = float(entry[k])
    return {k: v for k, v in out.items() if math.isfinite(v)}


class PerIterationEvaluator:
    """``evaluate.per_iteration``: after each PE iteration, render the population (image voting: the
    loop's cached renders, no extra calls; text voting: the release renderer, counted under
    ``renderer_calls.per_iteration``), record its images in ``population.jsonl`` (for the report's
    per-iteration grids) and append its metrics to ``metrics.json``'s ``per_iteration`` curve. Idempotent:
    an iteration already evaluated is skipped, so a resumed run does not duplicate rows."""

    def __init__(self, run: RunDir, cfg: Config, render_cache: RenderCache, ingest_result):
        self.run, self.cfg, self.cache, self.ingest_result = run, cfg, render_cache, ingest_result
        self.metrics = tuple(m for m in cfg.evaluate.metrics if m != "memorization")

    def __call__(self, rec) -> None:
        from PIL import Image

        from spti.data.io import atomic_write_json, read_json
        from spti.metrics.evaluate import evaluate

        path = self.run.path / "metrics.json"
        data = read_json(path) if path.is_file() else {}
        rows = data.get("per_iteration", [])
        if any(r.get("iteration") == rec.iteration for r in rows) or not self.metrics:
            return
        pairs = [(t, _render_seed(self.cfg.render.seed, 0)) for t in rec.population]
        paths = self.cache.get_paths(pairs, desc=f"rendering population {rec.iteration}")
        pop_file = self.run.checkpoints / f"iter_{rec.iteration:03d}" / "population.jsonl"
        prows = read_jsonl(pop_file)
        for r, p in zip(prows, paths):
            r["image"] = str(p.relative_to(self.run.path))
        atomic_write_jsonl(pop_file, prows)
        images = []
        for p in paths:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        res = evaluate(
            self.ingest_result, images, metrics=self.metrics, embedders=_eval_embedders(self.cfg),
            prdc_space=_eval_space(self.cfg),
            cache_dir=self.run.cache / "eval", max_images=self.cfg.evaluate.max_images, captions=list(rec.population),
        )
        row = {"iteration": rec.iteration, **_curve_values(res.get("metrics", {}))}
        data = read_json(path) if path.is_file() else {}
        data.setdefault("per_iteration", [])
        data["per_iteration"] = sorted(
            [r for r in data["per_iteration"] if r.get("iteration") != rec.iteration] + [row], key=lambda r: r["iteration"]
        )
        data.setdefault("differentially_private", False)
        data.setdefault("note", "computed against private data — do not publish")
        atomic_write_json(path, data)
        logger.info("iteration %d metrics: %s", rec.iteration, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "iteration"))


class _StoppedStage(RuntimeError):
    """Test hook: simulates a crash between stages."""


def _as_config(config: Config | dict | str | Path) -> Config:
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return Config.from_dict(config)
    return Config.from_yaml(config)
