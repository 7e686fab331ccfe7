"""LLM backend ``openai``: any OpenAI-compatible chat-completions server.

Works with OpenAI itself, ``vllm serve <model>`` (``base_url: http://localhost:8000/v1``) and Ollama
(``base_url: http://localhost:11434/v1``). The LLM only ever sees public or DP text (see
:class:`spti.models.llm.LLM`), so no opt-in is needed to use a remote server here, unlike the captioner.

Config keys::

    backend: openai
    model: gpt-4o-mini          # required: the model name the server knows
    base_url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY # name of the environment variable holding the key (the key itself never
                                # goes into a config file, which is copied into the run folder)
    concurrency: 8              # requests in flight
    timeout: 60                 # seconds per request
    max_retries: 5
    backoff: 1.0                # first retry delay (doubles, with jitter, up to max_backoff)
    max_backoff: 30.0
    max_tokens_field: max_tokens  # "max_completion_tokens" for OpenAI's reasoning models
    send_seed: true             # send seed + index per conversation (vLLM, Ollama and OpenAI accept it)
    extra_body: {}              # merged into every request; a null value removes a key
    extra_headers: {}
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from spti.errors import BackendError, ConfigError
from spti.log import logger
from spti.models._http import APIStatusError, ClientOptions, safe_url
from spti.models._openai import check_extra_body, first_choice_text, merge_extra_body
from spti.models.llm import LLM, REGISTRY, Conversation


@REGISTRY.register("openai")
class OpenAILLM(LLM):
    """One chat-completions request per conversation, ``concurrency`` at a time.

    Failures are handled per reply, because PE asks for thousands of replies and one rejected prompt must
    not end a run: a reply that still fails after the client's retries becomes ``""`` (the caller's
    cleaning step counts and replaces it). Only when *every* reply fails, or the server says the key, model
    or URL is wrong (401/403/404), is the backend unusable and :class:`BackendError` raised.

    ``splittable``: request ``i`` carries the seed ``seed + first_index + i``, so a round cut into calls sends
    the requests of one call.
    """

    splittable = True

    def __init__(
        self,
        model: str | None = None,
        max_tokens_field: str = "max_tokens",
        send_seed: bool = True,
        extra_body: Mapping[str, Any] | None = None,
        **client: Any,
    ):
        """``client``: the connection options (``base_url``, ``timeout`` ...; see ``ClientOptions``)."""
        options = ClientOptions.from_kwargs("llm backend 'openai'", client)
        if not isinstance(model, str) or not model:
            raise ConfigError(
                "llm backend 'openai' needs 'model': the name the server knows (e.g. 'gpt-4o-mini', the "
                "model given to `vllm serve`, or an Ollama tag such as 'llama3.2')"
            )
        self.model = model
        self.max_tokens_field = max_tokens_field
        self.send_seed = bool(send_seed)
        self.extra_body = check_extra_body(extra_body, "llm")
        self.client = options.client()

    def info(self) -> dict[str, Any]:
        # Only what changes the output: operational knobs (timeouts, concurrency) must not change cache keys.
        return {
            "backend": self.backend_name,
            "model": self.model,
            "base_url": safe_url(self.client.base_url),
            "max_tokens_field": self.max_tokens_field,
            "send_seed": self.send_seed,
            "extra_body": self.extra_body,
        }

    def _payload(
        self,
        messages: list[dict[str, str]],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            self.max_tokens_field: int(max_new_tokens),
            "temperature": float(temperature),
            "top_p": float(top_p),
        }
        if seed is not None and self.send_seed:
            payload["seed"] = int(seed)
        return merge_extra_body(payload, self.extra_body)

    def generate(
        self,
        conversations: Sequence[Conversation],
        *,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        first_index: int = 0,
    ) -> list[str]:
        convs = self.prepare(conversations, max_new_tokens, temperature, top_p)
        n = len(convs)
        if n == 0:
            return []
        jobs = [
            self._payload(c, max_new_tokens, temperature, top_p, None if seed is None else seed + first_index + i)
            for i, c in enumerate(convs)
        ]
        errors: list[BackendError] = []

        def one(payload: dict[str, Any]) -> str | None:
            try:
                data = self.client.post_json("chat/completions", payload)
            except APIStatusError as e:
                if e.fatal:
                    raise  # the same for every request: stop now (map cancels the rest)
                errors.append(e)
                return None
            except BackendError as e:
                errors.append(e)
                return None
            return first_choice_text(data)

        t0 = time.monotonic()
        replies = self.client.map(one, jobs, desc="LLM replies (API)")
        failed = sum(r is None for r in replies)
        logger.debug("openai llm: %d replies in %.1fs", n, time.monotonic() - t0)
        if failed == n:
            why = f": {errors[0]}" if errors else " (no reply text in any answer)"
            raise BackendError(f"llm backend 'openai': all {n} requests failed{why}")
        if failed:
            logger.warning("openai llm: %d of %d requests failed; returned as empty replies", failed, n)
        return [r if r is not None else "" for r in replies]
