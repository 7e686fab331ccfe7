"""Class-conditional PE (issue 12): one population per class, generated with its class description; each
class's private rows vote only for its candidates; ONE noisy histogram per iteration; per-class sizes;
resume without a second noise draw. The unlabelled behaviour is pinned by the golden runs (tests/e2e)."""

import json
import re

import numpy as np
import pytest
from support.fakes import COLOURS, OBJECTS, PLACES, BowEmbedder, ScriptedLLM, caption, parse

from spti.config import GenerationConfig, PEConfig
from spti.data.io import load_npz
from spti.errors import RunFolderError
from spti.pe import engine as engine_mod
from spti.pe.candidates import TextCandidateEmbedder
from spti.pe.engine import PrivateEvolution, _Stopped
from spti.pe.generation import TextGenerator
from spti.privacy import NoiseSource

CLASSES = ["red", "blue", "green"]  # class c's description is its colour word
MODES = {"red": "dog", "blue": "car", "green": "lamp"}  # each class's private object mode


class ClassLLM(ScriptedLLM):
    """The scripted LLM, but a prompt that names a class (``... of the class "blue"`` or ``for an image of
    the class "blue"``) always gets that colour: what a real LLM does with the class description. Records
    every prompt."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.prompts: list[str] = []

    def generate(self, conversations, **kw):
        out = super().generate(conversations, **kw)
        fixed = []
        for conv, reply in zip(conversations, out):
            prompt = conv[-1]["content"]
            self.prompts.append(prompt)
            m = re.search(r'class "(\w+)"', prompt)
            if m and m.group(1) in COLOURS:
                c, o, p = parse(reply)
                reply = caption(m.group(1), o or "car", p or "park") if o else reply
            fixed.append(reply)
        return fixed


def private_set(n=240, seed=0):
    """Class = colour; within each class the objects concentrate on that class's mode."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), size=n)
    texts = []
    for c in labels:
        colour = CLASSES[c]
        obj = MODES[colour] if rng.random() < 0.8 else rng.choice(OBJECTS)
        texts.append(caption(colour, obj, rng.choice(PLACES)))
    return texts, labels


def make_engine(folder, *, sizes=(10, 6, 8), sigma=1.0, noise=None, iterations=3, stop_after=None, llm=None,
                owners=None, lookahead=0, selection="sample"):
    emb = BowEmbedder()
    texts, labels = private_set()
    gen = TextGenerator(llm or ClassLLM(), GenerationConfig(variation_mode="rephrase"), seed=1,
                        descriptions=CLASSES)
    cfg = PEConfig(iterations=iterations, population=sum(sizes), variations=3, selection=selection, chunk_size=50)
    from spti.pe.histogram import contribution_weights

    return PrivateEvolution(
        cfg=cfg, generator=gen,
        embed_candidates=TextCandidateEmbedder(emb, generator=gen, lookahead=lookahead),
        private_features=emb.embed(texts), weights=None if owners is None else contribution_weights(owners, len(texts)),
        sigma=sigma, noise=noise or NoiseSource(insecure_seed=5), checkpoint_dir=folder, seed=1,
        stop_after=stop_after, private_labels=labels, class_sizes=np.array(sizes),
    )


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_populations_follow_the_class_sizes_and_descriptions_and_move_to_each_class_mode(tmp_path):
    llm = ClassLLM()
    eng = make_engine(tmp_path, llm=llm, iterations=4, sigma=0.5)
    final = eng.run()
    sizes = [10, 6, 8]
    for t in range(0, 5):
        pop = rows(tmp_path / f"iter_{t:03d}" / "population.jsonl")
        assert np.bincount([r["label"] for r in pop], minlength=3).tolist() == sizes  # per-class sizes, every t
        assert all(parse(r["text"])[0] == CLASSES[r["label"]] for r in pop)  # written with its description
        if t:
            cands = rows(tmp_path / f"iter_{t:03d}" / "candidates.jsonl")
            assert all("label" in r for r in cands)
            assert all(cands[r["candidate"]]["label"] == r["label"] for r in pop)  # selected within its class
    assert eng.final_labels.tolist() == [0] * 10 + [1] * 6 + [2] * 8
    assert len(final) == 24
    # every prompt named exactly one of the classes
    assert all(len(re.findall(r'class "(\w+)"', p)) == 1 for p in llm.prompts)
    # the class-conditional signal: within each class, its own object mode dominates at the end
    for c, colour in enumerate(CLASSES):
        objs = [parse(t)[1] for t, lab in zip(final, eng.final_labels) if lab == c]
        assert np.mean([o == MODES[colour] for o in objs]) > 0.5, (colour, objs)


def test_each_class_votes_only_for_its_own_candidates_in_one_histogram(tmp_path, monkeypatch):
    """Spy on the clean votes: class c's candidates receive exactly the weight of class c's private rows
    (every row votes, inside its class), and ONE noisy histogram per iteration covers all candidates."""
    seen = []
    real = engine_mod.class_vote_histogram

    def spy(*a, **k):
        counts = real(*a, **k)
        seen.append((counts.copy(), np.asarray(k["candidate_labels"]).copy(), np.asarray(k["private_labels"]).copy()))
        return counts

    drawn = []

    class CountingNoise(NoiseSource):
        def gaussian(self, shape, sigma, iteration):
            drawn.append((iteration, shape))
            return super().gaussian(shape, sigma, iteration)

    monkeypatch.setattr(engine_mod, "class_vote_histogram", spy)
    owners = [f"u{i % 37}" for i in range(240)]  # users whose rows span classes
    make_engine(tmp_path, noise=CountingNoise(insecure_seed=2), owners=owners).run()
    w = np.bincount([int(o[1:]) for o in owners])
    weights = np.array([1.0 / w[int(o[1:])] for o in owners])
    assert len(seen) == 3
    for t, (counts, clab, plab) in enumerate(seen, start=1):
        for c in range(3):
            assert counts[clab == c].sum() == pytest.approx(weights[plab == c].sum())
        noisy = load_npz(tmp_path / f"iter_{t:03d}" / "noisy_histogram.npz")["noisy_counts"]
        assert noisy.shape == counts.shape == (len(rows(tmp_path / f"iter_{t:03d}" / "candidates.jsonl")),)
    assert [i for i, _ in drawn] == [1, 2, 3]  # one draw per iteration, over all candidates
    assert [s for _, s in drawn] == [(c.shape[0],) for c, _, _ in seen]


def test_a_class_with_no_population_has_no_candidates_and_its_rows_do_not_vote(tmp_path, monkeypatch):
    seen = []
    real = engine_mod.class_vote_histogram
    monkeypatch.setattr(engine_mod, "class_vote_histogram",
                        lambda *a, **k: seen.append(k["private_labels"]) or real(*a, **k))
    eng = make_engine(tmp_path, sizes=(8, 0, 6), iterations=2)
    eng.run()
    assert 1 not in eng.final_labels
    assert all(r["label"] != 1 for r in rows(tmp_path / "iter_001" / "candidates.jsonl"))
    assert len(seen) == 2


def test_per_class_random_streams_are_distinct_and_deterministic():
    cfg = GenerationConfig(variation_mode="rephrase")
    g = TextGenerator(ScriptedLLM(), cfg, seed=3, descriptions=["a cat", "a cat"])  # same text, other class
    a0, a1 = g.random(6, iteration=0, label=0), g.random(6, iteration=0, label=1)
    assert a0 != a1  # distinct streams even with identical descriptions
    assert a0 == TextGenerator(ScriptedLLM(), cfg, seed=3, descriptions=["a cat", "a dog"]).random(6, iteration=0, label=0)
    assert g.random(6, iteration=0) != a0  # the unlabelled stream is a third one
    v = g.variations(a0, 2, iteration=1, label=1)
    assert v == g.variations(a0, 2, iteration=1, label=1) != g.variations(a0, 2, iteration=1, label=0)
    with pytest.raises(ValueError, match="no class description"):
        TextGenerator(ScriptedLLM(), cfg, seed=3).random(2, iteration=0, label=0)


def test_prompts_carry_the_class_description():
    cfg = GenerationConfig(domain="a chest x-ray", variation_mode="mixed")
    g = TextGenerator(ScriptedLLM(), cfg, seed=0, descriptions=["normal", "pneumonia"])
    rng = np.random.default_rng(0)
    for conv in g.random_prompts(3, rng, label=1) + g.variation_prompts(["A grey lung scan."] * 6, rng, label=1):
        assert 'a chest x-ray of the class "pneumonia"' in conv[-1]["content"]
    plain = g.random_prompts(2, np.random.default_rng(0))  # no label: the prompt of an unlabelled run
    assert "class" not in plain[0][-1]["content"] and "a chest x-ray" in plain[0][-1]["content"]
    # a template that uses {class} itself gets the plain domain
    own = GenerationConfig(domain="a chest x-ray", random_template="Caption {domain} showing {class}, {length} words.")
    text = TextGenerator(ScriptedLLM(), own, seed=0, descriptions=["normal", "pneumonia"]).random_prompts(
        1, np.random.default_rng(0), label=1)[0][-1]["content"]
    assert text.startswith("Caption a chest x-ray showing pneumonia,")
    # with public examples: the examples are of any class, so the class is named apart
    ex = GenerationConfig(domain="a chest x-ray", examples=["a lung scan", "a rib scan"])
    text = TextGenerator(ScriptedLLM(), ex, seed=0, descriptions=["normal", "pneumonia"]).random_prompts(
        1, np.random.default_rng(0), label=0)[0][-1]["content"]
    assert "Here are captions of a chest x-ray," in text and 'of the class "normal"' in text


def test_unlabelled_prompts_and_streams_are_those_of_a_generator_without_classes():
    cfg = GenerationConfig(variation_mode="mixed", examples=["A public one.", "Another public one."])
    a = TextGenerator(ScriptedLLM(), cfg, seed=2)
    b = TextGenerator(ScriptedLLM(), cfg, seed=2, descriptions=["x", "y"])
    assert a.random_prompts(4, np.random.default_rng(1)) == b.random_prompts(4, np.random.default_rng(1))
    assert a.random(5, iteration=0) == b.random(5, iteration=0)
    assert a.variations(["A red car in a park."], 3, iteration=2) == b.variations(["A red car in a park."], 3, iteration=2)


def test_lookahead_writes_each_candidates_variations_with_its_class(tmp_path):
    emb = BowEmbedder()
    gen = lambda: TextGenerator(ClassLLM(), GenerationConfig(variation_mode="rephrase"), seed=0,  # noqa: E731
                                descriptions=CLASSES)
    texts = ["A red car in a garage.", "A blue dog in a park.", "A red lamp in a kitchen."]
    got = TextCandidateEmbedder(emb, generator=gen(), lookahead=2)(texts, iteration=1, labels=[2, 1, 2])
    g = gen()
    want = {}
    for c, members in ((2, [0, 2]), (1, [1])):
        for i, vs in zip(members, g.variations([texts[i] for i in members], 2, iteration=1, stage="lookahead", label=c)):
            assert all(parse(v)[0] == CLASSES[c] for v in vs)  # written as class c
            want[i] = emb.embed(vs).mean(axis=0)
    np.testing.assert_allclose(got, np.stack([want[i] for i in range(3)]), atol=1e-6)
    llm = ClassLLM()
    make_engine(tmp_path, llm=llm, iterations=1, lookahead=2).run()  # the engine passes the classes along
    assert llm.prompts and all(re.search(r'class "(\w+)"', p) for p in llm.prompts)


@pytest.mark.parametrize("stop", [1, 2])
def test_labelled_resume_after_a_crash_gives_the_same_release_and_reuses_noise(tmp_path, stop):
    full = make_engine(tmp_path / "a", noise=NoiseSource(insecure_seed=7)).run()
    full_labels = rows(tmp_path / "a" / "iter_003" / "population.jsonl")
    with pytest.raises(_Stopped):
        make_engine(tmp_path / "b", noise=NoiseSource(insecure_seed=7), stop_after=stop).run()
    saved = load_npz(tmp_path / "b" / f"iter_{stop:03d}" / "noisy_histogram.npz")["noisy_counts"]
    drawn = []

    class CountingNoise(NoiseSource):
        def gaussian(self, shape, sigma, iteration):
            drawn.append(iteration)
            return super().gaussian(shape, sigma, iteration)

    eng = make_engine(tmp_path / "b", noise=CountingNoise(insecure_seed=7))
    assert eng.run() == full
    assert drawn == list(range(stop + 1, 4))  # iterations <= stop were never drawn again
    assert rows(tmp_path / "b" / "iter_003" / "population.jsonl") == full_labels
    assert np.array_equal(load_npz(tmp_path / "b" / f"iter_{stop:03d}" / "noisy_histogram.npz")["noisy_counts"], saved)


def test_labelled_resume_between_noise_and_selection_does_not_redraw(tmp_path):
    make_engine(tmp_path, iterations=2).run()
    before = rows(tmp_path / "iter_002" / "population.jsonl")
    (tmp_path / "iter_002" / "population.jsonl").unlink()

    class NoNoise(NoiseSource):
        def gaussian(self, *a, **k):
            raise AssertionError("noise drawn again")

    eng = make_engine(tmp_path, iterations=2, noise=NoNoise(insecure_seed=5))
    eng.run()
    assert rows(tmp_path / "iter_002" / "population.jsonl") == before
    assert np.bincount(eng.final_labels).tolist() == [10, 6, 8]


def test_checkpoints_of_the_other_kind_or_other_sizes_are_refused(tmp_path):
    make_engine(tmp_path / "lab", iterations=1).run()
    with pytest.raises(RunFolderError, match="other class sizes"):
        make_engine(tmp_path / "lab", sizes=(9, 7, 8), iterations=2).run()
    emb = BowEmbedder()
    plain = PrivateEvolution(
        cfg=PEConfig(iterations=1, population=24, variations=2), generator=TextGenerator(ScriptedLLM(), GenerationConfig()),
        embed_candidates=TextCandidateEmbedder(emb), private_features=emb.embed(private_set()[0]), weights=None,
        sigma=1.0, noise=NoiseSource(insecure_seed=1), checkpoint_dir=tmp_path / "lab",
    )
    with pytest.raises(RunFolderError, match="labelled run but this run is not"):
        plain.run()
    plain.dir = tmp_path / "plain"
    plain.run()
    with pytest.raises(RunFolderError, match="unlabelled run but this run is labelled"):
        make_engine(tmp_path / "plain", iterations=1).run()


def test_bad_class_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="both"):
        PrivateEvolution(cfg=PEConfig(), generator=None, embed_candidates=None, private_features=np.zeros((2, 3)),
                         weights=None, sigma=1, noise=None, checkpoint_dir=tmp_path, class_sizes=[1, 1])
    with pytest.raises(ValueError, match="class indices"):
        PrivateEvolution(cfg=PEConfig(), generator=None, embed_candidates=None, private_features=np.zeros((2, 3)),
                         weights=None, sigma=1, noise=None, checkpoint_dir=tmp_path, class_sizes=[1, 1],
                         private_labels=np.array([0, 2]))


def test_templates_may_use_the_class_variable():
    from spti.config import Config
    from spti.errors import ConfigError

    Config.from_dict({"generation": {"random_template": "One caption of {class} ({domain}), {length} words.",
                                     "rephrase_template": "Rewrite {text} as {class}."}}).validate(need_private=False)
    with pytest.raises(ConfigError, match=r"\{class\}"):  # the error lists the variables, {class} among them
        Config.from_dict({"generation": {"random_template": "One caption of {klass}."}}).validate(need_private=False)
