"""Captioner efficientnet-lite0: caption formatting, options, the real loading path on random weights
saved to tmp_path, and (slow) the bundled weights on Fashion-MNIST."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spti.errors import ConfigError, InputError
from spti.models.captioner import REGISTRY, build_captioner
from spti.models.captioner.offline import format_caption, join_labels, select_labels

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def test_join_and_format():
    assert join_labels(["loafer"]) == "loafer"
    assert join_labels(["loafer", "muzzle"]) == "loafer and muzzle"
    assert join_labels(["loafer", "muzzle", "plane"]) == "loafer, muzzle and plane"
    t = "a photo of a {labels}"
    assert format_caption(t, ["loafer", "muzzle", "plane"]) == "a photo of a loafer, muzzle and plane"
    assert format_caption(t, ["ambulance", "crane", "crane"]) == "a photo of an ambulance and crane"
    assert format_caption("A {labels}.", ["eel"]) == "An eel."
    assert format_caption("{labels}", ["eel", "tench"]) == "eel and tench"
    with pytest.raises(ValueError):
        join_labels([])


def test_select_labels_keeps_the_best_one():
    scored = [("sweatshirt", 0.5), ("jersey", 0.2), ("cardigan", 0.05)]
    assert select_labels(scored, 0.0) == ["sweatshirt", "jersey", "cardigan"]
    assert select_labels(scored, 0.1) == ["sweatshirt", "jersey"]
    assert select_labels(scored, 0.9) == ["sweatshirt"]


def test_imagenet_names_are_cleaned():
    pytest.importorskip("timm")
    from spti.models._efficientnet import clean_imagenet_name, imagenet_labels

    names = imagenet_labels()
    assert len(names) == 1000
    assert names[0] == "tench" and names[2] == "great white shark"
    assert all(n and "," not in n and "_" not in n and n == n.strip() for n in names)
    assert clean_imagenet_name("a_b c,  d") == "a b c"


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    """Random tf_efficientnet_lite0 weights saved under other names, like the bundled file."""
    timm = pytest.importorskip("timm")
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    sd = {f"m.{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(model.state_dict().items())}
    path = tmp_path_factory.mktemp("effnet") / "weights.pth"
    torch.save(sd, path)
    return path


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(n)]


def test_captioner_on_random_weights(random_weights):
    from spti.models._efficientnet import imagenet_labels, load_efficientnet_lite0

    assert "efficientnet-lite0" in REGISTRY.names()
    cap = build_captioner(
        {"backend": "efficientnet-lite0", "weights": str(random_weights), "device": "cpu", "batch_size": 2}
    )
    assert cap.sends_data_off_machine is False
    images = _images(3)
    captions = cap.caption(images)
    assert len(captions) == 3 and captions == cap.caption(images)  # deterministic
    net = load_efficientnet_lite0(random_weights, "cpu")
    names = set(imagenet_labels())
    for caption, scored in zip(captions, net.top_labels(images, 3)):
        labels = [name for name, _ in scored]
        assert set(labels) <= names
        assert caption == format_caption("a photo of a {labels}", labels)
        assert re.match(r"a photo of an? \S", caption)
    assert cap.caption([]) == []

    one = build_captioner(
        {
            "backend": "efficientnet-lite0",
            "weights": str(random_weights),
            "device": "cpu",
            "top_k": 5,
            "min_prob": 1.0,
            "template": "{labels}",
        }
    )
    assert one.caption(images[:1]) == [net.top_labels(images[:1], 1)[0][0][0]]
    info = one.info()
    assert info["top_k"] == 5 and info["min_prob"] == 1.0 and info["template"] == "{labels}"
    assert len(info["weights_sha256"]) == 64 and one.cache_key != cap.cache_key
    with pytest.raises(InputError):
        cap.caption(["not an image"])


@pytest.mark.parametrize(
    "options",
    [
        {"top_k": 0},
        {"top_k": 1001},
        {"top_k": 2.5},
        {"min_prob": -0.1},
        {"min_prob": 2},
        {"template": "no slot"},
        {"invert": "true"},
        {"batch_size": 0},
        {"unknown_option": 1},
    ],
)
def test_captioner_rejects_bad_options(options, random_weights):
    with pytest.raises(ConfigError):
        build_captioner({"backend": "efficientnet-lite0", "weights": str(random_weights), **options})


def _fashion_mnist(classes: tuple[int, ...], n: int) -> tuple[list[Image.Image], np.ndarray]:
    imgs_f, labels_f = FMNIST / "t10k-images-idx3-ubyte.gz", FMNIST / "t10k-labels-idx1-ubyte.gz"
    if not imgs_f.is_file():
        pytest.skip("Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")
    x = np.frombuffer(gzip.open(imgs_f).read(), np.uint8, offset=16).reshape(-1, 28, 28)
    y = np.frombuffer(gzip.open(labels_f).read(), np.uint8, offset=8)
    idx = np.concatenate([np.flatnonzero(y == c)[:n] for c in classes])
    return [Image.fromarray(x[i], mode="L") for i in idx], y[idx].astype(int)


@pytest.mark.slow
def test_bundled_captioner_on_fashion_mnist():
    from spti.errors import BackendError
    from spti.models._efficientnet import default_weights_path, imagenet_labels

    try:
        default_weights_path()
    except BackendError as e:
        pytest.skip(str(e))
    images, labels = _fashion_mnist((1, 9), 3)  # trousers, ankle boots
    cap = build_captioner({"backend": "efficientnet-lite0", "invert": True, "device": "cpu"})
    captions = cap.caption(images)
    assert captions == cap.caption(images)
    allowed = {w for name in imagenet_labels() for w in name.split()} | {"a", "an", "photo", "of", "and"}
    for c in captions:
        assert c.startswith("a photo of ")
        words = c.replace(",", "").split()
        assert set(words) <= allowed, c
    trouser, boot = captions[0], captions[3]
    assert labels[0] == 1 and labels[3] == 9
    assert trouser != boot
    # inversion matters for these light-on-dark images
    plain = build_captioner({"backend": "efficientnet-lite0", "invert": False, "device": "cpu"})
    assert plain.caption(images) != captions


# ------------------------------------------------------------------------------- labels -> sentence by a LLM
from spti.models.llm import LLM  # noqa: E402


class LabelEchoLLM(LLM):
    """Writes 'A picture showing <labels>.' from the prompt; every third reply is unusable."""

    prompts: list = []

    def info(self):
        return {"backend": "label-echo"}

    def generate(self, conversations, **kw):
        out = []
        for i, c in enumerate(conversations):
            LabelEchoLLM.prompts.append(c[-1]["content"])
            labels = c[-1]["content"].split("shows: ")[1].split(". Reply")[0]
            out.append("I'm sorry, I cannot." if i % 3 == 2 else f"Sure! A picture showing {labels}.")
        return out


@pytest.mark.slow
def test_labels_rewritten_by_a_local_llm_with_template_fallback():
    from spti.errors import ConfigError
    from spti.models.captioner import build_captioner

    cap = build_captioner({"backend": "efficientnet-lite0", "llm": {"backend": f"{__name__}:LabelEchoLLM"}, "device": "cpu"})
    plain = build_captioner({"backend": "efficientnet-lite0", "device": "cpu"})
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(3)]
    got, base = cap.caption(images), plain.caption(images)
    assert got[0].startswith("A picture showing ") and got[1].startswith("A picture showing ")
    assert base[0].removeprefix("a photo of a").removeprefix("n").strip() in got[0]
    assert got[2] == base[2] and cap.rewrite_fallbacks == 1  # the refusal fell back to the template
    assert cap.info()["llm"] == {"backend": "label-echo"} and cap.cache_key != plain.cache_key
    with pytest.raises(ConfigError, match="local LLM"):
        build_captioner({"backend": "efficientnet-lite0", "llm": {"backend": "openai", "model": "x"}})
