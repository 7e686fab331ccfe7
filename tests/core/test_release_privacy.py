"""What a run publishes (issue 9, points 1, 2, 4, 5): release/ holds the DP output, the ledger and an
allow-listed manifest; no count computed from the private data, no private path, file name or caption, no
command line, no insecure noise seed. The run folder's manifest keeps the subcommand only; the run log says
in its first line that it is not differentially private; evaluation features live under private/.

Every run goes through the real command line (``spti.cli.main``) with plug-in backends, on a private set
whose counts are distinctive numbers (``support.private_set``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import private_set as ps

from spti.cli import main
from spti.data.release import RELEASE_FILES, prune_release, public_manifest
from spti.log import RUN_LOG_HEADER

_CONFIG = """
captioner: {backend: 'support.private_set:SecretCaptioner'}
llm: {backend: 'support.fakes:ScriptedLLM', garbage: 0.2}
text_embedder: {backend: 'support.fakes:BowEmbedder'}
renderer: {backend: 'support.fakes:SolidRenderer'}
generation: {domain: a coloured object, variation_mode: mixed, min_length: 3, max_length: 20}
pe: {iterations: 2, population: 8, variations: 2}
"""


def _cli_run(tmp_path: Path, unit: str) -> tuple[Path, Path]:
    data = ps.make_private_set(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(_CONFIG)
    out = tmp_path / "run"
    args = ["run", "--config", str(cfg), "--data", str(data), "--out", str(out), "--users-from-subfolders",
            "--unit", unit, "--epsilon", "2", "--seed", "3", "--insecure-noise-seed", str(ps.INSECURE_SEED),
            "--no-progress"]
    assert main(args) == 0
    return out, data


def _walk(obj: Any) -> Iterator[Any]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)
    else:
        yield obj


_INT_IN_TEXT = re.compile(r"(?<![\w.:])(\d+)(?![\w.:])")  # a whole number: not part of 1.13.0, a0f3, 00011, 18:34:29


def _numbers(obj: Any) -> set[int]:
    """Every whole number of a JSON value: its numbers, and the numbers written inside its strings."""
    out: set[int] = set()
    for v in _walk(obj):
        if isinstance(v, bool):
            continue
        if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
            out.add(int(v))
        elif isinstance(v, str):
            out.update(int(m) for m in _INT_IN_TEXT.findall(v))
    return out


def _release_contents(release: Path) -> tuple[set[int], str, list[str]]:
    """(numbers, all text, relative file names) of release/."""
    numbers: set[int] = set()
    texts: list[str] = []
    names = sorted(p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file())
    for name in names:
        p = release / name
        texts.append(name)
        if p.suffix == ".json":
            obj = json.loads(p.read_text(encoding="utf-8"))
            numbers |= _numbers(obj)
            texts.append(p.read_text(encoding="utf-8"))
        elif p.suffix == ".jsonl":
            for line in p.read_text(encoding="utf-8").splitlines():
                numbers |= _numbers(json.loads(line))
            texts.append(p.read_text(encoding="utf-8"))
        elif p.suffix in (".md", ".txt"):
            texts.append(p.read_text(encoding="utf-8"))
            numbers |= _numbers(p.read_text(encoding="utf-8"))
    return numbers, "\n".join(texts), names


@pytest.mark.parametrize("unit", ["record", "user"])
def test_release_holds_no_count_path_name_caption_seed_or_command_line(tmp_path, unit):
    out, data = _cli_run(tmp_path, unit)
    run_manifest = json.loads((out / "manifest.json").read_text())
    # the run folder's own manifest keeps the counts (so the test below is not vacuous)
    assert run_manifest["stages"]["ingest"]["images"] == ps.IMAGES
    assert run_manifest["stages"]["ingest"]["skipped"] == ps.SKIPPED
    assert run_manifest["stages"]["ingest"]["duplicates"] == ps.DUPLICATES
    assert run_manifest["stages"]["ingest"]["users"] == ps.USERS
    assert run_manifest["stages"]["caption"]["empty"] == ps.EMPTY_CAPTIONS

    release = out / "release"
    numbers, text, names = _release_contents(release)
    # N is published as the budget states it (the ledger's assumption: the number of private units is public)
    n = ps.USERS if unit == "user" else ps.IMAGES
    budget = json.loads((release / "privacy.json").read_text())["budget"]
    assert budget["num_private"] == n
    counts = {ps.IMAGES, ps.SKIPPED, ps.DUPLICATES, ps.USERS, ps.EMPTY_CAPTIONS} - {n}
    assert not counts & numbers, f"counts computed from the private data in release/: {sorted(counts & numbers)}"
    assert ps.INSECURE_SEED not in numbers and str(ps.INSECURE_SEED) not in text
    for word in (ps.PATH_WORD, ps.USER_WORD, ps.FILE_WORD, ps.CAPTION_WORD, str(data), "--data", "--out"):
        assert word not in text, word
    # release/ is built from an allow-list of files
    assert all(n in RELEASE_FILES or (n.startswith("images/") and n.endswith(".png")) for n in names), names
    assert {"dp_captions.jsonl", "metadata.jsonl", "privacy.json", "manifest.json", "README.md"} <= set(names)
    # the public manifest still says what produced the release
    rman = json.loads((release / "manifest.json").read_text())
    assert rman["command"] == "run" and rman["seed"] == 3 and rman["privacy"]["num_private"] == n
    assert rman["noise"]["secure"] is False and "insecure_seed" not in rman["noise"]
    assert rman["privacy"]["private"] is False  # insecure noise: the release must not read as private
    rledger = json.loads((release / "privacy.json").read_text())
    assert rledger["private"] is False and rledger["guarantee"].startswith("NOT differentially private")
    assert rman["models"]["llm"]["backend"] == "scripted" and rman["config"]["pe"]["population"] == 8
    assert "data" not in rman["config"] and "insecure_noise_seed" not in rman["config"]["privacy"]


def test_command_line_is_kept_out_of_the_run_folder_and_the_report(tmp_path):
    """Through the real CLI: the manifest records the subcommand, never argv (which names the private data).
    config.yaml keeps the data's location (a resumed run checks it); spti.log is covered by its header."""
    out, data = _cli_run(tmp_path, "record")
    man = json.loads((out / "manifest.json").read_text())
    assert man["command"] == "run"
    assert main(["run", "--config", str(tmp_path / "config.yaml"), "--data", str(data), "--out", str(out),
                 "--users-from-subfolders", "--unit", "record", "--epsilon", "2", "--seed", "3",
                 "--insecure-noise-seed", str(ps.INSECURE_SEED), "--no-progress"]) == 0  # resumes
    man = json.loads((out / "manifest.json").read_text())
    assert man["last_command"] == "run" and man["resumed"] is True
    assert (out / "report.html").is_file()
    for p in out.rglob("*"):
        rel = p.relative_to(out).as_posix()
        if not p.is_file() or rel.startswith("private/") or rel in ("config.yaml", "spti.log"):
            continue
        body = p.read_bytes()
        assert ps.PATH_WORD.encode() not in body, rel
        assert b"--data" not in body and b"--insecure-noise-seed" not in body, rel
    log = (out / "spti.log").read_text(encoding="utf-8").splitlines()
    assert log[0] == RUN_LOG_HEADER and log.count(RUN_LOG_HEADER) == 1  # once, not again on resume


def test_evolve_command_line_is_not_recorded(tmp_path):
    priv = tmp_path / f"{ps.PATH_WORD}-texts.jsonl"
    priv.write_text("".join(json.dumps({"text": f"A {c} car in a park."}) + "\n" for c in ["red", "blue"] * 6))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("llm: {backend: 'support.fakes:ScriptedLLM'}\ntext_embedder: {backend: 'support.fakes:BowEmbedder'}\n")
    out = tmp_path / "run"
    assert main(["evolve", "--config", str(cfg), "--private", str(priv), "--iterations", "1", "--population", "4",
                 "--variations", "2", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "manifest.json").read_text())["command"] == "evolve"
    for p in (out / "manifest.json", *(q for q in (out / "release").rglob("*") if q.is_file())):
        assert ps.PATH_WORD.encode() not in p.read_bytes(), p


def test_public_manifest_is_an_allow_list():
    manifest = {
        "spti_version": "9.9", "seed": 3, "command": "spti run --data /secret/kangaroo", "last_command": "run",
        "num_private": 41, "num_private_rows": 43, "unit": "user", "platform": "host", "resumed": True,
        "stages": {"ingest": {"images": 43, "skipped": 47}}, "a_new_field": 53,
        "privacy": {"epsilon": 1.0, "num_private": 41},
        "noise": {"secure": False, "insecure_seed": 59, "warning": "insecure"},
        "models": {"renderer": {"backend": "retrieval", "pool": "/home/x/pool", "pool_files": 61,
                                "pool_fingerprint": "ab"},
                   "llm": {"backend": "hf", "model": "org/m", "revision": "r1", "weights_sha256": "cd"}},
        "config": {"out": "/o", "data": {"private": "/secret"}, "seed": 3, "pe": {"population": 8},
                   "privacy": {"epsilon": 1.0, "insecure_noise_seed": 59}, "evaluate": {"metrics": ["fid"]},
                   "llm": {"backend": "openai", "model": "gpt", "api_key": "sk-x", "base_url": "http://in"}},
    }
    pm = public_manifest(manifest)
    assert pm == {
        "spti_version": "9.9", "seed": 3, "command": "run",
        "privacy": {"epsilon": 1.0, "num_private": 41, "private": False},  # insecure noise: not private
        "noise": {"secure": False, "warning": "insecure"},
        "models": {"renderer": {"backend": "retrieval"},
                   "llm": {"backend": "hf", "model": "org/m", "revision": "r1", "weights_sha256": "cd"}},
        "config": {"seed": 3, "pe": {"population": 8}, "privacy": {"epsilon": 1.0},
                   "llm": {"backend": "openai", "model": "gpt"}},
    }


def test_prune_release_keeps_only_the_allow_listed_files(tmp_path):
    rel = tmp_path / "release"
    (rel / "images" / "sub").mkdir(parents=True)
    keep = ["dp_captions.jsonl", "metadata.jsonl", "privacy.json", "manifest.json", "images/00000.png"]
    drop = ["stats.json", "images/00001.png.tmp", "images/sub/x.png", "images/notes.txt", "private/x.npy"]
    for name in keep + drop:
        (rel / name).parent.mkdir(parents=True, exist_ok=True)
        (rel / name).write_text("x")
    assert sorted(prune_release(rel)) == sorted(drop)
    assert sorted(p.relative_to(rel).as_posix() for p in rel.rglob("*")) == sorted(keep + ["images"])


def test_evaluation_features_of_private_images_live_under_private(tmp_path, monkeypatch):
    """Point 5: the evaluation cache (features of the private images) is under private/, not cache/."""
    import spti.stages.evaluate as ev
    from spti.pipeline import run

    # let the run's own (plug-in) image embedder serve a feature space, as a built-in backend would
    monkeypatch.setitem(ev._SPACE_OF_BACKEND, "support.fakes:MeanColourEmbedder", "meancolour")
    data = ps.make_private_set(tmp_path)
    run({
        "out": str(tmp_path / "run"), "seed": 3, "progress": False,
        "data": {"private": str(data), "users_from_subfolders": True},
        "privacy": {"epsilon": 2.0, "insecure_noise_seed": ps.INSECURE_SEED},
        "generation": {"domain": "a coloured object", "min_length": 3, "max_length": 20},
        "pe": {"iterations": 1, "population": 8, "variations": 2, "voting": "image"},
        "evaluate": {"metrics": ["prdc", "memorization"], "per_iteration": True},
        "captioner": {"backend": "support.fakes:ColourCaptioner"},
        "llm": {"backend": "support.fakes:ScriptedLLM"},
        "text_embedder": {"backend": "support.fakes:BowEmbedder"},
        "renderer": {"backend": "support.fakes:SolidRenderer"},
        "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"},
    })
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert "prdc" in metrics["metrics"] and metrics["per_iteration"]  # evaluation ran, twice
    cached = [p for p in (out / "private" / "eval-cache").rglob("*") if p.is_file()]
    assert cached, "no evaluation features under private/eval-cache"
    assert not (out / "cache" / "eval").exists()
    assert not any("eval" in p.relative_to(out / "cache").as_posix() for p in (out / "cache").rglob("*"))


def test_run_log_starts_by_saying_it_is_not_differentially_private(tmp_path):
    """Point 4: spti.log holds private counts and metric values; its first line says so, once."""
    import logging

    from spti.log import attach_run_log, logger

    log = tmp_path / "spti.log"
    try:
        attach_run_log(log)
        logger.info("ingested 41 images")
        attach_run_log(tmp_path / "other.log")  # another run in the same process detaches this one
        attach_run_log(log)  # a resumed run appends
        logger.info("resumed")
    finally:
        for h in [h for h in logger.handlers if getattr(h, "_spti_run_log", None)]:
            logger.removeHandler(h)
            h.close()
    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines[0] == RUN_LOG_HEADER and lines.count(RUN_LOG_HEADER) == 1 and len(lines) == 3
    assert "NOT differentially private" in RUN_LOG_HEADER and "do not publish" in RUN_LOG_HEADER
    assert logging.getLogger("spti") is logger
