"""The ledger cannot be fooled (issue 9, points 6-8 and 12 end to end, with plug-in backends):

* a run resumed on a different private file is refused (exit status 2, no private content in the message);
* the ledger is composed from the σ saved in every noisy_histogram.npz and fails loudly when that
  disagrees with the planned budget;
* an image run resumed on a changed folder keeps the ingestion it started with;
* insecure noise makes the ledger (and its copy in release/) say NOT private, without the seed;
* N is treated as public, or replaced by a public bound; a large δ is warned about;
* ``--noise discrete`` runs end to end, accounted with the discrete sampler's zCDP bound.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from support.fakes import COLOURS, OBJECTS, PLACES, caption

from spti.cli import main
from spti.config import Config
from spti.data.io import atomic_save_npz, load_npz
from spti.errors import BudgetError, ConfigError
from spti.pe.engine import _Stopped

SECRET = "zebra-secret-diagnosis"


def _texts(n: int, *, secret: bool = False) -> str:
    rows = [caption(c, o, p) for c in COLOURS for o in OBJECTS for p in PLACES][:n]
    if secret:
        rows[-1] = f"{rows[-1]} {SECRET}"
    return "".join(json.dumps({"text": t}) + "\n" for t in rows)


def _args(tmp_path: Path, priv: Path, *extra: str, iterations: int = 4) -> list[str]:
    cfgp = tmp_path / "c.yaml"
    cfgp.write_text(
        "llm: {backend: 'support.fakes:ScriptedLLM'}\n"
        "text_embedder: {backend: 'support.fakes:BowEmbedder'}\n"
        "generation: {variation_mode: rephrase}\n"
    )
    return ["evolve", "--config", str(cfgp), "--private", str(priv), "--domain", "a toy scene", "--epsilon", "1",
            "--iterations", str(iterations), "--population", "6", "--variations", "1", "--out",
            str(tmp_path / "run"), "--no-progress", *extra]


def _crash_after(monkeypatch, t: int) -> None:
    """`spti evolve` that stops (as if killed) after iteration t: the CLI calls spti.pipeline.evolve_texts."""
    import spti.pipeline

    monkeypatch.setattr(spti.pipeline, "evolve_texts", functools.partial(spti.pipeline.evolve_texts, stop_after=t))


def _ledger(tmp_path: Path, where: str = "") -> dict:
    return json.loads((tmp_path / "run" / where / "privacy.json").read_text())


# ---------------------------------------------------------------------------------------------- point 6
def test_resume_on_a_changed_private_file_is_refused(tmp_path, monkeypatch, capsys):
    priv = tmp_path / "private.jsonl"
    priv.write_text(_texts(40))
    args = _args(tmp_path, priv)
    with monkeypatch.context() as m:
        _crash_after(m, 2)
        with pytest.raises(_Stopped):
            main(args)
    assert _ledger(tmp_path)["mechanisms"][0]["count"] == 2
    original = priv.read_bytes()

    priv.write_text(_texts(9, secret=True))  # another file at the same path: another N, another sigma
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "changed since this run started" in err and SECRET not in err and "zebra" not in err
    assert not (tmp_path / "run" / "checkpoints" / "iter_003").exists()  # nothing drawn on the new data
    assert not (tmp_path / "run" / "release" / "dp_captions.jsonl").exists()

    priv.write_bytes(original)  # the original input: the run resumes and finishes within its budget
    assert main(args) == 0
    ledger = _ledger(tmp_path)
    assert ledger["mechanisms"][0]["count"] == 4 and ledger["within_budget"] is True
    assert ledger["spent"]["epsilon"] == pytest.approx(1.0, rel=1e-6)
    fp = tmp_path / "run" / "private" / "input_fingerprint.json"
    assert fp.is_file()
    assert not any("sha256" in p.read_text() for p in (tmp_path / "run" / "release").glob("*.json"))


def test_ledger_is_composed_from_the_saved_sigma_and_a_mismatch_fails_loudly(tmp_path, monkeypatch, capsys):
    """Independently of the fingerprint (an older run has none): the ledger trusts the checkpoints."""
    priv = tmp_path / "private.jsonl"
    priv.write_text(_texts(40))
    args = _args(tmp_path, priv)
    with monkeypatch.context() as m:
        _crash_after(m, 2)
        with pytest.raises(_Stopped):
            main(args)
    sigma_a = float(load_npz(tmp_path / "run" / "checkpoints" / "iter_001" / "noisy_histogram.npz")["sigma"])
    (tmp_path / "run" / "private" / "input_fingerprint.json").unlink(missing_ok=True)  # as by an older spti
    priv.write_text(_texts(9))
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "were drawn with" in err and "budget plans" in err
    ledger = _ledger(tmp_path)
    assert [m["sigma"] for m in ledger["mechanisms"]] == [sigma_a]  # what was drawn, not what is planned
    assert ledger["budget"]["sigma"] != pytest.approx(sigma_a)
    assert not (tmp_path / "run" / "checkpoints" / "iter_003").exists()
    # the wrong file was not bound to the run: with the original file back, the old run resumes
    assert not (tmp_path / "run" / "private" / "input_fingerprint.json").exists()
    priv.write_text(_texts(40))
    assert main(args) == 0
    assert _ledger(tmp_path)["mechanisms"][0]["count"] == 4 and _ledger(tmp_path)["within_budget"] is True
    assert "did not record its private input" in (tmp_path / "run" / "spti.log").read_text()


def test_write_ledger_composes_mu_from_every_histogram(tmp_path, caplog):
    from spti.data.run import RunDir
    from spti.privacy import epsilon_for_delta
    from spti.stages.budget import BudgetMismatchError, make_budget, write_ledger

    cfg = Config.from_dict({"data": {"private": "x"}, "pe": {"iterations": 3}, "privacy": {"delta": 1e-6}})
    run_dir = RunDir.open(tmp_path / "r", cfg, command="t")
    b = make_budget(cfg, 1000)
    ck = run_dir.checkpoints
    atomic_save_npz(ck / "iter_001" / "noisy_histogram.npz", noisy_counts=np.zeros(2), sigma=np.float64(b.sigma),
                    iteration=np.int64(1))
    atomic_save_npz(ck / "iter_002" / "noisy_histogram.npz", noisy_counts=np.zeros(2), iteration=np.int64(2))
    with caplog.at_level(logging.WARNING, logger="spti"):
        d = write_ledger(run_dir, cfg, b)  # an old checkpoint without sigma: the planned sigma, with a warning
    assert "do not record their sigma" in caplog.text
    assert d["mechanisms"][0]["count"] == 2 and d["within_budget"] is True
    atomic_save_npz(ck / "iter_003" / "noisy_histogram.npz", noisy_counts=np.zeros(2),
                    sigma=np.float64(b.sigma / 2), iteration=np.int64(3))
    with pytest.raises(BudgetMismatchError, match="iteration\\(s\\) 3"):
        write_ledger(run_dir, cfg, b)
    d = json.loads(run_dir.privacy_path.read_text())
    mu = np.sqrt(2 / b.sigma**2 + 1 / (b.sigma / 2) ** 2)  # mu^2 = sum_t 1/sigma_t^2
    assert d["spent"]["mu"] == pytest.approx(mu, rel=1e-12)
    assert d["spent"]["epsilon"] == pytest.approx(epsilon_for_delta(1e-6, mu), rel=1e-9)
    assert d["within_budget"] is False and d["guarantee"].startswith("OVER BUDGET")


def test_an_image_run_resumed_on_a_changed_folder_keeps_its_ingestion(tmp_path):
    """Images: the ingestion (content hashes) is reused from private/ and re-verified on every read, so a
    folder that changed after a crash cannot change N or the votes of the resumed run."""
    from PIL import Image

    from spti.pipeline import run

    data = tmp_path / "private"
    data.mkdir()
    for i in range(12):
        Image.new("RGB", (16, 16), ((40 * i) % 256, 200, 30)).save(data / f"img{i:02d}.png")
    cfg = {
        "out": str(tmp_path / "run"), "seed": 1, "progress": False, "data": {"private": str(data)},
        "privacy": {"epsilon": 2.0, "insecure_noise_seed": 5},
        "generation": {"domain": "a coloured object", "min_length": 3, "max_length": 20},
        "pe": {"iterations": 3, "population": 4, "variations": 1, "voting": "image"},
        "llm": {"backend": "support.fakes:ScriptedLLM"}, "text_embedder": {"backend": "support.fakes:BowEmbedder"},
        "captioner": {"backend": "support.fakes:ColourCaptioner"},
        "renderer": {"backend": "support.fakes:SolidRenderer"},
        "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"},
    }
    with pytest.raises(_Stopped):
        run(dict(cfg), stop_after=1)
    ingest = (tmp_path / "run" / "private" / "ingest.jsonl").read_bytes()
    n_before = _ledger(tmp_path)["budget"]["num_private"]
    for i in range(12, 30):  # more images, and one replaced
        Image.new("RGB", (16, 16), (10, (17 * i) % 256, 90)).save(data / f"img{i:02d}.png")
    Image.new("RGB", (16, 16), (0, 0, 0)).save(data / "img00.png")
    run(dict(cfg))
    assert (tmp_path / "run" / "private" / "ingest.jsonl").read_bytes() == ingest
    ledger = _ledger(tmp_path)
    assert ledger["budget"]["num_private"] == n_before == 12
    assert ledger["mechanisms"][0]["count"] == 3 and ledger["within_budget"] is True


# ---------------------------------------------------------------------------------------------- point 7
def test_insecure_noise_is_recorded_as_not_private_and_the_seed_is_not_released(tmp_path):
    priv = tmp_path / "private.jsonl"
    priv.write_text(_texts(30))
    assert main(_args(tmp_path, priv, "--insecure-noise-seed", "987654321", iterations=2)) == 0
    for where in ("", "release"):
        ledger = _ledger(tmp_path, where)
        assert ledger["private"] is False and ledger["spent"]["private"] is False
        assert ledger["guarantee"].startswith("NOT differentially private")
        assert "insecure" in ledger["guarantee"] and "differentially private per record" not in ledger["guarantee"]
        assert ledger["noise"]["secure"] is False and "NOT differentially private" in ledger["noise"]["statement"]
        assert "987654321" not in json.dumps(ledger)
    log = (tmp_path / "run" / "spti.log").read_text()
    assert "privacy: NOT differentially private (insecure noise seed)" in log


def test_secure_noise_is_recorded_as_private(tmp_path):
    priv = tmp_path / "private.jsonl"
    priv.write_text(_texts(30))
    assert main(_args(tmp_path, priv, iterations=2)) == 0
    ledger = _ledger(tmp_path)
    assert ledger["private"] is True and ledger["noise"] == {
        "kind": "gaussian", "secure": True, "statement": ledger["noise"]["statement"]}
    assert ledger["guarantee"].startswith("(1, ")


# ---------------------------------------------------------------------------------------------- point 8
def test_dataset_size_is_an_explicit_assumption_and_a_public_bound_replaces_it(tmp_path, caplog, capsys):
    priv = tmp_path / "private.jsonl"
    priv.write_text(_texts(30))
    with caplog.at_level(logging.WARNING, logger="spti"):
        assert main(_args(tmp_path, priv, iterations=2)) == 0
    ledger = _ledger(tmp_path)
    assert "treated as public" in ledger["dataset_size"] and "N = 30" in ledger["dataset_size"]
    assert ledger["warnings"] and "above 1e-05" in ledger["warnings"][0]  # default delta for N = 30
    assert "above 1e-05" in caplog.text
    assert _ledger(tmp_path, "release")["dataset_size"] == ledger["dataset_size"]

    out = tmp_path / "bounded"
    args = _args(tmp_path, priv, "--num-private-bound", "1000000", "--delta", "1e-7", iterations=2)
    args[args.index("--out") + 1] = str(out)
    assert main(args) == 0
    ledger = json.loads((out / "privacy.json").read_text())
    b = ledger["budget"]
    assert b["num_private"] == 1_000_000 and b["num_private_is_bound"] is True
    assert "public upper bound" in ledger["dataset_size"] and ledger["warnings"] == []
    assert "30" not in json.dumps(b) and "N <= 1000000" in ledger["guarantee"]

    too_small = _args(tmp_path, priv, "--num-private-bound", "10", iterations=2)
    too_small[too_small.index("--out") + 1] = str(tmp_path / "small")
    capsys.readouterr()
    assert main(too_small) == 2
    err = capsys.readouterr().err
    assert "num_private_bound = 10" in err and "30" not in err


def test_make_budget_with_explicit_delta_and_bound(caplog):
    from spti.stages.budget import make_budget

    cfg = Config.from_dict({"data": {"private": "x"}, "privacy": {"delta": 1e-6}})
    with caplog.at_level(logging.WARNING, logger="spti"):
        b = make_budget(cfg, 500)
    assert not caplog.text and not b.delta_is_default and b.num_private == 500
    from spti.privacy import dataset_size_statement

    assert "sigma does not depend on the number" in dataset_size_statement(b)
    bound = Config.from_dict({"data": {"private": "x"}, "privacy": {"num_private_bound": 10_000}})
    b = make_budget(bound, 500)
    assert b.num_private == 10_000 and b.num_private_is_bound and b.delta_is_default
    assert b.delta == pytest.approx(1 / (10_000 * np.log(10_000)))
    with pytest.raises(BudgetError, match="more records than privacy.num_private_bound"):
        make_budget(bound, 10_001)


@pytest.mark.parametrize(
    "privacy, match",
    [
        ({"noise": "laplace"}, "privacy.noise"),
        ({"grid": 4}, "applies only to privacy.noise: discrete"),
        ({"noise": "discrete", "grid": 0}, "privacy.grid"),
        ({"num_private_bound": 0}, "num_private_bound"),
        ({"delta": 1.5}, "privacy.delta"),
    ],
)
def test_privacy_config_validation(privacy, match):
    with pytest.raises(ConfigError, match=match):
        Config.from_dict({"data": {"private": "x"}, "privacy": privacy}).validate()


def test_privacy_command_states_the_assumption_and_warns(capsys):
    assert main(["privacy", "--epsilon", "2", "--iterations", "2", "--num-private", "4"]) == 0
    out = capsys.readouterr().out
    assert "(2, 0.18)-differentially private" in out and "treated as public" in out
    assert "WARNING: delta = 0.18" in out
    assert main(["privacy", "--epsilon", "1", "--iterations", "10", "--num-private-bound", "100000",
                 "--delta", "1e-6", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["num_private"] == 100000 and d["num_private_is_bound"] is True and d["warnings"] == []
    assert "public upper bound" in d["dataset_size"]
    assert main(["privacy", "--epsilon", "1", "--iterations", "10", "--num-private", "5",
                 "--num-private-bound", "4"]) == 2


# ---------------------------------------------------------------------------------------------- point 12
def test_privacy_command_compares_discrete_and_continuous(capsys):
    assert main(["privacy", "--epsilon", "1", "--iterations", "10", "--num-private", "20000", "--noise",
                 "discrete", "--unit", "user"]) == 0
    out = capsys.readouterr().out
    assert "exact discrete Gaussian noise" in out and "vote grid 1/2520" in out
    assert "continuous Gaussian epsilon = 0.9" in out and "exact discrete Gaussian epsilon = 1 " in out
    assert main(["privacy", "--sigma", "14.2", "--iterations", "10", "--delta", "1e-6", "--num-private", "10000",
                 "--noise", "discrete", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["noise"] == "discrete" and d["grid"] == 1
    assert d["noise_comparison"]["epsilon_continuous"] < d["epsilon"] == pytest.approx(
        d["noise_comparison"]["epsilon_discrete"])


@pytest.mark.parametrize("unit", ["record", "user"])
def test_evolve_with_discrete_noise(tmp_path, unit):
    priv = tmp_path / "private.jsonl"
    rows = [{"text": caption(c, o, p), "user_id": f"u{i % 7}"}
            for i, (c, o, p) in enumerate((c, o, p) for c in COLOURS for o in OBJECTS for p in PLACES[:2])]
    priv.write_text("".join(json.dumps(r) + "\n" for r in rows))
    extra = ["--noise", "discrete", "--insecure-noise-seed", "2", "--delta", "1e-3"]
    if unit == "user":
        extra += ["--unit", "user", "--user-column", "user_id"]
    assert main(_args(tmp_path, priv, *extra, iterations=2)) == 0
    ledger = _ledger(tmp_path)
    grid = 1 if unit == "record" else 2520
    assert ledger["budget"]["noise"] == "discrete" and ledger["budget"]["grid"] == grid
    assert ledger["mechanisms"][0]["kind"] == "discrete_gaussian_histogram" and ledger["mechanisms"][0]["grid"] == grid
    assert "zero-concentrated" in ledger["accounting"] and ledger["noise"]["kind"] == "discrete"
    assert ledger["within_budget"] is True and ledger["spent"]["epsilon"] == pytest.approx(1.0, rel=1e-6)
    h = load_npz(tmp_path / "run" / "checkpoints" / "iter_001" / "noisy_histogram.npz")
    assert str(h["noise"]) == "discrete" and int(h["grid"]) == grid
    assert np.allclose(h["noisy_counts"] * grid, np.round(h["noisy_counts"] * grid))  # integers on the grid


def test_noise_flags_reach_the_config(tmp_path, capsys):
    priv = tmp_path / "private.jsonl"
    priv.write_text(_texts(30))
    capsys.readouterr()
    assert main([*_args(tmp_path, priv, "--noise", "discrete", "--grid", "3", iterations=1), "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["privacy"]["noise"] == "discrete" and plan["privacy"]["grid"] == 3
