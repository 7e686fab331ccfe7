"""The DP stage: Private Evolution over captions (:class:`spti.pe.engine.PrivateEvolution`), shared by
``spti evolve`` (private texts vote) and ``spti run`` (private captions or image features vote).

The engine writes the checkpoints (``checkpoints/iter_XXX/``, each ``population.jsonl`` written by it alone);
this stage wires its roles, keeps the ledger current after every released histogram, and writes the
release's DP captions. Also here: the two candidate-embedder factories the voting modes hand to it.

Labelled runs (``classes``, the run's :class:`~spti.data.labels.LabelSet`): the population of every class
is fixed first — a DP estimate of the class sizes or a public prior
(:func:`~spti.stages.budget.class_sizes_stage`, drawn once after the budget checks and before PE) — and the
engine then runs one population per class (:class:`~spti.pe.engine.PrivateEvolution`). ``spti evolve``
(private texts) stays unlabelled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from spti.config import Config
from spti.data.cache import FeatureCache, RenderCache
from spti.data.release import write_captions
from spti.data.run import RunDir
from spti.log import logger
from spti.pe.candidates import ImageCandidateEmbedder, TextCandidateEmbedder
from spti.pe.engine import CandidateEmbedder, IterationRecord, PrivateEvolution, PrivateSet
from spti.pe.generation import TextGenerator
from spti.stages.budget import (
    bind_private_input,
    class_sizes_stage,
    make_budget,
    make_noise,
    record_private_input,
    write_ledger,
)

if TYPE_CHECKING:  # pragma: no cover
    from spti.data.labels import LabelSet

#: Builds the candidate embedder once the stage's text generator exists (text lookahead needs it).
CandidateEmbedderFactory = Callable[[TextGenerator], CandidateEmbedder]


@dataclass
class EvolveOutcome:
    population: list[str]
    budget: Any
    stats: Counter = field(default_factory=Counter)
    labels: np.ndarray | None = None  # labelled runs: the class index of every caption of ``population``
    class_sizes: np.ndarray | None = None  # labelled runs: the population of every class


def text_candidates(run_dir: RunDir, cfg: Config, embedder) -> CandidateEmbedderFactory:
    """Text voting: candidates embedded by the run's text embedder, cached in cache/text-<key>/."""
    cache = FeatureCache(run_dir.cache, f"text-{embedder.cache_key}")

    def factory(generator: TextGenerator) -> CandidateEmbedder:
        return TextCandidateEmbedder(embedder, cache=cache, generator=generator, lookahead=cfg.pe.lookahead,
                                     normalize=cfg.pe.normalize)

    return factory


def image_candidates(run_dir: RunDir, cfg: Config, renders: RenderCache, image_embedder) -> CandidateEmbedderFactory:
    """Image voting: candidates rendered (``max(1, lookahead)`` seeds each) and embedded, features cached in
    cache/render-features-<key>/. With an LLM whose rounds can be cut into calls (``splittable``), the
    generator's rounds stream into the renderer and the image embedder (:mod:`spti.pe.stream`)."""
    features = FeatureCache(run_dir.cache, f"render-features-{image_embedder.cache_key}")

    def factory(generator: TextGenerator) -> CandidateEmbedder:
        from spti.pe.stream import RenderStream

        emb = ImageCandidateEmbedder(renders, image_embedder, renders=max(1, cfg.pe.lookahead),
                                     base_seed=cfg.render.seed, feature_cache=features, normalize=cfg.pe.normalize)
        if RenderStream.possible(generator.llm, renders.renderer, image_embedder):
            # stream, don't stage: each LLM call's replies are rendered and embedded while the LLM writes on
            emb.stream = generator.stream = RenderStream(generator.llm, renders, image_embedder, seeds=emb.seeds,
                                                         chunk=cfg.executor.llm_chunk, stats=generator.stats)
            logger.debug("evolve: LLM rounds stream into the renderer in calls of %d", cfg.executor.llm_chunk)
        return emb

    return factory


def evolve_stage(
    run_dir: RunDir,
    cfg: Config,
    private: PrivateSet,
    *,
    llm,
    candidate_embedder: CandidateEmbedderFactory,
    captioning: dict[str, Any] | None = None,
    stop_after: int | None = None,
    on_iteration: Callable[[IterationRecord], None] | None = None,
    classes: LabelSet | None = None,
) -> EvolveOutcome:
    """Run (or resume) PE and write release/dp_captions.jsonl. ``captioning``: the ledger's record of how
    the private images were captioned (text voting of ``spti run``); ``on_iteration``: called after each
    iteration (the per-iteration evaluator); ``stop_after``: test hook that simulates a crash.
    ``classes``: the label set of a labelled run (its ``index`` is ``private.labels``, one class per
    feature row); the class sizes are drawn (or read back) before PE starts.

    Refuses to resume on another private input (``private.fingerprint``, see
    :func:`~spti.stages.budget.bind_private_input`) and, through the ledger, on checkpoints drawn with
    another σ than the budget's (:class:`~spti.stages.budget.BudgetMismatchError`)."""
    if classes is not None:
        if private.labels is None:
            private.labels = np.asarray(classes.index, dtype=np.int64)
        if private.labels.shape != (private.features.shape[0],):
            raise ValueError("the label set must give one class per private feature row")
    bind_private_input(run_dir, private.fingerprint)
    budget = make_budget(cfg, private.num_units)
    noise = make_noise(cfg)
    stats: Counter = Counter(run_dir.stats().get("evolve", {}))
    generator = TextGenerator(llm, cfg.generation, seed=cfg.seed, stats=stats,
                              descriptions=None if classes is None else classes.descriptions)

    def ledger() -> None:  # privacy.json: spent so far (composed from the histograms saved on disk) and planned
        write_ledger(run_dir, cfg, budget, captioner=captioning, voting=cfg.pe.voting)

    def on_histogram(t: int) -> None:  # a histogram was released: the ledger says so before it is used
        ledger()
        run_dir.update_stats("evolve", stats)

    ledger()  # raises BudgetMismatchError when the saved histograms were drawn with another sigma
    record_private_input(run_dir, private.fingerprint)
    run_dir.update_manifest(
        privacy=budget.to_dict(),
        noise=noise.describe(),
        num_private=private.num_units,
        unit=private.unit,
        num_private_rows=int(private.features.shape[0]),
    )
    if noise.secure or not budget.private:
        logger.info("privacy: %s", budget.describe())
    else:  # the sentence must not claim a guarantee that the insecure seed voids
        logger.warning("privacy: NOT differentially private (insecure noise seed); with secret noise it would be: %s",
                       budget.describe())
    weights = private.weights(budget.noise, budget.grid)
    sizes = None
    if classes is not None:  # after the budget checks above: nothing is drawn for a refused resume
        sizes = class_sizes_stage(run_dir, cfg, budget, classes, weights, cfg.pe.population, noise, on_release=ledger)
        run_dir.update_manifest(classes={"names": list(classes.names), "sizes": [int(x) for x in sizes],
                                         "class_sizes": cfg.privacy.class_sizes})
        logger.info("labelled run: %d classes, population per class from %s", len(classes.names),
                    "a DP estimate" if cfg.privacy.class_sizes == "dp" else "a public prior")
    engine = PrivateEvolution(
        cfg=cfg.pe,
        generator=generator,
        embed_candidates=candidate_embedder(generator),
        private_features=private.features,
        weights=weights,
        sigma=budget.sigma,
        noise=noise,
        checkpoint_dir=run_dir.checkpoints,
        seed=cfg.seed,
        stats=stats,
        stop_after=stop_after,
        on_histogram=on_histogram,
        on_iteration=on_iteration,
        noise_kind=budget.noise,
        grid=budget.grid,
        private_labels=private.labels if classes is not None else None,
        class_sizes=sizes,
        vote_options=_vote_options(cfg),
    )
    try:
        population = engine.run()
    finally:
        run_dir.update_stats("evolve", stats)
    ledger()
    labels = engine.final_labels
    if labels is None:
        write_captions(run_dir.release, population)
    else:
        write_captions(run_dir.release, population, labels=[classes.names[int(c)] for c in labels])
    run_dir.mark_stage("evolve", population=len(population), iterations=cfg.pe.iterations)
    return EvolveOutcome(population, budget, stats, labels=labels, class_sizes=sizes)


def _vote_options(cfg: Config) -> dict[str, Any]:
    """What the voting backend needs beyond PEConfig: a Ray cluster's address and the voting role's
    resources (``executor`` section) for ``nn_backend: ray``. Nothing for the in-process backends."""
    if not cfg.pe.nn_backend.startswith("ray"):
        return {}
    from spti.scale.ray_voting import ray_options_from_config

    return {"ray_options": ray_options_from_config(cfg)}
