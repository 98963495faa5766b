"""Registry-backed namespace of activations: ``from framework.activations import Name``.

Every activation a plugin registers (built-in or third party) is an attribute of
this module. ``get(identifier, **kwargs)`` resolves a name, config dict,
class or instance (see :mod:`framework.registry.namespace`).
"""

from __future__ import annotations

from framework.base.layer import Layer  # noqa: F401
from framework.registry.namespace import module_functions

get, names, __getattr__, __dir__ = module_functions("activations", globals())
