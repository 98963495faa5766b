"""Weights in and out of other frameworks' formats: PyTorch state-dict names, safetensors, ``.npz``.

This package owns the doors that carry *weights alone* (no config) between
this framework and PyTorch-shaped ecosystems:

- :mod:`framework.interchange.state_dicts`: the PyTorch names of a model's
  parameters and buffers (``0.weight``, ``2.running_mean``...), and loading a
  state dict under either naming with PyTorch's ``strict`` rules;
- :mod:`framework.interchange.namings`: which naming a state dict's keys are
  read in when a key means different arrays in the two;
- :mod:`framework.interchange.tensors`: state-dict values (arrays, lists,
  CPU tensors) as NumPy arrays;
- :mod:`framework.interchange.safetensors`: ``.safetensors`` files through the
  ``safetensors`` package's NumPy API (the optional ``[safetensors]`` extra);
- :mod:`framework.interchange.npz`: NumPy ``.npz`` archives (never unpickled);
- :mod:`framework.interchange.files`: ``save_weights`` / ``load_weights`` by
  file suffix (``.h5`` stays the HDF5 checkpoint of :mod:`framework.saving`).

Whole models (config and weights) are saved by :mod:`framework.saving`; ONNX
graphs by :mod:`framework.onnx`; NumPy-only inference scripts by
:mod:`framework.export`.
"""

from __future__ import annotations

from framework.interchange.files import load_weights_file, read_state_dict, save_weights_file
from framework.interchange.state_dicts import (
    IncompatibleKeys,
    load_state_dict,
    state_dict,
    torch_names,
)

__all__ = [
    "IncompatibleKeys",
    "load_state_dict",
    "load_weights_file",
    "read_state_dict",
    "save_weights_file",
    "state_dict",
    "torch_names",
]
