"""Checks for moving a metric's counts between instances: whom a metric may merge with, and
the fields of a state dict read back with errors that name the metric and the key."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.errors import ConfigError

__all__ = ["peers_of", "state_array", "state_field"]

if TYPE_CHECKING:
    from framework.base.metric import Metric


def peers_of(metric: Metric, metrics: Iterable[Metric]) -> list[Metric]:
    """``metrics`` as a list, each checked to be of ``metric``'s class and configuration (its
    ``get_config`` but the name): counts taken at another threshold or ``k`` would mix silently.

    Raises:
        ConfigError: naming the metric and what differs, or ``metrics`` that is not a list (``None``,
            or one metric not wrapped in a list).
    """
    from framework.base.metric import Metric

    owner = type(metric).__name__
    try:
        peers = None if isinstance(metrics, (Metric, str, dict)) else list(metrics)
    except TypeError:
        peers = None
    if peers is None:
        hint = " (wrap one metric in a list: merge_state([other]))" if isinstance(metrics, Metric) else ""
        raise ConfigError(
            f"{owner}.merge_state: metrics must be a list of {owner} metrics, "
            f"got {type(metrics).__name__}{hint}"
        )
    mine = _settings(metric)
    for other in peers:
        if type(other) is not type(metric):
            raise ConfigError(
                f"{type(metric).__name__}.merge_state: can only merge metrics of its own class, "
                f"got {type(other).__name__}"
            )
        theirs = _settings(other)
        if theirs != mine:
            raise ConfigError(
                f"{type(metric).__name__}.merge_state: can only merge metrics configured alike; this one "
                f"has {mine}, another {theirs}"
            )
    return peers


def state_array(metric: Metric, state: dict[str, Any], key: str, dtype: Any) -> np.ndarray:
    """``state[key]`` as a new array of ``dtype``, or ConfigError naming the metric and the key."""
    value = state_field(metric, state, key)
    try:
        array = np.array(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"dtype {array.dtype}")
        return array.astype(dtype)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"{type(metric).__name__}.set_state: {key} must be numbers, got {type(value).__name__} ({error})"
        ) from None


def _settings(metric: Metric) -> dict[str, Any]:
    return {k: v for k, v in metric.get_config().items() if k != "name"}


def state_field(metric: Metric, state: dict[str, Any], key: str) -> Any:
    """``state[key]``, or ConfigError naming the metric and the keys it has."""
    if not isinstance(state, dict) or key not in state:
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ConfigError(f"{type(metric).__name__}.set_state: the state needs {key!r}, got {keys}")
    return state[key]
