"""``save_weights`` / ``load_weights`` by file suffix.

==================  ==================================================  ==========
suffix              format                                              key names
==================  ==================================================  ==========
``.safetensors``    safetensors (``[safetensors]`` extra)               ``names``
``.npz``            NumPy archive                                       ``names``
``.h5``, ``.hdf5``  the HDF5 checkpoint of :mod:`framework.saving`      layers
==================  ==================================================  ==========

``names`` is ``"torch"`` by default (PyTorch's names, see
:mod:`framework.interchange.state_dicts`) so the file loads into the
PyTorch twin; ``"native"`` keeps the layer names. Loading accepts either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from framework.base.layer import Layer
from framework.errors import CheckpointError, ConfigError
from framework.interchange.npz import read_npz, write_npz
from framework.interchange.safetensors import read_safetensors, read_safetensors_metadata, write_safetensors
from framework.interchange.state_dicts import KEY_FORMATS, IncompatibleKeys, load_state_dict, state_dict
from framework.saving.atomic import refuse_unbuilt

__all__ = ["STATE_DICT_SUFFIXES", "load_weights_file", "read_state_dict", "save_weights_file"]

STATE_DICT_SUFFIXES = (".safetensors", ".npz")
"""Suffixes handled here; ``Model.save_weights`` sends any other to the HDF5 checkpoint."""


def suffix_of(path: Any) -> str:
    """The lower-cased suffix of ``path`` (``""`` for none)."""
    return Path(os.fspath(path)).suffix.lower()


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The arrays of a ``.safetensors`` or ``.npz`` file, by key.

    Raises:
        CheckpointError: another suffix, or an unreadable file.
    """
    suffix = suffix_of(path)
    if suffix == ".safetensors":
        return read_safetensors(path)
    if suffix == ".npz":
        return read_npz(path)
    raise CheckpointError(
        f"{os.fspath(path)!r}: expected a .safetensors or .npz file, got suffix {suffix or '(none)'!r}"
    )


def save_weights_file(model: Layer, path: str | os.PathLike[str], *, names: str = "torch") -> None:
    """Write ``model``'s parameters and buffers to a ``.safetensors`` or ``.npz`` file.

    Args:
        model: a built model.
        path: the file; its suffix chooses the format.
        names: ``"torch"`` (default: PyTorch's names, plus ``num_batches_tracked``)
            or ``"native"`` (the model's layer names).

    The file is replaced atomically: a failed write leaves the previous one.

    Raises:
        ConfigError: an unknown ``names``.
        CheckpointError: an unbuilt model (as for ``.h5``), an unsupported
            suffix or an unwritable file.
    """
    if names not in KEY_FORMATS:
        raise ConfigError(f"save_weights: names must be one of {KEY_FORMATS}, got {names!r}")
    refuse_unbuilt(model)
    arrays = {key: np.asarray(value) for key, value in state_dict(model, names).items()}
    suffix = suffix_of(path)
    if suffix == ".safetensors":
        write_safetensors(arrays, path, metadata={"format": "pt" if names == "torch" else "np"})
    elif suffix == ".npz":
        write_npz(arrays, path)
    else:
        raise CheckpointError(
            f"{os.fspath(path)!r}: expected a .safetensors or .npz file, got suffix {suffix or '(none)'!r}"
        )


def load_weights_file(
    model: Layer, path: str | os.PathLike[str], *, strict: bool = True, names: str | None = None
) -> IncompatibleKeys:
    """Load a ``.safetensors`` or ``.npz`` file (native or PyTorch names) into ``model``.

    Args:
        model: a built model.
        path: the file.
        strict: as for :func:`~framework.interchange.state_dicts.load_state_dict`.
        names: ``"native"`` or ``"torch"`` to read every key in that naming;
            ``None`` (default) reads each key in the naming that has it. Keys
            that name different arrays in the two (layers named like positions)
            are read in the naming a safetensors file records (``"pt"``:
            PyTorch's); an ``.npz`` records none, so they need ``names``.

    Returns:
        What could not be loaded (empty after a strict load).

    Raises:
        CheckpointError: an unreadable file.
        ConfigError, ShapeError: keys or shapes that do not match (with ``strict``);
            keys meaning different arrays in the two namings, undecided.
    """
    state = read_state_dict(path)
    prefer = None
    if suffix_of(path) == ".safetensors":
        prefer = _RECORDED_NAMINGS.get(read_safetensors_metadata(path).get("format", ""))
    return load_state_dict(model, state, strict=strict, names=names, prefer=prefer)


_RECORDED_NAMINGS = {"pt": "torch", "np": "native"}
"""A safetensors file's ``format`` metadata -> the naming of its keys."""
