"""Captioner backend ``openai``: an OpenAI-compatible vision chat model (GPT-4o, ``vllm serve`` with a VLM
such as Qwen2-VL, Ollama with llava ...).

This backend SENDS THE PRIVATE IMAGES to the server. The DP guarantee of the release then rests on trusting
that server (and everyone who can read its logs). Hence it refuses to start without ``allow_remote: true``,
logs a warning when it does, and sets :attr:`sends_data_off_machine` so the pipeline records the trust
assumption in privacy.json. A server on your own machine (``http://localhost:8000/v1``) needs the same
opt-in: spti cannot verify where a "local" server forwards data.

Config keys::

    backend: openai
    model: gpt-4o-mini           # required
    allow_remote: false          # must be true to run
    base_url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY
    prompt: Describe the image.
    max_tokens: 77               # CLIP-style text encoders read at most 77 tokens anyway
    temperature: 0.0
    seed: null                   # sent as "seed" when set
    detail: auto                 # OpenAI's image detail: auto | low | high; null leaves it out
    image_format: png            # png (lossless) | jpeg (smaller uploads)
    max_side: 1024               # downscale larger images before upload; null sends them as they are
    concurrency: 8, timeout: 60, max_retries: 5, backoff: 1.0, max_backoff: 30.0
    max_tokens_field: max_tokens
    extra_body: {}, extra_headers: {}
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from spti.errors import BackendError, ConfigError
from spti.log import logger
from spti.models._http import ClientOptions, safe_url
from spti.models._openai import check_extra_body, first_choice_text, merge_extra_body
from spti.models.captioner import REGISTRY, Captioner

_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "jpg": ("JPEG", "image/jpeg")}


def image_data_uri(image: Image.Image, image_format: str = "png", max_side: int | None = None) -> str:
    """``data:image/...;base64,...`` for an RGB copy of ``image``, downscaled so that neither side exceeds
    ``max_side`` (aspect ratio kept, never upscaled)."""
    fmt, mime = _FORMATS[image_format]
    img = image.convert("RGB")  # also a copy: thumbnail() below must not touch the caller's image
    if max_side is not None and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


@REGISTRY.register("openai")
class OpenAICaptioner(Captioner):
    """One vision chat request per image, ``concurrency`` at a time.

    Unlike the LLM, a caption that fails after retries raises :class:`BackendError`: silently dropping or
    blanking a private image would change the private dataset the DP histogram is computed on.
    """

    sends_data_off_machine = True

    def __init__(
        self,
        model: str | None = None,
        allow_remote: bool = False,
        prompt: str = "Describe the image.",
        max_tokens: int = 77,
        temperature: float = 0.0,
        seed: int | None = None,
        detail: str | None = "auto",
        image_format: str = "png",
        max_side: int | None = 1024,
        max_tokens_field: str = "max_tokens",
        extra_body: Mapping[str, Any] | None = None,
        **client: Any,
    ):
        """``client``: the connection options (``base_url``, ``timeout`` ...; see ``ClientOptions``)."""
        options = ClientOptions.from_kwargs("captioner backend 'openai'", client)
        base_url = options.base_url
        host = safe_url(base_url) if isinstance(base_url, str) else repr(base_url)
        if allow_remote is not True:
            raise ConfigError(
                f"captioner backend 'openai' would send your PRIVATE images to {host}. The differential "
                "privacy guarantee does not cover that server: it sees every private image. If you trust "
                "it, opt in with `allow_remote: true` in the captioner config; otherwise use a local "
                "captioner such as backend 'hf'."
            )
        if not isinstance(model, str) or not model:
            raise ConfigError("captioner backend 'openai' needs 'model': a vision model the server knows")
        if image_format not in _FORMATS:
            raise ConfigError(
                f"captioner backend 'openai': image_format must be 'png' or 'jpeg', got {image_format!r}"
            )
        if detail not in (None, "auto", "low", "high"):
            raise ConfigError(
                f"captioner backend 'openai': detail must be auto, low, high or null, got {detail!r}"
            )
        if max_side is not None and not (isinstance(max_side, int) and max_side >= 16):
            raise ConfigError(
                f"captioner backend 'openai': max_side must be an integer >= 16 or null, got {max_side!r}"
            )
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError("captioner backend 'openai': prompt must be a non-empty string")
        self.model = model
        self.prompt = prompt
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.seed = seed
        self.detail = detail
        self.image_format = image_format
        self.max_side = max_side
        self.max_tokens_field = max_tokens_field
        self.extra_body = check_extra_body(extra_body, "captioner")
        self.client = options.client()
        logger.warning(
            "captioner 'openai': PRIVATE IMAGES WILL BE SENT to %s (allow_remote is set). The DP guarantee "
            "assumes this server is trusted.",
            host,
        )

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend_name,
            "model": self.model,
            "base_url": safe_url(self.client.base_url),
            "sends_data_off_machine": True,
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "max_tokens_field": self.max_tokens_field,
            "temperature": self.temperature,
            "seed": self.seed,
            "detail": self.detail,
            "image_format": self.image_format,
            "max_side": self.max_side,
            "extra_body": self.extra_body,
        }

    def _payload(self, image: Image.Image) -> dict[str, Any]:
        image_url: dict[str, Any] = {"url": image_data_uri(image, self.image_format, self.max_side)}
        if self.detail is not None:
            image_url["detail"] = self.detail
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": self.prompt},
                        {"type": "image_url", "image_url": image_url},
                    ],
                }
            ],
            self.max_tokens_field: self.max_tokens,
            "temperature": self.temperature,
        }
        if self.seed is not None:
            payload["seed"] = int(self.seed)
        return merge_extra_body(payload, self.extra_body)

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        def one(image: Image.Image) -> str:
            # The payload (a private image) is built in the worker so that at most `concurrency` encoded
            # images are held in memory at once.
            text = first_choice_text(self.client.post_json("chat/completions", self._payload(image)))
            if text is None:
                raise BackendError(
                    f"captioner 'openai' at {safe_url(self.client.base_url)}: an answer had no message "
                    "content (refused or filtered?)"
                )
            return text.strip()

        captions = self.client.map(one, images, desc="captioning (API)")
        empty = sum(not c for c in captions)
        if empty:
            logger.warning("captioner 'openai': %d of %d captions are empty", empty, len(captions))
        return captions
