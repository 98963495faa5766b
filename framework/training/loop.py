"""The training loop ``fit``; ``evaluate``, ``predict`` and the ``*_on_batch`` steps are re-exported.

The data they read is described in :mod:`framework.training.data` (arrays,
lists, dicts keyed by ``Input`` / output name, h5py datasets, batch
iterables, per-sample weights).

In-memory arrays are checked (dtype, and NaN/Inf unless ``check_finite=False``)
and cast to the model's dtype once, before the first epoch; each epoch draws
one permutation and slices it batch by batch, so the per batch Python work is
one fancy index, one forward, one backward and one step.

A model with a layer that needs the whole batch (a class attribute
``needs_full_batch = True``, as graph layers have: their adjacency is fixed to
the node order) is trained with one full, unshuffled batch per epoch, and
evaluated and predicted in one batch; asking for ``shuffle=True`` or a smaller
``batch_size`` is refused. Mask nodes with ``sample_weight``.

``fit`` stops after the current batch when it receives SIGINT (Ctrl-C) and
returns the ``History`` of the epochs completed, with the model intact. It
returns the model in inference mode however it ends (an exception included).
"""

from __future__ import annotations

import contextlib
import numbers
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.errors import ConfigError, DataError
from framework.runtime.random import get_rng
from framework.training.batching import batching, check_positive_int, full_batch_layer
from framework.training.callbacks import (
    CallbackList,
    FitCallbacks,
    History,
    ProgbarLogger,
    as_callback_list,
    resolve_verbose,
)
from framework.training.class_weights import class_weight_table, combine_weights
from framework.training.data import (
    ArrayData,
    BatchData,
    make_data,
)
from framework.training.inference import (
    evaluate,
    evaluate_data,
    predict,
    predict_on_batch,
    test_on_batch,
    train_on_batch,
)
from framework.training.parallel import data_parallel
from framework.training.replicas import make_replicas
from framework.training.trainer import (
    Interrupt,
    Trainer,
    calls_children_by_hand,
    keep_freed_memory,
)

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = [
    "ArrayData",
    "BatchData",
    "Trainer",
    "evaluate",
    "fit",
    "keep_freed_memory",
    "make_data",
    "predict",
    "predict_on_batch",
    "test_on_batch",
    "train_on_batch",
]


def _validation(model: Model, validation_data: Any, check_finite: bool, steps: int | None) -> Any:
    if isinstance(validation_data, tuple) and len(validation_data) in (2, 3):
        sw = validation_data[2] if len(validation_data) == 3 else None
        return make_data(
            model, validation_data[0], validation_data[1], steps, sw, check_finite, "validation_steps"
        )
    if isinstance(validation_data, tuple):
        raise ConfigError(
            f"fit: validation_data must be (x_val, y_val) or (x_val, y_val, sample_weight_val), "
            f"got a tuple of {len(validation_data)}"
        )
    return make_data(
        model, validation_data, None, steps, None, check_finite, "validation_steps", "validation_data"
    )


def fit(
    model: Model,
    x: Any = None,
    y: Any = None,
    epochs: int = 1,
    batch_size: int | None = None,
    validation_data: Any = None,
    validation_split: float = 0.0,
    shuffle: bool | None = None,
    class_weight: dict[int, float] | None = None,
    sample_weight: Any = None,
    callbacks: Any = None,
    verbose: int | str = "auto",
    initial_epoch: int = 0,
    seed: int | None = None,
    steps_per_epoch: int | None = None,
    check_finite: bool = True,
    threads: int | None = None,
    validation_steps: int | None = None,
) -> History:
    """Train ``model`` for ``epochs - initial_epoch`` epochs; returns a ``History``.

    Args:
        x, y: the data (see :mod:`framework.training.data`): arrays, lists of
            arrays, dicts keyed by ``Input`` / output name, h5py datasets;
            an iterable of batches (``y=None``; see :mod:`framework.training.iterables`).
        epochs: the index of the last epoch (Keras semantics with ``initial_epoch``).
        batch_size: samples per batch for array data; default 32, or all the
            samples for a model with a full-batch layer (``needs_full_batch``);
            refused for an iterable of batches.
        validation_data: ``(x_val, y_val)``, ``(x_val, y_val, sample_weight_val)``
            or an iterable of batches, evaluated after each epoch (keys
            ``val_loss``, ``val_<metric>``).
        validation_split: the fraction of the array data (taken from the end,
            before shuffling) held out for validation; ignored, as in Keras,
            when ``validation_data`` is given.
        shuffle: draw a new permutation each epoch; default on, off for a
            full-batch model (where ``True`` is refused); an iterable of
            batches keeps its order (``True`` warns).
        class_weight: ``{class index: weight}``; each sample's loss is weighted
            by its class's weight (integer or one-hot targets, one output).
        sample_weight: a weight per sample (``(N,)``); for several outputs a
            list or a dict keyed by output name. Multiplied by ``class_weight``.
            Weights the loss and the metrics that take weights.
        callbacks: a ``Callback`` or a list of them.
        verbose: ``"auto"`` (a progress bar on a terminal, one line per epoch
            otherwise), 0 silent, 1 a progress bar (one line per epoch when
            the output is not a terminal), 2 one line per epoch.
        initial_epoch: the epoch to start from (resume with ``model.epoch``).
        seed: seeds the shuffling; ``None`` uses the global generator
            (``framework.set_seed``).
        steps_per_epoch: batches per epoch taken from a batch iterable, read on from
            where the previous epoch stopped; required to train a generator for
            several epochs; when it runs out, training stops with a warning
            (refused with arrays).
        validation_steps: the same for ``validation_data`` given as an iterable.
        check_finite: refuse NaN/Inf in ``x``, ``y`` and the weights (each
            in-memory array once, before the first epoch; iterables per batch).
        threads: cut each batch into this many shards and run them on as
            many threads, each on its own core, NumPy's BLAS held to one
            thread meanwhile (:mod:`framework.training.replicas`). The loss,
            metrics, gradients and BatchNorm statistics are the whole batch's,
            as on one thread; Dropout masks differ from one thread's. Pays
            where a step's arrays are large (the example CNN at batch 128:
            1.4x); a small model's step is held by Python and gains nothing.
            A model whose outputs for a batch are not its shards' outputs
            joined (checked once) is refused. Default ``None``: one thread,
            BLAS as configured.

    Raises:
        NotCompiledError: before ``compile``.
        DataError: mismatched lengths, empty data, malformed batches, a dict
            with unknown or missing keys, a non-numeric dtype, NaN/Inf values.
        ConfigError: bad arguments; ``shuffle=True``, a ``batch_size`` below
            the sample count or ``validation_split`` for a full-batch model;
            ``threads`` above 1 for a full-batch model, on several MPI ranks, or
            for a model that mixes the samples of a batch (other than BatchNorm).
    """
    model._require_compiled("fit")
    epochs = check_positive_int("fit: epochs", epochs, 0)
    initial_epoch = check_positive_int("fit: initial_epoch", initial_epoch, 0)
    verbose = resolve_verbose(verbose, "fit")
    if (
        isinstance(validation_split, (bool, np.bool_))
        or not isinstance(validation_split, numbers.Real)
        or not 0.0 <= validation_split < 1.0
    ):
        raise ConfigError(f"fit: validation_split must be a number in [0, 1), got {validation_split!r}")
    user_callbacks = as_callback_list(callbacks)

    if steps_per_epoch is not None:
        steps_per_epoch = check_positive_int("fit: steps_per_epoch", steps_per_epoch)
    if validation_steps is not None:
        validation_steps = check_positive_int("fit: validation_steps", validation_steps)
    data = make_data(model, x, y, steps_per_epoch, sample_weight, check_finite)
    if isinstance(data, ArrayData) and data.ys is None:
        raise DataError("fit: y is None; pass targets, or an iterable of (x, y) batches as x")
    batch_size, shuffle = batching("fit", model, data, batch_size, shuffle)
    full = isinstance(data, ArrayData) and batch_size == data.n and not shuffle and full_batch_layer(model)
    val_data: Any = None
    if validation_split and validation_data is None:  # as Keras: validation_data wins
        if not isinstance(data, ArrayData):
            raise ConfigError(
                "fit: validation_split needs array data; pass validation_data for batch iterables"
            )
        if full:
            raise ConfigError(
                "fit: validation_split would cut samples off a full-batch model's input; pass "
                "validation_data=(x, y, validation_mask) with the same x instead"
            )
        data, val_data = data.split(validation_split)
    elif validation_data is not None:
        val_data = _validation(model, validation_data, check_finite, validation_steps)
    elif validation_steps is not None:
        raise ConfigError("fit: validation_steps applies to validation_data; no validation_data was given")
    batch_sources = [d for d in (data, val_data) if isinstance(d, BatchData)]
    for source in batch_sources:
        source.refuse_epochs("fit", epochs - initial_epoch)
    if isinstance(data, ArrayData):
        data.cast(model)
    if isinstance(val_data, ArrayData):
        val_data.cast(model)
    val_batch = val_data.n if full and isinstance(val_data, ArrayData) else batch_size
    if isinstance(val_data, ArrayData) and not batch_size:  # training batches come from an iterable
        val_batch = batching("fit", model, val_data, None, False)[0]
    weight_table = class_weight_table(class_weight, model)
    # With a seed, epoch k's order depends on (seed, k) alone, so a run resumed at any epoch
    # shuffles as the uninterrupted one did; without, the global generator, which a resumed
    # fit takes back from the checkpoint (see resume_state).
    rng: Any = get_rng() if seed is None else None
    saved_callbacks = resume_state(model, initial_epoch)
    model.fit_callbacks = FitCallbacks(user_callbacks)  # what a checkpoint written from now on records

    parallel = data_parallel(model)  # None unless data-parallel on several MPI ranks
    replicas = make_replicas("fit", model, threads, on_ranks=parallel is not None)
    if parallel is not None:
        parallel.start(data, batch_size, full)
        if not parallel.is_main:  # rank 0 alone draws the bar and writes files
            verbose = 0
            user_callbacks = [c for c in user_callbacks if not getattr(c, "main_process_only", False)]
    history = History()
    # As in Keras, the progress bar and History come after the user's callbacks,
    # so they see keys those add to the epoch logs (``lr``).
    cbs = list(user_callbacks)
    if verbose:
        cbs.append(ProgbarLogger(verbose=verbose))
    cbs.append(history)
    cb = CallbackList(cbs, model=model)
    steps = data.steps(batch_size) if parallel is None else parallel.steps(data, batch_size)
    cb.set_params({"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size})
    trainer = Trainer(model)
    if replicas is not None:
        trainer.runner = replicas
    model.stop_training = False
    model.history = history
    keep_freed_memory()
    interrupted = False
    logs: dict[str, Any] = {}
    is_batches = isinstance(data, BatchData)
    if calls_children_by_hand(model):  # the executors pass the mode on the contexts; these read flags
        model.train()
    with Interrupt(model.optimizer) as interrupt, replicas or contextlib.nullcontext():
        try:
            cb.on_train_begin()
            resume_callbacks(user_callbacks, saved_callbacks)
            for epoch in range(initial_epoch, epochs):
                if any(source.exhausted() for source in batch_sources):  # a generator ran out: warned
                    break
                trainer.reset_metrics()
                cb.on_epoch_begin(epoch)
                # sums weighted by each batch's samples (Keras's convention): a smaller last batch
                # counts for its size, on one process as in a window shared by several ranks
                total, count = 0.0, 0
                epoch_rng = rng if seed is None else np.random.default_rng([seed, epoch])
                if replicas is not None:
                    replicas.start_epoch(epoch)
                if parallel is None:
                    batches = data.batches(batch_size, shuffle, epoch_rng)
                else:
                    batches = parallel.batches(data, batch_size, shuffle, epoch_rng)
                for step, (xb, yb, wb) in enumerate(batches):
                    cb.on_train_batch_begin(step)
                    if weight_table is not None and xb is not None:
                        wb = combine_weights(weight_table, yb, wb)
                    try:
                        if parallel is None:
                            value = trainer.train_step(xb, yb, wb)
                        else:
                            value = (
                                trainer.train_step(xb, yb, wb)
                                if xb is not None
                                else parallel.empty_step(trainer)
                            )
                            value = parallel.after_batch(value, interrupt)
                    except Exception as exc:
                        if is_batches:
                            data.blame(exc)
                        raise
                    # the loss, already the window's on several ranks, weighs by the window; the trainer
                    # weighs the per-output losses by this rank's batch (the ranks' means are combined by
                    # sample counts at the epoch's end)
                    weight = trainer.batch_samples if parallel is None else parallel.window_samples
                    total += value * weight
                    count += weight
                    if cb.has_batch_hooks:
                        # Running means over the epoch so far, as the metrics are (Keras's convention).
                        batch_logs = {"loss": total / count}
                        batch_logs.update(trainer.metric_logs())
                        cb.on_train_batch_end(step, batch_logs)
                    if interrupt.flag or model.stop_training:
                        break
                if interrupt.flag:
                    interrupted = True
                    break
                logs = {"loss": total / count if count else float("nan"), **trainer.metric_logs()}
                if parallel is not None:  # the loss is already the mean over the ranks
                    logs = parallel.combine_logs(logs, trainer, parallel.samples, skip=("loss",))
                if val_data is not None:
                    if parallel is None:
                        val_logs = evaluate_data(model, trainer, val_data, val_batch, cb)
                    else:
                        part, split = parallel.validation_part(val_data)
                        val_logs = evaluate_data(model, trainer, part, val_batch, cb)
                        if split:  # else every rank evaluated all of it: the same logs everywhere
                            val_logs = parallel.combine_logs(val_logs, trainer, part.n or 1)
                    logs.update({"val_" + k: v for k, v in val_logs.items()})
                model.epoch = epoch + 1  # before the callbacks: a checkpoint they write holds this epoch
                cb.on_epoch_end(epoch, logs)
                if parallel is not None:
                    parallel.agree_stop(interrupt)
                if interrupt.flag:
                    interrupted = True
                    break
                if model.stop_training:
                    break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            # Keras's contract: the model comes back in inference mode, however fit ends.
            model.eval()
    if interrupted:
        history.interrupted = True
        model.stop_training = True
        print(
            f"\nTraining interrupted (Ctrl-C) after {len(history.epoch)} complete epoch(s); "
            "the model keeps its weights and the returned History covers the completed epochs.",
            file=sys.stderr,
            flush=True,
        )
    cb.on_train_end(logs)
    return history


def resume_state(model: Model, initial_epoch: int) -> dict[str, dict[str, Any]]:
    """Resuming at the epoch a checkpoint was saved after: put its generator states back.

    ``load_model`` touches no global state; the first ``fit(initial_epoch=model.epoch)``
    afterwards restores the framework's global generator and each layer's own
    generator (a seeded ``Dropout``) as they were when the checkpoint was written,
    once, so 2 epochs + save + load + 2 epochs equals 4 epochs bit for bit.

    Returns:
        the callbacks' saved states by key, for :func:`resume_callbacks`
        (``{}`` when this fit does not resume a checkpoint).
    """
    state = getattr(model, "training_state", None)
    if not initial_epoch or not isinstance(state, dict) or state.get("epoch") != initial_epoch:
        return {}
    from framework.saving.checkpoint import restore_rng_state

    restore_rng_state(model)
    model.training_state = None
    return state.get("callbacks") or {}


def resume_callbacks(callbacks: list[Any], saved: dict[str, dict[str, Any]]) -> None:
    """Hand each callback the state its namesake (same class, same rank among that class) saved."""
    if not saved:
        return
    from framework.saving.callback_state import keyed

    for key, callback in keyed(callbacks):
        if key in saved:
            callback.load_state_dict(saved[key])
