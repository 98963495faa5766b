"""The two namings of a state dict's keys, and which one a given state dict is read in.

A model's arrays have two names (:mod:`framework.interchange.state_dicts`): the
layer names (``"native"``) and PyTorch's (``"torch"``). Usually a key means
the same array in both, or exists in one only, so each key is read in the
naming that has it. Layers named like positions make a key mean different
arrays: in ``Sequential([Linear(name="2"), ReLU(), Linear(name="0")])``,
``"0.weight"`` is the last Linear's layer name and the first Linear's PyTorch
name. :func:`choose_naming` then reads every key in one naming, the one the
caller names, or the only one holding every key, or the one a file recorded;
otherwise it refuses rather than guess (a guess could swap weights silently).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from framework.base.layer import Layer
from framework.errors import ConfigError
from framework.interchange.tensors import describe_keys

__all__ = ["KEY_FORMATS", "Naming", "choose_naming"]

KEY_FORMATS = ("native", "torch")
"""The namings of a state dict (``state_dict(format=...)``, ``load_state_dict(names=...)``)."""


class Naming(NamedTuple):
    """One naming of a model's state.

    Attributes:
        label: ``"native"`` or ``"torch"``.
        arrays: key -> native key of the parameter or buffer it names.
        counts: key -> the layer whose ``num_batches_tracked`` it names
            (``None``: a layer keeping no count, the key ignored).
    """

    label: str
    arrays: dict[str, str]
    counts: dict[str, Any]

    def meaning(self, key: str) -> tuple[str, Any] | None:
        """What ``key`` names here (comparable across namings), or ``None``."""
        if key in self.arrays:
            return ("array", self.arrays[key])
        if key in self.counts:
            return ("count", id(self.counts[key]))
        return None


def choose_naming(
    model: Layer, keys: list[str], namings: tuple[Naming, Naming], names: str | None, prefer: str | None
) -> Naming | None:
    """The naming every key of a state dict is read in, or ``None``: each key in whichever has it.

    Args:
        model: the model being loaded (for messages).
        keys: the state dict's keys.
        namings: ``(native, torch)``.
        names: ``"native"`` or ``"torch"`` to force one naming; ``None`` to decide.
        prefer: the naming a file recorded, deciding keys that clash when
            both namings hold every key.

    Raises:
        ConfigError: an unknown ``names``; keys naming different arrays in the
            two namings that neither the keys nor ``prefer`` decide (listed,
            with the way out).
    """
    native, torch = namings
    if names is not None:
        if names not in KEY_FORMATS:
            raise ConfigError(f"load_state_dict: names must be one of {KEY_FORMATS} or None, got {names!r}")
        return native if names == "native" else torch
    clashes = []
    for key in keys:
        one, other = native.meaning(key), torch.meaning(key)
        if one is not None and other is not None and one != other:
            clashes.append(key)
    if not clashes:
        return None
    in_native = all(native.meaning(k) is not None for k in keys)
    in_torch = all(torch.meaning(k) is not None for k in keys)
    if in_native != in_torch:
        return native if in_native else torch
    if prefer in KEY_FORMATS:
        return native if prefer == "native" else torch
    first = clashes[0]
    raise ConfigError(
        f"{model.describe()}: the keys {describe_keys(clashes)} name different arrays in the layer names "
        f"and in PyTorch's (layers named like positions: {first!r} is "
        f"{native.arrays.get(first, first)!r} in the layer names and {torch.arrays.get(first, first)!r} "
        "in PyTorch's), and the state dict fits both; nothing was loaded. Say which it uses: "
        "framework.interchange.load_state_dict(model, state, names='torch') (or names='native'), "
        "model.load_weights(path, names=...); or name the layers otherwise than by numbers"
    )
