"""Candidate deduplication before voting (issue 14).

Why: with ``sample`` / ``systematic`` selection a popular parent is selected several times, and with
``keep_selected`` each copy becomes a candidate again; the LLM also repeats itself on short captions. Exact
copies are one point in the voting space: nearest-neighbour ties go to the first copy, so every other copy
gets no vote at all, only noise of scale σ, and that noise mass is then selected like signal. Removing the
copies before the histogram is drawn costs nothing (the candidates are synthetic, public text) and leaves
more of the selection to candidates the private data actually voted for.

The engine calls :func:`dedup_candidate_rows` after it has built the candidate rows of an iteration and
before it writes ``candidates.jsonl`` (the histogram's bins are the rows that remain).

Different texts can also land on the *same point* of the voting space: with the retrieval renderer two
captions often retrieve the same pool image (on the quality benchmark 40-45 % of the image-voting candidates
are such copies at t >= 2). :func:`feature_copies` finds them from the candidates' features (public: they
are computed from synthetic text only); their noisy counts are pure noise (nearest-neighbour ties go to the
lowest index, :func:`spti.pe.histogram.nearest_candidates`) and :func:`drop_copy_counts` zeroes them before
selection, which is post-processing of the released histogram.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spti.log import logger

__all__ = ["dedup_candidate_rows", "dedup_enabled", "drop_copy_counts", "feature_copies"]


def dedup_enabled(cfg: Any) -> bool:
    """``pe.dedup`` of a :class:`~spti.config.Config` or of a :class:`~spti.config.PEConfig` (True when the
    field is missing, e.g. an object built before the field existed)."""
    pe = getattr(cfg, "pe", cfg)
    return bool(getattr(pe, "dedup", True))


def dedup_candidate_rows(rows: list[dict], cfg: Any) -> list[dict]:
    """The candidate rows without exact duplicates of (label, text), the first occurrence kept, order kept.

    ``rows`` are the engine's candidate rows (``text``, ``parent``, ``kind``, optional ``label``); two rows
    of different labels are never duplicates (each class votes only among its own candidates). Texts are
    compared exactly: near-duplicates are left to the vote (they may retrieve or render differently).
    Returns ``rows`` itself when ``pe.dedup`` is off or nothing is repeated.
    """
    if not dedup_enabled(cfg):
        return rows
    seen: set[tuple[Any, str]] = set()
    kept: list[dict] = []
    for r in rows:
        key = (r.get("label"), r["text"])
        if key in seen:
            continue
        seen.add(key)
        kept.append(r)
    if len(kept) == len(rows):
        return rows
    # candidates are synthetic text, so their count is not private; the log says how much noise mass went
    logger.info("dedup: %d of %d candidates were exact copies of another; voting on %d",
                len(rows) - len(kept), len(rows), len(kept))
    return kept


def feature_copies(features: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the rows that are exact copies of an earlier row (same feature vector, and the same
    label when ``labels`` is given). The first row of each group is not a copy."""
    f = np.ascontiguousarray(np.asarray(features))
    if f.ndim != 2 or f.shape[0] == 0:
        return np.zeros(f.shape[0] if f.ndim else 0, dtype=bool)
    rows = f.view(np.dtype((np.void, f.dtype.itemsize * f.shape[1]))).ravel()
    if labels is None:
        _, first = np.unique(rows, return_index=True)
        mask = np.ones(f.shape[0], dtype=bool)
        mask[first] = False
        return mask
    seen: set[tuple[int, bytes]] = set()
    mask = np.zeros(f.shape[0], dtype=bool)
    for i, (lab, row) in enumerate(zip(np.asarray(labels).tolist(), rows)):
        key = (int(lab), bytes(row))
        mask[i] = key in seen
        seen.add(key)
    return mask


def drop_copy_counts(noisy_counts: np.ndarray, features: np.ndarray, cfg: Any = None,
                     labels: np.ndarray | None = None) -> np.ndarray:
    """``noisy_counts`` with the counts of :func:`feature_copies` set to 0 (a copy never gets a vote, its
    count is noise); unchanged when ``pe.dedup`` is off. Post-processing of the noisy histogram only."""
    out = np.asarray(noisy_counts, dtype=np.float64).copy()
    if cfg is not None and not dedup_enabled(cfg):
        return out
    mask = feature_copies(features, labels)
    out[mask] = 0.0
    return out
