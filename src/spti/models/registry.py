"""Backend registries: name -> class, with lazy discovery and import-path plug-ins.

Why discovery instead of a hand-written table: adding a backend then touches exactly one file (the new
module registers itself), and a third-party backend plugs in as ``"package.module:ClassName"`` without any
change to spti.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from spti.errors import BackendError, ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Backends of one role.

    ``package`` is the role's sub-package; every module in it is imported once, on the first lookup, so
    that its ``@registry.register("name")`` decorators run. Modules must not import heavy libraries at top
    level.
    """

    def __init__(self, role: str, package: str, base: type[T]):
        self.role = role
        self.package = package
        self.base = base
        self._classes: dict[str, type[T]] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.role} backend {name!r} registered twice")
            self._classes[name] = cls
            cls.backend_name = name  # type: ignore[attr-defined]
            return cls

        return deco

    def _discover(self) -> None:
        if self._discovered:
            return
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self.package}.{mod.name}")
        self._discovered = True

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.role}: 'backend' must be a non-empty string, got {name!r}")
        if ":" in name:  # plug-in: "package.module:ClassName"
            modname, _, clsname = name.partition(":")
            if not modname or not clsname or not all(p.isidentifier() for p in [*modname.split("."), *clsname.split(".")]):
                raise ConfigError(f"{self.role}: backend {name!r} is not of the form 'package.module:ClassName'")
            try:
                cls: Any = importlib.import_module(modname)
                for part in clsname.split("."):
                    cls = getattr(cls, part)
            except (ImportError, AttributeError) as e:
                raise ConfigError(f"{self.role}: cannot import backend {name!r}: {e}") from e
            except Exception as e:  # noqa: BLE001 - importing a plug-in runs its code: any error is its own
                raise ConfigError(f"{self.role}: importing backend {name!r} failed: {type(e).__name__}: {e}") from e
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise ConfigError(f"{self.role}: {name!r} is not a subclass of {self.base.__name__}")
            return cls
        self._discover()
        try:
            return self._classes[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.role} backend {name!r}; choose one of {', '.join(self.names())} "
                "or give 'package.module:ClassName'"
            ) from None

    def build(self, cfg: Mapping[str, Any] | str) -> T:
        """Instantiate a backend from ``{"backend": name, **kwargs}`` (or just a name)."""
        if isinstance(cfg, str):
            cfg = {"backend": cfg}
        if not isinstance(cfg, Mapping) or "backend" not in cfg:
            raise ConfigError(f"{self.role}: config needs a 'backend' key, got {cfg!r}")
        kwargs = dict(cfg)
        name = kwargs.pop("backend")
        from spti.redact import require_no_redacted

        # a config read back from a run folder's config.yaml holds markers where the user's secrets were
        require_no_redacted(kwargs, f"{self.role} backend {name!r}")
        cls = self.get(name)
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        if missing:  # constructing it would raise a TypeError that reads like a bad option
            raise ConfigError(
                f"{self.role} backend {name!r}: {cls.__name__} does not implement {', '.join(missing)}"
            )
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ConfigError(f"{self.role} backend {name!r}: bad options {sorted(kwargs)}: {e}") from e
        except Exception as e:
            from spti.errors import SptiError
            from spti.models._guard import current_stage, failure_message

            stage = current_stage()
            if stage is None or isinstance(e, SptiError):
                raise
            # a backend's constructor sees no private data: its message may be quoted (scrubbed)
            raise BackendError(failure_message(self.role, name, stage, e, private=False, what="could not be built")) from e
