"""Privacy plumbing of a run: the budget, the noise source, the ledger (``privacy.json``) and the binding
of a run to its private input.

Why a stage module of its own: ``spti run``, ``spti evolve`` and ``--dry-run`` all derive the same budget
from the config, and the ledger is rewritten after every released histogram, so a run killed at any point
says exactly what it has spent.

Why the ledger is composed from the checkpoints: the budget is recomputed by every process that opens the
run, from the config *and* N (the default δ = 1/(N ln N), hence σ, depend on N). A run resumed on other
data would recompute another σ and, if the ledger trusted it, report the planned ε while its histograms were
drawn with two different σ. So the ledger composes the σ that every ``noisy_histogram.npz`` says it was
drawn with (μ² = Σ 1/σ_t²), and :func:`write_ledger` fails loudly when that disagrees with the plan. And
before any of that, :func:`bind_private_input` refuses to resume a run on a private input whose content
hash differs from the one the run started with.

Labelled runs (issue 12): :func:`class_sizes_stage` releases the noisy class counts once (saved to
``checkpoints/class_counts.npz`` before they are used, reused on resume, never redrawn) or takes a public
prior, and :func:`write_ledger` composes the saved counts' σ_c with the histograms, checked like them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spti.config import Config
from spti.data.io import atomic_write_json, read_json
from spti.data.run import RunDir
from spti.errors import BudgetError, RunFolderError
from spti.log import logger

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from spti.data.labels import LabelSet
    from spti.privacy import NoiseSource, PrivacyBudget

__all__ = [
    "INPUT_FINGERPRINT_FILE",
    "BudgetMismatchError",
    "PrivateInputChangedError",
    "SavedHistogram",
    "bind_private_input",
    "class_sizes_stage",
    "make_budget",
    "record_private_input",
    "make_noise",
    "saved_class_counts",
    "saved_histograms",
    "write_ledger",
]

#: Where a run keeps the content hash of its private input, relative to the run folder. In private/: it is
#: a function of the private data (it confirms a guess of the whole data set), so never released.
INPUT_FINGERPRINT_FILE = "private/input_fingerprint.json"


class PrivateInputChangedError(RunFolderError):
    """A run was resumed on a private input other than the one it started with."""


class BudgetMismatchError(RunFolderError):
    """The histograms saved in a run's checkpoints were not drawn with the noise its budget plans."""


def make_budget(cfg: Config, num_units: int):
    """The run's budget for N = ``num_units`` records or users (validates every parameter).

    With ``privacy.num_private_bound`` = B the budget is computed and recorded for B (a public upper bound
    on N) instead of N, and N > B is refused. Logs a warning when δ is above
    :data:`~spti.privacy.budget.DELTA_WARN`.

    A labelled run with ``privacy.class_sizes: dp`` also plans the noisy class counts: the budget's ε covers
    them and the histograms together, the counts taking ``privacy.class_count_share`` of μ² (see
    :mod:`spti.privacy.class_counts`); with uniform/prior class sizes nothing changes.
    """
    from spti.config import labelled
    from spti.privacy import PrivacyBudget, delta_warning

    pr, T = cfg.privacy, cfg.pe.iterations
    n, is_bound = num_units, False
    if pr.num_private_bound is not None:
        if num_units > pr.num_private_bound:
            # the exact N is private: the message says only that it exceeds the bound
            raise BudgetError(
                f"the private data has more {pr.unit}s than privacy.num_private_bound = {pr.num_private_bound}; "
                "the bound must be a public upper bound on their number: raise it"
            )
        n, is_bound = pr.num_private_bound, True
    share = pr.class_count_share if (labelled(cfg) and pr.class_sizes == "dp") else None
    if pr.not_private:
        return PrivacyBudget.not_private(T, n, unit=pr.unit, num_private_is_bound=is_bound, class_count_share=share)
    kw: dict[str, Any] = dict(delta=pr.delta, unit=pr.unit, noise=pr.noise, grid=pr.grid, num_private_is_bound=is_bound)
    if share is not None:
        kw["class_count_share"] = share
    if pr.sigma is not None:
        budget = PrivacyBudget.from_sigma(pr.sigma, T, n, **kw)
    else:
        budget = PrivacyBudget.from_epsilon(pr.epsilon, T, n, **kw)
    warning = delta_warning(budget)
    if warning:
        logger.warning("privacy: %s", warning)
    return budget


def make_noise(cfg: Config):
    """The DP noise source: cryptographically secure unless the config names an insecure test seed."""
    from spti.privacy import NoiseSource

    seed = cfg.privacy.insecure_noise_seed
    return NoiseSource(insecure_seed=seed) if seed is not None else NoiseSource()


# ---------------------------------------------------------------------------------------- the private input
def bind_private_input(run_dir: RunDir, fingerprint: str | None, *, what: str = "private input") -> None:
    """Refuse to resume a run on a private input whose content hash differs from the one the run recorded
    (:class:`PrivateInputChangedError`; exit status 2 from the CLI), and record the hash of a run that has
    drawn no histogram yet.

    Why: the budget (σ, through N and δ) and every histogram of a run must describe one data set; a run
    resumed on a different file would compose histograms of two. ``None`` (no fingerprint available) does
    nothing. The message names neither the content nor the hashes. A run that already drew histograms
    without recording its input (an older spti) is bound only once the ledger has checked that its
    histograms match the budget (:func:`record_private_input`, called by the evolve stage).
    """
    if fingerprint is None:
        return
    path = run_dir.path / INPUT_FINGERPRINT_FILE
    if path.is_file():
        if read_json(path).get("sha256") != fingerprint:
            raise PrivateInputChangedError(
                f"the {what} has changed since this run started in {run_dir.path} (its content hash differs). "
                "Resuming would mix noisy histograms of two different data sets under one privacy budget, so "
                "spti refuses. Restore the original input to resume, or start a new run with another --out."
            )
        return
    if not saved_histograms(run_dir.checkpoints, None):
        record_private_input(run_dir, fingerprint, what=what)


def record_private_input(run_dir: RunDir, fingerprint: str | None, *, what: str = "private input") -> None:
    """Write the run's input fingerprint if it has none yet (see :func:`bind_private_input`)."""
    path = run_dir.path / INPUT_FINGERPRINT_FILE
    if fingerprint is None or path.is_file():
        return
    if saved_histograms(run_dir.checkpoints, None):
        logger.warning(
            "privacy: this run was started by a version of spti that did not record its private input; spti "
            "cannot check that the input is the one its earlier histograms were drawn from (their sigma matches "
            "the budget), and records it from now on"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"what": what, "sha256": fingerprint})


# ---------------------------------------------------------------------------------------- the ledger
@dataclass(frozen=True)
class SavedHistogram:
    """How one saved histogram's noise was drawn, as its ``noisy_histogram.npz`` records it.
    ``sigma`` is None for checkpoints of a spti that did not save it."""

    iteration: int
    sigma: float | None
    noise: str = "gaussian"
    grid: int | None = None


def saved_histograms(checkpoints: Path, iterations: int | None) -> list[SavedHistogram]:
    """Every ``iter_XXX/noisy_histogram.npz`` under ``checkpoints`` for t = 1..T (all of them when
    ``iterations`` is None), with the σ, noise kind and grid each was drawn with."""
    import numpy as np

    out: list[SavedHistogram] = []
    paths = sorted(Path(checkpoints).glob("iter_*/noisy_histogram.npz"))
    for p in paths:
        try:
            t = int(p.parent.name.split("_", 1)[1])
        except ValueError:
            continue
        if t < 1 or (iterations is not None and t > iterations):
            continue
        with np.load(p, allow_pickle=False) as z:
            files = set(z.files)
            sigma = float(z["sigma"]) if "sigma" in files else None
            noise = str(z["noise"]) if "noise" in files else "gaussian"
            grid = int(z["grid"]) if "grid" in files else None
        out.append(SavedHistogram(t, sigma, noise, grid if noise == "discrete" else None))
    return out


def saved_class_counts(checkpoints: Path) -> SavedHistogram | None:
    """How the run's class counts (``checkpoints/class_counts.npz``) were released, or None before they were:
    σ_c (0 in a not-private run), the noise kind and grid; ``iteration`` is 0 (their noise stream)."""
    import numpy as np

    p = Path(checkpoints) / _CLASS_COUNTS_NAME
    if not p.is_file():
        return None
    with np.load(p, allow_pickle=False) as z:
        noise = str(z["noise"])
        grid = int(z["grid"]) if noise == "discrete" and "grid" in z.files else None
        return SavedHistogram(0, float(z["sigma"]), noise, grid)


#: The class counts' file name inside ``checkpoints/`` (:data:`spti.privacy.class_counts.CLASS_COUNTS_FILE`).
_CLASS_COUNTS_NAME = "class_counts.npz"


def class_sizes_stage(run_dir: RunDir, cfg: Config, budget: PrivacyBudget, labels: LabelSet, weights: np.ndarray,
                      population: int, noise: NoiseSource, *,
                      on_release: Callable[[], None] | None = None) -> np.ndarray:
    """The population size of every class of a labelled run (int64, one per class of ``labels.names``,
    summing to ``population``), by ``privacy.class_sizes``:

    * ``"dp"``: the per-class sums of the vote ``weights`` PE uses (the private rows' weights, in
      ``labels.index`` row order; L2 sensitivity 1, or ``grid`` for the discrete sampler) get the budget's
      noise σ_c through :func:`spti.pe.histogram.release_histogram` with ``iteration=0`` (PE's iteration 0
      draws no noise), are saved once to ``checkpoints/class_counts.npz`` BEFORE they are used (then
      ``on_release()`` is called, e.g. to rewrite the ledger), and are reused on resume, never redrawn. The
      exact counts are never stored or logged. A not-private run uses the exact counts for the allocation
      and stores only that it did (σ_c = 0, no counts: they are recomputed from the data on resume).
    * ``"uniform"`` / ``"prior"``: a public prior; no noise, nothing saved.

    Then :func:`spti.privacy.class_counts.allocate_sizes` (post-processing). Raises
    :class:`BudgetMismatchError` when the saved counts were drawn with another σ_c, noise kind or grid than
    the budget plans, or when the class-size mode changed after they were drawn; :class:`RunFolderError`
    when the number of classes changed.
    """
    import numpy as np

    from spti.data.lock import save_npz_once
    from spti.pe.histogram import release_histogram
    from spti.privacy.class_counts import allocate_sizes, class_vote_counts, prior_sizes, uniform_sizes

    names = list(labels.names)
    k = len(names)
    mode = cfg.privacy.class_sizes
    path = run_dir.checkpoints / _CLASS_COUNTS_NAME
    saved = saved_class_counts(run_dir.checkpoints)
    if mode != "dp":
        if saved is not None:
            raise BudgetMismatchError(
                f"this run released DP class counts ({path}) but privacy.class_sizes is now {mode!r}: the class "
                "sizes of its populations came from those counts. Keep privacy.class_sizes: dp to resume, or start "
                "a new run with another --out."
            )
        if mode == "uniform":
            return uniform_sizes(k, population)
        return prior_sizes(names, cfg.privacy.class_prior or {}, population)

    sigma_c = budget.class_count_sigma
    if sigma_c is None:
        raise BudgetError("privacy.class_sizes is 'dp' but the budget plans no class counts; build it with "
                          "make_budget for this labelled config")
    planned_grid = budget.grid if budget.noise == "discrete" else None
    if saved is not None:
        if not (_same(saved.sigma, sigma_c) and saved.noise == budget.noise and saved.grid == planned_grid):
            raise BudgetMismatchError(
                f"the class counts in {path} were drawn with {_noise_words(saved.sigma, saved.noise, saved.grid)}, "
                f"but this run's budget plans {_noise_words(sigma_c, budget.noise, planned_grid)} for them: the "
                "privacy settings (epsilon, sigma, delta, N, privacy.class_count_share or the noise) changed since. "
                "Restore them to resume, or start a new run with another --out."
            )
        with np.load(path, allow_pickle=False) as z:
            saved_k = int(z["num_classes"])
            noisy = np.asarray(z["noisy_counts"], dtype=np.float64) if "noisy_counts" in z.files else None
        if saved_k != k:
            raise RunFolderError(
                f"this run's class counts ({path}) are for {saved_k} classes, but the run now has {k}: the label "
                "set changed since they were drawn. Restore it to resume, or start a new run with another --out."
            )
        if noisy is None:  # not private: the counts were never stored; recompute them (same data: fingerprint)
            noisy = class_vote_counts(labels.index, weights, k) / (planned_grid or 1)
        logger.info("class sizes: reusing the class counts released earlier (%s)", path)
        return allocate_sizes(noisy, population)

    counts = class_vote_counts(labels.index, weights, k)  # PRIVATE: never stored nor logged
    how: dict[str, Any] = {"sigma": np.float64(sigma_c), "noise": np.str_(budget.noise),
                           "num_classes": np.int64(k), "iteration": np.int64(0)}
    if planned_grid is not None:
        how["grid"] = np.int64(planned_grid)
    path.parent.mkdir(parents=True, exist_ok=True)
    if budget.private:
        noisy, _ = release_histogram(counts, sigma_c, noise=noise, iteration=0, kind=budget.noise, grid=planned_grid)
        try:
            save_npz_once(path, noisy_counts=np.asarray(noisy, dtype=np.float64), **how)
        except FileExistsError:
            raise RunFolderError(
                f"{path} appeared while this process drew the class counts: another spti process is working in "
                "this run folder. Let it finish; the counts drawn here are discarded unused."
            ) from None
        logger.info("class sizes: released %d noisy class counts (sigma_c = %.4g)", k, sigma_c)
    else:
        noisy = counts / (planned_grid or 1)
        save_npz_once(path, **how)  # the record that exact counts were used (NOT private), never the counts
        logger.warning("class sizes: NOT private: the class sizes follow the exact private class counts")
    if on_release is not None:
        on_release()
    return allocate_sizes(noisy, population)


def _noise_words(sigma: float, kind: str, grid: int | None) -> str:
    return f"{kind} noise sigma = {sigma:.6g}" + (f" on the vote grid 1/{grid}" if grid not in (None, 1) else "")


def _same(a: float, b: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def write_ledger(run_dir: RunDir, cfg: Config, budget, *, captioner: dict[str, Any] | None = None,
                 voting: str = "text") -> dict:
    """privacy.json: what the run has spent so far and what it will spend.

    The spent part is composed from the histograms saved in ``checkpoints/`` (their own σ, noise kind and
    grid), never from ``budget`` alone. When a saved histogram disagrees with ``budget`` the ledger is
    still written — truthfully, from the saved σ — and :class:`BudgetMismatchError` is raised. Old
    checkpoints without σ are taken at the budget's σ, with a warning.
    ``captioner``: ``{"remote": bool, "where": url}`` when private images were captioned (text voting).

    Labelled runs: the class counts saved by :func:`class_sizes_stage` are one more mechanism (their own σ_c,
    count 1), composed with the histograms and checked against the budget's σ_c in the same way; the ledger
    also records that the label set is treated as public, and how the class sizes were chosen (from the DP
    counts, or a public prior)."""
    from spti.config import labelled
    from spti.privacy import Ledger
    from spti.privacy.class_counts import CLASS_COUNT_MECHANISM, LABEL_SET_ASSUMPTION

    saved = saved_histograms(run_dir.checkpoints, cfg.pe.iterations)
    unknown = [h.iteration for h in saved if h.sigma is None]
    if unknown:
        logger.warning(
            "privacy: the noisy histogram(s) of iteration(s) %s do not record their sigma (written by an older "
            "spti); the ledger assumes the planned sigma for them", ", ".join(map(str, unknown)),
        )
    planned_grid = budget.grid if budget.noise == "discrete" else None
    drawn = [(h.sigma if h.sigma is not None else budget.sigma, h.noise, h.grid if h.noise == "discrete" else None)
             for h in saved]
    mismatched = [h.iteration for h, (s, k, g) in zip(saved, drawn, strict=True)
                  if not (_same(s, budget.sigma) and k == budget.noise and g == planned_grid)]
    got = sorted({key for h, key in zip(saved, drawn, strict=True) if h.iteration in mismatched}, key=repr)
    problem = (
        f"the noisy histogram(s) of iteration(s) {', '.join(map(str, mismatched))} in {run_dir.checkpoints} were "
        f"drawn with {'; '.join(_noise_words(*key) for key in got)}, but this run's budget plans "
        f"{_noise_words(budget.sigma, budget.noise, planned_grid)}: the private data, its size N or the privacy "
        "settings changed since they were drawn."
    )
    if mismatched and budget.private and any(s == 0 for s, _, _ in got):
        raise BudgetMismatchError(problem + " Some were drawn without noise: start a new run with another --out.")
    counts = saved_class_counts(run_dir.checkpoints)
    counts_problem = None
    if counts is not None:
        planned_c = budget.class_count_sigma
        if planned_c is None:
            counts_problem = (
                f"this run released class counts ({_noise_words(counts.sigma, counts.noise, counts.grid)}) but its "
                "budget plans none: the labels or privacy.class_sizes changed since they were drawn."
            )
        elif not (_same(counts.sigma, planned_c) and counts.noise == budget.noise and counts.grid == planned_grid):
            counts_problem = (
                f"the class counts in {run_dir.checkpoints} were drawn with "
                f"{_noise_words(counts.sigma, counts.noise, counts.grid)}, but this run's budget plans "
                f"{_noise_words(planned_c, budget.noise, planned_grid)} for them: the privacy settings (or "
                "privacy.class_count_share) changed since they were drawn."
            )
        if counts_problem and budget.private and counts.sigma == 0:
            raise BudgetMismatchError(counts_problem + " They were drawn without noise: start a new run with "
                                      "another --out.")

    ledger = Ledger(budget=budget, secure_noise=cfg.privacy.insecure_noise_seed is None)
    groups: dict[tuple[float, str, int | None], int] = {}
    for key in drawn:  # one mechanism per distinct (σ, kind, grid), in order of first use
        groups[key] = groups.get(key, 0) + 1
    for (sigma, kind, grid), count in groups.items():
        discrete = kind == "discrete"
        ledger.add_mechanism(
            "pe_voting_histogram",
            kind="discrete_gaussian_histogram" if discrete else "gaussian_histogram",
            count=count,
            sigma=sigma,
            l2_sensitivity=1.0,
            unit=budget.unit,
            grid=grid if discrete else None,
            description=(
                f"one noisy nearest-neighbour vote histogram per PE iteration ({voting} voting); each "
                f"{budget.unit} contributes total vote weight <= 1 (add/remove-one adjacency)"
                + (f"; exact discrete Gaussian on the integer vote grid 1/{grid}" if discrete else "")
            ),
        )
    if counts is not None:
        discrete = counts.noise == "discrete"
        ledger.add_mechanism(
            CLASS_COUNT_MECHANISM,
            kind="discrete_gaussian_histogram" if discrete else "gaussian_histogram",
            count=1,
            sigma=counts.sigma,
            l2_sensitivity=1.0,
            unit=budget.unit,
            grid=counts.grid if discrete else None,
            description=(
                "one noisy count per class, released once (iteration 0 of the noise): the sum of the vote weights "
                f"of each class's private rows; each {budget.unit}'s rows share weight <= 1, so the count vector "
                "has L2 sensitivity 1 (add/remove-one adjacency) however its rows are spread over classes"
                + (f"; exact discrete Gaussian on the integer vote grid 1/{counts.grid}" if discrete else "")
            ),
        )
    if labelled(cfg):
        ledger.add_trust_assumption(LABEL_SET_ASSUMPTION)
        if cfg.privacy.class_sizes == "dp":
            ledger.add_processing(
                "class_sizes",
                "the population (and release) size of each class is allocated from the released class counts "
                "(clipped at 0, at least one per class, the rest in proportion by largest remainder): "
                "post-processing of DP output, no budget",
            )
        else:
            prior = "equal shares (uniform)" if cfg.privacy.class_sizes == "uniform" else \
                "the proportions given in privacy.class_prior"
            ledger.add_processing(
                "class_sizes",
                f"the population (and release) size of each class follows a public prior given by the user: {prior}; "
                "the private class sizes are not used (no budget)",
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
    from spti.stages.private import strict_preprocessing_step  # P2's wording of strict pre-processing

    strict = strict_preprocessing_step(cfg, captioned=captioner is not None)
    if strict is not None:
        ledger.add_processing(*strict)
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
    d["histograms_released"] = len(saved)
    d["histograms_planned"] = cfg.pe.iterations
    if labelled(cfg) and cfg.privacy.class_sizes == "dp" or counts is not None:
        d["class_counts_released"] = counts is not None
    atomic_write_json(run_dir.privacy_path, d)
    if mismatched or counts_problem:
        spent = d["spent"]["epsilon"] if d.get("spent") else "unknown"
        what = " ".join(x for x in (problem if mismatched else None, counts_problem) if x)
        raise BudgetMismatchError(
            f"{what} privacy.json now records what was actually spent (epsilon = {spent}). Restore the "
            "original input and settings to resume, or start a new run with another --out."
        )
    return d
