"""``spti``: a thin command line over the library. Parses, builds a :class:`spti.config.Config`, calls
:mod:`spti.pipeline`. Heavy modules are imported inside each command, so ``spti privacy`` starts fast."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import sys
from pathlib import Path
from typing import Any

from spti.errors import SptiError


# ---------------------------------------------------------------------------- shared options
def _add_budget(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("privacy budget")
    g.add_argument("--epsilon", type=_float_or_inf, help="target epsilon (default 1)")
    g.add_argument("--delta", type=float,
                   help="delta (default 1/(N ln N), which treats N as public; e.g. 1e-6 makes sigma independent of N)")
    g.add_argument("--sigma", type=float, help="noise multiplier instead of --epsilon")
    g.add_argument("--unit", choices=("record", "user"), help="unit of privacy (default record)")
    g.add_argument("--num-private-bound", type=int,
                   help="a PUBLIC upper bound on the number of private records/users, used and published instead of it")
    g.add_argument("--noise", choices=("gaussian", "discrete"),
                   help="DP noise: gaussian (default, exact GDP accounting) or discrete (exact integer sampler, zCDP bound)")
    g.add_argument("--grid", type=int, help="discrete noise: integer vote grid (default 1 per record, 2520 per user)")
    g.add_argument("--not-private", action="store_true", help="no noise at all; recorded as NOT private")
    g.add_argument("--insecure-noise-seed", type=int,
                   help="TESTS ONLY: reproducible noise; the run is recorded as NOT private")


def _add_pe(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("private evolution")
    g.add_argument("--domain", help='what the data shows, e.g. "a photo of a bedroom"')
    g.add_argument("--iterations", type=int, help="PE iterations T (default 10)")
    g.add_argument("--population", type=int, help="synthetic population size (default 2000)")
    g.add_argument("--variations", type=int, help="variations per parent (default 6)")
    g.add_argument("--selection", choices=("rank", "sample"))
    g.add_argument("--threshold", type=float, help="noisy counts below H are zeroed (default 0)")
    g.add_argument("--lookahead", type=int, help="vote against the mean of L variations/renders")
    g.add_argument("--llm", help="LLM backend name (llamacpp, gguf, hf, openai, vllm)")
    g.add_argument("--llm-model", help="LLM model id or path")
    g.add_argument("--embedder-model", help="sentence-transformers model id or path")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config; flags override it")
    p.add_argument("--out", help="run folder")
    p.add_argument("--seed", type=int, help="experiment seed (NOT used for DP noise)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")


def _float_or_inf(s: str) -> float:
    v = float(s)
    return v


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
    }
    if g("not_private"):
        o["privacy.not_private"] = True
    if g("no_progress"):
        o["progress"] = False
    if g("allow_remote_captioner"):
        o["allow_remote_captioner"] = True
    if g("users_from_subfolders"):
        o["data.users_from_subfolders"] = True
    if isinstance(g("metrics"), str) and getattr(a, "command", None) == "run":
        o["evaluate.metrics"] = [m.strip() for m in g("metrics").split(",") if m.strip()]
    if g("eval_per_iteration"):
        o["evaluate.per_iteration"] = True
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
    is too large to mean anything, and (``--noise discrete``) the exact sampler's ε next to the continuous one."""
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
    if a.sigma is not None:
        b = PrivacyBudget.from_sigma(a.sigma, a.iterations, n, **kw)
    else:
        eps = 1.0 if a.epsilon is None else a.epsilon
        b = PrivacyBudget.from_epsilon(eps, a.iterations, n, **kw)
    comparison = compare_noise(b.sigma, b.iterations, b.delta, unit=b.unit, scale=b.grid) if b.noise == "discrete" else None
    warning = delta_warning(b)
    if a.json:
        d = b.to_dict()
        d["dataset_size"] = dataset_size_statement(b)
        d["warnings"] = [warning] if warning else []
        if comparison is not None:
            d["noise_comparison"] = comparison.to_dict()
        print(json.dumps(d, indent=2))
    else:
        print(b.describe())
        if comparison is not None:
            print(f"noise: {comparison.describe()}")
        print(f"N: {dataset_size_statement(b)}")
        if warning:
            print(f"WARNING: {warning}")
    return 0


def cmd_evolve(a: argparse.Namespace) -> int:
    from spti.pipeline import evolve_texts

    extra = {"data.private": a.private, "data.text_column": a.text_column, "pe.voting": "text"}
    cfg = _config(a, extra)
    if a.dry_run:
        return _print_plan(cfg, "evolve")
    run_dir = evolve_texts(cfg, command="evolve")  # the subcommand only: argv names the private data
    print(f"DP captions: {run_dir.release / 'dp_captions.jsonl'}")
    print(f"privacy:     {run_dir.privacy_path}")
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from spti.pipeline import run

    cfg = _config(a, {"data.private": a.data})
    if a.dry_run:
        return _print_plan(cfg, "run")
    run_dir = run(cfg, command="run")  # the subcommand only: argv names the private data
    print(f"release: {run_dir.release}")
    if (run_dir.path / "report.html").is_file():
        print(f"report:  {run_dir.path / 'report.html'}")
    return 0


def cmd_caption(a: argparse.Namespace) -> int:
    from spti.stages import open_run
    from spti.stages.private import caption_stage, ingest_stage

    cfg = _config(a, {"data.private": a.data})
    run_dir = open_run(cfg, "caption")
    result = ingest_stage(run_dir, cfg)
    caps = caption_stage(run_dir, cfg, result)
    print(f"captioned {len(caps)} private images; captions are private: {run_dir.private / 'captions'}")
    return 0


def cmd_render(a: argparse.Namespace) -> int:
    from spti.data.io import read_jsonl
    from spti.stages import finish_release_docs, open_run
    from spti.stages.render import caption_provenance, mark_release_coverage, render_stage

    cfg = _config(a)
    texts = [r["text"] for r in read_jsonl(a.captions)]
    if not texts:
        raise SptiError(f"{a.captions}: no captions")
    run_dir = open_run(cfg, "render", post_processing=True)
    if a.renderer:
        cfg = cfg.merged({"release_renderer": {"backend": a.renderer, **({"model": a.renderer_model} if a.renderer_model else {})}})
    provenance = caption_provenance(run_dir, texts)  # before rendering: the run's own captions, or not?
    rows = render_stage(run_dir, cfg, texts)
    finish_release_docs(run_dir, cfg)
    mark_release_coverage(run_dir, provenance)
    print(f"rendered {len(rows)} images: {run_dir.release}")
    if not provenance["covered"]:
        print("privacy: NOT covered by this run's ledger (the captions are not this run's DP captions); "
              f"see {run_dir.release / 'privacy.json'}")
    return 0


#: ``spti audit``'s exit status when the measured lower bound exceeds the claim (a privacy violation).
AUDIT_VIOLATION_EXIT = 3


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
    from spti.demo import run_demo

    run_dir = run_demo(
        out=a.out or "runs/demo",
        num_private=a.num_private,
        pool_size=a.pool_size,
        population=a.population,
        iterations=a.iterations,
        variations=a.variations,
        epsilon=a.epsilon if a.epsilon is not None else 1.0,
        voting=a.voting or "text",
        seed=a.seed or 0,
        progress=not a.no_progress,
    )
    print(f"release: {run_dir.release}")
    print(f"report:  {run_dir.path / 'report.html'}")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from spti.metrics.evaluate import evaluate

    metrics = tuple(m.strip() for m in a.metrics.split(",") if m.strip())
    res = evaluate(a.real, a.synthetic, metrics=metrics, out=Path(a.out) if a.out else None, max_images=a.max_images)
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


def _print_plan(cfg, command: str) -> int:
    """``--dry-run``: stages, models, N, sigma for the asked epsilon, model calls per stage."""
    from spti.preflight import preflight
    from spti.redact import redact_secrets
    from spti.stages.budget import make_budget

    preflight(cfg, command)  # validates, then resolves every backend the run would build (before reading data)
    pe = cfg.pe
    if command == "evolve":
        from spti.data.texts import read_texts

        t = read_texts(cfg.data.private, text_column=cfg.data.text_column, user_column=cfg.data.user_column)
        n_rows, n = len(t.texts), (t.num_units if cfg.privacy.unit == "user" else len(t.texts))
    else:
        n_rows = n = _count_images(Path(cfg.data.private))
    b = make_budget(cfg, max(n, 2))
    N, k, T, L = pe.population, pe.variations, pe.iterations, pe.lookahead
    new_per_iter = N * k
    llm_calls = N + T * new_per_iter + (T * N * (k + int(pe.keep_selected)) * L if (L and pe.voting == "text") else 0)
    plan: dict[str, Any] = {
        "stages": (["evolve"] if command == "evolve" else ["ingest", "caption" if pe.voting == "text" else "embed private images", "evolve", "render", "report"]),
        "private": {"rows": n_rows, f"{cfg.privacy.unit}s (N)": n},
        "privacy": b.to_dict(),
        "models": redact_secrets(
            {"llm": cfg.llm, "text_embedder": cfg.text_embedder} if command == "evolve" else
            {"captioner": cfg.captioner, "llm": cfg.llm, "text_embedder": cfg.text_embedder,
             "image_embedder": cfg.image_embedder, "renderer": cfg.renderer, "release_renderer": cfg.release_renderer}),
        "calls": {"llm": llm_calls},
        "evaluate": cfg.evaluate.to_dict() if hasattr(cfg.evaluate, "to_dict") else vars(cfg.evaluate),
    }
    if command != "evolve":
        R = max(1, L)
        if pe.voting == "text":
            plan["calls"]["captioner"] = n_rows
            plan["calls"]["renderer (release)"] = N * cfg.render.images_per_caption
        else:
            plan["calls"]["image_embedder (private)"] = n_rows
            plan["calls"]["renderer (loop, at most)"] = N * R + T * new_per_iter * R
            plan["calls"]["renderer (release)"] = 0 if cfg.release_renderer is None and cfg.render.images_per_caption <= R else N * cfg.render.images_per_caption
    plan["calls"]["text/image embeddings of candidates (at most)"] = N + T * new_per_iter * max(1, L)
    print(json.dumps(plan, indent=2, default=str))
    return 0


def _count_images(p: Path) -> int:
    """``--dry-run``'s N: the image files of a folder (listed by the ingestion's own rules), or the rows of a
    listing file (less its header)."""
    from spti.data.listing import list_images

    if not p.exists():
        raise SptiError(f"private data not found: {p}")
    if p.is_file():
        from spti.data.io import iter_text_lines

        return sum(1 for _ in iter_text_lines(p)) - 1  # InputError naming a line that is not UTF-8
    return len(list_images(p))


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from spti._version import __version__

    p = argparse.ArgumentParser(prog="spti", description="Differentially private synthetic images via private textual intermediaries.")
    p.add_argument("--version", action="version", version=f"spti {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("privacy", help="the budget: epsilon <-> sigma for T iterations and N private records")
    s.add_argument("--epsilon", type=float)
    s.add_argument("--sigma", type=float)
    s.add_argument("--delta", type=float)
    s.add_argument("--iterations", type=int, required=True)
    s.add_argument("--num-private", type=int, help="N: private records (or users); treated as public")
    s.add_argument("--num-private-bound", type=int,
                   help="a PUBLIC upper bound on N, used (default delta, the record) instead of N")
    s.add_argument("--unit", choices=("record", "user"))
    s.add_argument("--noise", choices=("gaussian", "discrete"),
                   help="discrete: account the exact discrete Gaussian (zCDP bound) and show its cost next to the "
                        "continuous Gaussian's epsilon")
    s.add_argument("--grid", type=int, help="discrete noise: integer vote grid (default 1 per record, 2520 per user)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_privacy)

    s = sub.add_parser("evolve", help="Aug-PE on a private text file (JSONL/CSV/Parquet with a text column)")
    s.add_argument("--private", required=False, help="private texts")
    s.add_argument("--text-column", default="text")
    s.add_argument("--user-column")
    _add_common(s), _add_budget(s), _add_pe(s)
    s.set_defaults(fn=cmd_evolve)

    s = sub.add_parser("run", help="the whole pipeline: private images in, DP synthetic images out")
    s.add_argument("--data", help="private images: a folder, an ImageFolder or a CSV/Parquet listing")
    s.add_argument("--voting", choices=("text", "image"))
    s.add_argument("--user-column")
    s.add_argument("--users-from-subfolders", action="store_true")
    s.add_argument("--public-pool", help="public images for the retrieval renderer")
    s.add_argument("--allow-remote-captioner", action="store_true", help="allow sending private images to a remote captioner")
    s.add_argument("--metrics", help="evaluate the release, e.g. fid,prdc,memorization (NOT differentially private)")
    s.add_argument("--eval-per-iteration", action="store_true", help="also evaluate every PE iteration (a curve)")
    _add_common(s), _add_budget(s), _add_pe(s)
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("caption", help="ingest and caption the private images (resumable)")
    s.add_argument("--data", help="private images")
    s.add_argument("--user-column")
    s.add_argument("--users-from-subfolders", action="store_true")
    s.add_argument("--allow-remote-captioner", action="store_true")
    _add_common(s)
    s.set_defaults(fn=cmd_caption)

    s = sub.add_parser("render", help="render DP captions into the release folder")
    s.add_argument("--captions", required=True, help="JSONL with a text column (e.g. release/dp_captions.jsonl)")
    s.add_argument("--renderer", help="renderer backend (default: the run's)")
    s.add_argument("--renderer-model")
    _add_common(s)
    s.set_defaults(fn=cmd_render)

    s = sub.add_parser("demo", help="offline demo on Fashion-MNIST with the bundled models")
    s.add_argument("--out")
    from spti.demo import DEFAULTS

    s.add_argument("--num-private", type=int, default=DEFAULTS["num_private"], help="private Fashion-MNIST test images")
    s.add_argument("--pool-size", type=int, default=DEFAULTS["pool_size"], help="public train images (retrieval pool)")
    s.add_argument("--population", type=int, default=DEFAULTS["population"])
    s.add_argument("--iterations", type=int, default=DEFAULTS["iterations"])
    s.add_argument("--variations", type=int, default=DEFAULTS["variations"])
    s.add_argument("--epsilon", type=float)
    s.add_argument("--voting", choices=("text", "image"))
    s.add_argument("--seed", type=int)
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("evaluate", help="FID and friends (NOT differentially private: do not publish)")
    s.add_argument("--real", required=True)
    s.add_argument("--synthetic", required=True)
    s.add_argument("--metrics", default="fd-efficientnet,prdc,memorization")
    s.add_argument("--out", help="write metrics.json here")
    s.add_argument("--max-images", type=int)
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser(
        "audit",
        help="empirical lower bound on epsilon: a black-box audit of a run's noisy vote histogram",
        description=(
            "Audit the histogram mechanism of a run (its private features, vote weights, nearest-neighbour "
            "vote, threshold and noise sampler): neighbouring private sets D and D' = D + one worst-case canary, "
            "the noisy release drawn TRIALS times on each, the best threshold test, and Clopper-Pearson bounds "
            "on its error rates give a lower bound on epsilon that holds with confidence 1 - ALPHA. It is "
            "compared with the claimed epsilon of ONE histogram (the whole run's epsilon is shown beside it). "
            "The audit can find a violation, never prove privacy: a bound below the claim is consistent with "
            "it. Writes RUN/private/audit.json (it locates the canary in the private votes); `spti report` "
            "shows its publishable summary."
        ),
        epilog=(f"exit status: 0 when the bound is at most the claim, {AUDIT_VIOLATION_EXIT} when it exceeds it "
                "(a violation: the implementation is less private than it says), 2 on an error"),
    )
    s.add_argument("run", help="the run folder")
    s.add_argument("--trials", type=int, default=100_000, help="releases drawn for D and again for D' (default 100000)")
    s.add_argument("--alpha", type=float, default=0.05, help="1 - confidence of the bound (default 0.05)")
    s.add_argument("--iteration", type=int, help="PE iteration whose candidates are the bins (default: the last)")
    s.add_argument("--bin-only", action="store_true",
                   help="draw noise only for the bins the canary changes (same statistic, much faster for "
                        "large populations and for privacy.noise: discrete) instead of for the whole histogram "
                        "as the engine does")
    s.add_argument("--report", action="store_true", help="rebuild RUN/report.html with the audit section")
    s.add_argument("-v", "--verbose", action="store_true")
    s.set_defaults(fn=cmd_audit)

    s = sub.add_parser("report", help="self-contained HTML report of a run")
    s.add_argument("run")
    s.add_argument("--show-private", action="store_true", help="include private images (WARNING banner)")
    s.set_defaults(fn=cmd_report)
    return p


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
            return int(args.fn(args) or 0)
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

