"""Deployable artefacts that need no part of this framework to run.

This package owns the NumPy-only export: :func:`numpy_predictor` writes a
readable ``predict.py`` (NumPy and the standard library only) and a
``weights.npz`` computing a model's inference. Its pieces:

- :mod:`framework.export.kernels`: the NumPy inference functions the script
  is made of (copied into it verbatim);
- :mod:`framework.export.emitters`: which kernel call computes each layer
  class, and :func:`register_numpy_emitter` for plugin layers;
- :mod:`framework.export.numpy_predictor`: walking a model and writing the files.

ONNX export lives in :mod:`framework.onnx`; weights-only files for PyTorch in
:mod:`framework.interchange`.
"""

from __future__ import annotations

from framework.export.emitters import EMITTERS, Emission, register_numpy_emitter
from framework.export.numpy_predictor import numpy_predictor

__all__ = ["EMITTERS", "Emission", "numpy_predictor", "register_numpy_emitter"]
