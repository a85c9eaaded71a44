"""Name tables (models, losses, commands, ...): a name -> factory mapping with "did you mean" errors.

Configs name things; a name table builds them. An unknown name fails with the valid names, closest first.

>>> colours = NameTable("colour")
>>> @colours.register("red")
... def make_red():
...     return (255, 0, 0)
>>> colours.get("red")()
(255, 0, 0)
>>> colours.get("rde")
Traceback (most recent call last):
...
ecgka.errors.ConfigError: unknown colour 'rde'; did you mean 'red'? (valid: red)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ecgka.errors import ConfigError

T = TypeVar("T")


def look_up_option(name: str, valid: list[str] | tuple[str, ...] | set[str], kind: str = "option") -> str:
    """Return ``name`` if valid, else raise a ConfigError naming the closest valid choices."""
    if name in valid:
        return name
    ordered = sorted(valid)
    close = difflib.get_close_matches(str(name), ordered, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"unknown {kind} {name!r}{hint} (valid: {', '.join(ordered)})")


class NameTable(Generic[T]):
    """A table from names to factories, filled by the ``register`` decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        return self._entries[look_up_option(name, self.names(), self.kind)]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
