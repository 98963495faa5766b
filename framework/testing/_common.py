"""What several checks share: a default-dtype scope, config and registry round trips, layer copies."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import numpy as np

from framework.base.layer import Layer
from framework.registry.manager import REGISTRY
from framework.runtime.dtype import get_default_dtype, set_default_dtype
from framework.testing import _structure as st
from framework.testing.report import CheckFailed

__all__ = [
    "default_dtype",
    "json_round",
    "check_config",
    "check_registered",
    "fresh_layer",
    "forward",
    "named_modules",
    "attribute_differences",
    "plain_attributes",
]

#: Attributes every layer has that a rebuilt layer may legitimately hold differently.
_BASE_ATTRIBUTES = {"training", "built", "input_shape", "input_spec", "needs_input_grad", "grad_out_writable"}


@contextlib.contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    """Set the framework's default dtype for the ``with`` block, then restore it."""
    old = get_default_dtype()
    set_default_dtype(dtype)
    try:
        yield
    finally:
        set_default_dtype(old)


def json_round(data: Any) -> Any:
    """``data`` after a JSON round trip (tuples become lists), as a checkpoint stores it."""
    return json.loads(json.dumps(data, sort_keys=True))


def check_config(obj: Any, kind: str) -> tuple[dict[str, Any], Any]:
    """``get_config`` is JSON, ``from_config`` rebuilds an equal config; returns (config, clone)."""
    config = obj.get_config()
    if not isinstance(config, dict):
        raise CheckFailed(f"get_config() returned {type(config).__name__}, expected a dict")
    try:
        text = json.dumps(config, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"get_config() is not JSON-serialisable: {exc}; config = {config!r}") from exc
    stored = json.loads(text)
    clone = type(obj).from_config(json.loads(text))
    again = json_round(clone.get_config())
    if again != stored:
        diff = sorted(
            k for k in set(again) | set(stored) if again.get(k, "<missing>") != stored.get(k, "<missing>")
        )
        raise CheckFailed(
            f"{type(obj).__name__}.from_config(get_config()) does not rebuild an equal config; "
            f"differing keys {diff}: original {stored!r}, rebuilt {again!r} "
            "(is a constructor argument not stored or not written by get_config?)"
        )
    return config, clone


def check_registered(obj: Any, kind: str, config: dict[str, Any]) -> str:
    """``obj``'s class is registered under ``kind`` and the registry rebuilds it from ``config``."""
    from framework.registry.namespace import resolve

    name = REGISTRY.name_of(kind, obj)
    if name is None:
        raise CheckFailed(
            f"{type(obj).__name__} is not registered as a {kind[:-1]}: add it with a "
            f"register_{kind} hook (framework.hookimpl) in your plugin module"
        )
    rebuilt = resolve(kind, {"class_name": name, "config": json_round(config)})
    if type(rebuilt) is not type(obj):
        raise CheckFailed(
            f"framework.{kind}.get({{'class_name': {name!r}, ...}}) built a "
            f"{type(rebuilt).__name__}, expected {type(obj).__name__} (is another plugin "
            "registering that name with override=True?)"
        )
    return f"registered as {name!r}"


def fresh_layer(layer: Layer, dtype: Any, prepare: Callable[[Layer], Any] | None = None) -> Layer:
    """A new layer of the same config whose parameters are ``dtype``, in training mode.

    Rebuilt with ``from_config`` under that default dtype; a layer whose
    config cannot rebuild it is deep-copied and cast with ``astype`` instead.
    ``prepare`` (state deliberately outside the config) is applied to it.
    """
    with default_dtype(dtype):
        try:
            fresh = type(layer).from_config(json_round(layer.get_config()))
        except Exception:
            fresh = copy.deepcopy(layer)
            fresh.astype(dtype)
    fresh.train()
    if prepare is not None:
        prepare(fresh)
    return fresh


def forward_by_hand(layer: Layer, x: Any, *, copy_input: bool = True) -> Any:
    """``layer.forward(x)``: the by-hand form, without a context, on a copy of ``x``.

    ``Layer.forward`` is declared in its context form ``forward(ctx, x)``; the
    base class also serves the one-argument form (it makes the context and
    keeps it for the next :func:`backward_by_hand`), which the static type
    does not show, hence the cast. The layer gets a copy of ``x`` (unless
    ``copy_input=False``), so a layer that wrongly writes into its input
    cannot change what the kit's next call reads (the ``arrays`` check
    reports it instead).
    """
    if copy_input:
        x = st.map_leaves(np.copy, x)
    return cast("Callable[[Any], Any]", layer.forward)(x)


def backward_by_hand(layer: Layer, grad_out: Any) -> Any:
    """``layer.backward(grad_out)``: the by-hand form, after :func:`forward_by_hand`."""
    return cast("Callable[[Any], Any]", layer.backward)(grad_out)


def forward(layer: Layer, x: Any, dtype: Any) -> Any:
    """``layer.forward(x)`` under default dtype ``dtype``; the output exactly as the layer returns it."""
    with default_dtype(dtype):
        return forward_by_hand(layer, x)


def named_modules(layer: Layer, prefix: str = "") -> Iterator[tuple[str, Layer]]:
    """``(dotted prefix, layer)`` for ``layer`` and every layer under it (the prefix ends in ``.``)."""
    yield prefix, layer
    for name, child in layer.named_children():
        yield from named_modules(child, f"{prefix}{name}.")


_MISSING = object()


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (list, tuple)) and len(value) <= 16 and all(_plain(v) for v in value)


def plain_attributes(obj: Any) -> dict[str, Any]:
    """``{dotted name: value}`` of the public plain attributes of ``obj`` (and of its sub-layers)."""
    pairs = named_modules(obj) if isinstance(obj, Layer) else iter([("", obj)])
    return {
        f"{prefix}{key}": json_round(value)
        for prefix, module in pairs
        for key, value in vars(module).items()
        if not key.startswith("_") and _plain(value)
    }


def attribute_differences(original: Any, rebuilt: Any, ignore: Iterable[str] = ()) -> list[str]:
    """Public plain attributes of ``original`` that ``rebuilt`` lacks or holds differently.

    Plain: numbers, strings, ``None`` and short tuples or lists of them.

    For layers, every sub-layer is compared with the one of the same name.
    Such an attribute is almost always a constructor argument, so a
    difference means ``get_config()`` does not write it. ``ignore`` names
    attributes (plain or dotted, ``"norm.num_batches_tracked"``) that are
    state, not arguments.
    """
    skip = _BASE_ATTRIBUTES | set(ignore)
    pairs = [("", original, rebuilt)]
    if isinstance(original, Layer) and isinstance(rebuilt, Layer):
        theirs = dict(named_modules(rebuilt))
        pairs = [(p, m, theirs[p]) for p, m in named_modules(original) if p in theirs]
    out = []
    for prefix, a, b in pairs:
        mine = vars(a)
        for key, value in mine.items():
            if key.startswith("_") or key in skip or f"{prefix}{key}" in skip or not _plain(value):
                continue
            got: Any = getattr(b, key, _MISSING)  # a class default counts
            if got is _MISSING or not _plain(got) or json_round(got) != json_round(value):
                shown = "no such attribute" if got is _MISSING else repr(got)
                out.append(f"{prefix}{key}: original {value!r}, rebuilt {shown}")
    return out
