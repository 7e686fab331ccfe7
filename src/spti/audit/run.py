"""The audit of a run folder: its private features, owners, budget and candidates, the mechanism it ran
(:func:`audit_run`), and the publishable summary the report reads back (:func:`read_audit`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from spti.audit.core import audit_histogram_mechanism
from spti.audit.mechanism import HistogramMechanism
from spti.audit.result import AUDIT_SCHEMA, AuditResult
from spti.audit.stats import per_release_epsilon
from spti.errors import InputError
from spti.pe.histogram import normalize_rows
from spti.privacy import NoiseSource

__all__ = ["AUDIT_FILE", "SYNTHETIC_CANDIDATES_SEED", "audit_run", "read_audit"]

#: Where :func:`audit_run` writes its result, relative to the run folder. In private/ because the
#: canary's bin (and the clean count there) are derived from private data; the report may show
#: ``summary`` only.
AUDIT_FILE = "private/audit.json"

#: Public seed of the fallback candidate set (random unit vectors) when a run's cache cannot give the
#: candidates' features back. Public randomness: it depends on nothing private.
SYNTHETIC_CANDIDATES_SEED = 20240917


def audit_run(
    run_dir: str | Path,
    *,
    trials: int = 100_000,
    alpha: float = 0.05,
    iteration: int | None = None,
    canary: str | np.ndarray = "auto",
    canary_rows: int | None = None,
    full_histogram: bool = True,
    noise: NoiseSource | None = None,
    mechanism: HistogramMechanism | None = None,
    threshold: float | None | str = "config",
    write: bool = True,
) -> AuditResult:
    """Audit the histogram mechanism of a finished (or started) run: its private features (memory-mapped),
    its weights (user-level owners from ``private/ingest.jsonl`` or the private text file), its σ, δ,
    threshold, nn backend and normalisation, against the candidates of ``iteration`` (default: the last
    one with candidates on disk) embedded from the run's feature cache.

    If the cache cannot give every candidate's features back (e.g. text voting with lookahead, whose
    variations are not on disk), a synthetic candidate set of the same size is used: random unit vectors
    from a fixed public seed (:data:`SYNTHETIC_CANDIDATES_SEED`). The result's ``candidates`` says which.

    The mechanism is the run's, built from the budget it recorded: the engine's release function
    (:func:`spti.pe.histogram.release_histogram`) with the budget's σ and noise kind — the Gaussian
    (:meth:`HistogramMechanism.gaussian`) or, for ``privacy.noise: discrete``, the exact discrete Gaussian on
    the budget's integer vote grid (:meth:`HistogramMechanism.discrete`; its exact sampler is slower per draw,
    so ``full_histogram=False`` suits it) — drawing from ``noise`` (default: a secure :class:`NoiseSource`),
    with ``pe.nn_backend``/``chunk_size``/``normalize`` and ``threshold="config"`` (``pe.threshold``: what
    selection sees; None audits the noisy histogram itself). ``mechanism`` replaces it whole. The claim is
    the ε of one histogram by the accountant proven for the noise kind (:func:`per_release_epsilon`). Writes
    ``private/audit.json`` (:data:`AUDIT_FILE`) unless ``write=False``; nothing goes to release/.
    """
    from spti.data.io import atomic_write_json, read_json
    from spti.data.run import RunDir
    from spti.privacy import PrivacyBudget

    run = RunDir(run_dir)
    if not run.is_run():
        raise InputError(f"{run.path} is not an spti run folder (no config.yaml)")
    cfg = run.load_config()
    pe = cfg.pe

    # ------------------------------------------------------------ the claim
    budget_dict = None
    if run.privacy_path.is_file():
        budget_dict = read_json(run.privacy_path).get("budget")
    if budget_dict is None:
        budget_dict = run.manifest().get("privacy")
    if budget_dict is None:
        raise InputError(f"{run.path}: no privacy budget recorded yet; run the evolve stage first")
    budget = PrivacyBudget.from_dict(budget_dict)

    # ------------------------------------------------------------ private features and owners
    prefix = "text_features-" if pe.voting == "text" else "image_features-"
    files = sorted(p for p in run.private.glob(f"{prefix}*.npy") if not p.name.endswith(".tmp.npy"))
    if not files:
        raise InputError(f"{run.path}: no private {pe.voting} features in private/; run the pipeline first")
    if len(files) > 1:
        ns = "text-" if pe.voting == "text" else "render-features-"
        with_cache = [p for p in files if (run.cache / (ns + p.stem[len(prefix):])).is_dir()]
        if len(with_cache) != 1:
            raise InputError(f"{run.path}: {len(files)} private feature files in private/; cannot tell which the run used")
        files = with_cache
    feats = np.load(files[0], mmap_mode="r")
    embed_key = files[0].stem[len(prefix):]
    owners = _owners(run, cfg, budget.unit, feats.shape[0])

    # ------------------------------------------------------------ candidates of one iteration
    t = iteration if iteration is not None else _last_iteration(run)
    cand, cand_info = _candidate_features(run, cfg, t, embed_key, feats.shape[1])

    th = pe.threshold if threshold == "config" else threshold
    kind = getattr(budget, "noise", "gaussian")
    grid = getattr(budget, "grid", None)
    common = dict(noise=noise, threshold=th, nn_backend=pe.nn_backend, chunk_size=pe.chunk_size, normalize=pe.normalize)
    if mechanism is not None:
        mech = mechanism
    elif kind == "discrete" and budget.private:
        mech = HistogramMechanism.discrete(budget.sigma, grid if grid is not None else 1, **common)
    else:
        mech = HistogramMechanism.gaussian(budget.sigma, **common)
    rows = canary_rows if canary_rows is not None else (3 if owners is not None else 1)
    claim = per_release_epsilon(budget.sigma, budget.delta, noise=kind, unit=budget.unit, grid=grid)
    result = audit_histogram_mechanism(
        feats, cand, mechanism=mech, owners=owners, trials=trials, canary=canary, canary_rows=rows,
        alpha=alpha, delta=budget.delta, claimed_epsilon=claim, full_histogram=full_histogram,
    )
    result.claimed_epsilon_run = budget.epsilon
    result.iterations = budget.iterations
    result.candidates = cand_info
    if write:
        d = result.to_dict()
        d["run_note"] = ("describes the histogram mechanism, not the data; kept in private/ because the canary's "
                         "position is derived from the private votes. Only 'summary' may be shown in a report.")
        atomic_write_json(run.path / AUDIT_FILE, d)
    return result


def read_audit(run_dir: str | Path) -> dict[str, Any] | None:
    """The publishable ``summary`` of a run's last audit (for the report), or None if it was never audited."""
    from spti.data.io import read_json

    p = Path(run_dir) / AUDIT_FILE
    if not p.is_file():
        return None
    data = read_json(p)
    if not isinstance(data, dict) or data.get("schema") != AUDIT_SCHEMA:
        return None
    return data.get("summary")


def _owners(run: Any, cfg: Any, unit: str, n_rows: int) -> list[str] | None:
    """Who owns each private row, exactly as the pipeline weighs the votes (None at record level)."""
    if unit != "user":
        return None
    if run.manifest().get("command") == "evolve":  # private texts: the user column of the text file
        from spti.data.texts import read_texts

        texts = read_texts(cfg.data.private, text_column=cfg.data.text_column, user_column=cfg.data.user_column)
        owners = texts.owners("user")
    else:
        from spti.data.images import IngestResult
        from spti.stages.private import private_units

        owners, _ = private_units(cfg, IngestResult.load(run.private))
    if owners is None or len(owners) != n_rows or any(o is None for o in owners):
        raise InputError(f"{run.path}: the user ids do not match the {n_rows} private feature rows")
    return owners


def _last_iteration(run: Any) -> int:
    its = sorted(int(p.parent.name[5:]) for p in run.checkpoints.glob("iter_*/candidates.jsonl")
                 if p.parent.name[5:].isdigit())
    if not its:
        raise InputError(f"{run.path}: no PE iteration has candidates yet; nothing to audit")
    return its[-1]


def _candidate_features(run: Any, cfg: Any, t: int, embed_key: str, dim: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The features the run's private samples voted against in iteration ``t``, from the feature cache;
    else a public synthetic set of the same size."""
    from spti.data.cache import FeatureCache, render_seed
    from spti.data.io import read_jsonl
    from spti.hashing import content_key

    path = run.checkpoints / f"iter_{t:03d}" / "candidates.jsonl"
    if not path.is_file():
        raise InputError(f"{run.path}: iteration {t} has no candidates.jsonl")
    texts = [r["text"] for r in read_jsonl(path)]
    pe = cfg.pe
    feats: np.ndarray | None = None
    why = ""
    if pe.voting == "text":
        if pe.lookahead:
            why = "text voting with lookahead: the lookahead variations are not on disk"
        else:
            cache = FeatureCache(run.cache, f"text-{embed_key}")
            vecs = [cache.get(content_key(embed_key, s)) for s in texts]
            if all(v is not None for v in vecs):
                feats = np.stack(vecs).astype(np.float32)
                feats = normalize_rows(feats) if pe.normalize else feats
            else:
                why = "some candidates' text features are not in the cache"
    else:
        renders = max(1, pe.lookahead)
        seeds = [render_seed(cfg.render.seed, j) for j in range(renders)]
        cache = FeatureCache(run.cache, f"render-features-{embed_key}")
        for rdir in sorted(p for p in (run.cache / "renders").glob("*") if p.is_dir()):
            vecs = [cache.get(content_key(rdir.name, embed_key, s, str(seed))) for s in texts for seed in seeds]
            if all(v is not None for v in vecs):
                f = np.stack(vecs).astype(np.float32)
                f = normalize_rows(f) if pe.normalize else f
                feats = f.reshape(len(texts), renders, -1).mean(axis=1)
                break
        else:
            why = "some candidates' render features are not in the cache"
    if feats is not None and feats.shape[1] == dim:
        return feats, {"source": "cache", "iteration": t, "count": len(texts),
                       "note": "the features the private samples voted against in this iteration"}
    rng = np.random.default_rng(SYNTHETIC_CANDIDATES_SEED)
    synth = normalize_rows(rng.standard_normal((len(texts), dim)).astype(np.float32))
    return synth, {"source": "synthetic", "iteration": t, "count": len(texts), "seed": SYNTHETIC_CANDIDATES_SEED,
                   "note": f"{why or 'cached features have the wrong dimension'}; random unit vectors from a "
                           "public seed stand in (the audit tests vote weights, noise and thresholding; the "
                           "candidates' geometry only decides which bin the canary lands in)"}
