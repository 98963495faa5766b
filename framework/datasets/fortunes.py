"""The Debian ``fortunes`` package's quotations, as text: :func:`load_fortunes`.

``apt-get install fortunes`` puts one text file per category (``computers``,
``science``, ``wisdom``...) in ``/usr/share/games/fortunes``, each quotation
ended by a line holding only ``%``, next to a ``.dat`` index made by
``strfile``. Nothing is downloaded: a missing package raises a
:class:`~framework.errors.DataError` that names it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from framework.datasets._common import PathLike, _path
from framework.errors import ConfigError, DataError

__all__ = ["FORTUNES_DIRS", "FORTUNES_ENV", "fortune_categories", "load_fortunes"]

FORTUNES_ENV = "FRAMEWORK_FORTUNES_DIR"
"""An environment variable naming a folder of fortune files, looked up before :data:`FORTUNES_DIRS`."""

FORTUNES_DIRS = ("/usr/share/games/fortunes", "/usr/share/fortune", "/usr/share/fortunes")
"""Where Debian (and other distributions) install the fortune files."""

_HINT = "install the Debian package with: apt-get install -y fortunes (dpkg -L fortunes lists its files)"


def _folder(path: PathLike | None) -> Path:
    candidates = [_path("load_fortunes: path", path)] if path is not None else []
    if path is None and os.environ.get(FORTUNES_ENV):
        candidates.append(Path(os.environ[FORTUNES_ENV]))
    if path is None:
        candidates += [Path(d) for d in FORTUNES_DIRS]
    for folder in candidates:
        if folder.is_dir() and _category_files(folder):
            return folder
    where = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"load_fortunes: no fortune files (a text file next to its .dat index) in {where}; {_HINT}"
    )


def _category_files(folder: Path) -> dict[str, Path]:
    """Category name -> text file: every file that has a ``.dat`` index beside it."""
    return {
        p.name: p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.suffix and (folder / (p.name + ".dat")).is_file()
    }


def fortune_categories(path: PathLike | None = None) -> list[str]:
    """The category names found (``["art", "computers", ...]``)."""
    return sorted(_category_files(_folder(path)))


def load_fortunes(path: PathLike | None = None, categories: list[str] | str | None = None) -> list[str]:
    """Every quotation of the ``fortunes`` package, in file order, as a list of strings.

    Args:
        path: a folder of fortune files; default ``$FRAMEWORK_FORTUNES_DIR``,
            then :data:`FORTUNES_DIRS`.
        categories: the category files to read (default all, sorted by name);
            a single name may be given as a string.

    Returns:
        The quotations, each stripped of its trailing newline (inner newlines
        kept), empty ones dropped.

    Raises:
        DataError: the package is not installed (the message says how to
            install it), or a category is unknown (the message lists them).
        ConfigError: ``path`` is not a path, or ``categories`` not a name or a list of names.

    Example:
        >>> from framework.datasets import load_fortunes
        >>> texts = load_fortunes(categories=["science"])  # doctest: +SKIP
    """
    if isinstance(categories, str):  # one category by name, not its letters
        categories = [categories]
    wanted: list[Any] | None
    try:
        wanted = None if categories is None else list(categories)
    except TypeError:
        wanted = [categories]  # not iterable: refused just below
    if wanted is not None and not all(isinstance(n, str) for n in wanted):
        raise ConfigError(
            "load_fortunes: categories: expected a category name or a list of them (see "
            f"fortune_categories()), got {type(categories).__name__} {categories!r}"
        )
    files = _category_files(_folder(path))
    names = sorted(files) if wanted is None else wanted
    unknown = [n for n in names if n not in files]
    if unknown:
        raise DataError(f"load_fortunes: unknown categories {unknown}; available: {', '.join(sorted(files))}")
    quotes: list[str] = []
    for name in names:
        quotes.extend(_quotations(files[name].read_text(encoding="utf-8", errors="replace")))
    return quotes


def _quotations(text: str) -> list[str]:
    """The quotations of one fortune file: the runs of lines between lines holding only ``%``.

    A ``%`` line at the start of the file, two in a row or one at the end
    delimit no quotation (``strfile`` skips these empty ones too).
    """
    quotes: list[str] = []
    lines: list[str] = []
    for line in [*text.replace("\r\n", "\n").split("\n"), "%"]:
        if line != "%":
            lines.append(line)
            continue
        quote = "\n".join(lines).strip("\n")
        if quote:
            quotes.append(quote)
        lines = []
    return quotes
