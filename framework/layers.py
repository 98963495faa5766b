"""Registry-backed namespace of layers: ``from framework.layers import Name``.

Every layer a plugin registers (built-in or third party) is an attribute of
this module. ``get(identifier, **kwargs)`` resolves a name, config dict,
class or instance (see :mod:`framework.registry.namespace`).
"""

from __future__ import annotations

from framework.base.layer import Layer  # noqa: F401  (the base class, for subclassing)
from framework.registry.namespace import module_functions

get, names, __getattr__, __dir__ = module_functions("layers", globals())
