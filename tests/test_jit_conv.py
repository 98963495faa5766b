"""The convolution's compiled kernels (:mod:`plugins.im2col_kernels`) against the NumPy code they replace:
im2col, the batch-last im2col and col2im, the batch-last layout copies, and Conv2d through both lowerings."""

from __future__ import annotations

import numpy as np
import pytest

from framework.layers import Conv2d
from framework.runtime import blas, jit
from framework.runtime.dtype import default_dtype
from framework.testing import check_gradients
from plugins import im2col_kernels
from plugins.conv_geometry import conv_output_size
from plugins.im2col import col2im_batch_last, im2col, im2col_batch_last
from tests.support import requires_numba, spy_on

KERNELS = ("im2col", "im2col_batch_last", "col2im_batch_last", "to_nchw", "to_batch_last")


@pytest.fixture
def calls(monkeypatch):
    """The names of the kernels run, in order (each kernel entry of the module wrapped by a spy)."""
    return spy_on(monkeypatch, im2col_kernels, KERNELS)


def _geometries(count: int, seed: int):
    """``count`` random geometries that fit, with their output size: every form the functions take."""
    rng = np.random.default_rng(seed)
    found = 0
    while found < count:
        kernel, stride, dilation = (tuple(int(v) for v in rng.integers(1, top, 2)) for top in (6, 4, 3))
        padding = tuple(tuple(int(v) for v in rng.integers(0, 4, 2)) for _ in range(2))
        shape = (
            int(rng.choice([1, 2, 3, 5])),
            int(rng.integers(1, 4)),
            *(int(v) for v in rng.integers(1, 12, 2)),
        )
        sizes = [
            conv_output_size(shape[2 + a], kernel[a], stride[a], padding[a], dilation[a]) for a in (0, 1)
        ]
        if min(sizes) > 0:
            found += 1
            yield shape, kernel, stride, padding, dilation, tuple(sizes)


def _with(engine: bool, function, *args, **kwargs):
    with jit.using(engine):
        return function(*args, **kwargs)


@requires_numba
def test_im2col_kernels_equal_the_numpy_functions_bit_for_bit(calls, dtype):
    rng = np.random.default_rng(0)
    for case, (shape, kernel, stride, padding, dilation, (oh, ow)) in enumerate(_geometries(60, 1)):
        geometry = (kernel, stride, padding, dilation)
        x = rng.standard_normal(shape).astype(dtype)
        windows = (int(rng.integers(1, oh + 1)), int(rng.integers(1, ow + 1))) if case % 3 == 0 else None
        cols = rng.standard_normal((kernel[0] * kernel[1] * shape[1], oh * ow * shape[0])).astype(dtype)
        results = {}
        for engine in (True, False):
            calls.clear()
            with jit.using(engine):
                out = np.empty_like(cols)
                results[engine] = (
                    im2col(x, *geometry, windows=windows),
                    im2col_batch_last(x, *geometry, out=out),
                    col2im_batch_last(cols, shape, *geometry),
                )
                assert results[engine][1] is out  # the buffer given is the one written
            expected = ["im2col", "im2col_batch_last", "col2im_batch_last"] if engine else []
            assert calls == expected, (shape, geometry, calls)
        for ours, theirs in zip(results[True], results[False], strict=True):
            assert ours.dtype == theirs.dtype == dtype and ours.shape == theirs.shape
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{shape} {geometry} {windows}")


@requires_numba
def test_col2im_batch_last_kernel_takes_the_transposed_convolutions_windows(calls, dtype):
    rng = np.random.default_rng(2)
    for shape, kernel, stride, padding, dilation, (oh, ow) in _geometries(12, 3):
        windows = (max(1, oh - 1), max(1, ow - 2))
        cols = rng.standard_normal((kernel[0] * kernel[1] * shape[1], windows[0] * windows[1] * shape[0]))
        cols = cols.astype(dtype)
        ours, theirs = (
            _with(engine, col2im_batch_last, cols, shape, kernel, stride, padding, dilation, windows=windows)
            for engine in (True, False)
        )
        np.testing.assert_array_equal(ours, theirs)
    assert calls == ["col2im_batch_last"] * 12


@requires_numba
def test_the_in_place_im2col_writes_the_buffer_it_is_given(calls):
    x = np.random.default_rng(4).standard_normal((3, 2, 7, 6)).astype(np.float32)
    out = np.full((3, 2 * 3 * 2, 6 * 8), np.nan, np.float32)
    with jit.using(True):
        assert im2col(x, (3, 2), 1, ((1, 0), (2, 1)), out=out) is out
    np.testing.assert_array_equal(out, _with(False, im2col, x, (3, 2), 1, ((1, 0), (2, 1))))
    assert calls == ["im2col"]


@requires_numba
def test_other_dtypes_and_layouts_run_the_numpy_functions(calls):
    x = np.random.default_rng(5).standard_normal((2, 3, 9, 8))
    cols = _with(False, im2col_batch_last, x, 3, 1, 1)  # (27, 9*8*2)
    with jit.using(True):
        for array in (x[:, :, ::2], x.astype(np.float16)):  # not contiguous; not float32 or float64
            im2col(array, 3)
            im2col_batch_last(array, 3)
        col2im_batch_last(cols[:, ::2], (1, 3, 9, 8), 3, 1, 1)
        col2im_batch_last(cols.astype(np.float16), x.shape, 3, 1, 1)
        im2col(x.astype(np.float32), 2, out=np.empty((2, 12, 56)))  # out of another dtype than x
        im2col_batch_last(x.astype(np.float32), 2, out=np.empty((12, 112)))
    assert calls == []


@requires_numba
@pytest.mark.parametrize("shape", [(64, 16, 10, 10), (1, 3, 5, 7), (5, 2, 1, 17), (7, 1, 4, 8)])
def test_layout_kernels_equal_numpy(dtype, shape):
    n, o, oh, ow = shape
    rng = np.random.default_rng(6)
    product = rng.standard_normal((o, oh * ow * n)).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype)
    as_nchw = product.reshape(o, oh, ow, n).transpose(3, 0, 1, 2)
    np.testing.assert_array_equal(
        im2col_kernels.to_nchw(product, shape, bias), as_nchw + bias.reshape(-1, 1, 1)
    )
    np.testing.assert_array_equal(im2col_kernels.to_nchw(product, shape, None), as_nchw)
    g = (rng.standard_normal(shape) + 1).astype(dtype)
    g_last, sums = im2col_kernels.to_batch_last(g, with_sums=True)
    expected = np.ascontiguousarray(g.transpose(1, 2, 3, 0)).reshape(o, -1)
    np.testing.assert_array_equal(g_last, expected)
    assert sums is not None and sums.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(sums, blas.sum_rows(expected.T), rtol=tol, atol=tol * np.abs(g).sum() / o)
    np.testing.assert_array_equal(im2col_kernels.to_batch_last(g, with_sums=False)[0], expected)


def _conv_run(engine: bool, layer_args: dict, x: np.ndarray, g_seed: int):
    rng = np.random.default_rng(g_seed)
    with default_dtype(x.dtype):
        layer = Conv2d(**layer_args)
    layer.weight.data[...] = rng.standard_normal(layer.weight.data.shape)
    layer.bias.data[...] = rng.standard_normal(layer.bias.data.shape)
    with jit.using(engine):
        y = layer(x)
        dx = layer.backward(rng.standard_normal(y.shape).astype(x.dtype))
    return y, dx, layer.weight.grad, layer.bias.grad


LOWERINGS = [  # (Conv2d arguments, input shape, the kernels its forward + backward run)
    (
        {"in_channels": 1, "out_channels": 6, "kernel_size": 5, "padding": 2},  # LeNet-5's first layer
        (4, 1, 12, 11),
        ["im2col", "col2im_batch_last"],
    ),
    (
        {"in_channels": 3, "out_channels": 4, "kernel_size": (3, 2), "stride": (2, 1), "dilation": (1, 2)},
        (5, 3, 9, 8),
        ["im2col", "col2im_batch_last"],
    ),
    (
        {"in_channels": 6, "out_channels": 16, "kernel_size": 5},  # LeNet-5's second layer: batch-last
        (3, 6, 10, 9),
        ["im2col_batch_last", "to_nchw", "to_batch_last", "col2im_batch_last"],
    ),
    (
        {"in_channels": 8, "out_channels": 3, "kernel_size": 4, "padding": "same"},  # asymmetric padding
        (2, 8, 7, 9),
        ["im2col_batch_last", "to_nchw", "to_batch_last", "col2im_batch_last"],
    ),
    (
        {"in_channels": 9, "out_channels": 5, "kernel_size": 3, "stride": 2, "padding": 1},
        (1, 9, 11, 12),
        ["im2col_batch_last", "to_nchw", "to_batch_last", "col2im_batch_last"],
    ),
]


@requires_numba
@pytest.mark.parametrize(("layer_args", "shape", "kernels"), LOWERINGS)
def test_conv2d_through_both_lowerings_equals_the_numpy_path(calls, dtype, layer_args, shape, kernels):
    x = np.random.default_rng(7).standard_normal(shape).astype(dtype)
    ours = _conv_run(True, layer_args, x, 8)
    assert calls == kernels
    theirs = _conv_run(False, layer_args, x, 8)
    assert calls == kernels, "the NumPy run called a kernel"
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    for name, a, b in zip(("y", "dx", "dW", "db"), ours, theirs, strict=True):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape, name
        np.testing.assert_allclose(a, b, **tol, err_msg=f"{layer_args} {name}")


@requires_numba
@pytest.mark.parametrize("case", [0, 2], ids=["per-sample", "batch-last"])
def test_conv2d_kernel_gradients_match_finite_differences(calls, case):
    layer_args, shape, kernels = LOWERINGS[case]
    x = np.random.default_rng(9).standard_normal((2, *shape[1:]))
    with default_dtype(np.float64), jit.using(True):
        check_gradients(Conv2d(**layer_args), x)
    assert set(calls) == set(kernels)
