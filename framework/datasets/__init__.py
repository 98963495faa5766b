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

Every name is importable from here; each lives in a module of its own concern:
``digits``, ``idx`` and ``fashion_mnist`` (the loaders), ``synthetic``,
``batching``, ``preprocessing`` (``one_hot``, ``standardize``) and
``splitting`` (``train_test_split``).

Conventions: images are NCHW float32 in ``[0, 1]``; class labels are int64 of
shape ``(N,)``; every function that draws random numbers takes ``seed`` (an
int, a ``numpy.random.Generator`` or ``None`` for the framework's global
generator, see :func:`framework.set_seed`).
"""

from __future__ import annotations

from framework.datasets.batching import batches
from framework.datasets.digits import load_digits
from framework.datasets.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIRS,
    FASHION_MNIST_ENV,
    load_fashion_mnist,
)
from framework.datasets.fortunes import FORTUNES_DIRS, FORTUNES_ENV, fortune_categories, load_fortunes
from framework.datasets.idx import load_idx
from framework.datasets.preprocessing import one_hot, standardize
from framework.datasets.splitting import train_test_split
from framework.datasets.synthetic import make_blobs, make_sine, make_spirals

__all__ = [
    # real data sets, read from local files
    "load_digits",
    "load_fortunes",
    "fortune_categories",
    "FORTUNES_ENV",
    "FORTUNES_DIRS",
    "load_idx",
    "load_fashion_mnist",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ENV",
    "FASHION_MNIST_DIRS",
    # synthetic data sets
    "make_spirals",
    "make_blobs",
    "make_sine",
    # feeding, transforming and splitting arrays
    "batches",
    "one_hot",
    "standardize",
    "train_test_split",
]
