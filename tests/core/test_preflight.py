"""Preflight (issue 10, point 5): every backend a run needs resolves before the first histogram, so a typo
never costs privacy budget; ``--dry-run`` reports the same problems."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spti.cli import main
from spti.config import Config
from spti.errors import ConfigError
from spti.pipeline import evolve_texts, run
from spti.preflight import check_backends, needed_backends, preflight
from spti.redact import redact_secrets

FAKES = {
    "llm": {"backend": "support.fakes:ScriptedLLM"},
    "text_embedder": {"backend": "support.fakes:BowEmbedder"},
    "captioner": {"backend": "support.fakes:ColourCaptioner"},
    "renderer": {"backend": "support.fakes:SolidRenderer"},
    "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"},
}


def _images(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        px = np.clip(np.array([(220, 30, 30), (30, 30, 220)][i % 2]) + rng.integers(-9, 10, (16, 16, 3)), 0, 255)
        Image.fromarray(px.astype(np.uint8)).save(root / f"img{i}.png")
    return root


def _cfg(tmp_path: Path, **over) -> dict:
    d = {"out": str(tmp_path / "run"), "seed": 2, "progress": False, "data": {"private": str(tmp_path / "private")},
         "privacy": {"epsilon": 2.0, "insecure_noise_seed": 5},
         "generation": {"domain": "a coloured object", "min_length": 3, "max_length": 20},
         "pe": {"iterations": 1, "population": 4, "variations": 1}, **FAKES}
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return d


def test_a_renderer_typo_fails_before_any_histogram(tmp_path):
    _images(tmp_path / "private")
    cfg = _cfg(tmp_path, renderer={"backend": "support.fakes:SolidRendrer"})
    with pytest.raises(ConfigError, match="renderer: cannot import backend 'support.fakes:SolidRendrer'"):
        run(cfg)
    assert not (tmp_path / "run").exists()  # nothing read, nothing written, no budget spent


def test_an_unknown_registry_name_lists_the_choices(tmp_path):
    cfg = Config.from_dict(_cfg(tmp_path, renderer={"backend": "difusers"}))
    problems = check_backends(cfg)
    assert len(problems) == 1 and "unknown renderer backend 'difusers'" in problems[0] and "diffusers" in problems[0]


def test_every_problem_is_listed_at_once(tmp_path):
    cfg = Config.from_dict(_cfg(tmp_path, llm={"backend": "nope"}, text_embedder={"backend": "support.secret_fakes:NotABackend"},
                                release_renderer={"backend": "x.y:Z"}))
    problems = check_backends(cfg)
    assert [p.split(":")[0] for p in problems] == ["llm", "text_embedder", "release_renderer"]
    assert "not a subclass of TextEmbedder" in problems[1]


def test_image_voting_never_needs_the_captioner(tmp_path):
    _images(tmp_path / "private")
    cfg = _cfg(tmp_path, pe={"voting": "image"}, captioner={"backend": "this.does.not:Exist"},
               text_embedder={"backend": "neither.does:This"})
    run_dir = run(cfg)
    assert (run_dir.release / "metadata.jsonl").is_file()


def test_what_each_mode_needs(tmp_path):
    text = Config.from_dict(_cfg(tmp_path))
    assert [n for n, _, _ in needed_backends(text)] == ["llm", "captioner", "text_embedder", "renderer"]
    image = Config.from_dict(_cfg(tmp_path, pe={"voting": "image"}, release_renderer={"backend": "support.fakes:SolidRenderer"}))
    assert [n for n, _, _ in needed_backends(image)] == ["llm", "image_embedder", "renderer", "release_renderer"]
    assert [n for n, _, _ in needed_backends(text, "evolve")] == ["llm", "text_embedder"]
    retrieval = Config.from_dict(_cfg(tmp_path, pe={"voting": "image"}, renderer={"backend": "retrieval"}))
    assert [n for n, _, _ in needed_backends(retrieval)] == [
        "llm", "image_embedder", "renderer", "renderer.captioner", "renderer.text_embedder"]
    assert any("no public pool" in p for p in check_backends(retrieval))


def test_evolve_checks_its_backends_before_reading_the_texts(tmp_path):
    cfg = Config.from_dict(_cfg(tmp_path, llm={"backend": "support.fakes:Nope"},
                                data={"private": str(tmp_path / "missing.jsonl")}))
    with pytest.raises(ConfigError, match="llm: cannot import backend"):
        evolve_texts(cfg)


def test_model_paths_are_checked_where_cheap(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = Config.from_dict(_cfg(tmp_path, renderer={"backend": "diffusers", "model": "./no/such/pipeline"},
                                text_embedder={"backend": "sentence-transformers", "model": "org/not-cached"}))
    problems = check_backends(cfg)
    assert any("local model folder" in p and "no/such/pipeline" in p for p in problems)
    assert any("'org/not-cached' is not in the Hugging Face cache" in p for p in problems)
    # cached: fine
    (tmp_path / "hub" / "models--org--not-cached" / "snapshots" / "abc").mkdir(parents=True)
    assert not any("not-cached" in p for p in check_backends(cfg))
    # online: the hub may be asked, so a missing cache entry is no problem
    monkeypatch.delenv("HF_HUB_OFFLINE")
    cfg2 = Config.from_dict(_cfg(tmp_path, text_embedder={"backend": "sentence-transformers", "model": "org/other"}))
    assert check_backends(cfg2) == []


def test_a_redacted_secret_is_a_preflight_problem(tmp_path):
    cfg = Config.from_dict(redact_secrets(_cfg(tmp_path, llm={"api_key": "sk-X"})))
    with pytest.raises(ConfigError, match="llm: api_key holds a redacted secret"):
        preflight(cfg)


def test_dry_run_reports_backend_problems(tmp_path, capsys):
    import yaml

    _images(tmp_path / "private")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(_cfg(tmp_path, renderer={"backend": "support.fakes:SolidRendrer"})))
    assert main(["run", "--config", str(p), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "renderer: cannot import backend 'support.fakes:SolidRendrer'" in err
    p.write_text(yaml.safe_dump(_cfg(tmp_path)))
    assert main(["run", "--config", str(p), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["private"]["rows"] == 12
    assert not (tmp_path / "run").exists()


def test_a_missing_optional_package_for_voting_or_executor_is_named(tmp_path, monkeypatch):
    """pe.nn_backend torch/ray/faiss and executor.kind ray need optional packages: a missing one is found
    before the LLM runs, not at the first vote."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in ("ray", "faiss") else real(name, *a, **k))
    cfg = Config.from_dict(_cfg(tmp_path, pe={"nn_backend": "ray:faiss"}, executor={"kind": "ray"}))
    problems = check_backends(cfg)
    assert any("needs the ray package" in p and "spti[ray]" in p for p in problems)
    assert any("needs the faiss package" in p and "spti[faiss]" in p for p in problems)
    ok = Config.from_dict(_cfg(tmp_path, pe={"nn_backend": "numpy"}))
    assert not [p for p in check_backends(ok) if "package" in p]
