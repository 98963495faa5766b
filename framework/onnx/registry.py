"""Which function converts which layer class: the ``register_onnx_converters`` hook, collected.

A converter is ``converter(ctx, layer, inputs) -> outputs``: it receives the
:class:`~framework.onnx.exporter.ExportContext` (which adds nodes and
initializers), the layer instance and the ONNX value names of its inputs (one
per input; a merge layer gets several), and returns the value name of its
output, or a list of names for a layer with several outputs.

The built-in converters (:mod:`framework.onnx.builtin`) are registered first,
then every plugin implementing the hook, in the registry's plugin order; two
plugins converting one class is a :class:`~framework.errors.PluginError`
naming both, unless the second passes ``override=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from framework.base.layer import Layer
from framework.errors import ExportError, PluginError
from framework.registry.manager import REGISTRY, PluginInfo
from framework.registry.tables import PluginTable

__all__ = ["Converter", "converters", "converter_for"]

Converter = Callable[..., Any]

_BUILTIN = PluginInfo(name="onnx", module="framework.onnx.builtin", distribution="framework")


def _collect() -> dict[type, tuple[Converter, PluginInfo]]:
    from framework.onnx import builtin

    table: dict[type, tuple[Converter, PluginInfo]] = {}

    def registrar(info: PluginInfo) -> Callable[..., None]:
        def register(layer_class: Any, converter: Converter, override: bool = False) -> None:
            if not isinstance(layer_class, type) or not callable(converter):
                raise PluginError(
                    f"{info.describe()}: register_onnx_converters expects register(layer_class, "
                    f"converter), got register({layer_class!r}, {converter!r})"
                )
            old = table.get(layer_class)
            if old is not None and old[0] is not converter and not override:
                raise PluginError(
                    f"ONNX converter for {layer_class.__name__} is registered twice: by "
                    f"{old[1].describe()} and by {info.describe()}; uninstall one of them, or pass "
                    "override=True to register() to replace the first on purpose"
                )
            table[layer_class] = (converter, info)

        return register

    builtin.register_onnx_converters(registrar(_BUILTIN))
    for function, info in REGISTRY.hook_implementations("register_onnx_converters"):
        function(register=registrar(info))
    return table


_TABLE: PluginTable[dict[type, tuple[Converter, PluginInfo]]] = PluginTable(_collect)


def converters() -> dict[type, tuple[Converter, PluginInfo]]:
    """Layer class -> ``(converter, plugin info)``, collected once per set of loaded plugins."""
    return _TABLE.get()


def converter_for(layer: Layer) -> Converter:
    """The converter of ``layer``'s class.

    A subclass without a converter of its own uses its base class's converter
    only when it inherits the base's ``forward`` unchanged.

    Raises:
        ExportError: naming the layer, its class and the hook to implement.
    """
    table = converters()
    cls = type(layer)
    for base in cls.__mro__:
        found = table.get(base)
        if found is not None and (
            base is cls or getattr(cls, "forward", None) is getattr(base, "forward", None)
        ):
            return found[0]
    raise ExportError(
        f"no ONNX converter for {layer.describe()} ({cls.__module__}.{cls.__qualname__}); the plugin "
        f"providing the layer can add one with the register_onnx_converters hook: "
        f"register({cls.__name__}, converter) (see docs/guide/onnx.md)"
    )
