"""``spti demo``'s pieces without the models (no llama.cpp, no torch): the skewed private set (a shoe shop),
the class-mix computation, ``class_mix.json`` in the format the report draws, the printout, the config
(δ below spti's own warning threshold) and the command's wiring with the pipeline replaced by a stub.
The demo itself, end to end, is tests/e2e/test_demo.py (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spti import demo
from spti.config import Config
from spti.errors import InputError

LABELS = np.repeat(np.arange(10), 50)  # 50 images of each class


def test_private_mix_is_a_shoe_shop():
    p = demo.private_mix(0.7)
    assert p.sum() == pytest.approx(1.0) and p[list(demo.FOOTWEAR)].sum() == pytest.approx(0.7)
    assert np.allclose(p[list(demo.FOOTWEAR)], 0.7 / 3)
    others = np.delete(p, demo.FOOTWEAR)
    assert np.allclose(others, 0.3 / 7)
    assert np.allclose(demo.private_mix(0.3), 0.1)  # 0.3: the balanced mix
    assert [demo.FASHION_CLASSES[c] for c in demo.FOOTWEAR] == ["Sandal", "Sneaker", "Ankle boot"]
    with pytest.raises(InputError, match="footwear"):
        demo.private_mix(1.5)


@pytest.mark.parametrize("n", [1, 7, 100, 120, 333, 1000])
def test_shop_counts_sum_to_n_with_the_footwear_share_exactly(n):
    c = demo.shop_counts(n, 0.7)
    assert c.sum() == n and c[list(demo.FOOTWEAR)].sum() == round(0.7 * n)
    assert np.all(np.abs(c - demo.private_mix(0.7) * n) < 1.5)
    assert demo.shop_counts(1000, 0.7).tolist() == [43, 43, 43, 43, 43, 234, 43, 233, 42, 233]
    assert demo.class_counts(np.array([1.0, 1.0, 1.0]), 7).tolist() == [3, 2, 2]


def test_skewed_subset_has_the_counts_no_repeats_and_says_when_they_do_not_fit():
    rng = np.random.default_rng(0)
    counts = demo.shop_counts(100, 0.7)
    idx = demo.skewed_subset(LABELS, counts, rng)
    assert len(idx) == len(set(idx.tolist())) == 100 and np.all(np.diff(idx) > 0)
    got = np.bincount(LABELS[idx], minlength=10)
    assert got.tolist() == counts.tolist() and got[list(demo.FOOTWEAR)].sum() == 70
    # the same seed draws the same shop
    assert np.array_equal(idx, demo.skewed_subset(LABELS, counts, np.random.default_rng(0)))
    with pytest.raises(InputError, match="Sandal, Sneaker, Ankle boot"):  # 70 of each needed, 50 held
        demo.skewed_subset(LABELS, demo.shop_counts(300, 0.7), rng)


def test_skewed_subset_of_the_real_test_set():
    try:
        files = demo.find_fashion_mnist()
    except InputError as e:
        pytest.skip(str(e))
    y = demo.load_idx(files["test_labels"], labels=True)
    idx = demo.skewed_subset(y, demo.shop_counts(1000, 0.7), np.random.default_rng(0))
    assert np.isin(y[idx], demo.FOOTWEAR).sum() == 700 and len(set(idx.tolist())) == 1000


def test_describe_shop_states_the_skew():
    text = demo.describe_shop(1000, 0.7)
    assert "shoe shop" in text and "1,000" in text and "70% footwear" in text and "23.3% each" in text
    assert "never sees these labels" in text


def _mix_data() -> dict:
    rng = np.random.default_rng(1)
    private = np.concatenate([np.repeat(list(demo.FOOTWEAR), 70), rng.integers(0, 5, 90)])  # 70 % footwear
    pool = np.repeat(np.arange(10), 20)
    steps = [("iteration 0 (no private data)", np.arange(10).repeat(4)),
             ("iteration 1", np.array([5, 7, 9] * 10 + list(range(10)))),
             ("release", np.array([5, 7, 9] * 12 + [0, 1, 2, 3]))]
    return demo.class_mix_data(private, pool, steps, seed=0, draws=200)


def test_class_mix_data_in_the_reports_format_and_marked_not_dp():
    data = _mix_data()
    assert data["classes"] == demo.FASHION_CLASSES and data["differentially_private"] is False
    assert "NOT differentially private" in data["note"] and "never shown to the pipeline" in data["note"]
    names = [s["name"] for s in data["series"]]
    assert names == ["private set", "iteration 0 (no private data)", "iteration 1", "release", "uniform pool",
                     "ideal sampler (40 private images)"]
    by = {s["name"]: s for s in data["series"]}
    # the report measures TVs against the first not-DP series: it must be the private set
    assert by["private set"]["differentially_private"] is False and by["ideal sampler (40 private images)"]["differentially_private"] is False
    assert all(len(s["mix"]) == 10 and sum(s["mix"]) == pytest.approx(1.0, abs=1e-3) for s in data["series"])
    p = np.array(by["private set"]["mix"])
    for s in data["series"]:
        assert s["tv_to_private"] == pytest.approx(demo.tv(p, s["mix"]), abs=1e-3)
    assert by["uniform pool"]["mix"] == pytest.approx([0.1] * 10)
    assert by["release"]["tv_to_private"] < by["iteration 0 (no private data)"]["tv_to_private"]
    assert 0 < by["ideal sampler (40 private images)"]["expected_tv"] < by["uniform pool"]["expected_tv"]
    assert by["release"]["images"] == 40
    json.dumps(data)  # plain JSON


def test_tv_and_class_mix():
    assert demo.tv([1, 0], [0, 1]) == 1.0 and demo.tv([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert demo.class_mix(np.array([0, 0, 9]), 10).tolist() == pytest.approx([2 / 3] + [0] * 8 + [1 / 3])
    assert demo.class_mix(np.array([], dtype=int)).sum() == 0


def test_printout_per_step_with_the_references():
    text = demo.format_class_mix(_mix_data())
    assert "NOT differentially private" in text
    for name in ("iteration 0 (no private data)", "iteration 1", "release", "uniform pool", "ideal sampler"):
        assert name in text
    last = text.splitlines()[-1]
    assert last.startswith("total-variation distance to the private class mix: iteration 0 (no private data) 0.")
    assert "uniform pool" in last and "an ideal sampler of 40 private images" in last
    assert "footwear  90%" in text  # the release: 36 of 40 footwear


def test_class_mix_file_beside_the_report_and_drawn(tmp_path: Path):
    from spti.report.reader import RunReader
    from spti.report.summary import CLASS_MIX_FILE, class_mix_section

    path = demo.write_class_mix(tmp_path, _mix_data())
    assert path == tmp_path / CLASS_MIX_FILE == tmp_path / demo.CLASS_MIX_FILE
    html = class_mix_section(RunReader(tmp_path))
    assert html is not None and 'alt="class mix"' in html and "NOT differentially private" in html
    assert "total variation from private set" in html and "uniform pool" in html


def test_demo_config_delta_below_the_warning_and_auto_threads():
    from spti.privacy import PrivacyBudget, delta_warning

    d = demo.demo_config("runs/x", population=8, iterations=1, variations=1, epsilon=1.0, voting="image", seed=0,
                         progress=False)
    cfg = Config.from_dict(d)
    assert cfg.privacy.delta == demo.DEMO_DELTA == 1e-6 and cfg.llm["n_threads"] == "auto"
    assert cfg.generation.variation_mode == "rephrase"  # no blanks for the small model to leave unfilled
    assert delta_warning(PrivacyBudget.from_epsilon(1.0, 2, 1000, delta=cfg.privacy.delta)) is None
    assert delta_warning(PrivacyBudget.from_epsilon(1.0, 2, 1000)) is not None  # the default δ would warn


def test_voting_notes_say_why_image_voting_is_stronger():
    assert "tag captioner" in demo.VOTING_NOTE["image"] and "--voting text" in demo.VOTING_NOTE["image"]
    assert "less closely" in demo.VOTING_NOTE["text"] and "--voting image" in demo.VOTING_NOTE["text"]


def test_cli_demo_flags():
    from spti.cli_args import build_parser

    a = build_parser().parse_args(["demo", "--num-private", "120", "--footwear", "0.5", "--voting", "text"])
    assert a.num_private == 120 and a.footwear == 0.5 and a.voting == "text"
    assert build_parser().parse_args(["demo"]).footwear == demo.DEFAULTS["footwear"] == 0.7


def test_run_demo_wiring_with_a_stub_pipeline(tmp_path: Path, monkeypatch, capsys):
    """run_demo writes the shop and the pool, prints the statement and the voting note, then writes
    class_mix.json beside the report (not in release/) and rebuilds the report with the chart."""
    try:
        demo.find_fashion_mnist()
    except InputError as e:
        pytest.skip(str(e))
    import spti.pipeline
    from spti.data.run import RunDir

    seen = {}

    def fake_run(cfg, command):
        seen["cfg"] = cfg
        out = Path(cfg.out)
        (out / "release").mkdir(parents=True, exist_ok=True)
        return RunDir(out)

    def fake_mix(run_dir, cfg, private_labels, pool_labels, *, seed=0):
        seen["private_labels"] = private_labels
        return demo.class_mix_data(private_labels, pool_labels, [("iteration 0 (no private data)", pool_labels[:8]),
                                                                  ("release", private_labels[:8])], draws=20)

    monkeypatch.setattr(spti.pipeline, "run", fake_run)
    monkeypatch.setattr(demo, "_class_mix", fake_mix)
    monkeypatch.setattr(demo, "_public_examples", lambda *a, **k: ["a photo of a sandal, clog, loafer"])
    out = tmp_path / "demo"
    demo.run_demo(out, num_private=30, pool_size=20, population=8, iterations=1, variations=1, voting="text",
                  progress=False)
    said = capsys.readouterr().out
    assert "shoe shop: 30 Fashion-MNIST test images, 70% footwear" in said and "voting: text" in said
    assert "iteration 0 (no private data)" in said and "release" in said
    assert np.isin(seen["private_labels"], demo.FOOTWEAR).sum() == 21
    assert len(list((out / "private" / "fashion-mnist-test").glob("*.png"))) == 30
    assert seen["cfg"].privacy.delta == 1e-6
    data = json.loads((out / "class_mix.json").read_text())
    assert data["differentially_private"] is False
    assert not list((out / "release").rglob("class_mix*"))
    assert 'id="class-mix"' in (out / "report.html").read_text(encoding="utf-8")

    # the same folder resumes only with the same private set
    with pytest.raises(InputError, match="another private set"):
        demo.run_demo(out, num_private=30, pool_size=20, population=8, iterations=1, variations=1, voting="text",
                      progress=False, footwear=0.5)
