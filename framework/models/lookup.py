"""Finding a model's layers: ``get_layer`` by name or index, as Keras's ``Model.get_layer``.

Keras refuses a call giving both a name and an index, or neither, and an
index past the end, with a ``ValueError``; here each is a
:class:`~framework.ConfigError` (a ``ValueError``) naming the model, what was
given and what exists. Negative indices count from the end, as Python's.
Names are the model's own layers' (a nested model's layers are found through
it: ``model.get_layer("tower").get_layer("linear")``).
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

from framework.errors import ConfigError

if TYPE_CHECKING:
    from framework.base.layer import Layer

__all__ = ["get_layer"]


def get_layer(model: Layer, name: Any = None, index: Any = None) -> Layer:
    """The layer of ``model`` called ``name``, or at position ``index`` of ``model.layers``.

    Raises:
        ConfigError: both or neither of ``name`` and ``index``; an index that is
            not an int or is out of range; no layer of that name.
    """
    if name is not None and index is not None:
        raise ConfigError(
            f"{model.describe()}.get_layer: pass only one of a layer name and an index, "
            f"got name={name!r} and index={index!r}"
        )
    pairs = list(model.named_children())
    if index is not None:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise ConfigError(f"{model.describe()}.get_layer: index must be an int, got {index!r}")
        if not -len(pairs) <= int(index) < len(pairs):
            raise ConfigError(
                f"{model.describe()}.get_layer: index {index} is out of range; the model has "
                f"{len(pairs)} layers ({[key for key, _ in pairs]})"
            )
        return pairs[int(index)][1]
    if name is None:
        raise ConfigError(f"{model.describe()}.get_layer: pass either a layer name or an index")
    for key, layer in pairs:
        if key == name:
            return layer
    raise ConfigError(f"{model.describe()} has no layer named {name!r}; layers: {[key for key, _ in pairs]}")
