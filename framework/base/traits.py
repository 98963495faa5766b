"""Class flags: what a layer class promises about its ``forward`` and ``backward``.

The flags themselves are class attributes of :class:`framework.base.layer.Layer`
(``monotone_elementwise``, ``window_max``, ``channelwise``,
``returns_fresh_grad``); :func:`declares` reads them with the rule that makes
them safe to inherit.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["declares"]


def declares(layer: Any, flag: str, method: str = "forward") -> bool:
    """Whether ``layer``'s class declares the class flag ``flag`` for its ``method``.

    A flag is a promise about what ``method`` computes, so it counts only if
    set on the class defining that method or on one of its subclasses: a
    subclass overriding ``forward`` does not inherit it (a noisy ReLU is not
    monotone) and must declare it again. A subclass may also set it to ``False``.
    """
    return _class_declares(type(layer), flag, method)  # type: ignore[arg-type]  # classes hash by id


@functools.lru_cache(maxsize=1024)
def _class_declares(kind: type, flag: str, method: str) -> bool:
    for cls in kind.__mro__:
        if flag in cls.__dict__:
            return bool(cls.__dict__[flag])
        if method in cls.__dict__:
            return False
    return False
