"""Conformance of an optimizer: in-place steps, descent, ``state_dict``, config and registry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from framework.testing import _structure as st
from framework.testing._common import check_config, check_registered, json_round
from framework.testing.report import CheckFailed, ConformanceReport, run_check

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
    - ``config``: ``get_config()`` is JSON data and ``from_config`` rebuilds
      an equal config;
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

    def fresh(dtype: Any = np.float64) -> tuple[Any, list[Parameter]]:
        params = [Parameter(start.astype(dtype)), Parameter(bias0.astype(dtype))]
        new = type(opt).from_config(json_round(opt.get_config()))
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
    run_check(report, "config", skip, lambda: check_config(opt, "optimizers") and None)
    run_check(report, "registry", skip, lambda: check_registered(opt, "optimizers", opt.get_config()))
    if raise_on_failure:
        report.raise_if_failed()
    return report
