"""float16 across every built-in layer of the registry, against float64 and PyTorch's half precision.

The documented contract (docs/guide/training.md, "float16 (mixed precision)"): a model built
with ``framework.set_default_dtype("float16")`` has float16 parameters, outputs and gradients;
the optimizer trains float32 masters under a dynamic loss scale; losses and metrics run in
float32. Every layer (enumerated through the registry, built from ``DEFAULTS`` of
``test_builtins_conformance.py``, so a newly registered layer is covered or fails here) gets:

1. the matrix: forward and backward in float16 return float16 outputs, input gradients,
   parameter gradients and buffers (never a silent float32/float64), and equal the same layer
   run in float64 on the same (float16-rounded) weights and inputs within float16's precision,
   relative to each array's scale; a stochastic layer draws the mask its float32 twin draws.
2. PyTorch: each layer with a PyTorch twin (``TORCH_TWINS`` of ``test_input_fuzz_hunt.py``
   plus the recurrent layers and attention) against the twin run in ``torch.float16`` on CPU.
3. reductions where float16 arithmetic goes silently wrong, each against float64 (and the
   forward against PyTorch's half, which accumulates in float32): normalisations of
   ``|x| ~ 300`` (``x^2`` past 65504) and of batches whose sums pass 65504, softmax over many
   classes and large logits, attention over 2000 keys, average pools and means over 4096+
   values (a float16 running sum of ones stops at 2048), large fan-in products, bias and
   weight gradients summed over long batches and sequences, activations at ``|x| = 60``.
4. mixed dtypes at a model's edge (cast once, DESIGN.md) and a float16 layer fed float32.
5. ``fit`` of float16 models (MLP, CNN with BatchNorm, LSTM) with the loss scaler, converging
   as the float32 model does.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from test_input_fuzz_hunt import NAMES, TORCH_TWINS, _built, _each_layer, _leaves, _map, _stochastic

import framework
from framework import Sequential, layers

try:
    import torch
except ImportError:  # the [parity] extra: the PyTorch comparisons skip without it
    torch = None
requires_torch = pytest.mark.skipif(torch is None, reason="the [parity] extra (torch) is not installed")

F16 = np.dtype(np.float16)

#: max |float16 - float64| / max |float64| allowed per array (float16's rounding is 4.9e-4)
TOL = 4e-3
#: composite layers: several float16 roundings in a row (attention, feed-forward, two norms), and
#: a 2048-unit ReLU feed-forward where a unit whose pre-activation lies within float16's rounding of 0
#: takes the other branch (its gradient row differs wholly; ~1e-3 of the 16384 unit-positions
#: of TransformerEncoderLayer's defaults do): compared by the relative L2 error
LOOSE = {
    "TransformerEncoderLayer": 3e-2,
    "TransformerDecoderLayer": 3e-2,
    "TransformerEncoder": 3e-2,
    "TransformerDecoder": 3e-2,
}


@pytest.fixture(autouse=True)
def _restore_default_dtype():
    old = framework.get_default_dtype()
    yield
    framework.set_default_dtype(old)


def _rel(got: Any, ref: Any, l2: bool = False) -> float:
    """``max |got - ref| / max |ref|`` (absolute where ``ref`` is 0); ``l2``: ``||got - ref|| / ||ref||``."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if ref.size == 0:
        return 0.0
    norm = np.linalg.norm if l2 else lambda a: np.max(np.abs(a))
    scale = float(norm(ref))
    return float(norm(got - ref)) / (scale if scale > 0 else 1.0)


def _close(got: Any, ref: Any, tol: float, what: str, l2: bool = False) -> list[str]:
    """Problems (empty if none) comparing the arrays of ``got`` with those of ``ref``."""
    la, lb = _leaves(got), _leaves(ref)
    if len(la) != len(lb):
        return [f"{what}: {len(la)} arrays against {len(lb)}"]
    problems = []
    for i, (a, b) in enumerate(zip(la, lb)):
        if a is None or b is None:
            if (a is None) != (b is None):
                problems.append(f"{what}[{i}]: {a!r} against {b!r}")
            continue
        if np.shape(a) != np.shape(b):
            problems.append(f"{what}[{i}]: shape {np.shape(a)} against {np.shape(b)}")
            continue
        finite = np.isfinite(np.asarray(b, np.float64))
        if not np.all(np.isfinite(np.asarray(a, np.float64))[finite]):
            problems.append(f"{what}[{i}]: inf/NaN where the reference is finite")
            continue
        err = _rel(a, b, l2)
        if not err <= tol:
            problems.append(f"{what}[{i}]: relative error {err:.2e} > {tol:.0e}")
    return problems


def _f16(x: Any) -> Any:
    return _map(x, lambda a: a.astype(F16) if a.dtype.kind == "f" else a)


def _f64(x: Any) -> Any:
    return _map(x, lambda a: a.astype(np.float64) if a.dtype.kind == "f" else a)


def _pack(structure: Any, flat: list[Any]) -> Any:
    it = iter(flat)
    return _map(structure, lambda _: next(it))


def _twin64(layer16: Any, name: str) -> Any:
    """The layer rebuilt in float64 holding ``layer16``'s (float16) weights and buffers exactly."""
    twin, _ = _built(name, "float64")
    twin.load_state_dict(layer16.state_dict())
    if hasattr(layer16, "num_batches_tracked"):
        twin.num_batches_tracked = layer16.num_batches_tracked
    return twin


def _run(layer: Any, x: Any, grads: list[np.ndarray], training: bool, seed: int = 11) -> dict[str, Any]:
    """Forward and backward of ``layer`` (itself, not a copy) with ``grads`` cast to each output's dtype."""
    layer.train(training)
    framework.set_seed(seed)
    out = layer.forward(x)
    outs = _leaves(out)
    g = _pack(out, [gr.astype(o.dtype) for gr, o in zip(grads, outs)])
    grad_in = layer.backward(g)
    return {
        "out": out,
        "grad_in": grad_in,
        "params": [(n, p.grad.copy()) for n, p in layer.named_parameters()],
        "state": {k: np.array(v) for k, v in layer.state_dict().items()},
    }


def _grads_for(out: Any, seed: int = 3, bias: float = 0.0) -> list[np.ndarray]:
    """One float16-exact gradient per output array: ``bias + N(0, 1)``."""
    rng = np.random.default_rng(seed)
    return [(bias + rng.standard_normal(o.shape)).astype(F16).astype(np.float64) for o in _leaves(out)]


# -- 1. every layer: float16 stays float16 and equals float64 --------------------------------------


def _check_float16_layer_stays_float16_and_matches_float64(name: str) -> None:
    """Forward and backward in float16 against the float64 twin on the same weights and inputs."""
    half, x = _built(name, "float16")
    twin = _twin64(half, name)
    training = not _stochastic(half, x)  # a dropout mask: compared with float32's below, eval here
    probe = copy.deepcopy(twin).eval().forward(_f64(x))
    grads = _grads_for(probe)
    got = _run(half, x, grads, training)
    ref = _run(twin, _f64(x), grads, training)
    wrong = [f"output {o.dtype}" for o in _leaves(got["out"]) if o.dtype != F16]
    wrong += [f"dL/dx {d.dtype}" for d in _leaves(got["grad_in"]) if d is not None and d.dtype != F16]
    wrong += [f"{n}.grad {g.dtype}" for n, g in got["params"] if g.dtype != F16]
    wrong += [f"{k} {v.dtype}" for k, v in got["state"].items() if v.dtype.kind == "f" and v.dtype != F16]
    assert wrong == [], f"{name} built in float16 gave: {wrong}"
    tol, l2 = LOOSE.get(name, TOL), name in LOOSE
    problems = _close(got["out"], ref["out"], tol, "output", l2)
    problems += _close(got["grad_in"], ref["grad_in"], tol, "dL/dx", l2)
    for (n, g), (_, r) in zip(got["params"], ref["params"]):
        problems += _close(g, r, tol, f"{n}.grad", l2)
    for k in ref["state"]:
        problems += _close(got["state"][k], ref["state"][k], tol, f"state {k}", l2)
    assert problems == [], f"{name} in float16 against float64:\n" + "\n".join(problems)


def test_float16_layer_stays_float16_and_matches_float64() -> None:
    """The check above for each layer, in one test (pytest cost more per layer than the check)."""
    _each_layer(_check_float16_layer_stays_float16_and_matches_float64, NAMES, "float32")


def _layer_groups() -> tuple[list[str], list[str], list[str]]:
    """The stochastic layers; those of a single input; those of a single input with parameters.

    Each layer is built once (in float32) for the three: they parametrize the tests below and in 4.
    """
    stochastic, single, with_params = [], [], []
    for name in NAMES:
        layer, x = _built(name, "float32")
        if _stochastic(layer, x):  # runs copies of ``layer``
            stochastic.append(name)
        if not isinstance(x, list):
            single.append(name)
            if layer.parameters():
                with_params.append(name)
    return stochastic, single, with_params


STOCHASTIC, SINGLE, WITH_PARAMS = _layer_groups()


def test_the_stochastic_layers_are_found() -> None:
    """Guards the parametrization below: Dropout and the layers with dropout by default."""
    assert {"Dropout", "PositionalEncoding", "TransformerEncoderLayer"} <= set(STOCHASTIC)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_float16_dropout_draws_the_float32_mask(name: str) -> None:
    """A float16 layer in training draws the mask its float32 twin draws for the same seed (the
    uniforms are float32 in both), so float16 training is float32 training rounded, not another run."""
    half, x = _built(name, "float16")
    single, _ = _built(name, "float32")
    single.load_state_dict(half.state_dict())
    x32 = _map(x, lambda a: a.astype(np.float32) if a.dtype.kind == "f" else a)
    probe = copy.deepcopy(single).eval().forward(x32)
    grads = _grads_for(probe)
    got = _run(half, x, grads, training=True, seed=5)
    ref = _run(single, x32, grads, training=True, seed=5)
    tol, l2 = LOOSE.get(name, TOL), name in LOOSE
    for a, b in zip(_leaves(got["out"]), _leaves(ref["out"])):
        assert a.dtype == F16
        np.testing.assert_array_equal(a == 0, b == 0, err_msg=f"{name}: another dropout mask")
    problems = _close(got["out"], ref["out"], tol, "output", l2)
    problems += _close(got["grad_in"], ref["grad_in"], tol, "dL/dx", l2)
    assert problems == [], "\n".join(problems)


# -- 2. against PyTorch's half precision -------------------------------------------------------

#: twins for the layers TORCH_TWINS leaves out (several outputs, or attention's three inputs)
MORE_TWINS: dict[str, Callable[[], Any]] = {
    "RNN": lambda: torch.nn.RNN(3, 4),
    "GRU": lambda: torch.nn.GRU(3, 4),
    "LSTM": lambda: torch.nn.LSTM(3, 4),
    "RNNCell": lambda: torch.nn.RNNCell(4, 5),
    "GRUCell": lambda: torch.nn.GRUCell(4, 5),
    "LSTMCell": lambda: torch.nn.LSTMCell(4, 5),
    "MultiheadAttention": lambda: torch.nn.MultiheadAttention(6, 2, batch_first=True),
}


def _torch_call(name: str, module: Any, t: Any) -> Any:
    if name == "MultiheadAttention":
        return module(t, t, t, need_weights=False)[0]
    return module(t)


def _torch_half(name: str, layer: Any) -> Any:
    factory = MORE_TWINS.get(name) or TORCH_TWINS[name]
    module = factory().half()
    state = {k: torch.from_numpy(np.array(v)) for k, v in layer.state_dict().items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    return module


def _check_float16_layer_matches_torch_half(name: str) -> None:
    """Forward, dL/dx and parameter gradients against the PyTorch twin in ``torch.float16`` (CPU)."""
    half, x = _built(name, "float16")
    module = _torch_half(name, half)
    training = module.training
    t = torch.from_numpy(np.array(x)).requires_grad_(x.dtype.kind == "f")
    expected = _torch_call(name, module, t)
    grads = _grads_for([o.detach().numpy() for o in _leaves_torch(expected)])
    got = _run(half, x, grads, training)
    outs = _leaves_torch(expected)
    torch.autograd.backward(outs, [torch.from_numpy(g.astype(F16)) for g in grads])
    problems = _close(got["out"], [o.detach().numpy() for o in outs], TOL, "output")
    if t.grad is not None:
        problems += _close(got["grad_in"], t.grad.numpy(), TOL, "dL/dx")
    by_name = dict(module.named_parameters())
    for n, g in got["params"]:
        problems += _close(g, by_name[n].grad.numpy(), TOL, f"{n}.grad")
    assert problems == [], f"{name} against torch.float16:\n" + "\n".join(problems)


@requires_torch
def test_float16_layer_matches_torch_half() -> None:
    """The check above for each layer, in one test (pytest cost more per layer than the check)."""
    _each_layer(
        _check_float16_layer_matches_torch_half, sorted(set(TORCH_TWINS) | set(MORE_TWINS)), "float32"
    )


def _leaves_torch(x: Any) -> list[Any]:
    if isinstance(x, (list, tuple)):
        return [leaf for v in x for leaf in _leaves_torch(v)]
    return [x]


# -- 3. reductions where float16 arithmetic goes silently wrong ----------------------------------


@dataclass
class Stress:
    """One layer on an input where float16 sums, squares or exponentials leave float16's range."""

    name: str
    kwargs: dict[str, Any]
    x: Callable[[np.random.Generator], Any]
    bias: float = 0.0  # mean of dL/dy: 1 makes the gradient sums grow with their length
    tol: float = TOL
    training: bool = True
    torch: Callable[[], Any] | None = None  # a PyTorch twin for the forward in torch.float16
    why: str = ""
    marks: list[Any] = field(default_factory=list)


def _big(shape: tuple[int, ...], scale: float = 300.0, mean: float = 100.0) -> Callable[..., Any]:
    return lambda rng: mean + scale * rng.standard_normal(shape)


def _near(shape: tuple[int, ...], mean: float = 1.0) -> Callable[..., Any]:
    return lambda rng: mean + rng.standard_normal(shape)


def _tw(factory: str, *args: Any, **kwargs: Any) -> Callable[[], Any] | None:
    if torch is None:
        return None
    return lambda: getattr(torch.nn, factory)(*args, **kwargs)


STRESS: dict[str, Stress] = {
    # x^2 past 65504 (|x| ~ 300): the variance must not be inf, the output not 0
    "BatchNorm-x300": Stress(
        "BatchNorm", {"num_features": 3}, _big((4, 3, 8, 8)), torch=_tw("BatchNorm2d", 3)
    ),
    "SyncBatchNorm-x300": Stress("SyncBatchNorm", {"num_features": 3}, _big((4, 3, 8, 8))),
    "BatchNorm-x300-eval": Stress(
        "BatchNorm", {"num_features": 3}, _big((4, 3, 8, 8)), training=False, torch=_tw("BatchNorm2d", 3)
    ),
    "LayerNorm-x300": Stress(
        "LayerNorm", {"normalized_shape": 64}, _big((4, 64)), torch=_tw("LayerNorm", 64)
    ),
    "RMSNorm-x300": Stress("RMSNorm", {"normalized_shape": 64}, _big((4, 64)), torch=_tw("RMSNorm", 64)),
    "GroupNorm-x300": Stress(
        "GroupNorm", {"num_groups": 2, "num_channels": 4}, _big((4, 4, 8, 8)), torch=_tw("GroupNorm", 2, 4)
    ),
    "InstanceNorm1d-x300": Stress(
        "InstanceNorm1d", {"num_features": 3}, _big((4, 3, 64)), torch=_tw("InstanceNorm1d", 3)
    ),
    "InstanceNorm1d-x300-running": Stress(
        "InstanceNorm1d",
        {"num_features": 3, "track_running_stats": True},
        _big((4, 3, 64)),
        torch=_tw("InstanceNorm1d", 3, track_running_stats=True),
    ),
    "InstanceNorm2d-x300": Stress(
        "InstanceNorm2d",
        {"num_features": 3, "affine": True},
        _big((4, 3, 8, 8)),
        torch=_tw("InstanceNorm2d", 3, affine=True),
    ),
    # per-channel sums past 65504 of ordinary values (73728 values of mean 1 per channel)
    "BatchNorm-big-batch": Stress(
        "BatchNorm", {"num_features": 2}, _near((8, 2, 96, 96)), torch=_tw("BatchNorm2d", 2)
    ),
    "SyncBatchNorm-big-batch": Stress("SyncBatchNorm", {"num_features": 2}, _near((8, 2, 96, 96))),
    "LayerNorm-wide": Stress(
        "LayerNorm", {"normalized_shape": 4096}, _big((8, 4096), mean=1000.0), torch=_tw("LayerNorm", 4096)
    ),
    "RMSNorm-wide": Stress(
        "RMSNorm", {"normalized_shape": 4096}, _big((8, 4096), mean=1000.0), torch=_tw("RMSNorm", 4096)
    ),
    # parameter gradients summed over many rows / samples
    "LayerNorm-many-rows": Stress("LayerNorm", {"normalized_shape": 16}, _near((4000, 16), 3.0), bias=1.0),
    "RMSNorm-many-rows": Stress("RMSNorm", {"normalized_shape": 16}, _near((4000, 16), 3.0), bias=1.0),
    "GroupNorm-many-samples": Stress(
        "GroupNorm", {"num_groups": 1, "num_channels": 2}, _near((2000, 2, 4, 4)), bias=1.0
    ),
    "InstanceNorm2d-many-samples": Stress(
        "InstanceNorm2d", {"num_features": 2, "affine": True}, _near((2000, 2, 4, 4)), bias=1.0
    ),
    # averages over 4096 values: a float16 running sum of ones stops at 2048
    "AvgPool1d-4096": Stress(
        "AvgPool1d", {"kernel_size": 4096}, _near((2, 3, 4096)), bias=1.0, torch=_tw("AvgPool1d", 4096)
    ),
    "AvgPool1d-2048-stride1": Stress(
        "AvgPool1d",
        {"kernel_size": 2048, "stride": 1},
        _near((2, 3, 4096)),
        bias=1.0,
        torch=_tw("AvgPool1d", 2048, stride=1),
    ),
    "AvgPool2d-64": Stress(
        "AvgPool2d", {"kernel_size": 64}, _near((2, 3, 64, 64)), bias=1.0, torch=_tw("AvgPool2d", 64)
    ),
    "AvgPool2d-32-stride1": Stress(
        "AvgPool2d",
        {"kernel_size": 32, "stride": 1},
        _near((2, 3, 64, 64)),
        bias=1.0,
        torch=_tw("AvgPool2d", 32, stride=1),
    ),
    "GlobalAvgPool2d-128": Stress("GlobalAvgPool2d", {}, _near((2, 3, 128, 128)), bias=1.0),
    "AdaptiveAvgPool1d-8192": Stress(
        "AdaptiveAvgPool1d",
        {"output_size": 1},
        _near((2, 3, 8192)),
        bias=1.0,
        torch=_tw("AdaptiveAvgPool1d", 1),
    ),
    "AdaptiveAvgPool2d-128": Stress(
        "AdaptiveAvgPool2d",
        {"output_size": [1, 2]},
        _near((2, 3, 128, 128)),
        bias=1.0,
        torch=_tw("AdaptiveAvgPool2d", (1, 2)),
    ),
    "UpSampling2d-16": Stress("UpSampling2d", {"scale_factor": 16}, _near((2, 3, 8, 8)), bias=1.0),
    # softmax over many classes and over large logits
    "Softmax-8192": Stress("Softmax", {}, _big((4, 8192), 5.0, 0.0), torch=_tw("Softmax", dim=-1)),
    "LogSoftmax-8192": Stress("LogSoftmax", {}, _big((4, 8192), 5.0, 0.0), torch=_tw("LogSoftmax", dim=-1)),
    "Softmax-logits30": Stress("Softmax", {}, _big((4, 100), 30.0, 0.0), torch=_tw("Softmax", dim=-1)),
    "LogSoftmax-logits30": Stress(
        "LogSoftmax", {}, _big((4, 100), 30.0, 0.0), torch=_tw("LogSoftmax", dim=-1)
    ),
    # along a strided axis a float16 sum of 8192 exponentials near 1 stops at 2048
    "Softmax-axis1-8192": Stress(
        "Softmax", {"axis": 1}, _big((2, 8192, 3), 0.1, 0.0), bias=1.0, torch=_tw("Softmax", dim=1)
    ),
    "LogSoftmax-axis1-8192": Stress(
        "LogSoftmax", {"axis": 1}, _big((2, 8192, 3), 0.1, 0.0), bias=1.0, torch=_tw("LogSoftmax", dim=1)
    ),
    # attention over 2000 keys, scores of std ~10, values with a common offset
    "ScaledDotProductAttention-2000": Stress(
        "ScaledDotProductAttention",
        {},
        lambda rng: [
            4 * rng.standard_normal((2, 20, 8)),
            4 * rng.standard_normal((2, 2000, 8)),
            1 + rng.standard_normal((2, 2000, 8)),
        ],
    ),
    "ScaledDotProductAttention-causal-256": Stress(
        "ScaledDotProductAttention",
        {"is_causal": True},
        lambda rng: [
            4 * rng.standard_normal((2, 256, 8)),
            4 * rng.standard_normal((2, 256, 8)),
            1 + rng.standard_normal((2, 256, 8)),
        ],
    ),
    "MultiheadAttention-1000": Stress(
        "MultiheadAttention",
        {"embed_dim": 8, "num_heads": 2},
        _big((2, 1000, 8), 3.0, 1.0),
        torch=_tw("MultiheadAttention", 8, 2, batch_first=True),
    ),
    # products of large fan-in; bias and weight gradients summed over long batches
    "Linear-fanin-16384": Stress(
        "Linear",
        {"input_size": 16384, "output_size": 3},
        _near((8, 16384), 0.5),
        bias=1.0,
        torch=_tw("Linear", 16384, 3),
    ),
    "Linear-batch-20000": Stress(
        "Linear", {"input_size": 4, "output_size": 3}, _near((20000, 4), 0.5), bias=1.0
    ),
    "Conv2d-fanin-3136": Stress(
        "Conv2d",
        {"in_channels": 64, "out_channels": 3, "kernel_size": 7},
        _near((2, 64, 16, 16), 0.5),
        bias=1.0,
        torch=_tw("Conv2d", 64, 3, 7),
    ),
    "Conv2d-many-positions": Stress(  # 32768 positions: dL/db ~ 32768, inside float16's range
        "Conv2d", {"in_channels": 2, "out_channels": 3, "kernel_size": 1}, _near((8, 2, 64, 64)), bias=1.0
    ),
    "Conv2d-batch-4096": Stress(
        "Conv2d", {"in_channels": 1, "out_channels": 2, "kernel_size": 3}, _near((4096, 1, 3, 3)), bias=1.0
    ),
    "Conv1d-8192": Stress(
        "Conv1d", {"in_channels": 2, "out_channels": 3, "kernel_size": 1}, _near((4, 2, 8192)), bias=1.0
    ),
    "Conv1d-batch-4096": Stress(
        "Conv1d", {"in_channels": 1, "out_channels": 2, "kernel_size": 3}, _near((4096, 1, 3)), bias=1.0
    ),
    "ConvTranspose2d-many-positions": Stress(
        "ConvTranspose2d",
        {"in_channels": 2, "out_channels": 3, "kernel_size": 1},
        _near((8, 2, 64, 64)),
        bias=1.0,
    ),
    "ConvTranspose2d-batch-4096": Stress(
        "ConvTranspose2d",
        {"in_channels": 1, "out_channels": 2, "kernel_size": 2},
        _near((4096, 1, 2, 2)),
        bias=1.0,
    ),
    "Embedding-repeated-5000": Stress(
        "Embedding", {"num_embeddings": 3, "embedding_dim": 2}, lambda rng: rng.integers(0, 2, 5000), bias=1.0
    ),
    # recurrent layers over 2000 steps, cells over 5000 samples: gradients summed over time / batch
    "RNN-2000-steps": Stress("RNN", {"input_size": 3, "hidden_size": 4}, _near((2000, 2, 3), 0.0), bias=1.0),
    "GRU-2000-steps": Stress("GRU", {"input_size": 3, "hidden_size": 4}, _near((2000, 2, 3), 0.0), bias=1.0),
    "LSTM-2000-steps": Stress(
        "LSTM", {"input_size": 3, "hidden_size": 4}, _near((2000, 2, 3), 0.0), bias=1.0
    ),
    "RNNCell-5000": Stress("RNNCell", {"input_size": 3, "hidden_size": 4}, _near((5000, 3), 0.0), bias=1.0),
    "GRUCell-5000": Stress("GRUCell", {"input_size": 3, "hidden_size": 4}, _near((5000, 3), 0.0), bias=1.0),
    "LSTMCell-5000": Stress("LSTMCell", {"input_size": 3, "hidden_size": 4}, _near((5000, 3), 0.0), bias=1.0),
    "PositionalEncoding-4000": Stress(
        "PositionalEncoding",
        {"d_model": 8, "max_len": 5000},
        lambda rng: np.zeros((1, 4000, 8)),
        training=False,
    ),
}
for _act in ("GELU", "SiLU", "Softplus", "Sigmoid", "Tanh", "ELU", "LeakyReLU"):
    STRESS[f"{_act}-60"] = Stress(
        _act, {}, lambda rng: np.linspace(-60, 60, 2001)[None], tol=6e-3, torch=_tw(_act)
    )


def _stress_pair(case: Stress) -> tuple[Any, Any]:
    framework.set_default_dtype("float16")
    framework.set_seed(0)
    half = layers.get(case.name, **case.kwargs)
    framework.set_default_dtype("float64")
    framework.set_seed(0)
    twin = layers.get(case.name, **case.kwargs)
    framework.set_default_dtype("float32")
    return half, twin


def _stress_inputs(case: Stress) -> tuple[Any, Any]:
    x = case.x(np.random.default_rng(0))
    x16 = _f16(x) if isinstance(x, list) else _f16(np.asarray(x))
    return x16, _f64(x16)


@pytest.mark.parametrize("case", sorted(STRESS))
def test_float16_reduction_matches_float64(case: str) -> None:
    """The stress input in float16 against float64 (same float16-rounded weights and inputs):
    outputs, dL/dx and parameter gradients within float16's precision, never inf or NaN."""
    spec = STRESS[case]
    half, twin = _stress_pair(spec)
    x16, x64 = _stress_inputs(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # an overflow in a float16 sum or square
        framework.set_default_dtype("float16")
        first = half.train(spec.training).forward(x16)  # builds (weights drawn); gives the outputs' shapes
        framework.set_default_dtype("float32")
        half = copy.deepcopy(_stress_reset(half))
        twin.load_state_dict(half.state_dict())  # each stress layer makes its weights in its constructor
        twin = _stress_reset(twin)
        grads = _grads_for(first, bias=spec.bias)
        got = _run(half, x16, grads, spec.training)
    ref = _run(twin, x64, grads, spec.training)
    problems = _close(got["out"], ref["out"], spec.tol, "output")
    problems += _close(got["grad_in"], ref["grad_in"], spec.tol, "dL/dx")
    for (n, g), (_, r) in zip(got["params"], ref["params"]):
        assert g.dtype == F16, f"{n}.grad is {g.dtype}"
        problems += _close(g, r, spec.tol, f"{n}.grad")
    for k in ref["state"]:
        problems += _close(got["state"][k], ref["state"][k], spec.tol, f"state {k}")
    for o in _leaves(got["out"]):
        assert o.dtype == F16, f"output {o.dtype}"
    assert problems == [], f"{case} in float16 against float64:\n" + "\n".join(problems)


def _stress_reset(layer: Any) -> Any:
    """Zero the gradients of the building call; BatchNorm keeps its running estimates of that call."""
    for p in layer.parameters():
        p.grad[...] = 0
    return layer


TORCH_STRESS = sorted(c for c, s in STRESS.items() if s.torch is not None)


@requires_torch
@pytest.mark.parametrize("case", TORCH_STRESS)
def test_float16_reduction_forward_matches_torch_half(case: str) -> None:
    """The stress input's forward against PyTorch's ``torch.float16`` module (which accumulates
    sums and statistics in float32): within float16's precision, finite where PyTorch's is.
    (PyTorch's half backward is itself inexact on some of these, e.g. BatchNorm's weight
    gradient overflows to inf at |x| ~ 300: the backward is checked against float64 above.)"""
    spec = STRESS[case]
    half, _ = _stress_pair(spec)
    x16, _ = _stress_inputs(spec)
    framework.set_default_dtype("float16")
    half.train(True).forward(x16)
    framework.set_default_dtype("float32")
    module = spec.torch().half()
    state = {k: torch.from_numpy(np.array(v)) for k, v in half.state_dict().items()}
    module.load_state_dict(state, strict=False)
    half.train(spec.training)
    module.train(spec.training)
    with torch.no_grad():
        expected = _torch_call(spec.name, module, torch.from_numpy(np.array(x16)))
    got = half.forward(x16)
    assert got.dtype == F16
    problems = _close(got, expected.numpy(), spec.tol, "output")
    assert problems == [], f"{case} against torch.float16:\n" + "\n".join(problems)


@pytest.mark.parametrize("average", [True, False])
def test_float16_attention_weights_are_float16(average: bool) -> None:
    """MultiheadAttention's returned weights follow its output's dtype (the softmax runs in float32)."""
    framework.set_default_dtype("float16")
    mha = layers.get("MultiheadAttention", embed_dim=8, num_heads=2)
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(F16)
    y, w = mha(x, need_weights=True, average_attn_weights=average)
    assert y.dtype == w.dtype == F16
    np.testing.assert_allclose(w.astype(np.float64).sum(axis=-1), 1.0, atol=4e-3)


@pytest.mark.parametrize("name", ["SyncBatchNorm"])
def test_float16_synced_batchnorm_path_computes_in_float32(name: str, monkeypatch: Any) -> None:
    """SyncBatchNorm's path over ranks (a world of two whose allreduce adds nothing: this rank's
    batch alone) on |x| ~ 300 in float16: BatchNorm's result, not inf squares giving 0."""
    from framework.distributed import world

    framework.set_default_dtype("float16")
    synced, plain = layers.get(name, num_features=3), layers.get("BatchNorm", num_features=3)
    framework.set_default_dtype("float32")
    x = (100 + 300 * np.random.default_rng(0).standard_normal((4, 3, 8, 8))).astype(F16)
    g = np.random.default_rng(1).standard_normal(x.shape).astype(F16)
    ref_y = plain.forward(x)
    ref_dx = plain.backward(g)
    monkeypatch.setattr(world, "size", lambda: 2)
    monkeypatch.setattr(world, "allreduce_inplace", lambda buf, what=None: buf)
    monkeypatch.setattr(world, "step_weight", lambda: 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        y = synced.forward(x)
        dx = synced.backward(g)
    assert y.dtype == dx.dtype == synced.weight.grad.dtype == F16
    assert (
        _close(
            [y, dx, synced.weight.grad, synced.bias.grad],
            [ref_y, ref_dx, plain.weight.grad, plain.bias.grad],
            TOL,
            "synced",
        )
        == []
    )
    assert _close(synced.running_var.data, plain.running_var.data, TOL, "running_var") == []


# -- 4. mixed dtypes: cast once at the model's edge; a layer keeps its own dtype -----------------


@pytest.mark.parametrize("name", SINGLE)
@pytest.mark.parametrize("fed", ["float16", "float64"])
def test_float32_model_casts_other_float_inputs_at_its_edge(name: str, fed: str) -> None:
    """A float32 model given float16 or float64 data computes what it computes on the float32 cast
    (DESIGN.md: inputs of another dtype are cast once, at the model's edge): float32 out, equal."""
    layer, x = _built(name, "float32")
    model = Sequential([layer])
    model.eval()
    if x.dtype.kind != "f":
        pytest.skip("integer input (indices): kept as given")
    data = x.astype(fed)
    ref = _leaves(model(data.astype(np.float32)))
    for call in (model, model.predict):
        got = _leaves(call(data))
        for a, b in zip(got, ref):
            assert a.dtype == np.float32, f"{call} gave {a.dtype}"
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", WITH_PARAMS)
@pytest.mark.parametrize("fed", ["float32", "float64"])
def test_float16_model_casts_wider_inputs_to_float16(name: str, fed: str) -> None:
    """A float16 model given float32 or float64 data rounds it to float16 at its edge: float16 out,
    equal to the call on the float16 cast (no silent float32/float64 computation)."""
    layer, x = _built(name, "float16")
    model = Sequential([layer])
    model.eval()
    if x.dtype.kind != "f":
        pytest.skip("integer input (indices): kept as given")
    data = (x.astype(np.float64) + 1e-4).astype(fed)  # not exactly float16 values
    ref = _leaves(model(data.astype(F16)))
    for call in (model, model.predict):
        got = _leaves(call(data))
        for a, b in zip(got, ref):
            assert a.dtype == F16, f"{call} gave {a.dtype}"
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", WITH_PARAMS)
def test_float16_layer_fed_float32_keeps_its_parameters_float16(name: str) -> None:
    """A layer casts nothing (the model does): a float16 layer called on float32 data may compute in
    float32 (NumPy's promotion) but its parameter gradients and buffers stay float16, and the values
    are those of the float16 call within float16's precision."""
    half, x = _built(name, "float16")
    if x.dtype.kind != "f":
        pytest.skip("integer input (indices)")
    training = not _stochastic(half, x)
    x32 = x.astype(np.float32)
    probe = copy.deepcopy(half).eval().forward(x)
    grads = _grads_for(probe)
    ref = _run(copy.deepcopy(half), x, grads, training)
    got = _run(copy.deepcopy(half), x32, grads, training)
    assert all(g.dtype == F16 for _, g in got["params"]), [(n, g.dtype) for n, g in got["params"]]
    assert all(v.dtype == F16 for v in got["state"].values() if v.dtype.kind == "f")
    tol, l2 = LOOSE.get(name, TOL), name in LOOSE
    problems = _close(got["out"], ref["out"], tol, "output", l2)
    for (n, g), (_, r) in zip(got["params"], ref["params"]):
        problems += _close(g, r, tol, f"{n}.grad", l2)
    assert problems == [], "\n".join(problems)


# -- 5. fit in float16 with the loss scaler, against float32 -------------------------------------


def _blobs(n: int = 256, classes: int = 3, dim: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = 2.5 * rng.standard_normal((classes, dim))
    y = rng.integers(0, classes, n)
    return centres[y] + rng.standard_normal((n, dim)), y


def _mlp() -> Any:
    return Sequential([layers.Linear(6, 32, activation="relu"), layers.Linear(32, 3)])


def _cnn() -> Any:
    return Sequential(
        [
            layers.Conv2d(1, 4, 3, padding=1),
            layers.BatchNorm(4),
            layers.ReLU(),
            layers.MaxPool2d(2),
            layers.AvgPool2d(2),
            layers.Flatten(),
            layers.Linear(4 * 2 * 2, 3),
        ]
    )


def _lstm() -> Any:
    return Sequential(
        [layers.LSTM(3, 8, batch_first=True, output="last"), layers.LayerNorm(8), layers.Linear(8, 3)]
    )


def _images() -> tuple[np.ndarray, np.ndarray]:
    x, y = _blobs(192, 3, 64)
    return x.reshape(-1, 1, 8, 8), y


def _sequences() -> tuple[np.ndarray, np.ndarray]:
    x, y = _blobs(192, 3, 3)
    t = np.linspace(0, 1, 12)[None, :, None]
    return x[:, None, :] * t + 0.1 * np.random.default_rng(1).standard_normal((192, 12, 3)), y


FITS = {"mlp": (_mlp, _blobs), "cnn": (_cnn, _images), "lstm": (_lstm, _sequences)}


@pytest.mark.parametrize("case", sorted(FITS))
def test_float16_fit_converges_like_float32(case: str) -> None:
    """The same model and data trained with Adam in float16 (float32 masters, the loss scaler) and in
    float32: the float16 losses track the float32 ones epoch by epoch and both learn the task."""
    build, data = FITS[case]
    x, y = data()
    histories, models = {}, {}
    for dtype in ("float32", "float16"):
        framework.set_default_dtype(dtype)
        framework.set_seed(3)
        model = build()
        model.compile(optimizer=layers_optimizer(), loss="cross_entropy", metrics=["accuracy"])
        histories[dtype] = model.fit(x.astype(dtype), y, epochs=8, batch_size=32, shuffle=False, verbose=0)
        models[dtype] = model
    framework.set_default_dtype("float32")
    l32, l16 = (np.array(histories[d].history["loss"]) for d in ("float32", "float16"))
    assert np.all(np.isfinite(l16))
    assert l32[-1] < 0.5 * l32[0], f"float32 did not learn: {l32}"
    # the first steps are skipped while the scale (2**15 at the start) halves to fit float16's range
    # (GradScaler does the same): the first epochs lag a few steps, the later ones track float32
    np.testing.assert_allclose(
        l16[3:], l32[3:], rtol=0.1, atol=0.01, err_msg=f"float16 {l16} against float32 {l32}"
    )
    assert histories["float16"].history["accuracy"][-1] >= histories["float32"].history["accuracy"][-1] - 0.03
    half = models["float16"]
    assert all(p.data.dtype == F16 for p in half.parameters())
    scaler = half.optimizer.loss_scaler
    assert scaler is not None and scaler.skipped <= 4, (
        f"{scaler.skipped} skipped steps: the scale should settle"
    )
    assert half.predict(x.astype(np.float32)).dtype == F16


def layers_optimizer() -> Any:
    return framework.optimizers.get("adam", learning_rate=1e-2)
