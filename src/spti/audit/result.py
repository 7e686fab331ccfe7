"""What an audit found (:class:`AuditResult`): the full record, for ``private/audit.json``, and the part
that is safe to publish (:meth:`AuditResult.summary`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AUDIT_SCHEMA", "AUDIT_SCHEMA_VERSION", "AuditResult"]

AUDIT_SCHEMA = "spti.audit"
AUDIT_SCHEMA_VERSION = 1


@dataclass
class AuditResult:
    """What an audit found. ``epsilon_lower_bound`` holds with confidence ``1 − alpha``; compare it with
    ``claimed_epsilon`` (the per-histogram ε); ``violation`` is True when the bound exceeds the claim."""

    epsilon_lower_bound: float
    epsilon_estimate: float
    claimed_epsilon: float | None
    delta: float
    alpha: float
    trials: int
    selection_trials: int
    evaluation_trials: int
    fpr: float
    fnr: float
    fpr_upper: float
    fnr_upper: float
    test: dict[str, Any]
    canary: dict[str, Any]
    sensitivity: dict[str, Any]
    mechanism: dict[str, Any]
    seconds: float
    claimed_epsilon_run: float | None = None
    iterations: int | None = None
    candidates: dict[str, Any] = field(default_factory=dict)
    private: dict[str, Any] = field(default_factory=dict)  # canary bin, base count: derived from private data

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha

    @property
    def violation(self) -> bool:
        """True when the data prove (at confidence 1 − α) that the release is less private than claimed."""
        return self.claimed_epsilon is not None and self.epsilon_lower_bound > self.claimed_epsilon

    def describe(self) -> str:
        """One sentence for the CLI, the log and the report."""
        claim = "no claim" if self.claimed_epsilon is None else (
            "claimed epsilon = inf (not private)" if math.isinf(self.claimed_epsilon)
            else f"claimed epsilon per histogram = {self.claimed_epsilon:.4g}")
        verdict = ("VIOLATION: the measured lower bound exceeds the claim" if self.violation
                   else "consistent with the claim (an audit can only find violations, not prove privacy)")
        sens = "" if self.sensitivity.get("ok", True) else (
            f"; SENSITIVITY CHECK FAILED: one {self.canary.get('unit', 'record')} changed the clean histogram by "
            f"L2 = {self.sensitivity.get('l2', float('nan')):.4g} > {self.sensitivity.get('bound', 1.0):g}")
        return (f"empirical epsilon lower bound = {self.epsilon_lower_bound:.3f} at {100 * self.confidence:.0f}% "
                f"confidence from {self.trials} trials per dataset (delta = {self.delta:.3g}); {claim}; "
                f"{verdict}{sens}")

    def summary(self) -> dict[str, Any]:
        """What is safe to publish (the report): numbers about the mechanism, nothing located in the data."""
        return {
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "epsilon_estimate": self.epsilon_estimate,
            "claimed_epsilon": self.claimed_epsilon,
            "claimed_epsilon_run": self.claimed_epsilon_run,
            "iterations": self.iterations,
            "delta": self.delta,
            "confidence": self.confidence,
            "violation": self.violation,
            "trials": self.trials,
            "evaluation_trials": self.evaluation_trials,
            "fpr": self.fpr,
            "fnr": self.fnr,
            "fpr_upper": self.fpr_upper,
            "fnr_upper": self.fnr_upper,
            "test": {k: v for k, v in self.test.items() if k != "tau"},
            "canary": {k: v for k, v in self.canary.items() if k != "target_bin"},
            "sensitivity": dict(self.sensitivity),
            "mechanism": dict(self.mechanism),
            "candidates": {k: v for k, v in self.candidates.items()},
            "seconds": self.seconds,
            "describe": self.describe(),
            "method": ("black-box audit (Jagielski, Ullman & Oprea 2020; Nasr et al. 2021): threshold test on the "
                       "canary bin's released count, Clopper-Pearson bounds on FPR/FNR, threshold chosen on a "
                       "separate part of the trials"),
        }

    def to_dict(self) -> dict[str, Any]:
        """The full record (with the private details), as written to ``private/audit.json``; JSON-safe
        (∞ is written as the string "inf")."""
        return _json_safe({
            "schema": AUDIT_SCHEMA, "schema_version": AUDIT_SCHEMA_VERSION, "summary": self.summary(),
            "private": {**self.private, "target_bin": self.canary.get("target_bin"), "tau": self.test.get("tau")},
        })


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else "nan")
    return obj
