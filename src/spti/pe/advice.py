"""Advice on configurations that are measured to be weak (benchmarks/bench_quality.py, docs/QUALITY.md).

Why warnings and not errors: a weak configuration still gives a valid DP release; it only follows the
private data less well than another would. The user should know before the (long) evolve stage.

Two checks:

- :func:`warn_if_weak_voting`: text voting with a captioner whose captions keep little of the image.
- :func:`warn_if_signal_drowns`: the expected private votes per candidate (N / candidates per histogram)
  against the noise σ every candidate gets. A candidate with no vote still receives noise; its positive part
  has mean ≈ 0.4 σ, so with C candidates about 0.4·C·σ of noise mass competes with the N real votes, and once
  σ exceeds N / C that is over a quarter of what selection draws from: the next population follows the noise.
  Fewer candidates (population × (variations + keep_selected)) or fewer iterations (σ grows ≈ √T) help.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from spti.log import logger

#: Captioners whose captions carry too little of the image for text voting to follow the private data:
#: the offline EfficientNet-Lite0 tag captioner writes three ImageNet labels ("a photo of a muzzle, ski
#: and clog"); on the Fashion-MNIST benchmark the votes of its captions recover the private class mix far
#: less well than image features do (docs/QUALITY.md).
WEAK_TEXT_VOTING_CAPTIONERS = ("efficientnet-lite0",)

#: Mean of max(Z, 0) for Z ~ N(0, 1): the noise mass a candidate without votes brings to selection, in σ.
_POSITIVE_NOISE_MEAN = 1.0 / math.sqrt(2.0 * math.pi)

def warn_if_weak_voting(cfg, num_units: int | None = None) -> bool:
    """Log a warning when ``cfg`` votes with text through a captioner known to be weak for it. Returns whether
    it warned.

    Why no "once per process": every run writes its own log (``run.log``), and the advice belongs in each of
    them; a process-wide memory made a run's log depend on which runs came before it in the same process.

    With ``num_units`` (N: records or users) it also runs :func:`warn_if_signal_drowns`, so the one call at
    the start of ``spti run`` gives both pieces of advice."""
    if num_units is not None:
        warn_if_signal_drowns(cfg, num_units)
    voting = cfg.pe.voting
    captioner = str((cfg.captioner or {}).get("backend", ""))
    if voting != "text" or captioner not in WEAK_TEXT_VOTING_CAPTIONERS:
        return False
    logger.warning(
        "pe.voting is 'text' with the %s captioner: its tag captions keep little of each image, and text "
        "voting with them follows the private data much less well than image voting on the same data "
        "(docs/QUALITY.md). Prefer --voting image (cheap with the retrieval renderer), or a real captioner "
        "(captioner.backend: hf).",
        captioner,
    )
    return True


# ---------------------------------------------------------------------------------------------- votes vs σ
def candidates_per_iteration(pe) -> int:
    """Candidates in one histogram at most: each member's variations, plus the member itself when
    ``keep_selected`` (dedup can only remove some)."""
    return int(pe.population) * (int(pe.variations) + int(bool(pe.keep_selected)))


def votes_per_candidate(num_units: int, pe) -> float:
    """Expected private votes per candidate, N / candidates (each record or user has total vote weight 1).
    In a labelled run each class votes among its own candidates; with class sizes that follow the class
    counts the ratio is the same in every class."""
    return float(num_units) / max(candidates_per_iteration(pe), 1)


def public_units(cfg, num_units: int) -> int:
    """The N the advice uses: the public bound ``privacy.num_private_bound`` when one is given (then the
    exact N must appear nowhere, not even rounded in a warning), else N itself."""
    bound = getattr(cfg.privacy, "num_private_bound", None)
    return int(bound) if bound is not None else int(num_units)


def sigma_for(cfg, num_units: int, iterations: int | None = None) -> float:
    """σ of the run's budget for N = ``num_units`` (and, if given, another number of iterations), without
    the budget's own log lines (the run logs them once, where it spends the budget)."""
    import dataclasses

    from spti.stages.budget import make_budget

    c = cfg if iterations is None else dataclasses.replace(cfg, pe=dataclasses.replace(cfg.pe, iterations=int(iterations)))
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return float(make_budget(c, max(int(num_units), 2)).sigma)
    finally:
        logger.setLevel(level)


def signal_plan(cfg, num_units: int, sigma: float, sigma_of: Callable[[int], float] | None = None) -> dict[str, Any]:
    """The plan's votes-vs-noise section: candidates per histogram, expected votes per candidate, σ, their
    ratio, and — when σ exceeds the votes per candidate — a warning with what would bring it back (the
    largest population that keeps ≥ σ votes per candidate at this T, and σ at fewer iterations via
    ``sigma_of(T)``)."""
    pe = cfg.pe
    num_units = public_units(cfg, num_units)
    cands = candidates_per_iteration(pe)
    votes = votes_per_candidate(num_units, pe)
    out: dict[str, Any] = {
        "candidates_per_iteration": cands,
        "votes_per_candidate": round(votes, 3),
        "sigma": round(float(sigma), 3),
        "votes_per_sigma": (round(votes / sigma, 3) if sigma > 0 else None),
    }
    if sigma <= 0 or votes >= sigma:
        return out
    per_member = int(pe.variations) + int(bool(pe.keep_selected))
    out["warning"] = drowning_message(votes, sigma)
    fixes: list[str] = []
    p_max = int(num_units // (sigma * per_member))
    if p_max >= 1:
        fixes.append(f"population <= {p_max} at {pe.iterations} iterations")
    if sigma_of is not None:
        for t in range(int(pe.iterations) - 1, 0, -1):
            s_t = sigma_of(t)
            if votes >= s_t:
                fixes.append(f"{t} iteration{'s' if t > 1 else ''} (sigma {s_t:.3g}) at this population")
                break
            p_t = int(num_units // (s_t * per_member))
            if t == 1 and p_t >= 1:
                fixes.append(f"1 iteration (sigma {s_t:.3g}) with population <= {p_t}")
    out["fixes"] = fixes
    return out


def drowning_message(votes: float, sigma: float) -> str:
    """The warning text (rounded numbers only: no exact private count)."""
    share = _POSITIVE_NOISE_MEAN / (votes / sigma + _POSITIVE_NOISE_MEAN)
    return (
        f"about {votes:.2g} private votes per candidate against noise sigma {sigma:.2g} per candidate: the "
        f"signal drowns (candidates without a vote bring roughly {100 * share:.0f}% of what selection draws "
        "from). Use fewer candidates (pe.population x (pe.variations + keep_selected)) or fewer iterations "
        "(pe.iterations), or raise pe.threshold_sigmas (docs/QUALITY.md)"
    )


def warn_if_signal_drowns(cfg, num_units: int, sigma: float | None = None) -> bool:
    """Log a warning when σ exceeds the expected votes per candidate.
    ``sigma`` None: computed from ``cfg``'s budget for N = ``num_units``. Returns whether it warned."""
    if getattr(cfg.privacy, "not_private", False):
        return False
    if sigma is None:
        try:
            sigma = sigma_for(cfg, num_units)
        except Exception:  # noqa: BLE001 - advice must never stop a run; the budget stage reports the error
            return False
    votes = votes_per_candidate(public_units(cfg, num_units), cfg.pe)
    if sigma <= 0 or votes >= sigma:
        return False
    logger.warning("pe: %s.", drowning_message(votes, float(sigma)))
    return True
