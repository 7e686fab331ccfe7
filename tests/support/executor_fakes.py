"""Plug-in backends for the executor tests: the fakes of :mod:`support.fakes`, plus one that kills its own
process (a model replica dying mid-stage) and one that records which process ran each batch."""

from __future__ import annotations

import os
from pathlib import Path

from support.fakes import BowEmbedder


class DyingBowEmbedder(BowEmbedder):
    """A bag-of-words embedder whose process dies (``os._exit``, no cleanup, as when the OOM killer or a lost
    node takes a replica) the first time it sees the text ``die_on``. ``marker``: a file created just before
    dying, so that the restarted replica (or a second run) embeds normally."""

    def __init__(self, marker: str, die_on: str = "DIE", batch_size: int = 4):
        self.marker = marker
        self.die_on = die_on
        self.batch_size = batch_size

    def info(self):
        return {"backend": "dying-bow"}

    def embed(self, texts):
        if self.die_on in texts and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(17)
        return super().embed(texts)


class FailingBowEmbedder(BowEmbedder):
    """Raises an exception whose message quotes its input, as some libraries do (the executor must not pass
    the message on)."""

    def embed(self, texts):
        raise ValueError(f"cannot embed {texts[0]!r}")


from spti.models.captioner import Captioner  # noqa: E402


class SizeRecordingCaptioner(Captioner):
    """Captions every image "a photo" and records the sizes it was given (calibration tests)."""

    sizes: list = []

    def info(self):
        return {"backend": "size-recording"}

    def caption(self, images):
        SizeRecordingCaptioner.sizes.extend(im.size for im in images)
        return ["a photo"] * len(images)
