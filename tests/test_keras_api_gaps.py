"""Keras model-API gaps hunt: what a Keras user expects of a model, checked against Keras 3's semantics.

Four areas, each against a reference written out here (closed-form counts, the state recorded at
the best epoch, the original model's own config and outputs):

- ``count_params()`` of a layer or model whose parameters do not exist yet (a ``Linear`` without
  its input size, a ``Sequential`` never built) raised nothing and returned 0; Keras raises
  ("the layer isn't built"). Every built-in layer is checked: before it is built its count is
  either refused (``NotBuiltError``) or the count it has once built, never another number.
- ``model.inputs`` / ``model.outputs`` (lists of the symbolic tensors) and ``model.input`` /
  ``model.output`` (as given to the constructor) of a functional ``Model`` and of a built
  ``Sequential``; ``Model(m.inputs, m.outputs)`` rebuilds the network over the same layers.
- ``framework.models.clone_model``: the same architecture with fresh weights, names kept, shared
  layers shared once, nested models cloned, ``clone_function`` replacing layers.
- ``EarlyStopping(restore_best_weights=True)`` restores every array and the batch counts
  (``num_batches_tracked``, which ``BatchNorm(momentum=None)`` averages by) of the best epoch,
  also after a checkpoint resume.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from support import requires_h5py
from test_builtins_conformance import DEFAULTS, LAYERS

import framework
from framework import Input, Layer, Model, Parameter, Sequential, layers
from framework.errors import ConfigError, FrameworkError, NotBuiltError
from framework.layers import (
    Add,
    BatchNorm,
    Concatenate,
    Conv2d,
    Dropout,
    Embedding,
    Flatten,
    Identity,
    InstanceNorm1d,
    Linear,
    MaxPool2d,
    ReLU,
)
from framework.models.summary import summary_text
from framework.registry.manager import REGISTRY
from framework.training.callbacks import EarlyStopping, LambdaCallback, ModelCheckpoint


def _x(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


# -- custom layers: a Keras-style one (weights made in build), registered and not ---------------------


class KerasDense(Layer):
    """A third-party layer written as in Keras: its weights appear in ``build``."""

    def __init__(self, units: int, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.units = units

    def build(self, input_shape: Any) -> None:
        gen = framework.get_rng()
        dtype = framework.get_default_dtype()
        self.kernel = Parameter(gen.standard_normal((input_shape[-1], self.units)).astype(dtype))
        self.offset = Parameter(np.zeros(self.units, dtype=dtype))
        super().build(input_shape)

    def forward(self, ctx: Any, x: np.ndarray) -> np.ndarray:
        ctx.x = x
        return x @ self.kernel.data + self.offset.data

    def backward(self, ctx: Any, grad_out: np.ndarray) -> np.ndarray:
        self.kernel.add_grad(ctx.x.T @ grad_out)
        self.offset.add_grad(grad_out.sum(axis=0))
        return grad_out @ self.kernel.data.T

    def output_shape(self, input_shape: Any) -> Any:
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


class RegisteredScale(Layer):
    """A plugin layer with a weight made at construction (registered below under a unique name)."""

    def __init__(self, features: int, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.features = features
        self.scale = Parameter(
            framework.get_rng().standard_normal(features).astype(framework.get_default_dtype())
        )

    def forward(self, ctx: Any, x: np.ndarray) -> np.ndarray:
        ctx.x = x
        return x * self.scale.data

    def backward(self, ctx: Any, grad_out: np.ndarray) -> np.ndarray:
        self.scale.add_grad((ctx.x * grad_out).sum(axis=0))
        return grad_out * self.scale.data

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "features": self.features}


class _Plugin:
    @framework.hookimpl
    def register_layers(self, register: Any) -> None:
        register(RegisteredScale, name="KerasApiGapsScale")
        register(KerasDense, name="KerasApiGapsDense")


if REGISTRY.name_of("layers", RegisteredScale) is None:
    REGISTRY.register_plugin(_Plugin(), name="keras-api-gaps-tests", distribution="tests")


class TwoLinear(Model):
    """A hand-built model whose layers take their input size from the first batch."""

    def __init__(self, hidden: int = 3, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.hidden = hidden
        self.first = Linear(output_size=hidden)
        self.output = Linear(output_size=2)  # "output": a name Keras's models also have as a property

    def forward(self, ctx: Any, x: np.ndarray) -> np.ndarray:
        return self.output.forward(ctx.child("o"), self.first.forward(ctx.child("f"), x))

    def backward(self, ctx: Any, grad_out: np.ndarray) -> np.ndarray:
        return self.first.backward(ctx.child("f"), self.output.backward(ctx.child("o"), grad_out))

    def get_config(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "name": self.name}


# =================================================================================== count_params


@pytest.mark.parametrize("trainable", [None, True, False])
def test_count_params_of_a_lazy_linear_is_refused_until_built(dtype, trainable):
    """Keras: ``count_params`` on a layer that isn't built raises; it used to return 0 silently."""
    layer = Linear(output_size=4, name="head")
    with pytest.raises(NotBuiltError) as info:
        layer.count_params(trainable)
    text = str(info.value)
    assert "Linear layer 'head'" in text and "not built" in text and "build(" in text
    layer.build((None, 7))
    expected = {None: 7 * 4 + 4, True: 7 * 4 + 4, False: 0}[trainable]
    assert layer.count_params(trainable) == expected
    assert layer.weight.dtype == dtype


def test_count_params_of_a_never_built_sequential_is_refused_naming_the_layer():
    model = Sequential([Linear(output_size=3), ReLU(), Linear(output_size=2)], name="lazy")
    with pytest.raises(NotBuiltError) as info:
        model.count_params()
    text = str(info.value)
    assert "Sequential layer 'lazy'" in text and "Linear layer 'linear'" in text
    assert "model.build" in text or "build(" in text
    model.build((None, 5))
    assert model.count_params() == 5 * 3 + 3 + 3 * 2 + 2
    assert model.count_params(trainable=False) == 0


def test_count_params_of_a_lazy_sequential_after_its_first_batch(dtype):
    model = Sequential([Linear(output_size=3), Linear(output_size=2)])
    with pytest.raises(NotBuiltError):
        model.count_params()
    model.predict(np.zeros((2, 6), dtype=dtype), verbose=0)
    assert model.count_params() == 6 * 3 + 3 + 3 * 2 + 2


def test_count_params_of_a_keras_style_plugin_layer_is_refused_until_built():
    layer = KerasDense(3, name="dense")
    with pytest.raises(NotBuiltError, match="KerasDense layer 'dense'"):
        layer.count_params()
    layer(np.zeros((2, 5), dtype=np.float32))
    assert layer.count_params() == 5 * 3 + 3


class HelperBuilt(Layer):
    """Makes its weight in a helper that ``build`` calls."""

    def build(self, input_shape: Any) -> None:
        self._make(input_shape[-1])
        super().build(input_shape)

    def _make(self, size: int) -> None:
        self.gain = Parameter(np.ones(size, dtype=framework.get_default_dtype()))

    def forward(self, ctx: Any, x: np.ndarray) -> np.ndarray:
        return x * self.gain.data


class SubLayerBuilt(Layer):
    """Makes a sub-layer in ``build``, as a Keras composite layer may."""

    def build(self, input_shape: Any) -> None:
        self.inner = Linear(input_shape[-1], 2)
        super().build(input_shape)

    def forward(self, ctx: Any, x: np.ndarray) -> np.ndarray:
        return self.inner.forward(ctx.child("inner"), x)


@pytest.mark.parametrize("kind, count", [(HelperBuilt, 5), (SubLayerBuilt, 5 * 2 + 2)])
def test_count_params_of_layers_making_weights_in_build_by_other_ways(kind, count):
    layer = kind()
    with pytest.raises(NotBuiltError, match=kind.__name__):
        layer.count_params()
    layer(np.ones((2, 5), np.float32))
    assert layer.count_params() == count


def test_count_params_of_a_hand_built_model_with_lazy_layers():
    model = TwoLinear(name="two")
    with pytest.raises(NotBuiltError, match="TwoLinear layer 'two'"):
        model.count_params()
    model.build((None, 4))
    assert model.count_params() == 4 * 3 + 3 + 3 * 2 + 2


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: ReLU(), 0),
        (lambda: Dropout(0.3), 0),
        (lambda: Identity(), 0),
        (lambda: BatchNorm(3), 3 + 3 + 3 + 3),  # PyTorch-style: the sizes are known, the arrays exist
        (lambda: Conv2d(2, 4, 3), 4 * 2 * 9 + 4),
        (lambda: Embedding(10, 3), 30),
        (lambda: Linear(5, 2), 12),
        (lambda: Sequential([Conv2d(1, 2, 3)]), 2 * 9 + 2),
        (lambda: MaxPool2d(2), 0),  # a build that only checks shapes makes no weights
        (lambda: Flatten(), 0),
        (lambda: Add(), 0),
        (lambda: Sequential([Conv2d(1, 2, 3), ReLU(), MaxPool2d(2), Flatten()]), 2 * 9 + 2),
    ],
)
def test_count_params_before_build_where_the_arrays_already_exist(make, expected):
    """No refusal where the count cannot change at build: the weights exist, or there are none."""
    layer = make()
    assert layer.count_params() == expected
    assert layer.count_params(True) + layer.count_params(False) == expected


def _spec_input(spec: Any) -> Any:
    if spec.x is not None:
        return copy.deepcopy(spec.x)
    if isinstance(spec.shape, list):
        return [_x(s, i) for i, s in enumerate(spec.shape)]
    return _x(spec.shape)


def _builtin_cases() -> list[Any]:
    cases = []
    for name, specs in LAYERS.items():
        for i, spec in enumerate(specs):
            if spec.known_failure is None:
                cases.append(pytest.param(name, spec, id=f"{name}-{i}"))
    for name, spec in DEFAULTS.items():  # every layer with its default arguments too
        if spec.known_failure is None and not spec.known_check_failures:
            cases.append(pytest.param(name, spec, id=f"{name}-defaults"))
    return cases


@pytest.mark.parametrize("name, spec", _builtin_cases())
def test_no_builtin_layer_reports_a_count_that_changes_when_it_is_built(name, spec):
    """Before build: refused, or exactly the count after build (never a silently wrong number)."""
    try:
        layer = layers.get(name, **spec.kwargs)
    except framework.UnknownNameError:
        pytest.skip(f"{name} is not registered here")
    before: Any
    try:
        before = (layer.count_params(), layer.count_params(True), layer.count_params(False))
    except NotBuiltError as exc:
        before = None
        assert type(layer).__name__ in str(exc)
    x = _spec_input(spec)
    if spec.prepare is not None:
        spec.prepare(layer)
    layer(x)
    after = (layer.count_params(), layer.count_params(True), layer.count_params(False))
    assert (
        after[0]
        == after[1] + after[2]
        == sum(p.size for p in layer.parameters()) + sum(b.size for b in layer.buffers())
    )
    if before is not None:
        assert before == after


@pytest.mark.parametrize("bad", ["all", 1, 0, None.__class__, [True]])
def test_count_params_refuses_a_trainable_that_is_not_a_flag(bad):
    """``count_params(trainable="all")`` read "all" as True (a silent trainable-only count)."""
    layer = Linear(3, 2, name="fc")
    with pytest.raises(
        ConfigError, match=r"Linear layer 'fc'.count_params: trainable must be None.*True or False"
    ):
        layer.count_params(bad)
    assert layer.count_params(np.bool_(True)) == 8


def test_summary_and_repr_of_an_unbuilt_model_keep_working():
    """``summary()`` of an unbuilt model keeps its own table ("?" shapes); ``repr`` does not raise."""
    model = Sequential([Linear(output_size=3), ReLU()], name="lazy")
    text = summary_text(model)
    assert "?" in text and "Total params: 0" in text
    assert "Sequential" in repr(model)
    model.build((None, 2))
    assert f"Total params: {2 * 3 + 3:,}" in summary_text(model)


def test_summary_rows_of_a_built_model_equal_count_params():
    x = Input((4,))
    h = Linear(4, 3)(x)
    model = Model(x, BatchNorm(3)(h))
    text = summary_text(model)
    assert f"Total params: {model.count_params():,}" in text
    assert model.count_params() == 4 * 3 + 3 + 4 * 3


# =================================================================================== inputs / outputs


def test_functional_inputs_and_outputs_are_the_placeholders_in_order():
    a, b = Input((4,), name="a"), Input((6,), name="b")
    merged = Concatenate()([Linear(4, 5)(a), Linear(6, 5)(b)])
    cls_out, value_out = Linear(10, 3, name="cls")(merged), Linear(10, 1, name="value")(merged)
    model = Model([a, b], [cls_out, value_out])
    assert isinstance(model.inputs, list) and isinstance(model.outputs, list)
    assert model.inputs[0] is a and model.inputs[1] is b
    assert model.outputs[0] is cls_out and model.outputs[1] is value_out
    # Keras 3: ``input`` / ``output`` are the structures given to the constructor
    assert isinstance(model.input, list) and [t is u for t, u in zip(model.input, [a, b])] == [True, True]
    assert isinstance(model.output, list) and model.output[1] is value_out
    model.inputs.append(a)  # a copy: the model's own list is not changed
    assert len(model.inputs) == 2


def test_functional_single_input_and_output():
    x = Input((3,))
    y = Linear(3, 2)(x)
    model = Model(x, y)
    assert model.inputs == [x] and model.outputs == [y]
    assert model.input is x and model.output is y
    assert model.inputs[0].shape == (None, 3) and model.outputs[0].shape == (None, 2)


def test_model_over_another_models_inputs_and_outputs_shares_its_layers(dtype):
    x = Input((4,))
    h = Linear(4, 8, activation="relu")(x)
    model = Model(x, [Linear(8, 2)(h), Linear(8, 1)(h)])
    again = Model(model.inputs, model.outputs)
    data = _x((5, 4)).astype(dtype)
    for mine, theirs in zip(model.predict(data, verbose=0), again.predict(data, verbose=0)):
        np.testing.assert_array_equal(mine, theirs)
    assert all(p is q for p, q in zip(model.parameters(), again.parameters()))
    # a feature extractor over the first output only
    head = Model(model.input, model.outputs[0])
    np.testing.assert_array_equal(head.predict(data, verbose=0), model.predict(data, verbose=0)[0])


@pytest.mark.parametrize("how", ["input", "input_shape", "first_layer", "batch", "build"])
def test_sequential_inputs_and_outputs_once_built(how, dtype):
    stack = [Linear(output_size=5, activation="relu"), Dropout(0.2), Linear(output_size=2)]
    if how == "input":
        model = Sequential([Input((4,), name="features"), *stack])
    elif how == "input_shape":
        model = Sequential(stack, input_shape=(4,))
    elif how == "first_layer":
        model = Sequential([Linear(4, 5, activation="relu"), *stack[1:]])
    else:
        model = Sequential(stack)
        if how == "batch":
            model.predict(np.zeros((3, 4), dtype=dtype), verbose=0)
        else:
            model.build((None, 4))
    assert model.built
    (inp,), (out,) = model.inputs, model.outputs
    assert inp.shape == (None, 4) and out.shape == (None, 2)
    assert model.input is inp and model.output is out
    assert model.inputs[0] is inp and model.outputs[0] is out  # the same tensors at every access
    if how == "input":
        assert inp.node.layer.name == "features"
    functional = Model(model.input, model.output)
    data = _x((6, 4)).astype(dtype)
    expected = model.predict(data, verbose=0)
    np.testing.assert_array_equal(functional.predict(data, verbose=0), expected)
    assert [id(p) for p in functional.parameters()] == [id(p) for p in model.parameters()]
    listed = Model(model.inputs, model.outputs)  # lists of one: a list of one output, as given
    np.testing.assert_array_equal(listed.predict(data, verbose=0)[0], expected)


def test_sequential_inputs_keep_the_sizes_its_input_left_unknown():
    """Keras traces a Sequential over its declared ``Input``: an unknown length stays unknown."""
    from framework.layers import LSTM

    model = Sequential([Input((None, 3)), LSTM(3, 4, output="last"), Linear(4, 2)])
    model.predict(np.ones((2, 5, 3), np.float32), verbose=0)
    assert model.inputs[0].shape == (None, None, 3) and model.outputs[0].shape == (None, 2)
    # a stack that needs the first batch's sizes (Flatten then Linear) is traced for them
    flat = Sequential([Input((None, 3)), Flatten(), Linear(output_size=2)])
    flat.predict(np.ones((2, 5, 3), np.float32), verbose=0)
    assert flat.inputs[0].shape == (None, 5, 3)
    data = _x((4, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        Model(flat.input, flat.output).predict(data, verbose=0), flat.predict(data, verbose=0)
    )


def test_sequential_outputs_follow_add_and_pop():
    model = Sequential([Input((4,)), Linear(4, 3)])
    assert model.outputs[0].shape == (None, 3)
    model.add(Linear(3, 7))
    assert model.outputs[0].shape == (None, 7)
    model.pop()
    assert model.outputs[0].shape == (None, 3)


def test_sequential_with_image_layers_traces_its_shapes():
    model = Sequential([Input((1, 8, 8)), Conv2d(1, 2, 3), ReLU(), MaxPool2d(2), Flatten(), Linear(18, 3)])
    assert model.outputs[0].shape == (None, 3)
    assert [t.shape for t in model.inputs] == [(None, 1, 8, 8)]


def test_unbuilt_sequential_has_no_inputs_yet():
    """Keras raises an AttributeError ("has no defined inputs yet"); here a NotBuiltError that is one."""
    model = Sequential([Linear(output_size=2)], name="lazy")
    for attribute in ("inputs", "outputs", "input", "output"):
        with pytest.raises(NotBuiltError, match=r"Sequential layer 'lazy'.*not built.*build") as info:
            getattr(model, attribute)
        assert isinstance(info.value, AttributeError)
    assert not hasattr(model, "inputs") and getattr(model, "outputs", None) is None


def test_a_model_subclass_has_no_symbolic_inputs_and_says_why():
    model = TwoLinear(name="two")
    model.build((None, 4))
    with pytest.raises(FrameworkError, match=r"TwoLinear layer 'two'.*Model\(inputs, outputs\)"):
        _ = model.inputs
    # its own attribute named ``output`` (a layer) stays an attribute, tracked as a child
    assert isinstance(model.output, Linear) and model.output in model.layers
    assert model.predict(np.ones((2, 4), np.float32), verbose=0).shape == (2, 2)


def test_nested_model_keeps_its_own_inputs():
    inner_in = Input((3,))
    inner = Model(inner_in, Linear(3, 2)(inner_in), name="inner")
    x = Input((3,))
    outer = Model(x, inner(x))
    assert inner.inputs == [inner_in] and outer.inputs == [x]
    assert outer.outputs[0].node.layer is inner


# =================================================================================== clone_model


def _functional_with_shared_layer() -> Model:
    a, b = Input((4,), name="left"), Input((4,), name="right")
    shared = Linear(4, 3, activation="tanh", name="tower")
    joined = Add()([shared(a), shared(b)])
    norm = BatchNorm(3)(joined)
    return Model([a, b], Linear(3, 1, name="score")(norm), name="siamese")


def _nested() -> Sequential:
    x = Input((4,))
    block = Model(x, Linear(4, 4, activation="relu")(x), name="block")
    return Sequential([Input((4,)), block, Sequential([Linear(4, 2), ReLU()], name="head")], name="outer")


MODELS = {
    "sequential": lambda: Sequential(
        [Linear(4, 8, activation="relu"), Dropout(0.1), Linear(8, 2)], name="mlp"
    ),
    "lazy-built": lambda: Sequential(
        [Input((4,)), Linear(output_size=3), BatchNorm(3), Linear(output_size=2)]
    ),
    "shared": _functional_with_shared_layer,
    "nested": _nested,
    "conv": lambda: Sequential([Input((1, 6, 6)), Conv2d(1, 2, 3), MaxPool2d(2), Flatten(), Linear(8, 2)]),
    "plugins": lambda: Sequential([Input((4,)), KerasDense(3, name="dense"), RegisteredScale(3)]),
}


def _data(model: Model, n: int = 5) -> Any:
    shapes = [t.shape for t in model.inputs]
    xs = [_x((n, *s[1:]), i).astype(model.dtype) for i, s in enumerate(shapes)]
    return xs if len(xs) > 1 else xs[0]


def _state(model: Model) -> dict[str, np.ndarray]:
    return {k: np.array(v, copy=True) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_clone_has_the_same_architecture_and_fresh_weights(kind, dtype):
    from framework.models import clone_model

    original = MODELS[kind]()
    before = _state(original)
    clone = clone_model(original)
    assert type(clone) is type(original) and clone is not original
    assert clone.get_config() == original.get_config()
    assert clone.name == original.name
    assert [layer.name for layer in clone.layers] == [layer.name for layer in original.layers]
    assert clone.built == original.built is True
    assert clone.count_params() == original.count_params()
    assert not clone.compiled
    mine, theirs = original.state_dict(), clone.state_dict()
    assert list(mine) == list(theirs)
    for key in mine:
        assert theirs[key].shape == mine[key].shape and theirs[key].dtype == mine[key].dtype == dtype
        assert not np.shares_memory(theirs[key], mine[key])
    weights = [k for k, _ in original.named_parameters() if mine[k].size > 1 and "bias" not in k]
    assert any(not np.array_equal(mine[k], theirs[k]) for k in weights), "the clone's weights are not fresh"
    for key, value in before.items():
        np.testing.assert_array_equal(original.state_dict()[key], value)  # the original untouched
    data = _data(original)
    assert np.shape(clone.predict(data, verbose=0)) == np.shape(original.predict(data, verbose=0))


@pytest.mark.parametrize("kind", ["sequential", "shared", "nested", "plugins"])
def test_clone_under_the_same_seed_has_the_same_weights(kind):
    """Fresh weights are drawn as the original's were: seeded equally, they are equal (Keras)."""
    from framework.models import clone_model

    framework.set_seed(7)
    original = MODELS[kind]()
    framework.set_seed(7)
    clone = clone_model(original)
    for key, value in original.state_dict().items():
        np.testing.assert_array_equal(clone.state_dict()[key], value, err_msg=key)
    data = _data(original)
    np.testing.assert_array_equal(
        np.asarray(clone.predict(data, verbose=0)), np.asarray(original.predict(data, verbose=0))
    )


def test_clone_keeps_the_original_dtypes_whatever_the_default():
    """Keras keeps a layer's dtype policy in its config; the clone's arrays take the original's dtypes."""
    from framework.models import clone_model

    old = framework.get_default_dtype()
    framework.set_default_dtype("float64")
    try:
        original = _functional_with_shared_layer()
    finally:
        framework.set_default_dtype(old)
    clone = clone_model(original)
    assert {v.dtype for v in clone.state_dict().values()} == {np.dtype("float64")}
    assert clone.dtype == original.dtype == np.float64


def test_clone_replays_pinned_modes_and_call_arguments():
    from framework.models import clone_model

    x = Input((6,))
    h = Dropout(0.5)(Linear(6, 6)(x), training=True)  # Monte Carlo dropout: pinned on
    original = Model(x, BatchNorm(6)(h, training=False))
    clone = clone_model(original)
    assert clone.get_config() == original.get_config()
    assert [n.training for n in clone._graph.nodes] == [n.training for n in original._graph.nodes]
    data = np.ones((4, 6), np.float32)
    outs = {clone.predict(data, verbose=0).tobytes() for _ in range(3)}
    assert len(outs) > 1  # dropout runs in predict, as in the original


def test_clone_function_with_recursive_reaches_nested_models():
    from framework.models import clone_model

    original = _nested()
    met: list[str] = []

    def record(layer: Layer) -> Layer:
        met.append(type(layer).__name__)
        return layer.from_config(layer.get_config())

    clone_model(original, clone_function=record)
    assert met == ["Model", "Sequential"]  # not recursive: the nested models themselves (Keras)
    met.clear()
    clone = clone_model(original, clone_function=record, recursive=True)
    assert met == ["Linear", "Linear", "ReLU"]
    assert clone.get_config() == original.get_config()


def test_clone_keeps_a_shared_layer_shared_once():
    from framework.models import clone_model

    original = _functional_with_shared_layer()
    clone = clone_model(original)
    towers = [node.layer for node in clone._graph.nodes if node.layer.name == "tower"]
    assert len(towers) == 2 and towers[0] is towers[1]
    assert towers[0] is not original.get_layer("tower")
    assert clone.count_params() == original.count_params() == (4 * 3 + 3) + 4 * 3 + (3 + 1)
    assert [t.node.layer.name for t in clone.inputs] == ["left", "right"]


def test_clone_of_nested_models_clones_them_too():
    from framework.models import clone_model

    original = _nested()
    clone = clone_model(original)
    for name in ("block", "head"):
        mine, theirs = original.get_layer(name), clone.get_layer(name)
        assert type(theirs) is type(mine) and theirs is not mine
        assert theirs.get_config() == mine.get_config()
        assert not any(p is q for p in mine.parameters() for q in theirs.parameters())


def test_training_the_clone_leaves_the_original_alone(dtype):
    from framework.models import clone_model

    original = MODELS["lazy-built"]()
    original.compile("sgd", "mse")
    before = _state(original)
    clone = clone_model(original)
    clone.compile("adam", "mse")
    x = _x((16, 4)).astype(dtype)
    clone.fit(x, _x((16, 2), 1).astype(dtype), epochs=2, batch_size=4, verbose=0)
    assert clone.get_layer("batch_norm").num_batches_tracked == 8
    assert original.get_layer("batch_norm").num_batches_tracked == 0
    for key, value in before.items():
        np.testing.assert_array_equal(original.state_dict()[key], value, err_msg=key)


def test_clone_of_an_unbuilt_sequential_stays_unbuilt():
    from framework.models import clone_model

    original = Sequential([Linear(output_size=3), Linear(output_size=2)], name="lazy")
    clone = clone_model(original)
    assert not clone.built and clone.name == "lazy"
    with pytest.raises(NotBuiltError):
        clone.count_params()
    clone.build((None, 5))
    assert clone.count_params() == 5 * 3 + 3 + 3 * 2 + 2
    assert not original.built


def test_clone_keeps_trainable_flags_and_tied_weights():
    from framework.models import clone_model

    embed = Embedding(10, 4)
    out = Linear(4, 10, bias=False)
    original = Sequential([Input((3,)), embed, Linear(4, 4), out], name="lm")
    out.weight = embed.weight  # tied: one Parameter, counted once
    original.layers[1].trainable = False
    clone = clone_model(original)
    assert clone.count_params() == original.count_params() == 40 + 20
    assert clone.layers[2].weight is clone.layers[0].weight
    assert clone.layers[1].trainable is False and clone.count_params(trainable=False) == 20


def test_clone_of_an_unregistered_layer_uses_its_class():
    """Keras's default clone is ``layer.__class__.from_config(layer.get_config())``: no registration."""
    from framework.models import clone_model

    class Unregistered(KerasDense):
        pass

    original = Sequential([Input((4,)), Unregistered(3, name="mine"), Linear(3, 1)])
    clone = clone_model(original)
    mine, theirs = original.get_layer("mine"), clone.get_layer("mine")
    assert type(theirs) is Unregistered and theirs.get_config() == mine.get_config()
    assert theirs.kernel.shape == mine.kernel.shape and not np.array_equal(
        theirs.kernel.data, mine.kernel.data
    )
    with pytest.raises(ConfigError, match="not registered"):  # as for saving: get_config needs the name
        clone.get_config()


def test_clone_function_replaces_layers():
    """Keras: ``clone_function(layer)`` is called once per layer (not on Inputs) and its result used."""
    from framework.models import clone_model

    original = _functional_with_shared_layer()
    seen: list[str] = []

    def swap(layer: Layer) -> Layer:
        seen.append(layer.name)
        if isinstance(layer, BatchNorm):
            return Identity(name="no_norm")
        return layer.from_config(layer.get_config())

    clone = clone_model(original, clone_function=swap)
    assert sorted(seen) == sorted(["tower", "add", "batch_norm", "score"])
    assert isinstance(clone.get_layer("no_norm"), Identity)
    assert clone.count_params() == original.count_params() - 4 * 3


def test_clone_function_may_reuse_layers_to_share_weights(dtype):
    """Returning the layer itself shares it with the original, as in Keras."""
    from framework.models import clone_model

    original = MODELS["sequential"]()
    clone = clone_model(original, clone_function=lambda layer: layer)
    assert all(p is q for p, q in zip(original.parameters(), clone.parameters()))
    x = _x((3, 4)).astype(dtype)
    np.testing.assert_array_equal(clone.predict(x, verbose=0), original.predict(x, verbose=0))


def test_clone_of_a_model_subclass_by_its_config():
    from framework.models import clone_model

    original = TwoLinear(hidden=5, name="two")
    original.build((None, 4))
    clone = clone_model(original)
    assert type(clone) is TwoLinear and clone.hidden == 5 and clone.name == "two"
    assert clone.built and clone.count_params() == original.count_params()
    assert not np.array_equal(clone.first.weight.data, original.first.weight.data)
    with pytest.raises(ConfigError, match=r"TwoLinear layer 'two'.*clone_function"):
        clone_model(original, clone_function=lambda layer: layer)


def test_clone_model_is_exported_where_load_model_is():
    import framework.models

    assert framework.clone_model is framework.models.clone_model
    assert "clone_model" in framework.models.__all__


@pytest.mark.parametrize(
    "args, message",
    [
        ((Linear(2, 2),), r"clone_model: expected a Model.*got Linear"),
        (("model",), r"clone_model: expected a Model.*got str"),
    ],
)
def test_clone_model_refuses_what_is_not_a_model(args, message):
    from framework.models import clone_model

    with pytest.raises(ConfigError, match=message):
        clone_model(*args)


def test_clone_model_refuses_a_bad_clone_function():
    from framework.models import clone_model

    model = MODELS["sequential"]()
    with pytest.raises(ConfigError, match=r"clone_function must be callable.*got int"):
        clone_model(model, clone_function=3)
    with pytest.raises(
        ConfigError, match=r"clone_function.*Linear layer 'linear'.*expected a Layer.*got str"
    ):
        clone_model(model, clone_function=lambda layer: "nope")


# =================================================================================== EarlyStopping


def _full_state(model: Model) -> dict[str, Any]:
    """Every array and every layer's batch count, by name."""
    state: dict[str, Any] = _state(model)
    for layer in model.modules():
        if isinstance(getattr(layer, "num_batches_tracked", None), int):
            state[f"{layer.name}.num_batches_tracked"] = layer.num_batches_tracked
    return state


def _assert_same_state(model: Model, expected: dict[str, Any]) -> None:
    got = _full_state(model)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def _bn_model(layer: Layer, nested: bool = False) -> Sequential:
    framework.set_seed(0)
    stack: list[Any] = [Sequential([layer], name="inner")] if nested else [layer]
    model = Sequential([Input((2, 3)), *stack, Flatten(), Linear(6, 1)])
    model.compile(framework.optimizers.SGD(learning_rate=0.05), "mse")
    return model


def test_early_stopping_restores_the_counts_of_layers_in_nested_models():
    x = _x((16, 2, 3))
    y = x.sum(axis=(1, 2))[:, None]
    model = _bn_model(BatchNorm(2, momentum=None), nested=True)
    scores = [3.0, 1.0, 2.0, 2.5]
    snapshots: list[dict[str, Any]] = []

    def inject(epoch: int, logs: dict[str, Any]) -> None:
        logs["score"] = scores[epoch]
        snapshots.append(_full_state(model))

    stopper = EarlyStopping(monitor="score", patience=10, restore_best_weights=True)
    model.fit(
        x, y, epochs=4, batch_size=4, callbacks=[LambdaCallback(on_epoch_end=inject), stopper], verbose=0
    )
    assert stopper.best_counts == {"inner.batch_norm": 8}
    _assert_same_state(model, snapshots[1])


@pytest.mark.parametrize(
    "make",
    [
        lambda: BatchNorm(2, momentum=None),
        lambda: BatchNorm(2, momentum=0.3),
        lambda: InstanceNorm1d(2, momentum=None, track_running_stats=True, affine=True),
    ],
    ids=["batchnorm-cumulative", "batchnorm-momentum", "instancenorm"],
)
@pytest.mark.parametrize("best", [0, 1, 3])
def test_early_stopping_restores_every_state_of_the_best_epoch(make, best, dtype):
    x = _x((16, 2, 3))
    y = x.sum(axis=(1, 2))[:, None]
    model = _bn_model(make())
    scores = [5.0] * 6
    scores[best] = 1.0
    snapshots: list[dict[str, Any]] = []

    def inject(epoch: int, logs: dict[str, Any]) -> None:
        logs["score"] = scores[epoch]
        snapshots.append(_full_state(model))

    stopper = EarlyStopping(monitor="score", patience=10, restore_best_weights=True)
    model.fit(
        x, y, epochs=6, batch_size=4, callbacks=[LambdaCallback(on_epoch_end=inject), stopper], verbose=0
    )
    assert stopper.best_epoch == best
    assert snapshots[best][f"{model.layers[0].name}.num_batches_tracked"] == 4 * (best + 1)
    _assert_same_state(model, snapshots[best])


def test_early_stopping_restored_counts_continue_the_cumulative_average_exactly():
    """After the restore, training goes on as from the best epoch: the 1/n average uses n of that epoch."""
    x = _x((16, 2, 3))
    y = x.sum(axis=(1, 2))[:, None]
    scores = [3.0, 1.0, 2.0, 2.5]

    def inject(epoch: int, logs: dict[str, Any]) -> None:
        logs["score"] = scores[epoch]

    model = _bn_model(BatchNorm(2, momentum=None))
    stopper = EarlyStopping(monitor="score", patience=10, restore_best_weights=True)
    model.fit(
        x, y, epochs=4, batch_size=4, callbacks=[LambdaCallback(on_epoch_end=inject), stopper], verbose=0
    )
    reference = _bn_model(BatchNorm(2, momentum=None))
    reference.fit(x, y, epochs=2, batch_size=4, verbose=0)
    _assert_same_state(model, _full_state(reference))
    model.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    reference.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    np.testing.assert_array_equal(model.layers[0].running_mean.data, reference.layers[0].running_mean.data)


def test_early_stopping_state_dict_carries_the_counts_and_loads_them_back():
    x = _x((8, 2, 3))
    y = x.sum(axis=(1, 2))[:, None]
    model = _bn_model(BatchNorm(2, momentum=None))
    stopper = EarlyStopping(monitor="loss", patience=10, restore_best_weights=True)
    model.fit(x, y, epochs=2, batch_size=4, callbacks=[stopper], verbose=0)
    state = stopper.state_dict()
    again = EarlyStopping(monitor="loss", patience=10, restore_best_weights=True)
    again.load_state_dict(copy.deepcopy(state))
    assert again.state_dict().keys() == state.keys()
    assert (
        again.state_dict()["best_counts"]
        == state["best_counts"]
        == [["batch_norm", 2 * (stopper.best_epoch + 1)]]
    )


@pytest.mark.parametrize(
    "counts", [{"batch_norm": 3}, [["batch_norm", -1]], [["batch_norm", 2.5]], [[3, 4]], [["a", 1, 2]], "x"]
)
def test_early_stopping_refuses_malformed_saved_counts_by_name(counts):
    stopper = EarlyStopping(monitor="loss", restore_best_weights=True)
    state = {"monitor": "loss", "mode": "min", "best": 1.0, "wait": 0, "best_epoch": 0, "best_counts": counts}
    with pytest.raises(
        framework.CheckpointError, match=r"EarlyStopping.*best_counts.*\[layer name, count >= 0\]"
    ):
        stopper.load_state_dict(state)


def test_early_stopping_state_without_counts_restores_the_arrays_only():
    """A state saved before the counts were kept: the arrays are restored, the counts left as they are."""
    x = _x((8, 2, 3))
    y = x.sum(axis=(1, 2))[:, None]
    model = _bn_model(BatchNorm(2, momentum=None))
    first = EarlyStopping(monitor="loss", patience=10, restore_best_weights=True)
    model.fit(x, y, epochs=1, batch_size=4, callbacks=[first], verbose=0)
    state = {k: v for k, v in first.state_dict().items() if k != "best_counts"}
    again = EarlyStopping(monitor="loss", patience=10, restore_best_weights=True)
    again.load_state_dict(state)
    assert again.best_counts == {} and again.best_weights is not None


@requires_h5py
def test_early_stopping_resumed_from_a_checkpoint_restores_the_best_counts(tmp_path):
    x = _x((16, 2, 3))
    y = x.sum(axis=(1, 2))[:, None]
    scores = [3.0, 1.0, 2.0, 2.5, 2.7, 2.9]

    def inject(epoch: int, logs: dict[str, Any]) -> None:
        logs["score"] = scores[epoch]

    def run(model: Model, epochs: int, initial_epoch: int = 0, extra: tuple[Any, ...] = ()) -> EarlyStopping:
        stopper = EarlyStopping(monitor="score", patience=3, restore_best_weights=True)
        callbacks = [LambdaCallback(on_epoch_end=inject), stopper, *extra]
        model.fit(
            x, y, epochs=epochs, initial_epoch=initial_epoch, batch_size=4, callbacks=callbacks, verbose=0
        )
        return stopper

    straight = _bn_model(BatchNorm(2, momentum=None))
    run(straight, 6)
    first = _bn_model(BatchNorm(2, momentum=None))
    run(first, 6, extra=(ModelCheckpoint(str(tmp_path / "e{epoch}.h5")),))
    resumed = framework.load_model(tmp_path / "e3.h5")  # after epoch index 2: the best was epoch 1
    again = run(resumed, 6, initial_epoch=resumed.epoch)
    assert again.best_epoch == 1
    assert resumed.layers[0].num_batches_tracked == straight.layers[0].num_batches_tracked == 8
    _assert_same_state(resumed, _full_state(straight))
