"""Training: the ``fit`` / ``evaluate`` / ``predict`` loops (:mod:`.loop`), the data they
read (:mod:`.data`), the training step (:mod:`.trainer`), and callbacks with
progress display (:mod:`.callbacks`).
"""

from framework.training.data import ArrayData, BatchData, make_data
from framework.training.loop import (
    evaluate,
    fit,
    predict,
    predict_on_batch,
    test_on_batch,
    train_on_batch,
)
from framework.training.trainer import Trainer

__all__ = [
    "ArrayData",
    "BatchData",
    "Trainer",
    "evaluate",
    "fit",
    "make_data",
    "predict",
    "predict_on_batch",
    "test_on_batch",
    "train_on_batch",
]
