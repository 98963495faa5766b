"""Synthetic data sets for demos and tests: spirals, Gaussian blobs and a noisy sine.

Each takes ``seed`` (an int, a ``numpy.random.Generator`` or ``None`` for the
framework's global generator), so the same seed gives the same data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.validation import check_bool
from framework.datasets._common import Seed, _generator, _non_negative, _positive_int
from framework.errors import ConfigError

__all__ = ["make_blobs", "make_sine", "make_spirals"]


def _class_sizes(n_samples: int, n_classes: int) -> np.ndarray:
    """``n_samples`` split into ``n_classes`` sizes differing by at most one."""
    sizes = np.full(n_classes, n_samples // n_classes, dtype=np.int64)
    sizes[: n_samples % n_classes] += 1
    return sizes


def make_spirals(
    n_samples: int = 300,
    n_classes: int = 2,
    noise: float = 0.05,
    n_turns: float = 1.0,
    shuffle: bool = True,
    seed: Seed = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved 2-D spiral arms, one per class: a classic non-linear toy problem.

    Sample ``i`` of class ``k`` with position ``t`` in ``[0, 1]`` along its arm:
    ``r = t``, ``theta = 2 pi (k / n_classes + n_turns * t)``,
    ``x = r (cos theta, sin theta) + noise * N(0, I)``.

    Args:
        n_samples: total number of points (default 300), split as evenly as
            possible between the classes.
        n_classes: number of arms / classes (default 2).
        noise: standard deviation of the Gaussian noise added to each
            coordinate (default 0.05; the arms are ``1 / (n_classes * n_turns)``
            apart radially).
        n_turns: how many full turns each arm makes (default 1.0).
        shuffle: shuffle the samples (default ``True``); otherwise they are
            grouped by class.
        seed: int, Generator or ``None`` (the framework's global generator).

    Returns:
        ``(x, y)``: ``x`` float32 of shape ``(n_samples, 2)`` within about
        ``[-1, 1]``; ``y`` int64 of shape ``(n_samples,)`` in
        ``0..n_classes-1``.
    """
    n_samples = _positive_int("make_spirals: n_samples", n_samples)
    n_classes = _positive_int("make_spirals: n_classes", n_classes)
    noise = _non_negative("make_spirals: noise", noise)
    n_turns = _non_negative("make_spirals: n_turns", n_turns)
    shuffle = check_bool("make_spirals", "shuffle", shuffle)
    rng = _generator(seed)

    sizes = _class_sizes(n_samples, n_classes)
    y = np.repeat(np.arange(n_classes, dtype=np.int64), sizes)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    position = np.arange(n_samples) - starts[y]
    t = position / np.maximum(sizes[y] - 1, 1)
    radius = 0.05 + 0.95 * t  # start slightly off the centre so the arms don't share a point
    theta = 2.0 * np.pi * (y / n_classes + n_turns * t)
    x = radius[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    x += noise * rng.standard_normal(x.shape)
    if shuffle:
        order = rng.permutation(n_samples)
        x, y = x[order], y[order]
    return x.astype(np.float32), y


def make_blobs(
    n_samples: int = 300,
    n_features: int = 2,
    centers: int | np.ndarray = 3,
    cluster_std: float = 1.0,
    center_box: tuple[float, float] = (-10.0, 10.0),
    shuffle: bool = True,
    seed: Seed = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic Gaussian clusters, one per class.

    ``x = center[y] + cluster_std * N(0, I)``; with an integer ``centers`` the
    centres are drawn uniformly from ``center_box`` in every feature.

    Args:
        n_samples: total number of points (default 300), split as evenly as
            possible between the clusters.
        n_features: dimension of each point (default 2); ignored when
            ``centers`` is an array.
        centers: number of clusters (default 3) or their coordinates, an array
            of shape ``(n_clusters, n_features)``.
        cluster_std: standard deviation of each cluster (default 1.0).
        center_box: ``(low, high)`` bounds of random centres (default
            ``(-10, 10)``).
        shuffle: shuffle the samples (default ``True``).
        seed: int, Generator or ``None`` (the framework's global generator).

    Returns:
        ``(x, y)``: ``x`` float32 of shape ``(n_samples, n_features)``; ``y``
        int64 of shape ``(n_samples,)`` giving each point's cluster.
    """
    n_samples = _positive_int("make_blobs: n_samples", n_samples)
    cluster_std = _non_negative("make_blobs: cluster_std", cluster_std)
    shuffle = check_bool("make_blobs", "shuffle", shuffle)
    rng = _generator(seed)
    if isinstance(centers, (int, np.integer)) and not isinstance(centers, bool):
        n_centers = _positive_int("make_blobs: centers", centers)
        n_features = _positive_int("make_blobs: n_features", n_features)
        low, high = _box(center_box)
        center_array = rng.uniform(low, high, size=(n_centers, n_features))
    else:
        try:
            center_array = np.asarray(centers, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"make_blobs: centers: expected an int or an array of numbers, got {centers!r} ({exc})"
            ) from exc
        if center_array.ndim != 2 or 0 in center_array.shape or not np.isfinite(center_array).all():
            raise ConfigError(
                "make_blobs: centers: expected an int or a finite array of shape (n_clusters, n_features), "
                f"both at least 1, got shape {center_array.shape}"
            )
    sizes = _class_sizes(n_samples, center_array.shape[0])
    y = np.repeat(np.arange(center_array.shape[0], dtype=np.int64), sizes)
    x = center_array[y] + cluster_std * rng.standard_normal((n_samples, center_array.shape[1]))
    if shuffle:
        order = rng.permutation(n_samples)
        x, y = x[order], y[order]
    return x.astype(np.float32), y


def _box(center_box: Any) -> tuple[float, float]:
    """``center_box`` as finite ``(low, high)`` with ``low < high`` (a ConfigError otherwise)."""
    try:
        low, high = (float(v) for v in center_box)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"make_blobs: center_box: expected (low, high), two numbers, got {center_box!r}"
        ) from exc
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ConfigError(
            f"make_blobs: center_box: expected finite (low, high) with low < high, got {center_box!r}"
        )
    return low, high


def make_sine(n_samples: int = 200, noise: float = 0.1, seed: Seed = None) -> tuple[np.ndarray, np.ndarray]:
    """A 1-D regression problem: ``y = sin(x) + noise * N(0, 1)``, ``x ~ U[-pi, pi]``.

    Args:
        n_samples: number of points (default 200).
        noise: standard deviation of the Gaussian noise on ``y`` (default 0.1).
        seed: int, Generator or ``None`` (the framework's global generator).

    Returns:
        ``(x, y)``: both float32 of shape ``(n_samples, 1)``, ``x`` in
        ``[-pi, pi]`` (in random order).
    """
    n_samples = _positive_int("make_sine: n_samples", n_samples)
    noise = _non_negative("make_sine: noise", noise)
    rng = _generator(seed)
    x = rng.uniform(-np.pi, np.pi, size=(n_samples, 1))
    y = np.sin(x) + noise * rng.standard_normal(x.shape)
    return x.astype(np.float32), y.astype(np.float32)
