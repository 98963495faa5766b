"""Griffe extension for the API reference: read ``Example:`` as a Google examples section.

The project's docstrings title their doctest section ``Example:``; griffe's
Google parser only recognises ``Examples:``, and would otherwise render the
``>>>`` lines as Markdown prose (where ``x[...][:2]`` reads as a link).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", flags=re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename a docstring's ``Example:`` heading to ``Examples:`` before parsing."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
