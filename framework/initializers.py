"""Registry-backed namespace of initializers: ``from framework.initializers import Name``.

Every initializer a plugin registers (built-in or third party) is an attribute of
this module. ``get(identifier, **kwargs)`` resolves a name, config dict,
class or instance (see :mod:`framework.registry.namespace`).
"""

from __future__ import annotations

from framework.base.initializer import Initializer, calculate_gain, compute_fans  # noqa: F401
from framework.registry.namespace import module_functions

get, names, __getattr__, __dir__ = module_functions("initializers", globals())
