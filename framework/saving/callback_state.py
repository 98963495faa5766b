"""Callback state in checkpoints, so a resumed ``fit`` continues ``EarlyStopping``,
``ReduceLROnPlateau`` and a best-only ``ModelCheckpoint`` where they stood.

``fit`` keeps its callbacks on the model (``model.fit_callbacks``). A checkpoint
written during or after it records each callback's ``state_dict()`` (when it
has one and it is not empty) below ``/training/callbacks/<key>``, where the key
is the class name, followed by ``#k`` for the k-th (k >= 1) callback of the
same class in the list:

- numbers and strings go into the JSON attribute ``state``;
- a ``{name: array}`` entry (EarlyStopping's best weights) goes into a sub-group
  of datasets ``0``, ``1``, ..., whose names are in its attribute ``names``.

Reading goes through hard links only. Every array is checked against the
model's own state entry of the same name (shape and float kind) and counted in
the load's byte budget before anything is read. Nothing here runs on the
callbacks: ``fit`` hands the states back (see
:func:`framework.training.loop.resume_state`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from framework.errors import CheckpointError
from framework.saving.hdf5 import attr_json, child_group, child_names, h5py_module, member

if TYPE_CHECKING:
    import h5py

    from framework.saving.planning import Plan

__all__ = ["keyed", "read_callback_states", "write_callback_states"]


def keyed(callbacks: Any) -> list[tuple[str, Any]]:
    """``[(key, callback)]``: the class name, ``#k`` added for the k-th repeat of a class."""
    seen: dict[str, int] = {}
    out = []
    for callback in callbacks or ():
        name = type(callback).__name__
        k = seen.get(name, 0)
        seen[name] = k + 1
        out.append((name if k == 0 else f"{name}#{k}", callback))
    return out


def write_callback_states(training: h5py.Group, callbacks: Any, json: Any) -> None:
    """Write each callback's non-empty ``state_dict()`` below ``training/callbacks``.

    Args:
        training: the checkpoint's ``/training`` group.
        callbacks: the callbacks of the model's last ``fit``.
        json: the writer's checked ``json.dumps``.
    """
    group = None
    for key, callback in keyed(callbacks):
        state = callback.state_dict() if hasattr(callback, "state_dict") else None
        if not state:
            continue
        if group is None:
            group = training.create_group("callbacks")
        sub = group.create_group(key)
        plain = {}
        for field, value in state.items():
            if isinstance(value, dict):
                arrays = sub.create_group(field)
                arrays.attrs["names"] = json(list(value))
                for i, array in enumerate(value.values()):
                    arrays.create_dataset(str(i), data=np.ascontiguousarray(array))
            else:
                plain[field] = value
        sub.attrs["state"] = json(plain)


def read_callback_states(handle: h5py.File, model: Any, plan: Plan) -> dict[str, dict[str, Any]]:
    """``{key: state}`` as :func:`write_callback_states` wrote them; ``{}`` when there are none.

    Array entries come back as ``{name: array}``, each checked against ``model``'s
    state entry of that name before it is read.

    Raises:
        CheckpointError: a malformed group, attribute or dataset, naming it.
    """
    training = child_group(handle, "training", "")
    group = None if training is None else child_group(training, "callbacks", "/training")
    if group is None:
        return {}
    own = model.state_dict()
    states: dict[str, dict[str, Any]] = {}
    for key in child_names(group, "/training/callbacks"):
        where = f"/training/callbacks/{key}"
        sub = child_group(group, key, "/training/callbacks")
        state = dict(attr_json(sub, "state", where, dict))
        for field in child_names(sub, where):
            state[field] = _read_arrays(child_group(sub, field, where), f"{where}/{field}", own, plan)
        states[key] = state
    return states


def _read_arrays(group: Any, where: str, own: dict[str, Any], plan: Plan) -> dict[str, np.ndarray]:
    names = attr_json(group, "names", where, list)
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise CheckpointError(f"attribute 'names' in {where} should list distinct strings, got {names!r}")
    if set(child_names(group, where)) != {str(i) for i in range(len(names))}:
        raise CheckpointError(f"{where} should hold datasets 0..{len(names) - 1}, one per name")
    planned = []
    for i, name in enumerate(names):
        if name not in own:
            raise CheckpointError(f"{where}/{i} is for {name!r}, which the model's state does not have")
        dataset = _group_member(group, str(i), where)
        target = np.empty_like(np.asarray(own[name]))
        plan.check(dataset, f"{where}/{i}", target.shape, "f" if target.dtype.kind == "f" else "i")
        planned.append((name, dataset, target))
    for _name, dataset, target in planned:
        np.copyto(target, np.asarray(dataset[()]), casting="unsafe")
    return {name: target for name, _dataset, target in planned}


def _group_member(group: Any, name: str, where: str) -> Any:
    dataset = member(group, name, where)
    if not isinstance(dataset, h5py_module().Dataset):
        raise CheckpointError(f"{where}/{name} should be a dataset")
    return dataset
