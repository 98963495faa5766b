"""Every built-in layer, activation, initializer, loss and optimizer passes the conformance kit.

Two layer tables map each built-in layer name to constructor arguments and an
input shape: ``DEFAULTS`` builds every layer with its default arguments (only
the arguments it cannot do without are given), ``LAYERS`` adds variants with
other arguments. A layer the project registers that is missing from a table
FAILS (so a new layer cannot skip the kit); a table entry whose plugin has not
landed yet is skipped, decided by asking the registry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from framework import layers
from framework.errors import ConfigError
from framework.registry.manager import BUILTIN_DISTRIBUTION, REGISTRY
from framework.testing import (
    ConformanceReport,
    check_activation,
    check_initializer,
    check_layer,
    check_loss,
    check_optimizer,
)


@dataclass
class Spec:
    """How to build one layer for the kit: ``layers.get(name, *args, **kwargs)`` on ``shape``."""

    shape: Any
    kwargs: dict[str, Any] = field(default_factory=dict)
    x: Any = None
    prepare: Callable[[Any], Any] | None = None
    known_failure: str | None = None  # a reason: the case is a strict xfail until fixed
    # check name -> reason: exactly these checks must fail (and every other pass) until fixed
    known_check_failures: dict[str, str] = field(default_factory=dict)


_INDICES = np.random.default_rng(0).integers(0, 10, size=(3, 5))
_ADJACENCY = (np.random.default_rng(1).random((5, 5)) < 0.4).astype(np.float64)
_EDGES = (np.array([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]]), None)


def _on_adjacency(layer: Any) -> None:
    """One ``prepare`` for both GCNConv entries on ``_ADJACENCY``: they then share one report."""
    layer.set_graph(_ADJACENCY)


LAYERS: dict[str, list[Spec]] = {
    # plugins.core
    "Linear": [
        Spec((4, 3), {"input_size": 3, "output_size": 4, "activation": "tanh"}),
        Spec((2, 3, 5), {"output_size": 2, "bias": False}),
    ],
    "Identity": [Spec((3, 4))],
    "Dropout": [Spec((4, 5), {"p": 0.3})],
    "Flatten": [Spec((2, 2, 3, 3)), Spec((2, 2, 3, 3), {"start_dim": 2})],
    "Activation": [Spec((3, 4), {"activation": "sigmoid"})],
    # plugins.conv
    "Conv2d": [
        Spec((2, 2, 5, 5), {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1}),
        Spec((2, 2, 6, 5), {"in_channels": 2, "out_channels": 2, "kernel_size": 2, "stride": 2}),
    ],
    "Conv1d": [Spec((2, 2, 7), {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1})],
    "ConvTranspose2d": [
        Spec((2, 2, 3, 3), {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "stride": 2})
    ],
    # plugins.pooling
    "MaxPool2d": [
        Spec((2, 2, 4, 4), {"kernel_size": 2}),
        Spec((2, 1, 5, 5), {"kernel_size": 3, "stride": 1}),
    ],
    "AvgPool2d": [Spec((2, 2, 4, 4), {"kernel_size": 2})],
    "MaxPool1d": [Spec((2, 2, 6), {"kernel_size": 2})],
    "AvgPool1d": [Spec((2, 2, 6), {"kernel_size": 2})],
    "GlobalAvgPool2d": [Spec((2, 3, 4, 4))],
    # plugins.normalization
    "BatchNorm": [Spec((4, 3), {"num_features": 3}), Spec((3, 2, 2, 2), {"num_features": 2})],
    "SyncBatchNorm": [Spec((4, 3), {"num_features": 3}), Spec((3, 2, 2, 2), {"num_features": 2})],
    "LayerNorm": [Spec((3, 5), {"normalized_shape": 5})],
    # plugins.activations, as standalone layers
    "ReLU": [Spec((4, 7))],
    "LeakyReLU": [Spec((4, 7), {"negative_slope": 0.1})],
    "ELU": [Spec((4, 7))],
    "Sigmoid": [Spec((4, 7))],
    "Tanh": [Spec((4, 7))],
    "Softmax": [Spec((4, 7))],
    "LogSoftmax": [Spec((4, 7))],
    "GELU": [Spec((4, 7))],
    "SiLU": [Spec((4, 7))],
    "Softplus": [Spec((4, 7))],
    # plugins.merge
    "Add": [Spec([(3, 4), (3, 4)])],
    "Subtract": [Spec([(3, 4), (3, 4)])],
    "Multiply": [Spec([(3, 4), (3, 4)])],
    "Average": [Spec([(3, 4), (3, 4)])],
    "Maximum": [Spec([(3, 4), (3, 4)])],
    "Minimum": [Spec([(3, 4), (3, 4)])],
    "Concatenate": [Spec([(3, 4), (3, 2)])],
    # plugins.recurrent and the sequence layers
    "Embedding": [Spec((3, 5), {"num_embeddings": 10, "embedding_dim": 4}, x=_INDICES)],
    # with a state as well: on x alone h = 0, and weight_hh's gradient is zero whatever backward says
    "RNNCell": [
        Spec((3, 4), {"input_size": 4, "hidden_size": 5, "nonlinearity": "tanh"}),
        Spec([(3, 4), (3, 5)], {"input_size": 4, "hidden_size": 5, "nonlinearity": "relu"}),
    ],
    "GRUCell": [
        Spec((3, 4), {"input_size": 4, "hidden_size": 5}),
        Spec([(3, 4), (3, 5)], {"input_size": 4, "hidden_size": 5}),
    ],
    "LSTMCell": [
        Spec((3, 4), {"input_size": 4, "hidden_size": 5}),
        Spec([(3, 4), (3, 5), (3, 5)], {"input_size": 4, "hidden_size": 5}),
    ],
    "RNN": [
        Spec((2, 5, 3), {"input_size": 3, "hidden_size": 4, "batch_first": True, "output": "sequence"}),
        Spec(
            (2, 5, 3),
            {"input_size": 3, "hidden_size": 4, "num_layers": 2, "batch_first": True, "output": "last"},
        ),
    ],
    "LSTM": [
        Spec(
            (2, 5, 3),
            {
                "input_size": 3,
                "hidden_size": 4,
                "batch_first": True,
                "bidirectional": True,
                "output": "sequence",
            },
        ),
        Spec((2, 5, 3), {"input_size": 3, "hidden_size": 4, "batch_first": True, "output": "last"}),
    ],
    "GRU": [
        Spec((2, 5, 3), {"input_size": 3, "hidden_size": 4, "batch_first": True, "output": "sequence"}),
        Spec((2, 5, 3), {"input_size": 3, "hidden_size": 4, "batch_first": True, "output": "last"}),
    ],
    # plugins.reshaping
    "Reshape": [Spec((2, 4, 3), {"target_shape": [3, -1]})],
    "Permute": [Spec((2, 2, 3, 4), {"dims": [2, 3, 1]})],
    "ZeroPadding2d": [Spec((2, 2, 3, 3), {"padding": [1, 2, 0, 1]})],
    "UpSampling2d": [Spec((2, 2, 3, 2), {"scale_factor": [2, 3]})],
    # plugins.graph: the adjacency is state outside the config, set on every copy
    "GCNConv": [
        Spec((5, 4), {"in_features": 4, "out_features": 3}, prepare=_on_adjacency),
        Spec(
            (5, 4),
            {"in_features": 4, "out_features": 2, "activation": "relu"},
            prepare=lambda lay: lay.set_graph(_EDGES),
        ),
    ],
    # plugins.transformer, plugins.group_norms, plugins.adaptive_pooling
    "MultiheadAttention": [
        Spec((2, 4, 6), {"embed_dim": 6, "num_heads": 2}),
        Spec([(2, 3, 4), (2, 5, 3), (2, 5, 2)], {"embed_dim": 4, "num_heads": 1, "kdim": 3, "vdim": 2}),
    ],
    "ScaledDotProductAttention": [Spec([(2, 3, 4), (2, 5, 4), (2, 5, 3)], {"is_causal": True})],
    "TransformerEncoderLayer": [
        Spec((2, 4, 6), {"d_model": 6, "nhead": 2, "dim_feedforward": 8, "dropout": 0.0, "norm_first": True})
    ],
    "TransformerDecoderLayer": [
        Spec([(2, 3, 6), (2, 4, 6)], {"d_model": 6, "nhead": 3, "dim_feedforward": 8, "dropout": 0.0})
    ],
    "TransformerEncoder": [
        Spec(
            (2, 4, 6),
            {
                "encoder_layer": {
                    "class_name": "TransformerEncoderLayer",
                    "config": {"d_model": 6, "nhead": 2, "dim_feedforward": 8, "dropout": 0.0},
                },
                "num_layers": 2,
            },
        )
    ],
    "TransformerDecoder": [
        Spec(
            [(2, 3, 6), (2, 4, 6)],
            {
                "decoder_layer": {
                    "class_name": "TransformerDecoderLayer",
                    "config": {"d_model": 6, "nhead": 2, "dim_feedforward": 8, "dropout": 0.0},
                },
                "num_layers": 2,
            },
        )
    ],
    "PositionalEncoding": [Spec((2, 5, 6), {"d_model": 6, "max_len": 10, "dropout": 0.0})],
    "GroupNorm": [Spec((2, 4, 3, 3), {"num_groups": 2, "num_channels": 4})],
    "InstanceNorm1d": [Spec((2, 3, 5), {"num_features": 3, "affine": True, "track_running_stats": True})],
    "InstanceNorm2d": [Spec((2, 3, 4, 4), {"num_features": 3, "affine": True})],
    "RMSNorm": [Spec((3, 2, 5), {"normalized_shape": 5})],
    "AdaptiveAvgPool1d": [Spec((2, 3, 7), {"output_size": 3})],
    "AdaptiveAvgPool2d": [Spec((2, 2, 7, 5), {"output_size": [3, 2]})],
    "AdaptiveMaxPool2d": [Spec((2, 2, 7, 5), {"output_size": [3, 2]})],
}


# Issue 14 item 11: every built-in layer passes the kit with its DEFAULT arguments.
# Only the arguments a layer cannot be built without are given (checked by
# test_defaults_table_gives_only_required_arguments); the recurrent layers run
# with their default output="both", a tuple such as LSTM's (output, (h_n, c_n)).
DEFAULTS: dict[str, Spec] = {
    "Activation": Spec((4, 7), {"activation": "relu"}),
    "Add": Spec([(3, 4), (3, 4)]),
    "Average": Spec([(3, 4), (3, 4)]),
    "AvgPool1d": Spec((2, 2, 6), {"kernel_size": 2}),
    "AvgPool2d": Spec((2, 2, 4, 4), {"kernel_size": 2}),
    "BatchNorm": Spec((4, 3), {"num_features": 3}),
    "SyncBatchNorm": Spec((4, 3), {"num_features": 3}),
    "Concatenate": Spec([(3, 4), (3, 2)]),
    "Conv1d": Spec((2, 2, 7), {"in_channels": 2, "out_channels": 3, "kernel_size": 3}),
    "Conv2d": Spec((2, 2, 5, 5), {"in_channels": 2, "out_channels": 3, "kernel_size": 3}),
    "ConvTranspose2d": Spec((2, 2, 3, 3), {"in_channels": 2, "out_channels": 3, "kernel_size": 3}),
    "Dropout": Spec((4, 5)),
    "ELU": Spec((4, 7)),
    "Embedding": Spec((3, 5), {"num_embeddings": 10, "embedding_dim": 4}, x=_INDICES),
    "Flatten": Spec((2, 2, 3, 3)),
    "GCNConv": Spec((5, 4), {"in_features": 4, "out_features": 3}, prepare=_on_adjacency),
    "GELU": Spec((4, 7)),
    "GlobalAvgPool2d": Spec((2, 3, 4, 4)),
    "GRU": Spec((5, 2, 3), {"input_size": 3, "hidden_size": 4}),
    "GRUCell": Spec((3, 4), {"input_size": 4, "hidden_size": 5}),
    "Identity": Spec((3, 4)),
    "LayerNorm": Spec((3, 5), {"normalized_shape": 5}),
    "LeakyReLU": Spec((4, 7)),
    "Linear": Spec((3, 5), {"output_size": 4}),
    "LogSoftmax": Spec((4, 7)),
    "LSTM": Spec((5, 2, 3), {"input_size": 3, "hidden_size": 4}),
    "LSTMCell": Spec((3, 4), {"input_size": 4, "hidden_size": 5}),
    "Maximum": Spec([(3, 4), (3, 4)]),
    "MaxPool1d": Spec((2, 2, 6), {"kernel_size": 2}),
    "MaxPool2d": Spec((2, 2, 4, 4), {"kernel_size": 2}),
    "Minimum": Spec([(3, 4), (3, 4)]),
    "Multiply": Spec([(3, 4), (3, 4)]),
    "Permute": Spec((2, 3, 4), {"dims": [2, 1]}),
    "ReLU": Spec((4, 7)),
    "Reshape": Spec((2, 3, 4), {"target_shape": [4, 3]}),
    "RNN": Spec((5, 2, 3), {"input_size": 3, "hidden_size": 4}),
    "RNNCell": Spec((3, 4), {"input_size": 4, "hidden_size": 5}),
    "Sigmoid": Spec((4, 7)),
    "SiLU": Spec((4, 7)),
    "Softmax": Spec((4, 7)),
    "Softplus": Spec((4, 7)),
    "Subtract": Spec([(3, 4), (3, 4)]),
    "Tanh": Spec((4, 7)),
    "UpSampling2d": Spec((2, 2, 3, 2)),
    "ZeroPadding2d": Spec((2, 2, 3, 3)),
    # plugins.transformer, plugins.group_norms, plugins.adaptive_pooling
    "MultiheadAttention": Spec((2, 4, 6), {"embed_dim": 6, "num_heads": 2}),
    "ScaledDotProductAttention": Spec([(2, 3, 4), (2, 5, 4), (2, 5, 3)]),
    # d_model 4: the default dim_feedforward=2048 makes the finite differences long enough
    "TransformerEncoderLayer": Spec((2, 4, 4), {"d_model": 4, "nhead": 2}),
    "TransformerDecoderLayer": Spec([(2, 3, 4), (2, 4, 4)], {"d_model": 4, "nhead": 2}),
    "TransformerEncoder": Spec(
        (2, 4, 6),
        {
            "encoder_layer": {
                "class_name": "TransformerEncoderLayer",
                "config": {"d_model": 6, "nhead": 2, "dim_feedforward": 8},
            },
            "num_layers": 2,
        },
    ),
    "TransformerDecoder": Spec(
        [(2, 3, 6), (2, 4, 6)],
        {
            "decoder_layer": {
                "class_name": "TransformerDecoderLayer",
                "config": {"d_model": 6, "nhead": 2, "dim_feedforward": 8},
            },
            "num_layers": 2,
        },
    ),
    "PositionalEncoding": Spec((2, 5, 6), {"d_model": 6}),
    "GroupNorm": Spec((2, 4, 3, 3), {"num_groups": 2, "num_channels": 4}),
    "InstanceNorm1d": Spec((2, 3, 5), {"num_features": 3}),
    "InstanceNorm2d": Spec((2, 3, 4, 4), {"num_features": 3}),
    "RMSNorm": Spec((3, 2, 5), {"normalized_shape": 5}),
    "AdaptiveAvgPool1d": Spec((2, 3, 7), {"output_size": 3}),
    "AdaptiveAvgPool2d": Spec((2, 2, 7, 5), {"output_size": [3, 2]}),
    "AdaptiveMaxPool2d": Spec((2, 2, 7, 5), {"output_size": [3, 2]}),
}


def _same_check(a: Spec, b: Spec) -> bool:
    """Whether two entries build the same layer on the same input (``x`` and ``prepare`` by identity)."""
    plain = not (a.known_failure or b.known_failure or a.known_check_failures or b.known_check_failures)
    return plain and (a.shape, a.kwargs) == (b.shape, b.kwargs) and a.x is b.x and a.prepare is b.prepare


_REPORTS: dict[tuple[str, int], ConformanceReport] = {}


def _conformance_report(name: str, spec: Spec) -> ConformanceReport:
    """``check_layer``'s report for ``spec`` (never raising), computed once per distinct check.

    Most ``DEFAULTS`` entries are also ``LAYERS`` entries (the default arguments are
    one of the variants): both tests then read one report, whichever runs first
    computes it. Tests only read reports.
    """
    twins = [i for i, other in enumerate(LAYERS.get(name, [])) if other is spec or _same_check(other, spec)]
    key = (name, twins[0] if twins else -1)
    if key not in _REPORTS:
        layer = layers.get(name, **spec.kwargs)
        _REPORTS[key] = check_layer(layer, spec.shape, x=spec.x, prepare=spec.prepare, raise_on_failure=False)
    return _REPORTS[key]


def _builtin_names(kind: str) -> list[str]:
    return [e.name for e in REGISTRY.entries(kind) if e.plugin.distribution == BUILTIN_DISTRIBUTION]


def _layer_cases() -> list[Any]:
    cases = []
    for name in sorted(set(LAYERS) | set(_builtin_names("layers")), key=str.lower):
        specs = LAYERS.get(name) or [None]
        for i, spec in enumerate(specs):
            marks = []
            if spec is not None and spec.known_failure:
                marks.append(pytest.mark.xfail(reason=spec.known_failure, strict=True))
            case_id = f"{name}-{i}" if len(specs) > 1 else name
            cases.append(pytest.param(name, spec, id=case_id, marks=marks))
    return cases


@pytest.mark.parametrize(("name", "spec"), _layer_cases())
def test_builtin_layer_conforms(name: str, spec: Spec | None) -> None:
    registered = REGISTRY.contains("layers", name)
    if spec is None:
        pytest.fail(
            f"built-in layer {name!r} has no entry in LAYERS of {__file__}: add its constructor "
            "arguments and an input shape so that it runs through framework.testing.check_layer"
        )
    if not registered:
        pytest.skip(f"layer {name!r} is not registered yet (its plugin has not landed)")
    entry = REGISTRY.entry("layers", name)
    assert entry.plugin.distribution == BUILTIN_DISTRIBUTION, f"{name} comes from {entry.plugin.describe()}"
    report = _conformance_report(name, spec)
    assert report.passed, str(report)
    assert "gradients" in report.checks("ok")


def test_every_registered_builtin_layer_is_in_the_table() -> None:
    missing = sorted(set(_builtin_names("layers")) - set(LAYERS))
    assert missing == [], f"built-in layers without a conformance table entry: {missing}"


def _default_cases() -> list[Any]:
    names = sorted(set(DEFAULTS) | set(_builtin_names("layers")), key=str.lower)
    return [pytest.param(name, DEFAULTS.get(name), id=name) for name in names]


@pytest.mark.parametrize(("name", "spec"), _default_cases())
def test_builtin_layer_with_default_arguments_conforms(name: str, spec: Spec | None) -> None:
    """Issue 14 item 11: check_layer on every built-in layer built with its defaults.

    ``LSTM``'s default ``output="both"`` returns ``(output, (h_n, c_n))`` and its
    ``backward`` takes ``(grad_output, (grad_h_n, grad_c_n))``: the kit must
    check such a layer, not fail on it with an AttributeError.
    """
    if spec is None:
        pytest.fail(
            f"built-in layer {name!r} has no entry in DEFAULTS of {__file__}: add its required "
            "constructor arguments (if any) and an input shape"
        )
    if not REGISTRY.contains("layers", name):
        pytest.skip(f"layer {name!r} is not registered yet (its plugin has not landed)")
    report = _conformance_report(name, spec)
    expected = spec.known_check_failures
    failed = report.checks("FAIL")
    if expected:
        assert set(failed) == set(expected), (
            f"{name} with default arguments: expected exactly the known failures {sorted(expected)} "
            f"({'; '.join(expected.values())}); got {failed}. If the layer was fixed, remove its "
            f"known_check_failures from DEFAULTS.\n{report}"
        )
    else:
        assert failed == [], f"{name} with default arguments fails the conformance kit:\n{report}"
    assert "gradients" in report.checks("ok"), str(report)


def test_defaults_table_gives_only_required_arguments() -> None:
    """Each argument in DEFAULTS has no default, or the layer refuses to be built without it."""
    extra = []
    for name, spec in DEFAULTS.items():
        if not REGISTRY.contains("layers", name):
            continue
        params = inspect.signature(REGISTRY.entry("layers", name).obj.__init__).parameters
        for key in spec.kwargs:
            if params[key].default is inspect.Parameter.empty:
                continue
            rest = {k: v for k, v in spec.kwargs.items() if k != key}
            try:
                layers.get(name, **rest)
            except ConfigError:
                continue
            extra.append(f"{name}({key}=...)")
    assert extra == [], f"DEFAULTS gives arguments that have usable defaults: {extra}"


# -- the other kinds: every registered built-in, with arguments where needed --

INITIALIZER_SHAPES: dict[str, tuple[tuple[int, ...], ...]] = {
    "Orthogonal": ((16, 8), (6, 3, 3, 3), (4, 9)),
}

_RNG = np.random.default_rng(0)
_PROBS = np.exp(_RNG.standard_normal((5, 4)))
_PROBS /= _PROBS.sum(axis=1, keepdims=True)
LOSS_DATA: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "cross_entropy": (_RNG.standard_normal((5, 4)), _RNG.integers(0, 4, size=5)),
    "masked_cross_entropy": (_RNG.standard_normal((5, 4)), _RNG.integers(0, 4, size=5)),
    "binary_cross_entropy": (_RNG.standard_normal((6, 1)), _RNG.integers(0, 2, size=(6, 1)).astype(float)),
    "bce_with_logits": (_RNG.standard_normal((6, 1)), _RNG.integers(0, 2, size=(6, 1)).astype(float)),
    # Keras names take probabilities by default (from_logits=False)
    "binary_crossentropy": (_RNG.uniform(0.1, 0.9, (6, 1)), _RNG.integers(0, 2, size=(6, 1)).astype(float)),
    "categorical_crossentropy": (_PROBS, np.eye(4)[_RNG.integers(0, 4, size=5)]),
    "sparse_categorical_crossentropy": (_PROBS, _RNG.integers(0, 4, size=5)),
}


@pytest.mark.parametrize("name", _builtin_names("activations"))
def test_builtin_activation_conforms(name: str) -> None:
    assert check_activation(name).passed


@pytest.mark.parametrize("name", _builtin_names("initializers"))
def test_builtin_initializer_conforms(name: str) -> None:
    shapes = INITIALIZER_SHAPES.get(name, ((16, 8), (6, 3, 3, 3), (5,)))
    assert check_initializer(name, shapes=shapes).passed


@pytest.mark.parametrize("name", _builtin_names("losses"))
def test_builtin_loss_conforms(name: str) -> None:
    y_pred, y_true = LOSS_DATA.get(name, (None, None))
    assert check_loss(name, y_pred, y_true).passed


@pytest.mark.parametrize("name", _builtin_names("optimizers"))
def test_builtin_optimizer_conforms(name: str) -> None:
    assert check_optimizer(name).passed


@pytest.mark.parametrize("kind", ["activations", "initializers", "losses", "optimizers"])
def test_each_kind_has_builtins(kind: str) -> None:
    """Guards the parametrizations above against silently running over nothing."""
    assert _builtin_names(kind), f"no built-in {kind} registered"
