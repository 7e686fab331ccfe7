"""Differential privacy for spti: accounting, noise and the budget ledger (numpy/scipy only).

* :mod:`~spti.privacy.accountant`: exact Gaussian-DP accounting of T noisy histograms (Dong, Roth & Su
  2022) and the tight ε(δ) conversion (Balle & Wang 2018); :class:`PrivacyBudget`.
* :mod:`~spti.privacy.noise`: :class:`NoiseSource`, DP noise from OS entropy, never from the user's seed.
* :mod:`~spti.privacy.ledger`: :class:`Ledger`, the content of privacy.json.
"""

from __future__ import annotations

from spti.privacy.accountant import (
    UNITS,
    PrivacyBudget,
    default_delta,
    delta_for_epsilon,
    epsilon_for_delta,
    epsilon_from_sigma,
    log_delta_for_epsilon,
    mu_for_epsilon,
    sigma_from_epsilon,
    validate_delta,
    validate_epsilon,
    validate_iterations,
    validate_num_private,
    validate_sigma,
    validate_unit,
)
from spti.privacy.ledger import (
    POSTPROCESSING,
    PREPROCESSING,
    Ledger,
    Mechanism,
    PrivacyTotal,
    ProcessingStep,
)
from spti.privacy.noise import NoiseSource

__all__ = [
    "POSTPROCESSING",
    "PREPROCESSING",
    "UNITS",
    "Ledger",
    "Mechanism",
    "NoiseSource",
    "PrivacyBudget",
    "PrivacyTotal",
    "ProcessingStep",
    "default_delta",
    "delta_for_epsilon",
    "epsilon_for_delta",
    "epsilon_from_sigma",
    "log_delta_for_epsilon",
    "mu_for_epsilon",
    "sigma_from_epsilon",
    "validate_delta",
    "validate_epsilon",
    "validate_iterations",
    "validate_num_private",
    "validate_sigma",
    "validate_unit",
]
