"""HTML building blocks of the report: escaping, number formatting, tables, sections and inlined images.

Why here and not in each section: every string that reaches the page (captions, file names, config values)
is untrusted text and goes through :func:`esc`; every image goes through :func:`image_data_uri`, which
inlines a thumbnail, so the page never loads anything external.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from spti.log import logger

NOT_DP_LABEL = "not differentially private"
#: The label of N, the one exact count of the private data that the ledger publishes (by its assumption).
ASSUMED_PUBLIC_LABEL = "exact count, treated as public"
THUMB = 256


class Raw(str):
    """HTML built by these helpers, shown by :func:`table` and :func:`kv_table` as it is (not escaped):
    how a cell carries a number together with its label."""


def esc(x: Any) -> str:
    """HTML-escape anything (captions, file names and config values are untrusted text)."""
    return html.escape("" if x is None else str(x), quote=True)


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if math.isnan(v):
            return "NaN"
        return f"{v:.4g}"
    if isinstance(v, str) and v.lower() in ("inf", "infinity"):
        return "∞"
    return str(v)


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def notdp() -> str:
    return f'<span class="notdp" title="computed against private data — do not publish">{NOT_DP_LABEL}</span>'


def notdp_value(v: Any) -> Raw:
    """A number computed from the private data, with the "not differentially private" label next to it."""
    return Raw(f"{esc(fmt(v))} {notdp()}")


def assumed_public_value(v: Any) -> Raw:
    """N, with the label that says it is exact and published only by the ledger's stated assumption."""
    return Raw(
        f'{esc(fmt(v))} <span class="assume" title="an exact count of the private data, not differentially '
        f'private; published because the ledger treats it as public (see its assumptions)">'
        f"{ASSUMED_PUBLIC_LABEL}</span>"
    )


def _cell(v: Any) -> str:
    return v if isinstance(v, Raw) else esc(fmt(v))


def kv_table(rows: Iterable[tuple[str, Any]], *, raw_html: bool = False) -> str:
    body = "".join(
        f"<tr><th>{esc(k)}</th><td>{v if raw_html else _cell(v)}</td></tr>"
        for k, v in rows
        if v is not None
    )
    return f'<table class="kv">{body}</table>' if body else ""


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{body}</section>'


def image_data_uri(src: Path | Any, max_side: int = THUMB) -> tuple[str, int, int, bool] | None:
    """A thumbnail as a data URI (PNG for small images, whose pixels matter; JPEG for photos, for size),
    with its width, height and whether it is tiny (drawn pixelated)."""
    from PIL import Image

    try:
        if isinstance(src, Image.Image):
            im = src.copy()
        else:
            with Image.open(src) as f:
                f.load()
                im = f.copy()
        if im.mode not in ("RGB", "L"):
            im = im.convert("RGBA")
            bg = Image.new("RGB", im.size, (255, 255, 255))
            bg.paste(im, mask=im.split()[-1])
            im = bg
        im.thumbnail((max_side, max_side))
        w, h = im.size
        if w < 1 or h < 1:
            return None
        buf = io.BytesIO()
        small = w * h <= 128 * 128
        if small:
            im.save(buf, format="PNG", optimize=True)
            mime = "image/png"
        else:
            im.convert("RGB").save(buf, format="JPEG", quality=85)
            mime = "image/jpeg"
    except Exception as e:  # noqa: BLE001 - any unreadable image becomes a note, never a crash
        logger.debug("report: image not embedded (%s)", type(e).__name__)
        return None
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}", w, h, w <= 64


def img(src: Path | Any | None, alt: str) -> str:
    d = image_data_uri(src) if src is not None else None
    if d is None:
        return f'<p class="note">image not available: {esc(alt)}</p>'
    uri, w, h, tiny = d
    cls = ' class="small"' if tiny else ""
    return f'<img src="{uri}" width="{w}" height="{h}" alt="{esc(alt)}"{cls}>'


def figure(src: Path | None, caption: str | None, alt: str) -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f"<figure>{img(src, alt)}{cap}</figure>"
