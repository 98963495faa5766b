"""Random functional-model graphs (DAGs) against PyTorch, in float64 (and float32).

A seeded generator grows a random functional ``Model`` and, node by node, the
PyTorch program computing the same function with the same weights (copied in
float64; one torch tensor per framework ``Parameter``, so shared layers, tied
weights and layers shared between a nested model and its parent are shared in
torch too and their gradients sum by autograd). The graphs mix: several inputs
(listed in a shuffled order, some reaching no output) and several outputs (an
intermediate tensor also used by other layers, an input as an output, one
tensor twice in the outputs); skip connections, fan-out and every merge layer
(``Add``, ``Subtract``, ``Multiply``, ``Average``, ``Maximum``, ``Minimum``,
``Concatenate`` on every axis of rank-2 and rank-3 tensors, the same tensor
twice in one merge); a layer called at several places; nested ``Sequential``
and functional models (themselves random, with one or two inputs and outputs)
called once or twice; ``Linear`` with every activation, standalone activation
layers, ``LayerNorm``, ``BatchNorm`` (momentum ``None`` too), ``Reshape``,
``Flatten``, ``Dropout``; nodes pinned with ``training=False``; frozen layers.

Each graph is checked for: ``predict`` and ``model(x, training=False)``; the
input and parameter gradients of a random weighted sum of the outputs (the
manual loop ``model(x)`` / ``model.backward(grads)``, some output gradients
``None``); a training-mode forward and backward (batch statistics, running
statistics); one SGD step through ``train_on_batch`` and one through ``fit``;
``save`` / ``load_model`` (identical predictions, one parameter per shared
weight, and a step after loading equal to torch's). Bad graphs and bad calls
must raise a ``FrameworkError`` naming the model or layer. Strict xfails mark
the bugs found outside this file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from support import requires_h5py

import framework
from framework import ConfigError, Input, Model, Parameter, Sequential
from framework.layers import (
    ELU,
    GELU,
    Add,
    Average,
    BatchNorm,
    Concatenate,
    Dropout,
    Flatten,
    Identity,
    LayerNorm,
    LeakyReLU,
    Linear,
    Maximum,
    Minimum,
    Multiply,
    ReLU,
    Reshape,
    Sigmoid,
    SiLU,
    Softplus,
    Subtract,
    Tanh,
)
from framework.models.serialize import deserialize_model, serialize_model

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL64 = {"rtol": 1e-9, "atol": 1e-10}

# -- the torch twin of every node kind ------------------------------------------------------------

#: Linear's ``activation=`` names and their torch functions.
LINEAR_ACTS: dict[Any, Callable[[Any], Any]] = {
    None: lambda t: t,
    "relu": F.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    "elu": F.elu,
    "leaky_relu": F.leaky_relu,
    "silu": F.silu,
    "softplus": F.softplus,
}

#: Standalone activation layers (a factory) and their torch functions.
ACT_LAYERS: list[tuple[Callable[[], Any], Callable[[Any], Any]]] = [
    (ReLU, F.relu),
    (Tanh, torch.tanh),
    (Sigmoid, torch.sigmoid),
    (SiLU, F.silu),
    (lambda: GELU(approximate="tanh"), lambda t: F.gelu(t, approximate="tanh")),
    (GELU, F.gelu),
    (lambda: LeakyReLU(0.2), lambda t: F.leaky_relu(t, 0.2)),
    (lambda: ELU(0.5), lambda t: F.elu(t, 0.5)),
    (lambda: Softplus(beta=2.0), lambda t: F.softplus(t, beta=2.0)),
    (Identity, lambda t: t),
]


def _first_wins(ts: list[Any], better: Callable[[Any, Any], Any]) -> Any:
    """Max / min giving the whole gradient to the first input holding it (Maximum's docstring).

    ``torch.maximum`` splits the gradient of a tie; ``torch.where`` gives it to one side.
    """
    out = ts[0]
    for t in ts[1:]:
        out = torch.where(better(t, out), t, out)
    return out


#: name: (framework factory, torch function of the list of inputs, most inputs)
MERGES: dict[str, tuple[Callable[[], Any], Callable[[list[Any]], Any], int]] = {
    "add": (Add, lambda ts: sum(ts[1:], ts[0]), 4),
    "subtract": (Subtract, lambda ts: ts[0] - ts[1], 2),
    "multiply": (Multiply, lambda ts: math.prod(ts[1:], start=ts[0]), 3),
    "average": (Average, lambda ts: sum(ts[1:], ts[0]) / len(ts), 4),
    "maximum": (Maximum, lambda ts: _first_wins(ts, torch.gt), 3),
    "minimum": (Minimum, lambda ts: _first_wins(ts, torch.lt), 3),
}


class Twin:
    """The torch copies of the framework's parameters and buffers, taken at one moment.

    ``register`` lists a layer the torch program reads; ``capture`` (re)copies
    every listed layer's parameters (leaf tensors, with gradients when
    trainable) and buffers; ``t(obj)`` is the copy of a Parameter or Buffer:
    one tensor per object, so shared and tied weights sum their gradients.
    """

    def __init__(self) -> None:
        self.layers: dict[int, Any] = {}
        self.tensors: dict[int, Any] = {}
        self.pairs: list[tuple[Any, Any]] = []  # (trainable Parameter, its torch tensor)
        self.frozen: list[tuple[Any, np.ndarray]] = []  # (frozen Parameter, its value at capture)
        self.calls: dict[int, int] = {}  # training-mode calls of each BatchNorm since the capture
        self.counts: dict[int, int] = {}  # num_batches_tracked of momentum=None BatchNorms

    def register(self, layer: Any) -> None:
        self.layers.setdefault(id(layer), layer)

    def capture(self) -> None:
        self.tensors, self.pairs, self.frozen, self.calls, self.counts = {}, [], [], {}, {}
        for layer in self.layers.values():
            for value in vars(layer).values():
                if (
                    not isinstance(value, (Parameter, framework.base.parameter.Buffer))
                    or id(value) in self.tensors
                ):
                    continue
                trainable = isinstance(value, Parameter) and value.trainable
                t = torch.tensor(np.array(value.data, dtype=np.float64), requires_grad=trainable)
                self.tensors[id(value)] = t
                if trainable:
                    self.pairs.append((value, t))
                elif isinstance(value, Parameter):
                    self.frozen.append((value, value.data.copy()))

    def t(self, obj: Any) -> Any:
        return None if obj is None else self.tensors[id(obj)]


@dataclass
class Sym:
    """One tensor of the graph being grown: its placeholder, sample shape and slot."""

    sym: Any
    shape: tuple[int, ...]
    tid: int


@dataclass
class Op:
    """One node on the torch side: ``outs = fn(ins, training)``."""

    fn: Callable[[list[Any], bool], list[Any]]
    ins: list[int]
    outs: list[int]
    pin: bool | None


@dataclass
class Shareable:
    """A layer that may be called again: ``spec`` says what its input must look like."""

    layer: Any
    fn: Callable[[list[Any], bool], list[Any]]
    spec: tuple[Any, ...]  # ("last", d) | ("full", shape) | ("model", [shapes], multi_in)
    kind: str


@dataclass
class Graph:
    """A generated functional model and the torch program computing the same function."""

    model: Any
    twin: Twin
    inputs: list[Sym]
    outputs: list[Sym]
    ops: list[Op]
    multi_in: bool
    multi_out: bool
    features: set[str] = field(default_factory=set)
    log: list[str] = field(default_factory=list)

    def torch_run(self, xs: list[Any], training: bool) -> list[Any]:
        env = {s.tid: x for s, x in zip(self.inputs, xs)}
        for op in self.ops:
            for tid, o in zip(
                op.outs, op.fn([env[i] for i in op.ins], training if op.pin is None else op.pin)
            ):
                env[tid] = o
        return [env[s.tid] for s in self.outputs]

    def sample(self, rng: np.random.Generator, n: int, dtype: Any = np.float64) -> list[np.ndarray]:
        return [rng.standard_normal((n, *s.shape)).astype(dtype) for s in self.inputs]

    def feed(self, xs: list[Any]) -> Any:
        return list(xs) if self.multi_in else xs[0]

    def listed(self, out: Any) -> list[Any]:
        return list(out) if self.multi_out else [out]

    def __repr__(self) -> str:  # what a failing test prints
        ins, outs = [s.tid for s in self.inputs], [s.tid for s in self.outputs]
        return "Graph(inputs={}, outputs={}):\n  {}".format(ins, outs, "\n  ".join(self.log))


class Builder:
    """Grows one random graph: framework placeholders and the torch program side by side."""

    def __init__(
        self, rng: np.random.Generator, twin: Twin, depth: int = 0, outer: list[Shareable] | None = None
    ):
        self.rng = rng
        self.twin = twin
        self.depth = depth
        self.tensors: list[Sym] = []
        self.inputs: list[Sym] = []
        self.ops: list[Op] = []
        self.consumed: set[int] = set()
        self.shared: list[Shareable] = []
        self.outer = outer or []  # the parent graph's layers, callable in this nested one too
        self.features: set[str] = set()
        self.log: list[str] = []

    # -- plumbing ------------------------------------------------------------------------------

    def _new(self, sym: Any) -> Sym:
        s = Sym(sym, tuple(int(d) for d in sym.shape[1:]), len(self.tensors))
        self.tensors.append(s)
        return s

    def input(self, shape: tuple[int, ...]) -> Sym:
        s = self._new(Input(shape))
        self.inputs.append(s)
        return s

    def call(self, layer: Any, ins: list[Sym], fn: Any, what: str, list_in: bool = False, pin: Any = None):
        """Call ``layer`` on ``ins`` (pinned to ``pin``); ``fn(torch inputs, training) -> torch outputs``."""
        self.twin.register(layer)
        out = layer([s.sym for s in ins] if list_in else ins[0].sym, training=pin)
        outs = [self._new(o) for o in (out if isinstance(out, list) else [out])]
        self.ops.append(Op(fn, [s.tid for s in ins], [s.tid for s in outs], pin))
        self.consumed.update(s.tid for s in ins)
        pinned = "" if pin is None else f" training={pin}"
        self.log.append(f"{[s.tid for s in outs]} = {what}({', '.join(str(s.tid) for s in ins)}){pinned}")
        return outs

    def pick(self) -> Sym:
        """A tensor made so far: mostly a recent one, sometimes an early one (skips, fan-out)."""
        k = len(self.tensors)
        return self.tensors[k - 1 - min(int(self.rng.exponential(2.0)), k - 1)]

    def random_shape(self) -> tuple[int, ...]:
        rng = self.rng
        if rng.random() < 0.25:
            return (int(rng.integers(2, 4)), int(rng.integers(2, 4)))
        return (int(rng.integers(2, 7)),)

    def adapt(self, x: Sym, shape: tuple[int, ...]) -> Sym:
        """``x`` turned into a tensor of sample shape ``shape`` by Flatten / Linear / Reshape nodes."""
        if x.shape == shape:
            return x
        if len(shape) == len(x.shape) == 2 and x.shape[0] == shape[0]:
            return self.linear(x, shape[1])  # Linear works on the last axis of (N, a, b)
        if len(x.shape) == 2:
            (x,) = self.call(Flatten(), [x], lambda ts, tr: [ts[0].flatten(1)], "Flatten")
        x = self.linear(x, math.prod(shape))
        if len(shape) == 2:
            fn = lambda ts, tr, s=shape: [ts[0].reshape(ts[0].shape[0], *s)]  # noqa: E731
            (x,) = self.call(Reshape(*shape), [x], fn, f"Reshape{shape}")
        return x

    # -- node kinds ----------------------------------------------------------------------------

    def linear(self, x: Sym, out: int | None = None) -> Sym:
        rng, tw = self.rng, self.twin
        out = out or int(rng.integers(2, 7))
        act = list(LINEAR_ACTS)[rng.integers(len(LINEAR_ACTS))]
        bias = bool(rng.random() < 0.8)
        layer = Linear(x.shape[-1], out, activation=act, bias=bias)
        same = [
            s.layer for s in self.shared if s.kind == "linear" and s.layer.weight.shape == layer.weight.shape
        ]
        if same and rng.random() < 0.3:  # tied weights: another layer's Parameter, its own bias
            layer.weight = same[0].weight
            self.features.add("tied weight")

        def fn(ts, training, layer=layer, act=act):
            return [LINEAR_ACTS[act](F.linear(ts[0], tw.t(layer.weight), tw.t(layer.bias)))]

        (y,) = self.call(layer, [x], fn, f"Linear({x.shape[-1]}, {out}, {act}, bias={bias})")
        self.shared.append(Shareable(layer, fn, ("last", x.shape[-1]), "linear"))
        return y

    def activation(self, x: Sym) -> Sym:
        make, tfn = ACT_LAYERS[self.rng.integers(len(ACT_LAYERS))]
        layer = make()
        (y,) = self.call(layer, [x], lambda ts, tr, tfn=tfn: [tfn(ts[0])], type(layer).__name__)
        return y

    def layer_norm(self, x: Sym) -> Sym:
        rng, tw = self.rng, self.twin
        shape = x.shape if len(x.shape) == 2 and rng.random() < 0.5 else x.shape[-1:]
        affine = bool(rng.random() < 0.8)
        layer = LayerNorm(shape, elementwise_affine=affine, bias=bool(rng.random() < 0.8))
        if affine:
            layer.weight.data[...] = rng.uniform(0.5, 1.5, layer.weight.shape)
            if layer.bias is not None:
                layer.bias.data[...] = rng.standard_normal(layer.bias.shape) * 0.1

        def fn(ts, training, layer=layer, shape=shape):
            return [F.layer_norm(ts[0], shape, tw.t(layer.weight), tw.t(layer.bias), layer.eps)]

        (y,) = self.call(layer, [x], fn, f"LayerNorm({shape}, affine={affine})")
        self.shared.append(Shareable(layer, fn, ("full", x.shape), "layer_norm"))
        return y

    def batch_norm(self, x: Sym) -> Sym:
        rng, tw = self.rng, self.twin
        c = x.shape[0]
        momentum = [0.1, 0.3, None][rng.integers(3)]
        affine = bool(rng.random() < 0.8)
        layer = BatchNorm(c, momentum=momentum, affine=affine)
        layer.running_mean.data[...] = rng.standard_normal(c) * 0.3
        layer.running_var.data[...] = rng.uniform(0.5, 2.0, c)
        if affine:
            layer.weight.data[...] = rng.uniform(0.5, 1.5, c)
            layer.bias.data[...] = rng.standard_normal(c) * 0.1

        def fn(ts, training, layer=layer):
            training = training and layer.trainable  # a frozen BatchNorm runs in inference mode (docs)
            tw.calls[id(layer)] = tw.calls.get(id(layer), 0) + int(training)
            if layer.momentum is not None:
                m = layer.momentum
            elif training:  # momentum None: the cumulative average, 1 / num_batches_tracked as torch
                m = 1.0 / (tw.counts.setdefault(id(layer), layer.num_batches_tracked) + tw.calls[id(layer)])
            else:
                m = 0.0
            rm, rv = tw.t(layer.running_mean), tw.t(layer.running_var)
            if not training:  # torch's backward would read the buffers as a later call leaves them
                rm, rv = rm.clone(), rv.clone()
            return [F.batch_norm(ts[0], rm, rv, tw.t(layer.weight), tw.t(layer.bias), training, m, layer.eps)]

        pin = False if rng.random() < 0.15 else None
        (y,) = self.call(layer, [x], fn, f"BatchNorm({c}, momentum={momentum}, affine={affine})", pin=pin)
        self.features.add("batchnorm" + (" pinned" if pin is not None else ""))
        if pin is None:  # a pinned call and a training call of one BatchNorm: see the xfail below
            self.shared.append(Shareable(layer, fn, ("full", x.shape), "batch_norm"))
        return y

    def dropout(self, x: Sym) -> Sym:
        if self.rng.random() < 0.3:  # an active Dropout pinned to inference: the identity in fit too
            self.features.add("dropout pinned")
            (y,) = self.call(Dropout(0.5), [x], lambda ts, tr: [ts[0]], "Dropout(0.5)", pin=False)
        else:
            (y,) = self.call(Dropout(0.0), [x], lambda ts, tr: [ts[0]], "Dropout(0)")
        return y

    def reshape(self, x: Sym) -> Sym:
        if len(x.shape) == 2:
            (y,) = self.call(Flatten(), [x], lambda ts, tr: [ts[0].flatten(1)], "Flatten")
            return y
        d = x.shape[0]
        divisors = [a for a in range(2, d) if d % a == 0]
        if not divisors:
            return self.linear(x)
        a = int(self.rng.choice(divisors))
        target = (a, d // a) if self.rng.random() < 0.5 else (-1, d // a)
        fn = lambda ts, tr, a=a: [ts[0].reshape(ts[0].shape[0], a, -1)]  # noqa: E731
        (y,) = self.call(Reshape(*target), [x], fn, f"Reshape{target}")
        return y

    def merge(self, x: Sym) -> Sym:
        rng = self.rng
        name = list(MERGES)[rng.integers(len(MERGES))]
        make, tfn, most = MERGES[name]
        k = 2 if most == 2 else int(rng.integers(2, most + 1))
        ins = [x] + [self.adapt(x if rng.random() < 0.15 else self.pick(), x.shape) for _ in range(k - 1)]
        ins = [ins[i] for i in rng.permutation(k)]
        if len({s.tid for s in ins}) < k:
            self.features.add("tensor twice in a merge")
        self.features.add(f"merge {name}")
        (y,) = self.call(make(), ins, lambda ts, tr, tfn=tfn: [tfn(ts)], name.title(), list_in=True)
        return y

    def concat(self, x: Sym) -> Sym:
        rng = self.rng
        rank = len(x.shape) + 1
        axis = int(rng.choice([1, -1] if rank == 2 else [1, 2, -1, -2]))
        pos = axis % rank
        ins = [x]
        for _ in range(int(rng.integers(1, 3))):
            other = x if rng.random() < 0.15 else self.pick()
            size = int(rng.integers(1, 5))
            if rank == 2:
                target = other.shape if len(other.shape) == 1 else (size,)
            elif pos == 1:
                ok = len(other.shape) == 2 and other.shape[1] == x.shape[1]
                target = other.shape if ok else (size, x.shape[1])
            else:
                ok = len(other.shape) == 2 and other.shape[0] == x.shape[0]
                target = other.shape if ok else (x.shape[0], size)
            ins.append(self.adapt(other, target))
        self.features.add(f"concat axis {axis} rank {rank}")
        fn = lambda ts, tr, axis=axis: [torch.cat(ts, dim=axis)]  # noqa: E731
        (y,) = self.call(Concatenate(axis=axis), ins, fn, f"Concatenate({axis})", list_in=True)
        return y

    def nested(self, x: Sym) -> Sym:
        """A nested Sequential, or a random functional model, called here (and maybe again later)."""
        rng, tw = self.rng, self.twin
        pin = False if rng.random() < 0.1 else None
        if pin is not None:
            self.features.add("nested pinned")
        if rng.random() < 0.4:
            hidden = int(rng.integers(2, 6))
            l1 = Linear(output_size=hidden, activation="tanh")  # input size inferred at the first call
            norm, l2 = LayerNorm(hidden), Linear(hidden, int(rng.integers(2, 6)))
            inner = Sequential([l1, norm, Dropout(0.0), l2])
            for layer in (l1, norm, l2):
                tw.register(layer)

            def fn(ts, training, l1=l1, l2=l2, norm=norm):
                h = torch.tanh(F.linear(ts[0], tw.t(l1.weight), tw.t(l1.bias)))
                h = F.layer_norm(h, norm.normalized_shape, tw.t(norm.weight), tw.t(norm.bias), norm.eps)
                return [F.linear(h, tw.t(l2.weight), tw.t(l2.bias))]

            self.features.add("nested sequential")
            (y,) = self.call(inner, [x], fn, "Sequential", pin=pin)
            if pin is None:
                self.shared.append(Shareable(inner, fn, ("full", x.shape), "sequential"))
            return y
        sub = Builder(rng, tw, self.depth + 1, outer=[s for s in self.shared if s.kind != "sequential"])
        sub.input(x.shape)
        if rng.random() < 0.4:
            sub.input(self.random_shape())
        sub.grow(int(rng.integers(2, 5)))
        graph = sub.finish(multi_out=bool(rng.random() < 0.3))
        self.features |= {f"nested: {f}" for f in graph.features} | {"nested functional"}
        shapes = [s.shape for s in graph.inputs]
        entry = Shareable(
            graph.model,
            lambda ts, tr, g=graph: g.torch_run(ts, tr),
            ("model", shapes, graph.multi_in),
            "model",
        )
        ins = [self.adapt(x if i == 0 else self.pick(), s) for i, s in enumerate(shapes)]
        outs = self.call(
            graph.model, ins, entry.fn, f"Model[{len(shapes)} -> {len(graph.outputs)}]", graph.multi_in, pin
        )
        if pin is None:
            self.shared.append(entry)
        return outs[int(rng.integers(len(outs)))]

    def reuse(self, x: Sym) -> Sym:
        """Call an existing layer (or nested model) again, on ``x`` adapted to its input."""
        rng = self.rng
        pool = self.shared + self.outer
        models = [s for s in pool if s.kind in ("model", "sequential")]
        if models and rng.random() < 0.5:
            pool = models
        entry = pool[rng.integers(len(pool))]
        if entry.kind == "model":
            shapes, list_in = entry.spec[1], entry.spec[2]
            args = [self.adapt(x if i == 0 else self.pick(), s) for i, s in enumerate(shapes)]
            self.features.add("nested model called twice")
            if any(entry is o for o in self.outer):
                self.features.add("parent layer in a nested model")
        else:
            spec = entry.spec
            list_in = False
            want = (spec[1],) if spec[0] == "last" else spec[1]
            args = [x if spec[0] == "last" and x.shape[-1] == spec[1] else self.adapt(x, want)]
            self.features.add(
                "parent layer in a nested model" if any(entry is o for o in self.outer) else "shared layer"
            )
        outs = self.call(
            entry.layer, args, entry.fn, f"again {entry.layer.name or type(entry.layer).__name__}", list_in
        )
        return outs[int(rng.integers(len(outs)))]

    # -- growth --------------------------------------------------------------------------------

    WEIGHTS: ClassVar[dict[str, float]] = {
        "linear": 3, "activation": 1.5, "merge": 2, "concat": 1.2, "reuse": 1.5, "layer_norm": 0.8,
        "batch_norm": 0.8, "dropout": 0.5, "reshape": 0.8, "nested": 0.8,
    }  # fmt: skip

    def grow(self, steps: int) -> None:
        names = [k for k in self.WEIGHTS if k != "nested" or self.depth == 0]
        p = np.array([self.WEIGHTS[k] for k in names], float)
        for _ in range(steps):
            kind = names[self.rng.choice(len(names), p=p / p.sum())]
            if kind == "reuse" and not (self.shared or self.outer):
                kind = "linear"
            getattr(self, kind)(self.pick())

    def freeze_some(self) -> None:
        for entry in self.shared:
            if entry.kind != "sequential" and self.rng.random() < 0.08:
                entry.layer.trainable = False
                self.features.add(f"frozen {entry.kind}")

    def finish(self, multi_out: bool | None = None) -> Graph:
        rng = self.rng
        inputs_ids = {s.tid for s in self.inputs}
        leaves = [s for s in self.tensors if s.tid not in self.consumed and s.tid not in inputs_ids]
        outputs = leaves[-3:] or [self.tensors[-1]]
        if rng.random() < 0.3:
            outputs.append(self.pick())
            self.features.add("intermediate output")
        if rng.random() < 0.15:
            outputs.append(self.inputs[rng.integers(len(self.inputs))])
            self.features.add("input as an output")
        if rng.random() < 0.15:
            outputs.append(outputs[rng.integers(len(outputs))])
            self.features.add("tensor twice in the outputs")
        outputs = [outputs[i] for i in rng.permutation(len(outputs))]
        if multi_out is None:
            multi_out = len(outputs) > 1 or bool(rng.random() < 0.3)
        outputs = outputs if multi_out else outputs[:1]
        reach = self._ancestors(outputs)
        if any(s.tid not in reach for s in self.inputs):
            self.features.add("unused input")
        inputs = [self.inputs[i] for i in rng.permutation(len(self.inputs))]
        multi_in = len(inputs) > 1 or bool(rng.random() < 0.3)
        model = Model(
            [s.sym for s in inputs] if multi_in else inputs[0].sym,
            [s.sym for s in outputs] if multi_out else outputs[0].sym,
        )
        ops = [op for op in self.ops if any(t in reach for t in op.outs)]
        return Graph(model, self.twin, inputs, outputs, ops, multi_in, multi_out, self.features, self.log)

    def _ancestors(self, outputs: list[Sym]) -> set[int]:
        producer = {t: op for op in self.ops for t in op.outs}
        seen: set[int] = set()
        stack = [s.tid for s in outputs]
        while stack:
            t = stack.pop()
            if t not in seen:
                seen.add(t)
                stack.extend(producer[t].ins if t in producer else [])
        return seen


#: The features of each graph ``random_graph`` built in this process, by its arguments (it is deterministic).
FEATURES: dict[tuple[int, str, bool], frozenset[str]] = {}


def random_graph(seed: int, dtype: str = "float64", freeze: bool = True) -> Graph:
    """The graph of ``seed``: 1-3 inputs, 3-10 growth steps (more nodes through adapters and nesting)."""
    rng = np.random.default_rng(seed)
    old = framework.get_default_dtype()
    framework.set_default_dtype(dtype)
    framework.set_seed(seed)
    try:
        b = Builder(rng, Twin())
        for _ in range(int(rng.choice([1, 1, 2, 3]))):
            b.input(b.random_shape())
        b.grow(int(rng.integers(3, 11)))
        if freeze:
            b.freeze_some()
        graph = b.finish()
    finally:
        framework.set_default_dtype(old)
    FEATURES[seed, dtype, freeze] = frozenset(graph.features)
    return graph


def graph_features(seed: int) -> frozenset[str]:
    """The features of ``random_graph(seed)``: as a test of this process built it, or built now."""
    if (seed, "float64", True) not in FEATURES:
        random_graph(seed)
    return FEATURES[seed, "float64", True]


# -- running both sides ---------------------------------------------------------------------------


def _close(mine: Any, ref: Any, what: str, graph: Graph, tol: dict[str, float] = TOL64) -> None:
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else ref
    np.testing.assert_allclose(mine, ref, err_msg=f"{what}\n{graph!r}", **tol)


def _torch_pass(graph: Graph, xs: list[np.ndarray], training: bool, grads: list[Any] | None = None):
    """Capture the weights and run torch (and backward of ``sum(out_i * g_i)`` with ``grads``).

    Returns the torch outputs and the input leaves (their ``.grad``).
    """
    graph.twin.capture()
    txs = [torch.tensor(np.asarray(x, np.float64), requires_grad=True) for x in xs]
    outs = graph.torch_run(txs, training)
    if grads is not None:
        total = sum((t * torch.tensor(g)).sum() for t, g in zip(outs, grads) if g is not None)
        if isinstance(total, torch.Tensor) and total.requires_grad:
            total.backward()
    return outs, txs


def _grad(t: Any, like: np.ndarray) -> np.ndarray:
    return np.zeros_like(like, dtype=np.float64) if t.grad is None else t.grad.numpy()


def _check_backward(graph: Graph, xs, grads, dx, tol=TOL64, txs=None) -> None:
    dx = dx if graph.multi_in else [dx]
    assert len(dx) == len(xs)
    for i, (d, t) in enumerate(zip(dx, txs)):
        assert d.shape == xs[i].shape
        _close(d, _grad(t, xs[i]), f"dL/d input {i}", graph, tol)
    for p, t in graph.twin.pairs:
        _close(p.grad, _grad(t, p.data), f"dL/d parameter of shape {p.data.shape}", graph, tol)


def _check_running_stats(graph: Graph, model: Any = None, tol=TOL64) -> None:
    """The running statistics of ``model`` (default the graph's; matched by name) against torch's.

    A BatchNorm called at several places is left out: the order of its updates is another test's subject.
    """
    twin = graph.twin
    once = {
        id(b): layer
        for key, layer in twin.layers.items()
        if isinstance(layer, BatchNorm) and twin.calls.get(key, 0) <= 1
        for b in (layer.running_mean, layer.running_var)
    }
    original = dict(graph.model.named_buffers())
    for name, buffer in original.items() if model is None else model.named_buffers():
        if id(original[name]) in once:
            _close(buffer.data, twin.t(original[name]), name, graph, tol)
    if model is None:
        for key, layer in twin.layers.items():
            if isinstance(layer, BatchNorm) and layer.momentum is None and twin.calls.get(key, 0) == 1:
                assert layer.num_batches_tracked == twin.counts[key] + 1, graph


def _random_grads(graph: Graph, outs: list[np.ndarray], rng: np.random.Generator) -> list[Any]:
    """One random gradient per output; a multi-output model's gradients are sometimes ``None`` (docs)."""
    grads: list[Any] = [rng.standard_normal(o.shape) for o in outs]
    if graph.multi_out and len(grads) > 1:
        for i in range(len(grads)):
            if rng.random() < 0.2:
                grads[i] = None
    return grads


# -- forward and backward, inference and training -------------------------------------------------

# The seeds of each test: half of a range (eval 0-109, train 1000-1069, step 2000-2039, save 3000-3039,
# float32 4000-4029 and 5000-5029, config 6000-6039, bad calls 7000-7024), chosen to reach every graph
# feature (``Graph.features``) and every branch of framework/ and plugins/ the whole range reached with
# that test (measured with coverage: a greedy cover, then the first seeds of the range).
EVAL_SEEDS = [*range(0, 52), 55, 56, 59]
TRAIN_SEEDS = [*range(1000, 1028), 1029, 1030, 1032, 1035, 1041, 1052, 1063]


@pytest.mark.parametrize("seed", EVAL_SEEDS)
def test_inference_forward_and_backward_match_torch(seed, float64):
    graph = random_graph(seed)
    model = graph.model
    rng = np.random.default_rng(seed + 7)
    xs = graph.sample(rng, 5)
    predicted = graph.listed(model.predict(graph.feed(xs), batch_size=2))  # batches of 2, 2 and 1
    called = graph.listed(model(graph.feed(xs), training=False))
    grads = _random_grads(graph, called, rng)
    touts, txs = _torch_pass(graph, xs, False, grads)
    assert len(predicted) == len(called) == len(touts) == len(graph.outputs)
    for i, (p, c, t) in enumerate(zip(predicted, called, touts)):
        _close(c, t, f"model(x, training=False) output {i}", graph)
        _close(p, t, f"predict output {i}", graph)
    model.zero_grad()
    outs = graph.listed(model(graph.feed(xs), training=False))
    kept = [a.copy() for a in [*xs, *outs, *(g for g in grads if g is not None)]]
    _check_backward(graph, xs, grads, model.backward(grads if graph.multi_out else grads[0]), txs=txs)
    # nothing the caller holds was written into: inputs, returned outputs, the gradients passed in
    for before, now in zip(kept, [*xs, *outs, *(g for g in grads if g is not None)]):
        np.testing.assert_array_equal(now, before)


@pytest.mark.parametrize("seed", TRAIN_SEEDS)
def test_training_forward_backward_and_running_statistics_match_torch(seed, float64):
    graph = random_graph(seed)
    model = graph.model
    rng = np.random.default_rng(seed + 7)
    xs = graph.sample(rng, 6)
    grads = [rng.standard_normal((6, *s.shape)) for s in graph.outputs]
    touts, txs = _torch_pass(graph, xs, True, grads)
    model.zero_grad()
    outs = graph.listed(model(graph.feed(xs), training=True))
    for i, (o, t) in enumerate(zip(outs, touts)):
        _close(o, t, f"training output {i}", graph)
    kept = [a.copy() for a in [*xs, *outs, *grads]]
    _check_backward(graph, xs, grads, model.backward(grads if graph.multi_out else grads[0]), txs=txs)
    for before, now in zip(kept, [*xs, *outs, *grads]):
        np.testing.assert_array_equal(now, before)
    _check_running_stats(graph)
    assert all(layer.training for layer in model.modules())  # the call's mode, not the flags


# -- one SGD step through train_on_batch and fit; save / load ------------------------------------

STEP_SEEDS = [*range(2000, 2009), 2013, 2017, 2018, 2020, 2021, 2022, 2026, 2032, 2033, 2034, 2036]
LR = 0.05


def _torch_sgd_step(
    graph: Graph, xs: list[np.ndarray], ys: list[np.ndarray], batch: int | None = None
) -> float:
    """From the framework's current weights, SGD in torch on the summed MSE of every output.

    One step on the whole of ``xs``, or one step per ``batch`` rows in order
    (what ``fit(shuffle=False)`` does); returns the mean of the batch losses.
    """
    graph.twin.capture()
    n = len(xs[0]) if xs else len(ys[0])
    batch = batch or n
    losses = []
    for start in range(0, n, batch):
        rows = slice(start, start + batch)
        touts = graph.torch_run([torch.tensor(x[rows]) for x in xs], True)
        loss = sum(F.mse_loss(t, torch.tensor(y[rows])) for t, y in zip(touts, ys))
        if loss.requires_grad:
            loss.backward()
        with torch.no_grad():
            for _, t in graph.twin.pairs:
                if t.grad is not None:
                    t -= LR * t.grad
                    t.grad = None
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


def _check_step(graph: Graph, loss: float, ref: float, label: str, model: Any = None) -> None:
    """The loss and every parameter after a step (of ``model``, matched by name) against torch's step."""
    assert math.isclose(loss, ref, rel_tol=1e-10, abs_tol=1e-12), (label, loss, ref, graph)
    model = model or graph.model
    original = dict(graph.model.named_parameters())
    torch_of = {id(p): t for p, t in graph.twin.pairs}
    for name, p in original.items() if model is graph.model else model.named_parameters():
        mine = original[name]
        if id(mine) in torch_of:
            _close(p.data, torch_of[id(mine)], f"{label}: {name}", graph)
        else:  # frozen: not moved
            before = next(v for q, v in graph.twin.frozen if q is mine)
            np.testing.assert_array_equal(p.data, before, err_msg=f"{label}: frozen {name}")
    _check_running_stats(graph, None if model is graph.model else model)


@pytest.mark.parametrize("seed", STEP_SEEDS)
def test_sgd_steps_through_train_on_batch_and_fit_match_torch(seed, float64):
    graph = random_graph(seed)
    model = graph.model
    rng = np.random.default_rng(seed + 7)
    xs = graph.sample(rng, 6)
    ys = [rng.standard_normal((6, *s.shape)) for s in graph.outputs]
    target = ys if graph.multi_out else ys[0]
    model.compile(
        optimizer=framework.optimizers.get("sgd", lr=LR), loss=["mse"] * len(ys) if graph.multi_out else "mse"
    )
    ref = _torch_sgd_step(graph, xs, ys)
    _check_step(graph, float(model.train_on_batch(graph.feed(xs), target)), ref, "train_on_batch")
    ref = _torch_sgd_step(graph, xs, ys, batch=3)
    history = model.fit(graph.feed(xs), target, epochs=1, batch_size=3, shuffle=False, verbose=0)
    _check_step(graph, history.history["loss"][0], ref, "fit, two batches of 3")
    assert not any(layer.training for layer in model.modules())  # fit leaves inference mode (Keras)


CROSS_SHARING = "used both in"  # the refusal of a layer shared by a parent graph and a nested model


def _save_case(seed: int) -> Any:
    return seed


def _crossed(model: Any) -> bool:
    """Whether one layer sits in two different models of the tree (a parent and a nested one)."""
    owners: dict[int, set[int]] = {}

    def visit(owner: Any) -> None:
        for child in owner.children():
            owners.setdefault(id(child), set()).add(id(owner))
            if isinstance(child, Model):
                visit(child)

    visit(model)
    return any(len(o) > 1 for o in owners.values())


SAVE_SEEDS = [_save_case(seed) for seed in [*range(3000, 3013), 3024, 3026, 3028, 3031, 3033, 3035, 3036]]


@requires_h5py
@pytest.mark.parametrize("seed", SAVE_SEEDS)
def test_save_and_load_keep_predictions_sharing_and_the_next_step(seed, float64, tmp_path: Path):
    graph = random_graph(seed)
    model = graph.model
    rng = np.random.default_rng(seed + 7)
    xs = graph.sample(rng, 6)
    ys = [rng.standard_normal((6, *s.shape)) for s in graph.outputs]
    target = ys if graph.multi_out else ys[0]
    model.compile(
        optimizer=framework.optimizers.get("sgd", lr=LR), loss=["mse"] * len(ys) if graph.multi_out else "mse"
    )
    model.train_on_batch(graph.feed(xs), target)  # running statistics and weights moved from their init
    if _crossed(model):  # a documented limitation: refused before anything is written
        with pytest.raises(ConfigError, match=CROSS_SHARING):
            model.save(tmp_path / "graph.h5")
        assert not list(tmp_path.iterdir())
        return
    model.save(tmp_path / "graph.h5")
    loaded = framework.load_model(tmp_path / "graph.h5")
    assert loaded.count_params() == model.count_params()
    assert len(loaded.parameters()) == len(model.parameters())  # a shared weight is still one Parameter
    assert [k for k, _ in loaded.named_parameters()] == [k for k, _ in model.named_parameters()]
    assert [p.trainable for p in loaded.parameters()] == [p.trainable for p in model.parameters()]
    for mine, back in zip(
        graph.listed(model.predict(graph.feed(xs))), graph.listed(loaded.predict(graph.feed(xs)))
    ):
        np.testing.assert_array_equal(back, mine)
    ref = _torch_sgd_step(graph, xs, ys)  # from the saved weights and running statistics
    _check_step(graph, float(loaded.train_on_batch(graph.feed(xs), target)), ref, "after load", loaded)


# -- float32 models, inputs of another dtype, evaluate and from_config ----------------------------

F32_SEEDS = [4000, 4001, 4002, 4005, 4006, 4009, 4011, 4013, 4015, 4017, 4019, 4020, 4022, 4025, 4029]
F32_DATA_SEEDS = [5002, 5004, 5005, 5010, 5012, 5014, 5015, 5016, 5020, 5021, 5023, 5025, 5026, 5027, 5029]


def _tol32(ref: Any) -> dict[str, float]:
    scale = float(np.max(np.abs(ref.detach().numpy()))) if ref.numel() else 1.0
    return {"rtol": 2e-4, "atol": 2e-5 * (1.0 + scale)}


@pytest.mark.parametrize("seed", F32_SEEDS)
def test_float32_graph_matches_torch_in_float64_to_float32_precision(seed):
    graph = random_graph(seed, "float32")
    model = graph.model
    assert model.dtype == np.float32
    rng = np.random.default_rng(seed + 7)
    xs = graph.sample(rng, 5)  # float64 data: cast once at the model's edge
    outs = graph.listed(model(graph.feed(xs), training=False))
    grads = [rng.standard_normal(o.shape).astype(np.float32) for o in outs]
    touts, txs = _torch_pass(graph, [x.astype(np.float32) for x in xs], False, grads)
    for i, (o, t) in enumerate(zip(outs, touts)):
        assert o.dtype == np.float32, f"output {i} is {o.dtype}"
        _close(o, t, f"float32 output {i}", graph, _tol32(t))
    for i, (p, t) in enumerate(zip(graph.listed(model.predict(graph.feed(xs))), touts)):
        assert p.dtype == np.float32
        _close(p, t, f"float32 predict {i}", graph, _tol32(t))
    model.zero_grad()
    model(graph.feed(xs), training=False)
    dx = model.backward(grads if graph.multi_out else grads[0])
    for i, (d, t) in enumerate(zip(dx if graph.multi_in else [dx], txs)):
        assert d.dtype == np.float32
        ref = torch.zeros_like(t) if t.grad is None else t.grad
        _close(d, ref, f"float32 dL/d input {i}", graph, _tol32(ref))
    for p, t in graph.twin.pairs:
        assert p.grad.dtype == np.float32
        ref = torch.zeros_like(t) if t.grad is None else t.grad
        _close(p.grad, ref, f"float32 dL/d parameter {p.data.shape}", graph, _tol32(ref))


@pytest.mark.parametrize("seed", F32_DATA_SEEDS)
def test_float32_data_in_a_float64_graph_and_evaluate_match_torch(seed, float64):
    graph = random_graph(seed)
    model = graph.model
    rng = np.random.default_rng(seed + 7)
    xs = graph.sample(rng, 7, np.float32)
    ys = [rng.standard_normal((7, *s.shape)) for s in graph.outputs]
    touts, _ = _torch_pass(graph, xs, False)
    for i, (o, t) in enumerate(zip(graph.listed(model.predict(graph.feed(xs), batch_size=3)), touts)):
        assert o.dtype == np.float64
        _close(o, t, f"predict of float32 data, output {i}", graph)
    model.compile(optimizer="sgd", loss=["mse"] * len(ys) if graph.multi_out else "mse")
    result = model.evaluate(graph.feed(xs), ys if graph.multi_out else ys[0], batch_size=7, verbose=0)
    ref = sum(float(F.mse_loss(t.detach(), torch.tensor(y))) for t, y in zip(touts, ys))
    assert math.isclose(result["loss"], ref, rel_tol=1e-10), (result, ref, graph)


CONFIG_SEEDS = [
    _save_case(seed) for seed in [*range(6000, 6008), 6014, 6021, 6023, 6028, 6029, 6030, *range(6033, 6039)]
]
BAD_CALL_SEEDS = [7001, 7002, 7003, 7004, 7006, 7007, 7010, 7012, 7013, 7016, 7018, 7021, 7022, 7023]


@pytest.mark.parametrize("seed", CONFIG_SEEDS)
def test_serialize_model_and_set_weights_rebuild_the_same_function_and_sharing(seed, float64):
    """``deserialize_model(serialize_model(m))`` (the config ``load_model`` reads; it carries the ties)."""
    graph = random_graph(seed)
    model = graph.model
    if _crossed(model):  # refused, not rebuilt as two layers
        with pytest.raises(ConfigError, match=CROSS_SHARING):
            serialize_model(model)
        return
    twin = deserialize_model(serialize_model(model))
    assert twin.get_config() == model.get_config()
    assert twin.count_params() == model.count_params()
    assert len(twin.parameters()) == len(model.parameters())
    twin.set_weights(model.get_weights())
    xs = graph.sample(np.random.default_rng(seed), 4)
    for mine, back in zip(
        graph.listed(model.predict(graph.feed(xs))), graph.listed(twin.predict(graph.feed(xs)))
    ):
        np.testing.assert_array_equal(back, mine)


# -- bad calls of random graphs -------------------------------------------------------------------


@pytest.mark.parametrize("seed", BAD_CALL_SEEDS)
def test_bad_calls_raise_framework_errors_naming_expected_and_actual(seed, float64):
    graph = random_graph(seed)
    model = graph.model
    rng = np.random.default_rng(seed)
    xs = graph.sample(rng, 4)
    n_in = len(graph.inputs)
    if n_in > 1:  # a model of a list of one input: see the xfail below
        for wrong in (xs[:-1], [*xs, xs[0]]):
            with pytest.raises(framework.DataError, match=rf"takes {n_in} inputs.*{len(wrong)}"):
                model.predict(wrong)
            with pytest.raises(framework.DataError, match=rf"takes {n_in} inputs.*{len(wrong)}"):
                model(wrong)
        with pytest.raises(framework.DataError, match="different lengths"):
            model.predict([xs[0][:3], *xs[1:]])
    bad = [x[..., :-1] for x in xs]  # every sample size is >= 2
    first = graph.inputs[0].sym.node.layer.name
    with pytest.raises(
        framework.ShapeError, match=rf"'{first}'.*\(None, {', '.join(map(str, graph.inputs[0].shape))}\)"
    ):
        model.predict(graph.feed(bad))
    outs = graph.listed(model(graph.feed(xs)))
    if graph.multi_out:
        with pytest.raises(
            framework.DataError, match=rf"{len(outs)} output gradients, got a list of {len(outs) - 1}"
        ):
            model.backward([np.ones_like(o) for o in outs[:-1]])
    wrong_grads = [np.ones((5, *o.shape[1:])) for o in outs]
    with pytest.raises(framework.ShapeError, match=r"\(4, .*got \(5, "):
        model.backward(wrong_grads if graph.multi_out else wrong_grads[0])
    model.compile(optimizer="sgd", loss=["mse"] * len(outs) if graph.multi_out else "mse")
    ys = [np.zeros_like(o) for o in outs]
    with pytest.raises(framework.DataError, match="x has 4 samples, y has 3"):
        model.train_on_batch(graph.feed(xs), [y[:3] for y in ys] if graph.multi_out else ys[0][:3])
    if graph.multi_out:
        with pytest.raises(framework.DataError, match=rf"{len(outs)} outputs, got {len(outs) - 1}"):
            model.train_on_batch(graph.feed(xs), ys[:-1])


def test_the_seeds_cover_every_graph_feature():
    """The generator still produces every feature this file claims to test (over the eval and step seeds)."""
    seen: set[str] = set()
    for seed in [*EVAL_SEEDS, *TRAIN_SEEDS, *STEP_SEEDS]:
        seen |= {f.removeprefix("nested: ") for f in graph_features(seed)}
    wanted = {
        "batchnorm", "batchnorm pinned", "dropout pinned", "nested pinned", "frozen linear", "frozen model",
        "frozen batch_norm", "frozen layer_norm", "tied weight", "shared layer", "nested sequential",
        "nested functional", "nested model called twice", "parent layer in a nested model", "unused input",
        "intermediate output", "input as an output", "tensor twice in the outputs", "tensor twice in a merge",
        *(f"merge {name}" for name in MERGES),
        *(f"concat axis {a} rank 2" for a in (1, -1)), *(f"concat axis {a} rank 3" for a in (1, 2, -1, -2)),
    }  # fmt: skip
    assert wanted <= seen, wanted - seen


# -- the bugs, each in its smallest graph ---------------------------------------------------------


def test_a_parameter_free_nested_model_keeps_the_float64_of_its_parent(rng):
    framework.set_default_dtype("float64")
    try:
        i = Input((3,))
        inner = Model(i, Tanh()(i), name="inner")  # no parameters
        a = Input((3,))
        lin = Linear(3, 3)
        model = Model(a, inner(lin(a)))
    finally:
        framework.set_default_dtype("float32")  # e.g. load_model of a float64 file in a float32 session
    x = rng.standard_normal((4, 3))
    out = model.predict(x)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, np.tanh(x @ lin.weight.data.T + lin.bias.data), rtol=1e-13, atol=1e-15)


def test_dgamma_of_a_pinned_batchnorm_call_uses_the_statistics_of_its_forward(float64, rng):
    a, b = Input((3,)), Input((3,))
    bn = BatchNorm(3)
    bn.running_mean.data[...] = [0.5, -1.0, 2.0]
    bn.running_var.data[...] = [2.0, 0.5, 1.5]
    mean, var = bn.running_mean.data.copy(), bn.running_var.data.copy()
    model = Model([a, b], [bn(a, training=False), bn(b)])  # the pinned call runs first
    xa, xb = rng.standard_normal((5, 3)), rng.standard_normal((5, 3)) * 3 + 1
    g = rng.standard_normal((5, 3))
    model.zero_grad()
    model([xa, xb], training=True)
    da, _ = model.backward([g, None])
    np.testing.assert_allclose(
        da, g * bn.weight.data / np.sqrt(var + bn.eps), rtol=1e-12
    )  # (this part holds)
    np.testing.assert_allclose(bn.weight.grad, (g * (xa - mean) / np.sqrt(var + bn.eps)).sum(0), rtol=1e-12)


@requires_h5py
def test_a_layer_in_a_parent_graph_and_in_a_nested_model_is_refused_at_save(tmp_path: Path, rng):
    """A nested model's config holds its layers by value: the sharing would be rebuilt as two layers
    (20 parameters -> 32) and the file, weights written once, would not load. Refused before writing,
    so a previous checkpoint at the path stays whole."""
    shared = Linear(3, 3, name="shared")
    a = Input((3,))
    i = Input((3,))
    inner = Model(i, Linear(3, 2)(shared(i)), name="inner")
    model = Model(a, inner(shared(a)))
    assert model.count_params() == 12 + 8
    with pytest.raises(ConfigError, match=r"'shared'.*used both in .* and in the nested model 'inner'"):
        serialize_model(model)
    with pytest.raises(ConfigError, match=CROSS_SHARING):
        model.get_config()
    path = tmp_path / "m.h5"
    path.write_bytes(b"previous")
    with pytest.raises(ConfigError, match=CROSS_SHARING):
        model.save(path)
    assert path.read_bytes() == b"previous"
    i2 = Input((3,))
    other = Model(i2, Linear(3, 3)(shared(i2)), name="other")  # two nested models sharing it: refused too
    b = Input((3,))
    with pytest.raises(ConfigError, match=CROSS_SHARING):
        Model(b, [inner(b), other(b)]).get_config()
    x = rng.standard_normal((2, 3)).astype(np.float32)
    assert model.predict(x).shape == (2, 2)  # the model itself works


@pytest.mark.parametrize(
    "make", [lambda: Dropout(0.2), Identity, Flatten, Add], ids=["Dropout", "Identity", "Flatten", "Add"]
)
def test_a_shape_agnostic_layer_is_reusable_on_another_width(make, float64, rng):
    layer = make()
    a, b = Input((4,)), Input((6,))
    ya, yb = (layer([t, t]) if isinstance(layer, Add) else layer(t) for t in (a, b))
    model = Model([a, b], [ya, yb])
    xa, xb = rng.standard_normal((2, 4)), rng.standard_normal((2, 6))
    factor = 2.0 if isinstance(layer, Add) else 1.0
    for out, x in zip(model.predict([xa, xb]), (xa, xb)):
        np.testing.assert_array_equal(out, factor * x)


def test_a_shared_batchnorm_updates_its_running_statistics_in_call_order(float64, rng):
    a = Input((3,))
    bn, first, later = BatchNorm(3), Linear(3, 3), Linear(3, 3)
    h1 = bn(a)  # call 1
    h2 = bn(first(a))  # call 2
    model = Model(a, [h2, later(h1)])  # call 2's branch listed first
    x = rng.standard_normal((8, 3))
    model(x, training=True)
    ref = torch.nn.BatchNorm1d(3).double()
    tx = torch.tensor(x)
    ref(tx)
    ref(F.linear(tx, torch.tensor(first.weight.data), torch.tensor(first.bias.data)))
    np.testing.assert_allclose(bn.running_mean.data, ref.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.data, ref.running_var.numpy(), rtol=1e-12)


@requires_h5py
def test_the_call_order_survives_save_and_load(float64, rng, tmp_path: Path):
    """The rebuilt graph runs its calls in the saved order: the shared BatchNorm's statistics move as
    in the original model (the listing groups a layer's calls, so replaying by listing would not)."""
    a = Input((3,))
    bn, first, later = BatchNorm(3), Linear(3, 3), Linear(3, 3)
    h1 = bn(a)
    h2 = bn(first(a))
    model = Model(a, [h2, later(h1)])
    model.save(tmp_path / "m.h5")
    loaded = framework.load_model(tmp_path / "m.h5")
    x = rng.standard_normal((8, 3))
    model(x, training=True)
    loaded(x, training=True)
    for got, want in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert loaded.get_config() == model.get_config()


@pytest.mark.parametrize("order", [-1, 1.5, True, "0"])
def test_a_malformed_call_order_in_a_config_is_refused(order, float64):
    from framework.errors import CheckpointError
    from framework.saving.validation import check_call_arguments

    a = Input((3,))
    config = serialize_model(Model(a, Linear(3, 2)(a)))
    next(e for e in config["config"]["layers"] if e["inbound_nodes"])["inbound_nodes"][0]["order"] = order
    with pytest.raises(CheckpointError, match="order must be an integer >= 0"):
        check_call_arguments(config)


def _two_input_net():
    a, b = Input((3,), name="a"), Input((2,), name="b")
    return Model([a, b], [Linear(3, 1)(a), Linear(2, 1)(b)], name="net")


@pytest.mark.parametrize("call", ["call", "predict"])
def test_a_wrong_number_of_inputs_names_the_model(call):
    model = _two_input_net()
    run = model if call == "call" else model.predict
    with pytest.raises(framework.DataError, match=r"'net'.*takes 2 inputs.*1"):
        run([np.ones((2, 3), np.float32)])


@pytest.mark.parametrize("call", ["call", "predict"])
def test_two_arrays_for_a_list_of_one_input_is_a_data_error(call, rng):
    a = Input((5,), name="a")
    model = Model([a], Linear(5, 1)(a))
    x = rng.standard_normal((4, 5)).astype(np.float32)
    run = model if call == "call" else model.predict
    with pytest.raises(framework.DataError, match=r"1 input.*2"):
        run([x, x])
