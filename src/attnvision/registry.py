"""Name → constructor tables. Each component family (attention, heads, models, datasets) owns one."""

from __future__ import annotations

import inspect
from typing import Callable, Generic, TypeVar

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """A named table of constructors whose lookup errors list the valid names.

    >>> ATTENTION = Registry("attention module")
    >>> ATTENTION.add("se", SqueezeExcite)
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, constructor: T) -> None:
        if name in self._entries:
            raise KeyError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = constructor

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} '{name}'; valid names: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def build(self, name: str, *args, **kw):
        """Call the constructor of ``name``; arguments it does not take raise ValueError naming the
        arguments it does take (instead of a TypeError from deep inside)."""
        constructor = self.get(name)
        try:
            inspect.signature(constructor).bind(*args, **kw)
        except TypeError as e:
            params = [p for p in inspect.signature(constructor).parameters if p not in ("self", "args", "kw", "kwargs")]
            raise ValueError(f"{self.kind} '{name}': {e}; it takes: {', '.join(params)}") from None
        return constructor(*args, **kw)
