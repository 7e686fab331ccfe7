"""`spti caption` and `spti render` as stages of their own, with plug-in backends, and their resumption."""

import json

from PIL import Image
from support.fakes import COLOUR_RGB, ColourCaptioner, SolidRenderer

from spti.cli import main


def test_caption_then_render_stages(tmp_path, capsys):
    data = tmp_path / "private"
    data.mkdir()
    names = list(COLOUR_RGB)
    for i in range(12):
        im = Image.new("RGB", (20, 20), COLOUR_RGB[names[i % 4]])
        im.putpixel((0, 0), (i, i, i))  # distinct files: exact duplicates would be counted once
        im.save(data / f"secret-{i}.png")
    (data / "broken.png").write_bytes(b"not an image")
    cfgp = tmp_path / "c.yaml"
    cfgp.write_text("captioner: {backend: 'support.fakes:ColourCaptioner'}\nrenderer: {backend: 'support.fakes:SolidRenderer'}\n")
    out = tmp_path / "run"
    ColourCaptioner.calls = 0
    assert main(["caption", "--config", str(cfgp), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    assert ColourCaptioner.calls == 12
    caps = [json.loads(x) for f in sorted((out / "private" / "captions").glob("*.jsonl")) for x in f.read_text().splitlines()]
    assert len(caps) == 12 and {c["text"].split()[1] for c in caps} == set(COLOUR_RGB)
    assert json.loads((out / "stats.json").read_text())["ingest"]["skipped"] == 1
    # again: resumes, captions nothing
    assert main(["caption", "--config", str(cfgp), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    assert ColourCaptioner.calls == 12

    dp = tmp_path / "dp.jsonl"
    dp.write_text("".join(json.dumps({"text": f"A {c} square."}) + "\n" for c in ("red", "blue", "red")))
    SolidRenderer.calls = 0
    assert main(["render", "--captions", str(dp), "--out", str(out), "--no-progress"]) == 0
    meta = [json.loads(x) for x in (out / "release" / "metadata.jsonl").read_text().splitlines()]
    assert [m["text"] for m in meta] == ["A red square.", "A blue square.", "A red square."]
    imgs = [Image.open(out / "release" / m["file_name"]).convert("RGB") for m in meta]
    assert imgs[0].getpixel((0, 0))[0] > 200 and imgs[1].getpixel((0, 0))[2] > 200
    assert imgs[0].getpixel((0, 0)) != imgs[2].getpixel((0, 0))  # a repeated caption gets a fresh seed
    assert SolidRenderer.calls == 3
    # rendering again reuses the cached renders
    assert main(["render", "--captions", str(dp), "--out", str(out), "--no-progress"]) == 0
    assert SolidRenderer.calls == 3
    rel = "".join(p.read_text() for p in (out / "release").glob("*.json*"))
    assert "secret-" not in rel and str(data) not in rel
    assert (out / "release" / "privacy.json").is_file()
