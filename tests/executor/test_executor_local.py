"""The executor interface on the local executor (no Ray): outputs per role equal the backends' own, in input
order, whatever the task size; chains; errors; and `import spti.executor` stays light."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from support.fakes import (
    COLOURS,
    OBJECTS,
    PLACES,
    BowEmbedder,
    ColourCaptioner,
    MeanColourEmbedder,
    ScriptedLLM,
    SolidRenderer,
    caption,
    write_colour_squares,
)

from spti.data.images import ImageRecord
from spti.data.release import png_bytes
from spti.errors import BackendError, ConfigError
from spti.executor import LLMCall, LocalExecutor, Step, make_executor, render_pairs
from spti.hashing import sha256_file

TEXTS = [caption(c, o, p) for c in COLOURS for o in OBJECTS for p in PLACES[:2]]  # 32 texts
BOW = {"backend": "support.fakes:BowEmbedder"}
SOLID = {"backend": "support.fakes:SolidRenderer"}
MEAN = {"backend": "support.fakes:MeanColourEmbedder"}
COLOUR = {"backend": "support.fakes:ColourCaptioner"}
LLM = {"backend": "support.fakes:ScriptedLLM"}


def records(folder, n=7):
    write_colour_squares(folder, n=n, users=2)
    paths = sorted(folder.rglob("*.png"))
    return [ImageRecord(id=f"img-{i:06d}", path=p, user_id=None, sha256=sha256_file(p), width=16, height=16)
            for i, p in enumerate(paths)]


@pytest.mark.parametrize("batch_size", [None, 1, 5, 100])
def test_map_per_role_equals_the_backends_own_outputs(tmp_path, batch_size):
    ex = LocalExecutor(batch_size=batch_size)
    assert np.array_equal(ex.embed_texts(BOW, TEXTS), BowEmbedder().embed(TEXTS))
    seeds = list(range(len(TEXTS)))
    pngs = ex.render(SOLID, TEXTS, seeds)
    assert pngs == [png_bytes(im) for im in SolidRenderer().render(TEXTS, seeds)]
    recs = records(tmp_path)
    from spti.data.images import iter_batches

    ((_, images),) = list(iter_batches(recs, len(recs)))
    assert ex.caption(COLOUR, recs) == ColourCaptioner().caption(images)
    assert np.array_equal(ex.embed_images(MEAN, recs), MeanColourEmbedder().embed(images))
    assert np.array_equal(ex.embed_images(MEAN, pngs), ex.embed_images(MEAN, [p for p in pngs]))
    conv = [[{"role": "user", "content": "write a caption"}]] * 3
    calls = [LLMCall(conv, max_new_tokens=8, seed=s) for s in (1, 2, 3)]
    assert ex.generate(LLM, calls) == [ScriptedLLM().generate(conv, max_new_tokens=8, seed=s) for s in (1, 2, 3)]
    ex.close()


def test_stream_yields_every_task_once_in_input_ranges():
    ex = LocalExecutor(batch_size=5)
    got = list(ex.stream(Step("text_embedder", BOW), TEXTS))
    assert [r for r, _ in got] == [range(s, min(32, s + 5)) for s in range(0, 32, 5)]
    assert np.array_equal(np.stack([v for _, out in got for v in out]), BowEmbedder().embed(TEXTS))


def test_chain_variations_render_embed_leaves():
    conv = [[{"role": "user", "content": "write a caption"}]] * 2
    calls = [LLMCall(conv, seed=s) for s in range(5)]
    steps = [Step("llm", LLM, link=render_pairs((10, 11))), Step("renderer", SOLID), Step("image_embedder", MEAN)]
    res = LocalExecutor().chain(steps, calls)
    assert [len(r) for r in res] == [4] * 5  # 2 replies x 2 seeds per call
    replies = ScriptedLLM().generate(conv, seed=3)
    (t, s), png, vec = res[3][1]
    assert (t, s) == (replies[0], 11)
    assert png == png_bytes(SolidRenderer().render([t], [s])[0])
    assert np.array_equal(vec, MeanColourEmbedder().embed(SolidRenderer().render([t], [s]))[0])


def test_a_backend_that_drops_an_output_is_refused():
    class Short(BowEmbedder):
        def embed(self, texts):
            return super().embed(texts)[:-1]

    with pytest.raises(BackendError, match="returned 3 outputs for a batch of 4"):
        LocalExecutor().map(Step("text_embedder", backend=Short(), batch_size=4), TEXTS[:4])


def test_local_executor_builds_each_model_once():
    ex = LocalExecutor()
    ex.embed_texts(BOW, TEXTS[:3])
    ex.embed_texts(BOW, TEXTS[3:6])
    assert len(ex._workers) == 1
    ex.close()
    assert not ex._workers


def test_make_executor():
    assert isinstance(make_executor(None), LocalExecutor)
    assert isinstance(make_executor({"kind": "local", "batch_size": 3}), LocalExecutor)
    rx = make_executor({"kind": "local"}, kind="ray", workers=2)
    assert rx.kind == "ray" and rx.workers == 2  # built without starting (or importing) Ray
    with pytest.raises(ConfigError, match="executor.kind"):
        make_executor({"kind": "dask"})
    with pytest.raises(ConfigError, match="unknown model role"):
        Step("vlm", BOW)


def test_importing_the_executor_imports_neither_ray_nor_torch():
    code = ("import sys, spti, spti.executor, spti.executor.ray, spti.executor.calibrate; "
            "print('HEAVY', [m for m in ('ray', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_spti_privacy_does_not_import_ray():
    code = ("import sys; from spti.cli import main; "
            "main(['privacy','--epsilon','1','--iterations','10','--num-private','300000']); "
            "print('HEAVY', [m for m in ('ray', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_describe_and_the_remote_backend_proxy():
    from spti.executor.proxy import RemoteBackend

    ex = LocalExecutor()
    d = ex.describe(Step("text_embedder", BOW))
    assert d.cache_key == BowEmbedder().cache_key and d.dim == 12 and d.batch_size == 512
    assert isinstance(ex.backend("text_embedder", BOW), BowEmbedder)  # local: the model itself
    # the proxy Ray hands out, driven here by the local executor: same outputs as the backends
    emb = RemoteBackend(ex, "text_embedder", BOW, d)
    assert emb.cache_key == BowEmbedder().cache_key and emb.dim == 12
    assert np.array_equal(emb.embed(TEXTS), BowEmbedder().embed(TEXTS))
    ren = RemoteBackend(ex, "renderer", SOLID, ex.describe(Step("renderer", SOLID)))
    got, want = ren.render(TEXTS[:3], [1, 2, 3]), SolidRenderer().render(TEXTS[:3], [1, 2, 3])
    assert [np.asarray(a).tobytes() for a in got] == [np.asarray(b).tobytes() for b in want]
    llm = RemoteBackend(ex, "llm", LLM, ex.describe(Step("llm", LLM)))
    conv = [[{"role": "user", "content": "x"}]] * 2
    assert llm.generate(conv, seed=4) == ScriptedLLM().generate(conv, seed=4)
    cap = RemoteBackend(ex, "captioner", COLOUR, ex.describe(Step("captioner", COLOUR)))
    assert cap.caption(want) == ColourCaptioner().caption(want)


def test_tasks_never_cross_a_shard_boundary_with_split_every():
    from spti.executor.tasks import make_tasks

    assert make_tasks(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert make_tasks(10, 4, split_every=5) == [range(0, 4), range(4, 5), range(5, 9), range(9, 10)]
    got = [r for r, _ in LocalExecutor(batch_size=4).stream(Step("text_embedder", BOW), TEXTS[:10], split_every=5)]
    assert got == make_tasks(10, 4, split_every=5)
