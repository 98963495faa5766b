"""The module the ``framework`` entry point names: one hook per kind of object.

Each hook receives a ``register`` callable; ``register(obj, name=None,
aliases=())`` makes ``obj`` available by name (matched case-insensitively,
``_`` ignored). Registering a name another plugin already has is an error
naming both distributions, unless ``override=True`` is passed on purpose.
"""

from __future__ import annotations

from typing import Any

from framework import hookimpl
from framework_example.activations import Mish
from framework_example.initializers import LecunNormal
from framework_example.layers import FeatureScale
from framework_example.losses import LogCosh
from framework_example.onnx import feature_scale
from framework_example.optimizers import Lion


@hookimpl
def register_layers(register: Any) -> None:
    register(FeatureScale)
    register(Mish)  # the activation is a Layer too, so it can stand alone


@hookimpl
def register_activations(register: Any) -> None:
    register(Mish, name="mish")


@hookimpl
def register_initializers(register: Any) -> None:
    register(LecunNormal, aliases=("lecun",))


@hookimpl
def register_losses(register: Any) -> None:
    register(LogCosh, name="log_cosh", aliases=("logcosh",))


@hookimpl
def register_optimizers(register: Any) -> None:
    register(Lion, name="lion")


@hookimpl
def register_onnx_converters(register: Any) -> None:
    register(FeatureScale, feature_scale)  # register(layer_class, converter) for framework.onnx.export
