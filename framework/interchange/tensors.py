"""The values of a state dict as NumPy arrays: arrays, nested lists and CPU ``torch.Tensor`` s.

:func:`as_numpy` converts one value (without importing torch), :func:`count_value`
reads a ``num_batches_tracked`` batch count, and :func:`describe_keys` shortens
a list of keys for an error message.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.layer import format_shape
from framework.errors import ConfigError

__all__ = ["as_numpy", "count_value", "describe_keys"]


def _tensor_as_numpy(tensor: Any, key: str) -> np.ndarray:
    """A torch tensor as a NumPy array, without importing torch.

    NumPy has no bfloat16: such a tensor is widened to float32 first (exact),
    and the caller casts it to the parameter's dtype, as ``Tensor.copy_`` does.
    """
    tensor = tensor.detach().cpu()
    if str(tensor.dtype) == "torch.bfloat16":
        tensor = tensor.float()
    try:
        return np.asarray(tensor.numpy())
    except (TypeError, RuntimeError) as exc:  # float8, quantized, complex32...: no NumPy dtype
        raise ConfigError(
            f"load_state_dict: {key!r} holds a tensor of dtype {tensor.dtype}, which NumPy cannot "
            "represent; convert it in PyTorch first (e.g. tensor.float())"
        ) from exc


def as_numpy(value: Any, key: str) -> np.ndarray:
    """``value`` as a NumPy array: arrays, lists and CPU tensors (``.detach().cpu().numpy()``).

    A bfloat16 tensor is widened to float32 (exactly); a tensor of a dtype
    NumPy lacks otherwise, or non-numeric data, raises a ConfigError naming ``key``.
    """
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch.Tensor, without importing torch
        value = _tensor_as_numpy(value, key)
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise ConfigError(
            f"load_state_dict: {key!r} holds {array.dtype} data; expected numbers (a float or integer array)"
        )
    return array


def count_value(value: Any, key: str) -> int | str:
    """A ``num_batches_tracked`` value as an ``int``, or why it has the wrong shape (a str).

    A scalar, or (PyTorch's rule for a 0-d buffer) an array of shape ``(1,)``.

    Raises:
        ConfigError: a value that is not a whole number ``>= 0``.
    """
    array = as_numpy(value, key)
    if array.shape not in ((), (1,)):
        return f"{key}: expected (), got {format_shape(array.shape)}"
    number = array.item()
    if array.dtype.kind == "b" or not float(number).is_integer() or number < 0:
        raise ConfigError(
            f"load_state_dict: {key!r} is a batch count, expected a whole number >= 0, got {number!r}"
        )
    return int(number)


def describe_keys(keys: list[str], limit: int = 20) -> str:
    """``[a, b, ...] (n)``: at most ``limit`` keys and their count."""
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)})"
