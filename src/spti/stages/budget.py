"""Privacy plumbing of a run: the budget, the noise source and the ledger (``privacy.json``).

Why a stage module of its own: ``spti run``, ``spti evolve`` and ``--dry-run`` all derive the same budget
from the config, and the ledger is rewritten after every released histogram, so a run killed at any point
says exactly what it has spent.
"""

from __future__ import annotations

from typing import Any

from spti.config import Config
from spti.data.io import atomic_write_json
from spti.data.run import RunDir


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
    """The DP noise source: cryptographically secure unless the config names an insecure test seed."""
    from spti.privacy import NoiseSource

    seed = cfg.privacy.insecure_noise_seed
    return NoiseSource(insecure_seed=seed) if seed is not None else NoiseSource()


def write_ledger(run_dir: RunDir, cfg: Config, budget, *, released: int, captioner: dict[str, Any] | None = None,
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
    atomic_write_json(run_dir.privacy_path, d)
    return d
