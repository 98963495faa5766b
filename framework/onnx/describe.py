"""A text table of an ONNX file: inputs, outputs, nodes and parameter counts, without building a model."""

from __future__ import annotations

import math
import os
from typing import Any

from framework.errors import ExportError
from framework.onnx._deps import require_onnx

__all__ = ["describe"]


def _dims(value_info: Any) -> str:
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return "?"
    dims = [d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?") for d in tensor.shape.dim]
    return "(" + ", ".join(dims) + ")"


def _elem(onnx: Any, value_info: Any) -> str:
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type))
    except Exception:  # an unknown or undefined element type
        return "?"


def describe(path: str | os.PathLike[str]) -> str:
    """A table of ``path``'s graph: inputs and outputs with shapes, every node, parameter counts.

    Each node row gives its op type, name, and the number of parameters
    (initializer values) it reads. Used by ``python -m framework inspect x.onnx``.

    Raises:
        ExportError: when the file cannot be read as an ONNX model.
    """
    onnx = require_onnx()
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError...
        raise ExportError(f"cannot read {os.fspath(path)!r} as an ONNX model: {exc}") from exc
    if not model.ir_version or not model.opset_import or not model.HasField("graph"):
        # an empty file parses as an empty message: no IR version, no opset, no graph
        raise ExportError(f"{os.fspath(path)!r} holds no ONNX model (no IR version, opset or graph)")
    graph = model.graph
    sizes = {t.name: math.prod(t.dims) for t in graph.initializer}
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
    lines = [
        f"ONNX model {os.fspath(path)!r}: graph {graph.name!r}, {opsets}, "
        f"producer {model.producer_name or '?'} {model.producer_version}".rstrip(),
        "",
    ]
    for label, items in (("Inputs", graph.input), ("Outputs", graph.output)):
        rows = [v for v in items if v.name not in sizes]
        lines.append(f"{label}:")
        lines += [f"  {v.name:<30} {_elem(onnx, v):<8} {_dims(v)}" for v in rows]
    width = max([len(n.name) for n in graph.node] + [4])
    lines += ["", f"  {'#':>3}  {'op':<22} {'name':<{width}}  params"]
    counted: set[str] = set()
    for i, node in enumerate(graph.node):
        params = sum(sizes[x] for x in node.input if x in sizes and x not in counted)
        counted.update(x for x in node.input if x in sizes)
        lines.append(f"  {i:>3}  {node.op_type:<22} {node.name:<{width}}  {params:,}")
    total = sum(sizes.values())
    lines += ["", f"{len(graph.node)} nodes, {len(sizes)} initializers, {total:,} parameters"]
    return "\n".join(lines)
