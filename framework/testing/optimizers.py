"""Conformance of an optimizer: in-place steps, descent, ``state_dict``, config and registry."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import numpy as np

from framework.errors import ConfigError
from framework.testing import _structure as st
from framework.testing._common import attribute_differences, check_config, check_registered, json_round
from framework.testing.gradients import relative_error
from framework.testing.report import CheckFailed, CheckSkipped, ConformanceReport, run_check

__all__ = ["check_optimizer"]


def check_optimizer(
    optimizer: Any,
    *,
    steps: int = 100,
    skip: Iterable[str] = (),
    raise_on_failure: bool = True,
) -> ConformanceReport:
    """Conformance of an optimizer; ``optimizer`` is a registered name, a class or an instance.

    Fresh optimizers are rebuilt from ``optimizer``'s config for each check,
    bound to fresh parameters. Checks:

    - ``in_place``: ``step()`` changes ``param.data`` in place (the same array
      object, so views and the model see the update) and keeps its dtype
      (float32 stays float32);
    - ``decreases_quadratic``: ``steps`` steps on
      ``f(w) = 1/2 sum(c * (w - t)^2)`` (``c`` in ``[0.5, 2]``) lower ``f``;
    - ``state_dict``: an optimizer rebuilt from the config, given the
      ``state_dict()`` after three steps and the same parameters, makes the
      same next step as the original;
    - ``zero_grad``: ``zero_grad()`` zeros every bound gradient;
    - ``config``: ``get_config()`` is JSON data, ``from_config`` rebuilds
      an equal config with equal public attributes, and the rebuilt optimizer
      makes the same steps as (a copy of) ``optimizer`` itself, so no
      hyperparameter is lost when a model is saved and loaded;
    - ``learning_rate``: after ``learning_rate`` is set to half (as a
      schedule or ``ReduceLROnPlateau`` does), the first step is half as long:
      ``update`` uses the rate it is given, not one cached earlier (for an
      optimizer whose step is not proportional to the rate, skip it);
    - ``weight_decay`` (when the optimizer takes ``weight_decay``): with zero
      gradients, a step with ``weight_decay=0.1`` moves every parameter
      toward zero, and one with ``weight_decay=0`` leaves them unchanged;
    - ``registry``: registered, and ``framework.optimizers.get`` rebuilds it.
    """
    from framework.base.parameter import Parameter
    from framework.registry.namespace import resolve

    opt = resolve("optimizers", optimizer)
    report = ConformanceReport(f"optimizer {type(opt).__module__}.{type(opt).__qualname__}")
    skip = set(skip)
    rng = np.random.default_rng(0)
    start = rng.standard_normal((5, 4))
    target = rng.standard_normal((5, 4))
    curvature = rng.uniform(0.5, 2.0, (5, 4))
    bias0 = rng.standard_normal(4)

    def fresh(dtype: Any = np.float64, **overrides: Any) -> tuple[Any, list[Parameter]]:
        params = [Parameter(start.astype(dtype)), Parameter(bias0.astype(dtype))]
        new = type(opt).from_config({**json_round(opt.get_config()), **overrides})
        new.bind(params)
        return new, params

    def set_grads(params: list[Parameter]) -> None:
        w, b = params
        w.grad[...] = curvature * (w.data - target)
        b.grad[...] = b.data

    def objective(params: list[Parameter]) -> float:
        w, b = params
        return float(0.5 * np.sum(curvature * (w.data - target) ** 2) + 0.5 * np.sum(b.data**2))

    def in_place() -> None:
        for dtype in (np.float64, np.float32):
            o, params = fresh(dtype)
            arrays = [p.data for p in params]
            before = [a.copy() for a in arrays]
            set_grads(params)
            o.step()
            for i, (p, a) in enumerate(zip(params, arrays)):
                if p.data is not a:
                    raise CheckFailed(
                        f"step() replaced parameter {i}'s array instead of updating it in place"
                    )
                if p.data.dtype != dtype:
                    raise CheckFailed(
                        f"step() changed parameter {i} from {np.dtype(dtype).name} to {p.data.dtype}"
                    )
            if all(np.array_equal(a, b) for a, b in zip(arrays, before)):
                raise CheckFailed("step() with non-zero gradients left every parameter unchanged")

    run_check(report, "in_place", skip, in_place)

    def decreases() -> str:
        o, params = fresh()
        f0 = objective(params)
        for _ in range(steps):
            o.zero_grad()
            set_grads(params)
            o.step()
        f1 = objective(params)
        if not f1 < f0:
            raise CheckFailed(f"{steps} steps took the quadratic from {f0:.6g} to {f1:.6g}")
        return f"{f0:.4g} -> {f1:.4g} in {steps} steps"

    run_check(report, "decreases_quadratic", skip, decreases)

    def state_dict() -> None:
        o, params = fresh()
        for _ in range(3):
            o.zero_grad()
            set_grads(params)
            o.step()
        state = o.state_dict()
        twin, twin_params = fresh()
        for p, q in zip(params, twin_params):
            q.data[...] = p.data
        twin.load_state_dict(state)
        for opt_, ps in ((o, params), (twin, twin_params)):
            opt_.zero_grad()
            set_grads(ps)
            opt_.step()
        diff = max(st.max_diff(p.data, q.data) for p, q in zip(params, twin_params))
        if diff != 0.0:
            raise CheckFailed(
                f"after load_state_dict(state_dict()) the next step differs by up to {diff:.3e} "
                "(is some state not in state_dict, e.g. a step count or a moment?)"
            )

    run_check(report, "state_dict", skip, state_dict)

    def zero_grad() -> None:
        o, params = fresh()
        set_grads(params)
        o.zero_grad()
        if any(np.any(p.grad != 0) for p in params):
            raise CheckFailed("zero_grad() left non-zero gradients")

    run_check(report, "zero_grad", skip, zero_grad)

    def config() -> None:
        _, clone = check_config(opt, "optimizers")
        differ = attribute_differences(opt, clone, ignore=("iterations",))
        if differ:
            raise CheckFailed(
                "from_config(get_config()) rebuilds an optimizer whose attributes differ: "
                f"{'; '.join(differ)}; a constructor argument is not written by get_config()"
            )
        # a copy of the optimizer itself, without the parameters (or model) it may be bound to
        bound = [*opt.params, getattr(opt, "_source", None), getattr(opt, "_listed", None)]
        twin = copy.deepcopy(opt, {id(x): None for x in bound if x is not None})
        runs = []
        for o in (twin, fresh()[0]):
            params = [Parameter(start.copy()), Parameter(bias0.copy())]
            o.bind(params)
            o.iterations = 0
            for _ in range(3):
                o.zero_grad()
                set_grads(params)
                o.step()
            runs.append(params)
        diff = max(st.max_diff(p.data, q.data) for p, q in zip(*runs))
        if diff != 0.0:
            raise CheckFailed(
                f"the optimizer rebuilt from get_config() steps differently from the original (max |diff| "
                f"{diff:.3e} after 3 steps); a hyperparameter is not written by get_config()"
            )

    run_check(report, "config", skip, config)

    def learning_rate() -> str:
        steps = []
        for rate in (0.01, 0.005):
            o, params = fresh()
            o.learning_rate = rate
            before = [p.data.copy() for p in params]
            set_grads(params)
            o.step()
            steps.append(np.concatenate([(p.data - b).ravel() for p, b in zip(params, before)]))
        full, half = steps
        ratio = float(np.linalg.norm(half) / max(float(np.linalg.norm(full)), 1e-300))
        if not relative_error(half, 0.5 * full) < 1e-6:
            raise CheckFailed(
                f"setting learning_rate from 0.01 to 0.005 (as schedules and ReduceLROnPlateau do) made the "
                f"first step {ratio:.4g} times as long, expected 0.5: does update() use the lr it is given?"
            )
        return "the step is proportional to the learning rate"

    run_check(report, "learning_rate", skip, learning_rate)

    def weight_decay() -> None:
        moves = []
        for decay in (0.0, 0.1):
            try:
                o, params = fresh(weight_decay=decay)
            except (TypeError, ConfigError) as exc:
                raise CheckSkipped(f"does not take weight_decay ({exc})") from exc
            before = [p.data.copy() for p in params]
            for p in params:
                p.grad[...] = 0.0
            o.step()
            moves.append([(b, p.data - b) for p, b in zip(params, before)])
        if any(np.any(m != 0) for _, m in moves[0]):
            raise CheckFailed("with zero gradients and weight_decay=0, a step changed the parameters")
        wrong = sum(int(np.sum(np.sign(m) != -np.sign(b))) for b, m in moves[1])
        if wrong:
            raise CheckFailed(
                f"with zero gradients and weight_decay=0.1, a step did not move {wrong} of "
                f"{start.size + bias0.size} parameter values toward zero: weight_decay is ignored"
            )

    run_check(report, "weight_decay", skip, weight_decay)
    run_check(report, "registry", skip, lambda: check_registered(opt, "optimizers", opt.get_config()))
    if raise_on_failure:
        report.raise_if_failed()
    return report
