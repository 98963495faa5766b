"""Tests of the learning-rate schedules: values at chosen steps, config round trip, errors."""

from __future__ import annotations

import json
import math

import pytest

from framework.base import schedules
from framework.base.schedules import CosineDecay, ExponentialDecay, StepDecay, WarmUp
from framework.errors import ConfigError


def test_step_decay_values():
    s = StepDecay(0.1, step_size=3, gamma=0.5)
    assert [s(t) for t in (0, 2, 3, 5, 6, 9)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.0125])


def test_exponential_decay_values():
    s = ExponentialDecay(0.2, decay_rate=0.9)
    assert s(0) == pytest.approx(0.2)
    assert s(3) == pytest.approx(0.2 * 0.9**3)
    smooth = ExponentialDecay(1.0, decay_rate=0.5, decay_steps=4)
    assert smooth(2) == pytest.approx(math.sqrt(0.5))
    stairs = ExponentialDecay(1.0, decay_rate=0.5, decay_steps=4, staircase=True)
    assert [stairs(t) for t in (0, 3, 4, 7, 8)] == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25])


def test_cosine_decay_values():
    s = CosineDecay(1.0, decay_steps=10)
    assert s(0) == pytest.approx(1.0)
    assert s(5) == pytest.approx(0.5)
    assert s(10) == pytest.approx(0.0, abs=1e-15)
    assert s(25) == pytest.approx(0.0, abs=1e-15)
    floor = CosineDecay(2.0, decay_steps=4, alpha=0.1)
    assert floor(1) == pytest.approx(2.0 * (0.9 * 0.5 * (1 + math.cos(math.pi / 4)) + 0.1))
    assert floor(100) == pytest.approx(0.2)


def test_warmup_ramps_linearly_then_runs_the_wrapped_schedule():
    inner = StepDecay(0.4, step_size=2, gamma=0.5)
    s = WarmUp(inner, warmup_steps=4)
    assert [s(t) for t in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert [s(t) for t in (4, 5, 6, 8)] == pytest.approx([inner(0), inner(1), inner(2), inner(4)])
    constant = WarmUp(0.01, warmup_steps=2)
    assert [constant(t) for t in (0, 1, 2, 50)] == pytest.approx([0.005, 0.01, 0.01, 0.01])


@pytest.mark.parametrize(
    "schedule",
    [
        StepDecay(0.1, 5, gamma=0.3),
        ExponentialDecay(0.1, 0.96, decay_steps=100, staircase=True),
        CosineDecay(0.05, 1000, alpha=0.01),
        WarmUp(CosineDecay(0.1, 100), 10),
        WarmUp(WarmUp(0.3, 2), 3),
    ],
)
def test_config_round_trip_through_json(schedule):
    data = json.loads(json.dumps(schedules.serialize(schedule)))
    rebuilt = schedules.get(data)
    assert rebuilt == schedule
    assert [rebuilt(t) for t in (0, 3, 11, 500)] == [schedule(t) for t in (0, 3, 11, 500)]


def test_get_passes_numbers_and_instances_through():
    s = StepDecay(0.1, 2)
    assert schedules.get(s) is s
    assert schedules.get(0.5) == 0.5
    assert schedules.get(None) is None


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"class_name": "os.system", "config": {}}, "unknown learning-rate schedule"),
        ({"class_name": "Schedule", "config": {}}, "unknown learning-rate schedule"),
        ({"config": {}}, "class_name"),
        ({"class_name": "StepDecay", "config": {"initial_lr": 0.1}}, "step_size"),
        ({"class_name": "StepDecay", "config": [1, 2]}, "config must be a dict"),
    ],
)
def test_get_rejects_bad_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        schedules.get(spec)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: StepDecay(-0.1, 2), "initial_lr"),
        (lambda: StepDecay(0.1, 0), "step_size"),
        (lambda: StepDecay(0.1, 2.5), "step_size"),
        (lambda: ExponentialDecay(0.1, -0.5), "decay_rate"),
        (lambda: CosineDecay(0.1, 10, alpha=2.0), "alpha"),
        (lambda: WarmUp(0.1, 0), "warmup_steps"),
        (lambda: WarmUp("fast", 3), "schedule"),
    ],
)
def test_invalid_arguments_raise_config_error(factory, match):
    with pytest.raises(ConfigError, match=match):
        factory()


def test_serialize_refuses_a_lambda():
    with pytest.raises(ConfigError, match="get_config"):
        schedules.serialize(lambda step: 0.1)
