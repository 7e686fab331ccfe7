"""The fakes of :mod:`support.fakes` with a delay per item, so that a test can kill (or interrupt) a real run
in the middle of a given stage. Same outputs as the fast ones: only the timing differs."""

from __future__ import annotations

import time

from support.fakes import BowEmbedder, ColourCaptioner, MeanColourEmbedder, SolidRenderer


class SlowColourCaptioner(ColourCaptioner):
    batch_size = 4

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    def caption(self, images):
        time.sleep(self.delay * len(images))
        return super().caption(images)


class SlowBowEmbedder(BowEmbedder):
    """``delay`` seconds per call of ``embed`` (the voting of an iteration embeds its candidates)."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    def embed(self, texts):
        time.sleep(self.delay)
        return super().embed(texts)


class SlowMeanColourEmbedder(MeanColourEmbedder):
    def __init__(self, delay: float = 0.0):
        self.delay = delay

    def embed(self, images):
        time.sleep(self.delay)
        return super().embed(images)


class SlowSolidRenderer(SolidRenderer):
    def __init__(self, delay: float = 0.0):
        self.delay = delay

    def render(self, prompts, seeds):
        time.sleep(self.delay * len(prompts))
        return super().render(prompts, seeds)
