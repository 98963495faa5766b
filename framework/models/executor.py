"""Running a functional graph: the plan of nodes, the forward tape and the backward walk.

:class:`GraphExecutor` turns the nodes recorded by :mod:`framework.models.graph`
into a flat plan (topological order, one slot per tensor). Each run gets one
:class:`~framework.base.context.Context` per node, kept on the caller's context
as its tape, so a layer called at two nodes keeps two records and nothing of a
run lives on the layers or on the executor: runs from several threads, or a
forward of one batch while another's backward is pending, never meet.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from framework.base.calling import as_out_dtype, check_name
from framework.base.context import Context
from framework.base.layer import Layer, format_shape, takes_context
from framework.errors import ConfigError, DataError, NotBuiltError, ShapeError
from framework.models import layouts
from framework.models.graph import InputLayer, Node, SymbolicTensor
from framework.models.placeholders import Slot, accepts_integers, extras, filled, input_kinds, slotted
from framework.models.reorder import pool_first

__all__ = [
    "GraphExecutor",
    "accepts_integers",
    "auto_named",
    "flatten",
    "snake_case",
    "unflatten",
    "unique_name",
]


def flatten(value: Any) -> list[Any]:
    """The arrays of a (possibly nested) list/tuple output, in order: ``(y, (h, c))`` -> ``[y, h, c]``."""
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in flatten(item)]
    return [value]


def unflatten(template: Any, leaves: list[Any]) -> Any:
    """``leaves`` put back into ``template``'s nesting (lists and tuples kept); inverts :func:`flatten`."""
    it = iter(leaves)

    def build(node: Any) -> Any:
        if isinstance(node, (list, tuple)):
            return type(node)(build(item) for item in node)
        return next(it)

    return build(template)


def snake_case(name: str) -> str:
    """``BatchNorm`` -> ``batch_norm``, ``Conv2d`` -> ``conv2d``, ``LSTM`` -> ``lstm``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _base_name(layer: Layer) -> str:
    return "input" if isinstance(layer, InputLayer) else snake_case(type(layer).__name__)


def unique_name(layer: Layer, taken: dict[str, Any], owner: str) -> str:
    """The name ``layer`` gets in a model whose names so far are ``taken``.

    Raises:
        ConfigError: for a name used twice, or holding ``"."`` (set after the
            layer was made: ``state_dict()`` keys would collide, see ``check_name``).
    """
    name = layer.name
    if name is not None and not isinstance(layer, InputLayer):
        check_name(layer, name)
    if name is not None and name not in taken:
        return name
    if name is not None and not auto_named(layer):
        raise ConfigError(
            f"{owner}: two layers are named {name!r} ({taken[name].describe()} and "
            f"{type(layer).__name__}); layer names must be unique within a model"
        )
    base = _base_name(layer)
    candidate, i = base, 0
    while candidate in taken:
        i += 1
        candidate = f"{base}_{i}"
    layer.name = candidate
    layer._framework_auto_name = candidate
    return candidate


def auto_named(layer: Layer) -> bool:
    """Whether ``layer``'s name is the one a model gave it (not one the user set or assigned since)."""
    given = getattr(layer, "_framework_auto_name", None)
    return given is True or (isinstance(given, str) and given == layer.name)


class GraphExecutor:
    """The compiled form of a functional graph: nodes in order, slots for arrays.

    Attributes:
        inputs, outputs: the model's placeholders.
        layers: each distinct layer once, by its unique name, in first-call order.
        nodes: every call, in execution order (``Input`` nodes first).
        plan: per non-input node: ``(layer, input slots, list_input, output
            slots, list_output, args, kwargs)``.
        pinned: per entry of ``plan``, the mode its call was pinned to
            (``layer(x, training=True)``), or ``None`` to follow the run's.
    """

    def __init__(self, inputs: Any, outputs: Any, owner: str) -> None:
        self.multi_in = isinstance(inputs, (list, tuple))
        self.multi_out = isinstance(outputs, (list, tuple))
        self.inputs: list[SymbolicTensor] = list(inputs) if self.multi_in else [inputs]
        self.outputs: list[SymbolicTensor] = list(outputs) if self.multi_out else [outputs]
        for label, tensors in (("inputs", self.inputs), ("outputs", self.outputs)):
            if not tensors:
                raise ConfigError(f"Model {owner!r}: {label} must not be empty")
            for t in tensors:
                if not isinstance(t, SymbolicTensor):
                    raise ConfigError(
                        f"Model {owner!r}: {label} must be placeholders from Input() or layer calls, "
                        f"got {type(t).__name__}"
                    )
        for t in self.inputs:
            if not isinstance(t.node.layer, InputLayer):
                raise ConfigError(
                    f"Model {owner!r}: every input must be an Input() placeholder, got the output of "
                    f"{t.node.layer.describe()}"
                )
        if len({id(t) for t in self.inputs}) != len(self.inputs):
            raise ConfigError(f"Model {owner!r}: the same Input is listed twice in inputs")

        order: list[Node] = []
        state: dict[int, int] = {}

        def visit(node: Node) -> None:
            mark = state.get(id(node))
            if mark == 2:
                return
            if mark == 1:
                raise ConfigError(f"Model {owner!r}: the graph has a cycle through {node.layer.describe()}")
            state[id(node)] = 1
            for t in [*node.inputs, *(t for _, t in node.side)]:
                visit(t.node)
            state[id(node)] = 2
            order.append(node)

        for t in self.outputs:
            visit(t.node)
        given = {id(t.node) for t in self.inputs}
        for node in order:
            if isinstance(node.layer, InputLayer) and id(node) not in given:
                raise ConfigError(
                    f"Model {owner!r}: the outputs depend on Input {node.layer.name or '(unnamed)'!r} "
                    f"of shape {format_shape(node.outputs[0].shape)}, which is not in inputs"
                )
        # Inputs first, in the order given (an unused input still belongs to the model), then the calls
        # in the order they were made (as PyTorch runs code): a layer called twice, such as a shared
        # BatchNorm, updates its running statistics in that order, whatever the order of the outputs.
        in_nodes = [t.node for t in self.inputs]
        order = in_nodes + sorted((n for n in order if id(n) not in given), key=lambda n: n.serial)

        calls: dict[int, int] = {}
        for node in order:
            calls[id(node.layer)] = calls.get(id(node.layer), 0) + 1
            if calls[id(node.layer)] == 2 and not takes_context(node.layer):
                raise ConfigError(
                    f"Model {owner!r}: {node.layer.describe()} is called at two places of the graph, but "
                    f"{type(node.layer).__qualname__} keeps its forward state on the layer "
                    "(forward(x) / backward(grad_out)), so the second call would overwrite the first's. "
                    "Write it in the context form, forward(self, ctx, x) / backward(self, ctx, grad_out) "
                    "(see docs/plugins.md), or use two layers"
                )

        self.layers: dict[str, Layer] = {}
        placed: set[int] = set()
        for node in order:
            if id(node.layer) not in placed:
                placed.add(id(node.layer))
                self.layers[unique_name(node.layer, self.layers, f"Model {owner!r}")] = node.layer
        self.nodes = order

        slot: dict[int, int] = {}
        for node in order:
            for t in node.outputs:
                slot[id(t)] = len(slot)
        self.n_slots = len(slot)
        self.input_slots = [slot[id(t)] for t in self.inputs]
        self.output_slots = [slot[id(t)] for t in self.outputs]
        self.plan = [
            (
                node.layer,
                [slot[id(t)] for t in node.inputs],
                node.list_input,
                [slot[id(t)] for t in node.outputs],
                node.list_output,
                *slotted(node, slot),
            )
            for node in order[len(in_nodes) :]
        ]
        self.pinned: list[bool | None] = [node.training for node in order[len(in_nodes) :]]
        # a max pool runs before the ReLU feeding it, on 4x less data for a 2x2 pool
        self.plan, self.pinned = pool_first(self.plan, self.pinned, self.output_slots)
        self.with_placeholders = {
            i for i, entry in enumerate(self.plan) if any(isinstance(a, Slot) for a in extras(entry))
        }
        self.integer_inputs, self.declared = input_kinds(self.inputs, order, owner)

    def _layout_plan(self) -> layouts.Plan:
        """The graph's batch-last runs (:mod:`framework.models.layouts`), planned on first use."""
        runs = self.__dict__.get("_layouts")
        if runs is None or not runs.current():
            runs = self._layouts = layouts.graph_plan(self.plan, self.output_slots)
        return runs

    def input_shape(self) -> Any:
        shapes = [t.shape for t in self.inputs]
        return shapes if self.multi_in else shapes[0]

    def check_input_shape(self, input_shape: Any, owner: str) -> None:
        """Raise ``ShapeError`` unless ``input_shape`` (a shape; a list for several inputs) fits the Inputs.

        Sizes that are ``None`` on either side match anything.
        """
        n = len(self.inputs)
        if not self.multi_in and isinstance(input_shape, list) and len(input_shape) == 1:
            input_shape = input_shape[0]
        shapes = input_shape if self.multi_in else [input_shape]
        if not isinstance(shapes, list) or len(shapes) != n:
            raise ShapeError(f"{owner} takes {n} inputs, got input shape {format_shape(input_shape)}")
        for t, shape in zip(self.inputs, shapes):
            given = tuple(shape) if isinstance(shape, (tuple, list)) else None
            if (
                given is None
                or len(given) != len(t.shape)
                or any(a is not None and b is not None and a != b for a, b in zip(t.shape[1:], given[1:]))
            ):
                raise ShapeError(
                    f"{owner} expected input {t.node.layer.name!r} of shape {format_shape(t.shape)}, "
                    f"got {format_shape(shape)}"
                )

    def forward(self, ctx: Context, x: Any, owner: str = "the model") -> Any:
        """Run every node on ``x``; with ``ctx.record`` the tape goes to ``ctx``.

        Args:
            ctx: the model call's context (mode, ``record``); a node pinned
                with ``training=`` runs in its own mode (its backward too).
            x: one array, or a list of one array per input.
            owner: the model, as its errors name it.
        """
        n_in = len(self.inputs)
        if n_in == 1 and isinstance(x, np.ndarray):
            xs = [x]
        elif isinstance(x, (list, tuple)) and len(x) == n_in:
            xs = list(x)
        else:
            got = f"a list of {len(x)}" if isinstance(x, (list, tuple)) else type(x).__name__
            plural = "s" if n_in != 1 else ""
            raise DataError(f"{owner} takes {n_in} input{plural} (a list of {n_in} arrays), got {got}")
        values: list[Any] = [None] * self.n_slots
        for t, s, a in zip(self.inputs, self.input_slots, xs):
            source = t.node.layer
            assert isinstance(source, InputLayer)  # checked when the graph was built
            source.check(a)
            values[s] = a
        training, record = ctx.training, ctx.record
        tape: list[Context] = []
        pins = self.__dict__.get("pinned") or [None] * len(self.plan)  # (unpickled from before pins)
        runs = self._layout_plan()
        batch_last: set[int | None] = set()  # the runs this call runs batch-last
        for i, ((layer, ins, list_in, outs, list_out, args, kwargs), pinned) in enumerate(
            zip(self.plan, pins)
        ):
            arg = [values[s] for s in ins] if list_in else values[ins[0]]
            node_ctx = Context(training if pinned is None else pinned, record=record, nested=True)
            role = runs.role(i, arg, batch_last)
            if role is not None:
                out = layouts.forward(layer, node_ctx, arg, role)  # type: ignore[arg-type]  # one array
            else:
                if i in self.with_placeholders:  # a mask from the model's inputs: this run's array
                    args, kwargs = filled(args, kwargs, values)
                out = layer.forward(node_ctx, arg, *args, **kwargs)
            if record:
                tape.append(node_ctx)
            if list_out:
                leaves = flatten(out)  # a nested output (``(y, (h, c))``) has one slot per array
                if record:
                    node_ctx.out_structure = out
                for s, o in zip(outs, leaves):
                    values[s] = o
            else:
                values[outs[0]] = out
        results = [values[s] for s in self.output_slots]
        if record:
            ctx.tape = tape
            ctx.values = values
        return results if self.multi_out else results[0]

    def backward(self, ctx: Context, grad_out: Any, owner: str = "the model") -> Any:
        """``dL/d input(s)`` from ``dL/d output(s)``, walking ``ctx``'s tape in reverse.

        Args:
            ctx: the context of the forward (its tape).
            grad_out: one array per output, each of that output's shape (a
                list for several outputs; ``None`` for an output with no
                gradient); another floating dtype is cast to the output's.
            owner: how messages name the model (``Model layer 'net'``).

        Raises:
            DataError: not one gradient per output.
            ShapeError: a gradient of another shape than its output.
        """
        tape: list[Context] | None = getattr(ctx, "tape", None)
        if tape is None:
            raise NotBuiltError(
                f"{owner}: backward() called before forward() (or after a forward with record=False)"
            )
        values = ctx.values
        grads: list[Any] = [None] * self.n_slots
        gs = self._output_grads(ctx, grad_out, owner)
        skip = -1
        if getattr(ctx, "grad_at_logits", False):  # a fused loss gradient: enter below the activation
            skip = next(i for i, entry in enumerate(self.plan) if self.output_slots[0] in entry[3])
            grads[self.plan[skip][1][0]] = gs[0]
            gs = [None]
        for s, g in zip(self.output_slots, gs):
            if g is not None:
                grads[s] = g if grads[s] is None else grads[s] + g
        for i in range(len(self.plan) - 1, -1, -1):
            if i == skip:
                continue
            layer, ins, list_in, outs, list_out, _args, _kwargs = self.plan[i]
            out_grads = [grads[s] for s in outs]
            if all(g is None for g in out_grads):
                continue
            if list_out:
                leaves = [np.zeros_like(values[s]) if g is None else g for s, g in zip(outs, out_grads)]
                g_arg = unflatten(tape[i].out_structure, leaves)
            else:
                g_arg = out_grads[0]
            g_in = layouts.backward(layer, tape[i], g_arg)  # in the layout its forward ran in
            g_list = g_in if list_in else [g_in]
            for s, g in zip(ins, g_list):
                if g is not None:
                    grads[s] = g if grads[s] is None else grads[s] + g
        result = [np.zeros_like(values[s]) if grads[s] is None else grads[s] for s in self.input_slots]
        return result if self.multi_in else result[0]

    def _output_grads(self, ctx: Context, grad_out: Any, owner: str) -> list[Any]:
        """``grad_out`` as one array (or ``None``) per output, shapes checked, dtypes cast."""
        n = len(self.outputs)
        if not self.multi_out:
            gs = [grad_out]
        elif isinstance(grad_out, (list, tuple)) and len(grad_out) == n:
            gs = list(grad_out)
        else:
            got = (
                f"a list of {len(grad_out)}"
                if isinstance(grad_out, (list, tuple))
                else type(grad_out).__name__
            )
            raise DataError(f"{owner}: backward() expected a list of {n} output gradients, got {got}")
        slots = list(self.output_slots)
        if getattr(ctx, "grad_at_logits", False):  # the gradient of the last activation's input
            slots[0] = next(entry[1][0] for entry in self.plan if slots[0] in entry[3])
        for i, (g, s) in enumerate(zip(gs, slots)):
            out = ctx.values[s]
            if g is None or not isinstance(out, np.ndarray):
                continue
            if getattr(g, "shape", None) != out.shape:
                which = f"output {i} ({self.outputs[i].node.layer.name!r})" if self.multi_out else "output"
                raise ShapeError(
                    f"{owner}: backward() expected the gradient of {which} of shape "
                    f"{format_shape(out.shape)}, got {format_shape(getattr(g, 'shape', None))}"
                )
            gs[i] = as_out_dtype(g, out.dtype)
        return gs
