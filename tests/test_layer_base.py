"""Tests of framework/layer.py and framework/parameter.py through small custom layers."""

from __future__ import annotations

import numpy as np
import pytest

import framework
from framework import Buffer, Layer, Parameter
from framework.errors import ConfigError, DataError, NotBuiltError, ShapeError
from framework.testing import check_gradients


class Scale(Layer):
    """``y = x * weight`` per feature on the last axis; a counter buffer for state tests."""

    def __init__(self, features: int | None = None, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.features = features
        self.weight: Parameter | None = None
        self.build_calls: list = []

    def build(self, input_shape):
        self.build_calls.append(input_shape)
        self.weight = Parameter(np.arange(1, input_shape[-1] + 1, dtype=framework.get_default_dtype()))
        self.calls = Buffer(np.zeros(1))
        super().build(input_shape)

    def forward(self, x):
        self._x = x
        self.calls.data += 1
        return x * self.weight.data

    def backward(self, grad_out):
        self.weight.grad += (grad_out * self._x).reshape(-1, self.weight.shape[0]).sum(axis=0)
        return grad_out * self.weight.data

    def get_config(self):
        return {**super().get_config(), "features": self.features}


class Stack(Layer):
    """A container: one child as an attribute, more in a list, and a Parameter of its own."""

    def __init__(self, n: int = 3) -> None:
        super().__init__(name="stack")
        self.head = Scale(name="head")
        self.blocks = [Scale(name=f"block{i}") for i in range(2)]
        self.offset = Parameter(np.zeros(n))
        self.not_a_layer = [1, "two"]

    def forward(self, x):
        y = self.head(x)
        for block in self.blocks:
            y = block(y)
        return y + self.offset.data

    def backward(self, grad_out):
        self.offset.grad += grad_out.sum(axis=0)
        g = grad_out
        for block in reversed(self.blocks):
            g = block.backward(g)
        return self.head.backward(g)


@pytest.fixture
def stack():
    layer = Stack()
    layer(np.ones((2, 3)))
    return layer


# -- discovery -----------------------------------------------------------------


def test_named_parameters_finds_own_children_and_lists(stack):
    names = [name for name, _ in stack.named_parameters()]
    assert names == ["offset", "head.weight", "blocks.0.weight", "blocks.1.weight"]
    assert stack.parameters()[1] is stack.head.weight
    assert [name for name, _ in stack.named_children()] == ["head", "blocks.0", "blocks.1"]
    assert stack.children() == [stack.head, *stack.blocks]


def test_named_parameters_prefix_and_shared_parameter_listed_once():
    layer = Scale()
    layer(np.ones((1, 2)))
    layer.alias = layer.weight
    assert [name for name, _ in layer.named_parameters(prefix="m.")] == ["m.weight"]


def test_parameters_appear_only_after_build():
    layer = Scale()
    assert layer.parameters() == [] and not layer.built
    layer(np.ones((4, 5)))
    assert layer.built and layer.weight.shape == (5,)
    assert layer.build_calls == [(None, 5)]
    layer(np.ones((7, 5)))
    assert layer.build_calls == [(None, 5)], "build runs once, on the first call"
    assert layer.input_shape == (None, 5)


def test_named_buffers_and_state_dict_cover_children(stack):
    assert [name for name, _ in stack.named_buffers()] == ["head.calls", "blocks.0.calls", "blocks.1.calls"]
    state = stack.state_dict()
    assert set(state) == {
        "offset",
        "head.weight",
        "blocks.0.weight",
        "blocks.1.weight",
        "head.calls",
        "blocks.0.calls",
        "blocks.1.calls",
    }
    assert state["head.weight"] is stack.head.weight.data


# -- gradients and modes ------------------------------------------------------------


def test_container_gradients_are_correct(float64, rng):
    layer = Stack()
    layer(rng.normal(size=(2, 3)))
    layer.offset.data[...] = rng.normal(size=3)
    check_gradients(layer, rng.normal(size=(4, 3)))


def test_gradients_accumulate_and_zero_grad_resets_all(stack):
    x = np.ones((2, 3))
    stack(x)
    stack.backward(np.ones((2, 3)))
    first = stack.head.weight.grad.copy()
    assert first.any()
    stack(x)
    stack.backward(np.ones((2, 3)))
    np.testing.assert_allclose(stack.head.weight.grad, 2 * first)
    stack.zero_grad()
    assert all(not p.grad.any() for p in stack.parameters())


def test_train_and_eval_reach_every_child(stack):
    assert stack.training and all(c.training for c in stack.children())
    assert stack.eval() is stack
    assert not stack.training and not any(c.training for c in stack.children())
    stack.train()
    assert stack.training and all(c.training for c in stack.children())
    stack.train(False)
    assert not stack.blocks[1].training


# -- state_dict / load_state_dict ---------------------------------------------------


def test_load_state_dict_copies_values(stack):
    other = Stack()
    other(np.ones((1, 3)))
    new = {k: np.full(v.shape, 7.0) for k, v in stack.state_dict().items()}
    other.load_state_dict(new)
    np.testing.assert_array_equal(other.blocks[0].weight.data, np.full(3, 7.0))
    np.testing.assert_array_equal(other.head.calls.data, [7.0])
    new["offset"][0] = -1.0
    assert other.offset.data[0] == 7.0, "load_state_dict copies, it does not alias"


def test_load_state_dict_shape_mismatch_raises_shape_error(stack):
    state = {k: v.copy() for k, v in stack.state_dict().items()}
    state["head.weight"] = np.zeros(4)
    with pytest.raises(ShapeError, match=r"head\.weight.*\(3,\).*\(4,\)"):
        stack.load_state_dict(state)


def test_load_state_dict_strict_reports_missing_and_unexpected(stack):
    state = {k: v.copy() for k, v in stack.state_dict().items()}
    del state["blocks.1.weight"]
    state["extra"] = np.zeros(1)
    with pytest.raises(ConfigError) as info:
        stack.load_state_dict(state)
    assert "blocks.1.weight" in str(info.value) and "extra" in str(info.value)
    state["offset"] = np.full(3, 5.0)
    stack.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(stack.offset.data, np.full(3, 5.0))


# -- shape and order checks -----------------------------------------------------------


def test_backward_before_forward_raises_not_built():
    with pytest.raises(NotBuiltError, match=r"Scale layer 'fresh'.*before forward"):
        Scale(name="fresh").backward(np.ones((2, 3)))


def test_grad_of_wrong_shape_raises_shape_error():
    layer = Scale(name="s")
    layer(np.ones((2, 3)))
    with pytest.raises(ShapeError, match=r"'s'.*\(2, 3\).*\(2, 4\)"):
        layer.backward(np.ones((2, 4)))


def test_input_of_wrong_shape_after_build_names_layer_expected_and_actual():
    layer = Scale(name="scaler")
    layer(np.ones((2, 3)))
    with pytest.raises(ShapeError) as info:
        layer(np.ones((2, 4)))
    message = str(info.value)
    assert "Scale layer 'scaler'" in message and "(None, 3)" in message and "(2, 4)" in message
    with pytest.raises(ShapeError, match=r"\(None, 3\).*\(2, 1, 3\)"):
        layer(np.ones((2, 1, 3)))


def test_non_array_input_after_build_raises_data_error():
    layer = Scale()
    layer(np.ones((2, 3)))
    with pytest.raises(DataError, match="NumPy array"):
        layer([[1.0, 2.0, 3.0]])


def test_loosened_input_spec_accepts_any_size_on_none_axes():
    class AnyLength(Scale):
        def build(self, input_shape):
            super().build(input_shape)
            self.input_spec = (None, None, input_shape[-1])

    layer = AnyLength()
    layer(np.ones((2, 5, 3)))
    assert layer(np.ones((1, 9, 3))).shape == (1, 9, 3)
    with pytest.raises(ShapeError):
        layer(np.ones((1, 9, 4)))


def test_invalid_layer_name_is_a_config_error():
    with pytest.raises(ConfigError, match="name"):
        Scale(name="")


def test_base_layer_get_config_and_from_config():
    layer = Scale(4, name="s")
    assert layer.get_config() == {"name": "s", "features": 4}
    clone = Scale.from_config(layer.get_config())
    assert clone.name == "s" and clone.features == 4
    with pytest.raises(ConfigError, match="from_config"):
        Scale.from_config({"features": 4, "bogus": 1})
    with pytest.raises(ConfigError, match="expected a dict"):
        Scale.from_config([4])


# -- dtype ------------------------------------------------------------------------


def test_default_dtype_get_and_set():
    old = framework.get_default_dtype()
    assert old == np.float32
    try:
        framework.set_default_dtype("float64")
        assert framework.get_default_dtype() == np.float64
        layer = Scale()
        layer(np.ones((1, 2)))
        assert layer.weight.dtype == np.float64
    finally:
        framework.set_default_dtype(old)
    layer = Scale()
    layer(np.ones((1, 2), dtype=np.float32))
    assert layer.weight.dtype == np.float32


@pytest.mark.parametrize("bad", ["int32", np.int64, "complex64", "nonsense", 3])
def test_set_default_dtype_rejects_non_float(bad):
    with pytest.raises(ConfigError, match="float16, float32 or float64"):
        framework.set_default_dtype(bad)
    assert framework.get_default_dtype() == np.float32


def test_astype_converts_parameters_and_buffers(stack):
    stack.astype(np.float16)
    assert all(p.dtype == np.float16 and p.grad.dtype == np.float16 for p in stack.parameters())
    assert all(b.dtype == np.float16 for b in stack.buffers())


# -- Parameter and Buffer ---------------------------------------------------------


@pytest.mark.parametrize("data", [np.arange(3), np.array([True, False]), [1, 2]])
def test_parameter_of_non_float_array_is_a_config_error(data):
    with pytest.raises(ConfigError, match="floating-point"):
        Parameter(data)


def test_parameter_grad_and_assign():
    p = Parameter(np.ones((2, 3), dtype=np.float32))
    assert p.grad.shape == (2, 3) and p.grad.dtype == np.float32 and not p.grad.any()
    assert p.trainable and p.size == 6
    p.grad += 1.0
    p.zero_grad()
    assert not p.grad.any()
    p.assign(np.full((2, 3), 4.0))
    assert p.dtype == np.float32 and (p.data == 4.0).all()
    with pytest.raises(ConfigError, match=r"\(2, 3\).*\(3, 2\)"):
        p.assign(np.zeros((3, 2)))


def test_parameter_makes_non_contiguous_data_contiguous():
    base = np.ones((4, 4))
    p = Parameter(base[:, ::2])
    assert p.data.flags["C_CONTIGUOUS"]


def test_buffer_assign_checks_shape():
    b = Buffer(np.zeros(3))
    b.assign(np.ones(3))
    assert (b.data == 1).all()
    with pytest.raises(ConfigError, match="Buffer"):
        b.assign(np.ones(4))


# -- count_params -------------------------------------------------------------------


def test_count_params_splits_trainable_frozen_and_buffers(stack):
    # offset 3 + three Scale weights of 3 = 12 trainable; three buffers of 1 = 3 non-trainable.
    assert stack.count_params(trainable=True) == 12
    assert stack.count_params(trainable=False) == 3
    assert stack.count_params() == 15
    stack.blocks[0].weight.trainable = False
    assert stack.count_params(trainable=True) == 9
    assert stack.count_params(trainable=False) == 6
    assert stack.trainable_parameters() == [stack.offset, stack.head.weight, stack.blocks[1].weight]
