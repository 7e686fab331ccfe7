"""Small, real (not mocked) backends for algorithm tests: a scripted LLM that edits attributes of
captions, and a bag-of-words text embedder. They implement the real interfaces and are plugged in by the
registries' import-path syntax ("support.fakes:ScriptedLLM"), exactly as a user's own backend would be.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from spti.models.llm import LLM
from spti.models.text_embedder import TextEmbedder

COLOURS = ["red", "blue", "green", "yellow"]
OBJECTS = ["car", "dog", "chair", "lamp"]
PLACES = ["garage", "park", "kitchen", "beach"]
VOCAB = COLOURS + OBJECTS + PLACES


def caption(c: str, o: str, p: str) -> str:
    return f"A {c} {o} in a {p}."


def parse(text: str) -> tuple[str | None, str | None, str | None]:
    words = re.findall(r"[a-z]+", text.lower())
    pick = lambda vocab: next((w for w in words if w in vocab), None)  # noqa: E731
    return pick(COLOURS), pick(OBJECTS), pick(PLACES)


class ScriptedLLM(LLM):
    """Random API: a uniformly random (colour, object, place) caption. Variation API: the parent (found
    after the prompt's blank line, blanks allowed) with one attribute changed at random. ``garbage`` makes
    a fraction of replies unusable, to exercise cleaning and retries."""

    def __init__(self, garbage: float = 0.0, always_garbage: bool = False):
        self.garbage = garbage
        self.always_garbage = always_garbage
        self.calls = 0

    def info(self):
        return {"backend": "scripted", "garbage": self.garbage}

    def generate(self, conversations, *, max_new_tokens=64, temperature=1.0, top_p=1.0, seed=None) -> list[str]:
        rng = np.random.default_rng(seed)
        out = []
        for conv in conversations:
            self.calls += 1
            prompt = conv[-1]["content"]
            if self.always_garbage or rng.random() < self.garbage:
                out.append(rng.choice(["", "I'm sorry, I cannot help with that.", "_ _ _", "the the the the the the the the"]))
                continue
            parts = prompt.split("\n\n")
            if len(parts) >= 3:  # a variation prompt: template, parent, "Caption:"
                c, o, p = parse(parts[1])
                attrs = [c or rng.choice(COLOURS), o or rng.choice(OBJECTS), p or rng.choice(PLACES)]
                which = rng.integers(3)
                attrs[which] = rng.choice([COLOURS, OBJECTS, PLACES][which])
                out.append("Sure! Here is the caption:\n" + caption(*attrs))
            else:
                out.append(f'"{caption(rng.choice(COLOURS), rng.choice(OBJECTS), rng.choice(PLACES))}"')
        return out


class BowEmbedder(TextEmbedder):
    """Bag of attribute words, unit-normalised: captions sharing attributes are close."""

    def info(self):
        return {"backend": "bow", "vocab": len(VOCAB)}

    @property
    def dim(self) -> int:
        return len(VOCAB)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(VOCAB)), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                if w in VOCAB:
                    out[i, VOCAB.index(w)] = 1.0
        n = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, n, out=np.zeros_like(out), where=n > 0)
