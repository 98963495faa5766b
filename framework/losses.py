"""Registry-backed namespace of losses: ``from framework.losses import Name``.

Every loss a plugin registers (built-in or third party) is an attribute of
this module. ``get(identifier, **kwargs)`` resolves a name, config dict,
class or instance (see :mod:`framework.registry.namespace`).
"""

from __future__ import annotations

from framework.base.loss import Loss  # noqa: F401
from framework.registry.namespace import module_functions

get, names, __getattr__, __dir__ = module_functions("losses", globals())
