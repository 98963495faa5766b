"""``check_layer``'s ``batch_last`` check: a layer that takes part in batch-last runs computes the same.

A layer serving batch-last activations (:mod:`framework.models.layouts`: the
``channelwise`` flag, or ``batch_last_modes``) is run the way a model runs
it inside a run, for each ``(input batch-last, output batch-last)`` pair it
serves, and compared with its public-layout ``forward`` / ``backward`` on
the same input, gradient and weights, in training and in eval mode: the
output, ``dL/dx`` and every parameter gradient, to ``1e-9`` relative in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer
from framework.models import layouts
from framework.testing.report import CheckFailed

__all__ = ["batch_last_check"]

_ROLES = {(False, True): layouts.OPEN, (True, True): layouts.INSIDE, (True, False): layouts.CLOSE}


def _last(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(1, 2, 3, 0))


def _first(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(3, 0, 1, 2))


def _step(layer: Layer, x: np.ndarray, g: np.ndarray, training: bool, role: str | None) -> list[np.ndarray]:
    """Output, ``dL/dx`` and parameter gradients of one call, publicly laid out (``role`` ``None``)
    or in that part of a run, its arrays converted back to NCHW."""
    layer.zero_grad()
    ctx = Context(training)
    if role is None:
        y = layer.forward(ctx, x)
        dx = layer.backward(ctx, g)
    else:
        in_last, out_last = role != layouts.OPEN, role != layouts.CLOSE
        y = layouts.forward(layer, ctx, _last(x) if in_last else x, role)
        y = _first(y) if out_last else y
        dx = layouts.backward(layer, ctx, _last(g) if out_last else g)
        dx = _first(dx) if in_last else dx
    return [y, dx] + [p.grad.copy() for p in layer.parameters()]


def batch_last_check(layer: Layer, x: Any) -> str:
    """Compare ``layer`` (float64, built) in each part of a run it serves with its public layout.

    A layer that takes no part, or an input that is no 4-D float array, has
    nothing to compare: the check passes, saying so.

    Raises:
        CheckFailed: naming the part of the run, the mode and what differs.
    """
    served = layouts.modes(layer)
    if not served:  # nothing to compare: ok, as most layers
        return "takes no part in batch-last runs"
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype.kind != "f":
        return "batch-last runs carry 4-D float batches, not this input: nothing to compare"
    unknown = served - set(_ROLES)
    if unknown:
        raise CheckFailed(f"batch_last_modes() returned pairs other than {sorted(_ROLES)}: {sorted(unknown)}")
    x = x.astype(np.float64)
    probe = layer.forward(Context(False, record=False), x)
    g = np.random.default_rng(4).standard_normal(probe.shape)
    names = ["output", "dL/dx"] + [name for name, _ in layer.named_parameters()]
    for training in (True, False):
        mode = "training" if training else "eval"
        reference = _step(layer, x, g, training, None)
        for pair in sorted(served):
            got = _step(layer, x, g, training, _ROLES[pair])
            for name, a, b in zip(names, reference, got):
                scale = max(1.0, float(np.abs(a).max(initial=0.0)))
                if a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-9 * scale):
                    diff = (
                        "shape " + str(b.shape)
                        if a.shape != b.shape
                        else f"max |diff| {np.abs(a - b).max():.3e}"
                    )
                    raise CheckFailed(
                        f"as the '{_ROLES[pair]}' layer of a batch-last run (input batch-last {pair[0]}, "
                        f"output batch-last {pair[1]}), in {mode} mode, its {name} differs from the public "
                        f"layout's ({diff}); see docs/plugins.md, Batch-last activations"
                    )
    return f"{len(served)} part(s) of a run, training and eval mode"
