"""The run configuration: one YAML file (or dict) that says everything a run does.

Why dataclasses with strict keys: a typo in a privacy parameter ("epsilom: 1") must be an error, never a
silently ignored key that leaves the default budget in place. The resolved config (every default filled in)
is written to the run folder, so a run can be audited and reproduced from it alone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from spti.errors import ConfigError

VOTING = ("text", "image")
SELECTION = ("rank", "sample")
VARIATION_MODES = ("fill_in", "rephrase", "mixed")
UNITS = ("record", "user")

DEFAULT_ATTRIBUTES: dict[str, list[str]] = {
    "focus": [
        "the main object",
        "the colours",
        "the lighting",
        "the layout and composition",
        "materials and textures",
        "the viewpoint",
        "the background",
        "the shape",
        "small details",
        "the overall style",
    ],
}
DEFAULT_TONES: list[str] = ["plain", "detailed", "concise", "descriptive", "neutral", "vivid"]


@dataclass
class DataConfig:
    """Where the private data is. ``private`` is a folder of images (or an ImageFolder / listing) for the
    image pipeline, or a JSONL/CSV/Parquet file with a ``text`` column for ``spti evolve``."""

    private: str | None = None
    text_column: str = "text"
    user_column: str | None = None
    users_from_subfolders: bool = False
    max_pixels: int = 89_478_485
    public_pool: str | None = None  # public images (retrieval renderer, few-shot never from private)


@dataclass
class PrivacyConfig:
    epsilon: float | None = 1.0
    delta: float | None = None  # default 1/(N ln N)
    sigma: float | None = None  # give sigma instead of epsilon to fix the noise directly
    unit: str = "record"  # "record" or "user" (needs a user column / sub-folders)
    not_private: bool = False  # epsilon = infinity: no noise at all; recorded as NOT private
    insecure_noise_seed: int | None = None  # tests only: reproducible noise, recorded as insecure


@dataclass
class GenerationConfig:
    """How the LLM is asked for random captions and variations (Aug-PE's APIs)."""

    domain: str = "a photo"
    attributes: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_ATTRIBUTES.items()})
    tones: list[str] = field(default_factory=lambda: list(DEFAULT_TONES))
    examples: list[str] = field(default_factory=list)  # PUBLIC or already-DP example captions only
    variation_mode: str = "fill_in"
    mask_prob: float = 0.5
    length_std: float = 3.0
    min_length: int = 5
    max_length: int = 60
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_p: float = 0.95
    max_retries: int = 3
    system_prompt: str | None = None  # None: the template file's
    random_template: str | None = None
    fill_in_template: str | None = None
    rephrase_template: str | None = None


@dataclass
class PEConfig:
    iterations: int = 10
    population: int = 2000
    variations: int = 6
    keep_selected: bool = True
    selection: str = "rank"
    threshold: float = 0.0
    lookahead: int = 0  # 0: vote against the candidate itself; L: against the mean of L variations/renders
    voting: str = "text"
    chunk_size: int = 4096
    nn_backend: str = "auto"  # "numpy", "faiss" or "auto"
    normalize: bool = True


@dataclass
class RenderConfig:
    images_per_caption: int = 1
    seed: int = 0


@dataclass
class EvaluateConfig:
    metrics: list[str] = field(default_factory=list)  # e.g. ["fid", "fd-efficientnet", "prdc", "memorization"]
    per_iteration: bool = False
    max_images: int | None = None
    space: str | None = None  # feature space of prdc / memorization; None: the run's image_embedder's


@dataclass
class Config:
    out: str | None = None
    seed: int = 0
    progress: bool = True
    allow_remote_captioner: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    pe: PEConfig = field(default_factory=PEConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    # Backends: {"backend": name, ...options}. Defaults: the bundled offline models.
    llm: dict[str, Any] = field(default_factory=lambda: {"backend": "llamacpp"})
    text_embedder: dict[str, Any] = field(default_factory=lambda: {"backend": "sentence-transformers"})
    captioner: dict[str, Any] = field(default_factory=lambda: {"backend": "efficientnet-lite0"})
    renderer: dict[str, Any] = field(
        default_factory=lambda: {"backend": "diffusers", "model": "stabilityai/sdxl-turbo"}
    )
    image_embedder: dict[str, Any] = field(default_factory=lambda: {"backend": "efficientnet-lite0"})
    release_renderer: dict[str, Any] | None = None  # None: the release reuses the loop's renderer

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Config:
        return _from_dict(cls, d or {}, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> Config:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if d is not None and not isinstance(d, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
        return cls.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def merged(self, overrides: dict[str, Any]) -> Config:
        """A copy with dotted-key overrides applied (``{"pe.iterations": 2}``); None values are ignored."""
        d = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            node = d
            parts = key.split(".")
            for part in parts[:-1]:
                if part not in node or not isinstance(node[part], dict):
                    node[part] = {}
                node = node[part]
            node[parts[-1]] = value
        return Config.from_dict(d)

    # ------------------------------------------------------------------ validation
    def validate(self, *, need_private: bool = True) -> Config:
        """Check ranges and consistency; raise ConfigError naming the key. Budget values are checked again,
        with N known, by :mod:`spti.privacy`."""
        pe, gen, pr = self.pe, self.generation, self.privacy
        _check(pe.iterations >= 1, "pe.iterations must be >= 1")
        _check(pe.population >= 1, "pe.population must be >= 1")
        _check(pe.variations >= 1 or pe.keep_selected, "pe.variations must be >= 1 (or keep_selected true)")
        _check(pe.variations >= 0, "pe.variations must be >= 0")
        _check(pe.selection in SELECTION, f"pe.selection must be one of {SELECTION}")
        _check(pe.voting in VOTING, f"pe.voting must be one of {VOTING}")
        _check(math.isfinite(pe.threshold) and pe.threshold >= 0, "pe.threshold must be a finite number >= 0")
        _check(pe.lookahead >= 0, "pe.lookahead must be >= 0")
        _check(pe.chunk_size >= 1, "pe.chunk_size must be >= 1")
        _check(pe.nn_backend in ("auto", "numpy", "faiss"), "pe.nn_backend must be auto, numpy or faiss")
        _check(gen.variation_mode in VARIATION_MODES, f"generation.variation_mode must be one of {VARIATION_MODES}")
        _check(0.0 <= gen.mask_prob <= 1.0, "generation.mask_prob must be in [0, 1]")
        _check(gen.min_length >= 1, "generation.min_length must be >= 1")
        _check(gen.max_length >= gen.min_length, "generation.max_length must be >= generation.min_length")
        _check(gen.max_new_tokens >= 1, "generation.max_new_tokens must be >= 1")
        _check(gen.temperature >= 0, "generation.temperature must be >= 0")
        _check(0 < gen.top_p <= 1, "generation.top_p must be in (0, 1]")
        _check(gen.max_retries >= 0, "generation.max_retries must be >= 0")
        _check(bool(gen.domain and gen.domain.strip()), "generation.domain must describe the data (e.g. 'a photo of a bedroom')")
        _check(all(isinstance(v, list) and v for v in gen.attributes.values()), "generation.attributes: each key needs a non-empty list")
        _check(pr.unit in UNITS, f"privacy.unit must be one of {UNITS}")
        _check(self.render.images_per_caption >= 1, "render.images_per_caption must be >= 1")
        if pr.unit == "user":
            _check(
                bool(self.data.user_column) or self.data.users_from_subfolders,
                "privacy.unit 'user' needs data.user_column or data.users_from_subfolders",
            )
        if not pr.not_private:
            _check(
                (pr.epsilon is None) != (pr.sigma is None),
                "give exactly one of privacy.epsilon and privacy.sigma (or privacy.not_private: true)",
            )
        if need_private:
            _check(bool(self.data.private), "data.private: the private data to use is required")
        for role in ("llm", "text_embedder", "captioner", "renderer", "image_embedder"):
            v = getattr(self, role)
            _check(isinstance(v, dict) and isinstance(v.get("backend"), str), f"{role}: needs a 'backend' name")
        return self


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _from_dict(cls: type, d: Any, prefix: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(d).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; known: {', '.join(sorted(names))}")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        value = d[f.name]
        hint = hints[f.name]
        key = prefix + f.name
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _from_dict(hint, value or {}, key + ".")
        else:
            kwargs[f.name] = _coerce(value, hint, key)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Light type checking: numbers, bools, strings, lists, dicts; int accepted where float is expected."""
    import types
    import typing

    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value")
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and value.strip().lower() in ("inf", "infinity"):
            return math.inf
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") if args else v for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        if args:
            return {k: _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
        return dict(value)
    return value
