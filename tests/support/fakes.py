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

    def __init__(self, garbage: float = 0.0, always_garbage: bool = False, delay: float = 0.0):
        self.garbage = garbage
        self.always_garbage = always_garbage
        self.delay = delay  # seconds per reply: lets a test kill a run in the middle
        self.calls = 0

    def info(self):
        return {"backend": "scripted", "garbage": self.garbage}

    def generate(self, conversations, *, max_new_tokens=64, temperature=1.0, top_p=1.0, seed=None) -> list[str]:
        rng = np.random.default_rng(seed)
        return [self._reply(conv, rng) for conv in conversations]

    def _reply(self, conv, rng) -> str:
        self.calls += 1
        if self.delay:
            import time

            time.sleep(self.delay)
        prompt = conv[-1]["content"]
        if self.always_garbage or rng.random() < self.garbage:
            return str(rng.choice(["", "I'm sorry, I cannot help with that.", "_ _ _", "the the the the the the the the"]))
        parts = prompt.split("\n\n")
        if len(parts) >= 3:  # a variation prompt: template, parent, "Caption:"
            c, o, p = parse(parts[1])
            attrs = [c or rng.choice(COLOURS), o or rng.choice(OBJECTS), p or rng.choice(PLACES)]
            which = rng.integers(3)
            attrs[which] = rng.choice([COLOURS, OBJECTS, PLACES][which])
            return "Sure! Here is the caption:\n" + caption(*attrs)
        return f'"{caption(rng.choice(COLOURS), rng.choice(OBJECTS), rng.choice(PLACES))}"'


class SplittableScriptedLLM(ScriptedLLM):
    """:class:`ScriptedLLM` with one random stream per reply, seeded by ``derive_seed(seed, first_index + i)``
    as the llama.cpp and vLLM backends seed theirs: a ``splittable`` backend, so executors cut its rounds into
    calls and image voting streams them into the renderer."""

    splittable = True

    def info(self):
        return {"backend": "scripted-splittable", "garbage": self.garbage}

    def generate(self, conversations, *, max_new_tokens=64, temperature=1.0, top_p=1.0, seed=None,
                 first_index=0) -> list[str]:
        from spti.models.llm import derive_seed

        return [self._reply(conv, np.random.default_rng(None if seed is None else derive_seed(seed, first_index + i)))
                for i, conv in enumerate(conversations)]


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


from PIL import Image  # noqa: E402

from spti.models.captioner import Captioner  # noqa: E402
from spti.models.renderer import Renderer  # noqa: E402

COLOUR_RGB = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "yellow": (230, 220, 40)}


class ColourCaptioner(Captioner):
    """Names the dominant colour of an image. Counts its calls (class-wide) so tests can check resumption."""

    calls = 0

    def info(self):
        return {"backend": "colour"}

    def caption(self, images):
        ColourCaptioner.calls += len(images)
        out = []
        for im in images:
            r, g, b = np.asarray(im.convert("RGB"), dtype=float).reshape(-1, 3).mean(0)
            name = min(COLOUR_RGB, key=lambda k: sum((np.array(COLOUR_RGB[k]) - (r, g, b)) ** 2))
            out.append(f"A {name} square on a plain background.")
        return out


class SolidRenderer(Renderer):
    """Renders a caption as a square of the first colour word it names (grey if none); the seed shifts the
    shade slightly, so (caption, seed) pairs are distinguishable. Counts its calls."""

    calls = 0

    def info(self):
        return {"backend": "solid"}

    def render(self, prompts, seeds):
        SolidRenderer.calls += len(prompts)
        out = []
        for p, s in zip(prompts, seeds):
            c = next((COLOUR_RGB[w] for w in re.findall(r"[a-z]+", p.lower()) if w in COLOUR_RGB), (128, 128, 128))
            out.append(Image.new("RGB", (32, 32), tuple(min(255, v + int(s) % 7) for v in c)))
        return out


from spti.models.image_embedder import ImageEmbedder  # noqa: E402


class MeanColourEmbedder(ImageEmbedder):
    """Mean RGB and its spread over a 2x2 grid: a tiny, exact image feature for image-voting tests."""

    def info(self):
        return {"backend": "mean-colour"}

    @property
    def dim(self) -> int:
        return 12

    def embed(self, images):
        out = np.zeros((len(images), 12), dtype=np.float32)
        for i, im in enumerate(images):
            a = np.asarray(im.convert("RGB").resize((8, 8)), dtype=np.float32) / 255.0
            out[i] = np.concatenate([a[y : y + 4, x : x + 4].reshape(-1, 3).mean(0) for y in (0, 4) for x in (0, 4)])
        return out


def write_colour_squares(folder, n: int = 18, users: int = 4, size: int = 16, seed: int = 0) -> None:
    """A small private image set for end-to-end tests: ``n`` noisy red/blue/green squares in ``users``
    user sub-folders (``user0`` ...), deterministic for a seed."""
    from pathlib import Path

    rng = np.random.default_rng(seed)
    colours = [(220, 30, 30), (30, 30, 220), (30, 200, 30)]
    for i in range(n):
        d = Path(folder) / f"user{i % users}"
        d.mkdir(parents=True, exist_ok=True)
        px = np.clip(np.array(colours[i % 3]) + rng.integers(-12, 13, size=(size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(px, "RGB").save(d / f"img{i:03d}.png")
