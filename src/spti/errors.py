"""Exceptions that spti raises on purpose.

Every message is written for the user and must never contain private data (a private caption, a private
file's content or its embedding). File *paths* given by the user may appear: the user already has them.
"""

from __future__ import annotations


class SptiError(Exception):
    """Base class: a problem spti detected and can explain."""


class ConfigError(SptiError, ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


class BudgetError(ConfigError):
    """A privacy budget parameter (epsilon, delta, sigma, iterations, N) is invalid."""


class InputError(SptiError, ValueError):
    """Input data is missing, empty or malformed."""


class BackendError(SptiError, RuntimeError):
    """A model backend failed (could not load, a server kept failing, garbage output beyond retries)."""


class RunFolderError(SptiError):
    """The run folder is in a state that would make spti overwrite or mix results."""
