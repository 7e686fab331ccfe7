"""``spti run --dry-run --calibrate``: measure each configured model on a small synthetic batch and turn the dry
run's call counts into device-hours, wall time for W workers and the largest N that fits a time budget.

Why measure instead of guessing: throughput differs by orders of magnitude between models, devices and
batch sizes (an SDXL-Turbo render on one GPU, a captioner on a laptop CPU), and the plan's call counts alone
say nothing about hours. Why synthetic inputs: calibration runs before the run and is printed, so it must
never touch private data: images are seeded noise, texts and prompts are fixed public strings, LLM
conversations are a fixed public prompt.

What is measured, per role, on ONE replica built exactly as a stage builds it (``build_*`` from the config
dict, then :class:`~spti.executor.tasks.Worker`, the code both executors run): the model load time, one
warm-up batch (not timed: first calls compile kernels and fill caches), then items/s over ``items`` items,
and the peak memory: the process's peak RSS (``isolate``: each role is measured in a fresh process, so the
peak is that replica's alone) and, on a GPU, ``torch.cuda.max_memory_allocated``.

The projection (stated in the output): wall time = calls / (items/s x W) + one model load, i.e. perfect
scaling over W replicas; the largest N scales the stages whose calls grow with the private set (captioning,
private image features) and keeps the others fixed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from spti.errors import SptiError
from spti.executor.tasks import LLMCall, Step, Worker

#: the side of the synthetic images (captioner, image embedder) when the user gives none: what most captioners
#: and image-feature models see after their own resize; a VLM with dynamic resolution (Qwen2-VL) costs more at
#: larger inputs, so ``--calibrate-image-size`` takes the size of the user's images (a public fact they know)
DEFAULT_IMAGE_SIZE = 512

__all__ = ["Calibration", "RoleRate", "StageCost", "calibrate", "measure_role", "roles_of_plan", "synthetic_items"]

#: Fixed public texts for the text embedder, the renderer and the LLM prompt (never private data).
PUBLIC_TEXTS = (
    "a photo of a wooden chair in a bright kitchen",
    "a red car parked on a quiet street at dusk",
    "a small dog sleeping on a blue sofa",
    "a bowl of green apples on a white table",
    "a mountain lake under a cloudy sky",
    "a bedroom with a large window and white sheets",
    "a bicycle leaning against a brick wall",
    "a cup of coffee next to an open book",
)
LLM_PROMPT = "Write one short caption for a photo of a room. Reply with the caption only."


@dataclasses.dataclass
class RoleRate:
    """One replica's measured throughput and memory for one role."""

    role: str
    backend: str
    items: int
    seconds: float
    load_seconds: float
    peak_rss_mb: float | None
    peak_gpu_mb: float | None
    device: str
    unit: str

    @property
    def per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else math.inf


@dataclasses.dataclass
class StageCost:
    """A stage of the plan priced with its role's rate."""

    stage: str
    role: str
    calls: int
    per_second: float
    load_seconds: float
    device_hours: float
    wall_hours: dict[int, float]
    scales_with_n: bool


@dataclasses.dataclass
class Calibration:
    rates: dict[str, RoleRate]
    stages: list[StageCost]
    workers: tuple[int, ...]
    n_private: int | None
    hours: float | None
    max_n: dict[int, int | None]
    image_size: int = DEFAULT_IMAGE_SIZE

    def total_wall_hours(self, w: int) -> float:
        return sum(s.wall_hours[w] for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rates": {r: {**dataclasses.asdict(v), "per_second": v.per_second} for r, v in self.rates.items()},
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "workers": list(self.workers),
            "total_wall_hours": {w: self.total_wall_hours(w) for w in self.workers},
            "total_device_hours": sum(s.device_hours for s in self.stages),
            "hours_available": self.hours,
            "largest_n": self.max_n,
            "image_size": self.image_size,
            "assumptions": "one replica measured on a synthetic batch; wall = calls / (rate x W) + one model load "
                           "(perfect scaling over W replicas); device-hours = calls / rate",
        }

    def table(self) -> str:
        """The human-readable table (what ``--calibrate`` prints)."""
        lines = [f"calibration (synthetic inputs, images {self.image_size}x{self.image_size}; one replica measured; "
                 "wall time assumes perfect scaling):", ""]
        hdr = f"{'role':<15} {'backend':<26} {'device':<7} {'rate':>14} {'load s':>7} {'peak RSS':>9} {'peak GPU':>9}"
        lines += [hdr, "-" * len(hdr)]
        for r in self.rates.values():
            gpu = f"{r.peak_gpu_mb:.0f} MB" if r.peak_gpu_mb is not None else "-"
            rss = f"{r.peak_rss_mb:.0f} MB" if r.peak_rss_mb is not None else "-"
            lines.append(f"{r.role:<15} {r.backend[:26]:<26} {r.device:<7} {r.per_second:>8.3g} {r.unit + '/s':<5} "
                         f"{r.load_seconds:>7.1f} {rss:>9} {gpu:>9}")
        lines.append("")
        ws = "".join(f" {'wall h (W=' + str(w) + ')':>14}" for w in self.workers)
        hdr = f"{'stage':<46} {'calls':>10} {'device h':>10}{ws}"
        lines += [hdr, "-" * len(hdr)]
        for s in self.stages:
            ws = "".join(f" {s.wall_hours[w]:>14.3g}" for w in self.workers)
            lines.append(f"{s.stage[:46]:<46} {s.calls:>10} {s.device_hours:>10.3g}{ws}")
        ws = "".join(f" {self.total_wall_hours(w):>14.3g}" for w in self.workers)
        lines.append(f"{'total':<46} {'':>10} {sum(s.device_hours for s in self.stages):>10.3g}{ws}")
        if self.hours is not None:
            fits = ", ".join(f"W={w}: {'none' if n is None else 'any' if n < 0 else n}" for w, n in self.max_n.items())
            lines += ["", f"largest N (private records) that fits {self.hours:g} h: {fits}"]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- inputs
def synthetic_items(role: str, n: int, *, size: int = DEFAULT_IMAGE_SIZE, max_new_tokens: int = 32,
                    calls_of: int = 8) -> list[Any]:
    """``n`` synthetic, public items for ``role``: seeded noise images, fixed texts, fixed prompts with seeds,
    and LLM calls of ``calls_of`` conversations each (``n`` counts conversations for the LLM)."""
    import numpy as np

    if role in ("captioner", "image_embedder"):
        from PIL import Image

        rng = np.random.default_rng(0)
        return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB") for _ in range(n)]
    texts = [PUBLIC_TEXTS[i % len(PUBLIC_TEXTS)] + ("" if i < len(PUBLIC_TEXTS) else f" ({i})") for i in range(n)]
    if role == "text_embedder":
        return texts
    if role == "renderer":
        return [(t, i) for i, t in enumerate(texts)]
    conv = [{"role": "user", "content": LLM_PROMPT}]
    out = []
    for s in range(0, n, calls_of):
        out.append(LLMCall([conv] * min(calls_of, n - s), max_new_tokens=max_new_tokens, temperature=1.0, seed=s))
    return out


# ---------------------------------------------------------------------------------------------- measuring
def _rss_mb() -> float | None:
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
    except (ImportError, OSError):
        return None


def _gpu_peak(reset: bool) -> float | None:
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def measure_role(role: str, config: Mapping[str, Any] | str, *, items: int | None = None,
                 max_new_tokens: int = 32, image_size: int = DEFAULT_IMAGE_SIZE) -> RoleRate:
    """Build ``role``'s backend from ``config``, warm it up on one batch, time ``items`` items (default: two
    batches, 4 to 64 items). In this process: see :func:`calibrate` (``isolate``) for a clean peak RSS."""
    from spti.models._guard import backend_label

    _gpu_peak(reset=True)
    t0 = time.perf_counter()
    w = Worker(Step(role, config))
    load = time.perf_counter() - t0
    try:
        bs = w.batch_size if role != "llm" else max(1, int(getattr(w.backend, "batch_size", 8) or 8))
        n = items if items is not None else min(64, max(4, 2 * bs))
        per = bs if role == "llm" else 1
        warm = synthetic_items(role, bs, size=image_size, max_new_tokens=max_new_tokens, calls_of=bs)
        w.run(warm[:1] if role == "llm" else warm)
        work = synthetic_items(role, n, size=image_size, max_new_tokens=max_new_tokens, calls_of=bs)
        t1 = time.perf_counter()
        w.run(work)
        dt = time.perf_counter() - t1
        count = n if role == "llm" else len(work) * per
        device = str(getattr(w.backend, "device", "cpu"))
        return RoleRate(role=role, backend=backend_label(w.backend), items=count, seconds=dt, load_seconds=load,
                        peak_rss_mb=_rss_mb(), peak_gpu_mb=_gpu_peak(reset=False),
                        device="cuda" if "cuda" in device else device[:7],
                        unit={"llm": "reply", "renderer": "img", "text_embedder": "text"}.get(role, "img"))
    finally:
        w.close()


def _measure(role: str, config: Any, items: int | None, max_new_tokens: int, isolate: bool,
             image_size: int = DEFAULT_IMAGE_SIZE) -> RoleRate:
    """One role's measurement, in a fresh Python process when ``isolate`` (its own peak RSS and GPU memory,
    as a replica would have; a subprocess rather than multiprocessing, which would re-import the caller's
    ``__main__``). The child gets this process's ``sys.path``, so plug-in backends import as here."""
    if not isolate:
        return measure_role(role, config, items=items, max_new_tokens=max_new_tokens, image_size=image_size)
    import json
    import os
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="spti-calibrate-") as tmp:
        out = os.path.join(tmp, "rate.json")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        job = json.dumps({"role": role, "config": config, "items": items, "max_new_tokens": max_new_tokens,
                          "image_size": image_size, "out": out})
        proc = subprocess.run([sys.executable, "-m", "spti.executor.calibrate"], input=job, text=True, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode != 0 or not os.path.isfile(out):
            last = (proc.stderr.strip().splitlines() or ["no error output"])[-1]
            raise SptiError(f"calibration of the {role} failed (exit {proc.returncode}): {last[:300]}")
        with open(out, encoding="utf-8") as f:
            return RoleRate(**json.load(f))


def _child() -> None:
    import json
    import sys

    job = json.loads(sys.stdin.read())
    rate = measure_role(job["role"], job["config"], items=job["items"], max_new_tokens=job["max_new_tokens"],
                        image_size=int(job.get("image_size", DEFAULT_IMAGE_SIZE)))
    with open(job["out"], "w", encoding="utf-8") as f:
        json.dump(dataclasses.asdict(rate), f)


# ---------------------------------------------------------------------------------------------- the plan
def roles_of_plan(cfg: Any, plan: Mapping[str, Any]) -> list[tuple[str, str, Any, int, bool]]:
    """``(stage, role, backend config, calls, scales with N)`` for each entry of a dry-run plan's ``calls``
    (:func:`spti.stages.plan.dry_run_plan`), plus the embedding of the private texts (text voting), which the
    plan does not list. A stage's role is read from its name (``"renderer (loop, at most)"`` -> renderer);
    the candidates' embeddings are the voting space's embedder; the release render uses ``release_renderer``
    when set."""
    voting = getattr(getattr(cfg, "pe", None), "voting", "text")
    calls = dict(plan.get("calls", {}))
    rows = next((v for k, v in (plan.get("private") or {}).items() if k == "rows"), None)
    if voting == "text" and isinstance(rows, int) and "private texts" not in " ".join(calls):
        calls["text_embedder (private texts)"] = rows
    out = []
    for stage, n in calls.items():
        if not isinstance(n, (int, float)):
            continue
        name = stage.lower()
        if "candidates" in name or name.startswith("text/image"):
            role = "text_embedder" if voting == "text" else "image_embedder"
        else:
            role = next((r for r in ("captioner", "image_embedder", "text_embedder", "renderer", "llm")
                         if name.startswith(r) or name.startswith(r.replace("_", " "))), None)
            if role is None:
                continue
        config = getattr(cfg, role)
        if role == "renderer" and "release" in name and getattr(cfg, "release_renderer", None):
            config = cfg.release_renderer
        if role == "captioner":
            from spti.stages.private import captioner_config

            config = captioner_config(cfg)
        private = role == "captioner" or "private" in name
        out.append((stage, role, config, int(n), private))
    return out


def calibrate(cfg: Any, plan: Mapping[str, Any], *, workers: Sequence[int] = (1, 8), hours: float | None = None,
              n_private: int | None = None, items: int | None = None, isolate: bool = True,
              rates: Mapping[str, RoleRate] | None = None, image_size: int = DEFAULT_IMAGE_SIZE) -> Calibration:
    """Measure every role the dry-run ``plan``'s calls use (once per distinct backend config) and price each
    stage.

    ``workers``: the W for wall times. ``hours``: the time available; the result's ``max_n`` is then the
    largest number of private records whose run fits it, per W (None: not even the fixed stages fit).
    ``rates``: measurements to reuse (tests, or a second plan) instead of measuring. ``image_size``: the side
    of the synthetic images the captioner and image embedder are timed on (:data:`DEFAULT_IMAGE_SIZE`)."""
    import json

    workers = tuple(sorted({int(w) for w in workers if int(w) >= 1})) or (1,)
    if n_private is None and isinstance((plan.get("private") or {}).get("rows"), int):
        n_private = plan["private"]["rows"]
    mnt = int(getattr(getattr(cfg, "generation", None), "max_new_tokens", 32) or 32)
    entries = roles_of_plan(cfg, plan)
    measured: dict[str, RoleRate] = {}
    by_config: dict[str, RoleRate] = {}
    costs: list[StageCost] = []
    for stage, role, config, n, private in entries:
        key = role + json.dumps(config, sort_keys=True, default=str)
        rate = by_config.get(key) or (rates or {}).get(role)
        if rate is None:
            try:
                rate = _measure(role, config, items, mnt, isolate, image_size)
            except SptiError:
                raise
            except Exception as e:  # noqa: BLE001 - the model is the user's: name it and the error's type
                raise SptiError(f"calibration of the {role} ({stage}) failed: {type(e).__name__}: {str(e)[:200]}") from e
        if key not in by_config:
            by_config[key] = rate
            measured[role if role not in measured else f"{role} ({stage})"] = rate
        dev_h = n / rate.per_second / 3600 if n else 0.0
        wall = {w: (dev_h / w + rate.load_seconds / 3600) if n else 0.0 for w in workers}
        costs.append(StageCost(stage=stage, role=role, calls=n, per_second=rate.per_second, load_seconds=rate.load_seconds,
                               device_hours=dev_h, wall_hours=wall, scales_with_n=private))
    max_n: dict[int, int | None] = {}
    if hours is not None:
        for w in workers:
            # stages that grow with N: N / (rate x W) + one load each; the others as planned
            fixed = sum(c.wall_hours[w] for c in costs if not c.scales_with_n)
            load = sum(c.load_seconds / 3600 for c in costs if c.scales_with_n)
            per_item = sum(1 / c.per_second / 3600 / w for c in costs if c.scales_with_n)
            left = hours - fixed - load
            max_n[w] = None if left < 0 else (int(left / per_item) if per_item > 0 else -1)
    return Calibration(rates=measured, stages=costs, workers=workers, n_private=n_private, hours=hours, max_n=max_n,
                       image_size=int(image_size))


if __name__ == "__main__":  # the isolated measurement of one role (see _measure)
    _child()
