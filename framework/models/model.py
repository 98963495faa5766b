"""``Model`` and ``Sequential``: layers assembled into a trainable network.

Three ways to build a model, all trained the same way (``compile`` / ``fit``):

- ``Sequential([layer, ...])`` or ``.add(layer)``: a chain; shapes are checked
  as layers are added whenever the input shape is known (from the first
  layer's sizes, an ``Input(shape)`` first element or ``input_shape=``).
- ``Model(inputs, outputs)`` over ``Input(shape)`` placeholders: calling
  layers on placeholders records a graph (see :mod:`framework.models.graph`); several
  inputs and outputs and merge layers are allowed. ``forward`` runs the nodes
  in topological order; ``backward`` runs them in reverse and sums the
  gradients of a tensor that feeds several layers.
- a ``Model`` subclass that assigns layers as attributes and writes its own
  ``forward(x)`` and ``backward(grad)``.

Shared layers: one layer instance called at two places of a functional graph
is refused with a :class:`~framework.ConfigError` when the ``Model`` is
built. A layer caches only its last forward pass for ``backward``, so two
calls would silently corrupt each other's gradients; to share weights, write
a ``Model`` subclass whose ``backward`` calls the layer in reverse order.

Layer names: every layer gets a name unique within the model when it is added
(its own if set, else the snake_case class name with ``_1``, ``_2``...
suffixes: ``linear``, ``linear_1``), so ``state_dict()`` keys read
``linear.weight``, ``conv2d_1.bias``. Naming is per model, so two identical
models built in one process have identical names.

Inputs of another dtype than the model's parameters are cast once, at the
model's edge (integer inputs stay integers for a first layer with
``accepts_integer_input = True``, such as an embedding).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from framework.base.layer import Layer, format_shape
from framework.base.parameter import Parameter
from framework.errors import ConfigError, DataError, NotBuiltError, NotCompiledError
from framework.models.graph import (
    Input,
    InputLayer,
    Node,
    SymbolicTensor,
    connect,
    infer_output_shape,
)
from framework.registry.manager import REGISTRY
from framework.registry.namespace import serialize
from framework.runtime.dtype import get_default_dtype

__all__ = ["Model", "Sequential", "serialize_model", "deserialize_model"]


def snake_case(name: str) -> str:
    """``BatchNorm`` -> ``batch_norm``, ``Conv2d`` -> ``conv2d``, ``LSTM`` -> ``lstm``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _base_name(layer: Layer) -> str:
    return "input" if isinstance(layer, InputLayer) else snake_case(type(layer).__name__)


def _unique_name(layer: Layer, taken: dict[str, Any], owner: str) -> str:
    """The name ``layer`` gets in a model whose names so far are ``taken``."""
    name = layer.name
    if name is not None and name not in taken:
        return name
    if name is not None and not getattr(layer, "_framework_auto_name", False):
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
    layer._framework_auto_name = True
    return candidate


def _accepts_integers(layer: Layer) -> bool:
    return bool(getattr(layer, "accepts_integer_input", False))


class Model(Layer):
    """A trainable network: a functional graph, a ``Sequential`` chain or a subclass.

    ``Model(inputs, outputs)`` builds a functional model from ``Input``
    placeholders; ``Model()`` (through a subclass) is the base of hand-built
    models whose ``forward`` and ``backward`` are written by hand.

    Args:
        inputs: an ``Input`` placeholder or a list of them.
        outputs: a placeholder produced by layer calls, or a list of them.
        name: the model's name.

    Attributes:
        layers: the layers, in execution order (``Input`` layers first for a
            functional model).
        optimizer, loss, metrics: set by :meth:`compile` (``loss`` is one loss,
            or a list of one loss per output).
        epoch: epochs completed by ``fit`` so far (the ``initial_epoch`` to
            resume from).
        history: the :class:`~framework.training.callbacks.History` of the last ``fit``.
        stop_training: a callback sets it to stop ``fit`` after the current batch.

    Example:
        >>> from framework import Input, Model
        >>> from framework.layers import Linear
        >>> x = Input((4,))
        >>> model = Model(x, Linear(4, 2)(x))
        >>> model.count_params()
        10
    """

    def __init__(self, inputs: Any = None, outputs: Any = None, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.optimizer: Any = None
        self.loss: Any = None
        self.metrics: list[Any] = []
        self.compiled = False
        self.stop_training = False
        self.epoch = 0
        self.history: Any = None
        self._losses: list[Any] = []
        self._loss_weights: list[float] = []
        self._metric_slots: list[tuple[int, Any, str]] = []
        self._compile_cfg: dict[str, Any] | None = None
        self._graph: _Graph | None = None
        self._dtype_probe: _Probe | None = None  # see ``dtype``
        if inputs is not None or outputs is not None:
            if inputs is None or outputs is None:
                raise ConfigError("Model: pass both inputs and outputs (or neither, in a subclass)")
            self._graph = _Graph(inputs, outputs, self.name or type(self).__name__)
            self.built = True
            self.input_shape = self._graph.input_shape()

    # -- children ----------------------------------------------------------

    def named_children(self) -> Iterator[tuple[str, Layer]]:
        if self._graph is not None:
            yield from self._graph.layers.items()
        else:
            yield from super().named_children()

    @property
    def layers(self) -> list[Layer]:
        """The layers in execution order."""
        return [layer for _, layer in self.named_children()]

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """The layer called ``name`` or at position ``index``."""
        if index is not None:
            return self.layers[index]
        for key, layer in self.named_children():
            if key == name:
                return layer
        raise ConfigError(
            f"{self.describe()} has no layer named {name!r}; layers: {[k for k, _ in self.named_children()]}"
        )

    def __getitem__(self, key: int | str) -> Layer:
        if isinstance(key, str):
            return self.get_layer(name=key)
        return self.layers[key]

    # -- structure ---------------------------------------------------------

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the parameters (the default dtype before any exist)."""
        # Read on every forward pass: walking all the state costs 7-9 us a step, so
        # the first parameter is remembered with the layer attribute holding it, and
        # trusted while that attribute still holds it (a Sequential's add/pop resets it).
        probe = getattr(self, "_dtype_probe", None)
        if probe is not None and vars(probe.owner).get(probe.key) is probe.param:
            return probe.param.dtype
        self._dtype_probe = None
        first = next(self.named_parameters(), None)
        if first is None:
            return get_default_dtype()
        param = first[1]
        if all(layer.built for layer in self.children()):  # no parameter can appear before it
            owner = _attribute_holding(self, param)
            if owner is not None:
                self._dtype_probe = _Probe(*owner, param)
        return param.dtype

    @property
    def num_inputs(self) -> int | None:
        return len(self._graph.inputs) if self._graph is not None else 1

    @property
    def num_outputs(self) -> int:
        return len(self._graph.outputs) if self._graph is not None else 1

    @property
    def multi_output(self) -> bool:
        return self._graph is not None and self._graph.multi_out

    @property
    def output_names(self) -> list[str]:
        """The names of the layers producing the outputs (keys of per-output losses)."""
        if self._graph is not None:
            return [t.node.layer.name for t in self._graph.outputs]
        return ["output"]

    def build(self, input_shape: Any) -> None:
        """Create every parameter for inputs of ``input_shape`` (batch axis ``None``).

        A hand-built subclass is run once on a zero batch, in eval mode, so that
        its layers create their parameters.
        """
        if self._graph is not None:
            return
        Layer.build(self, input_shape)
        self.input_spec = None
        if all(child.built for child in self.children()) and self.children():
            return
        shapes = input_shape if isinstance(input_shape, list) else [input_shape]
        if any(d is None for s in shapes for d in tuple(s)[1:]):
            return
        dummies = [np.zeros((1, *tuple(s)[1:]), dtype=get_default_dtype()) for s in shapes]
        training = self.training
        self.eval()
        try:
            self.forward(dummies if isinstance(input_shape, list) else dummies[0])
        finally:
            self.train(training)

    def output_shape(self, input_shape: Any) -> Any:
        if self._graph is not None:
            shapes = [t.shape for t in self._graph.outputs]
            return shapes if self._graph.multi_out else shapes[0]
        return infer_output_shape(_Unoverridden(self), input_shape)

    # -- running -----------------------------------------------------------

    def cast_inputs(self, x: Any) -> Any:
        """``x`` with every array cast to the model's dtype (integers kept where a layer wants them)."""
        dtype = self.dtype
        if isinstance(x, (list, tuple)) and (self.num_inputs or 1) > 1:
            flags = self._integer_inputs()
            return [self._cast(a, dtype, flags[i] if i < len(flags) else False) for i, a in enumerate(x)]
        keep_int = self._integer_inputs()[0] if self.num_inputs == 1 else False
        return self._cast(x, dtype, keep_int)

    @staticmethod
    def _cast(a: Any, dtype: np.dtype, keep_int: bool) -> Any:
        if not isinstance(a, np.ndarray):
            a = np.asarray(a)
        if a.dtype == dtype or (keep_int and np.issubdtype(a.dtype, np.integer)):
            return a
        return a.astype(dtype)

    def _integer_inputs(self) -> list[bool]:
        if self._graph is not None:
            return self._graph.integer_inputs
        children = self.children()
        return [bool(children) and _accepts_integers(children[0])]

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        first = x[0] if isinstance(x, (list, tuple)) and x else x
        if getattr(first, "_framework_symbolic", False):
            return super().__call__(x, *args, **kwargs)
        return self.forward(self.cast_inputs(x), *args, **kwargs)

    def forward(self, x: Any) -> Any:
        """The output(s) for input(s) ``x`` (a list for several inputs/outputs)."""
        if self._graph is None:
            raise NotImplementedError(
                f"{type(self).__name__}: a Model subclass must implement forward() and backward(), "
                "or build the model with Model(inputs, outputs)"
            )
        return self._graph.forward(self.cast_inputs(x))

    def backward(self, grad_out: Any) -> Any:
        """``dL/d input(s)`` given ``dL/d output(s)``; parameter gradients are accumulated."""
        if self._graph is None:
            raise NotImplementedError(f"{type(self).__name__}: a Model subclass must implement backward()")
        return self._graph.backward(grad_out)

    # -- compile -----------------------------------------------------------

    def compile(
        self,
        optimizer: Any = "sgd",
        loss: Any = None,
        metrics: Any = None,
        loss_weights: Any = None,
    ) -> None:
        """Choose the optimizer, the loss (one, or one per output) and the metrics.

        Args:
            optimizer: a registered name (``"adam"``), class, instance or config.
            loss: a loss name, class or instance; for several outputs one loss
                for all, a list (one per output) or a dict keyed by output name.
            metrics: a list of metric names/instances (applied to every output;
                keys become ``<output>_<metric>`` for several outputs), a list of
                lists or a dict keyed by output name.
            loss_weights: a list or dict of floats weighting each output's loss.

        Raises:
            UnknownNameError: an unknown optimizer, loss or metric name.
            ConfigError: a loss missing for an output, or malformed arguments.
        """
        from framework import losses as losses_ns
        from framework import metrics as metrics_ns
        from framework import optimizers as optimizers_ns

        if loss is None:
            raise ConfigError(f"{self.describe()}.compile: a loss is required, e.g. loss='mse'")
        names = self.output_names
        n_out = len(names)
        opt = optimizers_ns.get(optimizer)
        if not hasattr(opt, "step") or not hasattr(opt, "bind"):
            raise ConfigError(f"compile: optimizer must be an Optimizer, got {type(opt).__name__}")

        loss_specs = self._per_output("loss", loss, names, single_is_shared=True)
        resolved = [losses_ns.get(spec) for spec in loss_specs]
        losses = []
        seen: set[int] = set()
        for item in resolved:
            if not hasattr(item, "forward") or not hasattr(item, "backward"):
                raise ConfigError(f"compile: loss must be a Loss, got {type(item).__name__}")
            losses.append(copy.deepcopy(item) if id(item) in seen else item)
            seen.add(id(item))

        if loss_weights is None:
            weights = [1.0] * n_out
        else:
            weights = [float(w) for w in self._per_output("loss_weights", loss_weights, names, False)]

        metric_specs: list[list[Any]]
        if metrics is None:
            metric_specs = [[] for _ in names]
        elif isinstance(metrics, dict):
            metric_specs = self._per_output("metrics", metrics, names, False)
            metric_specs = [
                [] if m is None else list(m) if isinstance(m, (list, tuple)) else [m] for m in metric_specs
            ]
        elif (
            isinstance(metrics, (list, tuple))
            and metrics
            and all(isinstance(m, (list, tuple)) for m in metrics)
        ):
            metric_specs = [list(m) for m in self._per_output("metrics", list(metrics), names, False)]
        else:
            flat = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
            metric_specs = [flat for _ in names]
        slots: list[tuple[int, Any, str]] = []
        seen = set()
        for k, specs in enumerate(metric_specs):
            for spec in specs:
                metric = metrics_ns.get(spec)
                if id(metric) in seen:
                    metric = copy.deepcopy(metric)
                seen.add(id(metric))
                key = metric.name if n_out == 1 else f"{names[k]}_{metric.name}"
                slots.append((k, metric, key))
        keys = [key for _, _, key in slots]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"compile: metric names repeat: {keys}; give metrics distinct names")

        self.optimizer = opt
        self._losses = losses
        self.loss = losses[0] if n_out == 1 else list(losses)
        self._loss_weights = weights
        self._metric_slots = slots
        self.metrics = [m for _, m, _ in slots]
        self.compiled = True
        self._compile_cfg = {
            "optimizer": serialize("optimizers", opt),
            "loss": serialize("losses", losses[0])
            if n_out == 1
            else [serialize("losses", x) for x in losses],
            "metrics": [serialize("metrics", m) for k, m, _key in slots if k == 0]
            if n_out == 1
            else [[serialize("metrics", m) for k2, m, _ in slots if k2 == k] for k in range(n_out)],
            "loss_weights": None if loss_weights is None else weights,
        }
        if self.parameters():
            opt.bind(self)

    @staticmethod
    def _per_output(label: str, spec: Any, names: list[str], single_is_shared: bool) -> list[Any]:
        n = len(names)
        if isinstance(spec, dict) and not ("class_name" in spec and label == "loss"):
            unknown = sorted(set(spec) - set(names))
            missing = [name for name in names if name not in spec]
            if unknown or (missing and label == "loss"):
                raise ConfigError(
                    f"compile: {label} keys must be the output names {names}; "
                    f"unknown {unknown}, missing {missing}"
                )
            return [spec.get(name) for name in names]
        if isinstance(spec, (list, tuple)):
            if len(spec) != n:
                raise ConfigError(
                    f"compile: {label} has {len(spec)} entries, the model has {n} outputs {names}"
                )
            return list(spec)
        if n > 1 and not single_is_shared:
            raise ConfigError(f"compile: {label} must be a list or dict for a model of {n} outputs {names}")
        return [spec] * n

    def compile_config(self) -> dict[str, Any]:
        """``compile``'s arguments as JSON data (optimizer, loss and metrics serialised)."""
        if not self.compiled or self._compile_cfg is None:
            raise NotCompiledError(f"{self.describe()} is not compiled; call compile() first")
        return copy.deepcopy(self._compile_cfg)

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Compile from :meth:`compile_config`'s output."""
        if not isinstance(config, dict) or "loss" not in config:
            raise ConfigError(
                f"compile_from_config: expected a dict with 'optimizer' and 'loss', got {config!r}"
            )
        self.compile(
            optimizer=config.get("optimizer", "sgd"),
            loss=config["loss"],
            metrics=config.get("metrics") or None,
            loss_weights=config.get("loss_weights"),
        )

    def _require_compiled(self, what: str) -> None:
        if not self.compiled:
            raise NotCompiledError(
                f"{self.describe()}: {what}() needs a compiled model; call "
                "model.compile(optimizer=..., loss=...) first"
            )

    # -- training ----------------------------------------------------------

    def fit(self, x: Any = None, y: Any = None, **kwargs: Any) -> Any:
        """Train; see :func:`framework.training.loop.fit` for the arguments. Returns a ``History``."""
        from framework.training.loop import fit

        return fit(self, x, y, **kwargs)

    def evaluate(self, x: Any = None, y: Any = None, **kwargs: Any) -> dict[str, float]:
        """The loss and metrics over ``(x, y)`` in eval mode: ``{"loss": ..., "accuracy": ...}``."""
        from framework.training.loop import evaluate

        return evaluate(self, x, y, **kwargs)

    def predict(self, x: Any, batch_size: int = 32, verbose: int = 0) -> Any:
        """The outputs for ``x`` in eval mode, batched (a list for several outputs)."""
        from framework.training.loop import predict

        return predict(self, x, batch_size=batch_size, verbose=verbose)

    def train_on_batch(self, x: Any, y: Any) -> float:
        """One optimisation step on one batch; returns the loss."""
        from framework.training.loop import Trainer

        self._require_compiled("train_on_batch")
        return Trainer(self).train_step(self.cast_inputs(x), y)

    # -- display and serialisation -----------------------------------------

    def summary(self, print_fn: Any = None, line_length: int | None = None) -> str | None:
        """Print a table of layers, output shapes and parameter counts.

        With ``print_fn``, each line is passed to it and the text is returned.
        """
        from framework.models.summary import summary_text

        text = summary_text(self, line_length=line_length)
        if print_fn is None:
            print(text)
            return None
        for line in text.splitlines():
            print_fn(line)
        return text

    def get_config(self) -> dict[str, Any]:
        if self._graph is not None:
            return {"name": self.name, **self._graph.get_config()}
        return super().get_config()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Model:
        if "layers" in config and "input_layers" in config:
            inputs, outputs = _Graph.rebuild(config)
            return cls(inputs, outputs, name=config.get("name"))
        return super().from_config(config)  # type: ignore[return-value]

    def save(self, filepath: Any, **kwargs: Any) -> None:
        """Write the model (config, weights, optimizer state) to HDF5."""
        from framework.saving import checkpoint

        checkpoint.save_model(self, filepath, **kwargs)

    def save_weights(self, filepath: Any, **kwargs: Any) -> None:
        """Write the parameters and buffers to HDF5."""
        from framework.saving import checkpoint

        checkpoint.save_weights(self, filepath, **kwargs)

    def load_weights(self, filepath: Any, **kwargs: Any) -> None:
        """Read parameters and buffers written by :meth:`save_weights`."""
        from framework.saving import checkpoint

        checkpoint.load_weights(self, filepath, **kwargs)

    def extra_repr(self) -> str:
        return f"{len(self.layers)} layers, {self.count_params()} parameters"


class _Unoverridden(Layer):
    """Wraps a model so ``infer_output_shape`` dry-runs its ``forward``."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model
        self.built = True

    def forward(self, x: Any) -> Any:
        return self.model.forward(x)

    def train(self, mode: bool = True) -> Layer:
        self.model.train(mode)
        return self

    @property
    def training(self) -> bool:  # type: ignore[override]
        return self.model.training

    @training.setter
    def training(self, value: bool) -> None:
        pass


class _Graph:
    """The compiled form of a functional graph: nodes in order, slots for arrays."""

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
            for t in node.inputs:
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
        # Inputs first, in the order given (an unused input still belongs to the model).
        in_nodes = [t.node for t in self.inputs]
        order = in_nodes + [n for n in order if id(n) not in given]

        seen_layers: dict[int, Node] = {}
        for node in order:
            if id(node.layer) in seen_layers:
                raise ConfigError(
                    f"Model {owner!r}: {node.layer.describe()} is called at two places of the graph; "
                    "shared layers are not supported (a layer keeps one forward cache for backward). "
                    "Use two layers, or a Model subclass whose backward handles the sharing"
                )
            seen_layers[id(node.layer)] = node

        self.layers: dict[str, Layer] = {}
        for node in order:
            self.layers[_unique_name(node.layer, self.layers, f"Model {owner!r}")] = node.layer
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
                node.args,
                node.kwargs,
            )
            for node in order[len(in_nodes) :]
        ]
        consumers: dict[int, list[Layer]] = {}
        for node in order:
            for t in node.inputs:
                consumers.setdefault(id(t), []).append(node.layer)
        self.integer_inputs = [
            bool(consumers.get(id(t))) and all(_accepts_integers(c) for c in consumers[id(t)])
            for t in self.inputs
        ]
        self._values: list[Any] = []

    def input_shape(self) -> Any:
        shapes = [t.shape for t in self.inputs]
        return shapes if self.multi_in else shapes[0]

    def forward(self, x: Any) -> Any:
        n_in = len(self.inputs)
        if n_in == 1 and isinstance(x, np.ndarray):
            xs = [x]
        elif isinstance(x, (list, tuple)) and len(x) == n_in:
            xs = list(x)
        else:
            got = f"a list of {len(x)}" if isinstance(x, (list, tuple)) else type(x).__name__
            raise DataError(f"the model takes {n_in} inputs (a list of {n_in} arrays), got {got}")
        values: list[Any] = [None] * self.n_slots
        for t, s, a in zip(self.inputs, self.input_slots, xs):
            t.node.layer.check(a)
            values[s] = a
        for layer, ins, list_in, outs, list_out, args, kwargs in self.plan:
            arg = [values[s] for s in ins] if list_in else values[ins[0]]
            out = layer.forward(arg, *args, **kwargs)
            if list_out:
                for s, o in zip(outs, out):
                    values[s] = o
            else:
                values[outs[0]] = out
        self._values = values
        results = [values[s] for s in self.output_slots]
        return results if self.multi_out else results[0]

    def backward(self, grad_out: Any) -> Any:
        values = self._values
        if not values:
            raise NotBuiltError("Model.backward() called before forward()")
        grads: list[Any] = [None] * self.n_slots
        gs = list(grad_out) if self.multi_out else [grad_out]
        if len(gs) != len(self.outputs):
            raise DataError(f"backward expected {len(self.outputs)} output gradients, got {len(gs)}")
        for s, g in zip(self.output_slots, gs):
            if g is not None:
                grads[s] = g if grads[s] is None else grads[s] + g
        for layer, ins, list_in, outs, list_out, _args, _kwargs in reversed(self.plan):
            out_grads = [grads[s] for s in outs]
            if all(g is None for g in out_grads):
                continue
            if list_out:
                g_arg = [np.zeros_like(values[s]) if g is None else g for s, g in zip(outs, out_grads)]
            else:
                g_arg = out_grads[0]
            g_in = layer.backward(g_arg)
            g_list = g_in if list_in else [g_in]
            for s, g in zip(ins, g_list):
                grads[s] = g if grads[s] is None else grads[s] + g
        result = [np.zeros_like(values[s]) if grads[s] is None else grads[s] for s in self.input_slots]
        return result if self.multi_in else result[0]

    # -- serialisation ------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        names = {id(layer): name for name, layer in self.layers.items()}

        def ref(t: SymbolicTensor) -> list[Any]:
            return [names[id(t.node.layer)], 0, t.index]

        entries = []
        for node in self.nodes:
            name = names[id(node.layer)]
            entry = {"name": name, **_serialize_layer(node.layer, name)}
            if isinstance(node.layer, InputLayer):
                entry["inbound_nodes"] = []
            else:
                call: dict[str, Any] = {"args": [ref(t) for t in node.inputs], "list_input": node.list_input}
                if node.args:
                    call["extra_args"] = list(node.args)
                if node.kwargs:
                    call["kwargs"] = dict(node.kwargs)
                entry["inbound_nodes"] = [call]
            entries.append(entry)
        return {
            "layers": entries,
            "input_layers": [ref(t) for t in self.inputs],
            "output_layers": [ref(t) for t in self.outputs],
            "multi_input": self.multi_in,
            "multi_output": self.multi_out,
        }

    @staticmethod
    def rebuild(config: dict[str, Any]) -> tuple[Any, Any]:
        tensors: dict[tuple[str, int, int], SymbolicTensor] = {}
        for entry in config["layers"]:
            name = entry["name"]
            if entry["class_name"] == "InputLayer":
                cfg = dict(entry.get("config") or {})
                t = Input(cfg.get("shape"), cfg.get("dtype"), name=cfg.get("name", name))
                tensors[(name, 0, 0)] = t
                continue
            layer = _deserialize_layer(entry)
            for node_index, call in enumerate(entry.get("inbound_nodes") or []):
                try:
                    args = [tensors[tuple(a)] for a in call["args"]]  # type: ignore[misc]
                except KeyError as exc:
                    raise ConfigError(
                        f"model config: layer {name!r} is called on unknown tensor {exc}"
                    ) from exc
                arg = args if call.get("list_input") else args[0]
                out = layer(arg, *call.get("extra_args", []), **call.get("kwargs", {}))
                outs = out if isinstance(out, list) else [out]
                for i, o in enumerate(outs):
                    tensors[(name, node_index, i)] = o

        def pick(key: str) -> list[SymbolicTensor]:
            try:
                return [tensors[tuple(ref)] for ref in config[key]]  # type: ignore[misc]
            except KeyError as exc:
                raise ConfigError(f"model config: {key} names an unknown tensor {exc}") from exc

        inputs, outputs = pick("input_layers"), pick("output_layers")
        return (
            inputs if config.get("multi_input", len(inputs) > 1) else inputs[0],
            outputs if config.get("multi_output", len(outputs) > 1) else outputs[0],
        )


class Sequential(Model):
    """A linear stack of layers: each layer's output is the next one's input.

    Args:
        layers: the layers (an ``Input(shape)`` may come first to fix the
            input shape).
        name: the model's name.
        input_shape: the shape of one sample (no batch axis), an alternative
            to ``Input``.

    Shapes are checked when a layer is added, as soon as the input shape is
    known: from ``input_shape``, an ``Input`` first element, or the first
    layer's own sizes (``Linear(784, 128)`` knows its input). Otherwise the
    layers are built on the first batch (or :meth:`build`).

    Example:
        >>> from framework import Sequential
        >>> from framework.layers import Linear
        >>> model = Sequential([Linear(4, 8, activation="relu"), Linear(8, 2)])
        >>> [name for name, _ in model.named_parameters()][:2]
        ['linear.weight', 'linear.bias']
    """

    def __init__(self, layers: Any = None, name: str | None = None, *, input_shape: Any = None) -> None:
        super().__init__(name=name)
        self._stack: dict[str, Layer] = {}
        self._shapes: list[Any] = []
        self._run_order: list[Layer] | None = None
        self._in_shape: tuple[int | None, ...] | None = None
        if input_shape is not None:
            self._in_shape = (None, *_sample_shape(input_shape))
        if layers is not None:
            if isinstance(layers, Layer):
                layers = [layers]
            for layer in layers:
                self.add(layer)

    def named_children(self) -> Iterator[tuple[str, Layer]]:
        yield from self._stack.items()

    def __len__(self) -> int:
        return len(self._stack)

    def __iter__(self) -> Iterator[Layer]:
        return iter(list(self._stack.values()))

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, slice):
            return self.layers[key]
        if isinstance(key, str):
            return self.get_layer(name=key)
        try:
            return self.layers[key]
        except IndexError:
            raise IndexError(
                f"{self.describe()} has {len(self)} layers; index {key} is out of range"
            ) from None

    def add(self, layer: Any) -> None:
        """Append ``layer``; checks its input against the previous output when shapes are known.

        Raises:
            ShapeError: naming both layers and both shapes when they do not fit.
            ConfigError: for a non-layer, a layer added twice or a duplicate name.
        """
        if isinstance(layer, SymbolicTensor):
            if self._stack or not isinstance(layer.node.layer, InputLayer):
                raise ConfigError(f"{self.describe()}: an Input placeholder can only be the first element")
            self._in_shape = layer.shape
            return
        if not isinstance(layer, Layer):
            raise ConfigError(
                f"{self.describe()}.add: expected a Layer, got {type(layer).__name__} {layer!r}"
            )
        if any(existing is layer for existing in self._stack.values()):
            raise ConfigError(
                f"{self.describe()}.add: {layer.describe()} is already in the model; "
                "one instance cannot be used twice (it caches one forward pass)"
            )
        name = _unique_name(layer, self._stack, self.describe())
        if not self._stack and self._in_shape is None and layer.built and layer.input_shape is not None:
            self._in_shape = layer.input_shape
        shape = self._shapes[-1] if self._stack else self._in_shape
        previous = list(self._stack.values())[-1] if self._stack else None
        out = connect(layer, shape, previous) if shape is not None else None
        self._stack[name] = layer
        self._shapes.append(out)
        self._refresh_built()

    def pop(self) -> Layer:
        """Remove and return the last layer."""
        if not self._stack:
            raise ConfigError(f"{self.describe()}.pop: the model has no layers")
        name = list(self._stack)[-1]
        self._shapes.pop()
        layer = self._stack.pop(name)
        self._refresh_built()
        return layer

    def _refresh_built(self) -> None:
        self._dtype_probe = None
        self._run_order = None
        known = self._in_shape is not None and all(s is not None for s in self._shapes)
        self.built = known and bool(self._stack)
        if self.built:
            self.input_shape = self._in_shape
            self.input_spec = None

    def build(self, input_shape: Any = None) -> None:
        """Build every layer for inputs of ``input_shape`` (with or without the batch axis ``None``)."""
        if input_shape is None:
            input_shape = self._in_shape
        if input_shape is None:
            raise NotBuiltError(f"{self.describe()}.build: the input shape is unknown; pass input_shape")
        shape = tuple(input_shape)
        if shape and shape[0] is not None:
            shape = (None, *shape)
        self._in_shape = shape
        shapes = []
        previous: Layer | None = None
        for layer in self._stack.values():
            shape = connect(layer, shape, previous)
            shapes.append(shape)
            previous = layer
        self._shapes = shapes
        self._refresh_built()
        self.built = True
        self.input_shape = self._in_shape
        self.input_spec = None

    def output_shape(self, input_shape: Any) -> Any:
        shape = tuple(input_shape)
        previous: Layer | None = None
        for layer in self._stack.values():
            shape = connect(layer, shape, previous)
            previous = layer
        return shape

    def _order(self) -> list[Layer]:
        """The layers in the order ``forward`` runs them.

        A ``monotone_elementwise`` activation directly followed by a
        ``window_max`` pool runs after the pool: ``max(f(x)) == f(max(x))``
        for a non-decreasing ``f``, and the gradient reaches the same inputs
        (see the pooling maths), but ``f`` then touches a quarter of the data
        for a 2x2 pool.
        """
        if self._run_order is None:
            order = list(self._stack.values())
            i = 0
            while i < len(order) - 1:
                if _declares(order[i], "monotone_elementwise") and _declares(order[i + 1], "window_max"):
                    order[i], order[i + 1] = order[i + 1], order[i]
                    i += 2
                else:
                    i += 1
            self._run_order = order
        return self._run_order

    def forward(self, x: Any) -> Any:
        if not isinstance(x, np.ndarray) or x.dtype != self.dtype:
            x = self.cast_inputs(x)
        for layer in self._order():
            x = layer.forward(x)
        return x

    def backward(self, grad_out: Any) -> Any:
        caller = grad_out
        for i, layer in enumerate(reversed(self._order())):
            # Past the last layer, grad_out is an intermediate array only this loop holds,
            # unless pass-through layers (Flatten, Identity, eval-mode Dropout) handed back
            # the caller's array or a view of it.
            layer.grad_out_writable = i > 0 and not (
                isinstance(grad_out, np.ndarray) and np.may_share_memory(grad_out, caller)
            )
            try:
                grad_out = layer.backward(grad_out)
            finally:
                layer.grad_out_writable = False
            if grad_out is None:  # a first layer with needs_input_grad=False (see fit)
                break
        return grad_out

    def layer_output_shapes(self) -> list[Any]:
        """The output shape of each layer (``None`` where not yet known)."""
        return list(self._shapes)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_shape": None if self._in_shape is None else list(self._in_shape),
            "layers": [_serialize_layer(layer, name) for name, layer in self._stack.items()],
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        if not isinstance(config, dict) or "layers" not in config:
            raise ConfigError(f"Sequential.from_config: expected a dict with 'layers', got {config!r}")
        model = cls(name=config.get("name"))
        shape = config.get("input_shape")
        if shape is not None:
            model._in_shape = tuple(shape)
        for entry in config["layers"]:
            model.add(_deserialize_layer(entry))
        if shape is not None and not model.built:
            model.build(tuple(shape))
        return model


def _sample_shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, int):
        return (shape,)
    return tuple(shape)


def _serialize_layer(layer: Layer, name: str) -> dict[str, Any]:
    if isinstance(layer, InputLayer):
        return {"class_name": "InputLayer", "config": layer.get_config()}
    if isinstance(layer, Model):
        data = serialize_model(layer)
        data["config"] = (
            {**data["config"], "name": name} if isinstance(data["config"], dict) else data["config"]
        )
        return {**data, "is_model": True}
    registered = REGISTRY.name_of("layers", layer)
    if registered is None:
        raise ConfigError(
            f"{layer.describe()}: class {type(layer).__name__} is not registered, so the model cannot "
            "be serialised; register it with a register_layers hook (see framework.registry.hookspecs)"
        )
    config = dict(layer.get_config())
    config["name"] = name
    return {"class_name": registered, "config": config}


def _deserialize_layer(entry: dict[str, Any]) -> Layer:
    from framework import layers

    if entry.get("is_model"):
        return deserialize_model(entry)
    layer = layers.get({"class_name": entry["class_name"], "config": entry.get("config") or {}})
    if not isinstance(layer, Layer):
        raise ConfigError(f"model config: {entry['class_name']!r} did not rebuild a Layer")
    return layer


def serialize_model(model: Model) -> dict[str, Any]:
    """``{"class_name": ..., "config": ..., "build_input_shape": ...}`` as JSON data.

    ``class_name`` is ``"Sequential"``, ``"Model"`` (a functional graph) or the
    registered name of a Model subclass.
    """
    if not isinstance(model, Model):
        raise ConfigError(f"serialize_model: expected a Model, got {type(model).__name__}")
    if isinstance(model, Sequential) and type(model).get_config is Sequential.get_config:
        class_name = "Sequential"
    elif model._graph is not None and type(model).get_config is Model.get_config:
        class_name = "Model"
    else:
        class_name = REGISTRY.name_of("layers", model)
        if class_name is None:
            raise ConfigError(
                f"{model.describe()}: the Model subclass {type(model).__name__} is not registered; "
                "register it with a register_layers hook so it can be rebuilt by name"
            )
    shape = model.input_shape
    if isinstance(shape, list):
        shape = [list(s) for s in shape]
    elif shape is not None:
        shape = list(shape)
    return {"class_name": class_name, "config": model.get_config(), "build_input_shape": shape}


def deserialize_model(data: dict[str, Any]) -> Model:
    """Rebuild an un-compiled, built model from :func:`serialize_model`'s output."""
    if not isinstance(data, dict) or "class_name" not in data:
        raise ConfigError(f"deserialize_model: expected a dict with 'class_name' and 'config', got {data!r}")
    class_name, config = data["class_name"], data.get("config") or {}
    if class_name == "Sequential":
        model: Any = Sequential.from_config(config)
    elif class_name in ("Model", "Functional"):
        model = Model.from_config(config)
    else:
        from framework import layers

        model = layers.get({"class_name": class_name, "config": config})
        if not isinstance(model, Model):
            raise ConfigError(f"deserialize_model: {class_name!r} is not a Model subclass")
    shape = data.get("build_input_shape")
    if shape is not None and not model.built:
        model.build([tuple(s) for s in shape] if shape and isinstance(shape[0], list) else tuple(shape))
    elif shape is not None and model._graph is None and not isinstance(model, Sequential):
        if not all(child.built for child in model.children()):
            model.build(tuple(shape))
    return model


def _attribute_holding(layer: Layer, param: Parameter) -> tuple[Layer, str] | None:
    """``(owner, attribute name)`` of the layer attribute that is ``param`` (searched depth-first)."""
    for key, value in vars(layer).items():
        if value is param:
            return layer, key
    for _, child in layer.named_children():
        found = _attribute_holding(child, param)
        if found is not None:
            return found
    return None


def _declares(layer: Layer, flag: str) -> bool:
    """Whether ``layer``'s class declares ``flag``, not below the class defining its ``forward``.

    A subclass that overrides ``forward`` does not inherit a promise about
    what ``forward`` computes (a noisy ReLU is not monotone); it must declare
    the flag again. A subclass may also set it to ``False``.
    """
    for cls in type(layer).__mro__:
        if flag in cls.__dict__:
            return bool(cls.__dict__[flag])
        if "forward" in cls.__dict__:
            return False
    return False


class _Probe:
    """Where ``Sequential.dtype`` found the first parameter.

    A plain object, not a tuple: layers discover parameters and child layers
    held in tuples and lists, and these must not count as the model's own.
    """

    __slots__ = ("key", "owner", "param")

    def __init__(self, owner: Layer, key: str, param: Parameter) -> None:
        self.owner, self.key, self.param = owner, key, param
