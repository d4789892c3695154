"""One registry idea for passes, runtimes, zoo models and tasks: look things up by name.

An entry may be *declared* before it exists: its name, aliases and the module that registers it.
The module is imported the first time the entry is looked up, so a recipe that only exports and
quantizes never imports the modules (and TFMOT or Larq behind them) of passes it does not use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from edgecompress.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names (with aliases) → objects, with one clear error listing the valid names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        #: declared, not yet imported: name → the module that registers it
        self._modules: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj, *aliases)
            return obj

        return decorator

    def add(self, name: str, obj: T, *aliases: str) -> None:
        key = self._normalize(name)
        if key in self._items or (key in self._aliases and self._aliases[key] != key):
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[key] = obj
        self._modules.pop(key, None)
        for alias in aliases:
            self._alias(alias, key)

    def declare(self, name: str, module: str, *aliases: str) -> None:
        """Name an entry that ``module`` registers when it is imported (on first lookup)."""
        key = self._normalize(name)
        if key not in self._items:
            self._modules[key] = module
        for alias in aliases:
            self._alias(alias, key)

    def remove(self, name: str) -> None:
        key = self.canonical(name)
        self._items.pop(key, None)
        self._modules.pop(key, None)
        for alias in [a for a, k in self._aliases.items() if k == key]:
            del self._aliases[alias]

    def canonical(self, name: str) -> str:
        key = self._normalize(name)
        key = self._aliases.get(key, key)
        if key not in self._items and key not in self._modules:
            raise UsageError(f"unknown {self.kind} '{name}'", f"choose one of: {', '.join(self.names())}")
        return key

    def get(self, name: str) -> T:
        key = self.canonical(name)
        if key not in self._items:
            importlib.import_module(self._modules[key])
            if key not in self._items:
                raise ValueError(f"module {self._modules[key]} did not register {self.kind} '{key}'")
        return self._items[key]

    def names(self) -> list[str]:
        return sorted({*self._items, *self._modules})

    def items(self) -> Iterator[tuple[str, T]]:
        """Every entry, importing the declared ones."""
        for name in self.names():
            yield name, self.get(name)

    def __contains__(self, name: str) -> bool:
        key = self._normalize(name)
        key = self._aliases.get(key, key)
        return key in self._items or key in self._modules

    def _alias(self, alias: str, key: str) -> None:
        alias = self._normalize(alias)
        if alias == key:
            return
        if alias in self._items or self._aliases.get(alias, key) != key:
            raise ValueError(f"{self.kind} alias '{alias}' names two entries")
        self._aliases[alias] = key

    @staticmethod
    def _normalize(name: str) -> str:
        return name.strip().lower().replace("-", "_")
