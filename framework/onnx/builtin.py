"""The converters of the built-in layers, registered the way a plugin registers its own.

:func:`register_onnx_converters` is a ``register_onnx_converters`` hook
implementation: :mod:`framework.onnx.registry` calls it before the plugins'.
The core imports no concrete layer, so the classes are looked up by their
registered names; a name whose plugin is not loaded is skipped.
"""

from __future__ import annotations

from typing import Any

from framework.onnx import convert_core as core
from framework.onnx import convert_recurrent as recurrent
from framework.onnx import convert_spatial as spatial
from framework.registry.hookspecs import hookimpl
from framework.registry.manager import REGISTRY

__all__ = ["LAYER_CONVERTERS", "ACTIVATION_CONVERTERS", "register_onnx_converters"]

#: Registered layer name -> converter.
LAYER_CONVERTERS: dict[str, Any] = {
    "Linear": core.linear,
    "Identity": core.passthrough,
    "Dropout": core.passthrough,
    "Activation": core.activation_layer,
    "Flatten": spatial.flatten,
    "Reshape": spatial.reshape,
    "Permute": spatial.permute,
    "ZeroPadding2d": spatial.zero_padding2d,
    "UpSampling2d": spatial.upsampling2d,
    "Conv1d": spatial.conv,
    "Conv2d": spatial.conv,
    "ConvTranspose2d": spatial.conv_transpose,
    "MaxPool1d": spatial.max_pool,
    "MaxPool2d": spatial.max_pool,
    "AvgPool1d": spatial.avg_pool,
    "AvgPool2d": spatial.avg_pool,
    "GlobalAvgPool2d": spatial.global_avg_pool,
    "BatchNorm": spatial.batch_norm,
    "SyncBatchNorm": spatial.batch_norm,  # in inference it is BatchNorm on every rank
    "LayerNorm": spatial.layer_norm,
    "Embedding": core.embedding,
    "Add": core.merge_add,
    "Subtract": core.merge_subtract,
    "Multiply": core.merge_multiply,
    "Average": core.merge_average,
    "Maximum": core.merge_maximum,
    "Minimum": core.merge_minimum,
    "Concatenate": core.concatenate,
    "RNN": recurrent.recurrent,
    "LSTM": recurrent.recurrent,
    "GRU": recurrent.recurrent,
}

#: Registered activation name -> converter (the classes serve as layers too).
ACTIVATION_CONVERTERS: dict[str, Any] = {
    "identity": core.passthrough,
    "relu": core.relu,
    "leaky_relu": core.leaky_relu,
    "elu": core.elu,
    "sigmoid": core.sigmoid,
    "tanh": core.tanh,
    "softmax": core.softmax,
    "log_softmax": core.log_softmax,
    "gelu": core.gelu,
    "silu": core.silu,
    "softplus": core.softplus,
}


@hookimpl
def register_onnx_converters(register: Any) -> None:
    """Register a converter for every built-in layer and activation class that is loaded."""
    for kind, table in (("layers", LAYER_CONVERTERS), ("activations", ACTIVATION_CONVERTERS)):
        for name, converter in table.items():
            if REGISTRY.contains(kind, name):
                register(REGISTRY.get(kind, name), converter)
