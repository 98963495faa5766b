"""Error-quality hunt over the newer public APIs: metrics' state methods, callbacks,
schedules, optimizers' arguments, compile/fit arguments, layer flags, datasets helpers,
History.plot and the CLI.

The contract (docs/errors.md, DESIGN.md "Errors"): bad input raises a
``framework.FrameworkError`` subclass whose message names the object (layer,
function, argument) and the bad value -- never a bare TypeError / ValueError /
AttributeError / MemoryError from NumPy or Python, and never a silently
misread argument.

Tests that fail here are bugs found by the hunt (kept as plain failing tests);
the others pin behaviour that was checked and found right.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import framework
from framework import Input, Sequential, metrics
from framework.errors import ConfigError, DataError, FrameworkError
from tests.support import subprocess_env

# --------------------------------------------------------------------------- helpers


def _expect_framework_error(fn, *needles, kind=FrameworkError):
    """Call ``fn``; it must raise ``kind`` (a FrameworkError) whose message contains every needle."""
    with pytest.raises(Exception) as info:
        fn()
    exc = info.value
    assert isinstance(exc, kind), f"expected {kind.__name__}, got bare {type(exc).__name__}: {exc}"
    message = str(exc)
    for needle in needles:
        assert needle in message, f"message {message!r} does not mention {needle!r}"
    return exc


def _xy(n=20):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 2)).astype("float32")
    return x, (x[:, 0] > 0).astype(np.int64)


def _model(compiled=True):
    from framework.layers import Linear

    framework.set_seed(0)
    model = Sequential([Linear(2, 2)])
    if compiled:
        model.compile("sgd", "cross_entropy", metrics=["accuracy"])
    return model


# =========================================================================== metrics

BINARY_TRUE = np.array([0, 1])
BINARY_PRED = np.array([0.1, 0.9])


def test_metric_update_state_none_is_a_framework_error():
    # Actual: TypeError: object of type 'NoneType' has no len()  (Metric._accumulate / decisions)
    m = metrics.get("accuracy")
    _expect_framework_error(lambda: m.update_state(None, None), "Accuracy")


def test_metric_update_state_string_sample_weight_is_a_framework_error():
    # Actual: ValueError: could not convert string to float: 'x'  (check_sample_weight)
    m = metrics.get("accuracy")
    _expect_framework_error(
        lambda: m.update_state(BINARY_TRUE, BINARY_PRED, sample_weight="x"), "Accuracy", "sample_weight"
    )


def test_mse_metric_string_targets_is_a_framework_error():
    # Actual: ValueError: could not convert string to float: 'a'
    m = metrics.get("mse")
    _expect_framework_error(lambda: m.update_state(np.array(["a", "b"]), BINARY_PRED), "MeanSquaredError")


@pytest.mark.parametrize("arg", [None, "single"], ids=["None", "a-metric-not-in-a-list"])
def test_metric_merge_state_needs_a_list_error(arg):
    # Actual: TypeError: 'NoneType' object is not iterable / 'Precision' object is not iterable
    m = metrics.get("precision")
    other = metrics.get("precision") if arg == "single" else None
    _expect_framework_error(lambda: m.merge_state(other), "Precision.merge_state")


def test_confusion_matrix_label_outside_num_classes_is_refused():
    # ConfusionMatrix(num_classes=2) counts label 5 as class 1 without a word (binary y_pred path
    # thresholds y_true at 0.5); the multi-class path refuses the same label with a DataError.
    m = metrics.get("confusion_matrix", num_classes=2)
    _expect_framework_error(
        lambda: m.update_state(np.array([0, 5]), BINARY_PRED), "ConfusionMatrix", "5", kind=DataError
    )


def test_precision_binary_label_outside_0_1_is_refused():
    # Precision on one score per sample takes label 2 as positive (y_true > 0.5): precision 1.0.
    m = metrics.get("precision")
    _expect_framework_error(lambda: m.update_state(np.array([0, 2]), BINARY_PRED), "Precision", "2")


def test_function_metric_returning_a_string_is_a_framework_error():
    # Actual: ValueError: could not convert string to float: 'x'
    def text_metric(y_true, y_pred):
        return "x"

    m = metrics.get(text_metric)
    _expect_framework_error(lambda: m.update(np.array([1.0]), np.array([0.0])), "text_metric")


def test_function_metric_returning_none_is_refused_not_nan():
    # A function that forgot its ``return`` gives result() == nan silently.
    def forgot_return(y_true, y_pred):
        pass

    m = metrics.get(forgot_return)

    def run():
        m.update(np.array([1.0, 2.0]), np.array([0.0, 1.0]))
        return m.result()

    _expect_framework_error(run, "forgot_return", "None")


def test_compile_metric_that_is_not_a_metric_is_a_config_error():
    # Actual: AttributeError: 'int' object has no attribute 'name'  (compile_model / metrics.get pass-through)
    model = _model(compiled=False)
    _expect_framework_error(lambda: model.compile("sgd", "mse", metrics=[3]), "metric", "3", kind=ConfigError)


@pytest.mark.parametrize("kind", ["metrics", "losses", "optimizers", "activations", "layers"])
def test_registry_get_config_that_is_not_a_dict(kind):
    # Actual: TypeError: cannot convert dictionary update sequence element #0 to a sequence
    ns = getattr(framework, kind)
    _expect_framework_error(lambda: ns.get({"class_name": "mse", "config": [1]}), "config", kind=ConfigError)


# checked and right -------------------------------------------------------------


@pytest.mark.parametrize(
    "state, needle",
    [
        (None, "total"),
        ({}, "total"),
        ({"total": "a", "count": 1}, "total"),
        ({"total": [1.0], "count": 1}, "total"),
    ],
)
def test_running_mean_set_state_refuses_malformed(state, needle):
    m = metrics.get("accuracy")
    _expect_framework_error(lambda: m.set_state(state), "Accuracy.set_state", needle, kind=ConfigError)


def test_precision_set_state_refuses_wrong_matrix_shape():
    p = metrics.get("precision")
    p.update_state(np.array([1, 0, 1]), np.array([0.9, 0.2, 0.7]))
    state = p.get_state()
    state["matrix"] = np.zeros((3, 3))
    _expect_framework_error(
        lambda: metrics.get("precision").set_state(state), "Precision.set_state", "(3, 3)"
    )


def test_merge_state_refuses_other_class_and_config():
    _expect_framework_error(
        lambda: metrics.get("accuracy").merge_state([metrics.get("mse")]),
        "Accuracy.merge_state",
        "MeanSquaredError",
    )
    _expect_framework_error(
        lambda: metrics.get("top_k_accuracy", k=2).merge_state([metrics.get("top_k_accuracy", k=3)]),
        "TopKAccuracy.merge_state",
        "'k': 3",
    )


def test_metric_sample_weight_of_wrong_length():
    _expect_framework_error(
        lambda: metrics.get("recall").update_state(BINARY_TRUE, BINARY_PRED, sample_weight=np.ones(3)),
        "Recall",
        "(3,)",
    )


@pytest.mark.parametrize(
    "name, kwargs, needle",
    [
        ("top_k_accuracy", {"k": 0}, "k"),
        ("top_k_accuracy", {"k": True}, "k"),
        ("auc", {"num_thresholds": 1}, "num_thresholds"),
        ("auc", {"curve": "bogus"}, "curve"),
        ("f1_score", {"average": "bogus"}, "average"),
        ("accuracy", {"threshold": float("nan")}, "threshold"),
        ("confusion_matrix", {"num_classes": -1}, "num_classes"),
    ],
)
def test_metric_constructor_arguments(name, kwargs, needle):
    _expect_framework_error(lambda: metrics.get(name, **kwargs), needle, kind=ConfigError)


# =========================================================================== callbacks


def test_csvlogger_filename_none_is_a_config_error():
    # Actual: TypeError: expected str, bytes or os.PathLike object, not NoneType
    from framework.training.callbacks import CSVLogger

    _expect_framework_error(lambda: CSVLogger(None), "CSVLogger", "None")


def test_csvlogger_bad_separator_is_refused_up_front(tmp_path):
    # separator="" is accepted by the constructor; fit then dies in on_train_begin with
    # TypeError: "delimiter" must be a 1-character string (csv.writer).
    from framework.training.callbacks import CSVLogger

    _expect_framework_error(
        lambda: CSVLogger(str(tmp_path / "log.csv"), separator=""), "CSVLogger", "separator"
    )


def test_csvlogger_bad_separator_at_fit_is_not_a_bare_typeerror(tmp_path):
    from framework.training.callbacks import CSVLogger

    x, y = _xy()
    cb = CSVLogger(str(tmp_path / "log.csv"))
    cb.separator = 3  # changed after construction (which refuses it): fit checks again
    _expect_framework_error(lambda: _model().fit(x, y, epochs=1, verbose=0, callbacks=[cb]), "separator")


def test_modelcheckpoint_filepath_none_is_refused():
    # ModelCheckpoint(None).filepath == "None": the model is silently saved to a file named "None".
    from framework.training.callbacks import ModelCheckpoint

    _expect_framework_error(lambda: ModelCheckpoint(None), "ModelCheckpoint", "filepath", kind=ConfigError)


@pytest.mark.parametrize(
    "factory, arg",
    [
        ("EarlyStopping(restore_best_weights='False')", "restore_best_weights"),
        ("ModelCheckpoint('m.h5', save_best_only='no')", "save_best_only"),
        ("ModelCheckpoint('m.h5', save_weights_only='no')", "save_weights_only"),
        ("CSVLogger('log.csv', append='no')", "append"),
    ],
)
def test_callback_flags_refuse_strings(factory, arg):
    # bool("False") is True: each flag is silently read as True. The schedules (_check_flag) and
    # layers such as LSTM / Conv2d refuse a string flag with "must be True or False".
    from framework.training import callbacks

    _expect_framework_error(lambda: eval(factory, vars(callbacks)), arg, kind=ConfigError)


def test_tensorboard_accepts_numpy_integer_histogram_freq(tmp_path):
    # histogram_freq=np.int64(1) is refused ("must be an integer >= 0, got np.int64(1)") while every
    # other callback count (check_count) accepts NumPy integers.
    pytest.importorskip("tensorboardX")
    from framework.training.callbacks import TensorBoard

    board = TensorBoard(str(tmp_path / "logs"), histogram_freq=np.int64(1), update_freq=np.int64(2))
    assert board.histogram_freq == 1


def test_tensorboard_log_dir_none_is_a_config_error():
    # Actual: TypeError: expected str, bytes or os.PathLike object, not NoneType
    pytest.importorskip("tensorboardX")
    from framework.training.callbacks import TensorBoard

    _expect_framework_error(lambda: TensorBoard(None), "TensorBoard", "log_dir")


# checked and right -------------------------------------------------------------


@pytest.mark.parametrize(
    "factory, needles",
    [
        ("EarlyStopping(patience=-1)", ("EarlyStopping", "patience", "-1")),
        ("EarlyStopping(patience=True)", ("EarlyStopping", "patience", "True")),
        ("EarlyStopping(min_delta=float('nan'))", ("EarlyStopping", "min_delta", "nan")),
        ("EarlyStopping(mode='maximum')", ("EarlyStopping", "mode", "maximum")),
        ("EarlyStopping(baseline='0.5')", ("EarlyStopping", "baseline", "0.5")),
        ("EarlyStopping(start_from_epoch=1.5)", ("EarlyStopping", "start_from_epoch", "1.5")),
        ("EarlyStopping(monitor=None)", ("EarlyStopping", "monitor", "None")),
        ("ReduceLROnPlateau(factor=1.0)", ("ReduceLROnPlateau", "factor", "1.0")),
        ("ReduceLROnPlateau(factor='0.5')", ("ReduceLROnPlateau", "factor", "0.5")),
        ("ReduceLROnPlateau(min_lr=-1)", ("ReduceLROnPlateau", "min_lr", "-1")),
        ("ReduceLROnPlateau(cooldown=-1)", ("ReduceLROnPlateau", "cooldown", "-1")),
        ("LearningRateScheduler(3)", ("LearningRateScheduler", "schedule", "3")),
        ("LambdaCallback(on_epoch_ends=print)", ("LambdaCallback", "on_epoch_ends")),
        ("ModelCheckpoint('m.h5', mode='up')", ("ModelCheckpoint", "mode", "up")),
    ],
)
def test_callback_constructor_errors(factory, needles):
    from framework.training import callbacks

    _expect_framework_error(lambda: eval(factory, vars(callbacks)), *needles, kind=ConfigError)


@pytest.mark.parametrize(
    "value, needle", [(lambda e: "0.1", "'0.1'"), (lambda e: float("nan"), "nan"), (lambda e: -1.0, "-1.0")]
)
def test_learning_rate_scheduler_bad_returns(value, needle):
    from framework.training.callbacks import LearningRateScheduler

    x, y = _xy()
    _expect_framework_error(
        lambda: _model().fit(x, y, epochs=1, verbose=0, callbacks=[LearningRateScheduler(value)]),
        "LearningRateScheduler",
        needle,
        kind=ConfigError,
    )


@pytest.mark.parametrize("callbacks_arg", [3, [3], ["early_stopping"]])
def test_fit_callbacks_that_are_not_callbacks(callbacks_arg):
    x, y = _xy()
    _expect_framework_error(
        lambda: _model().fit(x, y, epochs=1, verbose=0, callbacks=callbacks_arg),
        "callbacks",
        kind=ConfigError,
    )


def test_modelcheckpoint_unformattable_path(tmp_path):
    from framework.training.callbacks import ModelCheckpoint

    x, y = _xy()
    cb = ModelCheckpoint(str(tmp_path / "m{epoch.h5"))
    _expect_framework_error(
        lambda: _model().fit(x, y, epochs=1, verbose=0, callbacks=[cb]), "ModelCheckpoint", "m{epoch.h5"
    )


# =========================================================================== schedules


@pytest.mark.parametrize("step", ["a", None])
def test_schedule_called_with_a_non_integer_step(step):
    # Actual: ValueError: invalid literal for int() / TypeError: int() argument must be ...
    from framework.base.schedules import StepDecay

    _expect_framework_error(lambda: StepDecay(0.1, 10)(step), "StepDecay", repr(step))


def test_schedule_called_with_a_negative_step():
    # StepDecay(0.1, 10, gamma=0.1)(-10) == 1.0: run backwards (initial_lr / gamma), silently.
    # check_step_count's docstring names exactly this case as wrong; CosineDecay clamps it.
    from framework.base.schedules import StepDecay

    _expect_framework_error(lambda: StepDecay(0.1, 10)(-10), "StepDecay", "-10")


# checked and right
@pytest.mark.parametrize(
    "factory, needle",
    [
        ("StepDecay(0.1, 0)", "step_size"),
        ("StepDecay(0.1, 1e30)", "step_size"),
        ("ExponentialDecay(0.1, 0.5, staircase='False')", "staircase"),
        ("CosineDecay(0.1, 10, alpha=2)", "alpha"),
        ("WarmUp(None, 5)", "schedule"),
        ("get({'class_name': 3})", "class_name"),
        ("get({'class_name': 'StepDecay', 'config': [1]})", "config"),
        ("serialize(lambda s: 0.1)", "get_config"),
    ],
)
def test_schedule_constructor_errors(factory, needle):
    from framework.base import schedules

    _expect_framework_error(lambda: eval(factory, vars(schedules)), needle, kind=ConfigError)


# =========================================================================== optimizers


def test_optimizer_second_positional_learning_rate_is_not_dropped():
    # SGD(0.1, 0.2): the first positional is taken as the learning rate (params slot) and the
    # explicit learning_rate=0.2 is silently discarded: lr == 0.1.
    from framework.optimizers import SGD

    _expect_framework_error(lambda: SGD(0.1, 0.2), "SGD", "learning_rate", kind=ConfigError)


def test_optimizer_lr_and_learning_rate_both_given():
    # SGD(lr=0.1, learning_rate=0.2): lr silently wins.
    from framework.optimizers import SGD

    _expect_framework_error(lambda: SGD(lr=0.1, learning_rate=0.2), "SGD", "lr", kind=ConfigError)


@pytest.mark.parametrize("arg", ["weight_decay", "clipnorm", "clipvalue"])
def test_optimizer_refuses_bool_numbers(arg):
    # SGD(weight_decay=True).weight_decay == 1.0 (same for clipnorm/clipvalue); momentum, eps,
    # betas and learning_rate all refuse True.
    from framework.optimizers import SGD

    _expect_framework_error(lambda: SGD(**{arg: True}), "SGD", arg, "True", kind=ConfigError)


@pytest.mark.parametrize(
    "arg, value",
    [("weight_decay", np.float32(0.01)), ("clipnorm", np.float32(1.0)), ("clipvalue", np.int64(1))],
)
def test_optimizer_accepts_numpy_scalars(arg, value):
    # Refused with "must be a number >= 0" / "must be > 0 or None" although learning_rate and momentum
    # accept NumPy scalars (Optimizer.__init__ checks isinstance(value, (int, float))).
    from framework.optimizers import SGD

    opt = SGD(**{arg: value})
    assert getattr(opt, arg) == pytest.approx(float(value))


@pytest.mark.parametrize(
    "factory, arg", [("Adam(amsgrad='no')", "amsgrad"), ("SGD(momentum=0.9, nesterov='no')", "nesterov")]
)
def test_optimizer_flags_refuse_strings(factory, arg):
    # Adam(amsgrad='no').amsgrad is True; SGD(nesterov='no') turns Nesterov on.
    from framework import optimizers

    _expect_framework_error(
        lambda: eval(factory, {"Adam": optimizers.Adam, "SGD": optimizers.SGD}), arg, kind=ConfigError
    )


def test_optimizer_load_state_dict_none():
    # Actual: AttributeError: 'NoneType' object has no attribute 'get'
    from framework.layers import Linear
    from framework.optimizers import SGD

    layer = Linear(2, 2)
    layer.build((None, 2))
    opt = SGD(layer.parameters())
    _expect_framework_error(lambda: opt.load_state_dict(None), "SGD.load_state_dict")


# checked and right
@pytest.mark.parametrize(
    "name, kwargs, needle",
    [
        ("sgd", {"learning_rate": -1}, "learning_rate"),
        ("sgd", {"learning_rate": float("nan")}, "learning_rate"),
        ("sgd", {"learning_rate": "0.1"}, "learning_rate"),
        ("adam", {"clipnorm": 0}, "clipnorm"),
        ("adam", {"clipvalue": float("nan")}, "clipvalue"),
        ("adam", {"betas": (0.9,)}, "betas"),
        ("adam", {"betas": (1.5, 0.9)}, "betas[0]"),
        ("adam", {"eps": 0}, "eps"),
        ("sgd", {"momentum": -0.1}, "momentum"),
        ("sgd", {"dampening": 2}, "dampening"),
        ("rmsprop", {"alpha": 2}, "alpha"),
        ("adamw", {"bogus": 1}, "bogus"),
    ],
)
def test_optimizer_constructor_errors(name, kwargs, needle):
    from framework import optimizers

    _expect_framework_error(lambda: optimizers.get(name, **kwargs), needle, kind=ConfigError)


# =========================================================================== compile / fit / evaluate


@pytest.mark.parametrize("value", ["0.2", None, [0.2]])
def test_fit_validation_split_of_wrong_type(value):
    # Actual: TypeError: '<=' not supported between instances of 'float' and 'str'
    x, y = _xy()
    _expect_framework_error(
        lambda: _model().fit(x, y, epochs=1, verbose=0, validation_split=value),
        "validation_split",
        kind=ConfigError,
    )


@pytest.mark.parametrize(
    "class_weight, needle",
    [({"a": 1.0}, "'a'"), ({None: 1.0}, "None"), ({0: "a", 1: 1.0}, "'a'"), ({0: None, 1: 1.0}, "None")],
)
def test_fit_class_weight_malformed_entries(class_weight, needle):
    # Actual: ValueError / TypeError from int(k) / float(w) in class_weight_table
    x, y = _xy()
    _expect_framework_error(
        lambda: _model().fit(x, y, epochs=1, verbose=0, class_weight=class_weight),
        "class_weight",
        needle,
        kind=ConfigError,
    )


def test_fit_class_weight_huge_class_index():
    # Actual: MemoryError (numpy) -- class_weight_table allocates max(key)+1 floats.
    x, y = _xy()
    _expect_framework_error(
        lambda: _model().fit(x, y, epochs=1, verbose=0, class_weight={10**12: 1.0}),
        "class_weight",
        str(10**12),
    )


def test_fit_class_weight_nan_is_refused_like_sample_weight():
    # sample_weight with NaN is a DataError; class_weight {0: nan} trains and logs loss nan.
    x, y = _xy()
    _expect_framework_error(
        lambda: _model().fit(x, y, epochs=1, verbose=0, class_weight={0: float("nan"), 1: 1.0}),
        "class_weight",
        "nan",
    )


def test_fit_class_weight_non_integer_class_key():
    # {0.5: 2.0} is read as class int(0.5) == 0, silently.
    x, y = _xy()
    _expect_framework_error(
        lambda: _model().fit(x, y, epochs=1, verbose=0, class_weight={0.5: 2.0}), "class_weight", "0.5"
    )


def test_evaluate_return_dict_refuses_strings():
    # evaluate(return_dict='no') returns the dict ('no' is truthy); verbose/training flags refuse such values.
    x, y = _xy()
    _expect_framework_error(
        lambda: _model().evaluate(x, y, verbose=0, return_dict="no"), "return_dict", kind=ConfigError
    )


# checked and right
@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"epochs": -1}, "epochs"),
        ({"epochs": "2"}, "epochs"),
        ({"epochs": 2, "initial_epoch": -1}, "initial_epoch"),
        ({"validation_split": 1.0}, "validation_split"),
        ({"validation_split": float("nan")}, "validation_split"),
        ({"shuffle": "yes"}, "shuffle"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"threads": 0}, "threads"),
        ({"threads": True}, "threads"),
        ({"class_weight": [1.0, 2.0]}, "class_weight"),
    ],
)
def test_fit_argument_errors(kwargs, needle):
    x, y = _xy()
    kwargs.setdefault("epochs", 1)
    _expect_framework_error(lambda: _model().fit(x, y, verbose=0, **kwargs), needle, kind=ConfigError)


@pytest.mark.parametrize("verbose", [5, "loud", None, True])
def test_fit_verbose_errors(verbose):
    x, y = _xy()
    _expect_framework_error(
        lambda: _model().fit(x, y, epochs=1, verbose=verbose), "verbose", kind=ConfigError
    )


def test_fit_validation_data_tuple_of_wrong_length():
    x, y = _xy()
    for bad in [(x,), (x, y, None, None)]:
        _expect_framework_error(
            lambda bad=bad: _model().fit(x, y, epochs=1, verbose=0, validation_data=bad),
            "validation_data",
            kind=ConfigError,
        )


def test_fit_sample_weight_wrong_length():
    x, y = _xy()
    _expect_framework_error(
        lambda: _model().fit(x, y, epochs=1, verbose=0, sample_weight=np.ones(5)),
        "sample_weight",
        "(5,)",
        kind=DataError,
    )


def _two_output_model():
    from framework import Model
    from framework.layers import Linear

    framework.set_seed(0)
    image, meta = Input((2,), name="image"), Input((1,), name="meta")
    return Model([image, meta], [Linear(2, 2, name="label")(image), Linear(1, 1, name="score")(meta)])


@pytest.mark.parametrize(
    "kwargs, needles",
    [
        ({"loss": {"label": "cross_entropy"}}, ("loss", "score")),
        ({"loss": ["cross_entropy"]}, ("loss", "1 entries")),
        ({"loss": ["cross_entropy", "mse"], "loss_weights": {"labl": 2.0}}, ("loss_weights", "labl")),
        ({"loss": ["cross_entropy", "mse"], "loss_weights": [float("nan"), 1.0]}, ("loss_weights", "nan")),
        ({"loss": ["cross_entropy", "mse"], "loss_weights": 2.0}, ("loss_weights",)),
        ({"loss": ["cross_entropy", "mse"], "metrics": {"labl": ["accuracy"]}}, ("metrics", "labl")),
    ],
)
def test_multi_output_compile_errors(kwargs, needles):
    model = _two_output_model()
    _expect_framework_error(lambda: model.compile(optimizer="adam", **kwargs), *needles, kind=ConfigError)


def test_multi_output_dict_inputs_missing_and_extra_names():
    model = _two_output_model()
    model.compile("adam", loss=["cross_entropy", "mse"])
    x, y = _xy()
    meta = x[:, :1]
    _expect_framework_error(lambda: model.predict({"image": x}), "meta", kind=DataError)
    _expect_framework_error(
        lambda: model.predict({"image": x, "meta": meta, "extra": meta}), "extra", kind=DataError
    )
    _expect_framework_error(
        lambda: model.evaluate({"image": x, "meta": meta}, {"label": y}, verbose=0), "score", kind=DataError
    )
    _expect_framework_error(
        lambda: model.fit(
            {"image": x, "meta": meta},
            {"label": y, "score": meta},
            epochs=1,
            verbose=0,
            class_weight={0: 1.0},
        ),
        "class_weight",
        kind=ConfigError,
    )


# =========================================================================== models and layers


def test_sequential_of_a_non_iterable():
    # Actual: TypeError: 'int' object is not iterable  (Sequential.__init__)
    _expect_framework_error(lambda: Sequential(3), "Sequential", "3")


@pytest.mark.parametrize("shape", ["23", (2.5,), (True, 4)])
def test_input_shape_is_not_coerced(shape):
    # Input("23").shape == (None, 2, 3); Input((2.5,)).shape == (None, 2); Input((True, 4)) == (None, 1, 4):
    # InputLayer.__init__ runs int() over the entries (Linear/Sequential.build refuse 2.5 and True).
    _expect_framework_error(lambda: Input(shape), "Input", "shape", kind=ConfigError)


@pytest.mark.parametrize(
    "factory, arg",
    [
        ("Linear(2, 2, bias='no')", "bias"),
        ("BatchNorm(2, affine='no')", "affine"),
        ("BatchNorm(2, track_running_stats='no')", "track_running_stats"),
        ("LayerNorm(3, elementwise_affine='no')", "elementwise_affine"),
        ("TransformerEncoderLayer(8, 2, norm_first='no')", "norm_first"),
    ],
)
def test_layer_flags_refuse_strings(factory, arg):
    # bool('no') is True: Linear(bias='no') keeps a bias, etc. Conv2d(bias='no') and LSTM(batch_first='no')
    # refuse with "must be True or False" (check_bool), so the flag layers are inconsistent.
    from framework import layers

    names = {n: getattr(layers, n) for n in ("Linear", "BatchNorm", "LayerNorm", "TransformerEncoderLayer")}
    _expect_framework_error(lambda: eval(factory, names), arg, kind=ConfigError)


# checked and right
@pytest.mark.parametrize(
    "factory, needles",
    [
        ("Linear(-1, 2)", ("Linear", "input_size", "-1")),
        ("Linear(True, 2)", ("Linear", "input_size", "True")),
        ("Linear(2, 2, activation='rleu')", ("rleu",)),
        ("Conv2d(1, 2, 0)", ("Conv2d", "kernel_size", "0")),
        ("Conv2d(1, 2, 3, padding='bogus')", ("Conv2d", "padding", "bogus")),
        ("Conv2d(1, 2, 3, padding='same', stride=2)", ("Conv2d", "same")),
        ("Conv2d(1, 2, 3, bias='no')", ("Conv2d", "bias")),
        ("Dropout(True)", ("Dropout", "True")),
        ("BatchNorm(2, momentum=2)", ("BatchNorm", "momentum")),
        ("Embedding(5, 3, padding_idx=7)", ("Embedding", "padding_idx", "7")),
        ("MaxPool2d(2, padding=2)", ("MaxPool2d", "padding")),
        ("LSTM(3, 3, batch_first='no')", ("LSTM", "batch_first")),
        ("MultiheadAttention(8, 3)", ("MultiheadAttention", "8", "3")),
        ("GroupNorm(3, 4)", ("GroupNorm",)),
    ],
)
def test_layer_constructor_errors(factory, needles):
    _expect_framework_error(lambda: eval(factory, _layer_names()), *needles, kind=ConfigError)


def _layer_names():
    from framework import layers

    names = [
        "Linear",
        "Conv2d",
        "Dropout",
        "BatchNorm",
        "Embedding",
        "MaxPool2d",
        "LSTM",
        "MultiheadAttention",
        "GroupNorm",
    ]
    return {n: getattr(layers, n) for n in names}


@pytest.mark.parametrize(
    "factory, shape, needles",
    [
        ("Conv2d(1, 2, 5)", (1, 1, 3, 3), ("Conv2d", "(5, 5)", "(3, 3)")),
        ("MaxPool2d(3)", (1, 1, 2, 2), ("MaxPool2d", "(3, 3)")),
        ("Conv2d(1, 2, 3)", (1, 2, 5, 5), ("Conv2d", "(1, 2, 5, 5)")),
        ("BatchNorm(3)", (4, 2), ("BatchNorm", "(4, 2)")),
    ],
)
def test_layer_call_shape_errors(factory, shape, needles):
    layer = eval(factory, _layer_names())
    _expect_framework_error(
        lambda: layer(np.ones(shape, dtype=np.float32)), *needles, kind=framework.ShapeError
    )


def test_get_layer_errors():
    from framework.layers import Linear

    model = Sequential([Linear(2, 4, name="a"), Linear(4, 2, name="b")])
    _expect_framework_error(lambda: model.get_layer("zz"), "zz", "['a', 'b']", kind=ConfigError)
    _expect_framework_error(lambda: model.get_layer(index=5), "5", kind=ConfigError)
    _expect_framework_error(lambda: model.get_layer(index=True), "True", kind=ConfigError)
    _expect_framework_error(lambda: model.get_layer(name="a", index=0), "only one", kind=ConfigError)
    assert model.get_layer(index=np.int64(1)).name == "b"


def test_sequential_editing_errors():
    from framework.layers import Linear

    _expect_framework_error(lambda: Sequential().pop(), "pop", kind=ConfigError)
    model = Sequential([Linear(2, 4, name="a")])
    _expect_framework_error(lambda: model.add(None), "add", "None", kind=ConfigError)
    _expect_framework_error(lambda: model.add(Linear), "add", "type", kind=ConfigError)
    _expect_framework_error(lambda: model.add(model.layers[0]), "already", kind=ConfigError)
    _expect_framework_error(lambda: model.add(Linear(5, 2)), "(None, 4)", "5", kind=framework.ShapeError)


def test_summary_of_unbuilt_model_prints_question_marks():
    from framework.layers import Linear

    lines = []
    Sequential([Linear(output_size=3), Linear(output_size=2)]).summary(print_fn=lines.append)
    assert any("?" in line for line in lines)
    _expect_framework_error(lambda: _model().summary(line_length=-1), "line_length", "-1", kind=ConfigError)
    _expect_framework_error(lambda: _model().summary(print_fn=3), "print_fn", kind=ConfigError)


# =========================================================================== History.plot


@pytest.mark.parametrize(
    "kwargs", [{"metrics": 3}, {"path": 3}, {"path": "curves.xyz"}, {"path": "missing/curves.png"}]
)
def test_history_plot_bad_arguments(kwargs, tmp_path, monkeypatch):
    # Actual: TypeError ('int' object is not iterable), AttributeError ('int' has no 'write'),
    # ValueError (Format 'xyz' is not supported), FileNotFoundError -- all from matplotlib / Python.
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    x, y = _xy()
    history = _model().fit(x, y, epochs=2, verbose=0)
    _expect_framework_error(lambda: history.plot(**kwargs), "History.plot")


# =========================================================================== datasets


def test_one_hot_huge_num_classes():
    # Actual: ValueError: array is too big
    from framework.datasets import one_hot

    _expect_framework_error(lambda: one_hot(np.array([0, 1]), num_classes=10**12), "one_hot", "num_classes")


def test_one_hot_bad_dtype():
    # Actual: TypeError: data type 'bogus' not understood
    from framework.datasets import one_hot

    _expect_framework_error(lambda: one_hot(np.array([0, 1]), 2, dtype="bogus"), "one_hot", "bogus")


@pytest.mark.parametrize(
    "call",
    ["load_idx(None)", "load_fashion_mnist(3)", "load_fortunes(categories=3)"],
)
def test_dataset_loaders_with_wrong_typed_arguments(call):
    # Actual: TypeError (os.fspath / iteration over an int)
    from framework import datasets

    _expect_framework_error(lambda: eval(call, vars(datasets)), call.split("(")[0])


# checked and right
@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"test_size": 0}, "test_size"),
        ({"test_size": 1.0}, "test_size"),
        ({"test_size": "0.2"}, "test_size"),
        ({"test_size": True}, "test_size"),
        ({"test_size": float("nan")}, "test_size"),
        ({"seed": -1}, "seed"),
        ({"stratify": "yes"}, "stratify"),
    ],
)
def test_train_test_split_errors(kwargs, needle):
    from framework.datasets import make_spirals, train_test_split

    x, y = make_spirals(n_samples=40, seed=0)
    _expect_framework_error(
        lambda: train_test_split(x, y, **kwargs), "train_test_split" if needle != "seed" else "seed", needle
    )


def test_dataset_helper_errors(tmp_path):
    from framework.datasets import batches, load_idx, make_blobs, make_spirals, one_hot, standardize

    _expect_framework_error(
        lambda: make_spirals(n_samples=True), "make_spirals", "n_samples", kind=ConfigError
    )
    _expect_framework_error(
        lambda: make_blobs(center_box=(1, 0)), "make_blobs", "center_box", kind=ConfigError
    )
    _expect_framework_error(lambda: one_hot(np.array([0, 2]), 2), "one_hot", "2", kind=DataError)
    _expect_framework_error(lambda: standardize(np.zeros((0, 2))), "standardize", kind=DataError)
    _expect_framework_error(
        lambda: list(batches(np.ones((4, 2)), np.ones(4), batch_size=0)), "batch_size", kind=ConfigError
    )
    junk = tmp_path / "junk.idx"
    junk.write_bytes(b"garbage-not-idx")
    _expect_framework_error(lambda: load_idx(str(junk)), "load_idx", "magic", kind=DataError)


# =========================================================================== CLI


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "framework", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env=subprocess_env(),  # this checkout's framework, installed or not
    )


def test_cli_bad_arguments_exit_cleanly(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"junk")
    cases = [
        ((), 2),
        (("bogus",), 2),
        (("inspect", str(tmp_path / "missing.h5")), 1),
        (("inspect", str(junk)), 1),
        (("export", str(junk), "--format", "numpy", str(tmp_path / "out")), 1),
        (("export", str(tmp_path / "missing.h5"), "--format", "onnx", str(tmp_path / "m.onnx")), 1),
    ]
    for args, code in cases:
        result = _cli(*args, cwd=tmp_path)
        assert result.returncode == code, (args, result.returncode, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr, (args, result.stderr)
        assert result.stderr.strip(), args
