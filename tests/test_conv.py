"""Conv2d: gradients by finite differences, forward against a slow loop, shapes, config, errors."""

from __future__ import annotations

import numpy as np
import pytest

import framework
from framework.errors import ConfigError, NotBuiltError, ShapeError
from framework.testing import check_gradients
from plugins.conv import Conv2d


def reference_conv(x, weight, bias, stride, pads):
    """Cross-correlation straight from the definition: loops over n, oc, i, j."""
    (top, bottom), (left, right) = pads
    sh, sw = stride
    n, c, h, w = x.shape
    oc, _, kh, kw = weight.shape
    xp = np.zeros((n, c, h + top + bottom, w + left + right))
    xp[:, :, top : top + h, left : left + w] = x
    oh = (xp.shape[2] - kh) // sh + 1
    ow = (xp.shape[3] - kw) // sw + 1
    y = np.zeros((n, oc, oh, ow))
    for b in range(n):
        for o in range(oc):
            for i in range(oh):
                for j in range(ow):
                    patch = xp[b, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
                    y[b, o, i, j] = np.sum(patch * weight[o]) + (0.0 if bias is None else bias[o])
    return y


# (in_ch, out_ch, kernel, stride, padding, bias, input H, W)
CONFIGS = [
    (1, 2, 3, 1, 0, True, (5, 5)),
    (3, 2, 3, 2, 0, True, (7, 6)),
    (2, 3, 3, 1, 1, False, (4, 5)),
    (1, 2, (2, 3), 1, 2, True, (4, 4)),
    (3, 2, (3, 2), (2, 1), (1, 0), True, (6, 5)),
    (2, 2, 3, 1, "same", True, (5, 4)),
    (1, 2, (4, 2), 1, "same", True, (5, 6)),
    (2, 2, 3, 1, "valid", False, (5, 5)),
]
IDS = [f"k{c[2]}-s{c[3]}-p{c[4]}-bias{c[5]}-{c[6][0]}x{c[6][1]}" for c in CONFIGS]


def make(in_ch, out_ch, kernel, stride, padding, bias, **kwargs):
    return Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=bias, **kwargs)


@pytest.mark.parametrize("in_ch, out_ch, kernel, stride, padding, bias, hw", CONFIGS, ids=IDS)
def test_gradients(float64, rng, in_ch, out_ch, kernel, stride, padding, bias, hw):
    layer = make(in_ch, out_ch, kernel, stride, padding, bias)
    if layer.bias is not None:
        layer.bias.data[:] = rng.standard_normal(layer.bias.shape)
    x = rng.standard_normal((2, in_ch, *hw))
    report = check_gradients(layer, x)
    assert set(report.errors) == ({"input", "weight", "bias"} if bias else {"input", "weight"})


def test_gradients_with_an_activation(float64, rng):
    layer = Conv2d(2, 3, 3, stride=2, padding=1, activation="tanh")
    layer.bias.data[:] = rng.standard_normal(3)
    check_gradients(layer, rng.standard_normal((2, 2, 5, 6)))


@pytest.mark.parametrize("in_ch, out_ch, kernel, stride, padding, bias, hw", CONFIGS, ids=IDS)
def test_forward_matches_reference_loop(rng, in_ch, out_ch, kernel, stride, padding, bias, hw):
    layer = make(in_ch, out_ch, kernel, stride, padding, bias)
    if layer.bias is not None:
        layer.bias.data[:] = rng.standard_normal(layer.bias.shape)
    x = rng.standard_normal((3, in_ch, *hw)).astype(np.float32)
    expected = reference_conv(
        x.astype(np.float64),
        layer.weight.data.astype(np.float64),
        None if layer.bias is None else layer.bias.data,
        layer.stride,
        layer.pads,
    )
    y = layer(x)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert layer.output_shape((None, in_ch, *hw)) == (None, *y.shape[1:])


def test_same_padding_keeps_size_and_pads_bottom_right_for_even_kernels(rng):
    layer = Conv2d(1, 1, 2, padding="same", bias=False)
    layer.weight.data[:] = [[[[0.0, 0.0], [0.0, 1.0]]]]  # picks x[i + 1, j + 1]
    x = rng.standard_normal((1, 1, 4, 5)).astype(np.float32)
    y = layer(x)
    assert y.shape == x.shape
    np.testing.assert_array_equal(y[0, 0, :-1, :-1], x[0, 0, 1:, 1:])
    np.testing.assert_array_equal(y[0, 0, -1, :], 0)
    np.testing.assert_array_equal(y[0, 0, :, -1], 0)


def test_activation_applied_and_gain_passed(rng):
    class RecordingInit:
        def __init__(self):
            self.gains = []

        def __call__(self, shape, dtype=None, rng=None, gain=None):
            self.gains.append(gain)
            return np.ones(shape, dtype=dtype)

    init = RecordingInit()
    layer = Conv2d(1, 2, 3, activation="relu", weight_init=init)
    assert init.gains == [pytest.approx(np.sqrt(2.0))]
    x = rng.standard_normal((2, 1, 5, 5)).astype(np.float32)
    y = layer(x)
    assert (y >= 0).all()
    np.testing.assert_allclose(
        y,
        np.maximum(reference_conv(x, layer.weight.data, layer.bias.data, (1, 1), ((0, 0),) * 2), 0),
        rtol=1e-5,
    )


def test_weights_created_eagerly_with_pytorch_layout():
    layer = Conv2d(3, 6, (5, 3))
    assert layer.weight.shape == (6, 3, 5, 3)
    assert layer.bias.shape == (6,)
    assert not np.all(layer.weight.data == 0)
    np.testing.assert_array_equal(layer.bias.data, 0)
    assert Conv2d(3, 6, 5, bias=False).bias is None


def test_default_init_is_kaiming_uniform_bound():
    framework.set_seed(0)
    layer = Conv2d(4, 8, 3)
    bound = np.sqrt(6.0 / (4 * 3 * 3))  # He uniform, default gain sqrt(2): gain * sqrt(3 / fan_in)
    assert np.abs(layer.weight.data).max() <= bound
    assert np.abs(layer.weight.data).max() > 0.8 * bound


def test_float32_in_float32_out(rng):
    layer = Conv2d(2, 3, 3, padding=1)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    y = layer(x)
    assert layer.weight.dtype == np.float32 and y.dtype == np.float32
    dx = layer.backward(np.ones_like(y))
    assert dx.dtype == np.float32 and dx.shape == x.shape
    assert layer.weight.grad.dtype == np.float32


def test_spatial_size_may_vary_between_calls(rng):
    layer = Conv2d(1, 2, 3, stride=2)
    assert layer(rng.standard_normal((1, 1, 9, 9)).astype(np.float32)).shape == (1, 2, 4, 4)
    y = layer(rng.standard_normal((4, 1, 7, 11)).astype(np.float32))
    assert y.shape == (4, 2, 3, 5)
    assert layer.backward(np.ones_like(y)).shape == (4, 1, 7, 11)


def test_backward_accumulates_into_grad(float64, rng):
    layer = Conv2d(1, 2, 3)
    x = rng.standard_normal((2, 1, 5, 5))
    g = rng.standard_normal((2, 2, 3, 3))
    layer(x)
    layer.backward(g)
    once = layer.weight.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once)


def test_second_backward_without_forward_is_refused(rng):
    layer = Conv2d(1, 2, 3)
    y = layer(rng.standard_normal((1, 1, 5, 5)).astype(np.float32))
    layer.backward(np.ones_like(y))
    with pytest.raises(NotBuiltError, match="forward"):
        layer.backward(np.ones_like(y))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 3, "out_channels": 8, "kernel_size": 3},
        {
            "in_channels": 1,
            "out_channels": 2,
            "kernel_size": [3, 5],
            "stride": [2, 1],
            "padding": [1, 2],
            "activation": "relu",
            "bias": False,
            "name": "c1",
        },
        {"in_channels": 2, "out_channels": 2, "kernel_size": 4, "padding": "same"},
    ],
)
def test_config_round_trip(kwargs):
    layer = Conv2d(**kwargs)
    config = layer.get_config()
    rebuilt = Conv2d.from_config(config)
    assert rebuilt.get_config() == config
    assert rebuilt.weight.shape == layer.weight.shape
    assert (rebuilt.kernel_size, rebuilt.stride, rebuilt.padding) == (
        layer.kernel_size,
        layer.stride,
        layer.padding,
    )


def test_registered_by_name():
    from framework import layers

    assert layers.get("Conv2d", in_channels=1, out_channels=2, kernel_size=3).weight.shape == (2, 1, 3, 3)


def test_wrong_channel_count_names_expected_and_actual(rng):
    layer = Conv2d(3, 4, 3, name="conv_a")
    with pytest.raises(ShapeError, match=r"conv_a.*\(N, 3, H, W\).*\(None, 2, 8, 8\)"):
        layer(np.zeros((1, 2, 8, 8), dtype=np.float32))
    layer(np.zeros((1, 3, 8, 8), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"\(None, 3, None, None\).*\(1, 1, 8, 8\)"):
        layer(np.zeros((1, 1, 8, 8), dtype=np.float32))


def test_wrong_rank_is_a_shape_error():
    layer = Conv2d(3, 4, 3)
    with pytest.raises(ShapeError, match=r"\(N, 3, H, W\).*\(None, 3, 8\)"):
        layer(np.zeros((1, 3, 8), dtype=np.float32))
    with pytest.raises(ShapeError, match="expected"):
        layer.output_shape((None, 3, 8))


def test_kernel_larger_than_padded_input_is_a_shape_error():
    layer = Conv2d(1, 1, 5, padding=1, name="big")
    with pytest.raises(ShapeError, match=r"big.*kernel \(5, 5\).*padded input \(4, 9\)"):
        layer(np.zeros((1, 1, 2, 7), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"kernel \(5, 5\).*\(4, 9\)"):
        layer.output_shape((None, 1, 2, 7))
    layer(np.zeros((1, 1, 3, 3), dtype=np.float32))  # fits exactly: (3 + 2 - 5) + 1 = 1
    with pytest.raises(ShapeError, match="larger than the padded input"):
        layer(np.zeros((1, 1, 2, 2), dtype=np.float32))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_channels": 0}, "in_channels"),
        ({"out_channels": -1}, "out_channels"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": (3, 0)}, "kernel_size"),
        ({"kernel_size": (3, 3, 3)}, "kernel_size"),
        ({"stride": 0}, "stride"),
        ({"padding": -1}, "padding"),
        ({"padding": 1.5}, "padding"),
        ({"bias": "yes"}, "bias"),
    ],
)
def test_bad_hyperparameters_are_config_errors(kwargs, match):
    args = {"in_channels": 1, "out_channels": 1, "kernel_size": 3, **kwargs}
    with pytest.raises(ConfigError, match=match):
        Conv2d(**args)


def test_unknown_padding_string_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"'valid', 'same'.*'full'"):
        Conv2d(1, 1, 3, padding="full")


def test_same_padding_with_stride_is_refused():
    with pytest.raises(ConfigError, match="stride"):
        Conv2d(1, 1, 3, stride=2, padding="same")


@pytest.mark.parametrize(
    "kwargs", [{"padding": 1}, {"kernel_size": (2, 3), "stride": 2, "activation": "relu"}]
)
def test_passes_the_conformance_kit(kwargs):
    from framework.testing import check_layer

    report = check_layer(Conv2d(2, 3, **{"kernel_size": 3, **kwargs}), (2, 2, 5, 6))
    assert report.ok


# ---------------------------------------------------------------------------
# dilation and groups
# ---------------------------------------------------------------------------


def reference_grouped_conv(x, weight, bias, stride, pads, dilation, groups):
    """Grouped, dilated cross-correlation one output element at a time."""
    (top, bottom), (left, right) = pads
    (sh, sw), (dh, dw) = stride, dilation
    n, c, h, w = x.shape
    oc, cg, kh, kw = weight.shape
    og = oc // groups
    xp = np.zeros((n, c, h + top + bottom, w + left + right))
    xp[:, :, top : top + h, left : left + w] = x
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, oc, oh, ow))
    for b in range(n):
        for o in range(oc):
            first = (o // og) * cg  # first input channel of this filter's group
            for i in range(oh):
                for j in range(ow):
                    total = 0.0 if bias is None else bias[o]
                    for ch in range(cg):
                        for p in range(kh):
                            for q in range(kw):
                                total += (
                                    weight[o, ch, p, q] * xp[b, first + ch, i * sh + p * dh, j * sw + q * dw]
                                )
                    y[b, o, i, j] = total
    return y


# (in_ch, out_ch, kernel, stride, padding, dilation, groups, input H, W)
GROUPED = [
    (2, 3, 3, 1, 0, 2, 1, (7, 8)),  # dilation 2
    (2, 2, (2, 3), (2, 1), 1, (2, 3), 1, (8, 9)),  # anisotropic dilation with stride and padding
    (2, 2, 3, 1, "same", 2, 1, (6, 5)),  # dilated "same"
    (4, 6, 3, 1, 1, 1, 2, (5, 5)),  # groups 2
    (4, 4, 3, 2, 1, 1, 4, (6, 5)),  # depthwise
    (3, 6, 2, 1, "same", 2, 3, (5, 6)),  # depthwise with channel multiplier 2, dilated, even kernel
]
GROUPED_IDS = [f"k{c[2]}-s{c[3]}-p{c[4]}-d{c[5]}-g{c[6]}" for c in GROUPED]


@pytest.mark.parametrize(
    "in_ch, out_ch, kernel, stride, padding, dilation, groups, hw", GROUPED, ids=GROUPED_IDS
)
def test_gradients_dilation_and_groups(
    float64, rng, in_ch, out_ch, kernel, stride, padding, dilation, groups, hw
):
    layer = Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)
    layer.bias.data[:] = rng.standard_normal(out_ch)
    report = check_gradients(layer, rng.standard_normal((2, in_ch, *hw)))
    assert set(report.errors) == {"input", "weight", "bias"}


@pytest.mark.parametrize(
    "in_ch, out_ch, kernel, stride, padding, dilation, groups, hw", GROUPED, ids=GROUPED_IDS
)
def test_dilated_grouped_forward_matches_reference_loop(
    rng, in_ch, out_ch, kernel, stride, padding, dilation, groups, hw
):
    layer = Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)
    layer.bias.data[:] = rng.standard_normal(out_ch)
    assert layer.weight.shape == (out_ch, in_ch // groups, *layer.kernel_size)
    x = rng.standard_normal((2, in_ch, *hw)).astype(np.float32)
    expected = reference_grouped_conv(
        x.astype(np.float64),
        layer.weight.data.astype(np.float64),
        layer.bias.data,
        layer.stride,
        layer.pads,
        layer.dilation,
        groups,
    )
    y = layer(x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert layer.output_shape((None, in_ch, *hw)) == (None, *expected.shape[1:])
    if padding == "same":
        assert y.shape[2:] == hw


def test_groups_keep_channel_groups_independent(rng):
    # Output channels of group 0 must not depend on the input channels of group 1.
    layer = Conv2d(4, 6, 3, padding=1, groups=2)
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    y = layer(x)
    x2 = x.copy()
    x2[:, 2:] = rng.standard_normal((2, 2, 5, 5))
    y2 = layer(x2)
    np.testing.assert_array_equal(y[:, :3], y2[:, :3])
    assert not np.allclose(y[:, 3:], y2[:, 3:])


def test_depthwise_is_a_per_channel_convolution(rng):
    layer = Conv2d(3, 3, 3, groups=3, bias=False)
    x = rng.standard_normal((2, 3, 6, 6))
    y = layer(x)
    for ch in range(3):
        single = Conv2d(1, 1, 3, bias=False)
        single.weight.data[:] = layer.weight.data[ch : ch + 1]
        np.testing.assert_allclose(y[:, ch : ch + 1], single(x[:, ch : ch + 1]), rtol=1e-5, atol=1e-6)


def test_dilated_grouped_float32_backward_keeps_dtype(rng):
    layer = Conv2d(4, 4, 3, padding=2, dilation=2, groups=2)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    y = layer(x)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == layer.weight.grad.dtype == np.float32
    assert dx.shape == x.shape


def test_dilation_and_groups_round_trip_through_config():
    layer = Conv2d(4, 8, (3, 2), padding="same", dilation=(2, 1), groups=4, name="dw")
    config = layer.get_config()
    assert config["dilation"] == [2, 1] and config["groups"] == 4
    rebuilt = Conv2d.from_config(config)
    assert rebuilt.get_config() == config
    assert (rebuilt.dilation, rebuilt.groups, rebuilt.weight.shape) == ((2, 1), 4, (8, 1, 3, 2))
    assert "dilation=[2, 1]" in repr(layer) and "groups=4" in repr(layer)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_channels": 6, "out_channels": 8, "groups": 4}, r"in_channels=6 is not divisible by groups=4"),
        ({"in_channels": 4, "out_channels": 6, "groups": 4}, r"out_channels=6 is not divisible by groups=4"),
        ({"groups": 0}, "groups"),
        ({"groups": 1.0}, "groups"),
        ({"dilation": 0}, "dilation"),
        ({"dilation": (1, 2, 3)}, "dilation"),
    ],
)
def test_bad_dilation_and_groups_are_config_errors(kwargs, match):
    args = {"in_channels": 4, "out_channels": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(ConfigError, match=match):
        Conv2d(**args)


def test_dilated_kernel_larger_than_input_is_a_shape_error():
    layer = Conv2d(1, 1, 3, dilation=3, name="wide")
    with pytest.raises(ShapeError, match=r"wide.*kernel \(3, 3\) \(dilation \(3, 3\)\).*\(6, 9\)"):
        layer(np.zeros((1, 1, 6, 9), dtype=np.float32))  # the dilated kernel spans 7 rows
    assert layer.output_shape((None, 1, 7, 9)) == (None, 1, 1, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dilation": 2, "padding": 2},
        {"groups": 2, "out_channels": 4},
        {"groups": 2, "out_channels": 2, "stride": 2},
    ],
)
def test_dilation_and_groups_pass_the_conformance_kit(kwargs):
    from framework.testing import check_layer

    args = {"in_channels": 2, "out_channels": 3, "kernel_size": 3, **kwargs}
    assert check_layer(Conv2d(**args), (2, 2, 6, 7)).ok


def test_matches_torch_when_available(rng):
    torch = pytest.importorskip("torch")
    layer = Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2)
    layer.bias.data[:] = rng.standard_normal(6)
    x = rng.standard_normal((2, 4, 9, 7)).astype(np.float32)
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(x),
        torch.from_numpy(layer.weight.data),
        torch.from_numpy(layer.bias.data),
        stride=(2, 1),
        padding=(1, 2),
        dilation=(2, 1),
        groups=2,
    )
    np.testing.assert_allclose(layer(x), expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: Conv2d(2, 3, 3, padding=1, activation="relu"), (4, 2, 6, 5)),
        (lambda: Conv2d(4, 4, 3, stride=2, groups=2), (3, 4, 7, 7)),
        (lambda: framework.layers.Conv1d(2, 3, 3, padding=1), (4, 2, 9)),
        (lambda: framework.layers.ConvTranspose2d(2, 3, 3, stride=2, padding=1), (4, 2, 4, 5)),
    ],
    ids=["conv2d", "conv2d-groups", "conv1d", "conv-transpose2d"],
)
def test_needs_input_grad_false_skips_dx_and_keeps_the_weight_gradients(rng, make, shape):
    full, first = make(), make()
    first.weight.data[...] = full.weight.data
    first.needs_input_grad = False
    x = rng.standard_normal(shape).astype(np.float32)
    grad = rng.standard_normal(full(x).shape).astype(np.float32)
    assert full.backward(grad).shape == x.shape
    first(x)
    assert first.backward(grad) is None
    np.testing.assert_array_equal(first.weight.grad, full.weight.grad)
    np.testing.assert_array_equal(first.bias.grad, full.bias.grad)
    # the flag only skips dx: the next forward/backward pair works as before
    first.needs_input_grad = True
    first(x)
    full(x)
    np.testing.assert_array_equal(first.backward(grad), full.backward(grad))


def test_fit_skips_the_first_convolutions_input_gradient_and_restores_the_flag(rng):
    from framework import Sequential
    from framework.layers import Flatten, Linear

    model = Sequential([Conv2d(1, 2, 3, padding=1, activation="relu"), Flatten(), Linear(2 * 5 * 5, 3)])
    model.compile(optimizer="sgd", loss="cross_entropy")
    conv = model.layers[0]
    calls = []
    backward = conv.backward
    conv.backward = lambda ctx, g: calls.append(ctx.needs_input_grad) or backward(ctx, g)
    x = rng.standard_normal((8, 1, 5, 5)).astype(np.float32)
    history = model.fit(x, rng.integers(0, 3, size=8), batch_size=4, epochs=1, verbose=0)
    assert calls == [False, False]
    assert conv.needs_input_grad is True
    assert np.isfinite(history.history["loss"][0])


# -- the per-call context (issue 15): state on ctx, never on the layer ---------
# The two helpers below serve every layer family's tests (imported by name).


def assert_calls_are_independent(layer, x1, x2, rng, training=True):
    """Two calls with their own contexts, backwards in reverse order, equal two separate calls.

    The parameter gradients are the sum of the single-call gradients, the
    input gradients (and outputs) those of each single call.
    """
    from framework.base.context import Context

    params = layer.parameters()

    def single(x, g):
        layer.zero_grad()
        ctx = Context(training)
        y = layer.forward(ctx, x)
        return y, layer.backward(ctx, g), [p.grad.copy() for p in params]

    g1 = rng.standard_normal(layer.forward(Context(training), x1).shape)
    g2 = rng.standard_normal(layer.forward(Context(training), x2).shape)
    y1, dx1, grads1 = single(x1, g1)
    y2, dx2, grads2 = single(x2, g2)
    layer.zero_grad()
    c1, c2 = Context(training), Context(training)
    np.testing.assert_allclose(layer.forward(c1, x1), y1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.forward(c2, x2), y2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.backward(c2, g2), dx2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.backward(c1, g1), dx1, rtol=1e-12, atol=1e-12)
    for p, a, b in zip(params, grads1, grads2):
        np.testing.assert_allclose(p.grad, a + b, rtol=1e-12, atol=1e-12)


def assert_inference_keeps_no_state(layer, x):
    """A ``record=False`` inference call sets nothing on the layer (nor rebinds anything)."""
    from framework.base.context import Context

    layer.forward(Context(False, record=False), x)  # builds the layer
    before = dict(vars(layer))
    layer.forward(Context(False, record=False), x.copy())
    after = vars(layer)
    assert after.keys() == before.keys()
    assert [k for k in before if after[k] is not before[k]] == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1, "activation": "relu"},
        {"in_channels": 4, "out_channels": 4, "kernel_size": 3, "stride": 2, "groups": 2, "dilation": 1},
        {"in_channels": 4, "out_channels": 4, "kernel_size": 3, "groups": 4, "bias": False},
    ],
    ids=["relu", "groups", "depthwise"],
)
def test_two_calls_keep_separate_records_and_sum_gradients(float64, rng, kwargs):
    layer = Conv2d(**kwargs)
    c = kwargs["in_channels"]
    assert_calls_are_independent(
        layer, rng.standard_normal((2, c, 7, 6)), rng.standard_normal((3, c, 5, 8)), rng
    )


def test_inference_call_keeps_no_state_on_the_layer(rng):
    assert_inference_keeps_no_state(Conv2d(2, 3, 3, padding=1), rng.standard_normal((2, 2, 6, 6)))


def test_threads_running_one_layer_get_the_serial_results(rng):
    import threading

    from framework.base.context import Context

    layer = Conv2d(3, 8, 3, padding=1)
    inputs = [rng.standard_normal((4, 3, 12, 12)).astype(np.float32) for _ in range(4)]
    serial = [layer.forward(Context(False), x) for x in inputs]
    results: dict[int, list[np.ndarray]] = {i: [] for i in range(4)}
    errors = []
    start = threading.Barrier(4)

    def run(i):
        try:
            start.wait()
            for k in range(50):  # record=False gives the columns back: the thread's pool reuses them
                results[i].append(layer.forward(Context(False, record=k % 2 == 0), inputs[i]))
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i in range(4):
        assert len(results[i]) == 50
        for y in results[i]:
            np.testing.assert_array_equal(y, serial[i])


def test_a_pending_call_keeps_its_columns_while_another_runs(float64, rng):
    # Under the old shared workspace a second forward overwrote the first call's columns.
    from framework.base.context import Context

    layer = Conv2d(2, 3, 3)
    x1, x2 = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((2, 2, 5, 5))
    g = rng.standard_normal((2, 3, 3, 3))
    c1 = Context(True)
    layer.forward(c1, x1)
    layer.forward(Context(False, record=False), x2)  # gives its buffer back to the pool
    layer.forward(Context(True), x2)  # takes one: must not be c1's
    layer.backward(c1, g)
    expected = Conv2d(2, 3, 3)
    expected.weight.data[...] = layer.weight.data
    expected(x1)
    expected.backward(g)
    np.testing.assert_allclose(layer.weight.grad, expected.weight.grad, rtol=1e-12)


def _force_lowering(monkeypatch: pytest.MonkeyPatch, lowering: str) -> None:
    """Make ``lowering`` (``"grid"`` or ``"batch_last"``) run wherever it applies, whatever the size."""
    import plugins.conv_base as conv_base

    grid = lowering == "grid"
    monkeypatch.setattr(conv_base, "GRID_MIN_DEPTH", 1 if grid else 10**9)
    monkeypatch.setattr(conv_base, "GRID_MAX_WASTE", float("inf"))
    monkeypatch.setattr(conv_base.blas, "num_threads", lambda: 2)
    monkeypatch.setattr(conv_base, "BATCH_LAST_MIN_DEPTH", 10**9 if grid else 1)
    monkeypatch.setattr(conv_base, "BATCH_LAST_MAX_POSITIONS", 10**9)


@pytest.fixture
def grid_lowering(monkeypatch):
    """Force the one-product (grid) lowering wherever it applies, whatever the size and threads."""
    _force_lowering(monkeypatch, "grid")


@pytest.fixture(params=["grid", "batch_last"])
def folded_lowering(request, monkeypatch):
    """Each batch-folded lowering in turn: the row grid and the batch-last columns (groups 1 only)."""
    _force_lowering(monkeypatch, request.param)


@pytest.mark.parametrize("in_ch, out_ch, kernel, stride, padding, bias, hw", CONFIGS, ids=IDS)
def test_folded_lowering_gradients(
    folded_lowering, float64, rng, in_ch, out_ch, kernel, stride, padding, bias, hw
):
    test_gradients(float64, rng, in_ch, out_ch, kernel, stride, padding, bias, hw)


@pytest.mark.parametrize("in_ch, out_ch, kernel, stride, padding, bias, hw", CONFIGS, ids=IDS)
def test_folded_lowering_forward_matches_reference_loop(
    folded_lowering, rng, in_ch, out_ch, kernel, stride, padding, bias, hw
):
    test_forward_matches_reference_loop(rng, in_ch, out_ch, kernel, stride, padding, bias, hw)


@pytest.mark.parametrize(
    "in_ch, out_ch, kernel, stride, padding, dilation, groups, hw", GROUPED, ids=GROUPED_IDS
)
def test_folded_lowering_dilation(
    folded_lowering, float64, rng, in_ch, out_ch, kernel, stride, padding, dilation, groups, hw
):
    test_gradients_dilation_and_groups(
        float64, rng, in_ch, out_ch, kernel, stride, padding, dilation, groups, hw
    )


def test_grid_lowering_is_taken_and_keeps_the_input_gradient(grid_lowering, rng):
    """dx of the grid path is a new array that no later call overwrites (its work buffer is reused)."""
    layer = Conv2d(3, 4, 3, padding=0)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    y = layer(x)
    dx = layer.backward(np.ones_like(y))
    kept = dx.copy()
    layer(rng.standard_normal((2, 3, 5, 5)).astype(np.float32))
    layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(dx, kept)


def test_batch_last_lowering_is_taken_and_matches_torch(float64, rng):
    """A 150-row layer the grid refuses (LeNet-5's second, strided, dilated) runs batch-last, as PyTorch."""
    torch = pytest.importorskip("torch")
    import plugins.conv_batch_last as batch_last

    layer = Conv2d(6, 16, 5, stride=(1, 2), dilation=(2, 1))
    layer.bias.data[:] = rng.standard_normal(16)
    x = rng.standard_normal((5, 6, 15, 14))
    calls = []
    forward = batch_last.forward_batch_last

    def spy(*args):
        calls.append(args[2].shape)
        return forward(*args)

    import plugins.conv_base as conv_base

    original = conv_base.forward_batch_last
    conv_base.forward_batch_last = spy
    try:
        y = layer(x)
    finally:
        conv_base.forward_batch_last = original
    assert calls == [x.shape]
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(layer.weight.data.copy()).requires_grad_(True)
    bt = torch.from_numpy(layer.bias.data.copy()).requires_grad_(True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=(1, 2), dilation=(2, 1))
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, wt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, bt.grad.numpy(), rtol=1e-10, atol=1e-12)
