"""Every built-in layer gives on a batch's shards, joined, what it gives on the batch.

That is what ``fit(threads=K)`` relies on: it cuts each batch along axis 0.
The layers come from both conformance tables of ``test_builtins_conformance``,
run in inference mode. The exceptions are the ones ``Replicas`` must refuse
(:func:`_refused`: recurrent layers reading axis 0 as time, or returning
their final states batch-second) and the full-batch graph layers, which
``fit`` refuses before cutting anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from framework import layers
from framework.base.context import Context
from framework.errors import ConfigError
from framework.registry.manager import REGISTRY
from framework.training.replicas import Replicas
from tests.test_builtins_conformance import DEFAULTS, LAYERS, Spec

RECURRENT = {"RNN", "LSTM", "GRU"}


def _refused(name: str, spec: Spec) -> bool:
    """Whether Replicas must refuse the layer: axis 0 is time, or an output is not batch-first.

    A recurrent layer reads ``(L, N, F)`` unless ``batch_first``; with
    ``output="both"`` (the default) it also returns its final states as
    ``(D*num_layers, N, H)``, batch on axis 1.
    """
    if name not in RECURRENT:
        return False
    return not spec.kwargs.get("batch_first", False) or spec.kwargs.get("output", "both") == "both"


def _cases() -> list[Any]:
    cases = []
    tables: list[tuple[str, dict[str, Any]]] = [("variants", LAYERS), ("defaults", DEFAULTS)]
    for table, specs_by_name in tables:
        for name, specs in sorted(specs_by_name.items()):
            for i, spec in enumerate(specs if isinstance(specs, list) else [specs]):
                single = isinstance(spec.shape, tuple) and spec.prepare is None and spec.shape[0] >= 2
                if single and not spec.known_failure:
                    cases.append(pytest.param(name, table, spec, id=f"{name}-{table}-{i}"))
    return cases


@pytest.mark.parametrize(("name", "table", "spec"), _cases())
def test_shards_joined_are_the_batch(float64, name: str, table: str, spec: Spec) -> None:
    if not REGISTRY.contains("layers", name):
        pytest.skip(f"{name} is not registered")
    layer = layers.get(name, **spec.kwargs)
    if getattr(layer, "needs_full_batch", False):
        pytest.skip("a full-batch layer: fit(threads=K) refuses it before cutting")
    x = spec.x if spec.x is not None else np.random.default_rng(0).standard_normal(spec.shape)
    whole = layer.forward(Context(False, record=False), x)  # builds a deferred layer
    with Replicas(layer, threads=2) as run:
        if _refused(name, spec):
            with pytest.raises(ConfigError, match="mixes the samples of axis 0"):
                run.forward(Context(False, record=False), x)
            return
        joined = run.forward(Context(False, record=False), x)
    several = isinstance(whole, (list, tuple))
    for mine, theirs in zip(joined if several else [joined], whole if several else [whole]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-12)
