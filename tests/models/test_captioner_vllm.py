"""Captioner backend ``vllm`` (issue 11, requirement 5) without vLLM: what is testable on a machine with no GPU
and no vLLM. The requests handed to ``LLM.chat`` (conversations, image encoding, per-image seeds), the engine
arguments, option checks, the registry, preflight, and the error when vLLM is missing. The engine itself is
NOT faked: whether a VLM on vLLM captions correctly is for a machine with a GPU and ``spti[vllm]``."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from spti.config import Config
from spti.errors import BackendError, ConfigError, InputError
from spti.models.captioner import build_captioner
from spti.models.captioner.vllm import (
    build_requests,
    caption_conversation,
    caption_sampling_kwargs,
    engine_args,
    image_part,
    image_seed,
)
from spti.preflight import check_backends


def _vllm_installed() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def _img(seed: int, size: tuple[int, int] = (24, 16), mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    return img if mode == "RGB" else img.convert(mode)


def _decode(uri: str) -> Image.Image:
    head, _, data = uri.partition(",")
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


# ------------------------------------------------------------------------------------ registry and errors
def test_registered_and_importing_it_loads_no_heavy_library():
    code = (
        "import sys\n"
        "from spti.models.captioner import REGISTRY\n"
        "assert 'vllm' in REGISTRY.names(), REGISTRY.names()\n"
        "assert REGISTRY.get('vllm').sends_data_off_machine is False\n"
        "heavy = {'torch', 'transformers', 'vllm'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_vllm_is_a_clear_error():
    if _vllm_installed():
        pytest.skip("vllm is installed")
    with pytest.raises(BackendError, match=r"pip install 'spti\[vllm\]'"):
        build_captioner({"backend": "vllm", "model": "Qwen/Qwen2-VL-2B-Instruct"})


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({}, "needs 'model'"),
        ({"image_input": "jpeg"}, "image_input must be one of data_uri, pil"),
        ({"max_image_side": 8}, "max_image_side must be an integer >= 16"),
        ({"temperature": -1.0}, "temperature must be >= 0"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"prompt": "  "}, "prompt must be a non-empty string"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"engine_kwargs": {"limit_mm_per_prompt": {"image": 4}}}, "engine_kwargs may not set"),
        ({"dtype": "float8"}, "bad dtype"),
        ({"seed": "x"}, "seed must be an integer"),
    ],
)
def test_bad_options_fail_before_vllm_is_needed(options, match):
    """Config errors show on any machine (the checks run before vLLM is imported)."""
    cfg = {"backend": "vllm", **({"model": "org/vlm"} if options else {}), **options}
    with pytest.raises(ConfigError, match=match):
        build_captioner(cfg)


# ------------------------------------------------------------------------------------ requests
def test_one_conversation_per_image_image_first_then_the_prompt():
    convs, params = build_requests([_img(1), _img(2)], prompt="Caption this photo.")
    assert len(convs) == len(params) == 2
    for conv in convs:
        assert len(conv) == 1 and conv[0]["role"] == "user"
        image, text = conv[0]["content"]
        assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")
        assert text == {"type": "text", "text": "Caption this photo."}
    with_system = caption_conversation(image_part(_img(1)), "p", "Be brief.")
    assert [m["role"] for m in with_system] == ["system", "user"]
    assert with_system[0]["content"] == "Be brief."


def test_the_data_uri_is_lossless_rgb_and_leaves_the_callers_image_alone():
    rgba = _img(3, mode="RGBA")
    before = rgba.tobytes()
    (conv,), _ = build_requests([rgba])
    decoded = _decode(conv[0]["content"][0]["image_url"]["url"])
    assert decoded.mode == "RGB" and decoded.size == rgba.size
    assert decoded.tobytes() == rgba.convert("RGB").tobytes()
    assert rgba.mode == "RGBA" and rgba.tobytes() == before


def test_max_image_side_downscales_keeping_the_aspect():
    big = _img(4, size=(400, 200))
    (conv,), _ = build_requests([big], max_image_side=100)
    assert _decode(conv[0]["content"][0]["image_url"]["url"]).size == (100, 50)
    (conv,), _ = build_requests([_img(5, size=(40, 20))], max_image_side=100)  # never upscaled
    assert _decode(conv[0]["content"][0]["image_url"]["url"]).size == (40, 20)
    assert big.size == (400, 200)


def test_pil_input_passes_the_image_itself():
    img = _img(6)
    (conv,), _ = build_requests([img], image_input="pil")
    part = conv[0]["content"][0]
    assert part["type"] == "image_pil" and part["image_pil"].tobytes() == img.tobytes()
    with pytest.raises(ConfigError, match="image_input"):
        image_part(img, "bmp")


def test_a_non_image_item_is_an_input_error():
    with pytest.raises(InputError, match="item 1 is a str"):
        build_requests([_img(1), "not an image"])


# ------------------------------------------------------------------------------------ seeds
def test_greedy_sends_no_seed():
    _, params = build_requests([_img(1), _img(2)], seed=7)
    assert [p["seed"] for p in params] == [None, None]
    assert params[0] == {"n": 1, "max_tokens": 77, "temperature": 0.0, "top_p": 1.0, "seed": None}


def test_sampling_seeds_follow_the_image_not_its_position_or_batch():
    a, b, c = _img(1), _img(2), _img(3)
    opts = {"seed": 7, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 40}
    convs_abc, p_abc = build_requests([a, b, c], **opts)
    convs_cb, p_cb = build_requests([c, b], **opts)
    convs_b, p_b = build_requests([b], **opts)
    assert p_abc[1] == p_cb[1] == p_b[0]  # b's request is the same wherever it lands
    assert p_abc[2] == p_cb[0]
    assert convs_abc[1] == convs_cb[1] == convs_b[0]
    seeds = [p["seed"] for p in p_abc]
    assert len(set(seeds)) == 3 and all(0 <= s < 2**31 for s in seeds)
    assert p_abc[0] == {"n": 1, "max_tokens": 40, "temperature": 0.7, "top_p": 0.9, "seed": image_seed(a, 7)}


def test_image_seed_depends_on_pixels_size_and_base_seed_only():
    a = _img(1)
    assert image_seed(a, 0) == image_seed(a.copy(), 0) == image_seed(a.convert("RGBA"), 0)
    assert image_seed(a, 0) != image_seed(a, 1)
    assert image_seed(a, 0) != image_seed(_img(2), 0)
    flat = Image.new("RGB", (4, 6), (1, 2, 3))
    assert image_seed(flat, 0) != image_seed(Image.new("RGB", (6, 4), (1, 2, 3)), 0)  # same bytes, other shape


def test_sampling_kwargs_check_their_parameters():
    with pytest.raises(ConfigError, match="max_new_tokens"):
        caption_sampling_kwargs([None], max_new_tokens=0, temperature=0.0, top_p=1.0)


# ------------------------------------------------------------------------------------ engine arguments
def test_engine_args():
    kw = engine_args("org/vlm", "org/vlm", revision="abc", dtype="bfloat16", max_model_len=4096,
                     mm_processor_kwargs={"max_pixels": 1003520}, engine_kwargs={"enforce_eager": True})
    assert kw == {
        "model": "org/vlm", "revision": "abc", "dtype": "bfloat16", "tensor_parallel_size": 1,
        "gpu_memory_utilization": 0.9, "trust_remote_code": False, "limit_mm_per_prompt": {"image": 1},
        "max_model_len": 4096, "mm_processor_kwargs": {"max_pixels": 1003520}, "enforce_eager": True,
    }
    # a cached snapshot folder already pins the revision; unset options are left to vLLM's defaults
    kw = engine_args("/cache/models--org--vlm/snapshots/abc", "org/vlm", revision="abc")
    assert kw["revision"] is None and "max_model_len" not in kw and "max_num_seqs" not in kw
    with pytest.raises(ConfigError, match="engine_kwargs may not set"):
        engine_args("org/vlm", "org/vlm", engine_kwargs={"model": "other"})


# ------------------------------------------------------------------------------------ preflight
def _text_voting_config(tmp_path, captioner: dict) -> Config:
    return Config.from_dict({
        "out": str(tmp_path / "run"), "data": {"private": str(tmp_path / "private")},
        "generation": {"domain": "a room"},
        "llm": {"backend": "support.fakes:ScriptedLLM"},
        "text_embedder": {"backend": "support.fakes:BowEmbedder"},
        "renderer": {"backend": "support.fakes:SolidRenderer"},
        "captioner": captioner,
    })


def test_preflight_checks_the_model_path_and_the_offline_cache(tmp_path, monkeypatch):
    missing = str(tmp_path / "no" / "such-vlm")
    problems = check_backends(_text_voting_config(tmp_path, {"backend": "vllm", "model": missing}))
    assert any(p.startswith("captioner (vllm): local model folder") for p in problems), problems

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    problems = check_backends(_text_voting_config(tmp_path, {"backend": "vllm", "model": "org/uncached-vlm"}))
    assert any("captioner (vllm): model 'org/uncached-vlm' is not in the Hugging Face cache" in p for p in problems)

    (tmp_path / "vlm").mkdir()
    problems = check_backends(_text_voting_config(tmp_path, {"backend": "vllm", "model": str(tmp_path / "vlm")}))
    assert not [p for p in problems if p.startswith("captioner")], problems
