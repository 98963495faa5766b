"""``model.summary()``: a table of layers, output shapes and parameter counts.

Columns: the layer's name, its type, its output shape (batch axis ``None``;
``?`` where not known yet), its parameter count and, for functional models,
the layers it is connected to. Below: total, trainable and non-trainable
counts (buffers such as BatchNorm's running statistics are non-trainable);
they equal ``model.count_params()``, ``count_params(True)`` and
``count_params(False)``.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

from framework.base.layer import format_shape

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = ["summary_rows", "summary_text"]


def _last_shape(layer: Any) -> Any:
    shape = getattr(layer, "_out_shape", None)
    if isinstance(shape, tuple):
        return (None, *shape[1:])
    return None


def summary_rows(model: Model) -> list[tuple[str, str, str, int, str]]:
    """``(name, type, output shape, parameters, connected to)`` for each layer."""
    from framework.models.model import Sequential

    rows = []
    graph = model._graph
    if graph is not None:
        names = {id(layer): name for name, layer in graph.layers.items()}
        for node in graph.nodes:
            shapes = [t.shape for t in node.outputs]
            shape = format_shape(shapes if node.list_output else shapes[0])
            connected = ", ".join(
                f"{names[id(t.node.layer)]}" + (f"[{t.index}]" if t.node.list_output else "")
                for t in node.inputs
            )
            layer = node.layer
            rows.append((names[id(layer)], type(layer).__name__, shape, layer.count_params(), connected))
        return rows
    shapes = model.layer_output_shapes() if isinstance(model, Sequential) else []
    for i, (name, layer) in enumerate(model.named_children()):
        shape = shapes[i] if i < len(shapes) and shapes[i] is not None else _last_shape(layer)
        rows.append((name, type(layer).__name__, format_shape(shape), layer.count_params(), ""))
    return rows


def summary_text(model: Model, line_length: int | None = None) -> str:
    """The summary table as one string."""
    rows = summary_rows(model)
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

    total = model.count_params()
    trainable = model.count_params(trainable=True)
    frozen = model.count_params(trainable=False)
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
