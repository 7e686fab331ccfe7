"""The captioner role: private image -> caption (the private textual intermediary).

Backends: ``hf`` (BLIP/BLIP-2 image-to-text, Florence-2, chat VLMs through AutoModelForImageTextToText),
``vllm`` (chat VLMs such as Qwen2-VL or LLaVA on vLLM's offline engine, for GPUs; ``spti[vllm]``),
``openai`` (OpenAI-compatible vision chat; sends private images to that server) and ``efficientnet-lite0``
(bundled offline ImageNet classifier whose top labels become a caption).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

from PIL import Image

from spti.models.base import Backend
from spti.models.registry import Registry


class Captioner(Backend):
    #: Images per call the pipeline hands to ``caption()``; a backend with a ``batch_size`` option sets it.
    batch_size: int = 16

    #: True when captioning sends the private images to a third party (a remote API). spti then requires
    #: an explicit opt-in and records the trust assumption in privacy.json.
    sends_data_off_machine: bool = False

    @abstractmethod
    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """Return one caption per RGB image, in order. Captions are private data: never log them."""


REGISTRY: Registry[Captioner] = Registry("captioner", __name__, Captioner)

#: ``build_captioner({"backend": name, **options})`` (or just a name): a configured backend.
build_captioner = REGISTRY.build
