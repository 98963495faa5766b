"""Tests for framework.datasets: IDX / Fashion-MNIST / digits loaders, synthetic sets, helpers."""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

import framework
from framework import datasets
from framework.datasets import fashion_mnist
from framework.errors import ConfigError, DataError

# --------------------------------------------------------------------------- #
# The package layout
# --------------------------------------------------------------------------- #

_SUBMODULES = (
    "batching",
    "digits",
    "fashion_mnist",
    "fortunes",
    "idx",
    "preprocessing",
    "splitting",
    "synthetic",
)


def test_package_reexports_every_public_name_of_its_modules():
    """``framework.datasets`` is a package of modules; every public name is importable from the top."""
    exported: set[str] = set()
    for name in _SUBMODULES:
        module = importlib.import_module(f"framework.datasets.{name}")
        assert module.__doc__, f"framework.datasets.{name} has no module docstring"
        for public in module.__all__:
            assert getattr(datasets, public) is getattr(module, public)
        exported.update(module.__all__)
    assert exported == set(datasets.__all__)


def test_package_modules_stay_small():
    folder = Path(datasets.__file__).parent
    for path in folder.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name


# --------------------------------------------------------------------------- #
# IDX writing helpers (the tests build their own files)
# --------------------------------------------------------------------------- #

_CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D, "float64": 0x0E}


def idx_bytes(array: np.ndarray, code: int | None = None) -> bytes:
    """Encode ``array`` as an IDX file by hand: magic, big-endian sizes, big-endian data."""
    code = _CODES[array.dtype.name] if code is None else code
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


# --------------------------------------------------------------------------- #
# load_idx
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", list(_CODES))
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (2, 3)])
@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_round_trip(tmp_path, rng, dtype, shape, compress):
    if dtype.startswith("float"):
        array = rng.standard_normal(shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    path = write_idx(tmp_path / "data.idx", array, compress)
    loaded = datasets.load_idx(path)
    assert loaded.shape == shape
    assert loaded.dtype == np.dtype(dtype)
    assert loaded.dtype.isnative
    assert loaded.flags.writeable
    np.testing.assert_array_equal(loaded, array)


def test_load_idx_reads_big_endian_values(tmp_path):
    # 0x0102 big-endian is 258; read little-endian it would be 513.
    raw = bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 2) + bytes([0x01, 0x02, 0xFF, 0xFE])
    (tmp_path / "be").write_bytes(raw)
    np.testing.assert_array_equal(datasets.load_idx(tmp_path / "be"), [258, -2])


def test_load_idx_detects_gzip_by_content_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    gz_without_suffix = write_idx(tmp_path / "images-idx2-ubyte", array, compress=True)
    plain_with_suffix = write_idx(tmp_path / "images-idx2-ubyte.gz", array, compress=False)
    np.testing.assert_array_equal(datasets.load_idx(gz_without_suffix), array)
    np.testing.assert_array_equal(datasets.load_idx(str(plain_with_suffix)), array)


def test_load_idx_wrong_magic_number(tmp_path):
    raw = bytearray(idx_bytes(np.zeros((2, 2), np.uint8)))
    raw[0] = 0x12
    path = tmp_path / "bad-magic.idx"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="wrong magic number") as info:
        datasets.load_idx(path)
    assert "bad-magic.idx" in str(info.value)
    assert "0x12000802" in str(info.value)


@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_unknown_type_code(tmp_path, compress):
    raw = idx_bytes(np.zeros(4, np.uint8), code=0x0A)
    path = tmp_path / "bad-code.idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(DataError, match="unknown IDX type code 0x0A") as info:
        datasets.load_idx(path)
    message = str(info.value)
    assert "bad-code.idx" in message
    assert "0x08 (uint8)" in message


@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_truncated_data(tmp_path, compress):
    array = np.zeros((10, 4, 4), dtype=np.int16)
    raw = idx_bytes(array)[:-6]  # header 16 bytes + 320 data bytes, minus 6
    path = tmp_path / "short.idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(DataError, match="truncated file") as info:
        datasets.load_idx(path)
    message = str(info.value)
    assert "short.idx" in message
    assert "(10, 4, 4)" in message
    assert "needs 336 bytes" in message
    assert "got 330" in message


def test_load_idx_truncated_header(tmp_path):
    raw = idx_bytes(np.zeros((5, 6, 7), np.uint8))[:9]  # rank 3 needs a 16-byte header
    path = tmp_path / "header.idx"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=r"header.idx: truncated file.*16 bytes, got 9"):
        datasets.load_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="truncated file"):
        datasets.load_idx(path)


def test_load_idx_trailing_bytes(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8)) + b"\x00")
    with pytest.raises(DataError, match=r"long.idx: trailing bytes.*needs 11 bytes.*got 12"):
        datasets.load_idx(path)


def test_load_idx_truncated_gzip_stream(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))[:-12])
    with pytest.raises(DataError, match=r"cut.gz: corrupt or truncated gzip"):
        datasets.load_idx(path)


def test_load_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"no such file.*nothing\.idx"):
        datasets.load_idx(tmp_path / "nothing.idx")


# --------------------------------------------------------------------------- #
# load_fashion_mnist on fake files
# --------------------------------------------------------------------------- #

_FASHION_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def fake_fashion(folder: Path, rng: np.random.Generator, n_train=6, n_test=4, compress=True):
    """Write four tiny Fashion-MNIST-shaped IDX files; return the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for key, stem in _FASHION_FILES.items():
        write_idx(folder / (stem + (".gz" if compress else "")), arrays[key], compress)
    return arrays


@pytest.fixture
def no_system_fashion(monkeypatch, tmp_path):
    """Isolate from a real install: no env var, the system folder points at an empty place."""
    monkeypatch.delenv(datasets.FASHION_MNIST_ENV, raising=False)
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_DIRS", (str(tmp_path / "system-none"),))


def _check_fashion(pair, images, labels):
    x, y = pair
    assert x.shape == (len(images), 1, 28, 28)
    assert x.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_allclose(x[:, 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_from_path(tmp_path, rng, no_system_fashion, compress):
    arrays = fake_fashion(tmp_path / "fm", rng, compress=compress)
    train, test = datasets.load_fashion_mnist(tmp_path / "fm")
    _check_fashion(train, arrays["train_x"], arrays["train_y"])
    _check_fashion(test, arrays["test_x"], arrays["test_y"])


def test_fashion_from_env_var(tmp_path, rng, no_system_fashion, monkeypatch):
    arrays = fake_fashion(tmp_path / "env-folder", rng)
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path / "env-folder"))
    _check_fashion(datasets.load_fashion_mnist(kind="test"), arrays["test_x"], arrays["test_y"])


def test_fashion_falls_back_past_an_incomplete_path(tmp_path, rng, no_system_fashion, monkeypatch):
    arrays = fake_fashion(tmp_path / "env-folder", rng)
    (tmp_path / "given").mkdir()
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(tmp_path / "env-folder"))
    x, y = datasets.load_fashion_mnist(tmp_path / "given", kind="train")
    _check_fashion((x, y), arrays["train_x"], arrays["train_y"])


def test_fashion_kind_and_raw_pixels(tmp_path, rng, no_system_fashion):
    arrays = fake_fashion(tmp_path, rng)
    x, _ = datasets.load_fashion_mnist(tmp_path, kind="train", normalize=False)
    assert x.dtype == np.uint8
    np.testing.assert_array_equal(x[:, 0], arrays["train_x"])
    # Only the test files are needed for kind="test".
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    x_test, _ = datasets.load_fashion_mnist(tmp_path, kind="test")
    assert x_test.shape == (4, 1, 28, 28)
    with pytest.raises(DataError, match="missing train-images-idx3-ubyte"):
        datasets.load_fashion_mnist(tmp_path, kind="train")
    with pytest.raises(ConfigError, match=r"kind.*'validation'"):
        datasets.load_fashion_mnist(tmp_path, kind="validation")


def test_fashion_not_found_lists_every_place(tmp_path, no_system_fashion, monkeypatch):
    given, env_dir = tmp_path / "given-folder", tmp_path / "env-folder"
    env_dir.mkdir()
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(env_dir))
    with pytest.raises(DataError) as info:
        datasets.load_fashion_mnist(given)
    message = str(info.value)
    assert f"{given} (path argument): no such folder" in message
    assert f"{env_dir} ($FRAMEWORK_FASHION_MNIST): missing" in message
    assert str(tmp_path / "system-none") in message
    assert "t10k-labels-idx1-ubyte" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert datasets.FASHION_MNIST_ENV in message


def test_fashion_mismatched_label_count(tmp_path, rng, no_system_fashion):
    fake_fashion(tmp_path, rng)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8), compress=True)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: expected 4 labels"):
        datasets.load_fashion_mnist(tmp_path)


def test_fashion_class_names():
    assert len(datasets.FASHION_MNIST_CLASSES) == 10
    assert datasets.FASHION_MNIST_CLASSES[0] == "T-shirt/top"
    assert datasets.FASHION_MNIST_CLASSES[9] == "Ankle boot"


_SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(
    not (_SYSTEM_FASHION / "t10k-labels-idx1-ubyte.gz").is_file()
    and not (_SYSTEM_FASHION / "t10k-labels-idx1-ubyte").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv(datasets.FASHION_MNIST_ENV, raising=False)
    # Both splits raw (the 47M training pixels are not converted to float32 here), then the
    # normalisation, the same code for either split, on the test split.
    (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist(normalize=False)
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == x_test.dtype == np.uint8 and y_train.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(y_test), np.full(10, 1000))
    x, y = datasets.load_fashion_mnist(kind="test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert float(np.abs(x - x_test / np.float32(255.0)).max()) <= 1e-7  # pixel / 255
    np.testing.assert_array_equal(y, y_test)


# --------------------------------------------------------------------------- #
# load_digits
# --------------------------------------------------------------------------- #

_HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None


@pytest.mark.skipif(not _HAS_SKLEARN, reason="scikit-learn not installed")
def test_load_digits_images():
    x, y = datasets.load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(np.unique(y), np.arange(10))
    # Pixels were whole counts 0..16 before scaling.
    np.testing.assert_allclose(x * 16, np.round(x * 16), atol=1e-5)


@pytest.mark.skipif(not _HAS_SKLEARN, reason="scikit-learn not installed")
def test_load_digits_flat_matches_scikit_learn():
    from sklearn.datasets import load_digits as sk_load_digits

    x, y = datasets.load_digits(return_images=False, dtype="float64")
    reference = sk_load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float64
    np.testing.assert_array_equal(x, reference.data / 16.0)
    np.testing.assert_array_equal(y, reference.target)


def test_load_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError, match=r"scikit-learn is not installed.*pip install \"framework\[data\]\""):
        datasets.load_digits()


def test_load_digits_rejects_integer_dtype():
    with pytest.raises(ConfigError, match="int32"):
        datasets.load_digits(dtype="int32")


# --------------------------------------------------------------------------- #
# Synthetic sets
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_make_spirals(n_classes):
    x, y = datasets.make_spirals(n_samples=203, n_classes=n_classes, noise=0.0, seed=3)
    assert x.shape == (203, 2) and x.dtype == np.float32
    assert y.shape == (203,) and y.dtype == np.int64
    counts = np.bincount(y, minlength=n_classes)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 203
    radius = np.linalg.norm(x, axis=1)
    assert radius.min() >= 0.05 - 1e-6 and radius.max() <= 1.0 + 1e-6
    # Without noise, each arm's angle at radius r is 2 pi (k / n_classes + (r - 0.05) / 0.95).
    t = (radius - 0.05) / 0.95
    expected = 2 * np.pi * (y / n_classes + t)
    angle_gap = np.angle(np.exp(1j * (np.arctan2(x[:, 1], x[:, 0]) - expected)))
    np.testing.assert_allclose(angle_gap, 0.0, atol=1e-4)


def test_make_spirals_seed_and_noise():
    a = datasets.make_spirals(100, noise=0.2, seed=7)
    b = datasets.make_spirals(100, noise=0.2, seed=7)
    c = datasets.make_spirals(100, noise=0.2, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    framework.set_seed(11)
    d = datasets.make_spirals(100, noise=0.2)
    framework.set_seed(11)
    e = datasets.make_spirals(100, noise=0.2)
    np.testing.assert_array_equal(d[0], e[0])


def test_make_blobs():
    x, y = datasets.make_blobs(n_samples=150, n_features=4, centers=3, cluster_std=0.5, seed=0)
    assert x.shape == (150, 4) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [50, 50, 50])
    centers = np.array([[0.0, 0.0], [5.0, -5.0]])
    x, y = datasets.make_blobs(n_samples=9, centers=centers, cluster_std=0.0, seed=0)
    np.testing.assert_array_equal(x, centers[y])
    x, y = datasets.make_blobs(n_samples=4000, centers=centers, cluster_std=2.0, seed=1)
    for k in range(2):
        np.testing.assert_allclose(x[y == k].mean(axis=0), centers[k], atol=0.2)
        np.testing.assert_allclose(x[y == k].std(axis=0), 2.0, rtol=0.1)
    a, b = datasets.make_blobs(seed=5), datasets.make_blobs(seed=5)
    np.testing.assert_array_equal(a[0], b[0])


def test_make_sine():
    x, y = datasets.make_sine(500, noise=0.0, seed=2)
    assert x.shape == y.shape == (500, 1)
    assert x.dtype == y.dtype == np.float32
    assert x.min() >= -np.pi and x.max() <= np.pi
    np.testing.assert_allclose(y, np.sin(x), atol=1e-6)
    x2, y2 = datasets.make_sine(500, noise=0.5, seed=2)
    np.testing.assert_array_equal(x, x2)
    assert 0.4 < float(np.std(y2 - np.sin(x2))) < 0.6


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: datasets.make_spirals(n_samples=0), "n_samples"),
        (lambda: datasets.make_spirals(n_classes=0), "n_classes"),
        (lambda: datasets.make_spirals(noise=-1), "noise"),
        (lambda: datasets.make_spirals(seed="x"), "seed"),
        (lambda: datasets.make_blobs(centers=np.zeros(3)), "centers"),
        (lambda: datasets.make_blobs(center_box=(1, 1)), "center_box"),
        (lambda: datasets.make_sine(noise=-0.1), "noise"),
    ],
)
def test_synthetic_bad_arguments(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


# --------------------------------------------------------------------------- #
# batches
# --------------------------------------------------------------------------- #


def test_batches_in_order_with_partial_last():
    x = np.arange(10)
    out = list(datasets.batches(x, x * 10, batch_size=4))
    assert [len(xb) for xb, _ in out] == [4, 4, 2]
    for xb, yb in out:
        np.testing.assert_array_equal(yb, xb * 10)
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in out]), x)
    assert [len(xb) for xb in datasets.batches(x, batch_size=4, drop_last=True)] == [4, 4]


def test_batches_shuffle_covers_each_sample_once_and_is_reproducible():
    x = np.arange(103)
    y = x + 1000
    epochs = [list(datasets.batches(x, y, batch_size=16, shuffle=True, seed=s)) for s in (1, 1, 2)]
    for epoch in epochs:
        seen = np.concatenate([xb for xb, _ in epoch])
        np.testing.assert_array_equal(np.sort(seen), x)
        for xb, yb in epoch:
            np.testing.assert_array_equal(yb, xb + 1000)
    first, again, other = (np.concatenate([xb for xb, _ in e]) for e in epochs)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, x)


def test_batches_generator_seed_gives_new_order_each_epoch():
    rng = np.random.default_rng(0)
    x = np.arange(50)
    one = np.concatenate(list(datasets.batches(x, batch_size=8, shuffle=True, seed=rng)))
    two = np.concatenate(list(datasets.batches(x, batch_size=8, shuffle=True, seed=rng)))
    np.testing.assert_array_equal(np.sort(one), x)
    assert not np.array_equal(one, two)


def test_batches_several_inputs():
    a = np.arange(12).reshape(6, 2)
    b = np.arange(6) * 3.0
    y = [np.arange(6), -np.arange(6)]
    out = list(datasets.batches([a, b], y, batch_size=4, shuffle=True, seed=0))
    assert len(out) == 2
    for (ab, bb), (y0, y1) in out:
        np.testing.assert_array_equal(ab[:, 0] // 2, y0)
        np.testing.assert_array_equal(bb, y0 * 3.0)
        np.testing.assert_array_equal(y1, -y0)


def test_batches_errors():
    with pytest.raises(DataError, match=r"x\[1\]: 4"):
        datasets.batches([np.zeros(5), np.zeros(4)])
    with pytest.raises(DataError, match="x: 5, y: 6"):
        datasets.batches(np.zeros(5), np.zeros(6))
    with pytest.raises(ConfigError, match=r"batch_size.*got 0"):
        datasets.batches(np.zeros(5), batch_size=0)


# --------------------------------------------------------------------------- #
# one_hot / standardize / train_test_split
# --------------------------------------------------------------------------- #


def test_one_hot():
    labels = np.array([2, 0, 1, 2])
    encoded = datasets.one_hot(labels)
    assert encoded.shape == (4, 3) and encoded.dtype == np.float32
    np.testing.assert_array_equal(encoded.argmax(axis=1), labels)
    np.testing.assert_array_equal(encoded.sum(axis=1), 1.0)
    wide = datasets.one_hot([[1, 0], [3, 3]], num_classes=5, dtype=np.float64)
    assert wide.shape == (2, 2, 5) and wide.dtype == np.float64
    assert wide[1, 0, 3] == 1.0 and wide[1, 0].sum() == 1.0
    np.testing.assert_array_equal(datasets.one_hot(np.array([1.0, 0.0])), [[0, 1], [1, 0]])


@pytest.mark.parametrize(
    ("labels", "kwargs", "match"),
    [
        ([0, 3, 1], {"num_classes": 3}, r"0\.\.2.*got 3 at index \(1,\)"),
        ([0, -1], {}, r"got -1 at index \(1,\)"),
        ([0.5, 1.0], {}, "whole numbers"),
        (["a"], {}, "integers"),
    ],
)
def test_one_hot_errors(labels, kwargs, match):
    with pytest.raises(DataError, match=match):
        datasets.one_hot(labels, **kwargs)


def test_standardize_train_stats_apply_to_test(rng):
    train = rng.normal(5.0, 3.0, size=(200, 4)).astype(np.float32)
    train[:, 3] = 2.0  # a constant feature
    test = rng.normal(5.0, 3.0, size=(50, 4)).astype(np.float32)
    z, mean, std = datasets.standardize(train)
    assert z.dtype == np.float32 and mean.shape == std.shape == (1, 4)
    np.testing.assert_allclose(z[:, :3].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:, :3].std(axis=0), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(z[:, 3], 0.0)
    assert std[0, 3] == 1.0
    z_test, mean2, std2 = datasets.standardize(test, mean, std)
    np.testing.assert_allclose(z_test, (test - train.mean(axis=0)) / std, rtol=1e-4, atol=1e-5)
    assert mean2 is not None and np.array_equal(mean2, mean) and np.array_equal(std2, std)


def test_standardize_per_channel_and_integers(rng):
    images = rng.integers(0, 256, size=(8, 3, 4, 4)).astype(np.uint8)
    z, mean, _ = datasets.standardize(images, axis=(0, 2, 3))
    assert z.dtype == np.float32 and mean.shape == (1, 3, 1, 1)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1.0, rtol=1e-4)
    _, scalar_mean, _ = datasets.standardize(images, axis=None)
    assert scalar_mean.size == 1


def test_standardize_errors():
    x = np.ones((4, 3))
    with pytest.raises(ConfigError, match="both mean and std"):
        datasets.standardize(x, mean=np.zeros(3))
    with pytest.raises(ConfigError, match="positive"):
        datasets.standardize(x, np.zeros(3), np.array([1.0, 0.0, 1.0]))
    with pytest.raises(DataError, match=r"mean of shape \(2,\)"):
        datasets.standardize(x, np.zeros(2), np.ones(2))
    with pytest.raises(DataError, match="would change"):
        datasets.standardize(x, np.zeros((2, 1, 3)), np.ones(3))


def test_train_test_split():
    x = np.arange(100)
    y = x * 2
    x_tr, x_te, y_tr, y_te = datasets.train_test_split(x, y, seed=0)
    assert len(x_te) == 25 and len(x_tr) == 75
    np.testing.assert_array_equal(np.sort(np.concatenate([x_tr, x_te])), x)
    np.testing.assert_array_equal(y_tr, x_tr * 2)
    np.testing.assert_array_equal(y_te, x_te * 2)
    again = datasets.train_test_split(x, y, seed=0)
    np.testing.assert_array_equal(again[1], x_te)
    assert not np.array_equal(datasets.train_test_split(x, y, seed=1)[1], x_te)
    assert len(datasets.train_test_split(x, y, test_size=0.101, seed=0)[1]) == 11
    assert len(datasets.train_test_split(x, y, test_size=7, seed=0)[1]) == 7


def test_train_test_split_stratified():
    y = np.repeat([0, 1, 2], [60, 30, 10])
    x = np.arange(100)
    for seed in range(3):
        x_tr, x_te, y_tr, y_te = datasets.train_test_split(x, y, test_size=0.2, seed=seed, stratify=True)
        np.testing.assert_array_equal(np.bincount(y_te), [12, 6, 2])
        np.testing.assert_array_equal(np.bincount(y_tr), [48, 24, 8])
        np.testing.assert_array_equal(y[x_te], y_te)
        np.testing.assert_array_equal(np.sort(np.concatenate([x_tr, x_te])), x)
    # Uneven shares: the per-class counts still add up to ceil(0.25 * 7) = 2.
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    _, x_te, _, y_te = datasets.train_test_split(np.arange(7), labels, seed=0, stratify=labels)
    assert len(x_te) == 2
    np.testing.assert_array_equal(np.sort(y_te), [0, 1])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"test_size": 0.0}, ConfigError, "fraction"),
        ({"test_size": 1.5}, ConfigError, "fraction"),
        ({"test_size": 10}, ConfigError, "1..9"),
        ({"test_size": 0}, ConfigError, "1..9"),
        ({"stratify": np.zeros((10, 2))}, DataError, "1-D labels"),
    ],
)
def test_train_test_split_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        datasets.train_test_split(np.zeros(10), np.zeros(10), **kwargs)
    with pytest.raises(DataError, match="x: 10, y: 9"):
        datasets.train_test_split(np.zeros(10), np.zeros(9))


def test_datasets_is_lazily_importable():
    assert framework.datasets is datasets
