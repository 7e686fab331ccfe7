"""``release/README.md``: the dataset card that lets a user hand the release over as it is.

A Hugging Face dataset card (YAML front matter + Markdown): what the folder is, how it was made (models,
ε, δ, unit, T, how N is treated), the privacy statement in plain words, what the guarantee does *not*
protect, how to load it and the one command that uploads it.

Why it is built only from the published ledger (:func:`spti.data.release.public_ledger`), the public manifest
(:func:`spti.data.release.public_manifest`) and counts of the release's own files: the card sits inside
``release/``, which is covered by the guarantee only if every byte of it is a function of the DP output and
of public settings. The number of images and captions is a count of DP output (post-processing); N comes
from the ledger, which publishes it by its stated assumption. Nothing else about the private data.
When the run is not private (insecure noise seed, ``not_private``, over budget, no ledger), the card says so
before anything else, in its first line.

A labelled release (``labels.json``) gets a "Labels" section: the classes and their descriptions (public by
the run's stated assumption), the number of images per class (counted in the release: DP output), and how the
class sizes were chosen — a DP estimate (noisy counts, a share of the budget, composed in the ledger) or a
public prior — read from the ledger's budget and the public config (``privacy.class_sizes``). Never the
private per-class counts, which the release does not hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: The first line of a card whose release is not covered by a DP guarantee.
NOT_PRIVATE_HEADLINE = "**NOT DIFFERENTIALLY PRIVATE — do not publish this dataset as private.**"


def _m(d: Any, key: str) -> dict[str, Any]:
    v = d.get(key) if isinstance(d, Mapping) else None
    return dict(v) if isinstance(v, Mapping) else {}


def _exact(v: Any) -> str:
    """A number as privacy.json states it: ``repr`` of a float round-trips exactly (``1e-05``, ``0.013111``)."""
    if isinstance(v, bool) or v is None:
        return "?"
    if isinstance(v, float):
        return "∞" if math.isinf(v) else repr(v)
    if isinstance(v, str) and v.lower() in ("inf", "infinity"):
        return "∞"
    return str(v)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def privacy_status(ledger: Any, manifest: Any) -> tuple[bool, str]:
    """(covered, why not): whether the release is covered by a DP guarantee, from the published ledger and
    manifest alone. Not covered: no ledger, a ledger or manifest that says ``private: false`` (no noise, or
    noise from an insecure seed), or more spent than planned."""
    if isinstance(ledger, Mapping) and ledger.get("covered") is False:  # `spti render --captions` of other captions
        parts = [str(ledger[k]).rstrip(".") + "." for k in ("statement", "explanation") if ledger.get(k)]
        return False, " ".join(parts) or "the release is not covered by this run's privacy ledger."
    if not isinstance(ledger, Mapping) or not isinstance(ledger.get("budget"), Mapping):
        return False, ("this release has no privacy ledger (privacy.json), so nothing in it is covered by a "
                       "differential privacy guarantee.")
    budget = _m(ledger, "budget")
    guarantee = ledger.get("guarantee") if isinstance(ledger.get("guarantee"), str) else ""
    if ledger.get("private") is False or budget.get("private") is False or _m(manifest, "privacy").get("private") is False:
        return False, guarantee or "privacy.json says that this run is not private."
    if _m(ledger, "noise").get("secure") is False or _m(manifest, "noise").get("secure") is False:
        return False, guarantee or "the DP noise was drawn from an insecure, fixed seed."
    if ledger.get("within_budget") is False:
        return False, guarantee or "the recorded mechanisms spent more than the planned budget."
    return True, guarantee


def class_sizes_method(ledger: Any, manifest: Any) -> str | None:
    """How a labelled run chose its class sizes: "dp", "uniform", "prior", or None when neither the public
    config (``privacy.class_sizes``) nor the ledger's budget (a class-count σ: DP counts) says."""
    method = _m(_m(manifest, "config"), "privacy").get("class_sizes")
    if isinstance(method, str):
        return method
    if _m(ledger, "budget").get("class_count_sigma") is not None:
        return "dp"
    return None


def class_sizes_sentence(ledger: Any, manifest: Any) -> str:
    """The card's sentence on how the number of synthetic images per class was chosen."""
    method = class_sizes_method(ledger, manifest)
    pr = _m(_m(manifest, "config"), "privacy")
    if method == "dp":
        sigma_c = _m(ledger, "budget").get("class_count_sigma")
        share = pr.get("class_count_share")
        how = []
        if isinstance(share, (int, float)) and not isinstance(share, bool):
            how.append(f"{share * 100:g} % of the budget's μ²")
        if sigma_c is not None:
            how.append(f"noise σ_c = {_exact(sigma_c)}")
        return ("from a differentially private estimate of the private class sizes: one noisy count per class"
                + (f" ({', '.join(how)})" if how else "") + ", composed with the PE histograms in privacy.json, "
                "then rounded to the population (post-processing). The exact private class sizes were never used.")
    if method == "uniform":
        return ("equal shares: a public prior that does not depend on the private data (no budget is spent on it). "
                "The private class sizes were not used.")
    if method == "prior":
        prior = pr.get("class_prior")
        stated = (" (" + ", ".join(f"{k}: {_exact(v)}" for k, v in prior.items()) + ")") if isinstance(prior, Mapping) else ""
        return ("in the public proportions the user stated" + stated + ": a public prior that does not depend on "
                "the private data (no budget is spent on it). The private class sizes were not used.")
    return "not stated by the ledger or the public configuration."


def _labels_section(ledger: Any, manifest: Any, labels: Mapping[str, Any]) -> list[str]:
    names = [str(n) for n in labels.get("names") or []]
    descriptions = [str(d) for d in labels.get("descriptions") or names]
    images = labels.get("images")
    out = ["## Labels", "",
           f"This release is labelled: {len(names)} classes. Each image's class name is in the `label` column of "
           "metadata.jsonl (and each DP caption's in dp_captions.jsonl when present); labels.json lists the class "
           "names and the descriptions the prompts used. Each class had its own synthetic population, generated "
           "from its description, and only private records of that class voted for it.", "",
           "The number of synthetic captions per class was chosen " + class_sizes_sentence(ledger, manifest), ""]
    header = "| class | description |" + (" images |" if isinstance(images, list) else "")
    out += [header, "|---|---|" + ("---|" if isinstance(images, list) else "")]

    def cell(v: str) -> str:
        return " ".join(v.split()).replace("|", "/").replace("`", "'")

    for i, (n, d) in enumerate(zip(names, descriptions, strict=False)):
        row = f"| {cell(n)} | {cell(d)} |"
        if isinstance(images, list) and i < len(images):
            row += f" {images[i]} |"
        out.append(row)
    return out + [""]


def card_front_matter(ledger: Any, manifest: Any, *, n_images: int, n_captions: int,
                      labels: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The card's YAML header: the Hub's own fields, and ``differential_privacy`` stating ε and δ exactly as
    privacy.json's budget does (a tool can read the guarantee without parsing the text)."""
    budget = _m(ledger, "budget")
    covered, _ = privacy_status(ledger, manifest)
    eps = budget.get("epsilon")
    if covered:
        name = f"spti synthetic images ((ε={_exact(eps)}, δ={_exact(budget.get('delta'))})-DP per {budget.get('unit')})"
    else:
        name = "spti synthetic images (NOT differentially private)"
    dp: dict[str, Any] = {"private": covered}
    for key in ("epsilon", "delta", "unit", "iterations", "sigma", "num_private"):
        if key in budget:
            dp[key] = budget[key]
    if isinstance(ledger, Mapping):
        if isinstance(ledger.get("adjacency"), str):
            dp["adjacency"] = ledger["adjacency"]
        if _m(ledger, "noise").get("kind"):
            dp["noise"] = _m(ledger, "noise")["kind"]
        if isinstance(ledger.get("guarantee"), str):
            dp["guarantee"] = ledger["guarantee"]
    tasks = ["text-to-image", "image-to-text"] if n_images else ["text-generation"]
    if labels is not None:
        if n_images:
            tasks.append("image-classification")
        dp["class_sizes"] = class_sizes_method(ledger, manifest) or "unknown"
    return {
        "pretty_name": name,
        "task_categories": tasks,
        "tags": ["synthetic", "differential-privacy", "private-evolution", "spti"],
        "size_categories": [_size_category(max(n_images, n_captions))],
        "differential_privacy": dp,
    }


def _models_table(manifest: Any) -> str:
    models = _m(manifest, "models")
    if not models:
        return "(no model information in manifest.json)\n"
    rows = ["| role | backend | model | revision / weights |", "|---|---|---|---|"]
    for role, info in models.items():
        info = info if isinstance(info, Mapping) else {}
        ident = info.get("model") or info.get("model_id") or ""
        pin = info.get("revision") or info.get("commit") or info.get("weights_sha256") or info.get("sha256") or ""
        if isinstance(pin, str) and len(pin) > 20:
            pin = pin[:16] + "…"
        rows.append(f"| {role} | {info.get('backend', '')} | {ident} | {pin} |".replace("`", "'"))
    return "\n".join(rows) + "\n"


def build_dataset_card(ledger: Any, manifest: Any, *, n_images: int, n_captions: int,
                       labels: Mapping[str, Any] | None = None) -> str:
    """The text of ``release/README.md`` (see the module docstring for what it may use). ``labels``: a
    labelled release's ``labels.json`` (names, descriptions) and, optionally, ``images``: the number of
    release images per class (counted in metadata.jsonl)."""
    import yaml

    budget = _m(ledger, "budget")
    covered, why = privacy_status(ledger, manifest)
    config = _m(manifest, "config")
    pe, gen, render = _m(config, "pe"), _m(config, "generation"), _m(config, "render")
    unit = budget.get("unit") or "record"
    eps, delta = budget.get("epsilon"), budget.get("delta")
    header = yaml.safe_dump(card_front_matter(ledger, manifest, n_images=n_images, n_captions=n_captions, labels=labels),
                            sort_keys=False, allow_unicode=True)
    out: list[str] = ["---", header.rstrip("\n"), "---", ""]
    if not covered:
        reason = why[len("NOT differentially private: "):] if why.startswith("NOT differentially private: ") else why
        out += [NOT_PRIVATE_HEADLINE + " " + reason[:1].upper() + reason[1:], ""]
    out += [f"# Synthetic {'images' if n_images else 'captions'} made with spti (Private Evolution)", ""]

    # -- what it is
    dp = "differentially private (DP) captions" if covered else "captions (NOT differentially private)"
    if n_images:
        what = f"{n_images} synthetic images with their captions, and the {n_captions} {dp} they were rendered from."
    else:
        what = f"{n_captions} {dp}; no images were rendered."
    out += ["## What this is", "",
            what + " They were made by spti with Private Evolution: a language model proposes captions and the "
            "private data votes for the closest ones through a noisy histogram (the only step whose output depends "
            "on the private data)" + (", and a text-to-image model renders the chosen captions" if n_images else "")
            + ". No private image or caption is in this folder.", ""]
    if covered:
        out += [f"**Privacy guarantee:** {why}", ""]

    # -- how it was made
    out += ["## How it was made", ""]
    rows = [
        ("ε (epsilon)", _exact(eps)),
        ("δ (delta)", _exact(delta)),
        ("unit of privacy", f"one {unit} (adjacency: {ledger.get('adjacency', 'add/remove one ' + unit)})"
         if isinstance(ledger, Mapping) else unit),
        ("T (noisy histograms = PE iterations)", _exact(budget.get("iterations", pe.get("iterations")))),
        ("σ (noise standard deviation)", _exact(budget.get("sigma"))),
        ("noise", _m(ledger, "noise").get("kind") or _m(manifest, "noise").get("kind") or "?"),
        ("voting", f"{pe.get('voting', 'text')} (population {_exact(pe.get('population'))}, "
                   f"{_exact(pe.get('variations'))} variations per parent)" if pe else "?"),
        ("domain (the LLM's prompt)", gen.get("domain")),
        ("images per caption", render.get("images_per_caption") if n_images else None),
        ("spti version", manifest.get("spti_version") if isinstance(manifest, Mapping) else None),
        ("experiment seed (LLM and renderer; never the DP noise)", manifest.get("seed") if isinstance(manifest, Mapping) else None),
    ]
    out += ["| setting | value |", "|---|---|"]
    out += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows if v is not None]
    out += ["", "Models:", "", _models_table(manifest)]
    if isinstance(ledger, Mapping) and isinstance(ledger.get("accounting"), str):
        out += [f"Accounting: {ledger['accounting']}", ""]
    n_text = ledger.get("dataset_size") if isinstance(ledger, Mapping) else None
    if isinstance(n_text, str):
        out += [f"N, the number of private {unit}s: {n_text}", ""]
    if labels is not None:
        out += _labels_section(ledger, manifest, labels)

    # -- the statement in plain words
    out += ["## The privacy statement in plain words", ""]
    if covered and isinstance(eps, (int, float)) and not isinstance(eps, bool) and math.isfinite(eps):
        factor = math.exp(float(eps))
        out += [
            f"Whether any one {unit} was in the private data or not changes the probability of getting this "
            f"dataset (or any conclusion drawn from it) by at most a factor of e^ε ≈ {factor:.3g}, except with "
            f"probability δ = {_exact(delta)}. So nobody who holds this folder — whatever else they know — can "
            f"tell with confidence whether a given {unit}'s data was used, or learn much that is specific to "
            f"it. Smaller ε means stronger protection; ε above about 10 promises little.",
            "",
        ]
    else:
        out += [f"None: {why} Treat every file here as if it were derived directly from the private data.", ""]

    # -- what it does not protect
    out += ["## What it does not protect", ""]
    nots = [
        f"**N, the number of private {unit}s**, is not hidden: see the line on N above.",
        "**What many private records share.** DP bounds the influence of one "
        f"{unit}; content common to many of them (a frequent scene, object, style, logo) is what the dataset "
        "is meant to reproduce, and a synthetic image can look like a private one by chance (a near-copy is "
        "not evidence of a leak, nor ruled out by one).",
        "**Public inputs.** Everything the models saw besides the DP votes is not protected: the models' own "
        "training data, the prompts and examples in the configuration, and, for a retrieval renderer, its "
        "image pool (whose membership is public, and whose images can appear as they are).",
        "**Whoever ran the pipeline** (and any service the private data was sent to: see the trust "
        "assumptions, if any, below) saw the private data; the guarantee covers only what is in this folder.",
        "**The run folder** this release came from (its log, metrics, report, manifest and private/ folder) is "
        "NOT differentially private and must not be published with it.",
    ]
    if labels is not None:
        nots.append("**The label set.** The class names and descriptions are public inputs the user supplied (the "
                    "run states this as a trust assumption); the release publishes them. How many private "
                    f"{unit}s each class holds is not published: the class sizes here are "
                    + ("a DP estimate." if class_sizes_method(ledger, manifest) == "dp" else "a public prior."))
    trust = [t for t in (ledger.get("trust_assumptions") or []) if isinstance(t, str)] if isinstance(ledger, Mapping) else []
    nots += [f"Trust assumption: {t}" for t in trust]
    warns = [w for w in (ledger.get("warnings") or []) if isinstance(w, str)] if isinstance(ledger, Mapping) else []
    nots += [f"Warning: {w}" for w in warns]
    out += [f"- {t}" for t in nots] + [""]

    # -- loading and uploading
    out += ["## How to load it", "", "```python", "from datasets import load_dataset", ""]
    if n_images:
        out += ['ds = load_dataset("imagefolder", data_dir="path/to/release", split="train")',
                'ds[0]["image"], ds[0]["text"]  # a PIL image and the DP caption it was rendered from']
        if labels is not None:
            out += ['ds[0]["label"]  # its class name (labels.json: the classes, in class-index order)']
    else:
        out += ['ds = load_dataset("json", data_files="path/to/release/dp_captions.jsonl", split="train")']
    out += ["```", "", "## How to upload it", "",
            "```bash",
            "huggingface-cli upload <your-name>/<dataset-name> path/to/release --repo-type dataset",
            "```", "",
            "Before publishing, add a `license:` to the header above: the images' terms follow the "
            "text-to-image model's licence.", "",
            "## Files", "",
            "| file | content |", "|---|---|"]
    files = [("dp_captions.jsonl", "the DP captions, one `{\"text\": ...}` per line")]
    if n_images:
        files += [("images/*.png", "the synthetic images"),
                  ("metadata.jsonl", "`{\"file_name\", \"text\", \"label\"}`: each image's caption and class (ImageFolder metadata)"
                   if labels is not None else "`{\"file_name\", \"text\"}`: each image's caption (ImageFolder metadata)")]
    if labels is not None:
        files += [("labels.json", "`{\"names\", \"descriptions\"}`: the classes and their descriptions")]
    files += [("privacy.json", "the privacy ledger: budget, mechanisms, accounting, assumptions"),
              ("manifest.json", "versions, models and the public settings of the run"),
              ("README.md", "this card")]
    out += [f"| {f} | {d} |" for f, d in files] + [""]
    return "\n".join(out)
