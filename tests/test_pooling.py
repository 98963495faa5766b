"""MaxPool2d and AvgPool2d: gradients, forward/backward against slow loops, ties, shapes, errors."""

from __future__ import annotations

import numpy as np
import pytest

from framework.errors import ConfigError, ShapeError
from framework.testing import check_gradients
from plugins.pooling import AvgPool2d, MaxPool2d


def reference_pool(x, grad, kernel, stride, padding, mode):
    """Forward and backward one window at a time (max: first maximum in row-major order)."""
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    n, c, h, w = x.shape
    fill = -np.inf if mode == "max" else 0.0
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), fill)
    xp[:, :, ph : ph + h, pw : pw + w] = x
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    y = np.zeros((n, c, oh, ow))
    dxp = np.zeros_like(xp)
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    window = xp[b, ch, i * sh : i * sh + kh, j * sw : j * sw + kw]
                    if mode == "max":
                        y[b, ch, i, j] = window.max()
                        a = np.argmax(window)
                        dxp[b, ch, i * sh + a // kw, j * sw + a % kw] += grad[b, ch, i, j]
                    else:
                        y[b, ch, i, j] = window.sum() / (kh * kw)
                        dxp[b, ch, i * sh : i * sh + kh, j * sw : j * sw + kw] += grad[b, ch, i, j] / (
                            kh * kw
                        )
    return y, dxp[:, :, ph : ph + h, pw : pw + w]


# (kernel, stride, padding, input H, W)
CONFIGS = [
    ((2, 2), (2, 2), (0, 0), (4, 6)),  # non-overlapping
    ((3, 3), (1, 1), (0, 0), (5, 5)),  # overlapping
    ((3, 3), (2, 2), (1, 1), (6, 7)),  # overlapping with padding
    ((2, 3), (1, 2), (1, 1), (5, 6)),  # non-square kernel and stride
    ((3, 2), (3, 2), (0, 1), (7, 5)),  # window does not tile the input
    ((2, 2), (3, 3), (0, 0), (8, 8)),  # stride > kernel: gaps no window reads
]
IDS = [f"k{k[0]}x{k[1]}-s{s[0]}x{s[1]}-p{p[0]}x{p[1]}" for k, s, p, _ in CONFIGS]
POOLS = {"max": MaxPool2d, "avg": AvgPool2d}


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("kernel, stride, padding, hw", CONFIGS, ids=IDS)
def test_gradients(float64, rng, mode, kernel, stride, padding, hw):
    layer = POOLS[mode](kernel, stride, padding)
    report = check_gradients(layer, rng.standard_normal((2, 2, *hw)))
    assert list(report.errors) == ["input"]


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("kernel, stride, padding, hw", CONFIGS, ids=IDS)
def test_forward_and_backward_match_reference_loop(rng, mode, kernel, stride, padding, hw):
    layer = POOLS[mode](kernel, stride, padding)
    x = rng.standard_normal((2, 3, *hw)).astype(np.float32)
    y = layer(x)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    expected_y, expected_dx = reference_pool(x.astype(np.float64), grad, kernel, stride, padding, mode)
    assert y.shape == expected_y.shape == layer.output_shape((2, 3, *hw))
    np.testing.assert_allclose(y, expected_y, rtol=1e-6, atol=1e-6)
    dx = layer.backward(grad)
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel, stride, padding, hw", CONFIGS, ids=IDS)
def test_max_with_many_ties_matches_the_first_maximum_rule(rng, kernel, stride, padding, hw):
    # Values in {0, 1, 2} after a ReLU-like clip: most windows hold several equal maxima.
    x = np.maximum(rng.integers(-2, 3, size=(3, 2, *hw)), 0).astype(np.float32)
    layer = MaxPool2d(kernel, stride, padding)
    y = layer(x)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    expected_y, expected_dx = reference_pool(x.astype(np.float64), grad, kernel, stride, padding, "max")
    np.testing.assert_array_equal(y, expected_y)
    dx = layer.backward(grad)
    assert dx.dtype == np.float32
    # Each gradient lands whole on one input, so the sums are exact up to float32 accumulation.
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("stride", [2, 1])
def test_max_ties_route_gradient_to_exactly_one_input(stride):
    layer = MaxPool2d(2, stride=stride)
    x = np.ones((1, 1, 4, 4), dtype=np.float32)
    y = layer(x)
    grad = np.arange(1, y.size + 1, dtype=np.float32).reshape(y.shape)
    dx = layer.backward(grad)
    assert dx.sum() == grad.sum()
    _, expected = reference_pool(x.astype(np.float64), grad, (2, 2), (stride, stride), (0, 0), "max")
    np.testing.assert_array_equal(dx, expected)
    if stride == 2:
        # each window's gradient lands on its first (top-left) element only
        assert np.count_nonzero(dx) == y.size
        np.testing.assert_array_equal(dx[0, 0, ::2, ::2], grad[0, 0])


def test_max_padding_never_wins():
    layer = MaxPool2d(3, stride=1, padding=1)
    x = -np.ones((1, 1, 3, 3), dtype=np.float32) * np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    y = layer(x)
    assert (y < 0).all()
    dx = layer.backward(np.ones_like(y))
    assert dx.sum() == y.size


def test_avg_padding_counts_zeros_in_divisor():
    y = AvgPool2d(3, stride=1, padding=1)(np.ones((1, 1, 3, 3), dtype=np.float32))
    assert y[0, 0, 0, 0] == pytest.approx(4 / 9)
    assert y[0, 0, 1, 1] == pytest.approx(1.0)


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_float32_in_float32_out(rng, cls):
    layer = cls(2)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    y = layer(x)
    assert y.dtype == np.float32
    assert layer.backward(np.ones_like(y)).dtype == np.float32


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_stride_defaults_to_kernel_and_sizes_may_vary(rng, cls):
    layer = cls((2, 3))
    assert layer.stride == (2, 3)
    assert layer(rng.standard_normal((1, 2, 8, 9))).shape == (1, 2, 4, 3)
    assert layer(rng.standard_normal((3, 5, 4, 6))).shape == (3, 5, 2, 2)
    assert layer.output_shape((None, 7, 11, 11)) == (None, 7, 5, 3)


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
@pytest.mark.parametrize(
    "kwargs", [{"kernel_size": 2}, {"kernel_size": [3, 2], "stride": [1, 2], "padding": [1, 0], "name": "p"}]
)
def test_config_round_trip(cls, kwargs):
    layer = cls(**kwargs)
    config = layer.get_config()
    rebuilt = cls.from_config(config)
    assert rebuilt.get_config() == config
    assert (rebuilt.kernel_size, rebuilt.stride, rebuilt.padding) == (
        layer.kernel_size,
        layer.stride,
        layer.padding,
    )


def test_registered_by_name():
    from framework import layers

    assert isinstance(layers.get("MaxPool2d", kernel_size=2), MaxPool2d)
    assert isinstance(layers.get("AvgPool2d", kernel_size=2), AvgPool2d)


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_wrong_rank_is_a_shape_error(cls):
    layer = cls(2, name="pool")
    with pytest.raises(ShapeError, match=r"pool.*\(N, C, H, W\).*\(None, 3, 8\)"):
        layer(np.zeros((1, 3, 8), dtype=np.float32))
    layer(np.zeros((1, 3, 8, 8), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"\(1, 3, 8\)"):
        layer(np.zeros((1, 3, 8), dtype=np.float32))


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_kernel_larger_than_padded_input_is_a_shape_error(cls):
    layer = cls(5, padding=1, name="pool")
    with pytest.raises(ShapeError, match=r"pool.*kernel \(5, 5\).*padded input \(4, 8\)"):
        layer(np.zeros((1, 1, 2, 6), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"kernel \(5, 5\)"):
        layer.output_shape((None, 1, 2, 6))


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": (2, 2, 2)}, "kernel_size"),
        ({"kernel_size": 2, "stride": 0}, "stride"),
        ({"kernel_size": 2, "padding": -1}, "padding"),
        ({"kernel_size": 2, "padding": 2}, "half the kernel"),
        ({"kernel_size": 2.5}, "kernel_size"),
    ],
)
def test_bad_hyperparameters_are_config_errors(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize(
    "layer", [MaxPool2d(2), MaxPool2d(3, 1, 1), AvgPool2d(2), AvgPool2d(3, 2, 1)], ids=repr
)
def test_passes_the_conformance_kit(layer):
    from framework.testing import check_layer

    assert check_layer(layer, (2, 2, 5, 6)).ok


@pytest.mark.parametrize("kernel, stride, padding, hw", CONFIGS, ids=IDS)
def test_max_backward_after_an_inference_forward_matches_training(rng, kernel, stride, padding, hw):
    # Training mode stores the first-maximum offsets; inference mode finds them only in backward.
    x = np.maximum(rng.integers(-2, 3, size=(2, 3, *hw)), 0).astype(np.float32)
    train, infer = MaxPool2d(kernel, stride, padding), MaxPool2d(kernel, stride, padding)
    infer.eval()
    y = train(x)
    np.testing.assert_array_equal(infer(x), y)
    grad = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(infer.backward(grad), train.backward(grad))
    assert train._manual_ctx.saved is None and infer._manual_ctx.saved is not None


# -- the per-call context (issue 15) --------------------------------------------


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_two_calls_keep_separate_records(float64, rng, cls, training):
    from test_conv import assert_calls_are_independent

    layer = cls(3, stride=2, padding=1)
    x1, x2 = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((3, 3, 5, 9))
    assert_calls_are_independent(layer, x1, x2, rng, training=training)


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_inference_call_keeps_no_state_on_the_layer(rng, cls):
    from test_conv import assert_inference_keeps_no_state

    assert_inference_keeps_no_state(cls(2, ceil_mode=True), rng.standard_normal((2, 3, 5, 5)))
