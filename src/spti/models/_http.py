"""A small client for OpenAI-compatible HTTP APIs (OpenAI, ``vllm serve``, Ollama's ``/v1``, LiteLLM ...).

Why the standard library only: the core of spti must install without heavy or fast-moving dependencies, and
the three calls we need (chat completions, vision chat, image generations) are plain JSON POSTs.

What this module guarantees, because the backends built on it handle private data:

* Nothing from a request body or a response body is ever logged or put into an exception message. Logs
  and errors carry the URL, HTTP status codes, counts and timings. A server's own error message is quoted
  only from its ``error.message`` / ``error.type`` / ``error.code`` fields, truncated, and withheld
  entirely if it quotes any part of our request (some servers echo the offending input).
* The API key goes into the ``Authorization`` header and nowhere else (not into logs, ``repr`` or
  errors). Redirects are refused rather than followed, because urllib would forward the key to wherever
  the redirect points.

Retry policy: timeouts, connection errors, HTTP 408/409/429/5xx and undecodable (non-JSON) answers are
retried up to ``max_retries`` times with exponential backoff and jitter; a ``Retry-After`` (or OpenAI's
``retry-after-ms``) header is honoured. Other 4xx answers are the caller's fault and are not retried.

Several servers (:class:`MultiEndpointClient`, ``base_url`` given as a list: several ``vllm serve`` nodes of
the same model): each endpoint has its own concurrency; a request goes to the least busy healthy endpoint,
and one that fails in a retryable way is retried at once on another endpoint (failing over costs no retry)
while the failed endpoint rests for a backoff; only when every endpoint failed does the retry policy above
wait and count a retry.
"""

from __future__ import annotations

import dataclasses
import email.utils
import http.client
import json
import os
import random
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, wait
from typing import Any, TypeVar

from spti._threads import DaemonThreadPool
from spti.errors import BackendError, ConfigError
from spti.log import logger

T = TypeVar("T")
R = TypeVar("R")

#: Statuses worth retrying: request timeout, conflict (OpenAI uses it for transient lock errors), rate limit,
#: and server-side errors.
RETRYABLE_STATUS = frozenset({408, 409, 429})
#: Statuses that mean *every* request to this server will fail the same way (bad key, no permission, wrong
#: model or URL): callers sending many requests stop at the first one instead of sending the rest.
FATAL_STATUS = frozenset({401, 403, 404})

#: Longest Retry-After we wait for; a server asking for more is treated as unavailable for this run.
MAX_RETRY_AFTER_S = 300.0
_MESSAGE_LIMIT = 200
# A server message containing any run of this many characters from our request is considered an echo.
_ECHO_WINDOW = 16


class APIStatusError(BackendError):
    """The server answered with an HTTP error status that we do not (or no longer) retry.

    ``status`` lets callers tell a per-request failure (400: this prompt was rejected) from one that will hit
    every request (401/403/404, see :data:`FATAL_STATUS`).
    """

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status

    @property
    def fatal(self) -> bool:
        return self.status in FATAL_STATUS


class _Retryable(Exception):
    """Internal: one attempt failed in a way worth retrying. ``reason`` is safe to show (no payload)."""

    def __init__(self, reason: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Turn every redirect into an HTTPError: following it would re-send the Authorization header (and a
    POST body with private images) to a host the user never configured."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        return None


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def safe_url(url: str) -> str:
    """``url`` without user:password, query or fragment: what may appear in logs, errors and manifests."""
    p = urllib.parse.urlsplit(url)
    netloc = p.hostname or ""
    if ":" in netloc:  # IPv6 literal
        netloc = f"[{netloc}]"
    if p.port:
        netloc += f":{p.port}"
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, "", ""))


def _strings(obj: Any) -> Iterable[str]:
    """Every string leaf of a JSON-like payload (where private content could be)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


def _quotes_payload(text: str, payload: Any) -> bool:
    """True if ``text`` contains a run of ``_ECHO_WINDOW`` characters found in a string of ``payload``."""
    leaves = [s for s in _strings(payload) if len(s) >= _ECHO_WINDOW]
    if not leaves or len(text) < _ECHO_WINDOW:
        return False
    windows = {text[i : i + _ECHO_WINDOW] for i in range(len(text) - _ECHO_WINDOW + 1)}
    return any(w in s for s in leaves for w in windows)


def server_message(body: bytes, payload: Any = None) -> str:
    """A short, payload-free summary of an error body: only ``error.type``, ``error.code`` and a truncated
    ``error.message``; the message is withheld if it quotes our request. Never the raw body."""
    try:
        data = json.loads(body.decode("utf-8", errors="replace"))
    except (ValueError, UnicodeDecodeError):
        return "no JSON error body"
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, str):  # some servers (older vLLM/Ollama) answer {"error": "message"}
        err = {"message": err}
    if not isinstance(err, dict):
        # FastAPI-style {"detail": "..."} or {"message": "..."}
        if isinstance(data, dict) and isinstance(data.get("message") or data.get("detail"), str):
            err = {"message": data.get("message") or data.get("detail")}
        else:
            return "no error message"
    parts = []
    for key in ("type", "code"):
        v = err.get(key)
        if isinstance(v, (str, int)) and str(v):
            parts.append(f"{key}={str(v)[:40]}")
    msg = err.get("message")
    if isinstance(msg, str) and msg:
        msg = " ".join(msg.split())
        shown = msg[:_MESSAGE_LIMIT] + ("..." if len(msg) > _MESSAGE_LIMIT else "")
        if payload is not None and _quotes_payload(msg[:_MESSAGE_LIMIT], payload):
            parts.append("message withheld: it quotes the request")
        else:
            parts.append(shown)
    return "; ".join(parts) or "no error message"


def _parse_retry_after(headers: Mapping[str, str] | Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("Retry-After")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIClient:
    """Thread-safe JSON client for one OpenAI-compatible server.

    ``base_url`` is the API root including the version, e.g. ``https://api.openai.com/v1``,
    ``http://localhost:8000/v1`` (``vllm serve``) or ``http://localhost:11434/v1`` (Ollama); a trailing
    slash is optional. The API key is ``api_key`` if given, else the environment variable ``api_key_env``
    (if set); without a key no ``Authorization`` header is sent, which is what local servers expect.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        concurrency: int = 8,
        extra_headers: Mapping[str, str] | None = None,
    ):
        if not isinstance(base_url, str) or not base_url:
            raise ConfigError(f"base_url must be a URL such as 'http://localhost:8000/v1', got {base_url!r}")
        parts = urllib.parse.urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"base_url must start with http:// or https:// and name a host, got {safe_url(base_url)!r}"
            )
        self.base_url = base_url.strip().rstrip("/")
        self.host = parts.hostname
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not (isinstance(max_retries, int) and max_retries >= 0):
            raise ConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if not (isinstance(concurrency, int) and concurrency >= 1):
            raise ConfigError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if not (isinstance(backoff, (int, float)) and backoff >= 0 and isinstance(max_backoff, (int, float))):
            raise ConfigError(
                f"backoff and max_backoff must be numbers >= 0, got {backoff!r}, {max_backoff!r}"
            )
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.concurrency = concurrency

        key = api_key if api_key is not None else (os.environ.get(api_key_env) if api_key_env else None)
        self._headers: dict[str, str] = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "spti",
        }
        for k, v in (extra_headers or {}).items():
            self._headers[str(k)] = str(v)
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
            if parts.scheme == "http" and not _is_loopback(self.host):
                logger.warning("an API key will be sent unencrypted (http://) to %s", self.host)
        handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
        if _is_loopback(self.host):
            handlers.append(urllib.request.ProxyHandler({}))  # a proxy cannot reach our own machine
        self._opener = urllib.request.build_opener(*handlers)
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    def __repr__(self) -> str:  # never show headers: they hold the key
        return f"OpenAIClient({safe_url(self.base_url)!r}, concurrency={self.concurrency})"

    @property
    def has_api_key(self) -> bool:
        return "Authorization" in self._headers

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    # -- requests ------------------------------------------------------------------------------------------

    def post_json(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``payload`` as JSON to ``base_url/path`` and return the decoded JSON object, retrying
        transient failures. Raises :class:`APIStatusError` for a non-retryable HTTP status and
        :class:`BackendError` when retries are exhausted."""
        url = self.url(path)
        body = json.dumps(payload).encode("ascii")  # \u-escapes: no encoding surprises
        return self._with_retries("POST", url, body, self._headers, payload)

    def get_bytes(self, url: str, *, send_auth: bool = False) -> bytes:
        """GET an absolute ``url`` (e.g. an image a server links to) with the same retry policy.

        ``send_auth`` is off by default: such links usually point at a different host (a storage bucket),
        which must not receive our API key."""
        headers = {"User-Agent": self._headers["User-Agent"]}
        if send_auth and self.has_api_key:
            headers["Authorization"] = self._headers["Authorization"]
        return self._with_retries("GET", url, None, headers, None)

    def _with_retries(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str], payload: Any
    ) -> Any:
        shown = safe_url(url)
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            t0 = time.monotonic()
            try:
                result = self._attempt(method, url, body, headers, payload)
            except _Retryable as e:
                dt = time.monotonic() - t0
                if attempt + 1 >= attempts:
                    if e.status is not None:
                        raise APIStatusError(
                            f"{method} {shown}: gave up after {attempts} attempts: {e.reason}", e.status
                        ) from None
                    raise BackendError(
                        f"{method} {shown}: gave up after {attempts} attempts: {e.reason}"
                    ) from None
                delay = self._delay(attempt, e.retry_after)
                logger.info(
                    "%s %s: %s after %.2fs; retry %d/%d in %.2fs",
                    method,
                    shown,
                    e.reason,
                    dt,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
                continue
            logger.debug("%s %s: ok in %.2fs", method, shown, time.monotonic() - t0)
            return result
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            if retry_after > MAX_RETRY_AFTER_S:
                raise BackendError(
                    f"server at {self.host} asked to retry after {retry_after:.0f}s (more than "
                    f"{MAX_RETRY_AFTER_S:.0f}s); it is rate limiting or unavailable, try again later"
                )
        base = min(self.max_backoff, self.backoff * (2**attempt))
        with self._rng_lock:
            delay = base * (0.5 + 0.5 * self._rng.random())  # "equal jitter": desynchronises the threads
        # The server's Retry-After is a minimum; "Retry-After: 0" must not turn into a tight retry loop.
        return delay if retry_after is None else max(retry_after, delay)

    def _attempt(
        self, method: str, url: str, body: bytes | None, headers: Mapping[str, str], payload: Any
    ) -> Any:
        """One request. Returns the decoded JSON object of a 2xx answer to a POST, the raw body for a GET;
        raises _Retryable,
        APIStatusError or BackendError. Exceptions are raised ``from None``: the original ones may hold the
        request object (and so our payload) in their context."""
        req = urllib.request.Request(url, data=body, headers=dict(headers), method=method)
        shown = safe_url(url)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status = resp.status
                raw = resp.read()
        except urllib.error.HTTPError as e:
            status = e.code
            try:
                err_body = e.read()
            except (OSError, http.client.HTTPException):
                err_body = b""
            finally:
                e.close()
            summary = server_message(err_body, payload)
            if status in RETRYABLE_STATUS or 500 <= status < 600:
                raise _Retryable(
                    f"HTTP {status} ({summary})", _parse_retry_after(e.headers), status
                ) from None
            if 300 <= status < 400:
                raise APIStatusError(
                    f"{method} {shown}: HTTP {status} redirect refused; set base_url to the final address",
                    status,
                ) from None
            hint = {
                401: "; check the API key (environment variable named by 'api_key_env')",
                403: "; the API key lacks permission for this model or endpoint",
                404: "; check 'base_url' (it should end in /v1) and 'model'",
            }.get(status, "")
            raise APIStatusError(f"{method} {shown}: HTTP {status} ({summary}){hint}", status) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, ssl.SSLCertVerificationError):
                raise BackendError(f"{method} {shown}: TLS certificate verification failed") from None
            raise _Retryable(f"connection error ({type(e.reason).__name__}: {str(e.reason)[:100]})") from None
        except TimeoutError:
            raise _Retryable(f"timed out after {self.timeout:g}s") from None
        except (OSError, http.client.HTTPException) as e:
            raise _Retryable(f"connection error ({type(e).__name__})") from None
        if method == "POST":
            try:
                data = json.loads(raw)
            except ValueError:
                raise _Retryable(f"HTTP {status} with invalid JSON ({len(raw)} bytes)") from None
            if not isinstance(data, dict):
                raise _Retryable(f"HTTP {status} with a JSON {type(data).__name__}, not an object")
            return data
        return raw

    # -- concurrency ---------------------------------------------------------------------------------------

    def map(self, fn: Callable[[T], R], items: Iterable[T], *, desc: str = "API requests") -> list[R]:
        """``[fn(x) for x in items]`` on up to ``concurrency`` threads, results in input order, with progress
        under ``desc`` (:class:`spti.log.Progress`: a bar on a terminal, a log line every interval otherwise).

        The first exception raised by ``fn`` is re-raised as soon as it happens, after cancelling the calls not
        yet started, so a fatal error (a bad key) does not go on to send hundreds of doomed requests. Calls
        already running finish first (each is bounded by the timeout and retries), except on Ctrl-C, which
        returns at once."""
        from spti.log import Progress, progress

        items = list(items)
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(x) for x in progress(items, desc=desc, unit="request")]
        # daemon workers: on Ctrl-C the process does not wait for the requests in flight (up to the timeout)
        with DaemonThreadPool(max_workers=min(self.concurrency, len(items)), thread_name_prefix="spti-http") as ex, \
                Progress(desc, len(items), "request") as bar:
            futures = [ex.submit(fn, x) for x in items]
            for f in futures:
                f.add_done_callback(lambda _f: bar.update(1))
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = [f for f in futures if f in done and f.exception() is not None]
                if failed:
                    raise failed[0].exception()  # type: ignore[misc]
                return [f.result() for f in futures]
            except BaseException:  # also KeyboardInterrupt: do not start the queued calls
                for f in futures:
                    f.cancel()
                raise

    def close(self) -> None:
        """Nothing to release (urllib opens a connection per request); present for symmetry."""


@dataclasses.dataclass(frozen=True)
class ClientOptions:
    """The transport options every OpenAI-compatible backend takes, with the same names and meaning.

    A backend's ``__init__`` collects them as ``**client`` and calls :meth:`from_kwargs` once, with its own
    defaults where they differ (an image server is slower than a chat server); :meth:`client` builds the
    :class:`OpenAIClient`. None of them changes a reply, so none goes into ``info()`` or a cache key.
    """

    base_url: str | tuple[Endpoint, ...] = "https://api.openai.com/v1"
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 30.0
    extra_headers: Mapping[str, str] | None = None

    @classmethod
    def from_kwargs(cls, who: str, given: Mapping[str, Any], **defaults: Any) -> ClientOptions:
        """Options from a backend's ``**client`` keyword arguments over its ``defaults``; an unknown name
        is a :class:`ConfigError` that lists the known ones (``who`` names the backend)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ConfigError(
                f"{who}: unknown option(s) {', '.join(unknown)}; the connection options are "
                f"{', '.join(sorted(known))}"
            )
        opts = cls(**{**defaults, **given})
        if not isinstance(opts.base_url, str):
            eps = parse_endpoints(opts.base_url, opts.concurrency, who)
            opts = dataclasses.replace(opts, base_url=eps[0].url if len(eps) == 1 and eps[0].concurrency is None else eps)
        return opts

    def client(self) -> OpenAIClient | MultiEndpointClient:
        """One server: an :class:`OpenAIClient`; several (``base_url`` a list): a :class:`MultiEndpointClient`."""
        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(self.base_url, str):
            return OpenAIClient(**kw)
        kw.pop("base_url")
        return MultiEndpointClient(self.base_url, **kw)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One server of a multi-server ``base_url``: its URL and its own concurrency (None: the backend's
    ``concurrency``). The ``repr`` never shows a user:password or query part of the URL."""

    url: str
    concurrency: int | None = None

    def __repr__(self) -> str:
        c = "" if self.concurrency is None else f", concurrency={self.concurrency}"
        return f"Endpoint({safe_url(self.url)!r}{c})"


def parse_endpoints(value: Any, default_concurrency: int, who: str = "openai backend") -> tuple[Endpoint, ...]:
    """``base_url`` given as a list: URLs, or ``{"url": ..., "concurrency": n}`` mappings (``base_url`` is
    accepted for ``url``), at least one."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{who}: base_url must be a URL or a non-empty list of URLs / {{url, concurrency}} mappings")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, Endpoint):
            out.append(v)
            continue
        if isinstance(v, str):
            out.append(Endpoint(v))
            continue
        if not isinstance(v, Mapping):
            raise ConfigError(f"{who}: base_url[{i}] must be a URL or a mapping with 'url' and 'concurrency'")
        unknown = sorted(set(v) - {"url", "base_url", "concurrency"})
        url = v.get("url", v.get("base_url"))
        conc = v.get("concurrency")
        if unknown or not isinstance(url, str):
            raise ConfigError(f"{who}: base_url[{i}] needs 'url' (a string) and optionally 'concurrency'"
                              + (f"; unknown key(s) {', '.join(map(str, unknown))}" if unknown else ""))
        if conc is not None and (not isinstance(conc, int) or isinstance(conc, bool) or conc < 1):
            raise ConfigError(f"{who}: base_url[{i}].concurrency must be an integer >= 1, got {conc!r}")
        out.append(Endpoint(url, conc))
    return tuple(out)


class _Slot:
    """Book-keeping of one endpoint of a :class:`MultiEndpointClient` (guarded by the client's lock)."""

    def __init__(self, client: OpenAIClient):
        self.client = client
        self.limit = client.concurrency
        self.in_flight = 0
        self.down_until = 0.0  # monotonic time before which the endpoint is resting after a failure
        self.failures = 0  # consecutive failures (the rest doubles with each)
        self.dead: APIStatusError | None = None  # answered 401/403/404: this endpoint is misconfigured
        self.served = 0


class MultiEndpointClient:
    """The :class:`OpenAIClient` interface over several servers of the same model (``base_url`` a list).

    Each endpoint takes up to its own ``concurrency`` requests at a time (``map`` runs their sum in
    parallel). A request goes to the healthy endpoint with the lowest load (in flight / concurrency; ties in
    turn); a retryable failure (timeout, connection error, 429, 5xx) sends the request at once to an endpoint
    it has not tried yet, and rests the failed one for ``backoff`` x 2^(failures-1) seconds (at least what its
    Retry-After asks). When every endpoint failed the request, the client waits as the single-server client
    would and counts one retry (``max_retries`` in all). An endpoint that answers 401/403/404 (wrong key,
    model or URL: it would fail every request) is dropped with a warning; when all are dropped that error is
    raised. Other 4xx answers are the request's fault and are raised at once. Results of ``map`` are in input
    order.

    ``base_url`` (what backends record in their ``info()`` and cache keys) is the first endpoint's: every
    endpoint must serve the same model with the same settings.
    """

    def __init__(self, endpoints: tuple[Endpoint, ...] | list[Any], *, concurrency: int = 8, **options: Any):
        eps = parse_endpoints(list(endpoints), concurrency)
        self.slots = [_Slot(OpenAIClient(e.url, concurrency=e.concurrency or concurrency, **options)) for e in eps]
        first = self.slots[0].client
        self.base_url = first.base_url
        self.base_urls = tuple(s.client.base_url for s in self.slots)
        self.host = first.host
        self.timeout = first.timeout
        self.max_retries = first.max_retries
        self.backoff = first.backoff
        self.max_backoff = first.max_backoff
        self.concurrency = sum(s.limit for s in self.slots)
        self._cond = threading.Condition()
        self._turn = 0

    def __repr__(self) -> str:
        return f"MultiEndpointClient({[safe_url(u) for u in self.base_urls]!r}, concurrency={self.concurrency})"

    @property
    def has_api_key(self) -> bool:
        return self.slots[0].client.has_api_key

    def url(self, path: str) -> str:
        return self.slots[0].client.url(path)

    def stats(self) -> list[dict[str, Any]]:
        """Per endpoint: its URL (safe form), requests served, whether it is dropped (for logs and tests)."""
        with self._cond:
            return [{"url": safe_url(s.client.base_url), "served": s.served, "dropped": s.dead is not None}
                    for s in self.slots]

    # -- scheduling ----------------------------------------------------------------------------------------

    def _acquire(self, tried: set[int]) -> int:
        """The endpoint for the next attempt: not yet tried by this request, not dropped, with a free slot;
        healthy ones first, least loaded, ties in turn. Waits while the candidates are all busy."""
        with self._cond:
            while True:
                live = [i for i, s in enumerate(self.slots) if s.dead is None and i not in tried]
                if not live:
                    return -1
                now = time.monotonic()
                free = [i for i in live if self.slots[i].in_flight < self.slots[i].limit]
                healthy = [i for i in free if self.slots[i].down_until <= now]
                # a resting endpoint is used only when every untried endpoint rests (a probe beats waiting)
                if not healthy and any(self.slots[i].down_until <= now for i in live):
                    self._cond.wait(0.05)
                    continue
                pool = healthy or sorted(free, key=lambda i: self.slots[i].down_until)[:1]
                if not pool:
                    self._cond.wait(0.05)
                    continue
                n = len(self.slots)
                best = min(pool, key=lambda i: (self.slots[i].in_flight / self.slots[i].limit, (i - self._turn) % n))
                self._turn = (best + 1) % n
                self.slots[best].in_flight += 1
                return best

    def _release(self, i: int, *, failed: bool = False, retry_after: float | None = None,
                 dead: APIStatusError | None = None) -> None:
        with self._cond:
            s = self.slots[i]
            s.in_flight -= 1
            if dead is not None:
                s.dead = dead
            elif failed:
                s.failures += 1
                rest = min(self.max_backoff, self.backoff * 2 ** (s.failures - 1))
                s.down_until = time.monotonic() + max(rest, min(retry_after or 0.0, MAX_RETRY_AFTER_S))
            else:
                s.failures, s.down_until = 0, 0.0
                s.served += 1
            self._cond.notify_all()

    # -- requests ------------------------------------------------------------------------------------------

    def post_json(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """As :meth:`OpenAIClient.post_json`, on the endpoints in turn (see the class)."""
        body = json.dumps(payload).encode("ascii")
        return self._with_failover(path, body, payload)

    def _with_failover(self, path: str, body: bytes, payload: Any) -> Any:
        tried: set[int] = set()
        retries = 0
        last: _Retryable | None = None
        while True:
            i = self._acquire(tried)
            if i < 0:
                dead = [s.dead for s in self.slots if s.dead is not None]
                if len(dead) == len(self.slots):
                    raise dead[0]
                if retries >= self.max_retries:
                    reason = last.reason if last is not None else "no endpoint answered"
                    status = last.status if last is not None else None
                    msg = f"POST {len(self.slots)} endpoints ({safe_url(self.base_url)} ...): gave up after {retries + 1} rounds: {reason}"
                    if status is not None:
                        raise APIStatusError(msg, status) from None
                    raise BackendError(msg) from None
                delay = self.slots[0].client._delay(retries, last.retry_after if last is not None else None)
                logger.info("all %d endpoints failed a request (%s); retry %d/%d in %.2fs", len(self.slots),
                            last.reason if last is not None else "?", retries + 1, self.max_retries, delay)
                time.sleep(delay)
                retries += 1
                tried = set()
                continue
            c = self.slots[i].client
            url = c.url(path)
            t0 = time.monotonic()
            try:
                result = c._attempt("POST", url, body, c._headers, payload)
            except _Retryable as e:
                self._release(i, failed=True, retry_after=e.retry_after)
                tried.add(i)
                last = e
                logger.info("POST %s: %s after %.2fs; trying another endpoint", safe_url(url), e.reason,
                            time.monotonic() - t0)
                continue
            except APIStatusError as e:
                if e.fatal:
                    self._release(i, dead=e)
                    logger.warning("endpoint %s answered HTTP %d (it would fail every request): not used any "
                                   "more in this run", safe_url(c.base_url), e.status)
                    tried.add(i)
                    continue
                self._release(i)
                raise
            except BaseException:
                self._release(i)
                raise
            self._release(i)
            return result

    def get_bytes(self, url: str, *, send_auth: bool = False) -> bytes:
        """As :meth:`OpenAIClient.get_bytes`; the key goes along only to a URL on one of the endpoints."""
        origin = urllib.parse.urlsplit(url)[:2]
        for s in self.slots:
            if urllib.parse.urlsplit(s.client.base_url)[:2] == origin:
                return s.client.get_bytes(url, send_auth=True)
        return self.slots[0].client.get_bytes(url, send_auth=False)

    map = OpenAIClient.map  # the same ordered, fail-fast thread pool, over the sum of the endpoints' slots

    def close(self) -> None:
        for s in self.slots:
            s.client.close()
