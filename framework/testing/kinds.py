"""Conformance of the other pluggable kinds: activations, initializers and losses.

Each ``check_*`` takes a registered name, a class or an instance, runs its
checks through one :class:`~framework.testing.report.ConformanceReport` and
raises one :class:`~framework.testing.report.ConformanceError` listing every
failure (unless ``raise_on_failure=False``). Optimizers are checked in
:mod:`framework.testing.optimizers`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from framework.base.layer import Layer
from framework.testing import _structure as st
from framework.testing._common import check_config, check_registered, default_dtype, forward, fresh_layer
from framework.testing.gradients import numerical_gradient, relative_error
from framework.testing.layers import check_layer
from framework.testing.report import CheckFailed, ConformanceError, ConformanceReport, run_check

__all__ = ["check_activation", "check_initializer", "check_loss"]


def check_activation(
    activation: Any,
    input_shape: tuple[int, ...] = (4, 7),
    *,
    rng: np.random.Generator | int | None = None,
    tolerance: float = 1e-6,
    x: Any = None,
    skip: Iterable[str] = (),
    raise_on_failure: bool = True,
) -> ConformanceReport:
    """Conformance of an activation: the layer checks, plus what an activation promises.

    ``activation`` is a registered name, a class or an instance. An activation
    is a parameter-free ``Layer``, so :func:`check_layer`'s checks run on it
    (with the ``registry`` check against ``framework.activations`` and without
    the checkpoint, which belongs to layers), plus:

    - ``parameter_free``: it has no parameters;
    - ``elementwise_shape``: its output has its input's shape;
    - ``gain``: ``gain`` (the init gain a preceding layer passes to its weight
      initializer), when present, is a finite number >= 0.
    """
    from framework.registry.namespace import resolve

    act = resolve("activations", activation)
    if not isinstance(act, Layer):
        raise ConformanceError(
            f"activation {activation!r}: expected a Layer subclass (forward and backward), "
            f"got {type(act).__name__}"
        )
    report = check_layer(
        act,
        input_shape,
        rng=rng,
        tolerance=tolerance,
        x=x,
        skip={"checkpoint", *skip},
        kind="activations",
        raise_on_failure=False,
    )
    report.results = [r for r in report.results if not (r.check == "checkpoint" and r.status == "skip")]
    probe = fresh_layer(act, "float64")

    def parameter_free() -> None:
        xin = (
            st.random_input(st.concrete(input_shape), np.random.default_rng(0), np.float64)
            if x is None
            else x
        )
        out = forward(probe, xin, "float64")
        if probe.parameters():
            raise CheckFailed(
                f"has parameters {[n for n, _ in probe.named_parameters()]}; an activation has none"
            )
        if out.shape != xin.shape:
            raise CheckFailed(f"output shape {out.shape} differs from the input shape {xin.shape}")

    run_check(report, "parameter_free", skip, parameter_free)

    def gain() -> str:
        value = getattr(act, "gain", None)
        if value is None:
            return "no gain (initializers use their default)"
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise CheckFailed(f"gain must be a finite number >= 0 or None, got {value!r}")
        return f"gain {value:g}"

    run_check(report, "gain", skip, gain)
    if raise_on_failure:
        report.raise_if_failed()
    return report


def check_initializer(
    initializer: Any,
    *,
    shapes: Iterable[tuple[int, ...]] = ((16, 8), (6, 3, 3, 3), (5,)),
    skip: Iterable[str] = (),
    raise_on_failure: bool = True,
) -> ConformanceReport:
    """Conformance of an initializer ``init(shape, dtype=None, rng=None, gain=None)``.

    ``initializer`` is a registered name, a class or an instance. Checks:

    - ``shape``: returns an ndarray of exactly each of ``shapes`` (a Linear
      weight, a conv kernel, a bias), with finite values;
    - ``dtype``: ``dtype="float32"`` / ``"float64"`` give that dtype, and
      ``dtype=None`` gives ``framework.getdefault_dtype()``;
    - ``reproducible``: two calls with generators of one seed are equal, and
      the draws come from the given ``rng`` (a different seed gives
      different values, unless the initializer is deterministic);
    - ``gain``: ``gain=None`` works, and with one seed ``gain=2`` gives either
      the same values (an initializer that ignores the gain) or exactly twice
      those of ``gain=1`` (the gain scales the distribution);
    - ``config``: ``get_config()`` is JSON data, ``from_config`` rebuilds an
      equal config and the rebuilt initializer draws the same values;
    - ``registry``: registered, and ``framework.initializers.get`` rebuilds it
      from ``{"class_name": name, "config": config}``.
    """
    from framework.registry.namespace import resolve

    init = resolve("initializers", initializer)
    report = ConformanceReport(f"initializer {type(init).__module__}.{type(init).__qualname__}")
    shapes = [tuple(s) for s in shapes]
    skip = set(skip)

    def draw(shape: tuple[int, ...], seed: int = 0, **kwargs: Any) -> np.ndarray:
        return init(shape, rng=np.random.default_rng(seed), **kwargs)

    def shape_check() -> None:
        for s in shapes:
            value = draw(s)
            if not isinstance(value, np.ndarray):
                raise CheckFailed(f"init({s}) returned {type(value).__name__}, expected a numpy.ndarray")
            if value.shape != s:
                raise CheckFailed(f"init({s}) returned shape {value.shape}")
            if not np.all(np.isfinite(value)):
                raise CheckFailed(f"init({s}) returned non-finite values")

    run_check(report, "shape", skip, shape_check)

    def dtype_check() -> None:
        for name in ("float32", "float64"):
            got = draw(shapes[0], dtype=name).dtype
            if got != np.dtype(name):
                raise CheckFailed(f"dtype={name!r} gave {got}")
        for default in ("float64", "float32"):
            with default_dtype(default):
                got = draw(shapes[0]).dtype
            if got != np.dtype(default):
                raise CheckFailed(f"dtype=None with default dtype {default} gave {got}")

    run_check(report, "dtype", skip, dtype_check)

    def reproducible() -> str | None:
        s = shapes[0]
        if not np.array_equal(draw(s, 7), draw(s, 7)):
            raise CheckFailed("two calls with generators of one seed gave different values")
        if np.array_equal(draw(s, 7), draw(s, 8)):
            return "deterministic (does not draw from rng)"
        return None

    run_check(report, "reproducible", skip, reproducible)

    def gain() -> str:
        s = shapes[0]
        draw(s, gain=None)
        one = draw(s, 3, gain=1.0)
        two = draw(s, 3, gain=2.0)
        if np.array_equal(one, two):
            return "ignores the gain"
        if np.allclose(two, 2.0 * one, rtol=1e-6, atol=0):
            return "scales with the gain"
        raise CheckFailed(
            "with one seed, gain=2 gave neither the values of gain=1 (gain ignored) nor twice them "
            f"(gain scales the distribution); max |init(gain=2) - 2 init(gain=1)| = "
            f"{st.max_diff(two, 2.0 * one):.3e}"
        )

    run_check(report, "gain", skip, gain)

    def config() -> None:
        _, clone = check_config(init, "initializers")
        s = shapes[0]
        if not np.array_equal(clone(s, rng=np.random.default_rng(5)), draw(s, 5)):
            raise CheckFailed("the initializer rebuilt from its config draws different values")

    run_check(report, "config", skip, config)
    run_check(report, "registry", skip, lambda: check_registered(init, "initializers", init.get_config()))
    if raise_on_failure:
        report.raise_if_failed()
    return report


def check_loss(
    loss: Any,
    y_pred: Any = None,
    y_true: Any = None,
    *,
    tolerance: float = 1e-6,
    skip: Iterable[str] = (),
    raise_on_failure: bool = True,
) -> ConformanceReport:
    """Conformance of a loss: ``forward(y_pred, y_true) -> float``, ``backward() -> dL/dy_pred``.

    ``loss`` is a registered name, a class or an instance; ``y_pred`` /
    ``y_true`` default to standard normals of shape ``(4, 3)`` (pass integer
    class labels for a classification loss). Checks:

    - ``scalar``: ``forward`` returns a finite Python (or NumPy) float scalar;
    - ``gradients``: ``backward()`` against central finite differences of
      ``forward`` with respect to ``y_pred``, in float64, relative error
      below ``tolerance`` (this includes the batch mean's ``1/N``);
    - ``gradient_shape``: ``backward()`` has ``y_pred``'s shape, and for
      float32 ``y_pred`` is float32 and agrees with the float64 gradient to
      ``1e-4`` relative;
    - ``batch_mean``: the loss of the batch repeated twice equals the loss of
      the batch: the value is a mean over the batch, so its gradient carries
      the ``1/N`` that layers never apply again (skip it for a loss that is
      deliberately not a batch mean);
    - ``config``: ``get_config()`` is JSON data, ``from_config`` rebuilds an
      equal config and the rebuilt loss gives the same value;
    - ``registry``: registered, and ``framework.losses.get`` rebuilds it.
    """
    from framework.registry.namespace import resolve

    obj = resolve("losses", loss)
    report = ConformanceReport(f"loss {type(obj).__module__}.{type(obj).__qualname__}")
    rng = np.random.default_rng(0)
    y_pred = rng.standard_normal((4, 3)) if y_pred is None else np.array(y_pred, dtype=np.float64)
    y_true = rng.standard_normal(y_pred.shape) if y_true is None else np.asarray(y_true)
    skip = set(skip)

    def value(pred: np.ndarray) -> float:
        return float(obj.forward(pred, y_true))

    def scalar() -> None:
        out = obj.forward(y_pred, y_true)
        if isinstance(out, np.ndarray) and out.ndim > 0:
            raise CheckFailed(f"forward returned an array of shape {out.shape}, expected a scalar float")
        if not isinstance(out, (float, np.floating)):
            raise CheckFailed(f"forward returned {type(out).__name__}, expected a float")
        if not math.isfinite(float(out)):
            raise CheckFailed(f"forward returned {out!r}")

    run_check(report, "scalar", skip, scalar)

    def gradients() -> None:
        pred = y_pred.copy()
        obj.forward(pred, y_true)
        analytic = np.asarray(obj.backward(), dtype=np.float64)
        numeric = numerical_gradient(lambda: value(pred), pred)
        err = relative_error(analytic, numeric)
        if not err < tolerance:
            raise CheckFailed(
                f"backward() disagrees with finite differences: relative error {err:.3e} "
                f"(tolerance {tolerance:g}); ratio of norms analytic/numeric "
                f"{float(np.linalg.norm(analytic)) / max(float(np.linalg.norm(numeric)), 1e-300):.4g}"
            )

    run_check(report, "gradients", skip, gradients)

    def gradient_shape() -> None:
        grads = []
        for dtype in (np.float64, np.float32):
            pred = y_pred.astype(np.float32).astype(dtype)  # one set of values for both dtypes
            obj.forward(pred, y_true)
            g = obj.backward()
            if np.shape(g) != pred.shape:
                raise CheckFailed(f"backward() has shape {np.shape(g)}, y_pred has {pred.shape}")
            if np.asarray(g).dtype != dtype:
                raise CheckFailed(f"backward() is {np.asarray(g).dtype} for {np.dtype(dtype).name} y_pred")
            grads.append(g)
        err = relative_error(grads[1], grads[0])
        if not err < 1e-4:
            raise CheckFailed(
                f"backward() for float32 y_pred differs from the float64 one by relative error {err:.2e} "
                "(tolerance 1e-4); is a float32 code path wrong?"
            )

    run_check(report, "gradient_shape", skip, gradient_shape)

    def batch_mean() -> None:
        once = value(y_pred)
        twice = float(obj.forward(np.concatenate([y_pred, y_pred]), np.concatenate([y_true, y_true])))
        if not abs(twice - once) <= 1e-9 * max(1.0, abs(once)):
            raise CheckFailed(
                f"the loss of the batch repeated twice is {twice!r}, of the batch once {once!r} "
                f"(ratio {twice / once if once else float('inf'):.4g}); a loss is the mean over the batch, "
                "and its backward carries that 1/N (layers never divide by the batch size)"
            )

    run_check(report, "batch_mean", skip, batch_mean)

    def config() -> None:
        _, clone = check_config(obj, "losses")
        a, b = value(y_pred), float(clone.forward(y_pred, y_true))
        if a != b:
            raise CheckFailed(f"the loss rebuilt from its config gives {b!r}, the original {a!r}")

    run_check(report, "config", skip, config)
    run_check(report, "registry", skip, lambda: check_registered(obj, "losses", obj.get_config()))
    if raise_on_failure:
        report.raise_if_failed()
    return report
