"""The helpers backends share (one home each): hub/local-path rule, dtype table, fingerprints, the
OpenAI client options and the torch ``close()``. None of these imports torch except where stated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spti.errors import ConfigError
from spti.models import _fingerprint, _hub, _torch
from spti.models._http import ClientOptions


# ----------------------------------------------------------------------------------------------- _hub
@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("true", True), ("ON", True), ("Yes", True), ("0", False), ("", False)]
)
def test_hub_offline_default_follows_hf_hub_offline(monkeypatch, value, expected):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert _hub.hub_offline_default() is expected
    assert _hub.resolve_local_files_only(None) is expected
    assert _hub.resolve_local_files_only(False) is False and _hub.resolve_local_files_only(1) is True
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert _hub.hub_offline_default() is False


@pytest.mark.parametrize(
    "model",
    ["/abs/model", "~/models/x", "./x", "../x", ".", "..", "a/b/c", "C:\\models\\x", "c:/models/x", "models\\x"],
)
def test_paths_look_like_paths(model):
    assert _hub.looks_like_local_path(model)


@pytest.mark.parametrize("model", ["gpt2", "org/name", "stabilityai/sdxl-turbo", "org/name.v1-2_x"])
def test_hub_ids_do_not(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not _hub.looks_like_local_path(model)
    assert _hub.local_model_path(model, "who") is None


def test_local_model_path_existing_missing_and_relative(tmp_path, monkeypatch):
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert _hub.local_model_path(str(tmp_path / "org"), "who") == tmp_path / "org"
    with pytest.raises(ConfigError, match=r"^who: local model folder .* does not exist") as e:
        _hub.local_model_path(str(tmp_path / "missing"), "who")
    assert str(tmp_path / "missing") in str(e.value)
    monkeypatch.chdir(tmp_path)
    # an existing relative folder wins over the hub id of the same name
    assert _hub.local_model_path("org/name", "who") == Path("org/name")
    assert _hub.looks_like_local_path("org/name")


# ---------------------------------------------------------------------------------------------- _torch
def test_one_dtype_table_without_torch():
    assert _torch.dtype_name(None) == "auto" and _torch.dtype_name("AUTO") == "auto"
    assert _torch.dtype_name("fp16") == "float16" and _torch.dtype_name("bfloat16") == "bfloat16"
    with pytest.raises(ConfigError, match=r"^captioner 'hf': bad dtype 'int8'; use one of auto, float32"):
        _torch.dtype_name("int8", "captioner 'hf'")
    code = "import spti.models._torch as t, sys; t.dtype_name('fp32'); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_resolve_dtype_auto_per_backend():
    torch = pytest.importorskip("torch")
    assert _torch.resolve_dtype("auto", "cpu") is torch.float32
    assert _torch.resolve_dtype("auto", "cuda", auto="float32") is torch.float32
    assert _torch.resolve_dtype("fp16", "cpu") is torch.float16


def test_torch_models_close_drops_models_once():
    class Holder(_torch.TorchModels):
        _torch_models = ("_a", "_b")
        device = "cpu"

        def __init__(self):
            self._a, self._b = object(), object()

    h = Holder()
    h.close()
    assert h._a is None and h._b is None
    h.close()  # twice is fine


# ----------------------------------------------------------------------------------------- _fingerprint
def test_fingerprints(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "sub" / "b.bin").write_bytes(b"de")
    assert _fingerprint.file_sha256(tmp_path / "a.bin") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    files = ["a.bin", "sub/b.bin"]
    assert _fingerprint.folder_fingerprint(tmp_path) == _fingerprint.stat_fingerprint(tmp_path, files)
    before = _fingerprint.folder_fingerprint(tmp_path)
    st = (tmp_path / "a.bin").stat()
    os.utime(tmp_path / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert _fingerprint.folder_fingerprint(tmp_path) != before
    assert _fingerprint.json_hash({"b": 1, "a": 2}) == _fingerprint.json_hash({"a": 2, "b": 1})
    assert len(_fingerprint.short_hash("x")) == 16


# -------------------------------------------------------------------------------------------- _http
def test_client_options_defaults_overrides_and_unknown_names():
    opts = ClientOptions.from_kwargs("renderer backend 'openai'", {"timeout": 5}, concurrency=4, timeout=180.0)
    assert (opts.concurrency, opts.timeout, opts.max_retries) == (4, 5, 5)
    client = opts.client()
    assert client.concurrency == 4 and client.timeout == 5.0
    with pytest.raises(ConfigError, match="unknown option.*colour.*base_url"):
        ClientOptions.from_kwargs("llm backend 'openai'", {"colour": "red"})
