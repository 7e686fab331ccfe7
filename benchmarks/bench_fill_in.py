"""How often does the demo's small LLM leave the blanks of a fill-in prompt unfilled? (issue 13)

    python benchmarks/bench_fill_in.py                        # ~10 min on 2 idle cores
    python benchmarks/bench_fill_in.py --parents 20 --variants current,example

Why: with SmolLM2-135M, ~45 % of the demo's fill-in replies came back with a ``_`` left in them
(``unfilled_blanks``) and were asked again: a third of the demo's LLM time was spent on retries.
Variants: fill-in templates, the demo's mask share, and rephrase mode (``kept`` then compares the reply
with the whole parent).

What it does: the demo's random API (``spti demo``'s generation settings, 64 public example captions of
Fashion-MNIST *train* images by the demo's captioner) writes ``--parents`` captions once; then each
fill-in template variant gets exactly the same variation requests (same parents, same masks, same target
lengths, same sampling seeds: the masks do not depend on the template) through spti's own
:class:`~spti.pe.generation.TextGenerator`, retries included. Reported per variant: the replies' reject
reasons on the first attempt, LLM calls per usable variation (retries included), variations that fell
back to their parent, and ``kept``: the share of the words shown in the prompt that the reply keeps
(a template that makes the model ignore the caption would fill no blanks and keep nothing).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

_BEFORE = ("Fill in the blanks (_) in this caption of {domain} to make one complete, natural caption of about "
           "{length} words. Keep the words that are given.\n\n{masked}\n\nCaption:")
#: Variants: overrides of the demo's generation settings (a fill-in template keeps the default's layout
#: "instruction\n\n{masked}\n\ninstruction": the test fakes read the parent between the blank lines).
VARIANTS: dict[str, dict] = {
    "current": {},  # src/spti/prompts/default.yaml as it is now
    "before": {"fill_in_template": _BEFORE},  # the default until issue 13
    "example": {"fill_in_template": (
        "Fill in the blanks (_) in this caption of {domain}: replace every _ with one or a few words and keep the "
        "other words, about {length} words in all. Write the whole caption, with no _ left in it.\n"
        "Example: \"a _ dog on _ beach\" becomes \"a brown dog on a sunny beach\".\n\n{masked}\n\nCaption:")},
    "complete": {"fill_in_template": (
        "Complete this caption of {domain}. Each _ marks missing words: write the whole caption with words in place "
        "of every _, about {length} words.\n\n{masked}\n\nComplete caption:")},
    # the instruction after the caption (small models follow the last words best)
    "after": {"fill_in_template": (
        "Here is a caption of {domain} with missing words, each marked _:\n\n{masked}\n\nWrite this caption again "
        "with a fitting word in place of every _, so that no _ is left; about {length} words. Caption:")},
    "mask0.25": {"mask_prob": 0.25},
    "mask0.35": {"mask_prob": 0.35},
    "rephrase": {"variation_mode": "rephrase"},
}


class _FirstCall:
    """Passes calls to the LLM and keeps the conversations and replies of the first one."""

    def __init__(self, llm):
        self.llm, self.convs, self.replies = llm, None, None

    def generate(self, conversations, **kw):
        out = self.llm.generate(conversations, **kw)
        if self.convs is None:
            self.convs, self.replies = list(conversations), list(out)
        return out


def kept_share(masked: str, reply: str) -> float:
    """Share of the prompt's shown words (not blanks) that appear in the reply."""
    shown = [w for w in re.findall(r"[a-z]+", masked.lower()) if len(w) > 2]
    if not shown:
        return 1.0
    got = set(re.findall(r"[a-z]+", reply.lower()))
    return sum(w in got for w in shown) / len(shown)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parents", type=int, default=40)
    ap.add_argument("--variations", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--parents-file", help="JSON list of parents: read if it exists (same parents across runs), "
                    "else written")
    a = ap.parse_args(argv)

    import logging

    import numpy as np

    from spti.config import Config, GenerationConfig
    from spti.demo import _public_examples, demo_config, find_fashion_mnist, load_idx
    from spti.log import logger, set_progress
    from spti.models.llm import build_llm
    from spti.pe.generation import TextGenerator
    from spti.text import clean_caption

    logger.setLevel(logging.ERROR)
    set_progress(False)
    files = find_fashion_mnist()
    train_x = load_idx(files["train_images"])
    rng = np.random.default_rng(a.seed)
    pool_idx = np.sort(rng.choice(len(train_x), 1000, replace=False))
    examples = _public_examples(train_x, pool_idx, 64, rng)
    base = Config.from_dict(demo_config("unused", population=a.parents, iterations=1, variations=a.variations,
                                        epsilon=1.0, voting="image", seed=a.seed, progress=False,
                                        examples=examples)).generation
    llm = build_llm({"backend": "llamacpp"})
    t0 = time.perf_counter()
    if a.parents_file and Path(a.parents_file).is_file():
        parents = json.loads(Path(a.parents_file).read_text(encoding="utf-8"))[: a.parents]
    else:
        parents = TextGenerator(llm, base, seed=a.seed).random(a.parents, iteration=0)
        if a.parents_file:
            Path(a.parents_file).write_text(json.dumps(parents, indent=1), encoding="utf-8")
    print(f"{len(parents)} parents from the random API in {time.perf_counter() - t0:.0f} s, e.g. {parents[:3]}")

    results = {}
    for name in a.variants.split(","):
        gen_cfg = GenerationConfig(**{**base.__dict__, **VARIANTS[name]})
        stats: Counter = Counter()
        rec = _FirstCall(llm)
        gen = TextGenerator(rec, gen_cfg, seed=a.seed, stats=stats)
        flat = [p for p in parents for _ in range(a.variations)]
        t0 = time.perf_counter()
        gen.variations(parents, a.variations, iteration=1)  # retries included
        convs, raw = rec.convs, rec.replies  # the first attempt: every request once
        first = Counter(clean_caption(r, min_words=min(3, gen_cfg.min_length),
                                      max_words=max(2 * gen_cfg.max_length, 20))[1] for r in raw)
        masked = [c[-1]["content"].split("\n\n")[1] for c in convs]
        kept = float(np.mean([kept_share(m, r) for m, r in zip(masked, raw)]))
        n = len(flat)
        calls = stats["variation.llm_calls"]
        results[name] = {
            "first_attempt": dict(first), "unfilled_first": first["unfilled_blanks"] / n, "ok_first": first["ok"] / n,
            "calls_per_variation": calls / n, "fell_back": stats["variation.fell_back_to_parent"],
            "rejected": {k.split(".")[-1]: v for k, v in stats.items() if ".rejected." in k},
            "kept": kept, "seconds": time.perf_counter() - t0,
            "samples": [[m, r] for m, r in list(zip(masked, raw))[:6]],
        }
        r = results[name]
        print(f"[{name}] first attempt: ok {r['ok_first']:.0%}, unfilled_blanks {r['unfilled_first']:.0%} "
              f"({dict(first)}); {r['calls_per_variation']:.2f} LLM calls per variation, {r['fell_back']} fell back "
              f"to the parent; kept {kept:.0%} of the shown words; {r['seconds']:.0f} s", flush=True)
    print("\n| template | ok, 1st attempt | unfilled_blanks, 1st attempt | LLM calls per variation | fell back "
          "| shown words kept |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['ok_first']:.0%} | {r['unfilled_first']:.0%} | {r['calls_per_variation']:.2f} "
              f"| {r['fell_back']} | {r['kept']:.0%} |")
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump({"args": vars(a), "parents": parents, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
