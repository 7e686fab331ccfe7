"""Strict mode of the backends that turn private images into votes (captioners, image embedders).

Why: the DP proof assumes that each private record's caption or feature vector is a function of that record
alone. Batched inference does not promise this bit for bit: padding, and half-precision (fp16/bf16)
kernels whose reduction order depends on the batch's shape, can make one image's output differ in its last
bits with the other images of its batch. ``strict: true`` removes the batch from the computation: one
image per forward pass, in float32. It costs throughput (several times slower on a GPU) and is meant for
the private pre-processing of a run whose guarantee must hold to the letter; the ledger records it.
"""

from __future__ import annotations

from spti.errors import ConfigError

#: What strict mode fixes; the backends' info() and the ledger say the same.
STRICT_BATCH_SIZE = 1
STRICT_DTYPE = "float32"


def check_strict(strict: object, where: str) -> bool:
    """``strict`` must be a real boolean (a YAML "yes"/"no" string would otherwise be truthy)."""
    if not isinstance(strict, bool):
        raise ConfigError(f"{where}: strict must be true or false, got {strict!r}")
    return strict


def strict_options(strict: object, *, batch_size: int, dtype: str | None, where: str) -> tuple[int, str | None]:
    """``(batch_size, dtype)`` a backend uses: unchanged without strict mode; with it, batch size 1 and
    float32. A dtype other than "auto"/"float32" next to ``strict: true`` is a contradiction, refused
    rather than silently overridden (``dtype=None``: the backend has no dtype option, it runs in float32)."""
    if not check_strict(strict, where):
        return batch_size, dtype
    if dtype is not None and dtype not in ("auto", STRICT_DTYPE):
        raise ConfigError(f"{where}: strict: true runs in float32; remove dtype {dtype!r} or set it to float32")
    return STRICT_BATCH_SIZE, (STRICT_DTYPE if dtype is not None else None)
