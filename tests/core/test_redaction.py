"""Credentials never reach a run folder, a release or a report (issue 10, point 3), and a run can still be
compared with (and resumed from) its redacted config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from support.fake_openai import FakeOpenAIServer
from support.fakes import ScriptedLLM

from spti.cli import main
from spti.config import Config
from spti.errors import ConfigError
from spti.redact import find_redacted, is_redacted, is_secret_key, marker, redact_secrets, scrub_message

SECRET = "sk-SECRET123"


@pytest.mark.parametrize("name", [
    "Authorization", "authorization", "Proxy-Authorization", "api_key", "apiKey", "x-api-key", "X-Goog-Api-Key",
    "Ocp-Apim-Subscription-Key", "OPENAI_API_KEY", "hf_token", "access_token", "token", "password", "passwd",
    "client_secret", "secret", "private_key", "cookie", "use_auth_token", "credentials",
])
def test_credential_names(name):
    assert is_secret_key(name)


@pytest.mark.parametrize("name", [
    "api_key_env", "max_tokens_field", "max_new_tokens", "tokenizer", "pad_token", "eos_token_id", "cache_key",
    "keep_selected", "backend", "model", "base_url", "password_file", "token_path", "insecure_noise_seed",
    "text_column", "max_token", "key", "seed",
])
def test_names_that_are_not_credentials(name):
    assert not is_secret_key(name)


def test_redaction_keeps_a_comparable_hash_and_is_idempotent():
    d = {"llm": {"backend": "openai", "api_key": "abc", "extra_headers": {"Authorization": f"Bearer {SECRET}",
                                                                           "X-Custom": "also-secret",
                                                                           "User-Agent": "me"}}}
    r = redact_secrets(d)
    h = r["llm"]["extra_headers"]
    assert is_redacted(h["Authorization"]) and is_redacted(h["X-Custom"]) and h["User-Agent"] == "me"
    assert is_redacted(r["llm"]["api_key"]) and r["llm"]["backend"] == "openai"
    assert SECRET not in json.dumps(r)
    assert redact_secrets(r) == r  # a marker stays itself
    assert marker(f"Bearer {SECRET}") == h["Authorization"]  # same secret, same marker
    assert marker("Bearer sk-OTHER") != h["Authorization"]
    assert find_redacted(r) == ["llm.api_key", "llm.extra_headers.Authorization", "llm.extra_headers.X-Custom"]
    assert d["llm"]["api_key"] == "abc"  # the input is not modified


def test_urls_lose_passwords_and_signed_query_values():
    r = redact_secrets({"base_url": "https://user:hunter2@example.com/v1?api_key=K123&x=1",
                        "pool": "s3://bucket/path?X-Amz-Signature=abcdef&region=eu"})
    assert "hunter2" not in r["base_url"] and "K123" not in r["base_url"] and "x=1" in r["base_url"]
    assert r["base_url"].startswith("https://user:<redacted") and "@example.com/v1" in r["base_url"]
    assert "abcdef" not in r["pool"] and "region=eu" in r["pool"]
    assert redact_secrets(r) == r
    plain = {"base_url": "http://localhost:8000/v1", "model": "org/name"}
    assert redact_secrets(plain) == plain


def test_a_config_without_credentials_is_unchanged():
    cfg = Config.from_dict({"llm": {"backend": "support.fakes:ScriptedLLM", "garbage": 0.2, "max_tokens_field": "x"},
                            "generation": {"domain": "a photo"}})
    assert cfg.to_dict() == cfg.to_dict(redact=False)


def test_config_writes_are_redacted_but_live_copies_keep_the_secret():
    cfg = Config.from_dict({"llm": {"backend": "openai", "model": "m", "extra_headers": {"Authorization": SECRET}}})
    assert SECRET not in cfg.to_yaml() and SECRET not in json.dumps(cfg.to_dict())
    assert cfg.to_dict(redact=False)["llm"]["extra_headers"]["Authorization"] == SECRET
    assert cfg.merged({"pe.iterations": 3}).llm["extra_headers"]["Authorization"] == SECRET
    back = Config.from_dict(yaml.safe_load(cfg.to_yaml()))
    assert back.to_dict() == cfg.to_dict()  # the saved config compares equal to the live one


def test_backend_info_never_carries_a_credential():
    from spti.models.llm import build_llm

    llm = build_llm({"backend": "support.secret_fakes:HeaderLLM", "api_key": SECRET,
                     "extra_headers": {"Authorization": f"Bearer {SECRET}"}})
    assert SECRET not in json.dumps(llm.info()) and SECRET not in llm.cache_key
    assert llm.api_key == SECRET  # the backend itself still has it


def test_building_from_a_redacted_config_asks_for_the_secret_again():
    from spti.models.llm import build_llm

    red = redact_secrets({"backend": "support.secret_fakes:HeaderLLM", "api_key": SECRET})
    with pytest.raises(ConfigError, match="api_key holds a redacted secret.*give the real value again"):
        build_llm(red)


def test_error_messages_are_scrubbed():
    s = scrub_message(f"401 for Bearer {SECRET} at https://u:pw@h/x?api_key=abc\nline two")
    assert SECRET not in s and "pw@" not in s and "abc" not in s and "line two" not in s
    assert len(scrub_message("x" * 500)) == 200


# ------------------------------------------------------------------------------------------ end to end
def _texts(tmp_path: Path) -> Path:
    rows = [{"text": f"A {c} {o} in a {p}."} for c, o, p in
            [("red", "car", "garage"), ("blue", "dog", "park"), ("red", "lamp", "kitchen")] * 3]
    f = tmp_path / "private.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def _config(tmp_path: Path, base_url: str, secret: str) -> Path:
    cfg = {"seed": 1, "progress": False, "privacy": {"epsilon": 2.0, "insecure_noise_seed": 3},
           "generation": {"domain": "a coloured object", "min_length": 3, "max_length": 20},
           "pe": {"iterations": 2, "population": 4, "variations": 1},
           "llm": {"backend": "openai", "model": "m", "base_url": base_url, "api_key_env": None, "concurrency": 2,
                   "extra_headers": {"Authorization": f"Bearer {secret}"}},
           "text_embedder": {"backend": "support.fakes:BowEmbedder"}}
    p = tmp_path / f"config-{secret}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _leaks(root: Path, secret: str) -> list[str]:
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_secret_header_is_used_but_written_nowhere(tmp_path, capsys):
    """The openai LLM (against a local fake server) gets ``extra_headers: {Authorization: Bearer ...}``: the
    server receives it, and no file of the run folder (config.yaml, manifest.json, release/, report.html,
    spti.log, caches) contains it. Resuming with the same secret works; another secret is a different
    config; a command that reuses the run's own config.yaml is told to give the secret again."""
    private, out = _texts(tmp_path), tmp_path / "run"
    llm = ScriptedLLM()
    with FakeOpenAIServer(reply=lambda body: llm.generate([body["messages"]], seed=body.get("seed"))[0]) as srv:
        cfg = _config(tmp_path, srv.base_url, SECRET)
        assert main(["evolve", "--config", str(cfg), "--private", str(private), "--out", str(out)]) == 0
        assert srv.requests and all(r.headers.get("Authorization") == f"Bearer {SECRET}" for r in srv.requests)
        assert main(["report", str(out)]) == 0
        assert (out / "report.html").is_file() and (out / "release" / "manifest.json").is_file()
        assert _leaks(out, SECRET) == []
        saved = (out / "config.yaml").read_text()
        assert "Authorization: <redacted pbkdf2-sha256:" in saved

        # the same secret: the run resumes (and finds nothing left to do)
        assert main(["evolve", "--config", str(cfg), "--private", str(private), "--out", str(out)]) == 0
        # another secret: a different locked setting
        other = _config(tmp_path, srv.base_url, "sk-OTHER456")
        capsys.readouterr()
        assert main(["evolve", "--config", str(other), "--private", str(private), "--out", str(out)]) == 2
        assert "llm.extra_headers.Authorization" in capsys.readouterr().err
        # the run's own config.yaml holds only the marker: the secret must be given again
        assert main(["evolve", "--private", str(private), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "redacted secret" in err and "give the real value again" in err and "Traceback" not in err
        assert _leaks(out, SECRET) == [] and _leaks(out, "sk-OTHER456") == []
    out_text = capsys.readouterr()
    assert SECRET not in out_text.out + out_text.err


def test_image_run_with_a_credential_option_leaks_it_nowhere(tmp_path):
    """``spti run`` (image voting, fakes) with a plug-in LLM that takes credentials and even returns them from
    its info(): config.yaml, manifest.json, the release and the report hold only markers."""
    import numpy as np
    from PIL import Image

    from spti.pipeline import run

    data = tmp_path / "private"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        px = np.clip(np.array([(220, 30, 30), (30, 30, 220)][i % 2]) + rng.integers(-9, 10, (16, 16, 3)), 0, 255)
        Image.fromarray(px.astype(np.uint8)).save(data / f"img{i}.png")
    out = tmp_path / "run"
    run({"out": str(out), "seed": 2, "progress": False, "data": {"private": str(data)},
         "privacy": {"epsilon": 2.0, "insecure_noise_seed": 5},
         "generation": {"domain": "a coloured object", "min_length": 3, "max_length": 20},
         "pe": {"iterations": 1, "population": 4, "variations": 1, "voting": "image"},
         "llm": {"backend": "support.secret_fakes:HeaderLLM", "api_key": SECRET,
                 "extra_headers": {"Authorization": f"Bearer {SECRET}"}},
         "captioner": {"backend": "support.fakes:ColourCaptioner"},
         "text_embedder": {"backend": "support.fakes:BowEmbedder"},
         "renderer": {"backend": "support.fakes:SolidRenderer"},
         "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"}})
    assert (out / "report.html").is_file()
    assert _leaks(out, SECRET) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert is_redacted(manifest["models"]["llm"]["api_key"])


def test_render_reusing_the_runs_config_asks_for_the_secret_again(tmp_path, capsys):
    """``spti render --out RUN`` reads RUN/config.yaml, whose renderer credential is a marker: refused with
    a clear line before any request is sent (not an Authorization header holding the marker)."""
    out = tmp_path / "run"
    out.mkdir()
    cfg = Config.from_dict({"out": str(out), "renderer": {"backend": "openai", "model": "m",
                                                          "base_url": "http://127.0.0.1:9/v1",
                                                          "extra_headers": {"Authorization": f"Bearer {SECRET}"}}})
    (out / "config.yaml").write_text(cfg.to_yaml())
    captions = tmp_path / "c.jsonl"
    captions.write_text('{"text": "A red car."}\n')
    assert main(["render", "--captions", str(captions), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "renderer backend 'openai'" in err and "redacted secret" in err and "Traceback" not in err
