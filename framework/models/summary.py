"""``model.summary()``: a table of layers, output shapes and parameter counts.

Columns: the layer's name, its type, its output shape (batch axis ``None``;
``?`` where not known yet), its parameter count and, for functional models,
the layers it is connected to. Below: total, trainable and non-trainable
counts (buffers such as BatchNorm's running statistics are non-trainable);
they equal ``model.count_params()``, ``count_params(True)`` and
``count_params(False)``, so a parameter shared by several layers (tied
weights) or a layer used at several places of a graph is counted once there,
although each row shows the count of its own layer. A model not built yet
(where ``count_params`` raises) shows the parameters that exist so far.

With ``expand_nested=True`` a nested model (a ``Sequential`` inside a
functional ``Model``, a ``Model`` inside a ``Sequential``, ...) is followed by
its own layers, bracketed by ``|`` once per level of nesting.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

from framework.base.layer import Layer, format_shape
from framework.base.state import parameter_count
from framework.errors import ConfigError, NotBuiltError

if TYPE_CHECKING:
    from framework.models.graph import SymbolicTensor
    from framework.models.model import Model

__all__ = ["NEST_MARK", "SummaryRow", "print_summary", "summary_rows", "summary_text"]

SummaryRow = tuple[str, str, str, int, str]
"""``(name, type, output shape, parameters, connected to)``: one row of the table."""

NEST_MARK = "| "
"""Prefix of a row's name for each level of nesting under ``expand_nested=True``."""


def _last_shape(layer: Any) -> Any:
    """The output shape a layer recorded at its last call, batch axis ``None`` (or ``None``)."""
    shape = getattr(layer, "_out_shape", None)
    if isinstance(shape, tuple):
        return (None, *shape[1:])
    return None


def _count(layer: Any, trainable: bool | None = None) -> int:
    """``layer.count_params(trainable)``; for a layer not built yet, the parameters that exist (0 for
    one waiting for its input size), where ``count_params`` refuses."""
    try:
        return int(layer.count_params(trainable))
    except NotBuiltError:
        return parameter_count(layer, trainable)


def _source(tensor: SymbolicTensor, names: dict[int, str]) -> str:
    """How the "Connected to" column names the producer of ``tensor``: ``name`` or ``name[i]``."""
    node = tensor.node
    if node is None:  # pragma: no cover - every tensor of a traced graph has its producing node
        return "?"
    return names[id(node.layer)] + (f"[{tensor.index}]" if node.list_output else "")


def _layer_rows(model: Model) -> list[tuple[Layer, SummaryRow]]:
    """Each layer of ``model`` (in execution order, once per call in a graph) with its row."""
    from framework.models.sequential import Sequential

    rows: list[tuple[Layer, SummaryRow]] = []
    graph = model._graph
    if graph is not None:
        names = {id(layer): name for name, layer in graph.layers.items()}
        for node in graph.nodes:
            shapes = [t.shape for t in node.outputs]
            shape_text = format_shape(shapes if node.list_output else shapes[0])
            sources = [_source(t, names) for t in node.inputs]
            sources += [f"{key}={_source(t, names)}" for key, t in node.side]  # a mask from an Input
            connected = ", ".join(sources)
            layer = node.layer
            row = (names[id(layer)], type(layer).__name__, shape_text, _count(layer), connected)
            rows.append((layer, row))
        return rows
    shapes_known = model.layer_output_shapes() if isinstance(model, Sequential) else []
    for i, (name, layer) in enumerate(model.named_children()):
        shape = shapes_known[i] if i < len(shapes_known) and shapes_known[i] is not None else None
        if shape is None:
            shape = _last_shape(layer)
        rows.append((layer, (name, type(layer).__name__, format_shape(shape), _count(layer), "")))
    return rows


def summary_rows(model: Model, expand_nested: bool = False) -> list[SummaryRow]:
    """The rows of ``model``'s summary, one per layer (per call of a layer in a graph).

    Args:
        model: the model.
        expand_nested: also list, after the row of each nested model, the
            rows of its own layers (recursively), their names prefixed by
            :data:`NEST_MARK` once per level (default ``False``).

    Returns:
        ``(name, type, output shape, parameters, connected to)`` tuples.
    """
    from framework.models.model import Model

    out: list[SummaryRow] = []

    def walk(current: Model, depth: int, active: tuple[int, ...]) -> None:
        for layer, (name, kind, shape, count, connected) in _layer_rows(current):
            out.append((NEST_MARK * depth + name, kind, shape, count, connected))
            if expand_nested and isinstance(layer, Model) and id(layer) not in active:
                walk(layer, depth + 1, (*active, id(layer)))

    walk(model, 0, (id(model),))
    return out


def summary_text(model: Model, line_length: int | None = None, expand_nested: bool = False) -> str:
    """The summary table as one string.

    Args:
        model: the model.
        line_length: the width to fit the table into (default ``None``: the
            terminal's width, at least 60); only the "Connected to" column is
            shortened.
        expand_nested: list the layers of nested models under their row (see
            :func:`summary_rows`; default ``False``).

    Returns:
        The title, the table and the total / trainable / non-trainable
        counts, which equal ``model.count_params()`` (each parameter once).

    Raises:
        ConfigError: a ``line_length`` that is not a positive integer.
    """
    if line_length is not None and (
        isinstance(line_length, bool) or not isinstance(line_length, int) or line_length < 1
    ):
        raise ConfigError(
            f"{model.describe()}: summary line_length must be a positive integer or None, got {line_length!r}"
        )
    rows = summary_rows(model, expand_nested=expand_nested)
    functional = model._graph is not None
    headers = ("Layer", "Type", "Output shape", "Param #") + (("Connected to",) if functional else ())
    cells = [(r[0], r[1], r[2], f"{r[3]:,}") + ((r[4],) if functional else ()) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    total_width = sum(widths) + 2 * (len(widths) - 1)
    limit = line_length or max(shutil.get_terminal_size((100, 20)).columns, 60)
    if functional and total_width > limit:
        widths[-1] = max(len(headers[-1]), widths[-1] - (total_width - limit))
        total_width = sum(widths) + 2 * (len(widths) - 1)

    def line(values: tuple[str, ...]) -> str:
        parts = []
        for i, (v, w) in enumerate(zip(values, widths)):
            v = v if len(v) <= w else v[: max(w - 3, 0)] + "..."
            parts.append(v.rjust(w) if headers[i] == "Param #" else v.ljust(w))
        return "  ".join(parts).rstrip()

    total, trainable, frozen = (_count(model, flag) for flag in (None, True, False))
    title = f'Model: "{model.name or type(model).__name__}" ({type(model).__name__})'
    out = [title, "=" * total_width, line(headers), "-" * total_width]
    out.extend(line(c) for c in cells)
    out += [
        "=" * total_width,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {frozen:,}",
    ]
    return "\n".join(out)


def print_summary(
    model: Model, print_fn: Any = None, line_length: int | None = None, expand_nested: bool = False
) -> str | None:
    """``model.summary()``: print :func:`summary_text`, or pass each line to ``print_fn`` and return it.

    Raises:
        ConfigError: a ``print_fn`` that is not callable, or a bad ``line_length``.
    """
    if print_fn is not None and not callable(print_fn):
        raise ConfigError(
            f"{model.describe()}.summary: print_fn must be a callable taking one line, "
            f"got {type(print_fn).__name__} {print_fn!r}"
        )
    text = summary_text(model, line_length=line_length, expand_nested=expand_nested)
    if print_fn is None:
        print(text)
        return None
    for line in text.splitlines():
        print_fn(line)
    return text
