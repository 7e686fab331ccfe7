"""Known-good settings of a few text-to-image model families for the ``diffusers`` renderer (from the
model cards): steps, guidance, size, the dtype to use on a GPU and the hub weight variant.

Why a table of its own: it is data that grows with every model family, while the renderer's code does not
change; a model outside the table runs with its pipeline's own defaults, and every explicit renderer
option overrides the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "stabilityai/sdxl-turbo"


@dataclass(frozen=True)
class Family:
    """Known-good settings for one model family (from the model cards).

    ``patterns`` are matched as substrings of the lower-cased last component of the model id or path, in
    table order (so "...-large-turbo" must come before "...-large"). ``gpu_dtype`` is what ``dtype: auto``
    picks on an accelerator; ``variant`` is the hub weight variant fetched with float16 (smaller download).
    """

    name: str
    patterns: tuple[str, ...]
    num_inference_steps: int
    guidance_scale: float
    height: int
    width: int
    gpu_dtype: str = "float16"
    variant: str | None = None
    call_kwargs: Mapping[str, Any] = field(default_factory=dict)


FAMILIES: tuple[Family, ...] = (
    Family("sdxl-turbo", ("sdxl-turbo",), 4, 0.0, 512, 512, "float16", "fp16"),
    Family("sd-turbo", ("sd-turbo",), 4, 0.0, 512, 512, "float16", "fp16"),
    Family("sd3.5-large-turbo", ("stable-diffusion-3.5-large-turbo",), 4, 0.0, 1024, 1024, "bfloat16"),
    Family("sd3.5-large", ("stable-diffusion-3.5-large",), 28, 3.5, 1024, 1024, "bfloat16"),
    Family("sd3.5-medium", ("stable-diffusion-3.5-medium",), 40, 4.5, 1024, 1024, "bfloat16"),
    Family(
        "flux.1-schnell",
        ("flux.1-schnell",),
        4,
        0.0,
        1024,
        1024,
        "bfloat16",
        None,
        {"max_sequence_length": 256},
    ),
    Family(
        "flux.1-dev", ("flux.1-dev",), 50, 3.5, 1024, 1024, "bfloat16", None, {"max_sequence_length": 512}
    ),
    Family("sdxl-base", ("stable-diffusion-xl-base",), 30, 5.0, 1024, 1024, "float16", "fp16"),
)


def match_family(model: str) -> Family | None:
    """The first family whose pattern occurs in the model's name (last path component), or None."""
    name = Path(str(model).rstrip("/\\")).name.lower()
    for fam in FAMILIES:
        if any(p in name for p in fam.patterns):
            return fam
    return None
