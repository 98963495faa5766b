"""Round trips must be exact and failures must be safe.

Every registered layer with non-default constructor arguments: config round
trip, HDF5 save/load reproducing eval predictions bitwise, and training resumed
from a checkpoint equal to uninterrupted training. Then shared/tied/nested
models, metrics' state methods, and failure safety (failed saves, hand-edited
HDF5 files, bad safetensors / state dicts).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import opened_paths

import framework
from framework import FrameworkError, Input, Model, Sequential, layers, load_model
from framework.registry.manager import REGISTRY

h5py = pytest.importorskip("h5py")

_ADJ = (np.random.default_rng(1).random((5, 5)) < 0.4).astype(np.float64)
_IDX = np.random.default_rng(0).integers(0, 10, size=(3, 5))

# name -> list of (kwargs, input shape (or list of shapes), x override, prepare)
NON_DEFAULT: dict[str, list[tuple[dict[str, Any], Any, Any, Any]]] = {
    "Activation": [({"activation": {"class_name": "elu", "config": {"alpha": 0.3}}}, (3, 4), None, None)],
    "AdaptiveAvgPool1d": [({"output_size": 4}, (2, 3, 7), None, None)],
    "AdaptiveAvgPool2d": [({"output_size": [2, 3]}, (2, 2, 7, 5), None, None)],
    "AdaptiveMaxPool2d": [({"output_size": [3, 1]}, (2, 2, 7, 5), None, None)],
    "Add": [({}, [(3, 4), (3, 4)], None, None)],
    "Average": [({}, [(3, 4), (3, 4)], None, None)],
    "AvgPool1d": [
        (
            {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False},
            (2, 2, 8),
            None,
            None,
        )
    ],
    "AvgPool2d": [
        (
            {
                "kernel_size": [3, 2],
                "stride": [2, 1],
                "padding": [1, 0],
                "ceil_mode": True,
                "count_include_pad": False,
            },
            (2, 2, 6, 5),
            None,
            None,
        )
    ],
    "BatchNorm": [
        ({"num_features": 3, "eps": 1e-3, "momentum": 0.3}, (4, 3), None, None),
        ({"num_features": 2, "momentum": None}, (3, 2, 2, 2), None, None),
        ({"num_features": 3, "affine": False}, (4, 3), None, None),
        ({"num_features": 3, "track_running_stats": False}, (4, 3), None, None),
    ],
    "SyncBatchNorm": [
        ({"num_features": 3, "eps": 1e-2, "momentum": 0.5, "affine": False}, (4, 3), None, None)
    ],
    "Concatenate": [({"axis": -1}, [(3, 4), (3, 2)], None, None)],
    "Conv1d": [
        (
            {
                "in_channels": 2,
                "out_channels": 4,
                "kernel_size": 3,
                "stride": 2,
                "padding": 2,
                "dilation": 2,
                "groups": 2,
                "bias": False,
                "activation": "elu",
                "weight_init": "xavier_normal",
            },
            (2, 2, 9),
            None,
            None,
        ),
        (
            {
                "in_channels": 2,
                "out_channels": 2,
                "kernel_size": 3,
                "padding": "same",
                "bias_init": {"class_name": "Constant", "config": {"value": 0.25}},
            },
            (2, 2, 7),
            None,
            None,
        ),
    ],
    "Conv2d": [
        (
            {
                "in_channels": 2,
                "out_channels": 4,
                "kernel_size": [3, 2],
                "stride": [2, 1],
                "padding": [1, 2],
                "activation": {"class_name": "leaky_relu", "config": {"negative_slope": 0.2}},
                "dilation": [1, 2],
                "groups": 2,
                "bias_init": {"class_name": "Constant", "config": {"value": 0.1}},
            },
            (2, 2, 6, 6),
            None,
            None,
        ),
        (
            {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": "same", "bias": False},
            (2, 2, 5, 5),
            None,
            None,
        ),
    ],
    "ConvTranspose2d": [
        (
            {
                "in_channels": 2,
                "out_channels": 4,
                "kernel_size": 3,
                "stride": 2,
                "padding": 1,
                "output_padding": 1,
                "groups": 2,
                "activation": "tanh",
                "dilation": 1,
            },
            (2, 2, 3, 3),
            None,
            None,
        ),
        (
            {
                "in_channels": 2,
                "out_channels": 3,
                "kernel_size": [2, 3],
                "stride": [1, 2],
                "dilation": [2, 1],
                "bias": False,
            },
            (2, 2, 3, 3),
            None,
            None,
        ),
    ],
    "Dropout": [({"p": 0.3, "seed": 5}, (4, 5), None, None)],
    "ELU": [({"alpha": 0.4}, (3, 4), None, None)],
    "Embedding": [
        (
            {
                "num_embeddings": 10,
                "embedding_dim": 4,
                "padding_idx": 2,
                "weight_init": {"class_name": "Uniform", "config": {"low": -1.0, "high": 1.0}},
            },
            (3, 5),
            _IDX,
            None,
        )
    ],
    "Flatten": [({"start_dim": 2, "end_dim": 3}, (2, 2, 3, 3, 2), None, None)],
    "GCNConv": [
        (
            {
                "in_features": 4,
                "out_features": 3,
                "bias": False,
                "activation": "relu",
                "add_self_loops": False,
                "normalize": False,
            },
            (5, 4),
            None,
            lambda lay: lay.set_graph(_ADJ),
        )
    ],
    "GELU": [({"approximate": "tanh"}, (3, 4), None, None)],
    "GlobalAvgPool2d": [({"name": "gap_custom"}, (2, 3, 4, 4), None, None)],
    "GroupNorm": [
        ({"num_groups": 2, "num_channels": 4, "eps": 1e-3, "affine": False}, (2, 4, 3, 3), None, None)
    ],
    "GRU": [
        (
            {
                "input_size": 3,
                "hidden_size": 4,
                "num_layers": 2,
                "bias": False,
                "batch_first": True,
                "dropout": 0.0,
                "bidirectional": True,
                "output": "sequence",
            },
            (2, 5, 3),
            None,
            None,
        )
    ],
    "GRUCell": [({"input_size": 4, "hidden_size": 5, "bias": False}, (3, 4), None, None)],
    "Identity": [({"name": "ident_custom"}, (3, 4), None, None)],
    "InstanceNorm1d": [
        (
            {"num_features": 3, "eps": 1e-3, "momentum": 0.2, "affine": True, "track_running_stats": True},
            (2, 3, 5),
            None,
            None,
        )
    ],
    "InstanceNorm2d": [
        (
            {"num_features": 3, "eps": 1e-2, "momentum": None, "affine": True, "track_running_stats": True},
            (2, 3, 4, 4),
            None,
            None,
        )
    ],
    "LayerNorm": [({"normalized_shape": [4, 5], "eps": 1e-3, "bias": False}, (2, 4, 5), None, None)],
    "LeakyReLU": [({"negative_slope": 0.25}, (3, 4), None, None)],
    "Linear": [
        (
            {
                "input_size": 3,
                "output_size": 4,
                "activation": {"class_name": "softplus", "config": {"beta": 2.0, "threshold": 3.0}},
                "bias": True,
                "weight_init": {"class_name": "Orthogonal", "config": {"gain": 2.0}},
                "bias_init": {"class_name": "Constant", "config": {"value": 0.5}},
            },
            (4, 3),
            None,
            None,
        ),
        ({"output_size": 2, "bias": False, "activation": "gelu"}, (2, 3, 5), None, None),
    ],
    "LogSoftmax": [({"dim": 1}, (2, 3, 4), None, None)],
    "LSTM": [
        (
            {"input_size": 3, "hidden_size": 4, "num_layers": 2, "bidirectional": True, "output": "last"},
            (5, 2, 3),
            None,
            None,
        ),
    ],
    "LSTMCell": [({"input_size": 4, "hidden_size": 5, "bias": False}, (3, 4), None, None)],
    "Maximum": [({}, [(3, 4), (3, 4)], None, None)],
    "MaxPool1d": [({"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}, (2, 2, 8), None, None)],
    "MaxPool2d": [
        (
            {"kernel_size": [3, 2], "stride": [1, 2], "padding": [1, 1], "ceil_mode": True},
            (2, 2, 5, 5),
            None,
            None,
        )
    ],
    "Minimum": [({}, [(3, 4), (3, 4)], None, None)],
    "MultiheadAttention": [
        (
            {"embed_dim": 4, "num_heads": 2, "bias": False, "kdim": 3, "vdim": 2, "batch_first": False},
            [(3, 2, 4), (5, 2, 3), (5, 2, 2)],
            None,
            None,
        ),
    ],
    "Multiply": [({}, [(3, 4), (3, 4)], None, None)],
    "Permute": [({"dims": [3, 1, 2]}, (2, 2, 3, 4), None, None)],
    "PositionalEncoding": [
        ({"d_model": 6, "max_len": 12, "dropout": 0.0, "batch_first": False}, (5, 2, 6), None, None)
    ],
    "ReLU": [({"name": "relu_custom"}, (3, 4), None, None)],
    "Reshape": [({"target_shape": [2, -1, 2]}, (2, 4, 3), None, None)],
    "RMSNorm": [
        ({"normalized_shape": [2, 5], "eps": 1e-2, "elementwise_affine": False}, (3, 2, 5), None, None),
        ({"normalized_shape": 5, "eps": 1e-3}, (3, 2, 5), None, None),
    ],
    "RNN": [
        (
            {
                "input_size": 3,
                "hidden_size": 4,
                "num_layers": 2,
                "nonlinearity": "relu",
                "bias": False,
                "batch_first": True,
                "bidirectional": True,
                "output": "sequence",
            },
            (2, 5, 3),
            None,
            None,
        ),
    ],
    "RNNCell": [
        ({"input_size": 4, "hidden_size": 5, "bias": False, "nonlinearity": "relu"}, (3, 4), None, None)
    ],
    "ScaledDotProductAttention": [
        ({"is_causal": True, "scale": 0.7}, [(2, 3, 4), (2, 5, 4), (2, 5, 3)], None, None)
    ],
    "Sigmoid": [({"name": "sig_custom"}, (3, 4), None, None)],
    "SiLU": [({}, (3, 4), None, None)],
    "Softmax": [({"dim": 1}, (2, 3, 4), None, None)],
    "Softplus": [({"beta": 2.0, "threshold": 1.0}, (3, 4), None, None)],
    "Subtract": [({}, [(3, 4), (3, 4)], None, None)],
    "Tanh": [({}, (3, 4), None, None)],
    "TransformerEncoderLayer": [
        (
            {
                "d_model": 4,
                "nhead": 2,
                "dim_feedforward": 6,
                "dropout": 0.0,
                "activation": "gelu",
                "layer_norm_eps": 1e-3,
                "batch_first": False,
                "norm_first": True,
                "bias": False,
            },
            (3, 2, 4),
            None,
            None,
        )
    ],
    "TransformerDecoderLayer": [
        (
            {
                "d_model": 4,
                "nhead": 1,
                "dim_feedforward": 5,
                "dropout": 0.0,
                "activation": "gelu",
                "layer_norm_eps": 1e-2,
                "norm_first": True,
                "bias": False,
            },
            [(2, 3, 4), (2, 4, 4)],
            None,
            None,
        )
    ],
    "TransformerEncoder": [
        (
            {
                "encoder_layer": {
                    "class_name": "TransformerEncoderLayer",
                    "config": {
                        "d_model": 4,
                        "nhead": 2,
                        "dim_feedforward": 6,
                        "dropout": 0.0,
                        "norm_first": True,
                    },
                },
                "num_layers": 2,
                "norm": {"class_name": "LayerNorm", "config": {"normalized_shape": 4, "eps": 1e-3}},
            },
            (2, 3, 4),
            None,
            None,
        )
    ],
    "TransformerDecoder": [
        (
            {
                "decoder_layer": {
                    "class_name": "TransformerDecoderLayer",
                    "config": {"d_model": 4, "nhead": 2, "dim_feedforward": 6, "dropout": 0.0},
                },
                "num_layers": 2,
                "norm": {"class_name": "LayerNorm", "config": {"normalized_shape": 4, "eps": 1e-2}},
            },
            [(2, 3, 4), (2, 4, 4)],
            None,
            None,
        )
    ],
    "UpSampling2d": [({"scale_factor": [2, 3], "name": "up_custom"}, (2, 2, 3, 2), None, None)],
    "ZeroPadding2d": [({"padding": [1, 2]}, (2, 2, 3, 3), None, None)],
}


def _cases() -> list[Any]:
    out = []
    # the built-in plugins' layers (another test module may have registered a test-only layer)
    builtin = {e.name for e in REGISTRY.entries("layers") if e.obj.__module__.startswith("plugins.")}
    names = sorted(builtin | set(NON_DEFAULT), key=str.lower)
    for name in names:
        for i, spec in enumerate(NON_DEFAULT.get(name, [None])):
            out.append(pytest.param(name, spec, id=f"{name}-{i}"))
    return out


def _input(shape: Any, x: Any, seed: int = 0) -> Any:
    if x is not None:
        return x
    rng = np.random.default_rng(seed)
    if isinstance(shape, list):
        return [rng.standard_normal(s) for s in shape]
    return rng.standard_normal(shape)


def _model_of(name: str, spec: Any) -> tuple[Model, Any]:
    kwargs, shape, x, prepare = spec
    layer = layers.get(name, **kwargs)
    if prepare is not None:
        prepare(layer)
    if isinstance(shape, list):
        inputs = [Input(tuple(s[1:])) for s in shape]
        model = Model(inputs, layer(inputs))
    else:
        model = Sequential([layer], input_shape=tuple(shape[1:]))
    return model, _input(shape, x)


def _flat(out: Any) -> list[np.ndarray]:
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in _flat(o)]
    return [np.asarray(out)]


def _bitwise(a: Any, b: Any) -> bool:
    fa, fb = _flat(a), _flat(b)
    return len(fa) == len(fb) and all(
        u.dtype == v.dtype and u.shape == v.shape and np.array_equal(u, v, equal_nan=True)
        for u, v in zip(fa, fb)
    )


def _json(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


@pytest.mark.parametrize(("name", "spec"), _cases())
def test_layer_config_round_trip_with_non_default_arguments(name: str, spec: Any) -> None:
    if spec is None:
        pytest.fail(f"registered layer {name!r} has no NON_DEFAULT entry")
    kwargs = spec[0]
    layer = layers.get(name, **kwargs)
    cfg = layer.get_config()
    cfg_json = _json(cfg)
    for key, _value in kwargs.items():
        if key == "name":
            continue
        assert key in cfg or key in ("dim",), f"{name}.get_config() forgets {key}: {cfg}"
    rebuilt = type(layer).from_config(cfg_json)
    assert _json(rebuilt.get_config()) == cfg_json
    rebuilt2 = layers.get(name, **{k: v for k, v in cfg_json.items()})
    assert _json(rebuilt2.get_config()) == cfg_json
    if "name" in kwargs:
        assert rebuilt.name == kwargs["name"]


@pytest.mark.parametrize(("name", "spec"), _cases())
def test_layer_save_load_predicts_bitwise(name: str, spec: Any, tmp_path: Path) -> None:
    if spec is None:
        pytest.fail(f"registered layer {name!r} has no NON_DEFAULT entry")
    framework.set_seed(11)
    model, x = _model_of(name, spec)
    # training-mode calls so running statistics move off their initial values
    for _ in range(2):
        model(x, training=True)
    expected = model(x, training=False)
    cfg = _json(model.get_config())
    path = tmp_path / "m.h5"
    model.save(path)
    loaded = load_model(path)
    if spec[3] is not None:
        for child in loaded.layers:
            if type(child).__name__ == name:
                spec[3](child)
    assert _json(loaded.get_config()) == cfg
    got = loaded(x, training=False)
    assert _bitwise(expected, got), f"{name}: predictions differ after load"
    sd0, sd1 = model.state_dict(), loaded.state_dict()
    assert sorted(sd0) == sorted(sd1)
    for k in sd0:
        assert np.asarray(sd0[k]).dtype == np.asarray(sd1[k]).dtype and np.array_equal(sd0[k], sd1[k]), k


def _target_like(out: Any) -> Any:
    flat = out
    if isinstance(flat, (list, tuple)):
        return [np.full_like(np.asarray(o), 0.3) for o in flat]
    return np.full_like(np.asarray(flat), 0.3)


def _weights(model: Model) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in model.state_dict().items()}


@pytest.fixture
def float64() -> Any:
    old = framework.get_default_dtype()
    framework.set_default_dtype("float64")
    yield
    framework.set_default_dtype(old)


def _fit(model: Model, x: Any, y: Any, epochs: int, initial_epoch: int = 0) -> None:
    n = len(x[0]) if isinstance(x, list) else len(x)
    model.fit(x, y, epochs=epochs, initial_epoch=initial_epoch, batch_size=n, shuffle=False, verbose=0)


@pytest.mark.parametrize(("name", "spec"), _cases())
def test_layer_training_resumed_from_checkpoint_equals_uninterrupted(
    name: str, spec: Any, tmp_path: Path, float64: Any
) -> None:
    if spec is None:
        pytest.fail(f"registered layer {name!r} has no NON_DEFAULT entry")
    _kwargs, shape, _xo, prepare = spec
    if (isinstance(shape, list) and len({s[0] for s in shape}) > 1) or name in ("LSTM", "PositionalEncoding"):
        pytest.skip("fit batches axis 0 (time-major inputs); covered by the save/load test")
    framework.set_seed(5)
    a, x = _model_of(name, spec)
    out = a(x, training=False)
    if isinstance(out, tuple):
        pytest.skip("a tuple output (h, c) cannot be a fit target")
    y = _target_like(out)
    opt = {"class_name": "adam", "config": {"learning_rate": 0.05, "weight_decay": 0.01, "amsgrad": True}}
    a.compile(optimizer=framework.optimizers.get(opt), loss="mse")
    framework.set_seed(5)
    b, _ = _model_of(name, spec)
    b.set_weights(a.get_weights())
    b.compile(optimizer=framework.optimizers.get(opt), loss="mse")
    framework.set_seed(99)
    _fit(a, x, y, 4)
    framework.set_seed(99)
    _fit(b, x, y, 2)
    path = tmp_path / "half.h5"
    b.save(path)
    c = load_model(path)
    if prepare is not None:
        for child in c.layers:
            if type(child).__name__ == name:
                prepare(child)
    from framework.saving.checkpoint import restore_rng_state

    restore_rng_state(c)
    _fit(c, x, y, 4, initial_epoch=c.epoch)
    wa, wc = _weights(a), _weights(c)
    assert sorted(wa) == sorted(wc)
    for k in wa:
        assert wa[k].dtype == wc[k].dtype == np.float64 or wa[k].dtype.kind != "f", (
            k,
            wa[k].dtype,
            wc[k].dtype,
        )
        assert np.allclose(wa[k], wc[k], rtol=0, atol=1e-12), f"{name}: {k} diverges after resume"


#: (layer name, id of its spec) -> the source model of the weights-file round trips and its input
_SOURCES: dict[tuple[str, int], tuple[Model, Any]] = {}


def _weights_source(name: str, spec: Any) -> tuple[Model, Any]:
    """A copy of the source model (trained, every float array off a fresh model's) and of its input,
    built once per spec."""
    key = (name, id(spec))
    if key not in _SOURCES:
        framework.set_seed(3)
        src, x = _model_of(name, spec)
        for _ in range(2):
            src(x, training=True)
        # make every array distinct from a fresh model's (buffers too)
        for arr in src.state_dict().values():
            if isinstance(arr, np.ndarray) and arr.dtype.kind == "f":
                arr += 0.125
        _SOURCES[key] = (src, x)
    return copy.deepcopy(_SOURCES[key])


@pytest.mark.parametrize("fmt", ["safetensors", "npz", "h5", "torch-dict", "native-dict"])
@pytest.mark.parametrize(("name", "spec"), _cases())
def test_layer_weights_file_round_trip_is_bitwise(name: str, spec: Any, fmt: str, tmp_path: Path) -> None:
    if spec is None:
        pytest.fail(f"registered layer {name!r} has no NON_DEFAULT entry")
    if fmt == "safetensors":
        pytest.importorskip("safetensors")
    src, x = _weights_source(name, spec)
    framework.set_seed(4)
    dst, _ = _model_of(name, spec)
    if fmt in ("safetensors", "npz", "h5"):
        path = tmp_path / f"w.{fmt}"
        src.save_weights(path)
        dst.load_weights(path)
    else:
        state = src.state_dict(format="torch") if fmt == "torch-dict" else src.state_dict()
        dst.load_state_dict({k: np.array(v) for k, v in state.items()})
    s0, s1 = src.state_dict(), dst.state_dict()
    for k in s0:
        assert np.array_equal(s0[k], s1[k]), f"{name} via {fmt}: {k} differs"
    if fmt != "native-dict":  # the native naming's lost count: test_native_naming_keeps_num_batches_tracked
        counts = [getattr(a, "num_batches_tracked", None) for a in src.modules()]
        assert counts == [getattr(a, "num_batches_tracked", None) for a in dst.modules()]
    assert _bitwise(src(x, training=False), dst(x, training=False))


# -- BUG: the native naming forgets BatchNorm's num_batches_tracked ----------------------------


def _cumulative_bn() -> Sequential:
    model = Sequential([layers.get("BatchNorm", num_features=3, momentum=None, name="bn")])
    model.build((None, 3))
    return model


@pytest.mark.parametrize("via", ["state_dict", "safetensors", "npz"])
def test_native_naming_keeps_num_batches_tracked(via: str, tmp_path: Path) -> None:
    """momentum=None averages over num_batches_tracked: a weights round trip that resets the count
    to 0 makes the next training step overwrite the running statistics (silently)."""
    if via == "safetensors":
        pytest.importorskip("safetensors")
    x = np.random.default_rng(0).standard_normal((8, 3))
    src = _cumulative_bn()
    for i in range(3):
        src(x + i, training=True)
    dst = _cumulative_bn()
    if via == "state_dict":
        # the native naming's dict holds the arrays themselves (no count, documented in the
        # interchange guide); PyTorch's naming carries the count
        dst.load_state_dict(src.state_dict(format="torch"))
    else:
        path = tmp_path / f"w.{via}"
        src.save_weights(path, names="native")
        dst.load_weights(path)
    assert dst.layers[0].num_batches_tracked == src.layers[0].num_batches_tracked == 3
    src(x + 5, training=True)
    dst(x + 5, training=True)
    assert np.array_equal(src.layers[0].running_mean.data, dst.layers[0].running_mean.data)


# -- BUG: a layer name with '/' (or NUL) saves a checkpoint that cannot be loaded ---------------


@pytest.mark.parametrize("name", ["enc/dense", "/", "a\x00b"])
@pytest.mark.parametrize("kind", ["save", "save_weights"])
def test_layer_name_with_hdf5_separator_round_trips_or_is_refused(
    name: str, kind: str, tmp_path: Path
) -> None:
    x = np.ones((2, 3), np.float32)
    try:
        model = Sequential([layers.get("Linear", input_size=3, output_size=2, name=name)])
        model.build((None, 3))
    except FrameworkError:
        return  # refused up front: fine
    path = tmp_path / "m.h5"
    previous = Sequential([layers.get("Linear", input_size=3, output_size=2, name="old")])
    previous.build((None, 3))
    previous.save(path)
    before = path.read_bytes()
    try:
        getattr(model, kind)(path)
    except FrameworkError:
        assert path.read_bytes() == before  # refused at save: the old file is intact
        return
    except Exception as exc:
        pytest.fail(f"save of a layer named {name!r} raised a bare {type(exc).__name__}: {exc}")
    # written: it must load back
    if kind == "save":
        loaded = load_model(path)
    else:
        loaded = Sequential([layers.get("Linear", input_size=3, output_size=2, name=name)])
        loaded.build((None, 3))
        loaded.load_weights(path)
    assert np.array_equal(loaded.predict(x), model.predict(x))


# -- hand-edited HDF5 files ----------------------------------------------------------------------


def _small_model() -> Sequential:
    framework.set_seed(0)
    model = Sequential(
        [
            layers.get("Linear", input_size=3, output_size=4, name="lin"),
            layers.get("BatchNorm", num_features=4, name="bn"),
            layers.get("Linear", input_size=4, output_size=2, name="out"),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


_X = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def saved_small_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The checkpoint of ``_small_model`` trained two epochs, saved once (each test edits its own copy)."""
    model = _small_model()
    model.fit(_X, np.zeros((8, 2), np.float32), epochs=2, batch_size=4, shuffle=False, verbose=0)
    path = tmp_path_factory.mktemp("small") / "small.h5"
    model.save(path)
    return path.read_bytes()


@pytest.fixture
def saved_small(tmp_path: Path, saved_small_bytes: bytes) -> Path:
    path = tmp_path / "small.h5"
    path.write_bytes(saved_small_bytes)
    return path


def test_missing_optimizer_iterations_is_refused_not_reset_to_zero(saved_small: Path, tmp_path: Path) -> None:
    """Adam's slots without its step count: loading silently restarts the bias correction at step 1,
    so training after loading differs from training before saving."""
    reference = load_model(saved_small)
    assert reference.optimizer.state_dict()["iterations"] == 4
    with h5py.File(saved_small, "a") as handle:
        del handle["optimizer"].attrs["iterations"]
    try:
        edited = load_model(saved_small)
    except FrameworkError:
        return
    assert edited.optimizer.state_dict()["iterations"] == 4, (
        "a checkpoint whose /optimizer lost its 'iterations' attribute loads with step count 0 and "
        "Adam moments from step 4"
    )


def _replace_dataset(handle: Any, path: str, data: Any, **kw: Any) -> None:
    attrs = dict(handle[path].attrs)
    del handle[path]
    ds = handle.create_dataset(path, data=data, **kw)
    for k, v in attrs.items():
        ds.attrs[k] = v


_W = "weights/lin/weight"
_WVAL = np.zeros((4, 3), np.float32)

MUTATIONS: dict[str, Any] = {
    "transposed weight": lambda h: _replace_dataset(h, _W, _WVAL.T.copy()),
    "scalar weight": lambda h: _replace_dataset(h, _W, np.float32(1)),
    "int weight": lambda h: _replace_dataset(h, _W, _WVAL.astype(np.int32)),
    "complex weight": lambda h: _replace_dataset(h, _W, _WVAL.astype(np.complex64)),
    "string weight": lambda h: _replace_dataset(h, _W, np.full((4, 3), b"ab")),
    "compound weight": lambda h: _replace_dataset(h, _W, np.zeros((4, 3), dtype=[("a", "f4")])),
    "missing weight": lambda h: h.__delitem__(_W),
    "missing running_var": lambda h: h.__delitem__("weights/bn/running_var"),
    "extra dataset": lambda h: h["weights/lin"].create_dataset("extra", data=np.zeros(3, np.float32)),
    "extra layer group": lambda h: h["weights"].create_group("ghost").create_dataset("w", data=np.zeros(1)),
    "negative running_var": lambda h: _replace_dataset(h, "weights/bn/running_var", -np.ones(4, np.float32)),
    "wrong slot shape": lambda h: _replace_dataset(
        h, "optimizer/slots/lin/weight/exp_avg", np.zeros((3, 4), np.float32)
    ),
    "config not JSON": lambda h: h["model"].attrs.__setitem__("config", "{nope"),
    "config deep nesting": lambda h: h["model"].attrs.__setitem__("config", "[" * 100000 + "]" * 100000),
    "config is opaque pickle": lambda h: h["model"].attrs.__setitem__(
        "config", np.void(b"\x80\x04\x95cos\nsystem\n")
    ),
    "trainable attr string": lambda h: h[_W].attrs.__setitem__("trainable", "0"),
    "trainable attr 2": lambda h: h[_W].attrs.__setitem__("trainable", np.int64(2)),
    "num_batches_tracked negative": lambda h: h["weights/bn/running_mean"].attrs.__setitem__(
        "num_batches_tracked", np.int64(-1)
    ),
    "format_version 2": lambda h: h.attrs.__setitem__("format_version", 2),
    "contents weights": lambda h: h.attrs.__setitem__("contents", "weights"),
    "unknown layer class": lambda h: h["model"].attrs.__setitem__(
        "config", h["model"].attrs["config"].replace('"BatchNorm"', '"EvilNorm"')
    ),
    "soft link weight": lambda h: (
        h.__delitem__(_W),
        h.__setitem__(_W, h5py.SoftLink("/weights/out/weight")),
    ),
    "layer group is a dataset": lambda h: (
        h["weights"].__delitem__("lin"),
        h["weights"].create_dataset("lin", data=[1.0]),
    ),
    "hard link cycle": lambda h: h["weights/lin"].__setitem__("loop", h["weights"]),
    "iterations negative": lambda h: h["optimizer"].attrs.__setitem__("iterations", -3),
    "training state not JSON": lambda h: h["training"].attrs.__setitem__("state", "{"),
    "layers not a list": lambda h: h["model"].attrs.__setitem__(
        "config", json.dumps({**json.loads(h["model"].attrs["config"]), "config": {"layers": {"a": 1}}})
    ),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_hand_edited_checkpoint_raises_a_framework_error(mutation: str, saved_small: Path) -> None:
    with h5py.File(saved_small, "a") as handle:
        MUTATIONS[mutation](handle)
    with pytest.raises(FrameworkError) as info:
        load_model(saved_small)
    assert str(info.value)
    if mutation in _WEIGHT_LEVEL:
        target = _small_model()
        target.build((None, 3))
        before = [w.copy() for w in target.get_weights()]
        with pytest.raises(FrameworkError):
            target.load_weights(saved_small)
        assert all(np.array_equal(a, b) for a, b in zip(before, target.get_weights()))


_WEIGHT_LEVEL = {
    "transposed weight",
    "scalar weight",
    "int weight",
    "complex weight",
    "string weight",
    "compound weight",
    "missing weight",
    "missing running_var",
    "extra dataset",
    "negative running_var",
    "num_batches_tracked negative",
    "format_version 2",
    "soft link weight",
    "hard link cycle",
}


@pytest.mark.parametrize("kind", ["external link", "external storage", "virtual dataset"])
def test_checkpoint_pointing_at_another_file_never_opens_it(
    kind: str, saved_small: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["w"] = np.ones((4, 3), np.float32)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.ones((4, 3), np.float32).tobytes())
    with h5py.File(saved_small, "a") as handle:
        del handle[_W]
        if kind == "external link":
            handle[_W] = h5py.ExternalLink(str(other), "/w")
        elif kind == "external storage":
            handle.create_dataset(_W, shape=(4, 3), dtype="f4", external=[(str(raw), 0, 48)])
        else:
            layout = h5py.VirtualLayout(shape=(4, 3), dtype="f4")
            layout[:] = h5py.VirtualSource(str(other), "w", shape=(4, 3))
            handle.create_virtual_dataset(_W, layout)
    with opened_paths() as seen, pytest.raises(FrameworkError):
        load_model(saved_small)
    assert not any("other.h5" in p or "raw.bin" in p for p in seen), seen


# -- BUG: max_bytes does not bound memory: the rebuild allocates the config's shapes first ------

_ALLOC_SCRIPT = r"""
import json, resource, sys
import h5py, numpy as np
import framework
from framework import Sequential, load_model
from framework.layers import BatchNorm
path = sys.argv[1]
model = Sequential([BatchNorm(4, name="bn")]); model.build((None, 4)); model.save(path)
with h5py.File(path, "a") as handle:
    config = json.loads(handle["model"].attrs["config"])
    config["config"]["layers"][0]["config"]["num_features"] = 50_000_000
    config["config"]["input_shape"] = [None, 50_000_000]
    handle["model"].attrs["config"] = json.dumps(config)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_model(path, max_bytes=1_000_000)
    outcome = "loaded"
except framework.FrameworkError as exc:
    outcome = type(exc).__name__
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"outcome": outcome, "grown_mb": grown}))
"""


def test_max_bytes_bounds_memory_before_the_config_is_built(tmp_path: Path) -> None:
    """A 2 KB file whose config says BatchNorm(50_000_000) makes load_model(max_bytes=1 MB) fill
    hundreds of MB (ones for weight and running_var) before any size check; 100x that is an OOM."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", _ALLOC_SCRIPT, str(tmp_path / "bomb.h5")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["outcome"] == "CheckpointError"
    assert result["grown_mb"] < 100, (
        f"load_model(max_bytes=1e6) grew the process by {result['grown_mb']:.0f} MB"
    )


# -- failed saves keep the previous file -------------------------------------------------------


@pytest.mark.parametrize("suffix", ["h5", "safetensors", "npz", "model.h5"])
@pytest.mark.parametrize(
    "exc", [KeyboardInterrupt, MemoryError, lambda: OSError(28, "No space left on device")]
)
def test_interrupted_or_failed_save_leaves_the_previous_file(
    suffix: str, exc: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    if suffix == "safetensors":
        pytest.importorskip("safetensors")
    model = _small_model()
    model.fit(_X, np.zeros((8, 2), np.float32), epochs=1, verbose=0)
    path = tmp_path / f"ck.{suffix}"
    save = model.save if suffix == "model.h5" else model.save_weights
    save(path)
    before = path.read_bytes()
    for arr in model.state_dict().values():
        arr += 1.0
    import framework.saving.atomic as atomic

    # fail after the temporary file is complete, before it replaces the target (os.fsync)
    def failing_fsync(fd: int) -> None:
        raise exc()

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(BaseException) as info:
        save(path)
    if not isinstance(info.value, (KeyboardInterrupt, MemoryError)):
        assert isinstance(info.value, FrameworkError), type(info.value)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "a temporary file was left behind"
    # fail after the temporary file is complete, before it replaces the target (os.fsync)


def test_failure_half_way_through_an_hdf5_save_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: Any
) -> None:
    import framework.saving.writer as writer

    model = _small_model()
    model.build((None, 3))
    path = tmp_path / "ck.h5"
    model.save(path)
    before = path.read_bytes()
    real = writer._write_array
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, "_write_array", flaky)
    with pytest.raises(FrameworkError, match="disk is full"):
        model.save(path)
    assert path.read_bytes() == before
    assert load_model(path).get_config() == model.get_config()


# -- shared layers, tied weights, nested models, flags ------------------------------------------


def _structured_model() -> Model:
    framework.set_seed(2)
    inner = Sequential(
        [
            layers.get("Linear", input_size=5, output_size=5, name="a"),
            layers.get("Linear", input_size=5, output_size=5, name="b"),
        ],
        name="tower",
    )
    inner.layers[1].weight = inner.layers[0].weight  # tie inside the nested model
    left, right = Input((5,), name="left"), Input((5,), name="right")
    ta, tb = inner(left), inner(right)  # nested model shared
    head = layers.get("Linear", input_size=5, output_size=5, name="head")
    head.weight = inner.layers[0].weight  # tie across the nesting boundary
    norm = layers.get("BatchNorm", num_features=5, name="norm")
    norm.trainable = False
    merged = layers.get("Add", name="merge")([ta, tb])
    out1 = norm(head(merged))
    out2 = layers.get("Linear", input_size=5, output_size=1, name="score")(tb)
    return Model([left, right], [out1, out2], name="custom_outer")


def _check_structure(model: Model) -> None:
    tower = model.get_layer("tower")
    assert tower.layers[0].weight is tower.layers[1].weight is model.get_layer("head").weight
    assert model.get_layer("norm").trainable is False
    assert [n for n, _ in model.named_parameters()].count("tower.a.weight") == 1
    # one array, not two equal arrays
    tower.layers[0].weight.data[0, 0] = 42.0
    assert model.get_layer("head").weight.data[0, 0] == 42.0


@pytest.mark.parametrize("how", ["save", "from_config", "clone"])
def test_shared_tied_nested_frozen_structure_round_trips(how: str, tmp_path: Path, float64: Any) -> None:
    model = _structured_model()
    model.compile(optimizer="adam", loss=["mse", "mse"])
    rng = np.random.default_rng(0)
    x = [rng.standard_normal((8, 5)), rng.standard_normal((8, 5))]
    y = [rng.standard_normal((8, 5)), rng.standard_normal((8, 1))]
    model.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    count = model.count_params()
    if how == "save":
        path = tmp_path / "s.h5"
        model.save(path)
        other = load_model(path)
        assert all(p.dtype == np.float64 for p in other.parameters())
        assert _bitwise(model.predict(x), other.predict(x))
        model.fit(x, y, epochs=3, initial_epoch=1, batch_size=4, shuffle=False, verbose=0)
        other.fit(x, y, epochs=3, initial_epoch=other.epoch, batch_size=4, shuffle=False, verbose=0)
        assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), other.get_weights()))
    elif how == "from_config":
        other = Model.from_config(_json(model.get_config()))
        other.set_weights(model.get_weights())
        assert _bitwise(model.predict(x), other.predict(x))
    else:
        from framework.models.cloning import clone_model

        other = clone_model(model)
    assert other.name == "custom_outer"
    assert other.count_params() == count
    assert _json(other.get_config()) == _json(model.get_config())
    _check_structure(other)


# -- metrics: state methods ---------------------------------------------------------------------

_RNG = np.random.default_rng(0)
_YB, _SB = _RNG.integers(0, 2, 40), _RNG.random(40)
_YM = _RNG.integers(0, 3, 40)
_SM = _RNG.random((40, 3))
_YR, _PR = _RNG.standard_normal((40, 2)), _RNG.standard_normal((40, 2))
_SW = _RNG.random(40)

METRIC_CASES = {
    "accuracy-threshold": ("accuracy", {"threshold": 0.4}, _YB, _SB),
    "accuracy-multiclass": ("accuracy", {}, _YM, _SM),
    "auc-roc": ("auc", {"num_thresholds": 50}, _YB, _SB),
    "auc-pr-exact": ("auc", {"curve": "PR", "num_thresholds": None}, _YB, _SB),
    "auc-logits": ("auc", {"from_logits": True}, _YB, _SB * 4 - 2),
    "confusion-matrix": ("confusion_matrix", {"num_classes": 3}, _YM, _SM),
    "f1-macro": ("f1_score", {"average": "macro"}, _YM, _SM),
    "f1-none": ("f1_score", {"average": None}, _YM, _SM),
    "precision-micro": ("precision", {"average": "micro"}, _YM, _SM),
    "recall-binary": ("recall", {"threshold": 0.6}, _YB, _SB),
    "mae": ("mae", {}, _YR, _PR),
    "mse": ("mse", {}, _YR, _PR),
    "top-k": ("top_k_accuracy", {"k": 2}, _YM, _SM),
}


def _same_state(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(u, v) for u, v in zip(a, b))
    if a is None or isinstance(a, str):
        return a == b
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=np.asarray(a).dtype.kind == "f")


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("case", list(METRIC_CASES))
def test_metric_state_methods_are_consistent(case: str, weighted: bool) -> None:
    import copy

    from framework import metrics

    name, kwargs, y, p = METRIC_CASES[case]
    w = _SW if weighted else None

    def make() -> Any:
        return metrics.get(name, **kwargs)

    def part(lo: int, hi: int) -> Any:
        m = make()
        m.update_state(y[lo:hi], p[lo:hi], sample_weight=None if w is None else w[lo:hi])
        return m

    whole = part(0, 40)
    merged = make()
    merged.merge_state([part(0, 13), part(13, 40), make()])
    assert np.allclose(
        np.asarray(merged.result(), float), np.asarray(whole.result(), float), rtol=1e-12, atol=1e-12
    )
    # get_state is a snapshot; set_state does not alias the caller's state
    a = part(0, 13)
    snap = a.get_state()
    kept = copy.deepcopy(snap)
    result = np.asarray(a.result(), float)
    a.update_state(y[13:], p[13:])
    assert _same_state(snap, kept)
    c = make()
    c.set_state(snap)
    assert np.array_equal(np.asarray(c.result(), float), result, equal_nan=True)
    c.update_state(y[13:], p[13:])
    assert _same_state(snap, kept)
    # merging leaves the sources alone
    b = part(13, 40)
    b_state = copy.deepcopy(b.get_state())
    target = make()
    target.merge_state([b])
    target.update_state(y, p)
    assert _same_state(b.get_state(), b_state)
    # reset, config
    c.reset_state()
    fresh = make()
    assert _same_state(c.get_state(), fresh.get_state())
    cfg = _json(whole.get_config())
    assert _json(type(whole).from_config(cfg).get_config()) == cfg


def test_an_onnx_graph_named_with_a_slash_imports_under_a_name_that_saves(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from framework import onnx as fonnx

    model = Sequential([layers.get("Linear", input_size=3, output_size=2)])
    model.build((None, 3))
    proto = fonnx.to_onnx(model)
    proto.graph.name = "enc/dense.1"  # exporters from other frameworks name graphs freely
    path = tmp_path / "m.onnx"
    path.write_bytes(proto.SerializeToString())
    imported = fonnx.load(path)
    assert imported.name == "enc_dense_1"
    imported.save(tmp_path / "m.h5")
    x = np.ones((2, 3), np.float32)
    assert np.array_equal(load_model(tmp_path / "m.h5").predict(x), model.predict(x))


@pytest.mark.parametrize("value", ["false", "yes", 0, 1, None, [True]])
def test_a_config_flag_that_is_not_true_or_false_is_refused(value: Any, tmp_path: Path) -> None:
    """A hand-edited ``"bias": "false"`` is a non-empty string: read as true, it built a bias."""
    model = Sequential([layers.get("Linear", input_size=3, output_size=2)])
    model.build((None, 3))
    config = model.get_config()
    config["layers"][0]["config"]["bias"] = value
    with pytest.raises(framework.errors.ConfigError, match="bias must be true or false"):
        Sequential.from_config(config)
    config["layers"][0]["config"]["bias"] = False
    rebuilt = Sequential.from_config(config)
    assert rebuilt.layers[0].bias is None
