"""Base class of losses: ``forward(y_pred, y_true) -> float``, ``backward()``.

It also holds the protocol by which ``Model.compile`` pairs a loss with the
model's last layer:

- :attr:`Loss.expects`: what the loss compares, ``"logits"``,
  ``"probabilities"`` or ``None`` (a regression loss);
- :attr:`Loss.link`: the activation that turns logits into what a
  classification loss compares, ``"softmax"`` or ``"sigmoid"`` (``None`` for
  regression);
- :meth:`Loss.backward_logits`: the fused gradient with respect to the logits
  of a model ending in the ``link`` activation;
- :func:`check_output_pairing`: the warning text for an inconsistent pairing.

It also holds the precision rule of every loss (as PyTorch's autocast and
Keras's ``mixed_float16`` policy compute losses in float32): a subclass's
``forward`` receives predictions of a floating dtype narrower than float32
(float16) as float32, and its ``backward`` / ``backward_logits`` return the
gradient cast back to the predictions' dtype (see :class:`Loss`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from framework.base.config import Configurable
from framework.base.validation import numeric_array
from framework.errors import ShapeError

__all__ = ["COMPUTE_DTYPE", "LINKS", "Loss", "check_output_pairing", "check_sample_weight", "widen"]

#: The narrowest dtype a loss computes in: narrower floating predictions (float16) are widened to it.
COMPUTE_DTYPE = np.dtype(np.float32)

#: The activations a classification loss may be linked to.
LINKS = ("softmax", "sigmoid")

_OTHER_LOSS = {
    ("logits", "softmax"): "'categorical_crossentropy' / 'sparse_categorical_crossentropy'",
    ("logits", "sigmoid"): "'binary_crossentropy'",
    ("probabilities", "softmax"): "'cross_entropy' (PyTorch's CrossEntropyLoss)",
    ("probabilities", "sigmoid"): "'bce_with_logits' (PyTorch's BCEWithLogitsLoss)",
}


def _narrow_dtype(y_pred: Any) -> np.dtype | None:
    """``y_pred``'s dtype when it is a floating dtype narrower than :data:`COMPUTE_DTYPE`, else ``None``."""
    dtype = y_pred.dtype if isinstance(y_pred, (np.ndarray, np.generic)) else None
    if dtype is not None and np.issubdtype(dtype, np.floating) and dtype.itemsize < COMPUTE_DTYPE.itemsize:
        return np.dtype(dtype)
    return None


def widen(y_pred: Any) -> Any:
    """``y_pred`` as a :data:`COMPUTE_DTYPE` array when its dtype is a narrower float; else unchanged.

    What losses and metrics compute on: float16 predictions become float32
    (exactly); float32, float64, integers and non-arrays are returned as given.
    """
    if _narrow_dtype(y_pred) is None:
        return y_pred
    return np.asarray(y_pred, dtype=COMPUTE_DTYPE)


_CALLS = threading.local()


def _inside() -> set[int]:
    """The losses (by ``id``) this thread is inside a wrapped call of: only the outermost converts.

    Per thread, as a flag on the loss would not be: another thread's call would see it set and
    skip the widening of its own float16 predictions."""
    inside: set[int] | None = getattr(_CALLS, "ids", None)
    if inside is None:
        inside = _CALLS.ids = set()
    return inside


def _widening_forward(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a subclass's ``forward``: narrow predictions are computed on in float32.

    Only the outermost call of an instance converts (a ``forward`` calling
    ``super().forward`` is wrapped twice); it records the dtype that
    ``backward`` casts the gradient back to.
    """

    @functools.wraps(fn)
    def forward(self: Loss, y_pred: Any, y_true: Any, *args: Any, **kwargs: Any) -> Any:
        inside = _inside()
        if id(self) in inside:
            return fn(self, y_pred, y_true, *args, **kwargs)
        narrow = _narrow_dtype(y_pred)
        y_pred = widen(y_pred)
        inside.add(id(self))
        try:
            value = fn(self, y_pred, y_true, *args, **kwargs)
        finally:
            inside.discard(id(self))
        self._grad_dtype = narrow
        return value

    forward._loss_precision = True  # type: ignore[attr-defined]
    return forward


def _narrowing_backward(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a subclass's ``backward`` / ``backward_logits``: scale, then cast to the predictions' dtype."""

    @functools.wraps(fn)
    def backward(self: Loss, *args: Any, scale: float | None = None, **kwargs: Any) -> Any:
        inside = _inside()
        if id(self) in inside:
            return fn(self, *args, **kwargs)
        inside.add(id(self))
        try:
            grad = fn(self, *args, **kwargs)
        finally:
            inside.discard(id(self))
        narrow = self._grad_dtype
        with np.errstate(over="ignore"):  # an overflow is an infinity; a loss-scaled step then skips
            if scale is not None and scale != 1.0:
                grad = np.multiply(grad, scale, dtype=np.result_type(grad, np.float32))
            return grad if narrow is None else np.asarray(grad).astype(narrow)

    backward._loss_precision = True  # type: ignore[attr-defined]
    return backward


_PRECISION_WRAPPERS = {
    "forward": _widening_forward,
    "backward": _narrowing_backward,
    "backward_logits": _narrowing_backward,
}


class Loss(Configurable):
    """A scalar objective with a hand-derived gradient.

    ``forward`` returns the mean loss over the batch (a Python float) and caches
    what ``backward`` needs; ``backward()`` returns ``dL/d y_pred`` of the same
    shape as ``y_pred``, already divided by the batch size, so layers never
    divide again.

    ``forward(y_pred, y_true, sample_weight=None)``: an optional weight per
    sample, shape ``(N,)``, follows Keras: the loss becomes the batch mean of
    ``w_i * l_i``, i.e. ``sum_i w_i l_i / N`` (the weights are not
    renormalised), and the gradient of sample ``i`` is scaled by ``w_i``. The
    fit loop's ``class_weight`` is applied through it.

    Precision: a loss computes in at least float32, as PyTorch's autocast and
    Keras's ``mixed_float16`` do, so a float16 model's loss does not overflow
    (float16 ends at 65504) or round away. A subclass's own ``forward``,
    ``backward`` and ``backward_logits`` are wrapped (``__init_subclass__``):
    ``forward`` receives float16 ``y_pred`` as float32 (float32 and float64
    pass untouched), and ``backward()`` / ``backward_logits()`` return the
    gradient cast back to ``y_pred``'s dtype, so a float16 model's backward
    stays float16; an entry beyond float16's range becomes an infinity
    (without a warning), which makes a loss-scaled step skip. Both take an
    optional keyword ``scale``: the gradient is multiplied by it in the
    computation dtype *before* that cast, which is where a dynamic loss scale
    belongs (small gradients then survive the cast to float16, as under
    ``torch.amp.GradScaler``). Subclasses need do nothing for this.

    Attributes:
        expects: what ``y_pred`` must be: ``"logits"`` (raw scores; the loss
            applies the softmax / sigmoid itself), ``"probabilities"`` (the
            model ends in the activation), or ``None`` for a regression loss,
            which compares any values. A class attribute, or an instance
            attribute when it depends on an argument (``from_logits``).
        link: the activation that maps logits to what the loss compares,
            ``"softmax"`` or ``"sigmoid"``; ``None`` for a regression loss.
    """

    expects: str | None = None
    link: str | None = None
    # the precision rule's per-instance state: the dtype backward returns (see _inside for the calls)
    _grad_dtype: np.dtype | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give the subclass's own ``forward`` / ``backward`` / ``backward_logits`` the precision rule."""
        super().__init_subclass__(**kwargs)
        for name, wrap in _PRECISION_WRAPPERS.items():
            fn = cls.__dict__.get(name)
            if callable(fn) and not getattr(fn, "_loss_precision", False):
                setattr(cls, name, wrap(fn))

    def forward(
        self, y_pred: np.ndarray, y_true: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> float:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def backward_logits(self) -> np.ndarray:
        """The fused gradient ``dL/d logits`` after ``forward(probabilities, ...)``.

        For a loss with ``expects == "probabilities"`` whose model ends in the
        ``link`` activation, ``y_pred = link(logits)``; this returns the
        gradient of the loss with respect to those logits directly, without
        going through the activation's backward: ``(p - t) * w / N`` for a
        softmax with categorical cross-entropy and ``(p - y) * w / size`` for
        a sigmoid with binary cross-entropy. It is already divided by the
        batch size and sample-weighted, like :meth:`backward`, and has
        ``y_pred``'s shape. The model's executor then starts the backward pass
        at the layer before the activation.

        Raises:
            NotImplementedError: the loss has no fused gradient (the base class).
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no fused gradient with respect to logits (backward_logits)"
        )

    def __call__(
        self, y_pred: np.ndarray, y_true: np.ndarray, sample_weight: np.ndarray | None = None, **kwargs: Any
    ) -> float:
        return self.forward(y_pred, y_true, sample_weight, **kwargs)

    # -- helpers for subclasses ------------------------------------------

    def _check_pred(self, y_pred: Any) -> np.ndarray:
        """``y_pred`` as a floating array with a batch axis, else ShapeError."""
        y_pred = np.asarray(y_pred)
        if not np.issubdtype(y_pred.dtype, np.floating):
            y_pred = y_pred.astype(np.float64)
        if y_pred.ndim == 0:
            raise ShapeError(f"{type(self).__name__}: y_pred must have a batch axis, got a scalar")
        return y_pred

    def _sample_weight(self, sample_weight: Any, n: int, dtype: np.dtype) -> np.ndarray | None:
        """``sample_weight`` as an ``(N,)`` array of ``dtype`` (or ``None``), else ShapeError."""
        if sample_weight is None:
            return None
        return check_sample_weight(type(self).__name__, sample_weight, n, dtype)

    @property
    def name(self) -> str:
        from framework.registry.manager import REGISTRY

        return REGISTRY.name_of("losses", self) or type(self).__name__

    def get_config(self) -> dict[str, Any]:
        return {}


def check_output_pairing(loss: Any, last_layer_link: str | None, layer_description: str) -> str | None:
    """The warning for a model's last activation that does not suit the loss, else ``None``.

    Args:
        loss: the compiled loss; its ``expects`` / ``link`` attributes are read
            (an object without them is taken as ``None``: nothing to check).
        last_layer_link: ``"softmax"`` or ``"sigmoid"`` when the model's output
            is that activation (a standalone activation layer or a layer's
            ``activation=``), else ``None``.
        layer_description: how the warning names that layer, e.g.
            ``"layer 'dense_2' (Linear, activation='softmax')"``.

    Returns:
        ``None`` when consistent: a regression loss; a logits loss after a
        model without the activation; a probabilities loss after its ``link``
        activation. Otherwise one sentence naming the layer, the loss and the
        fixes:

        - the model ends in a softmax / sigmoid and the loss expects logits
          (the activation would be applied twice);
        - the loss expects probabilities and the model does not end in its
          ``link`` (logits would be clipped into ``[eps, 1 - eps]``);
        - the model ends in the other activation than the loss's ``link``.
    """
    expects = getattr(loss, "expects", None)
    link = getattr(loss, "link", None)
    if expects is None or link is None:
        return None
    loss_name = getattr(loss, "name", type(loss).__name__)
    loss_text = f"loss {loss_name!r} ({type(loss).__name__}, expects {expects})"
    if expects == "logits":
        if last_layer_link is None:
            return None
        return (
            f"{layer_description} ends the model in a {last_layer_link}, but {loss_text} applies the "
            f"{link} itself, so the activation is applied twice and the model trains badly. Fix: drop "
            f"the {last_layer_link} from {layer_description} (predict then returns logits), or use "
            f"{_OTHER_LOSS[(expects, link)]} with from_logits=False (the default)."
        )
    if last_layer_link == link:
        return None
    if last_layer_link is None:
        return (
            f"{layer_description} ends the model without a {link}, but {loss_text} expects "
            f"probabilities (clipped into [1e-7, 1 - 1e-7]), so logits give a wrong loss. Fix: pass "
            f"from_logits=True to the loss, add activation='{link}' to {layer_description}, or use "
            f"{_OTHER_LOSS[(expects, link)]}, which takes logits."
        )
    return (
        f"{layer_description} ends the model in a {last_layer_link}, but {loss_text} expects the "
        f"probabilities of a {link}. Fix: use a {link} output layer, or the cross-entropy that "
        f"matches a {last_layer_link}."
    )


def check_sample_weight(owner: str, sample_weight: Any, n: int, dtype: Any) -> np.ndarray:
    """``sample_weight`` as an ``(N,)`` array of ``dtype`` (an ``(N, 1)`` column is flattened).

    Raises:
        DataError: naming ``owner``, when it is not numbers.
        ShapeError: naming ``owner``, when it is not one weight per sample.
    """
    weight = numeric_array(owner, "sample_weight", sample_weight).astype(dtype, copy=False)
    if weight.ndim == 2 and weight.shape[1] == 1:
        weight = weight[:, 0]
    if weight.shape != (n,):
        raise ShapeError(
            f"{owner}: sample_weight must have shape ({n},) (one weight per sample), got {weight.shape}"
        )
    return weight
