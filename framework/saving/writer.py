"""Writing checkpoints: :func:`save_model` and :func:`save_weights`.

Everything goes through :func:`~framework.saving.atomic.atomic_h5`, so a save
replaces the previous file atomically or leaves it untouched. Only plain
hard-linked contiguous (or, with ``compression``, chunked and gzip/lzf
filtered) datasets and scalar text/integer attributes are written: exactly the
HDF5 features the reader accepts.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from framework._version import __version__
from framework.errors import CheckpointError
from framework.registry.manager import REGISTRY
from framework.saving.atomic import atomic_h5
from framework.saving.callback_state import write_callback_states

if TYPE_CHECKING:
    import h5py

    from framework.models.model import Model

__all__ = [
    "COUNT_ATTRIBUTE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "OWN_GROUP",
    "counted_layers",
    "dataset_path",
    "save_model",
    "save_weights",
]

FORMAT_NAME = "framework.checkpoint"
FORMAT_VERSION = 1


def dataset_path(name: str) -> str:
    """The HDF5 path of a dotted state name: ``cells.0.weight`` -> ``cells/0/weight``."""
    return name.replace(".", "/")


def _json(data: Any) -> str:
    try:
        return json.dumps(data, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot write checkpoint: config is not JSON data: {exc}") from exc


def _write_array(group: h5py.Group, name: str, array: np.ndarray, compression: str | None) -> Any:
    array = np.ascontiguousarray(array)
    if compression and array.size > 1:
        return group.create_dataset(dataset_path(name), data=array, compression=compression)
    return group.create_dataset(dataset_path(name), data=array)


#: The group of ``/weights`` that holds a model's own parameters and buffers: those a ``Model``
#: subclass assigns as its attributes rather than through a child layer. No layer has this name:
#: a layer name never contains ``"."`` and an attribute name never starts with one.
OWN_GROUP = ".self"


def _layer_states(model: Model) -> list[tuple[str, Any]]:
    """``[(layer name, layer)]`` in the model's layer order."""
    return list(model.named_children())


def owned_state(model: Model) -> list[tuple[str, list[tuple[str, Any]], list[tuple[str, Any]]]]:
    """``[(group name, [(key, Parameter)], [(key, Buffer)])]``, each array under its first holder.

    The model's own arrays come first, under :data:`OWN_GROUP` (only when it
    has any), then one entry per layer in the model's layer order. A
    parameter shared by two layers (tied weights) is stored once, in the group
    of the first holder, the order of ``named_parameters``; the model config
    records the tie.
    """
    from framework.base.parameter import Buffer, Parameter

    seen_params: set[int] = set()
    seen_buffers: set[int] = set()
    own = (
        list(model._own_state(Parameter, "", seen_params)),
        list(model._own_state(Buffer, "", seen_buffers)),
    )
    groups = [(OWN_GROUP, *own)] if any(own) else []
    return groups + [
        (
            name,
            list(layer._named_state(Parameter, "", seen_params)),
            list(layer._named_state(Buffer, "", seen_buffers)),
        )
        for name, layer in _layer_states(model)
    ]


def _plugin_record(model: Model) -> dict[str, dict[str, Any]]:
    record: dict[str, dict[str, Any]] = {}

    def note(kind: str, obj: Any) -> None:
        entry = REGISTRY.entry_of(kind, obj if isinstance(obj, type) else type(obj))
        if entry is None:
            return
        record[f"{kind}:{entry.name}"] = {
            "distribution": entry.plugin.distribution,
            "version": entry.plugin.version,
            "plugin": entry.plugin.name,
        }

    def walk(layer: Any) -> None:
        note("layers", layer)
        note("activations", layer)
        for child in layer.children():
            walk(child)

    for child in model.children():
        walk(child)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        note("optimizers", optimizer)
    for loss in _as_list(getattr(model, "loss", None)):
        note("losses", loss)
    for metric in getattr(model, "metrics", None) or []:
        note("metrics", metric)
    return record


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, str):
        return []
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


#: The attribute of a ``running_mean`` dataset that holds its layer's ``num_batches_tracked``.
COUNT_ATTRIBUTE = "num_batches_tracked"


def counted_layers(model: Any) -> dict[int, Any]:
    """``{id(running_mean buffer): layer}`` of every layer under ``model`` that counts its batches.

    Such a layer (``BatchNorm``, ``InstanceNorm`` with running statistics)
    holds a ``running_mean`` Buffer and an ``int`` ``num_batches_tracked``,
    PyTorch's buffer, kept as an attribute of the ``running_mean`` dataset.
    """
    from framework.base.parameter import Buffer

    found: dict[int, Any] = {}
    for layer in model.modules():
        buffer, count = getattr(layer, "running_mean", None), getattr(layer, COUNT_ATTRIBUTE, None)
        counts = isinstance(count, (int, np.integer)) and not isinstance(count, bool)
        if counts and isinstance(buffer, Buffer):
            found.setdefault(id(buffer), layer)
    return found


def _write_weights(handle: h5py.File, model: Model, compression: str | None) -> None:
    """One group per layer (and :data:`OWN_GROUP`); each parameter dataset carries ``trainable``,
    each counting layer's ``running_mean`` its :data:`COUNT_ATTRIBUTE`."""
    weights = handle.create_group("weights")
    names = []
    counted = counted_layers(model)
    for layer_name, params, buffers in owned_state(model):
        if layer_name != OWN_GROUP:
            names.append(layer_name)
        group = weights.create_group(layer_name)
        for key, param in params:
            dataset = _write_array(group, key, param.data, compression)
            dataset.attrs["trainable"] = np.int8(1 if param.trainable else 0)
        for key, buffer in buffers:
            dataset = _write_array(group, key, buffer.data, compression)
            if id(buffer) in counted:
                dataset.attrs[COUNT_ATTRIBUTE] = np.int64(getattr(counted[id(buffer)], COUNT_ATTRIBUTE))
    weights.attrs["layer_names"] = _json(names)


def param_names(model: Model) -> dict[int, str]:
    """``{id(parameter): dotted name}`` for every parameter of ``model``."""
    return {id(p): name for name, p in model.named_parameters()}


def _write_optimizer(handle: h5py.File, model: Model, compression: str | None) -> None:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "state_dict"):
        return
    group = handle.create_group("optimizer")
    state = optimizer.state_dict()
    group.attrs["iterations"] = int(state.get("iterations", 0))
    names = param_names(model)
    order = []
    slots = group.create_group("slots")
    for param, slot in zip(optimizer.params, state.get("slots", [])):
        pname = names.get(id(param))
        if pname is None:
            raise CheckpointError(
                "cannot save optimizer state: it holds a parameter that is not in the model"
            )
        order.append(pname)
        sub = slots.create_group(dataset_path(pname))
        for key, value in slot.items():
            # a float16 parameter's slots (and its "master") are float32: written as they are
            _write_array(sub, key, np.asarray(value), compression)
    group.attrs["param_names"] = _json(order)
    loss_scale = state.get("loss_scale")
    if loss_scale is not None:  # float16 parameters: the dynamic loss scale and its growth count
        group.attrs["loss_scale"] = np.float64(loss_scale["scale"])
        group.attrs["loss_scale_good_steps"] = np.int64(loss_scale["good_steps"])
        if "growth_interval" in loss_scale:
            group.attrs["loss_scale_growth_interval"] = np.int64(loss_scale["growth_interval"])


def _training_state(model: Model) -> dict[str, Any]:
    from framework.runtime.random import get_rng

    state: dict[str, Any] = {
        "epoch": int(getattr(model, "epoch", 0) or 0),
        "rng": get_rng().bit_generator.state,
    }
    layers = {name: gen.bit_generator.state for name, gen in layer_generators(model)}
    if layers:
        state["layer_rngs"] = layers
    return state


def layer_generators(model: Any) -> list[tuple[str, np.random.Generator]]:
    """``(dotted layer name, generator)`` of every layer holding its own NumPy generator."""
    found: list[tuple[str, np.random.Generator]] = []
    seen: set[int] = set()

    def visit(prefix: str, layer: Any) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        for key, value in vars(layer).items():
            if isinstance(value, np.random.Generator):
                found.append((f"{prefix}{key}", value))
        for name, child in layer.named_children():
            visit(f"{prefix}{name}.", child)

    visit("", model)
    return found


def _check_compression(compression: str | None) -> None:
    if compression not in (None, "gzip", "lzf"):
        raise CheckpointError(f"compression must be None, 'gzip' or 'lzf', got {compression!r}")


def _check_path(path: Any) -> None:
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise CheckpointError(f"a checkpoint path must be a non-empty str or os.PathLike, got {path!r}")


def _write_header(handle: h5py.File, contents: str) -> None:
    handle.attrs["format"] = FORMAT_NAME
    handle.attrs["format_version"] = FORMAT_VERSION
    handle.attrs["framework_version"] = __version__
    handle.attrs["contents"] = contents


def save_model(
    model: Model,
    path: str | os.PathLike[str],
    *,
    config: dict[str, Any],
    include_optimizer: bool = True,
    compression: str | None = None,
) -> None:
    """Write ``model`` (architecture, weights, buffers, compile config, optimizer
    and training state) to the HDF5 file ``path``, atomically.

    Args:
        model: a built model.
        path: the file to write; replaced atomically if it exists.
        config: the model's architecture as JSON data
            (``framework.models.serialize.serialize_model(model)``, which
            ``framework.models.persistence.save_model`` passes: this package
            knows the file format, not what a model is).
        include_optimizer: also save the optimizer's step count and moments.
        compression: ``"gzip"`` or ``"lzf"`` to compress datasets, or ``None``.

    Raises:
        CheckpointError: for an unbuilt model, a bad path, or a failed write
            (disk full...), which leaves the previous file at ``path`` intact.
    """
    _check_compression(compression)
    _check_path(path)
    if not getattr(model, "built", False):
        raise CheckpointError(
            f"cannot save {model.describe()}: it is not built yet (call it on data or build it)"
        )
    with atomic_h5(path) as handle:
        _write_header(handle, "model")
        group = handle.create_group("model")
        group.attrs["config"] = _json(config)
        group.attrs["plugins"] = _json(_plugin_record(model))
        _write_weights(handle, model, compression)
        if getattr(model, "optimizer", None) is not None and hasattr(model, "compile_config"):
            handle.create_group("compile").attrs["config"] = _json(model.compile_config())
            if include_optimizer:
                _write_optimizer(handle, model, compression)
        training = handle.create_group("training")
        training.attrs["state"] = _json(_training_state(model))
        write_callback_states(training, getattr(model, "fit_callbacks", None), _json)


def save_weights(model: Model, path: str | os.PathLike[str], *, compression: str | None = None) -> None:
    """Write only the parameters and buffers of ``model`` to ``path``, atomically."""
    _check_compression(compression)
    _check_path(path)
    if not getattr(model, "built", False):
        raise CheckpointError(f"cannot save weights of {model.describe()}: it is not built yet")
    with atomic_h5(path) as handle:
        _write_header(handle, "weights")
        _write_weights(handle, model, compression)
