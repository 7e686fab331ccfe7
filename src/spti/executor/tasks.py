"""What one model replica does, whatever runs it: build a role's backend once from its config dict, then turn
lists of items into outputs, one backend call per batch.

Why one module for both executors: the local executor and every Ray actor run *this* code on *the same task
boundaries*, so a stage gives the same bytes on a laptop and on a cluster by construction: the same backend
(built by the same ``build_*`` function from the same dict), the same batches, the same decode of each image,
the same seeds. Nothing here imports Ray.

Items and outputs per role (one output per item, in order):

============== =================================================== ===========================================
role           item                                                output
============== =================================================== ===========================================
captioner      an image (see :func:`load_images`)                  the caption (str)
image_embedder an image                                            a float32 feature row (np.ndarray)
text_embedder  a text (str)                                        a float32 feature row
renderer       ``(prompt, seed)``                                  the render as PNG bytes (what the render
                                                                   cache stores)
llm            an :class:`LLMCall` (a whole ``generate`` call)     its replies (list[str])
============== =================================================== ===========================================

An LLM item is one call. The LLM backends derive each reply's seed from the call's seed and the reply's *index
in the call* (:func:`spti.models.llm.derive_seed`), so a call is cut only for a backend that declares
``splittable``: the part starting at conversation ``s`` is sent with ``first_index=s`` and its replies are those
of the whole call (:func:`split_call`). Any other backend gets each call whole.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spti.errors import BackendError, ConfigError, SptiError

#: The model roles an executor can run, in the order a run uses them.
ROLES = ("captioner", "image_embedder", "text_embedder", "renderer", "llm")
#: Roles whose items are images.
IMAGE_ROLES = frozenset({"captioner", "image_embedder"})

__all__ = [
    "ROLES",
    "BackendInfo",
    "LLMCall",
    "Step",
    "Worker",
    "batch_size_hint",
    "build_backend",
    "load_images",
    "make_tasks",
    "Passthrough",
    "split_call",
]


@dataclasses.dataclass(frozen=True)
class LLMCall:
    """One ``LLM.generate`` call: its conversations and keyword arguments (``max_new_tokens``,
    ``temperature``, ``top_p``, ``seed``), exactly as the local code would make it."""

    conversations: Sequence[Any]
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    #: the index of this call's first conversation in the call it was cut from (:func:`split_call`); only a
    #: ``splittable`` backend is given one other than 0
    first_index: int = 0


def split_call(call: LLMCall, size: int) -> list[LLMCall]:
    """``call`` cut into calls of at most ``size`` conversations, each with its ``first_index``: for a
    ``splittable`` backend their replies, concatenated, are the replies of ``call``."""
    convs = list(call.conversations)
    size = max(1, int(size))
    if len(convs) <= size:
        return [call]
    return [dataclasses.replace(call, conversations=convs[s : s + size], first_index=call.first_index + s)
            for s in range(0, len(convs), size)]


@dataclasses.dataclass(frozen=True)
class Passthrough:
    """A chain item that skips the steps after the one whose link made it and comes back as a leaf as it is
    (e.g. an LLM step's raw reply, which the driver needs next to the renders made from it)."""

    value: Any


def _identity_link(item: Any, output: Any) -> list[Any]:
    return [output]


def _replies_link(item: Any, output: Any) -> list[Any]:
    return list(output)


@dataclasses.dataclass(frozen=True)
class Step:
    """One model stage of an executor: a role and the config dict its ``build_*`` function takes.

    ``backend``: an already built backend (local executor only: the stages hand over the model they loaded;
    a Ray executor builds one per replica from ``config``). ``batch_size``: items per backend call (None:
    the backend's own ``batch_size``). ``max_pixels``: the decode limit for private images
    (:class:`~spti.data.images.ImageRecord` items). ``link``: in a chain, ``link(item, output)`` gives the
    items of the next step (a top-level, picklable function; default: the output itself, and for the LLM
    each reply). ``name``: what progress and errors call the step."""

    role: str
    config: Mapping[str, Any] | str | None = None
    backend: Any = None
    batch_size: int | None = None
    max_pixels: int | None = None
    link: Callable[[Any, Any], list[Any]] | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"executor: unknown model role {self.role!r}; one of {', '.join(ROLES)}")
        if self.config is None and self.backend is None:
            raise ConfigError(f"executor: the {self.role} step needs a backend config")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int)
                                            or self.batch_size < 1):
            raise ConfigError(f"executor: batch_size must be a positive integer, got {self.batch_size!r}")

    @property
    def label(self) -> str:
        return self.name or self.role.replace("_", " ")

    def next_items(self, item: Any, output: Any) -> list[Any]:
        link = self.link or (_replies_link if self.role == "llm" else _identity_link)
        return list(link(item, output))

    def portable(self) -> Step:
        """This step without a live backend: what travels to a remote replica (which builds its own)."""
        if self.config is None:
            raise ConfigError(f"executor: the {self.role} step has a live backend but no config; a remote "
                              "replica builds its backend from the config dict")
        return dataclasses.replace(self, backend=None)


def build_backend(role: str, config: Mapping[str, Any] | str) -> Any:
    """The backend of ``role`` built from ``config`` by the role's registry (``build_captioner`` & co.)."""
    if role not in ROLES:
        raise ConfigError(f"executor: unknown model role {role!r}")
    return importlib.import_module(f"spti.models.{role}").REGISTRY.build(config)


def backend_class(role: str, config: Mapping[str, Any] | str) -> type:
    name = config if isinstance(config, str) else config.get("backend")
    return importlib.import_module(f"spti.models.{role}").REGISTRY.get(name)


def batch_size_hint(step: Step) -> int:
    """Items per backend call, known on the driver without building the model: the step's ``batch_size``,
    else the built backend's, else the config's ``batch_size`` option, else the backend class's default.
    (A backend that computes its batch size in ``__init__`` can differ; the replicas use their own, and the
    driver's tasks are then cut a little differently, the same way on every executor.)"""
    if step.batch_size is not None:
        return step.batch_size
    if step.backend is not None:
        return max(1, int(getattr(step.backend, "batch_size", 1) or 1))
    if step.role == "llm":
        return 1
    cfg = step.config
    if isinstance(cfg, Mapping) and isinstance(cfg.get("batch_size"), int) and cfg["batch_size"] >= 1:
        return int(cfg["batch_size"])
    try:
        return max(1, int(getattr(backend_class(step.role, cfg), "batch_size", 1)))
    except (SptiError, TypeError, ValueError):
        return 1


def make_tasks(n: int, task_size: int, split_every: int | None = None) -> list[range]:
    """``range(n)`` cut into consecutive tasks of ``task_size`` items (the last may be smaller). With
    ``split_every``, no task crosses a multiple of it: each group of ``split_every`` items (a stage's shard)
    is cut from its own start, as a loop over shards batches them."""
    task_size = max(1, int(task_size))
    if not split_every:
        return [range(s, min(n, s + task_size)) for s in range(0, n, task_size)]
    out = []
    for g in range(0, n, int(split_every)):
        end = min(n, g + int(split_every))
        out.extend(range(s, min(end, s + task_size)) for s in range(g, end, task_size))
    return out


# ---------------------------------------------------------------------------------------------- images
def _is_record(x: Any) -> bool:
    return all(hasattr(x, a) for a in ("id", "path", "sha256")) and not isinstance(x, (str, bytes, Path))


def slim_record(x: Any) -> Any:
    """A private image record reduced to what decoding needs (id, path, hash): the listing's metadata and
    the user id do not travel to the replicas."""
    from spti.data.images import ImageRecord

    if isinstance(x, ImageRecord) and not x.metadata and x.user_id is None and x.label is None:
        return x
    return ImageRecord(id=str(x.id), path=Path(x.path), user_id=None, sha256=str(x.sha256), width=0, height=0)


def load_images(items: Sequence[Any], *, max_pixels: int | None, target_size: int | None) -> list[Any]:
    """RGB PIL images for image items, decoded the way the local stages decode them:

    * a private image record (``id``, ``path``, ``sha256``: :class:`~spti.data.images.ImageRecord`):
      :func:`spti.data.images.iter_batches` (hash re-checked, downscaled to the model's ``target_size`` while
      decoding; errors name the record id, never the file);
    * PNG/JPEG ``bytes`` or a path (a render of the render cache): opened and converted to RGB, as the
      candidate embedders and evaluation read renders;
    * a PIL image: converted to RGB.
    """
    from PIL import Image

    from spti.data.images import DEFAULT_MAX_PIXELS, iter_batches

    out: list[Any] = [None] * len(items)
    recs = [i for i, x in enumerate(items) if _is_record(x)]
    if recs:
        mp = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        for _, images in iter_batches([items[i] for i in recs], len(recs), mp, target_size=target_size):
            for i, im in zip(recs, images, strict=True):
                out[i] = im
    for i, x in enumerate(items):
        if out[i] is not None:
            continue
        if isinstance(x, Image.Image):
            out[i] = x.convert("RGB")
        elif isinstance(x, (bytes, bytearray, memoryview)):
            with Image.open(io.BytesIO(bytes(x))) as im:
                out[i] = im.convert("RGB")
        elif isinstance(x, (str, Path)):
            with Image.open(x) as im:
                out[i] = im.convert("RGB")
        else:
            raise ConfigError(f"executor: item {i} of an image stage is a {type(x).__name__}, not an image, "
                              "image record, PNG bytes or path")
    return out


# ---------------------------------------------------------------------------------------------- the worker
def _check_count(backend: Any, role: str, got: int, want: int) -> None:
    """One output per input: anything else would shift outputs onto the wrong items (as in the stages)."""
    if got != want:
        from spti.models._guard import backend_label

        raise BackendError(f"{role.replace('_', ' ')} {backend_label(backend)!r} returned {got} outputs for a batch "
                           f"of {want} inputs; it must return exactly one per input, in order")


def _rows(vecs: Any) -> np.ndarray:
    a = np.asarray(vecs, dtype=np.float32)
    return a if a.ndim == 2 else a.reshape(0, 0) if a.size == 0 else a.reshape(a.shape[0], -1)


class Worker:
    """One replica of one step: its backend (built once) and :meth:`run`, which maps a task's items to
    outputs with one backend call per ``batch_size`` items, in order."""

    def __init__(self, step: Step):
        self.step = step
        self.owned = step.backend is None
        self.backend = step.backend if step.backend is not None else build_backend(step.role, step.config)

    @property
    def batch_size(self) -> int:
        if self.step.batch_size is not None:
            return self.step.batch_size
        return max(1, int(getattr(self.backend, "batch_size", 1) or 1))

    def batches(self, items: Sequence[Any]) -> Iterator[Sequence[Any]]:
        b = 1 if self.step.role == "llm" else self.batch_size
        for s in range(0, len(items), b):
            yield items[s : s + b]

    def run(self, items: Sequence[Any]) -> list[Any]:
        """Outputs for ``items`` (see the module's table), in order."""
        out: list[Any] = []
        for chunk in self.batches(items):
            out.extend(self.call(chunk))
        return out

    def call(self, chunk: Sequence[Any]) -> list[Any]:
        """One backend call on one batch."""
        role, be = self.step.role, self.backend
        if role == "llm":
            (c,) = chunk
            if not isinstance(c, LLMCall):
                raise ConfigError(f"executor: an llm item must be an LLMCall, got {type(c).__name__}")
            kw: dict[str, Any] = {}
            if c.first_index:
                if not getattr(be, "splittable", False):
                    from spti.models._guard import backend_label

                    raise ConfigError(f"LLM {backend_label(be)!r} is not splittable: a call to it cannot be cut "
                                      "into parts (first_index)")
                kw["first_index"] = int(c.first_index)
            replies = list(be.generate(list(c.conversations), max_new_tokens=c.max_new_tokens,
                                       temperature=c.temperature, top_p=c.top_p, seed=c.seed, **kw))
            _check_count(be, role, len(replies), len(c.conversations))
            return [replies]
        if role == "renderer":
            from spti.data.release import png_bytes

            prompts = [str(p) for p, _ in chunk]
            seeds = [int(s) for _, s in chunk]
            images = list(be.render(prompts, seeds))
            _check_count(be, role, len(images), len(chunk))
            return [png_bytes(im) for im in images]
        if role == "text_embedder":
            vecs = _rows(be.embed([str(t) for t in chunk]))
            _check_count(be, role, vecs.shape[0], len(chunk))
            return list(vecs)
        images = load_images(chunk, max_pixels=self.step.max_pixels, target_size=getattr(be, "input_size", None))
        if role == "captioner":
            caps = list(be.caption(images))
            _check_count(be, role, len(caps), len(chunk))
            return caps
        vecs = _rows(be.embed(images))
        _check_count(be, role, vecs.shape[0], len(chunk))
        return list(vecs)

    def close(self) -> None:
        if self.owned:
            close = getattr(self.backend, "close", None)
            if callable(close):
                close()


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """What the driver needs to know of a backend without holding it: what goes into manifests and cache
    keys (``info``, ``cache_key``), how stages cut batches and decode images (``batch_size``,
    ``input_size``), the feature width of an embedder (``dim``) and the captioner's remote flag."""

    role: str
    backend_name: str
    info: dict[str, Any]
    cache_key: str
    batch_size: int
    input_size: int | None
    dim: int | None
    sends_data_off_machine: bool


def describe_backend(backend: Any, role: str) -> BackendInfo:
    from spti.models._guard import backend_label

    dim = None
    if role in ("text_embedder", "image_embedder"):
        try:
            dim = int(backend.dim)
        except Exception:  # noqa: BLE001 - some backends know their width only after a first call
            dim = None
    return BackendInfo(role=role, backend_name=backend_label(backend), info=dict(backend.info()),
                       cache_key=str(backend.cache_key), batch_size=max(1, int(getattr(backend, "batch_size", 1) or 1)),
                       input_size=getattr(backend, "input_size", None), dim=dim,
                       sends_data_off_machine=bool(getattr(backend, "sends_data_off_machine", False)))


# ---------------------------------------------------------------------------------------------- chains
#: A chain entry: (path, trail, item). ``path`` orders the leaves (root index, then the index of each
#: fanned-out child); ``trail`` holds the items of the steps after the first that led to this one.
Entry = tuple[tuple[int, ...], tuple[Any, ...], Any]


def advance(worker: Worker, entries: list[Entry], *, last: bool) -> list[Entry]:
    """Run one step of a chain on a task's entries: outputs for all items, then (unless ``last``) the next
    step's entries by the step's link. A leaf of the last step is ``(path, trail + (output,), None)``.
    Entries whose item is a :class:`Passthrough` are not given to the step: they go on as they are (at the
    last step, as a leaf whose trail ends with the pass-through)."""
    live = [e for e in entries if not isinstance(e[2], Passthrough)]
    outs = worker.run([e[2] for e in live]) if live else []
    if len(outs) != len(live):
        raise BackendError(f"executor: the {worker.step.label} step returned {len(outs)} outputs for {len(live)} items")
    outputs = iter(outs)
    nxt: list[Entry] = []
    for path, trail, item in entries:
        if isinstance(item, Passthrough):
            nxt.append((path, trail, None if last else item))
            continue
        out = next(outputs)
        if last:
            nxt.append((path, (*trail, out), None))
            continue
        for j, child in enumerate(worker.step.next_items(item, out)):
            nxt.append(((*path, j), (*trail, child), child))
    return nxt


def assemble(n_roots: int, leaves: list[Entry]) -> list[list[tuple[Any, ...]]]:
    """Per root item, its leaves' trails in order. Raises if a leaf came twice (a retried task whose first
    output was kept too) or a root whose task was lost has none while others do."""
    leaves = sorted(leaves, key=lambda e: e[0])
    out: list[list[tuple[Any, ...]]] = [[] for _ in range(n_roots)]
    prev = None
    for path, trail, _ in leaves:
        if path == prev:
            raise BackendError("executor: an output arrived twice (duplicate after a retry); the stage is not trusted")
        prev = path
        out[path[0]].append(trail)
    return out


def expected_tasks(n: int, task_size: int) -> int:
    return math.ceil(n / max(1, task_size)) if n else 0
