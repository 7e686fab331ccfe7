"""Captioner ``efficientnet-lite0``: the bundled, offline ImageNet classifier; its top labels become a
caption ("a photo of a loafer, muzzle and plane").

Why such a weak captioner exists: spti must run end to end with no hub and no GPU (the offline demo, CI).
The captions only need to be class-dependent so that private evolution has a signal to follow; they are
noisy (Fashion-MNIST trousers come out as "can opener"). Use a real captioner (``hf``) for real work.

Config keys::

    backend: efficientnet-lite0
    top_k: 3                       # labels per caption (before min_prob filtering)
    min_prob: 0.0                  # drop labels whose probability is below this; the top label is always
                                   # kept, so every image gets a caption
    template: "a photo of a {labels}"   # {labels} = "x", "x and y", "x, y and z"; "a {labels}" becomes
                                   # "an {labels}" before a vowel
    invert: false                  # true for light-on-dark images (Fashion-MNIST); use the same value
                                   # for the image embedder of the run
    weights: null                  # a local state-dict file; null = the bundled one
    device: auto
    batch_size: 32
    strict: false                  # true: one image per forward pass (batch_size 1; the model runs in float32)
    llm: null                      # optional: a LOCAL LLM config (e.g. {backend: llamacpp}) that turns the
                                   # labels into a sentence; an output it cannot clean falls back to the template
    llm_prompt: "..."              # {labels} = the joined labels
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from PIL import Image

from spti.errors import ConfigError
from spti.models import _efficientnet as effnet
from spti.models._checks import check_batch_size, check_images
from spti.models._fingerprint import short_hash
from spti.models._strict import strict_options
from spti.models.captioner import REGISTRY, Captioner

DEFAULT_TEMPLATE = "a photo of a {labels}"
DEFAULT_LLM_PROMPT = (
    "Write one short, plain caption (at most 15 words) of a photo that shows: {labels}. "
    "Reply with the caption only."
)
#: LLM backends that would send the (private) labels to a third party: refused for caption rewriting.
_REMOTE_LLMS = ("openai",)
_A_BEFORE_LABELS = re.compile(r"\b([Aa]) \{labels\}")


def join_labels(labels: Sequence[str]) -> str:
    """``["x"]`` -> ``"x"``, ``["x", "y"]`` -> ``"x and y"``, ``["x", "y", "z"]`` -> ``"x, y and z"``."""
    labels = list(labels)
    if not labels:
        raise ValueError("join_labels needs at least one label")
    if len(labels) == 1:
        return labels[0]
    return ", ".join(labels[:-1]) + " and " + labels[-1]


def format_caption(template: str, labels: Sequence[str]) -> str:
    """Fill ``template`` with the labels (duplicates removed, order kept: ImageNet has two "crane" and two
    "maillot" classes), fixing "a" to "an" before a vowel."""
    unique = list(dict.fromkeys(labels))
    text = join_labels(unique)
    if unique[0][:1].lower() in "aeiou":
        template = _A_BEFORE_LABELS.sub(lambda m: m.group(1) + "n {labels}", template)
    return template.replace("{labels}", text)


def select_labels(scored: Sequence[tuple[str, float]], min_prob: float) -> list[str]:
    """Labels with probability >= ``min_prob``, best first; the best one always stays."""
    if not scored:
        raise ValueError("select_labels needs at least one scored label")
    return [scored[0][0]] + [name for name, p in scored[1:] if p >= min_prob]


@REGISTRY.register("efficientnet-lite0")
class EfficientNetLite0Captioner(Captioner):
    """Top-k ImageNet labels of EfficientNet-Lite0, filled into a template. Deterministic."""

    sends_data_off_machine = False
    input_size = effnet.IMAGE_SIZE  # images are decoded no larger than needed (spti.data.images.iter_batches)

    def __init__(
        self,
        top_k: int = 3,
        min_prob: float = 0.0,
        template: str = DEFAULT_TEMPLATE,
        invert: bool = False,
        weights: str | os.PathLike | None = None,
        device: str = "auto",
        batch_size: int = 32,
        llm: dict[str, Any] | str | None = None,
        llm_prompt: str = DEFAULT_LLM_PROMPT,
        strict: bool = False,
    ):
        batch_size, _ = strict_options(strict, batch_size=batch_size, dtype=None, where="efficientnet-lite0 captioner")
        self.strict = strict
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= effnet.NUM_CLASSES:
            raise ConfigError(
                f"efficientnet-lite0 captioner: top_k must be an integer in [1, 1000], got {top_k!r}"
            )
        if isinstance(min_prob, bool) or not isinstance(min_prob, (int, float)) or not 0.0 <= min_prob <= 1.0:
            raise ConfigError(f"efficientnet-lite0 captioner: min_prob must be in [0, 1], got {min_prob!r}")
        if not isinstance(template, str) or "{labels}" not in template:
            raise ConfigError(
                f"efficientnet-lite0 captioner: template must be a string containing {{labels}}, got {template!r}"
            )
        if not isinstance(invert, bool):
            raise ConfigError(f"efficientnet-lite0 captioner: invert must be true or false, got {invert!r}")
        self.top_k, self.min_prob, self.template, self.invert = top_k, float(min_prob), template, invert
        self._llm = None
        if llm is not None:
            from spti.models.llm import build_llm

            llm_cfg = {"backend": llm} if isinstance(llm, str) else dict(llm)
            if llm_cfg.get("backend") in _REMOTE_LLMS:
                raise ConfigError(
                    "efficientnet-lite0 captioner: the caption-rewriting LLM sees each private image's labels; "
                    f"use a local LLM backend, not {llm_cfg.get('backend')!r}"
                )
            if not isinstance(llm_prompt, str) or "{labels}" not in llm_prompt:
                raise ConfigError("efficientnet-lite0 captioner: llm_prompt must contain {labels}")
            self._llm = build_llm(llm_cfg)
        self.llm_prompt = llm_prompt
        self.rewrite_fallbacks = 0  # outputs the LLM could not turn into a clean caption (count only)
        self.batch_size = check_batch_size(batch_size)
        self._net: effnet.EfficientNetLite0 | None = effnet.load_efficientnet_lite0(weights, device)
        self._info: dict[str, Any] = {
            "backend": self.backend_name,
            **effnet.weights_info(self._net, bundled=weights is None),
            "top_k": top_k,
            "min_prob": self.min_prob,
            "template": template,
            "invert": invert,
            "llm": self._llm.info() if self._llm is not None else None,
            "llm_prompt": llm_prompt if self._llm is not None else None,
            **({"strict": True} if strict else {}),
        }

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        if self._net is None:
            raise ConfigError("efficientnet-lite0 captioner was closed; build a new one")
        images = check_images(images, "efficientnet-lite0 captioner")
        if not images:
            return []
        tops = self._net.top_labels(images, self.top_k, invert=self.invert, batch_size=self.batch_size)
        labels = [list(dict.fromkeys(select_labels(scored, self.min_prob))) for scored in tops]
        captions = [format_caption(self.template, ls) for ls in labels]
        if self._llm is None:
            return captions
        from spti.text import clean_caption

        convs = [[{"role": "user", "content": self.llm_prompt.replace("{labels}", join_labels(ls))}] for ls in labels]
        raw = self._llm.generate(convs, max_new_tokens=40, temperature=0.0, top_p=1.0, seed=0)
        out = []
        for r, fallback in zip(raw, captions):
            text, _ = clean_caption(r)
            if text is None:
                self.rewrite_fallbacks += 1
            out.append(text if text is not None else fallback)
        return out

    def info(self) -> dict[str, Any]:
        return dict(self._info)

    @property
    def cache_key(self) -> str:
        # What changes the captions: weights content and caption options, not the file's path or device.
        keep = {k: v for k, v in self._info.items() if k not in ("weights", "device", "package_version")}
        return short_hash(repr(sorted(keep.items())))

    def close(self) -> None:
        self._net = None  # the shared model stays cached for the image embedder (see _efficientnet)
        if self._llm is not None:
            self._llm.close()
            self._llm = None
