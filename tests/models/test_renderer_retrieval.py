"""Renderer ``retrieval``: nearest public image by caption embedding.

The captioner and text embedder are small, real (not mocked) backends defined here and plugged in through
the registries' ``"module:Class"`` syntax: the captioner names an image's dominant colour, the embedder is a
normalised bag of words, so "a red square" must retrieve a red pool image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from spti.errors import ConfigError, InputError
from spti.models.captioner import Captioner
from spti.models.renderer import build_renderer
from spti.models.renderer.retrieval import RetrievalRenderer, list_pool
from spti.models.text_embedder import TextEmbedder

COLOURS = {
    "red": (220, 20, 20),
    "green": (20, 200, 20),
    "blue": (20, 20, 220),
    "yellow": (230, 230, 30),
}


class ColourCaptioner(Captioner):
    """Captions an image as "a <dominant colour> shape" (the non-white pixels' nearest palette colour)."""

    calls = 0  # images captioned, across instances: the cache test counts them
    closed = 0

    def __init__(self, style: str = "shape"):
        self.style = style

    def info(self) -> dict[str, Any]:
        return {"backend": "test-colour", "style": self.style}

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        type(self).calls += len(images)
        out = []
        for im in images:
            assert im.mode == "RGB"
            a = np.asarray(im, dtype=np.float32).reshape(-1, 3)
            fg = a[a.min(axis=1) < 200]  # not white background
            mean = fg.mean(axis=0) if len(fg) else a.mean(axis=0)
            name = min(COLOURS, key=lambda c: float(np.sum((np.array(COLOURS[c]) - mean) ** 2)))
            out.append(f"a {name} {self.style}")
        return out

    def close(self) -> None:
        type(self).closed += 1


class BagOfWordsEmbedder(TextEmbedder):
    """One-hot bag of words over a fixed vocabulary, L2-normalised (unknown words are ignored)."""

    VOCAB = ("a", "red", "green", "blue", "yellow", "shape", "square", "circle", "thing")

    def __init__(self, version: int = 1):
        self.version = version  # changes cache_key without changing the output

    def info(self) -> dict[str, Any]:
        return {"backend": "test-bow", "version": self.version}

    @property
    def dim(self) -> int:
        return len(self.VOCAB)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                if w in self.VOCAB:
                    out[i, self.VOCAB.index(w)] = 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


CAPTIONER = {"backend": f"{__name__}:ColourCaptioner"}
EMBEDDER = {"backend": f"{__name__}:BagOfWordsEmbedder"}


def _shape(colour: str, kind: str, size: int = 32, mode: str = "RGB") -> Image.Image:
    im = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(im)
    box = (6, 6, size - 6, size - 6)
    (d.rectangle if kind == "square" else d.ellipse)(box, fill=COLOURS[colour])
    return im.convert(mode) if mode != "RGB" else im


@pytest.fixture(autouse=True)
def reset_counters() -> None:
    ColourCaptioner.calls = 0
    ColourCaptioner.closed = 0


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    """red/green/blue/yellow shapes in several formats and folders, plus files that are not images."""
    root = tmp_path / "pool"
    (root / "sub" / "deeper").mkdir(parents=True)
    _shape("red", "square").save(root / "red_square.png")
    _shape("green", "circle").save(root / "sub" / "green_circle.jpg", quality=95)
    _shape("blue", "square").save(root / "sub" / "deeper" / "blue_square.webp", lossless=True)
    _shape("yellow", "circle", mode="P").save(root / "yellow_circle.PNG")  # palette mode, upper-case ext
    (root / "notes.txt").write_text("not an image")
    return root


def make(pool: Path, **kw: Any) -> RetrievalRenderer:
    r = build_renderer(
        {"backend": "retrieval", "pool": str(pool), "captioner": CAPTIONER, "text_embedder": EMBEDDER, **kw}
    )
    assert isinstance(r, RetrievalRenderer)
    return r


def colour_of(im: Image.Image) -> str:
    return ColourCaptioner().caption([im])[0].split()[1]


def test_lists_pool_recursively_sorted(pool: Path) -> None:
    assert list_pool(pool) == [
        "red_square.png",
        "sub/deeper/blue_square.webp",
        "sub/green_circle.jpg",
        "yellow_circle.PNG",
    ]


def test_prompt_retrieves_matching_colour(pool: Path) -> None:
    r = make(pool)
    prompts = ["a red square", "a blue thing", "green", "a yellow circle"]
    imgs = r.render(prompts, [0, 1, 2, 3])
    assert [colour_of(im) for im in imgs] == ["red", "blue", "green", "yellow"]
    for im in imgs:
        assert im.mode == "RGB" and im.size == (32, 32)
    assert r.pool_size == 4
    assert r.pool_captions[r.pool_files.index("red_square.png")] == "a red shape"


def test_nearest_returns_indices_and_cosine(pool: Path) -> None:
    r = make(pool, top_k=2)
    idx, sim = r.nearest(["a red square", "blue"])
    assert idx.shape == (2, 2) and sim.shape == (2, 2)
    assert r.pool_files[idx[0, 0]] == "red_square.png"
    assert r.pool_files[idx[1, 0]] == "sub/deeper/blue_square.webp"
    # "a red square" vs "a red shape": 2 shared words of 3 each -> cosine 2/3; runner-up shares only "a".
    assert sim[0, 0] == pytest.approx(2 / 3, abs=1e-6)
    assert sim[0, 1] == pytest.approx(1 / 3, abs=1e-6)
    assert np.all(np.diff(sim, axis=1) <= 0)  # best first
    i1, s1 = r.nearest(["blue"], k=1)
    assert i1.shape == (1, 1) and i1[0, 0] == idx[1, 0]
    i9, _ = r.nearest(["blue"], k=9)
    assert i9.shape == (1, 4)  # clipped to the pool size
    e_idx, e_sim = r.nearest([])
    assert e_idx.shape == (0, 2) and e_sim.shape == (0, 2)


def test_returned_images_are_independent_copies(pool: Path) -> None:
    r = make(pool)
    (a,) = r.render(["red"], [0])
    a.paste((0, 0, 0), (0, 0, 32, 32))
    (b,) = r.render(["red"], [0])
    assert colour_of(b) == "red" and np.asarray(b).max() == 255
    assert a is not b


def test_top_k_seed_picks_among_k_nearest_deterministically(tmp_path: Path) -> None:
    root = tmp_path / "reds"
    root.mkdir()
    for i, kind in enumerate(["square", "circle", "square"]):
        _shape("red", kind, size=24 + 8 * i).save(root / f"red_{i}.png")  # three red images, distinct sizes
    _shape("blue", "square").save(root / "blue.png")
    r = make(root, top_k=3)
    sizes = [im.size[0] for im in r.render(["a red thing"] * 6, [0, 1, 2, 3, 4, 5])]
    assert sorted(set(sizes)) == [24, 32, 40]  # three seeds -> the three red images, never the blue one
    assert sizes[:3] == sizes[3:]  # seed s and s + k agree (rank = seed % k)
    again = [im.size[0] for im in r.render(["a red thing"] * 3, [2, 0, 1])]
    assert again == [sizes[2], sizes[0], sizes[1]]  # same (prompt, seed) -> same image, any order
    top1 = make(root, top_k=1)
    assert {im.size[0] for im in top1.render(["a red thing"] * 3, [0, 1, 2])} == {24}  # ties -> lowest index


def test_cache_reuse_across_instances(pool: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    r1 = make(pool, cache_dir=str(cache))
    first = r1.render(["a green circle"], [0])
    assert ColourCaptioner.calls == 4
    assert ColourCaptioner.closed == 1  # the captioning model is freed after indexing
    assert len(list(cache.glob("*.captions.jsonl"))) == 1
    assert len(list(cache.glob("*.embeddings.npy"))) == 1
    assert not list(cache.glob("*.tmp"))  # atomic writes leave no temporary files

    r2 = make(pool, cache_dir=str(cache))
    second = r2.render(["a green circle"], [0])
    assert ColourCaptioner.calls == 4  # not called again
    assert np.array_equal(np.asarray(first[0]), np.asarray(second[0]))
    assert r2.cache_key == r1.cache_key

    # Another embedder: captions are reused, only embeddings are recomputed.
    r3 = make(pool, cache_dir=str(cache), text_embedder={**EMBEDDER, "version": 2})
    assert r3.render(["a green circle"], [0])[0].size == (32, 32)
    assert ColourCaptioner.calls == 4
    assert len(list(cache.glob("*.embeddings.npy"))) == 2
    assert r3.cache_key != r1.cache_key

    # Another captioner setting: re-captioned.
    r4 = make(pool, cache_dir=str(cache), captioner={**CAPTIONER, "style": "thing"})
    r4.render(["red"], [0])
    assert ColourCaptioner.calls == 8
    assert r4.cache_key != r1.cache_key

    # A changed pool (one more image): new fingerprint, re-captioned.
    _shape("blue", "circle").save(pool / "blue_circle.png")
    r5 = make(pool, cache_dir=str(cache))
    assert r5.pool_size == 5
    assert ColourCaptioner.calls == 8 + 5
    assert r5.cache_key != r1.cache_key


def test_without_cache_dir_captions_once_per_instance(pool: Path) -> None:
    r = make(pool)
    r.render(["red"], [0])
    r.render(["blue"], [0])
    r.nearest(["green"])
    assert ColourCaptioner.calls == 4


def test_lazy_indexing(pool: Path) -> None:
    r = make(pool)
    assert ColourCaptioner.calls == 0  # nothing captioned until needed
    r.render([], [])
    assert ColourCaptioner.calls == 0


def test_unreadable_pool_file_is_skipped(pool: Path, caplog: pytest.LogCaptureFixture) -> None:
    (pool / "broken.png").write_bytes(b"not really a png")
    r = make(pool)
    with caplog.at_level(logging.WARNING, logger="spti"):
        assert r.pool_size == 4
    assert "broken.png" not in r.pool_files
    assert any("broken.png" in rec.getMessage() for rec in caplog.records)


def test_pool_captions_only_in_debug_log_and_prompts_never(
    pool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="spti"):
        make(pool).render(["a secret private prompt red"], [0])
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "secret private prompt" not in text
    assert "a red shape" in text  # public pool captions are fine in debug
    assert all("a red shape" not in rec.getMessage() for rec in caplog.records if rec.levelno >= logging.INFO)


def test_empty_pool_is_an_input_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(InputError, match="no images"):
        make(empty)


def test_all_images_unreadable_is_an_input_error(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "a.png").write_bytes(b"garbage")
    r = make(root)
    with pytest.raises(InputError):
        r.render(["x"], [0])


@pytest.mark.parametrize(
    "bad",
    [
        {"top_k": 0},
        {"top_k": 1.5},
        {"batch_size": 0},
        {"captioner": None},
        {"text_embedder": None},
        {"pool": "/definitely/not/a/folder"},
        {"unknown_option": 1},
    ],
)
def test_bad_options(pool: Path, bad: dict) -> None:
    cfg = {
        "backend": "retrieval",
        "pool": str(pool),
        "captioner": CAPTIONER,
        "text_embedder": EMBEDDER,
        **bad,
    }
    with pytest.raises(ConfigError):
        build_renderer(cfg)


def test_render_validates_arguments(pool: Path) -> None:
    r = make(pool)
    with pytest.raises(ConfigError):
        r.render(["a", "b"], [0])
    with pytest.raises(TypeError):
        r.render("red", [0])  # type: ignore[arg-type]


def test_info_names_pool_and_models(pool: Path) -> None:
    info = make(pool, top_k=2).info()
    assert info["backend"] == "retrieval"
    assert info["pool"] == str(pool)
    assert info["pool_files"] == 4
    assert info["top_k"] == 2
    assert info["captioner"] == {"backend": "test-colour", "style": "shape"}
    assert info["text_embedder"] == {"backend": "test-bow", "version": 1}
    assert make(pool, top_k=3).cache_key != make(pool, top_k=2).cache_key


def test_accepts_built_instances(pool: Path) -> None:
    cap, emb = ColourCaptioner(), BagOfWordsEmbedder()
    r = RetrievalRenderer(pool=pool, captioner=cap, text_embedder=emb)
    assert colour_of(r.render(["yellow"], [0])[0]) == "yellow"
    r.close()
    assert ColourCaptioner.closed == 0  # instances the caller passed are the caller's to close


# ------------------------------------------------------------------ the pool must not overlap the private data
def _sha(path: Path) -> str:
    from spti.hashing import sha256_file

    return sha256_file(path)


@pytest.mark.parametrize("where", ["equal", "inside", "containing"])
def test_pool_overlapping_the_private_folder_is_refused(tmp_path: Path, where: str) -> None:
    private = tmp_path / "secret-patients"
    (private / "sub").mkdir(parents=True)
    _shape("red", "square").save(private / "sub" / "p0.png")
    pool = {"equal": private, "inside": private / "sub", "containing": tmp_path}[where]
    with pytest.raises(ConfigError, match="private data") as e:
        make(pool, private_root=str(private))
    assert "secret-patients" not in str(e.value).replace(str(pool), "")  # names the pool, not the private path
    # a sibling folder is fine
    public = tmp_path / "public"
    public.mkdir()
    _shape("blue", "square").save(public / "b.png")
    assert make(public, private_root=str(private)).pool_size == 1


def test_overlap_is_checked_through_symbolic_links(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    _shape("red", "square").save(private / "p0.png")
    link = tmp_path / "looks-public"
    link.symlink_to(private, target_is_directory=True)
    with pytest.raises(ConfigError, match="is the private data"):
        make(link, private_root=str(private))
    # one linked file (or folder) inside an otherwise public pool
    public = tmp_path / "public"
    public.mkdir()
    _shape("blue", "square").save(public / "b.png")
    (public / "p0.png").symlink_to(private / "p0.png")
    with pytest.raises(ConfigError, match="link into the private data"):
        make(public, private_root=str(private))
    (public / "p0.png").unlink()
    (public / "more").symlink_to(private, target_is_directory=True)
    with pytest.raises(ConfigError, match="link into the private data"):
        make(public, private_root=str(private))


def test_pool_containing_a_private_listing_file_is_refused(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    _shape("blue", "square").save(pool / "b.png")
    listing = pool / "private.csv"
    listing.write_text("path\n/elsewhere/p0.png\n")
    with pytest.raises(ConfigError, match="contains the private data"):
        make(pool, private_root=str(listing))


def test_a_copied_private_image_is_never_retrieved(pool: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    private = tmp_path / "private"
    private.mkdir()
    secret = _shape("red", "circle", size=40)  # a red image the prompt "a red thing" would retrieve
    secret.save(private / "secret.png")
    (pool / "000_copy_of_secret.png").write_bytes((private / "secret.png").read_bytes())  # first among ties
    plain = make(pool)
    assert plain.render(["a red thing"], [0])[0].size == (40, 40)  # without the check: released verbatim

    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="spti"):
        r = make(pool, cache_dir=str(cache), exclude_hashes=[_sha(private / "secret.png")],
                 private_root=str(private))
        assert "000_copy_of_secret.png" not in r.pool_files and r.pool_size == 4
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING]
    excl = [w for w in warnings if "byte-identical to private images" in w]
    assert len(excl) == 1 and not any(c.isdigit() for c in excl[0])  # no count
    assert not any("secret" in w or "000_copy" in w for w in warnings)  # no file name, private or public
    assert all(im.size == (32, 32) for im in r.render(["a red thing"] * 3, [0, 1, 2]))
    info = r.info()
    assert info["private_overlap_check"] is True and info["pool_files"] == 5  # the listing, not what was kept
    assert "secret" not in json_dumps(info)
    assert r.cache_key != plain.cache_key
    # the pool index caches do not depend on the private data: a plain instance reuses them whole
    calls = ColourCaptioner.calls
    again = make(pool, cache_dir=str(cache))
    assert again.pool_size == 5 and ColourCaptioner.calls == calls
    # the hashes are cached too, and an exclusion that matches nothing changes nothing
    other = make(pool, cache_dir=str(cache), exclude_hashes=["0" * 64])
    assert other.pool_size == 5 and len(list(cache.glob("*.sha256.jsonl"))) == 1


def test_every_pool_image_private_is_an_input_error(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    _shape("red", "square").save(pool / "a.png")
    r = make(pool, exclude_hashes=[_sha(pool / "a.png")])
    with pytest.raises(InputError, match="copy of a private image"):
        r.render(["red"], [0])
    with pytest.raises(ConfigError, match="exclude_hashes"):
        make(pool, exclude_hashes="abc")


def json_dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=str)
