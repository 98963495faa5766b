"""``check_layer``: every check a layer must pass, reported together.

A plugin's own tests call it::

    from framework.testing import check_layer
    from my_plugin import Scale

    def test_scale_conforms():
        check_layer(Scale(), (4, 5))

Layers of several inputs (a list of shapes) and of several outputs (a tuple
or list of arrays, possibly nested like ``LSTM``'s ``(output, (h_n, c_n))``,
whose ``backward`` takes the gradients in that same structure) are checked
like any other.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from framework.base.calling import takes_context
from framework.base.layer import Layer
from framework.runtime.random import thread_rng
from framework.testing import _contract
from framework.testing import _structure as st
from framework.testing._checkpoint import checkpoint_round_trip
from framework.testing._common import (
    attribute_differences,
    backward_by_hand,
    check_config,
    check_registered,
    default_dtype,
    forward,
    forward_by_hand,
    fresh_layer,
    plain_attributes,
)
from framework.testing._layout import batch_last_check
from framework.testing.gradients import check_gradients
from framework.testing.report import CheckFailed, ConformanceReport, run_check

__all__ = ["check_layer"]


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
      (:func:`~framework.testing.gradients.check_gradients`: entry by entry,
      or along random directions through every entry of a large array) for
      the input and every parameter, on a copy rebuilt from the config in
      float64, relative error below ``tolerance``. It runs in training mode, and in eval mode as
      well (BatchNorm's two paths); a layer that is stochastic in training (two
      forwards on one input differ, like Dropout) is checked in training mode
      with a fixed random stream when it draws from the framework's generator
      (``framework.runtime.random.get_rng``), else in eval mode only.
    - ``output_shape``: ``layer.output_shape(shape)`` equals the real output
      shape, for the batch axis ``None`` (which must stay ``None``) and for
      the concrete batch size. A layer of several outputs returns one shape
      per output, nested like its output or as a flat list; with the batch
      axis ``None``, an output axis may be ``None`` only where the real size
      is the batch size.
    - ``config``: ``get_config()`` is JSON data,
      ``type(layer).from_config(config)`` rebuilds a layer with an equal
      config and equal public attributes (numbers, strings, tuples), and,
      given the same weights, the rebuilt layer computes the same outputs
      (eval mode), and the same outputs, gradients and state after a call in
      training mode (unless the layer is stochastic in training).
    - ``registry``: the class is registered (``framework.layers``) and
      ``framework.layers.get({"class_name": name, "config": config})`` builds it.
    - ``checkpoint``: in a ``Sequential``, saving to HDF5 and loading gives
      equal outputs in eval mode (skipped, with a note, for layers of several
      outputs or when the model API cannot be imported).
    - ``train_eval``: ``train()`` / ``eval()`` set ``training`` on the layer
      and its children, and two eval-mode forwards are equal.
    - ``dtype_<name>``: a layer built in that dtype keeps it: parameters,
      every output, input gradient and parameter gradients are all ``<name>``;
      and (for a dtype other than float64) they agree with the same call of a
      float64 copy of the layer to ``1000 * eps`` relative (so a backward
      wrong only in float32 fails).
    - ``backward``: the returned gradient has the input's shape, every
      parameter gradient its parameter's shape, and ``zero_grad()`` zeros
      them all.
    - ``arrays``: forward does not write into its input, backward does not
      write into ``grad_out`` (``ctx.grad_out_writable`` is ``False`` by hand)
      nor into the input, and a class declaring ``returns_fresh_grad``
      returns an array it does not keep (docs/plugins.md).
    - ``context``: per-call state lives on ``ctx``: with two calls in flight
      (forward A, forward B, backward A: a shared layer, two threads) call A
      gets what it gets alone, and ``ctx.training`` (not the layer's flag)
      decides a call's mode. A layer in the older form ``forward(x)`` passes
      when its adapter refuses the second call in flight with a ``ConfigError``.
    - ``batch_last``: a layer that takes part in batch-last runs
      (``channelwise``, ``batch_last_modes``; docs/plugins.md) computes, in
      each part of a run it serves, what its public-layout calls compute.
    - ``parameters``: every ``Parameter`` and ``Buffer`` the layer holds (also
      in dicts or nested containers) is found by ``parameters()`` /
      ``buffers()``, so the optimizer steps it and checkpoints save it.

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
            ``"activations"`` for :func:`~framework.testing.kinds.check_activation`).
        prepare: called on every copy of the layer the kit makes (and on the
            layer loaded from the checkpoint) before its first forward, to set
            state that is deliberately not in the config, such as a graph
            convolution's adjacency: ``prepare=lambda l: l.set_graph(A)``.
        raise_on_failure: raise :class:`~framework.testing.report.ConformanceError`
            when a check failed (default); otherwise only return the report.

    Returns:
        The :class:`~framework.testing.report.ConformanceReport`.

    Raises:
        ConformanceError: whose message names the layer and lists every failed
            check with its details.
    """
    skip = set(skip)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(0 if rng is None else rng)
    shape = st.concrete(input_shape)
    label = f"{layer.describe()} ({type(layer).__module__}.{type(layer).__qualname__})"
    report = ConformanceReport(label)
    x0 = st.random_input(shape, rng, np.float64) if x is None else st.map_leaves(np.copy, x)
    integer_input = not isinstance(x0, list) and not np.issubdtype(np.asarray(x0).dtype, np.floating)

    probe = run_check(
        report, "forward", skip, lambda: forward(fresh_layer(layer, "float64", prepare), x0, "float64")
    )
    if probe is None and "forward" not in skip:
        if raise_on_failure:
            report.raise_if_failed()
        return report

    def gradients() -> str:
        layer64 = fresh_layer(layer, "float64", prepare)
        first = forward(layer64, x0, "float64")
        stochastic = not st.equal(first, forward_by_hand(layer64, x0))
        # randomness drawn from the framework's generator repeats when each forward gets a fresh one
        stream = 7 if stochastic and st.equal(*(_with_stream(layer64, x0) for _ in range(2))) else None
        modes = ["eval"] if stochastic and stream is None else ["train", "eval"]
        problems, unexercised = [], set()
        for mode in modes:
            layer64.train(mode == "train")
            result = check_gradients(
                layer64,
                x0,
                tolerance=tolerance,
                check_input=not integer_input,
                raise_on_failure=False,
                random_stream=stream,
            )
            unexercised |= set(result.unexercised)
            if not result.ok:
                problems.append(f"in {mode} mode:\n{result}")
        if problems:
            raise CheckFailed("backward disagrees with finite differences " + "\n".join(problems))
        done = "train and eval mode"
        if stochastic:
            done = (
                "stochastic in training: checked in eval mode"
                if stream is None
                else "train mode (one fixed random stream per forward) and eval mode"
            )
        if unexercised:
            done += f"; zero gradient for this input, so not really checked: {', '.join(sorted(unexercised))}"
        return done

    run_check(report, "gradients", skip, gradients)

    def output_shape() -> None:
        layer32 = fresh_layer(layer, "float32", prepare)
        out = forward(layer32, st.cast(x0, np.float32), "float32")
        batch = shape[0][0] if isinstance(shape, list) else shape[0]
        for given, symbolic in ((st.with_none_batch(shape), True), (shape, False)):
            claimed = layer32.output_shape(given)
            problem = st.shape_claim_problem(claimed, out, batch, symbolic)
            if problem:
                raise CheckFailed(f"output_shape({st.fmt(given)}) returned {st.fmt(claimed)}, {problem}")

    run_check(report, "output_shape", skip, output_shape)

    def built_copy() -> Layer:
        """A float64 deep copy of ``layer``, built (the caller's layer is left as it is)."""
        with default_dtype("float64"):
            lay = copy.deepcopy(layer)
            lay.astype(np.float64)
            if prepare is not None:
                prepare(lay)
            if not lay.built:
                forward_by_hand(lay, x0)
        return lay

    def config() -> None:
        original = built_copy()
        with default_dtype("float64"):
            config, clone = check_config(original, kind)
            if prepare is not None:
                prepare(clone)
            before = plain_attributes(clone)
            forward(clone, x0, "float64")
            # what a call creates or changes (a batch counter) is state, not a constructor argument
            state = {k for k, v in plain_attributes(clone).items() if k not in before or before[k] != v}
            clone.load_state_dict({k: np.array(v, copy=True) for k, v in original.state_dict().items()})
            attributes = attribute_differences(original, clone, ignore=state)
            if attributes:
                raise CheckFailed(
                    "a layer rebuilt with from_config(get_config()) differs in its attributes: "
                    f"{'; '.join(attributes)} (config {config!r}); a constructor argument is not "
                    "written by get_config()"
                )
            in_training = _contract.call_differences(original, clone, x0, np.random.default_rng(2))
            original.eval()
            clone.eval()
            a, b = forward_by_hand(original, x0), forward_by_hand(clone, x0)
        if not st.allclose(a, b) or in_training:
            what = (
                "output in eval mode"
                if not st.allclose(a, b)
                else f"in training mode: {'; '.join(in_training)}"
            )
            raise CheckFailed(
                "a layer rebuilt with from_config(get_config()) and given the same weights computes "
                f"a different {what} (config {config!r}); a constructor argument is "
                "probably not stored in get_config(), or state is kept outside Parameter/Buffer"
            )

    run_check(report, "config", skip, config)
    run_check(report, "registry", skip, lambda: check_registered(layer, kind, built_copy().get_config()))
    run_check(
        report,
        "checkpoint",
        skip,
        lambda: checkpoint_round_trip(layer, shape, x0, prepare, st.is_nested(probe)),
    )

    def train_eval() -> None:
        lay = fresh_layer(layer, "float32", prepare)
        xin = st.cast(x0, np.float32)
        forward(lay, xin, "float32")
        everything = [lay, *_descendants(lay)]
        lay.eval()
        wrong = [c.describe() for c in everything if c.training]
        if wrong:
            raise CheckFailed(f"eval() left training=True on {wrong}")
        a, b = forward_by_hand(lay, xin), forward_by_hand(lay, xin)
        if not st.equal(a, b):
            raise CheckFailed(f"two eval-mode forwards differ (max |diff| {st.max_diff(a, b):.3e})")
        lay.train()
        wrong = [c.describe() for c in everything if not c.training]
        if wrong:
            raise CheckFailed(f"train() left training=False on {wrong}")

    run_check(report, "train_eval", skip, train_eval)
    run_check(report, "batch_last", skip, lambda: batch_last_check(built_copy(), x0))

    for dtype_name in check_dtypes:
        dtype = np.dtype(dtype_name)

        def dtypes(dtype: np.dtype = dtype) -> None:
            lay = fresh_layer(layer, dtype, prepare)
            out = forward(lay, st.cast(x0, dtype), dtype)
            problems = []
            for i, o in enumerate(st.leaves(out)):
                if np.asarray(o).dtype != dtype:
                    which = f"output {i}" if st.is_nested(out) else "output"
                    problems.append(f"{which} is {np.asarray(o).dtype}")
            for name, p in lay.named_parameters():
                if p.data.dtype != dtype:
                    problems.append(f"parameter {name} is {p.data.dtype}")
            lay.zero_grad()
            g = backward_by_hand(lay, st.map_leaves(np.ones_like, out))
            if not integer_input:
                for gi in g if isinstance(g, list) else [g]:
                    if getattr(gi, "dtype", None) != dtype:
                        problems.append(f"input gradient is {getattr(gi, 'dtype', type(gi).__name__)}")
            for name, p in lay.named_parameters():
                if p.grad.dtype != dtype:
                    problems.append(f"gradient of {name} is {p.grad.dtype}")
            if problems:
                raise CheckFailed(f"built in {dtype.name} with {dtype.name} input: " + "; ".join(problems))
            if dtype != np.float64 and np.issubdtype(dtype, np.floating):
                far = _contract.precision_problems(lay, x0, dtype, np.random.default_rng(3))
                if far:
                    raise CheckFailed(
                        f"built in {dtype.name}, the layer computes values far from the same layer in "
                        f"float64 (same weights, input and grad_out): {'; '.join(far)}; is a "
                        f"{dtype.name} code path of forward or backward wrong?"
                    )

        run_check(report, f"dtype_{dtype.name}", skip, dtypes)

    def backward() -> None:
        lay = fresh_layer(layer, "float64", prepare)
        out = forward(lay, x0, "float64")
        lay.zero_grad()
        noise = np.random.default_rng(1)
        g = backward_by_hand(lay, st.map_leaves(lambda o: noise.standard_normal(np.shape(o)), out))
        problems = []
        if not integer_input and st.shape_leaves(st.shapes_of(g)) != st.shape_leaves(st.shapes_of(x0)):
            problems.append(
                f"backward returned a gradient of shape {st.fmt(st.shapes_of(g))}, "
                f"the input has shape {st.fmt(st.shapes_of(x0))}"
            )
        for name, p in lay.named_parameters():
            if p.grad.shape != p.data.shape:
                problems.append(f"gradient of {name} has shape {p.grad.shape}, the parameter {p.data.shape}")
        lay.zero_grad()
        nonzero = [name for name, p in lay.named_parameters() if np.any(p.grad != 0)]
        if nonzero:
            problems.append(f"zero_grad() left non-zero gradients in {nonzero}")
        if problems:
            raise CheckFailed("; ".join(problems))

    run_check(report, "backward", skip, backward)

    def built64() -> tuple[Layer, bool]:
        """A fresh float64 copy, built, and whether it is stochastic in training mode."""
        lay = fresh_layer(layer, "float64", prepare)
        first = forward(lay, x0, "float64")
        return lay, not st.equal(first, forward(lay, x0, "float64"))

    def arrays() -> None:
        problems = _contract.arrays_problems(built64()[0], x0, np.random.default_rng(4))
        if problems:
            raise CheckFailed("; ".join(problems))

    run_check(report, "arrays", skip, arrays)

    def context() -> str | None:
        lay, stochastic = built64()
        with default_dtype("float64"):
            problem = _contract.context_problem(lay, x0, stochastic, np.random.default_rng(5))
        if problem:
            raise CheckFailed(problem)
        if not takes_context(layer):
            return "older form forward(x): its adapter refuses a second call in flight"
        return None

    run_check(report, "context", skip, context)

    def parameters() -> None:
        problems = _contract.undiscovered(built64()[0])
        if problems:
            raise CheckFailed(
                "; ".join(problems) + ": parameters() finds Parameters and Buffers assigned as attributes "
                "or in lists of them; the optimizer never steps the others and checkpoints never save them "
                "(assign each as an attribute, or override parameters() / named_parameters())"
            )

    run_check(report, "parameters", skip, parameters)

    if raise_on_failure:
        report.raise_if_failed()
    return report


def _with_stream(layer: Layer, x: Any) -> Any:
    """``layer``'s output with the framework's generator replaced by a fresh one of a fixed seed."""
    with thread_rng(np.random.default_rng(7)), default_dtype("float64"):
        return forward_by_hand(layer, x)


def _descendants(layer: Layer) -> list[Layer]:
    found = []
    for child in layer.children():
        found.append(child)
        found.extend(_descendants(child))
    return found
