"""Reading checkpoints: :func:`load_model` and :func:`load_weights`.

Loading runs in two phases. First every object that will be read is found
through hard links, and every dataset's layout, storage, shape and dtype is
checked against what the rebuilt model expects (:mod:`framework.saving.hdf5`);
the declared sizes are summed and compared with ``max_bytes``. Only then is
any array read; values are checked as they arrive
(:mod:`framework.saving.validation`). Nothing here touches global state: the
stored training state (epoch, the framework RNG state at save time) is
exposed as ``model.training_state`` and restored into the global generator
only by an explicit :func:`restore_rng_state`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.base.allocation import budget
from framework.base.initializer import skip_initialization
from framework.errors import CheckpointError, UnknownNameError
from framework.registry.namespace import custom_object_scope
from framework.saving.callback_state import read_callback_states
from framework.saving.hdf5 import (
    attr_int,
    attr_json,
    child_group,
    child_names,
    has_attr,
    open_checkpoint,
)
from framework.saving.planning import (
    DEFAULT_MAX_BYTES,
    Plan,
    _check_array,
    _datasets_below,
    _fspath,
    _load_slots,
    _plan_layer,
    _plan_slots,
    _read,
    check_header,
)
from framework.saving.validation import (
    MAX_ITERATIONS,
    NON_NEGATIVE_BUFFERS,
    check_call_arguments,
    check_epoch,
)
from framework.saving.writer import (
    COUNT_ATTRIBUTE,
    OWN_GROUP,
    counted_layers,
    dataset_path,
    layer_generators,
    owned_state,
)

if TYPE_CHECKING:
    import h5py

    from framework.models.model import Model

__all__ = ["DEFAULT_MAX_BYTES", "load_model", "load_weights", "restore_rng_state"]


def _unknown_layer_message(exc: UnknownNameError, plugins: dict[str, Any]) -> str:
    text = str(exc)
    for key, info in plugins.items():
        kind, _, name = key.partition(":")
        if f"'{name}'" in text and isinstance(info, dict):
            dist = info.get("distribution") or "an unknown distribution"
            version = info.get("version") or ""
            return (
                f"the checkpoint needs {kind[:-1]} {name!r}, provided by the plugin distribution "
                f"{dist} {version} when it was saved, which is not installed now; "
                f"install it (pip install {dist}) and load again. ({text})"
            )
    found = re.search(r"unknown \w+ '([^']+)'", text)
    label = found.group(1) if found else "MyClass"
    return (
        f"the checkpoint names a class that is not registered: {text} If {label} is a class of your "
        f"own (defined or registered in a script, not published as a plugin), pass it: "
        f"load_model(path, custom_objects={{{label!r}: {label}}})"
    )


def _weights_of(group: str) -> str:
    """How messages name the weights stored in ``/weights/<group>``."""
    return "the model's own weights" if group == OWN_GROUP else f"weights for layer {group!r}"


def _saved_count(counted: dict[int, Any], holder: Any, dataset: Any, where: str) -> list[tuple[Any, int]]:
    """``[(layer, count)]`` when ``holder`` is a counting layer's ``running_mean`` whose dataset
    records the count (:data:`COUNT_ATTRIBUTE`); ``[]`` otherwise (files written before it was kept).
    """
    layer = counted.get(id(holder))
    if layer is None or not has_attr(dataset, COUNT_ATTRIBUTE):
        return []
    return [(layer, attr_int(dataset, COUNT_ATTRIBUTE, where, low=0, high=MAX_ITERATIONS))]


def _training_state(handle: h5py.File, path: str) -> dict[str, Any] | None:
    group = child_group(handle, "training", "")
    if group is None:
        return None
    state = attr_json(group, "state", "/training", dict)
    epoch = check_epoch(state.get("epoch", 0), f"{path!r}: /training state")
    rng = state.get("rng")
    if rng is not None and not isinstance(rng, dict):
        raise CheckpointError(
            f"{path!r}: /training state: rng must be a JSON object, got {type(rng).__name__}"
        )
    layer_rngs = state.get("layer_rngs", {})
    if not isinstance(layer_rngs, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in layer_rngs.items()
    ):
        raise CheckpointError(f"{path!r}: /training state: layer_rngs must map layer names to states")
    return {"epoch": epoch, "rng": rng, "layer_rngs": layer_rngs}


def load_model(
    path: str | os.PathLike[str],
    compile: bool = True,
    *,
    custom_objects: dict[str, Any] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    strict: bool = False,
    rebuild: Callable[[dict[str, Any]], Model],
) -> Model:
    """Rebuild a model saved with :func:`save_model` from the file alone.

    The architecture is rebuilt through the plugin registry; weights and
    buffers are restored in their saved dtype with each parameter's
    ``trainable`` flag and each counting layer's ``num_batches_tracked``;
    with ``compile=True`` the compile config and the optimizer's step count
    and slots are restored. The saved epoch becomes
    ``model.epoch``, and ``model.training_state`` holds ``{"epoch", "rng"}``
    as saved. No global state changes (call :func:`restore_rng_state` to put
    the saved generator state back into the framework's global generator).

    Args:
        path: the checkpoint.
        compile: also restore the compile config and optimizer state.
        custom_objects: ``{name: class or function}`` for layers, losses,
            metrics and the like that are not published as plugins (Keras's
            argument); a name here wins over a registered one. Nothing is
            imported from the file: only what you pass can be built.
        max_bytes: refuse a file whose arrays declare more than this many
            bytes in total (checked before any is read); 8 GiB by default.
        strict: refuse NaN or infinite weights and optimizer slots instead of
            warning (:class:`~framework.saving.validation.CheckpointWarning`).
        rebuild: turns the stored JSON config into an un-compiled model
            (``framework.models.serialize.deserialize_model``, which
            ``framework.load_model`` passes: this package knows the file
            format, not what a model is).

    Raises:
        CheckpointError: for a missing, truncated or corrupted file, a file of
            another program or a newer format, anything stored outside the
            file or through a link, a dataset of the wrong shape or dtype or
            holding less data than it declares, missing or unexpected
            weights, values out of range, or a class no installed plugin
            registers (naming the distribution that provided it).
    """
    with custom_object_scope(custom_objects):
        return _load_model(path, compile, max_bytes, strict, rebuild)


def _load_model(
    path: str | os.PathLike[str],
    compile: bool,
    max_bytes: int,
    strict: bool,
    rebuild: Callable[[dict[str, Any]], Model],
) -> Model:
    name = _fspath(path)
    Plan.check_limit(max_bytes)
    with open_checkpoint(name) as handle:
        plan = Plan(name, max_bytes)
        check_header(handle, name, contents="model")
        group = child_group(handle, "model", "")
        if group is None:
            raise CheckpointError(f"{name!r} has no 'model' group")
        config = attr_json(group, "config", "/model", dict)
        plugins = attr_json(group, "plugins", "/model", dict) if "plugins" in group.attrs else {}
        check_call_arguments(config)
        try:
            # the config's sizes are the file's word too: what they allocate is bounded as the reads are
            with skip_initialization(), budget(max_bytes):
                model = rebuild(config)
        except UnknownNameError as exc:
            raise CheckpointError(f"{name!r}: " + _unknown_layer_message(exc, plugins)) from exc
        except CheckpointError as exc:
            raise CheckpointError(f"{name!r}: {exc}") from None
        except MemoryError:
            raise CheckpointError(
                f"{name!r}: the model config declares arrays larger than this machine can allocate"
            ) from None
        weights = child_group(handle, "weights", "")
        if weights is None:
            raise CheckpointError(f"{name!r} has no 'weights' group")
        owned = {lname: (params, buffers) for lname, params, buffers in owned_state(model)}
        saved = child_names(weights, "/weights")
        extra = [
            n
            for n in saved
            if n not in owned and _datasets_below(child_group(weights, n, "/weights"), f"/weights/{n}")
        ]
        if extra:
            raise CheckpointError(
                f"{name!r}: unexpected weights for layers {extra}, which the model config does not have"
            )
        entries = []
        for lname, held in owned.items():
            lgroup = child_group(weights, lname, "/weights")
            if lgroup is None:
                if any(held):
                    raise CheckpointError(
                        f"{name!r}: missing {_weights_of(lname)} (no group /weights/{lname})"
                    )
                continue
            entries += [(lname, *e) for e in _plan_layer(lgroup, held, f"/weights/{lname}", plan)]
        slots = _plan_slots(handle, model, plan) if compile else {}
        training = _training_state(handle, name)
        callback_states = read_callback_states(handle, model, plan)
        # Every dataset is checked and the budget holds: now read.
        counted, counts = counted_layers(model), []
        for lname, key, holder, dataset, is_param in entries:
            where = f"/weights/{lname}/{dataset_path(key)}"
            counts += [] if is_param else _saved_count(counted, holder, dataset, where)
            if dataset.dtype.kind == "f" and holder.dtype != dataset.dtype.newbyteorder("="):
                dtype = dataset.dtype.newbyteorder("=")
                if is_param:
                    holder.astype(dtype)
                else:
                    holder.data = holder.data.astype(dtype)
            _read(dataset, holder.data)
            _check_array(holder.data, where, key, strict, NON_NEGATIVE_BUFFERS)
            if is_param:
                holder.trainable = bool(attr_int(dataset, "trainable", where, low=0, high=1, default=1))
        for layer, count in counts:  # absent from a file: the rebuilt layer's 0
            setattr(layer, COUNT_ATTRIBUTE, count)
        compile_group = child_group(handle, "compile", "")
        if compile and compile_group is not None:
            compile_config = attr_json(compile_group, "config", "/compile", dict)
            try:
                model.compile_from_config(compile_config)
            except UnknownNameError as exc:
                raise CheckpointError(f"{name!r}: " + _unknown_layer_message(exc, plugins)) from exc
            if (
                getattr(model, "optimizer", None) is not None
                and child_group(handle, "optimizer", "") is not None
            ):
                _load_slots(handle, model, slots, strict, name)
        if training is not None:
            model.epoch = training["epoch"]
        state = training or {"epoch": getattr(model, "epoch", 0), "rng": None}
        model.training_state = {**state, "callbacks": callback_states}
    return model


def restore_rng_state(model: Model) -> None:
    """Put the framework RNG state saved with ``model`` back into the global generator.

    ``load_model`` never does this itself; call it to resume training exactly
    where the checkpoint was written.

    Raises:
        CheckpointError: when no state was saved or it does not fit the
            global generator.
    """
    from framework.runtime.random import get_rng

    state = (getattr(model, "training_state", None) or {}).get("rng")
    if not isinstance(state, dict):
        raise CheckpointError("the model's checkpoint recorded no RNG state")
    _set_state(get_rng().bit_generator, state, "the framework RNG")
    saved = (getattr(model, "training_state", None) or {}).get("layer_rngs") or {}
    for name, generator in layer_generators(model):
        if name in saved:
            _set_state(generator.bit_generator, saved[name], name)


def _set_state(generator: Any, state: Any, label: str) -> None:
    """Set ``generator``'s state from a saved one, checked on a probe first."""
    if not isinstance(state, dict) or state.get("bit_generator") != type(generator).__name__:
        got = state.get("bit_generator") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"the saved state of {label} is for {got!r}, not {type(generator).__name__}")
    probe = type(generator)()
    try:
        probe.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"invalid saved state of {label}: {exc}") from exc
    generator.state = probe.state


def load_weights(
    model: Model,
    path: str | os.PathLike[str],
    *,
    by_name: bool = False,
    skip_mismatch: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    strict: bool = False,
) -> None:
    """Load parameters and buffers from a weights or model file into ``model``.

    Args:
        by_name: match layers by name (default: by order of the layers that
            have weights).
        skip_mismatch: with ``by_name``, skip layers whose saved shapes differ
            (with a warning) instead of raising.
        max_bytes: as for :func:`load_model`.
        strict: refuse non-finite values instead of warning.

    Arrays keep the model's dtypes. Nothing in the model changes unless every
    array was read and checked. A counting layer's ``num_batches_tracked``
    is restored when the file records it (it keeps its own otherwise).
    """
    name = _fspath(path)
    if not getattr(model, "built", False):
        raise CheckpointError(f"cannot load weights into {model.describe()}: build it first")
    Plan.check_limit(max_bytes)
    with open_checkpoint(name) as handle:
        plan = Plan(name, max_bytes)
        check_header(handle, name)
        weights = child_group(handle, "weights", "")
        if weights is None:
            raise CheckpointError(f"{name!r} has no 'weights' group")
        saved_names = attr_json(weights, "layer_names", "/weights", list)
        present = set(child_names(weights, "/weights"))
        owned = {n: (params, buffers) for n, params, buffers in owned_state(model)}
        if by_name:
            pairs = [(n, n) for n in owned if n in present]
        else:
            with_state = [n for n, state in owned.items() if n != OWN_GROUP and any(state)]
            saved = [
                n
                for n in saved_names
                if isinstance(n, str)
                and n != OWN_GROUP
                and n in present
                and _datasets_below(child_group(weights, n, "/weights"), f"/weights/{n}")
            ]
            if len(with_state) != len(saved):
                raise CheckpointError(
                    f"{name!r} holds weights for {len(saved)} layers, the model has {len(with_state)} layers "
                    "with weights; pass by_name=True to match layers by name"
                )
            pairs = list(zip(with_state, saved))
            own_saved = OWN_GROUP in present and bool(
                _datasets_below(child_group(weights, OWN_GROUP, "/weights"), f"/weights/{OWN_GROUP}")
            )
            if own_saved != (OWN_GROUP in owned):
                mine = (
                    [k for k, _ in (*owned[OWN_GROUP][0], *owned[OWN_GROUP][1])] if OWN_GROUP in owned else []
                )
                raise CheckpointError(
                    f"{name!r}: the file {'holds' if own_saved else 'has no'} weights of the model's own "
                    f"(/weights/{OWN_GROUP}); {model.describe()} holds {mine or 'none'} as its own attributes"
                )
            if own_saved:
                pairs.insert(0, (OWN_GROUP, OWN_GROUP))
        planned = []
        for lname, saved_name in pairs:
            try:
                lgroup = child_group(weights, saved_name, "/weights")
                planned.append(
                    (saved_name, _plan_layer(lgroup, owned[lname], f"/weights/{saved_name}", plan))
                )
            except CheckpointError:
                if not (by_name and skip_mismatch):
                    raise
                import warnings

                warnings.warn(f"skipping layer {lname!r}: its saved weights do not match", stacklevel=2)
        loaded = []
        counted, counts = counted_layers(model), []
        for saved_name, entries in planned:
            for key, holder, dataset, is_param in entries:
                where = f"/weights/{saved_name}/{dataset_path(key)}"
                value = np.empty(holder.shape, dtype=holder.dtype)
                _read(dataset, value)
                _check_array(value, where, key, strict, NON_NEGATIVE_BUFFERS)
                loaded.append((holder, value))
                counts += [] if is_param else _saved_count(counted, holder, dataset, where)
    for holder, value in loaded:
        np.copyto(holder.data, value)
    for layer, count in counts:  # absent from a file: the layer keeps its count, as PyTorch's loading
        setattr(layer, COUNT_ATTRIBUTE, count)
