"""A NumPy deep-learning framework with hand-derived gradients and pluggable layers.

Public names: ``Sequential``, ``Model``, ``Input``, ``Layer``, ``Parameter``,
``Buffer``, ``hookimpl``, ``load_model``, ``clone_model``, ``set_default_dtype``,
``get_default_dtype``, ``set_seed``, the errors (``FrameworkError`` and its
subclasses) and ``__version__``. Layers, activations, initializers, losses,
optimizers and metrics live in the registry-backed namespaces
``framework.layers``, ``framework.activations``, ... .
"""

from __future__ import annotations

import importlib
from typing import Any

from framework import _aliases
from framework._version import __version__
from framework.base.layer import Layer
from framework.base.parameter import Buffer, Parameter
from framework.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    FrameworkError,
    NotBuiltError,
    NotCompiledError,
    PluginError,
    ShapeError,
    UnknownNameError,
)
from framework.registry.hookspecs import hookimpl
from framework.runtime.dtype import get_default_dtype, set_default_dtype
from framework.runtime.random import get_rng, set_seed

_aliases.install()

__all__ = [
    "__version__",
    "Buffer",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "FrameworkError",
    "Input",
    "Layer",
    "Loss",
    "Metric",
    "Model",
    "NotBuiltError",
    "NotCompiledError",
    "Parameter",
    "PluginError",
    "Sequential",
    "ShapeError",
    "UnknownNameError",
    "clone_model",
    "get_default_dtype",
    "get_rng",
    "hookimpl",
    "load_model",
    "set_default_dtype",
    "set_seed",
]

# Names whose modules are imported on first use, to keep ``import framework`` fast.
_LAZY = {
    "Model": "framework.models.model",
    "Sequential": "framework.models.sequential",
    "Input": "framework.models.graph",
    "Loss": "framework.base.loss",
    "Metric": "framework.base.metric",
    "load_model": "framework.models.persistence",
    "clone_model": "framework.models.cloning",
    "layers": "framework.layers",
    "activations": "framework.activations",
    "initializers": "framework.initializers",
    "losses": "framework.losses",
    "optimizers": "framework.optimizers",
    "metrics": "framework.metrics",
    "callbacks": "framework.training.callbacks",
    "datasets": "framework.datasets",
    "testing": "framework.testing",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'framework' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name.endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
