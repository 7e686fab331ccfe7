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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spti.config import Config
from spti.data.io import atomic_write_json, read_json
from spti.data.run import RunDir
from spti.errors import BudgetError, RunFolderError
from spti.log import logger

__all__ = [
    "INPUT_FINGERPRINT_FILE",
    "BudgetMismatchError",
    "PrivateInputChangedError",
    "SavedHistogram",
    "bind_private_input",
    "make_budget",
    "record_private_input",
    "make_noise",
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
    """
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
    if pr.not_private:
        return PrivacyBudget.not_private(T, n, unit=pr.unit, num_private_is_bound=is_bound)
    kw: dict[str, Any] = dict(delta=pr.delta, unit=pr.unit, noise=pr.noise, grid=pr.grid, num_private_is_bound=is_bound)
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
    ``captioner``: ``{"remote": bool, "where": url}`` when private images were captioned (text voting)."""
    from spti.privacy import Ledger

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
    atomic_write_json(run_dir.privacy_path, d)
    if mismatched:
        spent = d["spent"]["epsilon"] if d.get("spent") else "unknown"
        raise BudgetMismatchError(
            f"{problem} privacy.json now records what was actually spent (epsilon = {spent}). Restore the "
            "original input and settings to resume, or start a new run with another --out."
        )
    return d
