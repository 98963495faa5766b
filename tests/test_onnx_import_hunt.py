"""Bug hunt: ``framework.onnx.load`` against PyTorch and onnxruntime.

Part A exports ``torch.nn`` modules and small nets with ``torch.onnx.export(..., dynamo=False)`` at
opsets 11, 13 and 17 (each module at those whose graphs differ: ``OPSET_GROUPS``), imports them, and
compares ``predict`` with PyTorch (and the file with onnxruntime) at float32 tolerance, plus input
and parameter gradients where the import is trainable. Part B builds ONNX graphs by hand
(``onnx.helper``) around each attribute of each supported operator: a file either loads into a model
equal to onnxruntime's result, or is refused with ``ExportError`` naming the node; an attribute is
never silently ignored.

Bugs found here and fixed in the importer (each test marked "BUG (fixed)" failed before):

- silent wrong results: an LSTM/GRU/RNN ``initial_h``/``initial_c`` built from the batch size
  but not zero (``torch.ones(1, x.size(0), H)``, ``zeros + c``) was read as zero states;
  ``out[:, -1]`` of a time-major recurrent layer (the last *sample*) was read as the last step;
  ``MatMul`` + ``Add`` fused a bias of a higher rank (or a ``(M, 1)`` column) into ``Linear``,
  whose output shape differs from the graph's; ``Dropout`` with ``training_mode=True`` (or
  ``is_test=0`` before opset 7) became the identity; a node of another domain
  (``com.example.Relu``) was read as ONNX's; attributes no handler reads were ignored,
  ``kernel_shape`` disagreeing with the weight too;
- wrong training: a recurrent node read both as a sequence and as its last state became two
  layers with separate copies of the weights (``count_params`` doubled, gradients split);
- valid files refused, now read: ``auto_pad`` ``SAME_UPPER`` / ``SAME_LOWER``
  (``Conv2d(padding="same")``), ``x.view(x.size(0), -1)``, ``Flatten(start_dim=2)``, files of a
  fixed batch size (no ``dynamic_axes``), ``h_n[-1]`` of stacked layers and
  ``cat([h_n[-2], h_n[-1]], 1)`` of a bidirectional one, ``InstanceNormalization``,
  ``Resize`` (``UpSampling2d``, ``nn.Upsample``), ``Softplus(beta=...)`` as ``torch.onnx``
  writes it, the pads this framework's exporter writes for ceil-mode pools,
  ``LayerNormalization`` with a positive ``axis``, ``Flatten`` with a negative one,
  ``Reshape`` copying an axis (``[0, 0, -1]``), ``Constant`` ``value_float(s)`` /
  ``value_int(s)``, constant ``Slice``, ``Expand`` and ``Shape(start=...)``.
"""

from __future__ import annotations

import itertools
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import ort_session, requires_torch

# every test reads or writes an ONNX file, and most run it in onnxruntime (both of the [onnx]
# extra): without them the whole file skips; the tests that need PyTorch are marked
onnx = pytest.importorskip("onnx", reason="the [onnx] extra (onnx) is not installed")
ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")
try:
    import torch

    nn = torch.nn
except ImportError:
    torch = nn = None

import framework.onnx  # noqa: E402
from framework.errors import ExportError  # noqa: E402

helper = onnx.helper
F32, F64 = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE
#: the base class of the PyTorch modules below (``object`` without torch, whose tests skip)
_Module = nn.Module if nn is not None else object
TOL = {"rtol": 1e-5, "atol": 1e-5}
OPSETS = (11, 13, 17)


# -- helpers -----------------------------------------------------------------------------------


def vi(name: str, shape: Any, elem: int = F32) -> Any:
    return helper.make_tensor_value_info(name, elem, shape)


def const(array: Any, name: str) -> Any:
    return onnx.numpy_helper.from_array(np.asarray(array), name)


def graph_file(
    tmp_path: Path, nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: Any = (), opset: int = 17
) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path))
    return path


session_of = ort_session


def ort_run(path: Path, *xs: np.ndarray) -> np.ndarray:
    session = session_of(path)
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), xs)})[0]


def predict(model: Any, xs: tuple[np.ndarray, ...]) -> np.ndarray:
    return model.predict(list(xs) if len(xs) > 1 else xs[0])


def matches_ort(path: Path, *xs: np.ndarray, tol: dict[str, float] = TOL) -> Any:
    """``path`` must load; ``predict`` equals onnxruntime's output (shape, dtype, values)."""
    model = framework.onnx.load(path)
    expected, got = ort_run(path, *xs), predict(model, xs)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    np.testing.assert_allclose(got, expected, **tol)
    return model


def loads_right_or_refuses(path: Path, *xs: np.ndarray) -> str:
    """The file loads into a model equal to onnxruntime's result, or ``load`` raises ``ExportError``.

    Returns ``"loaded"`` or ``"refused"``; anything else (a wrong result, a bare exception) fails.
    """
    try:
        model = framework.onnx.load(path)
    except ExportError as exc:
        assert "node" in str(exc) or "graph" in str(exc), str(exc)
        return "refused"
    expected, got = ort_run(path, *xs), predict(model, xs)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    np.testing.assert_allclose(got, expected, **TOL)
    return "loaded"


def kinds(model: Any) -> list[str]:
    return [type(layer).__name__ for layer in model.layers[1:]]


def torch_file(module: Any, x: Any, path: Path, opset: int = 17) -> Path:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (x,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["x"],
            dynamic_axes={"x": {0: "N"}},
        )
    return path


def torch_out(module: Any, x: Any) -> np.ndarray:
    with torch.no_grad():
        y = module(x)
    return (y[0] if isinstance(y, tuple) else y).numpy()


def check_torch(module: Any, x: Any, tmp_path: Path, opset: int = 17, with_ort: bool = True) -> Any:
    """Export ``module``, load it, compare ``predict`` with PyTorch and (``with_ort``) onnxruntime."""
    path = torch_file(module, x, tmp_path / "m.onnx", opset)
    model = framework.onnx.load(path)
    got = model.predict(x.numpy())
    expected = torch_out(module, x)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    np.testing.assert_allclose(got, expected, **TOL)
    if x.dtype == torch.float32 and with_ort:
        np.testing.assert_allclose(got, ort_run(path, x.numpy()), **TOL)
    return model


def seed_torch() -> None:
    """``torch.manual_seed(0)`` of the CPU generator, the only one these tests draw from: ``manual_seed``
    also queues the seed for each accelerator, formatting the call stack three times (0.5 ms in a test)."""
    torch.default_generator.manual_seed(0)


@pytest.fixture(autouse=True)
def _seeds() -> None:
    if torch is not None:
        seed_torch()


@contextmanager
def case(failures: list[str], label: str) -> Iterator[None]:
    """One case of a test that loops over several (their pytest overhead cost more than they did):
    a failure is recorded under ``label`` and the loop goes on; :func:`report` fails with them all."""
    try:
        yield
    except (Exception, pytest.fail.Exception) as exc:
        failures.append(f"{label}: {type(exc).__name__}: {exc}")


def report(failures: list[str], total: int) -> None:
    assert not failures, f"{len(failures)} of {total} cases failed:\n" + "\n".join(failures)


RNG = np.random.default_rng(5)


def randn(*shape: int, dtype: str = "f4") -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


# == Part A: PyTorch exports ====================================================================


class Fn(_Module):
    """``forward(x) = fn(self, x)`` with submodules ``mods``."""

    def __init__(self, fn: Any, **mods: Any) -> None:
        super().__init__()
        self.fn = fn
        for name, mod in mods.items():
            setattr(self, name, mod)

    def forward(self, x: Any) -> Any:
        return self.fn(self, x)


#: name -> (module factory, sample shape); each exported at the opsets of :func:`opsets_of`.
MODULES: dict[str, tuple[Any, tuple[int, ...]]] = {
    "linear": (lambda: nn.Linear(5, 4), (5,)),
    "linear_no_bias": (lambda: nn.Linear(5, 4, bias=False), (5,)),
    "linear_3d": (lambda: nn.Linear(5, 4), (2, 5)),
    "linear_3d_no_bias": (lambda: nn.Linear(5, 4, bias=False), (2, 5)),
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2), (4, 11)),
    "conv2d": (
        lambda: nn.Conv2d(4, 6, 3, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2),
        (4, 9, 10),
    ),
    "conv2d_same": (lambda: nn.Conv2d(3, 4, (3, 4), padding="same"), (3, 7, 8)),
    "conv2d_same_dilated": (lambda: nn.Conv2d(3, 4, 4, padding="same", dilation=2), (3, 7, 8)),
    "conv1d_same_even": (lambda: nn.Conv1d(3, 4, 4, padding="same"), (3, 9)),
    "conv2d_depthwise": (lambda: nn.Conv2d(4, 8, 3, groups=4, bias=False), (4, 7, 8)),
    "conv_transpose": (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), (3, 5, 6)),
    "conv_transpose_groups": (
        lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=(1, 0), groups=2),
        (4, 5, 6),
    ),
    "conv_transpose_dilated": (
        lambda: nn.ConvTranspose2d(3, 4, 3, padding=2, dilation=2, bias=False),
        (3, 5, 6),
    ),
    "maxpool_ceil_pad": (lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 8, 9)),
    "maxpool1d": (lambda: nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True), (2, 10)),
    "avgpool_ceil": (lambda: nn.AvgPool2d(3, stride=2, ceil_mode=True), (2, 8, 8)),
    "avgpool_pad_include": (lambda: nn.AvgPool2d(3, stride=2, padding=1), (2, 8, 9)),
    "avgpool_pad_exclude": (
        lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        (2, 8, 9),
    ),
    "avgpool1d": (lambda: nn.AvgPool1d(3, stride=2, padding=1), (2, 10)),
    "adaptive_avg_1": (lambda: nn.AdaptiveAvgPool2d(1), (3, 6, 6)),
    "adaptive_avg_2x3": (lambda: nn.AdaptiveAvgPool2d((2, 3)), (3, 6, 6)),
    "adaptive_max_1": (lambda: nn.AdaptiveMaxPool2d(1), (3, 6, 6)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(3), (3, 4, 4)),
    "batchnorm1d": (lambda: nn.BatchNorm1d(3), (3, 5)),
    "instancenorm2d": (lambda: nn.InstanceNorm2d(3, affine=True), (3, 4, 4)),
    "instancenorm1d": (lambda: nn.InstanceNorm1d(3), (3, 5)),
    "flatten": (lambda: nn.Flatten(), (2, 3, 4)),
    "flatten_start_2": (lambda: nn.Flatten(2), (2, 3, 4)),
    "view_size0": (lambda: Fn(lambda m, x: m.fc(x.view(x.size(0), -1)), fc=nn.Linear(24, 2)), (2, 3, 4)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.3), (5,)),
    "elu": (lambda: nn.ELU(0.7), (5,)),
    "softplus": (lambda: nn.Softplus(), (5,)),
    "softplus_beta": (lambda: nn.Softplus(beta=2.0), (5,)),
    "gelu": (lambda: nn.GELU(), (5,)),
    "gelu_tanh": (lambda: nn.GELU(approximate="tanh"), (5,)),
    "silu": (lambda: nn.SiLU(), (5,)),
    "softmax_dim1_3d": (lambda: nn.Softmax(dim=1), (3, 4)),
    "logsoftmax_dim1_4d": (lambda: nn.LogSoftmax(dim=1), (3, 4, 2)),
    "softmax_last": (lambda: nn.Softmax(dim=-1), (3, 4)),
    "residual": (
        lambda: Fn(
            lambda m, x: torch.relu(x + m.bn(m.conv(x))),
            conv=nn.Conv2d(3, 3, 3, padding=1),
            bn=nn.BatchNorm2d(3),
        ),
        (3, 4, 4),
    ),
    "concat": (
        lambda: Fn(
            lambda m, x: torch.cat([m.a(x), m.b(x)], dim=1),
            a=nn.Conv2d(3, 2, 1),
            b=nn.Conv2d(3, 4, 3, padding=1),
        ),
        (3, 4, 4),
    ),
    "permute": (
        lambda: Fn(lambda m, x: m.fc(x.permute(0, 2, 3, 1)).transpose(1, 3), fc=nn.Linear(3, 2)),
        (3, 4, 4),
    ),
    "gated": (
        lambda: Fn(lambda m, x: m.a(x) * torch.sigmoid(m.b(x)) - x, a=nn.Linear(4, 4), b=nn.Linear(4, 4)),
        (4,),
    ),
    "reshape_minus1": (lambda: Fn(lambda m, x: m.fc(x.reshape(-1, 24)), fc=nn.Linear(24, 2)), (2, 3, 4)),
    "upsample_nearest": (lambda: nn.Upsample(scale_factor=(2, 3)), (2, 3, 4)),
}


#: The modules whose export differs between the opsets of ``OPSETS`` (as exported by torch 2.x),
#: with one opset of each group of identical graphs. Every other module exports the same graph at
#: 11, 13 and 17 (its nodes, attributes and initializers byte for byte; only the file's opset import
#: differs), and its load and ``predict`` execute the same lines and branches of ``framework`` and
#: ``plugins`` at each: one opset of the three is a full check (they take turns over the modules, so
#: each opset is still exported and loaded). ``test_the_other_modules_export_one_graph_at_every_opset``
#: checks the claim for a sample of them, so a torch that starts to differ is noticed.
OPSET_GROUPS: dict[str, tuple[int, ...]] = {
    "batchnorm1d": (13, 17),  # 11 == 13
    "batchnorm2d": (13, 17),
    "flatten_start_2": (11, 17),
    "reshape_minus1": (13, 17),
    "logsoftmax_dim1_4d": (11, 17),  # 13 == 17: Softmax's axis semantics change at 13
    "softmax_dim1_3d": (11, 13),
    "softmax_last": (11, 17),
    "upsample_nearest": (11, 13),  # 13 == 17
    "view_size0": (11, 13, 17),  # three graphs
}


def opsets_of(name: str) -> tuple[int, ...]:
    if name in OPSET_GROUPS:
        return OPSET_GROUPS[name]
    others = sorted(set(MODULES) - set(OPSET_GROUPS))
    return (OPSETS[others.index(name) % len(OPSETS)],)


def module_and_input(name: str) -> tuple[Any, Any]:
    """The module made anew from the same seed (with non-trivial running statistics) and its input."""
    factory, shape = MODULES[name]
    seed_torch()
    module = factory()
    if name.startswith(("batchnorm", "residual")):  # non-trivial running statistics
        bn = module if name.startswith("batchnorm") else module.bn
        with torch.no_grad():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return module, torch.randn(3, *shape)


@requires_torch
@pytest.mark.parametrize("name", sorted(MODULES))
def test_torch_module_matches_torch_and_onnxruntime(name: str, tmp_path: Path) -> None:
    """Exported at each opset of ``opsets_of(name)`` (the module made anew from the same seed for each)."""
    failures: list[str] = []
    for opset in opsets_of(name):
        with case(failures, f"opset {opset}"):
            module, x = module_and_input(name)
            # onnxruntime refuses a dilated convolution with auto_pad="SAME_*" (what padding="same" gives)
            check_torch(module, x, tmp_path, opset, with_ort=name != "conv2d_same_dilated")
    report(failures, len(opsets_of(name)))


@requires_torch
def test_the_other_modules_export_one_graph_at_every_opset(tmp_path: Path) -> None:
    """The premise of :data:`OPSET_GROUPS`, for three modules (linear, convolution, normalisation)."""
    for name in ("linear_3d", "conv_transpose_groups", "instancenorm2d"):
        graphs = []
        for opset in OPSETS:
            module, x = module_and_input(name)
            graphs.append(onnx.load(str(torch_file(module, x, tmp_path / f"{opset}.onnx", opset))).graph)
        assert graphs[0] == graphs[1] == graphs[2], name


@requires_torch
def test_torch_embedding_matches(tmp_path: Path) -> None:
    module = Fn(lambda m, x: m.fc(m.emb(x)), emb=nn.Embedding(10, 4), fc=nn.Linear(4, 2))
    x = torch.randint(0, 10, (3, 6))
    path = torch_file(module, x, tmp_path / "emb.onnx", 13)
    model = framework.onnx.load(path)
    np.testing.assert_allclose(model.predict(x.numpy()), torch_out(module, x), **TOL)
    assert kinds(model) == ["Embedding", "Linear"]


@requires_torch
def test_torch_softplus_with_a_threshold_loads_as_its_file_says(tmp_path: Path) -> None:
    """``torch.onnx`` drops Softplus's ``threshold`` (the file is never linear); import follows it."""
    module = nn.Softplus(beta=2.0, threshold=1.0)
    x = 3 * torch.randn(4, 5)
    path = torch_file(module, x, tmp_path / "sp.onnx", 13)
    model = matches_ort(path, x.numpy())
    assert kinds(model) == ["Softplus"]
    assert not np.allclose(model.predict(x.numpy()), torch_out(module, x), atol=1e-3)  # torch's own exporter


#: PyTorch modules whose export uses operators without a built-in layer: refused, naming it.
REFUSED = {
    "hardtanh": (lambda: nn.Hardtanh(-0.5, 0.8), "Clip"),
    "relu6": (lambda: nn.ReLU6(), "Clip"),
    "hardswish": (lambda: nn.Hardswish(), "Hard"),
    "hardsigmoid": (lambda: nn.Hardsigmoid(), "HardSigmoid"),
    "prelu": (lambda: nn.PReLU(), "PRelu"),
    "mean": (lambda: Fn(lambda m, x: x.mean(dim=-1)), "ReduceMean"),
    "scale_shift": (lambda: Fn(lambda m, x: x * 2 + 1), "Mul"),
    "groupnorm": (lambda: nn.GroupNorm(2, 4), "Mul"),
    "upsample_bilinear": (
        lambda: nn.Upsample(scale_factor=2, mode="bilinear"),
        "Resize node .* mode='linear'",
    ),
    "upsample_to_size": (lambda: nn.Upsample(size=(6, 8)), "Resize node .* output sizes"),
}


@requires_torch
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_torch_module_without_a_layer_is_refused_by_name(name: str, tmp_path: Path) -> None:
    factory, op = REFUSED[name]
    path = torch_file(factory(), torch.randn(3, 4, 3, 3), tmp_path / "m.onnx", 13)
    with pytest.raises(ExportError, match=op):
        framework.onnx.load(path)


# -- recurrent layers ---------------------------------------------------------------------------


class Recurrent(_Module):
    def __init__(self, cell: str, mode: str, **kwargs: Any) -> None:
        super().__init__()
        self.rnn = getattr(nn, cell)(5, 6, **kwargs)
        self.mode, self.batch_first = mode, kwargs.get("batch_first", False)

    def forward(self, x: Any) -> Any:
        out, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state
        if self.mode == "sequence":
            return out
        if self.mode == "last_step":
            return out[:, -1]
        if self.mode == "h_n_cat":  # both directions of the last layer: a bidirectional classifier's input
            return torch.cat([h[-2], h[-1]], dim=1)
        return h[-1]  # "h_n"


#: (batch_first, num_layers, bidirectional, bias, output) covering each option of each cell.
RECURRENT_CASES = [
    (True, 1, False, True, "sequence"),
    (False, 1, False, False, "sequence"),
    (True, 2, True, True, "sequence"),
    (False, 2, True, False, "sequence"),
    (True, 2, False, True, "last_step"),
    (True, 1, False, False, "h_n"),
    (False, 1, False, True, "h_n"),
    (True, 2, False, True, "h_n"),
    (True, 1, True, False, "h_n_cat"),
    (False, 2, True, True, "h_n_cat"),
]


@requires_torch
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize(("batch_first", "layers", "bidirectional", "bias", "output"), RECURRENT_CASES)
def test_torch_recurrent_matches(
    cell: str, batch_first: bool, layers: int, bidirectional: bool, bias: bool, output: str, tmp_path: Path
) -> None:
    kwargs = {"batch_first": batch_first, "num_layers": layers, "bidirectional": bidirectional, "bias": bias}
    module = Recurrent(cell, output, **kwargs)
    opset = OPSETS[(layers + bidirectional + bias) % 3]
    check_torch(module, torch.randn(3, 4, 5), tmp_path, opset)


@requires_torch
@pytest.mark.parametrize(
    ("module", "shape"),
    [
        (
            lambda: Fn(
                lambda m, x: m.fc(m.conv(x).view(x.size(0), -1)), conv=nn.Conv2d(3, 4, 3), fc=nn.Linear(16, 2)
            ),
            (3, 4, 4),
        ),
        (lambda: Recurrent("LSTM", "h_n", batch_first=True, num_layers=2), (4, 5)),
        (lambda: Recurrent("GRU", "sequence", num_layers=2, bidirectional=True), (4, 5)),
        (lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 3), nn.Softmax(dim=1)), (3, 4)),
    ],
    ids=["view_size0", "lstm_h_n", "gru_sequence", "mlp"],
)
def test_export_of_a_fixed_batch_size_runs_on_any_batch(
    module: Any, shape: tuple[int, ...], tmp_path: Path
) -> None:
    """No ``dynamic_axes``: shapes fold to constants (``Reshape`` to ``[1, -1]``, ``Expand`` of zeros)."""
    module = module().eval()
    path = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(1, *shape),), str(path), dynamo=False, opset_version=17)
    model = framework.onnx.load(path)
    for batch in (1, 5):
        x = torch.randn(batch, *shape)
        np.testing.assert_allclose(model.predict(x.numpy()), torch_out(module, x), **TOL)


@requires_torch
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_time_major_sequence_indexed_on_axis_1_is_not_the_last_step(cell: str, tmp_path: Path) -> None:
    """BUG (fixed): ``out[:, -1]`` of a time-major layer (the last sample) was read as the last step."""
    module = Fn(lambda m, x: m.rnn(x)[0][:, -1], rnn=getattr(nn, cell)(5, 6))
    path = torch_file(module, torch.randn(3, 4, 5), tmp_path / "tm.onnx", 17)
    with pytest.raises(ExportError, match="Gather node"):
        framework.onnx.load(path)


@requires_torch
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("how", ["ones", "full", "zeros_plus"])
def test_non_zero_initial_state_from_the_batch_size_is_refused(cell: str, how: str, tmp_path: Path) -> None:
    """BUG (fixed): ``ConstantOfShape`` of 1 (or zeros + 0.25) was read as the layers' zero state."""

    def forward(m: Any, x: Any) -> Any:
        n = x.size(0)
        h = {
            "ones": torch.ones(1, n, 6),
            "full": torch.full((1, n, 6), 0.5),
            "zeros_plus": torch.zeros(1, n, 6) + 0.25,
        }[how]
        return m.rnn(x, (h, h.clone()) if cell == "LSTM" else h)[0]

    module = Fn(forward, rnn=getattr(nn, cell)(5, 6, batch_first=True))
    path = torch_file(module, torch.randn(3, 4, 5), tmp_path / "h0.onnx", 13)
    with pytest.raises(ExportError, match=r"initial_h .*computed at run time"):
        framework.onnx.load(path)


@requires_torch
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_explicit_zero_initial_state_from_the_batch_size_loads(cell: str, tmp_path: Path) -> None:
    def forward(m: Any, x: Any) -> Any:
        h = torch.zeros(2, x.size(0), 6)
        return m.rnn(x, (h, h.clone()) if cell == "LSTM" else h)[0]

    module = Fn(forward, rnn=getattr(nn, cell)(5, 6, num_layers=2, batch_first=True))
    check_torch(module, torch.randn(3, 4, 5), tmp_path, 17)


def both_outputs(m: Any, x: Any) -> Any:
    out, state = m.rnn(x)
    h = state[0] if isinstance(state, tuple) else state
    return torch.cat([out.flatten(1), h[-1]], dim=1)


@requires_torch
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_sequence_and_last_state_of_one_node_share_weights(cell: str, tmp_path: Path) -> None:
    """BUG (fixed): two layers with their own copies: count_params doubled, gradients split."""
    module = Fn(both_outputs, rnn=getattr(nn, cell)(5, 6, batch_first=True))
    x = torch.randn(3, 4, 5)
    model = check_torch(module, x, tmp_path)
    assert model.count_params() == sum(p.numel() for p in module.parameters())
    xt = x.clone().requires_grad_(True)
    y = module(xt)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    model(x.numpy(), training=False)
    np.testing.assert_allclose(model.backward(g.numpy()), xt.grad.numpy(), **TOL)
    torch_grads = sorted(np.abs(p.grad.numpy()).sum() for p in module.parameters())
    ours = sorted(np.abs(p.grad).sum() for p in model.parameters())
    np.testing.assert_allclose(ours, torch_grads, rtol=1e-4)


# -- gradients of imported models ---------------------------------------------------------------

GRAD_NETS = {
    "mlp": (lambda: nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3, bias=False)), (5,)),
    "linear_3d_gelu_ln": (
        lambda: nn.Sequential(nn.Linear(5, 4), nn.GELU(), nn.LayerNorm(4), nn.Softplus(), nn.LogSoftmax(-1)),
        (2, 5),
    ),
    "cnn": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=2, padding=1),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
            nn.Flatten(),
            nn.Linear(32, 3),
        ),
        (3, 8, 8),
    ),
    "lstm": (lambda: Recurrent("LSTM", "last_step", batch_first=True, num_layers=2), (4, 5)),
    "gru_bidirectional": (lambda: Recurrent("GRU", "sequence", bidirectional=True), (4, 5)),
}


@requires_torch
@pytest.mark.parametrize("name", sorted(GRAD_NETS))
def test_imported_model_gradients_match_torch(name: str, tmp_path: Path) -> None:
    factory, shape = GRAD_NETS[name]
    module = factory().eval()
    x = torch.randn(3, *shape)
    model = check_torch(module, x, tmp_path, 17)
    xt = x.clone().requires_grad_(True)
    y = module(xt)
    y = y[0] if isinstance(y, tuple) else y
    g = torch.randn_like(y)
    (y * g).sum().backward()
    model(x.numpy(), training=False)
    np.testing.assert_allclose(model.backward(g.numpy()), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    ours, theirs = model.parameters(), list(module.parameters())
    assert [p.data.shape for p in ours] == [tuple(p.shape) for p in theirs]
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(mine.grad, reference.grad.numpy(), rtol=1e-4, atol=1e-5)


@requires_torch
@pytest.mark.parametrize("name", ["mlp", "linear_3d_gelu_ln", "lstm"])
def test_float64_export_gives_a_float64_model_equal_to_torch(name: str, tmp_path: Path) -> None:
    factory, shape = GRAD_NETS[name]
    module = factory().double()
    x = torch.randn(3, *shape, dtype=torch.float64)
    path = torch_file(module, x, tmp_path / "f64.onnx", 17)
    model = framework.onnx.load(path)
    got = model.predict(x.numpy())
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, torch_out(module, x), rtol=1e-10, atol=1e-12)


# == Part B: hand-built graphs ==================================================================

X4 = ["N", 3, 7, 8]


def same_conv_reference(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, auto_pad: str, stride: int, dilation: int
) -> Any:
    """The ONNX spec's ``SAME_*`` padding (``out = ceil(in / stride)``), then PyTorch's convolution."""
    pads = []
    for size, k in zip(x.shape[:1:-1], w.shape[:1:-1]):  # W then H, as F.pad wants
        total = max((-(-size // stride) - 1) * stride + (k - 1) * dilation + 1 - size, 0)
        small, large = total // 2, total - total // 2
        pads += [small, large] if auto_pad == "SAME_UPPER" else [large, small]
    padded = torch.nn.functional.pad(torch.from_numpy(x), pads)
    out = torch.nn.functional.conv2d(
        padded, torch.from_numpy(w), torch.from_numpy(b), stride, dilation=dilation
    )
    return out.numpy()


# dilation 2 with SAME_* is checked against a PyTorch reference (onnxruntime refuses it)
@pytest.mark.parametrize("dilation", [1, pytest.param(2, marks=requires_torch)])
def test_conv2d_auto_pad(dilation: int, tmp_path: Path) -> None:
    """Each ``auto_pad`` with kernels 3 and 4 and strides 1 and 2."""
    failures: list[str] = []
    cases = list(itertools.product(["SAME_UPPER", "SAME_LOWER", "VALID"], [3, 4], [1, 2]))
    for auto_pad, kernel, stride in cases:
        with case(failures, f"auto_pad={auto_pad}, kernel {kernel}, stride {stride}"):
            node = helper.make_node(
                "Conv",
                ["x", "w", "b"],
                ["y"],
                auto_pad=auto_pad,
                strides=[stride] * 2,
                dilations=[dilation] * 2,
            )
            w, b, x = randn(4, 3, kernel, kernel), randn(4), randn(2, 3, 7, 8)
            inits = [const(w, "w"), const(b, "b")]
            path = graph_file(tmp_path, [node], [vi("x", X4)], [vi("y", None)], inits)
            if dilation == 1 or auto_pad == "VALID":
                matches_ort(path, x)
            else:  # onnxruntime refuses dilation with SAME_*: the spec's formula, by hand
                expected = same_conv_reference(x, w, b, auto_pad, stride, dilation)
                np.testing.assert_allclose(framework.onnx.load(path).predict(x), expected, **TOL)
    report(failures, len(cases))


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize(("kernel", "stride"), [(3, 1), (4, 1), (3, 2), (4, 2)])
def test_conv1d_auto_pad_loads_right_or_is_refused(
    auto_pad: str, kernel: int, stride: int, tmp_path: Path
) -> None:
    node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=auto_pad, strides=[stride], name="c1")
    path = graph_file(
        tmp_path, [node], [vi("x", ["N", 3, 9])], [vi("y", None)], [const(randn(4, 3, kernel), "w")]
    )
    outcome = loads_right_or_refuses(path, randn(2, 3, 9))
    # Conv1d pads evenly or as "same" (stride 1, odd unit at the end); uneven padding whose windows
    # are those of an even one maps too (SAME_LOWER, stride 2: 2 before, 1 after, 4 windows either way)
    refused = {(4, 1, "SAME_LOWER"), (4, 2, "SAME_UPPER")}
    assert outcome == ("refused" if (kernel, stride, auto_pad) in refused else "loaded")


def test_conv_with_asymmetric_explicit_pads(tmp_path: Path) -> None:
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 1, 2, 3])
    path = graph_file(tmp_path, [node], [vi("x", X4)], [vi("y", None)], [const(randn(4, 3, 3, 3), "w")])
    model = matches_ort(path, randn(2, 3, 7, 8))
    assert kinds(model) == ["ZeroPadding2d", "Conv2d"]


def test_conv_kernel_shape_disagreeing_with_the_weight_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[2, 2], name="k")
    path = graph_file(tmp_path, [node], [vi("x", X4)], [vi("y", None)], [const(randn(4, 3, 3, 3), "w")])
    with pytest.raises(ExportError, match=r"Conv node 'k' has kernel_shape=\[2, 2\]"):
        framework.onnx.load(path)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_auto_pad(op: str, tmp_path: Path) -> None:
    """Each ``auto_pad`` with five (kernel, stride) pairs, ``ceil_mode`` 0 and 1."""
    failures: list[str] = []
    cases = list(
        itertools.product(
            ["SAME_UPPER", "SAME_LOWER", "VALID"], [(3, 1), (2, 1), (3, 2), (2, 2), (5, 3)], [0, 1]
        )
    )
    for auto_pad, (kernel, stride), ceil_mode in cases:
        with case(failures, f"auto_pad={auto_pad}, kernel {kernel}, stride {stride}, ceil_mode={ceil_mode}"):
            attrs = {
                "auto_pad": auto_pad,
                "kernel_shape": [kernel] * 2,
                "strides": [stride] * 2,
                "ceil_mode": ceil_mode,
            }
            node = helper.make_node(op, ["x"], ["y"], name="pool", **attrs)
            path = graph_file(tmp_path, [node], [vi("x", X4)], [vi("y", None)])
            outcome = loads_right_or_refuses(path, randn(2, 3, 7, 8))
            if auto_pad == "VALID" or (kernel, stride) == (3, 1):  # no padding, or the same on both sides
                assert outcome == "loaded"
    report(failures, len(cases))


@pytest.mark.parametrize(("op", "include"), [("MaxPool", None), ("AveragePool", 0), ("AveragePool", 1)])
def test_pool_ceil_mode_windows(op: str, include: Any, tmp_path: Path) -> None:
    """onnxruntime drops a last window that starts in the end padding, as PyTorch and the layers do;
    sizes 5 to 8, five (kernel, stride, pad) triples."""
    failures: list[str] = []
    cases = list(itertools.product([5, 6, 7, 8], [(2, 2, 1), (3, 2, 1), (3, 3, 1), (2, 3, 0), (4, 3, 2)]))
    for size, (kernel, stride, pad) in cases:
        with case(failures, f"size {size}, kernel {kernel}, stride {stride}, pad {pad}"):
            attrs = {"kernel_shape": [kernel] * 2, "strides": [stride] * 2, "pads": [pad] * 4, "ceil_mode": 1}
            if include is not None:
                attrs["count_include_pad"] = include
            node = helper.make_node(op, ["x"], ["y"], **attrs)
            path = graph_file(tmp_path, [node], [vi("x", ["N", 2, size, size])], [vi("y", None)])
            matches_ort(path, randn(2, 2, size, size))
    report(failures, len(cases))


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_conv_transpose_auto_pad(auto_pad: str, stride: int, tmp_path: Path) -> None:
    node = helper.make_node(
        "ConvTranspose", ["x", "w"], ["y"], auto_pad=auto_pad, strides=[stride] * 2, name="ct"
    )
    path = graph_file(
        tmp_path, [node], [vi("x", ["N", 3, 5, 6])], [vi("y", None)], [const(randn(3, 2, 3, 3), "w")]
    )
    outcome = loads_right_or_refuses(path, randn(2, 3, 5, 6))
    if auto_pad == "SAME_LOWER" or stride != 2:
        assert outcome == "loaded"


@pytest.mark.parametrize("dtype", ["f4", "f8"])
def test_gemm_attributes(dtype: str, tmp_path: Path) -> None:
    """Four attribute sets, each with four forms of ``C`` (none, (4,), (1, 4), a scalar)."""
    failures: list[str] = []
    cases = list(
        itertools.product(
            [{}, {"alpha": 0.5, "beta": 2.0}, {"transB": 1}, {"alpha": -1.5, "transB": 1, "beta": 0.0}],
            [None, (4,), (1, 4), ()],
        )
    )
    for attrs, c_shape in cases:
        with case(failures, f"{attrs}, C of shape {c_shape}"):
            b = randn(5, 4, dtype=dtype)
            inits = [const(b.T.copy() if attrs.get("transB") else b, "b")]
            inputs = ["x", "b"]
            if c_shape is not None:
                inits.append(const(randn(*c_shape, dtype=dtype), "c"))
                inputs.append("c")
            node = helper.make_node("Gemm", inputs, ["y"], **attrs)
            elem = F32 if dtype == "f4" else F64
            path = graph_file(tmp_path, [node], [vi("x", ["N", 5], elem)], [vi("y", None, elem)], inits)
            tol = TOL if dtype == "f4" else {"rtol": 1e-12, "atol": 1e-12}
            matches_ort(path, randn(3, 5, dtype=dtype), tol=tol)
    report(failures, len(cases))


def test_gemm_trans_a_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("Gemm", ["x", "b"], ["y"], transA=1, name="ta")
    path = graph_file(tmp_path, [node], [vi("x", [5, "N"])], [vi("y", None)], [const(randn(5, 4), "b")])
    with pytest.raises(ExportError, match=r"Gemm node 'ta' with transA=1"):
        framework.onnx.load(path)


@pytest.mark.parametrize("x_shape", [["N", 4], ["N", 3, 4]], ids=["2d", "3d"])
def test_matmul_add_bias_shapes(x_shape: list[Any], tmp_path: Path) -> None:
    """BUG (fixed): a bias of higher rank than the product was fused, giving another output shape.
    Eight bias shapes, each added after the product and before it."""
    failures: list[str] = []
    cases = list(
        itertools.product([(5,), (1, 5), (1, 1, 5), (5, 1), (3, 5), (1, 1, 1, 5), (), (1,)], [False, True])
    )
    for bias_shape, bias_first in cases:
        with case(failures, f"bias of shape {bias_shape}, {'first' if bias_first else 'second'}"):
            add_inputs = ["b", "m"] if bias_first else ["m", "b"]
            nodes = [
                helper.make_node("MatMul", ["x", "w"], ["m"]),
                helper.make_node("Add", add_inputs, ["y"], name="add"),
            ]
            inits = [const(randn(4, 5), "w"), const(randn(*bias_shape), "b")]
            path = graph_file(tmp_path, nodes, [vi("x", x_shape)], [vi("y", None)], inits)
            x = randn(2, *x_shape[1:])
            fits = (
                len(bias_shape) <= len(x_shape)
                and all(d == 1 for d in bias_shape[:-1])
                and bias_shape[-1:] != (3,)
            )
            fits = fits and bias_shape[-1:] in ((), (1,), (5,))
            if fits:
                model = matches_ort(path, x)
                assert kinds(model) == ["Linear"]
            else:
                with pytest.raises(ExportError, match="Add node 'add'"):
                    framework.onnx.load(path)
    report(failures, len(cases))


@pytest.mark.parametrize("weight_shape", [(2, 4, 5), (4,)])
def test_matmul_broadcasting_weight_is_refused(weight_shape: Any, tmp_path: Path) -> None:
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    path = graph_file(
        tmp_path, [node], [vi("x", ["N", 3, 4])], [vi("y", None)], [const(randn(*weight_shape), "w")]
    )
    with pytest.raises(ExportError, match=f"MatMul node 'mm' with a rank-{len(weight_shape)} weight"):
        framework.onnx.load(path)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_element_wise_with_a_constant_is_refused(op: str, tmp_path: Path) -> None:
    node = helper.make_node(op, ["x", "k"], ["y"], name="ew")
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3])], [vi("y", None)], [const(np.float32(2), "k")])
    with pytest.raises(ExportError, match=rf"{op}.*'ew'|'ew'.*{op}"):
        framework.onnx.load(path)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Max", "Min", "Sum", "Mean"])
def test_merges_of_two_inputs(op: str, tmp_path: Path) -> None:
    """The second input of the first's shape, a row and a column."""
    failures: list[str] = []
    others = {"same": ["N", 3, 4], "row": ["N", 1, 4], "column": ["N", 3, 1]}
    for label, other in others.items():
        with case(failures, label):
            node = helper.make_node(op, ["x", "z"], ["y"])
            path = graph_file(tmp_path, [node], [vi("x", ["N", 3, 4]), vi("z", other)], [vi("y", None)])
            outcome = loads_right_or_refuses(path, randn(2, 3, 4), randn(2, *other[1:]))
            assert outcome == "loaded" or other != ["N", 3, 4]
    report(failures, len(others))


@pytest.mark.parametrize("axis", [1, 2, -1, -2])
def test_concat_axes(axis: int, tmp_path: Path) -> None:
    node = helper.make_node("Concat", ["x", "z"], ["y"], axis=axis)
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3, 4]), vi("z", ["N", 3, 4])], [vi("y", None)])
    matches_ort(path, randn(2, 3, 4), randn(2, 3, 4))


def test_concat_along_the_batch_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("Concat", ["x", "z"], ["y"], axis=0, name="cat0")
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3]), vi("z", ["N", 3])], [vi("y", None)])
    with pytest.raises(ExportError, match="Concat node 'cat0'"):
        framework.onnx.load(path)


@pytest.mark.parametrize("opset", [11, 12, 13, 17])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_axis_of_a_4d_input(op: str, opset: int, tmp_path: Path) -> None:
    """No axis (the opset's default) and the axes 1, -1, 2, -3, -4."""
    failures: list[str] = []
    axes = [None, 1, -1, 2, -3, -4]
    for axis in axes:
        with case(failures, f"axis {axis}"):
            attrs = {} if axis is None else {"axis": axis}
            node = helper.make_node(op, ["x"], ["y"], name="sm", **attrs)
            path = graph_file(tmp_path, [node], [vi("x", ["N", 2, 3, 4])], [vi("y", None)], opset=opset)
            outcome = loads_right_or_refuses(path, randn(2, 2, 3, 4))
            assert outcome == (
                "refused" if opset < 13 and axis == -4 else "loaded"
            )  # -4: the batch normalised as one
    report(failures, len(axes))


@pytest.mark.parametrize("axis", [None, 0, 1, 2, -1, -2, -3])
def test_flatten_axis(axis: int | None, tmp_path: Path) -> None:
    attrs = {} if axis is None else {"axis": axis}
    node = helper.make_node("Flatten", ["x"], ["y"], name="fl", **attrs)
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3, 4])], [vi("y", None)])
    if axis in (None, 1, -2):
        matches_ort(path, randn(2, 3, 4))
    else:
        with pytest.raises(ExportError, match=r"Flatten node 'fl' with axis="):
            framework.onnx.load(path)


@pytest.mark.parametrize(
    ("target", "allowzero", "outcome"),
    [
        ([0, -1], 0, "loaded"),
        ([-1, 12], 0, "loaded"),
        ([0, 0, -1], 0, "loaded"),
        ([0, 4, 3], 0, "loaded"),
        ([0, 2, -1, 2], 0, "loaded"),
        ([-1, 3, 4], 0, "loaded"),
        ([0, 12, 1], 0, "loaded"),
        ([-1, 3, 4], 1, "loaded"),
        ([0, 3, 4], 1, "refused"),
        ([-1, 6], 0, "refused"),
        ([2, -1], 0, "refused"),
        ([0, -1], 1, "refused"),
    ],
)
def test_reshape_targets(target: list[int], allowzero: int, outcome: str, tmp_path: Path) -> None:
    node = helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=allowzero, name="rs")
    inits = [const(np.array(target, np.int64), "s")]
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3, 4])], [vi("y", None)], inits, opset=14)
    if outcome == "loaded":
        matches_ort(path, randn(2, 3, 4))
    else:
        with pytest.raises(ExportError, match="Reshape node 'rs'"):
            framework.onnx.load(path)


@pytest.mark.parametrize(
    ("perm", "outcome"),
    [(None, "refused"), ([0, 2, 1], "loaded"), ([0, 1, 2], "loaded"), ([2, 1, 0], "refused")],
)
def test_transpose_perm(perm: Any, outcome: str, tmp_path: Path) -> None:
    attrs = {} if perm is None else {"perm": perm}
    node = helper.make_node("Transpose", ["x"], ["y"], name="tp", **attrs)
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3, 4])], [vi("y", None)])
    if outcome == "loaded":
        matches_ort(path, randn(2, 3, 4))
    else:
        with pytest.raises(ExportError, match=r"Transpose node 'tp' with perm \[2, 1, 0\] moves the batch"):
            framework.onnx.load(path)


@pytest.mark.parametrize("opset", [11, 13])
def test_unsqueeze_and_squeeze_of_constants_fold_with_axes_as_attribute_or_input(
    opset: int, tmp_path: Path
) -> None:
    """A bias ``(5,)`` unsqueezed to ``(1, 1, 5)`` and squeezed to ``(1, 5)``, added after a MatMul."""
    if opset < 13:
        nodes = [
            helper.make_node("Unsqueeze", ["b"], ["b3"], axes=[0, -2]),
            helper.make_node("Squeeze", ["b3"], ["b2"], axes=[0]),
        ]
        inits: list[Any] = []
    else:
        nodes = [
            helper.make_node("Unsqueeze", ["b", "u"], ["b3"]),
            helper.make_node("Squeeze", ["b3", "s"], ["b2"]),
        ]
        inits = [const(np.array([0, -2], np.int64), "u"), const(np.array([0], np.int64), "s")]
    nodes += [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b2"], ["y"])]
    inits += [const(randn(5), "b"), const(randn(4, 5), "w")]
    path = graph_file(tmp_path, nodes, [vi("x", ["N", 4])], [vi("y", None)], inits, opset=opset)
    assert kinds(matches_ort(path, randn(3, 4))) == ["Linear"]


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_and_unsqueeze_of_a_tensor_are_refused(opset: int, tmp_path: Path) -> None:
    if opset < 13:
        node = helper.make_node("Unsqueeze", ["x"], ["y"], axes=[1], name="uq")
        inits: list[Any] = []
    else:
        node = helper.make_node("Unsqueeze", ["x", "a"], ["y"], name="uq")
        inits = [const(np.array([1], np.int64), "a")]
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3])], [vi("y", None)], inits, opset=opset)
    with pytest.raises(ExportError, match="Unsqueeze"):
        framework.onnx.load(path)


@pytest.mark.parametrize(
    ("mode", "pads", "outcome"),
    [
        ("constant", [0, 0, 1, 2, 0, 0, 3, 0], "loaded"),
        ("constant", [0, 1, 1, 1, 0, 0, 1, 1], "refused"),  # pads the channels
        ("constant", [0, 0, -1, 0, 0, 0, 0, 1], "refused"),  # crops
        ("reflect", [0, 0, 1, 1, 0, 0, 1, 1], "refused"),
        ("edge", [0, 0, 1, 1, 0, 0, 1, 1], "refused"),
    ],
)
def test_pad_modes(mode: str, pads: list[int], outcome: str, tmp_path: Path) -> None:
    node = helper.make_node("Pad", ["x", "p"], ["y"], mode=mode, name="pad")
    inits = [const(np.array(pads, np.int64), "p")]
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3, 5, 6])], [vi("y", None)], inits)
    if outcome == "loaded":
        matches_ort(path, randn(2, 3, 5, 6))
    else:
        with pytest.raises(ExportError, match=re.escape(f"Pad node 'pad' (pads {pads}, mode '{mode}'")):
            framework.onnx.load(path)


@pytest.mark.parametrize("opset", [6, 11, 13])
def test_clip_with_min_max_as_attributes_or_inputs_is_refused_by_name(opset: int, tmp_path: Path) -> None:
    if opset < 11:
        node = helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.5, name="clip")
        inits: list[Any] = []
    else:
        node = helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip")
        inits = [const(np.float32(-0.5), "lo"), const(np.float32(0.5), "hi")]
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3])], [vi("y", None)], inits, opset=opset)
    with pytest.raises(ExportError, match=r"operator 'Clip' \(node 'clip'\)"):
        framework.onnx.load(path)


@pytest.mark.parametrize("opset", [7, 11, 13])
def test_dropout_in_inference_is_the_identity(opset: int, tmp_path: Path) -> None:
    if opset < 12:
        node = helper.make_node("Dropout", ["x"], ["y"], ratio=0.3)
        inits: list[Any] = []
    else:
        node = helper.make_node("Dropout", ["x", "r", "t"], ["y"])
        inits = [const(np.float32(0.3), "r"), const(np.array(False), "t")]
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3])], [vi("y", None)], inits, opset=opset)
    assert kinds(matches_ort(path, randn(4, 3))) == []


def test_dropout_in_training_mode_is_refused(tmp_path: Path) -> None:
    """BUG (fixed): ``training_mode=True`` drops entries at inference; it became the identity."""
    node = helper.make_node("Dropout", ["x", "r", "t"], ["y"], name="drop")
    inits = [const(np.float32(0.5), "r"), const(np.array(True), "t")]
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3])], [vi("y", None)], inits, opset=13)
    with pytest.raises(ExportError, match=r"Dropout node 'drop' has training_mode=True"):
        framework.onnx.load(path)


def test_dropout_of_opset_6_without_is_test_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("Dropout", ["x"], ["y"], name="drop")
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3])], [vi("y", None)], opset=6)
    with pytest.raises(ExportError, match=r"Dropout node 'drop' \(opset 6\) has is_test=0"):
        framework.onnx.load(path)


def test_batch_norm_of_opset_6_without_is_test_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn")
    inits = [const(np.ones(3, np.float32), n) for n in ("s", "b", "m", "v")]
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3])], [vi("y", None)], inits, opset=6)
    with pytest.raises(ExportError, match=r"BatchNormalization node 'bn' \(opset 6\) has is_test=0"):
        framework.onnx.load(path)


def test_identity_passes_its_input_through(tmp_path: Path) -> None:
    node = helper.make_node("Identity", ["x"], ["y"])
    path = graph_file(
        tmp_path, [node, helper.make_node("Relu", ["y"], ["z"])], [vi("x", ["N", 3])], [vi("z", None)]
    )
    assert kinds(matches_ort(path, randn(4, 3))) == ["ReLU"]


@pytest.mark.parametrize(
    ("op", "attrs"),
    [
        ("LeakyRelu", {}),
        ("LeakyRelu", {"alpha": 0.2}),
        ("Elu", {}),
        ("Elu", {"alpha": 0.3}),
        ("Gelu", {"approximate": "tanh"}),
        ("Gelu", {}),
        ("Softplus", {}),
    ],
)
def test_activation_attributes_and_defaults(op: str, attrs: dict[str, Any], tmp_path: Path) -> None:
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3, 4])], [vi("y", None)], opset=20)
    matches_ort(path, 3 * randn(2, 3, 4))


@pytest.mark.parametrize(
    ("op", "attrs", "extra"),
    [
        ("Relu", {"alpha": 0.1}, "alpha"),
        ("Softmax", {"axis": 1, "mode": 2}, "mode"),
        ("Conv", {"channels_last": 1}, "channels_last"),
        ("Flatten", {"axis": 1, "keep": 1}, "keep"),
    ],
)
def test_an_attribute_the_importer_does_not_read_is_refused(
    op: str, attrs: dict[str, Any], extra: str, tmp_path: Path
) -> None:
    """An unknown attribute was ignored (a silent wrong result for a future one); now it is named."""
    inputs = ["x", "w"] if op == "Conv" else ["x"]
    node = helper.make_node(op, inputs, ["y"], name="n", **attrs)
    inits = [const(randn(2, 3, 1, 1), "w")] if op == "Conv" else []
    path = graph_file(tmp_path, [node], [vi("x", X4)], [vi("y", None)], inits)
    with pytest.raises(ExportError, match=rf"{op} node 'n' has the attribute\(s\) {extra}"):
        framework.onnx.load(path)


def test_a_node_of_another_domain_is_refused(tmp_path: Path) -> None:
    """BUG (fixed): ``com.example``'s ``Relu`` was read as ONNX's."""
    node = helper.make_node("Relu", ["x"], ["y"], domain="com.example", name="custom")
    graph = helper.make_graph([node], "g", [vi("x", ["N", 3])], [vi("y", None)])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    path = tmp_path / "domain.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ExportError, match=r"node 'custom' is operator 'Relu' of the domain 'com.example'"):
        framework.onnx.load(path)


@pytest.mark.parametrize("form", ["value", "value_float", "value_floats", "value_int", "value_ints"])
def test_constant_node_forms(form: str, tmp_path: Path) -> None:
    values = {
        "value": onnx.numpy_helper.from_array(np.arange(5, dtype=np.float32)),
        "value_float": 2.5,
        "value_floats": [1.0, 2.0, 3.0, 4.0, 5.0],
        "value_int": 2,
        "value_ints": [1, 0, 2, 0, 1],
    }
    nodes = [helper.make_node("Constant", [], ["k"], **{form: values[form]})]
    if form.startswith("value_int"):  # an int64 bias, cast to float
        nodes.append(helper.make_node("Cast", ["k"], ["kf"], to=F32))
    else:
        nodes.append(helper.make_node("Identity", ["k"], ["kf"]))
    nodes += [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "kf"], ["y"])]
    path = graph_file(tmp_path, nodes, [vi("x", ["N", 4])], [vi("y", None)], [const(randn(4, 5), "w")])
    matches_ort(path, randn(3, 4))


def test_slice_and_shape_start_of_constants_fold(tmp_path: Path) -> None:
    """A weight sliced from a constant; a reshape target from ``Shape(k, start=1)`` of a constant."""
    nodes = [
        helper.make_node("Slice", ["big", "st", "en", "ax", "sp"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Shape", ["k"], ["tail"], start=1),
        helper.make_node("Concat", ["zero", "tail"], ["target"], axis=0),
        helper.make_node("Reshape", ["m", "target"], ["y"]),
    ]
    inits = [
        const(randn(6, 9), "big"),
        const(np.array([1, 8], np.int64), "st"),
        const(np.array([5, -(2**62)], np.int64), "en"),
        const(np.array([0, 1], np.int64), "ax"),
        const(np.array([1, -2], np.int64), "sp"),
        const(np.zeros((7, 5, 1)), "k"),
        const(np.array([0], np.int64), "zero"),
    ]
    path = graph_file(tmp_path, nodes, [vi("x", ["N", 4])], [vi("y", None)], inits)
    matches_ort(path, randn(3, 4))


def test_integer_division_of_shapes_truncates(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Div", ["a", "b"], ["half"]),
        helper.make_node("Concat", ["zero", "half", "two"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = [
        const(np.array([13], np.int64), "a"),
        const(np.array([2], np.int64), "b"),
        const(np.array([0], np.int64), "zero"),
        const(np.array([2], np.int64), "two"),
    ]
    path = graph_file(tmp_path, nodes, [vi("x", ["N", 12])], [vi("y", None)], inits)
    matches_ort(path, randn(3, 12))


@pytest.mark.parametrize("axis", [-1, 2, -2, 1])
def test_layer_normalization_axis(axis: int, tmp_path: Path) -> None:
    normalized = (4,) if axis in (-1, 2) else (3, 4)
    node = helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=axis, epsilon=0.1)
    inits = [const(randn(*normalized), "s"), const(randn(*normalized), "b")]
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3, 4])], [vi("y", None)], inits)
    matches_ort(path, randn(2, 3, 4))


def test_layer_normalization_scale_broadcast_over_the_normalised_axes(tmp_path: Path) -> None:
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=-2)
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3, 4])], [vi("y", None)], [const(randn(4), "s")])
    matches_ort(path, randn(2, 3, 4))


@pytest.mark.parametrize("shape", [["N", 3, 5], ["N", 3, 4, 5]])
def test_instance_normalization(shape: list[Any], tmp_path: Path) -> None:
    node = helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=0.01)
    inits = [const(randn(3), "s"), const(randn(3), "b")]
    path = graph_file(tmp_path, [node], [vi("x", shape)], [vi("y", None)], inits)
    model = matches_ort(path, randn(2, *shape[1:]))
    assert kinds(model) == [f"InstanceNorm{len(shape) - 2}d"]


@pytest.mark.parametrize("momentum", [None, 0.5])
@pytest.mark.parametrize("epsilon", [None, 0.3])
def test_batch_normalization_attributes(momentum: Any, epsilon: Any, tmp_path: Path) -> None:
    attrs = {k: v for k, v in {"momentum": momentum, "epsilon": epsilon}.items() if v is not None}
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], **attrs)
    stats = [randn(3), randn(3), randn(3), RNG.uniform(0.5, 2, 3).astype("f4")]
    inits = [const(a, n) for a, n in zip(stats, "sbmv")]
    path = graph_file(tmp_path, [node], [vi("x", ["N", 3, 5])], [vi("y", None)], inits)
    matches_ort(path, randn(2, 3, 5))


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_recurrent_initial_state_of_constant_of_shape(op: str, fill: float, tmp_path: Path) -> None:
    """Zeros of the batch's shape load; any other fill is refused (it was read as zeros)."""
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    attrs = {"linear_before_reset": 1} if op == "GRU" else {}
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["n"], axis=0),
        helper.make_node("Concat", ["dirs", "n", "hidden"], ["state_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape", ["state_shape"], ["h0"], value=helper.make_tensor("v", F32, [1], [fill])
        ),
        helper.make_node(
            op, ["x", "W", "R", "B", "", "h0"], ["Y", "Y_h"], hidden_size=3, name="rec", **attrs
        ),
        helper.make_node("Squeeze", ["Y_h", "zero"], ["y"]),
    ]
    inits = [
        const(randn(1, gates * 3, 4), "W"),
        const(randn(1, gates * 3, 3), "R"),
        const(randn(1, 2 * gates * 3), "B"),
        const(np.array([1], np.int64), "one"),
        const(np.array([1], np.int64), "dirs"),
        const(np.array([3], np.int64), "hidden"),
        const(np.array([0], np.int64), "zero"),
    ]
    path = graph_file(tmp_path, nodes, [vi("x", [5, "N", 4])], [vi("y", None)], inits)
    if fill == 0.0:
        matches_ort(path, randn(5, 2, 4))
    else:
        with pytest.raises(ExportError, match=rf"{op} node 'rec' has the input initial_h"):
            framework.onnx.load(path)


@pytest.mark.parametrize(
    ("transform", "rounding"),
    [
        ("asymmetric", "floor"),
        ("half_pixel", "round_prefer_floor"),
        ("pytorch_half_pixel", "round_prefer_ceil"),
        ("asymmetric", "round_prefer_floor"),
        ("half_pixel", "floor"),
        ("align_corners", "round_prefer_floor"),
    ],
)
def test_resize_nearest(transform: str, rounding: str, tmp_path: Path) -> None:
    """Whole scales of the spatial axes, a fractional one and one scaling the channels."""
    failures: list[str] = []
    all_scales = [[1, 1, 2, 3], [1, 1, 3, 1], [1, 1, 1.5, 2], [1, 2, 2, 2]]
    for scales in all_scales:
        with case(failures, f"scales {scales}"):
            attrs = {"mode": "nearest", "coordinate_transformation_mode": transform, "nearest_mode": rounding}
            node = helper.make_node("Resize", ["x", "", "s"], ["y"], name="rs", **attrs)
            inits = [const(np.array(scales, np.float32), "s")]
            path = graph_file(tmp_path, [node], [vi("x", ["N", 2, 3, 4])], [vi("y", None)], inits, opset=13)
            outcome = loads_right_or_refuses(path, randn(2, 2, 3, 4))
            whole = scales[:2] == [1, 1] and all(float(v).is_integer() for v in scales)
            repeats = (transform, rounding) in {("asymmetric", "floor"), ("half_pixel", "round_prefer_floor")}
            repeats = repeats or (transform, rounding) == ("pytorch_half_pixel", "round_prefer_ceil")
            assert outcome == ("loaded" if whole and repeats else "refused")
    report(failures, len(all_scales))


@pytest.mark.parametrize("opset", [10, 18])
def test_resize_scales_of_opset_10_and_with_axes(opset: int, tmp_path: Path) -> None:
    if opset == 10:
        node = helper.make_node("Resize", ["x", "s"], ["y"], mode="nearest")
        scales = [1, 1, 2, 2]
    else:
        node = helper.make_node("Resize", ["x", "", "s"], ["y"], axes=[-1, 2], nearest_mode="floor")
        node.attribute.append(helper.make_attribute("coordinate_transformation_mode", "asymmetric"))
        scales = [3, 2]
    path = graph_file(
        tmp_path,
        [node],
        [vi("x", ["N", 2, 3, 4])],
        [vi("y", None)],
        [const(np.array(scales, np.float32), "s")],
        opset=opset,
    )
    assert kinds(matches_ort(path, randn(2, 2, 3, 4))) == ["UpSampling2d"]


def own_models() -> dict[str, Any]:
    from framework import Input, Sequential
    from framework import layers as L

    return {
        "upsampling": Sequential([Input((2, 4, 5)), L.UpSampling2d((2, 3))]),
        "maxpool_ceil_dropped_window": Sequential(
            [Input((2, 5, 5)), L.MaxPool2d(2, 2, padding=1, ceil_mode=True)]
        ),
        "avgpool_ceil_dropped_window": Sequential(
            [Input((2, 5, 5)), L.AvgPool2d(2, 2, padding=1, ceil_mode=True, count_include_pad=True)]
        ),
        "conv_same_even_kernel": Sequential([Input((2, 7, 8)), L.Conv2d(2, 3, 4, padding="same")]),
        "conv1d_same_even_kernel": Sequential([Input((2, 7)), L.Conv1d(2, 3, 4, padding="same")]),
    }


@pytest.mark.parametrize("name", sorted(own_models()))
def test_own_exports_load_back(name: str, tmp_path: Path) -> None:
    """Resize (UpSampling2d) and the pads written for ceil-mode pools were refused on import."""
    model = own_models()[name]
    framework.onnx.export(model, tmp_path / "own.onnx")
    loaded = framework.onnx.load(tmp_path / "own.onnx")
    x = randn(3, *model.input_shape[1:])
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), **TOL)
    assert kinds(loaded) == [type(layer).__name__ for layer in model.layers]
