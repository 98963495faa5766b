"""The layer kit's ``checkpoint`` check: a model holding the layer survives save and load."""

from __future__ import annotations

import copy
import importlib.util
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from framework.base.layer import Layer
from framework.testing import _structure as st
from framework.testing._common import default_dtype, forward_by_hand
from framework.testing.report import CheckFailed, CheckSkipped

__all__ = ["checkpoint_round_trip"]

#: A memory-backed folder for the scratch checkpoint, where the system has one: the save's fsync
#: (it replaces files atomically and durably) then costs nothing, and nothing touches the disk.
_MEMORY_FOLDER = "/dev/shm"


def _scratch_folder(nbytes: int) -> str | None:
    """Where to write a scratch checkpoint of about ``nbytes``: :data:`_MEMORY_FOLDER` if it is
    writable with room to spare (a container's is often small), else ``None``, the temp folder."""
    try:
        if not os.access(_MEMORY_FOLDER, os.W_OK | os.X_OK) or not os.path.isdir(_MEMORY_FOLDER):
            return None
        info = os.statvfs(_MEMORY_FOLDER)
    except (OSError, AttributeError):  # no statvfs on Windows
        return None
    return _MEMORY_FOLDER if info.f_bavail * info.f_frsize > 4 * nbytes + (64 << 20) else None


def checkpoint_round_trip(
    layer: Layer, shape: Any, x0: Any, prepare: Callable[[Layer], Any] | None, several_outputs: bool
) -> None:
    """Save a model of ``layer`` to HDF5 and load it; eval-mode outputs must be equal.

    The model is a ``Sequential`` of the layer, or a functional ``Model`` for
    a layer of several inputs (``shape`` a list). A faithful deep copy is saved,
    not one rebuilt from the config, so that state the config forgets shows up
    as a difference after loading; it runs one training-mode call first, so
    that state the layer updates in training (running statistics) kept outside
    its Parameters and Buffers shows up too. The file is written to a
    temporary folder (in memory, ``/dev/shm``, where the system has one) and
    removed afterwards.

    Raises:
        CheckSkipped: for a layer of several outputs, without h5py, or when
            the model API cannot be imported.
        CheckFailed: when the outputs differ after loading.
    """
    if several_outputs:
        raise CheckSkipped("a layer of several outputs cannot end a saved model; not checked")
    if importlib.util.find_spec("h5py") is None:
        raise CheckSkipped("h5py is not installed (pip install h5py); checkpoints cannot be written")
    try:
        from framework.models.model import Model, Sequential
        from framework.models.persistence import load_model, save_model
    except ImportError as exc:
        raise CheckSkipped(f"the model API is not importable yet ({exc})") from exc
    with default_dtype("float32"):
        original = copy.deepcopy(layer)
        original.astype(np.float32)
        original.train()
        if prepare is not None:
            prepare(original)
        xin = st.cast(x0, np.float32)
        if isinstance(shape, list):
            from framework.models.graph import Input

            inputs = [Input(tuple(s[1:])) for s in shape]
            model = Model(inputs, original(inputs))
            model.train()
            forward_by_hand(model, xin)  # a training call, as for one input: state it updates must be saved
        else:
            model = Sequential([original])
            forward_by_hand(model, xin)
            if not model.built:
                model.build(st.with_none_batch(shape))
        model.eval()
        before = forward_by_hand(model, xin)
        nbytes = sum(np.asarray(v).nbytes for v in model.state_dict().values())
        with tempfile.TemporaryDirectory(dir=_scratch_folder(nbytes)) as folder:
            path = os.path.join(folder, "layer.h5")
            save_model(model, path)
            loaded = load_model(path, compile=False)
        if prepare is not None:
            for child in loaded.children():
                prepare(child)
        loaded.eval()
        after = forward_by_hand(loaded, xin)
    if not st.equal(before, after):
        raise CheckFailed(
            f"outputs differ after saving and loading (max |diff| {st.max_diff(before, after):.3e}); "
            "is a constructor argument missing from get_config, a parameter or buffer not "
            "discovered, or state kept outside Parameter/Buffer?"
        )
