"""Writing a model as an ONNX graph: the walk over the layers and the context converters write into.

:func:`export` walks a ``Sequential`` chain or a functional ``Model`` graph
(nested models included), hands each layer to the converter registered for its
class (:mod:`framework.onnx.registry`) and writes the collected nodes and
initializers with the ``onnx`` package's helper API. Graph inputs keep the
names of the model's ``Input`` layers (``input`` for a ``Sequential``);
outputs are ``output`` (or ``output_0``, ``output_1``... for several). With
``dynamic_batch`` the batch axis is the symbolic dimension ``N``; a size the
model's input leaves unknown (``Input((None, 3))``, a sequence's length) stays
a symbolic dimension too, for a ``Sequential`` as for a functional ``Model``.
The file is replaced atomically (:func:`~framework.saving.atomic.atomic_path`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from framework.base.layer import Layer, format_shape
from framework.errors import ExportError, FrameworkError
from framework.onnx._deps import require_onnx
from framework.onnx.registry import converter_for
from framework.saving.atomic import atomic_path

__all__ = ["ExportContext", "export", "to_onnx"]

#: The opsets written by this exporter (Gelu is a single op from 20 on).
SUPPORTED_OPSETS = range(17, 22)

Shape = tuple[int | None, ...] | None


class ExportContext:
    """What a converter writes into: nodes, initializers and the known shapes of values.

    Attributes:
        opset: the ONNX opset of the model being written.
        dtype: the NumPy dtype of the model's floating values (float32 by default).
        shapes: value name -> shape with the batch axis ``None`` (``None`` when unknown);
            a batch axis that is not axis 0 is written ``-1``.
        scope: the name prefix of the layer being converted (``"linear"``,
            ``"encoder.linear"`` inside a nested model).
    """

    def __init__(self, opset: int, dtype: Any) -> None:
        self.onnx = require_onnx()
        self.opset = opset
        self.dtype = np.dtype(dtype)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.shapes: dict[str, Shape] = {}
        self.scope = ""
        self.integer_values: set[str] = set()
        self._taken: set[str] = set()

    def fresh(self, hint: str) -> str:
        """A value or node name not used yet, ``hint`` itself when free."""
        name, i = hint, 0
        while name in self._taken:
            i += 1
            name = f"{hint}_{i}"
        self._taken.add(name)
        return name

    def node(self, op_type: str, inputs: list[str], outputs: int = 1, **attrs: Any) -> Any:
        """Add one node; returns its output name (a list of names when ``outputs > 1``).

        ``inputs`` may contain ``""`` for an omitted optional input; ``attrs``
        with the value ``None`` are left out.
        """
        base = f"{self.scope}/{op_type}" if self.scope else op_type
        names = [self.fresh(base if outputs == 1 else f"{base}_out{i}") for i in range(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(
            self.onnx.helper.make_node(op_type, inputs, names, name=self.fresh(base + "_node"), **attrs)
        )
        return names[0] if outputs == 1 else names

    def initializer(self, array: Any, name: str) -> str:
        """Add a constant tensor; floating arrays are cast to :attr:`dtype`. Returns its name."""
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(self.dtype)
        full = self.fresh(f"{self.scope}.{name}" if self.scope else name)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), full))
        return full

    def ints(self, values: Any, name: str = "shape") -> str:
        """An int64 constant (shapes, axes, pads)."""
        return self.initializer(np.asarray(values, dtype=np.int64), name)

    def scalar(self, value: float, name: str = "const") -> str:
        """A floating scalar constant of :attr:`dtype`."""
        return self.initializer(np.asarray(value, dtype=self.dtype), name)

    def node_dtype(self, value: str) -> np.dtype:
        """The dtype of ``value``: int64 for integer model inputs, else :attr:`dtype`."""
        return np.dtype(np.int64) if value in self.integer_values else self.dtype

    def shape(self, value: str) -> Shape:
        """The known shape of ``value`` (batch axis ``None``), or ``None``."""
        return self.shapes.get(value)

    def activation(self, activation: Any, x: str) -> str:
        """``x`` through a layer's fused ``activation`` (an activation layer, or ``None``)."""
        if activation is None:
            return x
        out = self.convert(activation, [x], scope=self.scope)
        return out if isinstance(out, str) else out[0]

    def convert(self, layer: Layer, inputs: list[str], scope: str | None = None) -> Any:
        """Run the converter of ``layer`` on ``inputs`` under ``scope`` (default: the layer's name)."""
        from framework.models.model import Model

        outer = self.scope
        self.scope = scope if scope is not None else _join(outer, layer.name or type(layer).__name__)
        try:
            if isinstance(layer, Model):
                return convert_model(self, layer, inputs)
            return converter_for(layer)(self, layer, inputs)
        finally:
            self.scope = outer


def _join(scope: str, name: str) -> str:
    return f"{scope}.{name}" if scope else name


def convert_model(ctx: ExportContext, model: Any, inputs: list[str]) -> list[str]:
    """Convert every layer of ``model`` (a ``Sequential`` or functional ``Model``); returns its outputs."""
    from framework.models.sequential import Sequential

    _refuse_overridden_forward(model)
    if isinstance(model, Sequential):
        names: Any = inputs
        for (name, layer), shape in zip(model.named_children(), sequential_shapes(model)):
            names = ctx.convert(layer, names if len(names) > 1 else [names[0]], _join(ctx.scope, name))
            names = [names] if isinstance(names, str) else list(names)
            shapes = shape if isinstance(shape, list) else [shape]  # several outputs: one shape each
            for out_name, out_shape in zip(names, shapes):
                if isinstance(out_shape, tuple) and (
                    out_name == names[0] or ctx.shapes.get(out_name) is None
                ):
                    ctx.shapes[out_name] = out_shape
        return list(names)
    graph = model._graph
    if graph is None:
        raise ExportError(
            f"{model.describe()} is a Model subclass with a hand-written forward(); only Sequential "
            "and functional Model(inputs, outputs) graphs can be exported to ONNX"
        )
    values: dict[int, str] = {}
    for t, name in zip(graph.inputs, inputs):
        values[id(t)] = name
    for node in graph.nodes[len(graph.inputs) :]:
        if node.args or node.kwargs:
            raise ExportError(
                f"{node.layer.describe()} is called with extra arguments {node.args or node.kwargs}; "
                "ONNX export supports layers called on tensors only"
            )
        if getattr(node, "training", None):  # training=False is the inference graph written anyway
            raise ExportError(
                f"{node.layer.describe()} is called with training=True, pinned to training mode "
                "(Monte Carlo dropout, batch statistics); ONNX export writes the inference graph, "
                "expected training=None or False"
            )
        args = [values[id(t)] for t in node.inputs]
        out = ctx.convert(node.layer, args, _join(ctx.scope, node.layer.name or "layer"))
        outs = [out] if isinstance(out, str) else list(out)
        for t, name in zip(node.outputs, outs):
            values[id(t)] = name
            ctx.shapes.setdefault(name, tuple(t.shape))
    return [values[id(t)] for t in graph.outputs]


def _refuse_overridden_forward(model: Any) -> None:
    """Refuse a ``Model``/``Sequential`` subclass whose own ``forward`` the exported graph would skip."""
    from framework.models.formats import overriding_forward

    owner = overriding_forward(model)
    if owner is not None:
        raise ExportError(
            f"{model.describe()} is a {owner.__name__} subclass that overrides forward(); ONNX export "
            "writes the layer graph, which would leave that forward out; expected Sequential.forward "
            "or Model.forward: export a model without the override, or register a converter for "
            f"{type(model).__name__} (register_onnx_converters hook)"
        )


def _not_built(model: Any, detail: str = "its input shape is unknown") -> ExportError:
    return ExportError(
        f"{model.describe()} is not built, so {detail}; give it an input shape (Input(shape) first, "
        "input_shape=..., model.build(shape) or one predict()) before exporting"
    )


def _shape_tuple(out: Any) -> Any:
    return [tuple(o) for o in out] if isinstance(out, list) else tuple(out)


def sequential_shapes(model: Any) -> list[Any]:
    """The output shape of each layer of the ``Sequential`` ``model``, for its declared input shape.

    Sizes the declared input leaves unknown (``Input((None, 3))``) stay
    ``None`` through the stack, so they become symbolic dimensions of the
    ONNX graph, whatever batch built the layers.

    Raises:
        ExportError: the input shape is unknown, or a layer is not built yet.
    """
    from framework.models.graph import infer_output_shape

    declared = getattr(model, "declared_input_shape", None) or model._in_shape
    if declared is None:
        raise _not_built(model)
    if model.built and all(d is not None for d in declared[1:]):
        return list(model._shapes)
    for name, layer in model.named_children():
        if not layer.built:
            raise ExportError(
                f"{model.describe()} is not built: its layer {name!r} ({layer.describe()}) is built by "
                "the first batch; run one predict() or model.build(shape) before exporting"
            )
    shapes: list[Any] = []
    shape = declared
    for layer in model.layers:
        try:
            shape = _shape_tuple(infer_output_shape(layer, shape))
        except FrameworkError as exc:
            if model.built:  # the stack needs known sizes: export those of the batch that built it
                return list(model._shapes)
            raise ExportError(
                f"cannot export {model.describe()}: {layer.describe()} cannot take inputs of shape "
                f"{format_shape(shape)} ({exc}); build the model for a known shape first"
            ) from exc
        shapes.append(shape)
    return shapes


def _graph_inputs(model: Any) -> list[tuple[str, Shape, bool]]:
    """``(name, shape, integer)`` of each model input."""
    graph = getattr(model, "_graph", None)
    if graph is not None:
        return [
            (t.node.layer.name or f"input_{i}", tuple(t.shape), flag)
            for i, (t, flag) in enumerate(zip(graph.inputs, graph.integer_inputs))
        ]
    shape = getattr(model, "declared_input_shape", None) or getattr(model, "input_shape", None)
    name = getattr(model, "input_name", None) or "input"  # the name of a Sequential's Input, if given
    return [(name, tuple(shape) if shape is not None else None, model._integer_inputs()[0])]


def _dims(shape: Shape, batch: Any, label: str) -> list[Any] | None:
    if shape is None:
        return None
    return [
        batch if (i == 0 and d is None) or d == -1 else (d if d is not None else f"{label}_d{i}")
        for i, d in enumerate(shape)
    ]


def to_onnx(model: Any, opset: int = 17, dynamic_batch: bool = True) -> Any:
    """The ``onnx.ModelProto`` of ``model`` (see :func:`export`), checked by ``onnx.checker``."""
    from framework.models.model import Model

    onnx = require_onnx()
    if not isinstance(model, Model):
        raise ExportError(f"export expects a Model or Sequential, got {type(model).__name__}")
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(
            f"opset must be in {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}, got {opset!r}"
        )
    dtype = np.dtype(model.dtype)
    ctx = ExportContext(opset, dtype)
    batch = "N" if dynamic_batch else 1
    float_type = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    inputs, names = [], []
    for name, shape, integer in _graph_inputs(model):
        if shape is None:
            raise _not_built(model)
        name = ctx.fresh(name)
        names.append(name)
        ctx.shapes[name] = shape
        elem = onnx.TensorProto.INT64 if integer else float_type
        if integer:
            ctx.integer_values.add(name)
        inputs.append(onnx.helper.make_tensor_value_info(name, elem, _dims(shape, batch, name)))
    results = convert_model(ctx, model, names)
    outputs = []
    for i, value in enumerate(results):
        out_name = ctx.fresh("output" if len(results) == 1 else f"output_{i}")
        ctx.nodes.append(onnx.helper.make_node("Identity", [value], [out_name], name=ctx.fresh(out_name)))
        dims = _dims(ctx.shape(value), batch, out_name)
        outputs.append(onnx.helper.make_tensor_value_info(out_name, float_type, dims))
    graph = onnx.helper.make_graph(
        ctx.nodes, model.name or "model", inputs, outputs, initializer=ctx.initializers
    )
    from framework._version import __version__

    proto = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", opset)],
        producer_name="framework",
        producer_version=__version__,
    )
    proto.ir_version = min(proto.ir_version, 9 if opset < 21 else 10)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # the checker raises its own ValidationError / InferenceError types
        raise ExportError(f"the exported ONNX graph of {model.describe()} fails onnx.checker: {exc}") from exc
    return proto


def export(model: Any, path: str | os.PathLike[str], opset: int = 17, dynamic_batch: bool = True) -> None:
    """Write ``model`` to ``path`` as an ONNX file that onnxruntime (or any ONNX runtime) can run.

    The model is written in inference form: dropout is removed, batch
    normalisation uses its running statistics. Each layer is written by the
    converter registered for its class; plugins add converters with the
    ``register_onnx_converters`` hook.

    Args:
        model: a built ``Sequential`` or functional ``Model`` (nested models allowed).
        path: the ``.onnx`` file to write.
        opset: the ONNX opset (17 to 21; default 17). GELU is one ``Gelu`` node
            from opset 20, its ``Erf``/``Tanh`` decomposition before.
        dynamic_batch: make the batch axis the symbolic dimension ``N``
            (default); ``False`` fixes it to 1.

    Raises:
        ExportError: ``onnx`` not installed, a layer without a converter (naming
            it and the hook), a layer option ONNX cannot express, an unbuilt
            model, or a path that cannot be written (a missing folder, a
            directory, a failed write: the message names the path and the
            cause). The file is written under a temporary name and moved over
            ``path`` when complete, so a failed export leaves the previous file.

    Example:
        >>> import numpy as np, onnxruntime as ort, tempfile, os
        >>> import framework.onnx
        >>> from framework import Sequential
        >>> from framework.layers import Linear
        >>> model = Sequential([Linear(4, 3, activation="relu"), Linear(3, 2)])
        >>> path = os.path.join(tempfile.mkdtemp(), "mlp.onnx")
        >>> framework.onnx.export(model, path)
        >>> x = np.ones((5, 4), dtype=np.float32)
        >>> y = ort.InferenceSession(path).run(None, {"input": x})[0]
        >>> bool(np.allclose(y, model.predict(x), atol=1e-5))
        True
    """
    proto = to_onnx(model, opset=opset, dynamic_batch=dynamic_batch)
    try:
        data = proto.SerializeToString()
    except ValueError as exc:  # protobuf refuses a message over 2 GB
        raise ExportError(f"cannot export {model.describe()} to {os.fspath(path)!r}: {exc}") from exc
    with atomic_path(path, error=ExportError, verb="export to") as tmp_name, open(tmp_name, "wb") as handle:
        handle.write(data)
