"""The SPTI pipeline as a list of stages; each stage's body is in :mod:`spti.stages`.

``spti run`` / :func:`run` (private images)::

    ingest -> caption + embed captions (text voting) | embed images (image voting) -> evolve (DP)
           -> render -> evaluate (NOT DP) -> report

``spti evolve`` / :func:`evolve_texts` (private texts)::

    read texts -> embed texts -> evolve (DP)

Labelled runs (``data.labels_from_subfolders`` / ``data.label_column``): ingest also reads each image's
class (:func:`~spti.stages.private.private_labels`); the evolve stage fixes the class sizes (DP or a public
prior) and runs one population per class; the release is rendered with each caption's class. ``spti evolve``
stays unlabelled.

Model stages run on the config's executor (``executor.kind``: ``local``, this process, the default; or
``ray``: Ray Data actor pools, ``spti run --executor ray``; :mod:`spti.executor`): one executor per
command, models built through it (:meth:`~spti.executor.Executor.backend`: on Ray the driver holds proxies
and loads no model), the same run folder either way.

Every stage reads and writes the run folder (:class:`spti.data.run.RunDir`) and can be re-entered: a stage
that finished is skipped, one that was interrupted continues from its last atomic shard or checkpoint.
``spti.run(config)`` does what ``spti run`` does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spti.config import Config, labelled
from spti.data.cache import RenderCache
from spti.data.run import RunDir
from spti.errors import ConfigError
from spti.executor import Executor, LocalExecutor, activate, make_executor
from spti.log import logger
from spti.models._guard import set_stage, with_backend_stage
from spti.pe.advice import warn_if_weak_voting
from spti.pe.engine import PrivateSet
from spti.preflight import preflight
from spti.stages import finish_release_docs, open_run
from spti.stages.evaluate import evaluate_stage, per_iteration_evaluator
from spti.stages.evolve import CandidateEmbedderFactory, evolve_stage, image_candidates, text_candidates
from spti.stages.private import (
    caption_stage,
    captioner_config,
    captioning_record,
    embed_private_images,
    embed_private_texts,
    ingest_stage,
    private_labels,
    private_units,
)
from spti.stages.render import build_run_renderer, render_stage
from spti.stages.report import report_stage


# ====================================================================== spti run
@with_backend_stage("run")
def run(config: Config | dict | str | Path, *, stop_after: int | None = None, stop_before: str | None = None,
        command: str = "run") -> RunDir:
    """The whole pipeline for a config (a :class:`Config`, a dict or a YAML path); returns the run folder.
    ``stop_before`` ("caption", "evolve", "render") and ``stop_after`` (an iteration) are test hooks that
    simulate a crash.

    Every model stage runs on the config's executor (``executor.kind``: ``local``, this process, or ``ray``:
    Ray Data actor pools, :mod:`spti.executor`), opened once for the command and closed at its end; the run
    folder gets the same bytes either way."""
    cfg = _as_config(config)
    preflight(cfg, "run")  # every backend the run needs resolves: before anything is read or spent
    run_dir = open_run(cfg, command)
    with make_executor(cfg) as ex, activate(ex):
        _run_stages(run_dir, cfg, ex, stop_after=stop_after, stop_before=stop_before)
    logger.info("done: release in %s", run_dir.release)
    run_dir.close()  # the command is over: another may now work in the folder
    return run_dir


def _run_stages(run_dir: RunDir, cfg: Config, ex: Executor, *, stop_after: int | None, stop_before: str | None) -> None:
    set_stage("ingest")
    ingested = ingest_stage(run_dir, cfg)
    owners, num_units = private_units(cfg, ingested)
    labels = private_labels(cfg, ingested)  # None unless the run is labelled
    _stop_if(stop_before, "caption")
    warn_if_weak_voting(cfg, num_units)  # a mode measured weak for this captioner; sigma above the votes per candidate
    setup_voting = setup_text_voting if cfg.pe.voting == "text" else setup_image_voting
    set_stage("caption" if cfg.pe.voting == "text" else "private image embedding")
    voting = setup_voting(run_dir, cfg, ingested, executor=ex)
    _stop_if(stop_before, "evolve")
    private = PrivateSet(voting.features, owners, num_units, cfg.privacy.unit,
                         labels=None if labels is None else labels.index)
    set_stage("evolve")
    llm = ex.backend("llm", cfg.llm)
    run_dir.update_manifest(models=_models_info(llm=llm, **voting.models))
    evaluator = per_iteration_evaluator(run_dir, cfg, ingested, voting.renders)
    # every render made during the evolve stage (image voting's candidates, the per-iteration evaluator's
    # populations) goes through this one cache, whose renderer-call counts are saved even after a crash
    evolve_renders = evaluator.render_cache if evaluator is not None else voting.renders
    try:
        outcome = evolve_stage(run_dir, cfg, private, llm=llm, candidate_embedder=voting.candidate_embedder,
                               captioning=voting.captioning, stop_after=stop_after, on_iteration=evaluator,
                               classes=labels)
    finally:
        if evolve_renders is not None:
            run_dir.update_stats("renderer_calls", evolve_renders.stats)
    _stop_if(stop_before, "render")
    # the release reuses the renderer (and its renders) of the evolve stage unless it has its own
    reuse = evolve_renders.renderer if evolve_renders is not None and cfg.release_renderer is None else None
    set_stage("render")
    if labels is None:
        render_stage(run_dir, cfg, outcome.population, renderer=reuse, executor=ex)
    else:
        render_stage(run_dir, cfg, outcome.population, renderer=reuse, labels=outcome.labels,
                     label_names=labels.names, executor=ex)
    finish_release_docs(run_dir, cfg)
    if cfg.evaluate.metrics:
        set_stage("evaluate")
        evaluate_stage(run_dir, cfg)
    set_stage("report")
    report_stage(run_dir)


@dataclass
class VotingSetup:
    """What a voting mode hands to the evolve stage: the private rows that vote, how candidates are
    embedded, the models to record in the manifest, the ledger's captioning record (text voting) and the
    render cache of the loop (image voting: candidates are rendered to vote)."""

    features: np.ndarray
    candidate_embedder: CandidateEmbedderFactory
    models: dict[str, Any]
    captioning: dict[str, Any] | None = None
    renders: RenderCache | None = None


def setup_text_voting(run_dir: RunDir, cfg: Config, ingested, *, executor: Executor | None = None) -> VotingSetup:
    """Text voting (Aug-PE on captions): caption the private images and embed the captions; candidates are
    embedded by the same text embedder. Models are built by ``executor`` (default: here)."""
    ex = executor or LocalExecutor()
    ccfg = captioner_config(cfg)  # refuses a remote captioner without the opt-in, before any image is read
    captions = caption_stage(run_dir, cfg, ingested, executor=ex)
    embedder = ex.backend("text_embedder", cfg.text_embedder)
    return VotingSetup(
        features=embed_private_texts(run_dir, embedder, captions, executor=ex),
        candidate_embedder=text_candidates(run_dir, cfg, embedder),
        models={"text_embedder": embedder},
        captioning=captioning_record(ccfg),
    )


def setup_image_voting(run_dir: RunDir, cfg: Config, ingested, *, executor: Executor | None = None) -> VotingSetup:
    """Image voting (SPTI): embed the private images; candidates are rendered by the loop's renderer and
    embedded by the same image embedder (on Ray: one streaming render -> embed pipeline per iteration).
    Renderer calls are counted under ``renderer_calls.evolve``. Models are built by ``executor``."""
    ex = executor or LocalExecutor()
    image_embedder = ex.backend("image_embedder", cfg.image_embedder)
    features = embed_private_images(run_dir, cfg, ingested, image_embedder, executor=ex)
    renderer = build_run_renderer(run_dir, cfg, cfg.renderer, executor=ex)
    calls: Counter = Counter(run_dir.stats().get("renderer_calls", {}))
    calls.setdefault("evolve", 0)
    renders = RenderCache(run_dir.cache, renderer, calls, "evolve")
    return VotingSetup(
        features=features,
        candidate_embedder=image_candidates(run_dir, cfg, renders, image_embedder),
        models={"image_embedder": image_embedder, "renderer": renderer},
        renders=renders,
    )


# ====================================================================== spti evolve (texts)
@with_backend_stage("evolve")
def evolve_texts(cfg: Config, *, command: str = "evolve", stop_after: int | None = None) -> RunDir:
    """Aug-PE on a private text file: the ``spti evolve`` command. Models run on the config's executor."""
    from spti.data.texts import read_texts
    from spti.stages.budget import bind_private_input

    cfg.validate()  # before reading the texts, whose path it checks
    if cfg.pe.voting != "text":
        raise ConfigError("spti evolve works on texts: pe.voting must be 'text'")
    if labelled(cfg):  # class-conditional PE needs labelled images: `spti run`
        raise ConfigError("spti evolve works on unlabelled texts: drop data.label_column / data.labels_from_subfolders "
                          "(labelled runs: spti run)")
    preflight(cfg, "evolve")  # the LLM and the text embedder resolve: before the texts are read
    texts = read_texts(cfg.data.private, text_column=cfg.data.text_column, user_column=cfg.data.user_column)
    run_dir = open_run(cfg, command)  # only once the input is known to be readable
    bind_private_input(run_dir, texts.fingerprint, what="private text file")  # a resume on other data: refused
    unit = cfg.privacy.unit
    num_units = texts.num_units if unit == "user" else len(texts.texts)
    logger.info("private texts: %d rows, %d %ss", len(texts.texts), num_units, unit)
    with make_executor(cfg) as ex, activate(ex):
        set_stage("private text embedding")
        embedder = ex.backend("text_embedder", cfg.text_embedder)
        private = PrivateSet(embed_private_texts(run_dir, embedder, texts.texts, executor=ex), texts.owners(unit),
                             num_units, unit, fingerprint=texts.fingerprint)
        set_stage("evolve")
        llm = ex.backend("llm", cfg.llm)
        run_dir.update_manifest(models=_models_info(llm=llm, text_embedder=embedder))
        evolve_stage(run_dir, cfg, private, llm=llm, candidate_embedder=text_candidates(run_dir, cfg, embedder),
                     stop_after=stop_after)
        finish_release_docs(run_dir, cfg)
    logger.info("release: %s", run_dir.release)
    run_dir.close()  # the command is over: another may now work in the folder
    return run_dir


# ====================================================================== helpers
def _models_info(**backends) -> dict[str, Any]:
    return {k: (v.info() if v is not None else None) for k, v in backends.items()}


class _StoppedStage(RuntimeError):
    """Test hook: simulates a crash between stages."""


def _stop_if(stop_before: str | None, stage: str) -> None:
    if stop_before == stage:
        raise _StoppedStage(stage)


def _as_config(config: Config | dict | str | Path) -> Config:
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return Config.from_dict(config)
    return Config.from_yaml(config)
