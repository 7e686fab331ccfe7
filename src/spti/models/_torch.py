"""Device and dtype strings -> torch objects, the same for every backend (``device: auto|cpu|cuda|cuda:N|mps``,
``dtype: auto|float32|float16|bfloat16``). torch is imported inside the functions only."""

from __future__ import annotations

from typing import Any

from spti.errors import ConfigError

DTYPES = ("auto", "float32", "float16", "bfloat16")


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
            raise ConfigError(f"device {device!r} requested but CUDA is not available; use device: cpu or auto")
        if ":" in dev:
            try:
                index = int(dev.split(":", 1)[1])
            except ValueError:
                raise ConfigError(f"bad device {device!r}; use auto, cpu, cuda or cuda:N") from None
            if not 0 <= index < torch.cuda.device_count():
                raise ConfigError(f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) are visible")
        return dev
    raise ConfigError(f"bad device {device!r}; use auto, cpu, cuda or cuda:N")


def resolve_dtype(dtype: str | None, device: str) -> Any:
    """Map the config string to a torch dtype. ``"auto"`` is float32 on CPU (half precision is slow or
    unsupported there) and bfloat16 on CUDA (float16 on GPUs without bf16): same range as float32, so long
    generations do not overflow."""
    import torch

    name = "auto" if dtype is None else str(dtype).strip().lower()
    if name not in DTYPES:
        raise ConfigError(f"bad dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, name)
