"""Backend calls, guarded: the one place where a backend's failure becomes an error a user can act on, and
where a backend's ``info()`` loses its credentials.

Why here (applied to every backend class by :meth:`spti.models.base.Backend.__init_subclass__`): backends
are called from many places (the generator, the captioning and embedding stages, the render cache, the
candidate embedders, the metrics), and a third-party plug-in can raise anything. Inside a pipeline stage
(:func:`backend_stage`, set by :mod:`spti.pipeline` and the CLI), an exception that is not already an
:class:`~spti.errors.SptiError` becomes a :class:`~spti.errors.BackendError` that names the backend, its
role and the stage, and says that the run resumes where it stopped. Outside a stage (a library user
calling a backend directly), exceptions pass through untouched.

Privacy: the exception's own message is quoted (first line, 200 characters, credentials scrubbed) only
for roles that never see private data, the LLM (public or DP text) and the renderer (DP captions). For the
captioner and the embedders, which see private images or texts, and for anything they call, only the
exception's type is named: a library's message may quote its input.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from spti.errors import BackendError, SptiError

#: The methods of each role that do the role's work (the calls that are guarded).
CALLS = ("generate", "caption", "render", "embed")
ROLES = ("llm", "captioner", "renderer", "text_embedder", "image_embedder")
#: Roles that see private data: their exceptions' messages are never quoted.
PRIVATE_ROLES = frozenset({"captioner", "text_embedder", "image_embedder"})

_STAGE: ContextVar[str | None] = ContextVar("spti_backend_stage", default=None)
_IN_PRIVATE_CALL: ContextVar[bool] = ContextVar("spti_in_private_call", default=False)


@contextmanager
def backend_stage(name: str) -> Iterator[None]:
    """Within this block, backend failures are reported as failing during stage ``name`` (refine it with
    :func:`set_stage`); the previous stage (or none) is restored on exit."""
    token = _STAGE.set(name)
    try:
        yield
    finally:
        _STAGE.reset(token)


def set_stage(name: str) -> None:
    """Name the stage now running, inside a :func:`backend_stage` block (whose exit restores the outer
    value): lets a sequence of stages be labelled without nesting each in a ``with``."""
    if _STAGE.get() is not None:
        _STAGE.set(name)


def current_stage() -> str | None:
    return _STAGE.get()


def with_backend_stage(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: run the function inside ``backend_stage(name)``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with backend_stage(_STAGE.get() or name):
                return fn(*args, **kwargs)

        return wrapper

    return deco


def role_of(cls: type) -> str | None:
    """The role of a backend class: the ``spti.models.<role>`` package whose base class it derives from."""
    for c in cls.__mro__:
        parts = c.__module__.split(".")
        if len(parts) == 3 and parts[:2] == ["spti", "models"] and parts[2] in ROLES:
            return parts[2]
    return None


def backend_label(obj_or_cls: Any) -> str:
    """How a backend is named in messages: its registered name, or ``module:Class`` as a plug-in is
    configured."""
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    registered = cls.__dict__.get("backend_name")
    if isinstance(registered, str) and registered != "?":
        return registered
    return f"{cls.__module__}:{cls.__qualname__}"


def failure_message(role: str | None, label: str, stage: str, e: BaseException, *, private: bool, what: str = "failed") -> str:
    from spti.redact import scrub_message

    detail = type(e).__name__
    if not private:
        msg = scrub_message(str(e))
        if msg:
            detail += f": {msg}"
    return (
        f"{role or 'backend'} backend {label!r} {what} during the {stage} stage: {detail}; "
        "fix it and run the same command again to resume"
    )


def _guard_call(fn: Callable[..., Any], role: str | None, method: str) -> Callable[..., Any]:
    private_role = role in PRIVATE_ROLES

    @functools.wraps(fn)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        stage = _STAGE.get()
        if stage is None:
            return fn(self, *args, **kwargs)
        private = private_role or _IN_PRIVATE_CALL.get()
        token = _IN_PRIVATE_CALL.set(True) if private_role else None
        try:
            return fn(self, *args, **kwargs)
        except SptiError:
            raise
        except Exception as e:  # noqa: BLE001 - a plug-in may raise anything; the cause stays chained
            raise BackendError(failure_message(role, backend_label(self), stage, e, private=private)) from e
        finally:
            if token is not None:
                _IN_PRIVATE_CALL.reset(token)

    guarded.__spti_guarded__ = True  # type: ignore[attr-defined]
    return guarded


def _redacting_info(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def info(self: Any) -> Any:
        from spti.redact import redact_secrets

        return redact_secrets(fn(self))

    info.__spti_guarded__ = True  # type: ignore[attr-defined]
    return info


def guard_class(cls: type) -> None:
    """Wrap the role methods and ``info()`` that ``cls`` itself defines (inherited ones are already
    wrapped where they are defined; abstract declarations are left alone)."""
    role = role_of(cls)
    for name in (*CALLS, "info"):
        fn = cls.__dict__.get(name)
        if not inspect.isfunction(fn) or getattr(fn, "__isabstractmethod__", False) or getattr(fn, "__spti_guarded__", False):
            continue
        setattr(cls, name, _redacting_info(fn) if name == "info" else _guard_call(fn, role, name))
