"""Entry-point discovery for the registry: which plugins are installed, and their distributions.

:func:`_entry_points` lists the ``framework`` entry points once each, the
built-ins first; :func:`_dist_meta` reads a distribution's name and version
once (``Distribution.name`` parses the whole METADATA file on every access).
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
from typing import Any

ENTRY_POINT_GROUP = "framework"
BUILTIN_DISTRIBUTION = "framework"

__all__ = ["BUILTIN_DISTRIBUTION", "ENTRY_POINT_GROUP"]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _entry_points() -> list[metadata.EntryPoint]:
    eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    # One distribution may be visible twice (an editable install plus a build
    # folder on sys.path); load each (distribution, entry point) once.
    seen: set[tuple[str | None, str, str]] = set()
    unique = []
    for ep in eps:
        key = (_dist_name(ep), ep.name, ep.value)
        if key not in seen:
            seen.add(key)
            unique.append(ep)
    # Built-ins first, so a third party's override=True replaces them on purpose.
    unique.sort(key=lambda ep: (_dist_name(ep) != BUILTIN_DISTRIBUTION, _dist_name(ep) or "", ep.name))
    return unique


def _dist_name(ep: metadata.EntryPoint) -> str | None:
    return _dist_meta(ep.dist)[0]


# ``Distribution.name`` / ``.version`` parse the whole METADATA file with the
# email parser on every access (about 0.5 ms each, several times per entry
# point): read the two headers once per distribution object instead.
_DIST_META: dict[int, tuple[Any, str | None, str | None]] = {}


def _dist_meta(dist: Any) -> tuple[str | None, str | None]:
    """``(name, version)`` of a distribution (``(None, None)`` for ``None``), cached."""
    if dist is None:
        return None, None
    cached = _DIST_META.get(id(dist))
    if cached is not None and cached[0] is dist:
        return cached[1], cached[2]
    name = version = None
    try:
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        for line in text.splitlines():
            if not line.strip():
                break  # the headers end at the first blank line
            key, _, value = line.partition(":")
            if key == "Name" and name is None:
                name = value.strip()
            elif key == "Version" and version is None:
                version = value.strip()
    except Exception:  # unreadable metadata: fall back to the parser's answer
        name = version = None
    if name is None:
        name, version = dist.name, dist.version
    _DIST_META[id(dist)] = (dist, name, version)
    return name, version
