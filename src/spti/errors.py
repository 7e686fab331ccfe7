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


class DiskFullError(SptiError, OSError):
    """A write failed because the disk or the user's quota is full. Also an OSError (with ``errno`` and
    ``filename`` of the failed write), so code that handles I/O errors still sees one; its message says
    where space is missing and that the same command resumes once space is freed."""

    def __init__(self, message: str, *, errno: int | None = None, filename: str | None = None):
        super().__init__(message)
        self.errno = errno
        self.filename = filename

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no space left on device"
