"""HDF5 checkpoints: whole models, weights alone, optimizer and training state.

File layout (format ``framework.checkpoint``, version 1; see
``docs/checkpoint-format.md``)::

    /                         attrs: format, format_version, framework_version,
                                     contents ("model" or "weights")
    /model                    attrs: config (JSON: the model rebuilt through the
                                     registry), plugins (JSON: class -> distribution
                                     and version), layer_names (JSON list)
    /weights/<layer>/<param>  one dataset per parameter and buffer; nested names
                              (``cell.weight``) become nested groups
    /compile                  attrs: config (JSON: optimizer, loss, metrics)
    /optimizer                attrs: iterations; /optimizer/slots/<param>/<slot>
    /training                 attrs: state (JSON: epoch, global RNG state)

Writes are atomic: the file is written under a temporary name in the same
folder, flushed and fsynced, then moved over the target with ``os.replace``, so
a process killed at any moment leaves the previous file intact.

Loading never unpickles and never evaluates code: configs are JSON, arrays are
plain datasets, and only classes registered through the plugin registry are
instantiated. Every problem with a file raises :class:`~framework.CheckpointError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from framework._version import __version__
from framework.base.initializer import skip_initialization
from framework.errors import CheckpointError, FrameworkError, UnknownNameError
from framework.registry.manager import REGISTRY

if TYPE_CHECKING:
    import h5py

    from framework.models.model import Model

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "save_model",
    "load_model",
    "save_weights",
    "load_weights",
    "atomic_h5",
]

FORMAT_NAME = "framework.checkpoint"
FORMAT_VERSION = 1

_KINDS_OF_COMPILE = {"optimizer": "optimizers", "loss": "losses", "metrics": "metrics"}


def _h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a run-time dependency
        raise CheckpointError("checkpoints need h5py: pip install h5py") from exc
    return h5py


# -- writing ---------------------------------------------------------------


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike[str]) -> Iterator[h5py.File]:
    """Open a temporary HDF5 file beside ``path``; on success move it over ``path``.

    The temporary file is flushed and fsynced before ``os.replace``, and the
    folder is fsynced after, so a crash at any moment leaves either the old or
    the new file. On an exception the temporary file is removed.
    """
    h5py = _h5py()
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise CheckpointError(f"cannot save to {str(target)!r}: folder {str(folder)!r} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        with h5py.File(tmp_name, "w") as handle:
            yield handle
            handle.flush()
        with open(tmp_name, "rb+") as raw:
            os.fsync(raw.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _json(data: Any) -> str:
    try:
        return json.dumps(data, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot write checkpoint: config is not JSON data: {exc}") from exc


def _dataset_path(name: str) -> str:
    return name.replace(".", "/")


def _write_array(group: h5py.Group, name: str, array: np.ndarray, compression: str | None) -> None:
    array = np.ascontiguousarray(array)
    if compression and array.size > 1:
        group.create_dataset(_dataset_path(name), data=array, compression=compression)
    else:
        group.create_dataset(_dataset_path(name), data=array)


def _layer_states(model: Model) -> list[tuple[str, dict[str, np.ndarray]]]:
    """``[(layer name, {param or buffer name: array})]`` in the model's layer order."""
    states = []
    for layer_name, layer in model.named_children():
        states.append((layer_name, layer.state_dict()))
    return states


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


def _write_weights(handle: h5py.File, model: Model, compression: str | None) -> None:
    weights = handle.create_group("weights")
    names = []
    for layer_name, state in _layer_states(model):
        names.append(layer_name)
        group = weights.create_group(layer_name)
        for key, array in state.items():
            _write_array(group, key, array, compression)
    weights.attrs["layer_names"] = _json(names)


def _param_names(model: Model) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


def _write_optimizer(handle: h5py.File, model: Model, compression: str | None) -> None:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "state_dict"):
        return
    group = handle.create_group("optimizer")
    state = optimizer.state_dict()
    group.attrs["iterations"] = int(state.get("iterations", 0))
    names = _param_names(model)
    order = []
    slots = group.create_group("slots")
    for param, slot in zip(optimizer.params, state.get("slots", [])):
        pname = names.get(id(param))
        if pname is None:
            raise CheckpointError(
                "cannot save optimizer state: it holds a parameter that is not in the model"
            )
        order.append(pname)
        sub = slots.create_group(_dataset_path(pname))
        for key, value in slot.items():
            _write_array(sub, key, np.asarray(value), compression)
    group.attrs["param_names"] = _json(order)


def _training_state(model: Model) -> dict[str, Any]:
    from framework.runtime.random import get_rng

    return {"epoch": int(getattr(model, "epoch", 0) or 0), "rng": get_rng().bit_generator.state}


def save_model(
    model: Model,
    path: str | os.PathLike[str],
    *,
    include_optimizer: bool = True,
    compression: str | None = None,
) -> None:
    """Write ``model`` (architecture, weights, buffers, compile config, optimizer
    and training state) to the HDF5 file ``path``, atomically.

    Args:
        model: a built model.
        path: the file to write; replaced atomically if it exists.
        include_optimizer: also save the optimizer's step count and moments.
        compression: ``"gzip"`` to compress datasets, or ``None``.
    """
    from framework.models.model import serialize_model

    _check_compression(compression)
    if not getattr(model, "built", False):
        raise CheckpointError(
            f"cannot save {model.describe()}: it is not built yet (call it on data or build it)"
        )
    config = serialize_model(model)
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
        handle.create_group("training").attrs["state"] = _json(_training_state(model))


def save_weights(model: Model, path: str | os.PathLike[str], *, compression: str | None = None) -> None:
    """Write only the parameters and buffers of ``model`` to ``path``, atomically."""
    _check_compression(compression)
    if not getattr(model, "built", False):
        raise CheckpointError(f"cannot save weights of {model.describe()}: it is not built yet")
    with atomic_h5(path) as handle:
        _write_header(handle, "weights")
        _write_weights(handle, model, compression)


def _check_compression(compression: str | None) -> None:
    if compression not in (None, "gzip", "lzf"):
        raise CheckpointError(f"compression must be None, 'gzip' or 'lzf', got {compression!r}")


def _write_header(handle: h5py.File, contents: str) -> None:
    handle.attrs["format"] = FORMAT_NAME
    handle.attrs["format_version"] = FORMAT_VERSION
    handle.attrs["framework_version"] = __version__
    handle.attrs["contents"] = contents


# -- reading ---------------------------------------------------------------


@contextlib.contextmanager
def _open(path: str | os.PathLike[str]) -> Iterator[h5py.File]:
    h5py = _h5py()
    name = os.fspath(path)
    if not os.path.exists(name):
        raise CheckpointError(f"checkpoint {name!r} does not exist")
    try:
        handle = h5py.File(name, "r")
    except Exception as exc:
        raise CheckpointError(
            f"{name!r} is not a readable HDF5 file (truncated, corrupted or another format): {exc}"
        ) from exc
    try:
        yield handle
    except CheckpointError:
        raise
    except FrameworkError as exc:
        raise CheckpointError(f"{name!r}: {exc}") from exc
    except Exception as exc:
        raise CheckpointError(f"{name!r} is corrupted or inconsistent: {type(exc).__name__}: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            handle.close()


def _attr_str(obj: Any, key: str, where: str) -> str:
    if key not in obj.attrs:
        raise CheckpointError(f"missing attribute {key!r} in {where}")
    value = obj.attrs[key]
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="strict")
    if not isinstance(value, str):
        raise CheckpointError(f"attribute {key!r} in {where} should be text, got {type(value).__name__}")
    return value


def _attr_json(obj: Any, key: str, where: str, expected: type) -> Any:
    text = _attr_str(obj, key, where)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"attribute {key!r} in {where} is not valid JSON: {exc}") from exc
    if not isinstance(value, expected):
        raise CheckpointError(f"attribute {key!r} in {where} should be a JSON {expected.__name__}")
    return value


def _check_header(handle: h5py.File, path: str, contents: str | None = None) -> str:
    fmt = handle.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode("utf-8", "replace")
    if fmt != FORMAT_NAME:
        raise CheckpointError(
            f"{path!r} is an HDF5 file but not a framework checkpoint (format attribute {fmt!r}, "
            f"expected {FORMAT_NAME!r}); was it written by another program?"
        )
    version = handle.attrs.get("format_version")
    if not isinstance(version, (int, np.integer)):
        raise CheckpointError(f"{path!r}: format_version is missing or not an integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path!r} uses checkpoint format version {int(version)}, newer than this framework "
            f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade the framework to load it"
        )
    if version < 1:
        raise CheckpointError(f"{path!r}: invalid format_version {int(version)}")
    found = _attr_str(handle, "contents", "the file header")
    if contents is not None and found != contents:
        raise CheckpointError(
            f"{path!r} holds {found}, not a whole model; use model.load_weights() for a weights file"
        )
    return found


def _check_layer_datasets(
    group: h5py.Group, expected: dict[str, np.ndarray], where: str
) -> dict[str, h5py.Dataset]:
    """The datasets of one layer, each checked against the model's array (not read yet)."""
    h5py = _h5py()
    found = {}
    for key, target in expected.items():
        path = _dataset_path(key)
        if path not in group:
            raise CheckpointError(f"missing dataset {where}/{path} (expected shape {target.shape})")
        dataset = group[path]
        if not isinstance(dataset, h5py.Dataset):
            raise CheckpointError(f"{where}/{path} should be a dataset")
        if dataset.shape != target.shape:
            raise CheckpointError(
                f"dataset {where}/{path} has shape {dataset.shape}, the model expects {target.shape}"
            )
        same_kind = any(
            np.issubdtype(dataset.dtype, kind) and np.issubdtype(target.dtype, kind)
            for kind in (np.floating, np.integer)
        )
        if dataset.dtype != target.dtype and not same_kind:
            raise CheckpointError(
                f"dataset {where}/{path} has dtype {dataset.dtype}, the model expects {target.dtype}"
            )
        found[key] = dataset
    return found


def _load_weights_into(
    handle: h5py.File,
    model: Model,
    path: str,
    *,
    by_name: bool,
    skip_mismatch: bool,
    direct: bool = False,
) -> None:
    """Copy the saved arrays into ``model``.

    Every dataset is checked (presence, shape, dtype) before any is read. With
    ``direct`` (a freshly rebuilt model), arrays are read straight into the
    parameters; otherwise all are read first and the model is touched only when
    every read succeeded.
    """
    if "weights" not in handle:
        raise CheckpointError(f"{path!r} has no 'weights' group")
    weights = handle["weights"]
    saved_names = _attr_json(weights, "layer_names", "/weights", list)
    layers = list(model.named_children())
    if by_name:
        pairs = [(name, layer, name) for name, layer in layers if name in weights]
    else:
        with_state = [(n, lyr) for n, lyr in layers if lyr.state_dict()]
        saved_with_state = [n for n in saved_names if n in weights and len(weights[n].keys()) > 0]
        if len(with_state) != len(saved_with_state):
            raise CheckpointError(
                f"{path!r} holds weights for {len(saved_with_state)} layers, the model has "
                f"{len(with_state)} layers with weights; pass by_name=True to match layers by name"
            )
        pairs = [(name, layer, saved) for (name, layer), saved in zip(with_state, saved_with_state)]
    checked: list[tuple[Any, dict[str, np.ndarray], dict[str, h5py.Dataset]]] = []
    for name, layer, saved in pairs:
        expected = layer.state_dict()
        try:
            datasets = _check_layer_datasets(weights[saved], expected, f"/weights/{saved}")
        except CheckpointError:
            if skip_mismatch:
                import warnings

                warnings.warn(f"skipping layer {name!r}: its saved weights do not match", stacklevel=3)
                continue
            raise
        checked.append((layer, expected, datasets))
    if direct:
        for _, expected, datasets in checked:
            for key, dataset in datasets.items():
                target = expected[key]
                if dataset.dtype == target.dtype and target.flags.c_contiguous and target.size:
                    dataset.read_direct(target)
                else:
                    np.copyto(target, np.asarray(dataset[()]), casting="unsafe")
        return
    loaded = [
        (layer, {key: np.asarray(ds[()]) for key, ds in datasets.items()}) for layer, _, datasets in checked
    ]
    for layer, state in loaded:
        layer.load_state_dict(state, strict=False)


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
    return f"the checkpoint names a class that is not registered: {text}"


def load_model(path: str | os.PathLike[str], compile: bool = True) -> Model:
    """Rebuild a model saved with :func:`save_model` from the file alone.

    The architecture is rebuilt through the plugin registry, then weights,
    buffers, and (with ``compile=True``) the compile config, optimizer state and
    training state (epoch, global RNG state) are restored.

    Raises:
        CheckpointError: for a missing, truncated or corrupted file, a file of
            another program or a newer format, a dataset of the wrong shape or
            dtype, or a class no installed plugin registers (naming the
            distribution that provided it when the file was written).
    """
    from framework.models.model import deserialize_model

    name = os.fspath(path)
    with _open(name) as handle:
        _check_header(handle, name, contents="model")
        if "model" not in handle:
            raise CheckpointError(f"{name!r} has no 'model' group")
        group = handle["model"]
        config = _attr_json(group, "config", "/model", dict)
        plugins = _attr_json(group, "plugins", "/model", dict) if "plugins" in group.attrs else {}
        try:
            with skip_initialization():
                model = deserialize_model(config)
        except UnknownNameError as exc:
            raise CheckpointError(f"{name!r}: " + _unknown_layer_message(exc, plugins)) from exc
        _load_weights_into(handle, model, name, by_name=True, skip_mismatch=False, direct=True)
        missing = [
            n for n, layer in model.named_children() if layer.state_dict() and n not in handle["weights"]
        ]
        if missing:
            raise CheckpointError(f"{name!r}: missing weights for layers {missing}")
        if compile and "compile" in handle:
            compile_config = _attr_json(handle["compile"], "config", "/compile", dict)
            try:
                model.compile_from_config(compile_config)
            except UnknownNameError as exc:
                raise CheckpointError(f"{name!r}: " + _unknown_layer_message(exc, plugins)) from exc
            if "optimizer" in handle and model.optimizer is not None:
                _load_optimizer(handle["optimizer"], model, name)
        if "training" in handle:
            _load_training_state(handle["training"], model, name, restore_rng=compile)
    return model


def _load_optimizer(group: h5py.Group, model: Model, path: str) -> None:
    optimizer = model.optimizer
    names = _param_names(model)
    iterations = group.attrs.get("iterations", 0)
    if not isinstance(iterations, (int, np.integer)) or iterations < 0:
        raise CheckpointError(f"{path!r}: /optimizer iterations must be a non-negative integer")
    slots_group = group["slots"] if "slots" in group else None
    slots = []
    for param in optimizer.params:
        pname = names.get(id(param))
        saved: dict[str, np.ndarray] = {}
        if slots_group is not None and pname is not None and _dataset_path(pname) in slots_group:
            sub = slots_group[_dataset_path(pname)]
            for key in sub:
                value = np.asarray(sub[key][()])
                if value.ndim and value.shape != param.shape:
                    raise CheckpointError(
                        f"{path!r}: optimizer slot {pname}/{key} has shape {value.shape}, "
                        f"the parameter {param.shape}"
                    )
                if not np.issubdtype(value.dtype, np.number):
                    raise CheckpointError(f"{path!r}: optimizer slot {pname}/{key} is not numeric")
                saved[key] = value
        slots.append(saved)
    optimizer.load_state_dict({"iterations": int(iterations), "slots": slots})


def _load_training_state(group: h5py.Group, model: Model, path: str, *, restore_rng: bool) -> None:
    state = _attr_json(group, "state", "/training", dict)
    epoch = state.get("epoch", 0)
    if not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(f"{path!r}: training epoch must be a non-negative integer, got {epoch!r}")
    model.epoch = epoch
    rng_state = state.get("rng")
    if restore_rng and isinstance(rng_state, dict):
        from framework.runtime.random import get_rng

        generator = get_rng().bit_generator
        if rng_state.get("bit_generator") != type(generator).__name__:
            raise CheckpointError(f"{path!r}: RNG state is for {rng_state.get('bit_generator')!r}")
        try:
            generator.state = rng_state
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{path!r}: invalid RNG state: {exc}") from exc


def load_weights(
    model: Model,
    path: str | os.PathLike[str],
    *,
    by_name: bool = False,
    skip_mismatch: bool = False,
) -> None:
    """Load parameters and buffers from a weights or model file into ``model``.

    Args:
        by_name: match layers by name (default: by order of the layers that
            have weights).
        skip_mismatch: with ``by_name``, skip layers whose saved shapes differ
            (with a warning) instead of raising.

    Nothing in the model changes unless every array was read and checked.
    """
    name = os.fspath(path)
    if not getattr(model, "built", False):
        raise CheckpointError(f"cannot load weights into {model.describe()}: build it first")
    with _open(name) as handle:
        _check_header(handle, name)
        _load_weights_into(handle, model, name, by_name=by_name, skip_mismatch=skip_mismatch)
