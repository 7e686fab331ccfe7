"""The PE loop: convergence on a known attribute mix, resume without redrawing noise, noise independence."""

from collections import Counter

import numpy as np
import pytest
from support.fakes import COLOURS, OBJECTS, PLACES, BowEmbedder, ScriptedLLM, caption, parse

from spti.config import GenerationConfig, PEConfig
from spti.data.io import load_npz
from spti.pe.candidates import TextCandidateEmbedder
from spti.pe.engine import PrivateEvolution, _Stopped
from spti.pe.generation import TextGenerator
from spti.privacy import NoiseSource

# A skewed private mix: colour, object and place each concentrated on one value.
P_COLOUR = [0.7, 0.1, 0.1, 0.1]
P_OBJECT = [0.1, 0.7, 0.1, 0.1]
P_PLACE = [0.1, 0.1, 0.1, 0.7]


def private_texts(n=600, seed=0):
    rng = np.random.default_rng(seed)
    return [
        caption(rng.choice(COLOURS, p=P_COLOUR), rng.choice(OBJECTS, p=P_OBJECT), rng.choice(PLACES, p=P_PLACE))
        for _ in range(n)
    ]


def mix_error(texts):
    """Sum over the three attributes of the total-variation distance to the private mix."""
    err = 0.0
    for pos, (vocab, p) in enumerate([(COLOURS, P_COLOUR), (OBJECTS, P_OBJECT), (PLACES, P_PLACE)]):
        vals = [parse(t)[pos] for t in texts]
        q = np.array([vals.count(v) for v in vocab], dtype=float) / len(vals)
        err += 0.5 * np.abs(q - np.array(p)).sum()
    return err


def make_engine(tmp_path, *, sigma, noise, iterations=5, population=60, stop_after=None, seed=0, selection="rank"):
    emb = BowEmbedder()
    priv = emb.embed(private_texts())
    gen = TextGenerator(ScriptedLLM(), GenerationConfig(variation_mode="rephrase"), seed=seed)
    cfg = PEConfig(iterations=iterations, population=population, variations=4, selection=selection, chunk_size=128)
    return PrivateEvolution(
        cfg=cfg, generator=gen, embed_candidates=TextCandidateEmbedder(emb), private_features=priv, weights=None,
        sigma=sigma, noise=noise, checkpoint_dir=tmp_path, seed=seed, stop_after=stop_after,
    )


def initial_population(folder):
    import json

    return [json.loads(r)["text"] for r in (folder / "iter_000" / "population.jsonl").read_text().splitlines()]


def mode_share(texts):
    """Share of the population carrying the private mode of each attribute (red, dog, beach)."""
    vals = [parse(t) for t in texts]
    return [np.mean([v[i] == m for v in vals]) for i, m in enumerate(["red", "dog", "beach"])]


def test_rank_selection_moves_the_population_to_the_private_modes(tmp_path):
    # 64 possible captions: a small population, so that top-N ranking has to choose.
    final = make_engine(tmp_path, sigma=2.0, noise=NoiseSource(insecure_seed=1), population=12).run()
    before = mode_share(initial_population(tmp_path))
    after = mode_share(final)
    assert np.mean(before) < 0.45, before
    assert min(after) > 0.5 and np.mean(after) > 2 * np.mean(before), (before, after)
    assert len(final) == 12


def test_sample_selection_matches_the_private_mix(tmp_path):
    """Sampling ∝ noisy counts reproduces the private attribute mix, far better than iteration 0."""
    final = make_engine(tmp_path, sigma=2.0, noise=NoiseSource(insecure_seed=2), selection="sample",
                        population=150, iterations=6).run()
    e0, eT = mix_error(initial_population(tmp_path)), mix_error(final)
    assert eT < 0.5 * e0, (e0, eT)


def test_with_huge_noise_there_is_no_convergence(tmp_path):
    """Control: sigma so large the votes are pure noise, the mix does not improve much (so the
    convergence tests above measure the private signal, not an artefact of the scripted LLM)."""
    final = make_engine(tmp_path, sigma=1e6, noise=NoiseSource(insecure_seed=3), selection="sample",
                        population=150, iterations=6).run()
    assert mix_error(final) > 0.6 * mix_error(initial_population(tmp_path))


def test_resume_after_a_crash_gives_the_same_release_and_reuses_noise(tmp_path):
    full = make_engine(tmp_path / "a", sigma=3.0, noise=NoiseSource(insecure_seed=7)).run()
    with pytest.raises(_Stopped):
        make_engine(tmp_path / "b", sigma=3.0, noise=NoiseSource(insecure_seed=7), stop_after=2).run()
    saved = load_npz(tmp_path / "b" / "iter_002" / "noisy_histogram.npz")["noisy_counts"]

    class CountingNoise(NoiseSource):
        iterations_drawn: list = []

        def gaussian(self, shape, sigma, iteration):
            CountingNoise.iterations_drawn.append(iteration)
            return super().gaussian(shape, sigma, iteration)

    resumed = make_engine(tmp_path / "b", sigma=3.0, noise=CountingNoise(insecure_seed=7)).run()
    assert resumed == full
    assert CountingNoise.iterations_drawn == [3, 4, 5]  # iterations 1 and 2 were never drawn again
    assert np.array_equal(load_npz(tmp_path / "b" / "iter_002" / "noisy_histogram.npz")["noisy_counts"], saved)


def test_resume_between_noise_and_selection_does_not_redraw(tmp_path):
    """A crash after the noisy histogram is saved but before selection: the saved noise is used."""
    eng = make_engine(tmp_path, sigma=3.0, noise=NoiseSource(insecure_seed=9), iterations=2)
    eng.run()
    (tmp_path / "iter_002" / "population.jsonl").unlink()
    before = load_npz(tmp_path / "iter_002" / "noisy_histogram.npz")["noisy_counts"]

    class NoNoise(NoiseSource):
        def gaussian(self, *a, **k):
            raise AssertionError("noise drawn again")

    again = make_engine(tmp_path, sigma=3.0, noise=NoNoise(insecure_seed=9), iterations=2).run()
    assert len(again) == 60
    assert np.array_equal(load_npz(tmp_path / "iter_002" / "noisy_histogram.npz")["noisy_counts"], before)


def test_noise_is_independent_of_the_user_seed(tmp_path):
    """Same user seed, secure noise: different noisy histograms. Different user seeds, same insecure noise
    seed: same noise vector (the noise stream never derives from the experiment seed)."""
    a = make_engine(tmp_path / "a", sigma=5.0, noise=NoiseSource(), iterations=1)
    b = make_engine(tmp_path / "b", sigma=5.0, noise=NoiseSource(), iterations=1)
    a.run(), b.run()
    ha = load_npz(tmp_path / "a" / "iter_001" / "noisy_histogram.npz")["noisy_counts"]
    hb = load_npz(tmp_path / "b" / "iter_001" / "noisy_histogram.npz")["noisy_counts"]
    assert not np.allclose(ha, hb)
    n1 = NoiseSource(insecure_seed=5).gaussian((50,), 1.0, iteration=1)
    np.random.seed(0)
    n2 = NoiseSource(insecure_seed=5).gaussian((50,), 1.0, iteration=1)
    assert np.array_equal(n1, n2)


def test_clean_histogram_is_never_written(tmp_path):
    make_engine(tmp_path, sigma=1.0, noise=NoiseSource(insecure_seed=1), iterations=1).run()
    z = load_npz(tmp_path / "iter_001" / "noisy_histogram.npz")
    assert set(z) == {"noisy_counts", "sigma", "iteration"}
    counts = z["noisy_counts"]
    assert not np.allclose(counts, np.round(counts))  # noise present: not integer vote counts
    assert Counter(p.name for p in (tmp_path / "iter_001").iterdir()) == Counter(
        ["candidates.jsonl", "noisy_histogram.npz", "population.jsonl"]
    )


def test_lookahead_votes_against_the_mean_of_variations():
    """Aug-PE lookahead: a candidate is represented by the mean embedding of L of its variations."""
    emb = BowEmbedder()
    gen = TextGenerator(ScriptedLLM(), GenerationConfig(variation_mode="rephrase"), seed=0)
    la = TextCandidateEmbedder(emb, generator=gen, lookahead=3)
    texts = ["A red car in a garage.", "A blue dog in a park."]
    got = la(texts, iteration=1)
    variations = TextGenerator(ScriptedLLM(), GenerationConfig(variation_mode="rephrase"), seed=0).variations(
        texts, 3, iteration=1, stage="lookahead"
    )
    want = np.stack([emb.embed(v).mean(axis=0) for v in variations])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(got, emb.embed(texts))
    with pytest.raises(ValueError):
        TextCandidateEmbedder(emb, lookahead=2)  # needs the generator
