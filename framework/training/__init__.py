"""Training: the ``fit`` / ``evaluate`` / ``predict`` loops and the data they
read, callbacks and progress display, and learning-rate schedules.
"""

from framework.training.loop import ArrayData, BatchData, Trainer, evaluate, fit, make_data, predict

__all__ = ["ArrayData", "BatchData", "Trainer", "evaluate", "fit", "make_data", "predict"]
