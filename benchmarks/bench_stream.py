"""Stream, don't stage (issue 11, requirement 2): one PE variation round in image voting, staged vs streamed, on
the Ray executor and on the local one.

* staged: the LLM writes the whole round (cut into calls over the LLM replicas), THEN the usable replies are
  rendered and embedded (one ``renderer -> image_embedder`` chain, as the embedding stage does);
* streamed: :class:`spti.pe.stream.RenderStream`: each LLM call's replies flow into the renderers while the
  LLM writes the next call.

The models are plug-ins that *sleep* a fixed time per reply / render / image (``--llm-ms``, ``--render-ms``,
``--embed-ms``): the benchmark measures how the stages overlap, not CPU speed, so it means the same on a
2-core machine as on a GPU node (where LLM and renderers sit on different GPUs). Printed as ratios against
the staged run of the same executor, measured in this run; the replies and the feature rows are compared
between the two modes (same bytes).

    python benchmarks/bench_stream.py                  # 96 conversations, 100 ms/reply, 100 ms/render
    python benchmarks/bench_stream.py --convs 192 --chunk 16 --workers 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from spti.models.image_embedder import ImageEmbedder  # noqa: E402
from spti.models.llm import LLM, derive_seed  # noqa: E402
from spti.models.renderer import Renderer  # noqa: E402

WORDS = ("red", "blue", "green", "yellow", "cube", "ball", "chair", "lamp", "field", "room", "beach", "table")


class SleepyLLM(LLM):
    """A splittable LLM that sleeps ``ms`` per reply and writes a 6-word caption from the reply's own seed."""

    splittable = True

    def __init__(self, ms: float = 40.0):
        self.ms = float(ms)

    def info(self):
        return {"backend": "sleepy-llm", "ms": self.ms}

    def generate(self, conversations, *, max_new_tokens=64, temperature=1.0, top_p=1.0, seed=None, first_index=0):
        out = []
        for i, _ in enumerate(conversations):
            time.sleep(self.ms / 1000)
            rng = np.random.default_rng(None if seed is None else derive_seed(seed, first_index + i))
            out.append("A " + " ".join(rng.choice(WORDS, size=6)) + ".")
        return out


class SleepyRenderer(Renderer):
    """Sleeps ``ms`` per image; a 16x16 image whose colour follows the caption's hash and the seed."""

    def __init__(self, ms: float = 40.0, batch_size: int = 4):
        self.ms = float(ms)
        self.batch_size = int(batch_size)

    def info(self):
        return {"backend": "sleepy-renderer", "ms": self.ms}

    def render(self, prompts, seeds):
        import hashlib

        out = []
        for p, s in zip(prompts, seeds):
            time.sleep(self.ms / 1000)
            h = hashlib.sha256(f"{p}:{s}".encode()).digest()
            out.append(Image.new("RGB", (16, 16), (h[0], h[1], h[2])))
        return out


class SleepyEmbedder(ImageEmbedder):
    """Sleeps ``ms`` per image; the mean colour as a 3-d feature."""

    def __init__(self, ms: float = 5.0, batch_size: int = 8):
        self.ms = float(ms)
        self.batch_size = int(batch_size)

    def info(self):
        return {"backend": "sleepy-embedder", "ms": self.ms}

    @property
    def dim(self) -> int:
        return 3

    def embed(self, images):
        time.sleep(self.ms / 1000 * len(images))
        return np.stack([np.asarray(im.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(0) / 255 for im in images])


def round_of(executor, llm, renderer, embedder, convs, *, chunk: int, streamed: bool, seed: int = 7):
    """(wall seconds, raw replies, {(text, seed): feature row}) of one variation round and its renders."""
    import functools

    from spti.data.cache import RenderCache
    from spti.executor import step_for
    from spti.pe.stream import RenderStream
    from spti.text import clean_caption

    clean = functools.partial(clean_caption, min_words=3, max_words=40)
    with tempfile.TemporaryDirectory(prefix="spti-bench-stream-") as tmp:
        cache = RenderCache(Path(tmp), renderer, Counter(), "evolve")
        t0 = time.perf_counter()
        if streamed:
            stream = RenderStream(llm, cache, embedder, seeds=(0,), chunk=chunk, executor=executor)
            raw = stream.generate(convs, max_new_tokens=32, temperature=1.0, top_p=1.0, seed=seed, clean=clean)
            feats = dict(stream.prefetched)
        else:
            raw = llm.generate(convs, max_new_tokens=32, temperature=1.0, top_p=1.0, seed=seed)
            pairs = list(dict.fromkeys((t, 0) for t, _ in map(clean, raw) if t is not None))
            ex, render = step_for("renderer", renderer, executor=executor, name="rendering")
            _, embed = step_for("image_embedder", embedder, executor=ex, name="embedding")
            feats = {}
            for r, per_pair in ex.stream([render, embed], pairs, task_size=8):
                for k, leaves in zip(r, per_pair, strict=True):
                    ((png, vec),) = leaves
                    cache.store(pairs[k], png)
                    feats[pairs[k]] = vec
        return time.perf_counter() - t0, raw, feats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--convs", type=int, default=96, help="conversations in the round")
    ap.add_argument("--chunk", type=int, default=8, help="executor.llm_chunk: conversations per LLM call")
    ap.add_argument("--llm-ms", type=float, default=100.0)
    ap.add_argument("--render-ms", type=float, default=100.0)
    ap.add_argument("--embed-ms", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2, help="Ray replicas per model stage")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--repeats", type=int, default=2, help="runs per mode; the fastest counts")
    a = ap.parse_args(argv)

    import ray

    from spti.executor import LocalExecutor
    from spti.executor.ray import RayExecutor

    convs = [[{"role": "user", "content": f"Rewrite caption {i}"}] for i in range(a.convs)]
    llm_cfg = {"backend": "bench_stream:SleepyLLM", "ms": a.llm_ms}
    ren_cfg = {"backend": "bench_stream:SleepyRenderer", "ms": a.render_ms}
    emb_cfg = {"backend": "bench_stream:SleepyEmbedder", "ms": a.embed_ms}
    print(f"round: {a.convs} conversations in calls of {a.chunk}; LLM {a.llm_ms:g} ms/reply, renderer "
          f"{a.render_ms:g} ms/image, embedder {a.embed_ms:g} ms/image (sleeps); Ray: {a.workers} replicas per "
          f"stage on {a.cpus} CPUs; machine: {os.cpu_count()} cores")

    results = {}
    local = LocalExecutor(llm_chunk=a.chunk)
    live = (SleepyLLM(a.llm_ms), SleepyRenderer(a.render_ms), SleepyEmbedder(a.embed_ms))
    for mode in ("staged", "streamed"):
        runs = [round_of(local, *live, convs, chunk=a.chunk, streamed=mode == "streamed") for _ in range(a.repeats)]
        results[("local", mode)] = min(runs, key=lambda r: r[0])

    ray.init(num_cpus=a.cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
                                       "SPTI_NO_PROGRESS": "1"}})
    try:
        ex = RayExecutor(workers=a.workers, cpus_per_replica=a.cpus / (3 * a.workers), llm_chunk=a.chunk)
        remote = (ex.backend("llm", llm_cfg), ex.backend("renderer", ren_cfg), ex.backend("image_embedder", emb_cfg))
        round_of(ex, *remote, convs[: a.chunk], chunk=a.chunk, streamed=True)  # warm-up: Ray's one-off costs
        for mode in ("staged", "streamed"):
            runs = [round_of(ex, *remote, convs, chunk=a.chunk, streamed=mode == "streamed") for _ in range(a.repeats)]
            results[("ray", mode)] = min(runs, key=lambda r: r[0])
    finally:
        ray.shutdown()

    ok = True
    print(f"\n{'executor':<8} {'mode':<9} {'wall s':>8} {'/ staged':>9} {'renders':>8} {'same bytes':>11}")
    base_raw, base_feats = results[("local", "staged")][1:]
    for (name, mode), (wall, raw, feats) in results.items():
        same = raw == base_raw and feats.keys() == base_feats.keys() and all(
            np.array_equal(feats[k], base_feats[k]) for k in feats)
        ok &= same
        print(f"{name:<8} {mode:<9} {wall:>8.2f} {wall / results[(name, 'staged')][0]:>9.2f} {len(feats):>8} "
              f"{str(same):>11}")
    llm_s = a.convs * a.llm_ms / 1000 / a.workers
    ren_s = len(base_feats) * (a.render_ms + a.embed_ms) / 1000 / a.workers
    print(f"\nideal on Ray with {a.workers} replicas per stage: staged = LLM + renders = {llm_s:.2f} + {ren_s:.2f} s; "
          f"streamed -> max of the two = {max(llm_s, ren_s):.2f} s (plus one call's renders)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
