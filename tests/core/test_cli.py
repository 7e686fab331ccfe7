import json
import subprocess
import sys

import pytest

from spti.cli import main


def test_privacy_command_json(capsys):
    assert main(["privacy", "--epsilon", "1", "--iterations", "10", "--num-private", "300000", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["epsilon"] == pytest.approx(1.0)
    assert d["delta"] == pytest.approx(1 / (300000 * __import__("math").log(300000)))
    assert d["sigma"] > 1 and d["mu"] == pytest.approx(10**0.5 / d["sigma"])


def test_privacy_command_inverts_sigma(capsys):
    main(["privacy", "--epsilon", "2", "--iterations", "5", "--num-private", "1000", "--json"])
    sigma = json.loads(capsys.readouterr().out)["sigma"]
    main(["privacy", "--sigma", str(sigma), "--iterations", "5", "--num-private", "1000", "--json"])
    assert json.loads(capsys.readouterr().out)["epsilon"] == pytest.approx(2.0, rel=1e-6)
    assert main(["privacy", "--sigma", "3", "--iterations", "5", "--num-private", "1000"]) == 0
    assert "sigma" in capsys.readouterr().out.lower()


@pytest.mark.parametrize(
    "args",
    [
        ["--epsilon", "0"],
        ["--epsilon", "-1"],
        ["--epsilon", "nan"],
        ["--epsilon", "1", "--delta", "0.5"],
        ["--epsilon", "1", "--delta", "0.01"],  # >= 1/N for N = 1000
        ["--epsilon", "1", "--sigma", "2"],
    ],
)
def test_privacy_command_rejects_bad_budgets(args, capsys):
    assert main(["privacy", *args, "--iterations", "10", "--num-private", "1000"]) == 2
    assert "spti: error" in capsys.readouterr().err


def test_privacy_command_does_not_import_heavy_libraries():
    """`spti privacy` must start fast: no torch / transformers / diffusers behind it."""
    code = (
        "import sys; from spti.cli import main; "
        "main(['privacy','--epsilon','1','--iterations','10','--num-private','300000']); "
        "heavy=[m for m in ('torch','transformers','diffusers','timm','sentence_transformers','llama_cpp','ray') if m in sys.modules]; "
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_evolve_end_to_end_with_plugin_backends(tmp_path, capsys):
    """spti evolve on a private JSONL with plug-in backends: release, ledger, manifest, resume."""
    from support.fakes import COLOURS, OBJECTS, PLACES, caption

    priv = tmp_path / "captions.jsonl"
    priv.write_text("".join(json.dumps({"text": caption(c, o, p)}) + "\n" for c in COLOURS for o in OBJECTS for p in PLACES[:2]))
    cfgp = tmp_path / "c.yaml"
    cfgp.write_text(
        "llm: {backend: 'support.fakes:ScriptedLLM'}\n"
        "text_embedder: {backend: 'support.fakes:BowEmbedder'}\n"
        "generation: {variation_mode: rephrase}\n"
    )
    out = tmp_path / "run"
    args = ["evolve", "--config", str(cfgp), "--private", str(priv), "--domain", "a toy scene", "--epsilon", "1",
            "--iterations", "2", "--population", "10", "--variations", "2", "--out", str(out), "--no-progress",
            "--insecure-noise-seed", "3"]
    assert main(args) == 0
    rel = [json.loads(line) for line in (out / "release" / "dp_captions.jsonl").read_text().splitlines()]
    assert len(rel) == 10
    priv_ledger = json.loads((out / "privacy.json").read_text())
    assert priv_ledger["mechanisms"][0]["count"] == 2 and priv_ledger["spent"]["epsilon"] == pytest.approx(1.0, rel=1e-6)
    man = json.loads((out / "manifest.json").read_text())
    assert man["noise"]["secure"] is False and man["privacy"]["iterations"] == 2
    assert man["models"]["llm"]["backend"] == "scripted"
    rman = json.loads((out / "release" / "manifest.json").read_text())
    assert str(priv) not in json.dumps(rman)
    # same command again: resumes (nothing redone), same release
    assert main(args) == 0
    assert [json.loads(x) for x in (out / "release" / "dp_captions.jsonl").read_text().splitlines()] == rel
    # different budget into the same folder: refused, nothing overwritten
    bad = list(args)
    bad[bad.index("--epsilon") + 1] = "2"
    assert main(bad) == 2
    assert "different settings" in capsys.readouterr().err
    # --dry-run prints a plan without running
    capsys.readouterr()
    assert main([*args[:-2], "--out", str(tmp_path / "dry"), "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert not (tmp_path / "dry").exists()
    assert plan["private"]["records (N)"] == 32
    assert plan["calls"]["llm"] == 10 + 2 * 10 * 2
    assert plan["privacy"]["epsilon"] == pytest.approx(1.0)


def test_run_dry_run_counts_images_and_takes_evaluation_flags(tmp_path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the default renderer's hub id need not be cached

    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for i in range(5):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(d / "sub" / f"{i}.png")
    (d / ".hidden.png").write_bytes(b"x")
    assert main(["run", "--data", str(d), "--domain", "x", "--out", str(tmp_path / "o"), "--voting", "image",
                 "--metrics", "fid,prdc", "--eval-per-iteration", "--iterations", "3", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["private"]["records (N)"] == 5
    assert plan["evaluate"]["metrics"] == ["fid", "prdc"] and plan["evaluate"]["per_iteration"] is True
    assert plan["calls"]["renderer (release)"] == 0 and plan["privacy"]["iterations"] == 3
    assert not (tmp_path / "o").exists()
