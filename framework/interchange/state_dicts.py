"""State dicts under this framework's names or PyTorch's, and loading them with PyTorch's rules.

Two namings of one model's parameters and buffers:

- ``"native"`` (what ``Layer.state_dict()`` returns and checkpoints keep):
  ``<layer name>.<parameter>``, e.g. ``linear.weight``, ``conv2d_1.bias``;
- ``"torch"``: the names the equivalent PyTorch module has, so a PyTorch state
  dict loads key for key and ours loads into PyTorch with ``strict=True``.

The naming rule (:func:`torch_names`):

- A ``Sequential`` numbers its layers by position, as ``torch.nn.Sequential``
  does, counting **every** layer, parameter-free ones too (``ReLU``,
  ``Flatten``, ``MaxPool2d``, ``Dropout``): ``0.weight``, ``2.bias``...
- A layer with weights whose ``activation`` is set (``Linear(4, 8,
  activation="relu")``, ``Conv2d(..., activation="relu")``) stands for two
  PyTorch modules, the layer then its activation, so it takes two positions.
  An identity activation takes none. (The ``Activation("relu")`` layer has no
  weights: it is one module, one position; a block whose weights sit in its
  sub-layers, ``TransformerEncoderLayer``, is one module whatever its
  ``activation``, PyTorch's own argument.)
- A functional ``Model`` names each layer by its layer name, as a PyTorch
  module names its submodule attributes: ``Linear(8, 2, name="head")`` gives
  ``head.weight``.
- A nested model is named recursively under its position or name.
- Inside a layer the names are already PyTorch's (``weight``, ``bias``,
  ``running_mean``, ``running_var``, ``weight_ih_l0``, ``bias_hh_l1_reverse``...).
- A tied parameter (one ``Parameter`` held by two layers) is one key in the
  ``"native"`` naming, the first holder's; the ``"torch"`` naming lists it
  under every holder, as PyTorch does. Loading accepts either, and refuses
  a tied parameter given different values under two of its names.
- A key meaning different arrays in the two namings (layers named like
  positions) is read as :func:`~framework.interchange.namings.choose_naming`
  decides, or refused; never guessed.
- Every layer with running statistics (``BatchNorm``) also has PyTorch's
  ``num_batches_tracked`` (an ``int64`` scalar, the layer's count) in both
  namings; loading that key (under either naming) sets the count,
  so ``momentum=None`` continues PyTorch's cumulative average; a state dict
  without it leaves the count as it is, as PyTorch's loading does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from framework.base.layer import Layer, format_shape
from framework.errors import ConfigError, NotBuiltError, ShapeError
from framework.interchange.namings import KEY_FORMATS, Naming, choose_naming
from framework.interchange.tensors import as_numpy, count_value, describe_keys

__all__ = ["KEY_FORMATS", "IncompatibleKeys", "as_numpy", "load_state_dict", "state_dict", "torch_names"]

_TRACKED = "num_batches_tracked"


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(..., strict=False)`` could not load (PyTorch's ``_IncompatibleKeys``).

    Attributes:
        missing_keys: the model's keys the state dict did not have.
        unexpected_keys: the state dict's keys the model does not have.
        mismatched_keys: ``"name: expected (a, b), got (c, d)"`` for each
            array of the wrong shape (left unloaded).
    """

    missing_keys: list[str]
    unexpected_keys: list[str]
    mismatched_keys: list[str]


def _is_sequential(layer: Layer) -> bool:
    from framework.models.sequential import Sequential

    return isinstance(layer, Sequential)


def _is_model(layer: Layer) -> bool:
    from framework.models.model import Model

    return isinstance(layer, Model)


def fused_activation(layer: Layer) -> Layer | None:
    """The activation ``layer`` applies to its output when it counts as a second PyTorch module.

    That is a non-identity ``activation`` attribute on a layer with weights of
    its own, the activation being its only child (``Linear``, ``Conv2d``...).
    A block whose weights sit in sub-layers (``TransformerEncoderLayer``) is one
    PyTorch module whatever its ``activation``: there the activation is
    PyTorch's own constructor argument, applied inside the block.
    """
    act = getattr(layer, "activation", None)
    if not isinstance(act, Layer) or not layer.parameters():
        return None
    if type(act).__name__ in ("Identity", "IdentityActivation"):
        return None
    if any(child is not act for _, child in layer.named_children()):
        return None
    return act


def _children(model: Layer) -> list[tuple[str, str, Layer]]:
    """``(native name, PyTorch name, child)`` for each direct child of ``model``."""
    if _is_sequential(model):
        rows = []
        position = 0
        for name, child in model.named_children():
            rows.append((name, str(position), child))
            position += 2 if fused_activation(child) is not None else 1
        return rows
    return [(name, name, child) for name, child in model.named_children()]


def tied_aliases(model: Layer) -> dict[str, str]:
    """``{other name: first name}`` of every tied parameter (one ``Parameter`` held by two layers).

    ``state_dict()`` keeps a tied parameter once, under its first name; PyTorch's
    lists it under every holder's name (``enc.weight`` and ``dec.weight``).
    """
    from framework.models.serialize import tied_parameters

    return {other: group[0] for group in tied_parameters(model) for other in group[1:]}


def torch_names(model: Layer) -> dict[str, str]:
    """The PyTorch name of each native state-dict key of ``model`` (see the module docstring).

    The other names of tied parameters (:func:`tied_aliases`) are included.
    """
    return _torch_names(model, model_state_keys(model), tied_aliases(model))


def _torch_names(model: Layer, keys: list[str], aliases: dict[str, str]) -> dict[str, str]:
    """:func:`torch_names` from ``model``'s native keys and tied aliases, already walked for."""
    children = sorted(_children(model), key=lambda row: -len(row[0]))  # longest name first
    nested: dict[int, dict[str, str]] = {}
    names: dict[str, str] = {}
    for key in [*keys, *aliases]:
        for native, torch, child in children:
            if key.startswith(native + "."):
                rest = key[len(native) + 1 :]
                if _is_model(child):
                    sub = nested.setdefault(id(child), torch_names(child))
                    rest = sub.get(rest, rest)
                names[key] = f"{torch}.{rest}"
                break
        else:
            names[key] = key
    return names


def model_state_keys(model: Layer) -> list[str]:
    """Native keys of ``model``'s parameters, then its buffers (each array once)."""
    return [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]


def _layers_by_prefix(layer: Layer, prefix: str = "") -> Iterator[tuple[str, Layer]]:
    """``(native dotted prefix, layer)`` for ``layer`` and every layer below it."""
    yield prefix, layer
    for name, child in layer.named_children():
        yield from _layers_by_prefix(child, f"{prefix}{name}.")


def _tracked_counts(model: Layer, names: dict[str, str], native: bool = False) -> dict[str, np.ndarray]:
    """``num_batches_tracked`` for each layer with running statistics, under its PyTorch name (or,
    with ``native``, its layer's)."""
    out: dict[str, np.ndarray] = {}
    for prefix, layer in _layers_by_prefix(model):
        key = f"{prefix}running_mean"
        if key in names:
            count = int(getattr(layer, _TRACKED, 0) or 0)
            name = prefix if native else names[key][: -len("running_mean")]
            out[name + _TRACKED] = np.array(count, dtype=np.int64)
    return out


def _count_targets(model: Layer, names: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The names ``num_batches_tracked`` may be given under: ``({native: layer}, {PyTorch's: layer})``.

    The layer is ``None`` (the key accepted and ignored) for a layer with
    running statistics that keeps no count of its own.
    """
    native: dict[str, Any] = {}
    torch: dict[str, Any] = {}
    for prefix, layer in _layers_by_prefix(model):
        key = f"{prefix}running_mean"
        if key in names:
            count = getattr(layer, _TRACKED, None)
            counting = isinstance(count, (int, np.integer)) and not isinstance(count, bool)
            native[prefix + _TRACKED] = layer if counting else None
            torch[names[key][: -len("running_mean")] + _TRACKED] = layer if counting else None
    return native, torch


def _namings(
    model: Layer, targets: dict[str, Any], names: dict[str, str], aliases: dict[str, str]
) -> tuple[Naming, Naming]:
    """The layer names (tied parameters under every holder's name too) and PyTorch's (``names``, from
    :func:`torch_names`)."""
    native_counts, torch_counts = _count_targets(model, names)
    native = Naming("native", {**{key: key for key in targets}, **aliases}, native_counts)
    torch = {torch: aliases.get(key, key) for key, torch in names.items()}
    return native, Naming("torch", torch, torch_counts)


def state_dict(model: Layer, format: str = "native") -> dict[str, np.ndarray]:
    """``model``'s parameters and buffers by name, under the naming ``format``.

    Args:
        model: a built model or layer.
        format: ``"native"`` (layer names, the arrays themselves) or
            ``"torch"`` (PyTorch's names); both with each running-statistics layer's
            ``num_batches_tracked`` (a new ``int64`` scalar).

    Raises:
        ConfigError: an unknown ``format``.
    """
    if format not in KEY_FORMATS:
        raise ConfigError(f"state_dict: format must be one of {KEY_FORMATS}, got {format!r}")
    native = Layer.state_dict(model)
    aliases = tied_aliases(model)
    names = _torch_names(model, list(native), aliases)
    if format == "native":
        return {**native, **_tracked_counts(model, names, native=True)}
    out = {names.get(key, key): value for key, value in native.items()}
    for alias, first in aliases.items():  # PyTorch lists a tied weight under every holder
        if first in native:
            out[names.get(alias, alias)] = native[first]
    out.update(_tracked_counts(model, names))
    return out


def load_state_dict(
    model: Layer,
    state: Mapping[str, Any],
    strict: bool = True,
    *,
    names: str | None = None,
    prefer: str | None = None,
) -> IncompatibleKeys:
    """Copy the arrays of ``state`` into ``model``, under native or PyTorch names.

    Each key may use either naming (see the module docstring); PyTorch's
    ``num_batches_tracked`` (optional) sets the layer's batch count. Values
    may be NumPy arrays, nested lists or CPU ``torch.Tensor`` s; they are cast
    to each parameter's dtype. Nothing in the model changes unless every
    array can be loaded.

    Args:
        model: a built model (or layer).
        state: name -> array.
        strict: refuse missing or unexpected keys and wrong shapes (default);
            with ``False`` load what fits and report the rest.
        names: ``"native"`` or ``"torch"`` to read every key in that naming
            only; ``None`` (default) reads each key in the naming that has it.
        prefer: with ``names=None``, the naming that decides keys meaning
            different arrays in the two namings (layers named like positions)
            when the keys fit both (a file's recorded naming); without it
            such keys are refused.

    Returns:
        An :class:`IncompatibleKeys` (all empty after a strict load).

    Raises:
        NotBuiltError: ``model`` has no parameters yet because it is not built.
        ConfigError: with ``strict``, missing or unexpected keys (listed); a
            key given twice (once per naming); keys that name different
            arrays in the two namings, undecided; a non-numeric value; a
            ``num_batches_tracked`` that is not a whole number ``>= 0``.
        ShapeError: with ``strict``, arrays of the wrong shape (listed with
            both shapes).
    """
    if not isinstance(state, Mapping):
        raise ConfigError(f"load_state_dict: expected a mapping of name -> array, got {type(state).__name__}")
    if not getattr(model, "built", True):
        raise NotBuiltError(
            f"{model.describe()} is not built, so it has no parameters to load into; "
            "call model.build(input_shape) first"
        )
    for key in state:
        if not isinstance(key, str):
            raise ConfigError(f"load_state_dict: keys must be strings, got {key!r}")
    targets: dict[str, Any] = dict(model.named_parameters())
    targets.update(dict(model.named_buffers()))
    aliases = tied_aliases(model)
    torch_of = _torch_names(model, list(targets), aliases)
    native, torch = namings = _namings(model, targets, torch_of, aliases)
    chosen = choose_naming(model, list(state), namings, names, prefer)
    counts: dict[int, tuple[str, Layer, Any]] = {}  # id(layer) -> (key, layer, value)
    # first name -> every key (native or PyTorch's) naming that tied parameter
    tied: dict[str, set[str]] = {}
    for alias, first in aliases.items():
        tied.setdefault(first, {first, torch_of.get(first, first)}).update(
            {alias, torch_of.get(alias, alias)}
        )
    given: dict[str, tuple[str, Any]] = {}
    unexpected: list[str] = []
    torch_style = chosen is torch
    for key, value in state.items():
        naming = chosen if chosen is not None else (native if native.meaning(key) is not None else torch)
        meaning = naming.meaning(key)
        if meaning is None:
            unexpected.append(key)
            continue
        torch_style = torch_style or (naming is torch and key not in targets)
        if meaning[0] == "count":
            layer = naming.counts[key]
            if layer is None:
                continue
            if id(layer) in counts:
                raise ConfigError(
                    f"load_state_dict: {layer.describe()}'s {_TRACKED} is given twice, as "
                    f"{counts[id(layer)][0]!r} and {key!r}; use one naming"
                )
            counts[id(layer)] = (key, layer, value)
            continue
        target_key = meaning[1]
        if target_key in given:
            first_key, first_value = given[target_key]
            if target_key in tied and key in tied[target_key] and first_key in tied[target_key]:
                if not np.array_equal(as_numpy(first_value, first_key), as_numpy(value, key)):
                    raise ConfigError(
                        f"load_state_dict: {first_key!r} and {key!r} name one tied parameter but hold "
                        "different values"
                    )
                continue  # PyTorch's dict lists a tied weight under each holder: the same array
            raise ConfigError(
                f"load_state_dict: {target_key!r} is given twice, as {first_key!r} and {key!r}; "
                "use one naming"
            )
        given[target_key] = (key, value)
    missing = [k for k in targets if k not in given]
    shown_missing = [torch_of.get(k, k) if torch_style else k for k in missing]
    if strict and (missing or unexpected):
        raise ConfigError(
            f"{model.describe()}: the state dict does not match the model; "
            f"missing keys {describe_keys(shown_missing)}, unexpected keys {describe_keys(unexpected)}. "
            "Keys may use the model's layer names or PyTorch's (see model.state_dict(format='torch')); "
            "pass strict=False to load the rest"
        )
    loads: list[tuple[Any, np.ndarray]] = []
    mismatched: list[str] = []
    for target_key, (key, value) in given.items():
        array = as_numpy(value, key)
        target = targets[target_key]
        if array.shape != target.shape:
            mismatched.append(
                f"{key}: expected {format_shape(target.shape)}, got {format_shape(array.shape)}"
            )
            continue
        loads.append((target, array))
    new_counts: list[tuple[Layer, int]] = []
    for key, layer, value in counts.values():
        count = count_value(value, key)
        if isinstance(count, str):
            mismatched.append(count)
        else:
            new_counts.append((layer, count))
    if strict and mismatched:
        raise ShapeError(
            f"{model.describe()}: {len(mismatched)} arrays have the wrong shape: {'; '.join(mismatched)}"
        )
    for target, array in loads:
        np.copyto(target.data, array, casting="unsafe")
    for layer, count in new_counts:
        setattr(layer, _TRACKED, count)
    return IncompatibleKeys(shown_missing, unexpected, mismatched)
