"""Callbacks: code the loops run at the start and end of training, epochs and batches.

A callback subclasses :class:`Callback` and overrides any of the Keras hooks
``on_train_begin/end``, ``on_epoch_begin/end``, ``on_train_batch_begin/end``
(``on_batch_begin/end`` are the same hooks under their older names),
``on_test_begin/end`` and ``on_test_batch_begin/end`` (``evaluate``, and
``fit``'s validation after each epoch), ``on_predict_begin/end`` and
``on_predict_batch_begin/end`` (``predict``). ``self.model`` is the model
being trained, ``self.params`` holds ``epochs``, ``steps``, ``verbose`` and
``batch_size``. Setting ``self.model.stop_training = True`` stops ``fit``
after the current batch. ``callbacks=`` takes a list or a single callback.

``logs`` at a training batch end holds the running means of the epoch so far
(``loss`` and the metrics); at an epoch end, the epoch's mean loss, the
metrics and the validation results (``val_`` keys); at a test batch end the
batch's ``loss``; at ``on_test_end`` the evaluation's results; at a predict
batch end ``outputs``.

Built-ins: :class:`History` (added to every ``fit``), :class:`EarlyStopping`,
:class:`ModelCheckpoint`, :class:`ReduceLROnPlateau`,
:class:`LearningRateScheduler`, :class:`TerminateOnNaN`, :class:`CSVLogger`,
:class:`LambdaCallback`, :class:`TensorBoard` (the ``tensorboard`` extra) and
:class:`ProgbarLogger` (added by ``verbose``).
"""

from framework.training.callbacks.base import (
    Callback,
    CallbackList,
    FitCallbacks,
    History,
    as_callback_list,
)
from framework.training.callbacks.builtin import CSVLogger, LambdaCallback, TerminateOnNaN
from framework.training.callbacks.monitors import (
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
)
from framework.training.callbacks.progress import ProgbarLogger, resolve_verbose
from framework.training.callbacks.tensorboard import TensorBoard

__all__ = [
    "Callback",
    "CallbackList",
    "FitCallbacks",
    "History",
    "EarlyStopping",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "LearningRateScheduler",
    "TerminateOnNaN",
    "CSVLogger",
    "LambdaCallback",
    "ProgbarLogger",
    "TensorBoard",
    "as_callback_list",
    "resolve_verbose",
]
