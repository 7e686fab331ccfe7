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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from spti.config import PEConfig
from spti.data.io import atomic_write_jsonl, load_npz, read_jsonl
from spti.data.lock import save_npz_once
from spti.errors import RunFolderError
from spti.log import logger
from spti.pe.generation import TextGenerator, stage_rng
from spti.pe.histogram import release_histogram, vote_histogram, vote_weights
from spti.pe.selection import select, threshold_counts


class CandidateEmbedder(Protocol):
    """Maps candidate texts to the vectors private samples vote against (text or image space); the two
    implementations are in :mod:`spti.pe.candidates`."""

    def __call__(self, texts: Sequence[str], *, iteration: int) -> np.ndarray: ...


@dataclass
class PrivateSet:
    """What PE votes with: one feature row per private sample, and who owns each row (None: every row is
    its own record). ``num_units`` is N of the privacy guarantee (records or users)."""

    features: np.ndarray
    owners: list[str] | None
    num_units: int
    unit: str

    fingerprint: str | None = None  # content hash of the private input; resumes on other data are refused

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
    ):
        """``noise_kind`` / ``grid``: the Gaussian (default) or the exact discrete Gaussian on the integer
        vote grid ``grid``; with "discrete", ``weights`` must be the integer grid weights of
        :func:`~spti.pe.histogram.vote_weights` (None: record level, grid 1)."""
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
        cfg = self.cfg
        n = cfg.population
        # ---------------------------------------------------------------- iteration 0
        p0 = self.iter_dir(0) / "population.jsonl"
        if p0.exists():
            population = [r["text"] for r in read_jsonl(p0)]
            logger.info("resuming: initial population found (%d captions)", len(population))
        else:
            logger.info("iteration 0: the random API writes %d captions (no private data)", n)
            population = self.generator.random(n, iteration=0)
            atomic_write_jsonl(p0, ({"text": t} for t in population))
        if self.on_iteration:
            self.on_iteration(IterationRecord(0, population, None, None))
        # ---------------------------------------------------------------- iterations 1..T
        for t in range(1, cfg.iterations + 1):
            d = self.iter_dir(t)
            if (d / "population.jsonl").exists():
                population = [r["text"] for r in read_jsonl(d / "population.jsonl")]
                logger.info("resuming: iteration %d already complete", t)
                if self.on_iteration:  # callbacks are idempotent; they may have been cut off by the crash
                    self.on_iteration(IterationRecord(t, population, None, None))
                continue
            # candidates (saved before voting, so the histogram's bins are fixed on disk)
            if (d / "candidates.jsonl").exists():
                rows = read_jsonl(d / "candidates.jsonl")
            else:
                variations = self.generator.variations(population, cfg.variations, iteration=t)
                rows = []
                for i, parent in enumerate(population):
                    if cfg.keep_selected:
                        rows.append({"text": parent, "parent": i, "kind": "parent"})
                    rows.extend({"text": v, "parent": i, "kind": "variation"} for v in variations[i])
                atomic_write_jsonl(d / "candidates.jsonl", rows)
            candidates = [r["text"] for r in rows]
            # the noisy histogram: drawn once, saved before use
            hist_path = d / "noisy_histogram.npz"
            if hist_path.exists():
                noisy = load_npz(hist_path)["noisy_counts"]
                if noisy.shape[0] != len(candidates):
                    raise RuntimeError(f"{hist_path} does not match the candidates of iteration {t}")
                logger.info("resuming: iteration %d's noisy histogram found; not drawing noise again", t)
            else:
                logger.info("iteration %d/%d: %d candidates; embedding and voting", t, cfg.iterations, len(candidates))
                feats = self.embed_candidates(candidates, iteration=t)
                counts = vote_histogram(
                    self.private_features,
                    feats,
                    weights=self.weights,
                    chunk_size=cfg.chunk_size,
                    backend=cfg.nn_backend,
                    normalize=cfg.normalize,
                )
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
            clipped = threshold_counts(noisy, cfg.threshold)
            idx = select(clipped, n, cfg.selection, rng=stage_rng(self.seed, t, "select"))
            population = [candidates[i] for i in idx]
            atomic_write_jsonl(
                d / "population.jsonl",
                ({"text": candidates[i], "candidate": int(i), "noisy_count": float(noisy[i])} for i in idx),
            )
            logger.info(
                "iteration %d: selected %d; %.0f%% of the selected are new variations",
                t, n, 100.0 * np.mean([rows[i]["kind"] == "variation" for i in idx]),
            )
            if self.on_iteration:
                self.on_iteration(IterationRecord(t, population, noisy, candidates))
            if self.stop_after is not None and t >= self.stop_after:
                raise _Stopped(t)
        return population


class _Stopped(RuntimeError):
    """Raised by the ``stop_after`` test hook to simulate a crash."""
