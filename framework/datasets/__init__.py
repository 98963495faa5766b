"""Data sets as NumPy arrays, and the small helpers that feed them to a model.

Nothing here downloads anything. The real data sets are read from files that
are already on the machine:

- :func:`load_digits`: the 8x8 handwritten digits (1797 images) that
  scikit-learn ships inside its wheel (``pip install "framework[data]"``).
- :func:`load_fashion_mnist`: the Fashion-MNIST IDX files, looked up in a
  given folder, then ``$FRAMEWORK_FASHION_MNIST``, then
  ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
- :func:`load_idx`: any single IDX file (the MNIST format), gzip or not.

Synthetic sets for demos and tests: :func:`make_spirals`, :func:`make_blobs`,
:func:`make_sine`. Helpers: :func:`batches`, :func:`one_hot`,
:func:`standardize`, :func:`train_test_split`.

Conventions: images are NCHW float32 in ``[0, 1]``; class labels are int64 of
shape ``(N,)``; every function that draws random numbers takes ``seed`` (an
int, a ``numpy.random.Generator`` or ``None`` for the framework's global
generator, see :func:`framework.set_seed`).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from framework.errors import ConfigError, DataError
from framework.runtime.dtype import resolve_dtype
from framework.runtime.random import get_rng

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIRS",
    "FASHION_MNIST_ENV",
    "batches",
    "load_digits",
    "load_fashion_mnist",
    "load_idx",
    "make_blobs",
    "make_sine",
    "make_spirals",
    "one_hot",
    "standardize",
    "train_test_split",
]

PathLike = str | os.PathLike[str]
Seed = int | np.random.Generator | None
Arrays = np.ndarray | Sequence[np.ndarray]

_DATA_HINT = 'pip install "framework[data]"  (or: pip install scikit-learn)'

# --------------------------------------------------------------------------- #
# Shared helpers
# --------------------------------------------------------------------------- #


def _generator(seed: Seed) -> np.random.Generator:
    """A Generator from an int seed, a Generator, or the framework's global one for ``None``."""
    if seed is None:
        return get_rng()
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise ConfigError(f"seed: expected an int, a numpy.random.Generator or None, got {seed!r}")


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value >= 0:
        raise ConfigError(f"{name}: expected a number >= 0, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- #
# Digits (from scikit-learn's wheel)
# --------------------------------------------------------------------------- #


def _digits_file() -> Path | None:
    """Where scikit-learn keeps ``digits.csv.gz``, found without importing scikit-learn.

    Raises:
        DataError: if scikit-learn is not installed.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "load_digits: the digits data set is read from the copy scikit-learn ships, "
            f"but scikit-learn is not installed; install it with: {_DATA_HINT}"
        )
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if candidate.is_file():
            return candidate
    return None


def load_digits(return_images: bool = True, dtype: Any = "float32") -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 handwritten digits (1797 samples, 10 classes) from scikit-learn's wheel.

    The pixel counts (0..16) are scaled to ``[0, 1]`` by dividing by 16. The
    packaged ``sklearn/datasets/data/digits.csv.gz`` is read directly with NumPy
    (scikit-learn itself is not imported); only if a future scikit-learn moves
    that file is ``sklearn.datasets.load_digits`` called instead.

    Args:
        return_images: ``True`` (default) returns NCHW images, ``False`` flat
            64-feature rows.
        dtype: floating dtype of the pixels (default ``"float32"``).

    Returns:
        ``(x, y)``: ``x`` of shape ``(1797, 1, 8, 8)`` (or ``(1797, 64)``) and
        the given dtype with values in ``[0, 1]``; ``y`` int64 of shape
        ``(1797,)`` with values ``0..9``.

    Raises:
        DataError: if scikit-learn is not installed (with the install hint) or
            its copy of the data is unreadable.
        ConfigError: if ``dtype`` is not a floating dtype.

    Example:
        >>> x, y = load_digits()  # doctest: +SKIP
        >>> x.shape, y.shape  # doctest: +SKIP
        ((1797, 1, 8, 8), (1797,))
    """
    dtype = resolve_dtype(dtype)
    path = _digits_file()
    if path is not None:
        try:
            table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        except (OSError, ValueError, EOFError, zlib.error) as exc:
            raise DataError(
                f"load_digits: cannot read scikit-learn's copy of the digits {path}: {exc}"
            ) from exc
        if table.shape[1] != 65:
            raise DataError(
                f"load_digits: {path}: expected 65 columns (64 pixels + label), got {table.shape[1]}"
            )
        pixels, labels = table[:, :64], table[:, 64]
    else:  # pragma: no cover - only if scikit-learn reorganises its package data
        from sklearn.datasets import load_digits as _sk_load_digits

        bunch = _sk_load_digits()
        pixels, labels = np.asarray(bunch.data, np.float64), np.asarray(bunch.target)
    x = (pixels / 16.0).astype(dtype)
    if return_images:
        x = x.reshape(-1, 1, 8, 8)
    return x, labels.astype(np.int64)


# --------------------------------------------------------------------------- #
# IDX files
# --------------------------------------------------------------------------- #

# IDX type code (third byte of the magic number) -> big-endian element dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def load_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzip-compressed or not.

    Format: a 4-byte magic number ``0x00 0x00 <type> <rank>``, then ``rank``
    big-endian uint32 dimension sizes, then ``prod(sizes)`` big-endian elements.
    Type codes: ``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32,
    ``0x0D`` float32, ``0x0E`` float64. Compression is detected from the gzip
    magic bytes ``1f 8b``, not from the file name.

    Args:
        path: the file.

    Returns:
        An array of shape ``sizes`` in native byte order with the file's dtype
        (``uint8`` for the MNIST family), writable.

    Raises:
        DataError: naming the file, for a missing or unreadable file, a broken
            gzip stream, a wrong magic number, an unknown type code, or a size
            that does not match the header (expected vs actual bytes).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"load_idx: no such file: {path}") from exc
    except OSError as exc:
        raise DataError(f"load_idx: cannot read {path}: {exc}") from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"load_idx: {path}: corrupt or truncated gzip stream ({exc})") from exc

    if len(raw) < 4:
        raise DataError(
            f"load_idx: {path}: truncated file: expected at least a 4-byte magic number, got {len(raw)} bytes"
        )
    zero0, zero1, code, rank = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0:
        raise DataError(
            f"load_idx: {path}: wrong magic number 0x{raw[:4].hex()}: an IDX file starts with two zero "
            "bytes, a type code and the rank (e.g. 0x00000803 for MNIST images)"
        )
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} ({d.name})" for c, d in _IDX_DTYPES.items())
        raise DataError(f"load_idx: {path}: unknown IDX type code 0x{code:02X}; expected one of {known}")
    header = 4 + 4 * rank
    if len(raw) < header:
        raise DataError(
            f"load_idx: {path}: truncated file: the header of a rank-{rank} IDX file takes "
            f"{header} bytes, got {len(raw)}"
        )
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=rank, offset=4))
    dtype = _IDX_DTYPES[code]
    count = int(np.prod(shape, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated file" if len(raw) < expected else "trailing bytes after the data"
        raise DataError(
            f"load_idx: {path}: {problem}: a {dtype.name} array of shape {shape} needs "
            f"{expected} bytes (header {header} + data {count * dtype.itemsize}), got {len(raw)}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


# --------------------------------------------------------------------------- #
# Fashion-MNIST
# --------------------------------------------------------------------------- #

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Names of the 10 Fashion-MNIST classes, indexed by label."""

FASHION_MNIST_ENV = "FRAMEWORK_FASHION_MNIST"
"""Environment variable naming a folder (or ``os.pathsep``-separated folders) with the files."""

FASHION_MNIST_DIRS: tuple[str, ...] = ("/usr/share/datasets/fashion-mnist",)
"""System folders searched last; Debian's ``dataset-fashion-mnist`` installs the files there."""

_FASHION_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_FASHION_HOWTO = (
    "Get the four files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (gzip or not) in one of these ways:\n"
    "  - on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist  "
    "(installs them into /usr/share/datasets/fashion-mnist)\n"
    "  - or download them from https://github.com/zalandoresearch/fashion-mnist (data/fashion) "
    f"into a folder and pass it as path=... or set {FASHION_MNIST_ENV}=/that/folder"
)


def _candidates(stem: str) -> list[str]:
    """File names accepted for one IDX stem: dashes or a dot before ``idx``, gzip or not."""
    dotted = stem.replace("-idx", ".idx")
    return [stem + ".gz", stem, dotted + ".gz", dotted]


def _find_in(folder: Path, stems: Sequence[str]) -> tuple[dict[str, Path], list[str]]:
    """The files found in ``folder`` (by stem) and the stems missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for stem in stems:
        for name in _candidates(stem):
            if (folder / name).is_file():
                found[stem] = folder / name
                break
        else:
            missing.append(stem)
    return found, missing


def _fashion_folders(path: PathLike | None) -> list[tuple[str, Path]]:
    """The folders searched, in order, each with where it came from."""
    folders: list[tuple[str, Path]] = []
    if path is not None:
        folders.append(("path argument", Path(path)))
    env = os.environ.get(FASHION_MNIST_ENV, "")
    for entry in env.split(os.pathsep):
        if entry.strip():
            folders.append((f"${FASHION_MNIST_ENV}", Path(entry.strip())))
    folders.extend(("system folder", Path(d)) for d in FASHION_MNIST_DIRS)
    return folders


def _fashion_split(files: dict[str, Path], split: str, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    images_stem, labels_stem = _FASHION_STEMS[split]
    images, labels = load_idx(files[images_stem]), load_idx(files[labels_stem])
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"load_fashion_mnist: {files[images_stem]}: expected uint8 images of shape (N, 28, 28), "
            f"got {images.dtype.name} of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"load_fashion_mnist: {files[labels_stem]}: expected {images.shape[0]} labels (one per image "
            f"in {files[images_stem].name}), got shape {labels.shape}"
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(
            f"load_fashion_mnist: {files[labels_stem]}: labels must be in 0..9, found {int(labels.max())}"
        )
    x = images[:, None, :, :]
    if normalize:
        x = x.astype(np.float32)
        x *= np.float32(1.0 / 255.0)
    return x, labels.astype(np.int64)


def load_fashion_mnist(path: PathLike | None = None, kind: str = "both", normalize: bool = True) -> Any:
    """Fashion-MNIST (70000 28x28 grey images of clothes, 10 classes) from local IDX files.

    The files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally
    ending in ``.gz``) are looked up, in order, in ``path``, in the folder(s)
    named by ``$FRAMEWORK_FASHION_MNIST``, then in
    ``/usr/share/datasets/fashion-mnist``; the first folder holding every file
    the requested ``kind`` needs is used. Nothing is downloaded.

    Args:
        path: folder holding the files (default ``None``: only the
            environment variable and the system folder are searched).
        kind: ``"both"`` (default), ``"train"`` or ``"test"``.
        normalize: ``True`` (default) gives float32 pixels in ``[0, 1]``
            (divided by 255); ``False`` keeps the raw uint8 values.

    Returns:
        ``kind="both"``: ``((x_train, y_train), (x_test, y_test))``; otherwise
        one ``(x, y)`` pair. ``x`` has shape ``(N, 1, 28, 28)`` (N = 60000 for
        train, 10000 for test), ``y`` is int64 of shape ``(N,)`` in ``0..9``
        (names in :data:`FASHION_MNIST_CLASSES`).

    Raises:
        DataError: when no searched folder has the files (the message lists
            each folder searched, what it lacked, and how to get the files),
            or when a file is malformed.
        ConfigError: for an unknown ``kind``.
    """
    if kind not in ("both", "train", "test"):
        raise ConfigError(f"load_fashion_mnist: kind: expected 'both', 'train' or 'test', got {kind!r}")
    splits = ("train", "test") if kind == "both" else (kind,)
    stems = [stem for split in splits for stem in _FASHION_STEMS[split]]

    searched: list[str] = []
    for origin, folder in _fashion_folders(path):
        if not folder.is_dir():
            searched.append(f"  - {folder} ({origin}): no such folder")
            continue
        found, missing = _find_in(folder, stems)
        if not missing:
            pairs = tuple(_fashion_split(found, split, normalize) for split in splits)
            return pairs if kind == "both" else pairs[0]
        searched.append(f"  - {folder} ({origin}): missing {', '.join(m + '[.gz]' for m in missing)}")
    raise DataError(
        "load_fashion_mnist: the Fashion-MNIST files were not found. Searched:\n"
        + "\n".join(searched)
        + "\n"
        + _FASHION_HOWTO
    )


# --------------------------------------------------------------------------- #
# Synthetic data sets
# --------------------------------------------------------------------------- #


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
    rng = _generator(seed)
    if isinstance(centers, (int, np.integer)) and not isinstance(centers, bool):
        n_centers = _positive_int("make_blobs: centers", centers)
        n_features = _positive_int("make_blobs: n_features", n_features)
        low, high = center_box
        if not low < high:
            raise ConfigError(
                f"make_blobs: center_box: expected (low, high) with low < high, got {center_box!r}"
            )
        center_array = rng.uniform(low, high, size=(n_centers, n_features))
    else:
        center_array = np.asarray(centers, dtype=np.float64)
        if center_array.ndim != 2 or center_array.shape[0] == 0:
            raise ConfigError(
                "make_blobs: centers: expected an int or an array of shape (n_clusters, n_features), "
                f"got shape {center_array.shape}"
            )
    sizes = _class_sizes(n_samples, center_array.shape[0])
    y = np.repeat(np.arange(center_array.shape[0], dtype=np.int64), sizes)
    x = center_array[y] + cluster_std * rng.standard_normal((n_samples, center_array.shape[1]))
    if shuffle:
        order = rng.permutation(n_samples)
        x, y = x[order], y[order]
    return x.astype(np.float32), y


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


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def _as_list(arrays: Arrays, name: str) -> tuple[list[np.ndarray], bool]:
    """``arrays`` as a list of arrays, and whether it was given as a list/tuple."""
    if isinstance(arrays, (list, tuple)):
        if not arrays:
            raise DataError(f"{name}: expected an array or a non-empty list of arrays, got an empty list")
        return [np.asarray(a) for a in arrays], True
    return [np.asarray(arrays)], False


def _common_length(named: list[tuple[str, np.ndarray]], where: str) -> int:
    for label, array in named:
        if array.ndim == 0:
            raise DataError(f"{where}: {label} must have a sample axis, got a scalar")
    lengths = {label: len(array) for label, array in named}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{label}: {n}" for label, n in lengths.items())
        raise DataError(f"{where}: every array needs the same number of samples (first axis), got {listing}")
    return next(iter(lengths.values()))


def batches(
    x: Arrays,
    y: Arrays | None = None,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: Seed = None,
    drop_last: bool = False,
) -> Iterator[Any]:
    """Iterate over mini-batches of ``x`` (and ``y``), one pass over the data.

    Every sample appears exactly once per pass (except the last
    ``n % batch_size`` samples when ``drop_last``). With ``shuffle`` the order
    is a permutation drawn from ``seed``, so the same seed gives the same
    batches.

    Args:
        x: an array of shape ``(N, ...)``, or a list/tuple of such arrays for a
            model of several inputs.
        y: targets, same form as ``x`` (default ``None``: yield ``x`` batches
            only).
        batch_size: samples per batch (default 32); the last batch may be
            smaller.
        shuffle: visit the samples in random order (default ``False``).
        seed: int, Generator or ``None`` (the framework's global generator).
        drop_last: skip a final incomplete batch (default ``False``).

    Yields:
        ``(x_batch, y_batch)``, or ``x_batch`` when ``y`` is ``None``; each of
        shape ``(B, ...)`` with ``B <= batch_size``, and a list where the input
        was a list. Unshuffled batches are views, shuffled ones copies.

    Raises:
        DataError: if the arrays differ in length.
        ConfigError: for a bad ``batch_size``.
    """
    batch_size = _positive_int("batches: batch_size", batch_size)
    xs, x_is_list = _as_list(x, "batches: x")
    ys, y_is_list = _as_list(y, "batches: y") if y is not None else ([], False)
    named = [(f"x[{i}]" if x_is_list else "x", a) for i, a in enumerate(xs)]
    named += [(f"y[{i}]" if y_is_list else "y", a) for i, a in enumerate(ys)]
    n = _common_length(named, "batches")
    order = _generator(seed).permutation(n) if shuffle else None
    return _batch_iterator(
        xs, x_is_list, ys if y is not None else None, y_is_list, n, batch_size, order, drop_last
    )


def _batch_iterator(
    xs: list[np.ndarray],
    x_is_list: bool,
    ys: list[np.ndarray] | None,
    y_is_list: bool,
    n: int,
    batch_size: int,
    order: np.ndarray | None,
    drop_last: bool,
) -> Iterator[Any]:
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index: Any = slice(start, start + batch_size) if order is None else order[start : start + batch_size]
        xb = [a[index] for a in xs]
        xb_out = xb if x_is_list else xb[0]
        if ys is None:
            yield xb_out
        else:
            yb = [a[index] for a in ys]
            yield xb_out, (yb if y_is_list else yb[0])


def one_hot(labels: Any, num_classes: int | None = None, dtype: Any = np.float32) -> np.ndarray:
    """One-hot encode integer class labels: ``out[..., k] = (labels == k)``.

    Args:
        labels: integer labels of any shape ``S`` (floats are accepted when
            they hold whole numbers).
        num_classes: number of classes ``C`` (default ``None``:
            ``labels.max() + 1``).
        dtype: dtype of the result (default float32).

    Returns:
        An array of shape ``S + (C,)``.

    Raises:
        DataError: for non-integer, negative or ``>= num_classes`` labels
            (naming the first offending value and its position).
    """
    labels = np.asarray(labels)
    if labels.dtype == np.bool_ or not (
        np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)
    ):
        raise DataError(f"one_hot: labels must be integers, got dtype {labels.dtype}")
    if np.issubdtype(labels.dtype, np.floating):
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise DataError(
                f"one_hot: labels must be whole numbers, got {labels[where].item()!r} at index {where}"
            )
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
        num_classes = max(num_classes, 0)
    else:
        num_classes = _positive_int("one_hot: num_classes", num_classes)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"one_hot: labels must be in 0..{num_classes - 1} (num_classes={num_classes}), "
            f"got {labels[where].item()!r} at index {where}"
        )
    return np.eye(num_classes, dtype=dtype)[labels.astype(np.int64)]


def standardize(
    x: Any,
    mean: Any = None,
    std: Any = None,
    axis: int | tuple[int, ...] | None = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shift and scale to zero mean and unit variance: ``(x - mean) / std``.

    Compute the statistics on the training set and pass them back for the test
    set: ``x_tr, m, s = standardize(x_train)``; ``x_te, _, _ =
    standardize(x_test, m, s)``. A feature that is constant in ``x`` gets
    ``std = 1`` (it is only centred).

    Args:
        x: array of shape ``(N, ...)``.
        mean: statistics to apply (default ``None``: computed from ``x``);
            give both ``mean`` and ``std`` or neither.
        std: see ``mean``; every entry must be positive.
        axis: axes the statistics are taken over (default 0, per feature; use
            ``(0, 2, 3)`` for per-channel statistics of NCHW images, ``None``
            for one scalar).

    Returns:
        ``(x_std, mean, std)``: ``x_std`` of ``x``'s shape and float dtype
        (float32 for integer input); ``mean`` and ``std`` keep the reduced
        axes as size 1, so they broadcast against ``x``.

    Raises:
        ConfigError: if only one of ``mean`` / ``std`` is given, or ``std``
            has a non-positive entry.
        DataError: if ``mean`` / ``std`` do not broadcast against ``x``.
    """
    x = np.asarray(x)
    out_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)
    if (mean is None) != (std is None):
        raise ConfigError("standardize: give both mean and std (the training statistics) or neither")
    if mean is None:
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=axis, keepdims=True)
        std = x64.std(axis=axis, keepdims=True)
        std = np.where(std > 0, std, 1.0)
        mean, std = mean.astype(out_dtype), std.astype(out_dtype)
    else:
        mean, std = np.asarray(mean, dtype=out_dtype), np.asarray(std, dtype=out_dtype)
        if not np.all(std > 0):
            raise ConfigError(f"standardize: std must be positive everywhere, got min {float(std.min())!r}")
        for name, stat in (("mean", mean), ("std", std)):
            try:
                shape = np.broadcast_shapes(x.shape, stat.shape)
            except ValueError as exc:
                raise DataError(
                    f"standardize: {name} of shape {stat.shape} does not broadcast against "
                    f"x of shape {x.shape}"
                ) from exc
            if shape != x.shape:
                raise DataError(
                    f"standardize: {name} of shape {stat.shape} would change x's shape {x.shape} to {shape}"
                )
    x_std = (x.astype(out_dtype) - mean) / std
    return x_std.astype(out_dtype, copy=False), mean, std


def train_test_split(
    x: Any,
    y: Any,
    test_size: float | int = 0.25,
    seed: Seed = None,
    stratify: bool | Any = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split ``(x, y)`` at random into a training and a test part.

    The test part holds ``ceil(test_size * N)`` samples for a fraction, or
    ``test_size`` samples for an int. With ``stratify`` each class keeps its
    share in both parts (the per-class test counts are the largest-remainder
    rounding of ``count_k * n_test / N``, so they add up to ``n_test``).

    Args:
        x: array of shape ``(N, ...)``.
        y: array of shape ``(N, ...)``.
        test_size: fraction in ``(0, 1)`` or a count in ``1..N-1`` (default
            0.25).
        seed: int, Generator or ``None`` (the framework's global generator).
        stratify: ``True`` to stratify by ``y`` (1-D class labels), an array
            of ``N`` labels to stratify by, or ``False`` (default).

    Returns:
        ``(x_train, x_test, y_train, y_test)``, in random order.

    Raises:
        DataError: if ``x`` and ``y`` differ in length or the stratification
            labels are not 1-D of length ``N``.
        ConfigError: for a ``test_size`` that leaves either part empty.
    """
    x, y = np.asarray(x), np.asarray(y)
    n = _common_length([("x", x), ("y", y)], "train_test_split")
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.number)):
        raise ConfigError(f"train_test_split: test_size: expected a fraction or a count, got {test_size!r}")
    if isinstance(test_size, (int, np.integer)):
        n_test = int(test_size)
    elif 0.0 < test_size < 1.0:
        n_test = int(np.ceil(test_size * n))
    else:
        raise ConfigError(f"train_test_split: test_size: a fraction must be in (0, 1), got {test_size!r}")
    if not 1 <= n_test <= n - 1:
        raise ConfigError(
            f"train_test_split: test_size={test_size!r} gives {n_test} test samples out of {n}; "
            f"both parts need at least one sample (1..{n - 1})"
        )
    rng = _generator(seed)
    order = rng.permutation(n)

    if stratify is False or stratify is None:
        test_idx, train_idx = order[:n_test], order[n_test:]
    else:
        strata = y if stratify is True else np.asarray(stratify)
        if strata.ndim != 1 or len(strata) != n:
            raise DataError(
                f"train_test_split: stratify needs 1-D labels of length {n}, got shape {strata.shape}"
            )
        _, codes, counts = np.unique(strata, return_inverse=True, return_counts=True)
        codes = codes.reshape(-1)
        exact = counts * (n_test / n)
        alloc = np.floor(exact).astype(np.int64)
        short = n_test - int(alloc.sum())
        if short:
            alloc[np.argsort(-(exact - alloc), kind="stable")[:short]] += 1
        # Rank of each shuffled sample among the shuffled samples of its class.
        shuffled_codes = codes[order]
        by_class = np.argsort(shuffled_codes, kind="stable")
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        rank = np.empty(n, dtype=np.int64)
        rank[by_class] = np.arange(n) - starts[shuffled_codes[by_class]]
        in_test = rank < alloc[shuffled_codes]
        test_idx, train_idx = order[in_test], order[~in_test]
    return x[train_idx], x[test_idx], y[train_idx], y[test_idx]
