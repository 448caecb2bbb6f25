"""A registry of storage backends by kind, filled by decorators in the modules of one package.

``worker.sources`` and ``worker.sinks`` each hold one. The package's modules are imported (pkgutil)
before the first lookup, so a backend module cannot be forgotten by an import list.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Backends(Generic[T]):
    def __init__(self, package: str, what: str) -> None:
        self.package, self.what = package, what
        self._by_kind: dict[str, T] = {}
        self._loaded = False

    def register(self, kind: str) -> Callable[[T], T]:
        def decorate(backend: T) -> T:
            if kind in self._by_kind and self._by_kind[kind] is not backend:
                raise ValueError(f"{self.what} kind {kind!r} is registered twice")
            self._by_kind[kind] = backend
            return backend

        return decorate

    def get(self, kind: str) -> T:
        return self.all()[kind]

    def all(self) -> dict[str, T]:
        if not self._loaded:
            for module in pkgutil.iter_modules(importlib.import_module(self.package).__path__):
                importlib.import_module(f"{self.package}.{module.name}")
            self._loaded = True
        return dict(self._by_kind)
