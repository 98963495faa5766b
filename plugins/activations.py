"""Built-in plugin: activation functions as parameter-free layers.

Each activation is a :class:`~framework.base.layer.Layer` with a hand-written
``backward``, so one class serves as ``Linear(..., activation="relu")`` and as a
standalone layer (``from framework.layers import ReLU``). Each is registered
twice: as an activation under its functional name (``"relu"``,
``"leaky_relu"``...) and as a layer under PyTorch's class name (``ReLU``,
``LeakyReLU``...). Names match case-insensitively with ``_`` ignored, so
``framework.activations.get("LeakyReLU")`` works too.

Every activation has a ``gain`` (the init gain a preceding layer passes to its
weight initializer, as ``torch.nn.init.calculate_gain``), accepts inputs of any
shape, and keeps float32 inputs in float32.

The classes live in :mod:`plugins.activation_fns` (the element-wise ones),
:mod:`plugins.activation_softmax` (Softmax, LogSoftmax) and the numerics in
:mod:`plugins.activation_math`; this module, the ``activations`` entry point,
re-exports them and registers them all. Every activation is written in the
context form (``forward(ctx, x)`` / ``backward(ctx, grad_out)``), so one
instance may be shared across a graph and across threads. Softmax, LogSoftmax
and Sigmoid carry a ``link`` (``"softmax"``, ``"log_softmax"``, ``"sigmoid"``)
that ``Model.compile`` reads to check the loss pairing.
"""

from __future__ import annotations

from typing import Any

from framework.registry.hookspecs import hookimpl
from plugins.activation_fns import (
    ELU,
    GELU,
    ActivationLayer,
    IdentityActivation,
    LeakyReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Softplus,
    Tanh,
)
from plugins.activation_math import erfc, normal_cdf
from plugins.activation_softmax import LogSoftmax, Softmax

__all__ = [
    "ActivationLayer",
    "IdentityActivation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "GELU",
    "SiLU",
    "Softplus",
    "erfc",
    "normal_cdf",
]


@hookimpl
def register_activations(register: Any) -> None:
    register(IdentityActivation, name="identity", aliases=("linear",))
    register(ReLU, name="relu")
    register(LeakyReLU, name="leaky_relu")
    register(ELU, name="elu")
    register(Sigmoid, name="sigmoid")
    register(Tanh, name="tanh")
    register(Softmax, name="softmax")
    register(LogSoftmax, name="log_softmax")
    register(GELU, name="gelu")
    register(SiLU, name="silu", aliases=("swish",))
    register(Softplus, name="softplus")


@hookimpl
def register_layers(register: Any) -> None:
    register(ReLU)
    register(LeakyReLU)
    register(ELU)
    register(Sigmoid)
    register(Tanh)
    register(Softmax)
    register(LogSoftmax)
    register(GELU)
    register(SiLU)
    register(Softplus)
