"""Import paths of the flat layout before the subpackages, kept for plugins.

``import framework.layer`` (and the other modules listed in :data:`ALIASES`)
returns the module at its new place, so a plugin written against the older
layout keeps working unchanged. Each use warns once with ``DeprecationWarning``
naming the new path; ``framework.callbacks`` is a public name and does not warn.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

__all__ = ["ALIASES", "install"]

#: Old module path -> new module path.
ALIASES = {
    "framework.layer": "framework.base.layer",
    "framework.parameter": "framework.base.parameter",
    "framework.config": "framework.base.config",
    "framework.loss": "framework.base.loss",
    "framework.metric": "framework.base.metric",
    "framework.initializer": "framework.base.initializer",
    "framework.optimizer": "framework.base.optimizer",
    "framework.validation": "framework.base.validation",
    "framework.dtype": "framework.runtime.dtype",
    "framework.random": "framework.runtime.random",
    "framework.blas": "framework.runtime.blas",
    "framework.hookspecs": "framework.registry.hookspecs",
    "framework.namespace": "framework.registry.namespace",
    "framework.graph": "framework.models.graph",
    "framework.model": "framework.models",
    "framework.summary": "framework.models.summary",
    "framework.callbacks": "framework.training.callbacks",
    "framework.schedules": "framework.base.schedules",
    "framework.checkpoint": "framework.models.persistence",
}
_PUBLIC = {"framework.callbacks"}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        if spec.name not in _PUBLIC:
            warnings.warn(
                f"{spec.name} moved to {self.target}; import it from there",
                DeprecationWarning,
                stacklevel=2,
            )
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """The target module is already executed."""


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = ALIASES.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
