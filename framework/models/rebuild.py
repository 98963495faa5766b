"""Rebuilding user classes by their constructor: a Model subclass and a custom layer.

A functional or ``Sequential`` model's config lists its layers; a ``Model``
subclass's config is only its constructor's arguments (``get_config``), its
layers made again by its ``__init__``. So, at save, :func:`check_rebuildable`
refuses a config the constructor cannot take (no ``get_config`` written, an
argument left out, a value JSON cannot hold), naming the class, before
anything is written; :func:`trainable_flags` records the ``layer.trainable``
flags of the layers the constructor makes, which :func:`set_trainable_flags`
sets again after :func:`rebuild`.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from framework.base.calling import check_name
from framework.base.config import Configurable, takes_name
from framework.base.layer import Layer
from framework.errors import ConfigError
from framework.models.model import Model
from framework.registry.namespace import lookup

__all__ = ["check_rebuildable", "rebuild", "rebuild_class", "set_trainable_flags", "trainable_flags"]


def _plain_from_config(cls: type) -> bool:
    """Whether ``cls`` rebuilds as ``cls(**config)`` (it does not override ``from_config``)."""
    method = getattr(getattr(cls, "from_config", None), "__func__", None)
    plain = (vars(Configurable)["from_config"].__func__, vars(Model)["from_config"].__func__)
    return method in plain


def check_rebuildable(layer: Layer, config: dict[str, Any]) -> None:
    """Refuse, at save, a config that the class's constructor cannot take.

    A subclass that does not write ``get_config`` (or leaves out a constructor
    argument, or returns what JSON cannot hold, such as a NumPy integer) would
    fail at save or at load; this names the class, the config and what is
    wrong, before anything is written. A
    constructor without a ``name`` argument is fine: the name is set after
    rebuilding.

    Raises:
        ConfigError: naming the layer, its ``get_config()`` and the mismatch.
    """
    try:
        json.dumps(config, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{layer.describe()} cannot be saved: its get_config() returns {config}, which is not JSON "
            f"data ({exc}); return plain Python numbers, strings, lists and dicts"
        ) from None
    cls = type(layer)
    if not _plain_from_config(cls):
        return
    args = {k: v for k, v in config.items() if k != "name" or takes_name(cls, unreadable=True)}
    try:
        inspect.signature(cls).bind(**args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{layer.describe()} cannot be saved: its get_config() returns {config}, which "
            f"{cls.__name__}.__init__ cannot take ({exc}); override get_config() to return the "
            "constructor's arguments (as JSON data) so that load_model can rebuild it"
        ) from None


def rebuild(class_name: str, config: dict[str, Any]) -> Any:
    """The layer or model of registered (or ``custom_objects``) name ``class_name``, from ``config``."""
    from framework import layers

    cls = lookup("layers", class_name)
    if isinstance(cls, type) and hasattr(cls, "from_config"):
        return rebuild_class(cls, config)
    return layers.get({"class_name": class_name, "config": config})


def rebuild_class(cls: type, config: dict[str, Any]) -> Any:
    """``cls.from_config(config)``; a ``name`` its constructor does not take is set after.

    Raises:
        ConfigError: the constructor cannot take ``config`` (naming the class and the config).
    """
    _check_flags(cls, config)
    if _plain_from_config(cls) and "name" in config and not takes_name(cls, unreadable=True):
        config = dict(config)
        name = config.pop("name")
        built = cls.from_config(config)  # type: ignore[attr-defined]
        if isinstance(built, Layer) and name is not None:
            built.name = check_name(built, name)
        return built
    return cls.from_config(config)  # type: ignore[attr-defined]


def _check_flags(cls: type, config: dict[str, Any]) -> None:
    """Refuse a config value that is not ``true``/``false`` for a constructor argument declared ``bool``:
    a hand-edited ``"bias": "false"`` is a non-empty string, which Python would read as true."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return
    for param in params:
        if param.annotation in (bool, "bool") and param.name in config:
            value = config[param.name]
            if not isinstance(value, bool):
                raise ConfigError(f"{cls.__name__} config: {param.name} must be true or false, got {value!r}")


def trainable_flags(model: Layer) -> dict[str, bool]:
    """``{dotted layer name: flag}`` for each layer whose ``trainable`` differs from its parent's.

    A Model subclass's config holds only its constructor's arguments, so the
    ``layer.trainable`` flags of the layers it makes are recorded here (the
    model's own under ``""``) and restored by :func:`set_trainable_flags`.
    """
    flags: dict[str, bool] = {}
    seen: set[int] = set()

    def visit(prefix: str, layer: Layer, parent: bool) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if layer.trainable != parent:
            flags[prefix.rstrip(".")] = layer.trainable
        for name, child in layer.named_children():
            visit(f"{prefix}{name}.", child, layer.trainable)

    visit("", model, True)
    return flags


def set_trainable_flags(model: Layer, flags: Any) -> None:
    """Set the ``layer.trainable`` flags recorded by :func:`trainable_flags`, parents first."""
    if not flags:
        return
    if not isinstance(flags, dict) or not all(isinstance(v, bool) for v in flags.values()):
        raise ConfigError(f"model config: layer_trainable must map layer names to booleans, got {flags!r}")
    applied: set[str] = set()
    seen: set[int] = set()

    def visit(prefix: str, layer: Layer) -> None:  # parents first, as trainable_flags walks
        if id(layer) in seen:
            return
        seen.add(id(layer))
        key = prefix.rstrip(".")
        if key in flags:
            layer.trainable = flags[key]
            applied.add(key)
        for name, child in layer.named_children():
            visit(f"{prefix}{name}.", child)

    visit("", model)
    unknown = sorted(set(flags) - applied)
    if unknown:
        raise ConfigError(f"model config: layer_trainable names {unknown}, which are no layers of the model")
