"""Where a model's training step goes: each layer's forward and backward, timed inside ``fit``.

``python -m benchmarks.layer_times fashion_cnn [--layouts never auto] [--epochs 5] [--threads 2]``
builds the model of :mod:`benchmarks.cases_models` (``mlp``, ``lenet``,
``lenet_bn``, ``fashion_cnn``) once per batch-last mode
(:func:`framework.models.layouts.using`; ``never`` is the public layout),
runs one epoch of ``fit`` each to warm up, then ``--epochs`` epochs of each
in turn, with every layer's ``forward`` and ``backward`` (or their
batch-last forms, marked ``*``) wrapped by a timer. Prints, per mode, the
median ms per step of the whole epoch and each layer's ms per step (the sum
over the epochs divided by their steps), and what ``fit`` spends outside the
layers (loss, optimizer, batching). The timers add about 1 us per call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

METHODS = ("forward", "backward", "forward_batch_last", "backward_batch_last")


def _timed(layer: Any, label: str, times: dict[str, float]) -> None:
    """Wrap ``layer``'s methods (on the instance) so each call adds its seconds to ``times``."""
    for method in METHODS:
        bound = getattr(layer, method, None)
        if bound is None:
            continue
        key = f"{label} {method.replace('_batch_last', '*')}"

        def wrapper(*args: Any, _call: Callable[..., Any] = bound, _key: str = key, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _call(*args, **kwargs)
            finally:
                times[_key] = times.get(_key, 0.0) + time.perf_counter() - start

        setattr(layer, method, wrapper)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="mlp, lenet, lenet_bn or fashion_cnn")
    modes = ["never", "auto", "always"]
    parser.add_argument("--layouts", nargs="+", default=modes[:2], choices=modes)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the cases' small data sets (a smoke run)")
    args = parser.parse_args(argv)
    from benchmarks.cases_models import MODELS, _data, build_ours
    from benchmarks.harness import limit_threads

    limit_threads("ours", args.threads)  # the BLAS pinned, as the harness's workers pin it
    from framework.models import layouts
    from framework.training.loop import keep_freed_memory

    if args.model not in MODELS:
        parser.error(f"unknown model {args.model!r}: one of {', '.join(MODELS)}")
    keep_freed_memory()
    x, y, batch = _data(args.model, args.quick)
    steps = max(1, len(x) // batch)
    nets, times, epochs = {}, {}, {}
    for mode in args.layouts:
        nets[mode] = build_ours(args.model)
        with layouts.using(mode):
            nets[mode].fit(x, y, epochs=1, batch_size=batch, shuffle=False, verbose=0)  # build, warm up
        times[mode], epochs[mode] = {}, []
        for i, layer in enumerate(nets[mode].layers):
            _timed(layer, f"{i:2d} {type(layer).__name__}", times[mode])
    for _ in range(args.epochs):
        for mode, net in nets.items():
            with layouts.using(mode):
                start = time.perf_counter()
                net.fit(x, y, epochs=1, batch_size=batch, shuffle=False, verbose=0)
                epochs[mode].append((time.perf_counter() - start) * 1e3 / steps)
    per_step = args.epochs * steps
    print(f"{args.model}: ms per step, {args.epochs} epochs of {steps} steps, {args.threads} threads")
    for mode in nets:
        layers = sum(times[mode].values()) * 1e3 / per_step
        step = statistics.median(epochs[mode])
        print(f"layouts {mode!r}: {step:.2f} ms a step (median; min {min(epochs[mode]):.2f})")
        for key in sorted(times[mode]):
            print(f"  {key:<36} {times[mode][key] * 1e3 / per_step:7.3f}")
        print(f"  {'outside the layers':<36} {statistics.mean(epochs[mode]) - layers:7.3f}")


if __name__ == "__main__":
    main()
