"""Tiny random Stable Diffusion / SDXL pipelines, saved to a folder, for tests without network or weights.

The components follow diffusers' own ``get_dummy_components`` test configs (tiny UNet, VAE and CLIP text
encoders under fixed seeds). The hub tokenizer those tests download is replaced by a byte-level CLIP
vocabulary written here (every byte character and its ``</w>`` form, then ``<|startoftext|>`` and
``<|endoftext|>`` last so that it has the highest id, which the legacy CLIP pooling picks by argmax) with
an empty merges file: any text tokenises, offline.

The pipelines are saved with ``save_pretrained`` so that the code under test loads them through the real
``from_pretrained`` path. 64×64 output, ~0.06 s per image at 2 steps on a laptop CPU.

    path = make_tiny_sd(tmp_path / "sd")      # StableDiffusionPipeline, no safety checker
    path = make_tiny_sdxl(tmp_path / "sdxl")  # StableDiffusionXLPipeline
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

#: Pixel size the tiny pipelines render at by default (UNet sample_size 32 × VAE scale factor 2).
TINY_SIZE = 64


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character map (same table as transformers')."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_byte_clip_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` and an empty ``merges.txt`` for a byte-level CLIP tokenizer; return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n", encoding="utf-8")
    return vocab_path, merges_path


def _tokenizer() -> Any:
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = write_byte_clip_tokenizer_files(Path(tmp))
        # model_max_length must be set: built from files, it would default to a huge number and the
        # pipeline pads prompts to it.
        return CLIPTokenizer(str(vocab), str(merges), model_max_length=77)


def _text_config(**overrides: Any) -> Any:
    from transformers import CLIPTextConfig

    cfg = dict(
        bos_token_id=0,
        eos_token_id=2,  # "2" selects the legacy argmax pooling: <|endoftext|> has the highest id
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=1000,  # > 514 byte-level tokens
    )
    cfg.update(overrides)
    return CLIPTextConfig(**cfg)


def _flag_all_safety_checker() -> tuple[Any, Any]:
    """A tiny StableDiffusionSafetyChecker whose concept thresholds (-1) every image exceeds, so every render
    is flagged and blacked out: lets a test see whether the checker ran. Returns (checker, feature_extractor)."""
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    cfg = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=1),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=1,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(cfg)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-1.0)
    extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return checker, extractor


def make_tiny_sd(path: str | Path, *, seed: int = 0, flagging_safety_checker: bool = False) -> Path:
    """Build a tiny random StableDiffusionPipeline (PNDM scheduler), save it to ``path`` and return ``path``.

    Without a safety checker by default; ``flagging_safety_checker=True`` ships one that flags (blacks out)
    every image. Deterministic for a given ``seed``; the global torch RNG is restored.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(4, 8),
            layers_per_block=1,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            norm_num_groups=2,
        )
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            block_out_channels=[4, 8],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
            latent_channels=4,
            norm_num_groups=2,
        )
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(_text_config())
        checker, extractor = _flag_all_safety_checker() if flagging_safety_checker else (None, None)
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_tokenizer(),
        safety_checker=checker,
        feature_extractor=extractor,
        image_encoder=None,
        requires_safety_checker=flagging_safety_checker,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def make_tiny_sdxl(path: str | Path, *, seed: int = 0) -> Path:
    """Build a tiny random StableDiffusionXLPipeline (Euler scheduler, two CLIP text encoders), save it to
    ``path`` and return ``path``. Deterministic for a given ``seed``; the global torch RNG is restored."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    path = Path(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(2, 4),
            layers_per_block=2,
            sample_size=32,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=80,  # 6 * 8 + 32 (pooled text embedding)
            cross_attention_dim=64,  # 32 + 32 (both text encoders' hidden states)
            norm_num_groups=1,
        )
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            block_out_channels=[32, 64],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
            latent_channels=4,
            sample_size=128,
        )
        torch.manual_seed(seed)
        cfg = _text_config(hidden_act="gelu", projection_dim=32)
        text_encoder = CLIPTextModel(cfg)
        text_encoder_2 = CLIPTextModelWithProjection(cfg)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    tok = _tokenizer()
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tok,
        image_encoder=None,
        feature_extractor=None,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path
