"""Every backend output is matched one for one with its input (issue 9, point 11): a plug-in captioner,
embedder or renderer that returns one item too few must stop the run with a BackendError naming it, never
shift outputs onto the wrong records or drop records silently. And strict pre-processing is recorded in
the ledger."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.fakes import COLOUR_RGB, ColourCaptioner, MeanColourEmbedder, SolidRenderer

from spti.errors import BackendError


class DroppingCaptioner(ColourCaptioner):
    """Loses the last caption of every batch of two or more."""

    def caption(self, images):
        out = super().caption(images)
        return out[:-1] if len(out) > 1 else out


class DroppingEmbedder(MeanColourEmbedder):
    def embed(self, images):
        out = super().embed(images)
        return out[:-1] if len(out) > 1 else out


class DroppingRenderer(SolidRenderer):
    def render(self, prompts, seeds):
        out = super().render(prompts, seeds)
        return out[:-1] if len(out) > 1 else out


class StrictColourCaptioner(ColourCaptioner):
    """A plug-in with a strict option, as the hf captioner has: it must reach the backend."""

    seen: list = []

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.batch_size = 1 if strict else 16
        StrictColourCaptioner.seen.append(strict)

    def caption(self, images):
        assert not self.strict or len(images) == 1
        return super().caption(images)


class StrictMeanColourEmbedder(MeanColourEmbedder):
    def __init__(self, strict: bool = False):
        self.strict = strict
        self.batch_size = 1 if strict else 32

    def embed(self, images):
        assert not self.strict or len(images) == 1
        return super().embed(images)


HERE = __name__


def _private(root: Path, n: int = 10) -> Path:
    names = list(COLOUR_RGB)
    root.mkdir(parents=True)
    for i in range(n):
        im = Image.new("RGB", (16, 16), COLOUR_RGB[names[i % 4]])
        im.putpixel((0, 0), (i, i, i))
        im.save(root / f"img{i:03d}.png")
    return root


def _cfg(tmp_path: Path, **over) -> dict:
    d = {
        "out": str(tmp_path / "run"), "seed": 3, "progress": False,
        "data": {"private": str(_private(tmp_path / "private"))},
        "privacy": {"epsilon": 2.0, "insecure_noise_seed": 7},
        "generation": {"domain": "a coloured object", "min_length": 3, "max_length": 20},
        "pe": {"iterations": 1, "population": 4, "variations": 1},
        "captioner": {"backend": "support.fakes:ColourCaptioner"},
        "llm": {"backend": "support.fakes:ScriptedLLM"},
        "text_embedder": {"backend": "support.fakes:BowEmbedder"},
        "renderer": {"backend": "support.fakes:SolidRenderer"},
        "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"},
    }
    d.update(over)
    return d


def test_a_captioner_that_drops_a_caption_fails_naming_it(tmp_path):
    from spti.pipeline import run

    with pytest.raises(BackendError, match=r"captioner '.*DroppingCaptioner'.*returned 9 outputs for a batch of 10"):
        run(_cfg(tmp_path, captioner={"backend": f"{HERE}:DroppingCaptioner"}))
    assert not list((tmp_path / "run" / "private" / "captions").glob("*.jsonl"))  # nothing half-matched saved


def test_the_cli_reports_it_as_an_error(tmp_path, capsys):
    from spti.cli import main

    cfgp = tmp_path / "c.yaml"
    cfgp.write_text(f"captioner: {{backend: '{HERE}:DroppingCaptioner'}}\n")
    rc = main(["caption", "--config", str(cfgp), "--data", str(_private(tmp_path / "p")), "--out",
               str(tmp_path / "run"), "--no-progress"])
    assert rc == 2 and "DroppingCaptioner" in capsys.readouterr().err


def test_an_image_embedder_that_drops_a_vector_fails_naming_it(tmp_path):
    from spti.pipeline import run

    with pytest.raises(BackendError, match="image embedder '.*DroppingEmbedder'"):
        run(_cfg(tmp_path, pe={"iterations": 1, "population": 4, "variations": 1, "voting": "image"},
                 image_embedder={"backend": f"{HERE}:DroppingEmbedder"}))


def test_a_renderer_that_drops_an_image_fails_naming_it(tmp_path):
    from spti.pipeline import run

    with pytest.raises(BackendError, match="renderer '.*DroppingRenderer' returned"):
        run(_cfg(tmp_path, renderer={"backend": f"{HERE}:DroppingRenderer"}))


@pytest.mark.parametrize("voting", ["text", "image"])
def test_strict_preprocessing_reaches_the_backend_and_the_ledger(tmp_path, voting):
    from spti.pipeline import run

    StrictColourCaptioner.seen = []
    cfg = _cfg(tmp_path, pe={"iterations": 1, "population": 4, "variations": 1, "voting": voting},
               captioner={"backend": f"{HERE}:StrictColourCaptioner", "strict": True},
               image_embedder={"backend": f"{HERE}:StrictMeanColourEmbedder", "strict": True})
    rd = run(cfg)
    steps = {p["name"]: p["description"] for p in json.loads(rd.privacy_path.read_text())["processing"]}
    assert "strict_preprocessing" in steps
    assert "one private image at a time in float32" in steps["strict_preprocessing"]
    assert ("captioner" if voting == "text" else "image embedder") in steps["strict_preprocessing"]
    if voting == "text":
        assert StrictColourCaptioner.seen == [True]
    release_ledger = json.loads((rd.release / "privacy.json").read_text())
    assert "strict_preprocessing" in {p["name"] for p in release_ledger["processing"]}


def test_without_strict_mode_the_ledger_has_no_such_step(tmp_path):
    from spti.pipeline import run

    rd = run(_cfg(tmp_path))
    assert "strict_preprocessing" not in {p["name"] for p in json.loads(rd.privacy_path.read_text())["processing"]}


def test_private_feature_rows_match_their_records(tmp_path):
    """The features of private image i are the features of image i, batch boundaries notwithstanding."""
    from spti.config import Config
    from spti.data.run import RunDir
    from spti.stages.private import embed_private_images, ingest_stage

    cfg = Config.from_dict(_cfg(tmp_path))
    rd = RunDir.open(cfg.out, cfg, command="run")
    result = ingest_stage(rd, cfg)
    emb = MeanColourEmbedder()
    emb.batch_size = 3
    feats = np.asarray(embed_private_images(rd, cfg, result, emb))
    one = np.concatenate([emb.embed([Image.open(r.path).convert("RGB")]) for r in result.records])
    np.testing.assert_array_equal(feats, one)
