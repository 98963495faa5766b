"""The argument checks of :meth:`History.plot <framework.training.callbacks.base.History.plot>`.

Both raise a :class:`~framework.errors.ConfigError` naming ``History.plot``,
the argument, what it must be and the value received, before anything is
drawn or written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from framework.errors import ConfigError
from framework.training.callbacks.arguments import check_path

__all__ = ["check_plot_metrics", "check_plot_path"]

_OWNER = "History.plot"


def check_plot_metrics(metrics: Any) -> list[str]:
    """``metrics`` (one name or an iterable of names) as a list of strings.

    Raises:
        ConfigError: neither a string nor an iterable (``metrics=3``), or an
            entry that is not a string.
    """
    if isinstance(metrics, str):
        return [metrics]
    if isinstance(metrics, (bytes, dict)) or not isinstance(metrics, Iterable):
        raise ConfigError(
            f"{_OWNER}: metrics must be a name such as 'loss' or a list of names, got {metrics!r}"
        )
    names = list(metrics)
    wrong = [name for name in names if not isinstance(name, str)]
    if wrong:
        raise ConfigError(f"{_OWNER}: metrics must be names (strings), got {wrong!r} in {metrics!r}")
    return names


def check_plot_path(path: Any, formats: Iterable[str]) -> Any:
    """``path`` as a ``str`` that names an image file matplotlib can write, in an existing folder.

    The format is the suffix, one of ``formats`` (``.png``, ``.pdf``, ``.svg``...):
    a path without one (``"curves"``, a folder) is refused rather than written
    to ``curves.png`` beside it, as matplotlib would. A binary file object (it
    has ``write``) is passed through and receives a PNG.

    Raises:
        ConfigError: a path that is not a ``str``/``os.PathLike`` (``path=3``),
            has no suffix or one of an unknown format, is a directory, or
            lies in a folder that does not exist.
    """
    if hasattr(path, "write") and not isinstance(path, (str, bytes, os.PathLike)):
        return path
    text = check_path(_OWNER, "path", path)
    known = sorted(formats)
    suffix = os.path.splitext(text)[1][1:].lower()
    if os.path.isdir(text) or text.endswith(("/", os.sep)):
        raise ConfigError(
            f"{_OWNER}: path {text!r} names a folder, not a file; give a file name in it such as "
            f"{os.path.join(text, 'curves.png')!r}"
        )
    if not suffix:
        raise ConfigError(
            f"{_OWNER}: path {text!r} has no suffix naming the image format (matplotlib would write "
            f"{text + '.png'!r} instead); add one such as '.png' ({', '.join('.' + name for name in known)})"
        )
    if suffix not in known:
        raise ConfigError(
            f"{_OWNER}: path {text!r} ends in '.{suffix}', which is not an image format matplotlib "
            f"writes; use one of {', '.join('.' + name for name in known)}"
        )
    folder = os.path.dirname(text)
    if folder and not os.path.isdir(folder):
        raise ConfigError(
            f"{_OWNER}: the folder {folder!r} of path {text!r} does not exist; create it first "
            f"(os.makedirs({folder!r}, exist_ok=True))"
        )
    return text
