"""The model-stage executor: Ray (Ray Data actor pools) against the local executor on the same CPU workload.

Measured in ONE run, printed as ratios against the local baseline of that run (machines here are noisy):

* overhead: the Ray executor with 1 replica vs the local executor (same items, same tasks, same backend);
* scaling: the Ray executor with 1 vs 2 replicas (and more with ``--workers``);
* the same outputs: every Ray result is compared with the local one, byte for byte.

The workload is a plug-in text embedder that burns a fixed amount of CPU per item (a sha256 chain, single
threaded, so each replica is one core) and returns a vector derived from it: the model-stage shape (items in,
one vector per item) without a model download. Two numbers per configuration: the wall time of the whole
stage (what a run pays, with the replicas' start and model load) and the steady-state rate (items/s between
the first and the last finished task: what a long stage approaches).

    python benchmarks/bench_executor.py                    # 240 items x 20 ms, local vs Ray 1 and 2 replicas
    python benchmarks/bench_executor.py --items 480 --ms 10 --workers 1,2
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _ensure_path() -> None:
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))


_ensure_path()

import numpy as np  # noqa: E402

from spti.models.text_embedder import TextEmbedder  # noqa: E402


class BusyEmbedder(TextEmbedder):
    """``rounds`` sha256 rounds per text (calibrated to ~``ms`` per item on this machine by the driver); the
    vector is the last digest as 32 floats."""

    def __init__(self, rounds: int = 20000, batch_size: int = 8):
        self.rounds = int(rounds)
        self.batch_size = int(batch_size)

    def info(self):
        return {"backend": "busy", "rounds": self.rounds}

    @property
    def dim(self) -> int:
        return 32

    def embed(self, texts):
        out = np.zeros((len(texts), 32), dtype=np.float32)
        for i, t in enumerate(texts):
            h = t.encode()
            for _ in range(self.rounds):
                h = hashlib.sha256(h).digest()
            out[i] = np.frombuffer(h, dtype=np.uint8).astype(np.float32) / 255.0
        return out


def rounds_for(ms: float) -> int:
    """sha256 rounds that take ``ms`` milliseconds here (measured once, single core)."""
    n = 20000
    h = b"x"
    t0 = time.perf_counter()
    for _ in range(n):
        h = hashlib.sha256(h).digest()
    return max(1, int(n * (ms / 1000) / (time.perf_counter() - t0)))


def run(executor, step, items):
    """(wall seconds, steady items/s, outputs in order)."""
    out = [None] * len(items)
    stamps = []
    t0 = time.perf_counter()
    for r, vecs in executor.stream(step, items):
        out[r.start : r.stop] = vecs
        stamps.append((time.perf_counter(), len(r)))
    wall = time.perf_counter() - t0
    steady = (sum(n for _, n in stamps[1:]) / (stamps[-1][0] - stamps[0][0])) if len(stamps) > 2 else float("nan")
    return wall, steady, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=240)
    ap.add_argument("--ms", type=float, default=20.0, help="CPU milliseconds per item")
    ap.add_argument("--batch", type=int, default=8, help="items per backend call (= per Ray task)")
    ap.add_argument("--workers", default="1,2", help="Ray replica counts to measure")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    a = ap.parse_args(argv)

    import ray

    from spti.executor import LocalExecutor, Step
    from spti.executor.ray import RayExecutor

    rounds = rounds_for(a.ms)
    cfg = {"backend": "bench_executor:BusyEmbedder", "rounds": rounds, "batch_size": a.batch}
    step = Step("text_embedder", cfg, batch_size=a.batch)
    items = [f"public text {i}" for i in range(a.items)]
    print(f"workload: {a.items} items x {a.ms:g} ms CPU ({rounds} sha256 rounds), {a.batch} items per task; "
          f"Ray on {a.cpus} CPUs; machine: {os.cpu_count()} cores")

    local_wall, local_steady, want = run(LocalExecutor(), step, items)
    t0 = time.perf_counter()
    ray.init(num_cpus=a.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
                                       "SPTI_NO_PROGRESS": "1"}})
    init = time.perf_counter() - t0
    t0 = time.perf_counter()  # a first, discarded stage: Ray's first actors pay one-off imports and caches
    run(RayExecutor(workers=1, cpus_per_replica=0.5), step, items[: a.batch])
    warm = time.perf_counter() - t0
    rows = [("local", local_wall, local_steady, True)]
    for w in [int(x) for x in a.workers.split(",") if x.strip()]:
        ex = RayExecutor(workers=w, cpus_per_replica=0.5)  # a scheduling label; each replica uses one core
        wall, steady, got = run(ex, step, items)
        rows.append((f"ray W={w}", wall, steady, all(np.array_equal(x, y) for x, y in zip(got, want))))
    ray.shutdown()

    print(f"ray.init: {init:.1f} s, first (warm-up) stage: {warm:.1f} s (once per driver; not in the rows below)\n")
    print(f"{'executor':<10} {'wall s':>8} {'wall / local':>13} {'steady items/s':>15} {'steady / local':>15} {'same bytes':>11}")
    for name, wall, steady, same in rows:
        print(f"{name:<10} {wall:>8.2f} {wall / local_wall:>13.2f} {steady:>15.1f} {steady / local_steady:>15.2f} "
              f"{str(same):>11}")
    ray_rows = {n: (w, s) for n, w, s, _ in rows[1:]}
    if "ray W=1" in ray_rows and "ray W=2" in ray_rows:
        (w1, s1), (w2, s2) = ray_rows["ray W=1"], ray_rows["ray W=2"]
        print(f"\nscaling W=1 -> W=2: wall x{w1 / w2:.2f} faster, steady rate x{s2 / s1:.2f}")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
