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
SELECTION = ("rank", "sample", "systematic")
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
    # labels (class-conditional SPTI): from the first-level sub-folders (ImageFolder: data/<class>/*.png)
    # or from a column of a listing / metadata file; at most one source, and not the users' source
    labels_from_subfolders: bool = False
    label_column: str | None = None


@dataclass
class PrivacyConfig:
    """The DP budget. N (the number of private records or users) enters the default δ = 1/(N ln N), hence σ,
    and is recorded in privacy.json: it is treated as public. ``num_private_bound`` (a public upper bound B
    on N) replaces N everywhere (N > B is refused); an explicit ``delta`` makes σ independent of N.
    ``noise``: "gaussian" (floating-point, exact GDP accounting) or "discrete" (the exact discrete Gaussian on
    an integer vote ``grid``, accounted with its proven zCDP bound: a little more ε at the same σ)."""

    epsilon: float | None = 1.0
    delta: float | None = None  # default 1/(N ln N) (or 1/(B ln B) with num_private_bound)
    sigma: float | None = None  # give sigma instead of epsilon to fix the noise directly
    unit: str = "record"  # "record" or "user" (needs a user column / sub-folders)
    not_private: bool = False  # epsilon = infinity: no noise at all; recorded as NOT private
    insecure_noise_seed: int | None = None  # tests only: reproducible noise, recorded as NOT private
    noise: str = "gaussian"  # "gaussian" or "discrete" (exact discrete Gaussian, spti.privacy.discrete)
    grid: int | None = None  # discrete only: integer vote grid; None: 1 (record level), 2520 (user level)
    num_private_bound: int | None = None  # a PUBLIC upper bound on N, used and published instead of N
    # labelled runs only: how many synthetic captions each class gets. "dp": a noisy count per class
    # (Gaussian, composed with the PE histograms: mu^2 = mu_counts^2 + T / sigma^2), spending the share
    # ``class_count_share`` of mu^2; "uniform": equal shares (a public prior, costs nothing); "prior": the
    # public proportions ``class_prior`` (label -> weight). Never the exact private counts.
    class_sizes: str = "dp"
    class_count_share: float = 0.05
    class_prior: dict[str, float] | None = None


@dataclass
class GenerationConfig:
    """How the LLM is asked for random captions and variations (Aug-PE's APIs)."""

    domain: str = "a photo"
    attributes: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_ATTRIBUTES.items()})
    tones: list[str] = field(default_factory=lambda: list(DEFAULT_TONES))
    examples: list[str] = field(default_factory=list)  # PUBLIC or already-DP example captions only
    examples_per_prompt: int = 3  # examples shown in each random-API prompt (drawn from ``examples``)
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
    # "systematic" (the default): seats ∝ the noisy votes, each candidate the floor or ceiling of its share
    # (low-variance resampling); "sample" (PE's own rule: independent draws ∝ the noisy votes) has the same
    # expected mix but adds its own draw noise; "rank" (top-N) gives a candidate with 100 votes the same one
    # seat as one with 2 and fills the rest with unvoted candidates. Measured on benchmarks/bench_quality.py
    # (docs/QUALITY.md): systematic closest to the private mix, rank furthest
    selection: str = "systematic"
    threshold: float = 0.0
    # H in units of the histogram's noise σ (H = max(threshold, threshold_sigmas·σ), spti.pe.selection):
    # the same share of pure-noise candidates survives at every ε
    threshold_sigmas: float = 0.0
    # drop exact duplicate (label, text) candidates before voting (spti.pe.dedup): a copy gets no vote
    # (ties go to the first) but still gets noise
    dedup: bool = True
    lookahead: int = 0  # 0: vote against the candidate itself; L: against the mean of L variations/renders
    voting: str = "text"
    chunk_size: int = 4096
    # "auto" (numpy), "numpy", "faiss", "torch" (GPU when available; "torch:cuda:1" picks the device) or
    # "ray" (private rows sharded over a Ray cluster's workers; "ray:torch" sets the workers' backend)
    nn_backend: str = "auto"
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
    # The non-private caption ceiling (text voting): render a sample of the PRIVATE captions with the release
    # renderer and report their metrics next to the release's (private/ceiling/, NOT differentially private).
    ceiling: bool = False
    # accuracy metrics (labelled runs): the real labelled test set (ImageFolder, or a listing / metadata file
    # with a 'label' column), split in halves for the real-data ceiling unless real_train names its training
    # set; accuracy_on_private: train/test on the run's PRIVATE images instead (only on request, NOT DP)
    real_labelled: str | None = None
    real_train: str | None = None
    accuracy_on_private: bool = False


@dataclass
class ExecutorConfig:
    """Where the model stages run (:mod:`spti.executor`): ``local`` (this process, the default) or ``ray``
    (Ray Data actor pools, one model replica per GPU or CPU slot). Operational only: the outputs are the same
    bytes on either, so none of this goes into a cache key."""

    kind: str = "local"
    address: str | None = None  # ray: None starts a local Ray; "auto" joins `ray start`; "ray://host:10001"
    workers: int | None = None  # replicas per model stage; None: one per GPU (gpus_per_replica > 0) or CPU slot
    cpus_per_replica: float = 1.0  # fractional is fine (0.5 on a 2-core machine)
    gpus_per_replica: float = 0.0
    batch_size: int | None = None  # items per task; None: the backend's batch_size x batches_per_task
    batches_per_task: int = 1
    # conversations per LLM call when a generation round is cut into calls (LLM backends that allow it:
    # llamacpp, vllm, openai; same replies whatever the value): the calls run on all LLM replicas at once and,
    # in image voting, each call's replies are rendered and embedded while the LLM writes the next ones
    llm_chunk: int = 64
    # per-role overrides, e.g. {"renderer": {"gpus_per_replica": 1, "workers": 8}, "text_embedder": {...}}
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)


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
    # labelled runs: label -> class description used in the prompts (default: the label name), e.g.
    # {"3": "a photo of a dress"}; a label named here that has no private image is still a class, so
    # the class list can be fixed publicly instead of being read off the private data
    classes: dict[str, str] = field(default_factory=dict)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # where model stages run (spti.executor)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Config:
        return _from_dict(cls, d or {}, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> Config:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        d = read_yaml_file(p)
        if d is not None and not isinstance(d, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
        try:
            return cls.from_dict(d)
        except ConfigError as e:  # name the file: the config may come from a run folder's config.yaml
            raise type(e)(f"{p}: {e}") from None

    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """The config as plain data. Credentials (``extra_headers``, any ``*_key`` / ``*token`` / ``password``
        option) are replaced by hashed markers (:mod:`spti.redact`) unless ``redact=False``: whatever writes
        a config somewhere (config.yaml, a manifest, a report) gets the safe form by default; only code that
        builds another live Config from this one asks for the secrets."""
        d = asdict(self)
        if redact:
            from spti.redact import redact_secrets

            d = redact_secrets(d)
        return d

    def to_yaml(self) -> str:
        """The resolved config as written to a run folder's ``config.yaml`` (credentials redacted)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def merged(self, overrides: dict[str, Any]) -> Config:
        """A copy with dotted-key overrides applied (``{"pe.iterations": 2}``); None values are ignored."""
        d = self.to_dict(redact=False)
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
        _check(math.isfinite(pe.threshold_sigmas) and pe.threshold_sigmas >= 0,
               "pe.threshold_sigmas must be a finite number >= 0")
        _check(pe.lookahead >= 0, "pe.lookahead must be >= 0")
        _check(pe.chunk_size >= 1, "pe.chunk_size must be >= 1")
        _check(isinstance(pe.nn_backend, str) and pe.nn_backend.split(":")[0] in ("auto", "numpy", "faiss", "torch", "ray")
               and (":" not in pe.nn_backend or pe.nn_backend.split(":")[0] in ("torch", "ray")),
               "pe.nn_backend must be auto, numpy, faiss, torch (or torch:<device>, e.g. torch:cuda:1) or ray "
               "(or ray:<numpy|faiss|torch>)")
        _check(gen.variation_mode in VARIATION_MODES, f"generation.variation_mode must be one of {VARIATION_MODES}")
        _check(0.0 <= gen.mask_prob <= 1.0, "generation.mask_prob must be in [0, 1]")
        _check(gen.min_length >= 1, "generation.min_length must be >= 1")
        _check(gen.max_length >= gen.min_length, "generation.max_length must be >= generation.min_length")
        _check(gen.max_new_tokens >= 1, "generation.max_new_tokens must be >= 1")
        _check(math.isfinite(gen.length_std) and gen.length_std >= 0,
               "generation.length_std must be a finite number >= 0 (the spread of the target caption length, in words)")
        _check(math.isfinite(gen.temperature) and gen.temperature >= 0, "generation.temperature must be a finite number >= 0")
        _check(0 < gen.top_p <= 1, "generation.top_p must be in (0, 1]")
        _check(gen.max_retries >= 0, "generation.max_retries must be >= 0")
        _check(gen.examples_per_prompt >= 1, "generation.examples_per_prompt must be >= 1")
        _check(bool(gen.domain and gen.domain.strip()), "generation.domain must describe the data (e.g. 'a photo of a bedroom')")
        _check(all(isinstance(v, list) and v for v in gen.attributes.values()), "generation.attributes: each key needs a non-empty list")
        check_templates(gen)
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
        _check_privacy_extras(pr)
        _check_labels(self)
        ex = self.executor
        _check(ex.kind in ("local", "ray"), "executor.kind must be local or ray")
        _check(ex.workers is None or ex.workers >= 1, "executor.workers must be >= 1 (or null: one per GPU/CPU slot)")
        _check(ex.cpus_per_replica > 0 and ex.gpus_per_replica >= 0,
               "executor.cpus_per_replica must be > 0 and executor.gpus_per_replica >= 0")
        _check((ex.batch_size is None or ex.batch_size >= 1) and ex.batches_per_task >= 1,
               "executor.batch_size and executor.batches_per_task must be >= 1")
        _check(isinstance(ex.llm_chunk, int) and not isinstance(ex.llm_chunk, bool) and ex.llm_chunk >= 1,
               f"executor.llm_chunk must be a positive integer, got {ex.llm_chunk!r}")
        _check_accuracy(self, need_private)
        if need_private:
            _check(bool(self.data.private), "data.private: the private data to use is required")
        for role in ("llm", "text_embedder", "captioner", "renderer", "image_embedder"):
            v = getattr(self, role)
            _check(isinstance(v, dict) and isinstance(v.get("backend"), str), f"{role}: needs a 'backend' name")
        return self


CLASS_SIZES = ("dp", "uniform", "prior")


def labelled(cfg: Config) -> bool:
    """Whether a run is class-conditional (its private data carries labels)."""
    return bool(cfg.data.labels_from_subfolders or cfg.data.label_column)


def _check_accuracy(cfg: Config, need_private: bool) -> None:
    """The accuracy metrics need a labelled run and a real labelled test set (or the explicit opt-in to
    the private images); checked before hours of generation, not at the end."""
    ev = cfg.evaluate
    for key in ("real_labelled", "real_train"):
        v = getattr(ev, key)
        _check(v is None or (isinstance(v, str) and v.strip() != ""), f"evaluate.{key} must be a path")
        if need_private and v is not None:
            _check(Path(v).exists(), f"evaluate.{key}: {v} does not exist")
    _check(isinstance(ev.accuracy_on_private, bool), "evaluate.accuracy_on_private must be true or false")
    if not any(m in ("accuracy", "accuracy-linear", "accuracy-cnn") for m in ev.metrics):
        return
    _check(labelled(cfg), "evaluate.metrics 'accuracy' needs a labelled run (data.labels_from_subfolders or "
           "data.label_column): the synthetic images get their class labels from it")
    _check(bool(ev.real_labelled) or ev.accuracy_on_private,
           "evaluate.metrics 'accuracy' needs evaluate.real_labelled: real labelled test images (an ImageFolder "
           "or a metadata file with a 'label' column), or evaluate.accuracy_on_private: true to use the run's "
           "private images (NOT differentially private)")


def _check_labels(cfg: Config) -> None:
    d, pr = cfg.data, cfg.privacy
    _check(not (d.labels_from_subfolders and d.label_column),
           "give one source of labels: data.labels_from_subfolders or data.label_column, not both")
    _check(not (d.labels_from_subfolders and d.users_from_subfolders),
           "labels and users cannot both come from the sub-folders: take one of them from a column "
           "(data.label_column or data.user_column)")
    _check(not (d.label_column and d.user_column and d.label_column == d.user_column),
           "data.label_column and data.user_column must be different columns")
    _check(pr.class_sizes in CLASS_SIZES, f"privacy.class_sizes must be one of {CLASS_SIZES}")
    share = pr.class_count_share
    _check(isinstance(share, (int, float)) and math.isfinite(share) and 0 < share < 1,
           "privacy.class_count_share must be a number in (0, 1): the share of the budget (mu^2) spent on the "
           "noisy class counts")
    if pr.class_sizes == "prior":
        prior = pr.class_prior
        _check(isinstance(prior, dict) and len(prior) > 0,
               "privacy.class_sizes 'prior' needs privacy.class_prior: {label: weight, ...} (public proportions)")
        _check(all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in prior.values())
               and sum(prior.values()) > 0,
               "privacy.class_prior: weights must be finite numbers >= 0 with a positive sum")
    _check(all(isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in cfg.classes.items()),
           "classes: a mapping label -> non-empty description (quote numeric labels: \"3\": \"a dress\")")


#: The variables each prompt template is formatted with (:class:`spti.pe.generation.TextGenerator`), and
#: the one each variation template must use (without it the LLM never sees the parent caption).
# {class}: the class description in labelled runs (the domain in unlabelled ones), spti.pe.generation
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "random_template": ("domain", "class", "tone", "focus", "length", "examples", "example_lines"),  # + generation.attributes' keys
    "fill_in_template": ("domain", "class", "length", "masked", "tone"),
    "rephrase_template": ("domain", "class", "length", "text", "tone"),
}
REQUIRED_TEMPLATE_FIELDS = {"fill_in_template": "masked", "rephrase_template": "text"}


def check_templates(gen: GenerationConfig) -> None:
    """Every prompt template given in ``generation`` must format with the variables the generator passes:
    balanced braces, named placeholders only, each a known variable (listed in the error), format specs
    that apply to text. Checked by ``Config.validate`` so that ``--dry-run`` finds a bad template before
    any private data is read, rather than the LLM stage after the first noisy histogram."""
    import string

    for name, known in TEMPLATE_FIELDS.items():
        template = getattr(gen, name)
        if template is None or template == "":
            continue
        key = f"generation.{name}"
        variables = set(known) | (set(gen.attributes) if name == "random_template" else set())
        avail = ", ".join("{" + v + "}" for v in sorted(variables))
        try:
            parts = list(string.Formatter().parse(template))
        except ValueError as e:
            raise ConfigError(f"{key}: malformed template ({e}); write {{{{ and }}}} for literal braces") from None
        used: set[str] = set()
        for _, field_name, _, _ in parts:
            if field_name is None:
                continue
            if field_name == "" or field_name.isdigit():
                raise ConfigError(f"{key}: placeholders must be named, e.g. {{domain}}; available: {avail}")
            if not field_name.isidentifier():
                raise ConfigError(f"{key}: placeholder {{{field_name}}} must be a plain name; available: {avail}")
            if field_name not in variables:
                raise ConfigError(
                    f"{key}: unknown placeholder {{{field_name}}}; available: {avail} "
                    "(write {{ and }} for literal braces)"
                )
            used.add(field_name)
        try:
            template.format_map({v: "x" for v in variables})
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise ConfigError(f"{key}: the template does not format ({type(e).__name__}: {e})") from None
        need = REQUIRED_TEMPLATE_FIELDS.get(name)
        if need and need not in used:
            raise ConfigError(f"{key}: must contain {{{need}}}, where the parent caption goes")


def read_yaml_file(p: Path) -> Any:
    """A YAML file's content (safe-loaded), or ConfigError with one clear line for every way a user's file
    can be unusable: unreadable, not UTF-8 (naming the line), not YAML, or nested too deeply."""
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the config file ({e.strerror or type(e).__name__})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{p}: line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the config file as UTF-8"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ConfigError(f"{p}: the YAML is nested too deeply to be a spti config") from None


NOISE_KINDS = ("gaussian", "discrete")  # = spti.privacy.discrete.NOISE_KINDS (config imports no numpy)


def _check_privacy_extras(pr: PrivacyConfig) -> None:
    """privacy.noise / grid / num_private_bound / delta / insecure_noise_seed: ranges and combinations."""
    _check(pr.noise in NOISE_KINDS, f"privacy.noise must be one of {NOISE_KINDS}")
    if pr.grid is not None:
        _check(pr.noise == "discrete", "privacy.grid (the integer vote grid) applies only to privacy.noise: discrete")
        _check(pr.grid >= 1, "privacy.grid must be an integer >= 1 (e.g. 2520 for user-level votes)")
    if pr.num_private_bound is not None:
        _check(pr.num_private_bound >= 1, "privacy.num_private_bound must be an integer >= 1 (a public upper "
               "bound on the number of private records or users)")
    if pr.delta is not None:
        _check(math.isfinite(pr.delta) and 0 < pr.delta < 1, "privacy.delta must be strictly between 0 and 1 "
               "(e.g. 1e-6), or left unset for the default 1/(N ln N)")
    if pr.insecure_noise_seed is not None:
        _check(pr.insecure_noise_seed >= 0, "privacy.insecure_noise_seed must be an integer >= 0")


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _from_dict(cls: type, d: Any, prefix: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(d).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    odd = [k for k in d if not isinstance(k, str)]
    if odd:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: keys must be names, got {odd[0]!r}; known: {', '.join(sorted(names))}")
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
