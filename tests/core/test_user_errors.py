"""A user's mistake ends in one clear line and exit status 2, never a traceback (issue 10, point 4). Each case
runs through ``spti.cli.main``."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import yaml

from spti.cli import main

FAKES = {
    "llm": {"backend": "support.fakes:ScriptedLLM"},
    "text_embedder": {"backend": "support.fakes:BowEmbedder"},
    "captioner": {"backend": "support.fakes:ColourCaptioner"},
    "renderer": {"backend": "support.fakes:SolidRenderer"},
    "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"},
}


def _config(tmp_path: Path, **over) -> Path:
    d = {"seed": 1, "progress": False, "privacy": {"epsilon": 2.0, "insecure_noise_seed": 3},
         "generation": {"domain": "a coloured object", "min_length": 3, "max_length": 20},
         "pe": {"iterations": 2, "population": 4, "variations": 1}, **FAKES}
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _texts(tmp_path: Path, name: str = "private.jsonl") -> Path:
    rows = [{"text": f"A {c} {o} in a {p}."} for c, o, p in
            [("red", "car", "garage"), ("blue", "dog", "park"), ("red", "lamp", "kitchen")] * 3]
    f = tmp_path / name
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def _one_error_line(capsys) -> str:
    """The stderr of a failed command: exactly one "spti: error:" line, last, and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("spti: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


def test_config_file_that_is_not_utf8(tmp_path, capsys):
    p = tmp_path / "latin1.yaml"
    p.write_bytes(b"seed: 1\ngeneration:\n  domain: une photo d'un caf\xe9\n")
    assert main(["evolve", "--config", str(p), "--private", str(_texts(tmp_path)), "--out", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys)
    assert "line 3" in line and "UTF-8" in line and str(p) in line
    assert not (tmp_path / "o").exists()


def test_config_file_nested_too_deeply_or_with_odd_keys(tmp_path, capsys):
    p = tmp_path / "deep.yaml"
    p.write_text("seed: " + "[" * 50000 + "]" * 50000 + "\n")
    assert main(["evolve", "--config", str(p), "--dry-run"]) == 2
    assert "nested too deeply" in _one_error_line(capsys)
    p.write_text("1: 2\nseed: 1\n")
    assert main(["evolve", "--config", str(p), "--dry-run"]) == 2
    assert "keys must be names" in _one_error_line(capsys)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_evolve_on_latin1_text_names_the_line_and_the_encoding(tmp_path, capsys, suffix):
    f = tmp_path / f"private{suffix}"
    if suffix == ".jsonl":
        f.write_bytes(b'{"text": "A red car."}\n{"text": "A caf\xe9 in a park."}\n')
        bad_line = 2
    else:
        f.write_bytes(b"text\nA red car.\nA blue dog.\nA caf\xe9 in a park.\n")
        bad_line = 4
    assert main(["evolve", "--config", str(_config(tmp_path)), "--private", str(f), "--out", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys)
    assert f"line {bad_line}" in line and "UTF-8" in line and "caf" not in line  # never the content
    assert not (tmp_path / "o").exists()


def test_evolve_on_a_deeply_nested_json_line(tmp_path, capsys):
    f = tmp_path / "private.jsonl"
    f.write_text('{"text": "A red car."}\n{"text": "x", "n": ' + "[" * 100000 + "]" * 100000 + "}\n")
    assert main(["evolve", "--config", str(_config(tmp_path)), "--private", str(f), "--out", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys)
    assert "line 2" in line and "nested too deeply" in line


def test_csv_with_a_utf8_bom_is_accepted(tmp_path, capsys):
    f = tmp_path / "private.csv"
    f.write_bytes(b"\xef\xbb\xbftext\n" + b"".join(f"A {c} car in a park.\n".encode() for c in ("red", "blue", "green") * 3))
    assert main(["evolve", "--config", str(_config(tmp_path)), "--private", str(f), "--out", str(tmp_path / "o"),
                 "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["private"]["rows"] == 9


@pytest.mark.parametrize("value", [".nan", "-1.0", ".inf"])
def test_length_std_nan_or_negative_is_found_by_dry_run(tmp_path, capsys, value):
    p = _config(tmp_path)
    p.write_text(p.read_text().replace("generation:\n", f"generation:\n  length_std: {value}\n"))
    missing = tmp_path / "not-read.jsonl"  # validation comes before any private data is touched
    assert main(["evolve", "--config", str(p), "--private", str(missing), "--dry-run"]) == 2
    assert "generation.length_std" in _one_error_line(capsys)


@pytest.mark.parametrize(("key", "template", "expect"), [
    ("fill_in_template", "Fill in {masked", "malformed template"),
    ("fill_in_template", "Fill in {lenght} words: {masked}", "unknown placeholder {lenght}"),
    ("rephrase_template", "Rewrite {0}: {text}", "placeholders must be named"),
    ("random_template", "Caption of {domain.upper}", "must be a plain name"),
    ("random_template", "Caption of {domain:d}", "does not format"),
    ("rephrase_template", "Rewrite a caption of {domain}", "must contain {text}"),
])
def test_malformed_prompt_templates_are_found_by_dry_run(tmp_path, capsys, key, template, expect):
    p = _config(tmp_path, generation={key: template})
    assert main(["evolve", "--config", str(p), "--private", str(tmp_path / "not-read.jsonl"), "--dry-run"]) == 2
    line = _one_error_line(capsys)
    assert f"generation.{key}" in line and expect in line


def test_templates_with_attribute_placeholders_and_literal_braces_are_fine(tmp_path, capsys):
    p = _config(tmp_path, generation={"attributes": {"colour": ["red", "blue"]},
                                      "random_template": "A {{caption}} of {domain} in {colour}, {length} words. {examples}"})
    assert main(["evolve", "--config", str(p), "--private", str(_texts(tmp_path)), "--dry-run"]) == 0


def test_privacy_with_a_vanishing_sigma(capsys):
    assert main(["privacy", "--sigma", "1e-300", "--iterations", "3", "--num-private", "100"]) == 2
    assert "sigma" in _one_error_line(capsys)


def test_a_full_disk_is_one_clear_line_and_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    real_fsync = os.fsync

    def full(fd):
        if os.fstat(fd).st_size > 0:  # a file being written (folders are fsynced too)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "o"
    assert main(["evolve", "--config", str(_config(tmp_path)), "--private", str(_texts(tmp_path)), "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert "no space left in" in line and str(out) in line and "run the same command again" in line
    assert not [p for p in out.rglob("*.tmp")]


def test_atomic_write_on_a_full_disk_raises_disk_full_and_removes_the_temporary_file(tmp_path, monkeypatch):
    from spti.data.io import atomic_write_text
    from spti.errors import DiskFullError

    def full(fd):
        raise OSError(errno.EDQUOT if hasattr(errno, "EDQUOT") else errno.ENOSPC, "Disk quota exceeded")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError, match="no space left in") as e:
        atomic_write_text(tmp_path / "sub" / "f.json", "{}")
    assert isinstance(e.value, OSError) and e.value.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))
    assert list((tmp_path / "sub").iterdir()) == []


def test_an_llm_plugin_that_raises_names_the_backend_the_stage_and_resume(tmp_path, capsys):
    p = _config(tmp_path, llm={"backend": "support.secret_fakes:BoomLLM"})
    assert main(["evolve", "--config", str(p), "--private", str(_texts(tmp_path)), "--out", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys)
    assert "llm backend 'support.secret_fakes:BoomLLM' failed during the evolve stage" in line
    assert "RuntimeError: the plug-in broke" in line and "second line" not in line
    assert "run the same command again to resume" in line


def test_a_private_data_plugin_failure_quotes_no_message(tmp_path, capsys):
    """The captioner sees private images: its exception's message (which may quote a caption) is never
    shown, only its type; the LLM and renderer messages are shown scrubbed of credentials."""
    from PIL import Image

    data = tmp_path / "imgs"
    data.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (200, 10 * i, 10)).save(data / f"{i}.png")
    p = _config(tmp_path, captioner={"backend": "support.secret_fakes:BoomCaptioner"})
    assert main(["run", "--config", str(p), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys)
    assert "captioner backend 'support.secret_fakes:BoomCaptioner' failed during the caption stage: ValueError;" in line
    assert "PRIVATE" not in line

    p = _config(tmp_path, pe={"voting": "image"}, renderer={"backend": "support.secret_fakes:BoomRenderer"})
    assert main(["run", "--config", str(p), "--data", str(data), "--out", str(tmp_path / "o2")]) == 2
    line = _one_error_line(capsys)
    assert "renderer backend 'support.secret_fakes:BoomRenderer' failed during the evolve stage: OSError:" in line
    assert "sk-LEAKY999" not in line and "render server said no" in line


def test_a_backend_called_outside_a_pipeline_raises_its_own_error():
    """Library users calling a backend directly see the backend's own exception."""
    from spti.models.llm import build_llm

    with pytest.raises(RuntimeError, match="the plug-in broke"):
        build_llm({"backend": "support.secret_fakes:BoomLLM"}).generate([[{"role": "user", "content": "x"}]])


def test_verbose_shows_the_traceback_of_the_cause(tmp_path, capsys):
    p = _config(tmp_path, llm={"backend": "support.secret_fakes:BoomLLM"})
    assert main(["evolve", "--config", str(p), "--private", str(_texts(tmp_path)), "--out", str(tmp_path / "o"),
                 "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("spti: error:")


def test_the_default_templates_pass_the_template_check():
    """The table of template variables in spti.config must follow spti.pe.generation and the prompts."""
    from spti.config import GenerationConfig, check_templates
    from spti.prompts import default_templates

    t = default_templates()
    for random in (t["random"], t.get("random_examples", t["random"])):
        check_templates(GenerationConfig(random_template=random, fill_in_template=t["fill_in"],
                                         rephrase_template=t["rephrase"]))


def test_a_folder_spti_may_not_write_is_one_clear_line(tmp_path, capsys, monkeypatch):
    real_mkdir = Path.mkdir

    def denied(self, *a, **k):
        if self.name == "o":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", denied)
    assert main(["evolve", "--config", str(_config(tmp_path)), "--private", str(_texts(tmp_path)),
                 "--out", str(tmp_path / "o")]) == 2
    assert "permission denied" in _one_error_line(capsys)
