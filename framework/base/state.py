"""What a layer holds, as arrays: counts, state dicts, Keras's weight lists, dtype.

:class:`LayerState` is a mixin of :class:`~framework.Layer`: it finds the
``Parameter`` and ``Buffer`` objects a layer holds as attributes (directly or in
lists, tuples and dicts, see :func:`tracked_attributes`) and in its children,
and needs only ``named_children()`` and ``describe()`` from the layer.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from framework.base.calling import format_shape
from framework.base.parameter import Buffer, Parameter
from framework.errors import ConfigError, DataError, NotBuiltError, ShapeError

__all__ = ["LayerState", "builds_weights", "parameter_count", "tracked_attributes", "unbuilt_layer"]

#: How deep ``tracked_attributes`` follows lists and dicts nested in lists and dicts.
_MAX_NESTING = 8


def tracked_attributes(obj: Any) -> Iterator[tuple[str, Any]]:
    """``(dotted name, value)`` of each attribute of ``obj`` that may be or hold a layer, flattened.

    Plain values (numbers, strings, ``None``, arrays) are left out, wherever they are.

    The items of a list, tuple or dict attribute (and of the lists and dicts in
    them) are yielded under dotted names: ``blocks.0``, ``heads.left``,
    ``stages.1.conv``, as PyTorch names the members of a ``ModuleList`` or
    ``ModuleDict``. This is how a layer finds the child layers, ``Parameter``
    and ``Buffer`` objects it holds in plain Python containers (Keras's
    tracking), so none is silently left out of ``parameters()``, checkpoints
    or ``train()`` / ``eval()``.
    """
    for key, value in list(vars(obj).items()):
        kind = type(value)
        if kind in _PLAIN_TYPES or isinstance(value, _PLAIN):  # numbers, strings, arrays: never a layer
            continue
        if kind in _CONTAINER_TYPES or isinstance(value, (list, tuple, dict)):
            yield from _items(key, value, 1)
        else:
            yield key, value


#: Values inside a container that are never a layer, Parameter or container: skipped unnamed.
_PLAIN = (int, float, complex, str, bytes, type(None), np.ndarray, np.generic)
#: The commonest of those types and of the containers, tried first by a set lookup: the walks run for
#: every layer at every ``parameters()``, ``state_dict()`` or save, and ``isinstance`` against a tuple of
#: types costs several times a lookup (subclasses still go through ``isinstance``).
_PLAIN_TYPES = frozenset({int, float, bool, str, bytes, type(None), np.ndarray, np.float32, np.float64})
_CONTAINER_TYPES = frozenset({list, tuple, dict})


def _items(name: str, container: Any, depth: int) -> Iterator[tuple[str, Any]]:
    pairs = container.items() if isinstance(container, dict) else enumerate(container)
    for key, value in list(pairs):
        kind = type(value)
        if kind in _PLAIN_TYPES or isinstance(value, _PLAIN):  # a shape's sizes, a config's numbers
            continue
        dotted = f"{name}.{key}"
        if kind in _CONTAINER_TYPES or isinstance(value, (list, tuple, dict)):
            if depth < _MAX_NESTING:
                yield from _items(dotted, value, depth + 1)
        else:
            yield dotted, value


_DISCOVERY = ("parameters", "named_parameters", "buffers", "named_buffers")


def _overrides_discovery(kind: type) -> bool:
    """Whether ``kind`` lists its parameters or buffers by its own method (DESIGN: it may)."""
    return any(getattr(kind, name, None) is not getattr(LayerState, name) for name in _DISCOVERY)


def _tree(layer: Any) -> Iterator[Any]:
    """``layer`` and every layer under it (a layer reached twice is yielded twice)."""
    yield layer
    for _, child in layer.named_children():
        yield from _tree(child)


def parameter_count(layer: Any, trainable: bool | None = None) -> int:
    """``layer.count_params(trainable)`` without its check: the scalars that exist now (0 before build).

    ``summary()`` of an unbuilt model shows these (``?`` shapes, 0 parameters).
    """
    params = layer.parameters()
    n_train = sum(p.size for p in params if p.trainable)
    n_frozen = sum(p.size for p in params if not p.trainable) + sum(b.size for b in layer.buffers())
    if trainable is None:
        return n_train + n_frozen
    return n_train if trainable else n_frozen


def unbuilt_layer(layer: Any) -> Any:
    """The first layer at or under ``layer`` (sub-layers first) whose weights may not exist yet, or ``None``.

    Such a layer is not built, holds no ``Parameter`` or ``Buffer``, and makes weights in its
    ``build`` (see :func:`builds_weights`): ``Linear(output_size=4)`` before its input size is
    known, a Keras-style layer. A layer whose weights were made by its constructor (PyTorch's
    way: ``Conv2d(1, 2, 3)``, ``BatchNorm(3)``) and one whose ``build`` makes none (``ReLU``,
    pools, ``Flatten``) have their count before they are built.
    """
    for _, child in layer.named_children():
        found = unbuilt_layer(child)
        if found is not None:
            return found
    if layer.built or not builds_weights(type(layer)):  # type: ignore[arg-type]  # classes hash by id
        return None
    holds = next(layer.named_parameters(), None) is not None or next(layer.named_buffers(), None) is not None
    return None if holds else layer


#: Names that, in a ``build``, make weights: the state classes and Keras's method.
_MAKERS = frozenset({"Parameter", "Buffer", "add_weight"})


@functools.lru_cache(maxsize=1024)
def builds_weights(kind: type) -> bool:
    """Whether a ``build`` written by layer class ``kind`` (or a base below ``Layer``) may make weights.

    Read from the code: the ``build`` (or a method of ``kind`` it names, followed) names
    ``Parameter``, ``Buffer``, ``add_weight`` or a layer class (a sub-layer made there). A
    ``build`` that only checks shapes makes none.
    """
    from framework.base.layer import Layer

    followed: set[Any] = set()

    def makes(code: types.CodeType, names: dict[str, Any]) -> bool:
        for name in code.co_names:
            found = names.get(name)
            if name in _MAKERS or (
                isinstance(found, type) and issubclass(found, Layer) and found is not Layer
            ):
                return True
            method = getattr(vars(kind).get(name), "__func__", None) or getattr(kind, name, None)
            if isinstance(method, types.FunctionType) and not hasattr(Layer, name) and method not in followed:
                followed.add(method)
                if makes(method.__code__, method.__globals__):
                    return True
        return any(makes(const, names) for const in code.co_consts if isinstance(const, types.CodeType))

    for base in kind.__mro__:
        if base is Layer or not issubclass(base, Layer):
            break
        build = vars(base).get("build")
        if isinstance(build, types.FunctionType) and makes(build.__code__, build.__globals__):
            return True
    return False


def _not_built_message(layer: Any, pending: Any) -> str:
    way = "call it on data, or build it with .build(input_shape) (a model: also Input(shape) or input_shape=)"
    where = "it is not built" if pending is layer else f"{pending.describe()} in it is not built"
    return f"cannot count the parameters of {layer.describe()}: {where}, so they do not all exist yet; {way}"


class LayerState:
    """Parameter and buffer arrays of a layer and its children, as Keras and PyTorch expose them."""

    # Provided by Layer.
    def named_children(self) -> Iterator[tuple[str, Any]]:
        raise NotImplementedError

    # -- discovery ---------------------------------------------------------------

    def _own_state(self, kind: type, prefix: str, seen: set[int]) -> Iterator[tuple[str, Any]]:
        """This layer's own ``kind`` objects (not its children's), each once across ``seen``.

        :func:`tracked_attributes` filtered to ``kind``, with its loop inlined: it runs for every
        layer at every ``parameters()``, ``state_dict()`` or save.
        """
        for key, value in list(vars(self).items()):
            if type(value) in _PLAIN_TYPES:
                continue
            if isinstance(value, kind):
                if id(value) not in seen:
                    seen.add(id(value))
                    yield prefix + key, value
            elif isinstance(value, (list, tuple, dict)) and value:
                for dotted, item in _items(key, value, 1):
                    if isinstance(item, kind) and id(item) not in seen:
                        seen.add(id(item))
                        yield prefix + dotted, item

    def _named_state(self, kind: type, prefix: str, seen: set[int]) -> Iterator[tuple[str, Any]]:
        yield from self._own_state(kind, prefix, seen)
        for name, child in self.named_children():
            yield from child._named_state(kind, f"{prefix}{name}.", seen)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` pairs, own first, each parameter once."""
        return self._named_state(Parameter, prefix, set())

    def parameters(self) -> list[Parameter]:
        """Every parameter of this layer and its children (trainable or frozen)."""
        return [p for _, p in self.named_parameters()]

    def trainable_parameters(self) -> list[Parameter]:
        return [p for p in self.parameters() if p.trainable]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Buffer]]:
        return self._named_state(Buffer, prefix, set())

    def buffers(self) -> list[Buffer]:
        return [b for _, b in self.named_buffers()]

    def describe(self) -> str:
        raise NotImplementedError

    def count_params(self, trainable: bool | None = None) -> int:
        """Number of scalars: all, trainable only (``True``) or non-trainable (``False``).

        Buffers count as non-trainable; a parameter held by several layers counts once.

        Raises:
            ConfigError: ``trainable`` is not ``None``, ``True`` or ``False``.
            NotBuiltError: a layer at or under this one has not made its parameters yet (see
                :func:`unbuilt_layer`: ``Linear(output_size=4)`` before its input size is known,
                alone or in a ``Sequential`` never built), as Keras refuses to count an unbuilt
                layer: the count would change when it is built.
        """
        if trainable is not None and not isinstance(trainable, (bool, np.bool_)):
            raise ConfigError(
                f"{self.describe()}.count_params: trainable must be None (all), True or False, "
                f"got {trainable!r}"
            )
        pending = unbuilt_layer(self)
        if pending is not None:
            raise NotBuiltError(_not_built_message(self, pending))
        return parameter_count(self, trainable)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers by dotted name (the arrays themselves, not copies)."""
        state = {name: p.data for name, p in self.named_parameters()}
        state.update({name: b.data for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Copy arrays into the parameters and buffers of the same names.

        Raises:
            ConfigError: with ``strict``, when names are missing or unexpected.
            ShapeError: when an array's shape differs from the parameter's.
        """
        targets: dict[str, Parameter | Buffer] = dict(self.named_parameters())
        targets.update(dict(self.named_buffers()))
        if strict:
            missing = sorted(set(targets) - set(state))
            unexpected = sorted(set(state) - set(targets))
            if missing or unexpected:
                raise ConfigError(
                    f"{self.describe()}: state does not match; missing {missing}, unexpected {unexpected}"
                )
        # every shape first, then every copy: a mismatch leaves the layer as it was
        pairs = [(name, target, np.asarray(state[name])) for name, target in targets.items() if name in state]
        for name, target, value in pairs:
            if value.shape != target.shape:
                raise ShapeError(
                    f"{self.describe()}: {name} expected shape {format_shape(target.shape)}, "
                    f"got {format_shape(value.shape)}"
                )
        for _, target, value in pairs:
            np.copyto(target.data, value, casting="unsafe")

    # -- Keras's weight lists --------------------------------------------------

    def named_weights(self) -> list[tuple[str, Parameter | Buffer]]:
        """``(dotted name, weight)`` in Keras's order: each layer's parameters, then its buffers, then its
        children's (depth first), each weight once.

        For ``Sequential([Linear, BatchNorm, Linear])``: ``linear.weight, linear.bias,
        batch_norm.weight, batch_norm.bias, batch_norm.running_mean, batch_norm.running_var,
        linear_1.weight, linear_1.bias``, as Keras lists ``kernel, bias, gamma, beta,
        moving_mean, moving_variance, kernel, bias``.
        """
        found: list[tuple[str, Parameter | Buffer]] = []
        seen: set[int] = set()
        if any(_overrides_discovery(type(layer)) for layer in _tree(self)):
            # a layer that lists its parameters itself: take them as it gives them, buffers after
            names = [name for name, _ in self.named_parameters()]
            params = self.parameters()
            if len(names) != len(params):
                names = [f"weights.{i}" for i in range(len(params))]
            return [*zip(names, params), *self.named_buffers()]

        def visit(layer: Any, prefix: str) -> None:
            found.extend(layer._own_state(Parameter, prefix, seen))
            found.extend(layer._own_state(Buffer, prefix, seen))
            for name, child in layer.named_children():
                visit(child, f"{prefix}{name}.")

        visit(self, "")
        return found

    @property
    def weights(self) -> list[Parameter | Buffer]:
        """Every parameter and buffer, layer by layer (see :meth:`named_weights`), as Keras lists them."""
        return [w for _, w in self.named_weights()]

    @property
    def trainable_weights(self) -> list[Parameter]:
        """The trainable parameters, in :attr:`weights`' order."""
        return [w for w in self.weights if isinstance(w, Parameter) and w.trainable]

    @property
    def non_trainable_weights(self) -> list[Parameter | Buffer]:
        """Frozen parameters and buffers, in :attr:`weights`' order."""
        return [w for w in self.weights if not (isinstance(w, Parameter) and w.trainable)]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of :attr:`weights`' arrays, in that order."""
        return [w.data.copy() for w in self.weights]

    def set_weights(self, arrays: Any) -> None:
        """Copy ``arrays`` (in :attr:`weights`' order) into the parameters and buffers.

        Every array is checked before any is copied, so a refused call changes
        nothing. Real numbers of another dtype (float64, integers) are cast to
        the weight's dtype.

        Raises:
            ConfigError: ``arrays`` is not a list (or other iterable) of arrays.
            ShapeError: a wrong number of arrays, or an array of the wrong shape
                (naming the weight, the expected and the given shape).
            DataError: an array that does not hold real numbers (strings,
                complex numbers, objects), naming the weight and the dtype.
        """
        pairs = self.named_weights()
        names = [name for name, _ in pairs]
        if isinstance(arrays, Iterable) and not isinstance(arrays, (str, bytes, dict)):
            arrays = list(arrays)
        else:
            raise ConfigError(
                f"{self.describe()}.set_weights: expected a list of arrays ({', '.join(names)}), "
                f"got {type(arrays).__name__}"
            )
        if len(arrays) != len(pairs):
            raise ShapeError(
                f"{self.describe()}.set_weights: expected {len(pairs)} arrays ({', '.join(names)}), "
                f"got {len(arrays)}"
            )
        values = []
        for (name, target), array in zip(pairs, arrays):
            try:
                value = np.asarray(array)
            except ValueError as exc:  # a ragged nested list
                raise ShapeError(f"{self.describe()}.set_weights: {name} is not an array ({exc})") from None
            if value.shape != target.shape:
                raise ShapeError(
                    f"{self.describe()}.set_weights: {name} expected shape {format_shape(target.shape)}, "
                    f"got {format_shape(value.shape)}"
                )
            if value.dtype.kind not in "biuf":
                raise DataError(
                    f"{self.describe()}.set_weights: {name} expected real numbers (dtype {target.dtype}), "
                    f"got dtype {value.dtype}"
                )
            values.append(value)
        for (_, target), value in zip(pairs, values):
            np.copyto(target.data, value, casting="unsafe")

    def astype(self, dtype: Any) -> Any:
        """Convert every parameter and buffer to ``dtype``; returns ``self``."""
        for p in self.parameters():
            p.astype(dtype)
        for b in self.buffers():
            if np.issubdtype(b.data.dtype, np.floating):
                b.data = b.data.astype(dtype)
        return self
