"""MkDocs hook: the catalogue of registered objects, built from the registry at build time.

A page writes a marker ``<!-- catalogue: KIND -->`` on a line of its own, with
``KIND`` one of ``framework.registry.manager.KINDS`` (``layers``, ``activations``,
``initializers``, ``losses``, ``optimizers``, ``metrics``). ``on_page_markdown``
replaces it with a Markdown table of every object the built-in distribution
registers in that kind: name and aliases, the plugin (distribution and
entry-point name), the first line of the docstring and the constructor
signature. The table is read from
``REGISTRY.entries(kind)`` on every build, so it cannot drift from the code;
a new built-in layer appears in it without any edit to the docs.

Only the built-in distribution is listed, so the page does not depend on which
third-party plugins happen to be installed where the site is built
(``python -m framework plugins`` lists those). An unknown kind, a kind with
no entries or a built-in plugin that fails to import is an error of the build.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

MARKER_RE = re.compile(r"^<!--\s*catalogue:\s*(?P<kind>\w+)\s*-->\s*$", re.MULTILINE)
API_DIRECTIVE_RE = re.compile(r"^:::\s*(?P<module>[\w.]+)\s*$", re.MULTILINE)
# An RST role such as :class:`Conv2d` or :func:`~plugins.graph_ops.as_coo`.
ROLE_RE = re.compile(r":\w+:`~?([^`]+)`")
CODE_SPAN_RE = re.compile(r"(`+)(.+?)\1")


def _registry() -> Any:
    from framework.registry.manager import BUILTIN_DISTRIBUTION, KINDS, REGISTRY

    REGISTRY.load(strict=True)
    failed = [p for p in REGISTRY.plugins if p.error and p.distribution == BUILTIN_DISTRIBUTION]
    if failed:
        raise PluginError(
            "docs/catalogue_hook.py: built-in plugins failed to import: "
            + "; ".join(f"{p.name}: {p.error}" for p in failed)
        )
    return REGISTRY, KINDS, BUILTIN_DISTRIBUTION


def _documented_modules(docs_dir: str) -> set[str]:
    """Modules rendered by mkdocstrings (``::: module`` lines under ``api/``): their objects have anchors."""
    found: set[str] = set()
    for page in sorted(Path(docs_dir, "api").glob("*.md")):
        found.update(m["module"] for m in API_DIRECTIVE_RE.finditer(page.read_text(encoding="utf-8")))
    return found


def _escape_cell(text: str) -> str:
    """Escape ``|`` outside code spans (inside them Python-Markdown keeps it) and drop RST roles."""
    text = ROLE_RE.sub(r"``\1``", text)
    parts, last = [], 0
    for match in CODE_SPAN_RE.finditer(text):
        parts.append(text[last : match.start()].replace("|", r"\|"))
        parts.append(match.group(0))
        last = match.end()
    parts.append(text[last:].replace("|", r"\|"))
    return "".join(parts)


def summary(obj: Any) -> str:
    """The first line of the object's docstring (the class's own, else its first documented base)."""
    doc = inspect.getdoc(obj) or ""
    first = doc.strip().split("\n\n", 1)[0]
    return _escape_cell(" ".join(line.strip() for line in first.splitlines())) or "(no docstring)"


def signature(name: str, obj: Any) -> str:
    """``Class(arg, arg=default, ...)`` without annotations: the constructor, or the function itself."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"`{name}(...)`"
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    plain = sig.replace(parameters=params, return_annotation=inspect.Signature.empty)
    return f"`{getattr(obj, '__name__', name)}{plain}`"


def catalogue(kind: str, docs_dir: str) -> str:
    """The Markdown table of the built-in ``kind`` entries."""
    registry, kinds, builtin = _registry()
    if kind not in kinds:
        raise PluginError(
            f"docs/catalogue_hook.py: unknown kind {kind!r} in a catalogue marker; expected one of {kinds}"
        )
    entries = [e for e in registry.entries(kind) if e.plugin.distribution == builtin]
    if not entries:
        raise PluginError(f"docs/catalogue_hook.py: no built-in {kind} registered")
    documented = _documented_modules(docs_dir)
    rows = [
        "| name (aliases) | plugin | summary | constructor |",
        "| --- | --- | --- | --- |",
    ]
    for e in entries:
        module = getattr(e.obj, "__module__", "")
        qualname = getattr(e.obj, "__qualname__", "")
        # Plain text names: table cells may wrap code spans mid-word, never plain words.
        name = f"**{e.name}**"
        if module in documented and qualname:
            name = f"[**{e.name}**][{module}.{qualname}]"
        if e.aliases:
            name += "<br><small>" + ", ".join(e.aliases) + "</small>"
        plugin = f"{e.plugin.distribution}:&nbsp;{e.plugin.name}"
        rows.append(f"| {name} | {plugin} | {summary(e.obj)} | {signature(e.name, e.obj)} |")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if "catalogue:" not in markdown:
        return markdown
    return MARKER_RE.sub(lambda m: catalogue(m["kind"], config["docs_dir"]), markdown)
