"""Differential privacy for spti: accounting, noise and the budget ledger (numpy/scipy only).

* :mod:`~spti.privacy.accountant`: exact Gaussian-DP accounting of T noisy histograms (Dong, Roth & Su
  2022), the tight ε(δ) conversion (Balle & Wang 2018), and the checks of every budget parameter.
* :mod:`~spti.privacy.zcdp`: zero-concentrated DP and its tight conversion to (ε, δ) (Canonne, Kamath &
  Steinke 2020), for noise whose exact curve is not the Gaussian one.
* :mod:`~spti.privacy.budget`: :class:`PrivacyBudget`, the budget of one run, and what it says in words.
* :mod:`~spti.privacy.noise`: :class:`NoiseSource`, DP noise from OS entropy, never from the user's seed.
* :mod:`~spti.privacy.discrete`: the exact discrete Gaussian (Canonne, Kamath & Steinke 2020) on integer
  votes (``privacy.noise: discrete``): the exact σ and the integer vote grid; its sampler is
  :mod:`~spti.privacy.discrete_sampler`, its zCDP accounting next to the exact continuous one
  (:func:`compare_noise`) :mod:`~spti.privacy.discrete_accounting`.
* :mod:`~spti.privacy.class_counts`: labelled runs: the split of the budget between the noisy class counts
  and the histograms, and the allocation of the population to classes (DP counts or a public prior).
* :mod:`~spti.privacy.ledger`: :class:`Ledger`, the content of privacy.json.
"""

from __future__ import annotations

from spti.privacy.accountant import (
    UNITS,
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
from spti.privacy.budget import (
    DELTA_WARN,
    PrivacyBudget,
    dataset_size_statement,
    delta_warning,
    resolve_noise,
)
from spti.privacy.class_counts import (
    allocate_sizes,
    class_count_sigma_for_sigma,
    composed_epsilon,
    prior_sizes,
    split_for_epsilon,
    uniform_sizes,
)
from spti.privacy.discrete import (
    DEFAULT_USER_SCALE,
    NOISE_KINDS,
    DiscreteSigma,
    add_discrete_noise,
    exact_sigma,
    grid_weights,
    validate_scale,
)
from spti.privacy.discrete_accounting import (
    NoiseComparison,
    compare_noise,
    epsilon_discrete,
    rho_discrete,
    sigma_for_epsilon_discrete,
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
from spti.privacy.zcdp import delta_for_rho, epsilon_for_rho, rho_for_epsilon, validate_rho

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
    "allocate_sizes",
    "class_count_sigma_for_sigma",
    "compare_noise",
    "composed_epsilon",
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
    "prior_sizes",
    "resolve_noise",
    "rho_discrete",
    "rho_for_epsilon",
    "sigma_for_epsilon_discrete",
    "sigma_from_epsilon",
    "split_for_epsilon",
    "uniform_sizes",
    "validate_delta",
    "validate_epsilon",
    "validate_iterations",
    "validate_num_private",
    "validate_rho",
    "validate_scale",
    "validate_sigma",
    "validate_unit",
]
