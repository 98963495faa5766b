"""The built-in model file formats, registered as any plugin registers its own.

- weights: ``.safetensors`` and ``.npz`` state dicts (:mod:`framework.interchange`);
- export: ``.onnx`` (:mod:`framework.onnx`) and a directory holding a NumPy-only
  ``predict.py`` (:mod:`framework.export`);
- state-dict naming: ``"torch"``, PyTorch's module names.

Each implementation is imported when used, so ``import framework`` stays light
and a missing optional package (``onnx``, ``safetensors``) is reported only by
the door that needs it.
"""

from __future__ import annotations

from typing import Any

from framework.registry.hookspecs import hookimpl


def _save_weights(model: Any, path: Any, **kwargs: Any) -> None:
    from framework.interchange.files import save_weights_file

    save_weights_file(model, path, **kwargs)


def _load_weights(model: Any, path: Any, **kwargs: Any) -> Any:
    from framework.interchange.files import load_weights_file

    return load_weights_file(model, path, **kwargs)


def _export_onnx(model: Any, path: Any, **kwargs: Any) -> None:
    from framework.onnx import export

    export(model, path, **kwargs)


def _export_numpy(model: Any, path: Any, **kwargs: Any) -> Any:
    from framework.export import numpy_predictor

    return numpy_predictor(model, path, **kwargs)


def _torch_state_dict(model: Any, _source: Any = None) -> Any:
    from framework.interchange.state_dicts import state_dict

    return state_dict(model, "torch")


def _load_state_dict(model: Any, state: Any, strict: bool = True) -> Any:
    from framework.interchange.state_dicts import load_state_dict

    return load_state_dict(model, state, strict=strict)


@hookimpl
def register_model_formats(register: Any) -> None:
    """The safetensors/npz weights, the ONNX and NumPy exports, PyTorch's state-dict names."""
    register("weights", "safetensors", suffixes=(".safetensors",), save=_save_weights, load=_load_weights)
    register("weights", "npz", suffixes=(".npz",), save=_save_weights, load=_load_weights)
    register("export", "onnx", suffixes=(".onnx",), save=_export_onnx)
    register("export", "numpy", suffixes=("",), save=_export_numpy)
    register("state_dict", "torch", save=_torch_state_dict, load=_load_state_dict)
