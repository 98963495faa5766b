"""Model construction and introspection hunt: ``Sequential`` and functional ``Model`` against Keras 3.

Beyond ``test_model_sequential.py`` / ``test_model_functional.py`` / ``test_trainable.py``:
``add`` / ``pop`` before and after build and after ``compile`` (a layer added to a compiled
model must train, a popped one must leave the optimizer), a model added to itself, inputs
that do not fit a nested model, ``get_layer`` with every kind of index, Keras's order of
``weights`` / ``trainable_weights`` / ``non_trainable_weights`` (transcribed from
``keras/src/layers/layer.py``: each layer's own trainable and non-trainable variables,
then its sub-layers'), ``set_weights`` (atomic, dtypes), ``trainable`` toggled after
``compile``, ``train()`` / ``eval()`` on nested models, ``copy.deepcopy`` and clones
through ``get_config`` / ``from_config``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import framework
from framework import Input, Model, Sequential
from framework.errors import ConfigError, DataError, FrameworkError, NotBuiltError, ShapeError
from framework.layers import Add, BatchNorm, Dropout, Linear, ReLU


def _xy(n: int = 16, d_in: int = 4, d_out: int = 2, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, d_in)).astype(dtype), rng.standard_normal((n, d_out)).astype(dtype)


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))


# -- add / pop after build and after compile ---------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("how", ["built_before", "lazy"])
def test_a_layer_added_after_compile_trains_as_if_compiled_afterwards(dtype: str, how: str) -> None:
    """Keras refuses a variable the optimizer was not built with; here it must train, not be skipped.

    Reference: the same weights, compiled after the ``add`` (SGD keeps no state, so both
    runs must take the same steps).
    """
    framework.set_default_dtype(dtype)
    try:
        x, y = _xy(dtype=dtype)
        head = Linear(3, 2) if how == "built_before" else Linear(output_size=2)  # the first is built now
        model = Sequential([Linear(4, 3)])
        model.compile(optimizer="sgd", loss="mse")
        model.fit(x, np.zeros((16, 3), dtype), epochs=1, batch_size=4, verbose=0)
        model.add(head)
        reference = copy.deepcopy(model)
        reference.compile(optimizer="sgd", loss="mse")
        start = head.weight.data.copy()
        model.fit(x, y, epochs=2, batch_size=4, verbose=0, shuffle=False)
        reference.fit(x, y, epochs=2, batch_size=4, verbose=0, shuffle=False)
        assert not np.array_equal(head.weight.data, start)
        assert _same(model.get_weights(), reference.get_weights())
    finally:
        framework.set_default_dtype("float32")


def test_a_popped_layer_leaves_the_optimizer_and_the_rest_keeps_its_weights() -> None:
    x, y = _xy()
    model = Sequential([Linear(4, 3), ReLU(), Linear(3, 2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    kept = [w.copy() for w in model.layers[0].get_weights()]
    popped = model.pop()
    assert _same(model.layers[0].get_weights(), kept)
    assert model.built and model.layer_output_shapes() == [(None, 3), (None, 3)]
    model.fit(x, np.zeros((16, 3), np.float32), epochs=1, batch_size=8, verbose=0)
    bound = {id(p) for p in model.optimizer.params}
    assert not bound & {id(p) for p in popped.parameters()}
    assert bound == {id(p) for p in model.parameters()}
    lines: list[str] = []
    text = model.summary(print_fn=lines.append)
    assert "linear_1" not in text and f"Total params: {model.count_params():,}" in text


@pytest.mark.filterwarnings("ignore::UserWarning")  # the pairing warning of a sigmoid and a softmax loss
@pytest.mark.parametrize("change", ["add_after_softmax", "swap_softmax_for_sigmoid"])
def test_changing_the_output_layer_after_compile_drops_a_stale_fused_softmax_gradient(change: str) -> None:
    """``compile`` fuses a Softmax output with a cross-entropy (the gradient enters at the logits and
    the Softmax's backward is skipped). After ``add``/``pop`` the last layer is another one: the
    gradients must be those of a model compiled anew, not skip the wrong layer."""
    from framework.layers import Identity, Sigmoid, Softmax

    x, _ = _xy(32)
    y = np.eye(3, dtype=np.float32)[np.random.default_rng(1).integers(0, 3, 32)]
    model = Sequential([Linear(4, 3), Softmax()])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    if change == "add_after_softmax":
        model.add(Identity())
    else:
        model.pop()
        model.add(Sigmoid())
    reference = copy.deepcopy(model)
    reference.compile(optimizer="sgd", loss="categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    reference.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_popping_every_layer_forgets_an_input_shape_guessed_from_the_first_layer() -> None:
    """The shape came from ``Linear(4, 3)``'s own sizes, not from the user: a new first layer may differ."""
    model = Sequential([Linear(4, 3), Linear(3, 2)])
    model.pop()
    model.pop()
    assert not model.built
    model.add(Linear(7, 2))  # refused before: "expected (N, *, 7), got (None, 4)"
    assert model.built and model.input_shape == (None, 7)
    assert model.predict(np.ones((3, 7), np.float32)).shape == (3, 2)


@pytest.mark.parametrize("declared", ["input", "input_shape"])
def test_popping_every_layer_keeps_a_declared_input_shape(declared: str) -> None:
    if declared == "input":
        model = Sequential([Input((4,)), Linear(4, 3)])
    else:
        model = Sequential([Linear(4, 3)], input_shape=(4,))
    model.pop()
    with pytest.raises(ShapeError, match=r"\(None, 4\).*Linear layer 'linear'.*7"):
        model.add(Linear(7, 2))
    model.add(Linear(output_size=2))
    assert model.layers[0].weight.shape == (2, 4)


def test_a_model_added_to_itself_or_to_a_model_inside_it_is_refused() -> None:
    model = Sequential([Linear(4, 4)])  # the shapes fit: only a structural check can refuse it
    with pytest.raises(ConfigError, match=r"Sequential.*cannot contain itself"):
        model.add(model)
    assert len(model) == 1
    inner = Sequential([Linear(4, 4)], name="inner")
    outer = Sequential([inner, Linear(4, 4)], name="outer")
    with pytest.raises(ConfigError, match=r"'inner'.*cannot contain.*'outer'"):
        inner.add(outer)
    assert len(inner) == 1 and outer.count_params() == 40
    assert outer(np.ones((2, 4), np.float32)).shape == (2, 4)


def test_a_layer_that_fails_to_be_added_leaves_the_model_unchanged() -> None:
    model = Sequential([Linear(4, 3)])
    before = model.get_weights()
    with pytest.raises(ShapeError, match=r"Linear layer 'linear' \(output shape \(None, 3\)\).*Linear layer"):
        model.add(Linear(5, 2))
    assert len(model) == 1 and _same(model.get_weights(), before)
    model.add(Linear(3, 2))
    assert [n for n, _ in model.named_children()] == ["linear", "linear_1"]


# -- a nested model's inputs are checked when it is placed ---------------------------------------


def _tower(width: int = 4) -> Model:
    a = Input((width,), name="tower_in")
    return Model(a, Linear(width, 3)(a), name="tower")


def test_a_functional_model_given_inputs_of_another_size_is_refused_when_placed() -> None:
    """DESIGN: shapes are checked when a layer is added or called, naming both layers and shapes."""
    with pytest.raises(ShapeError, match=r"\(None, 6\).*Model layer 'tower'.*\(None, 4\)"):
        Sequential([_tower()], input_shape=(6,))
    with pytest.raises(
        ShapeError, match=r"Linear layer 'linear'.*\(None, 6\).*Model layer 'tower'.*\(None, 4\)"
    ):
        Sequential([Linear(2, 6), _tower()])
    with pytest.raises(ShapeError, match=r"Model layer 'tower'.*\(None, 4\)"):
        _tower()(Input((6,)))
    stacked = Sequential([Linear(2, 4), _tower()])  # a fitting size is taken
    assert stacked(np.ones((5, 2), np.float32)).shape == (5, 3)


def test_a_layer_of_several_outputs_in_a_sequential_gets_a_clear_error() -> None:
    a = Input((4,))
    two = Model(a, [Linear(4, 3)(a), Linear(4, 2)(a)], name="two")
    with pytest.raises(ShapeError, match=r"Model layer 'two'.*2 outputs.*functional"):
        Sequential([two, Linear(3, 2)])


def test_a_first_layer_of_several_inputs_is_refused_when_added_not_at_the_first_call() -> None:
    a, b = Input((4,)), Input((4,))
    two_in = Model([a, b], Add()([a, b]), name="two_in")
    with pytest.raises(ConfigError, match=r"Model layer 'two_in'.*2 inputs.*functional"):
        Sequential([two_in, Linear(4, 2)])


# -- the input shape: input_shape=, build, first call ----------------------------------------------


@pytest.mark.parametrize(
    ("shape", "pattern"),
    [
        ("abc", "input_shape"),
        ((-3,), r"input_shape.*-3"),
        ((0,), r"input_shape.*\(0,\)"),
        (4.5, "input_shape"),
    ],
)
def test_a_bad_input_shape_is_a_config_error_naming_the_model(shape: object, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        Sequential([Linear(output_size=2)], input_shape=shape)


def test_an_input_and_another_input_shape_together_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"\(None, 5\).*\(None, 4\)"):
        Sequential([Input((5,)), Linear(output_size=2)], input_shape=(4,))
    assert Sequential([Input((4,)), Linear(output_size=2)], input_shape=(4,)).input_shape == (None, 4)


@pytest.mark.parametrize(
    ("declare", "bad"),
    [
        (lambda: Sequential([Input((4,)), ReLU()]), (2, 5)),
        (lambda: Sequential([ReLU()], input_shape=(4,)), (2, 5)),
        (lambda: Sequential([Input((None, 4)), Linear(output_size=2)]), (2, 4)),  # rank 2 for rank 3
        (lambda: Sequential([Input((3, 4)), Linear(output_size=2)]), (2, 5, 4)),
    ],
)
def test_a_declared_input_shape_is_checked_at_every_call(declare, bad: tuple[int, ...]) -> None:
    """Keras checks a Sequential's Input spec at each call, as a functional model's Input checks its batch."""
    model = declare()
    with pytest.raises(ShapeError, match=r"Sequential layer expected input of shape \(None, .*\), got \("):
        model(np.ones(bad, np.float32))
    with pytest.raises(ShapeError, match="Sequential layer expected input"):
        model.predict(np.ones(bad, np.float32))
    good = tuple(3 if d is None else d for d in model.declared_input_shape[1:])
    assert model.predict(np.ones((2, *good), np.float32)).shape[0] == 2


@pytest.mark.parametrize("bad", [4, "4", None])
def test_build_with_a_non_shape_is_a_clear_error(bad: object) -> None:
    with pytest.raises((ConfigError, NotBuiltError), match="Sequential"):
        Sequential([Linear(output_size=2)]).build(bad)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("how", ["first_call", "build", "input_shape"])
def test_a_second_feature_size_is_refused_and_the_weights_stay(dtype: str, how: str) -> None:
    """Keras: a built layer checks its input spec; it never rebuilds (re-initialises) on a new size."""
    framework.set_default_dtype(dtype)
    try:
        if how == "input_shape":
            model = Sequential([Linear(output_size=3), ReLU(), Linear(output_size=2)], input_shape=(4,))
        else:
            model = Sequential([Linear(output_size=3), ReLU(), Linear(output_size=2)])
            if how == "build":
                model.build((None, 4))
            else:
                model(np.ones((2, 4), dtype))
        before = model.get_weights()
        with pytest.raises(
            ShapeError, match=r"layer.* expected input of shape \((N, \*|None), 4\).*got \(2, 5\)"
        ):
            model(np.ones((2, 5), dtype))
        with pytest.raises(ShapeError, match=r"Linear layer 'linear'.*\(None, 5\)"):
            model.build((None, 5))
        assert _same(model.get_weights(), before) and model.input_shape == (None, 4)
        assert model(np.ones((3, 4), dtype)).dtype == dtype
    finally:
        framework.set_default_dtype("float32")


# -- get_layer ---------------------------------------------------------------------------------------


def _three() -> Sequential:
    return Sequential([Linear(4, 3), ReLU(), Linear(3, 2, name="head")])


@pytest.mark.parametrize(
    ("index", "name"), [(0, "linear"), (2, "head"), (-1, "head"), (-3, "linear"), (np.int64(1), "re_lu")]
)
def test_get_layer_by_index_as_keras_and_python(index: int, name: str) -> None:
    assert _three().get_layer(index=index).name == name


@pytest.mark.parametrize("index", [3, 10, -4])
def test_get_layer_out_of_range_is_a_config_error_naming_the_model_and_the_count(index: int) -> None:
    model = _three()
    with pytest.raises(ConfigError, match=rf"index {index}.*3 layers"):
        model.get_layer(index=index)


@pytest.mark.parametrize("index", [True, 1.0, "1"])
def test_get_layer_with_a_non_integer_index_is_refused(index: object) -> None:
    with pytest.raises(ConfigError, match=rf"index must be an int, got {index!r}"):
        _three().get_layer(index=index)  # type: ignore[arg-type]


def test_get_layer_needs_exactly_one_of_name_and_index() -> None:
    model = _three()
    with pytest.raises(ConfigError, match="either a layer name or an index"):
        model.get_layer()
    with pytest.raises(ConfigError, match=r"only one of.*name='linear'.*index=2"):
        model.get_layer(name="linear", index=2)
    with pytest.raises(ConfigError, match=r"no layer named 'nope'.*'linear', 're_lu', 'head'"):
        model.get_layer("nope")


def test_get_layer_of_a_functional_model_counts_its_inputs_and_does_not_search_nested_models() -> None:
    a = Input((4,), name="a")
    inner = Sequential([Linear(4, 3, name="deep")], name="inner")
    model = Model(a, Linear(3, 2, name="head")(inner(a)))
    assert [layer.name for layer in model.layers] == ["a", "inner", "head"]  # Keras: InputLayer first
    assert model.get_layer(index=0).name == "a" and model.get_layer(index=-1).name == "head"
    assert model.get_layer("inner").get_layer("deep") is inner.layers[0]
    with pytest.raises(ConfigError, match=r"no layer named 'deep'"):
        model.get_layer("deep")
    with pytest.raises(ConfigError, match=r"index 3.*3 layers"):
        model.get_layer(index=3)


def test_placing_a_layer_in_a_second_model_does_not_rename_the_outputs_of_the_first() -> None:
    """Names are per model (docs: ``linear``, ``linear_1``...): model B naming a shared layer must not
    change model A's ``output_names`` (the keys of its losses and logs), which stay A's own names."""
    x, _ = _xy()
    a = Input((4,))
    shared, other = Linear(4, 2), Linear(4, 3)
    model_a = Model(a, [shared(a), other(a)])
    assert model_a.output_names == ["linear", "linear_1"]
    model_a.compile(optimizer="sgd", loss={"linear": "mse", "linear_1": "mse"})
    Sequential([Linear(4, 4), shared])  # B calls it "linear_1" (its own "linear" is taken)
    assert model_a.output_names == ["linear", "linear_1"]
    assert model_a.get_layer("linear") is shared and model_a.get_layer("linear_1") is other
    history = model_a.fit(x, [np.zeros((16, 2)), np.zeros((16, 3))], epochs=1, verbose=0)
    assert sorted(history.history) == ["linear_1_loss", "linear_loss", "loss"]
    assert Model.from_config(model_a.get_config()).output_names == model_a.output_names


def test_a_name_set_by_hand_on_a_model_named_layer_is_the_users() -> None:
    """``layer.name = ...`` after a model named it: its keys follow, and another model refuses a clash."""
    a = Input((4,))
    head = Linear(4, 2)
    model = Model(a, [head(a), Linear(4, 3)(a)])
    head.name = "score"
    assert model.output_names == ["score", "linear_1"]
    with pytest.raises(ConfigError, match=r"two layers are named 'score'"):
        Sequential([Linear(4, 4, name="score"), head])  # was silently renamed "linear"
    assert head.name == "score"


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (lambda a, b: Model({"a": a, "b": b}, Add()([a, b])), r"inputs must be placeholders.*got dict"),
        (lambda a, b: Model([a, b], {"sum": Add()([a, b])}), r"outputs must be placeholders.*got dict"),
        (lambda a, b: Model([], Add()([a, b])), "inputs must not be empty"),
        (lambda a, b: Model([a, b], Linear(4, 2, name="a")(a)), r"two layers are named 'a'"),
    ],
)
def test_unsupported_or_malformed_functional_models_are_clear_config_errors(build, pattern: str) -> None:
    """Keras 3 takes dicts of inputs and outputs; this framework takes lists (and dicts at call time)."""
    with pytest.raises(ConfigError, match=pattern):
        build(Input((4,), name="a"), Input((4,), name="b"))


# -- weights lists: Keras's order --------------------------------------------------------------------


def test_weights_are_listed_layer_by_layer_as_keras_lists_them() -> None:
    """Keras: ``weights`` = each layer's own variables (trainable then not), then its sub-layers'."""
    model = Sequential([Linear(4, 3), BatchNorm(3), Linear(3, 3, name="last")])
    bn, last = model.layers[1], model.layers[2]
    expected = [
        model.layers[0].weight,
        model.layers[0].bias,
        bn.weight,
        bn.bias,
        bn.running_mean,
        bn.running_var,
    ]
    expected += [last.weight, last.bias]
    assert [id(w) for w in model.weights] == [id(w) for w in expected]
    last.trainable = False
    assert [id(w) for w in model.trainable_weights] == [id(w) for w in expected[:4]]
    assert [id(w) for w in model.non_trainable_weights] == [id(w) for w in expected[4:]]
    values = model.get_weights()
    assert [v.shape for v in values] == [(3, 4), (3,), (3,), (3,), (3,), (3,), (3, 3), (3,)]
    np.testing.assert_array_equal(values[5], np.ones(3))  # running_var, right after running_mean


def test_weights_of_nested_models_and_shared_layers_are_listed_once_in_call_order() -> None:
    tower = Sequential([Linear(4, 3), BatchNorm(3)], name="tower")
    left, right = Input((4,), name="left"), Input((4,), name="right")
    head = Linear(3, 1, name="head")
    model = Model([left, right], head(Add()([tower(left), tower(right)])))
    lin, bn = tower.layers
    expected = [
        lin.weight,
        lin.bias,
        bn.weight,
        bn.bias,
        bn.running_mean,
        bn.running_var,
        head.weight,
        head.bias,
    ]
    assert [id(w) for w in model.weights] == [id(w) for w in expected]
    model.set_weights([np.full(w.shape, float(i)) for i, w in enumerate(expected)])
    assert [float(w.data.flat[0]) for w in expected] == [float(i) for i in range(8)]
    assert model.count_params() == sum(w.size for w in expected)


def test_a_layer_that_lists_its_own_parameters_keeps_them_in_its_weights() -> None:
    """DESIGN: a layer may override ``parameters()``; its weights follow what it lists."""
    hidden = framework.Parameter(np.ones(3, np.float32))

    class Listed(framework.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.get = lambda: hidden  # not an attribute the discovery finds

        def parameters(self) -> list[framework.Parameter]:
            return [self.get()]

        def forward(self, ctx, x):
            return x * self.get().data

        def backward(self, ctx, g):
            return g

    layer = Listed()
    assert layer.weights == [hidden] and layer.trainable_weights == [hidden]
    layer.set_weights([np.full(3, 2.0)])
    np.testing.assert_array_equal(hidden.data, [2.0, 2.0, 2.0])


# -- set_weights -------------------------------------------------------------------------------------


def _mlp() -> Sequential:
    return Sequential([Linear(4, 3), BatchNorm(3), Linear(3, 2)])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_set_weights_round_trips_and_casts_to_the_models_dtype(dtype: str) -> None:
    framework.set_default_dtype(dtype)
    try:
        model, other = _mlp(), _mlp()
        other.set_weights(
            [w.astype(np.float64 if dtype == "float32" else np.float32) for w in model.get_weights()]
        )
        assert all(w.dtype == dtype for w in other.get_weights())
        x, _ = _xy(dtype=dtype)
        np.testing.assert_allclose(other.predict(x), model.predict(x), rtol=1e-6)
        other.set_weights([np.ones(w.shape, dtype=np.int64) for w in model.weights])  # ints are numbers
        assert all(w.dtype == dtype and np.all(w == 1) for w in other.get_weights())
    finally:
        framework.set_default_dtype("float32")


@pytest.mark.parametrize(
    ("spoil", "error", "pattern"),
    [
        (lambda ws: ws[:-1], ShapeError, r"expected 8 arrays.*got 7"),
        (lambda ws: [*ws, ws[0]], ShapeError, r"expected 8 arrays.*got 9"),
        (lambda ws: [*ws[:-1], np.ones(5)], ShapeError, r"linear_1\.bias expected shape \(2,\), got \(5,\)"),
        (lambda ws: [*ws[:-1], np.array(["a", "b"])], DataError, r"linear_1\.bias.*numbers.*<U1"),
        (lambda ws: [*ws[:-1], np.ones(2) * 1j], DataError, r"linear_1\.bias.*numbers.*complex128"),
        (lambda ws: [*ws[:-1], np.array([None, None])], DataError, r"linear_1\.bias.*numbers.*object"),
        (lambda ws: None, ConfigError, r"set_weights.*list of arrays.*NoneType"),
        (lambda ws: 3.0, ConfigError, r"set_weights.*list of arrays.*float"),
    ],
)
def test_set_weights_is_atomic_and_names_the_weight(spoil, error: type, pattern: str) -> None:
    model = _mlp()
    before = model.get_weights()
    fresh = [np.full(w.shape, 5.0) for w in before]
    with pytest.raises(error, match=pattern):
        model.set_weights(spoil(fresh))
    assert _same(model.get_weights(), before)  # nothing written, not even the arrays before the bad one


@pytest.mark.parametrize("kind", ["layer", "model"])
def test_load_state_dict_is_atomic_on_a_misshaped_array(kind: str) -> None:
    target = Linear(4, 3) if kind == "layer" else _mlp()
    before = target.get_weights()
    state = {k: np.full(v.shape, 5.0) for k, v in target.state_dict().items()}
    state["bias" if kind == "layer" else "linear_1.bias"] = np.ones(7)
    with pytest.raises(ShapeError, match=r"bias.*expected.*\(\d,\), got \(7,\)"):
        target.load_state_dict(state)
    assert _same(target.get_weights(), before)


# -- trainable toggled after compile, train()/eval() on nested models ------------------------------


def test_freezing_a_nested_model_after_compile_takes_effect_at_the_next_fit() -> None:
    """Documented (``Layer.trainable``): from the next optimizer step, compiled again or not."""
    x, y = _xy()
    inner = Sequential([Linear(4, 3), BatchNorm(3)], name="inner")
    a = Input((4,))
    model = Model(a, Linear(3, 2, name="head")(inner(a)))
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    inner.trainable = False
    frozen = inner.get_weights()
    head = model.get_layer("head").get_weights()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert _same(inner.get_weights(), frozen)  # running statistics too: a frozen BatchNorm runs in inference
    assert not _same(model.get_layer("head").get_weights(), head)
    assert model.count_params(trainable=True) == 3 * 2 + 2
    model.trainable = False
    model.trainable = True  # unfreezes everything again, the nested model too
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert not _same(inner.get_weights(), frozen)


def test_train_and_eval_reach_nested_models_and_the_call_mode_reaches_them_too() -> None:
    inner = Sequential([Linear(4, 4), Dropout(0.5)], name="inner")
    a = Input((4,))
    model = Model(a, inner(a))
    model.eval()
    assert [layer.training for layer in model.modules()] == [False] * 5
    inner.train()
    assert not model.training and all(layer.training for layer in inner.modules())
    x = np.ones((64, 4), np.float32)
    np.testing.assert_array_equal(model(x, training=False), inner(x, training=False))  # the call wins
    assert np.count_nonzero(model(x, training=True) == 0) > 0  # and drops in training calls
    assert all(layer.training for layer in inner.modules())  # the flags are untouched by calls


# -- copies ------------------------------------------------------------------------------------------


def _functional() -> Model:
    a = Input((4,), name="a")
    tower = Sequential([Linear(4, 3), BatchNorm(3)], name="tower")
    return Model(a, Linear(3, 2, name="head")(ReLU()(tower(a))), name="net")


@pytest.mark.parametrize("kind", ["sequential", "functional"])
@pytest.mark.parametrize("how", ["deepcopy", "config"])
def test_a_copy_predicts_the_same_and_trains_independently(kind: str, how: str) -> None:
    x, y = _xy()
    model = _mlp() if kind == "sequential" else _functional()
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    if how == "deepcopy":
        clone = copy.deepcopy(model)
    else:
        clone = type(model).from_config(model.get_config())
        clone.set_weights(model.get_weights())
        clone.compile(optimizer="adam", loss="mse")
    np.testing.assert_array_equal(clone.predict(x), model.predict(x))
    assert [n for n, _ in clone.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert not {id(w) for w in clone.weights} & {id(w) for w in model.weights}
    before = model.get_weights()
    clone.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert _same(model.get_weights(), before) and not _same(clone.get_weights(), before)
    assert {id(p) for p in clone.optimizer.params} == {id(p) for p in clone.trainable_weights}


def test_every_error_raised_here_is_a_framework_error() -> None:
    """Sanity: the refusals above are FrameworkErrors (``except FrameworkError`` catches them)."""
    for call in (lambda: _three().get_layer(index=9), lambda: _mlp().set_weights(None)):
        with pytest.raises(FrameworkError):
            call()
