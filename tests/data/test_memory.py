"""Images are decoded no larger than the model needs (issue 10, point 7): a JPEG decodes at a reduced DCT
scale (``Image.draft``), other formats are reduced right after decoding, so a batch costs O(batch x model
input) memory. Content hashes stay those of the files' bytes. ``benchmarks/bench_memory.py`` measures it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from spti.data.decode import decode_file, load_image, strict_pil
from spti.data.images import ImageRecord, iter_batches
from spti.hashing import sha256_file

TARGET = 224


def _jpeg(path, size=(6000, 4000)):
    # low-entropy content: a huge canvas that is small on disk
    Image.new("RGB", size, (40, 120, 200)).save(path, quality=70)
    return path


def test_a_huge_jpeg_decodes_with_draft_to_at_most_twice_the_target(tmp_path, monkeypatch):
    path = _jpeg(tmp_path / "huge.jpg")
    sizes_at_load = []
    real_load = JpegImagePlugin.JpegImageFile.load

    def spy(self):
        sizes_at_load.append(self.size)
        return real_load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    with strict_pil():
        im, sha = decode_file(path, None, want_hash=True, target_size=TARGET)
    assert sizes_at_load and max(sizes_at_load[0]) <= 6000 // 8  # the full-size pixels were never allocated
    assert TARGET <= min(im.size) < 2 * TARGET and im.mode == "RGB"
    assert abs(im.size[0] / im.size[1] - 1.5) < 0.02  # aspect ratio kept
    assert sha == sha256_file(path)  # the content hash is of the file, not of the decoded pixels


def test_other_formats_are_reduced_after_decoding(tmp_path):
    for mode, name in (("RGB", "a.png"), ("P", "b.png"), ("RGBA", "c.png"), ("L", "d.bmp")):
        p = tmp_path / name
        Image.new(mode, (1500, 1000), 3 if mode == "P" else ((9, 9, 9, 128) if mode == "RGBA" else (9, 9, 9) if mode == "RGB" else 9)).save(p)
        with strict_pil():
            im, _ = decode_file(p, None, want_hash=False, target_size=TARGET)
        assert TARGET <= min(im.size) < 2 * TARGET and im.mode == "RGB", (mode, im.size)


def test_no_target_means_full_size_and_small_images_are_untouched(tmp_path):
    big = _jpeg(tmp_path / "big.jpg", (1200, 900))
    assert load_image(big).size == (1200, 900)
    small = tmp_path / "small.png"
    Image.new("RGB", (300, 440), (1, 2, 3)).save(small)
    with strict_pil():
        im, _ = decode_file(small, None, want_hash=False, target_size=TARGET)
    assert im.size == (300, 440)  # shorter side below twice the target: not reduced
    ref = np.asarray(load_image(small))
    assert np.array_equal(np.asarray(im), ref)


def test_iter_batches_passes_the_target_and_still_verifies_hashes(tmp_path):
    recs = []
    for i in range(3):
        p = _jpeg(tmp_path / f"{i}.jpg", (2400, 1800))
        recs.append(ImageRecord(id=f"img-{i:06d}", path=p, user_id=None, sha256=sha256_file(p), width=2400, height=1800))
    batches = list(iter_batches(recs, 2, target_size=TARGET))
    sizes = [im.size for _, ims in batches for im in ims]
    assert len(sizes) == 3 and all(TARGET <= min(s) < 2 * TARGET for s in sizes)
    full = list(iter_batches(recs[:1], 1))
    assert full[0][1][0].size == (2400, 1800)
    with pytest.raises(Exception, match="target_size"):
        list(iter_batches(recs, 1, target_size=0))


def test_input_size_is_declared_by_image_backends():
    from spti.models.base import Backend
    from spti.models.captioner.offline import EfficientNetLite0Captioner
    from spti.models.image_embedder.efficientnet import EfficientNetLite0Embedder

    assert Backend.input_size is None
    assert EfficientNetLite0Captioner.input_size == 224 and EfficientNetLite0Embedder.input_size == 224
