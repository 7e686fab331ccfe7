"""What the OpenAI-compatible backends (``llm/openai_api``, ``captioner/openai_api``,
``renderer/openai_api``) share on top of the HTTP client in :mod:`spti.models._http`: the user's
``extra_body`` merged into a request, and the reply text read out of a chat-completions answer.

Why apart from ``_http``: that module is the transport (retries, redaction, concurrency) and knows
nothing of payloads; these helpers are the protocol. Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spti.errors import ConfigError


def merge_extra_body(payload: dict[str, Any], extra_body: Mapping[str, Any] | None) -> dict[str, Any]:
    """``payload`` updated with the user's ``extra_body`` (server-specific options such as vLLM's
    ``top_k`` or Ollama's ``options``). A key whose value is ``None`` is *removed*, which is how a user
    drops a parameter a server rejects (e.g. ``max_tokens`` for OpenAI's reasoning models)."""
    out = dict(payload)
    for k, v in (extra_body or {}).items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def check_extra_body(extra_body: Any, role: str) -> dict[str, Any]:
    if extra_body is None:
        return {}
    if not isinstance(extra_body, Mapping) or not all(isinstance(k, str) for k in extra_body):
        raise ConfigError(f"{role} backend 'openai': extra_body must be a mapping of strings to values")
    return dict(extra_body)


def first_choice_text(data: Mapping[str, Any]) -> str | None:
    """``choices[0].message.content`` of a chat-completions answer, or None if the answer has none (an
    error object, a refusal, a content-filter stop). Content given as a list of parts is joined."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    msg = choices[0].get("message")
    content = msg.get("content") if isinstance(msg, Mapping) else None
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        texts = [p.get("text") for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)]
        content = "".join(texts) if texts else None
    return content if isinstance(content, str) else None
