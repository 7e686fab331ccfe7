"""The command line's grammar: every subcommand of ``spti`` and its options (argparse only, imports nothing
heavy). What each command does is in :mod:`spti.cli`, which dispatches on ``args.command``."""

from __future__ import annotations

import argparse

__all__ = ["AUDIT_VIOLATION_EXIT", "build_parser"]

#: ``spti audit``'s exit status when the measured lower bound exceeds the claim (a privacy violation).
AUDIT_VIOLATION_EXIT = 3


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
    g.add_argument("--selection", choices=("rank", "sample", "systematic"))
    g.add_argument("--threshold", type=float, help="noisy counts below H are zeroed (default 0)")
    g.add_argument("--lookahead", type=int, help="vote against the mean of L variations/renders")
    g.add_argument("--llm", help="LLM backend name (llamacpp, gguf, hf, openai, vllm)")
    g.add_argument("--llm-model", help="LLM model id or path")
    g.add_argument("--embedder-model", help="sentence-transformers model id or path")


def _add_labels(p: argparse.ArgumentParser, *, sizes: bool) -> None:
    g = p.add_argument_group("labels (class-conditional synthetic data)")
    g.add_argument("--labels-from-subfolders", action="store_true",
                   help="each image's class is its first-level sub-folder (ImageFolder: DATA/<class>/<image>)")
    g.add_argument("--label-column", metavar="NAME",
                   help="each image's class is this column of the listing / metadata file")
    if sizes:
        g.add_argument("--class-sizes", choices=("dp", "uniform", "prior"),
                       help="captions per class: dp (default: noisy private class counts, a share of the budget), "
                            "uniform (equal, a public prior) or prior (privacy.class_prior in the config)")
        g.add_argument("--class-count-share", type=float, metavar="X",
                       help="--class-sizes dp: the share of the budget (mu^2) spent on the class counts (default 0.05)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config; flags override it")
    p.add_argument("--out", help="run folder")
    p.add_argument("--seed", type=int, help="experiment seed (NOT used for DP noise)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--executor", choices=("local", "ray"),
                   help="where the model stages run: local (this process, default) or ray (Ray Data actor pools; "
                        "config section `executor`)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="--executor ray: the cluster to join (auto: the one `ray start` started; ray://host:10001); "
                        "default: a Ray instance started on this machine")


def _add_calibrate(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cost (with --dry-run)")
    g.add_argument("--calibrate", action="store_true",
                   help="with --dry-run: run each configured model on a small synthetic batch (never private data) "
                        "and add device-hours and wall time per stage to the plan (a table on stderr)")
    g.add_argument("--calibrate-workers", default="1,8", metavar="W,W",
                   help="--calibrate: replica counts to show wall times for (default 1,8)")
    g.add_argument("--calibrate-hours", type=float, metavar="H",
                   help="--calibrate: the time available; shows the largest N (private records) that fits")
    g.add_argument("--calibrate-image-size", type=int, default=512, metavar="PX",
                   help="--calibrate: side of the synthetic images the captioner and image embedder are timed on "
                        "(default 512; give your images' size: a VLM with dynamic resolution costs more on larger "
                        "images)")


def _float_or_inf(s: str) -> float:
    v = float(s)
    return v


# ---------------------------------------------------------------------------- the parser
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
    s.add_argument("--labelled", action="store_true",
                   help="a labelled run with DP class sizes: split the budget between the histograms and one noisy "
                        "count per class, and show both sigmas")
    s.add_argument("--class-count-share", type=float,
                   help="labelled runs: the class counts' share of the budget (mu^2), in (0, 1); default 0.05; "
                        "implies --labelled")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("evolve", help="Aug-PE on a private text file (JSONL/CSV/Parquet with a text column)")
    s.add_argument("--private", required=False, help="private texts")
    s.add_argument("--text-column", default="text")
    s.add_argument("--user-column")
    _add_common(s), _add_budget(s), _add_pe(s)
    _add_calibrate(s)

    s = sub.add_parser("run", help="the whole pipeline: private images in, DP synthetic images out")
    s.add_argument("--data", help="private images: a folder, an ImageFolder or a CSV/Parquet listing")
    s.add_argument("--voting", choices=("text", "image"))
    s.add_argument("--user-column")
    s.add_argument("--users-from-subfolders", action="store_true")
    _add_labels(s, sizes=True)
    s.add_argument("--public-pool", help="public images for the retrieval renderer")
    s.add_argument("--allow-remote-captioner", action="store_true", help="allow sending private images to a remote captioner")
    s.add_argument("--metrics", help="evaluate the release, e.g. fid,prdc,memorization (NOT differentially private)")
    s.add_argument("--eval-per-iteration", action="store_true", help="also evaluate every PE iteration (a curve)")
    s.add_argument("--real-labelled", help="real labelled test images for --metrics accuracy (ImageFolder or a "
                   "metadata file with a 'label' column)")
    _add_common(s), _add_budget(s), _add_pe(s)
    _add_calibrate(s)

    s = sub.add_parser("caption", help="ingest and caption the private images (resumable)")
    s.add_argument("--data", help="private images")
    s.add_argument("--user-column")
    s.add_argument("--users-from-subfolders", action="store_true")
    _add_labels(s, sizes=False)
    s.add_argument("--allow-remote-captioner", action="store_true")
    _add_common(s)

    s = sub.add_parser("render", help="render DP captions into the release folder")
    s.add_argument("--captions", required=True, help="JSONL with a text column (e.g. release/dp_captions.jsonl)")
    s.add_argument("--renderer", help="renderer backend (default: the run's)")
    s.add_argument("--renderer-model")
    _add_common(s)

    s = sub.add_parser("demo", help="offline demo on Fashion-MNIST with the bundled models")
    s.add_argument("--out")
    from spti.demo import DEFAULTS
    from spti.demo_conditional import CONDITIONAL_DEFAULTS as CD

    # size defaults are None here: --conditional has its own (cli.cmd_demo fills in the plain demo's)
    s.add_argument("--num-private", type=int, help=f"private Fashion-MNIST test images (default {DEFAULTS['num_private']}; "
                   f"--conditional: {CD['num_private']})")
    s.add_argument("--pool-size", type=int, help=f"public train images (retrieval pool) (default {DEFAULTS['pool_size']}; "
                   f"--conditional: {CD['pool_size']})")
    s.add_argument("--population", type=int, help=f"default {DEFAULTS['population']}; --conditional: {CD['population']}, "
                   "the total over the 10 classes")
    s.add_argument("--iterations", type=int, help=f"default {DEFAULTS['iterations']}; --conditional: {CD['iterations']}")
    s.add_argument("--variations", type=int, help=f"default {DEFAULTS['variations']}; --conditional: {CD['variations']}")
    s.add_argument("--conditional", action="store_true",
                   help="class-conditional demo (issue 12): labelled private ImageFolder, DP class sizes, prints the "
                   "accuracy of classifiers trained on the release next to the real-data ceiling and chance")
    s.add_argument("--num-eval", type=int, help=f"--conditional: held-out labelled test images the accuracy is "
                   f"measured on (default {CD['num_eval']})")
    s.add_argument("--images-per-caption", type=int, help=f"--conditional: release images per DP caption (its "
                   f"nearest pool images; default {CD['images_per_caption']})")
    s.add_argument("--no-cnn", action="store_true", help="--conditional: only the linear probe, not the small CNN")
    s.add_argument("--epsilon", type=float)
    s.add_argument("--voting", choices=("text", "image"), help="image (default) or text: the demo prints why")
    s.add_argument("--footwear", type=float, default=DEFAULTS["footwear"],
                   help="the private shoe shop's share of sandals, sneakers and ankle boots (0.3: balanced)")
    s.add_argument("--seed", type=int)
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("-v", "--verbose", action="store_true")

    s = sub.add_parser("evaluate", help="FID, accuracy and friends (NOT differentially private: do not publish)")
    s.add_argument("--real", required=True, help="real images (for accuracy: labelled, an ImageFolder or a "
                   "metadata file with a 'label' column; split in halves for the ceiling without --real-train)")
    s.add_argument("--synthetic", required=True)
    s.add_argument("--metrics", default="fd-efficientnet,prdc,memorization",
                   help="comma-separated: fid, fd-dinov2, fd-clip, fd-efficientnet, prdc, memorization, clip-score, "
                   "accuracy (= accuracy-linear + accuracy-cnn)")
    s.add_argument("--real-train", help="accuracy: real labelled training images for the ceiling (default: half of --real)")
    s.add_argument("--cnn-epochs", type=int, help="accuracy-cnn: training epochs (default 10)")
    s.add_argument("--out", help="write metrics.json here")
    s.add_argument("--max-images", type=int)
    s.add_argument("-v", "--verbose", action="store_true")

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

    s = sub.add_parser("report", help="self-contained HTML report of a run")
    s.add_argument("run")
    s.add_argument("--show-private", action="store_true", help="include private images (WARNING banner)")
    return p
