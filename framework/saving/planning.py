"""The first phase of a load: find every object through hard links and check it before reading.

Every dataset's layout, storage, shape and dtype is checked against what the
rebuilt model expects (:mod:`framework.saving.hdf5`), and the declared sizes
are summed against ``max_bytes``, before any array is read by
:mod:`framework.saving.reader`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from framework._version import __version__
from framework.errors import CheckpointError
from framework.saving.hdf5 import (
    attr_int,
    attr_json,
    attr_text,
    check_dataset,
    child_group,
    child_names,
    h5py_module,
)
from framework.saving.validation import (
    MAX_ITERATIONS,
    NON_NEGATIVE_SLOTS,
    check_values,
)
from framework.saving.writer import FORMAT_NAME, FORMAT_VERSION, dataset_path, param_names

if TYPE_CHECKING:
    import h5py

    from framework.models.model import Model

__all__ = ["DEFAULT_MAX_BYTES", "Plan", "check_header"]

#: Default bound on the sum of the declared sizes of the arrays one load reads.
DEFAULT_MAX_BYTES = 8 * 1024**3
_MAX_OBJECTS = 100_000
_MAX_DEPTH = 32


def _fspath(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"a checkpoint path must be a str or os.PathLike, got {type(path).__name__}")
    name = os.fspath(path)
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"a checkpoint path must be a non-empty text path, got {name!r}")
    return name


class Plan:
    """The datasets one load will read, checked, with the sum of their sizes."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.check_limit(max_bytes)
        self.path = path
        self.max_bytes = max_bytes
        self.file_size = os.path.getsize(path)
        self.total = 0

    @staticmethod
    def check_limit(max_bytes: Any) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise CheckpointError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")

    def check(self, dataset: h5py.Dataset, where: str, shape: tuple[int, ...], kind: str) -> None:
        self.total += check_dataset(dataset, where, shape=shape, kind=kind, file_size=self.file_size)
        if self.total > self.max_bytes:
            raise CheckpointError(
                f"{self.path!r} declares more than {self.max_bytes} bytes of arrays (max_bytes; reached at "
                f"{where}); pass a larger max_bytes to load_model if the file is trusted"
            )


def check_header(handle: h5py.File, path: str, contents: str | None = None) -> str:
    """Check ``format``, ``format_version`` and ``contents``; return ``contents``."""
    h5py = h5py_module()
    fmt = None
    if "format" in handle.attrs and handle.attrs.get_id("format").get_type().get_class() == h5py.h5t.STRING:
        fmt = attr_text(handle, "format", "the file header")
    if fmt != FORMAT_NAME:
        raise CheckpointError(
            f"{path!r} is an HDF5 file but not a framework checkpoint (format attribute {fmt!r}, "
            f"expected {FORMAT_NAME!r}); was it written by another program?"
        )
    version = attr_int(handle, "format_version", "the file header", low=-(2**62), high=2**62)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path!r} uses checkpoint format version {version}, newer than this framework "
            f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade the framework to load it"
        )
    if version < 1:
        raise CheckpointError(f"{path!r}: invalid format_version {version}")
    found = attr_text(handle, "contents", "the file header")
    if found not in ("model", "weights"):
        raise CheckpointError(f"{path!r}: contents is {found!r}, expected 'model' or 'weights'")
    if contents is not None and found != contents:
        raise CheckpointError(
            f"{path!r} holds {found}, not a whole model; use model.load_weights() for a weights file"
        )
    return found


def _datasets_below(group: h5py.Group, where: str) -> dict[str, Any]:
    """Every dataset below ``group`` by relative path, through hard links only."""
    h5py = h5py_module()
    found: dict[str, Any] = {}
    stack: list[tuple[Any, str, int]] = [(group, "", 0)]
    visited = 0
    while stack:
        node, prefix, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise CheckpointError(f"{where}/{prefix} is nested more than {_MAX_DEPTH} groups deep")
        for name in child_names(node, f"{where}/{prefix}"):
            visited += 1
            if visited > _MAX_OBJECTS:
                raise CheckpointError(f"{where} holds more than {_MAX_OBJECTS} objects")
            obj = node[name]
            rel = f"{prefix}{name}"
            if isinstance(obj, h5py.Dataset):
                found[rel] = obj
            elif isinstance(obj, h5py.Group):
                stack.append((obj, rel + "/", depth + 1))
            else:
                raise CheckpointError(f"{where}/{rel} is a {type(obj).__name__}, expected a group or dataset")
    return found


def _plan_layer(
    group: h5py.Group, owned: tuple[list[Any], list[Any]], where: str, plan: Plan
) -> list[tuple[str, Any, Any, bool]]:
    """``[(key, holder, dataset, is_parameter)]`` for one layer, every dataset checked.

    ``owned`` is the layer's parameters and buffers not already held by an
    earlier layer (see ``writer.owned_state``).
    """
    params, buffers = owned
    holders: dict[str, tuple[Any, bool]] = {k: (p, True) for k, p in params}
    holders.update({k: (b, False) for k, b in buffers})
    datasets = _datasets_below(group, where)
    expected = {dataset_path(key): key for key in holders}
    unexpected = sorted(set(datasets) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"unexpected datasets {[f'{where}/{u}' for u in unexpected]}: the model has no such weights"
        )
    entries = []
    for path, key in expected.items():
        holder, is_param = holders[key]
        if path not in datasets:
            raise CheckpointError(f"missing dataset {where}/{path} (expected shape {holder.shape})")
        kind = "f" if np.issubdtype(holder.dtype, np.floating) else "i"
        plan.check(datasets[path], f"{where}/{path}", holder.shape, kind)
        entries.append((key, holder, datasets[path], is_param))
    return entries


def _read(dataset: h5py.Dataset, target: np.ndarray) -> None:
    if dataset.dtype == target.dtype and target.flags.c_contiguous and target.size:
        dataset.read_direct(target)
    elif target.size:
        np.copyto(target, np.asarray(dataset[()]), casting="unsafe")


def _check_array(array: np.ndarray, where: str, key: str, strict: bool, names: frozenset[str]) -> None:
    check_values(array, where, non_negative=key.rsplit(".", 1)[-1] in names, strict=strict)


def _plan_slots(handle: h5py.File, model: Model, plan: Plan) -> dict[str, dict[str, Any]]:
    """``{param name: {slot: dataset}}``, each slot checked to be shaped like its parameter."""
    optimizer = child_group(handle, "optimizer", "")
    if optimizer is None:
        return {}
    slots = child_group(optimizer, "slots", "/optimizer")
    if slots is None:
        return {}
    params = dict(model.named_parameters())
    by_path = {dataset_path(name): name for name in params}
    found: dict[str, dict[str, Any]] = {}
    for rel, dataset in sorted(_datasets_below(slots, "/optimizer/slots").items()):
        owner, _, slot = rel.rpartition("/")
        if owner not in by_path:
            missing = owner.replace("/", ".")
            raise CheckpointError(
                f"unexpected dataset /optimizer/slots/{rel}: the model has no parameter {missing!r}"
            )
        pname = by_path[owner]
        plan.check(dataset, f"/optimizer/slots/{rel}", params[pname].shape, "f")
        found.setdefault(pname, {})[slot] = dataset
    return found


def _load_slots(
    handle: h5py.File, model: Model, planned: dict[str, dict[str, Any]], strict: bool, path: str
) -> None:
    optimizer = model.optimizer
    group = child_group(handle, "optimizer", "")
    # always written: a missing count would restart bias correction on moments of a later step
    iterations = attr_int(group, "iterations", "/optimizer", low=0, high=MAX_ITERATIONS)
    names = param_names(model)
    expected = optimizer.slot_names() if hasattr(optimizer, "slot_names") else None
    _check_slot_groups(group, list(names.values()))
    slots = []
    for param in optimizer.params:
        pname = names.get(id(param))
        if pname is None:
            raise CheckpointError("the optimizer holds a parameter that is not in the model")
        saved = {}
        # a float16 parameter's slots and master copy are float32 (Optimizer.slot_dtype)
        slot_dtype = getattr(optimizer, "slot_dtype", None)
        dtype = param.dtype if slot_dtype is None else slot_dtype(param)
        for key, dataset in planned.get(pname, {}).items():
            value = np.empty(param.shape, dtype=dtype)
            _read(dataset, value)
            where = f"/optimizer/slots/{dataset_path(pname)}/{key}"
            check_values(value, where, non_negative=key in NON_NEGATIVE_SLOTS, strict=strict)
            saved[key] = value
        _check_slot_names(type(optimizer).__name__, expected, set(saved) - {"master"}, dataset_path(pname))
        slots.append(saved)
    state: dict[str, Any] = {"iterations": iterations, "slots": slots}
    loss_scale = _loss_scale(group)
    if loss_scale is not None:
        state["loss_scale"] = loss_scale
    optimizer.load_state_dict(state)


def _check_slot_groups(group: Any, model_params: list[str]) -> None:
    """Every parameter the file says has optimizer state has its group under ``/optimizer/slots``.

    The writer makes one group per bound parameter, empty when it has no
    state yet; a group missing from the file would lose that state silently.
    """
    if "param_names" not in group.attrs:  # written before the list was kept
        return
    listed = attr_json(group, "param_names", "/optimizer", list)
    slots = group.get("slots")
    for pname in listed:
        if pname in model_params and (slots is None or dataset_path(str(pname)) not in slots):
            raise CheckpointError(
                f"missing group /optimizer/slots/{dataset_path(str(pname))}: /optimizer lists parameter "
                f"{pname!r} in param_names, so its optimizer state would be lost"
            )


def _check_slot_names(kind: str, expected: Any, keys: set[str], path: str) -> None:
    """A parameter's slots are none (not stepped yet) or exactly the optimizer's ``slot_names()``."""
    if expected is None or not keys:
        return
    unknown, missing = sorted(keys - expected), sorted(expected - keys)
    if unknown:
        raise CheckpointError(
            f"unexpected dataset /optimizer/slots/{path}/{unknown[0]}: {kind} with these settings keeps "
            f"{sorted(expected)}"
        )
    if missing:
        raise CheckpointError(
            f"missing dataset /optimizer/slots/{path}/{missing[0]}: {kind} with these settings keeps "
            f"{sorted(expected)}, the file has {sorted(keys)}"
        )


def _loss_scale(group: Any) -> dict[str, Any] | None:
    """The dynamic loss scale of float16 training (``/optimizer`` attrs), checked; ``None`` if absent."""
    if "loss_scale" not in group.attrs:
        return None
    h5py = h5py_module()
    attr = group.attrs.get_id("loss_scale")
    if attr.shape not in ((), None) or attr.get_type().get_class() != h5py.h5t.FLOAT:
        raise CheckpointError("attribute 'loss_scale' in /optimizer should be a scalar float")
    scale = float(group.attrs["loss_scale"])
    if not (np.isfinite(scale) and scale > 0):
        raise CheckpointError(
            f"attribute 'loss_scale' in /optimizer is {scale!r}, expected a finite number > 0"
        )
    good = attr_int(group, "loss_scale_good_steps", "/optimizer", low=0, high=MAX_ITERATIONS, default=0)
    state: dict[str, Any] = {"scale": scale, "good_steps": good}
    if "loss_scale_growth_interval" in group.attrs:  # absent from older files: the scaler keeps its own
        state["growth_interval"] = attr_int(
            group, "loss_scale_growth_interval", "/optimizer", low=1, high=MAX_ITERATIONS
        )
    return state
