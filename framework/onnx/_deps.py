"""The lazy import of the optional ``onnx`` package, with the install hint when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from framework.errors import ExportError

__all__ = ["require_onnx"]


def require_onnx() -> ModuleType:
    """The ``onnx`` module; :class:`~framework.errors.ExportError` with the install hint if absent."""
    try:
        return importlib.import_module("onnx")
    except ImportError as exc:
        raise ExportError(
            "ONNX export and import need the 'onnx' package, which is not installed; "
            "install the extra: pip install 'framework[onnx]' (onnx, plus onnxruntime to run the file)"
        ) from exc
