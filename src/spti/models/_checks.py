"""Checks of backend options and inputs that several backends share, with one message per kind of mistake.

Messages name the option and the offending value (a config value the user wrote), never an input's
content: inputs may be private images or captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from spti.errors import ConfigError, InputError


def positive_int(value: Any, name: str, who: str = "") -> int:
    """``value`` if it is an integer >= 1 (``True`` is not), else :class:`ConfigError` naming the option;
    ``who`` (e.g. ``"renderer diffusers"``) prefixes the message."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        prefix = f"{who}: " if who else ""
        raise ConfigError(f"{prefix}{name} must be a positive integer, got {value!r}")
    return value


def check_batch_size(batch_size: Any, who: str = "") -> int:
    """The ``batch_size`` option every local backend takes (see the role base classes' ``batch_size``)."""
    return positive_int(batch_size, "batch_size", who)


def check_images(images: Sequence[Image.Image], what: str) -> list[Image.Image]:
    """Check that ``images`` are PIL images (the roles' contract) and return them as a list.

    Conversion to RGB happens per batch later, so a long list of private images is never copied whole.
    The error names only the offending type and index, never pixel data."""
    images = list(images)
    for i, im in enumerate(images):
        if not isinstance(im, Image.Image):
            raise InputError(f"{what}: item {i} is a {type(im).__name__}, expected a PIL.Image.Image")
    return images
