"""Which NumPy code computes each layer's inference: a table from layer class to emitter.

An emitter is ``emit(layer, args, out) -> str``: given the layer, the Python
expressions of its input(s) (one string, or a list for a layer taking a list)
and the :class:`Emission` being written, it returns the expression of the
layer's output, asking ``out`` for the kernels it calls
(:mod:`framework.export.kernels`) and for each array it needs (stored in the
weights archive). The built-in layers' emitters are keyed by the class's
import path (``"plugins.core.Linear"``) so the core imports no plugin; a
third-party layer adds its own with :func:`register_numpy_emitter`. Only the
exact class matches: a subclass may compute something else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from framework.base.layer import Layer
from framework.errors import ConfigError

__all__ = ["EMITTERS", "Emission", "Emitter", "emitter_for", "register_numpy_emitter"]


class Emission:
    """What the script being written needs: kernels by name and arrays by key."""

    def __init__(self) -> None:
        self.kernels: list[str] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.prefix = ""
        self._owners: dict[str, int] = {}  # key -> id of the array stored under it

    def use(self, *names: str) -> None:
        """Copy the kernels ``names`` into the script."""
        for name in names:
            if name not in self.kernels:
                self.kernels.append(name)

    def weight(self, name: str, value: Any) -> str:
        """Store ``value`` (a Parameter, array or ``None``) as ``<layer>.<name>``; returns its expression."""
        if value is None:
            return "None"
        array = np.asarray(value if isinstance(value, np.ndarray) else getattr(value, "data", value))
        key = base = f"{self.prefix}{name}"
        copy = 1
        # Dotted paths can coincide (layer "b" of a nested model "a" and a layer named "a.b");
        # another array under a taken key gets a numbered key, so no weight overwrites another.
        while key in self._owners and self._owners[key] != id(array):
            copy += 1
            key = f"{base}~{copy}"
        self._owners[key] = id(array)
        self.arrays[key] = array
        return f"W[{key!r}]"


Emitter = Callable[[Any, Any, Emission], str]
"""``emit(layer, args, out) -> output expression``."""


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def emitter_for(layer: Layer) -> Emitter | None:
    """The emitter registered for exactly ``type(layer)``, or ``None``."""
    return EMITTERS.get(_path(type(layer)))


def register_numpy_emitter(layer_class: type | str, emitter: Emitter) -> None:
    """Teach :func:`~framework.export.numpy_predictor` a layer class (or ``"module.Class"`` path).

    Raises:
        ConfigError: ``emitter`` is not callable.
    """
    if not callable(emitter):
        raise ConfigError(f"register_numpy_emitter: emitter must be callable, got {emitter!r}")
    EMITTERS[layer_class if isinstance(layer_class, str) else _path(layer_class)] = emitter


def _call(out: Emission, kernel: str, *args: Any) -> str:
    out.use(kernel)
    return f"{kernel}({', '.join(str(a) for a in args)})"


def _activation(out: Emission, layer: Any, expr: str) -> str:
    """``expr`` passed through ``layer.activation`` (if any)."""
    act = getattr(layer, "activation", None)
    if act is None:
        return expr
    emit = emitter_for(act)
    if emit is None:
        from framework.errors import ExportError

        raise ExportError(
            f"{layer.describe()}: its activation {type(act).__qualname__} has no NumPy inference function; "
            "register one with framework.export.register_numpy_emitter"
        )
    return emit(act, expr, out)


def _plain(kernel: str, *attrs: str) -> Emitter:
    def emit(layer: Any, x: Any, out: Emission) -> str:
        return _call(out, kernel, x, *(repr(getattr(layer, a)) for a in attrs))

    return emit


def _identity(layer: Any, x: Any, out: Emission) -> str:
    return str(x)


def _linear(layer: Any, x: Any, out: Emission) -> str:
    y = _call(out, "linear", x, out.weight("weight", layer.weight), out.weight("bias", layer.bias))
    return _activation(out, layer, y)


def _conv(layer: Any, x: Any, out: Emission) -> str:
    pads = layer.pads
    w, b = out.weight("weight", layer.weight), out.weight("bias", layer.bias)
    if len(layer.kernel_size) == 1:
        y = _call(out, "conv1d", x, w, b, layer.stride[0], pads[0], layer.dilation[0], layer.groups)
    else:
        y = _call(out, "conv2d", x, w, b, layer.stride, pads, layer.dilation, layer.groups)
    return _activation(out, layer, y)


def _conv_transpose(layer: Any, x: Any, out: Emission) -> str:
    w, b = out.weight("weight", layer.weight), out.weight("bias", layer.bias)
    geometry = (layer.stride, layer.padding, layer.output_padding, layer.dilation, layer.groups)
    return _activation(out, layer, _call(out, "conv_transpose2d", x, w, b, *geometry))


def _pool(kind: str, dims: int) -> Emitter:
    def emit(layer: Any, x: Any, out: Emission) -> str:
        k, s, p = layer.kernel_size, layer.stride, layer.padding
        if dims == 1:
            k, s, p = k[0], s[0], p[0]
        include = getattr(layer, "count_include_pad", True)
        return _call(out, f"pool{dims}d", x, repr(kind), k, s, p, layer.ceil_mode, include)

    return emit


def _batch_norm(layer: Any, x: Any, out: Emission) -> str:
    running = layer.track_running_stats
    mean = out.weight("running_mean", layer.running_mean if running else None)
    var = out.weight("running_var", layer.running_var if running else None)
    w = out.weight("weight", getattr(layer, "weight", None))
    b = out.weight("bias", getattr(layer, "bias", None))
    return _call(out, "batch_norm", x, mean, var, w, b, layer.eps)


def _layer_norm(layer: Any, x: Any, out: Emission) -> str:
    w = out.weight("weight", getattr(layer, "weight", None))
    b = out.weight("bias", getattr(layer, "bias", None))
    return _call(out, "layer_norm", x, len(layer.normalized_shape), w, b, layer.eps)


def _embedding(layer: Any, x: Any, out: Emission) -> str:
    return _call(out, "embedding", x, out.weight("weight", layer.weight))


def _reshape(layer: Any, x: Any, out: Emission) -> str:
    return f"{x}.reshape({x}.shape[0], *{tuple(layer.target_shape)!r})"


def _permute(layer: Any, x: Any, out: Emission) -> str:
    return f"{x}.transpose(0, *{tuple(layer.dims)!r})"


def _upsampling(layer: Any, x: Any, out: Emission) -> str:
    sh, sw = layer.scale_factor
    return f"{x}.repeat({sh}, axis=2).repeat({sw}, axis=3)"


def _zero_padding(layer: Any, x: Any, out: Emission) -> str:
    left, right, top, bottom = layer.padding
    return f"np.pad({x}, ((0, 0), (0, 0), ({top}, {bottom}), ({left}, {right})))"


def _merge(kind: str) -> Emitter:
    def emit(layer: Any, xs: Any, out: Emission) -> str:
        items = "[" + ", ".join(xs) + "]"
        if kind == "concatenate":
            return _call(out, "merge", items, repr(kind), layer.axis)
        return _call(out, "merge", items, repr(kind))

    return emit


def _recurrent(mode: str) -> Emitter:
    def emit(layer: Any, x: Any, out: Emission) -> str:
        rows = []
        for k in range(layer.num_layers):
            for suffix in ("", "_reverse")[: layer.num_directions]:
                names = (f"weight_ih_l{k}", f"weight_hh_l{k}", f"bias_ih_l{k}", f"bias_hh_l{k}")
                got = [out.weight(n + suffix, getattr(layer, n + suffix, None)) for n in names]
                rows.append("(" + ", ".join(got) + ")")
        weights = "[" + ", ".join(rows) + "]"
        flags = (layer.num_layers, layer.bidirectional, layer.batch_first, repr(layer.output))
        extra = [repr(layer.nonlinearity)] if mode == "rnn" else []
        return _call(out, "recurrent", x, weights, repr(mode), *flags, *extra)

    return emit


def _activation_layer(layer: Any, x: Any, out: Emission) -> str:
    return _activation(out, layer, str(x))


def _softmax(kernel: str) -> Emitter:
    def emit(layer: Any, x: Any, out: Emission) -> str:
        return _call(out, kernel, x, layer.axis)

    return emit


EMITTERS: dict[str, Emitter] = {
    "plugins.core.Linear": _linear,
    "plugins.core.Dropout": _identity,
    "plugins.core.Identity": _identity,
    "plugins.core.Flatten": _plain("flatten", "start_dim", "end_dim"),
    "plugins.core.Activation": _activation_layer,
    "plugins.conv.Conv2d": _conv,
    "plugins.conv1d.Conv1d": _conv,
    "plugins.conv_transpose.ConvTranspose2d": _conv_transpose,
    "plugins.pooling.MaxPool2d": _pool("max", 2),
    "plugins.pooling.AvgPool2d": _pool("avg", 2),
    "plugins.pooling1d.MaxPool1d": _pool("max", 1),
    "plugins.pooling1d.AvgPool1d": _pool("avg", 1),
    "plugins.global_pooling.GlobalAvgPool2d": _plain("global_avg_pool2d"),
    "plugins.normalization.BatchNorm": _batch_norm,
    "plugins.distributed.SyncBatchNorm": _batch_norm,  # in inference it is BatchNorm
    "plugins.layer_norm.LayerNorm": _layer_norm,
    "plugins.embedding.Embedding": _embedding,
    "plugins.reshaping.Reshape": _reshape,
    "plugins.reshaping.Permute": _permute,
    "plugins.reshaping.UpSampling2d": _upsampling,
    "plugins.reshaping.ZeroPadding2d": _zero_padding,
    "plugins.recurrent_layers.RNN": _recurrent("rnn"),
    "plugins.recurrent_layers.LSTM": _recurrent("lstm"),
    "plugins.recurrent_layers.GRU": _recurrent("gru"),
    "plugins.activation_fns.IdentityActivation": _identity,
    "plugins.activation_fns.ReLU": _plain("relu"),
    "plugins.activation_fns.Sigmoid": _plain("sigmoid"),
    "plugins.activation_fns.Tanh": _plain("tanh"),
    "plugins.activation_fns.SiLU": _plain("silu"),
    "plugins.activation_fns.ELU": _plain("elu", "alpha"),
    "plugins.activation_fns.LeakyReLU": _plain("leaky_relu", "negative_slope"),
    "plugins.activation_fns.GELU": _plain("gelu", "approximate"),
    "plugins.activation_fns.Softplus": _plain("softplus", "beta", "threshold"),
    "plugins.activation_softmax.Softmax": _softmax("softmax"),
    "plugins.activation_softmax.LogSoftmax": _softmax("log_softmax"),
    **{f"plugins.merge.{name.title()}": _merge(name) for name in ("add", "subtract", "multiply", "average")},
    **{f"plugins.merge.{name.title()}": _merge(name) for name in ("maximum", "minimum", "concatenate")},
}
"""Emitters by layer class path; :func:`register_numpy_emitter` adds to it."""
