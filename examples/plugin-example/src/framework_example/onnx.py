"""The ONNX converter of :class:`~framework_example.layers.FeatureScale`: one ``Mul`` node.

Registered by the ``register_onnx_converters`` hook in :mod:`framework_example.plugin`,
so ``framework.onnx.export`` writes models that contain the layer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["feature_scale"]


def feature_scale(ctx: Any, layer: Any, inputs: list[str]) -> str:
    """``y = x * gamma``, with ``gamma`` stored as ``(C, 1, ..., 1)`` to broadcast over axis 1."""
    x = inputs[0]
    shape = ctx.shape(x)
    rank = len(shape) if shape is not None else 2
    gamma = layer.gamma.data.reshape((-1,) + (1,) * (rank - 2))
    return str(ctx.node("Mul", [x, ctx.initializer(gamma, "gamma")]))
