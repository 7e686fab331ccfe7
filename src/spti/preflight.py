"""Preflight: find the configuration mistakes that would otherwise surface only after budget is spent.

Why: PE's stages run in order, and the renderer (say) is first built after the last noisy histogram has
been released. A typo in its backend name used to end the run *after* the privacy budget was consumed,
and a corrected re-run cannot get it back. So before the first private datum is read, :func:`preflight`
resolves every backend the run will use (registry names and ``package.module:Class`` plug-ins: imported
and checked against the role's base class), refuses a config whose secrets were redacted (a run resumed
from its own ``config.yaml``), and, where it is cheap, checks a model path: a local path that does not
exist, or a Hugging Face hub id that is not in the local cache while the hub may not be asked
(``HF_HUB_OFFLINE`` or ``local_files_only``). Nothing is loaded: models are built by their stages.

Only what the run uses is checked: image voting never captions (unless its retrieval renderer captions
its public pool), ``spti evolve`` needs just the LLM and the text embedder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spti.config import Config
from spti.errors import ConfigError, SptiError

__all__ = ["check_backends", "needed_backends", "preflight"]

#: (role, backend) whose ``model`` is a Hugging Face hub id or a local path (checked both ways).
_HUB_MODELS = frozenset({
    ("llm", "hf"), ("llm", "vllm"), ("text_embedder", "sentence-transformers"), ("captioner", "hf"),
    ("captioner", "vllm"),
    ("renderer", "diffusers"), ("image_embedder", "dinov2"), ("image_embedder", "clip"),
})
#: (role, backend) whose ``model`` may be a local path, checked only for existence (their other forms —
#: a bundled model, a repo plus ``gguf_file`` — are resolved by the backend itself).
_PATH_MODELS = frozenset({("llm", "gguf"), ("llm", "llamacpp")})


def needed_backends(cfg: Config, command: str = "run") -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(label, role, options)`` of every backend ``command`` ("run" or "evolve") will build with ``cfg``;
    ``label`` is the config key that holds it (``renderer``, ``renderer.captioner`` ...)."""
    out: list[tuple[str, str, Mapping[str, Any]]] = [("llm", "llm", cfg.llm)]
    if command == "evolve":
        return [*out, ("text_embedder", "text_embedder", cfg.text_embedder)]
    renderers: list[tuple[str, Mapping[str, Any]]] = []
    if cfg.pe.voting == "text":
        out += [("captioner", "captioner", cfg.captioner), ("text_embedder", "text_embedder", cfg.text_embedder)]
        if cfg.evaluate.per_iteration and cfg.evaluate.metrics:
            renderers.append(("release_renderer" if cfg.release_renderer else "renderer",
                              cfg.release_renderer or cfg.renderer))
    else:
        out.append(("image_embedder", "image_embedder", cfg.image_embedder))
        renderers.append(("renderer", cfg.renderer))
    release = ("release_renderer", cfg.release_renderer) if cfg.release_renderer else ("renderer", cfg.renderer)
    renderers.append(release)
    seen: set[str] = set()
    for label, rcfg in renderers:
        if label in seen:
            continue
        seen.add(label)
        out.append((label, "renderer", rcfg))
        if isinstance(rcfg, Mapping) and rcfg.get("backend") == "retrieval":  # captions its public pool
            out.append((f"{label}.captioner", "captioner", rcfg.get("captioner") or cfg.captioner))
            out.append((f"{label}.text_embedder", "text_embedder", rcfg.get("text_embedder") or cfg.text_embedder))
    return out


def _registry(role: str) -> Any:
    if role == "llm":
        from spti.models.llm import REGISTRY
    elif role == "captioner":
        from spti.models.captioner import REGISTRY
    elif role == "text_embedder":
        from spti.models.text_embedder import REGISTRY
    elif role == "image_embedder":
        from spti.models.image_embedder import REGISTRY
    else:
        from spti.models.renderer import REGISTRY
    return REGISTRY


def _in_hub_cache(repo_id: str, cache_dir: Any = None) -> bool:
    """Whether a snapshot of hub repo ``repo_id`` is in the local cache (True when that cannot be told)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return True
    root = Path(cache_dir).expanduser() if cache_dir else Path(constants.HF_HUB_CACHE)
    snapshots = root / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    try:
        return snapshots.is_dir() and any(snapshots.iterdir())
    except OSError:
        return True


def _model_problem(label: str, role: str, backend: str, options: Mapping[str, Any], cls: type) -> str | None:
    from spti.models._hub import local_model_path, resolve_local_files_only

    key = (role, backend)
    if key not in _HUB_MODELS and key not in _PATH_MODELS:
        return None
    model = options.get("model") or getattr(cls, "default_model", None)
    if not isinstance(model, str) or not model:
        return None
    try:
        path = local_model_path(model, f"{label} ({backend})")
    except ConfigError as e:
        return str(e)
    if path is not None or key in _PATH_MODELS:
        return None
    lfo = options.get("local_files_only")
    if not resolve_local_files_only(lfo if isinstance(lfo, bool) else None):
        return None
    candidates = [model] + ([f"sentence-transformers/{model}"] if backend == "sentence-transformers" and "/" not in model else [])
    if any(_in_hub_cache(m, options.get("cache_dir")) for m in candidates):
        return None
    return (
        f"{label} ({backend}): model {model!r} is not in the Hugging Face cache and the hub may not be asked "
        "(HF_HUB_OFFLINE or local_files_only is set); download it first (huggingface-cli download "
        f"{model}) or give a local folder"
    )


def check_backends(cfg: Config, command: str = "run") -> list[str]:
    """Every problem found with the backends ``command`` needs (empty: all resolve), one line each."""
    from spti.redact import find_redacted

    problems: list[str] = []
    for label, role, options in needed_backends(cfg, command):
        if isinstance(options, str):
            options = {"backend": options}
        if not isinstance(options, Mapping) or not isinstance(options.get("backend"), str):
            problems.append(f"{label}: needs a 'backend' name")
            continue
        backend = options["backend"]
        where = find_redacted({k: v for k, v in options.items() if k != "backend"})
        if where:
            problems.append(
                f"{label}: {', '.join(where[:5])} holds a redacted secret (spti never stores secrets in a run "
                "folder); give the real value again with --config (or through the environment variable the "
                "backend reads, e.g. api_key_env)"
            )
        try:
            cls = _registry(role).get(backend)
        except SptiError as e:
            problems.append(f"{label}: {e}")
            continue
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        if missing:
            problems.append(f"{label}: backend {backend!r} ({cls.__name__}) does not implement {', '.join(missing)}")
            continue
        p = _model_problem(label, role, backend, options, cls)
        if p:
            problems.append(p)
        if backend == "retrieval" and role == "renderer":
            pool = options.get("pool") or cfg.data.public_pool
            if not pool:
                problems.append(f"{label} (retrieval): no public pool: set data.public_pool (--public-pool) or {label}.pool")
            elif not Path(str(pool)).expanduser().is_dir():
                problems.append(f"{label} (retrieval): public pool folder {str(pool)!r} does not exist or is not a folder")
    problems.extend(_package_problems(cfg))
    if command != "evolve" and cfg.pe.voting == "text":
        try:  # a remote captioner without the explicit opt-in
            from spti.stages.private import captioner_config

            captioner_config(cfg)
        except SptiError as e:
            if not any(p.startswith("captioner:") for p in problems):
                problems.append(str(e))
    return list(dict.fromkeys(problems))


#: Optional packages a setting needs, and the extra that installs them.
_VOTING_PACKAGES = {"faiss": ("faiss", "faiss"), "torch": ("torch", "hf"), "ray": ("ray", "ray")}


def _package_problems(cfg: Config) -> list[str]:
    """Optional packages the voting backend or the executor needs: a missing one would otherwise fail at
    the first vote (after the LLM has run) or when the first model stage starts."""
    import importlib.util

    problems = []
    kinds = [(f"pe.nn_backend {cfg.pe.nn_backend!r}", part) for part in cfg.pe.nn_backend.split(":")[:2]
             if part in _VOTING_PACKAGES]
    if cfg.executor.kind == "ray":
        kinds.append(("executor.kind 'ray'", "ray"))
    for label, kind in kinds:
        module, extra = _VOTING_PACKAGES[kind]
        if importlib.util.find_spec(module) is None:
            problems.append(f"{label} needs the {module} package: pip install 'spti[{extra}]'")
    return problems


def preflight(cfg: Config, command: str = "run") -> None:
    """Raise one ConfigError listing every problem :func:`check_backends` finds; called by the pipeline
    before any private data is read and so before any budget is spent."""
    cfg.validate()
    problems = check_backends(cfg, command)
    if problems:
        head = "the configuration cannot run (nothing was read or spent): "
        raise ConfigError(head + "; ".join(problems))
