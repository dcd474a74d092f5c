"""Name -> object registries filled by decorators, so adding an agent or encoder edits no if/elif chain."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from rlkit.errors import RLKitError, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection; ``@registry.register("name")`` adds an entry."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise RLKitError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._entries))}."
                + suggest(name, self._entries)
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())


AGENTS: Registry[Any] = Registry("algorithm")
ENCODERS: Registry[Any] = Registry("encoder")
PRETRAINERS: Registry[Any] = Registry("pretraining method")
