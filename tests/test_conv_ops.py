"""The pure convolution helpers: im2col against a slow loop, col2im as its adjoint."""

from __future__ import annotations

import numpy as np
import pytest

from framework.errors import ShapeError
from plugins.conv_ops import (
    avg_pool_divisor,
    col2im,
    col2im_batch_last,
    col2im_grid,
    conv_output_size,
    expand_padding,
    grid_shape,
    im2col,
    im2col_grid,
    pair,
    pool_output_size,
    same_padding,
)

# (input shape, kernel, stride, padding, dilation)
CASES = [
    ((2, 1, 5, 5), 3, 1, 0, 1),
    ((2, 3, 6, 7), (2, 3), 1, 1, 1),
    ((1, 2, 7, 6), 3, 2, 1, 1),
    ((2, 2, 8, 5), (3, 2), (2, 1), (2, 0), 1),
    ((1, 1, 6, 6), 2, 3, 0, 1),
    ((1, 2, 5, 6), 4, 1, ((1, 2), (2, 1)), 1),
    ((2, 1, 7, 7), 2, 1, 1, 2),
    ((1, 2, 9, 8), (2, 3), (2, 1), 1, (2, 1)),
]


def slow_im2col(x, kernel, stride, padding, dilation):
    """One element at a time, straight from the definition."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    (top, bottom), (left, right) = expand_padding(padding)
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + top + bottom, w + left + right))
    xp[:, :, top : top + h, left : left + w] = x
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    cols = np.zeros((n, c * kh * kw, oh * ow))
    for b in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    for a in range(oh):
                        for q in range(ow):
                            cols[b, (ch * kh + i) * kw + j, a * ow + q] = xp[
                                b, ch, a * sh + i * dh, q * sw + j * dw
                            ]
    return cols


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation", CASES)
def test_im2col_matches_slow_loop(rng, shape, kernel, stride, padding, dilation):
    x = rng.standard_normal(shape)
    expected = slow_im2col(x, kernel, stride, padding, dilation)
    np.testing.assert_array_equal(im2col(x, kernel, stride, padding, dilation), expected)


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation", CASES)
def test_col2im_is_the_adjoint_of_im2col(rng, shape, kernel, stride, padding, dilation):
    x = rng.standard_normal(shape)
    cols = im2col(x, kernel, stride, padding, dilation)
    c = rng.standard_normal(cols.shape)
    back = col2im(c, shape, kernel, stride, padding, dilation)
    assert back.shape == shape
    np.testing.assert_allclose(np.vdot(cols, c), np.vdot(x, back), rtol=1e-12)


def test_col2im_counts_overlaps():
    # col2im of all-ones columns counts how many windows read each pixel.
    cols = np.ones((1, 9, 9))
    counts = col2im(cols, (1, 1, 5, 5), 3, 1, 0)[0, 0]
    expected_row = np.array([1, 2, 3, 2, 1])
    np.testing.assert_array_equal(counts, np.outer(expected_row, expected_row))


def test_im2col_writes_into_a_given_buffer(rng):
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    buffer = np.empty((2, 27, 9), dtype=np.float32)
    out = im2col(x, 3, out=buffer)
    assert out is buffer
    np.testing.assert_array_equal(out, slow_im2col(x, 3, 1, 0, 1))


def test_im2col_keeps_float32(rng):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    cols = im2col(x, 3, 2, 1)
    assert cols.dtype == np.float32
    assert col2im(cols, x.shape, 3, 2, 1).dtype == np.float32


@pytest.mark.parametrize(
    "size, kernel, stride, padding, expected",
    [
        (28, 5, 1, 0, 24),
        (28, 3, 2, 1, 14),
        (7, 2, 2, 0, 3),
        (5, 5, 1, 0, 1),
        (4, 5, 1, 0, 0),
        (6, 4, 1, (1, 2), 6),
    ],
)
def test_conv_output_size(size, kernel, stride, padding, expected):
    assert conv_output_size(size, kernel, stride, padding) == expected


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5, (2, 5)])
def test_same_padding_keeps_size_and_puts_extra_bottom_right(kernel):
    (top, bottom), (left, right) = pads = same_padding(kernel)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    assert (top + bottom, left + right) == (kh - 1, kw - 1)
    assert 0 <= bottom - top <= 1 and 0 <= right - left <= 1
    assert im2col(np.zeros((1, 1, 7, 9)), kernel, 1, pads).shape[-1] == 7 * 9


def test_kernel_larger_than_padded_input_is_a_shape_error():
    with pytest.raises(ShapeError, match=r"\(6, 6\)"):
        im2col(np.zeros((1, 1, 4, 4)), 7, 1, 1)


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation", CASES)
def test_col2im_batch_last_equals_col2im_of_transposed_columns(rng, shape, kernel, stride, padding, dilation):
    cols = rng.standard_normal(im2col(np.zeros(shape), kernel, stride, padding, dilation).shape)
    batch_last = np.ascontiguousarray(cols.transpose(1, 2, 0)).reshape(cols.shape[1], -1)
    np.testing.assert_allclose(
        col2im_batch_last(batch_last, shape, kernel, stride, padding, dilation),
        col2im(cols, shape, kernel, stride, padding, dilation),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation", CASES)
def test_windows_keep_the_leading_window_positions(rng, shape, kernel, stride, padding, dilation):
    x = rng.standard_normal(shape)
    full = im2col(x, kernel, stride, padding, dilation)
    (kh, kw), (sh, _), (dh, _) = pair(kernel), pair(stride), pair(dilation)
    n, c = shape[:2]
    oh = conv_output_size(shape[2], kh, sh, expand_padding(padding)[0], dh)
    ow = full.shape[-1] // oh
    wh, ww = max(1, oh - 1), max(1, ow - 1)
    part = im2col(x, kernel, stride, padding, dilation, windows=(wh, ww))
    expected = full.reshape(n, c * kh * kw, oh, ow)[:, :, :wh, :ww].reshape(n, -1, wh * ww)
    np.testing.assert_array_equal(part, expected)
    # col2im with the same windows stays the adjoint
    c_ = rng.standard_normal(part.shape)
    back = col2im(c_, shape, kernel, stride, padding, dilation, windows=(wh, ww))
    np.testing.assert_allclose(np.vdot(part, c_), np.vdot(x, back), rtol=1e-12)
    last = np.ascontiguousarray(c_.transpose(1, 2, 0)).reshape(c_.shape[1], -1)
    np.testing.assert_allclose(
        col2im_batch_last(last, shape, kernel, stride, padding, dilation, windows=(wh, ww)), back, atol=1e-12
    )


def test_more_windows_than_fit_is_a_shape_error():
    with pytest.raises(ShapeError, match=r"windows \(4, 3\).*\(3, 3\)"):
        im2col(np.zeros((1, 1, 5, 5)), 3, windows=(4, 3))


def slow_pool_count(size, kernel, stride, padding, ceil_mode):
    """Count window starts one by one: every window inside the padded input, then in ceil
    mode one more partial window if it starts inside the input or the left padding."""
    count, start = 0, 0
    while start + kernel <= size + 2 * padding:
        count += 1
        start += stride
    if ceil_mode and start < size + padding and start < size + 2 * padding - kernel + stride:
        count += 1
    return count


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pool_output_size_matches_counting_windows(ceil_mode):
    for size in range(1, 12):
        for kernel in range(1, 5):
            for stride in range(1, 4):
                for padding in range(0, kernel // 2 + 1):
                    if size + 2 * padding < kernel:
                        assert pool_output_size(size, kernel, stride, padding, ceil_mode) <= 0
                        continue
                    expected = slow_pool_count(size, kernel, stride, padding, ceil_mode)
                    assert pool_output_size(size, kernel, stride, padding, ceil_mode) == expected, (
                        size,
                        kernel,
                        stride,
                        padding,
                    )


def test_pool_output_size_examples():
    assert pool_output_size(7, 2, 2) == 3
    assert pool_output_size(7, 2, 2, ceil_mode=True) == 4
    assert pool_output_size(6, 2, 2, ceil_mode=True) == 3  # exact fit: nothing to round
    assert pool_output_size(5, 2, 2, padding=1, ceil_mode=True) == 3  # a 4th would start in the right pad


def test_avg_pool_divisor_counts_window_elements():
    size, kernel, stride, padding = 5, 3, 2, 1
    out = pool_output_size(size, kernel, stride, padding, ceil_mode=True)
    assert out == 3
    # windows over padded positions [-1, 2), [1, 4), [3, 6): all inside [-1, 6)
    np.testing.assert_array_equal(avg_pool_divisor(size, kernel, stride, padding, out, True), [3, 3, 3])
    np.testing.assert_array_equal(avg_pool_divisor(size, kernel, stride, padding, out, False), [2, 3, 2])
    # ceil mode overhang past the right padding does not count: 7 = 2*3 + 1, last window [6, 8) -> 1
    np.testing.assert_array_equal(avg_pool_divisor(7, 2, 2, 0, 4, True), [2, 2, 2, 1])


@pytest.mark.parametrize(
    "shape", [(4, 3), (4, 3, 5), (2, 3, 4, 5), (3, 1, 2, 2), (2, 4, 3, 2, 2), (0, 3, 2, 2)]
)
@pytest.mark.parametrize("contiguous", [True, False])
def test_channel_sums_and_per_channel_match_broadcasting(shape: tuple[int, ...], contiguous: bool) -> None:
    from plugins.conv_ops import channel_sums, per_channel

    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape)
    if not contiguous:
        x = np.asfortranarray(x)
    c = shape[1]
    axes = (0, *range(2, len(shape)))
    np.testing.assert_allclose(channel_sums(x), x.sum(axis=axes), rtol=1e-12)
    v = rng.standard_normal(c)
    view = v.reshape((1, c) + (1,) * (len(shape) - 2))
    for op in (np.add, np.subtract, np.multiply):
        np.testing.assert_array_equal(per_channel(op, x, v), op(x, view))
        out = np.empty_like(x)
        assert per_channel(op, x, v.reshape(view.shape), out=out) is not None
        np.testing.assert_array_equal(out, op(x, view))
    # dtypes follow broadcasting: float32 data with float64 values gives float64
    x32 = x.astype(np.float32)
    assert per_channel(np.multiply, x32, v).dtype == np.multiply(x32, view).dtype


GRID_CASES = [case for case in CASES if pair(case[2])[1] == 1]


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation", GRID_CASES)
def test_im2col_grid_matches_im2col_on_valid_columns(rng, shape, kernel, stride, padding, dilation):
    x = rng.standard_normal(shape)
    _, wp, oh, ow, _ = grid_shape(shape, kernel, stride, padding, dilation)
    cols = im2col_grid(x, kernel, stride, padding, dilation)
    n, k = shape[0], cols.shape[0]
    valid = cols.reshape(k, oh, n, wp)[:, :, :, :ow].transpose(2, 0, 1, 3).reshape(n, k, oh * ow)
    np.testing.assert_array_equal(valid, im2col(x, kernel, stride, padding, dilation))


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation", GRID_CASES)
def test_col2im_grid_is_the_adjoint_of_im2col_grid(rng, shape, kernel, stride, padding, dilation):
    x = rng.standard_normal(shape)
    _, wp, oh, ow, _ = grid_shape(shape, kernel, stride, padding, dilation)
    cols = im2col_grid(x, kernel, stride, padding, dilation)
    c = rng.standard_normal(cols.shape).reshape(cols.shape[0], oh, shape[0], wp)
    c[..., ow:] = 0  # the contract: zero on the columns of no window
    dx = col2im_grid(c.reshape(cols.shape), shape, kernel, stride, padding, dilation)
    np.testing.assert_allclose(np.sum(cols * c.reshape(cols.shape)), np.sum(x * dx), rtol=1e-12)


def test_im2col_grid_needs_a_column_stride_of_1():
    with pytest.raises(ValueError, match="column stride"):
        grid_shape((1, 1, 5, 5), 2, (1, 2), 0)
