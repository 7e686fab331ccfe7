"""A real HTTP server speaking enough of the OpenAI API to test spti's ``openai`` backends without network.

Usage::

    with FakeOpenAIServer() as srv:
        llm = build_llm({"backend": "openai", "model": "m", "base_url": srv.base_url})
        srv.fail_next(2, status=500)         # fault injection
        ...
        assert srv.requests[0].path == "/v1/chat/completions"

Endpoints (under ``/v1``):

* ``POST /v1/chat/completions``: the reply is ``reply(body)`` if a function is given, else
  :func:`default_reply`: ``"reply to: <last user text>"``, or for a vision request (an ``image_url`` part
  with a data URI) ``"mean colour R G B"`` of the decoded image, so a test can check the image really
  arrived intact.
* ``POST /v1/images/generations``: a solid-colour PNG of the requested ``size`` in :func:`prompt_colour`
  (prompt), as ``b64_json`` or, with ``response_format: "url"``, as a link to ``GET /files/<id>.png`` (or a
  data URI when the server was made with ``url_mode="data"``).
* ``GET /files/<id>.png``: images handed out as URLs.

Faults are queued and consumed one per request, in arrival order: :meth:`fail_next`, :meth:`hang_next`,
:meth:`rate_limit_next`, :meth:`invalid_json_next`. Every request is recorded (path, headers, parsed body)
in :attr:`requests`, faulted or not.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON (None for GET or unparsable bodies)


@dataclass
class Fault:
    kind: str  # "status" | "hang" | "invalid_json"
    status: int = 500
    message: str | Callable[[Any], str] = "injected failure"
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def prompt_colour(prompt: str) -> tuple[int, int, int]:
    """The solid colour the fake renders for ``prompt``."""
    d = hashlib.sha256(prompt.encode("utf-8")).digest()
    return d[0], d[1], d[2]


def mean_colour(image: Image.Image) -> tuple[int, int, int]:
    rgb = image.convert("RGB")
    n = rgb.width * rgb.height
    sums = [0, 0, 0]
    for count, (r, g, b) in rgb.getcolors(maxcolors=n) or []:
        sums[0] += count * r
        sums[1] += count * g
        sums[2] += count * b
    return tuple(round(s / n) for s in sums)  # type: ignore[return-value]


def _data_uri_image(uri: str) -> Image.Image:
    _, _, b64 = uri.partition(",")
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def default_reply(body: dict[str, Any]) -> str:
    """Deterministic reply: the mean colour of the first image if the request has one, else an echo of
    the last user message's text."""
    messages = body.get("messages") or []
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    content = last_user.get("content", "")
    if isinstance(content, list):
        for part in content:
            if part.get("type") == "image_url":
                r, g, b = mean_colour(_data_uri_image(part["image_url"]["url"]))
                return f"mean colour {r} {g} {b}"
        content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return f"reply to: {content}"


def _png(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


class FakeOpenAIServer:
    """Context manager running the fake on ``127.0.0.1`` (a free port) in a background thread.

    ``reply``: ``body -> str`` for chat completions (default :func:`default_reply`).
    ``api_key``: when set, requests without ``Authorization: Bearer <api_key>`` get 401.
    ``url_mode``: how ``response_format: "url"`` images are linked: ``"http"`` or ``"data"``.
    ``image``: ``body -> bytes`` replacing the generated PNG (e.g. to send bytes that are not an image).
    """

    def __init__(
        self,
        reply: Callable[[dict[str, Any]], str] | None = None,
        *,
        api_key: str | None = None,
        url_mode: str = "http",
        image: Callable[[dict[str, Any]], bytes] | None = None,
    ):
        self.reply = reply or default_reply
        self.image = image
        self.api_key = api_key
        self.url_mode = url_mode
        self.requests: list[RecordedRequest] = []
        self._faults: deque[Fault] = deque()
        self._files: dict[str, bytes] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> FakeOpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        handler = _make_handler(self)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        server.block_on_close = False  # hanging handlers wake on _stopping; do not wait for them
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- fault injection ---------------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        message: str | Callable[[Any], str] = "injected failure",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` and an OpenAI-style error body. ``message`` may be
        a function of the request body (to simulate servers that echo the request)."""
        with self._lock:
            self._faults.extend(Fault("status", status, message, dict(headers or {})) for _ in range(n))

    def hang_next(self, n: int = 1, seconds: float = 5.0) -> None:
        """Sleep ``seconds`` (longer than the client's timeout) before answering the next ``n`` requests."""
        with self._lock:
            self._faults.extend(Fault("hang", seconds=seconds) for _ in range(n))

    def rate_limit_next(
        self, n: int = 1, retry_after: str | None = "0", retry_after_ms: str | None = None
    ) -> None:
        """Answer the next ``n`` requests with 429 and the given Retry-After / retry-after-ms headers."""
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        if retry_after_ms is not None:
            headers["retry-after-ms"] = retry_after_ms
        self.fail_next(n, 429, "Rate limit reached", headers)

    def invalid_json_next(self, n: int = 1) -> None:
        """Answer the next ``n`` requests with 200 and a body that is not JSON."""
        with self._lock:
            self._faults.extend(Fault("invalid_json") for _ in range(n))

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    # -- internals used by the handler -------------------------------------------------------------------

    def _record(self, req: RecordedRequest) -> Fault | None:
        with self._lock:
            self.requests.append(req)
            return self._faults.popleft() if self._faults else None

    def _store_file(self, data: bytes) -> str:
        with self._lock:
            name = f"{next(self._ids):05d}.png"
            self._files[name] = data
        return name

    def _file(self, name: str) -> bytes | None:
        with self._lock:
            return self._files.get(name)


def _make_handler(srv: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
            pass

        def _send(
            self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None
        ):
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): expected in hang tests

        def _json(self, status: int, obj: Any, headers: dict | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), headers=headers)

        def do_GET(self) -> None:  # noqa: N802
            srv._record(RecordedRequest("GET", self.path, dict(self.headers.items()), None))
            name = self.path.rsplit("/", 1)[-1]
            data = srv._file(name) if self.path.startswith("/files/") else None
            if data is None:
                self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            else:
                self._send(200, data, "image/png")

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            fault = srv._record(RecordedRequest("POST", self.path, dict(self.headers.items()), body))
            if fault is not None:
                if fault.kind == "hang":
                    srv._stopping.wait(fault.seconds)
                elif fault.kind == "invalid_json":
                    self._send(200, b"<html>502 Bad Gateway</html>", "text/html")
                    return
                else:
                    msg = fault.message(body) if callable(fault.message) else fault.message
                    err = {"error": {"message": msg, "type": "injected", "code": fault.status}}
                    self._json(fault.status, err, fault.headers)
                    return
            if srv.api_key is not None and self.headers.get("Authorization") != f"Bearer {srv.api_key}":
                self._json(
                    401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
                )
                return
            if not isinstance(body, dict):
                self._json(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
                return
            if self.path == "/v1/chat/completions":
                self._chat(body)
            elif self.path == "/v1/images/generations":
                self._image(body)
            else:
                self._json(
                    404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}}
                )

        def _chat(self, body: dict[str, Any]) -> None:
            if not body.get("model") or not isinstance(body.get("messages"), list):
                self._json(
                    400,
                    {
                        "error": {
                            "message": "model and messages are required",
                            "type": "invalid_request_error",
                        }
                    },
                )
                return
            text = srv.reply(body)
            self._json(
                200,
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                },
            )

        def _image(self, body: dict[str, Any]) -> None:
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                self._json(400, {"error": {"message": "prompt is required", "type": "invalid_request_error"}})
                return
            w, _, h = str(body.get("size") or "256x256").partition("x")
            png = srv.image(body) if srv.image else _png(prompt_colour(prompt), (int(w), int(h)))
            if body.get("response_format") == "url":
                if srv.url_mode == "data":
                    item = {"url": "data:image/png;base64," + base64.b64encode(png).decode()}
                else:
                    item = {"url": f"{srv.origin}/files/{srv._store_file(png)}"}
            else:
                item = {"b64_json": base64.b64encode(png).decode()}
            self._json(200, {"created": int(time.time()), "data": [item]})

    return Handler
