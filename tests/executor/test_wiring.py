"""The stages wired to the executor (issue 11), checked fast and without Ray: an executor that hands out
:class:`~spti.executor.proxy.RemoteBackend` proxies, as the Ray executor does, but runs them in this process,
takes every path a Ray run takes (captioning and private embeddings streamed into shards, renders streamed
into the render cache, the render -> embed chain of image voting, LLM calls as executor maps) and must write
the run folder the plain local executor writes. The same on Ray: tests/e2e/test_executor_run.py (slow)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from support import golden

from spti.executor import LocalExecutor, Step, activate, active_executor, is_remote, step_for
from spti.executor.proxy import RemoteBackend

E2E = Path(__file__).resolve().parents[1] / "e2e"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_wiring_{name}", E2E / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class ProxyExecutor(LocalExecutor):
    """Local execution behind proxies: what the stages see of a Ray executor. ``seen``: the roles built."""

    kind = "proxy"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: list[str] = []

    def backend(self, role, config):
        self.seen.append(role)
        return RemoteBackend(self, role, config, self.describe(Step(role, config)))


@pytest.mark.parametrize("voting", ["image", "text"])
def test_the_proxy_paths_write_the_local_run_folder(tmp_path, monkeypatch, voting):
    import spti.pipeline

    runs = _load("test_executor_run")
    spti.pipeline.run(runs._config(tmp_path / "local", voting))
    made: list[ProxyExecutor] = []

    def proxy_executor(cfg, **kw):
        made.append(ProxyExecutor(batches_per_task=2))  # tasks of two batches: the chain's size rule too
        return made[-1]

    monkeypatch.setattr(spti.pipeline, "make_executor", proxy_executor)
    spti.pipeline.run(runs._config(tmp_path / "proxy", voting))
    want = golden.dumps(golden.run_digest(tmp_path / "local" / "run", base=tmp_path / "local"))
    got = golden.dumps(golden.run_digest(tmp_path / "proxy" / "run", base=tmp_path / "proxy"))
    assert got == want, runs._diff(want, got)
    roles = {"image": {"image_embedder", "renderer", "llm"}, "text": {"captioner", "text_embedder", "renderer", "llm"}}
    assert set(made[0].seen) == roles[voting]


def test_step_for_runs_a_proxy_on_its_executor_and_a_live_backend_here():
    from support.fakes import BowEmbedder

    ex = ProxyExecutor()
    proxy = ex.backend("text_embedder", {"backend": "support.fakes:BowEmbedder"})
    got_ex, step = step_for("text_embedder", proxy)
    assert got_ex is ex and step.backend is None and step.batch_size == proxy.batch_size and is_remote(proxy)
    live = BowEmbedder()
    got_ex, step = step_for("text_embedder", live)
    assert isinstance(got_ex, LocalExecutor) and step.backend is live and not is_remote(live)
    assert active_executor() is None
    with activate(ex):
        assert active_executor() is ex
    assert active_executor() is None


def test_evaluation_features_through_a_proxy_equal_the_local_ones(tmp_path):
    """metrics.features.embed_set with an embedder on an executor's replicas: the features and the feature
    cache's shards of the local loop (one cache shard per batch, in order), unreadable images left out."""
    import numpy as np
    from support.fakes import MeanColourEmbedder, write_colour_squares

    from spti.metrics import features
    from spti.metrics.imagesets import ImageSet

    write_colour_squares(tmp_path / "imgs", n=11, users=2)
    paths = sorted((tmp_path / "imgs").rglob("*.png"))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    items = [*paths[:4], tmp_path / "bad.png", *paths[4:]]

    def embed(embedder, cache_dir):
        s = ImageSet(list(items), [f"#{i}" for i in range(len(items))], "test")
        cache = features.open_feature_cache(cache_dir, embedder)
        return features.embed_set(embedder, s, batch_size=3, cache=cache, desc="synthetic"), cache

    (want, kept), _ = embed(MeanColourEmbedder(), tmp_path / "local")
    proxy = ProxyExecutor().backend("image_embedder", {"backend": "support.fakes:MeanColourEmbedder"})
    (got, kept2), _ = embed(proxy, tmp_path / "proxy")
    assert kept == kept2 and 4 not in kept and np.array_equal(got, want)
    name = f"image-features-{proxy.cache_key}"
    shards = lambda d: [np.load(p)["keys"].tolist() for p in sorted((d / name).glob("*.npz"))]  # noqa: E731
    assert shards(tmp_path / "proxy") == shards(tmp_path / "local") and len(shards(tmp_path / "local")) == 4


@pytest.mark.parametrize("command", ["run", "evolve", "caption", "render"])
def test_the_executor_flags_set_the_config(command):
    from spti.cli import _config, build_parser

    extra = {"render": ["--captions", "c.jsonl"]}.get(command, [])
    a = build_parser().parse_args([command, *extra, "--executor", "ray", "--ray-address", "auto"])
    cfg = _config(a)
    assert (cfg.executor.kind, cfg.executor.address) == ("ray", "auto")
    assert _config(build_parser().parse_args([command, *extra])).executor.kind == "local"
