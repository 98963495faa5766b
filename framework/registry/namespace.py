"""Registry-backed namespaces and the name / class / instance resolution rules.

``framework.layers``, ``framework.activations``, ``framework.initializers``,
``framework.losses``, ``framework.optimizers`` and ``framework.metrics`` are
thin modules whose attributes are looked up in the registry, so
``from framework.layers import Linear`` finds a built-in or a third party's
layer alike. Each has a ``get(identifier, **kwargs)``:

- ``None`` -> ``None``;
- a registered name (``"relu"``, ``"KaimingUniform"``) -> an instance of the
  registered class, built with ``kwargs``;
- a ``{"class_name": ..., "config": {...}}`` dict -> the class rebuilt from its
  config (what :func:`serialize` writes);
- a class -> an instance built with ``kwargs``;
- for metrics, a plain function ``fn(y_true, y_pred)`` (a callable without
  ``result``) -> a :class:`~framework.base.metric.FunctionMetric` named by
  ``fn.__name__``; for losses, a plain function -> ConfigError (a loss needs a
  ``backward``);
- anything else (an instance) -> returned unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from framework.errors import ConfigError
from framework.registry.manager import _SINGULAR, REGISTRY

__all__ = [
    "Namespace",
    "custom_object",
    "custom_object_scope",
    "lookup",
    "module_functions",
    "resolve",
    "serialize",
]

_CUSTOM: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "framework_custom_objects", default=None
)


def _key(name: str) -> str:
    return name.replace("_", "").lower()


@contextlib.contextmanager
def custom_object_scope(objects: dict[str, Any] | None) -> Iterator[None]:
    """Make ``objects`` (name -> class or function) resolvable by name inside the block.

    What ``load_model(path, custom_objects=...)`` uses for classes that are not
    published as plugins (Keras's ``custom_objects``). A name given here wins
    over a registered one; the scope is per thread and per task.
    """
    if objects is None:
        yield
        return
    if not isinstance(objects, dict) or not all(isinstance(k, str) for k in objects):
        raise ConfigError(
            f"custom_objects must be a dict of name -> class or function, got {type(objects).__name__}"
        )
    token = _CUSTOM.set({**(_CUSTOM.get() or {}), **{_key(k): v for k, v in objects.items()}})
    try:
        yield
    finally:
        _CUSTOM.reset(token)


def custom_object(name: str) -> Any:
    """What the ``custom_objects`` in scope give for ``name`` (case and ``_`` ignored), or ``None``."""
    return (_CUSTOM.get() or {}).get(_key(name))


#: ``kind -> class`` wrapping a plain function given where an object is expected
#: (``framework.base.metric`` registers ``FunctionMetric`` for metrics), so the
#: registry needs no import of the base classes.
FUNCTION_WRAPPERS: dict[str, Any] = {}


def lookup(kind: str, name: str) -> Any:
    """The class or function ``name`` resolves to: ``custom_objects`` in scope first, then the registry.

    Raises:
        UnknownNameError: naming the kind and the name.
    """
    return _lookup(kind, name)


def _lookup(kind: str, name: str) -> Any:
    custom = _CUSTOM.get()
    if custom:
        found = custom.get(_key(name))
        if found is not None:
            return found
    return REGISTRY.get(kind, name)


def resolve(kind: str, identifier: Any, **kwargs: Any) -> Any:
    """Turn a name, config dict, class or instance into an instance of ``kind``."""
    if identifier is None:
        return None
    if isinstance(identifier, str):
        found = _lookup(kind, identifier)
        if kind in ("metrics", "losses") and callable(found) and not isinstance(found, type):
            plain = _plain_function(kind, found, kwargs)  # a custom_objects function: as if passed itself
            if plain is not None:
                return plain
        return _instantiate(kind, found, kwargs, identifier)
    if isinstance(identifier, dict):
        if "class_name" not in identifier:
            raise ConfigError(
                f"a {_SINGULAR[kind]} config must be a dict with 'class_name' and "
                f"'config', got keys {sorted(identifier)}"
            )
        config = identifier.get("config") or {}
        if not isinstance(config, dict):
            raise ConfigError(
                f"{_SINGULAR[kind]} {identifier['class_name']!r}: config must be a dict of the "
                f"constructor's arguments, got {type(config).__name__} {config!r}"
            )
        config = dict(config)
        cls = _lookup(kind, identifier["class_name"])
        if hasattr(cls, "from_config"):
            return cls.from_config({**config, **kwargs})
        return _instantiate(kind, cls, {**config, **kwargs}, identifier["class_name"])
    if isinstance(identifier, type):
        return _instantiate(kind, identifier, kwargs, identifier.__name__)
    if kind in ("metrics", "losses") and callable(identifier):
        plain = _plain_function(kind, identifier, kwargs)
        if plain is not None:
            return plain
    if kwargs:
        raise ConfigError(
            f"{_SINGULAR[kind]} {identifier!r} is already an instance; "
            f"arguments {sorted(kwargs)} cannot be applied to it"
        )
    return identifier


def _plain_function(kind: str, fn: Any, kwargs: dict[str, Any]) -> Any:
    """A plain function given as a metric (wrapped) or as a loss (refused); ``None`` for an object."""
    if kind == "metrics":
        if hasattr(fn, "result"):
            return None
        wrapper = FUNCTION_WRAPPERS.get(kind)
        if wrapper is None:  # pragma: no cover - framework.base.metric registers it on import
            raise ConfigError(f"metric {fn!r}: plain functions are wrapped by framework.base.metric")
        return _instantiate(kind, wrapper, {"fn": fn, **kwargs}, getattr(fn, "__name__", repr(fn)))
    if hasattr(fn, "backward"):
        return None
    label = getattr(fn, "__name__", type(fn).__name__)
    raise ConfigError(
        f"loss {label!r} is a plain function, but a loss needs a backward: the framework has no autograd, "
        "so a loss is an object with forward(y_pred, y_true) -> float and backward() -> dL/dy_pred. "
        "Subclass framework.Loss and implement "
        "both, or use a registered loss name such as 'mse' or 'binary_crossentropy'"
    )


def _instantiate(kind: str, obj: Any, kwargs: dict[str, Any], label: str) -> Any:
    if not isinstance(obj, type):
        if kwargs:
            raise ConfigError(f"{_SINGULAR[kind]} {label!r} takes no arguments, got {sorted(kwargs)}")
        return obj
    try:
        return obj(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"cannot build {_SINGULAR[kind]} {label!r} from {kwargs}: {exc}") from exc


def serialize(kind: str, obj: Any) -> Any:
    """Plain JSON data that :func:`resolve` turns back into ``obj``.

    An object whose config is empty becomes its registered name (``"relu"``);
    otherwise ``{"class_name": name, "config": obj.get_config()}``.
    """
    if obj is None:
        return None
    name = REGISTRY.name_of(kind, obj) or getattr(obj, "serialized_name", None) or type(obj).__name__
    config = obj.get_config() if hasattr(obj, "get_config") else {}
    config = {k: v for k, v in config.items() if k != "name"}
    if not config:
        return name
    return {"class_name": name, "config": config}


class Namespace:
    """Implements a registry-backed module's ``__getattr__``, ``__dir__`` and ``get``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def getattr(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if not REGISTRY.contains(self.kind, name):
            raise AttributeError(
                f"no {_SINGULAR[self.kind]} named {name!r} is registered; "
                f"registered {self.kind}: {', '.join(REGISTRY.names(self.kind))}"
            )
        return REGISTRY.get(self.kind, name)

    def dir(self, module_globals: dict[str, Any]) -> list[str]:
        return sorted(set(module_globals) | set(REGISTRY.names(self.kind)))

    def get(self, identifier: Any, **kwargs: Any) -> Any:
        return resolve(self.kind, identifier, **kwargs)

    def names(self) -> list[str]:
        return REGISTRY.names(self.kind)


def module_functions(kind: str, module_globals: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """``get``, ``names``, ``__getattr__`` and ``__dir__`` for the namespace module of ``kind``.

    Used as ``get, names, __getattr__, __dir__ = module_functions("layers", globals())``
    so each registry-backed module is three lines of code.
    """
    namespace = Namespace(kind)

    def get(identifier: Any, **kwargs: Any) -> Any:
        """Resolve a registered name, config dict, class or instance to an instance."""
        return namespace.get(identifier, **kwargs)

    def names() -> list[str]:
        """The registered names of this kind, sorted."""
        return namespace.names()

    def __getattr__(name: str) -> Any:
        return namespace.getattr(name)

    def __dir__() -> list[str]:
        return namespace.dir(module_globals)

    get.__doc__ = f"Resolve a {_SINGULAR[kind]} name, config dict, class or instance to an instance."
    names.__doc__ = f"The registered {kind}, sorted."
    return get, names, __getattr__, __dir__
