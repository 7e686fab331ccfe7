"""The Private Evolution loop (PE / Aug-PE as SPTI uses it). The whole algorithm is in :meth:`run`.

    S_0 = RANDOM_API(N)                                  (no private data)
    for t = 1..T:
        C_t  = (S_{t-1} if keep_selected) + k variations of each member of S_{t-1}
        h_t  = votes of the private samples for their nearest candidate in C_t   (sensitivity 1)
        h~_t = h_t + N(0, σ² I)                          <- the only release; saved before it is used
                                                            (or the exact discrete Gaussian, see below)
        S_t  = select(threshold(h~_t, H), N)             (post-processing)
    release S_T

Checkpoints (atomic) in ``checkpoints/iter_XXX/``: ``candidates.jsonl`` before voting,
``noisy_histogram.npz`` as soon as the noise is added, ``population.jsonl`` after selection. A resumed run
reuses each file it finds, so noise is never drawn twice for the same iteration.

Each ``noisy_histogram.npz`` also records how its noise was drawn — ``sigma`` always; ``noise`` ("discrete")
and ``grid`` for the exact discrete Gaussian (absent: the Gaussian) — because the ledger is composed from
what these files say, not from the budget the current process computed (:mod:`spti.stages.budget`): a
resume that would mix two different σ is caught there. The noise itself is drawn by
:func:`spti.pe.histogram.release_histogram`, the one function the audit also calls.

Labelled runs (class-conditional PE; ``private_labels`` and ``class_sizes`` given): the same loop, with a
class on every population member and candidate. Class c's population has ``class_sizes[c]`` members (a DP
estimate or a public prior, :func:`spti.stages.budget.class_sizes_stage`); its random captions and
variations are written with class c's description and class c's own random streams
(:class:`~spti.pe.generation.TextGenerator`); every private row of class c votes only among class c's
candidates (:func:`spti.pe.classes.class_vote_histogram`; rows of a class with no candidates do not vote);
ONE noisy histogram per iteration over all candidates — every row still lands in one bin, so the
sensitivity stays 1 (parallel composition); selection per class, with its size. ``candidates.jsonl`` and
``population.jsonl`` rows then carry ``"label": c``. Unlabelled runs (one class) write exactly what they
wrote before classes existed: no ``label`` field, the same random streams.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from spti.config import PEConfig
from spti.data.io import atomic_write_jsonl, load_npz, read_jsonl
from spti.data.lock import save_npz_once
from spti.errors import RunFolderError
from spti.log import logger
from spti.pe.classes import class_vote_histogram
from spti.pe.generation import TextGenerator, stage_rng
from spti.pe.histogram import release_histogram, vote_histogram, vote_weights
from spti.pe.selection import effective_threshold, select, threshold_counts


class CandidateEmbedder(Protocol):
    """Maps candidate texts to the vectors private samples vote against (text or image space); the two
    implementations are in :mod:`spti.pe.candidates`. In labelled runs the engine also passes ``labels``
    (the class of every candidate) to an embedder whose signature accepts it (text lookahead writes its
    variations with the class's description)."""

    def __call__(self, texts: Sequence[str], *, iteration: int) -> np.ndarray: ...


@dataclass
class PrivateSet:
    """What PE votes with: one feature row per private sample, and who owns each row (None: every row is
    its own record). ``num_units`` is N of the privacy guarantee (records or users). ``labels``: the class
    index of every row in a labelled run (private, like the features), None otherwise."""

    features: np.ndarray
    owners: list[str] | None
    num_units: int
    unit: str

    fingerprint: str | None = None  # content hash of the private input; resumes on other data are refused
    labels: np.ndarray | None = None

    def weights(self, noise: str = "gaussian", grid: int | None = None) -> np.ndarray:
        """Each row's vote weight: a unit's rows share total weight <= 1 (sensitivity 1 per unit); with the
        discrete sampler, integer weights summing to ``grid`` per unit (:func:`~spti.pe.histogram.vote_weights`)."""
        return vote_weights(self.owners, self.features.shape[0], noise=noise, grid=grid)


@dataclass
class IterationRecord:
    iteration: int
    population: list[str]
    noisy_counts: np.ndarray | None
    candidates: list[str] | None
    labels: np.ndarray | None = None  # labelled runs: the class of every population member


def dedup_candidates(rows: list[dict[str, Any]], cfg: PEConfig) -> list[dict[str, Any]]:
    """Issue 14's hook: :func:`spti.pe.dedup.dedup_candidate_rows` (exact duplicate rows removed; rows of
    different classes differ by their ``label``) when that module exists, else the rows unchanged. Called
    on new candidate rows only, before ``candidates.jsonl`` is written, so a resume reads what was voted."""
    if importlib.util.find_spec("spti.pe.dedup") is None:
        return rows
    from spti.pe.dedup import dedup_candidate_rows

    return dedup_candidate_rows(rows, cfg)


class PrivateEvolution:
    """Runs PE given its roles. It knows nothing about images, files or models beyond these objects."""

    def __init__(
        self,
        *,
        cfg: PEConfig,
        generator: TextGenerator,
        embed_candidates: CandidateEmbedder,
        private_features: np.ndarray,
        weights: np.ndarray | None,
        sigma: float,
        noise,  # spti.privacy.NoiseSource
        checkpoint_dir: str | Path,
        seed: int = 0,
        stats: Counter | None = None,
        on_histogram: Callable[[int], None] | None = None,
        on_iteration: Callable[[IterationRecord], None] | None = None,
        stop_after: int | None = None,
        noise_kind: str = "gaussian",
        grid: int | None = None,
        private_labels: np.ndarray | None = None,
        class_sizes: Sequence[int] | np.ndarray | None = None,
        vote_options: dict[str, Any] | None = None,
    ):
        """``noise_kind`` / ``grid``: the Gaussian (default) or the exact discrete Gaussian on the integer
        vote grid ``grid``; with "discrete", ``weights`` must be the integer grid weights of
        :func:`~spti.pe.histogram.vote_weights` (None: record level, grid 1).

        ``private_labels`` (class index per private row) and ``class_sizes`` (population per class; the
        population is their sum, not ``cfg.population``) make the run labelled; give both or neither. The
        generator must then know every class's description.

        ``vote_options``: passed on to :func:`~spti.pe.histogram.vote_histogram` (``device`` for
        ``nn_backend: torch``, ``ray_options`` for ``nn_backend: ray`` — the run's executor address and
        voting resources, :func:`spti.scale.ray_voting.ray_options_from_config`)."""
        self.cfg = cfg
        self.generator = generator
        self.embed_candidates = embed_candidates
        self.private_features = private_features
        self.weights = weights
        self.sigma = float(sigma)
        self.noise = noise
        self.dir = Path(checkpoint_dir)
        self.seed = int(seed)
        self.stats = stats if stats is not None else Counter()
        self.on_histogram = on_histogram
        self.on_iteration = on_iteration
        self.stop_after = stop_after  # tests: simulate a crash after this iteration
        self.noise_kind = noise_kind
        self.grid = grid
        if (private_labels is None) != (class_sizes is None):
            raise ValueError("a labelled run needs both private_labels and class_sizes")
        self.private_labels: np.ndarray | None = None
        self.class_sizes: np.ndarray | None = None
        if class_sizes is not None:
            sizes = np.asarray(class_sizes, dtype=np.int64)
            labels = np.asarray(private_labels, dtype=np.int64)
            if sizes.ndim != 1 or sizes.size == 0 or np.any(sizes < 0) or sizes.sum() < 1:
                raise ValueError("class_sizes: one size >= 0 per class, at least one member in all")
            if labels.shape != (private_features.shape[0],):
                raise ValueError(f"private_labels must have one class per private row ({private_features.shape[0]})")
            if labels.size and (labels.min() < 0 or labels.max() >= sizes.size):
                raise ValueError(f"private_labels must be class indices in [0, {sizes.size})")
            self.private_labels, self.class_sizes = labels, sizes
        self.final_labels: np.ndarray | None = None  # after run(): the class of every released caption
        self.vote_options = dict(vote_options or {})

    @property
    def labelled(self) -> bool:
        return self.class_sizes is not None

    def iter_dir(self, t: int) -> Path:
        return self.dir / f"iter_{t:03d}"

    def completed_iterations(self) -> int:
        """Highest t whose population is saved (0 once the initial population exists, -1 before)."""
        t = -1
        while (self.iter_dir(t + 1) / "population.jsonl").exists():
            t += 1
        return t

    def histograms_released(self) -> int:
        return sum(1 for t in range(1, self.cfg.iterations + 1) if (self.iter_dir(t) / "noisy_histogram.npz").exists())

    def run(self) -> list[str]:
        """Run (or resume) PE; returns the final population's captions (their classes: ``final_labels``)."""
        cfg = self.cfg
        n = int(self.class_sizes.sum()) if self.labelled else cfg.population
        # ---------------------------------------------------------------- iteration 0
        p0 = self.iter_dir(0) / "population.jsonl"
        if p0.exists():
            population, labels = self._read_population(p0)
            logger.info("resuming: initial population found (%d captions)", len(population))
        else:
            logger.info("iteration 0: the random API writes %d captions (no private data)", n)
            population, labels = self._random_population(n)
            atomic_write_jsonl(p0, _with_labels([{"text": t} for t in population], labels))
        if self.on_iteration:
            self.on_iteration(IterationRecord(0, population, None, None, labels))
        # ---------------------------------------------------------------- iterations 1..T
        for t in range(1, cfg.iterations + 1):
            d = self.iter_dir(t)
            if (d / "population.jsonl").exists():
                population, labels = self._read_population(d / "population.jsonl")
                logger.info("resuming: iteration %d already complete", t)
                if self.on_iteration:  # callbacks are idempotent; they may have been cut off by the crash
                    self.on_iteration(IterationRecord(t, population, None, None, labels))
                continue
            # candidates (saved before voting, so the histogram's bins are fixed on disk)
            if (d / "candidates.jsonl").exists():
                rows = read_jsonl(d / "candidates.jsonl")
            else:
                rows = dedup_candidates(self._candidate_rows(population, labels, t), cfg)
                atomic_write_jsonl(d / "candidates.jsonl", rows)
            candidates = [r["text"] for r in rows]
            cand_labels = self._labels_of(rows, d / "candidates.jsonl")
            # the noisy histogram: drawn once, saved before use
            hist_path = d / "noisy_histogram.npz"
            if hist_path.exists():
                noisy = load_npz(hist_path)["noisy_counts"]
                if noisy.shape[0] != len(candidates):
                    raise RuntimeError(f"{hist_path} does not match the candidates of iteration {t}")
                logger.info("resuming: iteration %d's noisy histogram found; not drawing noise again", t)
            else:
                logger.info("iteration %d/%d: %d candidates; embedding and voting", t, cfg.iterations, len(candidates))
                feats = self._embed(candidates, t, cand_labels)
                counts = self._votes(feats, cand_labels)
                noisy, _ = release_histogram(counts, self.sigma, noise=self.noise, iteration=t,
                                             kind=self.noise_kind, grid=self.grid)
                del counts  # the clean histogram is private: it is never stored
                how = {} if self.noise_kind == "gaussian" else {"noise": np.str_(self.noise_kind),
                                                                 "grid": np.int64(self.grid or 1)}
                try:  # written once: never replaces a histogram drawn by another process (spti.data.lock)
                    save_npz_once(hist_path, noisy_counts=noisy, sigma=np.float64(self.sigma),
                                  iteration=np.int64(t), **how)
                except FileExistsError:
                    raise RunFolderError(
                        f"{hist_path} appeared while iteration {t} was voting: another process works on this run "
                        "folder. This process's noise was discarded, not written; run the same command again "
                        "once the other one has finished"
                    ) from None
                self.stats["histograms_released"] += 1
                if self.on_histogram:
                    self.on_histogram(t)
            # selection: post-processing of the noisy histogram
            clipped = threshold_counts(noisy, effective_threshold(cfg, self.sigma))
            idx = self._select(clipped, n, cand_labels, t)
            population = [candidates[i] for i in idx]
            labels = None if cand_labels is None else cand_labels[idx]
            atomic_write_jsonl(
                d / "population.jsonl",
                _with_labels([{"text": candidates[i], "candidate": int(i), "noisy_count": float(noisy[i])} for i in idx],
                             labels),
            )
            logger.info(
                "iteration %d: selected %d; %.0f%% of the selected are new variations",
                t, n, 100.0 * np.mean([rows[i]["kind"] == "variation" for i in idx]),
            )
            if self.on_iteration:
                self.on_iteration(IterationRecord(t, population, noisy, candidates, labels))
            if self.stop_after is not None and t >= self.stop_after:
                raise _Stopped(t)
        self.final_labels = labels
        return population

    # ------------------------------------------------------------------ the steps, one class or many
    def _random_population(self, n: int) -> tuple[list[str], np.ndarray | None]:
        """Iteration 0: the random API, per class with its size in labelled runs (classes in order)."""
        if not self.labelled:
            return self.generator.random(n, iteration=0), None
        texts: list[str] = []
        labels: list[int] = []
        for c, size in enumerate(self.class_sizes.tolist()):
            if size > 0:  # a class given no population (DP size 0) has no captions and no candidates
                texts.extend(self.generator.random(size, iteration=0, label=c))
                labels.extend([c] * size)
        return texts, np.asarray(labels, dtype=np.int64)

    def _candidate_rows(self, population: list[str], labels: np.ndarray | None, t: int) -> list[dict[str, Any]]:
        """The parents (if kept) and ``k`` variations of each, in population order; in labelled runs the
        variations of each class are written with its description and its own random stream."""
        cfg = self.cfg
        if labels is None:
            variations = self.generator.variations(population, cfg.variations, iteration=t)
        else:
            variations = [[] for _ in population]
            for c in np.unique(labels).tolist():
                members = np.flatnonzero(labels == c)
                per = self.generator.variations([population[i] for i in members], cfg.variations, iteration=t, label=c)
                for i, v in zip(members.tolist(), per):
                    variations[i] = v
        rows: list[dict[str, Any]] = []
        for i, parent in enumerate(population):
            extra = {} if labels is None else {"label": int(labels[i])}
            if cfg.keep_selected:
                rows.append({"text": parent, "parent": i, "kind": "parent", **extra})
            rows.extend({"text": v, "parent": i, "kind": "variation", **extra} for v in variations[i])
        return rows

    def _embed(self, candidates: list[str], t: int, labels: np.ndarray | None) -> np.ndarray:
        """All candidates at once (one batch for the renderer / embedder); the classes go along to an
        embedder that takes them."""
        if labels is not None and _accepts_labels(self.embed_candidates):
            return self.embed_candidates(candidates, iteration=t, labels=labels)
        return self.embed_candidates(candidates, iteration=t)

    def _votes(self, feats: np.ndarray, cand_labels: np.ndarray | None) -> np.ndarray:
        """The clean (private) vote vector over all candidates: one histogram, per-class restriction in
        labelled runs."""
        cfg = self.cfg
        if cand_labels is None:
            return vote_histogram(self.private_features, feats, weights=self.weights, chunk_size=cfg.chunk_size,
                                  backend=cfg.nn_backend, normalize=cfg.normalize, **self.vote_options)
        return class_vote_histogram(self.private_features, feats, private_labels=self.private_labels,
                                    candidate_labels=cand_labels, weights=self.weights, chunk_size=cfg.chunk_size,
                                    backend=cfg.nn_backend, normalize=cfg.normalize, **self.vote_options)

    def _select(self, clipped: np.ndarray, n: int, cand_labels: np.ndarray | None, t: int) -> np.ndarray:
        """The next population's candidate indices; per class (with its size and its own stream) in
        labelled runs, concatenated in class order."""
        cfg = self.cfg
        if cand_labels is None:
            return select(clipped, n, cfg.selection, rng=stage_rng(self.seed, t, "select"))
        parts = []
        for c, size in enumerate(self.class_sizes.tolist()):
            if size == 0:
                continue
            cands = np.flatnonzero(cand_labels == c)
            if cands.size == 0:
                raise RunFolderError(f"iteration {t}: class {c} has a population of {size} but no candidates; "
                                     "the checkpoints do not belong to this run's class sizes")
            pick = select(clipped[cands], size, cfg.selection, rng=stage_rng(self.seed, t, "select", "class", c))
            parts.append(cands[pick])
        return np.concatenate(parts)

    def _read_population(self, path: Path) -> tuple[list[str], np.ndarray | None]:
        rows = read_jsonl(path)
        labels = self._labels_of(rows, path)
        if labels is not None:
            got = np.bincount(labels, minlength=self.class_sizes.size)
            if got.size != self.class_sizes.size or not np.array_equal(got, self.class_sizes):
                raise RunFolderError(f"{path} was made with other class sizes than this run's; use a new --out")
        return [r["text"] for r in rows], labels

    def _labels_of(self, rows: list[dict[str, Any]], path: Path) -> np.ndarray | None:
        """The ``label`` of every row in a labelled run (None unlabelled); a checkpoint of the other kind is
        refused rather than mixed."""
        has = [("label" in r) for r in rows]
        if not self.labelled:
            if any(has):
                raise RunFolderError(f"{path} belongs to a labelled run but this run is not labelled; use a new --out")
            return None
        if not all(has):
            raise RunFolderError(f"{path} belongs to an unlabelled run but this run is labelled; use a new --out")
        labels = np.asarray([int(r["label"]) for r in rows], dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= self.class_sizes.size):
            raise RunFolderError(f"{path} names classes this run does not have; use a new --out")
        return labels


def _with_labels(rows: list[dict[str, Any]], labels: np.ndarray | None) -> list[dict[str, Any]]:
    """Rows as they are (unlabelled runs) or with each row's ``"label"`` added last."""
    if labels is None:
        return rows
    return [{**r, "label": int(c)} for r, c in zip(rows, labels)]


def _accepts_labels(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "labels" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class _Stopped(RuntimeError):
    """Raised by the ``stop_after`` test hook to simulate a crash."""
