"""A small generic registry: a string name -> a factory, as timm's ``create_model`` does.

The name is the config value. Heavy optional packages are imported inside the factory, so listing a
registry never imports them; :func:`require` turns a missing one into an error naming the extra.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from typing import Any, Callable, Generic, TypeVar

__all__ = ["Registry", "RegistryError", "require"]

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown name; the message lists the closest registered names."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the sentence readable
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str | None = None, help: str = "") -> Callable:
        """Decorator: ``@DETECTORS.register("yunet", help="...")``."""

        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            key = name or fn.__name__
            if key in self._factories:
                raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._factories[key] = fn
            self._help[key] = help or (fn.__doc__ or "").strip().split("\n")[0]
            return fn

        return deco

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell wildcard, sorted."""
        return sorted(n for n in self._factories if fnmatch.fnmatch(n, pattern))

    def help(self, name: str) -> str:
        self._check(name)
        return self._help[name]

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def _check(self, name: str) -> None:
        if name not in self._factories:
            close = difflib.get_close_matches(name, list(self._factories), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} '{name}'. Registered: {', '.join(self.list()) or 'none'}."
                f"{hint}")

    def get(self, name: str) -> Callable[..., T]:
        self._check(name)
        return self._factories[name]

    def create(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)


def require(module: str, extra: str = "", package: str = "") -> Any:
    """Import ``module`` or raise an ImportError that says what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f"pip install 'dflab[{extra}]'" if extra else f"pip install {package or module}"
        raise ImportError(f"{module} is needed here but is not installed ({exc}); run: {what}") \
            from exc
