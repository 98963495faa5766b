"""The files a model reads and writes beyond its HDF5 checkpoint, found through plugins.

``model.save_weights("w.safetensors")``, ``model.export("m.onnx")`` and
``model.state_dict(format="torch")`` look the format up here by suffix or
name. The formats are registered through the ``register_model_formats`` hook
(the built-in plugin ``plugins.formats`` registers safetensors, ``.npz``,
ONNX, the NumPy-only predictor and PyTorch's state-dict names), so this
package imports none of the packages that implement them
(``framework.interchange``, ``framework.onnx``, ``framework.export``), which
themselves build on models.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from framework.errors import ConfigError, PluginError
from framework.registry.manager import REGISTRY, PluginInfo
from framework.registry.tables import PluginTable

__all__ = ["KINDS", "ModelFormat", "find", "formats", "overriding_forward", "suffix_of"]

KINDS = ("weights", "export", "state_dict")


@dataclass(frozen=True)
class ModelFormat:
    """A registered format: ``save(model, path, **kwargs)``, ``load(model, source, **kwargs)``."""

    kind: str
    name: str
    suffixes: tuple[str, ...]
    save: Callable[..., Any] | None
    load: Callable[..., Any] | None
    plugin: PluginInfo


def _collect() -> list[ModelFormat]:
    table: list[ModelFormat] = []

    def registrar(info: PluginInfo) -> Callable[..., None]:
        def register(
            kind: str,
            name: str,
            suffixes: tuple[str, ...] = (),
            save: Callable[..., Any] | None = None,
            load: Callable[..., Any] | None = None,
        ) -> None:
            if kind not in KINDS or not isinstance(name, str) or not name:
                raise PluginError(
                    f"{info.describe()}: register_model_formats expects register(kind, name, ...) with kind "
                    f"one of {KINDS}, got register({kind!r}, {name!r})"
                )
            suffixes = tuple(s.lower() for s in suffixes)
            for other in table:
                if other.kind == kind and (other.name == name or set(other.suffixes) & set(suffixes)):
                    raise PluginError(
                        f"the {kind} format {name!r} ({', '.join(suffixes) or 'no suffix'}) is registered by "
                        f"{other.plugin.describe()} and by {info.describe()}; uninstall one of them"
                    )
            table.append(ModelFormat(kind, name, suffixes, save, load, info))

        return register

    for function, info in REGISTRY.hook_implementations("register_model_formats"):
        function(register=registrar(info))
    return table


_TABLE: PluginTable[list[ModelFormat]] = PluginTable(_collect)


def formats() -> list[ModelFormat]:
    """Every registered format, collected once per set of loaded plugins."""
    return _TABLE.get()


def suffix_of(path: Any) -> str:
    """``".safetensors"`` for ``"w.safetensors"``, lower case; ``""`` for a directory."""
    return os.path.splitext(os.fspath(path))[1].lower()


def find(
    kind: str, *, path: Any = None, name: str | None = None, required: bool = True
) -> ModelFormat | None:
    """The format of ``kind`` for ``path``'s suffix (or registered as ``name``).

    Raises:
        ConfigError: with ``required``, when none matches, naming what is known.
    """
    table = [f for f in formats() if f.kind == kind]
    key = suffix_of(path) if path is not None else None
    for fmt in table:
        if (name is not None and fmt.name == name) or (key is not None and key in fmt.suffixes):
            return fmt
    if not required:
        return None
    wanted = f"name {name!r}" if name is not None else f"suffix {key or '(none)'!r} of {os.fspath(path)!r}"
    known = ", ".join(f"{f.name} ({', '.join(s or 'a directory' for s in f.suffixes) or '-'})" for f in table)
    raise ConfigError(f"no {kind} format for {wanted}; registered: {known or 'none'}")


def overriding_forward(model: Any) -> type | None:
    """The class whose own ``forward`` an export of ``model``'s layers would leave out, or ``None``.

    A ``Sequential`` or functional ``Model`` is exported layer by layer (ONNX,
    the NumPy predictor); a subclass of either that overrides ``forward``
    computes something else, which such an export would silently drop.
    """
    from framework.models.model import Model
    from framework.models.sequential import Sequential

    owner = next(c for c in type(model).__mro__ if "forward" in vars(c))
    has_layers = isinstance(model, Sequential) or getattr(model, "_graph", None) is not None
    return owner if has_layers and owner not in (Model, Sequential) else None
