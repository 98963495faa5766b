"""The naive baseline: LeNet-5 with BatchNorm and Dropout as direct per-output-pixel loops.

The seed framework's LeNet5 layout::

    Conv(1->6, 5x5, pad 2) - BatchNorm - ReLU - MaxPool 2      28x28 -> 14x14
    Conv(6->16, 5x5)       - BatchNorm - ReLU - MaxPool 2      14x14 -> 5x5
    Flatten - Linear(400->120) - ReLU - Linear(120->84) - ReLU - Dropout(p) - Linear(84->10)

trained with softmax cross-entropy and SGD with momentum, written the way a
first implementation is: convolution and max pooling loop in Python over every
sample and every output pixel, each iteration one small NumPy product over the
window (all output channels at once), and their backward passes loop the same
way. BatchNorm, ReLU, Dropout and the fully connected layers are whole-array
NumPy (they have no pixel loop to write). This is the reference the issue's
">= 20x faster" target is measured against; ``python -m benchmarks --cases
naive_lenet_bn_train`` times it per sample next to the framework.

The maths matches the framework's layers (PyTorch layouts and semantics), so
with ``p = 0`` both compute the same logits and gradients from the same
weights (``tests/test_benchmarks_smoke.py`` checks it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NaiveLeNet", "conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward"]

#: Parameter names, in the order of the framework model's ``parameters()``.
PARAM_NAMES = (
    "conv1.weight",
    "conv1.bias",
    "bn1.weight",
    "bn1.bias",
    "conv2.weight",
    "conv2.bias",
    "bn2.weight",
    "bn2.bias",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
    "fc3.weight",
    "fc3.bias",
)


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """``y[n, :, i, j] = W . x_pad[n, :, i:i+k, j:j+k] + b``, one output pixel per iteration.

    Returns the output and the padded input (kept for the backward pass).
    """
    n, _, h, wd = x.shape
    oc, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = h + 2 * pad - k + 1, wd + 2 * pad - k + 1
    y = np.empty((n, oc, oh, ow), dtype=x.dtype)
    w2 = w.reshape(oc, -1)
    for s in range(n):
        for i in range(oh):
            for j in range(ow):
                y[s, :, i, j] = w2 @ xp[s, :, i : i + k, j : j + k].reshape(-1) + b
    return y, xp


def conv2d_backward(
    g: np.ndarray, xp: np.ndarray, w: np.ndarray, pad: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dx, dW, db)`` by the same loop: each output pixel adds its window's share."""
    n, oc, oh, ow = g.shape
    k = w.shape[2]
    w2 = w.reshape(oc, -1)
    dw = np.zeros_like(w2)
    dxp = np.zeros_like(xp)
    for s in range(n):
        for i in range(oh):
            for j in range(ow):
                gij = g[s, :, i, j]
                window = xp[s, :, i : i + k, j : j + k]
                dw += np.outer(gij, window.reshape(-1))
                dxp[s, :, i : i + k, j : j + k] += (gij @ w2).reshape(window.shape)
    h, wd = xp.shape[2] - 2 * pad, xp.shape[3] - 2 * pad
    return dxp[:, :, pad : pad + h, pad : pad + wd], dw.reshape(w.shape), g.sum(axis=(0, 2, 3))


def maxpool2d_forward(x: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Max over each ``k x k`` window, one output pixel per iteration; returns the argmax too."""
    n, c, h, w = x.shape
    oh, ow = h // k, w // k
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    arg = np.empty((n, c, oh, ow), dtype=np.int64)
    for s in range(n):
        for i in range(oh):
            for j in range(ow):
                window = x[s, :, i * k : i * k + k, j * k : j * k + k].reshape(c, -1)
                idx = window.argmax(axis=1)
                arg[s, :, i, j] = idx
                y[s, :, i, j] = window[np.arange(c), idx]
    return y, arg


def maxpool2d_backward(g: np.ndarray, arg: np.ndarray, x_shape: tuple[int, ...], k: int = 2) -> np.ndarray:
    """Route each output pixel's gradient to its window's maximum."""
    n, c, oh, ow = g.shape
    dx = np.zeros(x_shape, dtype=g.dtype)
    channels = np.arange(c)
    for s in range(n):
        for i in range(oh):
            for j in range(ow):
                di, dj = np.divmod(arg[s, :, i, j], k)
                dx[s, channels, i * k + di, j * k + dj] += g[s, :, i, j]
    return dx


def _batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> tuple[Any, ...]:
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * inv
    return xhat * gamma[None, :, None, None] + beta[None, :, None, None], (xhat, inv)


def _batchnorm_backward(g: np.ndarray, cache: tuple[Any, ...], gamma: np.ndarray) -> tuple[Any, ...]:
    xhat, inv = cache
    m = g.size // g.shape[1]
    dbeta = g.sum(axis=(0, 2, 3))
    dgamma = (g * xhat).sum(axis=(0, 2, 3))
    dxhat = g * gamma[None, :, None, None]
    dx = (
        inv
        / m
        * (
            m * dxhat
            - dxhat.sum(axis=(0, 2, 3), keepdims=True)
            - xhat * (dxhat * xhat).sum(axis=(0, 2, 3), keepdims=True)
        )
    )
    return dx, dgamma, dbeta


class NaiveLeNet:
    """LeNet-5 with BatchNorm and Dropout, trained by :meth:`train_step` (SGD with momentum).

    Args:
        p: dropout probability before the last layer (default 0.5).
        lr, momentum: the SGD hyperparameters (PyTorch's rule).
        seed: seeds the initial weights and the dropout masks.
        dtype: float32 by default.
    """

    def __init__(
        self, p: float = 0.5, lr: float = 0.01, momentum: float = 0.9, seed: int = 0, dtype: Any = np.float32
    ) -> None:
        self.p, self.lr, self.momentum, self.eps = p, lr, momentum, 1e-5
        self.rng = np.random.default_rng(seed)
        shapes = {
            "conv1.weight": (6, 1, 5, 5),
            "conv2.weight": (16, 6, 5, 5),
            "fc1.weight": (120, 400),
            "fc2.weight": (84, 120),
            "fc3.weight": (10, 84),
        }
        self.params: dict[str, np.ndarray] = {}
        for name in PARAM_NAMES:
            layer, kind = name.split(".")
            if kind == "weight" and layer.startswith("bn"):
                self.params[name] = np.ones(6 if layer == "bn1" else 16, dtype=dtype)
            elif kind == "weight":
                shape = shapes[name]
                bound = np.sqrt(6.0 / np.prod(shape[1:]))
                self.params[name] = self.rng.uniform(-bound, bound, shape).astype(dtype)
            else:
                size = {"conv1": 6, "bn1": 6, "conv2": 16, "bn2": 16, "fc1": 120, "fc2": 84, "fc3": 10}[layer]
                self.params[name] = np.zeros(size, dtype=dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.velocity: dict[str, np.ndarray] = {}

    def load(self, arrays: list[np.ndarray]) -> None:
        """Copy weights given in :data:`PARAM_NAMES` order (the framework model's parameters)."""
        for name, value in zip(PARAM_NAMES, arrays, strict=True):
            self.params[name] = np.array(value, dtype=self.params[name].dtype)

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        """Logits ``(N, 10)`` for images ``(N, 1, 28, 28)``; caches what :meth:`backward` needs."""
        P, c = self.params, {}
        h, c["xp1"] = conv2d_forward(x, P["conv1.weight"], P["conv1.bias"], 2)
        h, c["bn1"] = _batchnorm_forward(h, P["bn1.weight"], P["bn1.bias"], self.eps)
        c["relu1"] = h > 0
        h = h * c["relu1"]
        c["pool1_shape"] = h.shape
        h, c["pool1"] = maxpool2d_forward(h)
        h, c["xp2"] = conv2d_forward(h, P["conv2.weight"], P["conv2.bias"], 0)
        h, c["bn2"] = _batchnorm_forward(h, P["bn2.weight"], P["bn2.bias"], self.eps)
        c["relu2"] = h > 0
        h = h * c["relu2"]
        c["pool2_shape"] = h.shape
        h, c["pool2"] = maxpool2d_forward(h)
        c["flat_shape"] = h.shape
        a0 = h.reshape(len(h), -1)
        a1 = np.maximum(a0 @ P["fc1.weight"].T + P["fc1.bias"], 0)
        a2 = np.maximum(a1 @ P["fc2.weight"].T + P["fc2.bias"], 0)
        if training and self.p > 0:
            mask = (self.rng.random(a2.shape) >= self.p).astype(a2.dtype) / (1.0 - self.p)
        else:
            mask = np.ones_like(a2)
        a2d = a2 * mask
        c.update(a0=a0, a1=a1, a2=a2, mask=mask, a2d=a2d)
        self.cache = c
        return a2d @ P["fc3.weight"].T + P["fc3.bias"]

    def backward(self, dlogits: np.ndarray) -> None:
        """Accumulate every parameter's gradient from ``dL/dlogits`` (already divided by N)."""
        P, G, c = self.params, self.grads, self.cache
        G["fc3.weight"] += dlogits.T @ c["a2d"]
        G["fc3.bias"] += dlogits.sum(axis=0)
        d = (dlogits @ P["fc3.weight"]) * c["mask"] * (c["a2"] > 0)
        G["fc2.weight"] += d.T @ c["a1"]
        G["fc2.bias"] += d.sum(axis=0)
        d = (d @ P["fc2.weight"]) * (c["a1"] > 0)
        G["fc1.weight"] += d.T @ c["a0"]
        G["fc1.bias"] += d.sum(axis=0)
        d = (d @ P["fc1.weight"]).reshape(c["flat_shape"])
        d = maxpool2d_backward(d, c["pool2"], c["pool2_shape"]) * c["relu2"]
        d, dg, db = _batchnorm_backward(d, c["bn2"], P["bn2.weight"])
        G["bn2.weight"] += dg
        G["bn2.bias"] += db
        d, dw, db = conv2d_backward(d, c["xp2"], P["conv2.weight"], 0)
        G["conv2.weight"] += dw
        G["conv2.bias"] += db
        d = maxpool2d_backward(d, c["pool1"], c["pool1_shape"]) * c["relu1"]
        d, dg, db = _batchnorm_backward(d, c["bn1"], P["bn1.weight"])
        G["bn1.weight"] += dg
        G["bn1.bias"] += db
        _, dw, db = conv2d_backward(d, c["xp1"], P["conv1.weight"], 2)
        G["conv1.weight"] += dw
        G["conv1.bias"] += db

    @staticmethod
    def loss_and_grad(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean softmax cross-entropy and its gradient ``(softmax - onehot) / N``."""
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        prob = e / e.sum(axis=1, keepdims=True)
        n = len(labels)
        loss = float(-np.log(prob[np.arange(n), labels]).mean())
        prob[np.arange(n), labels] -= 1.0
        return loss, prob / n

    def step(self) -> None:
        """SGD with momentum, PyTorch's rule: ``v <- m v + g`` (``v = g`` first), ``p <- p - lr v``."""
        for name, g in self.grads.items():
            v = self.velocity.get(name)
            if v is None:
                v = self.velocity[name] = g.copy()
            else:
                v *= self.momentum
                v += g
            self.params[name] -= self.lr * v

    def train_step(self, x: np.ndarray, labels: np.ndarray) -> float:
        """Zero the gradients, forward, loss, backward, update; returns the batch loss."""
        for g in self.grads.values():
            g.fill(0)
        loss, dlogits = self.loss_and_grad(self.forward(x), labels)
        self.backward(dlogits)
        self.step()
        return loss
