"""Plug-in backends for the end-to-end runs on the Ray executor (tests/e2e/test_executor_run.py): an image
embedder whose replica process dies in the middle of a stage, once."""

from __future__ import annotations

import os
from pathlib import Path

from support.fakes import MeanColourEmbedder


class DyingMeanColourEmbedder(MeanColourEmbedder):
    """:class:`~support.fakes.MeanColourEmbedder` whose process dies (``os._exit``: no cleanup, as when the OOM
    killer or a lost node takes a replica) at its *second* ``embed`` call, i.e. after it finished a task of
    the stage, unless ``marker`` exists; it creates ``marker`` (holding its pid) just before dying, so the
    restarted replica, and every later stage, embeds normally. Its ``info()`` (hence its cache key) does not
    name the marker: a run that had a death and one that had none write the same cache folders."""

    def __init__(self, marker: str, batch_size: int = 4):
        self.marker = marker
        self.batch_size = batch_size
        self._calls = 0

    def info(self):
        return {"backend": "dying-mean-colour"}

    def embed(self, images):
        self._calls += 1
        if self._calls >= 2 and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(17)
        return super().embed(images)
