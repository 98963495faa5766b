"""Hunt for silent wrong results in functional graphs, serialization, summary() and the registry.

Graph gradients are compared with PyTorch in float64 (to 1e-12); checkpoints are compared bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support import requires_h5py, requires_torch
from test_builtins_conformance import DEFAULTS

import framework
from framework import Input, Model, Sequential, layers
from framework.layers import Add, BatchNorm, Concatenate, Linear, Multiply, Subtract
from framework.models.serialize import deserialize_model, serialize_model
from framework.registry.manager import REGISTRY, Registry

try:
    import torch
except ImportError:
    torch = None

TOL = dict(rtol=1e-12, atol=1e-12)


def _t(a: np.ndarray):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def _lin(layer, x):
    """PyTorch's linear with ``layer``'s weights, as leaf tensors kept on the layer for their grads."""
    if not hasattr(layer, "_torch"):
        layer._torch = (_t(layer.weight.data), _t(layer.bias.data))
    w, b = layer._torch
    return torch.nn.functional.linear(x, w, b)


def _check_grads(layer, **extra):
    w, b = layer._torch
    np.testing.assert_allclose(layer.weight.grad, w.grad.numpy(), **TOL)
    np.testing.assert_allclose(layer.bias.grad, b.grad.numpy(), **TOL)


# -- functional graphs: forward and backward against PyTorch -----------------------------------


@requires_torch
def test_shared_layer_fan_out_intermediate_output_and_input_order_match_torch(float64, rng):
    """A shared layer (two calls), a tensor used three times, inputs listed in reverse order of creation,
    an intermediate tensor that is also an output, outputs in a non-trivial order."""
    a = Input((4,), name="a")
    b = Input((3,), name="b")
    shared = Linear(4, 4, activation="tanh", name="shared")
    proj = Linear(3, 4, name="proj")
    head = Linear(8, 2, name="head")
    h1 = shared(a)
    h2 = shared(proj(b))
    s = Add()([h1, h2, h1])  # h1 twice in one merge, and once more as an output
    c = Concatenate()([s, a])  # a feeds the shared layer and the concatenation
    o = head(c)
    model = Model([b, a], [o, h1, s])

    xb, xa = rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    gs = [rng.standard_normal((5, 2)), rng.standard_normal((5, 4)), rng.standard_normal((5, 4))]
    model.zero_grad()
    outs = model([xb, xa])
    dxb, dxa = model.backward(gs)

    ta, tb = _t(xa), _t(xb)
    th1 = torch.tanh(_lin(shared, ta))
    th2 = torch.tanh(_lin(shared, _lin(proj, tb)))
    ts = th1 + th2 + th1
    to = _lin(head, torch.cat([ts, ta], dim=1))
    touts = [to, th1, ts]
    sum((t * torch.tensor(g)).sum() for t, g in zip(touts, gs)).backward()

    assert len(outs) == 3
    for mine, ref in zip(outs, touts):
        np.testing.assert_allclose(mine, ref.detach().numpy(), **TOL)
    np.testing.assert_allclose(dxb, tb.grad.numpy(), **TOL)
    np.testing.assert_allclose(dxa, ta.grad.numpy(), **TOL)
    for layer in (shared, proj, head):
        _check_grads(layer)
    assert [n for n, _ in model.named_parameters()] == [
        "shared.weight",
        "shared.bias",
        "proj.weight",
        "proj.bias",
        "head.weight",
        "head.bias",
    ]


@requires_torch
@requires_h5py
def test_nested_functional_model_called_twice_matches_torch_and_round_trips(float64, rng, tmp_path):
    xi = Input((3,), name="xi")
    l1, l2 = Linear(3, 5, activation="tanh", name="l1"), Linear(5, 2, name="l2")
    tower = Model(xi, l2(l1(xi)), name="tower")
    left, right = Input((3,), name="left"), Input((3,), name="right")
    ya, yb = tower(left), tower(right)
    model = Model([left, right], [Subtract()([ya, yb]), Multiply()([ya, yb])], name="siamese")

    xa, xb = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    g0, g1 = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    model.zero_grad()
    d, p = model([xa, xb])
    dxa, dxb = model.backward([g0, g1])

    ta, tb = _t(xa), _t(xb)
    tya = _lin(l2, torch.tanh(_lin(l1, ta)))
    tyb = _lin(l2, torch.tanh(_lin(l1, tb)))
    ((tya - tyb) * torch.tensor(g0) + (tya * tyb) * torch.tensor(g1)).sum().backward()
    np.testing.assert_allclose(d, (tya - tyb).detach().numpy(), **TOL)
    np.testing.assert_allclose(p, (tya * tyb).detach().numpy(), **TOL)
    np.testing.assert_allclose(dxa, ta.grad.numpy(), **TOL)
    np.testing.assert_allclose(dxb, tb.grad.numpy(), **TOL)
    _check_grads(l1)
    _check_grads(l2)
    assert model.count_params() == 3 * 5 + 5 + 5 * 2 + 2  # the tower once

    path = tmp_path / "siamese.h5"
    model.save(path)
    framework.set_default_dtype("float32")  # the file, not the default, decides the dtype
    loaded = framework.load_model(path, compile=False)
    assert loaded.dtype == np.float64
    assert loaded.count_params() == model.count_params()
    assert [n for n, _ in loaded.named_parameters()] == [n for n, _ in model.named_parameters()]
    for mine, back in zip(model.predict([xa, xb]), loaded.predict([xa, xb])):
        np.testing.assert_array_equal(mine, back)
    inner = loaded.get_layer("tower")
    inner.get_layer("l1").weight.data[...] += 1.0  # still one tower: both branches see the change
    d2, _ = loaded.predict([xa, xa])
    np.testing.assert_array_equal(d2, np.zeros_like(d2))


def test_same_tensor_twice_in_outputs_and_in_a_merge_sums_gradients(float64, rng):
    x = Input((3,))
    lin = Linear(3, 3)
    h = lin(x)
    model = Model(x, [h, h, Multiply()([h, h])])
    xv = rng.standard_normal((2, 3))
    g = [rng.standard_normal((2, 3)) for _ in range(3)]
    model.zero_grad()
    model(xv)
    dx = model.backward(g)
    hv = xv @ lin.weight.data.T + lin.bias.data
    gh = g[0] + g[1] + 2 * hv * g[2]
    np.testing.assert_allclose(dx, gh @ lin.weight.data, **TOL)
    np.testing.assert_allclose(lin.weight.grad, gh.T @ xv, **TOL)


def test_an_input_that_is_also_an_output_passes_its_gradient_through(float64, rng):
    x = Input((3,))
    lin = Linear(3, 3)
    model = Model(x, [lin(x), x])
    xv = rng.standard_normal((2, 3))
    _, same = model(xv)
    np.testing.assert_array_equal(same, xv)
    g0, g1 = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    np.testing.assert_allclose(model.backward([g0, g1]), g0 @ lin.weight.data + g1, **TOL)


def test_an_unused_input_is_kept_and_gets_a_zero_gradient(float64, rng):
    """Keras accepts an input no output depends on; its gradient is zero and its value is irrelevant."""
    a, b = Input((3,), name="a"), Input((2,), name="b")
    model = Model([a, b], Linear(2, 1)(b))
    xb = rng.standard_normal((4, 2))
    y1 = model([rng.standard_normal((4, 3)), xb])
    da, db = model.backward(np.ones((4, 1)))
    y2 = model([rng.standard_normal((4, 3)), xb])
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(da, np.zeros((4, 3)))
    assert db.shape == (4, 2) and np.abs(db).sum() > 0
    with pytest.raises(framework.ShapeError, match="'a'"):  # still checked at the edge
        model.predict([np.zeros((4, 5)), xb])


def test_dict_inputs_are_matched_by_name_not_position(rng):
    a, b = Input((3,), name="a"), Input((2,), name="b")
    model = Model([b, a], Concatenate()([Linear(2, 2)(b), Linear(3, 1)(a)]))
    xa = rng.standard_normal((4, 3)).astype(np.float32)
    xb = rng.standard_normal((4, 2)).astype(np.float32)
    np.testing.assert_array_equal(model.predict({"a": xa, "b": xb}), model.predict([xb, xa]))
    with pytest.raises(framework.DataError, match=r"'b'"):
        model.predict({"a": xa})


def test_calling_a_model_on_a_dict_matches_by_name(rng):
    a, b = Input((3,), name="a"), Input((2,), name="b")
    model = Model([b, a], Concatenate()([Linear(2, 2)(b), Linear(3, 1)(a)]))
    xa = rng.standard_normal((4, 3)).astype(np.float32)
    xb = rng.standard_normal((4, 2)).astype(np.float32)
    np.testing.assert_array_equal(model({"a": xa, "b": xb}), model([xb, xa]))
    with pytest.raises(framework.errors.DataError, match=r"missing: \['b'\]"):
        model({"a": xa})


def test_one_layer_in_two_models_shares_weights_like_keras(rng):
    shared = Linear(3, 3, name="shared")
    x1 = Input((3,))
    m1 = Model(x1, shared(x1))
    x2 = Input((3,))
    m2 = Model(x2, Linear(3, 1)(shared(x2)))
    assert m1.get_layer("shared").weight is m2.get_layer("shared").weight
    xv = rng.standard_normal((8, 3)).astype(np.float32)
    before = m2.predict(xv)
    m1.compile(optimizer="sgd", loss="mse")
    m1.fit(xv, np.zeros((8, 3), np.float32), epochs=1, batch_size=8, verbose=0)
    assert not np.array_equal(m2.predict(xv), before)


@requires_torch
def test_a_batchnorm_shared_by_two_calls_in_training_matches_torch(float64, rng):
    """Each call normalises with its own batch statistics and updates the running statistics once."""
    a, b = Input((3,)), Input((3,))
    bn = BatchNorm(3)
    model = Model([a, b], Add()([bn(a), bn(b)]))
    xa, xb = rng.standard_normal((5, 3)), rng.standard_normal((5, 3)) * 3 + 1
    g = rng.standard_normal((5, 3))
    model.zero_grad()
    out = model([xa, xb], training=True)
    da, db = model.backward(g)
    ref = torch.nn.BatchNorm1d(3).double().train()
    ta, tb = _t(xa), _t(xb)
    tout = ref(ta) + ref(tb)
    (tout * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(out, tout.detach().numpy(), **TOL)
    np.testing.assert_allclose(da, ta.grad.numpy(), **TOL)
    np.testing.assert_allclose(db, tb.grad.numpy(), **TOL)
    np.testing.assert_allclose(bn.weight.grad, ref.weight.grad.numpy(), **TOL)
    np.testing.assert_allclose(bn.bias.grad, ref.bias.grad.numpy(), **TOL)
    np.testing.assert_allclose(bn.running_mean.data, ref.running_mean.numpy(), **TOL)
    np.testing.assert_allclose(bn.running_var.data, ref.running_var.numpy(), **TOL)


def test_graph_errors_are_clear():
    x = Input((4,))
    with pytest.raises(framework.ConfigError, match="mix of placeholders"):
        Add()([x, np.zeros((1, 4))])
    with pytest.raises(framework.ConfigError, match="listed twice"):
        Model([x, x], Linear(4, 1)(x))
    other = Input((4,), name="stray")
    with pytest.raises(framework.ConfigError, match=r"'stray'.*not in inputs"):
        Model(x, [Linear(4, 1)(x), Linear(4, 1)(other)])


# -- serialization: every built-in layer inside a float64 model --------------------------------


def _model_of(name: str, freeze: bool) -> tuple[Model, object]:
    spec = DEFAULTS[name]
    layer = layers.get(name, **spec.kwargs)
    if spec.prepare is not None:
        spec.prepare(layer)
    several = isinstance(spec.shape, list)
    shapes = spec.shape if several else [spec.shape]
    ins = [Input(tuple(s[1:]), name=f"in{i}") for i, s in enumerate(shapes)]
    model = Model(ins if several else ins[0], layer(ins if several else ins[0]), name=f"m_{name}")
    if freeze:
        layer.trainable = False
    rng = np.random.default_rng(0)
    if spec.x is not None:
        x = spec.x
    elif several:
        x = [rng.standard_normal(s) for s in shapes]
    else:
        x = rng.standard_normal(spec.shape)
    return model, x


def _leaves(value):
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


@requires_h5py
@pytest.mark.parametrize("name", sorted(DEFAULTS, key=str.lower))
def test_every_builtin_layer_round_trips_in_float64(name, float64, tmp_path: Path):
    if not REGISTRY.contains("layers", name):
        pytest.skip(f"{name} is not registered")
    model, x = _model_of(name, freeze=name in ("Linear", "BatchNorm", "Conv2d", "LSTM"))
    config = json.loads(json.dumps(serialize_model(model)))
    path = tmp_path / "m.h5"
    model.save(path)
    framework.set_default_dtype("float32")  # the file, not the default, decides the dtype
    rebuilt = deserialize_model(config)
    assert serialize_model(rebuilt) == config
    loaded = framework.load_model(path, compile=False)
    spec = DEFAULTS[name]
    if spec.prepare is not None:  # GCNConv's graph is data, not config
        for child in loaded.children():
            if type(child).__name__ == name:
                spec.prepare(child)
    assert serialize_model(loaded) == config
    assert loaded.name == model.name
    assert [n for n, _ in loaded.named_children()] == [n for n, _ in model.named_children()]
    assert [c.trainable for c in loaded.children()] == [c.trainable for c in model.children()]
    mine, theirs = dict(model.named_parameters()), dict(loaded.named_parameters())
    assert list(mine) == list(theirs)
    for key, p in mine.items():
        assert theirs[key].dtype == np.float64 == p.dtype
        assert theirs[key].trainable == p.trainable, key
    for key, value in model.state_dict().items():
        assert loaded.state_dict()[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded.state_dict()[key], value)
    assert loaded.count_params(trainable=True) == model.count_params(trainable=True)
    model.eval()
    loaded.eval()
    for a, b in zip(_leaves(model(x)), _leaves(loaded(x))):
        assert b.dtype == a.dtype
        np.testing.assert_array_equal(a, b)


def test_an_unregistered_custom_layer_is_refused_at_save_naming_the_class(tmp_path: Path):
    class MyLinear(Linear):  # a subclass of a registered class must not be saved as "Linear"
        pass

    x = Input((3,))
    model = Model(x, MyLinear(3, 2)(x))
    path = tmp_path / "custom.h5"
    with pytest.raises(framework.ConfigError, match=r"MyLinear.*not registered.*register"):
        model.save(path)
    assert not path.exists()
    with pytest.raises(framework.ConfigError, match="MyLinear"):
        serialize_model(model)


# -- save_weights / load_weights --------------------------------------------------------------


def _mlp(names=("a", "b", "c")) -> Sequential:
    return Sequential([Linear(3, 4, name=names[0]), Linear(4, 4, name=names[1]), Linear(4, 2, name=names[2])])


@requires_h5py
def test_load_weights_by_position_ignores_names_and_by_name_ignores_order(tmp_path: Path, rng):
    src = _mlp()
    src.build((None, 3))
    path = tmp_path / "w.h5"
    src.save_weights(path)
    xv = rng.standard_normal((5, 3)).astype(np.float32)

    renamed = _mlp(("x", "y", "z"))
    renamed.build((None, 3))
    renamed.load_weights(path)  # default: by order of the layers with weights (Keras)
    np.testing.assert_array_equal(renamed.predict(xv), src.predict(xv))

    # A functional model whose layers are created in another order: by name picks the right ones.
    inp = Input((3,))
    c, b, a = Linear(4, 2, name="c"), Linear(4, 4, name="b"), Linear(3, 4, name="a")
    other = Model(inp, c(b(a(inp))))
    other.load_weights(path, by_name=True)
    np.testing.assert_array_equal(other.predict(xv), src.predict(xv))


@requires_h5py
def test_load_weights_by_name_with_no_matching_name_loads_nothing_silently_as_keras(tmp_path: Path):
    """Keras's by_name=True skips layers absent from the file without a word: nothing changes."""
    src = _mlp()
    src.build((None, 3))
    path = tmp_path / "w.h5"
    src.save_weights(path)
    other = _mlp(("x", "y", "z"))
    other.build((None, 3))
    before = [w.copy() for w in other.get_weights()]
    other.load_weights(path, by_name=True)
    for old, new in zip(before, other.get_weights()):
        np.testing.assert_array_equal(old, new)


@requires_h5py
def test_load_weights_of_another_architecture_names_the_layer_and_changes_nothing(tmp_path: Path):
    src = _mlp()
    src.build((None, 3))
    path = tmp_path / "w.h5"
    src.save_weights(path)
    other = Sequential([Linear(3, 4, name="a"), Linear(4, 5, name="b"), Linear(5, 2, name="c")])
    other.build((None, 3))
    before = {k: v.copy() for k, v in other.state_dict().items()}
    with pytest.raises(framework.CheckpointError, match=r"(?s)/b\b.*shape|shape.*/b\b"):
        other.load_weights(path)
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    fewer = Sequential([Linear(3, 2)])
    fewer.build((None, 3))
    with pytest.raises(framework.CheckpointError, match=r"3 layers.*1 layers.*by_name"):
        fewer.load_weights(path)


# -- summary() and count_params ---------------------------------------------------------------


def test_summary_counts_each_parameter_once_with_frozen_and_buffers_split():
    inner = Sequential([Linear(4, 4, name="i1"), BatchNorm(4, name="bn")], name="inner")
    x, y = Input((4,), name="x"), Input((4,), name="y")
    frozen = Linear(4, 3, name="frozen")
    frozen.trainable = False
    model = Model([x, y], [frozen(inner(x)), frozen(inner(y)), Linear(None, 2, name="lazy")(inner(x))])
    model.eval()
    seen: dict[int, object] = {}
    for _, p in model.named_parameters():
        seen[id(p)] = p
    buffers = sum(b.size for _, b in inner.get_layer("bn").named_buffers())
    assert buffers == 4 + 4  # running mean and variance
    total_params = sum(p.size for p in seen.values())
    frozen_ids = {id(p) for p in frozen.parameters()}
    trainable = sum(p.size for p in seen.values() if p.trainable and id(p) not in frozen_ids)
    assert model.count_params(trainable=True) == trainable == (16 + 4) + (4 + 4) + (4 * 2 + 2)
    assert model.count_params() == total_params + buffers == trainable + (4 * 3 + 3) + buffers
    assert model.count_params(trainable=False) == model.count_params() - trainable
    lines: list[str] = []
    text = model.summary(print_fn=lines.append, line_length=200)
    assert f"Total params: {model.count_params():,}" in text
    assert f"Trainable params: {trainable:,}" in text
    assert f"Non-trainable params: {model.count_params() - trainable:,}" in text
    assert "(None, 2)" in text and "(None, 3)" in text


def test_summary_shapes_with_unknown_axes():
    x = Input((None, 6), name="seq")
    h = Linear(6, 3, name="proj")(x)
    model = Model(x, Concatenate(axis=-1)([h, x]))
    text = model.summary(print_fn=lambda _: None, line_length=200)
    assert "(None, None, 3)" in text and "(None, None, 9)" in text
    assert model.count_params() == 6 * 3 + 3
    assert model.predict(np.zeros((2, 7, 6), np.float32)).shape == (2, 7, 9)


# -- registry ---------------------------------------------------------------------------------


def test_layer_lookup_ignores_case_and_underscores_and_rebuilds_from_config():
    cls = REGISTRY.get("layers", "Linear")
    assert REGISTRY.get("layers", "LINEAR") is cls and REGISTRY.get("layers", "lin_ear") is cls
    layer = layers.get({"class_name": "linear", "config": {"input_size": 2, "output_size": 3}})
    assert type(layer) is cls and layer.weight.shape == (3, 2)
    with pytest.raises(framework.FrameworkError, match=r"Lineer.*Linear"):
        layers.get("Lineer")


def test_a_second_plugin_taking_a_builtin_name_names_both_distributions():
    reg = Registry()
    reg.load()

    class Plugin:
        @framework.hookimpl
        def register_layers(self, register):
            class Linear(framework.Layer):
                pass

            register(Linear)

    with pytest.raises(framework.PluginError) as info:
        reg.register_plugin(Plugin(), distribution="thirdparty-linear")
    text = str(info.value)
    builtin = REGISTRY.entry("layers", "Linear").plugin.distribution
    assert "thirdparty-linear" in text and builtin in text
