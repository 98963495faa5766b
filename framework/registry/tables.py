"""A table collected from the plugins' hooks, collected again when the set of plugins changes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from framework.registry.manager import REGISTRY

__all__ = ["PluginTable"]

T = TypeVar("T")


class PluginTable(Generic[T]):
    """``collect()``'s result, kept until a plugin is registered or removed.

    Args:
        collect: builds the table by calling a hook on every loaded plugin
            (after :meth:`Registry.load`); called again only when the set of
            plugins differs from the last call's.
    """

    def __init__(self, collect: Callable[[], T]) -> None:
        self._collect = collect
        self._lock = threading.Lock()
        self._key: tuple[int, ...] | None = None
        self._table: T | None = None

    def get(self) -> T:
        """The table for the plugins loaded now (loading the entry points first)."""
        REGISTRY.load()
        key = tuple(id(p) for p in REGISTRY.pm.get_plugins())
        with self._lock:
            if self._table is None or self._key != key:
                self._table = self._collect()
                self._key = key
            return self._table
