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

Shared layers: one layer instance may be called at several places of a
functional graph (a siamese branch, an unrolled cell). The executor keeps one
per-call context per node (see :mod:`framework.base.context`), so each call's
backward reads its own forward, and the layer's parameter gradients sum over
its calls. A layer written in the older ``forward(x)`` form keeps its state on
itself and is refused at a second place, with a ConfigError naming it.

Layer names: every layer gets a name unique within the model when it is added
(its own if set, else the snake_case class name with ``_1``, ``_2``...
suffixes: ``linear``, ``linear_1``), so ``state_dict()`` keys read
``linear.weight``, ``conv2d_1.bias``. Naming is per model, so two identical
models built in one process have identical names.

Inputs of another dtype than the model's parameters are cast once, at the
model's edge (integer inputs stay integers for a first layer with
``accepts_integer_input = True``, such as an embedding); so is ``backward``'s
``grad_out``, to the dtype of the output(s).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from framework.base.calling import check_training
from framework.base.context import Context
from framework.base.inputs import takes_uncast
from framework.base.layer import Layer
from framework.base.parameter import Parameter
from framework.base.state import parameter_count
from framework.errors import ConfigError, NotCompiledError
from framework.models.casting import cast_model_inputs
from framework.models.executor import GraphExecutor, accepts_integers, auto_named
from framework.models.files import FileMethods
from framework.models.graph import infer_output_shape
from framework.models.lookup import get_layer
from framework.models.symbolic import SymbolicMethods
from framework.models.training_methods import TrainingMethods
from framework.runtime.dtype import get_default_dtype

__all__ = ["Model"]


class Model(TrainingMethods, FileMethods, SymbolicMethods, Layer):
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
        self._graph: GraphExecutor | None = None
        self._dtype_probe: _Probe | None = None  # see ``dtype``
        if inputs is not None or outputs is not None:
            if inputs is None or outputs is None:
                raise ConfigError("Model: pass both inputs and outputs (or neither, in a subclass)")
            self._graph = GraphExecutor(inputs, outputs, self.name or type(self).__name__)
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
        """The layer called ``name`` or at position ``index`` (see :mod:`framework.models.lookup`)."""
        return get_layer(self, name, index)

    def __getitem__(self, key: int | str) -> Layer:
        if isinstance(key, str):
            return self.get_layer(name=key)
        return self.layers[key]

    # -- structure ---------------------------------------------------------

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the parameters (the default dtype before any exist)."""
        # Read on every forward pass (walking all the state costs 7-9 us a step): the first parameter
        # is remembered with the attribute holding it, trusted while it does (add/pop reset it).
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
        """The names of the layers producing the outputs (keys of per-output losses and logs).

        A layer renamed by hand renames its keys; one that a model named keeps
        this model's name for it when another model names it otherwise.
        """
        if self._graph is not None:
            keys = {id(layer): key for key, layer in self._graph.layers.items()}
            layers = [t.node.layer for t in self._graph.outputs]
            return [keys[id(layer)] if auto_named(layer) else str(layer.name) for layer in layers]
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
        zeros = dummies if isinstance(input_shape, list) else dummies[0]
        # Every layer in eval mode, whatever its own flag: a forward calls its children by hand in
        # their own mode, and a BatchNorm in training mode would refuse the batch of one.
        with self.mode(False):
            self.forward(Context(False, record=False), zeros)

    def output_shape(self, input_shape: Any) -> Any:
        if self._graph is not None:
            shapes = [t.shape for t in self._graph.outputs]
            return shapes if self._graph.multi_out else shapes[0]
        return infer_output_shape(_Unoverridden(self), input_shape)

    # -- running -----------------------------------------------------------

    def cast_inputs(self, x: Any) -> Any:
        """``x`` with every array cast to the model's dtype (integers kept where a layer wants them,
        a bool or integer ``Input`` cast to its own dtype).

        A dict is read by the model's ``Input`` names, as ``predict`` reads it.
        """
        return cast_model_inputs(self, x)

    def _integer_inputs(self) -> list[bool]:
        if self._graph is not None:
            return self._graph.integer_inputs
        children = self.children()
        return [bool(children) and accepts_integers(children[0])]

    def __call__(self, x: Any, *args: Any, training: bool | None = None, **kwargs: Any) -> Any:
        """The output(s) for ``x``; ``training`` sets this call's mode only (default ``self.training``)."""
        first = x[0] if isinstance(x, (list, tuple)) and x else x
        if getattr(first, "_framework_symbolic", False):
            return super().__call__(x, *args, training=training, **kwargs)
        training = check_training(self, training)
        ctx = Context(self.training if training is None else training)
        with self._hand_mode(training):  # children called by hand read their own flags
            out = self.forward(ctx, self.cast_inputs(x), *args, **kwargs)
        self._manual_ctx = ctx
        return out

    def forward(self, ctx: Context, x: Any) -> Any:
        """The output(s) for input(s) ``x`` (a list for several inputs/outputs).

        ``ctx`` receives the tape of this call: one context per node.
        """
        if self._graph is None:
            raise NotImplementedError(
                f"{type(self).__name__}: a Model subclass must implement forward() and backward(), "
                "or build the model with Model(inputs, outputs)"
            )
        x = x if takes_uncast(self, ctx, x) else self.cast_inputs(x)
        return self._graph.forward(ctx, x, self.describe())

    def backward(self, ctx: Context, grad_out: Any) -> Any:
        """``dL/d input(s)`` given ``dL/d output(s)`` (cast to the outputs' dtype); gradients accumulate."""
        if self._graph is None:
            raise NotImplementedError(f"{type(self).__name__}: a Model subclass must implement backward()")
        return self._graph.backward(ctx, grad_out, self.describe())

    # -- compile -----------------------------------------------------------

    def compile(
        self,
        optimizer: Any = "sgd",
        loss: Any = None,
        metrics: Any = None,
        loss_weights: Any = None,
        weighted_metrics: Any = None,
    ) -> None:
        """Choose the optimizer, the loss (one, or one per output) and the metrics.

        Args:
            optimizer: a registered name (``"adam"``), class, instance or config.
                The default is ``"sgd"`` (learning rate 0.01), not Keras's
                ``"rmsprop"``: the optimizers follow PyTorch's rules and defaults
                (see the optimizers' docstrings), so Keras's default could not be
                matched by name alone.
            loss: a loss name, class or instance; for several outputs one loss
                for all, a list (one per output) or a dict keyed by output name.
            metrics: a list of metric names/instances or plain functions
                ``fn(y_true, y_pred)`` (applied to every output; keys become
                ``<output>_<metric>`` for several outputs), a list of lists or
                a dict keyed by output name.
            loss_weights: a list or dict of floats weighting each output's loss.
            weighted_metrics: metrics in the same forms, which ``sample_weight``
                and ``class_weight`` weight; as in Keras, ``metrics`` are not
                weighted (the loss is). A name in both is logged ``weighted_<name>``
                for the weighted one.

        Raises:
            UnknownNameError: an unknown optimizer, loss or metric name.
            ConfigError: a loss missing for an output, or malformed arguments.
        """
        from framework.models.compile import compile_model

        compile_model(self, optimizer, loss, metrics, loss_weights, weighted_metrics)

    def compile_config(self) -> dict[str, Any]:
        """``compile``'s arguments as JSON data: the loss and metrics, and the optimizer as it is now."""
        from framework.models.compile import compile_config

        return compile_config(self)

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Compile from :meth:`compile_config`'s output."""
        from framework.models.compile import compile_from_config

        compile_from_config(self, config)

    def _require_compiled(self, what: str) -> None:
        if not self.compiled:
            raise NotCompiledError(
                f"{self.describe()}: {what}() needs a compiled model; call "
                "model.compile(optimizer=..., loss=...) first"
            )

    # -- display and serialisation -----------------------------------------

    def summary(
        self, print_fn: Any = None, line_length: int | None = None, expand_nested: bool = False
    ) -> str | None:
        """Print a table of layers, output shapes and parameter counts.

        With ``print_fn``, each line is passed to it and the text is returned;
        ``expand_nested`` lists a nested model's layers under its row.
        """
        from framework.models.summary import print_summary

        return print_summary(self, print_fn, line_length=line_length, expand_nested=expand_nested)

    def get_config(self) -> dict[str, Any]:
        if self._graph is not None:
            from framework.models.serialize import graph_config, ties_of

            return {"name": self.name, **graph_config(self._graph, self.describe()), **ties_of(self)}
        return super().get_config()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Model:
        if "layers" in config and "input_layers" in config:
            from framework.models.serialize import functional_from_config

            return functional_from_config(cls, config)
        return super().from_config(config)

    def extra_repr(self) -> str:
        return f"{len(self.layers)} layers, {parameter_count(self)} parameters"


class _Unoverridden(Layer):
    """Wraps a model so ``infer_output_shape`` dry-runs its ``forward``."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model
        self.built = True

    def forward(self, ctx: Context, x: Any) -> Any:
        return self.model.forward(ctx, x)


def _attribute_holding(layer: Layer, param: Parameter) -> tuple[Layer, str] | None:
    """``(owner, attribute name)`` of the layer attribute that is ``param`` (searched depth-first)."""
    for key, value in vars(layer).items():
        if value is param:
            return layer, key
    return next((f for _, c in layer.named_children() if (f := _attribute_holding(c, param))), None)


class _Probe:
    """Where ``dtype`` found the first parameter (a plain object: layers look into tuples and lists)."""

    __slots__ = ("key", "owner", "param")

    def __init__(self, owner: Layer, key: str, param: Parameter) -> None:
        self.owner, self.key, self.param = owner, key, param


def __getattr__(name: str) -> Any:
    # Names that lived in this module before it was split.
    if name == "Sequential":
        from framework.models.sequential import Sequential

        return Sequential
    if name in ("serialize_model", "deserialize_model"):
        from framework.models import serialize

        return getattr(serialize, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
