"""Renderer backend ``openai``: an OpenAI-compatible image-generation endpoint (``POST /images/generations``):
OpenAI's DALL-E / gpt-image models, LocalAI, or any server speaking the same protocol.

Prompts here are DP captions, so sending them to a server costs no privacy.

Reproducibility: the renderer contract asks that the same (prompt, seed) give the same image. A remote
service cannot promise that; with ``send_seed: true`` the seed is sent as ``"seed"`` (servers that support it,
such as LocalAI, are then deterministic), and in every case spti's render cache, keyed by
:attr:`cache_key` and the prompt/seed, makes a resumed run reuse the images it already has.

Answers: ``b64_json`` (what we ask for by default) is decoded directly. A ``url`` answer is accepted too: a
``data:`` URI is decoded, an ``http(s)`` URL is fetched with the same timeout/retry policy, sending the API
key only if the URL is on the ``base_url`` server itself (OpenAI's URLs point at a storage bucket, which must
not receive it). Set ``fetch_urls: false`` to refuse URL answers.

Config keys::

    backend: openai
    model: dall-e-2              # required
    base_url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY
    size: 512x512                # "WxH", or null to use the server's default
    response_format: b64_json    # null leaves it out (gpt-image-1 rejects it and always answers b64_json)
    send_seed: false             # OpenAI rejects unknown parameters
    fetch_urls: true
    concurrency: 4, timeout: 180, max_retries: 5, backoff: 1.0, max_backoff: 30.0
    extra_body: {}               # e.g. {"quality": "low"}; a null value removes a key
    extra_headers: {}
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from spti.errors import BackendError, ConfigError
from spti.models._http import ClientOptions, safe_url
from spti.models._openai import check_extra_body, merge_extra_body
from spti.models.renderer import REGISTRY, Renderer

_SIZE = re.compile(r"^\d{2,5}x\d{2,5}$")


@REGISTRY.register("openai")
class OpenAIRenderer(Renderer):
    """One ``n=1`` image-generation request per prompt, ``concurrency`` at a time; returns RGB images at
    whatever size the server produced (``size`` is a request, not a guarantee). A prompt that still fails
    after retries raises :class:`BackendError`: a blank stand-in image would silently pollute the release."""

    def __init__(
        self,
        model: str | None = None,
        size: str | None = "512x512",
        response_format: str | None = "b64_json",
        send_seed: bool = False,
        fetch_urls: bool = True,
        extra_body: Mapping[str, Any] | None = None,
        **client: Any,
    ):
        """``client``: the connection options (``base_url``, ``timeout`` ...; see ``ClientOptions``); image
        generation is slow, so the defaults here are 4 requests at a time and 180 s per request."""
        options = ClientOptions.from_kwargs("renderer backend 'openai'", client, concurrency=4, timeout=180.0)
        if not isinstance(model, str) or not model:
            raise ConfigError("renderer backend 'openai' needs 'model' (e.g. 'dall-e-2' or 'gpt-image-1')")
        if size is not None and not (isinstance(size, str) and _SIZE.match(size)):
            raise ConfigError(
                f"renderer backend 'openai': size must look like '512x512' or be null, got {size!r}"
            )
        if response_format not in (None, "b64_json", "url"):
            raise ConfigError(
                f"renderer backend 'openai': response_format must be b64_json, url or null, got {response_format!r}"
            )
        self.model = model
        self.size = size
        self.response_format = response_format
        self.send_seed = bool(send_seed)
        self.fetch_urls = bool(fetch_urls)
        self.extra_body = check_extra_body(extra_body, "renderer")
        self.client = options.client()
        self._origin = urllib.parse.urlsplit(self.client.base_url)[:2]

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend_name,
            "model": self.model,
            "base_url": safe_url(self.client.base_url),
            "size": self.size,
            "response_format": self.response_format,
            "send_seed": self.send_seed,
            "extra_body": self.extra_body,
        }

    def _payload(self, prompt: str, seed: int) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model, "prompt": prompt, "n": 1}
        if self.size is not None:
            payload["size"] = self.size
        if self.response_format is not None:
            payload["response_format"] = self.response_format
        if self.send_seed:
            payload["seed"] = int(seed)
        return merge_extra_body(payload, self.extra_body)

    def _image_bytes(self, data: Mapping[str, Any]) -> bytes:
        where = safe_url(self.client.base_url)
        items = data.get("data")
        if not isinstance(items, list) or not items or not isinstance(items[0], Mapping):
            raise BackendError(f"renderer 'openai' at {where}: the answer has no 'data' list of images")
        item = items[0]
        b64 = item.get("b64_json")
        url = item.get("url")
        if isinstance(b64, str) and b64:
            pass
        elif isinstance(url, str) and url.startswith("data:"):
            header, sep, b64 = url.partition(",")
            if not sep or ";base64" not in header:
                raise BackendError(f"renderer 'openai' at {where}: a data: URI answer is not base64")
        elif isinstance(url, str) and url.startswith(("http://", "https://")):
            if not self.fetch_urls:
                raise BackendError(
                    f"renderer 'openai' at {where}: the server answered with a URL and fetch_urls is false; "
                    "set response_format: b64_json or fetch_urls: true"
                )
            same_server = urllib.parse.urlsplit(url)[:2] == self._origin
            return self.client.get_bytes(url, send_auth=same_server)
        else:
            raise BackendError(f"renderer 'openai' at {where}: the answer has neither b64_json nor url")
        try:
            return base64.b64decode(b64, validate=False)
        except (binascii.Error, ValueError):
            raise BackendError(f"renderer 'openai' at {where}: b64_json is not valid base64") from None

    def render(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        if len(prompts) != len(seeds):
            raise ValueError(f"render: {len(prompts)} prompts but {len(seeds)} seeds")

        def one(job: tuple[str, int]) -> Image.Image:
            raw = self._image_bytes(self.client.post_json("images/generations", self._payload(*job)))
            try:
                with Image.open(io.BytesIO(raw)) as im:
                    return im.convert("RGB")
            except (OSError, Image.DecompressionBombError, ValueError):
                raise BackendError(
                    f"renderer 'openai' at {safe_url(self.client.base_url)}: the server sent "
                    f"{len(raw)} bytes that are not a readable image"
                ) from None

        return self.client.map(one, list(zip(prompts, seeds)), desc="rendering (API)")
