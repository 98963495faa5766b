"""The pure convolution helpers: im2col against a slow loop, col2im as its adjoint."""

from __future__ import annotations

import numpy as np
import pytest

from framework.errors import ShapeError
from plugins.conv_ops import (
    col2im,
    col2im_batch_last,
    conv_output_size,
    expand_padding,
    im2col,
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
