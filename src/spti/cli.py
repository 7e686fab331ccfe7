"""``spti``: a thin command line over the library. Parses (the grammar is :mod:`spti.cli_args`), builds a
:class:`spti.config.Config`, calls :mod:`spti.pipeline`. Heavy modules are imported inside each command, so
``spti privacy`` starts fast."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import sys
from pathlib import Path
from typing import Any

from spti.cli_args import AUDIT_VIOLATION_EXIT, build_parser
from spti.errors import SptiError

__all__ = ["AUDIT_VIOLATION_EXIT", "COMMANDS", "build_parser", "main"]


# ---------------------------------------------------------------------------- from flags to a Config
def _overrides(a: argparse.Namespace) -> dict[str, Any]:
    g = lambda k: getattr(a, k, None)  # noqa: E731
    o: dict[str, Any] = {
        "out": g("out"),
        "seed": g("seed"),
        "privacy.epsilon": g("epsilon"),
        "privacy.delta": g("delta"),
        "privacy.sigma": g("sigma"),
        "privacy.unit": g("unit"),
        "privacy.insecure_noise_seed": g("insecure_noise_seed"),
        "privacy.num_private_bound": g("num_private_bound"),
        "privacy.noise": g("noise"),
        "privacy.grid": g("grid"),
        "generation.domain": g("domain"),
        "pe.iterations": g("iterations"),
        "pe.population": g("population"),
        "pe.variations": g("variations"),
        "pe.selection": g("selection"),
        "pe.threshold": g("threshold"),
        "pe.lookahead": g("lookahead"),
        "pe.voting": g("voting"),
        "data.user_column": g("user_column"),
        "data.public_pool": g("public_pool"),
        "data.label_column": g("label_column"),
        "privacy.class_sizes": g("class_sizes"),
        "privacy.class_count_share": g("class_count_share"),
        "executor.kind": g("executor"),
        "executor.address": g("ray_address"),
    }
    if g("not_private"):
        o["privacy.not_private"] = True
    if g("no_progress"):
        o["progress"] = False
    if g("allow_remote_captioner"):
        o["allow_remote_captioner"] = True
    if g("users_from_subfolders"):
        o["data.users_from_subfolders"] = True
    if g("labels_from_subfolders"):
        o["data.labels_from_subfolders"] = True
    if isinstance(g("metrics"), str) and getattr(a, "command", None) == "run":
        o["evaluate.metrics"] = [m.strip() for m in g("metrics").split(",") if m.strip()]
    if g("eval_per_iteration"):
        o["evaluate.per_iteration"] = True
    if getattr(a, "command", None) == "run":
        o["evaluate.real_labelled"] = g("real_labelled")
    return o


def _config(a: argparse.Namespace, extra: dict[str, Any] | None = None):
    from spti.config import Config

    base = None
    if getattr(a, "config", None):
        base = Config.from_yaml(a.config)
    elif getattr(a, "out", None) and (Path(a.out) / "config.yaml").is_file():
        base = Config.from_yaml(Path(a.out) / "config.yaml")  # stages run alone reuse their run's config
    else:
        base = Config()
    o = _overrides(a)
    o.update(extra or {})
    cfg = base.merged(o)
    # What dotted overrides cannot say (Config.merged skips None values) is set on the dict: --sigma clears the
    # default epsilon, --llm replaces the whole llm section (no options of another backend carried over).
    d = cfg.to_dict(redact=False)  # a live config: keeps the user's credentials
    if getattr(a, "sigma", None) is not None:
        d["privacy"]["epsilon"] = None
    if getattr(a, "llm", None):
        d["llm"] = {"backend": a.llm}
    if getattr(a, "llm_model", None):
        d["llm"]["model"] = a.llm_model
    if getattr(a, "embedder_model", None):
        d["text_embedder"]["model"] = a.embedder_model
    return Config.from_dict(d)


# ---------------------------------------------------------------------------- commands
def cmd_privacy(a: argparse.Namespace) -> int:
    """ε ↔ σ for T iterations and N private units, with what the guarantee assumes about N, a warning when δ
    is too large to mean anything, and (``--noise discrete``) the exact sampler's ε next to the continuous one.
    ``--labelled`` / ``--class-count-share``: the split between the histograms (σ) and the class counts (σ_c)."""
    from spti.privacy import PrivacyBudget, compare_noise, dataset_size_statement, delta_warning

    if a.sigma is not None and a.epsilon is not None:
        raise SptiError("give --epsilon or --sigma, not both")
    if a.num_private is None and a.num_private_bound is None:
        raise SptiError("give --num-private (N) or --num-private-bound (a public upper bound on N)")
    if a.num_private is not None and a.num_private_bound is not None and a.num_private > a.num_private_bound:
        raise SptiError("--num-private is above --num-private-bound: the bound must be an upper bound on N")
    unit = a.unit or "record"
    n = a.num_private_bound if a.num_private_bound is not None else a.num_private
    kw: dict[str, Any] = dict(delta=a.delta, unit=unit, noise=a.noise or "gaussian", grid=a.grid,
                              num_private_is_bound=a.num_private_bound is not None)
    share = getattr(a, "class_count_share", None)
    if share is not None or getattr(a, "labelled", False):
        kw["class_count_share"] = 0.05 if share is None else share
    if a.sigma is not None:
        b = PrivacyBudget.from_sigma(a.sigma, a.iterations, n, **kw)
    else:
        eps = 1.0 if a.epsilon is None else a.epsilon
        b = PrivacyBudget.from_epsilon(eps, a.iterations, n, **kw)
    # the comparison is of the histograms alone; with class counts the budget is their composition
    comparison = (compare_noise(b.sigma, b.iterations, b.delta, unit=b.unit, scale=b.grid)
                  if b.noise == "discrete" and b.class_count_sigma is None else None)
    split = _budget_split(b)
    warning = delta_warning(b)
    if a.json:
        d = b.to_dict()
        if split is not None:
            d["split"] = split
        d["dataset_size"] = dataset_size_statement(b)
        d["warnings"] = [warning] if warning else []
        if comparison is not None:
            d["noise_comparison"] = comparison.to_dict()
        print(json.dumps(d, indent=2))
    else:
        print(b.describe())
        if split is not None:
            print(f"split: histograms sigma = {split['sigma']:.4g} (T = {b.iterations}, mu = {split['mu_histograms']:.4g}); "
                  f"class counts sigma_c = {split['class_count_sigma']:.4g} (mu = {split['mu_class_counts']:.4g}, "
                  f"{100 * split['class_count_share']:.3g}% of mu^2 = {b.mu:.4g}^2)")
        if comparison is not None:
            print(f"noise: {comparison.describe()}")
        print(f"N: {dataset_size_statement(b)}")
        if warning:
            print(f"WARNING: {warning}")
    return 0


def _budget_split(b: Any) -> dict[str, float] | None:
    """The labelled budget's split for ``spti privacy``: σ and μ of the histograms and of the class counts."""
    if b.class_count_sigma is None or not b.private:
        return None
    from spti.privacy.class_counts import count_share

    return {
        "sigma": b.sigma,
        "class_count_sigma": b.class_count_sigma,
        "class_count_share": count_share(b.sigma, b.iterations, b.class_count_sigma),
        "mu_histograms": b.iterations ** 0.5 / b.sigma,
        "mu_class_counts": 1.0 / b.class_count_sigma,
        "mu": b.mu,
    }


def cmd_evolve(a: argparse.Namespace) -> int:
    from spti.pipeline import evolve_texts

    extra = {"data.private": a.private, "data.text_column": a.text_column, "pe.voting": "text"}
    cfg = _config(a, extra)
    if a.dry_run:
        return _print_plan(cfg, "evolve", a)
    run_dir = evolve_texts(cfg, command="evolve")  # the subcommand only: argv names the private data
    print(f"DP captions: {run_dir.release / 'dp_captions.jsonl'}")
    print(f"privacy:     {run_dir.privacy_path}")
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from spti.pipeline import run

    cfg = _config(a, {"data.private": a.data})
    if a.dry_run:
        return _print_plan(cfg, "run", a)
    run_dir = run(cfg, command="run")  # the subcommand only: argv names the private data
    print(f"release: {run_dir.release}")
    if (run_dir.path / "report.html").is_file():
        print(f"report:  {run_dir.path / 'report.html'}")
    return 0


def cmd_caption(a: argparse.Namespace) -> int:
    from spti.executor import activate, make_executor
    from spti.stages import open_run
    from spti.stages.private import caption_stage, ingest_stage

    cfg = _config(a, {"data.private": a.data})
    run_dir = open_run(cfg, "caption")
    result = ingest_stage(run_dir, cfg)
    with make_executor(cfg) as ex, activate(ex):  # the captioner runs where the config says (local or Ray)
        caps = caption_stage(run_dir, cfg, result, executor=ex)
    print(f"captioned {len(caps)} private images; captions are private: {run_dir.private / 'captions'}")
    return 0


def cmd_render(a: argparse.Namespace) -> int:
    from spti.data.io import read_jsonl
    from spti.stages import finish_release_docs, open_run
    from spti.stages.render import (
        caption_provenance,
        caption_rows_labels,
        mark_release_coverage,
        render_stage,
    )

    cfg = _config(a)
    caption_rows = read_jsonl(a.captions)
    texts = [r["text"] for r in caption_rows]
    if not texts:
        raise SptiError(f"{a.captions}: no captions")
    run_dir = open_run(cfg, "render", post_processing=True)
    if a.renderer:
        cfg = cfg.merged({"release_renderer": {"backend": a.renderer, **({"model": a.renderer_model} if a.renderer_model else {})}})
    provenance = caption_provenance(run_dir, texts)  # before rendering: the run's own captions, or not?
    labels, label_names = caption_rows_labels(run_dir, caption_rows)  # a labelled run's captions keep their class
    from spti.executor import activate, make_executor

    with make_executor(cfg) as ex, activate(ex):  # the renderer runs where the config says (local or Ray)
        rows = render_stage(run_dir, cfg, texts, labels=labels, label_names=label_names, executor=ex)
    finish_release_docs(run_dir, cfg)
    mark_release_coverage(run_dir, provenance)
    print(f"rendered {len(rows)} images: {run_dir.release}")
    if not provenance["covered"]:
        print("privacy: NOT covered by this run's ledger (the captions are not this run's DP captions); "
              f"see {run_dir.release / 'privacy.json'}")
    return 0


def cmd_audit(a: argparse.Namespace) -> int:
    from spti.audit import AUDIT_FILE, audit_run
    from spti.data.run import RunDir

    with RunDir(a.run).lock() if RunDir(a.run).is_run() else contextlib.nullcontext():  # one command per folder
        result = audit_run(a.run, trials=a.trials, alpha=a.alpha, iteration=a.iteration, full_histogram=not a.bin_only)
    print(result.describe())
    print(f"({result.seconds:.1f} s; candidates: {result.candidates.get('source', '?')}, iteration "
          f"{result.candidates.get('iteration', '?')})")
    run = Path(a.run)
    print(f"audit:  {run / AUDIT_FILE} (private/: it locates the canary in the private votes)")
    if a.report:
        from spti.report import build_report

        print(f"report: {build_report(run)}")
    elif (run / "report.html").is_file():
        print(f"the report shows the audit once rebuilt: spti report {run}")
    return AUDIT_VIOLATION_EXIT if result.violation else 0


def cmd_demo(a: argparse.Namespace) -> int:
    from spti.demo import DEFAULTS, run_demo

    if getattr(a, "conditional", False):
        from spti.demo_conditional import cli_demo

        return cli_demo(a)
    for key in ("num_private", "pool_size", "population", "iterations", "variations"):  # None: not given
        if getattr(a, key, None) is None:
            setattr(a, key, DEFAULTS[key])
    run_dir = run_demo(
        out=a.out or "runs/demo",
        num_private=a.num_private,
        pool_size=a.pool_size,
        population=a.population,
        iterations=a.iterations,
        variations=a.variations,
        epsilon=a.epsilon if a.epsilon is not None else 1.0,
        voting=a.voting or DEFAULTS["voting"],
        seed=a.seed or 0,
        progress=not a.no_progress,
        footwear=a.footwear,
    )
    print(f"release: {run_dir.release}")
    print(f"report:  {run_dir.path / 'report.html'}")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from spti.metrics.evaluate import evaluate

    metrics = tuple(m.strip() for m in a.metrics.split(",") if m.strip())
    res = evaluate(a.real, a.synthetic, metrics=metrics, out=Path(a.out) if a.out else None, max_images=a.max_images,
                   real_train=a.real_train, cnn={"epochs": a.cnn_epochs} if a.cnn_epochs else None)
    print(json.dumps(res, indent=2, default=str))
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from spti.data.run import RunDir
    from spti.report import build_report

    run = RunDir(a.run)
    if run.is_run():
        run.lock()  # one command per run folder: not while a run is writing into it
    p = build_report(Path(a.run), show_private=a.show_private)
    print(f"report: {p}")
    return 0


def _print_plan(cfg, command: str, a: argparse.Namespace | None = None) -> int:
    """``--dry-run``: print the plan of :func:`spti.stages.plan.dry_run_plan` as JSON. ``--calibrate``: each
    configured model measured on synthetic inputs (:mod:`spti.executor.calibrate`); its table goes to stderr
    and its numbers into the JSON under ``calibration``."""
    from spti.stages.plan import dry_run_plan

    plan = dry_run_plan(cfg, command)
    if getattr(a, "calibrate", False):
        from spti.executor.calibrate import DEFAULT_IMAGE_SIZE, calibrate

        try:
            workers = [int(w) for w in str(a.calibrate_workers).split(",") if w.strip()]
        except ValueError:
            raise SptiError(f"--calibrate-workers must be integers separated by commas, got {a.calibrate_workers!r}") from None
        size = getattr(a, "calibrate_image_size", DEFAULT_IMAGE_SIZE)
        if not isinstance(size, int) or size < 16:
            raise SptiError(f"--calibrate-image-size must be an integer >= 16 (pixels), got {size!r}")
        cal = calibrate(cfg, plan, workers=workers, hours=a.calibrate_hours, image_size=size)
        plan["calibration"] = cal.to_dict()
        print(cal.table(), file=sys.stderr)
    print(json.dumps(plan, indent=2, default=str))
    return 0


#: The function that runs each subcommand of :func:`~spti.cli_args.build_parser`.
COMMANDS = {
    "privacy": cmd_privacy,
    "evolve": cmd_evolve,
    "run": cmd_run,
    "caption": cmd_caption,
    "render": cmd_render,
    "demo": cmd_demo,
    "evaluate": cmd_evaluate,
    "audit": cmd_audit,
    "report": cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from spti.log import set_progress, setup_logging

    setup_logging(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    if getattr(args, "no_progress", False):
        set_progress(False)
    from spti.models._guard import backend_stage

    verbose = bool(getattr(args, "verbose", False))
    try:
        with backend_stage(args.command):  # a backend failing inside a command names it and the stage
            return int(COMMANDS[args.command](args) or 0)
    except SptiError as e:
        return _fail(str(e), e, verbose)
    except OSError as e:
        # the user's environment, not a bug: a full disk or quota, a folder spti may not write or read
        if e.errno in _NO_SPACE:
            where = f" in {Path(e.filename).parent}" if e.filename else ""
            return _fail(f"no space left{where} ({e.strerror}); free space and run the same command again", e, verbose)
        if isinstance(e, PermissionError):
            return _fail(f"permission denied: {e.filename or e}; check the folder's permissions or choose another", e, verbose)
        raise
    except KeyboardInterrupt:
        print("spti: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


#: errno values of a full disk or an exhausted quota.
_NO_SPACE = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT") if hasattr(errno, n))


def _fail(message: str, exc: BaseException, verbose: bool) -> int:
    """A user's mistake (or their environment's): one line on stderr, exit status 2. ``-v`` adds the
    traceback (of the underlying cause, when spti wrapped one), for a bug report."""
    if verbose:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    print("spti: error: " + " ".join(message.split()), file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
