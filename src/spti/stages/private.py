"""The private side of PE: ingest the private images, then caption them (text voting) or embed them
(image voting); ``spti evolve`` embeds private texts.

Everything written here lives in ``private/`` and is never released. Long steps write shards of
:data:`SHARD` items atomically, so an interrupted run redoes at most one shard; finished results are
reused when the run resumes.

Record independence. The DP analysis assumes that each private record's caption and features are a
function of that record alone, so that adding or removing one record moves only its own vote. Two things
here keep that true: every backend output is matched to its input one for one (the executor's worker
checks the count of every batch, :mod:`spti.executor.tasks`: a plug-in that returns one caption too few
fails with a :class:`BackendError` naming it, instead of shifting every later caption onto the wrong image or silently dropping records); and the
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
from typing import TYPE_CHECKING, Any

import numpy as np

from spti.config import Config, labelled
from spti.data.io import atomic_save_npy, atomic_write_jsonl, read_jsonl
from spti.data.run import RunDir
from spti.errors import BackendError, ConfigError, InputError
from spti.log import logger

if TYPE_CHECKING:
    from spti.data.labels import LabelSet

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
        label_column=cfg.data.label_column,
        labels_from_subfolders=cfg.data.labels_from_subfolders,
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


def private_labels(cfg: Config, ingested) -> LabelSet | None:
    """The classes of a labelled run and each ingested record's class (:class:`~spti.data.labels.LabelSet`,
    rows in ``ingested.records`` order); None when the run is not labelled (:func:`spti.config.labelled`).

    The label set is PUBLIC by the run's stated assumption (the ledger says so:
    :data:`spti.privacy.class_counts.LABEL_SET_ASSUMPTION`): its names are the labels found in the private data plus
    every label named in the config's ``classes``, so a class with no private image still exists and a user
    can fix the class list publicly (the descriptions: ``cfg.classes.get(name, name)``). The per-record index
    and every count made from it are private.

    Raises InputError when the run is labelled but the ingestion is not (an ingestion saved by an unlabelled
    run in the same folder: labels are read once, at ingestion, and kept in ``private/ingest.jsonl``)."""
    from spti.data.labels import LabelSet

    if not labelled(cfg):
        return None
    labels = [r.label for r in ingested.records]
    if any(lab is None or not lab for lab in labels):
        raise InputError(
            "this run is labelled (data.labels_from_subfolders or data.label_column) but some ingested images "
            "have no label: the ingestion in private/ was made without labels; start a new run folder (--out)"
        )
    result = LabelSet.from_labels(labels, cfg.classes)
    unnamed = [n for n in result.names if n not in cfg.classes]
    if cfg.classes and unnamed:
        logger.warning("labels without a description in `classes` (their name is used in the prompts): %s",
                       ", ".join(unnamed))
    return result


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


def _build(role: str, config: Any, executor: Any = None) -> Any:
    """A model of ``role``: ``executor.backend(...)`` when a command's executor is given (on Ray a proxy whose
    model lives on the replicas), else built here as the local stages always did."""
    if executor is not None:
        return executor.backend(role, config)
    from spti.executor import build_backend

    return build_backend(role, config)


def caption_stage(run_dir: RunDir, cfg: Config, result, captioner=None, *, executor=None) -> list[str]:
    """Caption every private image; captions go to private/captions/ in shards of SHARD images, so an
    interrupted run re-captions at most one shard. ``captioner`` is built from the config when a shard is
    missing and none is given: by ``executor`` (:meth:`spti.executor.Executor.backend`; on Ray the replicas
    hold the model and this process loads none), else in this process.

    The images go through :meth:`~spti.executor.Executor.stream` with ``split_every=SHARD``: every shard's
    batches are cut from the shard's start (the batches of a loop over shards), and a shard is written
    (atomically) as soon as all its captions are in, whichever replica made them."""
    from spti.executor import step_for

    records = result.records
    shard_dir = run_dir.private / "captions"
    shard_dir.mkdir(parents=True, exist_ok=True)
    n_shards = math.ceil(len(records) / SHARD)
    missing = [s for s in range(n_shards) if not (shard_dir / f"shard-{s:06d}.jsonl").is_file()]
    if missing:
        ccfg = None
        if captioner is None:
            ccfg = captioner_config(cfg)
            captioner = _build("captioner", ccfg, executor)
        ex, step = step_for("captioner", captioner, executor=executor, config=ccfg, max_pixels=cfg.data.max_pixels,
                            name="captioning")
        recs = [r for s in missing for r in records[s * SHARD : (s + 1) * SHARD]]
        # item k of recs -> (its shard, its row in the shard); shards are full except the last one
        where: list[tuple[int, int]] = []
        for s in missing:
            where.extend((s, j) for j in range(len(records[s * SHARD : (s + 1) * SHARD])))
        rows: dict[int, dict[int, dict[str, Any]]] = {}
        for r, caps in ex.stream(step, recs, desc="captioning", split_every=SHARD):
            for k, c in zip(r, caps, strict=True):
                s, j = where[k]
                rec = recs[k]
                rows.setdefault(s, {})[j] = {"id": rec.id, "user_id": rec.user_id, "text": c}
            for s in {where[k][0] for k in r}:
                size = len(records[s * SHARD : (s + 1) * SHARD])
                if len(rows[s]) == size:  # the shard is complete: write it, forget it
                    done = rows.pop(s)
                    atomic_write_jsonl(shard_dir / f"shard-{s:06d}.jsonl", [done[j] for j in range(size)])
        if rows:  # stream() raises before this on a lost task; a guard against writing a partial set
            raise BackendError("captioning ended with incomplete shards; run the same command again")
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


def embed_private_texts(run_dir: RunDir, embedder, texts: Sequence[str], *, executor=None) -> np.ndarray:
    """Embed the private texts (or captions) once; the features stay in private/ (resume reuses them).
    ``embedder``: a live text embedder (run here, or on ``executor``) or the proxy of
    :meth:`spti.executor.Executor.backend` (run on its executor's replicas)."""
    from spti.executor import step_for

    path = run_dir.private / f"text_features-{embedder.cache_key}.npy"
    done = _finished_features(path, len(texts))
    if done is not None:
        return done
    ex, step = step_for("text_embedder", embedder, executor=executor, name="embedding private texts")
    rows = ex.map(step, [str(t) for t in texts])
    feats = np.stack(rows).astype(np.float32, copy=False) if rows else np.zeros((0, embedder.dim), np.float32)
    atomic_save_npy(path, feats)
    return np.load(path, mmap_mode="r")


def embed_private_images(run_dir: RunDir, cfg: Config, result, embedder, *, executor=None) -> np.ndarray:
    """Private image features (for image voting), in shards then one memory-mapped .npy in private/.
    ``embedder`` as for :func:`embed_private_texts`; each shard's batches are cut from the shard's start and
    the shard is written (atomically) as soon as all its rows are in, so a resumed run redoes at most the
    shards that were in flight."""
    from spti.executor import step_for

    key = embedder.cache_key
    final = run_dir.private / f"image_features-{key}.npy"
    records = result.records
    done = _finished_features(final, len(records))
    if done is not None:
        return done
    shard_dir = run_dir.private / f"image_features-{key}"
    shard_dir.mkdir(parents=True, exist_ok=True)
    n_shards = math.ceil(len(records) / SHARD)
    missing = [s for s in range(n_shards) if not (shard_dir / f"shard-{s:06d}.npy").is_file()]
    if missing:
        ex, step = step_for("image_embedder", embedder, executor=executor, max_pixels=cfg.data.max_pixels,
                            name="embedding private images")
        recs = [r for s in missing for r in records[s * SHARD : (s + 1) * SHARD]]
        where = [(s, j) for s in missing for j in range(len(records[s * SHARD : (s + 1) * SHARD]))]
        rows: dict[int, dict[int, np.ndarray]] = {}
        for r, vecs in ex.stream(step, recs, desc="embedding private images", split_every=SHARD):
            for k, v in zip(r, vecs, strict=True):
                s, j = where[k]
                rows.setdefault(s, {})[j] = v
            for s in {where[k][0] for k in r}:
                size = len(records[s * SHARD : (s + 1) * SHARD])
                if len(rows[s]) == size:  # the shard is complete: write it, forget it
                    done_rows = rows.pop(s)
                    atomic_save_npy(shard_dir / f"shard-{s:06d}.npy",
                                    np.stack([done_rows[j] for j in range(size)]).astype(np.float32, copy=False))
        if rows:  # stream() raises before this on a lost task; a guard against a partial set
            raise BackendError("embedding of the private images ended with incomplete shards; run the same command again")
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
