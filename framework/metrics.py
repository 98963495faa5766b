"""Registry-backed namespace of metrics: ``from framework.metrics import Name``.

Every metric a plugin registers (built-in or third party) is an attribute of
this module. ``get(identifier, **kwargs)`` resolves a name, config dict,
class or instance (see :mod:`framework.registry.namespace`).
"""

from __future__ import annotations

from framework.base.metric import Metric  # noqa: F401
from framework.registry.namespace import module_functions

get, names, __getattr__, __dir__ = module_functions("metrics", globals())
