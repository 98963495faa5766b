"""Stack fuzz hunt: random ``Sequential`` stacks trained end to end against PyTorch.

Each layer is checked alone elsewhere; here a seeded generator composes the built-in
layers (Linear with fused activations, Conv1d/Conv2d with stride, padding, dilation
and groups, pools, BatchNorm, LayerNorm, GroupNorm, Dropout(p=0), activation layers,
Flatten, Reshape, LSTM/GRU/RNN stacks, Embedding) into random models, builds the
equivalent ``torch.nn.Sequential`` with the same weights (loaded through the
framework's PyTorch-named ``state_dict``), and trains both: ``fit`` (several epochs,
``shuffle=False``) against a PyTorch loop, with SGD (momentum, Nesterov, weight
decay), Adam, AdamW and RMSprop, the losses that pair with the output (the fused
softmax / sigmoid + cross-entropy pairs too), clipping, layers frozen part way, then
``evaluate`` / ``predict`` against PyTorch's eval mode, and ``train_on_batch`` and the
manual loop against ``fit``. float64 is compared tightly, float32 loosely. So the
executor's optimisations (no input gradient for the first layer, in-place gradient
overwrites, the loss fusion, reused workspaces and buffers) are checked in
composition. The bug it found is fixed: a layer unfrozen part way applied, at its first
step, every gradient it had gathered while frozen.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from support import requires_torch, torch_on_one_thread  # noqa: F401  (an autouse fixture)

import framework
import framework.layers as L
from framework import Sequential
from framework.training.callbacks.builtin import LambdaCallback
from plugins.adam import Adam, AdamW
from plugins.optimizers import SGD, RMSProp

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # pragma: no cover - the module is skipped below
    torch = F = nn = None

pytestmark = [requires_torch, pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")]

TIGHT = {"rtol": 1e-9, "atol": 1e-9}
LOOSE = {"rtol": 2e-3, "atol": 2e-4}


# -- torch twins of the layers that torch.nn spells differently ------------------------------

if torch is not None:

    class _RecOutput:
        """Makes a torch LSTM/GRU/RNN return the sequence or the last hidden state (our ``output=``)."""

        output = "sequence"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, h = super().forward(x)  # type: ignore[misc]
            if self.output == "sequence":
                return out
            if isinstance(h, tuple):
                h = h[0]
            return torch.cat([h[-2], h[-1]], 1) if self.bidirectional else h[-1]  # type: ignore[attr-defined]

    class _LSTM(_RecOutput, nn.LSTM):
        pass

    class _GRU(_RecOutput, nn.GRU):
        pass

    class _RNN(_RecOutput, nn.RNN):
        pass

    def _Rec(kind: str, output: str, **kw: Any) -> nn.Module:
        mod = {"LSTM": _LSTM, "GRU": _GRU, "RNN": _RNN}[kind](**kw)
        mod.output = output
        return mod

    class _Reshape(nn.Module):
        def __init__(self, shape: tuple[int, ...]) -> None:
            super().__init__()
            self.shape = shape

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape((x.shape[0], *self.shape))


# -- the generator ------------------------------------------------------------------------------

FUSED = {
    None: None,
    "relu": lambda: nn.ReLU(),
    "tanh": lambda: nn.Tanh(),
    "sigmoid": lambda: nn.Sigmoid(),
    "gelu": lambda: nn.GELU(),
    "elu": lambda: nn.ELU(),
    "leaky_relu": lambda: nn.LeakyReLU(),
    "silu": lambda: nn.SiLU(),
}

#: Activations with no linear piece: a shift before a BatchNorm through a linear map (or a
#: piecewise-linear activation on one side of its kink) has an exactly zero gradient, whose
#: rounding noise Adam and RMSprop amplify to full steps; before a BatchNorm we use these.
SMOOTH = ["tanh", "sigmoid", "gelu", "silu"]

ACT_LAYERS = [
    (lambda: L.ReLU(), lambda: nn.ReLU()),
    (lambda: L.LeakyReLU(0.2), lambda: nn.LeakyReLU(0.2)),
    (lambda: L.GELU(), lambda: nn.GELU()),
    (lambda: L.GELU("tanh"), lambda: nn.GELU("tanh")),
    (lambda: L.Tanh(), lambda: nn.Tanh()),
    (lambda: L.Sigmoid(), lambda: nn.Sigmoid()),
    (lambda: L.ELU(0.7), lambda: nn.ELU(0.7)),
    (lambda: L.SiLU(), lambda: nn.SiLU()),
    (lambda: L.Softplus(), lambda: nn.Softplus()),
    (lambda: L.Identity(), lambda: nn.Identity()),
]

#: mid-stack softmaxes, on (N, features) only: over a spatial axis they cancel a per-channel
#: bias before them (an exactly zero gradient)
MLP_ACT_LAYERS = [
    *ACT_LAYERS,
    (lambda: L.Softmax(), lambda: nn.Softmax(dim=-1)),
    (lambda: L.LogSoftmax(), lambda: nn.LogSoftmax(dim=-1)),
]


@dataclass
class Stack:
    """A random model: our layers, torch's modules, the input and what the output is."""

    ours: list[Any] = field(default_factory=list)
    theirs: list[Any] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()
    vocab: int | None = None  # integer input of this many symbols
    batch_first: bool = True
    desc: list[str] = field(default_factory=list)

    def add(self, ours: Any, *theirs: Any) -> None:
        self.ours.append(ours)
        self.theirs.extend(theirs)
        self.desc.append(repr(ours))


def _shape(stack: Stack, n: int = 2) -> tuple[int, ...]:
    """The current output shape (without the batch axis), computed by the torch twin (as built, float32)."""
    seq = nn.Sequential(*stack.theirs).eval()
    if stack.vocab is not None:
        x = torch.zeros((n, *stack.input_shape), dtype=torch.long)
    else:
        x = torch.zeros((n, *stack.input_shape))
        if not stack.batch_first:
            x = torch.zeros((stack.input_shape[0], n, *stack.input_shape[1:]))
    with torch.no_grad():
        return tuple(seq(x).shape[1:])


def _linear(
    stack: Stack, rng: np.random.Generator, fin: int, fout: int, last: bool = False, smooth: bool = False
) -> None:
    """A Linear, with a fused activation unless ``last``; a smooth one if ``smooth``."""
    act = None if last else rng.choice(SMOOTH if smooth else list(FUSED))
    bias = bool(rng.random() < 0.85)
    lin = L.Linear(fin, fout, activation=act, bias=bias)
    mods = [nn.Linear(fin, fout, bias=bias)]
    if act is not None:
        mods.append(FUSED[act]())
    stack.add(lin, *mods)


def _extras(stack: Stack, rng: np.random.Generator, features: int, r: float) -> None:
    """Optional norm (chosen by ``r``), activation layer and Dropout(0) on ``(N, features)`` data."""
    acts = MLP_ACT_LAYERS
    if r < 0.25:
        stack.add(L.BatchNorm(features, momentum=float(rng.choice([0.1, 0.3]))), None)
        stack.theirs[-1] = nn.BatchNorm1d(features, momentum=stack.ours[-1].momentum)
    elif r < 0.45 and features > 2:  # over two features LayerNorm gives +-1: no gradient
        stack.add(L.LayerNorm(features), nn.LayerNorm(features))
    if rng.random() < 0.4:
        ours, theirs = acts[rng.integers(len(acts))]
        stack.add(ours(), theirs())
    if rng.random() < 0.2:
        stack.add(L.Dropout(0.0), nn.Dropout(0.0))


def mlp(rng: np.random.Generator, out: int, seq_first: bool = False) -> Stack:
    stack = Stack()
    f = int(rng.integers(3, 7))
    stack.input_shape = (f,)
    if rng.random() < 0.2:  # a model that starts with a parameter-free layer
        ours, theirs = ACT_LAYERS[rng.integers(len(ACT_LAYERS))]
        stack.add(ours(), theirs())
    for _ in range(int(rng.integers(1, 4))):
        h = int(rng.integers(2, 7))
        r = rng.random()  # a bias before a BatchNorm has a zero gradient: rounding noise that Adam amplifies
        _linear(stack, rng, f, h, smooth=r < 0.25)
        _extras(stack, rng, h, r)
        f = h
    _linear(stack, rng, f, out, last=True)
    return stack


def _groups(rng: np.random.Generator, cin: int, cout: int) -> int:
    options = [g for g in (1, 2, 3) if cin % g == 0 and cout % g == 0]
    return int(rng.choice(options))


def conv2d(rng: np.random.Generator, out: int, seq_first: bool = False) -> Stack:
    stack = Stack()
    c, h, w = int(rng.integers(1, 4)), int(rng.integers(6, 10)), int(rng.integers(6, 10))
    stack.input_shape = (c, h, w)
    for _ in range(int(rng.integers(1, 3))):
        cin = _shape(stack)[0]
        cout = int(rng.choice([2, 3, 4, 6]))
        k: Any = int(rng.integers(1, 4))
        stride, pad, dil = int(rng.integers(1, 3)), int(rng.integers(0, 2)), int(rng.choice([1, 1, 2]))
        if rng.random() < 0.25:  # rectangular kernel, strides, padding
            k, stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4))), (int(rng.integers(1, 3)), 1)
            pad = (int(rng.integers(0, 2)), int(rng.integers(0, 2)))
        if rng.random() < 0.2:
            stride, pad = 1, "same"
        g = _groups(rng, cin, cout)
        r = rng.random()
        act = rng.choice(SMOOTH if r < 0.3 else [None, "relu", "tanh", "elu"])
        bias = bool(rng.random() < 0.8)
        before = stack.theirs[:]
        mods = [nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dil, groups=g, bias=bias)]
        if act is not None:
            mods.append(FUSED[act]())
        stack.theirs.extend(mods)
        try:
            hh, ww = _shape(stack)[1:]
        except RuntimeError:  # the dilated kernel is larger than the padded input
            hh = ww = 0
        stack.theirs = before
        if hh < 2 or ww < 2:
            continue
        stack.add(
            L.Conv2d(
                cin, cout, k, stride=stride, padding=pad, dilation=dil, groups=g, activation=act, bias=bias
            ),
            *mods,
        )
        if r < 0.3:
            stack.add(L.BatchNorm(cout), nn.BatchNorm2d(cout))
        elif r < 0.5:
            g = _groups(rng, cout, cout)
            stack.add(L.GroupNorm(g, cout), nn.GroupNorm(g, cout))
        if rng.random() < 0.3:
            ours, theirs = ACT_LAYERS[rng.integers(len(ACT_LAYERS))]
            stack.add(ours(), theirs())
        if min(hh, ww) >= 4 and rng.random() < 0.5:
            kp = int(rng.integers(2, 4))
            s, p, ceil = int(rng.integers(1, 3)), int(rng.integers(0, 2)), bool(rng.random() < 0.3)
            if rng.random() < 0.5:
                stack.add(L.MaxPool2d(kp, s, p, ceil_mode=ceil), nn.MaxPool2d(kp, s, p, ceil_mode=ceil))
            else:
                inc = bool(rng.random() < 0.5)
                stack.add(
                    L.AvgPool2d(kp, s, p, ceil_mode=ceil, count_include_pad=inc),
                    nn.AvgPool2d(kp, s, p, ceil_mode=ceil, count_include_pad=inc),
                )
    stack.add(L.Flatten(), nn.Flatten())
    f = _shape(stack)[0]
    if rng.random() < 0.5:
        h = int(rng.integers(3, 6))
        r = rng.random()
        _linear(stack, rng, f, h, smooth=r < 0.25)
        _extras(stack, rng, h, r)
        f = h
    _linear(stack, rng, f, out, last=True)
    return stack


def conv1d(rng: np.random.Generator, out: int, seq_first: bool = False) -> Stack:
    stack = Stack()
    if rng.random() < 0.4:  # Linear -> Reshape -> Conv1d
        f = int(rng.integers(3, 6))
        c, length = int(rng.integers(1, 3)), int(rng.integers(6, 10))
        stack.input_shape = (f,)
        _linear(stack, rng, f, c * length)
        stack.add(L.Reshape(c, length), _Reshape((c, length)))
    else:
        stack.input_shape = (int(rng.integers(1, 4)), int(rng.integers(7, 12)))
    for _ in range(int(rng.integers(1, 3))):
        cin, length = _shape(stack)
        cout = int(rng.choice([2, 3, 4]))
        k, stride, pad = int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.integers(0, 2))
        dil = int(rng.choice([1, 2]))
        if (length + 2 * pad - dil * (k - 1) - 1) // stride + 1 < 2:
            continue
        g = _groups(rng, cin, cout)
        r = rng.random()
        act = rng.choice(SMOOTH if r < 0.25 else [None, "relu", "gelu"])
        bias = bool(rng.random() < 0.8)
        mods = [nn.Conv1d(cin, cout, k, stride=stride, padding=pad, dilation=dil, groups=g, bias=bias)]
        if act is not None:
            mods.append(FUSED[act]())
        conv = L.Conv1d(
            cin, cout, k, stride=stride, padding=pad, dilation=dil, groups=g, activation=act, bias=bias
        )
        stack.add(conv, *mods)
        length = _shape(stack)[1]
        if r < 0.25:
            stack.add(L.BatchNorm(cout), nn.BatchNorm1d(cout))
        elif r < 0.45:
            stack.add(L.GroupNorm(1, cout), nn.GroupNorm(1, cout))
        if length >= 4 and rng.random() < 0.5:
            kp, s, ceil = int(rng.integers(2, 4)), int(rng.integers(1, 3)), bool(rng.random() < 0.3)
            p = int(rng.integers(0, 2))
            if rng.random() < 0.5:
                stack.add(L.MaxPool1d(kp, s, p, ceil_mode=ceil), nn.MaxPool1d(kp, s, p, ceil_mode=ceil))
            else:
                inc = bool(rng.random() < 0.5)
                stack.add(
                    L.AvgPool1d(kp, s, p, ceil_mode=ceil, count_include_pad=inc),
                    nn.AvgPool1d(kp, s, p, ceil_mode=ceil, count_include_pad=inc),
                )
    stack.add(L.Flatten(), nn.Flatten())
    _linear(stack, rng, _shape(stack)[0], out, last=True)
    return stack


def recurrent(rng: np.random.Generator, out: int, seq_first: bool = False) -> Stack:
    stack = Stack()
    t = int(rng.integers(2, 6))
    if rng.random() < 0.35:  # integer tokens through an Embedding
        stack.vocab = int(rng.integers(4, 9))
        e = int(rng.integers(2, 5))
        stack.input_shape = (t,)
        pad_idx = int(rng.integers(0, stack.vocab)) if rng.random() < 0.4 else None
        stack.add(
            L.Embedding(stack.vocab, e, padding_idx=pad_idx),
            nn.Embedding(stack.vocab, e, padding_idx=pad_idx),
        )
        f, batch_first = e, True
    else:
        f = int(rng.integers(2, 5))
        batch_first = not (seq_first and rng.random() < 0.6)
        stack.batch_first = batch_first
        stack.input_shape = (t, f)
    depth = int(rng.integers(1, 3))
    final = "last" if not batch_first or rng.random() < 0.7 else "sequence"
    for i in range(depth):
        kind = str(rng.choice(["LSTM", "GRU", "RNN"]))
        h = int(rng.integers(2, 5))
        kw = {"num_layers": int(rng.integers(1, 3)), "bidirectional": bool(rng.random() < 0.3)}
        output = final if i == depth - 1 else "sequence"
        cls = getattr(L, kind)
        stack.add(
            cls(f, h, batch_first=batch_first, output=output, **kw),
            _Rec(kind, output, input_size=f, hidden_size=h, batch_first=batch_first, **kw),
        )
        f = h * (2 if kw["bidirectional"] else 1)
        if output == "sequence" and f > 2 and rng.random() < 0.3:
            stack.add(L.LayerNorm(f), nn.LayerNorm(f))
    if final == "sequence":
        stack.add(L.Flatten(), nn.Flatten())
        f = _shape(stack)[0]
    _linear(stack, rng, f, out, last=True)
    return stack


FAMILIES = {"mlp": mlp, "conv2d": conv2d, "conv1d": conv1d, "recurrent": recurrent}

# -- losses: (framework name, last layer added, torch loss of (output, target), target kind)


def _clamped_nll(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -torch.log(p.clamp(1e-7, 1 - 1e-7)).gather(1, y[:, None]).mean()


def _clamped_bce(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-7, 1 - 1e-7)
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


def _onehot_ce(o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(o, y)  # y one-hot: torch's class-probability targets


def _clamped_cce(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = (p / p.sum(1, keepdim=True)).clamp(1e-7, 1 - 1e-7)
    return -(y * torch.log(p)).sum(1).mean()


#: name -> (last layer added, our loss (name, kwargs), torch loss of (output, target), target kind)
LOSSES = {
    "cross_entropy": (None, ("cross_entropy", {}), lambda o, y: F.cross_entropy(o, y), "labels"),
    "cross_entropy_onehot": (None, ("cross_entropy", {}), _onehot_ce, "onehot"),
    "softmax+sparse_categorical_crossentropy": (
        "softmax",
        ("sparse_categorical_crossentropy", {}),
        _clamped_nll,
        "labels",
    ),
    "softmax+categorical_crossentropy": ("softmax", ("categorical_crossentropy", {}), _clamped_cce, "onehot"),
    "categorical_crossentropy_logits": (
        None,
        ("categorical_crossentropy", {"from_logits": True}),
        _onehot_ce,
        "onehot",
    ),
    "mse": (None, ("mse", {}), lambda o, y: F.mse_loss(o, y), "real"),
    "mae": (None, ("mae", {}), lambda o, y: F.l1_loss(o, y), "real"),
    "huber": (None, ("huber", {"delta": 0.7}), lambda o, y: F.huber_loss(o, y, delta=0.7), "real"),
    "sigmoid+mse": ("sigmoid", ("mse", {}), lambda o, y: F.mse_loss(o, y), "binary"),
    "bce_with_logits": (
        None,
        ("bce_with_logits", {}),
        lambda o, y: F.binary_cross_entropy_with_logits(o, y),
        "binary",
    ),
    "sigmoid+binary_crossentropy": ("sigmoid", ("binary_crossentropy", {}), _clamped_bce, "binary"),
    "binary_crossentropy_logits": (
        None,
        ("binary_crossentropy", {"from_logits": True}),
        lambda o, y: F.binary_cross_entropy_with_logits(o, y),
        "binary",
    ),
    # a softmax / sigmoid before a logits loss: applied twice (compile warns), but computed as asked
    "softmax+cross_entropy": ("softmax", ("cross_entropy", {}), lambda o, y: F.cross_entropy(o, y), "labels"),
    "sigmoid+bce_with_logits": (
        "sigmoid",
        ("bce_with_logits", {}),
        lambda o, y: F.binary_cross_entropy_with_logits(o, y),
        "binary",
    ),
}

#: the pairs whose gradient the framework fuses: the same loss from the logits, for the gradient
FUSED_LOSSES = {
    "softmax+sparse_categorical_crossentropy": lambda z, y: F.cross_entropy(z, y),
    "softmax+categorical_crossentropy": lambda z, y: F.cross_entropy(z, y),
    "sigmoid+binary_crossentropy": lambda z, y: F.binary_cross_entropy_with_logits(z, y),
}

# -- optimizers: (ours, torch class, shared keyword arguments)

OPTIMIZERS = {
    "sgd": (SGD, "SGD", {"lr": 0.1}),
    "sgd_momentum_wd": (SGD, "SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    "sgd_nesterov": (SGD, "SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    "adam": (Adam, "Adam", {"lr": 0.01}),
    "adam_wd": (Adam, "Adam", {"lr": 0.01, "weight_decay": 0.05, "amsgrad": True}),
    "adamw": (AdamW, "AdamW", {"lr": 0.01, "weight_decay": 0.1}),
    "rmsprop": (RMSProp, "RMSprop", {"lr": 0.01, "momentum": 0.5}),
    "rmsprop_centered": (RMSProp, "RMSprop", {"lr": 0.005, "centered": True, "alpha": 0.9}),
}


def make_stack(
    seed: int,
    dtype: Any = np.float64,
    family: str | None = None,
    loss: str | None = None,
    optimizer: str | None = None,
    seq_first: bool = False,
) -> tuple[np.random.Generator, Stack, str, str, int]:
    """The layers of :func:`make_case`'s model (its first draws): ``(rng, stack, loss, optimizer, out)``."""
    rng = np.random.default_rng(seed)
    family = family or str(rng.choice(list(FAMILIES)))
    loss = loss or str(rng.choice(list(LOSSES)))
    optimizer = optimizer or str(rng.choice(list(OPTIMIZERS)))
    link = LOSSES[loss][0]
    out = int(rng.integers(2, 5))
    framework.set_default_dtype(dtype)
    framework.set_seed(seed)
    torch.default_generator.manual_seed(seed)  # torch.manual_seed also seeds CUDA lazily, recording the stack
    stack = FAMILIES[family](rng, out, seq_first)
    if link == "softmax":
        stack.add(L.Softmax(), nn.Softmax(dim=-1))
    elif link == "sigmoid":
        stack.add(L.Sigmoid(), nn.Sigmoid())
    return rng, stack, loss, optimizer, out


@dataclass
class Case:
    """One random model with its data, loss and optimizer, in both frameworks."""

    stack: Stack
    model: Any
    twin: Any
    x: np.ndarray
    y: np.ndarray
    loss: str
    optimizer: str
    dtype: Any


def make_case(
    seed: int,
    dtype: Any = np.float64,
    family: str | None = None,
    loss: str | None = None,
    optimizer: str | None = None,
    n: int = 8,
    clip: dict | None = None,
    seq_first: bool = False,
    made: tuple[np.random.Generator, Stack, str, str, int] | None = None,
) -> Case:
    """Build a random model of ``family`` (chosen by the seed if None) and its torch twin.

    ``made``: :func:`make_stack`'s result for the same arguments, just built by the caller.
    """
    rng, stack, loss, optimizer, out = made or make_stack(seed, dtype, family, loss, optimizer, seq_first)
    _, (loss_name, loss_kw), _, target = LOSSES[loss]
    if stack.batch_first:
        model = Sequential(list(stack.ours), input_shape=stack.input_shape)
    else:  # input_shape declares a batch-first input: a sequence-first model builds at its first call
        model = Sequential(list(stack.ours))
        model(np.zeros((stack.input_shape[0], 2, *stack.input_shape[1:]), dtype), training=False)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    twin = nn.Sequential(*stack.theirs).to(tdtype)
    state = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict(format="torch").items()}
    twin.load_state_dict(state, strict=True)
    if stack.vocab is not None:
        x = rng.integers(0, stack.vocab, size=(n, *stack.input_shape))
    elif stack.batch_first:
        x = rng.standard_normal((n, *stack.input_shape)).astype(dtype)
    else:
        x = rng.standard_normal((stack.input_shape[0], n, *stack.input_shape[1:])).astype(dtype)
    if target == "labels":
        y = rng.integers(0, out, size=n)
    elif target == "onehot":
        y = np.eye(out, dtype=dtype)[rng.integers(0, out, size=n)]
    elif target == "binary":
        y = (rng.random((n, out)) < 0.5).astype(dtype)
    else:
        y = rng.standard_normal((n, out)).astype(dtype)
    ours_cls, _, kw = OPTIMIZERS[optimizer]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the pairing warning of the doubled activations
        model.compile(
            optimizer=ours_cls(**kw, **(clip or {})), loss=framework.losses.get(loss_name, **loss_kw)
        )
    return Case(stack, model, twin, x, y, loss, optimizer, dtype)


def _t(a: np.ndarray, dtype: Any) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(a))
    return t if t.dtype in (torch.int64, torch.int32) else t.to(dtype)


def torch_train(
    case: Case,
    epochs: int,
    batch_size: int,
    clip: dict | None = None,
    freeze: dict[int, list[tuple[int, bool]]] | None = None,
) -> tuple[list[float], list[dict]]:
    """Train the twin as fit does; returns the per-epoch mean batch losses and states."""
    tdtype = torch.float64 if case.dtype == np.float64 else torch.float32
    _, tname, kw = OPTIMIZERS[case.optimizer]
    opt = getattr(torch.optim, tname)(case.twin.parameters(), **kw)
    lossfn = LOSSES[case.loss][2]
    x, y = _t(case.x, tdtype), _t(case.y, tdtype)
    batch_axis = 0 if case.stack.batch_first else 1
    n = x.shape[batch_axis]
    losses, states = [], []
    case.twin.train()
    for epoch in range(epochs):
        for idx, trainable in (freeze or {}).get(epoch, []):
            mod = case.twin[idx]
            for p in mod.parameters():
                p.requires_grad_(trainable)
                p.grad = None
            if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                mod.train(trainable)  # docs/guide/modes.md: a frozen BatchNorm runs in inference mode
        batch_losses = []
        for start in range(0, n, batch_size):
            xb = x.narrow(batch_axis, start, min(batch_size, n - start))
            yb = y[start : start + batch_size]
            opt.zero_grad()
            if case.loss in FUSED_LOSSES:
                # docs/guide/losses.md, "The fused gradient": the value is the clipped loss of the
                # probabilities, the gradient w.r.t. the logits (p - t) w / N, clip or not
                logits = case.twin[:-1](xb)
                exact = FUSED_LOSSES[case.loss](logits, yb)
                value = exact + (lossfn(case.twin[-1](logits), yb) - exact).detach()
            else:
                value = lossfn(case.twin(xb), yb)
            if value.requires_grad:  # else every layer is frozen
                value.backward()
            params = [p for p in case.twin.parameters() if p.grad is not None]
            if clip and "clipvalue" in clip:
                torch.nn.utils.clip_grad_value_(params, clip["clipvalue"])
            if clip and "clipnorm" in clip:
                total = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params))
                if total > clip["clipnorm"]:  # the base Optimizer's rule (see its docstring)
                    for p in params:
                        p.grad.mul_(clip["clipnorm"] / (total + 1e-12))
            opt.step()
            batch_losses.append(float(value.detach()) * len(yb))
        # docs/guide/training.md: the epoch loss is the mean over samples (batches weighted by size)
        losses.append(float(np.sum(batch_losses)) / len(y))
        states.append({k: v.detach().numpy().copy() for k, v in case.twin.state_dict().items()})
    return losses, states


def _trainable_state(case: Case) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in case.model.state_dict(format="torch").items()}


def fit_with_states(
    case: Case, epochs: int, batch_size: int, freeze: dict[int, list[tuple[int, bool]]] | None = None
) -> tuple[list[float], list[dict]]:
    """``fit`` epoch by epoch (freezing our layers as asked); the losses and states after each."""
    states: list[dict] = []
    if not freeze:
        record = LambdaCallback(on_epoch_end=lambda epoch, logs=None: states.append(_trainable_state(case)))
        hist = case.model.fit(
            case.x, case.y, epochs=epochs, batch_size=batch_size, shuffle=False, verbose=0, callbacks=[record]
        )
        return list(hist.history["loss"]), states
    losses = []
    for epoch in range(epochs):
        for idx, trainable in freeze.get(epoch, []):
            case.model.layers[_our_index(case, idx)].trainable = trainable
        hist = case.model.fit(case.x, case.y, epochs=1, batch_size=batch_size, shuffle=False, verbose=0)
        losses.extend(hist.history["loss"])
        states.append(_trainable_state(case))
    return losses, states


def _our_index(case: Case, torch_index: int) -> int:
    """Our layer at torch position ``torch_index`` (fused activations take two positions)."""
    pos = 0
    for i, layer in enumerate(case.stack.ours):
        if pos == torch_index:
            return i
        act = getattr(layer, "activation", None)
        pos += 1 + (
            act is not None
            and type(act).__name__ != "Identity"
            and isinstance(layer, (L.Linear, L.Conv1d, L.Conv2d))
        )
    raise AssertionError(torch_index)


def assert_states(ours: list[dict], theirs: list[dict], tol: dict, what: str) -> None:
    assert len(ours) == len(theirs)
    for epoch, (a, b) in enumerate(zip(ours, theirs)):
        assert sorted(a) == sorted(b), what
        for key in b:
            mine, ref = np.asarray(a[key], dtype=np.float64), b[key].astype(np.float64)
            if mine.shape == ref.shape:  # assert_allclose's test on finite values first: a tenth of its cost
                with np.errstate(invalid="ignore", over="ignore"):
                    close = np.abs(mine - ref) <= tol["atol"] + tol["rtol"] * np.abs(ref)
                if close.all() and np.isfinite(ref).all():
                    continue
            np.testing.assert_allclose(mine, ref, **tol, err_msg=f"{what}: {key} after epoch {epoch + 1}")


def _tol(dtype: Any) -> dict:
    return TIGHT if dtype == np.float64 else LOOSE


def _param_positions(case: Case) -> list[int]:
    """Torch positions of the modules that hold parameters."""
    return [i for i, mod in enumerate(case.twin) if any(True for _ in mod.parameters())]


# -- sanity of the harness --------------------------------------------------------------------


def test_generator_covers_the_layer_kinds():
    """The seeds used below build every layer kind the hunt is about, at least once."""
    kinds = set()
    for seed in [*range(N_FIT), *range(100, 106), *range(300, 306), *range(400, 405), *range(500, 505)]:
        for layer in make_stack(seed)[1].ours:
            kinds.update({type(layer).__name__, type(getattr(layer, "activation", None)).__name__})
    wanted = {
        "Linear",
        "Conv1d",
        "Conv2d",
        "MaxPool1d",
        "MaxPool2d",
        "AvgPool1d",
        "AvgPool2d",
        "BatchNorm",
        "LayerNorm",
        "GroupNorm",
        "Dropout",
        "Flatten",
        "Reshape",
        "LSTM",
        "GRU",
        "RNN",
        "Embedding",
        "Softmax",
        "LeakyReLU",
        "GELU",
        "ELU",
        "Tanh",
        "Sigmoid",
    }
    assert wanted <= kinds, wanted - kinds


def test_the_harness_sees_a_weight_off_by_one_part_in_ten_million():
    case = make_case(3)
    with torch.no_grad():
        next(case.twin.parameters()).mul_(1 + 1e-7)
    ours = fit_with_states(case, 1, 4)
    theirs = torch_train(case, 1, 4)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(ours[0], theirs[0], **TIGHT)
        assert_states(ours[1], theirs[1], TIGHT, "")


# -- fit against a torch loop -----------------------------------------------------------------

N_FIT = 14


@pytest.mark.parametrize("seed", range(N_FIT))
def test_fit_matches_torch_float64(seed):
    """Per-epoch History loss and every weight / buffer after each epoch equal torch's, 1e-9."""
    rng = np.random.default_rng(seed + 10_000)
    n, batch_size = int(rng.integers(5, 12)), int(rng.choice([1, 3, 4, 16]))
    made = make_stack(seed)
    if "BatchNorm" in repr(made[1].desc):  # one sample per channel: refused, as torch does
        batch_size = max(batch_size, 2)
        n += n % batch_size == 1
    case = make_case(seed, np.float64, n=n, made=made)
    ours = fit_with_states(case, 3, batch_size)
    theirs = torch_train(case, 3, batch_size)
    np.testing.assert_allclose(ours[0], theirs[0], **TIGHT, err_msg="History loss")
    assert_states(ours[1], theirs[1], TIGHT, f"{case.loss}/{case.optimizer} {case.stack.desc}")


@pytest.mark.parametrize("seed", range(100, 106))
def test_fit_matches_torch_float32(seed):
    case = make_case(seed, np.float32)
    assert all(p.data.dtype == np.float32 for p in case.model.parameters())
    ours = fit_with_states(case, 2, 4)
    theirs = torch_train(case, 2, 4)
    np.testing.assert_allclose(ours[0], theirs[0], **LOOSE, err_msg="History loss")
    assert_states(ours[1], theirs[1], LOOSE, f"{case.loss}/{case.optimizer} {case.stack.desc}")


@pytest.mark.parametrize(
    ("optimizer", "family"),
    [(o, list(FAMILIES)[(i + k) % 4]) for i, o in enumerate(OPTIMIZERS) for k in (0,)],
)
def test_every_optimizer(family, optimizer):
    seed = 1000 + list(OPTIMIZERS).index(optimizer) * 7 + list(FAMILIES).index(family)
    case = make_case(seed, np.float64, family=family, optimizer=optimizer)
    ours = fit_with_states(case, 2, 4)
    theirs = torch_train(case, 2, 4)
    np.testing.assert_allclose(ours[0], theirs[0], **TIGHT)
    assert_states(ours[1], theirs[1], TIGHT, case.stack.desc)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_every_loss_pairing(loss):
    seed = 2000 + list(LOSSES).index(loss)
    case = make_case(
        seed, np.float64, family=str(["mlp", "conv2d", "conv1d", "recurrent"][seed % 4]), loss=loss
    )
    ours = fit_with_states(case, 2, 4)
    theirs = torch_train(case, 2, 4)
    np.testing.assert_allclose(ours[0], theirs[0], **TIGHT)
    assert_states(ours[1], theirs[1], TIGHT, case.stack.desc)


# -- frozen layers and clipping ---------------------------------------------------------------


@pytest.mark.parametrize("seed", range(300, 306))
def test_layers_frozen_part_way(seed):
    """One or two layers frozen (``trainable = False``) before the first epoch or after it."""
    rng = np.random.default_rng(seed)
    case = make_case(seed, np.float64)
    positions = _param_positions(case)
    chosen = [
        int(i)
        for i in rng.choice(positions, size=min(len(positions), int(rng.integers(1, 3))), replace=False)
    ]
    freeze = {int(rng.integers(0, 2)): [(i, False) for i in chosen]}
    ours = fit_with_states(case, 3, 4, freeze)
    theirs = torch_train(case, 3, 4, freeze=freeze)
    np.testing.assert_allclose(ours[0], theirs[0], **TIGHT)
    assert_states(ours[1], theirs[1], TIGHT, f"{case.optimizer} frozen {chosen} {case.stack.desc}")


def _two_linears(seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    framework.set_default_dtype(np.float64)
    framework.set_seed(seed)
    rng = np.random.default_rng(seed)
    return (
        Sequential([L.Linear(3, 4), L.Linear(4, 2)], input_shape=(3,)),
        rng.standard_normal((4, 3)),
        rng.standard_normal((4, 2)),
    )


def test_unfreezing_a_layer_steps_with_the_current_gradient_only():
    """Repro: two steps with layer 1 frozen, unfreeze, one step: equal to a twin that never froze it."""
    model, x, y = _two_linears(0)
    model.compile(optimizer=SGD(lr=0.1), loss="mse")
    model.layers[1].trainable = False
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    model.layers[1].trainable = True
    twin, _, _ = _two_linears(0)
    twin.set_weights(model.get_weights())
    twin.compile(optimizer=SGD(lr=0.1), loss="mse")
    model.train_on_batch(x, y)
    twin.train_on_batch(x, y)
    for ours, expected in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(ours, expected, rtol=1e-12)


def test_unfreezing_in_the_manual_loop():
    """The same through ``optimizer.zero_grad()`` / ``backward`` / ``step`` (docs/guide/training.md)."""
    model, x, y = _two_linears(1)
    opt = SGD(model, lr=0.1)
    loss = framework.losses.get("mse")
    model.train()

    def step(net: Any, optimizer: Any) -> None:
        optimizer.zero_grad()
        loss.forward(net(x), y)
        net.backward(loss.backward())
        optimizer.step()

    model.layers[1].trainable = False
    step(model, opt)
    model.layers[1].trainable = True
    twin, _, _ = _two_linears(1)
    twin.set_weights(model.get_weights())
    twin.train()
    step(model, opt)
    step(twin, SGD(twin, lr=0.1))
    for ours, expected in zip(model.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(ours, expected, rtol=1e-12)


@pytest.mark.parametrize("seed", [306, 309])
def test_layer_unfrozen_part_way(seed):
    """Fuzz: frozen from the start or after epoch 1, one unfrozen for epoch 3 (SGD)."""
    rng = np.random.default_rng(seed)
    case = make_case(seed, np.float64)
    positions = _param_positions(case)
    chosen = [
        int(i)
        for i in rng.choice(positions, size=min(len(positions), int(rng.integers(1, 3))), replace=False)
    ]
    freeze = {int(rng.integers(0, 2)): [(i, False) for i in chosen], 2: [(chosen[0], True)]}
    ours = fit_with_states(case, 3, 4, freeze)
    theirs = torch_train(case, 3, 4, freeze=freeze)
    assert_states(ours[1], theirs[1], TIGHT, f"{case.optimizer} frozen {chosen} {case.stack.desc}")


@pytest.mark.parametrize("seed", range(400, 405))
def test_clipping(seed):
    """clipvalue (torch.nn.utils.clip_grad_value_) then clipnorm (the global norm, see the base class)."""
    clip = [{"clipvalue": 0.05}, {"clipnorm": 0.1}, {"clipvalue": 0.1, "clipnorm": 0.2}][seed % 3]
    case = make_case(seed, np.float64, clip=clip)
    ours = fit_with_states(case, 2, 4)
    theirs = torch_train(case, 2, 4, clip=clip)
    np.testing.assert_allclose(ours[0], theirs[0], **TIGHT)
    assert_states(ours[1], theirs[1], TIGHT, f"{clip} {case.optimizer} {case.stack.desc}")


# -- evaluate / predict after training ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", range(500, 505))
def test_evaluate_and_predict_after_fit_equal_torch_eval_mode(seed, dtype):
    case = make_case(seed, dtype)
    case.model.fit(case.x, case.y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    torch_train(case, 2, 4)
    case.twin.eval()
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    with torch.no_grad():
        out = case.twin(_t(case.x, tdtype))
        loss = float(LOSSES[case.loss][2](out, _t(case.y, tdtype)))
    tol = _tol(dtype)
    for batch_size in (None, 3):
        pred = case.model.predict(case.x, batch_size=batch_size)
        assert pred.dtype == dtype
        np.testing.assert_allclose(pred, out.numpy(), **tol, err_msg=case.stack.desc)
        result = case.model.evaluate(case.x, case.y, batch_size=batch_size, verbose=0)
        np.testing.assert_allclose(result["loss"], loss, **tol, err_msg=case.stack.desc)
    np.testing.assert_allclose(case.model(case.x, training=False), out.numpy(), **tol)


# -- train_on_batch and the manual loop against fit -----------------------------------------------


@pytest.mark.parametrize("seed", range(600, 603))
def test_train_on_batch_equals_fit(seed):
    case = make_case(seed, np.float64)
    twin = make_case(seed, np.float64)
    losses = []
    for _ in range(2):
        for start in range(0, len(case.y), 4):
            sl = slice(start, start + 4)
            losses.append(twin.model.train_on_batch(twin.x[sl], twin.y[sl]))
    theirs = torch_train(case, 2, 4)
    ours = fit_with_states(case, 2, 4)
    assert_states([_trainable_state(twin)], [ours[1][-1]], TIGHT, "train_on_batch vs fit")
    assert_states([_trainable_state(twin)], [theirs[1][-1]], TIGHT, "train_on_batch vs torch")
    sizes = [len(case.y[s : s + 4]) for s in range(0, len(case.y), 4)]
    last_epoch = np.dot(losses[-len(sizes) :], sizes) / len(case.y)
    np.testing.assert_allclose(last_epoch, ours[0][-1], **TIGHT)


def _manual_loop(case: Case, epochs: int, batch_size: int) -> list[float]:
    """The documented manual loop (docs/guide/training.md) with the compiled loss and optimizer."""
    _, (name, kw), _, _ = LOSSES[case.loss]
    loss_fn = framework.losses.get(name, **kw)
    opt = case.model.optimizer
    axis = 0 if case.stack.batch_first else 1
    n = case.x.shape[axis]
    losses = []
    case.model.train()
    for _ in range(epochs):
        for start in range(0, n, batch_size):
            xb = np.take(case.x, np.arange(start, min(n, start + batch_size)), axis=axis)
            opt.zero_grad()
            losses.append(loss_fn.forward(case.model(xb), case.y[start : start + batch_size]))
            case.model.backward(loss_fn.backward())
            opt.step()
    return losses


@pytest.mark.parametrize("seed", range(700, 705))
def test_manual_loop_equals_torch(seed):
    """forward / loss / backward / step by hand, sequence-first recurrent stacks included."""
    case = make_case(seed, np.float64, family="recurrent" if seed % 2 else None, seq_first=True)
    batch_size = len(case.y) if not case.stack.batch_first else 4
    ours = _manual_loop(case, 2, batch_size)
    theirs = torch_train(case, 2, batch_size)
    assert_states([_trainable_state(case)], [theirs[1][-1]], TIGHT, case.stack.desc)
    assert len(ours) == 2 * math.ceil(len(case.y) / batch_size)


@pytest.mark.parametrize("seed", range(800, 803))
def test_predict_and_evaluate_inside_fit_leave_training_unchanged(seed):
    """Inference calls between batches and epochs (reused buffers, other batch sizes) and validation."""
    case = make_case(seed, np.float64)
    states: list[dict] = []

    def on_epoch_end(epoch: int, logs: Any = None) -> None:
        case.model.predict(case.x[:3])
        case.model.evaluate(case.x, case.y, batch_size=5, verbose=0)
        states.append(_trainable_state(case))

    hist = case.model.fit(
        case.x,
        case.y,
        epochs=3,
        batch_size=4,
        shuffle=False,
        verbose=0,
        validation_data=(case.x[:5], case.y[:5]),
        callbacks=[
            LambdaCallback(
                on_epoch_end=on_epoch_end, on_batch_end=lambda b, logs=None: case.model.predict(case.x[:1])
            )
        ],
    )
    losses, theirs = torch_train(case, 3, 4)
    np.testing.assert_allclose(hist.history["loss"], losses, **TIGHT)
    assert_states(states, theirs, TIGHT, case.stack.desc)
