"""Odd files in a private collection (issue 10.2 and 10.6): a FIFO, a socket or a device is skipped, never
opened (opening a FIFO blocks forever); a PNG with a bad checksum is "corrupt"; "NaN"-like user ids are
missing user ids; a failed ingestion does not lock the data path of its run folder."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from spti.config import Config
from spti.data.decode import SKIP_REASONS, UnusableImageError, load_image
from spti.data.images import ingest
from spti.data.listing import list_images
from spti.data.run import RunDir
from spti.data.users import clean_user_id
from spti.errors import InputError

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")


def solid(path: Path, color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), color).save(path)
    return path


@needs_fifo
def test_a_fifo_and_a_socket_in_the_data_folder_are_skipped_not_opened(tmp_path):
    """Run in a child process with a timeout: before the fix, ingestion blocked forever in open()."""
    data = tmp_path / "data"
    solid(data / "a.png")
    solid(data / "sub" / "b.png", (30, 30, 200))
    os.mkfifo(data / "pipe.png")
    os.mkfifo(data / "sub" / "pipe.jpg")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(data / "sock.png"))
    except OSError:  # some filesystems / sandboxes refuse unix sockets: the FIFOs make the point
        pass
    code = textwrap.dedent(
        """
        import json, sys
        from spti.data.images import ingest
        from spti.data.listing import list_images
        from spti.stages.plan import count_private_images
        from pathlib import Path
        res = ingest(sys.argv[1], progress=False)
        print(json.dumps({"records": [r.rel for r in res.records], "skipped": res.skipped,
                          "listed": [p.name for p in list_images(sys.argv[1])],
                          "dry_run_n": count_private_images(Path(sys.argv[1]))}))
        """
    )
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True, timeout=60)
    finally:
        sock.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    out = json.loads(proc.stdout)
    assert out["records"] == ["a.png", "sub/b.png"]
    reasons = dict(map(tuple, out["skipped"]))
    assert reasons["pipe.png"] == reasons["sub/pipe.jpg"] == "not_a_regular_file"
    assert reasons.get("sock.png", "not_a_regular_file") == "not_a_regular_file"
    assert out["listed"] == ["a.png", "b.png"] and out["dry_run_n"] == 2
    assert "not_a_regular_file" in SKIP_REASONS


@needs_fifo
def test_a_fifo_named_by_a_listing_is_skipped(tmp_path):
    solid(tmp_path / "a.png")
    os.mkfifo(tmp_path / "p.png")
    (tmp_path / "list.csv").write_text("path\na.png\np.png\n")
    code = textwrap.dedent(
        """
        import sys
        from spti.data.images import ingest
        res = ingest(sys.argv[1], progress=False)
        print([r.rel for r in res.records], res.skipped)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "list.csv")], capture_output=True, text=True,
                          timeout=60)  # a child process: before the fix, it blocked forever in open()
    assert proc.stdout.strip() == "['a.png'] [('p.png', 'not_a_regular_file')]", proc.stderr[-2000:]
    with pytest.raises(UnusableImageError) as e:
        load_image(tmp_path / "p.png")
    assert e.value.reason == "not_a_regular_file"
    assert [p.name for p in list_images(tmp_path)] == ["a.png"]


def test_a_png_with_a_bad_checksum_is_corrupt_not_a_non_image(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(buf, "PNG")
    b = bytearray(buf.getvalue())
    b[29] ^= 0xFF  # the IHDR chunk's CRC (8 signature + 4 length + 4 type + 13 data bytes)
    (tmp_path / "crc.png").write_bytes(bytes(b))
    (tmp_path / "notes.png").write_bytes(b"notes, not an image\n" * 4)
    solid(tmp_path / "ok.png")
    res = ingest(tmp_path, progress=False)
    assert dict(res.skipped) == {"crc.png": "corrupt", "notes.png": "not_an_image"}


@pytest.mark.parametrize("value", ["NaN", "nan", " NaN ", "", "  ", "<NA>", float("nan"), None])
def test_nan_like_user_ids_are_missing(value):
    assert clean_user_id(value) is None


def test_user_ids_are_normalised_once():
    assert clean_user_id(12.0) == "12" and clean_user_id(" u1 ") == "u1" and clean_user_id("Nancy") == "Nancy"


def test_a_literal_nan_user_in_a_csv_listing_is_a_missing_user(tmp_path):
    for i in range(4):
        solid(tmp_path / f"{i}.png", (40 * i, 10, 10))
    with open(tmp_path / "list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "user"])
        w.writerows([["0.png", "alice"], ["1.png", "NaN"], ["2.png", "nan"], ["3.png", "bob"]])
    res = ingest(tmp_path / "list.csv", user_column="user", progress=False)
    assert sorted(r.user_id for r in res.records) == ["alice", "bob"]
    assert res.summary()["skip_reasons"] == {"missing_user": 2} and res.num_users == 2


def test_a_failed_ingest_does_not_lock_the_data_path(tmp_path):
    """`spti run --data wrong/` fails (no usable image); the same --out then accepts the right folder."""
    from spti.stages.private import ingest_stage

    wrong, right = tmp_path / "wrong", tmp_path / "right"
    (wrong / "x.png").parent.mkdir()
    (wrong / "x.png").write_bytes(b"")
    solid(right / "a.png")
    c = Config.from_dict({"data": {"private": str(wrong)}, "progress": False})
    run = RunDir.open(tmp_path / "run", c, command="run")
    with pytest.raises(InputError, match="no usable image"):
        ingest_stage(run, c)
    run.close()
    assert (tmp_path / "run" / "private" / "skipped.jsonl").is_file()
    c2 = Config.from_dict({"data": {"private": str(right)}, "progress": False})
    run = RunDir.open(tmp_path / "run", c2, command="run")  # refused before: "different settings (data.private)"
    assert [r.rel for r in ingest_stage(run, c2).records] == ["a.png"]
    run.close()
    c3 = Config.from_dict({"data": {"private": str(wrong)}, "progress": False})
    with pytest.raises(Exception, match="data.private"):  # once ingested, the data path is locked
        RunDir.open(tmp_path / "run", c3, command="run")
