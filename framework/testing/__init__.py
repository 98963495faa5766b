"""The conformance kit for plugin authors: gradient checks and whole-object checks.

- ``check_gradients(layer, x)`` compares a layer's hand-written ``backward``
  against central finite differences of ``L = sum(forward(x) * R)`` for a fixed
  random ``R``, for the input and for every parameter, in float64 (entry by
  entry for a small array, along random directions through every entry for a
  larger one).
- ``check_layer(layer, input_shape)`` runs every check a layer must pass
  (gradients, ``output_shape``, config and registry round trips, checkpoint
  round trip, train / eval, float32 and float64, backward shapes and
  ``zero_grad``, read-only arrays, per-call state on ``ctx``, parameter
  discovery) and raises ONE :class:`ConformanceError` listing every failed
  check with its details. Layers of several inputs and of several (nested)
  outputs, such as ``LSTM``'s ``(output, (h_n, c_n))``, are handled.
- ``check_activation``, ``check_initializer``, ``check_loss`` and
  ``check_optimizer`` do the same for the other pluggable kinds.

A plugin's own tests call them::

    from framework.testing import check_layer
    from my_plugin import Scale

    def test_scale_conforms():
        check_layer(Scale(), (4, 5))

The modules, one concern each (every public name is importable from here):

- :mod:`framework.testing.report`: :class:`ConformanceError`,
  :class:`CheckResult`, :class:`ConformanceReport`;
- :mod:`framework.testing.gradients`: :func:`numerical_gradient`,
  :func:`relative_error`, :class:`GradientReport`, :func:`check_gradients`;
- :mod:`framework.testing.layers`: :func:`check_layer`;
- :mod:`framework.testing.kinds`: :func:`check_activation`,
  :func:`check_initializer`, :func:`check_loss`;
- :mod:`framework.testing.optimizers`: :func:`check_optimizer`.
"""

from __future__ import annotations

from framework.testing.gradients import GradientReport, check_gradients, numerical_gradient, relative_error
from framework.testing.kinds import check_activation, check_initializer, check_loss
from framework.testing.layers import check_layer
from framework.testing.optimizers import check_optimizer
from framework.testing.report import CheckResult, ConformanceError, ConformanceReport

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
