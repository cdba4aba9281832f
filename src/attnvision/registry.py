"""Name → constructor tables. Each component family (attention, heads, models, datasets) owns one."""

from __future__ import annotations

import inspect
import typing
from functools import partial
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

        def refused(e: TypeError) -> ValueError:
            return ValueError(f"{self.kind} '{name}': {e}; it takes: {', '.join(accepted_names(constructor))}")

        try:
            inspect.signature(constructor).bind(*args, **kw)
        except TypeError as e:
            raise refused(e) from None
        try:
            return constructor(*args, **kw)
        except TypeError as e:  # a name in **kw that the class the factory passes it on to rejects
            if "unexpected keyword argument" not in str(e):
                raise
            raise refused(e) from None


def accepted_names(constructor: Callable) -> list[str]:
    """The keyword arguments ``constructor`` takes. A factory with ``**kw`` passes them on to the
    class its return annotation names (``cifar_resnet(...) -> ResNet``), so that class's count too."""
    func = constructor.func if isinstance(constructor, partial) else constructor
    params = inspect.signature(constructor).parameters
    names = [p for p, v in params.items() if v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD) and p != "self"]
    if any(v.kind is v.VAR_KEYWORD for v in params.values()):
        target = typing.get_type_hints(func).get("return")
        if inspect.isclass(target):
            names += [p for p in accepted_names(target.__init__) if p not in names]
    return names
