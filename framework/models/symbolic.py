"""A model's symbolic tensors, as Keras names them: ``inputs``, ``outputs``, ``input``, ``output``.

- A functional ``Model``: ``inputs`` / ``outputs`` are lists of the ``Input``
  placeholders and of the output tensors, in order; ``input`` / ``output`` are
  what was given to the constructor (one tensor, or a list), as Keras 3's.
- A built ``Sequential``: the tensors of its stack traced once over an ``Input``
  of its input shape (Keras builds the same graph), traced again after
  ``add``, ``pop`` or a ``build`` for another shape; ``input`` / ``output`` are
  the single tensors. ``Model(seq.inputs, seq.outputs)`` runs the same layers.
- An unbuilt ``Sequential`` has none yet: :class:`SymbolicNotBuiltError`; a
  ``Model`` subclass has none at all (its ``forward`` is Python code, not a
  graph of layer calls): :class:`NoSymbolicTensorsError`. Both are also
  ``AttributeError`` s, as Keras raises, so ``hasattr(model, "inputs")`` is
  ``False`` for them.

A subclass may keep an attribute of its own under one of these names
(``self.output = Linear(...)``): it is stored and read as a plain attribute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework.errors import ConfigError, FrameworkError, NotBuiltError

if TYPE_CHECKING:
    from framework.models.graph import SymbolicTensor

__all__ = ["NoSymbolicTensorsError", "SymbolicMethods", "SymbolicNotBuiltError"]


class SymbolicNotBuiltError(NotBuiltError, AttributeError):
    """A ``Sequential`` is not built, so it has no symbolic inputs and outputs yet."""


class NoSymbolicTensorsError(ConfigError, AttributeError):
    """A ``Model`` subclass runs Python code, not a graph: it has no symbolic inputs and outputs."""


class _Trace:
    """A ``Sequential``'s traced tensors and what they were traced for (never pickled: traced again)."""

    __slots__ = ("inputs", "key", "outputs")

    def __init__(self, key: Any, inputs: list[SymbolicTensor], outputs: list[SymbolicTensor]) -> None:
        self.key, self.inputs, self.outputs = key, inputs, outputs

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.key, self.inputs, self.outputs = None, [], []


def _sequential_trace(model: Any) -> _Trace:
    if not model.built:
        raise SymbolicNotBuiltError(
            f"{model.describe()} is not built, so it has no symbolic inputs and outputs yet; give it an "
            "input shape (Input(shape) first, input_shape=...), call model.build(input_shape) or run it "
            "on data"
        )
    layers = model.layers
    key = (tuple(model.input_shape), tuple(id(layer) for layer in layers))  # the trace holds the layers
    trace = model.__dict__.get("_symbolic_trace")
    if trace is not None and trace.key == key:
        return trace
    declared = model.declared_input_shape
    try:  # the sizes an Input declared unknown (None) stay unknown, as Keras traces them
        x, out = _trace(model, declared or model.input_shape)
    except FrameworkError:
        if declared is None or declared == model.input_shape:
            raise
        x, out = _trace(model, model.input_shape)  # a stack that needs the sizes its first batch had
    trace = _Trace(key, [x], list(out) if isinstance(out, list) else [out])
    model.__dict__["_symbolic_trace"] = trace
    return trace


def _trace(model: Any, shape: tuple[int | None, ...]) -> tuple[SymbolicTensor, Any]:
    from framework.models.graph import Input

    x = Input(shape[1:], name=model.input_name)
    out: Any = x
    for layer in model.layers:
        out = layer(out)
    return x, out


def _tensors(model: Any, which: str) -> Any:
    """``which`` (``inputs``, ``outputs``, ``input`` or ``output``) of ``model``, per the module docstring."""
    graph = model._graph
    if graph is not None:
        tensors = graph.inputs if which.startswith("input") else graph.outputs
        several = graph.multi_in if which.startswith("input") else graph.multi_out
    elif "_stack" in vars(model):
        trace = _sequential_trace(model)
        tensors = trace.inputs if which.startswith("input") else trace.outputs
        several = len(tensors) > 1
    else:
        raise NoSymbolicTensorsError(
            f"{model.describe()} has no symbolic {which}: a {type(model).__name__} (a Model subclass) runs "
            "its forward() as Python code, not as a graph of layer calls; build a functional "
            "Model(inputs, outputs) over Input() placeholders to have them"
        )
    if which.endswith("s") or several:
        return list(tensors)
    return tensors[0]


class SymbolicMethods:
    """``inputs``, ``outputs``, ``input`` and ``output`` of a model (see the module docstring)."""

    @property
    def inputs(self) -> list[SymbolicTensor]:
        """The model's ``Input`` placeholders, in order (a new list).

        Raises:
            SymbolicNotBuiltError: an unbuilt ``Sequential``.
            NoSymbolicTensorsError: a ``Model`` subclass.
        """
        return vars(self)["inputs"] if "inputs" in vars(self) else _tensors(self, "inputs")

    @inputs.setter
    def inputs(self, value: Any) -> None:
        vars(self)["inputs"] = value

    @property
    def outputs(self) -> list[SymbolicTensor]:
        """The model's output tensors, in order (a new list); raises as :attr:`inputs`."""
        return vars(self)["outputs"] if "outputs" in vars(self) else _tensors(self, "outputs")

    @outputs.setter
    def outputs(self, value: Any) -> None:
        vars(self)["outputs"] = value

    @property
    def input(self) -> Any:
        """The input tensor, or the list of them for a model of several inputs; raises as :attr:`inputs`."""
        return vars(self)["input"] if "input" in vars(self) else _tensors(self, "input")

    @input.setter
    def input(self, value: Any) -> None:
        vars(self)["input"] = value

    @property
    def output(self) -> Any:
        """The output tensor, or the list of them for a model of several outputs; raises as :attr:`inputs`."""
        return vars(self)["output"] if "output" in vars(self) else _tensors(self, "output")

    @output.setter
    def output(self, value: Any) -> None:
        vars(self)["output"] = value
