"""Offline quality benchmark of Private Evolution (issue 14; not a test): does the evolution move the
synthetic set's class mix toward a private set's *hidden* class mix, in each voting mode and at each ε?

    python benchmarks/bench_quality.py                              # default grid (~15 min on 2 idle cores)
    python benchmarks/bench_quality.py --variants before,after --epsilons 1 --seeds 0,1,2
    python benchmarks/bench_quality.py --fake --num-private 60 --pool-per-class 6 --population 8   # smoke

Data (Fashion-MNIST, Debian ``dataset-fashion-mnist``; loaders in :mod:`spti.demo`):
  private = ``--num-private`` *test* images with a skewed class mix: ``--footwear`` (default 70 %) spread
  equally over sandal / sneaker / ankle boot, the rest equally over the 7 other classes;
  public pool = ``--pool-per-class`` *train* images of every class (a uniform pool).
The labels never enter the pipeline: a population member's class is read off afterwards as the train label
of the pool image the retrieval renderer returns for it (nearest pool caption, MiniLM cosine, top_k = 1).

Stack (the offline one of ``spti demo``): EfficientNet-Lite0 tag captioner (top 3 labels, inverted),
SmolLM2-135M via llama.cpp, all-MiniLM-L6-v2, retrieval renderer over the pool, EfficientNet-Lite0 image
features. ``--fake`` swaps in the test fakes (tests/support/fakes.py) to exercise the code in seconds.

The evolution is the library's own :class:`spti.pe.engine.PrivateEvolution` with the library's
:class:`~spti.pe.generation.TextGenerator`; image voting uses the retrieval renderer's answer (a pool image)
and that image's EfficientNet features, exactly what ``ImageCandidateEmbedder`` computes with the retrieval
renderer, without writing PNGs. Noise is drawn from a *seeded* (insecure) NoiseSource so that a benchmark
run is reproducible; the σ is the accountant's for (ε, δ = 1/(N ln N), T).

Per iteration (t = 0 is the random API's population, no private data):
  tv        total-variation distance of the population's class mix to the private mix (lower = better)
  vote_tv   TV of the mix of the *clean* votes (each private vote counted at its candidate's class): what a
            selection that follows the votes exactly would reach; vote_tv << tv means selection loses signal
  acc       share of private samples whose vote lands on a candidate of their own class
  top5      share of all votes on the 5 most-voted candidates; voted = candidates with >= 1 vote
  uniq/imgs distinct texts / distinct pool images in the population (collapse)
  fd64      Fréchet distance to the private images in EfficientNet space, projected on the pool's 64
            principal components (with 40-100 samples the full 1280-d FD is singular)
References: uniform pool, an ideal sampler of the private mix (both with population-size samples), and
"pool-hist": ONE noisy histogram (whole budget, T = 1) with the pool images themselves as candidates, in
the same voting space, population drawn ∝ max(noisy count, 0).

Writes ``<out>/results.json``, ``<out>/curves.png`` and prints the tables. LLM replies are cached on disk
(``<out>/cache/``) by (conversation, seed, sampling settings), so iteration 0 is shared by every variant with
the same generation settings and a re-run only pays for what changed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

FOOTWEAR = (5, 7, 9)  # sandal, sneaker, ankle boot
ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------- presets
#: The prompts of commit c8fc65a (src/spti/prompts/default.yaml), frozen so that "before" stays "before".
BEFORE_TEMPLATES = {
    "system_prompt": "You write short, concrete, factual image captions. Reply with the caption only: one sentence, "
                     "no preamble, no quotes, no lists.",
    "random_template": "Write one caption for {domain}. Describe {focus}. Use a {tone} style and about {length} "
                       "words. {examples}Caption:",
    "fill_in_template": "Fill in the blanks (_) in this caption of {domain} to make one complete, natural caption of "
                        "about {length} words. Keep the words that are given.\n\n{masked}\n\nCaption:",
    "rephrase_template": "Rewrite this caption of {domain} in a {tone} style, about {length} words, changing some "
                         "details.\n\n{text}\n\nCaption:",
}
#: What ``spti demo`` ran at commit c8fc65a (its generation block + the PEConfig defaults of that commit).
BEFORE = {
    "generation": {
        "domain": "a product photo of a single clothing item or accessory (a shirt, trouser, dress, coat, shoe, "
                  "sandal, sneaker or bag) on a plain background",
        "variation_mode": "fill_in", "temperature": 0.7, "max_new_tokens": 40, "min_length": 4, "max_length": 20,
        "length_std": 2.0, "mask_prob": 0.5, "top_p": 0.95, "max_retries": 3,
        "attributes": {"focus": ["the main object", "the colours", "the lighting", "the layout and composition",
                                 "materials and textures", "the viewpoint", "the background", "the shape",
                                 "small details", "the overall style"]},
        "tones": ["plain", "detailed", "concise", "descriptive", "neutral", "vivid"], "examples_per_prompt": 3,
        **BEFORE_TEMPLATES,
    },
    "pe": {"keep_selected": True, "selection": "rank", "threshold": 0.0, "lookahead": 0, "normalize": True},
    "num_examples": 8,  # public pool captions the demo gave the random API
}


#: The state at the end of session 2 (commit 833ddb7), frozen so that later prompt or default changes do not
#: move this baseline: the demo's generation block with 64 public examples, ``sample`` selection, no
#: threshold, no dedup. The random API's ``random_examples`` template still comes from prompts/default.yaml
#: (GenerationConfig has no field for it): results.json records that file's hash.
S2 = {
    "generation": {
        "domain": "a product photo of a single clothing item or accessory (a shirt, trouser, dress, coat, shoe, "
                  "sandal, sneaker or bag) on a plain background",
        "variation_mode": "fill_in", "temperature": 0.7, "max_new_tokens": 40, "min_length": 4, "max_length": 20,
        "length_std": 2.0, "mask_prob": 0.5, "top_p": 0.95, "max_retries": 3,
        "attributes": BEFORE["generation"]["attributes"], "tones": BEFORE["generation"]["tones"],
        "examples_per_prompt": 3,
        "system_prompt": BEFORE_TEMPLATES["system_prompt"], "fill_in_template": BEFORE_TEMPLATES["fill_in_template"],
        "rephrase_template": BEFORE_TEMPLATES["rephrase_template"], "random_template": None,
    },
    "pe": {"keep_selected": True, "selection": "sample", "threshold": 0.0, "threshold_sigmas": 0.0, "dedup": False,
           "lookahead": 0, "normalize": True},
    "num_examples": 64,
}


def after_preset() -> dict:
    """The current code's choice: ``spti demo``'s config as it is now (its generation block on top of the
    current GenerationConfig / PEConfig defaults)."""
    from spti.config import Config
    from spti.demo import demo_config

    d = demo_config("unused", population=1, iterations=1, variations=1, epsilon=1.0, voting="text", seed=0,
                    progress=False)
    import inspect

    from spti.demo import run_demo

    cfg = Config.from_dict({"generation": d["generation"], "pe": {}})
    gen = dict(cfg.to_dict()["generation"])
    pe = {k: v for k, v in cfg.to_dict()["pe"].items() if k not in ("iterations", "population", "variations", "voting")}
    return {"generation": gen, "pe": pe, "num_examples": inspect.signature(run_demo).parameters["num_examples"].default}


#: Named variants: a base preset plus dotted overrides. Add what you want to try.
VARIANTS: dict[str, tuple[str, dict]] = {
    "before": ("before", {}),
    "s2": ("s2", {}),
    "after": ("after", {}),
    "before+sample": ("before", {"pe.selection": "sample"}),
    # the random API imitates the public example captions (the captioner's style); rank selection as before
    "before+style": ("before", {"generation.random_template": None}),
    "before+style+sample": ("before", {"generation.random_template": None, "pe.selection": "sample"}),
}


def resolve_variant(name: str) -> dict:
    import copy

    if name in VARIANTS:
        base, over = VARIANTS[name]
    elif "+" in name:  # "after+pe.selection=rank+pe.threshold=2"
        base, *items = name.split("+")
        over = {}
        for it in items:
            k, v = it.split("=", 1)
            over[k] = json.loads(v) if v[:1] in "0123456789-[{tf" else v
    else:
        raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)} (or base+key=value)")
    if base not in ("before", "s2", "after"):
        raise SystemExit(f"unknown base {base!r}: before, s2 or after")
    preset = copy.deepcopy(BEFORE if base == "before" else S2 if base == "s2" else after_preset())
    preset.setdefault("run", {})  # run.iterations / run.population / run.variations override the CLI sizes
    for k, v in over.items():
        sect, key = k.split(".", 1)
        preset.setdefault(sect, {})[key] = v
    return preset


# ---------------------------------------------------------------------------------------------- stack
def stack_configs(fake: bool, llm_threads: int | None) -> dict[str, dict]:
    if fake:
        return {
            "captioner": {"backend": "support.fakes:ColourCaptioner"},
            "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"},
            "text_embedder": {"backend": "support.fakes:BowEmbedder"},
            "llm": {"backend": "support.fakes:ScriptedLLM"},
        }
    llm = {"backend": "llamacpp"}
    if llm_threads:
        llm["n_threads"] = llm_threads
    return {
        "captioner": {"backend": "efficientnet-lite0", "invert": True, "top_k": 3},
        "image_embedder": {"backend": "efficientnet-lite0", "invert": True},
        "text_embedder": {"backend": "sentence-transformers"},
        "llm": llm,
    }


class CachedLLM:
    """Memoises replies per (conversation, per-conversation seed, sampling settings) in a JSONL file. Each
    conversation is sent alone with its derived seed, so a reply does not depend on its batch."""

    def __init__(self, inner, path: Path, ident: str, pause_while: Path | None = None):
        self.inner, self.path, self.ident = inner, path, ident
        self.pause_while = pause_while  # while this path exists, no new LLM call starts (shared machines)
        self.paused = 0.0
        self.memo: dict[str, str] = {}
        self.hits = self.misses = 0
        self.seconds = 0.0
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    r = json.loads(line)
                    self.memo[r["k"]] = r["v"]

    def generate(self, conversations, *, max_new_tokens=64, temperature=1.0, top_p=1.0, seed=None):
        from spti.models.llm import derive_seed

        out = []
        with self.path.open("a", encoding="utf-8") as f:
            for i, conv in enumerate(conversations):
                s = derive_seed(0 if seed is None else seed, i)
                k = hashlib.sha256(json.dumps([self.ident, conv, s, max_new_tokens, temperature, top_p],
                                              sort_keys=True).encode()).hexdigest()
                if k not in self.memo:
                    self._wait()
                    t0 = time.perf_counter()
                    self.memo[k] = self.inner.generate([conv], max_new_tokens=max_new_tokens, temperature=temperature,
                                                       top_p=top_p, seed=s)[0]
                    self.seconds += time.perf_counter() - t0
                    self.misses += 1
                    f.write(json.dumps({"k": k, "v": self.memo[k]}) + "\n")
                    f.flush()
                else:
                    self.hits += 1
                out.append(self.memo[k])
        return out


    def _wait(self) -> None:
        if self.pause_while is None or not self.pause_while.exists():
            return
        t0 = time.perf_counter()
        print(f"[pause] {self.pause_while} exists: waiting before the next LLM call", flush=True)
        while self.pause_while.exists():
            time.sleep(10)
        self.paused += time.perf_counter() - t0
        print(f"[pause] resumed after {time.perf_counter() - t0:.0f} s", flush=True)


# ---------------------------------------------------------------------------------------------- data
def private_mix(footwear: float) -> np.ndarray:
    p = np.full(10, (1.0 - footwear) / 7.0)
    p[list(FOOTWEAR)] = footwear / 3.0
    return p


def build_data(a, stacks: dict, cache: Path) -> dict:
    """Private and pool images, their captions, caption embeddings and image features (cached on disk)."""
    from spti.demo import find_fashion_mnist, load_idx

    key = hashlib.sha256(json.dumps([a.num_private, a.pool_per_class, a.footwear, a.data_seed,
                                     stacks["captioner"], stacks["image_embedder"], stacks["text_embedder"]],
                                    sort_keys=True).encode()).hexdigest()[:12]
    path = cache / f"data-{key}.npz"
    files = find_fashion_mnist()
    rng = np.random.default_rng(a.data_seed)
    test_x, test_y = load_idx(files["test_images"]), load_idx(files["test_labels"], labels=True)
    train_x, train_y = load_idx(files["train_images"]), load_idx(files["train_labels"], labels=True)
    p = private_mix(a.footwear)
    counts = np.floor(p * a.num_private).astype(int)
    counts[np.argsort(-(p * a.num_private - counts))[: a.num_private - counts.sum()]] += 1
    priv_idx = np.concatenate([rng.choice(np.flatnonzero(test_y == c), counts[c], replace=False) for c in range(10)])
    pool_idx = np.concatenate([rng.choice(np.flatnonzero(train_y == c), a.pool_per_class, replace=False) for c in range(10)])
    d = {"priv_y": test_y[priv_idx].astype(np.int64), "pool_y": train_y[pool_idx].astype(np.int64), "p": p}
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        d.update({k: z[k] for k in ("priv_text", "pool_text", "priv_img", "pool_img")})
        d["priv_cap"] = json.loads(str(z["priv_cap"]))
        d["pool_cap"] = json.loads(str(z["pool_cap"]))
        return d
    from PIL import Image

    from spti.models.captioner import build_captioner
    from spti.models.image_embedder import build_image_embedder
    from spti.models.text_embedder import build_text_embedder

    t0 = time.perf_counter()
    pil = lambda xs: [Image.fromarray(x, mode="L").convert("RGB") for x in xs]  # noqa: E731
    cap = build_captioner(stacks["captioner"])
    d["priv_cap"] = _batched(cap.caption, pil(test_x[priv_idx]), 64)
    d["pool_cap"] = _batched(cap.caption, pil(train_x[pool_idx]), 64)
    cap.close()
    emb = build_image_embedder(stacks["image_embedder"])
    d["priv_img"] = np.concatenate([emb.embed(b) for b in _chunks(pil(test_x[priv_idx]), 64)]).astype(np.float32)
    d["pool_img"] = np.concatenate([emb.embed(b) for b in _chunks(pil(train_x[pool_idx]), 64)]).astype(np.float32)
    te = build_text_embedder(stacks["text_embedder"])
    d["priv_text"] = np.asarray(te.embed(d["priv_cap"]), np.float32)
    d["pool_text"] = np.asarray(te.embed(d["pool_cap"]), np.float32)
    np.savez(path, priv_text=d["priv_text"], pool_text=d["pool_text"], priv_img=d["priv_img"], pool_img=d["pool_img"],
             priv_cap=json.dumps(d["priv_cap"]), pool_cap=json.dumps(d["pool_cap"]))
    print(f"[data] captioned and embedded {len(priv_idx)} private + {len(pool_idx)} pool images in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return d


def _chunks(xs, n):
    return [xs[i : i + n] for i in range(0, len(xs), n)]


def _batched(fn, xs, n):
    return [y for b in _chunks(xs, n) for y in fn(b)]


def public_examples(data: dict, k: int, seed: int) -> list[str]:
    """The random API's few-shot examples: captions of ``k`` random *public* pool images (as the demo)."""
    if not k:
        return []
    pick = np.random.default_rng(seed).choice(len(data["pool_cap"]), size=min(k, len(data["pool_cap"])), replace=False)
    return sorted({data["pool_cap"][i] for i in pick})


# ---------------------------------------------------------------------------------------------- metrics
def tv(p: np.ndarray, labels: np.ndarray) -> float:
    q = np.bincount(labels, minlength=10) / max(len(labels), 1)
    return float(0.5 * np.abs(p - q).sum())


def tv_mix(p: np.ndarray, q: np.ndarray) -> float:
    q = q / q.sum() if q.sum() > 0 else np.full(10, 0.1)
    return float(0.5 * np.abs(p - q).sum())


class Space:
    """Everything a run measures with: the retrieval map caption -> pool image, the pool labels, PCA."""

    def __init__(self, data: dict, text_embedder, fd_dims: int = 64):
        from spti.data.cache import FeatureCache
        from spti.pe.candidates import TextCandidateEmbedder
        from spti.pe.histogram import normalize_rows

        self.d = data
        self.text = TextCandidateEmbedder(text_embedder, cache=FeatureCache(), normalize=True)
        self.pool_text = normalize_rows(data["pool_text"])
        self.pool_img = normalize_rows(data["pool_img"])
        self.priv_img = normalize_rows(data["priv_img"])
        self.priv_text = normalize_rows(data["priv_text"])
        mu = self.pool_img.mean(0)
        _, _, vt = np.linalg.svd(self.pool_img - mu, full_matrices=False)
        self.proj = vt[: min(fd_dims, vt.shape[0])].T
        self.mu = mu
        self.priv_proj = (self.priv_img - mu) @ self.proj

    def retrieve(self, texts) -> np.ndarray:
        """Index of the pool image the retrieval renderer returns (top_k = 1; ties -> lowest index)."""
        e = self.text.embed_texts(list(texts))
        return np.argmax(e @ self.pool_text.T, axis=1)

    def fd(self, pool_idx: np.ndarray) -> float:
        from spti.metrics.frechet import feature_stats, frechet_distance

        x = (self.pool_img[pool_idx] - self.mu) @ self.proj
        if len(x) < 2:
            return float("nan")
        import logging

        from spti.log import logger

        lvl = logger.level
        logger.setLevel(logging.ERROR)
        try:
            return float(frechet_distance(*feature_stats(x), *feature_stats(self.priv_proj)))
        finally:
            logger.setLevel(lvl)


class ImageVotes:
    """Image voting through the retrieval renderer: candidate -> nearest pool image -> its features."""

    def __init__(self, space: Space):
        self.space = space

    def __call__(self, texts, *, iteration: int) -> np.ndarray:
        return self.space.pool_img[self.space.retrieve(texts)]


class Recorder:
    """Wraps a candidate embedder and keeps the last features (for the clean-vote diagnostics)."""

    def __init__(self, inner):
        self.inner, self.last = inner, None

    def __call__(self, texts, *, iteration: int) -> np.ndarray:
        self.last = np.asarray(self.inner(texts, iteration=iteration))
        return self.last


def measure_population(space: Space, p: np.ndarray, texts: list[str]) -> dict:
    idx = space.retrieve(texts)
    labels = space.d["pool_y"][idx]
    return {"tv": tv(p, labels), "uniq": len(set(texts)), "imgs": int(len(set(idx.tolist()))),
            "fd64": space.fd(idx), "mix": (np.bincount(labels, minlength=10) / len(labels)).round(3).tolist()}


def measure_votes(space: Space, p: np.ndarray, priv: np.ndarray, feats: np.ndarray, candidates: list[str],
                  noisy: np.ndarray, top: int = 5, threshold: float = 0.0, sigma: float = 0.0, n_pop: int = 40) -> dict:
    from spti.pe.histogram import nearest_candidates
    from spti.pe.selection import threshold_counts

    nn = nearest_candidates(priv, feats, show_progress=False)
    clean = np.bincount(nn, minlength=len(candidates)).astype(float)
    img = space.retrieve(candidates)
    cand_y = space.d["pool_y"][img]
    vote_mix = np.bincount(cand_y, weights=clean, minlength=10)
    kept = threshold_counts(noisy, threshold)  # what selection draws from
    noisy_mix = np.bincount(cand_y, weights=kept, minlength=10)
    order = np.argsort(-clean)
    return {
        "vote_tv": tv_mix(p, vote_mix), "noisy_vote_tv": tv_mix(p, noisy_mix),
        # share of the selection mass on candidates that got no private vote at all (pure noise)
        "noise_share": float(kept[clean == 0].sum() / kept.sum()) if kept.sum() > 0 else 1.0,
        "dup_texts": len(candidates) - len(set(candidates)), "dup_imgs": len(candidates) - len(set(img.tolist())),
        "acc": float(np.mean(cand_y[nn] == space.d["priv_y"])),
        "top5": float(clean[order[:top]].sum() / clean.sum()), "voted": int((clean > 0).sum()),
        "candidates": len(candidates), "distinct_candidates": len(set(candidates)),
        "winners": [[candidates[i], int(clean[i]), int(cand_y[i])] for i in order[:top]],
        "whatif": whatif(p, clean, cand_y, img, sigma, n_pop),
    }


WHATIF_SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0)


def whatif(p: np.ndarray, clean: np.ndarray, cand_y: np.ndarray, img: np.ndarray, sigma: float, n_pop: int,
           draws: int = 40) -> dict:
    """One selection step replayed on this iteration's candidates and clean votes with fresh noise: the mean
    population TV of each rule (sample / systematic) and threshold H = kσ, with all candidates ("all") and
    with only the first candidate of each retrieved image ("img1": what deduplicating by image would do,
    copies receive no vote anyway). Benchmark-only (it uses the clean votes); no LLM call."""
    from spti.pe.selection import select, threshold_counts

    rng = np.random.default_rng(777)
    first = np.zeros(len(img), bool)
    first[np.unique(img, return_index=True)[1]] = True
    out = {}
    for subset, mask in (("all", np.ones(len(img), bool)), ("img1", first)):
        c, y = clean[mask], cand_y[mask]
        for rule in ("sample", "systematic"):
            for k in WHATIF_SIGMAS if sigma > 0 else (0.0,):
                tvs = []
                for _ in range(draws):
                    noisy = c + rng.normal(0, sigma, c.shape) if sigma > 0 else c
                    tvs.append(tv(p, y[select(threshold_counts(noisy, k * sigma), n_pop, rule, rng=rng)]))
                out[f"{subset}/{rule}/{k:g}"] = round(float(np.mean(tvs)), 4)
    return out


# ---------------------------------------------------------------------------------------------- references
def references(a, space: Space, p: np.ndarray, n_pop: int, epsilons: list[float]) -> dict:
    from spti.pe.histogram import nearest_candidates
    from spti.pe.selection import select, threshold_counts
    from spti.privacy import PrivacyBudget

    rng = np.random.default_rng(12345)
    n = len(space.d["priv_y"])
    pool_y = space.d["pool_y"]
    uni = np.full(10, 0.1)
    out = {
        "uniform_exact": tv_mix(p, uni),
        "uniform_sample": float(np.mean([tv(p, rng.choice(pool_y, n_pop)) for _ in range(500)])),
        "ideal_sample": float(np.mean([tv(p, rng.choice(10, n_pop, p=p)) for _ in range(500)])),
        # the same ideal sampler with systematic seats (the floor of `systematic` selection)
        "ideal_systematic": float(np.mean([tv(p, select(p, n_pop, "systematic", rng=rng)) for _ in range(500)])),
        "pool_hist": {},
    }
    for voting, priv, cand in (("text", space.priv_text, space.pool_text), ("image", space.priv_img, space.pool_img)):
        nn = nearest_candidates(priv, cand, show_progress=False)
        clean = np.bincount(nn, minlength=len(pool_y)).astype(float)
        out["pool_hist"][voting] = {"acc": float(np.mean(pool_y[nn] == space.d["priv_y"])),
                                    "vote_tv": tv_mix(p, np.bincount(pool_y, weights=clean, minlength=10))}
        for eps in epsilons:
            # the strong baseline gets the best threshold in hindsight (counts below H = 0, 1 or 2 σ are
            # zeroed) and the better of the two proportional selection rules (independent draws, systematic)
            sigma = 0.0 if math.isinf(eps) else PrivacyBudget.from_epsilon(eps, 1, n).sigma
            by = {}
            for rule in ("sample", "systematic"):
                for h in (0.0, 1.0, 2.0):
                    tvs = []
                    for _ in range(50):
                        noisy = clean + rng.normal(0, sigma, clean.shape) if sigma else clean.copy()
                        idx = select(threshold_counts(noisy, max(h * sigma, 1e-12)), n_pop, rule, rng=rng)
                        tvs.append(tv(p, pool_y[idx]))
                    by[f"{rule}/H={h:g}σ"] = float(np.mean(tvs))
            out["pool_hist"][voting][_eps_key(eps)] = min(by.values())
            out["pool_hist"][voting][f"{_eps_key(eps)}_sample"] = min(v for k, v in by.items() if k.startswith("sample"))
            out["pool_hist"][voting][f"{_eps_key(eps)}_by_rule_and_threshold"] = by
    return out


def _eps_key(eps: float) -> str:
    return "inf" if math.isinf(eps) else f"{eps:g}"


# ---------------------------------------------------------------------------------------------- one run
def run_one(a, data, space: Space, llm, preset: dict, voting: str, eps: float, seed: int) -> list[dict]:
    from spti.config import GenerationConfig, PEConfig
    from spti.pe.engine import PrivateEvolution
    from spti.pe.generation import TextGenerator
    from spti.privacy import NoiseSource, PrivacyBudget

    p = data["p"]
    n = len(data["priv_y"])
    sizes = run_sizes(a, preset)
    sigma = 0.0 if math.isinf(eps) else PrivacyBudget.from_epsilon(eps, sizes["iterations"], n).sigma
    pe_fields = {f.name for f in dataclasses.fields(PEConfig)}
    pe_over = {k: v for k, v in preset["pe"].items() if k in pe_fields}
    # the threshold in units of σ, applied here as the absolute H it stands for (the same thing, whether or
    # not this engine version reads pe.threshold_sigmas itself)
    from spti.pe.selection import effective_threshold

    h = effective_threshold(PEConfig(**pe_over), sigma)
    pe_over.update(threshold=h, **({"threshold_sigmas": 0.0} if "threshold_sigmas" in pe_fields else {}))
    pe = PEConfig(**{**pe_over, **sizes, "voting": voting})
    k = preset["num_examples"] if a.num_examples is None else a.num_examples
    gen = GenerationConfig(**{**preset["generation"], "examples": public_examples(data, k, a.data_seed)})
    generator = TextGenerator(llm, gen, seed=seed)
    if voting == "text":
        from spti.pe.candidates import TextCandidateEmbedder

        inner = TextCandidateEmbedder(space.text.embedder, cache=space.text.cache, generator=generator,
                                      lookahead=pe.lookahead, normalize=True)
        priv = space.priv_text
    else:
        inner = ImageVotes(space)
        priv = space.priv_img
    rec = Recorder(inner)
    rows: list[dict] = []

    def on_iteration(r) -> None:
        row = {"t": r.iteration, **measure_population(space, p, r.population)}
        if r.candidates is not None and rec.last is not None:
            feats = rec.last if voting == "image" else space.text.embed_texts(r.candidates)
            noisy = r.noisy_counts
            if copies:
                from spti.pe.dedup import drop_copy_counts

                noisy = drop_copy_counts(noisy, rec.last)
            row.update(measure_votes(space, p, priv, feats, r.candidates, noisy, threshold=h, sigma=sigma,
                                     n_pop=pe.population))
        rows.append(row)

    copies = bool(preset.get("bench", {}).get("feature_dedup", False))
    with tempfile.TemporaryDirectory() as tmp, _dedup_hook(pe), _copy_counts_hook(rec, copies):
        PrivateEvolution(cfg=pe, generator=generator, embed_candidates=rec, private_features=priv, weights=None,
                         sigma=sigma, noise=NoiseSource(insecure_seed=1000 + seed), checkpoint_dir=tmp, seed=seed,
                         stats=Counter(), on_iteration=on_iteration).run()
    for r in rows:
        r["sigma"] = sigma
        r["threshold"] = h
    return rows


@contextlib.contextmanager
def _copy_counts_hook(rec, enabled: bool):
    """``bench.feature_dedup``: zero the noisy counts of candidates whose features copy an earlier
    candidate's (:func:`spti.pe.dedup.drop_copy_counts`) before selection, for an engine that does not do it
    itself: the engine thresholds right after voting, so the recorder still holds this histogram's features."""
    import inspect

    import spti.pe.engine as engine

    if not enabled or "drop_copy_counts" in inspect.getsource(engine):
        yield
        return
    from spti.pe.dedup import drop_copy_counts

    original = engine.threshold_counts

    def threshold(noisy, h):
        if rec.last is not None and len(rec.last) == len(noisy):
            noisy = drop_copy_counts(noisy, rec.last)
        return original(noisy, h)

    engine.threshold_counts = threshold
    try:
        yield
    finally:
        engine.threshold_counts = original


def run_sizes(a, preset: dict) -> dict:
    """Population, iterations and variations of a run: the CLI's, unless the variant sets ``run.*``."""
    r = preset.get("run", {})
    return {"iterations": int(r.get("iterations", a.iterations)), "population": int(r.get("population", a.population)),
            "variations": int(r.get("variations", a.variations))}


@contextlib.contextmanager
def _dedup_hook(pe):
    """Candidate dedup (``pe.dedup``) for an engine that does not call :mod:`spti.pe.dedup` yet: the engine
    writes ``candidates.jsonl`` from the same list it then votes on, so deduplicating that list in place at
    the write is what the engine's own call does. A no-op once the engine calls the module itself."""
    import inspect

    import spti.pe.engine as engine

    if "dedup" in inspect.getsource(engine) or not getattr(pe, "dedup", False):
        yield
        return
    from spti.pe.dedup import dedup_candidate_rows

    original = engine.atomic_write_jsonl

    def write(path, rows, *args, **kw):
        if Path(path).name == "candidates.jsonl" and isinstance(rows, list):
            rows[:] = dedup_candidate_rows(rows, pe)
        return original(path, rows, *args, **kw)

    engine.atomic_write_jsonl = write
    try:
        yield
    finally:
        engine.atomic_write_jsonl = original


# ---------------------------------------------------------------------------------------------- output
def summarise(results: list[dict]) -> dict:
    """Mean and sd over seeds of each metric, per (variant, voting, eps, t)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        for row in r["rows"]:
            groups.setdefault((r["variant"], r["voting"], r["eps"], row["t"]), []).append(row)
    out = {}
    for k, rows in groups.items():
        m = {}
        for key in ("tv", "vote_tv", "noisy_vote_tv", "acc", "top5", "voted", "uniq", "imgs", "fd64", "noise_share",
                    "dup_texts", "dup_imgs", "candidates", "seconds"):
            vals = [x[key] for x in rows if key in x]
            if vals:
                m[key] = (float(np.mean(vals)), float(np.std(vals)), len(vals))
        out[k] = m
    return out


def print_tables(summary: dict, refs: dict, a) -> None:
    print()
    print(f"references (population {a.population}): uniform pool TV {refs['uniform_exact']:.3f} exact, "
          f"{refs['uniform_sample']:.3f} with {a.population} draws; ideal sampler of the private mix "
          f"{refs['ideal_sample']:.3f} (systematic seats {refs.get('ideal_systematic', float('nan')):.3f})")
    for v, r in refs["pool_hist"].items():
        eps = ", ".join(f"ε={k}: {r[k]:.3f}" for k in r if k not in ("acc", "vote_tv") and "_" not in k)
        print(f"pool-hist ({v} voting, pool images as candidates, T=1): vote accuracy {r['acc']:.3f}, clean vote "
              f"mix TV {r['vote_tv']:.3f}; population TV {eps}")
    hdr = (f"{'variant':<28}{'vote':>6}{'eps':>5}{'t':>3}{'TV':>13}{'voteTV':>8}{'noisyTV':>8}{'acc':>6}{'top5':>6}"
           f"{'voted':>6}{'uniq':>6}{'imgs':>6}{'FD64':>7}{'n':>3}")
    print(hdr)
    print("-" * len(hdr))
    for (variant, voting, eps, t), m in sorted(summary.items(), key=lambda kv: (kv[0][0], kv[0][1], -_num(kv[0][2]), kv[0][3])):
        g = lambda k, f="{:.3f}", m=m: f.format(m[k][0]) if k in m else "-"  # noqa: E731
        tvs = f"{m['tv'][0]:.3f}±{m['tv'][1]:.3f}"
        print(f"{variant:<28}{voting:>6}{eps:>5}{t:>3}{tvs:>13}{g('vote_tv'):>8}{g('noisy_vote_tv'):>8}{g('acc', '{:.2f}'):>6}"
              f"{g('top5', '{:.2f}'):>6}{g('voted', '{:.0f}'):>6}{g('uniq', '{:.0f}'):>6}{g('imgs', '{:.0f}'):>6}"
              f"{g('fd64', '{:.2f}'):>7}{m['tv'][2]:>3}")


def _num(e: str) -> float:
    return math.inf if e == "inf" else float(e)


def plot(summary: dict, refs: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no curves.png")
        return
    keys = sorted({(k[1], k[2]) for k in summary})
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4.2 * max(1, len(keys)), 3.6), squeeze=False)
    for ax, (voting, eps) in zip(axes[0], keys):
        for variant in sorted({k[0] for k in summary}):
            pts = sorted((k[3], m["tv"]) for k, m in summary.items() if k[:3] == (variant, voting, eps))
            if pts:
                ax.errorbar([t for t, _ in pts], [v[0] for _, v in pts], yerr=[v[1] for _, v in pts], marker="o",
                            capsize=3, label=variant)
        ax.axhline(refs["uniform_sample"], color="grey", ls="--", label="uniform pool")
        ax.axhline(refs["ideal_sample"], color="green", ls=":", label="ideal sampler")
        ph = refs["pool_hist"][voting].get(eps)
        if ph is not None:
            ax.axhline(ph, color="red", ls="-.", label="pool-hist (T=1)")
        ax.set_title(f"{voting} voting, ε={eps}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("class-mix TV to private")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def merge(a) -> int:
    """Combine the runs of several benchmark invocations (same data and sizes) into one table and plot."""
    results, refs, metas = [], None, []
    for folder in a.merge.split(","):
        r = json.loads((Path(folder) / "results.json").read_text())
        results += r["runs"]
        metas.append(r["meta"])
        if refs is None:
            refs = r["references"]
        else:
            for v, d in r["references"]["pool_hist"].items():
                refs["pool_hist"][v].update(d)
    sizes = {k: metas[0]["args"][k] for k in ("num_private", "pool_per_class", "footwear", "population", "iterations", "variations")}
    for m in metas[1:]:
        if {k: m["args"][k] for k in sizes} != sizes:
            raise SystemExit("cannot merge runs of different sizes")
    a.population = sizes["population"]
    summary = summarise(results)
    print_tables(summary, refs, a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    summary_json = [{"variant": k[0], "voting": k[1], "eps": k[2], "t": k[3], **{m: list(v) for m, v in s.items()}}
                    for k, s in sorted(summary.items())]
    (out / "results.json").write_text(json.dumps({"meta": {"merged": a.merge, "sizes": sizes, "parts": metas},
                                                  "references": refs, "summary": summary_json, "runs": results},
                                                 indent=1, default=float))
    plot(summary, refs, out / "curves.png")
    print(f"merged {len(results)} runs into {out}/results.json and {out}/curves.png")
    return 0


# ---------------------------------------------------------------------------------------------- main
def caption_space(data: dict, text_embedder) -> int:
    """Nearest-neighbour accuracy of the private set against the pool (does the nearest pool item have the
    voter's class?) in caption space — the full captions, without their template ("a photo of a"), as a
    comma list, by label overlap alone — and in image space. Caption votes cannot do better than this with
    perfect candidates (the pool's own captions)."""
    import re

    def acc(p: np.ndarray, q: np.ndarray) -> float:
        p = p / np.linalg.norm(p, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        return float(np.mean(data["pool_y"][np.argmax(p @ q.T, axis=1)] == data["priv_y"]))

    def strip(c: str) -> str:
        return re.sub(r"^a photo of an? ", "", c)

    def comma(c: str) -> str:
        return strip(c).replace(" and ", ", ")

    rows = [("caption, as written", acc(data["priv_text"], data["pool_text"]))]
    for name, f in (("caption without 'a photo of a'", strip), ("caption as a comma list", comma)):
        priv = np.asarray(text_embedder.embed([f(c) for c in data["priv_cap"]]), np.float32)
        pool_t = np.asarray(text_embedder.embed([f(c) for c in data["pool_cap"]]), np.float32)
        rows.append((name, acc(priv, pool_t)))
    labels = lambda c: {x.strip() for x in comma(c).split(",")}  # noqa: E731
    pool = [labels(c) for c in data["pool_cap"]]
    nn = [max(range(len(pool)), key=lambda j: len(labels(c) & pool[j])) for c in data["priv_cap"]]
    rows.append(("label overlap (no embedder)", float(np.mean(data["pool_y"][nn] == data["priv_y"]))))
    rows.append(("image features", acc(data["priv_img"], data["pool_img"])))
    print("nearest pool item of each private item has the same class (chance 0.10):")
    for name, v in rows:
        print(f"  {name:<34} {v:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/bench-quality")
    ap.add_argument("--cache", help="folder for the data features and LLM replies (default: <out>/cache)")
    ap.add_argument("--num-private", type=int, default=500)
    ap.add_argument("--pool-per-class", type=int, default=100)
    ap.add_argument("--footwear", type=float, default=0.7)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--population", type=int, default=40)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--variations", type=int, default=2)
    ap.add_argument("--epsilons", default="inf,4,1")
    ap.add_argument("--voting", default="text,image")
    ap.add_argument("--variants", default="before,after")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--cells", help="explicit runs instead of the grid: variant/voting/eps,... (in this order)")
    ap.add_argument("--num-examples", type=int, default=None,
                    help="public pool captions given as few-shot examples (default: the variant's; before 8, after the demo's)")
    ap.add_argument("--llm-threads", type=int, default=None)
    ap.add_argument("--llm-cache-key", help="identity the LLM reply cache is keyed by (default: the llm config "
                    "without n_threads; the December 2026 cache was written as '{\"backend\": \"llamacpp\", \"n_threads\": 2}')")
    ap.add_argument("--pause-while", help="no new LLM call starts while this path exists (e.g. /work/notes/QUIET)")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--fake", action="store_true", help="the test fakes instead of the offline models (smoke test)")
    ap.add_argument("--winners", action="store_true", help="print the most-voted candidates of each iteration")
    ap.add_argument("--merge", help="only combine the results.json of these output folders (comma-separated) into --out")
    ap.add_argument("--caption-space", action="store_true",
                    help="only print how well the private captions find a pool image of their own class (nearest "
                         "neighbour in caption space, with and without the caption template; image space): the "
                         "ceiling of caption votes with perfect candidates")
    a = ap.parse_args(argv)
    if a.merge:
        return merge(a)

    import logging

    from spti.log import logger, set_progress

    logger.setLevel(logging.ERROR)
    set_progress(False)
    if a.fake:
        sys.path.insert(0, str(ROOT / "tests"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(a.cache) if a.cache else out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    stacks = stack_configs(a.fake, a.llm_threads)
    data = build_data(a, stacks, cache)
    if not a.fake:
        import torch

        torch.set_num_threads(a.torch_threads)
    from spti.models.llm import build_llm
    from spti.models.text_embedder import build_text_embedder

    if a.caption_space:
        return caption_space(data, build_text_embedder(stacks["text_embedder"]))
    space = Space(data, build_text_embedder(stacks["text_embedder"]))
    # the cache key leaves n_threads out (it changes the speed; replies are samples of the same model, prompt
    # and seed either way) unless --llm-cache-key names another identity (e.g. an older cache's)
    ident = a.llm_cache_key or json.dumps({k: v for k, v in stacks["llm"].items() if k != "n_threads"}, sort_keys=True)
    llm = CachedLLM(build_llm(stacks["llm"]), cache / "llm-replies.jsonl", ident,
                    pause_while=Path(a.pause_while) if a.pause_while else None)
    epsilons = [float(e) for e in a.epsilons.split(",")]
    refs = references(a, space, data["p"], a.population, epsilons)
    results = []
    t_start = time.perf_counter()
    if a.cells:
        cells = [(c.split("/")[0], c.split("/")[1], float(c.split("/")[2])) for c in a.cells.split(",")]
        epsilons = sorted({e for _, _, e in cells})
        refs = references(a, space, data["p"], a.population, epsilons)
    else:
        cells = [(v, vo, e) for v in a.variants.split(",") for vo in a.voting.split(",") for e in epsilons]
    variants = list(dict.fromkeys(c[0] for c in cells))
    for seed in [int(s) for s in a.seeds.split(",")]:
        for variant, voting, eps in cells:
            preset = resolve_variant(variant)
            t0, m0, p0 = time.perf_counter(), llm.misses, llm.paused
            rows = run_one(a, data, space, llm, preset, voting, eps, seed)
            seconds = round(time.perf_counter() - t0 - (llm.paused - p0), 1)
            rows[-1]["seconds"] = seconds
            results.append({"variant": variant, "voting": voting, "eps": _eps_key(eps), "seed": seed, "rows": rows,
                            "seconds": seconds, "new_llm_replies": llm.misses - m0, "sizes": run_sizes(a, preset)})
            with (out / "runs.jsonl").open("a", encoding="utf-8") as f:  # each run as soon as it is done
                f.write(json.dumps(results[-1], default=float) + "\n")
            last = rows[-1]
            print(f"[run] {variant:<24} {voting:>5} eps={_eps_key(eps):>3} seed={seed}: TV t0 {rows[0]['tv']:.3f} -> "
                  f"t{last['t']} {last['tv']:.3f} (uniq {last['uniq']}, imgs {last['imgs']}); "
                  f"{llm.misses - m0} new LLM replies, {seconds:.0f} s", flush=True)
            for r in rows:
                extra = (f" vote_tv {r['vote_tv']:.3f} noisy_vote_tv {r['noisy_vote_tv']:.3f} acc {r['acc']:.2f} "
                         f"top5 {r['top5']:.2f} voted {r['voted']}/{r['candidates']} noise_share "
                         f"{r['noise_share']:.2f} dup_texts {r['dup_texts']} dup_imgs {r['dup_imgs']}") if "acc" in r else ""
                print(f"    t{r['t']} tv {r['tv']:.3f} uniq {r['uniq']} imgs {r['imgs']} fd64 {r['fd64']:.2f} mix {r['mix']}{extra}")
                if a.winners and "winners" in r:
                    print(f"       winners (text, votes, class): {r['winners']}")
    summary = summarise(results)
    print_tables(summary, refs, a)
    prompts = ROOT / "src" / "spti" / "prompts" / "default.yaml"
    meta = {"args": vars(a), "private_mix": data["p"].tolist(), "llm_replies_new": llm.misses,
            "prompts_sha256": hashlib.sha256(prompts.read_bytes()).hexdigest() if prompts.is_file() else None,
            "llm_seconds": round(llm.seconds, 1), "wall_seconds": round(time.perf_counter() - t_start, 1),
            "variants": {v: resolve_variant(v) for v in variants}}
    summary_json = [{"variant": k[0], "voting": k[1], "eps": k[2], "t": k[3], **{m: list(v) for m, v in s.items()}}
                    for k, s in sorted(summary.items())]
    (out / "results.json").write_text(json.dumps({"meta": meta, "references": refs, "summary": summary_json,
                                                  "runs": results}, indent=1, default=float))
    plot(summary, refs, out / "curves.png")
    print(f"\n{llm.misses} new LLM replies ({llm.seconds:.0f} s, {llm.seconds / max(llm.misses, 1):.2f} s each), "
          f"{llm.hits} from the cache; results in {out}/results.json and {out}/curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
