"""ONNX interchange: export a model to an ONNX file, import one back, describe one.

- :func:`export` writes a ``Sequential`` or functional ``Model`` as an ONNX
  graph (inference form) with the ``onnx`` package; each layer is written by
  the converter registered for its class.
- :func:`load` rebuilds a functional ``Model`` from an ONNX graph whose
  operators map to built-in layers (for example what ``torch.onnx.export``
  writes for an MLP, a LeNet or an LSTM).
- :func:`describe` prints an ONNX file's nodes, inputs, outputs and parameter
  counts without building a model.

Plugins provide converters for their own layers with the
``register_onnx_converters`` hook: ``register(layer_class, converter)`` with
``converter(ctx, layer, inputs) -> output name(s)`` writing nodes through the
:class:`~framework.onnx.exporter.ExportContext`. The ``onnx`` package is
imported only when one of these functions runs (extra ``[onnx]``).
"""

from __future__ import annotations

from framework.errors import ExportError
from framework.onnx.describe import describe
from framework.onnx.exporter import ExportContext, export, to_onnx
from framework.onnx.importer import load
from framework.onnx.registry import converter_for, converters

__all__ = [
    "ExportContext",
    "ExportError",
    "converter_for",
    "converters",
    "describe",
    "export",
    "load",
    "to_onnx",
]
