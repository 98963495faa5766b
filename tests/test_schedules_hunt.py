"""Learning-rate schedule hunt, end to end: values, arguments, the optimizer's rate, training, checkpoints.

References:

- ``StepDecay``, ``ExponentialDecay`` (``decay_steps=1``), ``CosineDecay`` (up to
  ``decay_steps``) and ``WarmUp`` against ``torch.optim.lr_scheduler`` (``StepLR``,
  ``ExponentialLR``, ``CosineAnnealingLR``, ``LinearLR`` + ``SequentialLR``) stepped once
  per optimizer step, as the docstrings claim; ``ExponentialDecay`` and ``CosineDecay``
  also against Keras 3's documented formulas transcribed in NumPy (staircase, ``alpha``,
  constant after ``decay_steps``). ``WarmUp``'s ramp ``(k + 1) / warmup_steps`` is the
  documented one (torch's ``LinearLR(start_factor=1/W)``), not Keras's ``k / W``.
- Training: ``fit`` with SGD (momentum, Nesterov, weight decay), Adam (weight decay) and
  AdamW given a schedule, against a PyTorch loop with the equivalent scheduler stepped after
  every ``optimizer.step()``, in float32 and float64, with validation, a batch generator
  with ``steps_per_epoch``, ``fit`` called twice and ``threads=2``.
- ``LearningRateScheduler``: Keras 3's ``on_epoch_begin`` / ``on_epoch_end`` (the
  ``learning_rate`` log key).
- Checkpoints: ``save`` mid-training, ``load_model``, resume == uninterrupted, bit for bit.
- Bad input: a :class:`~framework.errors.ConfigError` naming the object, the argument and
  the value, for constructor arguments, saved configs and values a user schedule returns
  while training.

Tests marked ``xfail(strict=True, reason="BUG: ...")`` pin bugs whose fix lies outside
the schedule code.
"""

from __future__ import annotations

import json
import math
import re
import sys

import numpy as np
import pytest
from support import requires_h5py, requires_torch

import framework
from framework import Sequential
from framework.base import schedules
from framework.base.parameter import Parameter
from framework.base.schedules import CosineDecay, ExponentialDecay, Schedule, StepDecay, WarmUp
from framework.errors import CheckpointError, ConfigError
from framework.layers import Linear
from framework.registry.namespace import custom_object_scope
from framework.training.callbacks import LambdaCallback, LearningRateScheduler, ReduceLROnPlateau
from plugins.optimizers import SGD, AdaGrad, Adam, AdamW, RMSProp

try:
    import torch

    LR = torch.optim.lr_scheduler
except ImportError:
    torch = LR = None

EXACT = {"rtol": 1e-12, "atol": 0.0}


def _torch_lrs(make, base: float, steps: int) -> list[float]:
    """The rate a torch optimizer uses at each of ``steps`` steps, its scheduler stepped after each."""
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=base)
    sched = make(opt) if make is not None else None
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out


def _values(schedule, steps) -> list[float]:
    return [schedule(k) for k in steps]


# ================================================================ values against torch and Keras


@requires_torch
@pytest.mark.parametrize("step_size", [1, 3, 7])
@pytest.mark.parametrize("initial", [0.0, 0.1, 2.0])
def test_step_decay_is_torch_steplr(initial, step_size):
    for gamma in (0.0, 0.1, 0.5, 1.0, 1.5):  # one test per (initial, step_size): the gamma is named
        sched = StepDecay(initial, step_size, gamma)
        want = _torch_lrs(lambda o, g=gamma: LR.StepLR(o, step_size, g), initial, 50)
        np.testing.assert_allclose(_values(sched, range(50)), want, **EXACT, err_msg=f"gamma={gamma}")
        assert all(type(v) is float for v in _values(sched, range(5))), f"gamma={gamma}"


def keras_exponential(initial, rate, decay_steps, staircase, step):
    """Keras 3's ExponentialDecay: ``initial * rate ** (step / decay_steps)``, floored when staircase."""
    p = np.float64(step) / decay_steps
    if staircase:
        p = np.floor(p)
    return initial * np.power(np.float64(rate), p)


@pytest.mark.parametrize("staircase", [False, True])
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.96, 1.0, 1.2])
def test_exponential_decay_is_keras_formula(rate, staircase):
    steps = [*range(45), 99, 1000]
    for decay_steps in (1, 4, 10):  # one test per (rate, staircase): the decay_steps is named
        sched = ExponentialDecay(0.1, rate, decay_steps, staircase)
        want = [keras_exponential(0.1, rate, decay_steps, staircase, k) for k in steps]
        np.testing.assert_allclose(_values(sched, steps), want, **EXACT, err_msg=f"decay_steps={decay_steps}")


@requires_torch
@pytest.mark.parametrize("rate", [0.0, 0.5, 0.9, 1.0, 1.3])
def test_exponential_decay_with_one_decay_step_is_torch_exponentiallr(rate):
    want = _torch_lrs(lambda o: LR.ExponentialLR(o, rate), 0.2, 60)
    np.testing.assert_allclose(_values(ExponentialDecay(0.2, rate), range(60)), want, **EXACT)


def keras_cosine(initial, decay_steps, alpha, step):
    """Keras 3's CosineDecay without warm-up: the step clipped to ``decay_steps``."""
    t = min(step, decay_steps) / decay_steps
    return initial * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * t)) + alpha)


@requires_torch
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("decay_steps", [1, 5, 40])
def test_cosine_decay_is_keras_and_torch_cosine_annealing(decay_steps, alpha):
    sched = CosineDecay(0.3, decay_steps, alpha)
    steps = list(range(3 * decay_steps + 3))
    np.testing.assert_allclose(
        _values(sched, steps), [keras_cosine(0.3, decay_steps, alpha, k) for k in steps], rtol=1e-13
    )
    torch_lrs = _torch_lrs(
        lambda o: LR.CosineAnnealingLR(o, decay_steps, eta_min=alpha * 0.3), 0.3, decay_steps + 1
    )
    np.testing.assert_allclose(_values(sched, range(decay_steps + 1)), torch_lrs, rtol=1e-12, atol=1e-15)


def _warm(w: int, inner):
    """torch: LinearLR from 1/w of the rate to all of it over w steps, then ``inner`` (SequentialLR)."""
    if w == 1:  # no ramp: the wrapped schedule from step 1, its rate 0 used twice as for any w
        first = lambda o: LR.LambdaLR(o, lambda k: 1.0)  # noqa: E731
        return lambda o: LR.SequentialLR(o, [first(o), (inner or first)(o)], [1])
    if inner is None:
        return lambda o: LR.LinearLR(o, 1 / w, 1.0, total_iters=w - 1)
    return lambda o: LR.SequentialLR(o, [LR.LinearLR(o, 1 / w, 1.0, total_iters=w - 1), inner(o)], [w])


WARM_INNER = [
    ("constant", lambda: 0.1, None),
    ("StepLR", lambda: StepDecay(0.1, 3, 0.5), lambda o: LR.StepLR(o, 3, 0.5)),
    ("ExponentialLR", lambda: ExponentialDecay(0.1, 0.8), lambda o: LR.ExponentialLR(o, 0.8)),
    ("CosineAnnealingLR", lambda: CosineDecay(0.1, 30, 0.2), lambda o: LR.CosineAnnealingLR(o, 30, 0.02)),
]


@requires_torch
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("warmup", [1, 2, 5])
@pytest.mark.parametrize(("inner", "tinner"), [c[1:] for c in WARM_INNER], ids=[c[0] for c in WARM_INNER])
def test_warmup_is_torch_linearlr_then_the_wrapped_scheduler(inner, tinner, warmup):
    sched = WarmUp(inner(), warmup)
    steps = warmup + 30
    want = _torch_lrs(_warm(warmup, tinner), 0.1, steps)
    np.testing.assert_allclose(_values(sched, range(steps)), want, rtol=1e-12, atol=1e-16)
    assert sched(0) > 0 and sched(warmup - 1) == pytest.approx(0.1, rel=1e-15)


@pytest.mark.parametrize(
    ("sched", "limit"),
    [
        (StepDecay(0.1, 3, 0.5), 0.0),
        (StepDecay(0.1, 3, 1.0), 0.1),
        (StepDecay(0.1, 3, 0.0), 0.0),
        (ExponentialDecay(0.1, 0.96, 100), 0.0),
        (ExponentialDecay(0.1, 0.96, 100, staircase=True), 0.0),
        (ExponentialDecay(0.1, 1.0), 0.1),
        (CosineDecay(0.1, 1000, 0.1), 0.01),
        (WarmUp(CosineDecay(0.1, 1000), 50), 0.0),
        (WarmUp(0.1, 50), 0.1),
    ],
    ids=repr,
)
def test_huge_steps_give_the_limit_without_overflow(sched, limit):
    for step in (10**6, 10**12, 10**18, 2**62):  # one test per schedule: the step is named
        with np.errstate(all="raise"):
            value = sched(step)
        assert type(value) is float and math.isfinite(value), (step, value)
        assert value == pytest.approx(limit, rel=1e-12, abs=1e-100), (step, value)


@requires_torch
@pytest.mark.parametrize(
    "sched",
    [StepDecay(0.1, 1, 1.5), ExponentialDecay(0.1, 1.5), ExponentialDecay(0.1, 2.0, 3, staircase=True)],
    ids=repr,
)
def test_a_growing_schedule_saturates_at_inf_as_torch_does(sched):
    """gamma > 1 is allowed (torch allows it); past float range the rate is inf, not an OverflowError."""
    assert _torch_lrs(lambda o: LR.StepLR(o, 1, 1.5), 0.1, 1800)[-1] == math.inf  # torch's own
    for step in (10**5, 10**12, 2**62):
        assert sched(step) == math.inf
    assert math.isfinite(sched(100))


@pytest.mark.parametrize("step", [0, 1, 5])
def test_step_zero_is_the_initial_rate_and_schedules_start_at_step_zero(step):
    assert StepDecay(0.4, 6)(step) == 0.4
    assert ExponentialDecay(0.4, 0.5, 6, staircase=True)(step) == 0.4
    assert CosineDecay(0.4, 6)(0) == 0.4
    assert WarmUp(StepDecay(0.4, 2), 3)(3 + step) == StepDecay(0.4, 2)(step)


# ================================================================ constructor arguments

NUMBER_BAD = [-0.1, -math.inf, math.inf, math.nan, True, "0.1", None, [0.1], np.array([0.1])]
COUNT_BAD = [0, -1, 2.5, 2.0, True, "3", None, math.nan, np.float64(3.0)]

#: (class, the argument under test, valid arguments for the others)
ARGUMENTS = [
    (StepDecay, "initial_lr", {"step_size": 2}),
    (StepDecay, "gamma", {"initial_lr": 0.1, "step_size": 2}),
    (ExponentialDecay, "initial_lr", {"decay_rate": 0.5}),
    (ExponentialDecay, "decay_rate", {"initial_lr": 0.1}),
    (CosineDecay, "initial_lr", {"decay_steps": 10}),
    (CosineDecay, "alpha", {"initial_lr": 0.1, "decay_steps": 10}),
    (WarmUp, "schedule", {"warmup_steps": 3}),
]
COUNTS = [
    (StepDecay, "step_size", {"initial_lr": 0.1}),
    (ExponentialDecay, "decay_steps", {"initial_lr": 0.1, "decay_rate": 0.5}),
    (CosineDecay, "decay_steps", {"initial_lr": 0.1}),
    (WarmUp, "warmup_steps", {"schedule": 0.1}),
]


def _message_names(exc: pytest.ExceptionInfo, cls: type, arg: str, value) -> None:
    text = str(exc.value)
    assert cls.__name__ in text and arg in text, text
    shown = repr(value) if not isinstance(value, np.ndarray) else "array"
    assert shown in text, text


def _each_bad_value_is_refused(cls: type, arg: str, others: dict, values: list) -> None:
    """Each of ``values`` for ``arg`` raises a ConfigError naming class, argument and value; every
    value is tried and the failures are reported together, each naming its value."""
    failures = []
    for bad in values:
        try:
            with pytest.raises(ConfigError) as exc:
                cls(**others, **{arg: bad})
            _message_names(exc, cls, arg, bad)
        except (AssertionError, pytest.fail.Exception) as error:
            failures.append(f"{arg}={bad!r}: {error}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("cls", "arg", "others"), ARGUMENTS, ids=[f"{c.__name__}.{a}" for c, a, _ in ARGUMENTS]
)
def test_bad_rate_arguments_raise_config_error_naming_class_argument_value(cls, arg, others):
    _each_bad_value_is_refused(cls, arg, others, NUMBER_BAD)


@pytest.mark.parametrize(("cls", "arg", "others"), COUNTS, ids=[f"{c.__name__}.{a}" for c, a, _ in COUNTS])
def test_bad_step_counts_raise_config_error_naming_class_argument_value(cls, arg, others):
    _each_bad_value_is_refused(cls, arg, others, COUNT_BAD)


@pytest.mark.parametrize("bad", ["False", "no", 1, 0, None, 0.0, [True]], ids=repr)
def test_staircase_must_be_a_bool_not_any_truthy_value(bad):
    """``staircase="False"`` was silently a staircase (``bool("False")`` is True)."""
    with pytest.raises(ConfigError) as exc:
        ExponentialDecay(0.1, 0.5, 4, staircase=bad)
    _message_names(exc, ExponentialDecay, "staircase", bad)


@pytest.mark.parametrize("flag", [True, False, np.bool_(True), np.bool_(False)], ids=repr)
def test_staircase_accepts_python_and_numpy_bools(flag):
    sched = ExponentialDecay(0.1, 0.5, 4, staircase=flag)
    assert sched.staircase is bool(flag)
    assert json.loads(json.dumps(schedules.serialize(sched)))["config"]["staircase"] is bool(flag)


def test_cosine_alpha_above_one_is_refused():
    with pytest.raises(ConfigError, match=r"CosineDecay.*alpha.*1\.5"):
        CosineDecay(0.1, 10, alpha=1.5)


# ================================================================ configs: serialize / get


ALL = [
    StepDecay(0.1, 5, gamma=0.3),
    ExponentialDecay(0.1, 0.96, decay_steps=100, staircase=True),
    ExponentialDecay(0.0, 0.0),
    CosineDecay(0.05, 1000, alpha=1.0),
    WarmUp(CosineDecay(0.1, 100), 10),
    WarmUp(WarmUp(ExponentialDecay(0.3, 1.5, 4), 2), 3),
]


@pytest.mark.parametrize("sched", ALL, ids=repr)
def test_config_round_trip_through_json_gives_the_same_rates(sched):
    data = json.loads(json.dumps(schedules.serialize(sched)))
    rebuilt = schedules.get(data)
    assert rebuilt == sched and rebuilt is not sched
    steps = [0, 1, 2, 9, 10, 11, 99, 100, 101, 5000]
    assert _values(rebuilt, steps) == _values(sched, steps)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"class_name": "os.system", "config": {}}, r"unknown learning-rate schedule 'os\.system'"),
        ({"class_name": "framework.base.schedules.StepDecay", "config": {}}, "unknown learning-rate"),
        ({"class_name": "Schedule", "config": {}}, "unknown learning-rate schedule 'Schedule'"),
        ({"class_name": "__class__", "config": {}}, "unknown learning-rate schedule"),
        ({"class_name": "stepdecay", "config": {}}, "unknown learning-rate schedule 'stepdecay'"),
        ({"class_name": ["StepDecay"], "config": {}}, r"class_name.*\['StepDecay'\]"),
        ({"class_name": {"a": 1}, "config": {}}, r"class_name.*\{'a': 1\}"),
        ({"class_name": None, "config": {}}, r"class_name.*None"),
        ({"class_name": "StepDecay", "config": [0.1, 2]}, "config must be a dict"),
        ({"class_name": "StepDecay", "config": "x"}, "config must be a dict"),
        ({"class_name": "StepDecay", "config": {"initial_lr": 0.1}}, "step_size"),
        ({"class_name": "StepDecay", "config": {"initial_lr": 0.1, "step_size": 2, "evil": 1}}, "evil"),
        ({"class_name": "StepDecay", "config": {"initial_lr": "1e-3", "step_size": 2}}, "initial_lr"),
        ({"class_name": "WarmUp", "config": {"schedule": {"class_name": "Nope"}, "warmup_steps": 2}}, "Nope"),
        ({"config": {}}, "class_name"),
    ],
)
def test_get_refuses_bad_specs_with_a_config_error(spec, match):
    with pytest.raises(ConfigError, match=match):
        schedules.get(spec)


def test_a_config_never_imports_a_module():
    before = set(sys.modules)
    for name in ("json.decoder.JSONDecoder", "antigravity", "this"):
        with pytest.raises(ConfigError, match="unknown learning-rate schedule"):
            schedules.get({"class_name": name, "config": {}})
    assert set(sys.modules) == before


@pytest.mark.parametrize("value", [np.float32(0.25), np.float64(0.25), np.int64(2), 3, 0.5])
def test_serialize_turns_numbers_into_json_floats(value):
    data = schedules.serialize(value)
    assert type(data) in (int, float) and data == float(value)
    json.dumps(data)


class Inverse(Schedule):
    """A user schedule: ``initial_lr / (1 + step)``."""

    def __init__(self, initial_lr: float) -> None:
        self.initial_lr = initial_lr

    def __call__(self, step: int) -> float:
        return self.initial_lr / (1 + step)

    def get_config(self) -> dict:
        return {"initial_lr": self.initial_lr}


def _shadowing_step_decay() -> type:
    """A user subclass named like the built-in ``StepDecay``, with another rule and the same config."""

    class StepDecay(schedules.StepDecay):
        def __call__(self, step: int) -> float:
            return 0.5 * super().__call__(step)

    return StepDecay


def test_a_user_schedule_round_trips_with_custom_objects():
    data = json.loads(json.dumps(schedules.serialize(WarmUp(Inverse(0.3), 2))))
    with pytest.raises(ConfigError, match=r"unknown learning-rate schedule 'Inverse'.*custom_objects"):
        schedules.get(data)
    with custom_object_scope({"Inverse": Inverse}):
        rebuilt = schedules.get(data)
    assert isinstance(rebuilt.schedule, Inverse)
    assert _values(rebuilt, range(8)) == _values(WarmUp(Inverse(0.3), 2), range(8))
    with custom_object_scope({"Inverse": len}), pytest.raises(ConfigError, match=r"Inverse.*not a Schedule"):
        schedules.get(data)
    builtin = schedules.serialize(StepDecay(0.1, 2))
    with custom_object_scope({"StepDecay": len}):  # a non-schedule of that name leaves the built-in
        assert schedules.get(builtin) == StepDecay(0.1, 2)


def test_a_subclass_saved_under_its_parents_name_is_refused_not_silently_replaced():
    """Saved as ``StepDecay`` it would load as the built-in StepDecay: a different rate."""
    sched = _shadowing_step_decay()(0.1, 2)
    assert sched(0) == 0.05
    with pytest.raises(ConfigError, match=r"StepDecay.*built-in"):
        schedules.serialize(sched)
    with pytest.raises(ConfigError, match=r"StepDecay.*built-in"):
        SGD(learning_rate=sched).get_config()


# ================================================================ the optimizer's rate


@pytest.mark.parametrize(
    "bad", [-0.1, math.nan, math.inf, True, "0.1", None, [0.1], np.array([0.1, 0.2])], ids=repr
)
def test_bad_learning_rate_is_refused_naming_the_optimizer_and_value(bad):
    with pytest.raises(ConfigError, match=r"SGD.*learning_rate") as exc:
        SGD(learning_rate=bad)
    assert (repr(bad) if not isinstance(bad, np.ndarray) else "array") in str(exc.value)
    opt = Adam(learning_rate=0.01)
    with pytest.raises(ConfigError, match=r"Adam.*learning_rate"):
        opt.lr = bad
    assert opt.lr == 0.01


@pytest.mark.parametrize("value", [np.int64(1), np.int32(0), np.float32(0.5), np.float64(0.1), 1, 0])
def test_numpy_numbers_are_learning_rates(value):
    for opt in (SGD(learning_rate=value), SGD(value), Adam(lr=value)):
        assert type(opt.learning_rate) is float and opt.lr == float(value)
        json.dumps(opt.get_config())


def test_a_plain_function_given_first_is_the_learning_rate_as_in_keras():
    def rate(step):
        return 0.1 / (1 + step)

    opt = SGD(rate, momentum=0.5)
    assert opt.learning_rate is rate and opt.params == []
    opt.iterations = 4
    assert opt.lr == 0.02


BAD_RETURNS = [math.nan, -0.5, math.inf, -math.inf, "0.1", None, True, [0.1], np.array([0.1, 0.2]), 1j]


@pytest.mark.parametrize("bad", BAD_RETURNS, ids=repr)
@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "in-WarmUp"])
def test_a_schedule_returning_a_bad_rate_stops_the_step_naming_it(bad, wrap):
    """Never a NaN model or a bare TypeError: a ConfigError naming optimizer, step and value."""

    first_bad = 1 if wrap else 2  # WarmUp(user, 1) runs user(k - 1) at its step k >= 1

    def user(step):
        return 0.1 if step < first_bad else bad

    schedule = WarmUp(user, 1) if wrap else user
    params = [Parameter(np.ones(3)), Parameter(np.ones(2))]
    opt = Adam(params, learning_rate=schedule)
    for _ in range(2):
        for p in params:
            p.grad = np.ones_like(p.data)
        opt.step()
    before = [p.data.copy() for p in params]
    for p in params:
        p.grad = np.ones_like(p.data)
    with pytest.raises(ConfigError) as exc:
        opt.step()
    text = str(exc.value)
    assert "Adam" in text and "step 2" in text and "learning_rate" in text, text
    shown = repr(bad) if not isinstance(bad, np.ndarray) else "array"
    assert shown in text, text
    if wrap:
        assert "WarmUp" in text
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.data, b)
    assert opt.iterations == 2
    with pytest.raises(ConfigError):
        opt.lr  # noqa: B018


def test_repr_of_a_warmup_wrapping_a_function_names_it():
    """The repr (used in error messages) must not need the unsavable function's config."""

    def rate(step):
        return 0.1

    text = repr(WarmUp(rate, 3))
    assert text.startswith("WarmUp(schedule=<function") and "rate" in text and "warmup_steps=3" in text
    assert repr(WarmUp(StepDecay(0.1, 2), 3)) == (
        "WarmUp(schedule=StepDecay(initial_lr=0.1, step_size=2, gamma=0.1), warmup_steps=3)"
    )


@pytest.mark.parametrize("good", [np.float32(0.1), np.float64(0.1), np.int64(0), 0, np.array(0.1)], ids=repr)
def test_a_schedule_may_return_numpy_scalars(good):
    opt = SGD([Parameter(np.ones(2))], learning_rate=lambda step: good)
    assert type(opt.lr) is float and opt.lr == float(good)


def test_fit_with_a_schedule_turning_nan_raises_and_leaves_the_weights_finite(float64):
    model = _mlp()
    model.compile(optimizer=SGD(learning_rate=0.05), loss="mse")
    model.optimizer.learning_rate = lambda step: 0.05 if step < 3 else math.nan
    x, y = _regression()
    with pytest.raises(ConfigError, match=r"SGD.*learning_rate.*returned nan at step 3"):
        model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert model.optimizer.iterations == 3


def test_a_growing_schedule_past_float_range_stops_training_instead_of_nan_weights():
    params = [Parameter(np.ones(2))]
    opt = SGD(params, learning_rate=StepDecay(0.1, 1, 1e200))
    for _ in range(2):
        params[0].grad = np.full(2, 1e-300)
        opt.step()
    params[0].grad = np.ones(2)
    with pytest.raises(ConfigError, match=r"SGD.*StepDecay.*returned inf at step 2"):
        opt.step()
    assert np.isfinite(params[0].data).all() and opt.iterations == 2


def test_a_fit_stopped_mid_epoch_counts_the_steps_taken_and_the_next_fit_continues(float64):
    model = _mlp()
    sched = WarmUp(StepDecay(0.1, 2, 0.5), 3)
    model.compile(optimizer=SGD(lr=sched, momentum=0.5), loss="mse")
    x, y = _regression(24)
    seen: list[float] = []

    def stop(batch, logs):
        if len(seen) == 6:
            model.stop_training = True

    hooks = [_recorder(model, seen), LambdaCallback(on_train_batch_end=stop)]
    model.fit(x, y, epochs=5, batch_size=6, shuffle=False, verbose=0, callbacks=hooks)
    assert model.optimizer.iterations == 6  # 4 batches of epoch 0, 2 of epoch 1
    model.fit(x, y, epochs=1, batch_size=6, shuffle=False, verbose=0, callbacks=[_recorder(model, seen)])
    assert model.optimizer.iterations == 10 and seen == _values(sched, range(10))


OPTIMIZERS = [
    lambda s: SGD(lr=s, momentum=0.9, nesterov=True, weight_decay=0.01, clipnorm=1.0),
    lambda s: Adam(learning_rate=s, betas=(0.8, 0.95), amsgrad=True, weight_decay=0.1),
    lambda s: AdamW(s, weight_decay=0.05),
    lambda s: AdaGrad(lr=s, lr_decay=0.01),
    lambda s: RMSProp(lr=s, centered=True, momentum=0.5),
]


@pytest.mark.parametrize("sched", [*ALL, 0.03], ids=repr)
@pytest.mark.parametrize("make", OPTIMIZERS, ids=["SGD", "Adam", "AdamW", "AdaGrad", "RMSProp"])
def test_optimizer_config_round_trip_keeps_the_schedule(make, sched):
    opt = make(sched)
    config = json.loads(json.dumps(opt.get_config()))
    rebuilt = type(opt).from_config(config)
    assert rebuilt.get_config() == opt.get_config()
    assert rebuilt.learning_rate == opt.learning_rate and rebuilt.iterations == 0
    for step in (0, 3, 10, 11, 250):
        rebuilt.iterations = opt.iterations = step
        assert rebuilt.lr == opt.lr
    opt.iterations = 0
    assert framework.optimizers.get({"class_name": type(opt).__name__, "config": config}).lr == opt.lr


@pytest.mark.parametrize("bad", [-1, 2.5, "3", None, True, [3], math.nan], ids=repr)
def test_load_state_dict_refuses_a_bad_step_count(bad):
    """A negative count would run the schedule backwards (StepDecay at -1: initial / gamma)."""
    params = [Parameter(np.ones(2))]
    opt = SGD(params, learning_rate=StepDecay(0.1, 2))
    with pytest.raises(ConfigError, match=rf"SGD.*iterations.*{re.escape(repr(bad))}"):
        opt.load_state_dict({"iterations": bad, "slots": [{}]})
    assert opt.iterations == 0 and opt.lr == 0.1


@pytest.mark.parametrize("count", [0, 7, np.int64(7), np.int32(3)], ids=repr)
def test_load_state_dict_takes_integer_step_counts(count):
    opt = SGD([Parameter(np.ones(2))], learning_rate=StepDecay(0.1, 2))
    opt.load_state_dict({"iterations": count, "slots": [{}]})
    assert type(opt.iterations) is int and opt.iterations == count
    assert opt.lr == StepDecay(0.1, 2)(int(count))


# ================================================================ training against torch


def _regression(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3))
    return x, np.c_[x @ [1.0, -2.0, 0.5], np.sin(x[:, 0])]


def _mlp() -> Sequential:
    framework.set_seed(0)
    model = Sequential([Linear(3, 4, activation="tanh"), Linear(4, 2)])
    model.build((None, 3))
    return model


def _torch_net(model: Sequential, dtype: np.dtype):
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).to(tdtype)
    with torch.no_grad():
        for t, p in zip(net.parameters(), model.parameters()):
            t.copy_(torch.tensor(p.data))
    return net


def _torch_train(net, opt, sched, batches, dtype) -> list[float]:
    lrs = []
    for xb, yb in batches:
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        out = net(torch.tensor(xb.astype(dtype)))
        torch.nn.functional.mse_loss(out, torch.tensor(yb.astype(dtype))).backward()
        opt.step()
        sched.step()
    return lrs


def _tol(dtype) -> dict[str, float]:
    return {"rtol": 1e-10, "atol": 1e-12} if dtype == np.float64 else {"rtol": 2e-5, "atol": 2e-6}


TRAIN = [
    (
        "SGD-nesterov-wd-StepDecay",
        lambda: SGD(lr=StepDecay(0.05, 4, 0.5), momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda o: LR.StepLR(o, 4, 0.5),
    ),
    (
        "SGD-momentum-ExponentialDecay",
        lambda: SGD(lr=ExponentialDecay(0.05, 0.9), momentum=0.8, dampening=0.1),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, dampening=0.1),
        lambda o: LR.ExponentialLR(o, 0.9),
    ),
    (
        "Adam-wd-WarmUp-Cosine",
        lambda: Adam(lr=WarmUp(CosineDecay(0.02, 12, alpha=0.1), 4), weight_decay=0.05),
        lambda p: torch.optim.Adam(p, lr=0.02, weight_decay=0.05),
        lambda o: LR.SequentialLR(
            o, [LR.LinearLR(o, 1 / 4, 1.0, total_iters=3), LR.CosineAnnealingLR(o, 12, eta_min=0.002)], [4]
        ),
    ),
    (
        "AdamW-staircase",
        lambda: AdamW(lr=ExponentialDecay(0.02, 0.7, 3, staircase=True), weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=0.02, weight_decay=0.1),
        lambda o: LR.StepLR(o, 3, 0.7),
    ),
]
TRAIN_IDS = [c[0] for c in TRAIN]
TRAIN_CASES = [c[1:] for c in TRAIN]


def _recorder(model, seen: list[float]) -> LambdaCallback:
    return LambdaCallback(on_train_batch_begin=lambda batch, logs: seen.append(model.optimizer.lr))


@requires_torch
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("ours", "theirs", "tsched"), TRAIN_CASES, ids=TRAIN_IDS)
def test_fit_with_validation_matches_torch_stepped_per_batch(ours, theirs, tsched, dtype):
    """5 batches (the last one short) x 3 epochs; validation neither steps nor advances the count."""
    x, y = _regression(24)
    xv, yv = _regression(7)
    model = _mlp()
    model.compile(optimizer=ours(), loss="mse")
    net = _torch_net(model, dtype)
    opt = theirs(net.parameters())
    seen: list[float] = []
    history = model.fit(
        x, y, epochs=3, batch_size=5, shuffle=False, validation_data=(xv, yv), verbose=0,
        callbacks=[_recorder(model, seen)],
    )  # fmt: skip
    batches = [(x[b : b + 5], y[b : b + 5]) for _ in range(3) for b in range(0, 24, 5)]
    want = _torch_train(net, opt, tsched(opt), batches, dtype)
    assert model.optimizer.iterations == 15 and len(history.history["val_loss"]) == 3
    np.testing.assert_allclose(seen, want, **EXACT)
    for p, t in zip(model.parameters(), net.parameters()):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, t.detach().numpy(), **_tol(dtype))


@requires_torch
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("ours", "theirs", "tsched"), TRAIN_CASES[::2], ids=TRAIN_IDS[::2])
def test_fit_twice_continues_the_schedule(ours, theirs, tsched, dtype):
    x, y = _regression(24)
    model = _mlp()
    model.compile(optimizer=ours(), loss="mse")
    net = _torch_net(model, dtype)
    opt = theirs(net.parameters())
    seen: list[float] = []
    for _ in range(2):
        model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0, callbacks=[_recorder(model, seen)])
    assert model.optimizer.iterations == 12
    batches = [(x[b : b + 8], y[b : b + 8]) for _ in range(4) for b in range(0, 24, 8)]
    want = _torch_train(net, opt, tsched(opt), batches, dtype)
    np.testing.assert_allclose(seen, want, **EXACT)
    for p, t in zip(model.parameters(), net.parameters()):
        np.testing.assert_allclose(p.data, t.detach().numpy(), **_tol(dtype))


@requires_torch
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("ours", "theirs", "tsched"), TRAIN_CASES[1:3], ids=TRAIN_IDS[1:3])
def test_fit_on_a_generator_with_steps_per_epoch_counts_each_batch(ours, theirs, tsched, dtype):
    x, y = _regression(24)
    chunks = [(x[b : b + 6], y[b : b + 6]) for b in range(0, 24, 6)]

    def forever():
        while True:
            yield from chunks

    model = _mlp()
    model.compile(optimizer=ours(), loss="mse")
    net = _torch_net(model, dtype)
    opt = theirs(net.parameters())
    seen: list[float] = []
    model.fit(forever(), epochs=3, steps_per_epoch=3, verbose=0, callbacks=[_recorder(model, seen)])
    assert model.optimizer.iterations == 9
    want = _torch_train(net, opt, tsched(opt), [chunks[k % 4] for k in range(9)], dtype)
    np.testing.assert_allclose(seen, want, **EXACT)
    for p, t in zip(model.parameters(), net.parameters()):
        np.testing.assert_allclose(p.data, t.detach().numpy(), **_tol(dtype))


@requires_torch
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("ours", "theirs", "tsched"), TRAIN_CASES[::3], ids=TRAIN_IDS[::3])
def test_fit_on_two_threads_counts_one_step_per_batch_not_per_shard(ours, theirs, tsched, float64):
    x, y = _regression(24)
    model = _mlp()
    model.compile(optimizer=ours(), loss="mse")
    net = _torch_net(model, np.dtype("float64"))
    opt = theirs(net.parameters())
    seen: list[float] = []
    model.fit(
        x, y, epochs=2, batch_size=8, shuffle=False, verbose=0, threads=2, callbacks=[_recorder(model, seen)]
    )
    assert model.optimizer.iterations == 6
    batches = [(x[b : b + 8], y[b : b + 8]) for _ in range(2) for b in range(0, 24, 8)]
    want = _torch_train(net, opt, tsched(opt), batches, np.float64)
    np.testing.assert_allclose(seen, want, **EXACT)
    for p, t in zip(model.parameters(), net.parameters()):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_evaluate_predict_and_train_on_batch_count_as_keras_does(float64):
    model = _mlp()
    model.compile(optimizer=SGD(lr=StepDecay(0.1, 1, 0.5)), loss="mse")
    x, y = _regression(8)
    model.evaluate(x, y, verbose=0)
    model.predict(x)
    assert model.optimizer.iterations == 0 and model.optimizer.lr == 0.1
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    assert model.optimizer.iterations == 2 and model.optimizer.lr == 0.025


# ================================================================ checkpoints


def _state(model) -> tuple[list[np.ndarray], dict]:
    return [w.copy() for w in model.get_weights()], model.optimizer.state_dict()


def _assert_identical(a, b) -> None:
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["iterations"] == sb["iterations"]
    for slots_a, slots_b in zip(sa["slots"], sb["slots"]):
        assert set(slots_a) == set(slots_b)
        for key in slots_a:
            np.testing.assert_array_equal(slots_a[key], slots_b[key])
    assert a.optimizer.lr == b.optimizer.lr and a.optimizer.learning_rate == b.optimizer.learning_rate


RESUME = [
    lambda: Adam(lr=WarmUp(ExponentialDecay(0.02, 0.5, 4, staircase=True), 5), weight_decay=0.01),
    lambda: SGD(lr=WarmUp(CosineDecay(0.05, 9, alpha=0.2), 3), momentum=0.9, nesterov=True),
    lambda: AdamW(lr=StepDecay(0.02, 2, 0.7), amsgrad=True),
]


@requires_h5py
@pytest.mark.parametrize("factory", RESUME, ids=["Adam-WarmUp-staircase", "SGD-WarmUp-cosine", "AdamW-step"])
def test_save_load_resume_equals_uninterrupted_bit_for_bit(factory, dtype, tmp_path):
    x, y = _regression(24)
    straight = _mlp()
    straight.compile(optimizer=factory(), loss="mse")
    straight.fit(x, y, epochs=4, batch_size=5, shuffle=False, verbose=0)
    first = _mlp()
    first.compile(optimizer=factory(), loss="mse")
    first.fit(x, y, epochs=2, batch_size=5, shuffle=False, verbose=0)  # 10 steps: inside the warm-up's end
    first.save(tmp_path / "mid.h5")
    resumed = framework.load_model(tmp_path / "mid.h5")
    assert resumed.optimizer.iterations == 10
    assert resumed.optimizer.learning_rate == factory().learning_rate
    assert resumed.optimizer.lr == first.optimizer.lr
    resumed.fit(x, y, epochs=4, initial_epoch=2, batch_size=5, shuffle=False, verbose=0)
    _assert_identical(straight, resumed)


@requires_h5py
def test_a_user_schedule_saves_and_loads_with_custom_objects(float64, tmp_path):
    x, y = _regression(24)
    model = _mlp()
    model.compile(optimizer=SGD(WarmUp(Inverse(0.05), 3), momentum=0.5), loss="mse")
    model.fit(x, y, epochs=1, batch_size=6, shuffle=False, verbose=0)
    model.save(tmp_path / "user.h5")
    with pytest.raises(CheckpointError, match=r"Inverse.*custom_objects"):
        framework.load_model(tmp_path / "user.h5")
    loaded = framework.load_model(tmp_path / "user.h5", custom_objects={"Inverse": Inverse})
    assert isinstance(loaded.optimizer.learning_rate.schedule, Inverse) and loaded.optimizer.iterations == 4
    for m in (model, loaded):
        m.fit(x, y, epochs=1, batch_size=6, shuffle=False, verbose=0)
    _assert_identical(model, loaded)


@requires_h5py
def test_saving_a_subclass_shadowing_a_builtin_name_is_refused(float64, tmp_path):
    model = _mlp()
    model.compile(optimizer=SGD(lr=0.1), loss="mse")
    model.optimizer.learning_rate = _shadowing_step_decay()(0.1, 2)
    with pytest.raises(ConfigError, match=r"StepDecay.*built-in"):
        model.save(tmp_path / "shadow.h5")


@requires_h5py
@pytest.mark.parametrize(
    "spec",
    [
        {"class_name": "os.system", "config": {"command": "echo pwned"}},
        {"class_name": "builtins.eval", "config": {}},
        {"class_name": "Schedule", "config": {}},
        {"class_name": "StepDecay", "config": {"initial_lr": -1.0, "step_size": 2}},
        {"class_name": "WarmUp", "config": {"schedule": {"class_name": "pickle.loads"}, "warmup_steps": 2}},
        {"class_name": ["StepDecay"], "config": {}},
    ],
    ids=["os.system", "eval", "base", "negative", "nested", "list"],
)
def test_a_tampered_schedule_in_a_checkpoint_is_refused_and_imports_nothing(spec, float64, tmp_path):
    import h5py

    model = _mlp()
    model.compile(optimizer=SGD(lr=StepDecay(0.1, 2)), loss="mse")
    model.save(tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5", "r+") as f:
        config = json.loads(f["compile"].attrs["config"])
        config["optimizer"]["config"]["learning_rate"] = spec
        f["compile"].attrs["config"] = json.dumps(config)
    before = set(sys.modules)
    with pytest.raises(CheckpointError, match=r"learning-rate schedule|StepDecay: initial_lr.*-1\.0"):
        framework.load_model(tmp_path / "m.h5")
    assert set(sys.modules) == before


# ================================================================ LearningRateScheduler (Keras 3)


def test_scheduler_is_called_at_epoch_begin_with_epoch_and_current_rate(dtype):
    model = _mlp()
    model.compile(optimizer=SGD(lr=0.08), loss="mse")
    calls: list[tuple[int, float]] = []

    def schedule(epoch, lr):
        calls.append((epoch, lr))
        return lr * 0.5 if epoch % 2 else lr

    seen: list[float] = []
    x, y = _regression(12)
    history = model.fit(
        x, y, epochs=5, batch_size=6, shuffle=False, verbose=0,
        callbacks=[LearningRateScheduler(schedule), _recorder(model, seen)],
    )  # fmt: skip
    rates = [0.08, 0.04, 0.04, 0.02, 0.02]
    assert calls == [(0, 0.08), (1, 0.08), (2, 0.04), (3, 0.04), (4, 0.02)]
    assert all(type(lr) is float for _, lr in calls)
    assert seen == list(np.repeat(rates, 2))
    assert history.history["learning_rate"] == rates  # Keras 3's key
    assert history.history["lr"] == rates  # the older one, kept
    assert model.optimizer.learning_rate == 0.02 and model.optimizer.iterations == 10


def test_scheduler_with_a_schedule_object_is_stepped_per_epoch(float64):
    model = _mlp()
    model.compile(optimizer=Adam(lr=0.01), loss="mse")
    seen: list[float] = []
    x, y = _regression(12)
    sched = WarmUp(StepDecay(0.04, 2, 0.5), 2)
    model.fit(
        x, y, epochs=6, batch_size=4, shuffle=False, verbose=0,
        callbacks=[LearningRateScheduler(sched), _recorder(model, seen)],
    )  # fmt: skip
    assert seen == list(np.repeat(_values(sched, range(6)), 3))
    assert model.optimizer.iterations == 18


def test_scheduler_verbose_prints_the_epoch_and_rate(float64, capsys):
    model = _mlp()
    model.compile(optimizer=SGD(lr=0.1), loss="mse")
    x, y = _regression(4)
    model.fit(
        x, y, epochs=2, verbose=0, callbacks=[LearningRateScheduler(lambda e: 0.1 / (e + 1), verbose=1)]
    )
    out = capsys.readouterr().out
    assert "Epoch 1" in out and "0.1" in out and "Epoch 2" in out and "0.05" in out


def test_scheduler_refuses_an_optimizer_that_already_has_a_schedule(float64):
    model = _mlp()
    model.compile(optimizer=SGD(lr=StepDecay(0.1, 2)), loss="mse")
    x, y = _regression(4)
    weights = [w.copy() for w in model.get_weights()]
    with pytest.raises(ConfigError, match=r"LearningRateScheduler.*schedule.*StepDecay"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[LearningRateScheduler(lambda e, lr: 0.5)])
    assert model.optimizer.iterations == 0 and model.optimizer.learning_rate == StepDecay(0.1, 2)
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)


# ================================================================ bugs outside the schedule code


def test_compile_accepts_an_optimizer_with_a_plain_function_schedule(float64):
    model = _mlp()
    model.compile(optimizer=SGD(learning_rate=lambda step: 0.1 / (1 + step)), loss="mse")
    x, y = _regression(8)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert model.optimizer.iterations == 2 and model.optimizer.lr == 0.1 / 3


def test_compiling_again_with_the_same_optimizer_keeps_its_state_as_keras_does(float64):
    x, y = _regression(24)
    straight = _mlp()
    straight.compile(optimizer=Adam(lr=WarmUp(0.01, 3)), loss="mse")
    straight.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    again = _mlp()
    opt = Adam(lr=WarmUp(0.01, 3))
    again.compile(optimizer=opt, loss="mse")
    again.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    again.compile(optimizer=opt, loss="mse")
    again.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    _assert_identical(straight, again)


def test_reduce_lr_on_plateau_logs_learning_rate_as_keras_3(float64):
    model = _mlp()
    model.compile(optimizer=SGD(lr=0.1), loss="mse")
    x, y = _regression(8)
    plateau = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1e9)
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[plateau])
    assert history.history["learning_rate"] == history.history["lr"]
