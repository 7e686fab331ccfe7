"""Evaluation of a synthetic image set against the private one: Fréchet distances (FID and variants),
precision/recall/density/coverage, CLIP score and a memorization audit; and, for labelled sets, the
downstream accuracy of classifiers trained on the synthetic images and tested on real labelled ones
(:mod:`spti.metrics.accuracy`, sets read by :mod:`spti.metrics.labelled`).

Everything computed here against private data is NOT differentially private; :func:`evaluate` marks each
such number in its output (``"differentially_private": false``). Only numpy/scipy/PIL are imported here;
models load when :func:`evaluate` needs them.
"""

from __future__ import annotations

from spti.metrics.accuracy import ACCURACY_METRICS
from spti.metrics.entries import METRICS, NOT_DP
from spti.metrics.evaluate import evaluate
from spti.metrics.frechet import feature_stats, fid_from_features, frechet_distance
from spti.metrics.labelled import LabelledImages, read_labelled
from spti.metrics.memorization import MemorizationResult, memorization_audit
from spti.metrics.prdc import prdc

__all__ = [
    "ACCURACY_METRICS",
    "METRICS",
    "NOT_DP",
    "LabelledImages",
    "MemorizationResult",
    "evaluate",
    "feature_stats",
    "fid_from_features",
    "frechet_distance",
    "memorization_audit",
    "prdc",
    "read_labelled",
]
