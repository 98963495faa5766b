"""Saving and loading whole models: the model side of :mod:`framework.saving`.

:mod:`framework.saving` owns the HDF5 format and knows nothing of models;
this module hands it the model's JSON config (``serialize_model``) to write and
the function that rebuilds a model from it (``deserialize_model``) to read.
``framework.load_model`` is :func:`load_model`.
"""

from __future__ import annotations

import os
from typing import Any

from framework.models.model import Model
from framework.models.serialize import deserialize_model, serialize_model
from framework.saving import reader, writer
from framework.saving.reader import DEFAULT_MAX_BYTES

__all__ = ["load_model", "load_weights", "save_model", "save_weights"]


def save_model(
    model: Model,
    path: str | os.PathLike[str],
    *,
    include_optimizer: bool = True,
    compression: str | None = None,
) -> None:
    """Write ``model`` (architecture, weights, buffers, compile config, optimizer and
    training state) to the HDF5 file ``path``, atomically (see ``docs/checkpoint-format.md``)."""
    if not getattr(model, "built", False):  # the config of an unbuilt model has no shapes
        config: dict[str, Any] = {}
    else:
        config = serialize_model(model)
    writer.save_model(
        model, path, config=config, include_optimizer=include_optimizer, compression=compression
    )


def load_model(
    path: str | os.PathLike[str],
    compile: bool = True,
    *,
    custom_objects: dict[str, Any] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    strict: bool = False,
) -> Model:
    """Rebuild a model saved with ``model.save(path)`` from the file alone.

    The architecture is rebuilt through the plugin registry (and
    ``custom_objects``, ``{name: class}`` for classes not published as
    plugins); weights, buffers, their dtypes and trainable flags, the compile
    config and the optimizer state are restored. Loading never runs code from
    the file, never opens another file, never changes global state, and
    checks every declared size against ``max_bytes`` (8 GiB by default) before
    reading; ``strict=True`` refuses non-finite weights instead of warning.
    See :func:`framework.saving.reader.load_model` for every check.

    Raises:
        CheckpointError: naming the file and what is wrong with it.
    """
    return reader.load_model(
        path,
        compile,
        custom_objects=custom_objects,
        max_bytes=max_bytes,
        strict=strict,
        rebuild=deserialize_model,
    )


def save_weights(model: Model, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write only the parameters and buffers of ``model`` to the HDF5 file ``path``."""
    writer.save_weights(model, path, **kwargs)


def load_weights(model: Model, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Read parameters and buffers written by :func:`save_weights` into ``model``."""
    reader.load_weights(model, path, **kwargs)
