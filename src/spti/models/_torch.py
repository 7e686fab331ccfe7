"""What every torch backend shares: device and dtype strings -> torch objects (``device:
auto|cpu|cuda|cuda:N|mps``, ``dtype: auto|float32|float16|bfloat16``), and one ``close()`` that hands the
model's memory back. torch is imported inside the functions only."""

from __future__ import annotations

import gc
import re
import sys
from typing import Any

from spti.errors import ConfigError

#: The one dtype table: config spelling -> torch attribute name ("auto" is resolved per device).
DTYPES: dict[str, str] = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "bfloat16": "bfloat16",
}


def dtype_name(dtype: Any, who: str = "") -> str:
    """Validate a ``dtype`` option without importing torch: ``"auto"`` or the canonical name
    (``"fp16"`` -> ``"float16"``). ``None`` means ``"auto"``; ``who`` prefixes the error message."""
    name = "auto" if dtype is None else str(dtype).strip().lower()
    if name == "auto":
        return name
    if name not in DTYPES:
        prefix = f"{who}: " if who else ""
        raise ConfigError(f"{prefix}bad dtype {dtype!r}; use one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_device(device: str | None) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; explicit CUDA devices are checked
    so that a typo or a missing GPU fails at load time with a clear message instead of deep in torch."""
    import torch

    if device is not None and not isinstance(device, str):
        raise ConfigError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {device!r}")
    dev = "auto" if device is None else device.strip().lower()
    if dev == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if dev in ("cpu", "mps"):
        return dev
    if dev == "cuda" or dev.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} requested but CUDA is not available; use device: cpu or auto"
            )
        if ":" in dev:
            try:
                index = int(dev.split(":", 1)[1])
            except ValueError:
                raise ConfigError(f"bad device {device!r}; use auto, cpu, cuda or cuda:N") from None
            if not 0 <= index < torch.cuda.device_count():
                raise ConfigError(
                    f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) are visible"
                )
        return dev
    raise ConfigError(f"bad device {device!r}; use auto, cpu, cuda or cuda:N")


def resolve_dtype(dtype: str | None, device: str, *, auto: str | None = None, who: str = "") -> Any:
    """Map the config string to a torch dtype. ``"auto"`` is ``auto`` when a backend fixes it (e.g.
    float32 for features that metrics compare), else float32 on CPU (half precision is slow or unsupported
    there) and bfloat16 on CUDA (float16 on GPUs without bf16): same range as float32, so long generations
    do not overflow."""
    import torch

    name = dtype_name(dtype, who)
    if name == "auto" and auto is not None:
        name = auto
    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, name)


def transformers_dtype_kwarg() -> str:
    """The ``from_pretrained`` keyword for the dtype: transformers renamed ``torch_dtype`` to ``dtype`` in
    4.56 (and warns about the old name since)."""
    import transformers

    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def free_memory(device: str | None) -> None:
    """Collect garbage and hand cached CUDA memory back to the driver (for the next model of the run).
    ``device`` None: whatever device was used. Does nothing to CUDA when torch was never imported."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None or not (device is None or device.startswith("cuda")):
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class TorchModels:
    """Mixin for backends that hold torch models: one ``close()`` that drops them and frees their memory.

    A backend lists the attributes holding its loaded objects in ``_torch_models``; ``close()`` sets them
    to None and, if any was loaded, calls :func:`free_memory` for the backend's ``device`` (an attribute
    most torch backends have; None means "whatever was used"). Safe to call twice.
    """

    _torch_models: tuple[str, ...] = ()

    def close(self) -> None:
        loaded = [a for a in self._torch_models if getattr(self, a, None) is not None]
        for attr in self._torch_models:
            setattr(self, attr, None)
        if loaded:
            free_memory(getattr(self, "device", None))
