"""Whole runs on the Ray executor (issue 11): ``executor: {kind: ray, ...}`` on a local 2-CPU Ray cluster
gives the run folder the local executor gives (requirement 3), also when a model replica dies in the middle
of a stage (requirement 4), and a run interrupted between iterations resumes on Ray without redrawing its
noise. The runs are the small golden runs of tests/e2e/test_golden_run.py (plug-in backends of
``support.fakes``); digests as there (``support.golden``), without the executor section of the config,
which is the one thing that differs."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest
from support import golden
from support.ray_local import start_local_ray

pytest.importorskip("ray.data")

RAY = {"kind": "ray", "workers": 2, "cpus_per_replica": 0.5}  # fractional CPUs: 2 replicas on 2 cores


def _golden_module():
    spec = importlib.util.spec_from_file_location("golden_run_cases", Path(__file__).with_name("test_golden_run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


G = _golden_module()


@pytest.fixture(scope="module")
def ray_cluster():
    ray = start_local_ray()
    yield ray
    ray.shutdown()


def _config(root: Path, voting: str, executor: dict | None = None, **over) -> dict:
    """The golden run of ``voting`` with its private images and run folder under ``root``."""
    data = G._private_images(root / "private")
    if voting == "image":
        d = G._base(root / "run", data, pe={"voting": "image", "lookahead": 2, "selection": "sample"},
                    render={"images_per_caption": 2, "seed": 5}, **over)
    else:
        d = G._base(root / "run", data, privacy={"unit": "user"}, **over)
    if executor is not None:
        d["executor"] = executor
    return d


def _drop_executor(obj):
    if isinstance(obj, dict):
        return {k: _drop_executor(v) for k, v in obj.items() if k != "executor"}
    if isinstance(obj, list):
        return [_drop_executor(v) for v in obj]
    return obj


def _yaml_without_executor(lines: list[str]) -> list[str]:
    out, skipping = [], False
    for line in lines:
        if re.match(r"^executor:", line):
            skipping = True
            continue
        if skipping and (line.startswith(" ") or not line.strip()):
            continue
        skipping = False
        out.append(line)
    return out


def _html_without_executor(p: Path, root: str) -> str:
    """The report's digest (as :func:`support.golden.file_digest` makes it) without the config's executor
    block, which the report shows."""
    text = "\n".join(_yaml_without_executor(p.read_text(encoding="utf-8").split("\n")))
    html = re.sub(r"<script.*?</script>", "<script/>", golden._text(text, root), flags=re.S)
    return golden._sha(html.encode())


def digest(run: Path) -> str:
    d = golden.run_digest(run, base=run.parent)
    root = str(run.parent.resolve())
    for k, v in d.items():
        if k.endswith((".yaml", ".yml")):
            d[k] = _yaml_without_executor(v)
        elif k.endswith(".html"):
            d[k] = _html_without_executor(run / k, root)
        else:
            d[k] = _drop_executor(v)
    return golden.dumps(d)


def _diff(a: str, b: str) -> str:
    import difflib

    return "".join(list(difflib.unified_diff(a.splitlines(True), b.splitlines(True), "local", "ray"))[:80])


@pytest.mark.slow
@pytest.mark.parametrize("voting", ["image", "image-stream", "text-split"])
def test_a_run_on_ray_writes_the_local_run_folder(ray_cluster, tmp_path, voting):
    """The same small run, local and on two Ray replicas per model stage: equal run-folder digests (every
    caption, feature, render, histogram, release image and ledger entry). Image voting also has an image
    embedder whose replica process dies at its second batch of the private embedding stage: Ray restarts it,
    the stage completes without duplicates or gaps, and the run folder is still the local one.

    ``image-stream``: a splittable LLM with ``executor.llm_chunk: 5``: every generation round is cut into
    calls on both LLM replicas and streamed into the renderers and image embedders (spti.pe.stream), locally
    the same calls one after the other. ``text-split``: text voting with the splittable LLM: rounds cut into
    calls on both replicas, the same replies as one local call."""
    from spti.pipeline import run

    marker = tmp_path / "replica-died"
    over = {}
    mode = voting.split("-")[0]
    if voting == "image":
        over["image_embedder"] = {"backend": "support.executor_run_fakes:DyingMeanColourEmbedder",
                                  "marker": str(marker), "batch_size": 4}
    local_executor = None
    ray_executor = RAY
    if voting != "image":
        over["llm"] = {"backend": "support.fakes:SplittableScriptedLLM"}
        local_executor, ray_executor = {"kind": "local", "llm_chunk": 5}, {**RAY, "llm_chunk": 5}
    from support.fakes import ColourCaptioner, SolidRenderer

    ColourCaptioner.calls = SolidRenderer.calls = 0
    run(_config(tmp_path / "ray", mode, ray_executor, **over))
    assert ColourCaptioner.calls == SolidRenderer.calls == 0  # every caption and render came from a replica
    if voting == "image":
        assert marker.is_file() and int(marker.read_text()) != os.getpid()  # a replica process really died
    run(_config(tmp_path / "local", mode, local_executor, **over))  # the marker exists now: no death here
    want, got = digest(tmp_path / "local" / "run"), digest(tmp_path / "ray" / "run")
    assert got == want, _diff(want, got)
    manifest = json.loads((tmp_path / "ray" / "run" / "manifest.json").read_text())
    name = "scripted" if voting == "image" else "scripted-splittable"
    assert manifest["models"]["llm"] == {"backend": name, "garbage": 0.2}  # described by a replica
    stats = json.loads((tmp_path / "ray" / "run" / "stats.json").read_text())["evolve"]
    if voting == "image-stream":  # rounds were cut into calls and their renders made on the way
        assert stats["random.streamed_calls"] >= 2 and stats["variation.streamed_calls"] >= 2 * 4  # 8, 16 convs
        assert stats["variation.streamed_renders"] > 0
    else:
        assert not any("streamed" in k for k in stats)


@pytest.mark.slow
def test_an_interrupted_run_resumes_on_ray_without_redrawing_noise(ray_cluster, tmp_path):
    """A run stopped after its first iteration (the driver gone) resumes on Ray: the saved noisy histogram
    is kept as it was (secure noise: a redraw would change it), and the ledger counts each iteration once."""
    from spti.pipeline import run

    cfg = _config(tmp_path, "text", RAY)
    cfg["privacy"] = {k: v for k, v in cfg["privacy"].items() if k != "insecure_noise_seed"}
    with pytest.raises(RuntimeError):  # the stop_after hook: a crash after iteration 1
        run(cfg, stop_after=1)
    first = tmp_path / "run" / "checkpoints" / "iter_001" / "noisy_histogram.npz"
    saved = first.read_bytes()
    rd = run(cfg)
    assert first.read_bytes() == saved
    ledger = json.loads(rd.privacy_path.read_text())
    assert ledger["mechanisms"][0]["count"] == cfg["pe"]["iterations"] and ledger["within_budget"] is True
    assert "resuming" in (rd.path / "spti.log").read_text()
