"""The per-call context: what one call of a layer keeps for its backward.

A layer written in the context form stores what ``backward`` needs on the
context of the call instead of on itself::

    def forward(self, ctx, x):
        ctx.x = x
        return x @ self.weight.data.T

    def backward(self, ctx, grad_out):
        self.weight.add_grad(grad_out.T @ ctx.x)
        return grad_out @ self.weight.data

The model's executor creates one :class:`Context` per node of the graph and
per step (its tape), so one layer called at several places of a graph (a
shared layer, an unrolled cell) keeps one record per call, its parameter
gradients summing over the calls, and calls from several threads never meet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Context"]


class Context:
    """The record of one layer call, and how that call runs.

    Args:
        training: the mode of this call (Dropout drops, BatchNorm uses batch
            statistics). ``predict`` and ``evaluate`` pass ``False``; the
            layers' own ``training`` flags are never changed.
        needs_input_grad: whether the caller needs ``dL/dx``; a layer may skip
            that product and return ``None`` from ``backward`` when it is
            ``False`` (the first layer of a model under ``fit``).
        record: whether a ``backward`` will follow. ``predict`` passes
            ``False``, so an executor may drop each record once the next layer
            has run (memory of one layer's activations, not all of them).
        nested: the call is a step of an enclosing model or layer (a graph
            node, a ``Sequential`` stage, a :meth:`child`), not the outermost
            call: a model without parameters then takes its inputs as the
            enclosing model cast them.

    Attributes:
        grad_out_writable: set by the caller just before ``backward``: ``True``
            when ``grad_out`` is an intermediate array nobody else reads, so
            the layer may overwrite it in place (see docs/plugins.md).
        out_shape: the shape of what ``forward`` returned, which ``backward``
            checks ``grad_out`` against (set by the ``Layer`` base class).
        out_dtype: the dtype of what ``forward`` returned (``None`` unless an
            array); a floating one is what ``backward`` casts ``grad_out`` to.

    Any other attribute is the layer's own: ``ctx.x = x`` in ``forward``,
    ``ctx.x`` in ``backward``.
    """

    def __init__(
        self,
        training: bool = False,
        *,
        needs_input_grad: bool = True,
        record: bool = True,
        nested: bool = False,
    ) -> None:
        self.training = bool(training)
        self.needs_input_grad = needs_input_grad
        self.record = record
        self.nested = nested
        self.grad_out_writable = False
        self.out_shape: Any = None
        self.out_dtype: Any = None
        self._children: dict[Any, Context] | None = None

    if TYPE_CHECKING:  # any field may be set (no cost at run time: only the checker sees it)

        def __setattr__(self, name: str, value: Any) -> None: ...

    def __getattr__(self, name: str) -> Any:
        # Only reached for a field never set: name it, and what usually causes it.
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"this call's context has no {name!r}: forward did not store it (ctx.{name} = ...), "
            "or backward was given another call's context"
        )

    def child(self, key: Any) -> Context:
        """The context of a sub-call (an activation, a cell at one time step), made on first use.

        It inherits the mode and ``record``; a composite layer passes it to
        the child layer's ``forward`` and, under the same key, ``backward``.
        """
        children = self._children
        if children is None:
            children = self._children = {}
        found = children.get(key)
        if found is None:
            found = children[key] = Context(self.training, record=self.record, nested=True)
        return found

    def __repr__(self) -> str:
        own = sorted(k for k in vars(self) if not k.startswith("_") and k not in _BASE_FIELDS)
        return f"Context(training={self.training}, fields={own})"


_BASE_FIELDS = {
    "training",
    "needs_input_grad",
    "record",
    "nested",
    "grad_out_writable",
    "out_shape",
    "out_dtype",
}
