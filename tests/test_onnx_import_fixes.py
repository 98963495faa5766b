"""ONNX import fixes: old-opset softmax, recurrent attributes, ConvTranspose ``output_shape``, the
file's dtype, degenerate graphs and files, export-then-import round trips, BatchNorm's momentum.

Hand-built graphs are compared with onnxruntime (float32 at 1e-5, float64 at 1e-10); what the
importer cannot express must raise ``ExportError`` naming the node and the attribute.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import ort_session, requires_onnx, requires_onnxruntime

import framework
import framework.onnx
from framework import Input, Sequential
from framework import layers as L
from framework.errors import ExportError

try:
    import onnx

    helper = onnx.helper
    F32, F64 = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE
except ImportError:  # the tests that need it skip; F32 stays a default argument below
    onnx = helper = None
    F32, F64 = 1, 11  # onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE
try:
    import onnxruntime as ort
except ImportError:
    ort = None

TOL = {"rtol": 1e-5, "atol": 1e-5}
TOL64 = {"rtol": 1e-10, "atol": 1e-10}


def vi(name: str, shape: Any, elem: int = F32) -> Any:
    return helper.make_tensor_value_info(name, elem, shape)


def const(array: Any, name: str) -> Any:
    return onnx.numpy_helper.from_array(np.asarray(array), name)


def graph_file(
    tmp_path: Path,
    nodes: list[Any],
    inputs: list[Any],
    outputs: list[Any],
    inits: Any = (),
    opset: int = 17,
    name: str = "g",
) -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort_session(path)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def matches_ort(path: Path, x: np.ndarray, tol: dict[str, float] = TOL) -> Any:
    """Load ``path`` (it must load) and check ``predict`` against onnxruntime; returns the model."""
    model = framework.onnx.load(path)
    expected, got = ort_run(path, x), model.predict(x)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    np.testing.assert_allclose(got, expected, **tol)
    return model


def kinds(model: Any) -> list[str]:
    return [type(layer).__name__ for layer in model.layers[1:]]


RNG = np.random.default_rng(7)


# -- 1. Softmax / LogSoftmax before opset 13: all the axes from `axis` on, as one -----------------


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset", [11, 12, 13])
@pytest.mark.parametrize("axis", [None, 1, 2, 3, -1, -2, -3])
def test_softmax_axis_semantics_of_each_opset(op: str, opset: int, axis: int | None, tmp_path: Path) -> None:
    attrs = {} if axis is None else {"axis": axis}
    node = helper.make_node(op, ["x"], ["y"], name="sm", **attrs)
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3, 4, 5])], [vi("y", ["N", 3, 4, 5])], opset=opset)
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    matches_ort(path, x)


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_of_a_rank2_input_is_one_layer(opset: int, tmp_path: Path) -> None:
    node = helper.make_node("Softmax", ["x"], ["y"])
    path = graph_file(tmp_path, [node], [vi("x", ["N", 6])], [vi("y", ["N", 6])], opset=opset)
    model = matches_ort(path, RNG.standard_normal((3, 6)).astype(np.float32))
    assert kinds(model) == ["Softmax"]


@requires_onnx
def test_old_softmax_over_the_batch_axis_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("Softmax", ["x"], ["y"], axis=0, name="whole")
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3, 4])], [vi("y", ["N", 3, 4])], opset=11)
    with pytest.raises(ExportError, match=r"Softmax node 'whole' \(opset 11, axis 0\)"):
        framework.onnx.load(path)


@requires_onnx
def test_old_softmax_over_axes_of_unknown_size_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("LogSoftmax", ["x"], ["y"], name="ls")
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3, "L"])], [vi("y", ["N", 3, "L"])], opset=12)
    with pytest.raises(ExportError, match=r"LogSoftmax node 'ls'.*sizes must be known"):
        framework.onnx.load(path)


# -- 2. recurrent attributes: honoured or refused, naming node and attribute ---------------------


def recurrent_file(tmp_path: Path, op: str, inputs: int = 3, **attrs: Any) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(1)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    hidden, features = 3, 4
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    inits = [
        const(rng.standard_normal((dirs, gates * hidden, features)).astype(np.float32), "W"),
        const(rng.standard_normal((dirs, gates * hidden, hidden)).astype(np.float32), "R"),
        const(rng.standard_normal((dirs, 2 * gates * hidden)).astype(np.float32), "B"),
        const(np.array([5, 5], np.int32), "lens"),
    ]
    names = ["x", "W", "R", "B", "lens"][:inputs]
    nodes = [
        helper.make_node(op, names, ["Y", "Y_h"], hidden_size=hidden, name="rec", **attrs),
        helper.make_node("Transpose", ["Y_h"], ["Y_t"], perm=[1, 0, 2]),
        helper.make_node("Reshape", ["Y_t", "shape"], ["y"]),
    ]
    inits.append(const(np.array([0, -1], np.int64), "shape"))
    path = graph_file(
        tmp_path, nodes, [vi("x", [5, "N", features])], [vi("y", ["N", dirs * hidden])], inits, name=op
    )
    return path, rng.standard_normal((5, 2, features)).astype(np.float32)


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize(
    ("op", "attrs"),
    [
        ("LSTM", {"activations": ["Sigmoid", "Tanh", "Tanh"]}),
        ("LSTM", {"activations": ["Sigmoid", "Tanh", "Tanh"] * 2, "direction": "bidirectional"}),
        ("GRU", {"activations": ["Sigmoid", "Tanh"], "linear_before_reset": 1}),
        ("GRU", {"linear_before_reset": 1, "direction": "bidirectional"}),
        # activation_alpha / beta are read only by activations with parameters: none here
        ("LSTM", {"activations": ["Sigmoid", "Tanh", "Tanh"], "activation_alpha": [0.5]}),
        ("RNN", {"activations": ["Relu", "Relu"], "direction": "bidirectional"}),
    ],
)
def test_recurrent_default_activations_and_directions_load(op: str, attrs: Any, tmp_path: Path) -> None:
    path, x = recurrent_file(tmp_path, op, inputs=4, **attrs)
    matches_ort(path, x)


@requires_onnx
@pytest.mark.parametrize(
    ("op", "attrs", "message"),
    [
        ("LSTM", {"activations": ["Sigmoid", "Relu", "Relu"]}, r"activations=\['Sigmoid', 'Relu', 'Relu'\]"),
        ("LSTM", {"activations": ["HardSigmoid", "Tanh", "Tanh"]}, r"activations="),
        ("GRU", {"activations": ["HardSigmoid", "Tanh"], "linear_before_reset": 1}, r"activations="),
        ("RNN", {"activations": ["Tanh", "Relu"], "direction": "bidirectional"}, r"activations="),
        ("LSTM", {"clip": 1.0}, r"clip=1\.0"),
        ("LSTM", {"input_forget": 1}, r"input_forget=1"),
        ("GRU", {"layout": 1, "linear_before_reset": 1}, r"layout=1"),
        ("GRU", {"linear_before_reset": 0}, r"linear_before_reset=1"),
        ("RNN", {"direction": "reverse"}, r"direction='reverse'"),
    ],
)
def test_recurrent_attributes_the_layers_lack_are_refused(
    op: str, attrs: Any, message: str, tmp_path: Path
) -> None:
    path, _ = recurrent_file(tmp_path, op, **attrs)
    with pytest.raises(ExportError, match=rf"{op} node 'rec'.*{message}"):
        framework.onnx.load(path)


@requires_onnx
def test_recurrent_sequence_lengths_are_refused(tmp_path: Path) -> None:
    path, _ = recurrent_file(tmp_path, "LSTM", inputs=5)
    with pytest.raises(ExportError, match=r"LSTM node 'rec' has the input sequence_lens"):
        framework.onnx.load(path)


# -- 3. ConvTranspose: output_shape and uneven pads ------------------------------------------------


def conv_transpose_file(tmp_path: Path, stride: int, groups: int = 1, **attrs: Any) -> Path:
    w = np.random.default_rng(2).standard_normal((2, 3 // groups * groups, 3, 3)).astype(np.float32)
    w = w[:, : 3 // groups] if groups > 1 else w
    node = helper.make_node(
        "ConvTranspose", ["x", "W", "b"], ["y"], strides=[stride, stride], group=groups, name="up", **attrs
    )
    inits = [const(w, "W"), const(np.arange(w.shape[1] * groups, dtype=np.float32), "b")]
    return graph_file(tmp_path, [node], [vi("x", ["N", 2, 4, 5])], [vi("y", None)], inits)


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize(
    ("stride", "attrs"),
    [
        (2, {"output_shape": [8, 8]}),
        (2, {"output_shape": [8, 9]}),
        (2, {"output_shape": [7, 10]}),
        (2, {"output_shape": [6, 5]}),
        (2, {"output_shape": [8, 8], "output_padding": [1, 1]}),
        (2, {"output_shape": [7, 9], "auto_pad": "SAME_UPPER"}),
        (2, {"output_shape": [8, 10], "auto_pad": "SAME_LOWER"}),
        (3, {"output_shape": [11, 14], "dilations": [2, 2]}),
        (2, {"pads": [1, 1, 0, 0]}),
        (2, {"pads": [1, 2, 1, 1], "output_padding": [1, 0]}),
    ],
)
def test_conv_transpose_output_shape_and_uneven_pads(stride: int, attrs: Any, tmp_path: Path) -> None:
    path = conv_transpose_file(tmp_path, stride, **attrs)
    x = np.random.default_rng(3).standard_normal((2, 2, 4, 5)).astype(np.float32)
    model = matches_ort(path, x)
    if "output_shape" in attrs:
        assert model.predict(x).shape[2:] == tuple(attrs["output_shape"][-2:])


@requires_onnx
@pytest.mark.parametrize(
    ("stride", "attrs"),
    [
        (2, {"output_shape": [8, 10], "auto_pad": "SAME_UPPER"}),  # crops the end only
        (1, {"output_shape": [5, 6]}),  # one more row cropped at the start, stride 1
        (2, {"pads": [0, 0, 1, 1]}),  # more cropped at the end than at the start
        (2, {"auto_pad": "SAME_UPPER"}),
        (2, {"output_shape": [1, 2, 8, 10]}),  # the spatial sizes only, as onnxruntime requires
    ],
)
def test_conv_transpose_cropping_without_a_layer_is_refused(stride: int, attrs: Any, tmp_path: Path) -> None:
    path = conv_transpose_file(tmp_path, stride, **attrs)
    with pytest.raises(ExportError, match=r"ConvTranspose node 'up'"):
        framework.onnx.load(path)


@requires_onnx
def test_conv_transpose_output_shape_needs_known_sizes(tmp_path: Path) -> None:
    w = np.ones((2, 3, 3, 3), np.float32)
    node = helper.make_node(
        "ConvTranspose", ["x", "W"], ["y"], strides=[2, 2], output_shape=[8, 8], name="up"
    )
    path = graph_file(tmp_path, [node], [vi("x", ["N", 2, "H", "W"])], [vi("y", None)], [const(w, "W")])
    with pytest.raises(ExportError, match=r"ConvTranspose node 'up' has output_shape=\[8, 8\]"):
        framework.onnx.load(path)


# -- 4. the file's element type -----------------------------------------------------------------


def mlp_file(tmp_path: Path, dtype: Any, elem: int) -> Path:
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Gemm", ["t", "W2", "b2"], ["z"], transB=1),
        helper.make_node("Softmax", ["z"], ["y"]),
    ]
    inits = [
        const(rng.standard_normal((5, 4)).astype(dtype), "W1"),
        const(rng.standard_normal(5).astype(dtype), "b1"),
        const(rng.standard_normal((3, 5)).astype(dtype), "W2"),
        const(rng.standard_normal(3).astype(dtype), "b2"),
    ]
    return graph_file(tmp_path, nodes, [vi("x", ["N", 4], elem)], [vi("y", ["N", 3], elem)], inits)


@requires_onnx
@requires_onnxruntime
def test_a_file_of_doubles_gives_a_float64_model(tmp_path: Path) -> None:
    assert framework.get_default_dtype() == np.float32
    model = matches_ort(mlp_file(tmp_path, np.float64, F64), RNG.standard_normal((3, 4)), TOL64)
    assert model.dtype == np.float64
    assert all(p.data.dtype == np.float64 for p in model.parameters())
    assert framework.get_default_dtype() == np.float32  # the caller's default is left alone


@requires_onnx
@requires_onnxruntime
def test_a_file_of_floats_gives_a_float32_model_whatever_the_default(float64: None, tmp_path: Path) -> None:
    model = matches_ort(mlp_file(tmp_path, np.float32, F32), RNG.standard_normal((3, 4)).astype(np.float32))
    assert model.dtype == np.float32
    assert framework.get_default_dtype() == np.float64


@requires_onnx
def test_the_default_dtype_is_restored_when_import_fails(tmp_path: Path) -> None:
    node = helper.make_node("Sin", ["x"], ["y"])
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3], F64)], [vi("y", ["N", 3], F64)])
    with pytest.raises(ExportError, match="Sin"):
        framework.onnx.load(path)
    assert framework.get_default_dtype() == np.float32


@requires_onnx
def test_a_float64_conv_round_trip_stays_float64(float64: None, tmp_path: Path) -> None:
    model = Sequential(
        [
            Input((2, 6, 6)),
            L.Conv2d(2, 3, 3, padding=1),
            L.BatchNorm(3),
            L.GELU(),
            L.Flatten(),
            L.Linear(108, 2),
        ]
    )
    framework.onnx.export(model, tmp_path / "m.onnx")
    framework.set_default_dtype("float32")
    loaded = framework.onnx.load(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6))
    assert loaded.dtype == np.float64
    np.testing.assert_allclose(
        loaded.predict(x), model.predict(x), **TOL64
    )  # (onnxruntime has no double Conv)


# -- 5. valid graphs that crashed, and degenerate files -------------------------------------------


@requires_onnx
@requires_onnxruntime
def test_transpose_without_perm_reverses_the_axes(tmp_path: Path) -> None:
    # rank 3: the reversal moves the batch axis, a clear refusal naming the node
    node = helper.make_node("Transpose", ["x"], ["y"], name="rev")
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3, 4])], [vi("y", [4, 3, "N"])])
    with pytest.raises(ExportError, match=r"Transpose node 'rev' with perm \[2, 1, 0\] moves the batch axis"):
        framework.onnx.load(path)
    # rank 1: the reversal is the identity
    nodes = [helper.make_node("Transpose", ["x"], ["t"]), helper.make_node("Relu", ["t"], ["y"])]
    path = graph_file(tmp_path, nodes, [vi("x", ["N"])], [vi("y", ["N"])], name="rank1")
    matches_ort(path, RNG.standard_normal(4).astype(np.float32))


@requires_onnx
@requires_onnxruntime
def test_transpose_without_perm_of_a_constant_folds(tmp_path: Path) -> None:
    w = RNG.standard_normal((4, 3)).astype(np.float32)  # transposed: (3, 4), Gemm's transB layout
    nodes = [
        helper.make_node("Transpose", ["Wt"], ["W"]),
        helper.make_node("Gemm", ["x", "W"], ["y"], transB=1),
    ]
    path = graph_file(tmp_path, nodes, [vi("x", ["N", 4])], [vi("y", ["N", 3])], [const(w, "Wt")])
    matches_ort(path, RNG.standard_normal((2, 4)).astype(np.float32))


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize("shape", [(1, 3), (1, 1), (1,), (), (3,)])
def test_gemm_bias_shapes_that_broadcast(shape: tuple[int, ...], tmp_path: Path) -> None:
    inits = [
        const(RNG.standard_normal((3, 4)).astype(np.float32), "W"),
        const(RNG.standard_normal(shape).astype(np.float32), "b"),
    ]
    node = helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1, beta=0.5)
    path = graph_file(tmp_path, [node], [vi("x", ["N", 4])], [vi("y", ["N", 3])], inits)
    matches_ort(path, RNG.standard_normal((1, 4)).astype(np.float32))


@requires_onnx
def test_gemm_bias_varying_along_the_batch_is_refused(tmp_path: Path) -> None:
    inits = [const(np.ones((3, 4), np.float32), "W"), const(np.ones((2, 3), np.float32), "b")]
    node = helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1, name="fc")
    path = graph_file(tmp_path, [node], [vi("x", [2, 4])], [vi("y", [2, 3])], inits)
    with pytest.raises(ExportError, match=r"Gemm node 'fc' has a bias C of shape \(2, 3\)"):
        framework.onnx.load(path)


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize("opset", [2, 10])
def test_pad_with_pads_as_an_attribute(opset: int, tmp_path: Path) -> None:
    node = helper.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 2, 0, 0, 3, 0])
    path = graph_file(tmp_path, [node], [vi("x", ["N", 2, 3, 3])], [vi("y", ["N", 2, 7, 5])], opset=opset)
    matches_ort(path, RNG.standard_normal((2, 2, 3, 3)).astype(np.float32))


@requires_onnx
def test_pad_attribute_with_a_non_zero_value_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 1, 0, 0, 1, 1], value=2.0, name="p")
    path = graph_file(tmp_path, [node], [vi("x", ["N", 2, 3, 3])], [vi("y", None)], opset=10)
    with pytest.raises(ExportError, match=r"Pad node 'p' .*value 2\.0"):
        framework.onnx.load(path)


@requires_onnx
@requires_onnxruntime
def test_pad_of_opset_18_with_axes(tmp_path: Path) -> None:
    inits = [const(np.array([1, 2, 0, 1], np.int64), "pads"), const(np.array([-2, 3], np.int64), "axes")]
    node = helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"])
    path = graph_file(tmp_path, [node], [vi("x", ["N", 2, 3, 3])], [vi("y", None)], inits, opset=18)
    matches_ort(path, RNG.standard_normal((2, 2, 3, 3)).astype(np.float32))


@requires_onnx
def test_an_empty_file_is_an_export_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ExportError, match=r"'.*empty\.onnx' holds no ONNX graph"):
        framework.onnx.load(tmp_path / "empty.onnx")


@requires_onnx
def test_a_graph_without_inputs_is_an_export_error(tmp_path: Path) -> None:
    node = helper.make_node("Identity", ["c"], ["y"])
    path = graph_file(tmp_path, [node], [], [vi("y", [3])], [const(np.ones(3, np.float32), "c")], name="k")
    with pytest.raises(ExportError, match=r"0 input\(s\).*k\.onnx"):
        framework.onnx.load(path)


@requires_onnx
def test_a_malformed_node_is_an_export_error_naming_file_and_node(tmp_path: Path) -> None:
    node = helper.make_node("Gemm", ["x"], ["y"], name="short")  # Gemm needs A and B
    graph = helper.make_graph([node], "g", [vi("x", ["N", 4])], [vi("y", ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (tmp_path / "bad.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ExportError, match=r"bad\.onnx.*Gemm node 'short' raised IndexError"):
        framework.onnx.load(tmp_path / "bad.onnx")


@requires_onnx
def test_refusals_name_the_file(tmp_path: Path) -> None:
    node = helper.make_node("Sin", ["x"], ["y"], name="sine")
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3])], [vi("y", ["N", 3])], name="sin")
    with pytest.raises(ExportError, match=r"operator 'Sin' \(node 'sine'\).*\(importing '.*sin\.onnx'\)"):
        framework.onnx.load(path)


# -- 6. round trips of what the exporter writes ---------------------------------------------------


def round_trip(
    model: Any, shape: tuple[int, ...], tmp_path: Path, opset: int = 17, scale: float = 1.0
) -> Any:
    """Export, import: the same outputs as the model (and as onnxruntime, for float32 models)."""
    path = tmp_path / "m.onnx"
    framework.onnx.export(model, path, opset=opset)
    loaded = framework.onnx.load(path)
    assert loaded.dtype == model.dtype
    tol = TOL64 if model.dtype == np.float64 else TOL
    for n in (1, 4):
        x = (np.random.default_rng(n).standard_normal((n, *shape)) * scale).astype(model.dtype)
        np.testing.assert_allclose(loaded.predict(x), model.predict(x), **tol)
        if model.dtype == np.float32:  # onnxruntime's CPU kernels of Conv, Softplus... are float32 only
            np.testing.assert_allclose(loaded.predict(x), ort_run(path, x), **tol)
    return loaded


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize(("layers", "bidirectional"), [(1, False), (2, False), (1, True), (2, True)])
def test_recurrent_output_last_round_trip(
    cell: str, batch_first: bool, layers: int, bidirectional: bool, tmp_path: Path
) -> None:
    rec = getattr(L, cell)(3, 4, layers, batch_first=batch_first, bidirectional=bidirectional, output="last")
    d = 2 if bidirectional else 1
    loaded = round_trip(Sequential([Input((5, 3)), rec, L.Linear(4 * d, 2)]), (5, 3), tmp_path)
    assert kinds(loaded)[-2:] == [cell, "Linear"]
    assert loaded.count_params() == sum(p.data.size for p in rec.parameters()) + 4 * d * 2 + 2


@requires_onnx
def test_the_docs_embedding_lstm_classifier_round_trips(tmp_path: Path) -> None:
    lstm = L.LSTM(8, 16, batch_first=True, output="last")
    model = Sequential([Input((5,)), L.Embedding(10, 8, padding_idx=0), lstm, L.Linear(16, 3)])
    framework.onnx.export(model, tmp_path / "m.onnx")
    loaded = framework.onnx.load(tmp_path / "m.onnx")
    tokens = np.array([[5, 2, 9, 0, 0], [3, 3, 7, 1, 4]])
    np.testing.assert_allclose(loaded.predict(tokens), model.predict(tokens), **TOL)


@requires_onnx
@pytest.mark.parametrize(
    "kwargs", [{}, {"beta": 2.0}, {"beta": 0.5, "threshold": 3.0}, {"threshold": 1.0}, {"beta": 3.0}]
)
@pytest.mark.parametrize("dtype", [pytest.param("float32", marks=requires_onnxruntime), "float64"])
def test_softplus_round_trip(kwargs: Any, dtype: str, tmp_path: Path) -> None:
    framework.set_default_dtype(dtype)
    try:
        model = Sequential([Input((6,)), L.Linear(6, 6), L.Softplus(**kwargs)])
    finally:
        framework.set_default_dtype("float32")
    loaded = round_trip(model, (6,), tmp_path, scale=12.0)  # some inputs in the linear region
    assert kinds(loaded) == ["Linear", "Softplus"]
    (layer,) = [layer for layer in loaded.layers if type(layer).__name__ == "Softplus"]
    assert (layer.beta, layer.threshold) == pytest.approx(
        (kwargs.get("beta", 1.0), kwargs.get("threshold", 20.0))
    )


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("opset", [17, 19, 20])
def test_gelu_round_trip(approximate: str, opset: int, tmp_path: Path) -> None:
    model = Sequential([Input((2, 5)), L.Linear(5, 4), L.GELU(approximate), L.Flatten(), L.Linear(8, 3)])
    loaded = round_trip(model, (2, 5), tmp_path, opset=opset, scale=3.0)
    assert kinds(loaded) == ["Linear", "GELU", "Flatten", "Linear"]
    assert loaded.layers[2].approximate == approximate


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_torch_gelu_decompositions_load(approximate: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="the [parity] extra (torch) is not installed")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.GELU(approximate=approximate)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.zeros(2, 5),), str(tmp_path / "t.onnx"), dynamo=False, opset_version=17,
            input_names=["x"], dynamic_axes={"x": {0: "N"}},
        )  # fmt: skip
    model = matches_ort(tmp_path / "t.onnx", RNG.standard_normal((3, 5)).astype(np.float32) * 3)
    assert kinds(model) == ["Linear", "GELU"]


@requires_onnx
def test_a_pattern_whose_inner_value_is_read_elsewhere_is_not_fused(tmp_path: Path) -> None:
    model = Sequential([Input((4,)), L.GELU()])
    proto = framework.onnx.to_onnx(model)
    erf = next(node for node in proto.graph.node if node.op_type == "Erf")
    proto.graph.output.append(vi(erf.output[0], ["N", 4]))  # the erf is a graph output too
    onnx.save(proto, str(tmp_path / "m.onnx"))
    with pytest.raises(ExportError, match=r"gelu/Mul_node|'Erf'"):  # read node by node: refused
        framework.onnx.load(tmp_path / "m.onnx")


# -- 7. BatchNormalization's momentum -------------------------------------------------------------


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize(("onnx_momentum", "expected"), [(None, 0.1), (0.7, 0.3), (0.999, 0.001), (0.0, 1.0)])
def test_batch_norm_momentum_is_read(onnx_momentum: float | None, expected: float, tmp_path: Path) -> None:
    attrs = {} if onnx_momentum is None else {"momentum": onnx_momentum}
    stats = [const(RNG.uniform(0.5, 1.5, 3).astype(np.float32), n) for n in ("s", "b", "m", "v")]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=0.01, **attrs)
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3, 4])], [vi("y", ["N", 3, 4])], stats)
    model = matches_ort(path, RNG.standard_normal((2, 3, 4)).astype(np.float32))
    (bn,) = [layer for layer in model.layers if type(layer).__name__ == "BatchNorm"]
    assert bn.momentum == expected
    assert bn.eps == pytest.approx(0.01)


@requires_onnx
def test_batch_norm_in_training_mode_is_refused(tmp_path: Path) -> None:
    stats = [const(np.ones(3, np.float32), n) for n in ("s", "b", "m", "v")]
    node = helper.make_node(
        "BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], training_mode=1, name="bn"
    )
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3])], [vi("y", ["N", 3])], stats, opset=15)
    with pytest.raises(ExportError, match=r"BatchNormalization node 'bn' has training_mode=1"):
        framework.onnx.load(path)


def test_the_import_dtype_is_scoped_to_the_importing_thread() -> None:
    """An import switches the default dtype in its own thread only: layers made elsewhere keep it."""
    import threading

    from framework.layers import Linear
    from framework.runtime.dtype import default_dtype, get_default_dtype

    inside, made = threading.Event(), threading.Event()
    seen: list[Any] = []

    def other() -> None:
        inside.wait(5)
        seen.append(Linear(2, 2).weight.data.dtype)
        made.set()

    worker = threading.Thread(target=other)
    worker.start()
    with default_dtype("float64"):
        inside.set()
        made.wait(5)
        assert get_default_dtype() == np.float64
    worker.join(5)
    assert seen == [np.dtype(np.float32)] and get_default_dtype() == np.float32
