"""Every built-in layer through every exit of a model: a registry-driven matrix.

Each built-in layer (enumerated through the registry and built from ``DEFAULTS`` of
``test_builtins_conformance.py``, so a newly registered layer is covered or fails here), each
variant of ``LAYERS`` there and the option variants of ``VARIANTS`` below sits in a small model
(functional; for each layer with its default arguments a ``Sequential`` too, when it takes one
array) whose every parameter and buffer is
moved away from its initial value (a load that silently keeps initial values is caught), one
parameter frozen, and which then takes two Adam steps (running statistics, batch counts and
optimizer slots are not the initial ones either). Against that model:

1. HDF5: ``model.save`` -> ``framework.load_model`` (then ``restore_rng_state``, the documented way
   to resume) gives the same outputs in inference and seeded training mode, parameters, buffers,
   batch counts, trainable flags, optimizer slots, and the same next training step;
   ``save_weights`` / ``load_weights`` into a freshly built model the same arrays;
2. state dicts in both namings, as dicts and through ``.npz`` and ``.safetensors`` files, into a
   fresh model: the same state dicts back and the same outputs; where PyTorch has the layer
   (``TORCH_TWINS`` of ``test_input_fuzz_hunt.py``), our ``"torch"`` state dict loads into the
   ``torch.nn`` module with ``strict=True`` and gives our outputs (float64, 1e-10), and the
   module's state dict loaded into ours likewise; followed by a Linear, the positions are
   ``torch.nn.Sequential``'s; keys meaning other layers in the other naming never swap weights;
3. ONNX: onnxruntime's output equals ``predict`` (float32 1e-5, float64 1e-10, the float32
   attributes of ONNX as docs/guide/onnx.md says; where onnxruntime has no float64 kernel only
   the import is compared), at other batch sizes and with ``dynamic_batch=False`` too, or an
   ``ExportError`` naming the layer; ``framework.onnx.load`` of the file gives the same outputs
   or an ``ExportError`` naming the file;
4. the NumPy predictor (``numpy_predictor``, ``model.export(dir)``, the CLI ``export --format
   numpy``): the same outputs (at other batch sizes too) or an ``ExportError`` naming the layer;
   the layers it covers are the ones docs/guide/interchange.md lists, and the layers ONNX converts
   those of the table of docs/guide/onnx.md.

The exits 1.-4. are one test each per (case, form) (the HDF5 checkpoint and weights file in one,
PyTorch's twins one per layer): the model is built and trained once per (case, form, dtype); a test
that changes it works on a copy, one that only reads it (state dicts, exports: each checks the model
is unchanged after an export) on the model itself. A test goes through every carrier and naming (2.),
both dtypes and the other batch sizes (3., 4.) in turn, its messages naming which one failed. Files go
to a folder per test (on a memory file system where tests/conftest.py finds one).

Nested models (one of several inputs and outputs), a shared layer, tied weights, frozen layers and
two stacks go through the same exits (``STRUCTURES``). Strict xfails (``KNOWN_BUGS``, empty while no
such bug is known) mark bugs outside this area.
"""

from __future__ import annotations

import copy
import importlib.util
import pickle
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import (
    ort_session,
    requires_h5py,
    requires_onnx,
    requires_onnxruntime,
    requires_safetensors,
    requires_torch,
)
from test_builtins_conformance import DEFAULTS, LAYERS, Spec
from test_input_fuzz_hunt import TORCH_TWINS

import framework
import framework.export
import framework.onnx
from framework import Input, Model, Sequential, layers, load_model
from framework.errors import ExportError, ShapeError
from framework.registry.manager import BUILTIN_DISTRIBUTION, REGISTRY
from framework.saving.checkpoint import restore_rng_state

try:
    import torch
except ImportError:
    torch = None
try:
    import onnx
except ImportError:
    onnx = None
try:
    import onnxruntime as ort
except ImportError:
    ort = None

ROOT = Path(__file__).resolve().parents[1]
TOL = {"float32": {"rtol": 1e-5, "atol": 1e-5}, "float64": {"rtol": 1e-10, "atol": 1e-10}}


def _builtin_layer_names() -> list[str]:
    return sorted(
        (e.name for e in REGISTRY.entries("layers") if e.plugin.distribution == BUILTIN_DISTRIBUTION),
        key=str.lower,
    )


NAMES = _builtin_layer_names()

#: Options the exits must carry that the defaults leave out: ``"Layer+what"`` -> spec.
VARIANTS: dict[str, Spec] = {
    "Linear+rank3_gelu": Spec((2, 3, 5), {"input_size": 5, "output_size": 4, "activation": "gelu"}),
    "Linear+softmax_nobias": Spec((3, 5), {"output_size": 4, "activation": "softmax", "bias": False}),
    "Linear+leaky_relu": Spec((3, 5), {"output_size": 4, "activation": "leaky_relu"}),
    "Conv2d+same_even_dilated": Spec(
        (2, 2, 6, 5),
        {"in_channels": 2, "out_channels": 4, "kernel_size": (2, 3), "padding": "same", "dilation": 2},
    ),
    "Conv2d+groups_stride_nobias_silu": Spec(
        (2, 4, 6, 5),
        {
            "in_channels": 4,
            "out_channels": 2,
            "kernel_size": 3,
            "stride": (2, 1),
            "padding": (1, 0),
            "groups": 2,
            "bias": False,
            "activation": "silu",
        },
    ),
    "Conv1d+same_groups": Spec(
        (2, 4, 7),
        {"in_channels": 4, "out_channels": 6, "kernel_size": 4, "padding": "same", "groups": 2},
    ),
    "Conv1d+stride_dilation": Spec(
        (2, 2, 9), {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "stride": 2, "dilation": 2}
    ),
    "ConvTranspose2d+everything": Spec(
        (2, 4, 3, 4),
        {
            "in_channels": 4,
            "out_channels": 2,
            "kernel_size": (3, 2),
            "stride": 2,
            "padding": 1,
            "output_padding": 1,
            "groups": 2,
            "dilation": (1, 2),
            "activation": "tanh",
        },
    ),
    "MaxPool2d+pad_ceil": Spec(
        (2, 2, 5, 5), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}
    ),
    "AvgPool2d+pad_exclude": Spec(
        (2, 2, 5, 6), {"kernel_size": (3, 2), "stride": (2, 1), "padding": 1, "count_include_pad": False}
    ),
    "AvgPool2d+ceil": Spec((2, 2, 5, 5), {"kernel_size": 2, "ceil_mode": True}),
    "MaxPool1d+pad_ceil": Spec((2, 2, 7), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    "AvgPool1d+pad": Spec((2, 2, 7), {"kernel_size": 3, "stride": 2, "padding": 1}),
    "BatchNorm+no_affine_4d": Spec((3, 2, 3, 2), {"num_features": 2, "affine": False, "eps": 1e-3}),
    "BatchNorm+cumulative_3d": Spec((3, 2, 4), {"num_features": 2, "momentum": None}),
    "BatchNorm+no_running_stats": Spec((4, 3), {"num_features": 3, "track_running_stats": False}),
    "LayerNorm+two_axes_no_bias": Spec((2, 3, 4), {"normalized_shape": [3, 4], "bias": False, "eps": 1e-3}),
    "LayerNorm+no_affine": Spec((3, 5), {"normalized_shape": 5, "elementwise_affine": False}),
    "Flatten+middle": Spec((2, 2, 3, 4), {"start_dim": 2, "end_dim": -2}),
    "Flatten+first_two": Spec((2, 2, 3, 4), {"start_dim": 1, "end_dim": 2}),
    "GELU+tanh": Spec((4, 7), {"approximate": "tanh"}),
    "Softplus+beta_threshold": Spec((4, 7), {"beta": 2.0, "threshold": 0.5}),
    "ELU+alpha": Spec((4, 7), {"alpha": 0.3}),
    "LeakyReLU+slope": Spec((4, 7), {"negative_slope": 0.3}),
    "Softmax+axis1_rank3": Spec((2, 3, 4), {"axis": 1}),
    "LogSoftmax+dim1_rank3": Spec((2, 3, 4), {"dim": 1}),
    "Activation+softplus": Spec((4, 7), {"activation": "softplus"}),
    "Activation+elu": Spec((4, 7), {"activation": "elu"}),
    "Dropout+p": Spec((4, 5), {"p": 0.3}),
    "Dropout+seeded": Spec((4, 5), {"p": 0.5, "seed": 5}),
    "Embedding+padding_idx": Spec(
        (3, 5), {"num_embeddings": 10, "embedding_dim": 4, "padding_idx": 0}, x=DEFAULTS["Embedding"].x
    ),
    "Concatenate+last_axis_rank3": Spec([(2, 3, 4), (2, 3, 2)], {"axis": -1}),
    "Add+three": Spec([(3, 4), (3, 4), (3, 4)]),
    "Multiply+three": Spec([(3, 4), (3, 4), (3, 4)]),
    "Average+three": Spec([(3, 4), (3, 4), (3, 4)]),
    "Reshape+minus_one": Spec((2, 3, 4), {"target_shape": [2, -1]}),
    "Permute+rank4": Spec((2, 2, 3, 4), {"dims": [3, 1, 2]}),
    "ZeroPadding2d+uneven": Spec((2, 2, 3, 3), {"padding": [1, 2, 0, 1]}),
    "UpSampling2d+uneven": Spec((2, 2, 3, 2), {"scale_factor": [2, 3]}),
    "RNN+relu_bi_deep_nobias_last": Spec(
        (2, 5, 3),
        {
            "input_size": 3,
            "hidden_size": 4,
            "num_layers": 2,
            "nonlinearity": "relu",
            "bias": False,
            "bidirectional": True,
            "batch_first": True,
            "output": "last",
        },
    ),
    "LSTM+bi_deep_both": Spec(
        (2, 5, 3),
        {"input_size": 3, "hidden_size": 4, "num_layers": 2, "bidirectional": True, "batch_first": True},
    ),
    "LSTM+bi_last_timemajor": Spec(
        (5, 2, 3), {"input_size": 3, "hidden_size": 4, "bidirectional": True, "output": "last"}
    ),
    "GRU+bi_nobias_sequence": Spec(
        (2, 5, 3),
        {"input_size": 3, "hidden_size": 4, "bias": False, "bidirectional": True, "output": "sequence"},
    ),
    "GRU+deep_last_batch_first": Spec(
        (2, 5, 3), {"input_size": 3, "hidden_size": 4, "num_layers": 2, "batch_first": True, "output": "last"}
    ),
    "BatchNorm+5d": Spec((2, 2, 2, 3, 2), {"num_features": 2}),
    "LayerNorm+three_axes": Spec((2, 2, 3, 4), {"normalized_shape": [2, 3, 4], "eps": 0.1}),
    "Linear+log_softmax_rank3": Spec((2, 3, 5), {"output_size": 4, "activation": "log_softmax"}),
    "LeakyReLU+steep": Spec((4, 7), {"negative_slope": 1.5}),
    "Conv2d+valid_dilated": Spec(
        (2, 2, 7, 6),
        {"in_channels": 2, "out_channels": 3, "kernel_size": 2, "padding": "valid", "dilation": 3},
    ),
    "RNN+deep_dropout": Spec((5, 2, 3), {"input_size": 3, "hidden_size": 4, "num_layers": 2, "dropout": 0.5}),
    "InstanceNorm2d+tracked": Spec(
        (2, 3, 4, 4), {"num_features": 3, "affine": True, "track_running_stats": True}
    ),
    "GroupNorm+no_affine": Spec((2, 4, 3, 3), {"num_groups": 4, "num_channels": 4, "affine": False}),
}


def _registered_cases() -> dict[str, tuple[str, Spec]]:
    """Case id -> (layer name, spec): DEFAULTS of every built-in, LAYERS's variants, VARIANTS."""
    cases: dict[str, tuple[str, Spec]] = {}
    for name in NAMES:
        spec = DEFAULTS.get(name)
        cases[name] = (name, spec)  # a missing entry fails in test_every_builtin_layer_is_in_the_matrix
        for i, variant in enumerate(LAYERS.get(name, [])):
            cases[f"{name}-{i}"] = (name, variant)
    for key, spec in VARIANTS.items():
        name = key.split("+")[0]
        if REGISTRY.contains("layers", name):
            cases[key] = (name, spec)
    return cases


CASES = _registered_cases()
CASE_IDS = sorted((k for k, (_, spec) in CASES.items() if spec is not None), key=str.lower)
DEFAULT_IDS = [n for n in NAMES if DEFAULTS.get(n) is not None]
#: every case in a functional model; each built-in layer with its default arguments in a
#: Sequential too, when it takes one array. An option variant changes what the layer's own exit code
#: converts, not what the container adds (layer names, positions, its config), which the defaults
#: already put through every exit in both forms. The exceptions reach a Sequential's own code:
#: a rank-3 input to a Linear replaces the input shape the Sequential guessed from its sizes.
SEQUENTIAL_VARIANTS = {"Linear+rank3_gelu"}
CASE_FORMS = [
    (case, form)
    for case in CASE_IDS
    for form in ("functional", "sequential")
    if form == "functional"
    or ((case in DEFAULT_IDS or case in SEQUENTIAL_VARIANTS) and not isinstance(CASES[case][1].shape, list))
]


@pytest.fixture(autouse=True)
def _default_dtype(request: Any) -> Any:
    """Each test runs under its ``dtype`` (float64 unless parametrized; a test going through both
    dtypes sets each with ``_default``): a model without parameters computes in the default dtype,
    as ``Model.dtype`` documents."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    old = framework.get_default_dtype()
    framework.set_default_dtype(params.get("dtype", "float64"))
    yield
    framework.set_default_dtype(old)


@pytest.fixture(scope="module")
def _folders(tmp_path_factory: Any) -> Path:
    return tmp_path_factory.mktemp("exits")


@pytest.fixture
def tmp_path(_folders: Path) -> Path:
    """An empty folder of its own for each test, as pytest's ``tmp_path`` (which this replaces in this
    file): one ``mkdir`` in a folder of the module, without the numbered folder and the ``-current``
    symlink pytest makes per test (3 ms each on a disk)."""
    return Path(tempfile.mkdtemp(dir=_folders))


def test_every_builtin_layer_is_in_the_matrix() -> None:
    missing = [n for n in NAMES if DEFAULTS.get(n) is None]
    assert missing == [], (
        f"built-in layers without a DEFAULTS entry in test_builtins_conformance.py: {missing}"
    )
    assert len(NAMES) > 40, "the registry gave too few built-in layers: the matrix would run over nothing"


# -- building the models -------------------------------------------------------------------------


def _inputs(spec: Spec, dtype: str, n: int | None = None, seed: int = 7) -> Any:
    """The input(s) of ``spec`` (``n`` samples when given: the batch axis is cut or grown)."""
    if spec.x is not None:
        x = np.array(spec.x)
        return x if n is None else np.random.default_rng(seed).integers(0, 10, size=(n, *x.shape[1:]))
    rng = np.random.default_rng(seed)
    shapes = spec.shape if isinstance(spec.shape, list) else [spec.shape]
    xs = [rng.standard_normal(s if n is None else (n, *s[1:])).astype(dtype) for s in shapes]
    return xs if isinstance(spec.shape, list) else xs[0]


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _prepare(model: Any, name: str, spec: Spec) -> None:
    """Run ``spec.prepare`` (GCNConv's adjacency: state outside the config) on every such layer."""
    if spec.prepare is None:
        return
    for layer in model.modules():
        if type(layer).__name__ == name:
            spec.prepare(layer)


def _perturb(model: Any, seed: int = 5) -> None:
    """Move every floating parameter and buffer away from its initial value (variances stay > 0)."""
    rng = np.random.default_rng(seed)
    for _, p in [*model.named_parameters(), *model.named_buffers()]:
        if p.data.dtype.kind == "f":
            p.data[...] = p.data + rng.uniform(0.1, 0.5, p.data.shape)


def _train(model: Any, x: Any, steps: int = 2, seed: int = 11) -> None:
    """``steps`` Adam steps of the manual loop with random output gradients (any output structure)."""
    rng = np.random.default_rng(seed)
    for k in range(steps):
        model.train()
        framework.set_seed(seed + k)
        out = model.forward(x)
        grads = [rng.standard_normal(np.shape(o)).astype(model.dtype) for o in _leaves(out)]
        model.backward(grads if isinstance(out, list) else grads[0])
        model.optimizer.step()
        model.zero_grad()
    model.eval()


def _functional(name: str, spec: Spec, dtype: str) -> Any:
    layer = layers.get(name, **spec.kwargs)
    shapes = spec.shape if isinstance(spec.shape, list) else [spec.shape]
    ins = [Input(s[1:]) for s in shapes]
    out = layer(ins if isinstance(spec.shape, list) else ins[0])
    return Model(ins if isinstance(spec.shape, list) else ins[0], out)


def _sequential(name: str, spec: Spec, dtype: str) -> Any:
    return Sequential([layers.get(name, **spec.kwargs)])


def _fresh(case: str, form: str, dtype: str, seed: int = 0) -> tuple[Any, Any]:
    """The case's model as first built (weights of ``seed``), not perturbed, and its input."""
    name, spec = CASES[case]
    old = framework.get_default_dtype()
    framework.set_default_dtype(dtype)
    try:
        framework.set_seed(seed)
        model = (_functional if form == "functional" else _sequential)(name, spec, dtype)
        _prepare(model, name, spec)
        x = _inputs(spec, dtype)
        model.predict(x)
    finally:
        framework.set_default_dtype(old)
    return model, x


@cache
def _made(case: str, form: str, dtype: str) -> tuple[Any, Any]:
    model, x = _fresh(case, form, dtype)
    _perturb(model)
    params = [p for _, p in model.named_parameters()]
    if len(params) > 1:
        params[-1].trainable = False  # a frozen parameter: its flag must survive every exit
    model.compile(optimizer="adam", loss="mse")
    _train(model, x)
    return model, x


def _model(case: str, form: str = "functional", dtype: str = "float64") -> tuple[Any, Any]:
    """A perturbed, trained copy of the case's model and its input (built once, copied per test)."""
    model, x = _made(case, form, dtype)
    return copy.deepcopy(model), x


@cache
def _outputs(case: str, form: str, dtype: str, n: int | None = None, seed: int = 7) -> Any:
    """``predict``'s outputs of the case's trained model on its input, or on ``n`` samples drawn
    with ``seed`` (computed once: the copies give the same)."""
    model, x = _made(case, form, dtype)
    with _default(dtype):
        return model.predict(x if n is None else _inputs(CASES[case][1], dtype, n=n, seed=seed))


@cache
def _state_of_made(case: str, form: str, dtype: str) -> dict[str, Any]:
    """``_state`` of the case's trained model (computed once: the copies have the same)."""
    return _state(_made(case, form, dtype)[0])


@cache
def _fresh_pickled(case: str, form: str, dtype: str) -> bytes:
    return pickle.dumps(_fresh(case, form, dtype, seed=3)[0], pickle.HIGHEST_PROTOCOL)


def _fresh_copy(case: str, form: str, dtype: str = "float64") -> Any:
    """A copy of the case's model freshly built with other weights (seed 3): what a load must overwrite
    (built and pickled once, unpickled per use: what ``copy.deepcopy`` gives, in half the time)."""
    return pickle.loads(_fresh_pickled(case, form, dtype))


@contextmanager
def _default(dtype: str) -> Iterator[None]:
    """``dtype`` as the default dtype inside (a model without parameters computes in it)."""
    old = framework.get_default_dtype()
    framework.set_default_dtype(dtype)
    try:
        yield
    finally:
        framework.set_default_dtype(old)


def _safetensors_installed() -> bool:
    return importlib.util.find_spec("safetensors") is not None


def _single_input(case: str) -> bool:
    return not isinstance(CASES[case][1].shape, list)


def _equal(got: Any, expected: Any, message: str) -> None:
    """``assert_array_equal``, which runs (to say what differs) only where ``array_equal`` fails."""
    if not np.array_equal(got, expected):
        np.testing.assert_array_equal(got, expected, err_msg=message)


def _close(got: Any, expected: Any, tol: dict[str, float], message: str) -> None:
    """``assert_allclose`` (the same ``isclose`` test), run only where ``allclose`` fails."""
    if np.shape(got) != np.shape(expected) or not np.allclose(got, expected, **tol):
        np.testing.assert_allclose(got, expected, **tol, err_msg=message)


def _assert_same(got: Any, expected: Any, tol: dict[str, float] | None = None, what: str = "") -> None:
    got_l, exp_l = _leaves(got), _leaves(expected)
    assert len(got_l) == len(exp_l), f"{what}: {len(got_l)} outputs, expected {len(exp_l)}"
    for i, (g, e) in enumerate(zip(got_l, exp_l)):
        g, e = np.asarray(g), np.asarray(e)
        assert g.shape == e.shape, f"{what} output {i}: shape {g.shape}, expected {e.shape}"
        if tol is None:
            _equal(g, e, f"{what} output {i}")
        else:
            _close(g, e, tol, f"{what} output {i}")


def _state(model: Any, flags: bool = True) -> dict[str, Any]:
    """Everything a checkpoint must carry of the layers: arrays, dtypes, flags, batch counts."""
    out: dict[str, Any] = {}
    for key, p in model.named_parameters():
        out[key] = (np.array(p.data), p.data.dtype, *([bool(p.trainable)] if flags else []))
    for key, b in model.named_buffers():
        out["buffer:" + key] = (np.array(b.data), b.data.dtype)
    for i, layer in enumerate(model.modules()):
        if hasattr(layer, "num_batches_tracked"):
            out[f"count:{i}"] = layer.num_batches_tracked
        if flags:
            out[f"trainable:{i}:{type(layer).__name__}"] = bool(getattr(layer, "trainable", True))
    return out


def _assert_same_state(got: Any, expected: Any, what: str, flags: bool = True) -> None:
    _assert_same_states(_state(got, flags), _state(expected, flags), what)


def _assert_same_states(a: dict[str, Any], b: dict[str, Any], what: str) -> None:
    assert sorted(a) == sorted(b), f"{what}: state keys differ"
    for key in a:
        va, vb = a[key], b[key]
        if isinstance(va, tuple):
            _equal(va[0], vb[0], f"{what}: {key}")
            assert va[1:] == vb[1:], f"{what}: {key} dtype/trainable {va[1:]}, expected {vb[1:]}"
        else:
            assert va == vb, f"{what}: {key} = {va}, expected {vb}"


def _train_out(model: Any, x: Any, seed: int = 99) -> Any:
    framework.set_seed(seed)
    return model(x, training=True)


#: (case, form) -> the bug outside this area that makes it fail: a strict xfail until fixed
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def _known(request: Any, case: str, form: str) -> None:
    reason = KNOWN_BUGS.get((case, form))
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


# -- 1. HDF5 checkpoints -------------------------------------------------------------------------


@requires_h5py
@pytest.mark.parametrize(("case", "form"), CASE_FORMS)
def test_hdf5_checkpoint_and_weights_carry_everything(case: str, form: str, tmp_path: Path) -> None:
    """save_weights -> load_weights into a freshly built model: outputs and arrays (a weights file
    carries no trainable flags, as Keras's); save -> load_model: outputs (inference and seeded
    training), state, optimizer, next step."""
    name, spec = CASES[case]
    model, x = _model(case, form)
    expected = _outputs(case, form, "float64")
    fresh = _fresh_copy(case, form)
    model.save_weights(tmp_path / "w.h5")
    fresh.load_weights(tmp_path / "w.h5")
    _assert_same(fresh.predict(x), expected, what="load_weights: predict")
    _assert_same_state(fresh, model, "load_weights", flags=False)  # weights files carry no flags (Keras)
    path = tmp_path / "m.h5"
    model.save(path)
    loaded = load_model(path)
    restore_rng_state(loaded)  # the documented way to resume: layers' own generators (seeded Dropout)
    _prepare(loaded, name, spec)
    _assert_same_states(_state(loaded), _state_of_made(case, form, "float64"), "load_model")  # = model's
    _assert_same(loaded.predict(x), expected, what="load_model: predict")
    ours, theirs = model.optimizer.state_dict(), loaded.optimizer.state_dict()
    assert theirs["iterations"] == ours["iterations"] == 2
    assert len(theirs["slots"]) == len(ours["slots"])
    for i, (s, t) in enumerate(zip(ours["slots"], theirs["slots"])):
        assert sorted(s) == sorted(t), f"optimizer slots of parameter {i}"
        for key in s:
            _equal(t[key], s[key], f"slot {key!r} of parameter {i}")
    _assert_same(_train_out(loaded, x), _train_out(model, x), what="training-mode output")
    _assert_same_state(loaded, model, "after a training-mode call")
    _train(model, x, steps=1, seed=40)
    _train(loaded, x, steps=1, seed=40)
    _assert_same_state(loaded, model, "after one more training step")


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_sequential_trains_a_last_layer_with_a_tuple_output(name: str) -> None:
    """The manual loop on ``Sequential([LSTM(...)])`` (output ``(y, (h_n, c_n))``): ``backward`` takes
    the gradient of the same structure, as the layer's own backward does, and gives its input gradient."""
    _, spec = CASES[name]
    model = Sequential([layers.get(name, **spec.kwargs)])
    x = _inputs(spec, "float64")
    model.predict(x)
    twin = copy.deepcopy(model.layers[0])
    model.train()
    out = model.forward(x)
    rng = np.random.default_rng(0)
    g = _map_leaves(out, lambda o: rng.standard_normal(o.shape))
    grad_in = model.backward(g)
    twin.train()
    twin.forward(x)
    np.testing.assert_allclose(grad_in, twin.backward(g), **TOL["float64"])


def _map_leaves(value: Any, f: Callable[[Any], Any]) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_map_leaves(v, f) for v in value)
    return f(value)


# -- 2. state dicts, .npz and .safetensors, PyTorch's modules -----------------------------------


def _carry(model: Any, fresh: Any, names: str, carrier: str, path: Path, state: Any = None) -> None:
    """``model``'s state into ``fresh`` through ``carrier`` in the ``names`` naming (``state``: the
    dict carrier's ``model.state_dict(format=names)`` when the caller has it already)."""
    if carrier == "dict":
        fresh.load_state_dict(model.state_dict(format=names) if state is None else state)
        return
    file = path / f"w.{carrier}"
    model.save_weights(file, names=names)
    fresh.load_weights(file)


def _carriers(form: str) -> tuple[str, ...]:
    """The files carry the same state dict as the dict: through them in the functional form only."""
    return ("dict", "npz", "safetensors") if form == "functional" else ("dict",)


@pytest.mark.parametrize(("case", "form"), CASE_FORMS)
def test_state_dict_round_trip(case: str, form: str, tmp_path: Path) -> None:
    """Each carrier (a dict; ``.npz`` and ``.safetensors`` files in the functional form) in each
    naming, into a freshly built model: the same state dicts back (both namings) and the same
    outputs; a weights file carries no trainable flags (Keras's ``load_weights`` neither)."""
    model, x = _made(case, form, "float64")  # only read (its state dicts and files): not copied
    expected = {fmt: model.state_dict(format=fmt) for fmt in ("native", "torch")}
    expected_out = _outputs(case, form, "float64")
    not_run = []
    for carrier in _carriers(form):
        if carrier == "safetensors" and not _safetensors_installed():
            not_run.append(carrier)
            continue
        for names in ("native", "torch"):
            what = f"{carrier} in the {names} naming"
            fresh = _fresh_copy(case, form)
            _carry(model, fresh, names, carrier, tmp_path, expected[names])
            for fmt in ("native", "torch"):
                got = fresh.state_dict(format=fmt)
                assert sorted(got) == sorted(expected[fmt]), f"{what}: {fmt} state dict keys"
                for key, value in expected[fmt].items():
                    if names == "native" and key.endswith("num_batches_tracked"):
                        continue  # documented: only PyTorch's naming carries the batch count
                    g, e = np.asarray(got[key]), np.asarray(value)
                    _equal(g, e, f"{what}: {key}")
                    assert g.dtype == e.dtype, f"{what}: {key} dtype {g.dtype}, expected {e.dtype}"
            _assert_same(fresh.predict(x), expected_out, what=f"{what}: predict")
            flags = [p.trainable for _, p in fresh.named_parameters()]
            assert all(flags), f"{what}: a weights file carries no trainable flags: the fresh model's stay"
    if not_run:
        pytest.skip("needs safetensors: pip install -e '.[safetensors]' (the other carriers passed)")


def _to_torch(x: Any) -> Any:
    return torch.from_numpy(np.ascontiguousarray(x))


def _torch_out(module: Any, x: Any) -> Any:
    with torch.no_grad():
        out = module(_to_torch(x))
    return [o.numpy() for o in _leaves(out)]


@requires_torch
@pytest.mark.parametrize("name", sorted(n for n in TORCH_TWINS if n in DEFAULT_IDS))
def test_torch_twin_takes_our_state_dict_strictly(name: str) -> None:
    """Our ``state_dict(format="torch")`` into ``torch.nn.Sequential(twin)`` with strict=True, and the
    twin's into ours: the same outputs (float64, 1e-10), in inference and (where the layer is
    deterministic) training mode, and the same running statistics after the training call."""
    for direction in ("ours_to_torch", "torch_to_ours"):
        for mode in ("eval", "train"):
            what = f"{name}, {direction}, {mode} mode"
            model, x = _model(name, "sequential")
            twin = torch.nn.Sequential(TORCH_TWINS[name]()).double()
            if direction == "ours_to_torch":
                state = model.state_dict(format="torch")
                assert set(state) == set(twin.state_dict()), what
                twin.load_state_dict({k: _to_torch(np.asarray(v)) for k, v in state.items()}, strict=True)
            else:
                with torch.no_grad():  # the twin's own values, away from PyTorch's initial ones
                    for value in twin.state_dict().values():
                        if value.is_floating_point():
                            value.uniform_(0.5, 1.5)
                        else:
                            value.fill_(7)
                assert model.load_state_dict(twin.state_dict()) == ([], [], []), what
            twin.train(mode == "train")
            got = model(x, training=mode == "train")
            _assert_same(got, _torch_out(twin, x), TOL["float64"], what=f"{what}: against torch")
            if direction == "torch_to_ours" or mode == "train":
                theirs = twin.state_dict()
                for key, value in model.state_dict(format="torch").items():
                    np.testing.assert_allclose(
                        np.asarray(value), theirs[key].numpy(), **TOL["float64"], err_msg=f"{what}: {key}"
                    )


#: torch.nn modules equal to layers TORCH_TWINS leaves out (their own activation argument...)
MORE_TWINS: dict[str, Callable[[], list[Any]]] = {
    "TransformerEncoderLayer": lambda: [torch.nn.TransformerEncoderLayer(4, 2, batch_first=True)],
    "Linear+leaky_relu": lambda: [torch.nn.Linear(5, 4), torch.nn.LeakyReLU()],
    "Conv2d+groups_stride_nobias_silu": lambda: [
        torch.nn.Conv2d(4, 2, 3, stride=(2, 1), padding=(1, 0), groups=2, bias=False),
        torch.nn.SiLU(),
    ],
    "ConvTranspose2d+everything": lambda: [
        torch.nn.ConvTranspose2d(4, 2, (3, 2), 2, 1, 1, groups=2, dilation=(1, 2)),
        torch.nn.Tanh(),
    ],
}


def _twin(case: str) -> list[Any]:
    return MORE_TWINS[case]() if case in MORE_TWINS else [TORCH_TWINS[case]()]


@requires_torch
@pytest.mark.parametrize("case", sorted({*(n for n in TORCH_TWINS if n in DEFAULT_IDS), *MORE_TWINS}))
def test_torch_names_count_positions_as_torch_sequential_does(case: str) -> None:
    """``Sequential([layer, Linear])``'s PyTorch names are those of ``nn.Sequential(twin, nn.Linear)``:
    the Linear after the layer is at the position PyTorch gives it (one module per layer, two for a
    layer with weights and a fused ``activation=``), and the state dict loads strictly both ways."""
    name, spec = CASES[case]
    x = _inputs(spec, "float64")
    framework.set_seed(0)
    layer = layers.get(name, **spec.kwargs)
    width = np.shape(_leaves(Sequential([copy.deepcopy(layer)]).predict(x))[0])[-1]
    model = Sequential([layer, layers.get("Linear", output_size=2)])
    model.predict(x)
    _perturb(model)
    twin = torch.nn.Sequential(*_twin(case), torch.nn.Linear(width, 2)).double().eval()
    state = model.state_dict(format="torch")
    assert sorted(state) == sorted(twin.state_dict())
    twin.load_state_dict({k: _to_torch(np.asarray(v)) for k, v in state.items()}, strict=True)
    _assert_same(model.predict(x), _torch_out(twin, x), TOL["float64"], what="ours into torch")
    fresh = Sequential([layers.get(name, **spec.kwargs), layers.get("Linear", output_size=2)])
    fresh.predict(x)
    assert fresh.load_state_dict(twin.state_dict()) == ([], [], [])
    _assert_same(fresh.predict(x), model.predict(x), TOL["float64"], what="torch into ours")


def _position_named(seed: int) -> tuple[Any, Any]:
    """Layers named like the positions of other layers: ``"0.weight"`` is the last Linear's in the
    layer names and the first Linear's in PyTorch's (a ReLU sits at position 1)."""
    framework.set_seed(seed)
    L = layers
    model = Sequential([L.Linear(4, 4, name="2"), L.ReLU(), L.Linear(4, 4, name="0")])
    x = np.random.default_rng(0).standard_normal((3, 4))
    model.predict(x)
    return model, x


@requires_torch
@pytest.mark.parametrize("carrier", ["dict", "npz", pytest.param("safetensors", marks=requires_safetensors)])
@pytest.mark.parametrize("names", ["native", "torch"])
def test_keys_naming_other_layers_in_the_other_naming_never_swap_weights(
    names: str, carrier: str, tmp_path: Path
) -> None:
    """A key that names one parameter in the layer names and another in PyTorch's is read in the
    naming the file says (safetensors metadata), or refused with a ConfigError naming the keys and
    the way out (``names=``); never silently read in the wrong one (the weights swapped)."""
    from framework.errors import ConfigError
    from framework.interchange import load_state_dict

    model, x = _position_named(0)
    _perturb(model)
    fresh, _ = _position_named(3)
    try:
        _carry(model, fresh, names, carrier, tmp_path)
    except ConfigError as exc:
        assert carrier != "safetensors", f"the file's metadata names its naming: {exc}"
        assert "'0.weight'" in str(exc) and "names=" in str(exc), str(exc)
        if carrier == "dict":
            load_state_dict(fresh, model.state_dict(format=names), names=names)
        else:
            fresh.load_weights(tmp_path / f"w.{carrier}", names=names)
    _assert_same(fresh.predict(x), model.predict(x), what="predict")
    twin = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4)).double()
    load_state_dict(fresh, twin.state_dict(), names="torch")
    _assert_same(fresh.predict(x), _torch_out(twin, x), TOL["float64"], what="PyTorch's weights")


# -- 3. ONNX -------------------------------------------------------------------------------------

#: built-in layers ONNX export refuses (an ExportError naming the layer), with the reason
ONNX_REFUSED = {
    "GCNConv": "documented: its adjacency is not a tensor of the batch",
    **{
        name: "no converter (docs/guide/onnx.md lists the converted layers)"
        for name in (
            "AdaptiveAvgPool1d",
            "AdaptiveAvgPool2d",
            "AdaptiveMaxPool2d",
            "GroupNorm",
            "GRUCell",
            "InstanceNorm1d",
            "InstanceNorm2d",
            "LSTMCell",
            "MultiheadAttention",
            "PositionalEncoding",
            "RMSNorm",
            "RNNCell",
            "ScaledDotProductAttention",
            "TransformerDecoder",
            "TransformerDecoderLayer",
            "TransformerEncoder",
            "TransformerEncoderLayer",
        )
    },
}
#: option variants ONNX cannot express (an ExportError naming the layer and the option)
ONNX_REFUSED_CASES = {"BatchNorm+no_running_stats": "track_running_stats"}


def _feeds(session: Any, x: Any) -> dict[str, Any]:
    xs = x if isinstance(x, list) else [x]
    return {i.name: np.asarray(v) for i, v in zip(session.get_inputs(), xs)}


def _run_onnx(path: Path, x: Any, *more: Any) -> Any:
    """onnxruntime's outputs, or ``None`` where it has no kernel for the file's float64 operators
    (Conv, pools, Elu, Erf, Softplus, Mean, Resize, RNN/LSTM/GRU: the float32 file is run instead;
    ``onnx.reference`` is no substitute, its Erf runs in float32). Given ``more`` inputs, one
    session runs each and the list of their outputs comes back."""
    try:
        session = ort_session(path)
        outs = [list(session.run(None, _feeds(session, v))) for v in (x, *more)]
    except Exception as exc:  # onnxruntime's own NOT_IMPLEMENTED / RUNTIME_EXCEPTION types
        if "NOT_IMPLEMENTED" not in str(exc) and "does not support double" not in str(exc):
            raise
        return None
    return outs if more else outs[0]


def _float32_attributes(model: Any) -> Any:
    """A copy of ``model`` with the values ONNX stores as 32-bit float attributes rounded to float32
    (LeakyRelu's and Elu's ``alpha``, the normalisations' ``epsilon``): what a float64 file computes."""
    return _round_float32_attributes(copy.deepcopy(model))


def _round_float32_attributes(model: Any) -> Any:
    """``model`` (changed in place) with its float32 ONNX attributes rounded (see ``_float32_attributes``)."""
    for layer, attr, rounded in _float32_attribute_values(model):
        setattr(layer, attr, rounded)
    return model


def _float32_attribute_values(model: Any) -> Iterator[tuple[Any, str, float]]:
    """``(layer, attribute, value rounded to float32)`` of each float32 ONNX attribute of ``model``."""
    for layer in model.modules():
        for attr in ("negative_slope", "alpha", "eps"):
            value = getattr(layer, attr, None)
            if isinstance(value, float):
                yield layer, attr, float(np.float32(value))


@cache
def _float32_attributes_outputs(case: str, form: str) -> Any:
    """``predict``'s outputs of the case's trained float64 model with its float32 ONNX attributes
    rounded (see ``_float32_attributes``): its own outputs where rounding changes none."""
    model, x = _made(case, form, "float64")
    if all(getattr(layer, attr) == rounded for layer, attr, rounded in _float32_attribute_values(model)):
        return _outputs(case, form, "float64")
    with _default("float64"):
        return _float32_attributes(model).predict(x)


@contextmanager
def _in_training_mode(case: str, form: str, dtype: str) -> Iterator[tuple[Any, Any]]:
    """The case's trained model itself (not a copy: an export only reads it) in training mode inside,
    back in inference mode after. Its state is taken first (``_state_of_made``): the exporter's
    test compares the model after the export with it."""
    model, x = _made(case, form, dtype)
    _state_of_made(case, form, dtype)
    model.train()
    try:
        yield model, x
    finally:
        model.eval()


def _names_layer(layer: Any, message: str) -> bool:
    return type(layer).__name__ in message and (layer.name or "") in message


def _layer_of(model: Any, name: str) -> Any:
    return next(layer for layer in model.modules() if type(layer).__name__ == name)


#: the other batch sizes the exits run (the functional form, float32): the first is one sample
OTHER_BATCHES = (1, 4)


def _onnx_refused(case: str) -> bool:
    return CASES[case][0] in ONNX_REFUSED or case in ONNX_REFUSED_CASES


def _check_onnx_export(case: str, form: str, dtype: str, path: Path) -> Any:
    """Export the case's model left in training mode (the file is the inference form, the model
    unchanged) and run the file, or check the refusal; in float32 and the functional form, the
    same file at the other batch sizes (its batch axis is the symbolic ``N``). Returns the model
    (``None`` if refused)."""
    name, spec = CASES[case]
    with _in_training_mode(case, form, dtype) as (model, x):
        try:
            framework.onnx.export(model, path)
        except ExportError as exc:
            assert _onnx_refused(case), f"unexpected refusal: {exc}"
            assert _names_layer(_layer_of(model, name), str(exc)), str(exc)
            if case in ONNX_REFUSED_CASES:
                assert ONNX_REFUSED_CASES[case] in str(exc)
            assert not path.exists()
            return None
        assert not _onnx_refused(case), "exported: update ONNX_REFUSED"
        assert model.training, "exporting put the model in inference mode"
    _assert_same_states(_state(model), _state_of_made(case, form, dtype), "exporting changed the model")
    if dtype == "float64":  # the attributes rounded as the file stores them
        reference = _float32_attributes_outputs(case, form)
    else:
        reference = _outputs(case, form, dtype)
    batches = OTHER_BATCHES if dtype == "float32" and form == "functional" else ()
    others = [_inputs(spec, dtype, n=n, seed=n) for n in batches]
    got = _run_onnx(path, x, *others)
    if got is not None:
        got = got if others else [got]
        _assert_same(got[0], reference, TOL[dtype], what=f"onnxruntime ({dtype})")
        for n, out in zip(batches, got[1:]):
            _assert_same(
                out, _outputs(case, form, dtype, n, seed=n), TOL[dtype], what=f"onnxruntime, batch {n}"
            )
    else:
        assert dtype == "float64", "onnxruntime refused a float32 file"
    try:
        loaded = framework.onnx.load(path)
    except ExportError as exc:
        assert str(path) in str(exc), str(exc)
        return model
    _assert_same(loaded.predict(x), reference, TOL[dtype], what=f"framework.onnx.load ({dtype})")
    assert np.dtype(loaded.dtype) == np.dtype(dtype)
    return model


@requires_onnx
@pytest.mark.parametrize(
    ("case", "form"),
    [
        (case, form) if _onnx_refused(case) else pytest.param(case, form, marks=requires_onnxruntime)
        for case, form in CASE_FORMS  # refused: no file to run
    ],
)
def test_onnx_export_matches_predict_or_refuses_clearly(
    case: str, form: str, tmp_path: Path, request: Any
) -> None:
    """In float32 and float64: onnxruntime's outputs equal ``predict``'s (in float32 and the
    functional form at other batch sizes too), ``framework.onnx.load`` of the file gives them or
    an ``ExportError`` naming the file; or an ``ExportError`` naming the layer. ``dynamic_batch=False``
    (from the model in inference mode) writes axis 0 as 1 (a recurrent layer's states keep their
    own batch axis, axis 1 of a time-major input) and the file passes onnx.checker and gives
    ``predict``'s outputs on one sample."""
    _known(request, case, form)
    models = {}
    for dtype in ("float32", "float64"):
        with _default(dtype):
            models[dtype] = _check_onnx_export(case, form, dtype, tmp_path / f"m_{dtype}.onnx")
    model = models["float32"]
    if model is None or not _single_input(case):
        return
    with _default("float32"):
        model.eval()
        framework.onnx.export(model, tmp_path / "fixed.onnx", dynamic_batch=False)
        # the model is the cached one the other tests use: the export must have left it as it was
        _assert_same_states(
            _state(model), _state_of_made(case, form, "float32"), "exporting changed the model"
        )
        got = _run_onnx(tmp_path / "fixed.onnx", _inputs(CASES[case][1], "float32", n=1))
        expected = _outputs(case, form, "float32", 1)
        _assert_same(got, expected, TOL["float32"], what="onnxruntime, dynamic_batch=False, batch 1")


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize("opset", [18, 19, 20, 21])
@pytest.mark.parametrize("dtype", ["float32"])
@pytest.mark.parametrize("case", ["GELU", "GELU+tanh", "Linear+rank3_gelu", "Softplus+beta_threshold", "GRU"])
def test_onnx_later_opsets(case: str, dtype: str, opset: int, tmp_path: Path) -> None:
    """GELU is one ``Gelu`` node from opset 20, its decomposition before: both give ``predict``'s
    outputs and load back; the other converters write the same nodes at every opset."""
    model, x = _model(case, "functional", dtype)
    framework.onnx.export(model, tmp_path / "m.onnx", opset=opset)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    if "GELU" in case or "gelu" in case:
        assert ("Gelu" in ops) == (opset >= 20), ops
    expected = model.predict(x)
    _assert_same(_run_onnx(tmp_path / "m.onnx", x), expected, TOL[dtype], what=f"onnxruntime, opset {opset}")
    try:
        loaded = framework.onnx.load(tmp_path / "m.onnx")
    except ExportError as exc:
        assert case == "GRU" and "m.onnx" in str(exc), str(exc)  # output="both": (y, h_n)
        return
    _assert_same(loaded.predict(x), expected, TOL[dtype], what=f"framework.onnx.load, opset {opset}")


# -- 4. the NumPy predictor ----------------------------------------------------------------------

#: built-in layers the NumPy predictor refuses (an ExportError naming the layer)
NUMPY_REFUSED = {
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "GCNConv",
    "GroupNorm",
    "GRUCell",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "LSTMCell",
    "MultiheadAttention",
    "PositionalEncoding",
    "RMSNorm",
    "RNNCell",
    "ScaledDotProductAttention",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
}


def _import_predict(directory: Path) -> Any:
    spec = importlib.util.spec_from_file_location(
        f"predict_{abs(hash(str(directory)))}", directory / "predict.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_numpy_predictor(case: str, form: str, dtype: str, folder: Path) -> None:
    """Export the case's model left in training mode (``predict.py`` is the inference form, the
    model unchanged) and run ``predict.py`` and its command line, or check the refusal; in float32
    and the functional form, ``predict.py`` at the other batch sizes too."""
    name, spec = CASES[case]
    with _in_training_mode(case, form, dtype) as (model, x):
        try:
            framework.export.numpy_predictor(model, folder / "deploy")
        except ExportError as exc:
            assert name in NUMPY_REFUSED, f"unexpected refusal: {exc}"
            assert _names_layer(_layer_of(model, name), str(exc)), str(exc)
            return
        assert name not in NUMPY_REFUSED, "exported: update NUMPY_REFUSED"
        assert model.training, "exporting put the model in inference mode"
    _assert_same_states(_state(model), _state_of_made(case, form, dtype), "exporting changed the model")
    script = _import_predict(folder / "deploy")
    expected = _outputs(case, form, dtype)
    _assert_same(script.predict(x), expected, TOL[dtype], what=f"predict.py ({dtype})")
    # its command line: one .npy per input; the output in a .npy, or one array per leaf in an .npz
    paths = []
    for i, array in enumerate(_leaves(x)):
        paths.append(str(folder / f"x{i}.npy"))
        np.save(paths[-1], array)
    script.main([*paths, "--out", str(folder / "y.out")])
    leaves = _leaves(expected)
    if isinstance(expected, (list, tuple)):
        with np.load(folder / "y.out", allow_pickle=False) as archive:
            written = [archive[f"output_{i}"] for i in range(len(leaves))]
            assert len(archive.files) == len(leaves)
    else:
        written = [np.load(folder / "y.out", allow_pickle=False)]
    _assert_same(written, leaves, TOL[dtype], what="python predict.py --out")
    if dtype != "float32" or form != "functional":
        return
    for n in OTHER_BATCHES:
        xn = _inputs(spec, dtype, n=n, seed=n)
        if n == 1 and name == "BatchNorm" and spec.kwargs.get("track_running_stats") is False:
            with pytest.raises(ShapeError, match="more than 1 value per channel"):
                model.predict(xn)  # batch statistics of one value per channel: refused, as PyTorch does
            continue
        _assert_same(
            script.predict(xn),
            _outputs(case, form, dtype, n, seed=n),
            TOL[dtype],
            what=f"predict.py, batch {n}",
        )


@pytest.mark.parametrize(("case", "form"), CASE_FORMS)
def test_numpy_predictor_matches_predict_or_refuses_clearly(case: str, form: str, tmp_path: Path) -> None:
    """In float32 and float64: ``predict.py`` and ``python predict.py --out`` give ``predict``'s
    outputs (in float32 and the functional form at other batch sizes too), or an ``ExportError``
    naming the layer."""
    for dtype in ("float32", "float64"):
        (tmp_path / dtype).mkdir()
        with _default(dtype):
            _check_numpy_predictor(case, form, dtype, tmp_path / dtype)


# -- the docs say which layers each exit covers --------------------------------------------------


def _doc(page: str) -> str:
    return (ROOT / "docs" / "guide" / page).read_text(encoding="utf-8")


def _numpy_doc_claims() -> tuple[set[str], set[str]]:
    """(layers interchange.md says the NumPy predictor covers, layers it says are refused)."""
    text = " ".join(_doc("interchange.md").split())
    covered = text[text.index("It covers the inference path of") : text.index("Any other layer")]
    refused = text[text.index("Any other layer") : text.index("is refused with an `ExportError`")]
    words = set(re.findall(r"[A-Za-z0-9]+", covered))
    claimed = {n for n in NAMES if n in words}
    if "max and average pools" in covered:
        claimed |= {n for n in NAMES if re.fullmatch(r"(Max|Avg)Pool[12]d", n)}
    if "merge layers" in covered:
        claimed |= {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"}
    said_refused = {n for n in NAMES if n in set(re.findall(r"[A-Za-z0-9]+", refused))}
    if "attention and Transformer layers" in refused:
        said_refused |= {n for n in NAMES if "Attention" in n or n.startswith("Transformer")}
    if "the adaptive pools" in refused:
        said_refused |= {n for n in NAMES if n.startswith("Adaptive")}
    if "`InstanceNorm`" in refused:
        said_refused |= {n for n in NAMES if n.startswith("InstanceNorm")}
    return claimed, said_refused


def _onnx_doc_claims() -> set[str]:
    """The layers of the first column of onnx.md's layer-to-operator table."""
    claimed: set[str] = set()
    for line in _doc("onnx.md").splitlines():
        if line.startswith("| `") or line.startswith("| nested"):
            first = line.split("|")[1]
            claimed |= {n for n in re.findall(r"`([A-Za-z0-9]+)`", first) if n in NAMES}
    return claimed


def _exports(name: str, exporter: Callable[[Any, Path], Any], tmp_path: Path) -> bool:
    model, _ = _model(name, "functional", "float32")
    try:
        exporter(model, tmp_path / f"out_{name}")
    except ExportError:
        return False
    return True


@pytest.mark.parametrize("dtype", ["float32"])
def test_numpy_predictor_covers_what_the_docs_say(dtype: str, tmp_path: Path) -> None:
    claimed, said_refused = _numpy_doc_claims()
    assert not claimed & said_refused, f"the docs both claim and refuse {sorted(claimed & said_refused)}"
    exported = {n for n in DEFAULT_IDS if _exports(n, framework.export.numpy_predictor, tmp_path)}
    assert sorted(claimed - exported) == [], "docs/guide/interchange.md claims these, the predictor refuses"
    assert sorted(exported - claimed) == [], (
        "the predictor covers these, docs/guide/interchange.md omits them"
    )
    assert exported == set(DEFAULT_IDS) - NUMPY_REFUSED


@requires_onnx
@pytest.mark.parametrize("dtype", ["float32"])
def test_onnx_converts_what_the_docs_table_lists(dtype: str, tmp_path: Path) -> None:
    claimed = _onnx_doc_claims()

    def export(model: Any, path: Path) -> None:
        framework.onnx.export(model, path.with_suffix(".onnx"))

    exported = {n for n in DEFAULT_IDS if _exports(n, export, tmp_path)}
    assert sorted(claimed - exported) == [], "docs/guide/onnx.md's table lists these, export refuses them"
    assert sorted(exported - claimed) == [], "export converts these, docs/guide/onnx.md's table omits them"
    assert exported == set(DEFAULT_IDS) - set(ONNX_REFUSED)


# -- the other spellings of the exits -----------------------------------------------------------


@requires_onnx
@requires_h5py
@pytest.mark.parametrize(
    "case", ["Conv2d+groups_stride_nobias_silu", "LSTM+bi_deep_both", "Embedding", "Concatenate"]
)
def test_model_export_and_the_cli_are_the_same_exits(case: str, tmp_path: Path) -> None:
    """``model.export("m.onnx")``, ``model.export(dir)`` and ``python -m framework export m.h5 --format
    numpy|onnx`` (from a saved checkpoint) give ``predict``'s outputs too."""
    from framework.cli import main

    model, x = _model(case)
    expected = model.predict(x)
    model.export(tmp_path / "m.onnx")
    model.export(tmp_path / "deploy")
    model.save(tmp_path / "m.h5")
    assert main(["export", str(tmp_path / "m.h5"), "--format", "numpy", str(tmp_path / "cli")]) == 0
    assert main(["export", str(tmp_path / "m.h5"), "--format", "onnx", str(tmp_path / "cli.onnx")]) == 0
    for folder in ("deploy", "cli"):
        got = _import_predict(tmp_path / folder).predict(x)
        _assert_same(got, expected, TOL["float64"], what=folder)
    for file in ("m.onnx", "cli.onnx"):
        loaded = framework.onnx.load(tmp_path / file) if case != "LSTM+bi_deep_both" else None
        if loaded is not None:
            _assert_same(loaded.predict(x), expected, TOL["float64"], what=file)


# -- nested models, shared layers, tied weights --------------------------------------------------


def _nested_sequential() -> tuple[Any, Any]:
    L = layers
    inner = Sequential([L.Linear(5, 4, activation="tanh"), L.BatchNorm(4), L.Dropout(0.2)], name="block")
    model = Sequential(
        [inner, L.Linear(4, 6, activation="relu"), Sequential([L.LayerNorm(6), L.Linear(6, 3)])]
    )
    return model, np.random.default_rng(0).standard_normal((4, 5))


def _nested_functional() -> tuple[Any, Any]:
    L = layers
    a, b = Input((5,), name="a"), Input((2, 5), name="b")
    block = Sequential([L.Linear(5, 5, activation="gelu"), L.BatchNorm(5)], name="block")
    h = L.Add()([block(a), L.Flatten()(L.AvgPool1d(2)(L.Permute([2, 1])(b)))])
    model = Model([a, b], [L.Linear(5, 2, name="head")(h), L.Softmax()(h)])
    rng = np.random.default_rng(1)
    return model, [rng.standard_normal((4, 5)), rng.standard_normal((4, 2, 5))]


def _nested_multi_output() -> tuple[Any, Any]:
    """A functional model of two inputs and two outputs called inside another one."""
    L = layers
    a, b = Input((4,)), Input((4,))
    inner = Model([a, b], [L.Add()([a, b]), L.Subtract()([L.Linear(4, 4)(a), b])], name="inner")
    p, q = Input((4,), name="p"), Input((4,), name="q")
    u, v = inner([p, q])
    model = Model([p, q], [L.Multiply()([u, v]), L.Linear(4, 2, name="head")(v)])
    rng = np.random.default_rng(6)
    return model, [rng.standard_normal((3, 4)), rng.standard_normal((3, 4))]


def _frozen_layers() -> tuple[Any, Any]:
    """A frozen BatchNorm (Keras: it normalises with its running statistics in training too) and a
    frozen nested block: the flags must come back, or training-mode outputs differ."""
    L = layers
    block = Sequential([L.Linear(5, 5), L.BatchNorm(5)], name="block")
    frozen_norm = L.BatchNorm(4)
    model = Sequential([block, L.Linear(5, 4, activation="tanh"), frozen_norm, L.Linear(4, 2)])
    model.predict(np.zeros((2, 5)))
    block.trainable = False
    frozen_norm.trainable = False
    return model, np.random.default_rng(7).standard_normal((4, 5))


def _shared_layer() -> tuple[Any, Any]:
    L = layers
    a, b = Input((5,)), Input((5,))
    shared = L.Linear(5, 4, activation="elu", name="shared")
    norm = L.BatchNorm(4, name="norm")
    model = Model(
        [a, b], L.Concatenate()([norm(shared(a)), norm(shared(b)), L.Subtract()([shared(a), shared(b)])])
    )
    rng = np.random.default_rng(2)
    return model, [rng.standard_normal((4, 5)), rng.standard_normal((4, 5))]


def _tied_weights() -> tuple[Any, Any]:
    L = layers
    tokens = Input((4,), name="tokens")
    embed = L.Embedding(20, 6, name="embed")
    head = L.Linear(6, 20, bias=False, name="head")
    head.weight = embed.weight  # one Parameter, two layers
    model = Model(tokens, head(L.LayerNorm(6)(embed(tokens))))
    return model, np.random.default_rng(3).integers(0, 20, size=(3, 4))


def _conv_stack() -> tuple[Any, Any]:
    L = layers
    model = Sequential(
        [
            L.Conv2d(2, 4, 3, padding=1, activation="relu"),
            L.BatchNorm(4, momentum=None),
            L.MaxPool2d(2),
            L.ConvTranspose2d(4, 2, 2, stride=2),
            L.ZeroPadding2d(1),
            L.Flatten(),
            L.Dropout(0.3),
            L.Linear(2 * 8 * 8, 3, activation="log_softmax"),
        ]
    )
    return model, np.random.default_rng(4).standard_normal((3, 2, 6, 6))


def _recurrent_stack() -> tuple[Any, Any]:
    L = layers
    model = Sequential(
        [
            L.Embedding(12, 5),
            L.GRU(5, 4, batch_first=True, output="sequence", bidirectional=True),
            L.LSTM(8, 3, batch_first=True, output="last", num_layers=2),
            L.Linear(3, 2),
        ]
    )
    return model, np.random.default_rng(5).integers(0, 12, size=(3, 6))


STRUCTURES: dict[str, Callable[[], tuple[Any, Any]]] = {
    "nested_sequential": _nested_sequential,
    "nested_functional": _nested_functional,
    "nested_multi_output": _nested_multi_output,
    "frozen_layers": _frozen_layers,
    "shared_layer": _shared_layer,
    "tied_weights": _tied_weights,
    "conv_stack": _conv_stack,
    "recurrent_stack": _recurrent_stack,
}


@cache
def _structure_made(key: str) -> tuple[Any, Any]:
    framework.set_seed(0)
    model, x = STRUCTURES[key]()
    model.predict(x)
    _perturb(model)
    model.compile(optimizer="adam", loss="mse")
    _train(model, x)
    return model, x


def _structure(key: str) -> tuple[Any, Any]:
    model, x = _structure_made(key)
    return copy.deepcopy(model), x


def _structure_fresh(key: str) -> tuple[Any, Any]:
    framework.set_seed(3)
    model, x = STRUCTURES[key]()
    model.predict(x)
    return model, x


def _tied_groups(model: Any) -> list[Any]:
    from framework.models.serialize import tied_parameters

    return tied_parameters(model)


@requires_h5py
@pytest.mark.parametrize("key", sorted(STRUCTURES))
def test_structures_through_hdf5(key: str, tmp_path: Path) -> None:
    model, x = _structure(key)
    model.save(tmp_path / "m.h5")
    loaded = load_model(tmp_path / "m.h5")
    restore_rng_state(loaded)
    _assert_same_state(loaded, model, "load_model")
    assert _tied_groups(loaded) == _tied_groups(model)
    _assert_same(loaded.predict(x), model.predict(x), what="predict")
    _assert_same(_train_out(loaded, x), _train_out(model, x), what="training-mode output")
    _train(model, x, steps=1, seed=40)
    _train(loaded, x, steps=1, seed=40)
    _assert_same_state(loaded, model, "after one more training step")
    fresh, _ = _structure_fresh(key)
    model.save_weights(tmp_path / "w.h5")
    fresh.load_weights(tmp_path / "w.h5")
    _assert_same_state(fresh, model, "load_weights", flags=False)


@pytest.mark.parametrize("key", sorted(STRUCTURES))
def test_structures_through_state_dicts(key: str, tmp_path: Path) -> None:
    """Each carrier in each naming into a freshly built structure: outputs, state dicts, tied groups."""
    model, x = _structure(key)
    expected_out = model.predict(x)
    expected = model.state_dict(format="torch")
    not_run = []
    for carrier in ("dict", "npz", "safetensors"):
        if carrier == "safetensors" and not _safetensors_installed():
            not_run.append(carrier)
            continue
        for names in ("native", "torch"):
            what = f"{carrier} in the {names} naming"
            fresh, _ = _structure_fresh(key)
            _carry(model, fresh, names, carrier, tmp_path)
            _assert_same(fresh.predict(x), expected_out, what=f"{what}: predict")
            got = fresh.state_dict(format="torch")
            assert sorted(got) == sorted(expected), what
            for k in expected:
                if names == "native" and k.endswith("num_batches_tracked"):
                    continue
                np.testing.assert_array_equal(
                    np.asarray(got[k]), np.asarray(expected[k]), err_msg=f"{what}: {k}"
                )
            assert _tied_groups(fresh) == _tied_groups(model), what
    if not_run:
        pytest.skip("needs safetensors: pip install -e '.[safetensors]' (the other carriers passed)")


@requires_onnx
@requires_onnxruntime
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("key", sorted(STRUCTURES))
def test_structures_through_onnx_and_numpy(key: str, dtype: str, tmp_path: Path) -> None:
    old = framework.get_default_dtype()
    framework.set_default_dtype(dtype)
    try:
        model, x = _structure(key) if dtype == "float64" else _structure_fresh(key)
    finally:
        framework.set_default_dtype(old)
    x = [np.asarray(v) if np.asarray(v).dtype.kind == "i" else np.asarray(v, dtype) for v in _leaves(x)]
    x = x if len(x) > 1 else x[0]
    expected = model.predict(x)
    framework.onnx.export(model, tmp_path / "m.onnx")
    got = _run_onnx(tmp_path / "m.onnx", x)
    if got is not None:
        _assert_same(got, _float32_attributes(model).predict(x), TOL[dtype], what="onnxruntime")
    try:
        loaded = framework.onnx.load(tmp_path / "m.onnx")
    except ExportError as exc:
        assert "m.onnx" in str(exc)
    else:
        _assert_same(loaded.predict(x), _float32_attributes(model).predict(x), TOL[dtype], what="onnx.load")
    framework.export.numpy_predictor(model, tmp_path / "deploy")
    _assert_same(_import_predict(tmp_path / "deploy").predict(x), expected, TOL[dtype], what="predict.py")
