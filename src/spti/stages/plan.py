"""The dry-run plan (``--dry-run``): what a run would do, before it reads any private image.

Stages, models (secrets redacted), N and the privacy budget for the asked ε, how many model calls each
stage makes at most, and the votes-vs-noise check (``signal``: expected private votes per candidate next to
σ, with a warning when σ is larger, :func:`spti.pe.advice.signal_plan`): the one setting that decides
whether the evolution can follow the private data at all, known before anything runs. A library function returning a dict; ``spti run|evolve --dry-run`` prints it as JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spti.config import Config
from spti.errors import SptiError

__all__ = ["count_private_images", "dry_run_plan"]


def dry_run_plan(cfg: Config, command: str) -> dict[str, Any]:
    """``--dry-run``: stages, models, N, sigma for the asked epsilon, model calls per stage (``command`` is
    "run" or "evolve"). Runs the preflight checks first, so a plan is only shown for a run that would start."""
    from spti.preflight import preflight
    from spti.redact import redact_secrets
    from spti.stages.budget import make_budget

    preflight(cfg, command)  # validates, then resolves every backend the run would build (before reading data)
    pe = cfg.pe
    if command == "evolve":
        from spti.data.texts import read_texts

        t = read_texts(cfg.data.private, text_column=cfg.data.text_column, user_column=cfg.data.user_column)
        n_rows, n = len(t.texts), (t.num_units if cfg.privacy.unit == "user" else len(t.texts))
    else:
        n_rows = n = count_private_images(Path(cfg.data.private))
    b = make_budget(cfg, max(n, 2))
    N, k, T, L = pe.population, pe.variations, pe.iterations, pe.lookahead
    new_per_iter = N * k
    llm_calls = N + T * new_per_iter + (T * N * (k + int(pe.keep_selected)) * L if (L and pe.voting == "text") else 0)
    plan: dict[str, Any] = {
        "stages": (["evolve"] if command == "evolve" else ["ingest", "caption" if pe.voting == "text" else "embed private images", "evolve", "render", "report"]),
        "private": {"rows": n_rows, f"{cfg.privacy.unit}s (N)": n},
        "privacy": b.to_dict(),
        "models": redact_secrets(
            {"llm": cfg.llm, "text_embedder": cfg.text_embedder} if command == "evolve" else
            {"captioner": cfg.captioner, "llm": cfg.llm, "text_embedder": cfg.text_embedder,
             "image_embedder": cfg.image_embedder, "renderer": cfg.renderer, "release_renderer": cfg.release_renderer}),
        "calls": {"llm": llm_calls},
        "evaluate": cfg.evaluate.to_dict() if hasattr(cfg.evaluate, "to_dict") else vars(cfg.evaluate),
        "signal": _signal(cfg, n, b.sigma),
    }
    if command != "evolve":
        R = max(1, L)
        if pe.voting == "text":
            plan["calls"]["captioner"] = n_rows
            plan["calls"]["renderer (release)"] = N * cfg.render.images_per_caption
        else:
            plan["calls"]["image_embedder (private)"] = n_rows
            plan["calls"]["renderer (loop, at most)"] = N * R + T * new_per_iter * R
            plan["calls"]["renderer (release)"] = 0 if cfg.release_renderer is None and cfg.render.images_per_caption <= R else N * cfg.render.images_per_caption
    plan["calls"]["text/image embeddings of candidates (at most)"] = N + T * new_per_iter * max(1, L)
    return plan


def _signal(cfg: Config, n: int, sigma: float) -> dict[str, Any]:
    """Votes per candidate vs σ (:func:`spti.pe.advice.signal_plan`); the warning is also logged."""
    from spti.pe.advice import sigma_for, signal_plan, warn_if_signal_drowns

    signal = signal_plan(cfg, n, sigma, sigma_of=lambda t: sigma_for(cfg, n, t))
    if "warning" in signal:
        warn_if_signal_drowns(cfg, n, sigma)
    return signal


def count_private_images(p: Path) -> int:
    """``--dry-run``'s N: the image files of a folder (listed by the ingestion's own rules), or the rows of a
    listing file (less its header)."""
    from spti.data.listing import list_images

    if not p.exists():
        raise SptiError(f"private data not found: {p}")
    if p.is_file():
        from spti.data.io import iter_text_lines

        return sum(1 for _ in iter_text_lines(p)) - 1  # InputError naming a line that is not UTF-8
    return len(list_images(p))
