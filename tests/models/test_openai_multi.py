"""``base_url`` as a list: several OpenAI-compatible servers (``vllm serve`` nodes) behind one backend, with
per-endpoint concurrency, least-busy spreading and failover; results in input order. Real HTTP to local
fake servers (tests/support/fake_openai.py)."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from PIL import Image
from support.fake_openai import FakeOpenAIServer, default_reply, mean_colour, prompt_colour

from spti.errors import BackendError, ConfigError
from spti.models._http import ClientOptions, Endpoint, MultiEndpointClient, OpenAIClient
from spti.models.captioner.openai_api import OpenAICaptioner
from spti.models.llm import build_llm
from spti.models.llm.openai_api import OpenAILLM
from spti.models.renderer.openai_api import OpenAIRenderer

FAST = {"timeout": 2.0, "max_retries": 2, "backoff": 0.01, "max_backoff": 0.05}


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def conv(text):
    return [{"role": "user", "content": text}]


class Gauge:
    """A reply function that counts the requests in flight at once (and sleeps a little to overlap them)."""

    def __init__(self, delay=0.02):
        self.delay, self.now, self.peak, self.lock = delay, 0, 0, threading.Lock()

    def __call__(self, body):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(self.delay)
        with self.lock:
            self.now -= 1
        return default_reply(body)


def dead_url():
    s = FakeOpenAIServer()
    s.start()
    url = s.base_url
    s.close()  # nothing listens there any more: connection refused
    return url


def test_replies_in_input_order_spread_over_endpoints_with_per_endpoint_concurrency():
    ga, gb = Gauge(), Gauge()
    with FakeOpenAIServer(reply=ga) as a, FakeOpenAIServer(reply=gb) as b:
        llm = OpenAILLM(model="m", base_url=[{"url": a.base_url, "concurrency": 1}, {"url": b.base_url, "concurrency": 3}],
                        **FAST)
        assert isinstance(llm.client, MultiEndpointClient) and llm.client.concurrency == 4
        texts = [f"caption {i}" for i in range(24)]
        replies = llm.generate([conv(t) for t in texts], seed=1)
        assert replies == [f"reply to: {t}" for t in texts]
        assert len(a.requests) + len(b.requests) == 24 and a.requests and len(b.requests) > len(a.requests)
        assert ga.peak <= 1 and 1 <= gb.peak <= 3
        assert llm.info()["base_url"] == a.base_url  # the first endpoint names the model's server


def test_a_dead_endpoint_fails_over_without_losing_or_reordering_replies(caplog):
    with FakeOpenAIServer() as b:
        llm = build_llm({"backend": "openai", "model": "m", "base_url": [dead_url(), b.base_url], "concurrency": 2, **FAST})
        texts = [f"t{i}" for i in range(10)]
        with caplog.at_level(logging.INFO, logger="spti"):
            assert llm.generate([conv(t) for t in texts]) == [f"reply to: {t}" for t in texts]
        assert len(b.requests) == 10
        assert "trying another endpoint" in caplog.text


def test_server_errors_on_one_endpoint_go_to_the_other():
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        a.fail_next(50, status=503)
        c = ClientOptions.from_kwargs("test", {"base_url": [a.base_url, b.base_url], **FAST}).client()
        out = c.map(lambda t: c.post_json("chat/completions", {"model": "m", "messages": conv(t)}), [f"x{i}" for i in range(12)])
        assert [o["choices"][0]["message"]["content"] for o in out] == [f"reply to: x{i}" for i in range(12)]
        assert sum(s["served"] for s in c.stats()) == 12


def test_an_endpoint_answering_404_is_dropped_and_all_dropped_raises(caplog):
    with FakeOpenAIServer() as b:
        wrong = b.origin + "/nothing/v1"  # every request there: 404
        llm = OpenAILLM(model="m", base_url=[wrong, b.base_url], **FAST)
        with caplog.at_level(logging.WARNING, logger="spti"):
            assert llm.generate([conv("a"), conv("b"), conv("c")]) == ["reply to: a", "reply to: b", "reply to: c"]
        assert "not used any more" in caplog.text
        assert [s["dropped"] for s in llm.client.stats()] == [True, False]
        only_wrong = OpenAILLM(model="m", base_url=[wrong, b.origin + "/other/v1"], **FAST)
        with pytest.raises(BackendError, match="404"):
            only_wrong.generate([conv("a")])


def test_every_endpoint_failing_gives_up_after_the_retries():
    c = ClientOptions.from_kwargs("test", {"base_url": [dead_url(), dead_url()], **FAST}).client()
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="gave up after 3 rounds"):
        c.post_json("chat/completions", {"model": "m", "messages": conv("x")})
    assert time.monotonic() - t0 < 5


def test_captioner_and_renderer_over_two_endpoints_keep_order():
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        cap = OpenAICaptioner(model="vlm", base_url=[a.base_url, b.base_url], allow_remote=True, **FAST)
        colours = [(10 * i, 200 - 10 * i, 50) for i in range(8)]
        caps = cap.caption([Image.new("RGB", (16, 16), c) for c in colours])
        assert caps == [f"mean colour {r} {g} {b_}" for r, g, b_ in colours]
        r = OpenAIRenderer(model="img", base_url=[a.base_url, b.base_url], **FAST)
        prompts = [f"prompt {i}" for i in range(6)]
        images = r.render(prompts, list(range(6)))
        assert [mean_colour(im) for im in images] == [prompt_colour(p) for p in prompts]
        assert a.requests and b.requests


def test_endpoint_config_parsing():
    one = ClientOptions.from_kwargs("t", {"base_url": ["http://127.0.0.1:9/v1"]})
    assert one.base_url == "http://127.0.0.1:9/v1" and isinstance(one.client(), OpenAIClient)  # same as a string
    opts = ClientOptions.from_kwargs("t", {"base_url": ["http://u:pw@h1:8000/v1", {"url": "http://h2:8000/v1", "concurrency": 3}],
                                           "concurrency": 5})
    assert opts.base_url == (Endpoint("http://u:pw@h1:8000/v1"), Endpoint("http://h2:8000/v1", 3))
    assert "pw" not in repr(opts.base_url) and "pw" not in repr(opts.client())
    assert [s.limit for s in opts.client().slots] == [5, 3]
    for bad in ([], [3], [{"url": "http://h/v1", "concurrency": 0}], [{"host": "h"}], ["ftp://h/v1", "http://h/v1"]):
        with pytest.raises(ConfigError):
            ClientOptions.from_kwargs("t", {"base_url": bad}).client()
