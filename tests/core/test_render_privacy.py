"""What the render stage may put into release/: the retrieval pool never hands out a private image, and
`spti render --captions` carries the run's ledger only for the run's own DP captions (issue 9, points 9
and 10). Plug-in backends from ``support.fakes``; the CLI tests go through ``spti.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.fakes import COLOUR_RGB

from spti.cli import main
from spti.errors import ConfigError


def _private(root: Path, n: int = 12) -> Path:
    """Mostly red noisy squares (so the DP captions are mostly red), users in sub-folders."""
    rng = np.random.default_rng(0)
    names = ["red"] * 8 + ["blue"] * 3 + ["green"] * 1
    for i in range(n):
        d = root / f"user{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        base = np.array(COLOUR_RGB[names[i % len(names)]], dtype=np.int16)
        px = np.clip(base + rng.integers(-12, 13, size=(24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(px, "RGB").save(d / f"img{i:03d}.png")
    return root


def _cfg(tmp_path: Path, private: Path, **over) -> dict:
    d = {
        "out": str(tmp_path / "run"), "seed": 3, "progress": False,
        "data": {"private": str(private), "users_from_subfolders": True},
        "privacy": {"epsilon": 2.0, "insecure_noise_seed": 7},
        "generation": {"domain": "a coloured object", "min_length": 3, "max_length": 20},
        "pe": {"iterations": 1, "population": 6, "variations": 2},
        "captioner": {"backend": "support.fakes:ColourCaptioner"},
        "llm": {"backend": "support.fakes:ScriptedLLM"},
        "text_embedder": {"backend": "support.fakes:BowEmbedder"},
        "renderer": {"backend": "support.fakes:SolidRenderer"},
        "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"},
    }
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return d


# ---------------------------------------------------------------------------------------- the public pool
def _public_pool(root: Path) -> Path:
    root.mkdir(parents=True)
    for name, rgb in COLOUR_RGB.items():
        Image.new("RGB", (24, 24), rgb).save(root / f"public_{name}.png")
    return root


def test_retrieval_never_releases_a_private_image_found_in_the_pool(tmp_path):
    from spti.pipeline import run

    data = _private(tmp_path / "private")
    pool = _public_pool(tmp_path / "pool")
    secret = data / "user0" / "img000.png"  # a red private image; its copy sorts first among the red ties
    (pool / "000_downloaded.png").write_bytes(secret.read_bytes())
    rd = run(_cfg(tmp_path, data, data={"public_pool": str(pool)}, renderer={"backend": "retrieval"}))
    secret_px = np.asarray(Image.open(secret).convert("RGB"))
    released = sorted((rd.release / "images").glob("*.png"))
    assert released
    texts = [json.loads(x)["text"] for x in (rd.release / "metadata.jsonl").read_text().splitlines()]
    assert any("red" in t for t in texts)  # the red tie was asked for
    for p in released:
        px = np.asarray(Image.open(p).convert("RGB"))
        assert px.shape != secret_px.shape or not np.array_equal(px, secret_px)
    log = (rd.path / "spti.log").read_text() if (rd.path / "spti.log").is_file() else ""
    assert "000_downloaded" not in log and "img000" not in log
    manifest = json.loads((rd.release / "manifest.json").read_text())
    assert "000_downloaded" not in json.dumps(manifest) and str(data) not in json.dumps(manifest)


@pytest.mark.parametrize("where", ["equal", "inside"])
def test_a_pool_in_the_private_folder_is_refused(tmp_path, where):
    from spti.pipeline import run

    data = _private(tmp_path / "private")
    pool = data if where == "equal" else data / "user1"
    with pytest.raises(ConfigError, match="private data"):
        run(_cfg(tmp_path, data, data={"public_pool": str(pool)}, pe={"voting": "image"},
                 renderer={"backend": "retrieval"}))


def test_renderer_config_always_names_the_private_data(tmp_path):
    from spti.config import Config
    from spti.data.run import RunDir
    from spti.stages.private import ingest_stage
    from spti.stages.render import renderer_config

    data = _private(tmp_path / "private", n=4)
    cfg = Config.from_dict(_cfg(tmp_path, data))
    rd = RunDir.open(cfg.out, cfg, command="run")
    assert "exclude_hashes" not in renderer_config(rd, cfg, {"backend": "retrieval", "pool": "x"})
    result = ingest_stage(rd, cfg)
    c = renderer_config(rd, cfg, {"backend": "retrieval", "pool": "x", "private_root": None,
                                  "exclude_hashes": ["AB" * 32]})
    assert c["private_root"] == str(data)  # a config cannot switch the check off
    assert set(c["exclude_hashes"]) == {r.sha256 for r in result.records} | {"ab" * 32}
    assert renderer_config(rd, cfg, {"backend": "support.fakes:SolidRenderer"}) == {
        "backend": "support.fakes:SolidRenderer"}  # other renderers are left alone


# ---------------------------------------------------------------------------------------- render --captions
def _render(out: Path, captions: Path, capsys) -> tuple[int, str]:
    rc = main(["render", "--captions", str(captions), "--out", str(out), "--no-progress"])
    return rc, capsys.readouterr().out


def test_render_carries_the_ledger_only_for_the_runs_own_dp_captions(tmp_path, capsys):
    from spti.pipeline import run

    data = _private(tmp_path / "private")
    rd = run(_cfg(tmp_path, data))
    dp = rd.release / "dp_captions.jsonl"

    def is_the_runs_ledger(d: dict) -> bool:  # the ledger finish_release_docs copies (it may drop fields)
        own = json.loads(rd.privacy_path.read_text())
        return d.get("covered") is not False and d.get("budget") == own.get("budget") and "mechanisms" in d

    # the run's own DP captions (a copy of the file, anywhere): covered, the ledger is the run's
    mine = tmp_path / "mine.jsonl"
    mine.write_bytes(dp.read_bytes())
    rc, out = _render(rd.path, mine, capsys)
    assert rc == 0 and "NOT covered" not in out
    assert is_the_runs_ledger(json.loads((rd.release / "privacy.json").read_text()))

    # edited captions: the release says it is not covered
    rows = [json.loads(x) for x in dp.read_text().splitlines()]
    rows[0]["text"] = "A purple dragon in a castle."
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc, out = _render(rd.path, edited, capsys)
    assert rc == 0 and "NOT covered" in out
    release_ledger = json.loads((rd.release / "privacy.json").read_text())
    assert release_ledger["covered"] is False and release_ledger["private"] is False
    assert release_ledger["statement"] == "not covered: these captions were not produced by this run's DP mechanism"
    assert "guarantee" not in release_ledger and "budget" not in release_ledger
    meta = [json.loads(x)["text"] for x in (rd.release / "metadata.jsonl").read_text().splitlines()]
    assert meta[0] == "A purple dragon in a castle."

    # a subset is not the run's output either
    subset = tmp_path / "subset.jsonl"
    subset.write_text("".join(json.dumps(r) + "\n" for r in rows[1:]))
    assert _render(rd.path, subset, capsys)[0] == 0
    assert json.loads((rd.release / "privacy.json").read_text())["covered"] is False

    # rendering the DP captions again restores the ledger
    assert _render(rd.path, dp, capsys)[0] == 0
    assert is_the_runs_ledger(json.loads((rd.release / "privacy.json").read_text()))


def test_render_into_a_folder_without_dp_captions_is_not_covered(tmp_path, capsys):
    caps = tmp_path / "caps.jsonl"
    caps.write_text("".join(json.dumps({"text": f"A {c} square."}) + "\n" for c in ("red", "blue")))
    cfgp = tmp_path / "c.yaml"
    cfgp.write_text("renderer: {backend: 'support.fakes:SolidRenderer'}\n")
    out = tmp_path / "fresh"
    rc = main(["render", "--config", str(cfgp), "--captions", str(caps), "--out", str(out), "--no-progress"])
    assert rc == 0 and "NOT covered" in capsys.readouterr().out
    ledger = json.loads((out / "release" / "privacy.json").read_text())
    assert ledger["covered"] is False and "not covered" in ledger["statement"]
