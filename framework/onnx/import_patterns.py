"""Multi-node patterns read back as one layer: how exporters write activations ONNX lacks.

:func:`find_fusions` runs before :class:`~framework.onnx.importer.Importer`
walks the nodes. It recognises, by structure and constants:

- GELU below opset 20 (``Gelu`` is an operator from opset 20 on), as
  :func:`framework.onnx.convert_core.gelu` writes it: ``Mul(Mul(x, 0.5),
  Add(t, 1))`` with ``t = Erf(Mul(x, 1/sqrt 2))`` (``approximate="none"``) or
  ``t = Tanh(Mul(Add(x, Mul(Mul(Mul(x, x), x), 0.044715)), sqrt(2/pi)))``
  (``"tanh"``); ``torch.onnx``'s forms (``Div(x, sqrt 2)``, ``Pow(x, 3)``,
  ``Mul(Mul(x, Add(t, 1)), 0.5)``) are read too;
- Softplus with PyTorch's linear region, as
  :func:`framework.onnx.convert_core.softplus` writes it:
  ``Where(Greater(z, threshold), x, y)`` with ``y = Softplus(z)`` and
  ``z = x`` when ``beta = 1``, else ``z = Mul(x, beta)`` and
  ``y = Div(Softplus(z), beta)``; ``Div(Softplus(Mul(x, beta)), beta)``
  without the ``Where`` (what ``torch.onnx`` writes for ``Softplus(beta=...)``,
  dropping the threshold) is a Softplus that is never linear.

A match is kept only when the values between its nodes are read by no other
node and are not graph outputs; the layer is placed where the first of its
nodes stands. What does not match is read node by node as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framework.onnx.importer import Importer, make_layer

__all__ = ["Fusion", "find_fusions"]


@dataclass
class Fusion:
    """Several nodes (indices in the graph) that are one layer from ``source`` to ``output``."""

    members: tuple[int, ...]
    source: str
    output: str
    layer: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def place(self, imp: Importer, node: Any) -> Any:
        """The layer's output placeholder (``node`` is the first member, for messages).

        A ``threshold`` of ``None`` becomes the largest float of the model's
        dtype: ``beta x`` exceeds it for no finite input.
        """
        kwargs = dict(self.kwargs)
        if "threshold" in kwargs and kwargs["threshold"] is None:
            kwargs["threshold"] = float(np.finfo(imp.dtype).max)
        return make_layer(self.layer, **kwargs)(imp.tensor(self.source, node))


class _View:
    """Producers, consumers and scalar constants of the graph, by value name."""

    def __init__(self, imp: Importer) -> None:
        graph = imp.proto.graph
        self.onnx = imp.onnx
        self.nodes = list(graph.node)
        self.producer = {out: i for i, node in enumerate(self.nodes) for out in node.output if out}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for name in node.input:
                self.consumers.setdefault(name, []).append(i)
        self.outputs = {o.name for o in graph.output}
        self.initializers = {init.name: init for init in graph.initializer}

    def scalar(self, name: str) -> np.ndarray | None:
        """The one-element constant ``name`` (an initializer or a ``Constant`` node), else ``None``."""
        tensor = self.initializers.get(name)
        if tensor is None:
            i = self.producer.get(name)
            node = self.nodes[i] if i is not None else None
            if node is None or node.op_type != "Constant" or len(node.attribute) != 1:
                return None
            if node.attribute[0].name != "value":
                return None
            tensor = node.attribute[0].t
        if int(np.prod(tensor.dims)) != 1:
            return None
        return np.asarray(self.onnx.numpy_helper.to_array(tensor)).reshape(())

    def made_by(self, name: str, op: str) -> int | None:
        """The index of the ``op`` node producing ``name``, else ``None``."""
        i = self.producer.get(name)
        return i if i is not None and self.nodes[i].op_type == op else None

    def sole_user(self, name: str, op: str) -> int | None:
        """The index of the only node reading ``name``, if an ``op`` node (and ``name`` no graph output)."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.outputs or self.nodes[users[0]].op_type != op:
            return None
        return users[0]

    def with_constant(self, i: int | None, value: float, commutative: bool = True) -> str | None:
        """The other input of the binary node ``i`` when one input is the constant ``value``."""
        if i is None or len(self.nodes[i].input) != 2:
            return None
        a, b = self.nodes[i].input
        if _close(self.scalar(b), value):
            return str(a)
        if commutative and _close(self.scalar(a), value):
            return str(b)
        return None

    def out(self, i: int) -> str:
        return str(self.nodes[i].output[0])


def _close(constant: np.ndarray | None, value: float) -> bool:
    """Whether ``constant`` is ``value`` rounded to its dtype."""
    if constant is None or not np.issubdtype(constant.dtype, np.number):
        return False
    eps = np.finfo(constant.dtype).eps if np.issubdtype(constant.dtype, np.floating) else 0.0
    return bool(abs(float(constant) - value) <= 4 * eps * abs(value))


def _times_half_x(view: _View, t: int) -> tuple[str, str, list[int]] | None:
    """From ``t``'s node: ``x/2 * (1 + t)`` -> ``(x, output, nodes after t)``."""
    add = view.sole_user(view.out(t), "Add")
    if add is None or view.with_constant(add, 1.0) != view.out(t):
        return None
    mul = view.sole_user(view.out(add), "Mul")
    if mul is None:
        return None
    other = [name for name in view.nodes[mul].input if name != view.out(add)]
    if len(other) != 1:
        return None
    half = view.made_by(other[0], "Mul")
    x = view.with_constant(half, 0.5)
    if half is not None and x is not None:  # Mul(Mul(x, 0.5), 1 + t): this framework's exporter
        return x, view.out(mul), [add, half, mul]
    last = view.sole_user(view.out(mul), "Mul")  # Mul(Mul(x, 1 + t), 0.5): torch.onnx
    if last is None or view.with_constant(last, 0.5) != view.out(mul):
        return None
    return other[0], view.out(last), [add, mul, last]


def _gelu_erf(view: _View, erf: int) -> Fusion | None:
    scaled = view.nodes[erf].input[0]
    pre = view.made_by(scaled, "Mul")
    x = view.with_constant(pre, 1.0 / math.sqrt(2.0))
    if x is None:
        pre = view.made_by(scaled, "Div")
        x = view.with_constant(pre, math.sqrt(2.0), commutative=False)
    tail = _times_half_x(view, erf)
    if x is None or pre is None or tail is None or tail[0] != x:
        return None
    return Fusion((pre, erf, *tail[2]), x, tail[1], "GELU", {"approximate": "none"})


def _cube_of(view: _View, name: str) -> tuple[str, list[int]] | None:
    """``name`` as ``x*x*x`` (two ``Mul``) or ``Pow(x, 3)``: ``(x, nodes)``."""
    power = view.made_by(name, "Pow")
    if power is not None:
        x = view.with_constant(power, 3.0, commutative=False)
        return (x, [power]) if x is not None else None
    outer = view.made_by(name, "Mul")
    if outer is None or len(view.nodes[outer].input) != 2:
        return None
    a, b = view.nodes[outer].input
    for square_name, x in ((a, b), (b, a)):
        square = view.made_by(square_name, "Mul")
        if square is not None and list(view.nodes[square].input) == [x, x]:
            return str(x), [square, outer]
    return None


def _gelu_tanh(view: _View, tanh: int) -> Fusion | None:
    scale = view.made_by(view.nodes[tanh].input[0], "Mul")
    inner_name = view.with_constant(scale, math.sqrt(2.0 / math.pi))
    inner = view.made_by(inner_name, "Add") if inner_name is not None else None
    if scale is None or inner is None or len(view.nodes[inner].input) != 2:
        return None
    a, b = view.nodes[inner].input
    for x, term_name in ((a, b), (b, a)):
        term = view.made_by(term_name, "Mul")
        cube_name = view.with_constant(term, 0.044715)
        cube = _cube_of(view, cube_name) if cube_name is not None and term is not None else None
        tail = _times_half_x(view, tanh)
        if cube is not None and term is not None and cube[0] == x and tail is not None and tail[0] == x:
            members = (*cube[1], term, inner, scale, tanh, *tail[2])
            return Fusion(members, x, tail[1], "GELU", {"approximate": "tanh"})
    return None


def _softplus(view: _View, softplus: int) -> Fusion | None:
    z = view.nodes[softplus].input[0]
    y, post = view.out(softplus), []
    div = view.sole_user(y, "Div")
    divisor = view.scalar(view.nodes[div].input[1]) if div is not None else None
    if div is not None and divisor is not None and view.nodes[div].input[0] == y:
        y, post = view.out(div), [div]
    where = view.sole_user(y, "Where")
    if where is None and div is not None and divisor is not None and post:
        # no linear region (torch.onnx drops it): Softplus(beta x) / beta throughout
        scale = view.made_by(z, "Mul")
        x = view.with_constant(scale, float(divisor)) if scale is not None else None
        if scale is None or x is None:
            return None
        kwargs = {"beta": float(divisor), "threshold": None}  # None: never linear (see Fusion.place)
        return Fusion((scale, softplus, div), x, y, "Softplus", kwargs)
    if where is None or len(view.nodes[where].input) != 3 or view.nodes[where].input[2] != y:
        return None
    condition, x, _ = view.nodes[where].input
    greater = view.made_by(condition, "Greater")
    if greater is None or view.nodes[greater].input[0] != z:
        return None
    threshold = view.scalar(view.nodes[greater].input[1])
    if threshold is None:
        return None
    if x == z and not post:
        members, beta = [softplus, greater, where], 1.0
    else:
        scale = view.made_by(z, "Mul")
        if scale is None or divisor is None or view.with_constant(scale, float(divisor)) != x:
            return None
        members, beta = [scale, softplus, *post, greater, where], float(divisor)
    kwargs = {"beta": beta, "threshold": float(threshold)}
    return Fusion(tuple(members), str(x), view.out(where), "Softplus", kwargs)


#: The op of the node a pattern is looked for from, and its matcher.
_MATCHERS: dict[str, Callable[[_View, int], Fusion | None]] = {
    "Erf": _gelu_erf,
    "Tanh": _gelu_tanh,
    "Softplus": _softplus,
}


def _self_contained(view: _View, fusion: Fusion) -> bool:
    """Whether the values inside ``fusion`` are read by its own nodes only (and are no graph outputs)."""
    members = set(fusion.members)
    if len(members) != len(fusion.members):
        return False
    for i in members:
        for name in view.nodes[i].output:
            if name == fusion.output or not name:
                continue
            if name in view.outputs or any(user not in members for user in view.consumers.get(name, [])):
                return False
    return fusion.source not in {out for i in members for out in view.nodes[i].output}


def find_fusions(imp: Importer) -> dict[int, Fusion]:
    """Node index -> the :class:`Fusion` it belongs to, for every pattern found in ``imp``'s graph."""
    view = _View(imp)
    found: dict[int, Fusion] = {}
    for i, node in enumerate(view.nodes):
        matcher = _MATCHERS.get(node.op_type)
        fusion = matcher(view, i) if matcher is not None else None
        if fusion is None or not _self_contained(view, fusion) or any(m in found for m in fusion.members):
            continue
        for member in fusion.members:
            found[member] = fusion
    return found
