"""The release folder: what a user hands over, and nothing computed from the private data but the DP output.

Layout (Hugging Face ImageFolder, loadable with ``datasets.load_dataset("imagefolder", data_dir=...)``)::

    release/dp_captions.jsonl     {"text": ...}                 the DP captions
    release/images/00000.png
    release/metadata.jsonl        {"file_name": "images/00000.png", "text": ...}
    release/labels.json           {"names": [...], "descriptions": [...]}   labelled runs only
    release/privacy.json          the budget ledger
    release/manifest.json         versions, models, the budget, the public settings (see public_manifest)
    release/README.md             the dataset card (spti.data.card), built from the two files above

Why allow-lists, for the files and for the manifest's fields: a user hands ``release/`` to a third party
believing every byte of it is covered by the (ε, δ) guarantee. A deny-list misses whatever a later change
adds (a count, a path, a seed); an allow-list publishes only what was judged public, and anything new stays
in the run folder until someone decides otherwise. The run folder's own ``manifest.json`` keeps everything.

Labelled runs (:mod:`spti.data.labels`): each caption of ``dp_captions.jsonl`` and each row of
``metadata.jsonl`` also has ``"label": <class name>`` (``load_dataset("imagefolder", ...)`` gives a ``label``
column), and ``labels.json`` lists the classes with their descriptions. Both are public: the class of a
synthetic caption is DP output (its population was chosen by the DP mechanism) and the label set is public
by the run's stated assumption. The public config then also says how the class sizes were chosen
(``privacy.class_sizes`` and its share or prior) and the class descriptions (``classes``).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from spti.data.io import atomic_write_bytes, atomic_write_json, atomic_write_jsonl
from spti.data.run import command_name
from spti.log import logger

#: The only files of release/ (besides images/*.png); anything else found there is removed.
RELEASE_FILES = ("dp_captions.jsonl", "metadata.jsonl", "privacy.json", "manifest.json", "README.md", "labels.json")
#: The label set of a labelled release (:func:`write_labels`).
LABELS_FILE = "labels.json"
#: The release's image folder and the one kind of file it holds.
RELEASE_IMAGES = ("images", ".png")

#: Manifest fields published as they are: versions, the experiment seed (it drives the LLM and the
#: renderer, never the DP noise) and the budget (whose N is public by the ledger's stated assumption).
_PUBLIC_FIELDS = ("spti_version", "python", "libraries", "seed", "privacy")
#: What the release says about each model: its identity, the hashes of its weights and the settings that
#: shape its output; nothing measured on data (a retrieval pool's size or fingerprint, once private images
#: are dropped from the pool, is such a measure) and no path but the model's own name as the user gave it.
_MODEL_FIELDS = ("backend", "model", "model_id", "revision", "commit", "weights_sha256", "sha256",
                 "local_fingerprint", "gguf_file", "bundled", "family", "pipeline_class", "protocol", "dtype",
                 "num_inference_steps", "guidance_scale", "height", "width", "size", "top_k")
#: What the release says about the noise: whether it is secure and what sampler drew it; never its seed.
_NOISE_FIELDS = ("secure", "source", "kind", "sampler", "warning")
#: Sections of the resolved config that hold only public settings (the prompts and PE's parameters), and
#: the published fields of the others. Not published: ``data`` (the private data's location and schema),
#: ``out``, ``evaluate`` (metrics are not DP and are not in the release), the insecure noise seed.
_PUBLIC_CONFIG_SECTIONS = ("seed", "generation", "pe", "render")
_PUBLIC_PRIVACY_SETTINGS = ("epsilon", "delta", "sigma", "unit", "not_private", "noise", "num_private_bound")
_MODEL_SECTIONS = ("llm", "text_embedder", "captioner", "image_embedder", "renderer", "release_renderer")
_PUBLIC_MODEL_SETTINGS = ("backend", "model", "revision")
#: Published only for a labelled run (an unlabelled run's release is unchanged): how the class sizes were
#: chosen, and the class descriptions (public by the run's stated assumption, like the label set).
_PUBLIC_LABEL_SETTINGS = ("class_sizes", "class_count_share", "class_prior")
#: Ledger fields that never leave the run folder, wherever they appear (privacy.json is published whole
#: otherwise: it is the release's statement of its guarantee).
_LEDGER_NEVER = frozenset({"insecure_seed", "insecure_noise_seed", "noise_seed", "command", "last_command",
                           "num_private_rows", "data", "private_paths"})


def _pick(d: Any, keys: Sequence[str]) -> dict[str, Any]:
    return {k: d[k] for k in keys if isinstance(d, Mapping) and k in d}


def public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config as published: the allow-listed sections and fields only (see above)."""
    out = _pick(config, _PUBLIC_CONFIG_SECTIONS)
    if isinstance(config.get("privacy"), Mapping):
        out["privacy"] = _pick(config["privacy"], _PUBLIC_PRIVACY_SETTINGS)
        if _config_labelled(config):
            out["privacy"].update(_pick(config["privacy"], _PUBLIC_LABEL_SETTINGS))
            if out["privacy"].get("class_sizes") != "dp":
                out["privacy"].pop("class_count_share", None)  # no budget is spent on the counts
            if out["privacy"].get("class_sizes") != "prior":
                out["privacy"].pop("class_prior", None)
    if _config_labelled(config) and isinstance(config.get("classes"), Mapping):
        out["classes"] = dict(config["classes"])
    for sec in _MODEL_SECTIONS:
        if isinstance(config.get(sec), Mapping):
            out[sec] = _pick(config[sec], _PUBLIC_MODEL_SETTINGS)
    return out


def _config_labelled(config: Mapping[str, Any]) -> bool:
    """:func:`spti.config.labelled` on a resolved config's dict (whether labels are read, not from where)."""
    data = config.get("data")
    return isinstance(data, Mapping) and bool(data.get("labels_from_subfolders") or data.get("label_column"))


def public_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The release's manifest, built from an allow-list of the run manifest's fields: spti and library
    versions, the subcommand, the experiment seed, model identities and weight hashes, the budget, whether
    the noise is secure, and the public part of the config. Nothing else: no count computed from the private
    data (ingest, captioning, stage records, rows), no path, no command line, no insecure noise seed."""
    m = _pick(manifest, _PUBLIC_FIELDS)
    if "command" in manifest:
        m["command"] = command_name(manifest["command"])
    if isinstance(manifest.get("models"), Mapping):
        m["models"] = {role: (_pick(info, _MODEL_FIELDS) if isinstance(info, Mapping) else None)
                       for role, info in manifest["models"].items()}
    if isinstance(manifest.get("noise"), Mapping):
        m["noise"] = _pick(manifest["noise"], _NOISE_FIELDS)
        if manifest["noise"].get("secure") is False and isinstance(m.get("privacy"), Mapping):
            # the budget says what the noise would give if it were secret; the release must not read as private
            m["privacy"] = {**m["privacy"], "private": False}
    if isinstance(manifest.get("config"), Mapping):
        m["config"] = public_config(manifest["config"])
    return m


def public_ledger(ledger: Any) -> Any:
    """The ledger as published: whole, less the fields that never leave the run folder (defence in depth:
    the ledger is written to be public)."""
    if isinstance(ledger, Mapping):
        return {k: public_ledger(v) for k, v in ledger.items() if k not in _LEDGER_NEVER}
    if isinstance(ledger, list):
        return [public_ledger(v) for v in ledger]
    return ledger


def write_captions(release: Path, texts: Sequence[str], labels: Sequence[str] | None = None) -> None:
    """``dp_captions.jsonl``: one ``{"text": ...}`` per DP caption, with ``"label": <class name>`` when
    ``labels`` (one per caption) is given."""
    if labels is None:
        atomic_write_jsonl(release / "dp_captions.jsonl", ({"text": t} for t in texts))
        return
    if len(labels) != len(texts):
        raise ValueError(f"write_captions: {len(labels)} labels for {len(texts)} captions")
    atomic_write_jsonl(release / "dp_captions.jsonl",
                       ({"text": t, "label": str(lab)} for t, lab in zip(texts, labels, strict=True)))


def write_labels(release: Path, names: Sequence[str] | None, descriptions: Sequence[str] | None = None) -> None:
    """``labels.json`` = ``{"names": [...], "descriptions": [...]}`` (class ``i`` is ``names[i]``) for a
    labelled release; ``names=None`` removes a stale one (an unlabelled render after a labelled one)."""
    path = release / LABELS_FILE
    if names is None:
        path.unlink(missing_ok=True)
        return
    descriptions = list(names) if descriptions is None else list(descriptions)
    if len(descriptions) != len(names):
        raise ValueError("write_labels: one description per class name")
    release.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"names": [str(n) for n in names], "descriptions": [str(d) for d in descriptions]})


def png_bytes(img: Image.Image) -> bytes:
    """How spti stores an image it made (a render, a release image): RGB, PNG-encoded."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_images(release: Path, items: Sequence[tuple[str, Image.Image | Path]],
                 labels: Sequence[str] | None = None) -> list[dict[str, str]]:
    """Write ``(caption, image or path to a cached PNG)`` pairs as images/NNNNN.png + metadata.jsonl; with
    ``labels`` (a class name per item) each metadata row also gets ``"label"``. Existing files of a previous
    (interrupted) release are replaced atomically one by one."""
    if labels is not None and len(labels) != len(items):
        raise ValueError(f"write_images: {len(labels)} labels for {len(items)} images")
    images_dir = release / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(items))))
    rows = []
    for i, (text, img) in enumerate(items):
        name = f"images/{i:0{width}d}.png"
        target = release / name
        if isinstance(img, Path):
            if img.suffix.lower() == ".png":
                tmp = target.with_suffix(".png.tmp")
                shutil.copyfile(img, tmp)
                tmp.replace(target)
            else:
                with Image.open(img) as im:
                    atomic_write_bytes(target, png_bytes(im))
        else:
            atomic_write_bytes(target, png_bytes(img))
        row = {"file_name": name, "text": text}
        if labels is not None:
            row["label"] = str(labels[i])
        rows.append(row)
    # stale images of an earlier, larger release would be picked up by ImageFolder: remove them
    keep = {r["file_name"].split("/", 1)[1] for r in rows}
    for f in images_dir.iterdir():
        if f.name not in keep:
            f.unlink()
    atomic_write_jsonl(release / "metadata.jsonl", rows)
    return rows


def prune_release(release: Path) -> list[str]:
    """Remove every file of ``release`` that is not on the allow-list (:data:`RELEASE_FILES`, images/*.png),
    and every empty folder left; return the removed paths (relative). Why: release/ is handed over whole, so
    whatever else lands there (a temporary file of an interrupted write, a file of another tool or version)
    would be published without anyone having judged it public."""
    if not release.is_dir():
        return []
    images, ext = RELEASE_IMAGES
    removed: list[str] = []
    for p in sorted(release.rglob("*"), reverse=True):  # children before their folders
        rel = p.relative_to(release)
        if p.is_dir() and not p.is_symlink():
            if rel.as_posix() != images and not any(p.iterdir()):
                p.rmdir()
            continue
        allowed = (len(rel.parts) == 1 and rel.name in RELEASE_FILES) or (
            len(rel.parts) == 2 and rel.parts[0] == images and rel.suffix == ext and not rel.name.startswith(".")
        )
        if not allowed or p.is_symlink():
            p.unlink()
            removed.append(rel.as_posix())
    if removed:
        logger.warning("release: removed %d file(s) that are not part of a release: %s", len(removed),
                       ", ".join(removed[:10]))
    return removed


def write_release_docs(release: Path, privacy: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Write the ledger and the public manifest into ``release``, then prune it to its allow-list: the last
    step of every command that writes a release."""
    release.mkdir(parents=True, exist_ok=True)
    ledger, public = public_ledger(privacy), public_manifest(manifest)
    atomic_write_json(release / "privacy.json", ledger)
    atomic_write_json(release / "manifest.json", public)
    prune_release(release)
    write_card(release, ledger, public)


def write_card(release: Path, ledger: Any, public: Mapping[str, Any]) -> None:
    """Write ``README.md``, the dataset card (:mod:`spti.data.card`), from the published ledger and manifest
    and the counts of the release's own (DP) files: images/*.png and the rows of dp_captions.jsonl; for a
    labelled release also its labels.json and the number of images per class in metadata.jsonl."""
    from spti.data.card import build_dataset_card
    from spti.data.io import atomic_write_text

    images, ext = RELEASE_IMAGES
    n_images = sum(1 for p in (release / images).glob(f"*{ext}") if p.is_file()) if (release / images).is_dir() else 0
    caps = release / "dp_captions.jsonl"
    n_captions = sum(1 for line in caps.read_text(encoding="utf-8").splitlines() if line.strip()) if caps.is_file() else 0
    atomic_write_text(release / "README.md", build_dataset_card(ledger, public, n_images=n_images, n_captions=n_captions,
                                                                labels=_release_labels(release)))


def _release_labels(release: Path) -> dict[str, Any] | None:
    """A labelled release's classes for its card: ``labels.json`` plus the number of images and captions of
    each class, counted in the release's own metadata.jsonl / dp_captions.jsonl (DP output). None when the
    release is not labelled or its labels.json is unreadable."""
    import json

    from spti.data.io import iter_jsonl

    path = release / LABELS_FILE
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        names = [str(n) for n in obj["names"]]
        descriptions = [str(d) for d in obj.get("descriptions") or names]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    out: dict[str, Any] = {"names": names, "descriptions": descriptions}
    for key, name in (("images", "metadata.jsonl"), ("captions", "dp_captions.jsonl")):
        if (release / name).is_file():
            counts = dict.fromkeys(names, 0)
            for row in iter_jsonl(release / name, on_bad_line=lambda *_: None):
                lab = row.get("label") if isinstance(row, Mapping) else None
                if isinstance(lab, str) and lab in counts:
                    counts[lab] += 1
            out[key] = [counts[n] for n in names]
    return out
