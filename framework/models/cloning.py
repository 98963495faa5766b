"""``clone_model``: a new model of the same architecture with freshly initialised weights (Keras's).

- A ``Sequential`` is rebuilt layer by layer (its ``Input`` or ``input_shape`` kept), a
  functional ``Model`` by replaying its graph's calls on new ``Input`` placeholders (the same
  names, shapes and dtypes; the calls' extra arguments and pinned ``training`` modes kept).
- Each layer is cloned by ``clone_function(layer)``, by default a new layer of its class from
  its ``get_config()`` (registered or not), with its name and ``trainable`` flags. A layer
  called at several places (a shared layer) is cloned once and called again at each place.
- A nested ``Sequential`` or functional model is cloned whole, with fresh weights (Keras's
  default); with a ``clone_function`` it is passed to it, unless ``recursive=True``, which
  clones it with the same ``clone_function``.
- A ``Model`` subclass is rebuilt from its config (``type(model).from_config(model.get_config())``),
  as ``load_model`` rebuilds it; a ``clone_function`` cannot reach the layers its constructor
  makes, so it is refused.

The clone is built when the original is (for the same input shape), has the original's
parameter dtypes, tied weights and ``trainable`` flags, and is not compiled. The original is
not changed; its weights are not copied (``clone.set_weights(model.get_weights())`` does).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from framework.base.layer import Layer
from framework.errors import ConfigError
from framework.models.graph import Input, InputLayer, SymbolicTensor
from framework.models.model import Model
from framework.models.rebuild import rebuild_class, set_trainable_flags, trainable_flags
from framework.models.sequential import Sequential
from framework.models.serialize import tie_parameters, tied_parameters

__all__ = ["clone_layer", "clone_model"]


def clone_model(
    model: Model, clone_function: Callable[[Layer], Layer] | None = None, *, recursive: bool = False
) -> Model:
    """A new model of ``model``'s architecture, with freshly initialised weights (Keras's ``clone_model``).

    Args:
        model: a ``Sequential``, a functional ``Model`` or a ``Model`` subclass.
        clone_function: ``fn(layer) -> layer``, called once for each layer (not for the
            ``Input`` placeholders) to make the layer used in its place: to replace some layers,
            or return a layer itself to share it with ``model``. Default: :func:`clone_layer`.
        recursive: clone nested ``Sequential`` and functional models with ``clone_function``
            too (default ``False``: ``clone_function`` gets the nested model itself).

    Returns:
        The clone: built if ``model`` is, with its name and layer names, not compiled.

    Raises:
        ConfigError: ``model`` is not a Model, ``clone_function`` is not callable or returns
            something else than a layer, or is given for a Model subclass.

    Example:
        >>> from framework import Sequential
        >>> from framework.layers import Linear
        >>> from framework.models import clone_model
        >>> model = Sequential([Linear(4, 2)], name="mlp")
        >>> twin = clone_model(model)
        >>> twin.name, twin.get_config() == model.get_config(), twin[0].weight is model[0].weight
        ('mlp', True, False)
    """
    if not isinstance(model, Model):
        raise ConfigError(
            f"clone_model: expected a Model (Sequential, functional or subclass), got {type(model).__name__}"
        )
    if clone_function is not None and not callable(clone_function):
        raise ConfigError(
            "clone_model: clone_function must be callable (a layer -> the layer to use in its place), "
            f"got {type(clone_function).__name__} {clone_function!r}"
        )
    clone = _Cloner(clone_function, bool(recursive)).model(model)
    if clone_function is None:  # the same layer names: the ties and flags recorded by name apply as they are
        tie_parameters(clone, tied_parameters(model))
        set_trainable_flags(clone, trainable_flags(model))
    elif not model.trainable:
        clone.trainable = False
    _match_dtypes(model, clone)
    return clone


def clone_layer(layer: Layer) -> Layer:
    """A new layer of ``layer``'s class from its ``get_config()``: fresh weights, its name and flags.

    The ``trainable`` flags of the layer and of the sub-layers its constructor makes are kept.

    Raises:
        ConfigError: the class's constructor cannot take its ``get_config()``.
    """
    fresh = rebuild_class(type(layer), copy.deepcopy(layer.get_config()))
    if not isinstance(fresh, Layer):
        raise ConfigError(
            f"clone_model: {type(layer).__name__}.from_config did not return a layer, "
            f"got {type(fresh).__name__}"
        )
    if not layer.trainable:
        fresh.trainable = False
    set_trainable_flags(fresh, {key: flag for key, flag in trainable_flags(layer).items() if key})
    return fresh


def _kind(model: Model) -> str:
    """``"sequential"``, ``"functional"`` or ``"subclass"``, as ``serialize_model`` tells them apart."""
    if isinstance(model, Sequential) and type(model).get_config is Sequential.get_config:
        return "sequential"
    if model._graph is not None and type(model).get_config is Model.get_config:
        return "functional"
    return "subclass"


class _Cloner:
    """One ``clone_model`` call: its options and the clone of each layer met so far (shared ones once)."""

    def __init__(self, clone_function: Callable[[Layer], Layer] | None, recursive: bool) -> None:
        self.clone_function = clone_function
        self.recursive = recursive
        self.made: dict[int, Layer] = {}
        self.originals: list[Layer] = []  # keeps the ids of ``made`` theirs

    def model(self, model: Model) -> Model:
        kind = _kind(model)
        if kind == "sequential" and isinstance(model, Sequential):
            return self.sequential(model)
        if kind == "functional":
            return self.functional(model)
        if self.clone_function is not None:
            raise ConfigError(
                f"clone_model: {model.describe()} is a Model subclass, whose layers its constructor makes, "
                "so clone_function cannot replace them; clone it without clone_function (from its config)"
            )
        fresh: Any = clone_layer(model)
        shape = model.input_shape
        if model.built and shape is not None and not (fresh.built and all(c.built for c in fresh.children())):
            fresh.build(shape)
        return fresh

    def layer(self, layer: Layer) -> Layer:
        """The clone of ``layer``, made at its first meeting."""
        found = self.made.get(id(layer))
        if found is not None:
            return found
        nested = isinstance(layer, Model) and _kind(layer) != "subclass"
        if isinstance(layer, Model) and (self.clone_function is None or (self.recursive and nested)):
            fresh: Layer = self.model(layer)
        elif self.clone_function is None:
            fresh = clone_layer(layer)
        else:
            fresh = self.clone_function(layer)
            if not isinstance(fresh, Layer):
                raise ConfigError(
                    f"clone_model: clone_function, given {layer.describe()}, expected a Layer to use in its "
                    f"place, got {type(fresh).__name__} {fresh!r}"
                )
        self.made[id(layer)] = fresh
        self.originals.append(layer)
        return fresh

    def sequential(self, model: Sequential) -> Sequential:
        stack = [self.layer(layer) for layer in model.layers]  # all made first, as Sequential([...]) is
        clone = Sequential(name=model.name)
        declared = model.declared_input_shape
        if declared is not None:
            clone.add(Input(declared[1:], name=model.input_name))
        for layer in stack:
            clone.add(layer)
        if model.built and not clone.built:
            clone.build(model.input_shape)
        return clone

    def functional(self, model: Model) -> Model:
        graph = model._graph
        assert graph is not None
        tensors: dict[int, SymbolicTensor] = {}
        for t in graph.inputs:
            source: Any = t.node.layer  # an InputLayer
            tensors[id(t)] = Input(source.shape, source.dtype, name=source.name)
        for node in graph.nodes:  # in execution order: every call's inputs exist before it
            if isinstance(node.layer, InputLayer):
                continue
            layer = self.layer(node.layer)
            args = [tensors[id(t)] for t in node.inputs]
            extra = tuple(tensors[id(a)] if id(a) in tensors else a for a in node.args)
            options = {k: tensors[id(v)] if id(v) in tensors else v for k, v in node.kwargs.items()}
            out = layer(args if node.list_input else args[0], *extra, training=node.training, **options)
            for t, made in zip(node.outputs, out if node.list_output else [out]):
                tensors[id(t)] = made
        inputs = [tensors[id(t)] for t in graph.inputs]
        outputs = [tensors[id(t)] for t in graph.outputs]
        return Model(
            inputs if graph.multi_in else inputs[0],
            outputs if graph.multi_out else outputs[0],
            name=model.name,
        )


def _match_dtypes(model: Model, clone: Model) -> None:
    """Give each parameter and floating buffer of ``clone`` the dtype of ``model``'s of the same name."""
    theirs = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for name, param in clone.named_parameters():
        source = theirs.get(name)
        if source is not None and source.shape == param.shape and source.dtype != param.dtype:
            param.astype(source.dtype)
    for name, buffer in clone.named_buffers():
        source = theirs.get(name)
        if (
            source is not None
            and source.shape == buffer.shape
            and source.dtype != buffer.dtype
            and np.issubdtype(buffer.data.dtype, np.floating)
        ):
            buffer.data = buffer.data.astype(source.dtype)
