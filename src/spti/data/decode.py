"""Decoding one image file, defensively: the formats spti reads, the checks every file passes, and why a
file is refused.

Why a module of its own: ingestion (:mod:`spti.data.images`), the lazy batch loader and evaluation all
decode images, and they must decode them *the same way* (same formats, same pixel limit, same EXIF
orientation, same alpha-on-white): a metric computed on pixels the captioner never saw would be wrong.
:data:`IMAGE_FORMATS` is the one list of image formats and file extensions; ingestion opens exactly those
formats and :func:`spti.data.listing.list_images` lists exactly those extensions.

Privacy: :class:`UnusableImageError` keeps the library's message (which may name the file) in ``detail``,
never in the exception message.
"""

from __future__ import annotations

import math
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from spti.errors import ConfigError, InputError
from spti.hashing import sha256_stream

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "IMAGE_FORMATS",
    "SKIP_REASONS",
    "UnusableImageError",
    "check_max_pixels",
    "decode_file",
    "load_image",
    "open_regular_file",
    "regular_file_reason",
    "strict_pil",
]

#: Same default as Pillow's ``Image.MAX_IMAGE_PIXELS`` (a 1024 MiB RGB canvas / 3 bytes per pixel / 4).
DEFAULT_MAX_PIXELS: int | None = 89_478_485

#: Why a file was skipped. Stable strings: they are the keys of ``summary()["skip_reasons"]``.
SKIP_REASONS: dict[str, str] = {
    "empty": "zero-byte file",
    "not_an_image": "not an image, or a format spti does not read (JPEG, PNG, WebP, BMP, TIFF, GIF, PPM/PGM/PBM "
    "only)",
    "corrupt": "the image data could not be decoded",
    "truncated": "the file ends before the image data does",
    "too_many_pixels": "more pixels than max_pixels (possible decompression bomb)",
    "unreadable": "the file or folder could not be read (permissions or I/O error)",
    "missing": "listed but not found, or a broken symbolic link",
    "not_a_regular_file": "a named pipe (FIFO), socket or device file: never opened (reading one can block "
    "forever)",
    "unsupported_mode": "a pixel format that cannot be converted to RGB",
    "missing_user": "user-level DP was asked for but the file has no user id",
    "out_of_memory": "decoding ran out of memory",
    "changed": "the file's content changed since ingestion",
}

#: The one list of image formats spti reads: Pillow format -> the file extensions that name it.
#: Ingestion opens exactly these formats (restricting ``Image.open`` to them keeps Pillow's rarer, more
#: fragile parsers, e.g. EPS through Ghostscript, away from untrusted files); a folder of synthetic images
#: is listed by these extensions. MPO is how Pillow opens many phone JPEGs (named .jpg) and DIB is BMP
#: without the file header: both are recognised by content, not by a name of their own. PPM is the
#: Netpbm family (PPM, PGM, PBM), which Pillow decodes with a small, strict parser.
IMAGE_FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg"),
    "MPO": (),
    "PNG": (".png",),
    "WEBP": (".webp",),
    "BMP": (".bmp",),
    "DIB": (),
    "TIFF": (".tif", ".tiff"),
    "GIF": (".gif",),
    "PPM": (".ppm", ".pgm", ".pbm"),
}

#: File extensions (lower case, with the dot) of :data:`IMAGE_FORMATS`.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(e for exts in IMAGE_FORMATS.values() for e in exts)


class UnusableImageError(InputError):
    """An image file cannot be used. ``reason`` is one of :data:`SKIP_REASONS`; ``detail`` is the
    underlying library message, which may contain the file's name and so belongs in private files only
    (it is deliberately not part of the exception message)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"image is unusable: {reason} ({SKIP_REASONS.get(reason, reason)})")
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------------------------------
# Pillow's global switches


_PIL_LOCK = threading.Lock()
_PIL_DEPTH = 0
_PIL_SAVED: tuple[int | None, bool] | None = None


@contextmanager
def strict_pil() -> Iterator[None]:
    """Within this block: Pillow's own pixel limit is off (spti checks ``max_pixels`` itself, so that a
    caller can raise the limit above Pillow's 2x hard error and so that no DecompressionBombWarning is
    emitted from worker threads) and truncated files raise even if someone set
    ``ImageFile.LOAD_TRUNCATED_IMAGES = True``. These are module globals of Pillow, so a reentrant
    counter restores the caller's values when the last user (any thread) leaves; while ingestion runs,
    other Pillow code in the process sees the same settings.
    """
    global _PIL_DEPTH, _PIL_SAVED
    with _PIL_LOCK:
        if _PIL_DEPTH == 0:
            _PIL_SAVED = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
            Image.MAX_IMAGE_PIXELS = None
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        _PIL_DEPTH += 1
    try:
        yield
    finally:
        with _PIL_LOCK:
            _PIL_DEPTH -= 1
            if _PIL_DEPTH == 0 and _PIL_SAVED is not None:
                Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = _PIL_SAVED
                _PIL_SAVED = None


# --------------------------------------------------------------------------------------------------
# Decoding one file


def check_max_pixels(max_pixels: int | None) -> int | None:
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ConfigError(f"max_pixels must be a positive integer or None (no limit), got {max_pixels!r}")
    return max_pixels


def _scale_to_uint8(arr: Any, *, is_float: bool) -> Any:
    """Map high-bit-depth samples to 0..255 by their nominal range, so a mid-grey 16-bit pixel (32768)
    becomes 128 rather than being clipped to white as ``Image.convert("L")`` would do. Nominal ranges:
    integers within 0..65535 are 16-bit samples; floats within 0..1 are unit samples; anything else is
    stretched from its own minimum to its maximum (no nominal range can be assumed)."""
    a = np.asarray(arr, dtype=np.float64)
    finite = a[np.isfinite(a)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 0.0
    if is_float and lo >= 0.0 and hi <= 1.0:
        scaled = a * 255.0
    elif not is_float and lo >= 0.0 and hi <= 65535.0:
        scaled = a / 257.0
    elif hi > lo:
        scaled = (a - lo) * (255.0 / (hi - lo))
    else:
        scaled = np.zeros_like(a)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _composite_on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any mode Pillow reads from our formats to 8-bit RGB; transparency is composited on white
    (a transparent background shown as black would change what a captioner sees)."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        try:
            arr = np.asarray(im)
        except Exception as e:  # e.g. I;16S, which numpy cannot view
            raise UnusableImageError("unsupported_mode", f"mode {mode}: {e}") from None
        if arr.ndim != 2:
            raise UnusableImageError("unsupported_mode", f"mode {mode} with shape {arr.shape}")
        grey = Image.fromarray(_scale_to_uint8(arr, is_float=(mode == "F")), mode="L")
        return grey.convert("RGB")
    has_alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or (
        mode in ("1", "L", "P", "RGB") and im.info.get("transparency") is not None
    )
    try:
        if has_alpha:
            return _composite_on_white(im)
        if mode == "RGB":
            return im
        return im.convert("RGB")
    except (ValueError, OSError) as e:  # e.g. LAB, which Pillow does not convert without a profile
        raise UnusableImageError("unsupported_mode", f"mode {mode}: {e}") from None


#: The first bytes of the formats of :data:`IMAGE_FORMATS`. A file that starts like an image but that Pillow
#: cannot identify (a PNG whose header checksum is wrong: Pillow's plugin then declines the file) is a
#: damaged image ("corrupt"), not "not_an_image".
_SIGNATURES: tuple[bytes, ...] = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
#: BMP's "BM" is followed 12 bytes later by the size of one of the known DIB headers.
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def _looks_like_an_image(f: IO[bytes]) -> bool:
    """Whether the file starts with the signature of a format spti reads (two-letter signatures, BMP's "BM"
    and Netpbm's "P1".."P6", only with what must follow them, so a text file is not taken for one)."""
    try:
        f.seek(0)
        head = f.read(32)
    except (OSError, ValueError):
        return False
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head[:2] == b"BM" and len(head) >= 18:
        return int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES
    if len(head) >= 3 and head[:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n":
        return True
    return any(head.startswith(sig) for sig in _SIGNATURES)


def _classify_decode_error(e: BaseException, f: IO[bytes] | None = None) -> UnusableImageError:
    msg = f"{type(e).__name__}: {e}"
    if isinstance(e, UnusableImageError):
        return e
    if isinstance(e, UnidentifiedImageError):
        if f is not None and _looks_like_an_image(f):
            return UnusableImageError("corrupt", msg)
        return UnusableImageError("not_an_image", msg)
    if isinstance(e, Image.DecompressionBombError):
        return UnusableImageError("too_many_pixels", msg)
    if isinstance(e, MemoryError):
        return UnusableImageError("out_of_memory", msg)
    if isinstance(e, EOFError) or "truncated" in str(e).lower():
        return UnusableImageError("truncated", msg)
    return UnusableImageError("corrupt", msg)


_OPEN_FORMATS: tuple[str, ...] | None = None


def _open_formats() -> tuple[str, ...]:
    """The formats of :data:`IMAGE_FORMATS` that this Pillow build can open. ``Image.init()`` is needed
    first: ``Image.open(formats=...)`` only knows the plugins already imported (MPO, WebP and TIFF are not
    among Pillow's pre-imported ones)."""
    global _OPEN_FORMATS
    if _OPEN_FORMATS is None:
        Image.init()
        _OPEN_FORMATS = tuple(f for f in IMAGE_FORMATS if f in Image.OPEN)
    return _OPEN_FORMATS


def _decode(f: IO[bytes], max_pixels: int | None, target_size: int | None = None) -> Image.Image:
    """Fully decode the first frame of the image in ``f`` and return it in RGB, EXIF-oriented; with
    ``target_size``, downscaled while decoding (:func:`downscale_hint`)."""
    try:
        im = Image.open(f, formats=_open_formats())
    except Exception as e:  # noqa: BLE001 - any parser failure means "skip this file"
        raise _classify_decode_error(e, f) from None
    try:
        # Checked from the header, before any pixel is allocated.
        if max_pixels is not None and im.width * im.height > max_pixels:
            raise UnusableImageError("too_many_pixels", f"{im.width}x{im.height} > {max_pixels}")
        if target_size is not None:
            downscale_hint(im, target_size)  # JPEG: decode at 1/2, 1/4 or 1/8 scale (never below the target)
        im.load()  # the full decode; truncation raises because LOAD_TRUNCATED_IMAGES is off here
        if target_size is not None and im.mode in _REDUCIBLE_MODES:
            im = reduce_to(im, target_size)  # before the RGB conversion: no full-size copy is made
        # Some formats (GIF) may grow the canvas while loading.
        if max_pixels is not None and im.width * im.height > max_pixels:
            raise UnusableImageError("too_many_pixels", f"{im.width}x{im.height} > {max_pixels}")
        try:
            ImageOps.exif_transpose(im, in_place=True)
        except Exception:  # noqa: BLE001 - a malformed EXIF block loses the orientation, not the image
            pass
        rgb = _to_rgb(im)
        return reduce_to(rgb, target_size) if target_size is not None else rgb
    except Exception as e:  # noqa: BLE001
        raise _classify_decode_error(e) from None


def downscale_hint(im: Image.Image, target_size: int) -> None:
    """Before ``load()``: let a JPEG decode at a reduced scale (libjpeg's DCT scaling: 1/2, 1/4 or 1/8)
    whose shorter side stays >= ``target_size``. The full-size pixels are never allocated, which is what
    bounds memory for huge files; other formats are reduced after decoding (:func:`reduce_to`)."""
    w, h = im.size
    short = min(w, h)
    if im.format not in ("JPEG", "MPO") or short < 2 * target_size:
        return
    scale = target_size / short
    try:
        im.draft(None, (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))
    except Exception:  # noqa: BLE001 - no draft support: decoded at full size, reduced afterwards
        pass


#: Modes whose pixels can be averaged as they are (no palette, no alpha to composite first); others are
#: reduced once converted to RGB.
_REDUCIBLE_MODES = frozenset({"L", "RGB", "CMYK", "YCbCr", "I", "F"})


def reduce_to(im: Image.Image, target_size: int) -> Image.Image:
    """``im`` shrunk by the largest integer factor that keeps its shorter side >= ``target_size`` (a box
    filter, so no aliasing); ``im`` itself when it is already smaller than twice the target."""
    factor = min(im.size) // target_size
    if factor < 2:
        return im
    return im.reduce(factor)


def regular_file_reason(path: str | os.PathLike[str]) -> str | None:
    """None for a regular file (after following links); otherwise the skip reason ("missing",
    "not_a_regular_file", "unreadable"). Never opens the file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"
    return None if stat.S_ISREG(st.st_mode) else "not_a_regular_file"


def open_regular_file(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open ``path`` for reading if it is a regular file, without ever blocking on a FIFO (``O_NONBLOCK``,
    then ``fstat``: the check holds for the file actually opened). Raises UnusableImageError."""
    reason = regular_file_reason(path)
    if reason is not None:
        raise UnusableImageError(reason, "not a regular file" if reason == "not_a_regular_file" else "")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as e:
        raise UnusableImageError("missing", str(e)) from None
    except OSError as e:  # PermissionError, EIO, ENXIO (a socket) ...
        raise UnusableImageError("unreadable", str(e)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnusableImageError("not_a_regular_file", "not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a regular file: ordinary reads from here on
        return os.fdopen(fd, "rb")
    except UnusableImageError:
        os.close(fd)
        raise
    except OSError as e:
        os.close(fd)
        raise UnusableImageError("unreadable", str(e)) from None


def decode_file(
    path: Path, max_pixels: int | None, *, want_hash: bool, target_size: int | None = None
) -> tuple[Image.Image, str | None]:
    """Open, check and decode one file; hash its bytes after decoding (the decode has just read them, so
    hashing is served from the page cache, and a non-image is rejected before reading it all).

    Only regular files are opened: opening a named pipe (FIFO) blocks until someone writes to it, forever in
    a data folder, and a device or socket is no image. The file is opened non-blocking and checked again
    once open, so a file swapped for a FIFO between the check and the open cannot hang ingestion either.

    Call it within :func:`strict_pil` (as :func:`load_image` does). Raises UnusableImageError and nothing
    else (except BaseException such as KeyboardInterrupt)."""
    f = open_regular_file(path)
    with f:
        try:
            st = os.fstat(f.fileno())
        except OSError as e:
            raise UnusableImageError("unreadable", str(e)) from None
        if st.st_size == 0:
            raise UnusableImageError("empty")
        im = _decode(f, max_pixels, target_size)  # the hash below is of the file's bytes, whatever the scale
        if not want_hash:
            return im, None
        try:
            return im, sha256_stream(f)
        except OSError as e:
            raise UnusableImageError("unreadable", str(e)) from None


def load_image(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load one image as an 8-bit RGB ``PIL.Image``: fully decoded (a truncated file raises even if
    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is set), EXIF orientation applied, alpha composited on white,
    16-bit and float greys scaled (not clipped), GIF/animated files reduced to their first frame.

    Raises :class:`UnusableImageError` (an InputError) with a ``reason`` from :data:`SKIP_REASONS`.
    """
    max_pixels = check_max_pixels(max_pixels)
    with strict_pil():
        im, _ = decode_file(Path(path), max_pixels, want_hash=False)
    return im
