"""The exception hierarchy: every error the framework raises on purpose.

All of them derive from :class:`FrameworkError`, so ``except FrameworkError``
catches anything the framework reports about bad input, bad configuration, a
broken plugin or an unreadable checkpoint. Each subclass also derives from the
built-in exception a Python user would expect (``ValueError``, ``TypeError``,
``KeyError``...), so existing ``except`` clauses keep working.
"""

from __future__ import annotations

__all__ = [
    "FrameworkError",
    "ShapeError",
    "ConfigError",
    "UnknownNameError",
    "PluginError",
    "CheckpointError",
    "NotBuiltError",
    "NotCompiledError",
    "DataError",
    "ExportError",
]


class FrameworkError(Exception):
    """Root of every error the framework raises on purpose."""


class ShapeError(FrameworkError, ValueError):
    """An array reached a layer, loss or metric with a shape it cannot take."""


class ConfigError(FrameworkError, ValueError):
    """A constructor argument, hyperparameter or config value is invalid."""


class UnknownNameError(ConfigError):
    """A name was looked up in the registry and nothing is registered under it."""


class PluginError(FrameworkError):
    """A plugin failed to load, or two plugins claim the same name."""


class CheckpointError(FrameworkError):
    """A checkpoint file cannot be written, read or trusted."""


class NotBuiltError(FrameworkError, RuntimeError):
    """A layer or model was used in a way that needs it built first."""


class NotCompiledError(FrameworkError, RuntimeError):
    """``fit`` or ``evaluate`` was called before ``compile``."""


class DataError(FrameworkError, ValueError):
    """Training or evaluation data is malformed (lengths, labels, dtypes)."""


class ExportError(FrameworkError):
    """A model cannot be exported to (or imported from) another format, such as ONNX."""
