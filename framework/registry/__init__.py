"""The plugin registry: the pluggy hook specifications, the one ``Registry``
that loads the ``framework`` entry points, and the registry-backed namespaces
(``framework.layers`` and its siblings) built on it.
"""

from framework.registry.manager import REGISTRY, Registry

__all__ = ["REGISTRY", "Registry"]
