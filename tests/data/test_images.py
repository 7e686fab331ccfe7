"""Tests for spti.data.images: every image is generated in tmp_path; nothing touches the network."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from spti.data import decode as mod
from spti.data.decode import IMAGE_EXTENSIONS, IMAGE_FORMATS
from spti.data.images import (
    ImageRecord,
    IngestResult,
    UnusableImageError,
    ingest,
    iter_batches,
    load_image,
)
from spti.errors import ConfigError, InputError

RED, GREEN, BLUE, WHITE = (220, 20, 20), (20, 200, 20), (20, 20, 220), (255, 255, 255)


# ---------------------------------------------------------------------------------------------- helpers


def solid(path: Path, color=RED, size=(16, 12), fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, fmt, **kw)
    return path


def noise_jpeg_bytes(size=(96, 96)) -> bytes:
    b = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(b, "JPEG", quality=90)
    return b.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width=100_000, height=100_000) -> bytes:
    """A tiny valid-looking PNG declaring width x height pixels (10^10 by default)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def corrupt_png_bytes() -> bytes:
    b = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(b, "PNG")
    d = bytearray(b.getvalue())
    i = d.find(b"IDAT")
    for k in range(i + 20, i + 80):
        d[k] ^= 0xFF
    return bytes(d)


def near(px, expected, tol=12) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(px, expected))


def center(im: Image.Image):
    return im.getpixel((im.width // 2, im.height // 2))


# ------------------------------------------------------------------------------- the mixed collection

GOOD = {
    # rel path -> expected centre colour after loading (RGB)
    "a_red.jpg": RED,
    "b_green.png": GREEN,
    "c_blue.webp": BLUE,
    "d.bmp": GREEN,
    "e.tiff": BLUE,
    "f_anim.gif": (255, 0, 0),  # first frame red, second blue
    "g_16bit.png": (128, 128, 128),  # 32768 / 65535, not clipped to white
    "h_cmyk.jpg": (255, 0, 0),
    "i_rgba.png": WHITE,  # fully transparent centre -> white
    "j_palette.png": BLUE,
    "k_rotated.jpg": None,  # checked separately
    "nested/deeper/l.png": RED,
    "nested/m_la.png": WHITE,
}
BAD = {
    "bad/empty.jpg": "empty",
    "bad/text.jpg": "not_an_image",
    "bad/notes.txt": "not_an_image",
    "bad/truncated.jpg": "truncated",
    "bad/corrupt.png": "corrupt",
    "bad/bomb.png": "too_many_pixels",
}


def make_collection(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    solid(root / "a_red.jpg", RED, quality=95)
    solid(root / "b_green.png", GREEN)
    solid(root / "c_blue.webp", BLUE, lossless=True)
    solid(root / "d.bmp", GREEN)
    solid(root / "e.tiff", BLUE)
    frames = [Image.new("RGB", (10, 10), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(root / "f_anim.gif", save_all=True, append_images=frames[1:], duration=100)
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(root / "g_16bit.png")
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(root / "h_cmyk.jpg", quality=95)
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    rgba.paste((20, 200, 20, 255), (0, 0, 4, 16))  # opaque green left strip
    rgba.save(root / "i_rgba.png")
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([*RED, *BLUE])
    pal.save(root / "j_palette.png")
    rot = Image.new("RGB", (40, 20), RED)
    rot.paste(BLUE, (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: left becomes top
    rot.save(root / "k_rotated.jpg", exif=exif.tobytes(), quality=95)
    solid(root / "nested/deeper/l.png", RED)
    Image.new("LA", (8, 8), (100, 0)).save(root / "nested/m_la.png")
    # duplicates of b_green.png: a later path in sort order -> dropped
    shutil.copyfile(root / "b_green.png", root / "nested/z_dup.png")
    # bad files
    (root / "bad").mkdir()
    (root / "bad/empty.jpg").write_bytes(b"")
    (root / "bad/text.jpg").write_text("this is not an image\n")
    (root / "bad/notes.txt").write_text("notes\n")
    (root / "bad/truncated.jpg").write_bytes(noise_jpeg_bytes()[:1500])
    (root / "bad/corrupt.png").write_bytes(corrupt_png_bytes())
    (root / "bad/bomb.png").write_bytes(bomb_png())
    # hidden entries: ignored entirely
    solid(root / ".hidden.png", RED)
    solid(root / ".hiddendir/inner.png", GREEN)
    # a symbolic-link loop: must terminate and add nothing
    os.symlink("..", root / "nested/loop")
    return root


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    return make_collection(tmp_path_factory.mktemp("coll") / "photos")


@pytest.fixture(scope="module")
def ingested(collection, tmp_path_factory):
    private = tmp_path_factory.mktemp("run") / "private"
    return ingest(collection, private_dir=private, workers=2, progress=False), private


def test_mixed_folder_counts_and_reasons(ingested):
    res, _ = ingested
    assert [r.rel for r in res.records] == sorted(GOOD)
    assert [r.id for r in res.records] == [f"img-{i:06d}" for i in range(len(GOOD))]
    assert dict(res.skipped) == BAD
    assert [s[0] for s in res.skipped] == sorted(BAD)
    assert res.duplicates == 1
    assert res.duplicate_of == [("nested/z_dup.png", res.records[sorted(GOOD).index("b_green.png")].id)]
    assert res.num_users is None
    all_paths = [r.rel for r in res.records] + [s[0] for s in res.skipped]
    assert not any("hidden" in p or "loop" in p for p in all_paths)
    for r in res.records:
        assert r.path.is_absolute() and r.path.is_file()
        assert len(r.sha256) == 64 and r.user_id is None


def test_good_images_come_out_rgb_with_right_colours(ingested):
    res, _ = ingested
    by_rel = {r.rel: r for r in res.records}
    for rel, expected in GOOD.items():
        im = load_image(by_rel[rel].path)
        assert im.mode == "RGB", rel
        assert im.size == (by_rel[rel].width, by_rel[rel].height), rel
        if expected is not None:
            assert near(center(im), expected), (rel, center(im))
    rot = load_image(by_rel["k_rotated.jpg"].path)
    assert rot.size == (20, 40)  # portrait after EXIF orientation 6
    assert (by_rel["k_rotated.jpg"].width, by_rel["k_rotated.jpg"].height) == (20, 40)
    assert near(rot.getpixel((10, 5)), RED) and near(rot.getpixel((10, 35)), BLUE)
    rgba = load_image(by_rel["i_rgba.png"].path)
    assert near(rgba.getpixel((1, 8)), GREEN)  # the opaque strip keeps its colour


def test_summary_holds_counts_only(ingested, collection):
    res, _ = ingested
    s = res.summary()
    assert s == {
        "images": len(GOOD),
        "skipped": len(BAD),
        "duplicates": 1,
        "users": None,
        "skip_reasons": {"corrupt": 1, "empty": 1, "not_an_image": 2, "too_many_pixels": 1, "truncated": 1},
    }
    text = json.dumps(s)
    names = [Path(p).name for p in [*GOOD, *BAD]] + ["z_dup", "nested/", "bad/", "deeper"]
    assert not any(n in text for n in names)
    assert str(collection) not in text


def test_private_files_written(ingested):
    res, private = ingested
    rows = [json.loads(line) for line in (private / "skipped.jsonl").read_text().splitlines()]
    reasons = {r["path"]: r["reason"] for r in rows}
    assert reasons == {**BAD, "nested/z_dup.png": "duplicate"}
    assert all("detail" in r for r in rows if r["reason"] in ("truncated", "corrupt", "not_an_image"))
    recs = [json.loads(line) for line in (private / "ingest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == [r.id for r in res.records]
    assert not list(private.glob("*.tmp"))  # atomic writes leave no temporary file


def test_reload_equals_original(ingested):
    res, private = ingested
    again = IngestResult.load(private)
    assert again.records == res.records
    assert again.skipped == res.skipped
    assert again.duplicates == res.duplicates and again.duplicate_of == res.duplicate_of
    assert again.num_users == res.num_users
    assert again.summary() == res.summary()


def test_reload_missing(tmp_path):
    with pytest.raises(InputError, match="no previous ingestion"):
        IngestResult.load(tmp_path)


def test_deterministic_across_worker_counts(collection, ingested):
    res, _ = ingested
    one = ingest(collection, workers=1, progress=False)
    assert one.records == res.records and one.skipped == res.skipped


def test_pil_globals_restored_and_truncation_not_hidden(collection, monkeypatch):
    # Someone set both of Pillow's globals: ingestion must still detect truncation, honour its own
    # max_pixels rather than Pillow's, and give the globals back untouched.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # smaller than every good image
    res = ingest(collection, workers=2, progress=False)
    assert dict(res.skipped)["bad/truncated.jpg"] == "truncated"
    assert len(res.records) == len(GOOD)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True and Image.MAX_IMAGE_PIXELS == 100
    with pytest.raises(UnusableImageError) as e:
        load_image(collection / "bad/truncated.jpg")
    assert e.value.reason == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True and Image.MAX_IMAGE_PIXELS == 100


def test_max_pixels_configurable(tmp_path):
    solid(tmp_path / "big.png", size=(100, 100))
    solid(tmp_path / "small.png", size=(10, 10))
    res = ingest(tmp_path, max_pixels=5_000, progress=False)
    assert [r.rel for r in res.records] == ["small.png"]
    assert res.skipped == [("big.png", "too_many_pixels")]
    with pytest.raises(UnusableImageError, match="too_many_pixels"):
        load_image(tmp_path / "big.png", max_pixels=5_000)
    (tmp_path / "huge.png").write_bytes(bomb_png())
    assert load_image(tmp_path / "big.png", max_pixels=None).size == (100, 100)
    with pytest.raises(UnusableImageError) as e:
        load_image(tmp_path / "huge.png")
    assert e.value.reason == "too_many_pixels"
    assert "huge" not in str(e.value)  # exception messages never name a file


def test_unreadable_file(tmp_path, monkeypatch):
    solid(tmp_path / "ok.png")
    locked = solid(tmp_path / "locked.png")
    real_open = os.open

    def fake_open(path, *a, **kw):  # root ignores chmod 000, so simulate EACCES
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(mod.os, "open", fake_open)
    res = ingest(tmp_path, progress=False)
    assert res.skipped == [("locked.png", "unreadable")]
    assert [r.rel for r in res.records] == ["ok.png"]


def test_broken_symlink_is_missing(tmp_path):
    solid(tmp_path / "ok.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    res = ingest(tmp_path, progress=False)
    assert res.skipped == [("dangling.png", "missing")]


def test_unsupported_mode(tmp_path, monkeypatch):
    solid(tmp_path / "ok.png")
    Image.new("RGB", (8, 8), RED).convert("YCbCr").save(tmp_path / "ycc.tiff")
    real_convert = Image.Image.convert

    def convert(self, mode=None, *a, **kw):  # simulate a mode Pillow cannot turn into RGB
        if self.mode == "YCbCr":
            raise ValueError("conversion not supported")
        return real_convert(self, mode, *a, **kw)

    monkeypatch.setattr(Image.Image, "convert", convert)
    res = ingest(tmp_path, progress=False)
    assert res.skipped == [("ycc.tiff", "unsupported_mode")]


def transparent_gif() -> Image.Image:
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, *RED])
    im.info["transparency"] = 0  # palette index 0 (black) is transparent -> white, not black
    return im


@pytest.mark.parametrize(
    "make, ext, expected",
    [
        (lambda: Image.fromarray(np.full((4, 4), 65535, np.uint16)), "png", (255, 255, 255)),
        (lambda: Image.fromarray(np.full((4, 4), 40000, np.int32)), "tiff", (156, 156, 156)),  # /257
        (lambda: Image.fromarray(np.full((4, 4), 0.5, np.float32)), "tiff", (128, 128, 128)),
        (lambda: Image.new("1", (4, 4), 1), "bmp", (255, 255, 255)),
        (transparent_gif, "gif", (255, 255, 255)),
        (lambda: Image.new("RGB", (4, 4), GREEN).convert("YCbCr"), "tiff", GREEN),
    ],
)
def test_mode_conversions(tmp_path, make, ext, expected):
    path = tmp_path / f"x.{ext}"
    make().save(path)
    out = load_image(path)
    assert out.mode == "RGB" and near(center(out), expected, tol=3), center(out)


@pytest.mark.parametrize(
    "mode, ext, colour, expected",
    [("RGB", "ppm", RED, RED), ("L", "pgm", (128,), (128, 128, 128)), ("1", "pbm", (1,), WHITE)],
)
def test_netpbm_ingested_and_listed(tmp_path, mode, ext, colour, expected):
    # One list of formats: what evaluation lists (by extension) is what ingestion decodes.
    from spti.data.listing import list_images

    Image.new(mode, (4, 4), colour).save(tmp_path / f"x.{ext}")
    res = ingest(tmp_path, progress=False)
    assert [r.rel for r in res.records] == [f"x.{ext}"] and not res.skipped
    assert near(center(load_image(tmp_path / f"x.{ext}")), expected, tol=1)
    assert list_images(tmp_path) == [tmp_path / f"x.{ext}"]


def test_every_listed_extension_names_an_opened_format():
    Image.init()
    registered = Image.registered_extensions()
    for fmt, exts in IMAGE_FORMATS.items():
        assert all(registered.get(e) == fmt for e in exts), fmt
    assert IMAGE_EXTENSIONS == {e for exts in IMAGE_FORMATS.values() for e in exts}
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"} <= IMAGE_EXTENSIONS


def test_list_images_sorted_hidden_skipped(tmp_path):
    from spti.data.listing import list_images

    for rel in ("b/z.png", "a.JPG", "b/a.webp", ".hidden/x.png", "b/.x.png", "notes.txt", "c/d/e.tiff"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    got = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert got == ["a.JPG", "b/a.webp", "b/z.png", "c/d/e.tiff"]


def test_within_range_grey_not_stretched():
    # The nominal range is used, not the image's own min/max: a dark 16-bit image stays dark.
    arr = np.full((2, 2), 1000, np.uint16)
    assert int(mod._scale_to_uint8(arr, is_float=False)[0, 0]) == 4
    wide = np.array([[-5, 5]], np.int32)  # no nominal range: stretched
    assert mod._scale_to_uint8(wide, is_float=False).tolist() == [[0, 255]]


# --------------------------------------------------------------------------------------------- users


def test_imagefolder_metadata_with_user_column(tmp_path):
    root = tmp_path / "ds"
    solid(root / "train/1.png", RED)
    solid(root / "train/2.png", GREEN)
    shutil.copyfile(root / "train/1.png", root / "train/3.png")  # same image, another user: kept
    shutil.copyfile(root / "train/1.png", root / "train/4.png")  # same image, same user: duplicate
    solid(root / "train/5.png", BLUE)  # no user -> skipped
    solid(root / "train/unlisted.png", BLUE)  # not in metadata -> ignored, like datasets does
    rows = [
        {"file_name": "train/1.png", "user_id": "u1", "text": "t1"},
        {"file_name": "train/2.png", "user_id": 7, "text": "t2"},
        {"file_name": "train/3.png", "user_id": "u2", "text": "t3"},
        {"file_name": "train/4.png", "user_id": "u1", "text": "t4"},
        {"file_name": "train/5.png", "user_id": None, "text": "t5"},
        {"file_name": "train/gone.png", "user_id": "u3", "text": "t6"},
    ]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = ingest(root, user_column="user_id", progress=False)
    assert [(r.rel, r.user_id) for r in res.records] == [
        ("train/1.png", "u1"),
        ("train/2.png", "7"),
        ("train/3.png", "u2"),
    ]
    assert res.records[0].metadata == {"text": "t1"}
    assert res.duplicate_of == [("train/4.png", "img-000000")]
    assert dict(res.skipped) == {"train/5.png": "missing_user", "train/gone.png": "missing"}
    assert res.num_users == 3 and res.summary()["users"] == 3
    with pytest.raises(InputError, match="'owner' is not a column"):
        ingest(root, user_column="owner", progress=False)


def test_users_from_subfolders(tmp_path):
    solid(tmp_path / "alice/a.png", RED)
    solid(tmp_path / "alice/deep/b.png", GREEN)
    solid(tmp_path / "bob/c.png", BLUE)
    solid(tmp_path / "loose.png", RED)
    res = ingest(tmp_path, users_from_subfolders=True, progress=False)
    assert [(r.rel, r.user_id) for r in res.records] == [
        ("alice/a.png", "alice"),
        ("alice/deep/b.png", "alice"),
        ("bob/c.png", "bob"),
    ]
    assert res.skipped == [("loose.png", "missing_user")]
    assert res.num_users == 2


def test_user_arguments_validated(tmp_path):
    solid(tmp_path / "a.png")
    with pytest.raises(ConfigError):
        ingest(tmp_path, user_column="u", users_from_subfolders=True)
    with pytest.raises(ConfigError, match="users_from_subfolders"):
        ingest(tmp_path, user_column="u")  # a plain folder has no columns
    with pytest.raises(ConfigError):
        ingest(tmp_path, max_pixels=0)
    with pytest.raises(ConfigError):
        ingest(tmp_path, workers=0)


# ------------------------------------------------------------------------------------------ listings


def test_parquet_listing(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    solid(tmp_path / "imgs/a.png", RED)
    outside = solid(tmp_path.parent / f"{tmp_path.name}_abs.png", GREEN)
    (tmp_path / "imgs/bad.jpg").write_bytes(b"")
    table = pa.table(
        {
            "path": ["imgs/a.png", str(outside), "imgs/bad.jpg"],
            "user": [3, 4, 3],
            "label": ["cat", "dog", "cow"],
        }
    )
    listing = tmp_path / "lists/listing.parquet"
    listing.parent.mkdir()
    pq.write_table(table, listing)
    # relative paths resolve against the listing's folder: lists/imgs/... does not exist
    res0 = ingest(listing, user_column="user", progress=False)
    assert [r.rel for r in res0.records] == [str(outside)]
    assert dict(res0.skipped)["imgs/a.png"] == "missing"
    pq.write_table(table, tmp_path / "listing.parquet")
    res = ingest(tmp_path / "listing.parquet", user_column="user", progress=False)
    assert sorted((r.path, r.user_id) for r in res.records) == sorted(
        [(tmp_path / "imgs/a.png", "3"), (outside, "4")]
    )
    assert {r.metadata["label"] for r in res.records} == {"cat", "dog"}
    assert res.skipped == [("imgs/bad.jpg", "empty")]
    assert res.num_users == 2


def test_csv_listing(tmp_path):
    solid(tmp_path / "x/1.jpg", RED)
    solid(tmp_path / "x/2.webp", BLUE)
    with open(tmp_path / "list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "caption"])
        w.writerow(["x/2.webp", "b"])
        w.writerow(["x/1.jpg", "a"])
        w.writerow(["", "c"])
    res = ingest(tmp_path / "list.csv", progress=False)
    assert [(r.rel, r.metadata) for r in res.records] == [
        ("x/1.jpg", {"caption": "a"}),
        ("x/2.webp", {"caption": "b"}),
    ]
    assert res.skipped == [("<row 3>", "missing")]
    (tmp_path / "nopath.csv").write_text("name,caption\nx/1.jpg,a\n")
    with pytest.raises(InputError, match="'path' or 'file_name'"):
        ingest(tmp_path / "nopath.csv", progress=False)
    (tmp_path / "listing.txt").write_text("x/1.jpg\n")
    with pytest.raises(InputError, match="listing"):
        ingest(tmp_path / "listing.txt", progress=False)


# ------------------------------------------------------------------------------------- empty sources


def test_empty_and_missing_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no usable image"):
        ingest(tmp_path / "empty", progress=False)
    with pytest.raises(InputError, match="not found"):
        ingest(tmp_path / "nowhere", progress=False)


def test_all_bad_names_counts_not_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret_one.jpg").write_bytes(b"")
    (src / "secret_two.png").write_text("nope")
    private = tmp_path / "private"
    with pytest.raises(InputError) as e:
        ingest(src, private_dir=private, progress=False)
    msg = str(e.value)
    assert str(src) in msg and "1 empty" in msg and "1 not_an_image" in msg
    assert "secret" not in msg.replace(str(tmp_path), "")
    assert (private / "skipped.jsonl").is_file() and not (private / "ingest.jsonl").exists()


# ------------------------------------------------------------------------------------------ batches


def test_iter_batches_lazy_and_checked(tmp_path):
    for i, c in enumerate([RED, GREEN, BLUE, RED, GREEN]):
        solid(tmp_path / f"{i}.png", c, size=(10 + i, 8))
    res = ingest(tmp_path, progress=False)
    for workers in (1, 3):
        batches = list(iter_batches(res.records, 2, workers=workers))
        assert [len(b[0]) for b in batches] == [2, 2, 1]
        flat = [(r, im) for recs, ims in batches for r, im in zip(recs, ims)]
        assert [r.id for r, _ in flat] == [r.id for r in res.records]
        assert all(im.mode == "RGB" and im.size == (r.width, r.height) for r, im in flat)
    gen = iter_batches(iter(res.records), 2)  # accepts any iterable; nothing is read before next()
    next(gen)
    gen.close()
    # the third record's file changes content, the fifth disappears
    solid(res.records[2].path, (1, 2, 3), size=(12, 8))
    with pytest.raises(InputError, match=f"{res.records[2].id} changed"):
        list(iter_batches(res.records, 2))
    assert len(list(iter_batches(res.records[:2], 2))) == 1
    res.records[4].path.unlink()
    with pytest.raises(InputError) as e:
        list(iter_batches(res.records[3:], 4, verify_hash=False))
    assert res.records[4].id in str(e.value) and "missing" in str(e.value)
    assert "4.png" not in str(e.value)
    with pytest.raises(ConfigError):
        next(iter_batches(res.records, 0))


def test_record_json_round_trip():
    r = ImageRecord("img-000001", Path("/x/y.png"), "u", "0" * 64, 3, 4, rel="y.png", metadata={"a": 1})
    assert ImageRecord.from_json(json.loads(json.dumps(r.to_json()))) == r
    with pytest.raises(InputError):
        ImageRecord.from_json({"id": "x"})
