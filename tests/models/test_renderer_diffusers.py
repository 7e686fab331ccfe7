"""Renderer ``diffusers`` on tiny random SD / SDXL pipelines saved to disk and loaded by path through the
backend's real loader (AutoPipelineForText2Image.from_pretrained). No network, no real weights."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from spti.errors import BackendError, ConfigError  # noqa: E402
from spti.models.renderer import build_renderer  # noqa: E402
from spti.models.renderer._families import match_family  # noqa: E402
from spti.models.renderer.diffusers import DiffusersRenderer  # noqa: E402
from tests.support.tiny_diffusers import make_tiny_sd, make_tiny_sdxl  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny models gain nothing from threads, and on a busy 2-core machine two torch threads spin
    against other processes (a call takes seconds instead of ~0.1 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sd_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "pipe")


@pytest.fixture(scope="module")
def sdxl_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl") / "pipe")


@pytest.fixture(scope="module")
def sd(sd_path: Path) -> DiffusersRenderer:
    r = build_renderer(
        {
            "backend": "diffusers",
            "model": str(sd_path),
            "num_inference_steps": 2,
            "guidance_scale": 5.0,  # > 1: exercises classifier-free guidance (doubled batch)
            "height": 64,
            "width": 64,
            "device": "cpu",
            "batch_size": 4,
        }
    )
    assert isinstance(r, DiffusersRenderer)
    yield r
    r.close()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record (and refuse) every outgoing connection attempt."""
    attempts: list = []

    def refuse(self, address, *a, **k):  # noqa: ANN001
        attempts.append(address)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def arr(im) -> np.ndarray:  # noqa: ANN001
    return np.asarray(im, dtype=np.int16)


def test_sd_renders_requested_size_rgb(sd: DiffusersRenderer) -> None:
    imgs = sd.render(["a red square", "a blue circle", "a green triangle"], [0, 1, 2])
    assert len(imgs) == 3
    for im in imgs:
        assert im.mode == "RGB" and im.size == (64, 64)
    assert type(sd.pipeline).__name__ == "StableDiffusionPipeline"


def test_non_square_size(sd_path: Path) -> None:
    r = DiffusersRenderer(model=str(sd_path), num_inference_steps=1, height=48, width=80, device="cpu")
    (im,) = r.render(["x"], [0])
    assert im.size == (80, 48)


def test_same_seed_same_image_different_seed_different(sd: DiffusersRenderer) -> None:
    a1, b = sd.render(["a red square", "a red square"], [7, 8])
    (a2,) = sd.render(["a red square"], [7])
    assert np.array_equal(arr(a1), arr(a2))
    assert np.abs(arr(a1) - arr(b)).mean() > 1.0


def test_same_pair_twice_in_one_batch_is_identical(sd: DiffusersRenderer) -> None:
    # Would fail with one generator shared by the batch (the second image would get the next noise draw).
    x, y = sd.render(["a dog", "a dog"], [3, 3])
    assert np.array_equal(arr(x), arr(y))


def test_batch_composition_invariance(sd: DiffusersRenderer) -> None:
    _, b_in_batch, _ = sd.render(["a cat", "a boat", "zzz"], [11, 12, 13])
    (b_alone,) = sd.render(["a boat"], [12])
    diff = np.abs(arr(b_in_batch) - arr(b_alone))
    assert diff.max() <= 2, diff.max()  # equal up to float rounding of batched kernels


def test_batches_split_by_batch_size(sd_path: Path) -> None:
    r = DiffusersRenderer(
        model=str(sd_path), num_inference_steps=2, height=64, width=64, device="cpu", batch_size=2
    )
    prompts, seeds = ["p1", "p2", "p3", "p4", "p5"], [1, 2, 3, 4, 5]
    got = r.render(prompts, seeds)
    (last,) = r.render(["p5"], [5])
    assert len(got) == 5
    assert np.abs(arr(got[4]) - arr(last)).max() <= 2


def test_prompt_changes_image(sd: DiffusersRenderer) -> None:
    a, b = sd.render(["a red square", "completely different words here"], [5, 5])
    assert not np.array_equal(arr(a), arr(b))


def test_render_validates_arguments(sd: DiffusersRenderer) -> None:
    assert sd.render([], []) == []
    with pytest.raises(ConfigError):
        sd.render(["a", "b"], [1])
    with pytest.raises(TypeError):
        sd.render("a", [1])  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        sd.render(["a"], ["x"])  # type: ignore[list-item]


def test_info_and_cache_key(sd_path: Path) -> None:
    r = DiffusersRenderer(model=str(sd_path), num_inference_steps=2, height=64, width=64, device="cpu")
    info = r.info()
    assert r._pipe is None  # info() reads model_index.json only, no weights
    assert info["model"] == str(sd_path.resolve())
    assert info["pipeline_class"] == "StableDiffusionPipeline"
    assert info["num_inference_steps"] == 2 and info["height"] == 64 and info["width"] == 64
    assert info["dtype"] == "float32"
    assert info["diffusers_version"]
    assert info["local_fingerprint"]
    same = DiffusersRenderer(model=str(sd_path), num_inference_steps=2, height=64, width=64, device="cpu")
    assert same.cache_key == r.cache_key
    for change in (
        {"num_inference_steps": 3},
        {"guidance_scale": 1.5},
        {"height": 32},
        {"negative_prompt": "blur"},
    ):
        other = DiffusersRenderer(
            model=str(sd_path),
            **{"num_inference_steps": 2, "height": 64, "width": 64, "device": "cpu", **change},
        )
        assert other.cache_key != r.cache_key, change


def test_negative_prompt_and_extra_call_kwargs_reach_pipeline(sd_path: Path) -> None:
    base = dict(
        model=str(sd_path), num_inference_steps=2, guidance_scale=5.0, height=64, width=64, device="cpu"
    )
    (plain,) = DiffusersRenderer(**base).render(["a house"], [4])
    (neg,) = DiffusersRenderer(**base, negative_prompt="ugly blurry").render(["a house"], [4])
    assert not np.array_equal(arr(plain), arr(neg))
    (rescaled,) = DiffusersRenderer(**base, extra_call_kwargs={"guidance_rescale": 0.9}).render(
        ["a house"], [4]
    )
    assert not np.array_equal(arr(plain), arr(rescaled))


def test_safety_checker_as_shipped_unless_explicitly_false(tmp_path: Path) -> None:
    path = make_tiny_sd(tmp_path / "sd-checked", flagging_safety_checker=True)
    common = dict(model=str(path), num_inference_steps=1, height=64, width=64, device="cpu")
    shipped = DiffusersRenderer(**common)
    (black,) = shipped.render(["anything"], [0])
    assert shipped.pipeline.safety_checker is not None
    assert arr(black).max() == 0  # this checker flags everything: diffusers blacks it out
    off = DiffusersRenderer(**common, safety_checker=False)
    (img,) = off.render(["anything"], [0])
    assert off.pipeline.safety_checker is None
    assert arr(img).max() > 0
    assert off.cache_key != shipped.cache_key


def test_sdxl_pipeline(sdxl_path: Path) -> None:
    r = build_renderer(
        {
            "backend": "diffusers",
            "model": str(sdxl_path),
            "num_inference_steps": 2,
            "guidance_scale": 0.0,
            "height": 64,
            "width": 64,
            "device": "cpu",
        }
    )
    a, b, a_again = r.render(["a red square", "a red square", "a red square"], [1, 2, 1])
    assert type(r.pipeline).__name__ == "StableDiffusionXLPipeline"
    assert r.info()["pipeline_class"] == "StableDiffusionXLPipeline"
    assert a.size == (64, 64) and a.mode == "RGB"
    assert np.array_equal(arr(a), arr(a_again))
    assert np.abs(arr(a) - arr(b)).mean() > 1.0
    (b_alone,) = r.render(["a red square"], [2])
    assert np.abs(arr(b) - arr(b_alone)).max() <= 2
    r.close()
    assert r._pipe is None


def test_missing_local_folder_is_a_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        DiffusersRenderer(model=str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match="does not exist"):
        build_renderer({"backend": "diffusers", "model": "./models/missing"})


def test_folder_that_is_not_a_pipeline(tmp_path: Path, no_network: list) -> None:
    (tmp_path / "junk").mkdir()
    r = DiffusersRenderer(model=str(tmp_path / "junk"), device="cpu")
    with pytest.raises(BackendError, match="model_index.json"):
        r.render(["x"], [0])
    assert no_network == []


def test_offline_uncached_hub_id_is_a_clear_error_without_network(
    monkeypatch: pytest.MonkeyPatch, no_network: list
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = DiffusersRenderer(model="spti-tests/never-cached-pipeline-7f3a", device="cpu")
    assert r.local_files_only is True
    with pytest.raises(BackendError, match="offline") as ei:
        r.render(["x"], [0])
    assert "huggingface-cli download spti-tests/never-cached-pipeline-7f3a" in str(ei.value)
    with pytest.raises(BackendError, match="offline"):
        r.info()
    assert no_network == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert DiffusersRenderer(model="org/name").local_files_only is False
    assert DiffusersRenderer(model="org/name", local_files_only=True).local_files_only is True


def test_family_defaults_and_overrides() -> None:
    r = DiffusersRenderer()  # constructing does not load or download anything
    assert r.model == "stabilityai/sdxl-turbo"
    assert (r.num_inference_steps, r.guidance_scale, r.height, r.width) == (4, 0.0, 512, 512)
    r = DiffusersRenderer(num_inference_steps=1, height=256, width=384, guidance_scale=1.0)
    assert (r.num_inference_steps, r.guidance_scale, r.height, r.width) == (1, 1.0, 256, 384)
    assert match_family("stabilityai/stable-diffusion-3.5-large-turbo").name == "sd3.5-large-turbo"
    assert match_family("stabilityai/stable-diffusion-3.5-large").name == "sd3.5-large"
    assert match_family("/models/SDXL-Turbo/").name == "sdxl-turbo"
    assert match_family("my-org/some-finetune") is None
    flux = DiffusersRenderer(model="black-forest-labs/FLUX.1-schnell")
    assert (flux.num_inference_steps, flux.guidance_scale) == (4, 0.0)
    assert flux.call_kwargs == {"max_sequence_length": 256}
    flux = DiffusersRenderer(
        model="black-forest-labs/FLUX.1-schnell", extra_call_kwargs={"max_sequence_length": 128}
    )
    assert flux.call_kwargs == {"max_sequence_length": 128}
    unknown = DiffusersRenderer(model="my-org/some-finetune")
    assert unknown.num_inference_steps is None and unknown.height is None  # the pipeline's own defaults


def test_dtype_and_variant_resolution() -> None:
    assert DiffusersRenderer(device="cpu").resolved_dtype() == "float32"
    gpu = DiffusersRenderer(device="cuda")  # resolution only: nothing is loaded
    assert gpu.resolved_dtype() == "float16" and gpu.resolved_variant() == "fp16"
    assert (
        DiffusersRenderer(model="black-forest-labs/FLUX.1-schnell", device="cuda").resolved_dtype()
        == "bfloat16"
    )
    assert DiffusersRenderer(device="cuda", variant=None).resolved_variant() is None
    assert DiffusersRenderer(device="cuda", dtype="float32").resolved_variant() is None


@pytest.mark.parametrize(
    "bad",
    [
        {"dtype": "float8"},
        {"num_inference_steps": 0},
        {"height": -64},
        {"batch_size": 0},
        {"guidance_scale": "high"},
        {"safety_checker": "no"},
        {"extra_call_kwargs": {"generator": None}},
        {"extra_call_kwargs": {"num_inference_steps": 3}},
        {"extra_call_kwargs": ["not", "a", "dict"]},
        {"model": ""},
    ],
)
def test_bad_options(bad: dict) -> None:
    with pytest.raises(ConfigError):
        DiffusersRenderer(**bad)


def test_unknown_option_through_registry() -> None:
    with pytest.raises(ConfigError):
        build_renderer({"backend": "diffusers", "stepz": 3})
