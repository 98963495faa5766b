"""MaxPool1d, AvgPool1d, ceil_mode, count_include_pad and GlobalAvgPool2d.

Forward and backward against a loop over windows written from PyTorch's
definitions; gradients by finite differences; torch parity when importable.
"""

from __future__ import annotations

import numpy as np
import pytest

from framework.errors import ConfigError, ShapeError
from framework.testing import check_gradients, check_layer
from plugins.pooling import AvgPool1d, AvgPool2d, GlobalAvgPool2d, MaxPool1d, MaxPool2d


def window_starts(size, kernel, stride, padding, ceil_mode):
    """Start of each window in input coordinates (may be negative: left padding).

    Every window inside the padded input; in ceil mode one more partial window
    when it starts inside the input or the left padding.
    """
    starts, start = [], -padding
    while start + kernel <= size + padding:
        starts.append(start)
        start += stride
    if ceil_mode and start < size and start + kernel > size + padding:
        starts.append(start)
    return starts


def reference_pool(x, grad, kernel, stride, padding, ceil_mode, mode, count_include_pad=True):
    """Forward and backward of a 2-D pool, one window at a time, on the unpadded input."""
    n, c, h, w = x.shape
    rows = window_starts(h, kernel[0], stride[0], padding[0], ceil_mode)
    cols = window_starts(w, kernel[1], stride[1], padding[1], ceil_mode)
    y = np.zeros((n, c, len(rows), len(cols)))
    dx = np.zeros_like(x)
    for a, r0 in enumerate(rows):
        for b, c0 in enumerate(cols):
            r_lo, r_hi = max(r0, 0), min(r0 + kernel[0], h)
            c_lo, c_hi = max(c0, 0), min(c0 + kernel[1], w)
            window = x[:, :, r_lo:r_hi, c_lo:c_hi]
            g = grad[:, :, a, b]
            if mode == "max":
                y[:, :, a, b] = window.max(axis=(2, 3))
                for bn in range(n):
                    for ch in range(c):
                        i, j = np.unravel_index(np.argmax(window[bn, ch]), window.shape[2:])
                        dx[bn, ch, r_lo + i, c_lo + j] += g[bn, ch]
            else:
                if count_include_pad:  # the window clipped to the padded input, padding counted
                    divisor = (min(r0 + kernel[0], h + padding[0]) - r0) * (
                        min(c0 + kernel[1], w + padding[1]) - c0
                    )
                else:
                    divisor = (r_hi - r_lo) * (c_hi - c_lo)
                y[:, :, a, b] = window.sum(axis=(2, 3)) / divisor
                dx[:, :, r_lo:r_hi, c_lo:c_hi] += (g / divisor)[:, :, None, None]
    return y, dx


# (kernel, stride, padding, ceil_mode, count_include_pad, H, W)
CONFIGS_2D = [
    ((2, 2), (2, 2), (0, 0), True, True, (5, 7)),  # ceil keeps the last partial window
    ((3, 3), (2, 2), (1, 1), True, True, (6, 6)),  # ceil with padding: overhang not counted
    ((2, 2), (2, 2), (1, 1), True, False, (5, 6)),  # ceil drops a window starting in the right pad
    ((3, 3), (2, 2), (1, 1), False, False, (5, 6)),  # padding not counted
    ((3, 2), (2, 1), (1, 1), True, False, (6, 5)),
    ((3, 3), (3, 3), (0, 0), True, False, (7, 8)),  # partial windows at both edges
]
IDS_2D = [f"k{k[0]}x{k[1]}-s{s[0]}x{s[1]}-p{p[0]}x{p[1]}-ceil{c}-cip{i}" for k, s, p, c, i, _ in CONFIGS_2D]


def make_2d(mode, kernel, stride, padding, ceil_mode, count_include_pad):
    if mode == "max":
        return MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    return AvgPool2d(kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("kernel, stride, padding, ceil_mode, count_include_pad, hw", CONFIGS_2D, ids=IDS_2D)
def test_2d_gradients(float64, rng, mode, kernel, stride, padding, ceil_mode, count_include_pad, hw):
    layer = make_2d(mode, kernel, stride, padding, ceil_mode, count_include_pad)
    report = check_gradients(layer, rng.standard_normal((2, 2, *hw)))
    assert list(report.errors) == ["input"]


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("kernel, stride, padding, ceil_mode, count_include_pad, hw", CONFIGS_2D, ids=IDS_2D)
def test_2d_forward_and_backward_match_reference_loop(
    rng, mode, kernel, stride, padding, ceil_mode, count_include_pad, hw
):
    layer = make_2d(mode, kernel, stride, padding, ceil_mode, count_include_pad)
    x = rng.standard_normal((2, 3, *hw)).astype(np.float32)
    y = layer(x)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    expected_y, expected_dx = reference_pool(
        x.astype(np.float64), grad, kernel, stride, padding, ceil_mode, mode, count_include_pad
    )
    assert y.shape == expected_y.shape == layer.output_shape((2, 3, *hw))
    np.testing.assert_allclose(y, expected_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.backward(grad), expected_dx, rtol=1e-5, atol=1e-6)


def test_ceil_mode_adds_the_partial_window():
    x = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
    assert MaxPool2d(2)(x).shape == (1, 1, 2, 2)
    y = MaxPool2d(2, ceil_mode=True)(x)
    assert y.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(y[0, 0, 2], [21, 23, 24])  # the last row's windows are 1 row tall
    avg = AvgPool2d(2, ceil_mode=True)(x)
    assert avg[0, 0, 2, 2] == 24  # a 1x1 partial window: its mean is the pixel itself


def test_count_include_pad_changes_only_the_border_divisor():
    x = np.ones((1, 1, 4, 4))
    counted = AvgPool2d(3, stride=1, padding=1)(x)[0, 0]
    excluded = AvgPool2d(3, stride=1, padding=1, count_include_pad=False)(x)[0, 0]
    np.testing.assert_allclose(excluded, 1.0)
    assert counted[0, 0] == pytest.approx(4 / 9) and counted[0, 1] == pytest.approx(6 / 9)
    assert counted[1, 1] == 1.0


# (kernel, stride, padding, ceil_mode, count_include_pad, length)
CONFIGS_1D = [
    (2, None, 0, False, True, 6),
    (3, 1, 1, False, True, 5),  # overlapping with padding
    (3, 2, 1, False, False, 6),  # padding not counted
    (2, 2, 0, True, True, 7),  # ceil mode
    (3, 2, 1, True, False, 8),  # ceil mode and padding, not counted
    (4, 3, 2, True, True, 9),
]
IDS_1D = [f"k{k}-s{s}-p{p}-ceil{c}-cip{i}" for k, s, p, c, i, _ in CONFIGS_1D]


def make_1d(mode, kernel, stride, padding, ceil_mode, count_include_pad):
    if mode == "max":
        return MaxPool1d(kernel, stride, padding, ceil_mode)
    return AvgPool1d(kernel, stride, padding, ceil_mode, count_include_pad)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize(
    "kernel, stride, padding, ceil_mode, count_include_pad, length", CONFIGS_1D, ids=IDS_1D
)
def test_1d_gradients(float64, rng, mode, kernel, stride, padding, ceil_mode, count_include_pad, length):
    layer = make_1d(mode, kernel, stride, padding, ceil_mode, count_include_pad)
    report = check_gradients(layer, rng.standard_normal((2, 3, length)))
    assert list(report.errors) == ["input"]


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize(
    "kernel, stride, padding, ceil_mode, count_include_pad, length", CONFIGS_1D, ids=IDS_1D
)
def test_1d_forward_and_backward_match_reference_loop(
    rng, mode, kernel, stride, padding, ceil_mode, count_include_pad, length
):
    layer = make_1d(mode, kernel, stride, padding, ceil_mode, count_include_pad)
    x = rng.standard_normal((2, 3, length)).astype(np.float32)
    y = layer(x)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    expected_y, expected_dx = reference_pool(
        x[:, :, None, :].astype(np.float64),
        grad[:, :, None, :],
        (1, kernel),
        (1, kernel if stride is None else stride),
        (0, padding),
        ceil_mode,
        mode,
        count_include_pad,
    )
    assert y.shape == expected_y.shape[:2] + expected_y.shape[3:] == layer.output_shape((2, 3, length))
    np.testing.assert_allclose(y, expected_y[:, :, 0], rtol=1e-6, atol=1e-6)
    dx = layer.backward(grad)
    assert dx.shape == x.shape and dx.dtype == np.float32
    np.testing.assert_allclose(dx, expected_dx[:, :, 0], rtol=1e-5, atol=1e-6)


def test_1d_attributes_and_default_stride():
    pool = MaxPool1d(3)
    assert (pool.kernel_size, pool.stride, pool.padding) == ((3,), (3,), (0,))
    assert pool.output_shape((None, 4, 10)) == (None, 4, 3)
    assert MaxPool1d(3, ceil_mode=True).output_shape((None, 4, 10)) == (None, 4, 4)


def test_global_avg_pool_forward_and_gradient(float64, rng):
    layer = GlobalAvgPool2d()
    x = rng.standard_normal((3, 4, 5, 2))
    y = layer(x)
    assert y.shape == (3, 4) == layer.output_shape((3, 4, 5, 2))
    np.testing.assert_allclose(y, [[x[n, c].sum() / 10 for c in range(4)] for n in range(3)])
    check_gradients(GlobalAvgPool2d(), x)
    assert layer.output_shape((None, 7, 9, 9)) == (None, 7)


def test_global_avg_pool_sizes_may_vary_and_float32_is_kept(rng):
    layer = GlobalAvgPool2d()
    for hw in ((4, 4), (7, 3)):
        x = rng.standard_normal((2, 3, *hw)).astype(np.float32)
        y = layer(x)
        assert y.dtype == np.float32 and y.shape == (2, 3)
        dx = layer.backward(np.ones_like(y))
        assert dx.dtype == np.float32 and dx.shape == x.shape
        np.testing.assert_allclose(dx, 1.0 / (hw[0] * hw[1]))


def test_global_avg_pool_wrong_rank_is_a_shape_error():
    with pytest.raises(ShapeError, match=r"gap.*\(N, C, H, W\).*\(None, 3, 8\)"):
        GlobalAvgPool2d(name="gap")(np.zeros((1, 3, 8), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"\(N, C, H, W\)"):
        GlobalAvgPool2d().output_shape((None, 3))


@pytest.mark.parametrize("cls", [MaxPool1d, AvgPool1d])
def test_1d_wrong_rank_and_too_short_are_shape_errors(cls):
    with pytest.raises(ShapeError, match=r"pool.*\(N, C, L\).*\(None, 3, 8, 8\)"):
        cls(2, name="pool")(np.zeros((1, 3, 8, 8), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"pool.*kernel \(5,\).*padded input \(4,\)"):
        cls(5, padding=1, name="pool")(np.zeros((1, 3, 2), dtype=np.float32))


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (MaxPool1d, {"kernel_size": 0}, "kernel_size"),
        (MaxPool1d, {"kernel_size": (2, 2)}, "kernel_size"),
        (AvgPool1d, {"kernel_size": 2, "stride": 0}, "stride"),
        (AvgPool1d, {"kernel_size": 2, "padding": 2}, "half the kernel"),
        (MaxPool1d, {"kernel_size": 2, "ceil_mode": "yes"}, "ceil_mode"),
        (MaxPool2d, {"kernel_size": 2, "ceil_mode": 1}, "ceil_mode"),
        (AvgPool2d, {"kernel_size": 2, "count_include_pad": None}, "count_include_pad"),
        (AvgPool1d, {"kernel_size": 2, "count_include_pad": "no"}, "count_include_pad"),
    ],
)
def test_bad_hyperparameters_are_config_errors(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize(
    "layer",
    [
        MaxPool1d(3, 2, 1, ceil_mode=True, name="a"),
        AvgPool1d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        MaxPool2d((3, 2), (2, 1), (1, 0), ceil_mode=True),
        AvgPool2d(2, 1, 1, ceil_mode=True, count_include_pad=False),
        GlobalAvgPool2d(name="gap"),
    ],
    ids=repr,
)
def test_config_round_trip(layer):
    config = layer.get_config()
    rebuilt = type(layer).from_config(config)
    assert rebuilt.get_config() == config
    assert repr(rebuilt) == repr(layer)


def test_registered_by_name_and_alias():
    from framework import layers

    assert isinstance(layers.get("MaxPool1d", kernel_size=2), MaxPool1d)
    assert isinstance(layers.get("AvgPool1d", kernel_size=2), AvgPool1d)
    assert isinstance(layers.get("GlobalAvgPool2d"), GlobalAvgPool2d)
    assert isinstance(layers.get("GlobalAveragePooling2D"), GlobalAvgPool2d)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (MaxPool1d(2), (2, 2, 6)),
        (MaxPool1d(3, 2, 1, ceil_mode=True), (2, 2, 8)),
        (AvgPool1d(3, 2, 1, ceil_mode=True, count_include_pad=False), (2, 2, 8)),
        (MaxPool2d(2, ceil_mode=True), (2, 2, 5, 5)),
        (AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), (2, 2, 6, 5)),
        (GlobalAvgPool2d(), (2, 3, 4, 4)),
    ],
    ids=repr,
)
def test_passes_the_conformance_kit(layer, shape):
    assert check_layer(layer, shape).ok


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_matches_torch_when_available(rng, ceil_mode, count_include_pad):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    x2 = rng.standard_normal((2, 3, 7, 6))
    x1 = x2[:, :, 0]
    cases = [
        (AvgPool2d(3, 2, 1, ceil_mode, count_include_pad), x2, lambda t: functional.avg_pool2d(
            t, 3, 2, 1, ceil_mode=ceil_mode, count_include_pad=count_include_pad)),
        (MaxPool2d(3, 2, 1, ceil_mode), x2, lambda t: functional.max_pool2d(t, 3, 2, 1, ceil_mode=ceil_mode)),
        (AvgPool1d(2, 2, 1, ceil_mode, count_include_pad), x1, lambda t: functional.avg_pool1d(
            t, 2, 2, 1, ceil_mode=ceil_mode, count_include_pad=count_include_pad)),
        (MaxPool1d(4, 3, 2, ceil_mode), x1, lambda t: functional.max_pool1d(t, 4, 3, 2, ceil_mode=ceil_mode)),
    ]  # fmt: skip
    for layer, x, reference in cases:
        tx = torch.from_numpy(x.copy()).requires_grad_(True)
        ty = reference(tx)
        y = layer(x)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
        g = rng.standard_normal(y.shape)
        ty.backward(torch.from_numpy(g))
        np.testing.assert_allclose(layer.backward(g), tx.grad.numpy(), rtol=1e-12, atol=1e-12)


# -- the per-call context (issue 15) --------------------------------------------


@pytest.mark.parametrize(
    "make, shapes",
    [
        (lambda: MaxPool1d(3, stride=2, padding=1), ((2, 3, 9), (3, 3, 6))),
        (lambda: AvgPool1d(2, ceil_mode=True, count_include_pad=False), ((2, 3, 7), (3, 3, 4))),
        (lambda: GlobalAvgPool2d(), ((2, 3, 4, 5), (3, 3, 2, 2))),
    ],
    ids=["maxpool1d", "avgpool1d", "global-avg"],
)
def test_two_calls_keep_separate_records(float64, rng, make, shapes):
    from test_conv import assert_calls_are_independent

    assert_calls_are_independent(make(), rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1]), rng)


@pytest.mark.parametrize(
    "layer, shape",
    [(MaxPool1d(2), (2, 3, 8)), (AvgPool1d(3, padding=1), (2, 3, 8)), (GlobalAvgPool2d(), (2, 3, 4, 4))],
    ids=["maxpool1d", "avgpool1d", "global-avg"],
)
def test_inference_call_keeps_no_state_on_the_layer(rng, layer, shape):
    from test_conv import assert_inference_keeps_no_state

    assert_inference_keeps_no_state(layer, rng.standard_normal(shape))
