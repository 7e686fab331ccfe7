"""The private side of PE: ingest the private images, then caption them (text voting) or embed them
(image voting); ``spti evolve`` embeds private texts.

Everything written here lives in ``private/`` and is never released. Long steps write shards of
:data:`SHARD` items atomically, so an interrupted run redoes at most one shard; finished results are
reused when the run resumes.

Record independence. The DP analysis assumes that each private record's caption and features are a
function of that record alone, so that adding or removing one record moves only its own vote. Two things
here keep that true: every backend output is matched to its input one for one (``zip(..., strict=True)``
after a count check: a plug-in that returns one caption too few fails with a :class:`BackendError` naming
it, instead of shifting every later caption onto the wrong image or silently dropping records); and the
optional *strict mode* (``strict: true`` in the captioner's or image embedder's config) runs the model on
one image at a time in float32. Without it, batched inference (padding, fp16/bf16 kernels whose reduction
order depends on the batch) can make one image's output differ in its last bits with the other images of
its batch: not a practical leak, but not the bit-for-bit independence the proof assumes. The ledger
records strict mode (:func:`strict_preprocessing_step`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spti.config import Config
from spti.data.io import atomic_save_npy, atomic_write_jsonl, read_jsonl
from spti.data.run import RunDir
from spti.errors import BackendError, ConfigError, InputError
from spti.log import logger, progress

SHARD = 1024  # images per captioning / embedding shard (the unit of resumption)


def ingest_stage(run_dir: RunDir, cfg: Config):
    """Verify, deduplicate and list the private images (``private/ingest.jsonl``); reused on resume."""
    from spti.data.images import IngestResult, ingest

    if run_dir.stage_done("ingest") and (run_dir.private / "ingest.jsonl").is_file():
        return IngestResult.load(run_dir.private)
    result = ingest(
        cfg.data.private,
        private_dir=run_dir.private,
        user_column=cfg.data.user_column,
        users_from_subfolders=cfg.data.users_from_subfolders,
        max_pixels=cfg.data.max_pixels,
        progress=cfg.progress,
    )
    summary = result.summary()
    run_dir.update_stats("ingest", summary)
    run_dir.mark_stage("ingest", **{k: v for k, v in summary.items() if isinstance(v, (int, float))})
    logger.info("ingested: %s", ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, dict)))
    return result


def private_units(cfg: Config, result) -> tuple[list[str] | None, int]:
    """Who owns each ingested image (None: one image = one record) and N, the number of privacy units."""
    if cfg.privacy.unit == "user":
        owners = [r.user_id for r in result.records]
        if any(o is None for o in owners):
            raise InputError("privacy.unit is 'user' but some images have no user id")
        return owners, len(set(owners))
    return None, len(result.records)


# ---------------------------------------------------------------------------------------- captioning
def captioner_config(cfg: Config) -> dict[str, Any]:
    """The captioner's backend config; a backend that sends private images off the machine needs the
    explicit opt-in ``allow_remote_captioner``."""
    from spti.models.captioner import REGISTRY

    c = dict(cfg.captioner)
    cls = REGISTRY.get(c["backend"])
    if getattr(cls, "sends_data_off_machine", False):
        if not cfg.allow_remote_captioner:
            raise ConfigError(
                f"captioner backend {c['backend']!r} sends your PRIVATE images to a remote service. If that is "
                "acceptable, pass --allow-remote-captioner (config: allow_remote_captioner: true); it is recorded "
                "in privacy.json as a trust assumption"
            )
        c.setdefault("allow_remote", True)
    return c


def captioning_record(ccfg: dict[str, Any]) -> dict[str, Any]:
    """What the ledger says about captioning, from the config alone (a resumed run need not load the model)."""
    from spti.models.captioner import REGISTRY

    cls = REGISTRY.get(ccfg["backend"])
    return {"remote": bool(getattr(cls, "sends_data_off_machine", False)),
            "where": ccfg.get("base_url", "the provider's default endpoint"),
            "strict": ccfg.get("strict") is True}


#: The ledger's wording for strict pre-processing (see the module docstring).
STRICT_PREPROCESSING = (
    "strict mode: the {what} ran on one private image at a time in float32, so each private image's {out} is a "
    "function of that image alone, bit for bit (batched or half-precision inference does not guarantee this)"
)


def strict_preprocessing_step(cfg: Config, *, captioned: bool) -> tuple[str, str] | None:
    """``(name, description)`` of the ledger's processing step for strict mode, or None when the backend
    that turns private images into votes (the captioner for text voting, the image embedder for image
    voting) does not run strict. ``captioned``: text voting captioned private images (``spti evolve``, on
    private texts, has no such backend)."""
    if cfg.pe.voting == "text":
        on, what, out = captioned and cfg.captioner.get("strict") is True, "captioner", "caption"
    else:
        on, what, out = cfg.image_embedder.get("strict") is True, "image embedder", "features"
    return ("strict_preprocessing", STRICT_PREPROCESSING.format(what=what, out=out)) if on else None


def _one_for_one(backend: Any, role: str, got: int, want: int) -> None:
    """A backend must return one output per input: anything else would shift outputs onto the wrong
    records (or drop records) without a trace."""
    if got != want:
        name = getattr(backend, "backend_name", "?")
        if name == "?":  # a plug-in given as "package.module:Class" keeps the base class's placeholder
            name = f"{type(backend).__module__}:{type(backend).__qualname__}"
        raise BackendError(f"{role} {name!r} returned {got} outputs for a batch of {want} private inputs; a "
                           f"{role} must return exactly one per input, in order")


def caption_stage(run_dir: RunDir, cfg: Config, result, captioner=None) -> list[str]:
    """Caption every private image; captions go to private/captions/ in shards of SHARD images, so an
    interrupted run re-captions at most one shard. ``captioner`` is built from the config when a shard is
    missing and none is given."""
    from spti.data.images import iter_batches
    from spti.models.captioner import build_captioner

    records = result.records
    shard_dir = run_dir.private / "captions"
    shard_dir.mkdir(parents=True, exist_ok=True)
    n_shards = math.ceil(len(records) / SHARD)
    missing = [s for s in range(n_shards) if not (shard_dir / f"shard-{s:06d}.jsonl").is_file()]
    if missing:
        captioner = captioner or build_captioner(captioner_config(cfg))
        for s in progress(missing, desc="captioning", total=len(missing), unit="shard"):
            recs = records[s * SHARD : (s + 1) * SHARD]
            rows = []
            for batch_recs, images in iter_batches(recs, captioner.batch_size, max_pixels=cfg.data.max_pixels,
                                                   target_size=getattr(captioner, "input_size", None)):
                caps = list(captioner.caption(images))
                _one_for_one(captioner, "captioner", len(caps), len(batch_recs))
                for r, c in zip(batch_recs, caps, strict=True):
                    rows.append({"id": r.id, "user_id": r.user_id, "text": c})
            atomic_write_jsonl(shard_dir / f"shard-{s:06d}.jsonl", rows)
        run_dir.update_manifest(models={"captioner": captioner.info()})
    captions: list[str] = []
    empty = 0
    for s in range(n_shards):
        for row in read_jsonl(shard_dir / f"shard-{s:06d}.jsonl"):
            t = row["text"] or ""
            empty += not t.strip()
            captions.append(t)
    if empty:
        logger.warning("%d private images got an empty caption (they still vote)", empty)
    run_dir.mark_stage("caption", captions=len(captions), empty=empty)
    return captions


# ---------------------------------------------------------------------------------------- embedding
def _finished_features(path: Path, n: int) -> np.ndarray | None:
    """The features of an earlier (resumed) run when ``path`` holds one row for each of the ``n`` items."""
    if path.is_file():
        feats = np.load(path, mmap_mode="r")
        if feats.shape[0] == n:
            return feats
    return None


def embed_private_texts(run_dir: RunDir, embedder, texts: Sequence[str]) -> np.ndarray:
    """Embed the private texts (or captions) once; the features stay in private/ (resume reuses them)."""
    path = run_dir.private / f"text_features-{embedder.cache_key}.npy"
    done = _finished_features(path, len(texts))
    if done is not None:
        return done
    rows = []
    batch = embedder.batch_size
    for s in progress(range(0, len(texts), batch), desc="embedding private texts", total=math.ceil(len(texts) / batch)):
        chunk = list(texts[s : s + batch])
        vecs = np.asarray(embedder.embed(chunk), dtype=np.float32)
        _one_for_one(embedder, "text embedder", vecs.shape[0] if vecs.ndim == 2 else 0, len(chunk))
        rows.append(vecs)
    feats = np.concatenate(rows) if rows else np.zeros((0, embedder.dim), np.float32)
    atomic_save_npy(path, feats)
    return np.load(path, mmap_mode="r")


def embed_private_images(run_dir: RunDir, cfg: Config, result, embedder) -> np.ndarray:
    """Private image features (for image voting), in shards then one memory-mapped .npy in private/."""
    from spti.data.images import iter_batches

    key = embedder.cache_key
    final = run_dir.private / f"image_features-{key}.npy"
    records = result.records
    done = _finished_features(final, len(records))
    if done is not None:
        return done
    shard_dir = run_dir.private / f"image_features-{key}"
    shard_dir.mkdir(parents=True, exist_ok=True)
    n_shards = math.ceil(len(records) / SHARD)
    for s in progress(range(n_shards), desc="embedding private images", total=n_shards, unit="shard"):
        p = shard_dir / f"shard-{s:06d}.npy"
        if p.is_file():
            continue
        batches = iter_batches(records[s * SHARD : (s + 1) * SHARD], embedder.batch_size, max_pixels=cfg.data.max_pixels,
                               target_size=getattr(embedder, "input_size", None))  # decode no larger than the model needs
        feats = []
        for _, images in batches:
            vecs = np.asarray(embedder.embed(images), dtype=np.float32)
            _one_for_one(embedder, "image embedder", vecs.shape[0] if vecs.ndim == 2 else 0, len(images))
            feats.append(vecs)
        atomic_save_npy(p, np.concatenate(feats))
    dim = int(np.load(shard_dir / "shard-000000.npy", mmap_mode="r").shape[1])
    tmp = final.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(records), dim))
    for s in range(n_shards):
        out[s * SHARD : (s + 1) * SHARD] = np.load(shard_dir / f"shard-{s:06d}.npy")
    out.flush()
    del out
    tmp.replace(final)
    for p in shard_dir.glob("shard-*.npy"):
        p.unlink()
    shard_dir.rmdir()
    return np.load(final, mmap_mode="r")
