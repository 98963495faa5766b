"""Whole-model cases: training through ``fit`` and inference through ``predict``.

Each model exists three times: built with this framework (``ours``), as the
equivalent ``torch.nn`` module trained by the loop a PyTorch user writes
(slice the in-memory tensors, ``zero_grad``, forward, loss, ``backward``,
``step``, ``loss.item()``), and as its GEMM floor (``floor``): the matrix
products our lowering performs for one step -- the same shapes, on
preallocated float32 arrays with ``out=`` -- timed alone, so the table shows
how close a step runs to the hardware's matrix speed. The floor counts only the
products a step needs (no input gradient for the first layer, as PyTorch), each
in whichever of its two layouts (``A B`` or ``(B^T A^T)^T``) BLAS runs faster;
it lives in :mod:`benchmarks.floors`, which this module names in the cases'
``module:function`` specs but does not import.

Every function here takes ``quick`` and returns a callable that runs one round
(one epoch over the fixed data set, or one ``predict`` over it) and returns
milliseconds per step (per batch). Heavy imports happen inside the functions,
in the worker subprocess of that implementation.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.case import Case

#: The module of the ``floor`` implementations (see :mod:`benchmarks.floors`).
FLOORS = "benchmarks.floors"

#: Batches in the fixed training / inference data set (``--quick``: 3).
BATCHES = 30
QUICK_BATCHES = 3

MODELS = {
    "mlp": {"batch": 128, "input": (784,), "optimizer": "sgd"},
    "lenet": {"batch": 64, "input": (1, 28, 28), "optimizer": "sgd"},
    "lenet_bn": {"batch": 64, "input": (1, 28, 28), "optimizer": "sgd"},
    "fashion_cnn": {"batch": 128, "input": (1, 28, 28), "optimizer": "adam"},
}


def _data(model: str, quick: bool, batches: int | None = None) -> tuple[Any, Any, int]:
    import numpy as np

    spec = MODELS[model]
    n = spec["batch"] * (batches or (QUICK_BATCHES if quick else BATCHES))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, *spec["input"]), dtype=np.float32)
    y = rng.integers(0, 10, n)
    return x, y, spec["batch"]


# -- this framework ------------------------------------------------------------


def _fashion_example() -> Any:
    """``build_model`` of ``examples/fashion_mnist_cnn.py`` (``None`` if the example is missing)."""
    path = Path(__file__).resolve().parent.parent / "examples" / "fashion_mnist_cnn.py"
    if not path.exists():
        return None
    if str(path.parent) not in sys.path:  # the example imports its sibling ``common``
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("_fashion_mnist_cnn", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.build_model


def build_ours(model: str) -> Any:
    """The framework's model ``model``, compiled as the case trains it."""
    import framework
    from framework import Sequential
    from framework.layers import BatchNorm, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU

    if model == "mlp":
        net = Sequential(
            [Linear(784, 512, activation="relu"), Linear(512, 256, activation="relu"), Linear(256, 10)]
        )
    elif model in ("lenet", "lenet_bn"):
        bn = model == "lenet_bn"
        layers = [Conv2d(1, 6, 5, padding=2), *([BatchNorm(6)] if bn else []), ReLU(), MaxPool2d(2)]
        layers += [Conv2d(6, 16, 5), *([BatchNorm(16)] if bn else []), ReLU(), MaxPool2d(2), Flatten()]
        layers += [Linear(400, 120, activation="relu"), Linear(120, 84, activation="relu")]
        layers += [*([Dropout(0.5)] if bn else []), Linear(84, 10)]
        net = Sequential(layers)
    elif model == "fashion_cnn":
        build = _fashion_example()
        net = build() if build is not None else build_ours("lenet_bn")
    else:
        raise ValueError(f"unknown model {model!r}")
    if MODELS[model]["optimizer"] == "adam":
        optimizer = framework.optimizers.get("adam", lr=1e-3)
    else:
        optimizer = framework.optimizers.get("sgd", lr=0.01, momentum=0.9)
    net.compile(optimizer=optimizer, loss="cross_entropy")
    return net


def _ours_train(model: str, quick: bool, threads: int | None = None) -> Callable[[], float]:
    x, y, batch = _data(model, quick)
    net = build_ours(model)
    steps = len(x) // batch

    def run() -> float:
        start = time.perf_counter()
        net.fit(x, y, epochs=1, batch_size=batch, shuffle=False, verbose=0, threads=threads)
        return (time.perf_counter() - start) * 1e3 / steps

    return run


def _ours_predict(model: str, quick: bool) -> Callable[[], float]:
    x, y, batch = _data(model, quick)
    net = build_ours(model)
    net.fit(x[:batch], y[:batch], epochs=1, batch_size=batch, verbose=0)  # build, as a trained model is
    steps = len(x) // batch

    def run() -> float:
        start = time.perf_counter()
        net.predict(x, batch_size=batch)
        return (time.perf_counter() - start) * 1e3 / steps

    return run


# -- PyTorch -------------------------------------------------------------------


def build_torch(model: str) -> tuple[Any, Any]:
    """The ``torch.nn`` twin of ``model`` and its optimizer."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    if model == "mlp":
        net = nn.Sequential(
            nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)
        )
    elif model in ("lenet", "lenet_bn"):
        bn = model == "lenet_bn"
        net = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),
            *([nn.BatchNorm2d(6)] if bn else []),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            *([nn.BatchNorm2d(16)] if bn else []),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(400, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            *([nn.Dropout(0.5)] if bn else []),
            nn.Linear(84, 10),
        )
    elif model == "fashion_cnn":
        from benchmarks.torch_fashion_mnist import build_model

        net = build_model(torch)
    else:
        raise ValueError(f"unknown model {model!r}")
    if MODELS[model]["optimizer"] == "adam":
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    else:
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    return net, optimizer


def torch_train_loop(net: Any, optimizer: Any, x: Any, y: Any, batch: int) -> float:
    """One epoch of the plain PyTorch loop over in-memory tensors; returns the mean loss."""
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()
    net.train()
    total, count = 0.0, 0
    for start in range(0, len(x), batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        optimizer.zero_grad()
        loss = loss_fn(net(xb), yb)
        loss.backward()
        optimizer.step()
        total += loss.item()
        count += 1
    return total / count


def _torch_train(model: str, quick: bool) -> Callable[[], float]:
    import torch

    x_np, y_np, batch = _data(model, quick)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    net, optimizer = build_torch(model)
    steps = len(x) // batch

    def run() -> float:
        start = time.perf_counter()
        torch_train_loop(net, optimizer, x, y, batch)
        return (time.perf_counter() - start) * 1e3 / steps

    return run


def _torch_predict(model: str, quick: bool) -> Callable[[], float]:
    import torch

    x_np, _, batch = _data(model, quick)
    x = torch.from_numpy(x_np)
    net, _ = build_torch(model)
    steps = len(x) // batch

    def run() -> float:
        start = time.perf_counter()
        net.eval()
        with torch.inference_mode():
            torch.cat([net(x[s : s + batch]) for s in range(0, len(x), batch)]).numpy()
        return (time.perf_counter() - start) * 1e3 / steps

    return run


# -- the naive baseline --------------------------------------------------------

NAIVE_BATCH = 4


def naive_train(quick: bool) -> Callable[[], float]:
    """The per-output-pixel loop LeNet-5 (BatchNorm, Dropout): ms per *sample* of a small batch."""
    import numpy as np

    from benchmarks.naive_lenet import NaiveLeNet

    x, y, _ = _data("lenet_bn", True, batches=1)
    x, y = x[:NAIVE_BATCH], y[:NAIVE_BATCH]
    net = NaiveLeNet()
    steps = 1

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            net.train_step(x, y)
        return (time.perf_counter() - start) * 1e3 / (steps * len(x))

    np.seterr(all="ignore")
    return run


def ours_train_per_sample(quick: bool) -> Callable[[], float]:
    """``fit`` on the LeNet-5 BatchNorm/Dropout model at batch 64, in ms per sample."""
    per_step = _ours_train("lenet_bn", quick)
    batch = MODELS["lenet_bn"]["batch"]
    return lambda: per_step() / batch


def torch_train_per_sample(quick: bool) -> Callable[[], float]:
    per_step = _torch_train("lenet_bn", quick)
    batch = MODELS["lenet_bn"]["batch"]
    return lambda: per_step() / batch


# -- the exported functions (``module:function`` specs need plain names) -------


def mlp_train_ours(quick: bool) -> Callable[[], float]:
    return _ours_train("mlp", quick)


def mlp_train_torch(quick: bool) -> Callable[[], float]:
    return _torch_train("mlp", quick)


def mlp_predict_ours(quick: bool) -> Callable[[], float]:
    return _ours_predict("mlp", quick)


def mlp_predict_torch(quick: bool) -> Callable[[], float]:
    return _torch_predict("mlp", quick)


def lenet_train_ours(quick: bool) -> Callable[[], float]:
    return _ours_train("lenet", quick)


def lenet_train_torch(quick: bool) -> Callable[[], float]:
    return _torch_train("lenet", quick)


def lenet_predict_ours(quick: bool) -> Callable[[], float]:
    return _ours_predict("lenet", quick)


def lenet_predict_torch(quick: bool) -> Callable[[], float]:
    return _torch_predict("lenet", quick)


def fashion_train_ours(quick: bool) -> Callable[[], float]:
    return _ours_train("fashion_cnn", quick)


def fashion_threads_train_ours(quick: bool) -> Callable[[], float]:
    """``fit(threads=2)``: each batch as two shards on two threads (see ``framework.training.replicas``)."""
    return _ours_train("fashion_cnn", quick, threads=2)


def fashion_threads_train_torch(quick: bool) -> Callable[[], float]:
    return _torch_train("fashion_cnn", quick)


def fashion_train_torch(quick: bool) -> Callable[[], float]:
    return _torch_train("fashion_cnn", quick)


def _impls(prefix: str, floor: bool = True) -> dict[str, str]:
    impls = {"ours": f"{__name__}:{prefix}_ours", "torch": f"{__name__}:{prefix}_torch"}
    if floor:
        impls["floor"] = f"{FLOORS}:{prefix}_floor"
    return impls


CASES = [
    Case("mlp_train", "MLP 784-512-256-10, batch 128, SGD momentum: fit", "ms/step", _impls("mlp_train")),
    Case("mlp_predict", "MLP 784-512-256-10, batch 128: predict", "ms/step", _impls("mlp_predict")),
    Case("lenet_train", "LeNet-5, batch 64, SGD momentum: fit", "ms/step", _impls("lenet_train")),
    Case("lenet_predict", "LeNet-5, batch 64: predict", "ms/step", _impls("lenet_predict")),
    Case(
        "fashion_cnn_train",
        "Fashion-MNIST example CNN (BatchNorm, Dropout), batch 128, Adam: fit",
        "ms/step",
        _impls("fashion_train"),
    ),
    Case(
        "fashion_cnn_train_threads",
        "the same CNN, fit(threads=2): two shards of each batch on two threads",
        "ms/step",
        _impls("fashion_threads_train"),
    ),
    Case(
        "naive_lenet_bn_train",
        f"LeNet-5 + BatchNorm + Dropout: fit at batch 64 vs per-pixel loops at batch {NAIVE_BATCH}",
        "ms/sample",
        {
            "ours": f"{__name__}:ours_train_per_sample",
            "torch": f"{__name__}:torch_train_per_sample",
            "naive": f"{__name__}:naive_train",
        },
    ),
]
