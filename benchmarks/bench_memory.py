"""Benchmark of the image loader's peak memory (not a test): a batch of small vs huge images, decoded at full
size (``target_size=None``, what spti did before) or downscaled to the model's input while decoding.

    python benchmarks/bench_memory.py                 # 12 JPEGs of 9000x9000 (81 Mpx, about 1 MB each) + 12 small
    python benchmarks/bench_memory.py --count 4 --side 6000   # a quicker, smaller run

Each case runs in a fresh subprocess (``python bench_memory.py --case ...``) that decodes one batch of all
the files with :func:`spti.data.images.iter_batches` and prints its peak RSS (``resource.getrusage``
``ru_maxrss``), so the cases do not share an allocator. The files are solid-colour JPEGs: huge canvases
that are small on disk, the worst case for memory per byte read. The baseline (``import spti`` + Pillow
+ numpy, nothing decoded) is printed for reference.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_mib() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20  # KiB on Linux, bytes on macOS


def _make(folder: Path, count: int, side: int) -> list[Path]:
    """``count`` solid-colour JPEGs of side x side (made in a subprocess: a canvas that size is itself big)."""
    folder.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys\nfrom PIL import Image\n"
        "folder, count, side = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
        "for i in range(count):\n"
        "    Image.new('RGB', (side, side), (20 * i % 255, 90, 160)).save(f'{folder}/{i:03d}.jpg', quality=75)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(folder), str(count), str(side)], check=True)
    return sorted(folder.glob("*.jpg"))


def _case(files: list[str], target: int | None) -> dict:
    """One measurement, in this (fresh) process: decode all files as one batch, as the captioning stage does."""
    from spti.data.images import ImageRecord, iter_batches
    from spti.hashing import sha256_file

    recs = [ImageRecord(id=f"img-{i:06d}", path=Path(f), user_id=None, sha256=sha256_file(f), width=0, height=0)
            for i, f in enumerate(files)]
    before = _peak_mib()
    t0 = time.perf_counter()
    sizes = []
    for _, images in iter_batches(recs, len(recs), max_pixels=None, target_size=target):
        sizes = [im.size for im in images]
    return {"peak_mib": _peak_mib(), "baseline_mib": before, "seconds": time.perf_counter() - t0,
            "decoded": sizes[0] if sizes else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--side", type=int, default=9000, help="side of the huge JPEGs (9000: 81 Mpx)")
    ap.add_argument("--target", type=int, default=224, help="the model's input size (EfficientNet-Lite0: 224)")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:  # child process
        spec = json.loads(a.case)
        print(json.dumps(_case(spec["files"], spec["target"])))
        return
    with tempfile.TemporaryDirectory(prefix="spti-bench-memory-") as tmp:
        huge = _make(Path(tmp) / "huge", a.count, a.side)
        small = _make(Path(tmp) / "small", a.count, 512)
        mb = sum(p.stat().st_size for p in huge) / len(huge) / 1024
        print(f"{a.count} huge JPEGs of {a.side}x{a.side} ({mb:.0f} KiB each on disk), {a.count} of 512x512; "
              f"one batch of {a.count}; target {a.target}")
        print(f"{'inputs':>8} {'downscale':>12} {'decoded':>12} {'peak RSS MiB':>13} {'seconds':>8}")
        for name, files in (("small", small), ("huge", huge)):
            for target in (None, a.target):
                spec = json.dumps({"files": [str(f) for f in files], "target": target})
                out = subprocess.run([sys.executable, __file__, "--case", spec], check=True, capture_output=True, text=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                dec = "x".join(map(str, r["decoded"])) if r["decoded"] else "-"
                print(f"{name:>8} {('off' if target is None else 'draft/reduce'):>12} {dec:>12} "
                      f"{r['peak_mib']:>13.0f} {r['seconds']:>8.2f}")
        print(f"(baseline of a child process before decoding: about {r['baseline_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
