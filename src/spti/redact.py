"""Redaction of credentials from everything spti writes about a run (config.yaml, manifests, the report,
``--dry-run``'s plan, error messages). (Private *paths* are the report's business: ``spti.report.reader``.)

* **Credentials** (:func:`redact_secrets`): the value of any option whose *name* looks like a key, token,
  password, secret or authorization (``api_key``, ``hf_token``, ``client_secret``, ``Authorization``,
  ``X-Api-Key`` ...), every HTTP header value (``extra_headers``: servers put credentials in headers of
  any name), and a password or key-like query parameter inside a URL. Each is replaced by a marker
  ``<redacted pbkdf2-sha256:1a2b3c4d>`` that keeps a short, slow hash of the value: two runs (or a run and
  its resumption) can still be compared — the same secret gives the same marker, another secret another
  one — while the marker cannot be reversed (PBKDF2 with 100,000 rounds makes even a dictionary attack on
  a weak password slow, and 32 bits of it identify nothing on their own).

Why by name rather than by value: a credential has no recognisable shape (a bearer token, a password, a
signed URL), but configs name their options. Redaction is idempotent (a marker stays itself), so a config
read back from a run folder compares equal to the live config it came from.

A marker in a config that is *used* (a run resumed from its own ``config.yaml``) is refused by
:func:`require_no_redacted`: the secret itself was never stored, so it must be given again.

Standard library only.
"""

from __future__ import annotations

import functools
import hashlib
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from spti.errors import ConfigError

__all__ = [
    "REDACTED_RE",
    "find_redacted",
    "is_redacted",
    "is_secret_key",
    "marker",
    "redact_secrets",
    "require_no_redacted",
    "scrub_message",
]

#: A redaction marker, as written by :func:`marker`.
REDACTED_RE = re.compile(r"<redacted(?: [a-z0-9-]+:[0-9a-f]+)?>")
_MARKER_ONLY = re.compile(r"^<redacted(?: [a-z0-9-]+:[0-9a-f]+)?>$")

#: A word of an option name that makes its value a credential.
_SECRET_WORDS = frozenset({
    "authorization", "auth", "password", "passwd", "passphrase", "secret", "token", "apikey",
    "cookie", "credential", "credentials", "bearer",
})
#: ``<qualifier>_key`` is a credential (``api_key``, ``private_key``, ``x-api-key``); a bare ``key`` is not.
_KEY_QUALIFIERS = frozenset({
    "api", "access", "secret", "private", "auth", "subscription", "client", "signing", "encryption",
    "session", "master", "service", "account", "license", "licence",
})
#: A word just before ``token`` that makes the name a tokenizer or length option, not a credential
#: (``pad_token``, ``max_token``, ``eos_token_id``).
_TOKEN_NOT_SECRET = frozenset({"pad", "eos", "bos", "unk", "sep", "cls", "mask", "special", "stop", "max", "min", "num", "n"})
#: A last word that makes the value say *where* a secret is, not the secret (``api_key_env: OPENAI_API_KEY``).
_POINTER_WORDS = frozenset({"env", "var", "file", "path", "field", "name", "id", "ids"})
#: Keys whose values are HTTP headers: every value is redacted, except these harmless headers.
_HEADER_KEYS = frozenset({"headers", "extra_headers", "http_headers", "default_headers"})
_HARMLESS_HEADERS = frozenset({"content-type", "accept", "accept-language", "user-agent"})
#: URL query parameters redacted besides the credential-like names (signed URLs: AWS, Azure SAS, GCS).
_SECRET_QUERY = frozenset({"key", "sig", "signature", "x-amz-signature", "x-goog-signature", "code"})

_SALT = b"spti-redact-v1"
_ROUNDS = 100_000


def _words(name: str) -> list[str]:
    """``"X-Api-Key"`` -> ``["x", "api", "key"]``; ``"apiKey"`` -> ``["api", "key"]``."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))
    return [w for w in re.split(r"[^a-zA-Z0-9]+", spaced.lower()) if w]


def is_secret_key(name: Any) -> bool:
    """True when an option called ``name`` holds a credential (see the module docstring)."""
    return isinstance(name, str) and _is_secret_name(name)


@functools.lru_cache(maxsize=4096)  # info() is redacted on every cache_key: the same few names, many times
def _is_secret_name(name: str) -> bool:
    words = _words(name)
    if not words or words[-1] in _POINTER_WORDS:
        return False
    for i, w in enumerate(words):
        prev = words[i - 1] if i else ""
        if w == "token" and prev in _TOKEN_NOT_SECRET:
            continue
        if w in _SECRET_WORDS:
            return True
        if w == "key" and prev in _KEY_QUALIFIERS:
            return True
    return False


@functools.lru_cache(maxsize=256)
def _digest(value: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", value.encode("utf-8"), _SALT, _ROUNDS)[:4].hex()


def marker(value: str) -> str:
    """The marker that replaces ``value``; a marker is returned unchanged (redaction is idempotent)."""
    if is_redacted(value):
        return value
    return f"<redacted pbkdf2-sha256:{_digest(value)}>"


def is_redacted(value: Any) -> bool:
    return isinstance(value, str) and bool(_MARKER_ONLY.match(value))


def _redact_all(obj: Any) -> Any:
    """Every non-empty string leaf of ``obj`` replaced by its marker (the value of a secret option)."""
    if isinstance(obj, str):
        return marker(obj) if obj else obj
    if isinstance(obj, Mapping):
        return {k: _redact_all(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_redact_all(v) for v in obj]
    return obj


def _redact_url(s: str) -> str:
    """``s`` with a URL's password and credential-like query values replaced; ``s`` itself if none."""
    if "://" not in s or len(s) > 4096:
        return s
    try:
        p = urllib.parse.urlsplit(s)
        password = p.password
    except ValueError:
        return s
    netloc, changed = p.netloc, False
    if password:
        userinfo, _, hostport = p.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc, changed = f"{user}:{marker(password)}@{hostport}", True
    query = p.query
    if query:
        parts = []
        for item in query.split("&"):
            name, eq, value = item.partition("=")
            key = urllib.parse.unquote_plus(name)
            if eq and value and (is_secret_key(key) or key.lower() in _SECRET_QUERY):
                parts.append(f"{name}={marker(urllib.parse.unquote_plus(value))}")
                changed = True
            else:
                parts.append(item)
        query = "&".join(parts)
    if not changed:
        return s
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, query, p.fragment))


def redact_secrets(obj: Any) -> Any:
    """A copy of ``obj`` (a config, a manifest, a backend's ``info()``) with every credential replaced by
    a marker. Other values are returned as they are (same types, same order), so a structure without
    credentials comes back equal to itself."""
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            if isinstance(k, str) and k.lower() in _HEADER_KEYS and isinstance(v, Mapping):
                out[k] = {hk: (hv if str(hk).lower() in _HARMLESS_HEADERS else _redact_all(hv)) for hk, hv in v.items()}
            elif is_secret_key(k):
                out[k] = _redact_all(v)
            else:
                out[k] = redact_secrets(v)
        return out
    if isinstance(obj, list):
        return [redact_secrets(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(redact_secrets(v) for v in obj)
    if isinstance(obj, str):
        return _redact_url(obj)
    return obj


def find_redacted(obj: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the markers in ``obj`` (``["extra_headers.Authorization"]``)."""
    if is_redacted(obj) or (isinstance(obj, str) and REDACTED_RE.search(obj) is not None):
        return [prefix or "(value)"]
    if isinstance(obj, Mapping):
        return [p for k, v in obj.items() for p in find_redacted(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in find_redacted(v, f"{prefix}[{i}]")]
    return []


def require_no_redacted(options: Any, who: str) -> None:
    """Refuse to *use* options that hold a redaction marker: the secret was never stored, so a run that
    reuses its saved ``config.yaml`` must be given it again."""
    where = find_redacted(options)
    if where:
        raise ConfigError(
            f"{who}: {', '.join(where[:5])} holds a redacted secret (spti never stores secrets in a run folder); "
            "give the real value again: pass your own config with --config (or the option spti reads from an "
            "environment variable, e.g. api_key_env) and run the same command again"
        )


# ---------------------------------------------------------------------------------------- messages
_MESSAGE_SECRETS = [
    re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"),
    re.compile(r"\bhf_[A-Za-z0-9]{10,}"),
    re.compile(r"(?i)\b(api[_-]?key|password|secret|token)(\s*[=:]\s*)\S+"),
]


def scrub_message(text: str, limit: int = 200) -> str:
    """The first line of an exception message, at most ``limit`` characters, with anything that looks like
    a credential (``Bearer ...``, ``sk-...``, ``api_key=...``) and every URL password removed."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    line = _MESSAGE_SECRETS[0].sub(lambda m: f"{m.group(1)} <redacted>", line)
    line = _MESSAGE_SECRETS[1].sub("<redacted>", line)
    line = _MESSAGE_SECRETS[2].sub("<redacted>", line)
    line = _MESSAGE_SECRETS[3].sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", line)
    line = re.sub(r"\S+://\S+", lambda m: _redact_url(m.group()), line)
    return line if len(line) <= limit else line[: limit - 3] + "..."
