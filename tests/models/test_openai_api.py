"""The OpenAI-compatible client and backends against a real local HTTP server (tests/support/fake_openai.py).

No network and no mocked client: every test talks HTTP to 127.0.0.1. Timeouts and backoffs are tiny so the
whole module runs in a few seconds.
"""

from __future__ import annotations

import base64
import io
import logging
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:  # until tests/conftest.py puts tests/ on sys.path
    sys.path.insert(0, _TESTS)

from support.fake_openai import FakeOpenAIServer, mean_colour, prompt_colour  # noqa: E402

from spti.errors import BackendError, ConfigError  # noqa: E402
from spti.models._http import APIStatusError, OpenAIClient, server_message  # noqa: E402
from spti.models.captioner import build_captioner  # noqa: E402
from spti.models.captioner.openai_api import OpenAICaptioner  # noqa: E402
from spti.models.llm import build_llm  # noqa: E402
from spti.models.llm.openai_api import OpenAILLM  # noqa: E402
from spti.models.renderer import build_renderer  # noqa: E402
from spti.models.renderer.openai_api import OpenAIRenderer  # noqa: E402

FAST = {"timeout": 2.0, "max_retries": 3, "backoff": 0.01, "max_backoff": 0.02}
SECRET = "sk-test-THIS-KEY-MUST-NOT-LEAK"


@pytest.fixture
def srv():
    with FakeOpenAIServer() as s:
        yield s


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch):
    # A developer's real OPENAI_API_KEY must never be sent to the fake (or anywhere) by a test.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def client(srv: FakeOpenAIServer, **kw) -> OpenAIClient:
    return OpenAIClient(srv.base_url, **{**FAST, **kw})


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You write captions."}, {"role": "user", "content": text}]


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (32, 24)) -> Image.Image:
    return Image.new("RGB", size, colour)


def data_uri_image(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.partition(",")[2])))


# -- client ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slash", ["", "/"])
def test_post_json_round_trip_with_or_without_trailing_slash(srv, slash):
    c = OpenAIClient(srv.base_url + slash, **FAST)
    data = c.post_json("/chat/completions", {"model": "m", "messages": conv("hello")})
    assert data["choices"][0]["message"]["content"] == "reply to: hello"
    assert [r.path for r in srv.requests] == ["/v1/chat/completions"]
    assert "Authorization" not in srv.requests[0].headers  # no key configured: none sent


def test_500_is_retried_then_succeeds(srv):
    srv.fail_next(2, status=500)
    data = client(srv).post_json("chat/completions", {"model": "m", "messages": conv("x")})
    assert data["choices"][0]["message"]["content"] == "reply to: x"
    assert len(srv.requests) == 3


def test_timeout_is_retried(srv):
    srv.hang_next(1, seconds=3.0)
    t0 = time.monotonic()
    data = client(srv, timeout=0.3).post_json("chat/completions", {"model": "m", "messages": conv("x")})
    assert data["choices"][0]["message"]["content"] == "reply to: x"
    assert len(srv.requests) == 2
    assert time.monotonic() - t0 < 2.5  # did not wait for the hanging answer


def test_400_is_not_retried_and_message_is_short(srv):
    srv.fail_next(1, status=400, message="bad parameter " + "z" * 1000)
    with pytest.raises(APIStatusError) as ei:
        client(srv).post_json("chat/completions", {"model": "m", "messages": conv("x")})
    assert ei.value.status == 400 and not ei.value.fatal
    assert "HTTP 400" in str(ei.value) and "bad parameter" in str(ei.value)
    assert len(str(ei.value)) < 400
    assert len(srv.requests) == 1


def test_retries_exhausted_raise_backend_error(srv):
    srv.fail_next(10, status=503)
    with pytest.raises(BackendError, match=r"gave up after 3 attempts: HTTP 503"):
        client(srv, max_retries=2).post_json("chat/completions", {"model": "m", "messages": conv("x")})
    assert len(srv.requests) == 3


def test_429_honours_retry_after(srv):
    srv.rate_limit_next(1, retry_after="1")
    t0 = time.monotonic()
    client(srv).post_json("chat/completions", {"model": "m", "messages": conv("x")})
    assert time.monotonic() - t0 >= 0.9  # max_backoff is 0.02: only Retry-After explains the wait
    srv.rate_limit_next(1, retry_after=None, retry_after_ms="300")
    t0 = time.monotonic()
    client(srv).post_json("chat/completions", {"model": "m", "messages": conv("x")})
    assert 0.25 <= time.monotonic() - t0 < 0.9
    assert len(srv.requests) == 4


def test_invalid_json_is_retried_then_fails(srv):
    srv.invalid_json_next(1)
    data = client(srv).post_json("chat/completions", {"model": "m", "messages": conv("x")})
    assert "choices" in data
    srv.invalid_json_next(10)
    with pytest.raises(BackendError, match="invalid JSON") as ei:
        client(srv, max_retries=1).post_json("chat/completions", {"model": "m", "messages": conv("x")})
    assert "html" not in str(ei.value).lower()  # the body itself is never quoted


def test_connection_refused_is_retried_then_fails():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = OpenAIClient(f"http://127.0.0.1:{port}/v1", **{**FAST, "max_retries": 1})
    with pytest.raises(BackendError, match="gave up after 2 attempts: connection error"):
        c.post_json("chat/completions", {"model": "m"})


def test_bad_base_url_is_a_config_error():
    with pytest.raises(ConfigError, match="http"):
        OpenAIClient("localhost:8000/v1")
    with pytest.raises(ConfigError, match="concurrency"):
        OpenAIClient("http://localhost/v1", concurrency=0)


def test_map_preserves_order_and_runs_concurrently(srv):
    c = client(srv, concurrency=4)
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def fn(i: int) -> int:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.01 * (12 - i))  # later items finish first
        with lock:
            state["now"] -= 1
        return i * i

    assert c.map(fn, range(12)) == [i * i for i in range(12)]
    assert 2 <= state["max"] <= 4


def test_server_message_keeps_only_error_fields_and_withholds_echoes():
    body = b'{"error": {"message": "too long", "type": "invalid_request_error", "param": "SECRET"}}'
    assert server_message(body) == "type=invalid_request_error; too long"
    assert server_message(b"<html>private stuff</html>") == "no JSON error body"
    payload = {"messages": [{"content": "a private sentence that is long"}]}
    echo = b'{"error": {"message": "cannot parse: a private sentence that is long"}}'
    assert "private" not in server_message(echo, payload)


# -- LLM -------------------------------------------------------------------------------------------------


def test_llm_round_trip_and_payload(srv):
    llm = build_llm(
        {
            "backend": "openai",
            "model": "gpt-test",
            "base_url": srv.base_url,
            **FAST,
            "concurrency": 2,
            "extra_body": {"top_k": 5, "top_p": None},
        }
    )
    assert isinstance(llm, OpenAILLM)
    out = llm.generate(
        [conv("a"), conv("b"), conv("c")], max_new_tokens=20, temperature=0.7, top_p=0.9, seed=10
    )
    assert out == ["reply to: a", "reply to: b", "reply to: c"]
    bodies = sorted((r.body for r in srv.requests), key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == [10, 11, 12]
    # splittable: the part of a round that starts at conversation 3 sends the seeds of 3 and 4
    llm.generate([conv("d"), conv("e")], max_new_tokens=20, temperature=0.7, top_p=0.9, seed=10, first_index=3)
    assert llm.splittable and sorted(r.body["seed"] for r in srv.requests[3:]) == [13, 14]
    b = bodies[0]
    assert b["model"] == "gpt-test" and b["max_tokens"] == 20 and b["temperature"] == 0.7
    assert b["top_k"] == 5 and "top_p" not in b  # extra_body merged; None removes a key
    assert b["messages"] == conv("a")
    assert llm.info()["model"] == "gpt-test" and "timeout" not in llm.info()


def test_llm_needs_a_model(srv):
    with pytest.raises(ConfigError, match="model"):
        build_llm({"backend": "openai", "base_url": srv.base_url})


def test_llm_order_preserved_under_concurrency():
    def slow_reply(body):
        text = body["messages"][-1]["content"]
        time.sleep(0.01 * (16 - int(text)))  # later conversations answer first
        return f"reply {text}"

    with FakeOpenAIServer(reply=slow_reply) as s:
        llm = OpenAILLM(model="m", base_url=s.base_url, concurrency=8, **FAST)
        out = llm.generate([conv(str(i)) for i in range(16)])
    assert out == [f"reply {i}" for i in range(16)]


def test_llm_failed_reply_becomes_empty_and_is_counted(srv, caplog):
    llm = OpenAILLM(model="m", base_url=srv.base_url, concurrency=1, **FAST)
    srv.fail_next(2, status=400, message="context too long")
    with caplog.at_level(logging.WARNING, logger="spti"):
        out = llm.generate([conv("a"), conv("b"), conv("c")])
    assert out == ["", "", "reply to: c"]
    assert "2 of 3 requests failed" in caplog.text


def test_llm_all_failed_raises(srv):
    llm = OpenAILLM(model="m", base_url=srv.base_url, concurrency=2, **{**FAST, "max_retries": 1})
    srv.fail_next(100, status=500)
    with pytest.raises(BackendError, match="all 3 requests failed"):
        llm.generate([conv("a"), conv("b"), conv("c")])


def test_llm_bad_key_stops_early(monkeypatch):
    monkeypatch.setenv("SPTI_TEST_KEY", "wrong")
    with FakeOpenAIServer(api_key=SECRET) as s:
        llm = OpenAILLM(model="m", base_url=s.base_url, api_key_env="SPTI_TEST_KEY", concurrency=2, **FAST)
        with pytest.raises(APIStatusError, match="HTTP 401.*API key") as ei:
            llm.generate([conv(str(i)) for i in range(40)])
        assert ei.value.status == 401
        assert len(s.requests) < 40  # the queued requests were cancelled


def test_api_key_sent_as_bearer_and_never_logged(monkeypatch, caplog):
    monkeypatch.setenv("SPTI_TEST_KEY", SECRET)
    with FakeOpenAIServer(api_key=SECRET) as s, caplog.at_level(logging.DEBUG, logger="spti"):
        llm = OpenAILLM(model="m", base_url=s.base_url, api_key_env="SPTI_TEST_KEY", **FAST)
        s.fail_next(1, status=500)
        s.fail_next(1, status=400, message="bad request")
        out = llm.generate([conv("p1"), conv("p2"), conv("p3")])
        assert out.count("") == 1  # the 400; the 500 was retried (which request got which is a race)
        assert all(o == "" or o == f"reply to: p{i + 1}" for i, o in enumerate(out))
        assert all(r.headers["Authorization"] == f"Bearer {SECRET}" for r in s.requests)
        assert SECRET not in repr(llm.client)
    assert "retry" in caplog.text  # the 500 was logged ...
    assert SECRET not in caplog.text  # ... without the key
    assert "reply to:" not in caplog.text and "p2" not in caplog.text  # nor prompts or replies


# -- captioner -------------------------------------------------------------------------------------------


def test_captioner_refuses_without_allow_remote(srv):
    with pytest.raises(
        ConfigError, match=r"PRIVATE images to http://127\.0\.0\.1:\d+/v1.*allow_remote: true"
    ):
        build_captioner({"backend": "openai", "model": "vlm", "base_url": srv.base_url})
    with pytest.raises(ConfigError, match="allow_remote"):
        OpenAICaptioner(model="vlm", base_url=srv.base_url, allow_remote="yes")  # only a real True opts in
    assert srv.requests == []


def test_captioner_sends_the_image_and_keeps_order(srv, caplog):
    colours = [(255, 0, 0), (10, 200, 30), (0, 0, 255), (128, 128, 128)]
    with caplog.at_level(logging.DEBUG, logger="spti"):
        cap = build_captioner(
            {"backend": "openai", "model": "vlm", "base_url": srv.base_url, "allow_remote": True, **FAST}
        )
        out = cap.caption([solid(c) for c in colours])
    assert isinstance(cap, OpenAICaptioner) and cap.sends_data_off_machine
    assert out == [f"mean colour {r} {g} {b}" for r, g, b in colours]
    assert "PRIVATE IMAGES WILL BE SENT" in caplog.text
    assert "mean colour" not in caplog.text and "base64" not in caplog.text
    body = srv.requests[0].body
    assert body["model"] == "vlm" and body["max_tokens"] == 77 and body["temperature"] == 0.0
    text_part, image_part = body["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "Describe the image."}
    assert image_part["type"] == "image_url" and image_part["image_url"]["detail"] == "auto"
    assert data_uri_image(image_part["image_url"]["url"]).size == (32, 24)


def test_captioner_downscales_large_images(srv):
    cap = OpenAICaptioner(
        model="vlm", base_url=srv.base_url, allow_remote=True, max_side=64, detail=None, **FAST
    )
    img = Image.new("RGB", (400, 100), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 200, 100))  # left half black: mean grey survives downscaling
    (caption,) = cap.caption([img])
    part = srv.requests[0].body["messages"][0]["content"][1]["image_url"]
    assert "detail" not in part
    sent = data_uri_image(part["url"])
    assert sent.size == (64, 16)
    assert caption == "mean colour {} {} {}".format(*mean_colour(sent))
    assert img.size == (400, 100)  # the caller's image is untouched


def test_captioner_error_never_contains_the_image(srv):
    cap = OpenAICaptioner(model="vlm", base_url=srv.base_url, allow_remote=True, **FAST)

    def echo(body):  # a server that quotes the offending input back
        return "invalid image: " + body["messages"][0]["content"][1]["image_url"]["url"][:300]

    srv.fail_next(1, status=400, message=echo)
    with pytest.raises(BackendError) as ei:
        cap.caption([solid((1, 2, 3))])
    assert "base64" not in str(ei.value) and "withheld" in str(ei.value)


# -- renderer --------------------------------------------------------------------------------------------


def test_renderer_round_trip(srv):
    r = build_renderer(
        {
            "backend": "openai",
            "model": "img",
            "base_url": srv.base_url,
            "size": "64x48",
            "send_seed": True,
            **FAST,
        }
    )
    assert isinstance(r, OpenAIRenderer)
    prompts = ["a red barn", "a blue lake", "a green field"]
    images = r.render(prompts, [7, 8, 9])
    for p, im in zip(prompts, images):
        assert im.mode == "RGB" and im.size == (64, 48)
        assert im.getpixel((5, 5)) == prompt_colour(p)
    body = next(rq.body for rq in srv.requests if rq.body["prompt"] == "a blue lake")
    assert body == {
        "model": "img",
        "prompt": "a blue lake",
        "n": 1,
        "size": "64x48",
        "response_format": "b64_json",
        "seed": 8,
    }


def test_renderer_omits_seed_by_default(srv):
    r = OpenAIRenderer(model="img", base_url=srv.base_url, **FAST)
    r.render(["x"], [3])
    assert "seed" not in srv.requests[0].body and srv.requests[0].body["size"] == "512x512"


@pytest.mark.parametrize("url_mode", ["http", "data"])
def test_renderer_accepts_url_answers(url_mode, monkeypatch):
    monkeypatch.setenv("SPTI_TEST_KEY", SECRET)
    with FakeOpenAIServer(url_mode=url_mode) as s:
        r = OpenAIRenderer(
            model="img",
            base_url=s.base_url,
            response_format="url",
            size="16x16",
            api_key_env="SPTI_TEST_KEY",
            **FAST,
        )
        (im,) = r.render(["a cat"], [0])
        assert im.getpixel((0, 0)) == prompt_colour("a cat")
        gets = [rq for rq in s.requests if rq.method == "GET"]
        assert len(gets) == (1 if url_mode == "http" else 0)
        if gets:  # same server as base_url: the key may go along
            assert gets[0].headers["Authorization"] == f"Bearer {SECRET}"
        r.fetch_urls = False
        if url_mode == "http":
            with pytest.raises(BackendError, match="fetch_urls"):
                r.render(["a cat"], [0])


def test_renderer_undecodable_image():
    with FakeOpenAIServer(image=lambda body: b"definitely not a png") as s:
        r = OpenAIRenderer(model="img", base_url=s.base_url, **FAST)
        with pytest.raises(BackendError, match="20 bytes that are not a readable image"):
            r.render(["x"], [0])


def test_renderer_rejects_bad_size():
    with pytest.raises(ConfigError, match="size"):
        OpenAIRenderer(model="img", size="big")
