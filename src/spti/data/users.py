"""User ids: one normalisation for every input that names the owner of a private record.

Why one function: user-level DP weights each user's rows to sum to 1. If the same person appears as
" alice" in one row and "alice" in another, or as 12 in one file and 12.0 in the next (how pandas and
many CSV tools store an integer column that has gaps), they become two users, each with weight 1: that
person then moves the votes by 2, twice the sensitivity the accountant assumes. Image listings
(:mod:`spti.data.listing`) and private text files (:mod:`spti.data.texts`) both go through
:func:`clean_user_id`. A low module: imports nothing from spti.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["MISSING_USER_STRINGS", "clean_user_id", "id_text"]

#: Strings that mean "no value" when a table is written to text (pandas writes NaN as "nan" / "NaN" with
#: some options, and pd.NA as "<NA>"); compared case-insensitively after stripping.
MISSING_USER_STRINGS = frozenset({"nan", "<na>", "null", "none", "n/a"})


def clean_user_id(value: Any) -> str | None:
    """A user id as a string, or None when it is missing.

    Missing: None, NaN (float, numpy, Decimal), an empty or blank string, "nan" / "NaN" / "<NA>" / "null" / "None" / "n/a" (any case).
    Integral numbers, including integral floats, are written without a fraction (12, 12.0, np.int64(12)
    and " 12 " are one user, "12"); other values are ``str(value)`` with surrounding whitespace removed
    (" alice" and "alice" are one user). Booleans stay "True" / "False".
    """
    s = id_text(value)
    if not s or s.lower() in MISSING_USER_STRINGS:
        return None
    return s


def id_text(value: Any) -> str | None:
    """The one normalisation of a table cell that names something (a user, a class): None for a missing
    value (None, NaN of any kind, pandas' NA); integral numbers without a fraction (12, 12.0, np.int64(12),
    " 12 " -> "12"); anything else ``str(value)`` stripped (possibly ""). Shared by :func:`clean_user_id`
    and :func:`spti.data.labels.clean_label`, which differ only in which strings they treat as missing."""
    if value is None:
        return None
    if not isinstance(value, bool) and isinstance(value, numbers.Integral):
        return str(int(value))
    if not isinstance(value, bool) and isinstance(value, numbers.Real):
        x = float(value)
        if math.isnan(x):
            return None
        if x.is_integer():
            return str(int(x))
    else:
        try:
            if value != value:  # NaN-like objects (e.g. decimal.Decimal("NaN")) are not equal to themselves
                return None
        except (TypeError, ValueError):  # e.g. pandas.NA refuses a truth value
            return None
    return str(value).strip()
