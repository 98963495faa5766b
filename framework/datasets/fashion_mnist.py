"""Fashion-MNIST from local IDX files: :func:`load_fashion_mnist` and its search path.

Nothing is downloaded: the files are looked up in a given folder, then
``$FRAMEWORK_FASHION_MNIST``, then the system folders in
:data:`FASHION_MNIST_DIRS` (Debian's ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from framework.base.validation import check_bool
from framework.datasets._common import PathLike, _path
from framework.datasets.idx import load_idx
from framework.errors import ConfigError, DataError

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_DIRS", "FASHION_MNIST_ENV", "load_fashion_mnist"]

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
        folders.append(("path argument", _path("load_fashion_mnist: path", path)))
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
    normalize = check_bool("load_fashion_mnist", "normalize", normalize)
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
