"""The DP stage: Private Evolution over captions (:class:`spti.pe.engine.PrivateEvolution`), shared by
``spti evolve`` (private texts vote) and ``spti run`` (private captions or image features vote).

The engine writes the checkpoints (``checkpoints/iter_XXX/``, each ``population.jsonl`` written by it alone);
this stage wires its roles, keeps the ledger current after every released histogram, and writes the
release's DP captions. Also here: the two candidate-embedder factories the voting modes hand to it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spti.config import Config
from spti.data.cache import FeatureCache, RenderCache
from spti.data.release import write_captions
from spti.data.run import RunDir
from spti.log import logger
from spti.pe.candidates import ImageCandidateEmbedder, TextCandidateEmbedder
from spti.pe.engine import CandidateEmbedder, IterationRecord, PrivateEvolution, PrivateSet
from spti.pe.generation import TextGenerator
from spti.stages.budget import bind_private_input, make_budget, make_noise, record_private_input, write_ledger

#: Builds the candidate embedder once the stage's text generator exists (text lookahead needs it).
CandidateEmbedderFactory = Callable[[TextGenerator], CandidateEmbedder]


@dataclass
class EvolveOutcome:
    population: list[str]
    budget: Any
    stats: Counter = field(default_factory=Counter)


def text_candidates(run_dir: RunDir, cfg: Config, embedder) -> CandidateEmbedderFactory:
    """Text voting: candidates embedded by the run's text embedder, cached in cache/text-<key>/."""
    cache = FeatureCache(run_dir.cache, f"text-{embedder.cache_key}")

    def factory(generator: TextGenerator) -> CandidateEmbedder:
        return TextCandidateEmbedder(embedder, cache=cache, generator=generator, lookahead=cfg.pe.lookahead,
                                     normalize=cfg.pe.normalize)

    return factory


def image_candidates(run_dir: RunDir, cfg: Config, renders: RenderCache, image_embedder) -> CandidateEmbedderFactory:
    """Image voting: candidates rendered (``max(1, lookahead)`` seeds each) and embedded, features cached in
    cache/render-features-<key>/."""
    features = FeatureCache(run_dir.cache, f"render-features-{image_embedder.cache_key}")

    def factory(generator: TextGenerator) -> CandidateEmbedder:
        return ImageCandidateEmbedder(renders, image_embedder, renders=max(1, cfg.pe.lookahead),
                                      base_seed=cfg.render.seed, feature_cache=features, normalize=cfg.pe.normalize)

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
) -> EvolveOutcome:
    """Run (or resume) PE and write release/dp_captions.jsonl. ``captioning``: the ledger's record of how
    the private images were captioned (text voting of ``spti run``); ``on_iteration``: called after each
    iteration (the per-iteration evaluator); ``stop_after``: test hook that simulates a crash.

    Refuses to resume on another private input (``private.fingerprint``, see
    :func:`~spti.stages.budget.bind_private_input`) and, through the ledger, on checkpoints drawn with
    another σ than the budget's (:class:`~spti.stages.budget.BudgetMismatchError`)."""
    bind_private_input(run_dir, private.fingerprint)
    budget = make_budget(cfg, private.num_units)
    noise = make_noise(cfg)
    stats: Counter = Counter(run_dir.stats().get("evolve", {}))
    generator = TextGenerator(llm, cfg.generation, seed=cfg.seed, stats=stats)

    def ledger() -> None:  # privacy.json: spent so far (composed from the histograms saved on disk) and planned
        write_ledger(run_dir, cfg, budget, captioner=captioning, voting=cfg.pe.voting)

    def on_histogram(t: int) -> None:  # a histogram was released: the ledger says so before it is used
        ledger()
        run_dir.update_stats("evolve", stats)

    engine = PrivateEvolution(
        cfg=cfg.pe,
        generator=generator,
        embed_candidates=candidate_embedder(generator),
        private_features=private.features,
        weights=private.weights(budget.noise, budget.grid),
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
    )
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
    try:
        population = engine.run()
    finally:
        run_dir.update_stats("evolve", stats)
    ledger()
    write_captions(run_dir.release, population)
    run_dir.mark_stage("evolve", population=len(population), iterations=cfg.pe.iterations)
    return EvolveOutcome(population, budget, stats)
