"""``--dry-run --calibrate``: each configured model measured on synthetic inputs, priced per stage of the
plan (device-hours, wall time for W workers, the largest N that fits), never reading private data."""

from __future__ import annotations

import json

import pytest

from spti.config import Config
from spti.executor.calibrate import RoleRate, calibrate, measure_role, roles_of_plan, synthetic_items

FAKES = {
    "llm": {"backend": "support.fakes:ScriptedLLM"},
    "text_embedder": {"backend": "support.fakes:BowEmbedder"},
    "captioner": {"backend": "support.fakes:ColourCaptioner"},
    "renderer": {"backend": "support.fakes:SolidRenderer"},
    "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"},
}
PLAN = {"private": {"rows": 1000, "records (N)": 1000},
        "calls": {"llm": 500, "image_embedder (private)": 1000, "renderer (loop, at most)": 400,
                  "renderer (release)": 100, "text/image embeddings of candidates (at most)": 400}}


def rate(role, per_s, load=0.0):
    return RoleRate(role=role, backend="x", items=int(per_s), seconds=1.0, load_seconds=load, peak_rss_mb=1.0,
                    peak_gpu_mb=None, device="cpu", unit="img")


def test_roles_of_plan_maps_each_stage_to_its_model():
    cfg = Config.from_dict({**FAKES, "pe": {"voting": "image"}, "release_renderer": {"backend": "support.fakes:SolidRenderer", "x": 1}})
    got = {s: (r, c, n, p) for s, r, c, n, p in roles_of_plan(cfg, PLAN)}
    assert got["llm"][0] == "llm" and got["image_embedder (private)"][::2] == ("image_embedder", 1000)
    assert got["image_embedder (private)"][3] and not got["renderer (loop, at most)"][3]  # grows with N or not
    assert got["renderer (release)"][1] == {"backend": "support.fakes:SolidRenderer", "x": 1}
    assert got["text/image embeddings of candidates (at most)"][0] == "image_embedder"
    text = Config.from_dict({**FAKES, "pe": {"voting": "text"}})
    stages = {s: r for s, r, *_ in roles_of_plan(text, {"private": {"rows": 7}, "calls": {"captioner": 7, "llm": 3}})}
    assert stages == {"captioner": "captioner", "llm": "llm", "text_embedder (private texts)": "text_embedder"}


def test_pricing_arithmetic_and_the_largest_n():
    cfg = Config.from_dict({**FAKES, "pe": {"voting": "image"}})
    rates = {"llm": rate("llm", 10), "image_embedder": rate("image_embedder", 100, load=36.0), "renderer": rate("renderer", 4)}
    cal = calibrate(cfg, PLAN, workers=(1, 4), hours=1.0, rates=rates)
    by = {s.stage: s for s in cal.stages}
    assert by["llm"].device_hours == pytest.approx(500 / 10 / 3600)
    assert by["renderer (loop, at most)"].wall_hours[4] == pytest.approx(400 / 4 / 4 / 3600)
    assert by["image_embedder (private)"].wall_hours[1] == pytest.approx((1000 / 100 + 36) / 3600)
    # largest N for W=1: (3600 s - fixed stages - one load) x 100 img/s
    fixed = 500 / 10 + 400 / 4 + 100 / 4 + (400 / 100 + 36)
    assert cal.max_n[1] == int((3600 - fixed - 36) * 100)
    assert cal.max_n[4] > cal.max_n[1]
    d = json.loads(json.dumps(cal.to_dict()))
    assert set(d) >= {"rates", "stages", "total_wall_hours", "largest_n", "assumptions"}
    table = cal.table()
    assert "wall h (W=4)" in table and "largest N" in table
    assert calibrate(cfg, PLAN, workers=(1,), hours=0.001, rates=rates).max_n == {1: None}  # not even the fixed part


def test_measure_every_role_on_synthetic_inputs():
    for role, cfg in FAKES.items():
        r = measure_role(role, cfg, items=6)
        assert r.items == 6 and r.per_second > 0 and r.peak_rss_mb and r.device == "cpu"
    imgs = synthetic_items("captioner", 2, size=32)
    assert imgs[0].size == (32, 32) and imgs[0].tobytes() != imgs[1].tobytes()


def test_images_are_timed_at_the_size_asked_for():
    """A VLM's cost grows with the image (dynamic resolution): the captioner sees the --calibrate-image-size
    images (512 by default), and the table says which size it was timed on."""
    from support.executor_fakes import SizeRecordingCaptioner

    cfg = {"backend": "support.executor_fakes:SizeRecordingCaptioner"}
    SizeRecordingCaptioner.sizes = []
    measure_role("captioner", cfg, items=2, image_size=48)
    assert set(SizeRecordingCaptioner.sizes) == {(48, 48)}
    SizeRecordingCaptioner.sizes = []
    measure_role("captioner", cfg, items=2)
    assert set(SizeRecordingCaptioner.sizes) == {(512, 512)}
    cal = calibrate(Config.from_dict({**FAKES, "pe": {"voting": "text"}}), {"calls": {"captioner": 4}}, workers=(1,),
                    isolate=False, image_size=48)
    assert "images 48x48" in cal.table() and cal.to_dict()["image_size"] == 48


def test_isolated_measurement_in_a_fresh_process_and_private_data_untouched(tmp_path):
    cfg = Config.from_dict({**FAKES, "pe": {"voting": "text"}, "data": {"private": str(tmp_path / "absent")}})
    cal = calibrate(cfg, {"private": {"rows": 10}, "calls": {"captioner": 10}}, workers=(2,), isolate=True)
    assert set(cal.rates) == {"captioner", "text_embedder"} and cal.rates["captioner"].per_second > 0


def test_cli_dry_run_calibrate(tmp_path, capsys):
    from support.fakes import write_colour_squares

    from spti.cli import main

    write_colour_squares(tmp_path / "data", n=6)
    c = tmp_path / "c.yaml"
    c.write_text(json.dumps({**FAKES, "generation": {"domain": "a toy scene"}}))
    assert main(["run", "--config", str(c), "--data", str(tmp_path / "data"), "--dry-run", "--calibrate",
                 "--calibrate-workers", "1,3", "--calibrate-hours", "2", "--epsilon", "1", "--delta", "1e-3",
                 "--calibrate-image-size", "64"]) == 0
    out = capsys.readouterr()
    plan = json.loads(out.out)
    assert plan["calibration"]["workers"] == [1, 3] and "largest_n" in plan["calibration"]
    assert "wall h (W=3)" in out.err and "captioner" in out.err and "images 64x64" in out.err
