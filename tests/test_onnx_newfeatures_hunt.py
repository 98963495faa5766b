"""Hunting silent wrong results in ONNX export/import and weight interchange for newer model kinds.

Model kinds the other ONNX and interchange tests leave out:

- float16 and float64 models: the exported graph's dtype, onnxruntime against ``predict``
  (float16 at its own precision, float64 at 1e-10), and the dtype kept by ``framework.onnx.load``;
- functional nodes pinned with ``training=``: ``False`` exports the inference form (running statistics),
  ``True`` is refused with an ``ExportError`` naming the layer, at any nesting depth;
- tied weights (one ``Parameter`` in two layers): the ONNX result, the PyTorch state dict loaded strictly
  into a tied ``torch.nn`` twin, and safetensors / ``.npz`` round trips that keep the tie;
- ``Model`` / ``Sequential`` subclasses: a functional subclass exports, a hand-written ``forward`` is
  refused (never exported as the graph it does not run), naming the class;
- nested ``Sequential`` in a ``Model``, layers and parameters held in list / dict attributes, and layer
  or input names that are not identifiers.

The bug these tests found (a subclass overriding ``forward`` exported as its graph, silently dropping
the override) was fixed in ``framework/onnx/exporter.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import requires_onnx, requires_onnxruntime

import framework
import framework.onnx
from framework import Input, Layer, Model, Parameter, Sequential
from framework import layers as L
from framework.errors import ConfigError, ExportError
from framework.interchange import load_weights_file, read_state_dict, save_weights_file, state_dict

try:
    import onnx
except ImportError:
    onnx = None
try:
    import onnxruntime as ort
except ImportError:
    ort = None

TOL32 = {"rtol": 1e-5, "atol": 1e-5}
TOL64 = {"rtol": 1e-10, "atol": 1e-10}
TOL16 = {"rtol": 4e-3, "atol": 4e-3}
ELEM = (
    {
        "float16": onnx.TensorProto.FLOAT16,
        "float32": onnx.TensorProto.FLOAT,
        "float64": onnx.TensorProto.DOUBLE,
    }
    if onnx is not None
    else {}
)


@pytest.fixture
def dtype_scope() -> Any:
    """Set the default dtype inside a test; float32 is restored afterwards."""
    yield framework.set_default_dtype
    framework.set_default_dtype("float32")


def _session(model: Any, path: Path) -> Any:
    framework.onnx.export(model, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _compare(model: Any, x: np.ndarray, path: Path, tol: dict[str, float]) -> np.ndarray:
    """onnxruntime's output for ``x`` against ``predict``: same shape, same dtype, within ``tol``."""
    session = _session(model, path)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    expected = model.predict(x)
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), **tol)
    return got


def _randomise_bn(model: Any, seed: int = 5) -> Any:
    """Running statistics and affine parameters far from their defaults, so the inference form shows."""
    rng = np.random.default_rng(seed)
    for name, buffer in model.named_buffers():
        if name.endswith("running_mean"):
            buffer.data[...] = rng.normal(size=buffer.data.shape)
        elif name.endswith("running_var"):
            buffer.data[...] = rng.uniform(0.5, 2.0, size=buffer.data.shape)
    return model


# -- float16 / float64 models --------------------------------------------------------------------

DTYPE_CASES: dict[str, tuple[Any, tuple[int, ...], tuple[str, ...]]] = {
    "mlp_bn": (
        lambda: [L.Linear(6, 5, activation="relu"), L.BatchNorm(5), L.Linear(5, 3, activation="tanh")],
        (6,),
        ("float16", "float64"),
    ),
    "layernorm_softmax": (
        lambda: [L.Linear(6, 5), L.LayerNorm(5), L.Softmax()],
        (6,),
        ("float16", "float64"),
    ),
    "log_softmax": (lambda: [L.Linear(6, 4), L.LogSoftmax()], (6,), ("float16", "float64")),
    "gelu_silu": (lambda: [L.Linear(6, 5, activation="gelu"), L.SiLU()], (6,), ("float16",)),
    "conv1d_bn": (lambda: [L.Conv1d(3, 4, 3, padding=1), L.BatchNorm(4), L.ReLU()], (3, 9), ("float16",)),
    "conv2d_pool": (
        lambda: [L.Conv2d(3, 4, 3), L.MaxPool2d(2), L.Flatten(), L.Linear(36, 2)],
        (3, 8, 8),
        ("float16",),
    ),
    "lstm": (lambda: [L.LSTM(6, 4, batch_first=True, output="sequence")], (5, 6), ("float16",)),
    "gru_last": (lambda: [L.GRU(6, 4, batch_first=True, output="last")], (5, 6), ("float16",)),
}
DTYPE_PARAMS = [(case, dt) for case, (_, _, dts) in DTYPE_CASES.items() for dt in dts]


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize(("case", "dt"), DTYPE_PARAMS, ids=[f"{c}-{d}" for c, d in DTYPE_PARAMS])
def test_export_of_a_float16_or_float64_model(case: str, dt: str, dtype_scope: Any, tmp_path: Path) -> None:
    # onnxruntime's CPU provider has no float64 Conv, Erf, LSTM...: float64 cases use ops it runs.
    make, shape, _ = DTYPE_CASES[case]
    dtype_scope(dt)
    model = _randomise_bn(Sequential([Input(shape), *make()]))
    assert model.dtype == np.dtype(dt)
    x = np.random.default_rng(0).normal(size=(4, *shape)).astype(dt)
    _compare(model, x, tmp_path / "m.onnx", TOL16 if dt == "float16" else TOL64)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == ELEM[dt]
    assert proto.graph.output[0].type.tensor_type.elem_type == ELEM[dt]
    assert {init.data_type for init in proto.graph.initializer} <= {ELEM[dt], onnx.TensorProto.INT64}


@requires_onnx
@pytest.mark.parametrize("dt", ["float16", "float32", "float64"])
def test_export_then_import_keeps_the_dtype(dt: str, dtype_scope: Any, tmp_path: Path) -> None:
    dtype_scope(dt)
    model = _randomise_bn(
        Sequential([Input((4,)), L.Linear(4, 3, activation="relu"), L.BatchNorm(3), L.Linear(3, 2)])
    )
    framework.onnx.export(model, tmp_path / "m.onnx")
    dtype_scope("float32")
    back = framework.onnx.load(tmp_path / "m.onnx")
    assert back.dtype == np.dtype(dt)
    assert all(p.data.dtype == np.dtype(dt) for p in back.parameters())
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(dt)
    got = back.predict(x)
    assert got.dtype == np.dtype(dt)
    tol = {"float16": TOL16, "float32": TOL32, "float64": TOL64}[dt]
    np.testing.assert_allclose(got.astype(np.float64), model.predict(x).astype(np.float64), **tol)


@requires_onnx
@requires_onnxruntime
def test_float16_embedding_keeps_an_int64_input(dtype_scope: Any, tmp_path: Path) -> None:
    dtype_scope("float16")
    model = Sequential([Input((5,)), L.Embedding(10, 4), L.Flatten(), L.Linear(20, 2)])
    session = _session(model, tmp_path / "m.onnx")
    assert session.get_inputs()[0].type == "tensor(int64)"
    assert session.get_outputs()[0].type == "tensor(float16)"
    x = np.random.default_rng(2).integers(0, 10, size=(3, 5))
    np.testing.assert_allclose(
        session.run(None, {session.get_inputs()[0].name: x})[0], model.predict(x), **TOL16
    )


# -- nodes pinned with training= -----------------------------------------------------------------


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_batchnorm_pinned_training_false_exports_the_inference_form(
    dt: str, dtype_scope: Any, tmp_path: Path
) -> None:
    dtype_scope(dt)
    i = Input((3,))
    h = L.Linear(3, 3)(i)
    h = L.BatchNorm(3, eps=1e-3)(h, training=False)
    o = L.Dropout(0.5)(h, training=False)
    model = _randomise_bn(Model(i, o))
    bn = next(layer for layer in model.layers if type(layer).__name__ == "BatchNorm")
    x = np.random.default_rng(3).normal(size=(6, 3)).astype(dt)
    got = _compare(model, x, tmp_path / "m.onnx", TOL32 if dt == "float32" else TOL64)
    lin = model.layers[1]
    z = x.astype(np.float64) @ lin.weight.data.T.astype(np.float64) + lin.bias.data
    ref = (z - bn.running_mean.data) / np.sqrt(bn.running_var.data + 1e-3) * bn.weight.data + bn.bias.data
    np.testing.assert_allclose(got, ref, **(TOL32 if dt == "float32" else TOL64))


def _pinned_true_models() -> dict[str, Any]:
    def bn_true() -> Model:
        i = Input((3,))
        return Model(i, L.BatchNorm(3)(i, training=True))

    def mc_dropout() -> Model:
        i = Input((3,))
        return Model(i, L.Dropout(0.3)(L.Linear(3, 3)(i), training=True))

    def nested_inner_true() -> Model:
        j = Input((3,))
        return Model(j, L.Linear(3, 2)(bn_true()(j)))

    def outer_call_true() -> Model:
        i = Input((3,))
        inner = Model(i, L.BatchNorm(3)(i), name="inner_block")
        j = Input((3,))
        return Model(j, inner(j, training=True))

    def sequential_holding_pinned() -> Sequential:
        return Sequential([Input((3,)), mc_dropout()])

    return {
        "bn_true": (bn_true, "batch_norm"),
        "mc_dropout": (mc_dropout, "dropout"),
        "nested_inner_true": (nested_inner_true, "batch_norm"),
        "outer_call_true": (outer_call_true, "inner_block"),
        "sequential_holding_pinned": (sequential_holding_pinned, "dropout"),
    }


PINNED = _pinned_true_models()


@requires_onnx
@pytest.mark.parametrize("case", sorted(PINNED))
def test_node_pinned_training_true_is_refused(case: str, tmp_path: Path) -> None:
    make, layer_name = PINNED[case]
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(ExportError, match="training=True") as info:
        framework.onnx.export(make(), path)
    assert layer_name in str(info.value)
    assert path.read_bytes() == b"previous"


@requires_onnx
@requires_onnxruntime
def test_inner_model_called_with_training_false_exports_its_running_statistics(tmp_path: Path) -> None:
    i = Input((3,))
    inner = _randomise_bn(Model(i, L.BatchNorm(3)(i), name="inner"))
    j = Input((3,))
    model = Model(j, L.Linear(3, 2)(inner(j, training=False)))
    _compare(model, np.random.default_rng(4).normal(size=(5, 3)).astype("f4"), tmp_path / "m.onnx", TOL32)


# -- tied weights --------------------------------------------------------------------------------


def _tied(dt: str = "float32") -> Sequential:
    a, b = L.Linear(4, 4), L.Linear(4, 4)
    a.build((None, 4))
    b.build((None, 4))
    b.weight = a.weight
    model = Sequential([Input((4,)), a, L.ReLU(), b])
    assert model.layers[0].weight is model.layers[2].weight
    return model


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_tied_weights_export_and_import(dt: str, dtype_scope: Any, tmp_path: Path) -> None:
    dtype_scope(dt)
    model = _tied()
    x = np.random.default_rng(5).normal(size=(3, 4)).astype(dt)
    tol = TOL32 if dt == "float32" else TOL64
    got = _compare(model, x, tmp_path / "m.onnx", tol)
    w, b1, b2 = model.layers[0].weight.data, model.layers[0].bias.data, model.layers[2].bias.data
    np.testing.assert_allclose(got, np.maximum(x @ w.T + b1, 0) @ w.T + b2, **tol)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    weights = [init for init in proto.graph.initializer if init.name.endswith("weight")]
    assert 1 <= len(weights) <= 2
    assert all(np.array_equal(onnx.numpy_helper.to_array(init), w) for init in weights)
    back = framework.onnx.load(tmp_path / "m.onnx")
    np.testing.assert_allclose(back.predict(x), model.predict(x), **tol)


@pytest.mark.parametrize("suffix", ["safetensors", "npz"])
@pytest.mark.parametrize("names", ["torch", "native"])
def test_tied_weights_file_round_trip_keeps_the_tie(suffix: str, names: str, tmp_path: Path) -> None:
    if suffix == "safetensors":
        pytest.importorskip("safetensors")
    model = _tied()
    path = tmp_path / f"w.{suffix}"
    save_weights_file(model, path, names=names)
    keys = set(read_state_dict(path))
    if names == "torch":
        assert keys == {"0.weight", "0.bias", "2.weight", "2.bias"}
    else:
        assert len([k for k in keys if k.endswith("weight")]) == 1  # a tied parameter is kept once
    fresh = _tied()
    load_weights_file(fresh, path)
    assert fresh.layers[0].weight is fresh.layers[2].weight
    for p, q in zip(model.parameters(), fresh.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    fresh.layers[0].weight.data[...] += 1.0  # still one array after loading
    np.testing.assert_array_equal(fresh.layers[2].weight.data, fresh.layers[0].weight.data)


def test_tied_torch_state_dict_loads_strictly_into_a_tied_torch_twin() -> None:
    torch = pytest.importorskip("torch")
    model = _tied()
    twin = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
    twin[2].weight = twin[0].weight
    sd = state_dict(model, format="torch")
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
    x = np.random.default_rng(6).normal(size=(5, 4)).astype("f4")
    with torch.no_grad():
        ref = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), ref, **TOL32)
    # and back: the twin's dict (the tied weight under both names) loads into a fresh tied model
    fresh = _tied()
    fresh.load_state_dict({k: v.detach().numpy() for k, v in twin.state_dict().items()})
    np.testing.assert_allclose(fresh.predict(x), ref, **TOL32)


def test_tied_weight_given_two_different_values_is_refused() -> None:
    sd = {k: np.array(v) for k, v in state_dict(_tied(), format="torch").items()}
    sd["2.weight"] = sd["2.weight"] + 1.0
    with pytest.raises(ConfigError, match="tied"):
        _tied().load_state_dict(sd)


@pytest.mark.parametrize("dt", ["float16", "float64"])
@pytest.mark.parametrize("suffix", ["safetensors", "npz"])
def test_float16_float64_weight_files_keep_dtype_and_values(
    dt: str, suffix: str, dtype_scope: Any, tmp_path: Path
) -> None:
    if suffix == "safetensors":
        pytest.importorskip("safetensors")
    dtype_scope(dt)
    model = _randomise_bn(Sequential([Input((4,)), L.Linear(4, 3), L.BatchNorm(3)]))
    save_weights_file(model, tmp_path / f"w.{suffix}")
    stored = read_state_dict(tmp_path / f"w.{suffix}")
    assert {v.dtype for k, v in stored.items() if not k.endswith("num_batches_tracked")} == {np.dtype(dt)}
    fresh = Sequential([Input((4,)), L.Linear(4, 3), L.BatchNorm(3)])
    load_weights_file(fresh, tmp_path / f"w.{suffix}")
    for (k, v), (_, w) in zip(sorted(model.state_dict().items()), sorted(fresh.state_dict().items())):
        assert w.dtype == np.dtype(dt), k
        np.testing.assert_array_equal(v, w)


# -- subclasses, nesting, containers, names ------------------------------------------------------


class _FunctionalSub(Model):
    def __init__(self) -> None:
        i = Input((4,))
        super().__init__(i, L.Linear(4, 2)(L.Linear(4, 4, activation="relu")(i)))


class _FunctionalSubForward(_FunctionalSub):
    def forward(self, ctx: Any, x: Any) -> Any:
        return super().forward(ctx, x) * 2.0 + 1.0


class _SequentialSubForward(Sequential):
    def forward(self, ctx: Any, x: Any) -> Any:
        return super().forward(ctx, x) * 3.0


class _HandWritten(Model):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = [L.Linear(4, 4), L.Linear(4, 2)]
        self.heads = {"a": L.Linear(2, 1)}
        self.scale = Parameter(np.full(2, 0.5, dtype=np.float32))

    def forward(self, ctx: Any, x: Any) -> Any:
        for block in self.blocks:
            x = block(x)
        return self.heads["a"](x * self.scale.data)


@requires_onnx
@requires_onnxruntime
def test_functional_model_subclass_exports(tmp_path: Path) -> None:
    model = _FunctionalSub()
    _compare(model, np.random.default_rng(7).normal(size=(3, 4)).astype("f4"), tmp_path / "m.onnx", TOL32)


@requires_onnx
@pytest.mark.parametrize(
    "make",
    [_FunctionalSubForward, lambda: _SequentialSubForward([Input((4,)), L.Linear(4, 2)])],
    ids=["functional", "sequential"],
)
def test_subclass_overriding_forward_is_refused_not_exported_as_its_graph(make: Any, tmp_path: Path) -> None:
    model = make()
    with pytest.raises(ExportError, match=type(model).__name__) as info:
        framework.onnx.export(model, tmp_path / "m.onnx")
    assert "forward" in str(info.value)
    assert not (tmp_path / "m.onnx").exists()


@requires_onnx
def test_subclass_overriding_forward_nested_in_a_model_is_refused(tmp_path: Path) -> None:
    inner = _FunctionalSubForward()
    j = Input((4,))
    with pytest.raises(ExportError, match="_FunctionalSubForward"):
        framework.onnx.export(Model(j, L.Linear(2, 1)(inner(j))), tmp_path / "m.onnx")


@requires_onnx
def test_hand_written_subclass_is_refused_naming_the_class(tmp_path: Path) -> None:
    model = _HandWritten()
    model.predict(np.ones((2, 4), dtype=np.float32))
    with pytest.raises(ExportError, match="_HandWritten"):
        framework.onnx.export(model, tmp_path / "m.onnx")


def test_list_and_dict_held_layers_round_trip_through_weight_files(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    x = np.random.default_rng(8).normal(size=(3, 4)).astype("f4")
    model = _HandWritten()
    model.predict(x)
    keys = set(state_dict(model, format="torch"))
    assert keys == {
        "blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias",
        "heads.a.weight", "heads.a.bias", "scale",
    }  # fmt: skip
    for suffix in ("npz", "safetensors"):
        save_weights_file(model, tmp_path / f"w.{suffix}")
        fresh = _HandWritten()
        fresh.predict(x)
        load_weights_file(fresh, tmp_path / f"w.{suffix}")
        np.testing.assert_array_equal(fresh.predict(x), model.predict(x))


@requires_onnx
@requires_onnxruntime
def test_nested_sequential_in_model_export_and_torch_names(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    inner = Sequential([L.Linear(4, 5, activation="tanh"), L.Linear(5, 3)], name="body")
    i = Input((4,))
    model = Model(i, L.Linear(3, 2, name="head")(inner(i)))
    x = np.random.default_rng(9).normal(size=(6, 4)).astype("f4")
    _compare(model, x, tmp_path / "m.onnx", TOL32)
    twin = torch.nn.Module()
    twin.body = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    twin.head = torch.nn.Linear(3, 2)
    twin.load_state_dict(
        {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict(format="torch").items()}
    )
    with torch.no_grad():
        ref = twin.head(twin.body(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(model.predict(x), ref, **TOL32)


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize("name", ["my layer", "a:b;c", "x-y", "output", "input", "linear_1", "é-ü"])
def test_layer_and_input_names_that_need_sanitising(name: str, tmp_path: Path) -> None:
    i = Input((4,), name=f"in {name}")
    h = L.Linear(4, 4, name=name)(i)
    o = L.Linear(4, 2, name="linear_1" if name != "linear_1" else "linear")(h)
    model = Model(i, o)
    x = np.random.default_rng(10).normal(size=(3, 4)).astype("f4")
    _compare(model, x, tmp_path / "m.onnx", TOL32)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [f"in {name}"]
    assert [o.name for o in session.get_outputs()] == ["output"]
    proto = onnx.load(str(tmp_path / "m.onnx"))
    names = [n.name for n in proto.graph.node] + [t.name for t in proto.graph.initializer]
    assert len(names) == len(set(names))
    back = framework.onnx.load(tmp_path / "m.onnx")
    np.testing.assert_allclose(back.predict(x), model.predict(x), **TOL32)


@requires_onnx
def test_custom_layer_holding_layers_in_a_list_is_refused_naming_it(tmp_path: Path) -> None:
    class Block(Layer):
        def __init__(self) -> None:
            super().__init__()
            self.parts = [L.Linear(4, 4), L.Linear(4, 4)]

        def forward(self, ctx: Any, x: Any) -> Any:
            return x

        def backward(self, ctx: Any, grad: Any) -> Any:
            return grad

        def output_shape(self, shape: Any) -> Any:
            return shape

    with pytest.raises(ExportError, match="Block") as info:
        framework.onnx.export(Sequential([Input((4,)), Block()]), tmp_path / "m.onnx")
    assert "register_onnx_converters" in str(info.value)
