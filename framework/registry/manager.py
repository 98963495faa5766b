"""The plugin registry: entry-point discovery and name -> object lookup.

One :class:`Registry` (``framework.registry.manager.REGISTRY``) owns a pluggy
``PluginManager``. On the first lookup it loads every entry point of the group
``framework`` -- the built-ins in ``plugins/`` are declared there by this
project's own ``pyproject.toml`` exactly as a third party declares its own --
and calls each plugin's ``register_*`` hooks with a ``register`` callable that
records which distribution provided which name.

Environment variables:
    FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD=1: load only the built-in plugins (this
        project's own distribution); register others by hand with
        :meth:`Registry.register_plugin`.
    FRAMEWORK_STRICT_PLUGINS=1: a plugin that fails to import raises
        :class:`~framework.PluginError` instead of a warning.
"""

from __future__ import annotations

import importlib.metadata as metadata
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from framework.errors import PluginError, UnknownNameError
from framework.registry import hookspecs
from framework.registry.discovery import (
    BUILTIN_DISTRIBUTION,
    ENTRY_POINT_GROUP,
    _dist_meta,
    _dist_name,
    _entry_points,
    _env_flag,
)

__all__ = [
    "KINDS",
    "ENTRY_POINT_GROUP",
    "BUILTIN_DISTRIBUTION",
    "Entry",
    "PluginInfo",
    "Registry",
    "REGISTRY",
    "canonical_name",
]

KINDS = ("layers", "activations", "initializers", "losses", "optimizers", "metrics")

_SINGULAR = {
    "layers": "layer",
    "activations": "activation",
    "initializers": "initializer",
    "losses": "loss",
    "optimizers": "optimizer",
    "metrics": "metric",
}


def canonical_name(name: str) -> str:
    """The lookup key of ``name``: lower case with ``_`` removed.

    >>> canonical_name("Kaiming_Uniform") == canonical_name("kaimingUniform")
    True
    """
    return name.replace("_", "").lower()


@dataclass
class PluginInfo:
    """What the registry knows about one loaded (or failed) plugin."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)
    #: the hooks the plugin implements (``register_layers``, ``register_kernel_workloads``...)
    hooks: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION

    def describe(self) -> str:
        dist = self.distribution or "no distribution"
        version = f" {self.version}" if self.version else ""
        return f"{dist}{version} (plugin {self.name!r})"


@dataclass(frozen=True)
class Entry:
    """One registered object and where it came from."""

    kind: str
    name: str
    obj: Any
    aliases: tuple[str, ...]
    plugin: PluginInfo


class Registry:
    """Plugin manager plus one name table per kind of object.

    Lookups (:meth:`get`, :meth:`entry`, :meth:`names`) load the plugins first,
    once. Tests may build private registries; the framework uses ``REGISTRY``.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._loaded = False
        self._loading = False
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._tables: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self._by_object: dict[str, dict[int, Entry]] = {kind: {} for kind in KINDS}
        self.plugins: list[PluginInfo] = []
        self._info_of: dict[int, PluginInfo] = {}  # id(plugin object) -> its info

    # -- loading ---------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self, strict: bool | None = None) -> None:
        """Discover and register every entry-point plugin, once.

        Args:
            strict: raise :class:`PluginError` when a plugin fails to import
                instead of warning. Defaults to ``FRAMEWORK_STRICT_PLUGINS``.
        """
        if self._loaded:
            return
        with self._lock:
            if self._loaded or self._loading:
                return
            self._loading = True
            try:
                if strict is None:
                    strict = _env_flag("FRAMEWORK_STRICT_PLUGINS")
                builtins_only = _env_flag("FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD")
                done = {(i.distribution, i.name) for i in self.plugins}  # a retry after a failure
                for ep in _entry_points():
                    dist = _dist_name(ep)
                    if (builtins_only and dist != BUILTIN_DISTRIBUTION) or (
                        _dist_meta(ep.dist)[0],
                        ep.name,
                    ) in done:
                        continue
                    self._load_entry_point(ep, strict=strict)
                self._loaded = True
            finally:
                self._loading = False

    def _load_entry_point(self, ep: metadata.EntryPoint, *, strict: bool) -> None:
        dist, version = _dist_meta(ep.dist)
        info = PluginInfo(
            name=ep.name,
            module=ep.value,
            distribution=dist,
            version=version,
            entry_point=f"{ep.group}:{ep.name} = {ep.value}",
        )
        try:
            plugin = ep.load()
        except Exception as exc:  # any import failure of third-party code
            info.error = f"{type(exc).__name__}: {exc}"
            self.plugins.append(info)
            message = (
                f"plugin {ep.name!r} from distribution {dist or '?'} {version or ''} "
                f"(entry point {info.entry_point}) failed to import: {info.error}"
            )
            if strict:
                raise PluginError(message) from exc
            warnings.warn(message + "; the other plugins are loaded", RuntimeWarning, stacklevel=4)
            return
        self._register(plugin, info)

    def register_plugin(
        self,
        plugin: Any,
        name: str | None = None,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> PluginInfo:
        """Register a plugin module or object by hand (no entry point needed).

        This is how a user adds plugins when autoload is disabled, and how tests
        add throwaway plugins. Loads the entry-point plugins first.
        """
        self.load()
        module_name = getattr(plugin, "__name__", type(plugin).__name__)
        info = PluginInfo(
            name=name or module_name,
            module=module_name,
            distribution=distribution,
            version=version,
        )
        with self._lock:
            self._register(plugin, info)
        return info

    def _register(self, plugin: Any, info: PluginInfo) -> None:
        plugin_name = f"{info.distribution or '-'}:{info.name}"
        try:
            self.pm.register(plugin, name=plugin_name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=plugin_name)
            raise PluginError(
                f"plugin {info.describe()} does not match the hook specification: {exc}"
            ) from exc
        except ValueError as exc:
            raise PluginError(f"plugin {info.describe()} is already registered: {exc}") from exc
        self.plugins.append(info)
        self._info_of[id(plugin)] = info
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
        # all or nothing: a plugin whose hooks fail leaves no name behind and can be retried
        tables: list[dict[Any, Entry]] = [*self._tables.values(), *self._by_object.values()]
        saved = [(table, dict(table)) for table in tables]
        try:
            for kind in KINDS:
                caller = getattr(self.pm.hook, f"register_{kind}")
                for impl in caller.get_hookimpls():
                    if impl.plugin is not plugin:
                        continue

                    def register(
                        obj: Any,
                        name: str | None = None,
                        aliases: Iterable[str] = (),
                        override: bool = False,
                        _kind: str = kind,
                    ) -> None:
                        self._add(_kind, obj, name, tuple(aliases), override, info)

                    impl.function(**{arg: register for arg in impl.argnames})
        except Exception as exc:
            for table, before in saved:
                table.clear()
                table.update(before)
            self.plugins.remove(info)
            self._info_of.pop(id(plugin), None)
            self.pm.unregister(name=plugin_name)
            info.registered.clear()
            if isinstance(exc, PluginError):
                raise
            raise PluginError(
                f"plugin {info.describe()} failed while registering: {type(exc).__name__}: {exc}"
            ) from exc

    def _add(
        self,
        kind: str,
        obj: Any,
        name: str | None,
        aliases: tuple[str, ...],
        override: bool,
        info: PluginInfo,
    ) -> None:
        if name is None:
            name = getattr(obj, "__name__", None) or type(obj).__name__
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"{info.describe()} registered a {_SINGULAR[kind]} with an invalid name {name!r}"
            )
        entry = Entry(kind=kind, name=name, obj=obj, aliases=aliases, plugin=info)
        table = self._tables[kind]
        keys = [canonical_name(k) for k in (name, *aliases)]
        for key in keys:
            old = table.get(key)
            if old is None or old.obj is obj or override:
                continue
            raise PluginError(
                f"{_SINGULAR[kind]} name {key!r} is registered twice: "
                f"as {old.name} by {old.plugin.describe()} and as {name} by "
                f"{info.describe()}; uninstall one of them, or pass override=True "
                "to register() to replace the first on purpose"
            )
        replaced = {id(table[k]): table[k] for k in keys if k in table and table[k].obj is not obj}
        for key in keys:
            table[key] = entry
        for old in replaced.values():
            # the replaced class keeps the keys nobody claimed (a built-in's alias), under the first
            # of them: a model holding it is still saved under a name that loads it back
            left = [k for k, held in table.items() if held is old]
            if not left:
                self._by_object[kind].pop(id(old.obj), None)
                continue
            kept = Entry(kind=kind, name=left[0], obj=old.obj, aliases=tuple(left[1:]), plugin=old.plugin)
            for k in left:
                table[k] = kept
            self._by_object[kind][id(old.obj)] = kept
        self._by_object[kind].setdefault(id(obj), entry)
        info.registered.setdefault(kind, []).append(name)

    def hook_implementations(self, hook: str) -> list[tuple[Any, PluginInfo]]:
        """``(function, plugin info)`` of every loaded plugin implementing ``hook``.

        For hooks the name tables do not cover (``register_onnx_converters``):
        the subsystem that owns the hook calls each function with its own
        ``register`` and reports errors with the plugin's :meth:`PluginInfo.describe`.
        Loads the plugins first.
        """
        self.load()
        caller = getattr(self.pm.hook, hook)
        found = []
        for impl in caller.get_hookimpls():
            info = self._info_of.get(id(impl.plugin))
            if info is None:
                info = PluginInfo(name=self.pm.get_name(impl.plugin) or "?", module="?")
            found.append((impl.function, info))
        return found

    # -- lookup ----------------------------------------------------------

    def entry(self, kind: str, name: str) -> Entry:
        """The :class:`Entry` registered under ``name`` (any case, ``_`` ignored).

        Raises:
            UnknownNameError: naming the kind, the name and the registered names.
        """
        self.load()
        if kind not in self._tables:
            raise UnknownNameError(f"unknown registry kind {kind!r}; expected one of {KINDS}")
        if not isinstance(name, str):
            raise UnknownNameError(f"{_SINGULAR[kind]} names are strings, got {type(name).__name__} {name!r}")
        found = self._tables[kind].get(canonical_name(name))
        if found is None:
            known = ", ".join(self.names(kind)) or "(none: is the package installed?)"
            raise UnknownNameError(
                f"unknown {_SINGULAR[kind]} {name!r}; registered {kind}: {known}. "
                f"A plugin can add one with the register_{kind} hook."
            )
        return found

    def get(self, kind: str, name: str) -> Any:
        """The object registered under ``name`` in ``kind``."""
        return self.entry(kind, name).obj

    def contains(self, kind: str, name: str) -> bool:
        self.load()
        return canonical_name(name) in self._tables[kind]

    def names(self, kind: str) -> list[str]:
        """The primary names registered in ``kind``, sorted."""
        self.load()
        return sorted({entry.name for entry in self._tables[kind].values()}, key=str.lower)

    def entries(self, kind: str) -> list[Entry]:
        self.load()
        unique = {entry.name: entry for entry in self._tables[kind].values()}
        return [unique[k] for k in sorted(unique, key=str.lower)]

    def entry_of(self, kind: str, obj: Any) -> Entry | None:
        """The entry that registered ``obj`` (a class or function), or ``None``."""
        self.load()
        return self._by_object[kind].get(id(obj))

    def name_of(self, kind: str, obj: Any) -> str | None:
        """The registered name of ``obj`` or of its class, or ``None``."""
        found = self.entry_of(kind, obj)
        if found is None and not isinstance(obj, type):
            found = self.entry_of(kind, type(obj))
        return found.name if found is not None else None


REGISTRY = Registry()
