"""CLIP text features (for the CLIP score) from a tiny random CLIP with a byte-level tokenizer."""

import numpy as np
import pytest
from PIL import Image

from spti.models.image_embedder import build_image_embedder


@pytest.fixture(scope="module")
def tiny_clip_with_tokenizer(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    import torch
    from support.tiny_diffusers import write_byte_clip_tokenizer_files

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clip-tok")
    vocab, merges = write_byte_clip_tokenizer_files(folder)
    tok = transformers.CLIPTokenizer(str(vocab), str(merges), model_max_length=16)
    cfg = transformers.CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 16, "eos_token_id": 2},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 30, "patch_size": 6},
        projection_dim=24,
    )
    transformers.CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    transformers.CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}).save_pretrained(folder)
    return folder


def test_clip_text_features_match_direct_transformers(tiny_clip_with_tokenizer):
    import torch
    from transformers import CLIPModel, CLIPTokenizer

    emb = build_image_embedder({"backend": "clip", "model": str(tiny_clip_with_tokenizer), "device": "cpu", "batch_size": 2})
    texts = ["a red car", "a dog on a very long beach walk at sunset with friends", "x"]
    got = emb.embed_text(texts)
    assert got.shape == (3, 24) and got.dtype == np.float32
    model = CLIPModel.from_pretrained(tiny_clip_with_tokenizer).eval()
    tok = CLIPTokenizer.from_pretrained(tiny_clip_with_tokenizer)
    for i, t in enumerate(texts):
        b = tok([t], truncation=True, max_length=16, return_tensors="pt")
        with torch.no_grad():
            ref = model.get_text_features(**b)
        ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
        np.testing.assert_allclose(got[i], ref[0].numpy(), rtol=1e-4, atol=1e-5)
    # same joint space as the image features
    assert emb.embed([Image.new("RGB", (40, 40), "red")]).shape[1] == got.shape[1]
