"""Stream, don't stage (issue 11, requirement 2): a generation round cut into LLM calls (``first_index``) gives
the replies of the one long call, and each call's usable replies are rendered and embedded on the way; the
candidate embedder then uses those rows and writes the feature cache as it would without streaming."""

from __future__ import annotations

from collections import Counter
from functools import partial

import numpy as np
import pytest
from support.fakes import MeanColourEmbedder, ScriptedLLM, SolidRenderer, SplittableScriptedLLM

from spti.data.cache import FeatureCache, RenderCache
from spti.executor import LLMCall, LocalExecutor, Step, is_splittable
from spti.pe.stream import RenderStream, prefetch_link, text_digest
from spti.text import clean_caption

CLEAN = partial(clean_caption, min_words=3, max_words=40)


def convs(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"write caption number {i}"}] for i in range(n)]


def variation_convs(parents: list[str]) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Rewrite:\n\n{p}\n\nCaption:"}] for p in parents]


@pytest.mark.parametrize("cut", [1, 3, 7, 100])
def test_cut_calls_give_the_replies_of_one_call(cut):
    llm = SplittableScriptedLLM(garbage=0.3)
    c = convs(17)
    whole = llm.generate(c, seed=11)
    parts = []
    for s in range(0, len(c), cut):
        parts += llm.generate(c[s : s + cut], seed=11, first_index=s)
    assert parts == whole
    assert len(set(whole)) > 5  # replies differ: the index really seeds each one


def test_only_backends_that_declare_it_are_split():
    assert is_splittable(SplittableScriptedLLM()) and not is_splittable(ScriptedLLM())
    from spti.models.llm.hf import HFLLM
    from spti.models.llm.llamacpp import LlamaCppLLM
    from spti.models.llm.openai_api import OpenAILLM
    from spti.models.llm.vllm import VLLMLLM

    assert LlamaCppLLM.splittable and OpenAILLM.splittable and VLLMLLM.splittable
    assert not HFLLM.splittable  # batches by prompt length across the whole call


def test_a_non_splittable_backend_never_gets_a_first_index():
    from spti.errors import ConfigError
    from spti.executor.tasks import Worker

    w = Worker(Step("llm", backend=ScriptedLLM()))
    with pytest.raises(ConfigError, match="cannot be cut"):
        w.run([LLMCall(convs(2), seed=1, first_index=2)])


def test_the_link_renders_usable_new_texts_once_and_passes_every_reply_on():
    from spti.executor.tasks import Passthrough

    replies = ["A red cube in a field.", "", "A red cube in a field.", "A blue ball on a table.", "I'm sorry, I cannot."]
    known = frozenset({text_digest("A blue ball on a table.")})
    out = prefetch_link(CLEAN, (5, 6), known, None, replies)
    passed = [x.value for x in out if isinstance(x, Passthrough)]
    assert passed == list(enumerate(replies))  # every raw reply, in order
    assert [x for x in out if not isinstance(x, Passthrough)] == [("A red cube in a field.", 5),
                                                                  ("A red cube in a field.", 6)]


def _stream(tmp_path, llm, chunk, executor=None):
    stats: Counter = Counter()
    cache = RenderCache(tmp_path / "cache", SolidRenderer(), stats, "evolve")
    return RenderStream(llm, cache, MeanColourEmbedder(), seeds=(5,), chunk=chunk, executor=executor), stats


def test_a_streamed_round_renders_and_embeds_the_usable_replies(tmp_path):
    llm = SplittableScriptedLLM(garbage=0.25)
    parents = ["A red cube in a field.", "A green ball on a beach."]
    c = variation_convs(parents * 6)
    stream, stats = _stream(tmp_path, llm, chunk=4)
    raw = stream.generate(c, max_new_tokens=32, temperature=1.0, top_p=1.0, seed=9, clean=CLEAN, known=parents)
    assert raw == llm.generate(c, max_new_tokens=32, seed=9)  # the generator sees the same replies
    usable = {t for t, _ in map(CLEAN, raw) if t is not None} - set(parents)
    assert usable and set(t for t, _ in stream.prefetched) == usable  # rendered: usable and new only
    emb = MeanColourEmbedder()
    for (text, seed), vec in stream.prefetched.items():
        png = stream.render_cache.path(text, seed)
        assert png.is_file()  # written into the render cache at once
        from PIL import Image

        with Image.open(png) as im:
            assert np.array_equal(vec, emb.embed([im.convert("RGB")])[0])
    assert stats["evolve"] >= len(usable)  # every render counted


def test_renders_start_before_the_llm_has_written_the_whole_round(tmp_path):
    """On the local executor the chain runs call by call: the first call's renders come before the second
    LLM call (on Ray the same tasks overlap)."""
    events: list[str] = []

    class LoggingLLM(SplittableScriptedLLM):
        def generate(self, conversations, **kw):
            events.append("llm")
            return super().generate(conversations, **kw)

    class LoggingRenderer(SolidRenderer):
        def render(self, prompts, seeds):
            events.append("render")
            return super().render(prompts, seeds)

    stats: Counter = Counter()
    cache = RenderCache(tmp_path / "cache", LoggingRenderer(), stats, "evolve")
    stream = RenderStream(LoggingLLM(), cache, MeanColourEmbedder(), seeds=(5,), chunk=3)
    stream.generate(convs(9), max_new_tokens=32, temperature=1.0, top_p=1.0, seed=2, clean=CLEAN)
    assert events.count("llm") == 3 and events.index("render") < events.index("llm", 1)


def test_the_embedder_uses_streamed_rows_and_writes_the_cache_as_without_streaming(tmp_path):
    """Candidates embedded after a streamed round: the same features, and the same feature-cache shards
    (files), as a run that rendered and embedded them in the embedding stage."""
    from spti.pe.candidates import ImageCandidateEmbedder

    llm = SplittableScriptedLLM()
    parents = ["A red cube in a field.", "A green ball on a beach.", "A blue chair in a room."]
    c = variation_convs(parents * 4)
    outs = {}
    for mode in ("staged", "streamed"):
        root = tmp_path / mode
        stats: Counter = Counter()
        cache = RenderCache(root, SolidRenderer(), stats, "evolve")
        feats = FeatureCache(root, "features")
        stream = RenderStream(llm, cache, MeanColourEmbedder(), seeds=(5,), chunk=5) if mode == "streamed" else None
        emb = ImageCandidateEmbedder(cache, MeanColourEmbedder(), renders=1, base_seed=0, feature_cache=feats,
                                     stream=stream)
        if stream is not None:
            raw = stream.generate(c, max_new_tokens=32, temperature=1.0, top_p=1.0, seed=4, clean=CLEAN)
        else:
            raw = llm.generate(c, max_new_tokens=32, seed=4)
        texts = parents + [t for t, _ in map(CLEAN, raw) if t is not None]
        outs[mode] = (emb(texts, iteration=1), sorted(p.read_bytes() for p in (root / "features").glob("*.npz")),
                      stats["evolve"])
        if stream is not None:
            assert not stream.prefetched  # taken by the embedder
    assert np.array_equal(outs["staged"][0], outs["streamed"][0])
    assert outs["staged"][1] == outs["streamed"][1]
    assert outs["streamed"][2] >= outs["staged"][2]


def test_a_stream_on_the_local_executor_is_possible_only_with_a_splittable_llm():
    r, e = SolidRenderer(), MeanColourEmbedder()
    assert RenderStream.possible(SplittableScriptedLLM(), r, e)
    assert not RenderStream.possible(ScriptedLLM(), r, e)


def test_without_a_seed_a_round_is_one_plain_call(tmp_path):
    llm = SplittableScriptedLLM()
    stream, _ = _stream(tmp_path, llm, chunk=2)
    out = stream.generate(convs(5), max_new_tokens=8, temperature=1.0, top_p=1.0, seed=None, clean=CLEAN)
    assert len(out) == 5 and not stream.prefetched


def test_llm_chunk_is_validated_and_reaches_the_executor():
    from spti.config import Config
    from spti.errors import ConfigError
    from spti.executor import make_executor

    assert make_executor(Config.from_dict({"executor": {"llm_chunk": 7}})).llm_chunk == 7
    assert LocalExecutor().llm_chunk == 64
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="llm_chunk"):
            Config.from_dict({"executor": {"llm_chunk": bad}}).validate(need_private=False)


def test_split_call_keeps_every_conversation_once_with_its_index():
    from spti.executor.tasks import split_call

    call = LLMCall(convs(10), seed=3, first_index=4)
    parts = split_call(call, 4)
    assert [len(p.conversations) for p in parts] == [4, 4, 2]
    assert [p.first_index for p in parts] == [4, 8, 12]
    assert [c for p in parts for c in p.conversations] == list(call.conversations)
    assert split_call(call, 10) == [call]
