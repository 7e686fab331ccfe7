"""``evaluate()``: compare a synthetic image set with the private (real) one.

Every number here is computed against private data and is therefore NOT differentially private: it is
for the data owner's eyes (``metrics.json`` in the run folder, never in ``release/``). Each metric entry
says so itself (``"differentially_private": false`` and a note), so that a number copied out of the file
keeps its warning.

Metric names and the feature space each one uses (override a space's embedder with ``embedders``):

============== ================= ============================================================
metric         feature space     notes
============== ================= ============================================================
fid            ``inception``     clean-fid protocol: the embedder resizes both sets itself
fd-dinov2      ``dinov2``        Fréchet distance, same code as FID
fd-clip        ``clip``          Fréchet distance, same code as FID
fd-efficientnet ``efficientnet`` Fréchet distance, same code as FID (bundled, works offline)
prdc           ``prdc_space``    default inception when it can be built, else efficientnet
memorization   ``memorization_space`` default: the PRDC space
clip-score     ``clip``          needs a clip embedder with ``embed_text`` and captions
============== ================= ============================================================
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spti.errors import BackendError, ConfigError, InputError, SptiError
from spti.log import logger, progress

__all__ = [
    "evaluate",
    "METRICS",
    "FEATURE_SPACES",
    "NOT_DP",
    "IMAGE_EXTENSIONS",
    "list_images",
]

NOT_DP: dict[str, Any] = {
    "differentially_private": False,
    "note": "computed against private data — do not publish",
}

#: Default embedder config for each feature space (``embedders`` overrides or adds spaces).
FEATURE_SPACES: dict[str, dict[str, Any]] = {
    "inception": {"backend": "inception"},
    "dinov2": {"backend": "dinov2"},
    "clip": {"backend": "clip"},
    "efficientnet": {"backend": "efficientnet-lite0"},
}
_SPACE_ALIASES = {"efficientnet-lite0": "efficientnet"}

#: Fréchet-distance metrics and their feature space.
_FD_METRICS = {
    "fid": "inception",
    "fd-dinov2": "dinov2",
    "fd-clip": "clip",
    "fd-efficientnet": "efficientnet",
}
METRICS = (*_FD_METRICS, "prdc", "clip-score", "memorization")

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
)


# --------------------------------------------------------------------------------------------- images


@dataclass
class _ImageSet:
    """An ordered list of images, each a file path or an in-memory PIL image, loaded lazily per batch so
    that 50k images never sit in memory at once."""

    items: list[Path | Image.Image]
    names: list[str]  # release-relative file name, private record id ("img-000012") or "#i"
    source: str
    captions: list[str | None] | None = None
    private: bool = False  # names and paths of a private set never reach a log message
    info: dict[str, Any] = field(default_factory=dict)  # e.g. the ingest summary (counts only)
    bad: set[int] = field(default_factory=set)  # indices that could not be read
    hashes: dict[int, str] = field(default_factory=dict)
    # Pixel limit when decoding: ingested records were already checked against the run's own limit;
    # other files get Pillow's default, so that one gigantic file cannot exhaust memory.
    max_pixels: int | None | str = "default"

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> Image.Image | None:
        """The i-th image as RGB, decoded like ingestion does (EXIF orientation, alpha on white), or None
        when it cannot be read (counted, not logged by name: private file names are private)."""
        item = self.items[i]
        if isinstance(item, Image.Image):
            return item if item.mode == "RGB" else item.convert("RGB")
        from spti.data.images import DEFAULT_MAX_PIXELS, load_image

        try:
            return load_image(
                item, max_pixels=DEFAULT_MAX_PIXELS if self.max_pixels == "default" else self.max_pixels
            )
        except (InputError, OSError, ValueError):
            self.bad.add(i)
            return None

    def content_hash(self, i: int) -> str:
        """sha256 of the file's bytes (or of the decoded pixels for an in-memory image): the cache key
        must change when the content does, whatever the file is called."""
        h = self.hashes.get(i)
        if h is None:
            item = self.items[i]
            d = hashlib.sha256()
            if isinstance(item, Image.Image):
                d.update(f"{item.mode}:{item.size[0]}x{item.size[1]}:".encode())
                d.update(item.tobytes())
            else:
                with open(item, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        d.update(chunk)
            h = self.hashes[i] = d.hexdigest()
        return h


def list_images(folder: str | os.PathLike) -> list[Path]:
    """All image files under ``folder`` (recursively, hidden files and folders skipped), sorted so that
    the order — and so a ``max_images`` subset — is the same on every machine."""
    root = Path(folder)
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in filenames:
            if not fn.startswith(".") and Path(fn).suffix.lower() in IMAGE_EXTENSIONS:
                out.append(Path(dirpath) / fn)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _release_metadata(folder: Path) -> Path | None:
    for cand in (folder / "metadata.jsonl", folder / "release" / "metadata.jsonl"):
        if cand.is_file():
            return cand
    return None


def _real_set(data: Any) -> _ImageSet:
    """The private set: a path goes through :func:`spti.data.images.ingest` (folder, ImageFolder or
    listing; verified, deduplicated exactly as the pipeline saw it), an ``IngestResult`` or a list of
    ``ImageRecord`` (e.g. the run's ``private/ingest.jsonl``) is used as is, a list of PIL images too."""
    records = getattr(data, "records", None)
    if isinstance(data, (str, os.PathLike)):
        from spti.data.images import ingest
        from spti.log import progress_enabled

        res = ingest(data, private_dir=None, progress=progress_enabled())
        s = _from_records(res.records, str(Path(data)))
        s.info = {"ingest": res.summary()}
        return s
    if records is not None:
        return _from_records(list(records), f"<{len(records)} ingested records>")
    items = list(data)
    if items and all(hasattr(r, "path") and hasattr(r, "sha256") for r in items):
        return _from_records(items, f"<{len(items)} ingested records>")
    return _pil_set(items, "real", None, private=True)


def _from_records(records: Sequence[Any], source: str) -> _ImageSet:
    if not records:
        raise InputError("real images: no usable image")
    return _ImageSet(
        [Path(r.path) for r in records],
        [str(getattr(r, "id", f"#{i}")) for i, r in enumerate(records)],
        source,
        private=True,
        hashes={i: str(r.sha256) for i, r in enumerate(records)},
        max_pixels=None,
    )


def _pil_set(imgs: list[Any], what: str, captions: Sequence[str] | None, *, private: bool) -> _ImageSet:
    if not imgs:
        raise InputError(f"{what} images: the list is empty")
    for i, im in enumerate(imgs):
        if not isinstance(im, Image.Image):
            raise InputError(f"{what} images: item {i} is a {type(im).__name__}, not a PIL image")
    caps_list: list[str | None] | None = None
    if captions is not None:
        if len(captions) != len(imgs):
            raise InputError(f"{len(captions)} captions for {len(imgs)} {what} images")
        caps_list = list(captions)
    return _ImageSet(
        list(imgs), [f"#{i}" for i in range(len(imgs))], f"<{len(imgs)} in-memory images>", caps_list, private
    )


def _synthetic_set(data: Any, captions: Sequence[str] | None) -> _ImageSet:
    """The synthetic set: a release folder (metadata.jsonl gives files and captions, in order), a run
    folder with ``release/``, any folder of images (read recursively), or a list of PIL images."""
    if not isinstance(data, (str, os.PathLike)):
        return _pil_set(list(data), "synthetic", captions, private=False)
    folder = Path(data)
    if not folder.is_dir():
        raise InputError(f"synthetic images: {folder} is not a folder")
    meta = _release_metadata(folder)
    if meta is not None:
        from spti.data.io import iter_jsonl

        base = meta.parent
        items: list[Path | Image.Image] = []
        names: list[str] = []
        caps: list[str | None] = []
        for lineno, row in enumerate(iter_jsonl(meta), 1):
            fn = row.get("file_name")
            if not isinstance(fn, str) or not fn:
                raise InputError(f"{meta}: line {lineno} has no 'file_name' string")
            items.append(base / fn)
            names.append(fn)
            text = row.get("text")
            caps.append(text if isinstance(text, str) else None)
        if not items:
            raise InputError(f"synthetic images: {meta} lists no images")
        if captions is not None:
            raise ConfigError(
                "captions= is for a list of images; a release folder has its own metadata.jsonl"
            )
        return _ImageSet(items, names, str(base), caps)
    paths = list_images(folder)
    if not paths:
        raise InputError(
            f"synthetic images: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {folder}"
        )
    return _ImageSet(list(paths), [p.relative_to(folder).as_posix() for p in paths], str(folder))


def _subset(s: _ImageSet, max_images: int | None, seed: int) -> _ImageSet:
    """A seeded random subset (kept in original order): taking the *first* N files would bias the metric
    whenever files are sorted by class. This randomness is for evaluation only, never DP noise."""
    if max_images is None or len(s) <= max_images:
        return s
    keep = [
        int(i) for i in np.sort(np.random.default_rng(seed).choice(len(s), size=max_images, replace=False))
    ]
    return _ImageSet(
        [s.items[i] for i in keep],
        [s.names[i] for i in keep],
        s.source,
        [s.captions[i] for i in keep] if s.captions is not None else None,
        s.private,
        s.info,
        hashes={new: s.hashes[old] for new, old in enumerate(keep) if old in s.hashes},
        max_pixels=s.max_pixels,
    )


# ------------------------------------------------------------------------------------------ embedding


class _FeatureCache:
    """Features on disk, one ``.npy`` per (embedder cache_key, content sha256). One small file per image is
    slower than one big array but can be written atomically by concurrent runs and reused across runs and
    subsets. The cache holds embeddings of private images: it must stay with the private run data."""

    def __init__(self, root: Path):
        self.root = Path(root) / "image_features"

    def _path(self, key: str, h: str) -> Path:
        return self.root / key / h[:2] / f"{h}.npy"

    def get(self, key: str, h: str) -> np.ndarray | None:
        p = self._path(key, h)
        if not p.is_file():
            return None
        try:
            return np.load(p, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a corrupt entry is recomputed and overwritten

    def put(self, key: str, h: str, v: np.ndarray) -> None:
        from spti.data.io import atomic_save_npy

        atomic_save_npy(self._path(key, h), np.asarray(v, dtype=np.float32))


def _embed_set(
    embedder: Any, s: _ImageSet, *, batch_size: int, cache: _FeatureCache | None, desc: str
) -> tuple[np.ndarray, list[int]]:
    """Features of every readable image of ``s`` and the indices they belong to."""
    key = embedder.cache_key
    feats: dict[int, np.ndarray] = {}
    todo: list[int] = []
    for i in range(len(s)):
        if cache is not None:
            try:
                v = cache.get(key, s.content_hash(i))
            except OSError:
                s.bad.add(i)
                continue
            if v is not None:
                feats[i] = v
                continue
        todo.append(i)
    if feats:
        logger.info("evaluate: %d/%d %s features from the cache", len(feats), len(s), desc)
    batches = [todo[j : j + batch_size] for j in range(0, len(todo), batch_size)]
    for batch in progress(batches, desc=desc, total=len(batches), unit="batch"):
        imgs, idx = [], []
        for i in batch:
            im = s.load(i)
            if im is not None:
                imgs.append(im)
                idx.append(i)
        if not imgs:
            continue
        try:
            out = np.asarray(embedder.embed(imgs), dtype=np.float32)
        except SptiError:
            raise
        except Exception as e:  # a backend bug or OOM: say which backend, keep the cause
            raise BackendError(f"image embedder {embedder.backend_name!r} failed on a batch: {e}") from e
        if out.ndim != 2 or out.shape[0] != len(imgs):
            raise BackendError(
                f"image embedder {embedder.backend_name!r} returned shape {out.shape} for {len(imgs)} images"
            )
        if not np.isfinite(out).all():
            raise BackendError(f"image embedder {embedder.backend_name!r} returned NaN or infinite features")
        for i, v in zip(idx, out):
            feats[i] = v
            if cache is not None:
                cache.put(key, s.content_hash(i), v)
    kept = sorted(feats)
    if s.bad:
        # Counts only: the names of private files are private.
        logger.warning("evaluate: %d %s image(s) could not be read and were left out", len(s.bad), desc)
    if not kept:
        raise InputError(f"{desc}: none of the {len(s)} images could be read")
    dims = {feats[i].shape for i in kept}
    if len(dims) != 1:
        raise BackendError(f"{desc}: features of different shapes {sorted(dims)} (a stale cache entry?)")
    return np.stack([feats[i] for i in kept]).astype(np.float32, copy=False), kept


# ------------------------------------------------------------------------------------------- helpers


def _find_key(d: Mapping[str, Any], *candidates: str, contains: str | None = None) -> Any:
    for k in candidates:
        if d.get(k) is not None:
            return d[k]
    if contains:
        for k, v in d.items():
            if contains in str(k).lower() and v is not None:
                return v
    return None


def _safe_info(embedder: Any) -> dict[str, Any]:
    try:
        info = embedder.info()
    except Exception as e:  # info() is for the record; a failure there must not lose the metric
        return {"backend": getattr(embedder, "backend_name", "?"), "info_error": str(e)}
    return dict(info) if isinstance(info, Mapping) else {"info": str(info)}


def _resolve_out(out: str | os.PathLike) -> Path:
    p = Path(out)
    return p if p.suffix.lower() == ".json" else p / "metrics.json"


def _clip_score(embedder: Any, img_feats: np.ndarray, captions: list[str]) -> float:
    """CLIP score as in torchmetrics / Hessel et al. 2021 with w=100: mean of max(100·cos(image, text), 0)."""
    try:
        txt = np.asarray(embedder.embed_text(captions), dtype=np.float64)
    except SptiError:
        raise
    except Exception as e:  # a backend bug: name the backend, keep the cause
        raise BackendError(f"clip-score: embed_text of {embedder.backend_name!r} failed: {e}") from e
    img = np.asarray(img_feats, dtype=np.float64)
    if txt.shape != img.shape:
        raise BackendError(
            f"clip-score: text features {txt.shape} do not match image features {img.shape}; the clip "
            "embedder's embed() and embed_text() must return the same joint space"
        )
    img = img / np.maximum(np.linalg.norm(img, axis=1, keepdims=True), 1e-12)
    txt = txt / np.maximum(np.linalg.norm(txt, axis=1, keepdims=True), 1e-12)
    cos = np.einsum("ij,ij->i", img, txt)
    return float(np.mean(np.maximum(100.0 * cos, 0.0)))


# ------------------------------------------------------------------------------------------ evaluate


def evaluate(
    real: str | os.PathLike | Sequence[Image.Image] | Any,
    synthetic: str | os.PathLike | Sequence[Image.Image],
    *,
    metrics: Sequence[str] = ("fid", "prdc", "memorization"),
    embedders: Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    batch_size: int = 32,
    max_images: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    prdc_space: str | None = None,
    nearest_k: int = 5,
    memorization_space: str | None = None,
    memorization_threshold: float = 0.5,
    memorization_percentile: float = 50.0,
    captions: Sequence[str] | None = None,
    strict: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Compute ``metrics`` of ``synthetic`` against ``real`` and return them as a JSON-ready dict.

    ``real``: the private images, as a path that :func:`spti.data.images.ingest` reads (folder, ImageFolder
    or listing; verified and deduplicated like the pipeline does), an ``IngestResult`` or list of
    ``ImageRecord`` (the run's ``private/ingest.jsonl``: nothing is decoded twice), or a list of PIL
    images. ``synthetic``: a folder of images (read recursively) or a list of PIL images; a folder that is
    a release (``metadata.jsonl`` next to ``images/``, or a run folder with ``release/``)
    is read through its metadata, which also supplies the captions for ``clip-score``; with a list of
    images pass ``captions``. ``embedders`` maps a feature space ("inception", "dinov2", "clip",
    "efficientnet" or a new name usable as ``prdc_space``) to an embedder config (``{"backend": ...,
    ...}``, a backend name or ``"pkg.mod:Class"``) or to a ready :class:`ImageEmbedder`; spaces not given
    use :data:`FEATURE_SPACES`. Features are cached under ``cache_dir`` per (embedder ``cache_key``,
    content sha256) when it is given (the cache holds private embeddings: keep it private).

    With ``strict=False`` a metric whose model cannot be loaded is recorded under ``"errors"`` (and
    logged) instead of aborting the others: evaluation runs after hours of generation and should not
    throw the rest away. ``out`` (a folder, or a path ending in ``.json``) receives ``metrics.json``
    atomically; a ``per_iteration`` list already in that file (written by the pipeline) is kept.
    """
    metrics = list(dict.fromkeys(metrics))
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if max_images is not None and max_images < 2:
        raise ConfigError(f"max_images must be >= 2 (or None for all), got {max_images}")

    space_cfg: dict[str, Any] = dict(FEATURE_SPACES)
    for k, v in (embedders or {}).items():
        space_cfg[_SPACE_ALIASES.get(k, k)] = v
    for name, val in (("prdc_space", prdc_space), ("memorization_space", memorization_space)):
        if val is not None and _SPACE_ALIASES.get(val, val) not in space_cfg:
            raise ConfigError(f"{name}={val!r} is not a feature space; known: {', '.join(sorted(space_cfg))}")

    real_set = _subset(_real_set(real), max_images, seed)
    syn_set = _subset(_synthetic_set(synthetic, captions), max_images, seed + 1)
    cache = _FeatureCache(Path(cache_dir)) if cache_dir is not None else None

    result: dict[str, Any] = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **NOT_DP,
        "real": {"source": str(real_set.source), "n_images": len(real_set), **real_set.info},
        "synthetic": {"source": str(syn_set.source), "n_images": len(syn_set)},
        "metrics": {},
        "errors": {},
        "skipped": {},
    }
    try:
        from spti import __version__

        result["spti_version"] = __version__
    except ImportError:  # pragma: no cover
        pass

    built: dict[str, Any] = {}  # space -> embedder we built (and must close)
    infos: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}

    def get_embedder(space: str) -> Any:
        space = _SPACE_ALIASES.get(space, space)
        if space in built:
            return built[space]
        if space in failed:
            raise BackendError(failed[space])
        cfg = space_cfg.get(space)
        from spti.models.image_embedder import REGISTRY, ImageEmbedder

        try:
            emb = cfg if isinstance(cfg, ImageEmbedder) else REGISTRY.build(cfg)
        except Exception as e:
            msg = f"cannot load the {space!r} image embedder ({type(e).__name__}: {e})"
            failed[space] = msg
            raise BackendError(msg) from e
        built[space] = emb
        infos[space] = _safe_info(emb)
        return emb

    def owned(space: str) -> bool:
        return not _is_instance(space_cfg.get(space))

    def record_error(metric: str, e: Exception) -> None:
        if strict:
            raise e
        logger.warning("evaluate: %s not computed: %s", metric, e)
        result["errors"][metric] = str(e)

    # Decide the feature space of prdc / memorization (inception when it can be built, else efficientnet).
    default_space: str | None = None

    def resolve_default() -> str:
        nonlocal default_space
        if default_space is None:
            try:
                get_embedder("inception")
                default_space = "inception"
            except BackendError as e:
                logger.info("evaluate: %s; PRDC/memorization use the efficientnet space instead", e)
                default_space = "efficientnet"
        return default_space

    metric_space: dict[str, str] = {m: s for m, s in _FD_METRICS.items() if m in metrics}
    if "prdc" in metrics:
        metric_space["prdc"] = _SPACE_ALIASES.get(prdc_space, prdc_space) if prdc_space else resolve_default()
    if "memorization" in metrics:
        if memorization_space:
            metric_space["memorization"] = _SPACE_ALIASES.get(memorization_space, memorization_space)
        else:
            metric_space["memorization"] = metric_space.get("prdc") or resolve_default()
    clip_captions: list[str] | None = None
    if "clip-score" in metrics:
        reason = None
        if "clip" not in (embedders or {}) and "fd-clip" not in metrics:
            reason = "no CLIP model configured (give embedders={'clip': ...})"
        elif syn_set.captions is None or any(c is None for c in syn_set.captions):
            reason = "no captions for the synthetic images (metadata.jsonl with 'text', or captions=)"
        if reason:
            result["skipped"]["clip-score"] = reason
            logger.info("evaluate: clip-score skipped: %s", reason)
        else:
            metric_space["clip-score"] = "clip"
            clip_captions = [c or "" for c in (syn_set.captions or [])]

    feats: dict[tuple[str, str], tuple[np.ndarray, list[int]]] = {}
    clip_text_score: float | None = None
    spaces = list(dict.fromkeys(metric_space.values()))
    try:
        for space in spaces:
            users = [m for m, s in metric_space.items() if s == space]
            try:
                emb = get_embedder(space)
                need_real = any(m != "clip-score" for m in users)
                if need_real:
                    feats[(space, "real")] = _embed_set(
                        emb, real_set, batch_size=batch_size, cache=cache, desc=f"real/{space}"
                    )
                feats[(space, "synthetic")] = _embed_set(
                    emb, syn_set, batch_size=batch_size, cache=cache, desc=f"synthetic/{space}"
                )
                if "clip-score" in users and clip_captions is not None:
                    if not callable(getattr(emb, "embed_text", None)):
                        result["skipped"]["clip-score"] = (
                            f"the {space!r} embedder ({getattr(emb, 'backend_name', '?')}) has no embed_text()"
                        )
                    else:
                        f, kept = feats[(space, "synthetic")]
                        clip_text_score = _clip_score(emb, f, [clip_captions[i] for i in kept])
            except SptiError as e:
                for m in users:
                    record_error(m, e)
            finally:
                # Free GPU memory before the next model loads.
                if space in built and owned(space):
                    built.pop(space).close()
                else:
                    built.pop(space, None)

        for m, space in metric_space.items():
            if m in result["errors"]:
                continue
            try:
                entry = _compute(
                    m,
                    space,
                    feats,
                    infos.get(space, {}),
                    real_set=real_set,
                    syn_set=syn_set,
                    nearest_k=nearest_k,
                    threshold=memorization_threshold,
                    percentile=memorization_percentile,
                    clip_score=clip_text_score,
                )
            except SptiError as e:
                record_error(m, e)
                continue
            if entry is not None:
                result["metrics"][m] = entry
    finally:
        for space, emb in list(built.items()):
            if owned(space):
                emb.close()

    n_bad = {"real": len(real_set.bad), "synthetic": len(syn_set.bad)}
    result["real"]["n_unreadable"] = n_bad["real"]
    result["synthetic"]["n_unreadable"] = n_bad["synthetic"]
    for k in ("errors", "skipped"):
        if not result[k]:
            del result[k]

    if out is not None:
        from spti.data.io import atomic_write_json, read_json

        path = _resolve_out(out)
        if path.is_file():
            try:
                old = read_json(path)
            except (OSError, ValueError):
                old = None
            if isinstance(old, dict) and "per_iteration" in old and "per_iteration" not in result:
                result["per_iteration"] = old["per_iteration"]
        atomic_write_json(path, result)
        logger.info("evaluate: wrote %s", path)
    return result


def _is_instance(cfg: Any) -> bool:
    from spti.models.image_embedder import ImageEmbedder

    return isinstance(cfg, ImageEmbedder)


def _compute(
    metric: str,
    space: str,
    feats: Mapping[tuple[str, str], tuple[np.ndarray, list[int]]],
    info: dict[str, Any],
    *,
    real_set: _ImageSet,
    syn_set: _ImageSet,
    nearest_k: int,
    threshold: float,
    percentile: float,
    clip_score: float | None,
) -> dict[str, Any] | None:
    """One metric entry (value + provenance + the not-DP marks) from already computed features."""
    from spti.metrics.frechet import fid_from_features
    from spti.metrics.memorization import memorization_audit
    from spti.metrics.prdc import prdc

    syn_f, syn_kept = feats[(space, "synthetic")]
    base: dict[str, Any] = {
        "feature_space": space,
        "embedder": info,
        "n_synthetic": len(syn_kept),
    }
    if metric == "clip-score":
        if clip_score is None:
            return None
        return {
            "value": clip_score,
            "definition": "mean over images of max(100 * cos(CLIP image, CLIP caption), 0)",
            **base,
            "differentially_private": False,
            "computed_against_private_data": False,
            "note": "uses only the synthetic images and their captions; listed in metrics.json, which as a "
            "whole is not differentially private",
        }
    real_f, real_kept = feats[(space, "real")]
    base["n_real"] = len(real_kept)
    runner: Callable[[], dict[str, Any]]
    if metric in _FD_METRICS:

        def runner() -> dict[str, Any]:
            e: dict[str, Any] = {"value": fid_from_features(real_f, syn_f), **base}
            if metric == "fid":
                e = {
                    "value": e["value"],
                    "implementation": "spti/clean-fid-protocol",
                    "mode": "clean",
                    "weights_sha256": _find_key(info, "weights_sha256", "sha256", contains="sha256"),
                    "resolution": _find_key(
                        info, "resolution", "image_size", "input_size", contains="resolution"
                    ),
                    **base,
                }
            if len(real_kept) != len(syn_kept):
                # FID is biased by sample size: papers compare sets of equal size (or a fixed count).
                e["warning"] = (
                    f"{len(real_kept)} real vs {len(syn_kept)} synthetic images: FID depends on the number of "
                    "images; compare FIDs only at equal counts (use max_images / --max-images)"
                )
            return e

    elif metric == "prdc":

        def runner() -> dict[str, Any]:
            r = prdc(real_f, syn_f, nearest_k=nearest_k)
            return {k: r[k] for k in ("precision", "recall", "density", "coverage", "nearest_k")} | base

    elif metric == "memorization":

        def runner() -> dict[str, Any]:
            res = memorization_audit(real_f, syn_f, threshold=threshold, reference_percentile=percentile)
            d = res.to_dict()
            # Feature rows -> image indices/files (unreadable images were dropped from the features).
            d["flagged"] = [syn_kept[i] for i in d["flagged"]]
            d["nn_index"] = [real_kept[j] for j in d["nn_index"]]
            d["synthetic_files"] = [syn_set.names[i] for i in syn_kept]
            for p in d["closest_pairs"]:
                si, pj = syn_kept[p["synthetic"]], real_kept[p["private"]]
                p["synthetic"], p["private"] = si, pj
                p["synthetic_file"] = syn_set.names[si]  # relative to the release folder
                p["synthetic_path"] = _display_name(syn_set, si)
                p["private_file"] = _display_name(real_set, pj)
            d["flagged_files"] = [syn_set.names[i] for i in d["flagged"]]
            return d | base

    else:  # pragma: no cover - guarded by METRICS
        raise ConfigError(f"unknown metric {metric!r}")
    return {**runner(), **NOT_DP}


def _display_name(s: _ImageSet, i: int) -> str | None:
    """A path the report can open (absolute for files; None for in-memory images)."""
    item = s.items[i]
    return None if isinstance(item, Image.Image) else str(Path(item).resolve())
