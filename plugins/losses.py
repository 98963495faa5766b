"""Built-in plugin: regression and classification losses with hand-derived gradients.

The entry-point module of the ``losses`` plugin: it registers every built-in
loss, implemented in

- :mod:`plugins.regression_losses`: ``mse``, ``mae``, ``huber``;
- :mod:`plugins.cross_entropy`: the PyTorch-named cross-entropies, which
  take **logits** (``cross_entropy`` / ``CrossEntropyLoss``,
  ``bce_with_logits`` / ``BCEWithLogitsLoss``, ``masked_cross_entropy``);
- :mod:`plugins.keras_losses`: the Keras-named cross-entropies, which take
  **probabilities** unless ``from_logits=True`` (``binary_crossentropy``,
  ``categorical_crossentropy``, ``sparse_categorical_crossentropy``).

Names are matched case-insensitively with ``_`` ignored, so
``binary_cross_entropy`` and ``BinaryCrossEntropy`` are Keras's
``binary_crossentropy`` (PyTorch's ``F.binary_cross_entropy`` also takes
probabilities), and ``BCELoss`` is registered as its alias.

Every loss returns the batch mean as a Python float from ``forward`` and
``dL/d y_pred`` (with the mean's ``1/N`` in it) from ``backward``. Sample
weights (``forward(y_pred, y_true, sample_weight)``, shape ``(N,)``) follow
Keras: the loss is the batch mean of ``w_i * l_i``, not renormalised by the
sum of the weights.
"""

from __future__ import annotations

from typing import Any

from framework.registry.hookspecs import hookimpl
from plugins.cross_entropy import BCEWithLogits, CrossEntropy, MaskedCrossEntropy
from plugins.keras_losses import BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy
from plugins.regression_losses import MAE, MSE, Huber

__all__ = [
    "MSE",
    "MAE",
    "Huber",
    "CrossEntropy",
    "MaskedCrossEntropy",
    "BCEWithLogits",
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy",
]


@hookimpl
def register_losses(register: Any) -> None:
    register(MSE, name="mse", aliases=("mean_squared_error", "MSELoss", "MSE"))
    register(MAE, name="mae", aliases=("mean_absolute_error", "L1Loss", "MAE"))
    register(Huber, name="huber", aliases=("HuberLoss", "Huber"))
    # PyTorch names: logits.
    register(CrossEntropy, name="cross_entropy", aliases=("CrossEntropyLoss", "CrossEntropy"))
    register(
        BCEWithLogits,
        name="bce_with_logits",
        aliases=("BCEWithLogitsLoss", "binary_cross_entropy_with_logits", "BCEWithLogits"),
    )
    register(MaskedCrossEntropy, name="masked_cross_entropy", aliases=("MaskedCrossEntropy",))
    # Keras names: probabilities unless from_logits=True.
    register(BinaryCrossentropy, name="binary_crossentropy", aliases=("BinaryCrossentropy", "bce", "BCELoss"))
    register(CategoricalCrossentropy, name="categorical_crossentropy", aliases=("CategoricalCrossentropy",))
    register(
        SparseCategoricalCrossentropy,
        name="sparse_categorical_crossentropy",
        aliases=("SparseCategoricalCrossentropy",),
    )
