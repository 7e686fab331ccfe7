"""Differential privacy for spti: accounting, noise and the budget ledger (numpy/scipy only).

* :mod:`~spti.privacy.accountant`: exact Gaussian-DP accounting of T noisy histograms (Dong, Roth & Su
  2022) and the tight ε(δ) conversion (Balle & Wang 2018); :class:`PrivacyBudget`.
* :mod:`~spti.privacy.noise`: :class:`NoiseSource`, DP noise from OS entropy, never from the user's seed.
* :mod:`~spti.privacy.discrete`: the exact discrete Gaussian (Canonne, Kamath & Steinke 2020) on integer
  votes (``privacy.noise: discrete``), the integer vote grid, and its zCDP accounting next to the exact
  continuous one (:func:`compare_noise`).
* :mod:`~spti.privacy.ledger`: :class:`Ledger`, the content of privacy.json.
"""

from __future__ import annotations

from spti.privacy.accountant import (
    DELTA_WARN,
    UNITS,
    PrivacyBudget,
    dataset_size_statement,
    default_delta,
    delta_for_epsilon,
    delta_for_rho,
    delta_warning,
    epsilon_for_delta,
    epsilon_for_rho,
    epsilon_from_sigma,
    log_delta_for_epsilon,
    mu_for_epsilon,
    resolve_noise,
    rho_for_epsilon,
    sigma_from_epsilon,
    validate_delta,
    validate_epsilon,
    validate_iterations,
    validate_num_private,
    validate_rho,
    validate_sigma,
    validate_unit,
)
from spti.privacy.discrete import (
    DEFAULT_USER_SCALE,
    NOISE_KINDS,
    DiscreteSigma,
    NoiseComparison,
    add_discrete_noise,
    compare_noise,
    epsilon_discrete,
    exact_sigma,
    grid_weights,
    rho_discrete,
    sigma_for_epsilon_discrete,
    validate_scale,
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
    "DEFAULT_USER_SCALE",
    "DELTA_WARN",
    "NOISE_KINDS",
    "POSTPROCESSING",
    "PREPROCESSING",
    "UNITS",
    "DiscreteSigma",
    "Ledger",
    "Mechanism",
    "NoiseComparison",
    "NoiseSource",
    "PrivacyBudget",
    "PrivacyTotal",
    "ProcessingStep",
    "add_discrete_noise",
    "compare_noise",
    "dataset_size_statement",
    "default_delta",
    "delta_for_epsilon",
    "delta_for_rho",
    "delta_warning",
    "epsilon_discrete",
    "epsilon_for_delta",
    "epsilon_for_rho",
    "epsilon_from_sigma",
    "exact_sigma",
    "grid_weights",
    "log_delta_for_epsilon",
    "mu_for_epsilon",
    "resolve_noise",
    "rho_discrete",
    "rho_for_epsilon",
    "sigma_for_epsilon_discrete",
    "sigma_from_epsilon",
    "validate_delta",
    "validate_epsilon",
    "validate_iterations",
    "validate_num_private",
    "validate_rho",
    "validate_scale",
    "validate_sigma",
    "validate_unit",
]
