from collections import Counter

import numpy as np
import pytest
from support.fakes import ScriptedLLM

from spti.config import GenerationConfig
from spti.errors import BackendError
from spti.pe.generation import TextGenerator, mask_words


def test_mask_words_masks_a_fraction_and_merges_blanks():
    rng = np.random.default_rng(0)
    words = "a red car parked in a quiet garage at night".split()
    m = mask_words(words, 0.5, rng)
    assert "_" in m
    assert "_ _" not in m
    kept = [w for w in m.split() if w != "_"]
    assert 1 <= len(kept) < len(words)
    assert mask_words(["one"], 0.5, rng) in ("one", "_")


def test_random_and_variations_are_reproducible_and_cleaned():
    cfg = GenerationConfig(domain="a photo", variation_mode="rephrase")
    g1 = TextGenerator(ScriptedLLM(), cfg, seed=3)
    g2 = TextGenerator(ScriptedLLM(), cfg, seed=3)
    r1, r2 = g1.random(10, iteration=0), g2.random(10, iteration=0)
    assert r1 == r2
    assert all(t.startswith("A ") and t.endswith(".") and '"' not in t for t in r1)
    v1 = g1.variations(r1, 3, iteration=1)
    assert v1 == g2.variations(r1, 3, iteration=1)
    assert len(v1) == 10 and all(len(v) == 3 for v in v1)
    assert all(not v.lower().startswith("sure") for vs in v1 for v in vs)
    assert TextGenerator(ScriptedLLM(), cfg, seed=4).random(10, iteration=0) != r1


def test_prompts_carry_domain_attributes_and_examples_but_never_more():
    cfg = GenerationConfig(domain="a photo of a bedroom", examples=["A public example caption."])
    g = TextGenerator(ScriptedLLM(), cfg, seed=0)
    convs = g.random_prompts(5, np.random.default_rng(0))
    text = convs[0][-1]["content"]
    assert "a photo of a bedroom" in text and "A public example caption." in text
    assert convs[0][0]["role"] == "system"
    fill = g.variation_prompts(["A red car in a garage."], np.random.default_rng(0))[0][-1]["content"]
    assert "_" in fill and "a photo of a bedroom" in fill


def test_garbage_is_retried_and_counted():
    stats = Counter()
    cfg = GenerationConfig(variation_mode="rephrase", max_retries=5)
    g = TextGenerator(ScriptedLLM(garbage=0.5), cfg, seed=0, stats=stats)
    out = g.random(40, iteration=0)
    assert len(out) == 40 and all(t.startswith("A ") for t in out)
    assert sum(v for k, v in stats.items() if k.startswith("random.rejected.")) > 0
    assert stats["random.llm_calls"] > 40


def test_an_llm_that_only_returns_garbage_is_a_clear_error_and_variations_fall_back():
    stats = Counter()
    g = TextGenerator(ScriptedLLM(always_garbage=True), GenerationConfig(max_retries=1), seed=0, stats=stats)
    with pytest.raises(BackendError, match="no usable caption"):
        g.random(5, iteration=0)
    v = g.variations(["A red car in a garage."], 2, iteration=1)
    assert v == [["A red car in a garage.", "A red car in a garage."]]
    assert stats["variation.fell_back_to_parent"] == 2
