"""MkDocs hook: serve MathJax from the site itself, taken from an installed package.

The MathJax files are never committed and never fetched from a CDN. They come
from the PyPI package ``django-static-mathjax`` (a verbatim copy of MathJax 3's
``es5`` build, importable as ``mathjax``, with no Django dependency), listed in
the ``dev`` extra. ``on_files`` adds the needed files to the build as if they
were under ``docs/assets/mathjax/``, so ``mkdocs build`` copies them and
``mkdocs serve`` serves them; ``mkdocs.yml`` loads ``assets/mathjax/tex-chtml.js``
through ``extra_javascript``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

DEST = "assets/mathjax"

# The single combined component we load; the other combined bundles are skipped.
ENTRY = "tex-chtml.js"
# Sub-folders MathJax loads from on demand: TeX extensions (autoload), the
# CHTML fonts, the menu and its accessibility components.
LAZY_DIRS = ("input", "output/chtml", "ui", "a11y", "sre")


def mathjax_root() -> Path:
    """The ``es5`` folder of the installed MathJax copy."""
    spec = importlib.util.find_spec("mathjax")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        root = Path(location) / "static" / "mathjax" / "es5"
        if (root / ENTRY).is_file():
            return root
    raise PluginError(
        "docs/hooks.py: MathJax not found; the docs need the package that ships it: "
        'pip install django-static-mathjax (or pip install -e ".[dev]")'
    )


def _wanted(rel: str) -> bool:
    return rel == ENTRY or any(rel.startswith(d + "/") for d in LAZY_DIRS) or rel == "output/chtml.js"


def on_files(files: Files, config: Any) -> Files:
    root = mathjax_root()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and _wanted(rel):
            files.append(File.generated(config, f"{DEST}/{rel}", abs_src_path=str(path)))
    return files
