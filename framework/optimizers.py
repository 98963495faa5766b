"""Registry-backed namespace of optimizers: ``from framework.optimizers import Name``.

Every optimizer a plugin registers (built-in or third party) is an attribute of
this module. ``get(identifier, **kwargs)`` resolves a name, config dict,
class or instance (see :mod:`framework.namespace`).
"""

from __future__ import annotations

from typing import Any

from framework.namespace import Namespace
from framework.optimizer import Optimizer  # noqa: F401

_NAMESPACE = Namespace("optimizers")


def get(identifier: Any, **kwargs: Any) -> Any:
    """Resolve a registered name, config dict, class or instance to an instance."""
    return _NAMESPACE.get(identifier, **kwargs)


def names() -> list[str]:
    """The registered optimizers, sorted."""
    return _NAMESPACE.names()


def __getattr__(name: str) -> Any:
    return _NAMESPACE.getattr(name)


def __dir__() -> list[str]:
    return _NAMESPACE.dir(globals())
