"""PE's random and variation APIs on top of any :class:`spti.models.llm.LLM`.

Random API: the LLM writes a caption of the domain, steered by randomly drawn diversity attributes and
tones (the Aug-PE recipe). Variation API: fill-in-the-blanks (a fraction ``mask_prob`` of the parent's words
masked; target length = parent length + Gaussian noise, at least ``min_length``) or rephrase-with-tone.
Neither API ever sees private data: few-shot examples come from ``generation.examples``, which must be public
text or already-DP output.

All randomness here (attributes, masks, target lengths, LLM sampling seeds) derives from the run's seed and
the (iteration, stage) it is used in, so a resumed run generates exactly what the uninterrupted run would.

Labelled runs (class-conditional PE): every call may name a class (``label=c``). Its prompts then carry the
class description (``descriptions[c]``, from ``classes:`` in the config; default the label name) as the
``{class}`` template variable; a template that does not use ``{class}`` gets it through ``{domain}``, written
with the ``class_domain`` template (``a photo of the class "dress"``), so the default and the users' own
templates reach the LLM with the class either way. Each class has its own random streams — the stage keys
gain ``("class", c)`` — so class c's captions depend only on (seed, iteration, c, its parents), not on the
other classes' sizes; a call without a label uses exactly the unlabelled streams and prompts.
"""

from __future__ import annotations

import functools
import hashlib
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np

from spti.config import GenerationConfig
from spti.errors import BackendError
from spti.log import logger
from spti.models.llm import LLM
from spti.prompts import default_templates
from spti.text import clean_caption


def stage_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A generator for one (iteration, stage): independent of every other stage and of call order."""
    ints = [int(hashlib.sha256(str(k).encode()).hexdigest()[:8], 16) if isinstance(k, str) else int(k) for k in keys]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=tuple(ints))))


class TextGenerator:
    """Random and variation APIs with output cleaning and bounded retries."""

    def __init__(self, llm: LLM, cfg: GenerationConfig, *, seed: int = 0, stats: Counter | None = None,
                 descriptions: Sequence[str] | None = None):
        """``descriptions``: per class, the text the prompts of that class carry (labelled runs only; the
        calls with ``label=c`` use ``descriptions[c]``)."""
        self.llm = llm
        self.cfg = cfg
        self.seed = int(seed)
        self.stats: Counter = stats if stats is not None else Counter()
        self.descriptions = list(descriptions) if descriptions is not None else None
        t = default_templates()
        self.system = cfg.system_prompt if cfg.system_prompt is not None else t["system"]
        self.random_template = cfg.random_template or t["random"]
        # with public example captions, the random API imitates them (the captioner's own style, which is
        # what the private captions look like); an explicit random_template is used as given
        self.random_examples_template = cfg.random_template or t["random_examples"]
        self.fill_in_template = cfg.fill_in_template or t["fill_in"]
        self.rephrase_template = cfg.rephrase_template or t["rephrase"]
        self.examples_template = t["examples"]
        self.class_domain_template = t["class_domain"]
        # labelled runs with public examples: the examples are of any class, so the class is named apart
        self.random_examples_class_template = cfg.random_template or t["random_examples_class"]
        #: what makes a reply a caption, or rejects it (picklable: the render stream runs it on LLM replicas)
        self.clean = functools.partial(clean_caption, min_words=min(3, cfg.min_length),
                                       max_words=max(2 * cfg.max_length, 20))
        #: image voting: a :class:`spti.pe.stream.RenderStream` that renders and embeds each round's replies
        #: while the LLM writes the rest (set by the image-voting candidate factory); None: plain calls
        self.stream = None

    # ------------------------------------------------------------------ prompts
    def _conv(self, user: str) -> list[dict[str, str]]:
        conv = []
        if self.system:
            conv.append({"role": "system", "content": self.system})
        conv.append({"role": "user", "content": user})
        return conv

    def _target_length(self, rng: np.random.Generator, base: float) -> int:
        n = int(round(base + rng.normal(0.0, self.cfg.length_std)))
        return int(min(max(n, self.cfg.min_length), self.cfg.max_length))

    def _description(self, label: int | None) -> str | None:
        if label is None:
            return None
        if self.descriptions is None or not 0 <= int(label) < len(self.descriptions):
            raise ValueError(f"no class description for label {label!r}")
        return self.descriptions[int(label)]

    def _class_fields(self, template: str, description: str | None) -> dict[str, str]:
        """``{domain}`` and ``{class}`` for one prompt. Unlabelled: both the domain (so a template written
        with ``{class}`` still reads well). Labelled: ``{class}`` is the class description; ``{domain}`` is
        the plain domain when the template names ``{class}`` itself, else the domain with the class."""
        domain = self.cfg.domain
        if description is None:
            return {"domain": domain, "class": domain}
        if not _uses_field(template, "class"):
            domain = _format(self.class_domain_template, {"domain": domain, "class": description})
        return {"domain": domain, "class": description}

    def random_prompts(self, n: int, rng: np.random.Generator, *, label: int | None = None) -> list[list[dict[str, str]]]:
        cfg = self.cfg
        description = self._description(label)
        imitate = bool(cfg.examples) and cfg.random_template is None  # the examples template: their length too
        typical = float(np.mean([len(e.split()) for e in cfg.examples])) if imitate else 15.0
        base_len = float(np.clip(typical, cfg.min_length, cfg.max_length))
        if not cfg.examples:
            template = self.random_template
        else:
            template = self.random_examples_template if label is None else self.random_examples_class_template
        named = self._class_fields(template, description)  # attributes named "domain" still win, as before
        convs = []
        for _ in range(n):
            fields: dict[str, str] = {**named, "tone": str(rng.choice(cfg.tones)) if cfg.tones else "plain"}
            for key, values in cfg.attributes.items():
                fields[key] = str(values[rng.integers(len(values))])
            fields.setdefault("focus", "what it shows")
            fields["length"] = str(self._target_length(rng, base_len))
            if cfg.examples:
                k = min(cfg.examples_per_prompt, len(cfg.examples))
                picks = [cfg.examples[i] for i in rng.choice(len(cfg.examples), size=k, replace=False)]
                fields["examples"] = self.examples_template.format(items="; ".join(f'"{e}"' for e in picks))
                fields["example_lines"] = "\n".join(picks)
            else:
                fields["examples"] = ""
            convs.append(self._conv(_format(template, fields)))
        return convs

    def variation_prompts(self, parents: Sequence[str], rng: np.random.Generator, *,
                          label: int | None = None) -> list[list[dict[str, str]]]:
        cfg = self.cfg
        description = self._description(label)
        convs = []
        for text in parents:
            words = text.split()
            length = self._target_length(rng, len(words))
            mode = cfg.variation_mode
            if mode == "mixed":
                mode = "fill_in" if rng.random() < 0.5 else "rephrase"
            tone = str(rng.choice(cfg.tones)) if cfg.tones else "plain"
            if mode == "fill_in":
                masked = mask_words(words, cfg.mask_prob, rng)
                prompt = _format(self.fill_in_template, {**self._class_fields(self.fill_in_template, description),
                                                         "length": str(length), "masked": masked, "tone": tone})
            else:
                prompt = _format(self.rephrase_template, {**self._class_fields(self.rephrase_template, description),
                                                          "length": str(length), "text": text, "tone": tone})
            convs.append(self._conv(prompt))
        return convs

    # ------------------------------------------------------------------ APIs
    def random(self, n: int, *, iteration: int = 0, label: int | None = None) -> list[str]:
        """``n`` cleaned random captions (of class ``label``, labelled runs). Rejected outputs are retried up
        to ``max_retries`` times with new prompts; if some still fail, valid captions are reused to fill the
        population (counted)."""
        keys = _stage_keys("random", label)
        rng = stage_rng(self.seed, iteration, *keys)
        convs = self.random_prompts(n, rng, label=label)
        texts = self._generate_with_retries(convs, lambda idx, r: self.random_prompts(len(idx), r, label=label),
                                            iteration, "random", rng, keys=keys)
        valid = [t for t in texts if t is not None]
        if not valid:
            raise BackendError(
                f"the LLM produced no usable caption for {n} random prompts after {self.cfg.max_retries} retries "
                f"(reject reasons: {self._reject_summary('random')}). Check the model and generation settings."
            )
        missing = [i for i, t in enumerate(texts) if t is None]
        for j, i in enumerate(missing):
            texts[i] = valid[int(rng.integers(len(valid)))] if valid else valid[j % len(valid)]
        if missing:
            self.stats["random.filled_with_duplicates"] += len(missing)
            logger.warning("random API: %d of %d prompts gave no usable caption; reused valid ones", len(missing), n)
        return [t for t in texts if t is not None]

    def variations(self, parents: Sequence[str], k: int, *, iteration: int, stage: str = "variation",
                   label: int | None = None) -> list[list[str]]:
        """``k`` cleaned variations of each parent (``result[i][j]`` is variation j of parent i), all of
        class ``label`` in labelled runs. A variation that still fails after the retries falls back to the
        parent itself (counted)."""
        if k <= 0 or not parents:
            return [[] for _ in parents]
        keys = _stage_keys(stage, label)
        rng = stage_rng(self.seed, iteration, *keys)
        flat_parents = [p for p in parents for _ in range(k)]
        convs = self.variation_prompts(flat_parents, rng, label=label)
        texts = self._generate_with_retries(
            convs, lambda idx, r: self.variation_prompts([flat_parents[i] for i in idx], r, label=label),
            iteration, stage, rng, keys=keys, known=parents,
        )
        fallback = 0
        for i, t in enumerate(texts):
            if t is None:
                texts[i] = flat_parents[i]
                fallback += 1
        if fallback:
            self.stats[f"{stage}.fell_back_to_parent"] += fallback
            logger.warning("%s API: %d of %d variations unusable after retries; kept the parent text", stage, fallback, len(texts))
        return [texts[i * k : (i + 1) * k] for i in range(len(parents))]  # type: ignore[misc]

    # ------------------------------------------------------------------ internals
    def _generate_with_retries(self, convs, remake, iteration: int, stage: str, rng,
                               keys: tuple[int | str, ...] | None = None,
                               known: Sequence[str] = ()) -> list[str | None]:
        """``stage`` names the statistics; ``keys`` (default ``(stage,)``) the random streams; ``known``: texts
        whose renders exist already (the parents), which a render stream does not render again."""
        cfg = self.cfg
        keys = (stage,) if keys is None else keys
        out: list[str | None] = [None] * len(convs)
        todo = list(range(len(convs)))
        current = convs
        for attempt in range(cfg.max_retries + 1):
            seed = int(stage_rng(self.seed, iteration, *keys, "llm", attempt).integers(2**31 - 1))
            if self.stream is not None:
                raw = self.stream.generate(current, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                           top_p=cfg.top_p, seed=seed, clean=self.clean, known=known,
                                           desc=f"{stage} API (iteration {iteration})", stage=stage)
            else:
                raw = self.llm.generate(
                    current,
                    max_new_tokens=cfg.max_new_tokens,
                    temperature=cfg.temperature,
                    top_p=cfg.top_p,
                    seed=seed,
                )
            if len(raw) != len(current):
                raise BackendError(f"LLM backend returned {len(raw)} replies for {len(current)} prompts")
            self.stats[f"{stage}.llm_calls"] += len(current)
            still = []
            for i, r in zip(todo, raw):
                text, reason = self.clean(r)
                if text is None:
                    self.stats[f"{stage}.rejected.{reason}"] += 1
                    still.append(i)
                else:
                    out[i] = text
            todo = still
            if not todo:
                break
            if attempt < cfg.max_retries:
                current = remake(todo, rng)
        return out

    def _reject_summary(self, stage: str) -> str:
        items = {k.split(".")[-1]: v for k, v in self.stats.items() if k.startswith(f"{stage}.rejected.")}
        return ", ".join(f"{k}={v}" for k, v in sorted(items.items())) or "none"


def mask_words(words: Sequence[str], p: float, rng: np.random.Generator) -> str:
    """Replace a fraction ``p`` of the words with ``_`` (consecutive blanks merged), at least one masked
    and at least one kept when there are two or more words."""
    n = len(words)
    if n == 0:
        return "_"
    k = int(round(p * n))
    if n >= 2:
        k = min(max(k, 1), n - 1)
    masked = set(rng.choice(n, size=k, replace=False).tolist()) if k else set()
    out: list[str] = []
    for i, w in enumerate(words):
        if i in masked:
            if not out or out[-1] != "_":
                out.append("_")
        else:
            out.append(w)
    return " ".join(out)


def _stage_keys(stage: str, label: int | None) -> tuple[int | str, ...]:
    """The random-stream keys of one stage: ``(stage,)`` unlabelled (today's streams, unchanged), and
    ``(stage, "class", c)`` for class c: distinct per class, deterministic."""
    return (stage,) if label is None else (stage, "class", int(label))


def _uses_field(template: str, name: str) -> bool:
    """Whether ``template`` has the placeholder ``{name}`` (a malformed template: no; the config check
    reports it)."""
    try:
        return any(f is not None and f.split(".")[0].split("[")[0] == name for _, f, _, _ in string.Formatter().parse(template))
    except ValueError:
        return False


class _SafeDict(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _format(template: str, fields: dict[str, str]) -> str:
    return template.format_map(_SafeDict(fields)).strip()
