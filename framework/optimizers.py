"""Registry-backed namespace of optimizers: ``from framework.optimizers import Name``.

Every optimizer a plugin registers (built-in or third party) is an attribute of
this module. ``get(identifier, **kwargs)`` resolves a name, config dict,
class or instance (see :mod:`framework.registry.namespace`).
"""

from __future__ import annotations

from framework.registry.namespace import module_functions

get, names, __getattr__, __dir__ = module_functions("optimizers", globals())
