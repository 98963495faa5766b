"""``framework inspect FILE``: a file's layers, array shapes and parameter counts, without building a model.

- an HDF5 checkpoint (``.h5``): the header, the model's class and each layer
  from the JSON config (class, name) with the shapes and dtypes of the
  datasets stored for it, read through the hard-link-only primitives of
  :mod:`framework.saving.hdf5` (no array data is read, no class is looked
  up, nothing is built);
- ``.safetensors`` / ``.npz``: each array's name, shape and dtype;
- ``.onnx``: :func:`framework.onnx.describe` (the ``[onnx]`` extra).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from framework.errors import CheckpointError, ConfigError

__all__ = ["describe_file"]


def _shape(shape: tuple[int, ...] | None) -> str:
    if shape is None:  # an HDF5 dataset with a null dataspace: no values at all
        return "(null)"
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
    widths = [
        max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
        for i in range(len(header))
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return lines


def _datasets(group: Any, where: str, prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    """``(dotted name, dataset)`` below ``group``, through hard links only (never the data)."""
    from framework.saving.hdf5 import child_names, h5py_module

    h5py = h5py_module()
    if depth > 32:
        raise CheckpointError(f"{where} is nested more than 32 groups deep")
    found: list[tuple[str, Any]] = []
    for name in child_names(group, where):
        obj = group[name]
        if isinstance(obj, h5py.Dataset):
            found.append((prefix + name, obj))
        elif isinstance(obj, h5py.Group):
            found.extend(_datasets(obj, f"{where}/{name}", f"{prefix}{name}.", depth + 1))
    return found


def _config_layers(config: dict[str, Any]) -> dict[str, str]:
    """``{layer name: class name}`` from a model config (Sequential or functional)."""
    inner = config.get("config", {})
    layers = inner.get("layers", []) if isinstance(inner, dict) else []
    out: dict[str, str] = {}
    for entry in layers if isinstance(layers, list) else []:
        if isinstance(entry, dict):
            raw = entry.get("config")
            cfg: dict[str, Any] = raw if isinstance(raw, dict) else {}
            name = entry.get("name") or cfg.get("name")
            if isinstance(name, str):
                out[name] = str(entry.get("class_name", "?"))
    return out


def _describe_h5(path: str) -> str:
    from framework.saving.hdf5 import attr_json, child_group, has_attr, open_checkpoint
    from framework.saving.reader import check_header

    with open_checkpoint(path) as handle:
        contents = check_header(handle, path)
        lines = [f"{path}: framework checkpoint ({contents})"]
        classes: dict[str, str] = {}
        model = child_group(handle, "model", "")
        if model is not None and has_attr(model, "config"):
            config = attr_json(model, "config", "/model", dict)
            classes = _config_layers(config)
            shape = config.get("build_input_shape")
            lines.append(f"model: {config.get('class_name', '?')}, input shape {shape}")
        weights = child_group(handle, "weights", "")
        per_layer: dict[str, list[tuple[str, Any]]] = {name: [] for name in classes}
        if weights is not None:
            for name, dataset in _datasets(weights, "/weights"):
                if name.startswith(".self."):  # a model subclass's own arrays (/weights/.self)
                    layer, key = "(the model itself)", name.removeprefix(".self.")
                else:
                    layer, _, key = name.partition(".")
                per_layer.setdefault(layer, []).append((key, dataset))
        rows = []
        total = 0
        for layer, arrays in per_layer.items():
            count = sum(math.prod(d.shape) for _, d in arrays if d.shape is not None)
            total += count
            shapes = ", ".join(f"{k} {_shape(d.shape)} {d.dtype}" for k, d in arrays) or "-"
            rows.append((layer, classes.get(layer, "?"), shapes, str(count)))
        lines += _table(rows, ("layer", "class", "arrays", "parameters"))
        lines.append(f"total: {total} values (parameters and buffers)")
    return "\n".join(lines)


def _describe_arrays(path: str) -> str:
    from framework.interchange.files import read_state_dict

    arrays = read_state_dict(path)
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # np.load gives an .npz member without the .npy header as bytes
            raise CheckpointError(
                f"{path!r}: member {key!r} is not an array (expected an .npy array, got "
                f"{type(value).__name__}); the file is damaged or was not written by np.savez"
            )
    rows = [(k, _shape(v.shape), str(v.dtype), str(v.size)) for k, v in arrays.items()]
    lines = [f"{path}: {len(arrays)} arrays", *_table(rows, ("name", "shape", "dtype", "values"))]
    lines.append(f"total: {sum(v.size for v in arrays.values())} values")
    return "\n".join(lines)


def describe_file(path: str | os.PathLike[str]) -> str:
    """A human-readable summary of the checkpoint, weights or ONNX file ``path``.

    Raises:
        CheckpointError: a missing or unreadable file.
        ConfigError: an unknown suffix.
        ExportError: an ``.onnx`` file while :mod:`framework.onnx` lacks ``describe``.
    """
    name = os.fspath(path)
    suffix = Path(name).suffix.lower()
    if not os.path.isfile(name):
        raise CheckpointError(f"no such file: {name!r}")
    if suffix == ".onnx":
        try:
            from framework.onnx import describe
        except ImportError as exc:
            from framework.errors import ExportError

            raise ExportError(
                f"inspecting {name!r} needs framework.onnx.describe, which is not available: {exc}"
            ) from exc
        return str(describe(name))
    if suffix in (".safetensors", ".npz"):
        return _describe_arrays(name)
    if suffix in (".h5", ".hdf5"):
        return _describe_h5(name)
    raise ConfigError(
        f"inspect: cannot tell the format of {name!r} from its suffix {suffix or '(none)'!r}; "
        "expected .h5, .hdf5, .safetensors, .npz or .onnx"
    )
