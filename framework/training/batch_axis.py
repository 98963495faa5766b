"""Whether axis 0 of the data is the model's batch axis, before ``fit``, ``evaluate`` or ``predict`` cut it.

The loops cut axis 0 of array data into batches (and ``fit`` shuffles it),
as Keras does. A model holding a sequence-first layer (``batch_first=False``,
PyTorch's default for the recurrent layers and attention) fed ``(L, N, ...)``
data reads axis 0 as time: cutting it splits every sequence into pieces and
shuffling reorders its steps, a wrong answer with no error. The same layer fed
``(N, L, ...)`` data mixes the samples instead. Either way the model's outputs
for a few rows together are not its outputs for those rows one part at a
time, which :func:`check_batch_axis` measures once, in inference mode, for
models that hold such a layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from framework.base.context import Context
from framework.errors import ConfigError

if TYPE_CHECKING:
    from framework.models.model import Model
    from framework.training.data import ArrayData

__all__ = ["check_batch_axis", "mismatch", "rows"]

#: (rtol, atol relative to the output's largest value) per float size in bytes; for the order of
#: sums, not for samples mixed
TOLERANCE = {2: (5e-2, 5e-3), 4: (1e-3, 1e-5), 8: (1e-9, 1e-12)}
#: the rows the check runs the model on
_PROBE = 8


def rows(x: Any, start: int, stop: int) -> Any:
    """Samples ``start:stop`` of an array, or of each array of a list, tuple or dict."""
    if isinstance(x, dict):
        return {key: value[start:stop] for key, value in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(value[start:stop] for value in x)
    return x[start:stop]


def mismatch(whole: np.ndarray, parts: list[np.ndarray]) -> str | None:
    """Why ``parts`` joined on axis 0 are not ``whole``; ``None`` when they are, to the dtype's rounding."""
    shapes_differ = whole.ndim == 0 or any(p.ndim == 0 or p.shape[1:] != whole.shape[1:] for p in parts)
    if shapes_differ or sum(len(p) for p in parts) != len(whole):
        return f"shape {whole.shape}, the parts' {', '.join(str(p.shape) for p in parts)}"
    joined = np.concatenate(parts)
    if not np.issubdtype(whole.dtype, np.inexact):
        return None if np.array_equal(joined, whole) else "they differ"
    finite = np.abs(whole[np.isfinite(whole)])
    scale = max(1.0, float(finite.max(initial=0.0)))
    rtol, atol = TOLERANCE.get(np.finfo(whole.dtype).bits // 8, TOLERANCE[8])
    if np.allclose(joined, whole, rtol=rtol, atol=atol * scale, equal_nan=True):
        return None
    gap = np.nanmax(np.abs(joined.astype(np.float64) - whole))
    return f"they differ by up to {gap:.3g}"


def sequence_first_layers(model: Model) -> list[Any]:
    """The layers under ``model`` built with ``batch_first=False``."""
    return [m for m in model.modules() if getattr(m, "batch_first", True) is False]


def check_batch_axis(owner: str, model: Model, data: ArrayData, batch_size: int, shuffle: bool) -> None:
    """Refuse to cut or shuffle axis 0 of ``data`` when it is not the model's batch axis.

    Runs only when the loop will cut (``batch_size`` below the sample count) or
    shuffle, and the model holds a ``batch_first=False`` layer: the model's
    outputs for the first rows (up to 8) must be its outputs for their two
    halves joined.

    Raises:
        ConfigError: naming the sequence-first layers, the data's shape and what
            to pass instead.
    """
    n = data.n
    if n < 2 or data.lazy or (batch_size >= n and not shuffle):
        return
    suspects = sequence_first_layers(model)
    if not suspects:
        return
    from framework.training.trainer import layers_in_mode

    x = data.xs if data.multi_x else data.xs[0]
    k = min(n, _PROBE)
    x = model.cast_inputs(rows(x, 0, k))

    def infer(part: Any) -> list[np.ndarray]:
        out = model.forward(Context(False, record=False), part)
        return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]

    with layers_in_mode(model, False):
        whole = infer(x)
        halves = [infer(rows(x, 0, k // 2)), infer(rows(x, k // 2, k))]
    for index, one in enumerate(whole):
        problem = mismatch(one, [h[index] for h in halves])
        if problem is None:
            continue
        names = ", ".join(s.describe() for s in suspects[:3])
        shape = tuple(np.shape(data.xs[0]))
        cut = f"cut into batches of {batch_size}" if batch_size < n else "shuffled"
        raise ConfigError(
            f"{owner}: axis 0 of the data (shape {shape}) is {cut}, but it is not the batch axis of "
            f"{model.describe()}: its output {index} for {k} rows is not its outputs for two halves joined "
            f"({problem}). {names} has batch_first=False, so it reads axis 0 of its input as time. Build "
            f"it with batch_first=True and pass (N, L, ...) data, or pass batch_size={n} (and "
            "shuffle=False to fit) so that nothing is cut"
        )
