"""The renderer role: caption -> image.

Backends: ``diffusers`` (AutoPipelineForText2Image with any model id or local path; SDXL-Turbo by
default), ``openai`` (OpenAI-compatible image-generation endpoint) and ``retrieval`` (nearest public image
by caption embedding: the offline renderer and a baseline).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

from PIL import Image

from spti.models.base import Backend
from spti.models.registry import Registry


class Renderer(Backend):
    #: Prompts per call the pipeline hands to ``render()``; a backend with a ``batch_size`` option sets it.
    batch_size: int = 8

    @abstractmethod
    def render(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        """Return one RGB image per (prompt, seed) pair. The same pair must give the same image (a CPU
        generator seeded per image), so renders can be cached and a run reproduced."""


REGISTRY: Registry[Renderer] = Registry("renderer", __name__, Renderer)

#: ``build_renderer({"backend": name, **options})`` (or just a name): a configured backend.
build_renderer = REGISTRY.build
