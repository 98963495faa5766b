"""ONNX import: ``framework.onnx.load`` rebuilds models whose outputs equal onnxruntime's."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the [onnx] extra (onnx) is not installed")
ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")

from support import ort_session  # noqa: E402

import framework.onnx  # noqa: E402
from framework import Input, Sequential  # noqa: E402
from framework import layers as L  # noqa: E402
from framework.errors import ExportError  # noqa: E402

session_of = ort_session


def check_load(path: Any, sample_shape: tuple[int, ...]) -> Any:
    """Load ``path`` and compare ``predict`` with onnxruntime for batches of 1 and 7."""
    model = framework.onnx.load(path)
    session = session_of(path)
    name = session.get_inputs()[0].name
    for batch in (1, 7):
        x = np.random.default_rng(batch).normal(size=(batch, *sample_shape)).astype("f4")
        np.testing.assert_allclose(model.predict(x), session.run(None, {name: x})[0], rtol=1e-5, atol=1e-5)
    return model


def _torch_export(module: Any, sample_shape: tuple[int, ...], path: Any) -> None:
    torch = pytest.importorskip("torch", reason="the [parity] extra (torch) is not installed")
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros((2, *sample_shape)),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            dynamic_axes={"x": {0: "N"}},
        )


def test_torch_mlp(tmp_path: Any) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    _torch_export(module, (10,), tmp_path / "mlp.onnx")
    model = check_load(tmp_path / "mlp.onnx", (10,))
    assert [type(layer).__name__ for layer in model.layers[1:]] == ["Linear", "ReLU", "Linear"]


def test_torch_lenet(tmp_path: Any) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    nn = torch.nn
    module = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 32),
        nn.Tanh(),
        nn.Dropout(),
        nn.Linear(32, 10),
        nn.LogSoftmax(dim=1),
    )
    _torch_export(module, (1, 28, 28), tmp_path / "lenet.onnx")
    check_load(tmp_path / "lenet.onnx", (1, 28, 28))


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_torch_recurrent_classifier(cell: str, tmp_path: Any) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = getattr(torch.nn, cell)(5, 6, batch_first=True)
            self.fc = torch.nn.Linear(6, 3)

        def forward(self, x: Any) -> Any:
            out, _ = self.rnn(x)
            return self.fc(out[:, -1])

    _torch_export(Classifier(), (4, 5), tmp_path / "rnn.onnx")
    check_load(tmp_path / "rnn.onnx", (4, 5))


def test_own_export_round_trip(tmp_path: Any) -> None:
    model = Sequential(
        [
            Input((2, 8, 8)),
            L.Conv2d(2, 4, 3, padding=1, activation="relu"),
            L.MaxPool2d(2),
            L.Flatten(),
            L.Linear(64, 8, activation="tanh"),
            L.Linear(8, 3),
        ]
    )
    framework.onnx.export(model, tmp_path / "own.onnx")
    loaded = check_load(tmp_path / "own.onnx", (2, 8, 8))
    x = np.random.default_rng(3).normal(size=(5, 2, 8, 8)).astype("f4")
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-5, atol=1e-5)


def test_unsupported_op_is_named(tmp_path: Any) -> None:
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Sin", ["x"], ["y"], name="sine")],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])],
    )
    path = tmp_path / "sin.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ExportError, match=r"operator 'Sin' \(node 'sine'\)"):
        framework.onnx.load(path)
