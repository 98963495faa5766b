"""``Sequential``: a linear stack of layers, each one's output the next one's input."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np

from framework.base.calling import matches
from framework.base.context import Context
from framework.base.inputs import takes_uncast
from framework.base.layer import Layer, format_shape
from framework.base.traits import declares
from framework.errors import ConfigError, NotBuiltError, ShapeError
from framework.models import layouts
from framework.models.executor import unique_name
from framework.models.graph import InputLayer, SymbolicTensor, connect
from framework.models.model import Model
from framework.models.stack_edits import is_size, sample_shape, stack_changed

__all__ = ["Sequential"]


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
        self._layout_plan: layouts.Plan | None = None
        self._in_shape: tuple[int | None, ...] | None = None
        # the input shape as declared (Input or input_shape=), unknown sizes kept None when a batch
        # builds the stack, and the Input's name: what an exporter writes for the model's input
        self.declared_input_shape: tuple[int | None, ...] | None = None
        self.input_name: str | None = None
        if input_shape is not None:
            self._in_shape = self.declared_input_shape = (None, *sample_shape(input_shape, self))
        if layers is not None:
            if isinstance(layers, Layer):
                layers = [layers]
            try:
                items = None if isinstance(layers, (str, bytes)) else iter(layers)
            except TypeError:
                items = None
            if items is None:
                raise ConfigError(
                    f"{self.describe()}: layers must be a layer or a list of layers (an Input(shape) may "
                    f"come first), got {type(layers).__name__} {layers!r}"
                )
            for layer in items:
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
            if self._in_shape is not None and tuple(layer.shape) != self._in_shape:
                raise ConfigError(
                    f"{self.describe()}: the Input's shape {format_shape(tuple(layer.shape))} differs from "
                    f"input_shape {format_shape(self._in_shape)}; give the input shape once"
                )
            self._in_shape = self.declared_input_shape = tuple(layer.shape)
            self.input_name = layer.node.layer.name
            return
        if not isinstance(layer, Layer):
            raise ConfigError(
                f"{self.describe()}.add: expected a Layer, got {type(layer).__name__} {layer!r}"
            )
        if layer is self or any(inner is self for inner in layer.modules()):
            what = "itself" if layer is self else f"{layer.describe()}, which contains it"
            raise ConfigError(f"{self.describe()}.add: a model cannot contain {what}")
        if any(existing is layer for existing in self._stack.values()):
            raise ConfigError(
                f"{self.describe()}.add: {layer.describe()} is already in the model; "
                "one instance cannot be used twice (it caches one forward pass)"
            )
        if not self._stack and isinstance(layer.input_shape, list):
            raise ConfigError(
                f"{self.describe()}.add: {layer.describe()} takes {len(layer.input_shape)} inputs, but a "
                "Sequential is given one array; build this model with the functional API, "
                "Model(inputs, outputs)"
            )
        name = unique_name(layer, self._stack, self.describe())
        if not self._stack and self._in_shape is None and layer.built and layer.input_shape is not None:
            self._in_shape = layer.input_shape
            self._in_shape_guessed = True
        shape = self._shapes[-1] if self._stack else self._in_shape
        if self._stack and not _fully_known(shape):
            # An earlier layer's output has a size only data will tell (a sequence's length):
            # the rest of the stack is built on the first batch, as Keras defers it.
            shape = None
        previous = list(self._stack.values())[-1] if self._stack else None
        try:
            out = connect(layer, shape, previous) if shape is not None else None
        except ShapeError as exc:
            guessed = self.__dict__.get("_in_shape_guessed", False)
            if isinstance(shape, list) and previous is not None:
                raise ShapeError(
                    f"cannot connect {previous.describe()} to {layer.describe()}: it returns "
                    f"{len(shape)} outputs {format_shape(shape)}, but a Sequential passes one array from "
                    "layer to layer; build this model with the functional API, Model(inputs, outputs)"
                ) from exc
            if not (self._stack and guessed and _takes_more_axes(layer, shape)):
                raise
            # The first layer was built for (N, features) by its sizes (a Linear), but it takes
            # any (N, *, features) and this layer wants more axes: the first batch tells the shape.
            self._in_shape = None
            self._shapes = [None] * len(self._shapes)
            out = None
        self._stack[name] = layer
        self._shapes.append(out)
        self._refresh_built()
        stack_changed(self)

    def pop(self) -> Layer:
        """Remove and return the last layer."""
        if not self._stack:
            raise ConfigError(f"{self.describe()}.pop: the model has no layers")
        name = list(self._stack)[-1]
        self._shapes.pop()
        layer = self._stack.pop(name)
        if not self._stack and self.__dict__.get("_in_shape_guessed", False):
            # the input shape came from the popped first layer's own sizes, not from the user
            self._in_shape = self.input_shape = None
            self._in_shape_guessed = False
        self._refresh_built()
        stack_changed(self)
        return layer

    def _refresh_built(self) -> None:
        self._dtype_probe = None
        self._run_order = None
        self._layout_plan = None
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
        if not isinstance(input_shape, (tuple, list)) or not all(is_size(d) for d in input_shape):
            raise ConfigError(
                f"{self.describe()}.build: input_shape must be a tuple of sizes such as (None, 784), "
                f"got {input_shape!r}"
            )
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
                if declares(order[i], "monotone_elementwise") and declares(order[i + 1], "window_max"):
                    order[i], order[i + 1] = order[i + 1], order[i]
                    i += 2
                else:
                    i += 1
            self._run_order = order
        return self._run_order

    def _first_needed(self, order: list[Layer]) -> int:
        """Index of the first layer whose backward runs when nobody needs ``dL/dx``.

        It is the first layer with trainable parameters (it computes only
        their gradients); the layers before it have none, so backward stops
        there. 0 when that layer is itself a model.
        """
        for i, layer in enumerate(order):
            if any(p.trainable for _, p in layer.named_parameters()):  # lazily: it runs every step
                return 0 if isinstance(layer, Model) else i
        return len(order)

    def forward(self, ctx: Context, x: Any) -> Any:
        if not isinstance(x, np.ndarray) or (x.dtype != self.dtype and not takes_uncast(self, ctx, x)):
            x = self.cast_inputs(x)
        declared = self.declared_input_shape  # an Input / input_shape=: checked as a functional Input is
        if declared is not None and isinstance(x, np.ndarray) and not matches(declared, x.shape):
            raise ShapeError(
                f"{self.describe()} expected input of shape {format_shape(declared)} (its Input or "
                f"input_shape), got {format_shape(x.shape)}"
            )
        if not self.built and isinstance(x, np.ndarray):  # deferred: the first batch tells the sizes
            self.build((None, *x.shape[1:]))
        elif self.__dict__.get("_in_shape_guessed") and isinstance(x, np.ndarray):
            self._settle_guessed_shape(x.shape)
        order = self._order()
        training, record = ctx.training, ctx.record
        first = 0 if ctx.needs_input_grad else self._first_needed(order)
        plan = self._current_plan(order)
        batch_last: set[int | None] = set()  # the runs this call runs batch-last, each decided as it opens
        tape: list[Context] = []
        for i, layer in enumerate(order):
            layer_ctx = Context(
                training, needs_input_grad=i != first or ctx.needs_input_grad, record=record, nested=True
            )
            role = plan.role(i, x, batch_last)
            x = layer.forward(layer_ctx, x) if role is None else layouts.forward(layer, layer_ctx, x, role)
            if record:
                tape.append(layer_ctx)
        if record:
            ctx.tape = tape
            ctx.first = first
        return x

    def _current_plan(self, order: list[Layer]) -> layouts.Plan:
        """The batch-last runs of ``order`` (see ``layouts``), planned again after a layer changed."""
        plan = self.__dict__.get("_layout_plan")
        if plan is None or not plan.current():
            plan = self._layout_plan = layouts.plan(order)
        return plan

    def _settle_guessed_shape(self, shape: tuple[int, ...]) -> None:
        """The first batch replaces an input shape guessed from the first layer's sizes (a
        ``Linear(5, 4)``: ``(None, 5)``) when it has more axes (``(2, 3, 5)``), so that what the
        model records (``input_shape``, an ONNX export's declared input) is what it was run on."""
        if self._in_shape is not None and len(shape) != len(self._in_shape):
            self.build((None, *shape[1:]))
            self._in_shape_guessed = False  # the data's shape now, not a guess

    def backward(self, ctx: Context, grad_out: Any) -> Any:
        tape: list[Context] | None = getattr(ctx, "tape", None)
        if tape is None:
            raise NotBuiltError(f"{self.describe()}: backward() called before forward()")
        order = self._order()
        # Whether grad_out is an array only this loop holds, which the next layer may
        # overwrite: never the caller's; a new array from a layer that declares
        # ``returns_fresh_grad``; and what a pass-through layer (Flatten, Identity)
        # hands back keeps the ownership of what it was given.
        writable = False
        # A fused loss gradient (``dL/dlogits``) enters below the output activation.
        top = len(order) - (2 if getattr(ctx, "grad_at_logits", False) else 1)
        for i in range(top, ctx.first - 1, -1):
            layer_ctx = tape[i]
            layer_ctx.grad_out_writable = writable
            grad_in = layouts.backward(order[i], layer_ctx, grad_out)  # in the layout its forward ran in
            if grad_in is None:  # a first layer with needs_input_grad=False (see fit)
                return None
            if grad_in is not grad_out:
                if not isinstance(grad_in, np.ndarray) or not grad_in.flags.writeable:
                    writable = False
                elif isinstance(grad_out, np.ndarray) and np.may_share_memory(grad_in, grad_out):
                    # a view: its owner's, unless it aliases
                    writable = writable and all(
                        s != 0 for s, n in zip(grad_in.strides, grad_in.shape) if n > 1
                    )
                else:
                    writable = declares(order[i], "returns_fresh_grad", "backward")
            grad_out = grad_in
        return None if ctx.first > 0 else grad_out

    def layer_output_shapes(self) -> list[Any]:
        """The output shape of each layer (``None`` where not yet known)."""
        return list(self._shapes)

    def get_config(self) -> dict[str, Any]:
        from framework.models.serialize import ties_of

        return {
            "name": self.name,
            "input_shape": None if self._in_shape is None else list(self._in_shape),
            "layers": [_serialize(layer, name) for name, layer in self._stack.items()],
            **ties_of(self),
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
            model.add(_deserialize(entry))
        if shape is not None and not model.built:
            model.build(tuple(shape))
        from framework.models.serialize import tie_parameters

        tie_parameters(model, config.get("tied"))
        return model


def _serialize(layer: Layer, name: str) -> dict[str, Any]:
    from framework.models.serialize import serialize_layer

    return serialize_layer(layer, name)


def _deserialize(entry: dict[str, Any]) -> Layer:
    from framework.models.serialize import deserialize_layer

    return deserialize_layer(entry)


def _takes_more_axes(layer: Layer, shape: Any) -> bool:
    """Whether (a copy of) ``layer`` connects to ``shape`` with one more unknown axis after the batch."""
    if not isinstance(shape, tuple) or not shape:
        return False
    try:
        connect(copy.deepcopy(layer), (shape[0], None, *shape[1:]))
    except Exception:
        return False
    return True


def _fully_known(shape: Any) -> bool:
    """Whether every size but the batch axis of ``shape`` (or of each of a list of shapes) is known."""
    if shape is None:
        return False
    shapes = shape if isinstance(shape, list) else [shape]
    return all(isinstance(s, tuple) and all(d is not None for d in s[1:]) for s in shapes)
