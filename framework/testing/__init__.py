"""The conformance kit for plugin authors: gradient checks and whole-object checks.

- ``check_gradients(layer, x)`` compares a layer's hand-written ``backward``
  against central finite differences of ``L = sum(forward(x) * R)`` for a fixed
  random ``R``, for the input and for every parameter, in float64.
- ``check_layer(layer, input_shape)`` runs every check a layer must pass
  (gradients, ``output_shape``, config and registry round trips, checkpoint
  round trip, train / eval, float32 and float64, backward shapes and
  ``zero_grad``) and raises ONE :class:`ConformanceError` listing every failed
  check with its details.
- ``check_activation``, ``check_initializer``, ``check_loss`` and
  ``check_optimizer`` do the same for the other pluggable kinds.

A plugin's own tests call them::

    from framework.testing import check_layer
    from my_plugin import Scale

    def test_scale_conforms():
        check_layer(Scale(), (4, 5))
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framework.base.layer import Layer
from framework.errors import FrameworkError
from framework.registry.manager import REGISTRY
from framework.runtime.dtype import get_default_dtype, set_default_dtype

__all__ = [
    "ConformanceError",
    "GradientReport",
    "numerical_gradient",
    "relative_error",
    "check_gradients",
    "CheckResult",
    "ConformanceReport",
    "check_layer",
    "check_activation",
    "check_initializer",
    "check_loss",
    "check_optimizer",
]


class ConformanceError(FrameworkError, AssertionError):
    """A layer (or other plugin object) failed a conformance check; the message is the report."""


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``||a - n|| / max(||a|| + ||n||, 1e-12)``: 0 when equal, 1 when unrelated."""
    a = np.asarray(analytic, dtype=np.float64).ravel()
    n = np.asarray(numeric, dtype=np.float64).ravel()
    denom = max(float(np.linalg.norm(a) + np.linalg.norm(n)), 1e-12)
    return float(np.linalg.norm(a - n)) / denom


def numerical_gradient(f: Callable[[], float], array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of scalar ``f()`` with respect to ``array`` (perturbed in place)."""
    grad = np.zeros(array.shape, dtype=np.float64)
    flat = array.reshape(-1)
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def _as_float64(x: Any) -> np.ndarray:
    """A float64 copy of ``x``; integer arrays (indices) are copied unchanged."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        return x.copy()
    return np.array(x, dtype=np.float64)


@dataclass
class GradientReport:
    """Relative errors per checked array (``"input"`` and parameter names)."""

    errors: dict[str, float] = field(default_factory=dict)
    tolerance: float = 1e-6

    @property
    def ok(self) -> bool:
        return all(e < self.tolerance for e in self.errors.values())

    def __str__(self) -> str:
        lines = [f"{'array':<24} relative error (tolerance {self.tolerance:g})"]
        for name, err in self.errors.items():
            flag = "ok" if err < self.tolerance else "FAIL"
            lines.append(f"{name:<24} {err:.3e}  {flag}")
        return "\n".join(lines)


def check_gradients(
    layer: Layer,
    x: Any,
    *,
    eps: float = 1e-6,
    tolerance: float = 1e-6,
    seed: int = 104729,
    check_input: bool = True,
    raise_on_failure: bool = True,
) -> GradientReport:
    """Compare ``layer.backward`` to finite differences; input and every parameter.

    Run it on a layer built in float64 (``framework.set_default_dtype("float64")``
    before building) with float64 ``x``; ``x`` may be a list for merge layers.
    The layer's mode (train / eval) is left as it is.

    Raises:
        ConformanceError: listing every array whose relative error exceeds
            ``tolerance`` (unless ``raise_on_failure=False``).
    """
    xs = [_as_float64(v) for v in x] if isinstance(x, (list, tuple)) else None
    x_arr = None if xs is not None else _as_float64(x)
    inputs = xs if xs is not None else x_arr

    out = layer.forward(inputs)
    rng = np.random.default_rng(seed)
    if isinstance(out, (tuple, list)):  # a layer of several outputs, e.g. LSTMCell's (h, c)
        weights: Any = tuple(rng.standard_normal(o.shape) for o in out)

        def loss() -> float:
            return float(sum(np.sum(o * w) for o, w in zip(layer.forward(inputs), weights)))

        grad_out: Any = tuple(w.astype(o.dtype) for w, o in zip(weights, out))
    else:
        weights = rng.standard_normal(out.shape)

        def loss() -> float:
            return float(np.sum(layer.forward(inputs) * weights))

        grad_out = weights.astype(out.dtype)

    layer.forward(inputs)
    layer.zero_grad()
    grad_in = layer.backward(grad_out)
    analytic = {name: p.grad.copy() for name, p in layer.named_parameters()}

    report = GradientReport(tolerance=tolerance)
    if check_input:
        if xs is not None:
            for i, (xi, gi) in enumerate(zip(xs, grad_in)):
                report.errors[f"input[{i}]"] = relative_error(gi, numerical_gradient(loss, xi, eps))
        else:
            report.errors["input"] = relative_error(grad_in, numerical_gradient(loss, x_arr, eps))
    for name, p in layer.named_parameters():
        report.errors[name] = relative_error(analytic[name], numerical_gradient(loss, p.data, eps))
    if raise_on_failure and not report.ok:
        raise ConformanceError(f"{layer.describe()}: gradient check failed\n{report}")
    return report


# ---------------------------------------------------------------------------
# The conformance kit
# ---------------------------------------------------------------------------


@dataclass
class CheckResult:
    """The outcome of one named check: ``status`` is ``"ok"``, ``"FAIL"`` or ``"skip"``."""

    check: str
    status: str
    detail: str = ""


@dataclass
class ConformanceReport:
    """Every check run on one object; :meth:`raise_if_failed` turns failures into one error."""

    subject: str
    results: list[CheckResult] = field(default_factory=list)

    def add(self, check: str, status: str, detail: str = "") -> None:
        """Record one check's outcome (``"ok"``, ``"FAIL"`` or ``"skip"``)."""
        self.results.append(CheckResult(check, status, detail))

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "FAIL"]

    @property
    def passed(self) -> bool:
        """``True`` when no check failed (skipped checks do not count)."""
        return not self.failures

    @property
    def ok(self) -> bool:
        """Alias of :attr:`passed`, as on :class:`GradientReport`."""
        return self.passed

    def checks(self, status: str | None = None) -> list[str]:
        """Names of the checks run (with ``status``: only those with that status)."""
        return [r.check for r in self.results if status is None or r.status == status]

    def __str__(self) -> str:
        failed = self.failures
        head = (
            f"{self.subject}: {len(failed)} of {len(self.results)} conformance checks failed"
            if failed
            else f"{self.subject}: all {len(self.results)} conformance checks passed"
        )
        lines = [head]
        for r in failed:
            lines.append(f"  [FAIL] {r.check}: " + r.detail.replace("\n", "\n         "))
        for r in self.results:
            if r.status == "skip":
                lines.append(f"  [skip] {r.check}: {r.detail}")
        passed = [r.check for r in self.results if r.status == "ok"]
        if passed:
            lines.append(f"  [ok]   {', '.join(passed)}")
        return "\n".join(lines)

    def raise_if_failed(self) -> ConformanceReport:
        if self.failures:
            raise ConformanceError(str(self))
        return self


@contextlib.contextmanager
def _default_dtype(dtype: Any) -> Iterator[None]:
    old = get_default_dtype()
    set_default_dtype(dtype)
    try:
        yield
    finally:
        set_default_dtype(old)


def _run(report: ConformanceReport, check: str, skip: Iterable[str], fn: Callable[[], Any]) -> Any:
    """Run one check; an exception inside it is that check's failure, not the kit's."""
    if check in skip:
        report.add(check, "skip", "skipped on request")
        return None
    try:
        outcome = fn()
    except _Skip as exc:
        report.add(check, "skip", str(exc))
        return None
    except _Fail as exc:
        report.add(check, "FAIL", str(exc))
        return None
    except Exception as exc:
        report.add(check, "FAIL", f"raised {type(exc).__name__}: {exc}")
        return None
    report.add(check, "ok", "" if outcome is None else str(outcome))
    return outcome


class _Skip(Exception):
    pass


class _Fail(Exception):
    pass


def _json_round(data: Any) -> Any:
    return json.loads(json.dumps(data, sort_keys=True))


def _check_config(obj: Any, kind: str, *, rebuild_equal: bool = True) -> tuple[dict[str, Any], Any]:
    """``get_config`` is JSON, ``from_config`` rebuilds an equal config; returns (config, clone)."""
    config = obj.get_config()
    if not isinstance(config, dict):
        raise _Fail(f"get_config() returned {type(config).__name__}, expected a dict")
    try:
        text = json.dumps(config, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise _Fail(f"get_config() is not JSON-serialisable: {exc}; config = {config!r}") from exc
    clone = type(obj).from_config(json.loads(text))
    again = _json_round(clone.get_config())
    if again != json.loads(text):
        diff = sorted(
            k
            for k in set(again) | set(json.loads(text))
            if again.get(k, "<missing>") != json.loads(text).get(k, "<missing>")
        )
        raise _Fail(
            f"{type(obj).__name__}.from_config(get_config()) does not rebuild an equal config; "
            f"differing keys {diff}: original {json.loads(text)!r}, rebuilt {again!r} "
            "(is a constructor argument not stored or not written by get_config?)"
        )
    return config, clone


def _check_registered(obj: Any, kind: str, config: dict[str, Any]) -> str:
    from framework.registry.namespace import resolve

    name = REGISTRY.name_of(kind, obj)
    if name is None:
        raise _Fail(
            f"{type(obj).__name__} is not registered as a {kind[:-1]}: add it with a "
            f"register_{kind} hook (framework.hookimpl) in your plugin module"
        )
    rebuilt = resolve(kind, {"class_name": name, "config": _json_round(config)})
    if type(rebuilt) is not type(obj):
        raise _Fail(
            f"framework.{kind}.get({{'class_name': {name!r}, ...}}) built a "
            f"{type(rebuilt).__name__}, expected {type(obj).__name__} (is another plugin "
            "registering that name with override=True?)"
        )
    return f"registered as {name!r}"


def _random_input(shape: Any, rng: np.random.Generator, dtype: Any) -> Any:
    if isinstance(shape, list):
        return [_random_input(s, rng, dtype) for s in shape]
    return rng.standard_normal(shape).astype(dtype)


def _concrete(shape: Any, batch: int = 2) -> Any:
    if isinstance(shape, list):
        return [_concrete(s, batch) for s in shape]
    shape = tuple(shape)
    return (batch if shape[0] is None else int(shape[0]), *shape[1:])


def _with_none_batch(shape: Any) -> Any:
    if isinstance(shape, list):
        return [_with_none_batch(s) for s in shape]
    return (None, *tuple(shape)[1:])


def _cast(x: Any, dtype: Any) -> Any:
    if isinstance(x, list):
        return [_cast(v, dtype) for v in x]
    x = np.asarray(x)
    return x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x


def _shape_of(x: Any) -> Any:
    return [v.shape for v in x] if isinstance(x, list) else x.shape


def _fresh_layer(layer: Layer, dtype: Any, prepare: Callable[[Layer], Any] | None = None) -> Layer:
    """A new layer of the same config whose parameters are ``dtype``.

    Rebuilt with ``from_config`` under that default dtype; a layer whose
    config cannot rebuild it is deep-copied and cast with ``astype`` instead.
    """
    with _default_dtype(dtype):
        try:
            fresh = type(layer).from_config(_json_round(layer.get_config()))
        except Exception:
            fresh = copy.deepcopy(layer)
            fresh.astype(dtype)
    fresh.train()
    if prepare is not None:
        prepare(fresh)
    return fresh


def _forward(layer: Layer, x: Any, dtype: Any) -> Any:
    with _default_dtype(dtype):
        return _outputs(layer.forward(x))


def _outputs(out: Any) -> Any:
    """A layer's output with several outputs (a tuple) as a list."""
    return list(out) if isinstance(out, tuple) else out


def _grad_arg(out: Any, grads: Any) -> Any:
    """``grads`` in the form ``backward`` takes: a tuple for a layer of several outputs."""
    return tuple(grads) if isinstance(out, list) else grads


def _max_diff(a: Any, b: Any) -> float:
    if isinstance(a, list):
        return max(_max_diff(u, v) for u, v in zip(a, b))
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and all(_equal(u, v) for u, v in zip(a, b))
    return np.shape(a) == np.shape(b) and bool(np.array_equal(a, b))


def check_layer(
    layer: Layer,
    input_shape: Any,
    *,
    rng: np.random.Generator | int | None = None,
    tolerance: float = 1e-6,
    check_dtypes: Iterable[str] = ("float32", "float64"),
    x: Any = None,
    skip: Iterable[str] = (),
    kind: str = "layers",
    prepare: Callable[[Layer], Any] | None = None,
    raise_on_failure: bool = True,
) -> ConformanceReport:
    """Run every conformance check on ``layer``; raise one report listing all failures.

    The checks, each named in the report:

    - ``forward``: a forward pass on random input runs (every other check needs it).
    - ``gradients``: ``backward`` against central finite differences
      (:func:`check_gradients`) for the input and every parameter, on a copy
      rebuilt from the config in float64, relative error below ``tolerance``.
      It runs in training mode, and in eval mode as well (BatchNorm's two
      paths); a layer that is stochastic in training (two forwards on one
      input differ, like Dropout) is checked in eval mode only.
    - ``output_shape``: ``layer.output_shape(shape)`` equals the real output
      shape, for the batch axis ``None`` (which must stay ``None``) and for
      the concrete batch size.
    - ``config``: ``get_config()`` is JSON data and
      ``type(layer).from_config(config)`` rebuilds a layer with an equal config.
    - ``registry``: the class is registered (``framework.layers``) and
      ``framework.layers.get({"class_name": name, "config": config})`` builds it.
    - ``checkpoint``: in a ``Sequential``, saving to HDF5 and loading gives
      equal outputs in eval mode (skipped, with a note, for multi-input layers
      or when the model API cannot be imported).
    - ``train_eval``: ``train()`` / ``eval()`` set ``training`` on the layer
      and its children, and two eval-mode forwards are equal.
    - ``dtype_<name>``: a layer built in that dtype keeps it: parameters,
      output, input gradient and parameter gradients are all ``<name>``.
    - ``backward``: the returned gradient has the input's shape, every
      parameter gradient its parameter's shape, and ``zero_grad()`` zeros
      them all.

    Args:
        layer: the layer (built or not); it is used for the config check, and
            fresh copies rebuilt from its config for the rest.
        input_shape: the input shape with the batch axis (``(2, 3, 8, 8)``;
            a leading ``None`` means batch 2), or a list of shapes for a
            layer of several inputs.
        rng: a ``numpy.random.Generator`` or a seed for the random input
            (default seed 0).
        tolerance: largest relative error of a gradient (default ``1e-6``).
        check_dtypes: dtypes the layer must preserve (default float32 and float64).
        x: a particular input to use instead of random normals (e.g. integer
            indices, or positive values for a layer defined only there).
        skip: names of checks not to run (reported as skipped).
        kind: the registry kind for the ``registry`` check (``"layers"``, or
            ``"activations"`` for :func:`check_activation`).
        prepare: called on every copy of the layer the kit makes (and on the
            layer loaded from the checkpoint) before its first forward, to set
            state that is deliberately not in the config, such as a graph
            convolution's adjacency: ``prepare=lambda l: l.set_graph(A)``.
        raise_on_failure: raise :class:`ConformanceError` when a check failed
            (default); otherwise only return the report.

    Returns:
        The :class:`ConformanceReport`.

    Raises:
        ConformanceError: whose message names the layer and lists every failed
            check with its details.
    """
    skip = set(skip)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(0 if rng is None else rng)
    shape = _concrete(input_shape)
    label = f"{layer.describe()} ({type(layer).__module__}.{type(layer).__qualname__})"
    report = ConformanceReport(label)
    x0 = _random_input(shape, rng, np.float64) if x is None else x
    integer_input = not isinstance(x0, list) and not np.issubdtype(np.asarray(x0).dtype, np.floating)
    multi_input = isinstance(shape, list)

    probe = _run(
        report, "forward", skip, lambda: _forward(_fresh_layer(layer, "float64", prepare), x0, "float64")
    )
    if probe is None and "forward" not in skip:
        if raise_on_failure:
            report.raise_if_failed()
        return report

    def gradients() -> str:
        layer64 = _fresh_layer(layer, "float64", prepare)
        first = _forward(layer64, x0, "float64")
        stochastic = not _equal(first, _outputs(layer64.forward(x0)))
        modes = ["eval"] if stochastic else ["train", "eval"]
        problems = []
        for mode in modes:
            layer64.train(mode == "train")
            result = check_gradients(
                layer64,
                x0,
                tolerance=tolerance,
                check_input=not integer_input,
                raise_on_failure=False,
            )
            if not result.ok:
                problems.append(f"in {mode} mode:\n{result}")
        if problems:
            raise _Fail("backward disagrees with finite differences " + "\n".join(problems))
        note = "stochastic in training: checked in eval mode" if stochastic else "train and eval mode"
        return note

    _run(report, "gradients", skip, gradients)

    def output_shape() -> None:
        layer32 = _fresh_layer(layer, "float32", prepare)
        out = _forward(layer32, _cast(x0, np.float32), "float32")
        real = _shape_of(out)
        claimed = layer32.output_shape(_with_none_batch(shape))
        expected = _with_none_batch(list(real) if isinstance(real, list) else real)
        if _as_tuples(claimed) != _as_tuples(expected):
            raise _Fail(
                f"output_shape({_fmt(_with_none_batch(shape))}) returned {_fmt(claimed)}, "
                f"the real output has shape {_fmt(real)} (expected {_fmt(expected)})"
            )
        claimed_concrete = layer32.output_shape(shape)
        real_t = _as_tuples(real)
        got = _as_tuples(claimed_concrete)
        if got != real_t:
            raise _Fail(
                f"output_shape({_fmt(shape)}) returned {_fmt(claimed_concrete)}, "
                f"the real output has shape {_fmt(real)}"
            )

    _run(report, "output_shape", skip, output_shape)

    def _built_copy() -> Layer:
        """A float64 deep copy of ``layer``, built (the caller's layer is left as it is)."""
        with _default_dtype("float64"):
            lay = copy.deepcopy(layer)
            lay.astype(np.float64)
            if prepare is not None:
                prepare(lay)
            if not lay.built:
                lay.forward(x0)
        return lay

    def config() -> None:
        original = _built_copy()
        with _default_dtype("float64"):
            config, clone = _check_config(original, kind)
            if prepare is not None:
                prepare(clone)
            _forward(clone, x0, "float64")
            clone.load_state_dict(_cast_state(original.state_dict()))
            original.eval()
            clone.eval()
            a, b = _outputs(original.forward(x0)), _outputs(clone.forward(x0))
        if _as_tuples(_shape_of(a)) != _as_tuples(_shape_of(b)) or not _allclose(a, b):
            raise _Fail(
                "a layer rebuilt with from_config(get_config()) and given the same weights computes "
                f"a different output (config {_json_round(config)!r}); a constructor argument is "
                "probably not stored in get_config()"
            )

    _run(report, "config", skip, config)
    _run(report, "registry", skip, lambda: _check_registered(layer, kind, _built_copy().get_config()))

    def checkpoint() -> str:
        if isinstance(probe, list):
            raise _Skip("a layer of several outputs cannot end a saved model; not checked")
        if importlib.util.find_spec("h5py") is None:
            raise _Skip("h5py is not installed (pip install h5py); checkpoints cannot be written")
        try:
            from framework.models.model import Model, Sequential
            from framework.saving.checkpoint import load_model, save_model
        except ImportError as exc:
            raise _Skip(f"the model API is not importable yet ({exc})") from exc
        with _default_dtype("float32"):
            # A faithful copy, not one rebuilt from the config, so that state the
            # config forgets shows up as a difference after loading.
            original = copy.deepcopy(layer)
            original.astype(np.float32)
            original.train()
            if prepare is not None:
                prepare(original)
            xin = _cast(x0, np.float32)
            if multi_input:
                from framework.models.graph import Input

                inputs = [Input(tuple(s[1:])) for s in shape]
                model = Model(inputs, original(inputs))
            else:
                model = Sequential([original])
                model.forward(xin)
                if not model.built:
                    model.build(_with_none_batch(shape))
            model.eval()
            before = model.forward(xin)
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "layer.h5")
                save_model(model, path)
                loaded = load_model(path, compile=False)
            if prepare is not None:
                for child in loaded.children():
                    prepare(child)
            loaded.eval()
            after = loaded.forward(xin)
        if not _equal(before, after):
            raise _Fail(
                f"outputs differ after saving and loading (max |diff| {_max_diff(before, after):.3e}); "
                "is a constructor argument missing from get_config, a parameter or buffer not "
                "discovered, or state kept outside Parameter/Buffer?"
            )
        return None

    _run(report, "checkpoint", skip, checkpoint)

    def train_eval() -> None:
        lay = _fresh_layer(layer, "float32", prepare)
        xin = _cast(x0, np.float32)
        _forward(lay, xin, "float32")
        everything = [lay, *_descendants(lay)]
        lay.eval()
        wrong = [c.describe() for c in everything if c.training]
        if wrong:
            raise _Fail(f"eval() left training=True on {wrong}")
        a = _outputs(lay.forward(xin))
        b = _outputs(lay.forward(xin))
        if not _equal(a, b):
            raise _Fail(f"two eval-mode forwards differ (max |diff| {_max_diff(a, b):.3e})")
        lay.train()
        wrong = [c.describe() for c in everything if not c.training]
        if wrong:
            raise _Fail(f"train() left training=False on {wrong}")

    _run(report, "train_eval", skip, train_eval)

    for dtype_name in check_dtypes:
        dtype = np.dtype(dtype_name)

        def dtypes(dtype: np.dtype = dtype) -> None:
            lay = _fresh_layer(layer, dtype, prepare)
            xin = _cast(x0, dtype)
            out = _forward(lay, xin, dtype)
            problems = []
            outs = out if isinstance(out, list) else [out]
            for o in outs:
                if o.dtype != dtype:
                    problems.append(f"output is {o.dtype}")
            for name, p in lay.named_parameters():
                if p.data.dtype != dtype:
                    problems.append(f"parameter {name} is {p.data.dtype}")
            lay.zero_grad()
            g = lay.backward(_grad_arg(out, _ones_like(out)))
            if not integer_input:
                for gi in g if isinstance(g, list) else [g]:
                    if getattr(gi, "dtype", None) != dtype:
                        problems.append(f"input gradient is {getattr(gi, 'dtype', type(gi).__name__)}")
            for name, p in lay.named_parameters():
                if p.grad.dtype != dtype:
                    problems.append(f"gradient of {name} is {p.grad.dtype}")
            if problems:
                raise _Fail(f"built in {dtype.name} with {dtype.name} input: " + "; ".join(problems))

        _run(report, f"dtype_{dtype.name}", skip, dtypes)

    def backward() -> None:
        lay = _fresh_layer(layer, "float64", prepare)
        out = _forward(lay, x0, "float64")
        lay.zero_grad()
        noise = np.random.default_rng(1)
        grads = [noise.standard_normal(o.shape) for o in out] if isinstance(out, list) else None
        g = lay.backward(_grad_arg(out, grads) if grads else noise.standard_normal(out.shape))
        problems = []
        if not integer_input:
            if _as_tuples(_shape_of(g)) != _as_tuples(_shape_of(x0)):
                problems.append(
                    f"backward returned a gradient of shape {_fmt(_shape_of(g))}, "
                    f"the input has shape {_fmt(_shape_of(x0))}"
                )
        for name, p in lay.named_parameters():
            if p.grad.shape != p.data.shape:
                problems.append(f"gradient of {name} has shape {p.grad.shape}, the parameter {p.data.shape}")
        lay.zero_grad()
        nonzero = [name for name, p in lay.named_parameters() if np.any(p.grad != 0)]
        if nonzero:
            problems.append(f"zero_grad() left non-zero gradients in {nonzero}")
        if problems:
            raise _Fail("; ".join(problems))

    _run(report, "backward", skip, backward)

    if raise_on_failure:
        report.raise_if_failed()
    return report


def _cast_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.array(v, copy=True) for k, v in state.items()}


def _allclose(a: Any, b: Any) -> bool:
    if isinstance(a, list):
        return all(_allclose(u, v) for u, v in zip(a, b))
    return bool(np.allclose(a, b, rtol=1e-10, atol=1e-12))


def _ones_like(out: Any) -> Any:
    return [np.ones_like(o) for o in out] if isinstance(out, list) else np.ones_like(out)


def _descendants(layer: Layer) -> list[Layer]:
    found = []
    for child in layer.children():
        found.append(child)
        found.extend(_descendants(child))
    return found


def _as_tuples(shape: Any) -> Any:
    if isinstance(shape, list):
        return [_as_tuples(s) for s in shape]
    return tuple(None if d is None else int(d) for d in shape)


def _fmt(shape: Any) -> str:
    from framework.base.layer import format_shape

    if isinstance(shape, list) or shape is None:
        return format_shape(shape)
    return format_shape(tuple(shape))


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
    probe = _fresh_layer(act, "float64")

    def parameter_free() -> None:
        xin = _random_input(_concrete(input_shape), np.random.default_rng(0), np.float64) if x is None else x
        out = _forward(probe, xin, "float64")
        if probe.parameters():
            raise _Fail(f"has parameters {[n for n, _ in probe.named_parameters()]}; an activation has none")
        if out.shape != xin.shape:
            raise _Fail(f"output shape {out.shape} differs from the input shape {xin.shape}")

    _run(report, "parameter_free", skip, parameter_free)

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
            raise _Fail(f"gain must be a finite number >= 0 or None, got {value!r}")
        return f"gain {value:g}"

    _run(report, "gain", skip, gain)
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
      ``dtype=None`` gives ``framework.get_default_dtype()``;
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
                raise _Fail(f"init({s}) returned {type(value).__name__}, expected a numpy.ndarray")
            if value.shape != s:
                raise _Fail(f"init({s}) returned shape {value.shape}")
            if not np.all(np.isfinite(value)):
                raise _Fail(f"init({s}) returned non-finite values")

    _run(report, "shape", skip, shape_check)

    def dtype_check() -> None:
        for name in ("float32", "float64"):
            got = draw(shapes[0], dtype=name).dtype
            if got != np.dtype(name):
                raise _Fail(f"dtype={name!r} gave {got}")
        for default in ("float64", "float32"):
            with _default_dtype(default):
                got = draw(shapes[0]).dtype
            if got != np.dtype(default):
                raise _Fail(f"dtype=None with default dtype {default} gave {got}")

    _run(report, "dtype", skip, dtype_check)

    def reproducible() -> str:
        s = shapes[0]
        if not np.array_equal(draw(s, 7), draw(s, 7)):
            raise _Fail("two calls with generators of one seed gave different values")
        if np.array_equal(draw(s, 7), draw(s, 8)):
            return "deterministic (does not draw from rng)"
        return None

    _run(report, "reproducible", skip, reproducible)

    def gain() -> str:
        s = shapes[0]
        draw(s, gain=None)
        one = draw(s, 3, gain=1.0)
        two = draw(s, 3, gain=2.0)
        if np.array_equal(one, two):
            return "ignores the gain"
        if np.allclose(two, 2.0 * one, rtol=1e-6, atol=0):
            return "scales with the gain"
        raise _Fail(
            "with one seed, gain=2 gave neither the values of gain=1 (gain ignored) nor twice them "
            f"(gain scales the distribution); max |init(gain=2) - 2 init(gain=1)| = "
            f"{_max_diff(two, 2.0 * one):.3e}"
        )

    _run(report, "gain", skip, gain)

    def config() -> None:
        _, clone = _check_config(init, "initializers")
        s = shapes[0]
        if not np.array_equal(clone(s, rng=np.random.default_rng(5)), draw(s, 5)):
            raise _Fail("the initializer rebuilt from its config draws different values")

    _run(report, "config", skip, config)
    _run(report, "registry", skip, lambda: _check_registered(init, "initializers", init.get_config()))
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
      float32 ``y_pred`` is float32;
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
            raise _Fail(f"forward returned an array of shape {out.shape}, expected a scalar float")
        if not isinstance(out, (float, np.floating)):
            raise _Fail(f"forward returned {type(out).__name__}, expected a float")
        if not math.isfinite(float(out)):
            raise _Fail(f"forward returned {out!r}")

    _run(report, "scalar", skip, scalar)

    def gradients() -> None:
        pred = y_pred.copy()
        obj.forward(pred, y_true)
        analytic = np.asarray(obj.backward(), dtype=np.float64)
        numeric = numerical_gradient(lambda: value(pred), pred)
        err = relative_error(analytic, numeric)
        if not err < tolerance:
            raise _Fail(
                f"backward() disagrees with finite differences: relative error {err:.3e} "
                f"(tolerance {tolerance:g}); ratio of norms analytic/numeric "
                f"{np.linalg.norm(analytic) / max(np.linalg.norm(numeric), 1e-300):.4g}"
            )

    _run(report, "gradients", skip, gradients)

    def gradient_shape() -> None:
        for dtype in (np.float64, np.float32):
            pred = y_pred.astype(dtype)
            obj.forward(pred, y_true)
            g = obj.backward()
            if np.shape(g) != pred.shape:
                raise _Fail(f"backward() has shape {np.shape(g)}, y_pred has {pred.shape}")
            if np.asarray(g).dtype != dtype:
                raise _Fail(f"backward() is {np.asarray(g).dtype} for {np.dtype(dtype).name} y_pred")

    _run(report, "gradient_shape", skip, gradient_shape)

    def config() -> None:
        _, clone = _check_config(obj, "losses")
        a, b = value(y_pred), float(clone.forward(y_pred, y_true))
        if a != b:
            raise _Fail(f"the loss rebuilt from its config gives {b!r}, the original {a!r}")

    _run(report, "config", skip, config)
    _run(report, "registry", skip, lambda: _check_registered(obj, "losses", obj.get_config()))
    if raise_on_failure:
        report.raise_if_failed()
    return report


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
        new = type(opt).from_config(_json_round(opt.get_config()))
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
                    raise _Fail(f"step() replaced parameter {i}'s array instead of updating it in place")
                if p.data.dtype != dtype:
                    raise _Fail(f"step() changed parameter {i} from {np.dtype(dtype).name} to {p.data.dtype}")
            if all(np.array_equal(a, b) for a, b in zip(arrays, before)):
                raise _Fail("step() with non-zero gradients left every parameter unchanged")

    _run(report, "in_place", skip, in_place)

    def decreases() -> str:
        o, params = fresh()
        f0 = objective(params)
        for _ in range(steps):
            o.zero_grad()
            set_grads(params)
            o.step()
        f1 = objective(params)
        if not f1 < f0:
            raise _Fail(f"{steps} steps took the quadratic from {f0:.6g} to {f1:.6g}")
        return f"{f0:.4g} -> {f1:.4g} in {steps} steps"

    _run(report, "decreases_quadratic", skip, decreases)

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
        diff = max(_max_diff(p.data, q.data) for p, q in zip(params, twin_params))
        if diff != 0.0:
            raise _Fail(
                f"after load_state_dict(state_dict()) the next step differs by up to {diff:.3e} "
                "(is some state not in state_dict, e.g. a step count or a moment?)"
            )

    _run(report, "state_dict", skip, state_dict)

    def zero_grad() -> None:
        o, params = fresh()
        set_grads(params)
        o.zero_grad()
        if any(np.any(p.grad != 0) for p in params):
            raise _Fail("zero_grad() left non-zero gradients")

    _run(report, "zero_grad", skip, zero_grad)
    _run(report, "config", skip, lambda: _check_config(opt, "optimizers") and None)
    _run(report, "registry", skip, lambda: _check_registered(opt, "optimizers", opt.get_config()))
    if raise_on_failure:
        report.raise_if_failed()
    return report
