"""One registry idea for passes, runtimes, zoo models and tasks: look things up by name."""

from __future__ import annotations

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

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj, *aliases)
            return obj

        return decorator

    def add(self, name: str, obj: T, *aliases: str) -> None:
        key = self._normalize(name)
        if key in self._items or key in self._aliases:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[key] = obj
        for alias in aliases:
            self._aliases[self._normalize(alias)] = key

    def canonical(self, name: str) -> str:
        key = self._normalize(name)
        key = self._aliases.get(key, key)
        if key not in self._items:
            raise UsageError(f"unknown {self.kind} '{name}'", f"choose one of: {', '.join(self.names())}")
        return key

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        yield from sorted(self._items.items())

    def __contains__(self, name: str) -> bool:
        key = self._normalize(name)
        return self._aliases.get(key, key) in self._items

    @staticmethod
    def _normalize(name: str) -> str:
        return name.strip().lower().replace("-", "_")
