"""The Keras training surface of ``Model``: ``fit``, ``evaluate``, ``predict`` and the ``*_on_batch`` steps.

A mixin of :class:`~framework.models.model.Model` that hands each call to
:mod:`framework.training`, which works on any model through its public
methods and imports nothing from :mod:`framework.models`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = ["TrainingMethods"]


class TrainingMethods:
    """``fit`` / ``evaluate`` / ``predict`` and single-batch steps, run by ``framework.training``."""

    def fit(self, x: Any = None, y: Any = None, **kwargs: Any) -> Any:
        """Train; see :func:`framework.training.loop.fit` for the arguments. Returns a ``History``."""
        from framework.training.loop import fit

        return fit(cast("Model", self), x, y, **kwargs)

    def evaluate(self, x: Any = None, y: Any = None, **kwargs: Any) -> Any:
        """The loss and metrics over ``(x, y)`` in inference mode: ``{"loss": ..., "accuracy": ...}``
        (Keras's list with ``return_dict=False``).

        See :func:`framework.training.loop.evaluate` (``sample_weight``, ``callbacks``, ...).
        """
        from framework.training.loop import evaluate

        return evaluate(cast("Model", self), x, y, **kwargs)

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = 0, **kwargs: Any) -> Any:
        """The outputs for ``x`` in inference mode, batched (a list for several outputs).

        See :func:`framework.training.loop.predict`.
        """
        from framework.training.loop import predict

        return predict(cast("Model", self), x, batch_size=batch_size, verbose=verbose, **kwargs)

    def train_on_batch(
        self, x: Any, y: Any, sample_weight: Any = None, return_dict: bool = False
    ) -> float | dict[str, Any]:
        """One optimisation step on one batch; returns the loss (or a dict with ``return_dict=True``)."""
        from framework.training.loop import train_on_batch

        return train_on_batch(cast("Model", self), x, y, sample_weight=sample_weight, return_dict=return_dict)

    def test_on_batch(
        self, x: Any, y: Any, sample_weight: Any = None, return_dict: bool = False
    ) -> float | dict[str, Any]:
        """The loss on one batch in inference mode, no step (a dict with ``return_dict=True``)."""
        from framework.training.loop import test_on_batch

        return test_on_batch(cast("Model", self), x, y, sample_weight=sample_weight, return_dict=return_dict)

    def predict_on_batch(self, x: Any) -> Any:
        """The outputs for one batch ``x`` in inference mode."""
        from framework.training.loop import predict_on_batch

        return predict_on_batch(cast("Model", self), x)
