"""The Ray executor on a local 2-CPU Ray cluster with tiny plug-in backends: the same outputs as the local
executor (every role), a replica killed mid-stage restarted without duplicates or gaps, a streaming
variations -> render -> embed chain, and errors that come back without private content."""

from __future__ import annotations

import os

import numpy as np
import pytest
from support.fakes import COLOURS, OBJECTS, PLACES, caption, write_colour_squares

from spti.data.images import ImageRecord
from spti.errors import BackendError
from spti.executor import LLMCall, LocalExecutor, Step, render_pairs
from spti.hashing import sha256_file

pytest.importorskip("ray.data")

TEXTS = [caption(c, o, p) for c in COLOURS for o in OBJECTS for p in PLACES[:2]]
LLM = {"backend": "support.fakes:ScriptedLLM"}
SOLID = {"backend": "support.fakes:SolidRenderer"}
MEAN = {"backend": "support.fakes:MeanColourEmbedder"}
COLOUR = {"backend": "support.fakes:ColourCaptioner"}
BOW = {"backend": "support.fakes:BowEmbedder"}


def ray_executor(**kw):
    from spti.executor.ray import RayExecutor

    return RayExecutor(workers=2, cpus_per_replica=0.5, **kw)  # fractional CPUs: 2 replicas on 2 cores


def same(a, b) -> bool:
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


@pytest.mark.slow
def test_ray_equals_local_for_every_role(ray_cluster, tmp_path):
    """One chain through four roles (llm -> renderer -> captioner -> text embedder) and the image embedder on
    private image records (decoded and hash-checked by the replicas): outputs equal the local executor's."""
    conv = [[{"role": "user", "content": "write a caption"}]] * 3
    calls = [LLMCall(conv, max_new_tokens=8, seed=s) for s in range(6)]
    steps = [Step("llm", LLM, link=render_pairs((0, 1))), Step("renderer", SOLID, batch_size=4),
             Step("captioner", COLOUR, batch_size=3), Step("text_embedder", BOW, batch_size=5)]
    rx = ray_executor()
    got = rx.chain(steps, calls)
    want = LocalExecutor().chain(steps, calls)
    assert [len(r) for r in got] == [6] * 6 and same(got, want)

    write_colour_squares(tmp_path, n=9, users=2)
    recs = [ImageRecord(id=f"img-{i:06d}", path=p, user_id="u", sha256=sha256_file(p), width=16, height=16,
                        metadata={"private": "x"}) for i, p in enumerate(sorted(tmp_path.rglob("*.png")))]
    got = ray_executor(batch_size=2).embed_images(MEAN, recs)
    assert got.shape == (9, 12) and np.array_equal(got, LocalExecutor(batch_size=2).embed_images(MEAN, recs))

    # the proxy for code that calls a backend: described by a replica, called through the executor
    from support.fakes import SolidRenderer

    ren = ray_executor().backend("renderer", SOLID)
    assert ren.cache_key == SolidRenderer().cache_key
    images = ren.render(TEXTS[:4], [0, 1, 2, 3])
    assert [im.tobytes() for im in images] == [im.tobytes() for im in SolidRenderer().render(TEXTS[:4], [0, 1, 2, 3])]


@pytest.mark.slow
def test_a_killed_replica_is_restarted_and_the_stage_completes_exactly_once(ray_cluster, tmp_path):
    marker = tmp_path / "died"
    texts = list(TEXTS)
    texts[13] = "DIE"  # the replica that gets this batch kills its own process the first time
    cfg = {"backend": "support.executor_fakes:DyingBowEmbedder", "marker": str(marker), "batch_size": 4}
    got = ray_executor().embed_texts(cfg, texts)
    assert marker.is_file() and int(marker.read_text()) != os.getpid()  # a replica process really died
    want = LocalExecutor().embed_texts(cfg, texts)  # marker present: no death here
    assert got.shape == (32, 12) and np.array_equal(got, want)


def test_ray_map_equals_local_and_errors_come_back_without_private_content(ray_cluster):
    """The fast Ray check: a map over two replicas gives the local bytes in input order; a backend that
    raises with its input in the message fails the stage with a BackendError that names only its type."""
    step = Step("text_embedder", BOW, batch_size=3)
    got = ray_executor().map(step, TEXTS)
    want = LocalExecutor().map(step, TEXTS)
    assert len(got) == 32 and all(np.array_equal(a, b) for a, b in zip(got, want))
    with pytest.raises(BackendError) as e:
        ray_executor().embed_texts({"backend": "support.executor_fakes:FailingBowEmbedder"}, ["my private caption"])
    assert "private caption" not in str(e.value) and "ValueError" in str(e.value)
