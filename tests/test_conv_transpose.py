"""ConvTranspose2d: gradients, forward against a scatter loop, adjointness with Conv2d, torch parity."""

from __future__ import annotations

import numpy as np
import pytest

from framework.errors import ConfigError, NotBuiltError, ShapeError
from framework.testing import check_gradients, check_layer
from plugins.conv import Conv2d, ConvTranspose2d


def reference_conv_transpose(x, weight, bias, stride, padding, output_padding, dilation, groups):
    """Scatter each input pixel times its kernel into a padded output, then crop."""
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    n, c, h, w = x.shape
    _, og, kh, kw = weight.shape
    cg = c // groups
    oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    ow = (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    full = np.zeros((n, og * groups, oh + 2 * ph, ow + 2 * pw))
    for b in range(n):
        for ch in range(c):
            first = (ch // cg) * og  # first output channel of this input channel's group
            for a in range(h):
                for q in range(w):
                    for i in range(kh):
                        for j in range(kw):
                            full[b, first : first + og, a * sh + i * dh, q * sw + j * dw] += (
                                x[b, ch, a, q] * weight[ch, :, i, j]
                            )
    y = full[:, :, ph : ph + oh, pw : pw + ow]
    return y if bias is None else y + bias[:, None, None]


# (in_ch, out_ch, kernel, stride, padding, output_padding, dilation, groups, bias, input H, W)
CONFIGS = [
    (2, 3, 3, 1, 0, 0, 1, 1, True, (3, 4)),
    (2, 3, 3, 2, 0, 0, 1, 1, True, (3, 3)),  # stride 2
    (2, 2, 3, 2, 1, 1, 1, 1, True, (3, 4)),  # stride 2, padding 1, output_padding 1
    (3, 2, (2, 3), (2, 1), (0, 1), (1, 0), 1, 1, False, (3, 3)),  # anisotropic
    (2, 2, 3, 1, 1, 0, 2, 1, True, (4, 3)),  # dilation 2
    (2, 2, 2, 1, 0, 1, 2, 1, True, (3, 3)),  # output_padding < dilation (stride 1)
    (4, 6, 3, 2, 1, 1, 1, 2, True, (3, 3)),  # groups 2
    (3, 3, 3, 2, 0, 0, 1, 3, True, (3, 2)),  # depthwise
]
IDS = [f"k{c[2]}-s{c[3]}-p{c[4]}-op{c[5]}-d{c[6]}-g{c[7]}" for c in CONFIGS]
PARAMS = "in_ch, out_ch, kernel, stride, padding, output_padding, dilation, groups, bias, hw"


def make(in_ch, out_ch, kernel, stride, padding, output_padding, dilation, groups, bias):
    return ConvTranspose2d(
        in_ch,
        out_ch,
        kernel,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        groups=groups,
        bias=bias,
        dilation=dilation,
    )


@pytest.mark.parametrize(PARAMS, CONFIGS, ids=IDS)
def test_gradients(
    float64, rng, in_ch, out_ch, kernel, stride, padding, output_padding, dilation, groups, bias, hw
):
    layer = make(in_ch, out_ch, kernel, stride, padding, output_padding, dilation, groups, bias)
    if bias:
        layer.bias.data[:] = rng.standard_normal(out_ch)
    report = check_gradients(layer, rng.standard_normal((2, in_ch, *hw)))
    assert set(report.errors) == ({"input", "weight", "bias"} if bias else {"input", "weight"})


def test_gradients_with_an_activation(float64, rng):
    layer = ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1, activation="tanh")
    layer.bias.data[:] = rng.standard_normal(3)
    check_gradients(layer, rng.standard_normal((2, 2, 3, 3)))


@pytest.mark.parametrize(PARAMS, CONFIGS, ids=IDS)
def test_forward_matches_scatter_loop(
    rng, in_ch, out_ch, kernel, stride, padding, output_padding, dilation, groups, bias, hw
):
    layer = make(in_ch, out_ch, kernel, stride, padding, output_padding, dilation, groups, bias)
    if bias:
        layer.bias.data[:] = rng.standard_normal(out_ch)
    x = rng.standard_normal((2, in_ch, *hw)).astype(np.float32)
    expected = reference_conv_transpose(
        x.astype(np.float64),
        layer.weight.data.astype(np.float64),
        None if layer.bias is None else layer.bias.data,
        layer.stride,
        layer.padding,
        layer.output_padding,
        layer.dilation,
        groups,
    )
    y = layer(x)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert layer.output_shape((None, in_ch, *hw)) == (None, *expected.shape[1:])


@pytest.mark.parametrize("stride, padding, dilation, groups", [(1, 0, 1, 1), (2, 1, 1, 1), (2, 1, 2, 2)])
def test_is_the_adjoint_of_conv2d(rng, stride, padding, dilation, groups):
    # <conv(u), v> == <u, convT(v)> for a shared weight: convT forward is conv's input gradient.
    conv = Conv2d(4, 6, 3, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=False)
    u = rng.standard_normal((2, 4, 9, 8))
    cu = conv(u)
    # the rows/columns of u the strided windows skip at the end come back as output_padding
    extra = tuple(
        size - ((o - 1) * stride - 2 * padding + dilation * 2 + 1) for size, o in zip((9, 8), cu.shape[2:])
    )
    convt = ConvTranspose2d(
        6,
        4,
        3,
        stride=stride,
        padding=padding,
        output_padding=extra,
        dilation=dilation,
        groups=groups,
        bias=False,
    )
    convt.weight.data[:] = conv.weight.data
    v = rng.standard_normal(cu.shape)
    tv = convt(v)
    assert tv.shape == u.shape
    np.testing.assert_allclose(np.vdot(cu, v), np.vdot(u, tv), rtol=1e-10)
    np.testing.assert_allclose(tv, conv.backward(v), rtol=1e-10, atol=1e-12)


def test_stride_two_upsamples_by_two():
    layer = ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
    assert layer.output_shape((None, 8, 7, 5)) == (None, 4, 14, 10)
    assert layer.weight.shape == (8, 4, 3, 3)
    assert ConvTranspose2d(4, 6, 3, groups=2).weight.shape == (4, 3, 3, 3)


def test_float32_in_float32_out_and_size_may_vary(rng):
    layer = ConvTranspose2d(2, 3, 3, stride=2)
    for hw in ((3, 3), (4, 2)):
        x = rng.standard_normal((2, 2, *hw)).astype(np.float32)
        y = layer(x)
        assert y.dtype == np.float32 and y.shape == (2, 3, 2 * hw[0] + 1, 2 * hw[1] + 1)
        dx = layer.backward(np.ones_like(y))
        assert dx.shape == x.shape and dx.dtype == np.float32
    assert layer.weight.grad.dtype == np.float32


def test_backward_accumulates_into_grad(float64, rng):
    layer = ConvTranspose2d(2, 2, 3, stride=2)
    x = rng.standard_normal((2, 2, 3, 3))
    g = rng.standard_normal(layer(x).shape)
    layer.backward(g)
    once = layer.weight.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_allclose(layer.weight.grad, 2 * once)


def test_backward_before_forward_is_refused():
    with pytest.raises(NotBuiltError, match="forward"):
        ConvTranspose2d(1, 1, 3).backward(np.zeros((1, 1, 5, 5)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 3, "out_channels": 8, "kernel_size": 3},
        {
            "in_channels": 4,
            "out_channels": 2,
            "kernel_size": [3, 2],
            "stride": [2, 1],
            "padding": [1, 0],
            "output_padding": [1, 0],
            "groups": 2,
            "bias": False,
            "dilation": 2,
            "activation": "relu",
            "name": "up",
        },
    ],
)
def test_config_round_trip(kwargs):
    layer = ConvTranspose2d(**kwargs)
    config = layer.get_config()
    rebuilt = ConvTranspose2d.from_config(config)
    assert rebuilt.get_config() == config
    assert rebuilt.weight.shape == layer.weight.shape
    assert (rebuilt.stride, rebuilt.padding, rebuilt.output_padding, rebuilt.dilation) == (
        layer.stride,
        layer.padding,
        layer.output_padding,
        layer.dilation,
    )


def test_registered_by_name():
    from framework import layers

    assert isinstance(
        layers.get("ConvTranspose2d", in_channels=2, out_channels=3, kernel_size=3), ConvTranspose2d
    )
    assert isinstance(
        layers.get("Conv2DTranspose", in_channels=2, out_channels=3, kernel_size=3), ConvTranspose2d
    )


def test_wrong_channels_and_rank_are_shape_errors():
    layer = ConvTranspose2d(3, 4, 3, name="up")
    with pytest.raises(ShapeError, match=r"up.*\(N, 3, H, W\).*\(None, 2, 4, 4\)"):
        layer(np.zeros((1, 2, 4, 4), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"\(N, 3, H, W\)"):
        layer.output_shape((None, 3, 4))


def test_padding_that_crops_everything_is_a_shape_error():
    layer = ConvTranspose2d(1, 1, 3, padding=2, name="up")
    with pytest.raises(ShapeError, match=r"up.*padding \(2, 2\).*input \(1, 1\).*\(-1, -1\)"):
        layer(np.zeros((1, 1, 1, 1), dtype=np.float32))
    assert layer.output_shape((None, 1, 3, 3)) == (None, 1, 1, 1)  # (3 - 1) - 2*2 + (3 - 1) + 1
    with pytest.raises(ShapeError, match="padding"):
        layer.output_shape((None, 1, 2, 2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_channels": 0}, "in_channels"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"stride": 0}, "stride"),
        ({"padding": -1}, "padding"),
        ({"output_padding": -1}, "output_padding"),
        ({"output_padding": 1}, r"output_padding must be smaller than either stride or dilation"),
        ({"output_padding": 2, "stride": 2}, "output_padding"),
        ({"dilation": 0}, "dilation"),
        ({"in_channels": 6, "groups": 4}, "in_channels=6 is not divisible by groups=4"),
        ({"out_channels": 6, "groups": 4}, "out_channels=6 is not divisible by groups=4"),
        ({"bias": None}, "bias"),
    ],
)
def test_bad_hyperparameters_are_config_errors(kwargs, match):
    args = {"in_channels": 4, "out_channels": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(ConfigError, match=match):
        ConvTranspose2d(**args)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stride": 2},
        {"stride": 2, "padding": 1, "output_padding": 1, "activation": "relu"},
        {"groups": 2, "out_channels": 4, "dilation": 2},
    ],
)
def test_passes_the_conformance_kit(kwargs):
    args = {"in_channels": 2, "out_channels": 3, "kernel_size": 3, **kwargs}
    assert check_layer(ConvTranspose2d(**args), (2, 2, 3, 4)).ok


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stride": 2, "padding": 1, "output_padding": 1},
        {"stride": (2, 3), "padding": (0, 1), "output_padding": (1, 2), "dilation": (1, 2), "groups": 2},
        {"stride": 1, "dilation": 3, "padding": 2, "output_padding": 2},
    ],
)
def test_matches_torch_when_available(rng, kwargs):
    torch = pytest.importorskip("torch")
    layer = ConvTranspose2d(4, 6, 3, **kwargs)
    layer.bias.data[:] = rng.standard_normal(6)
    x = rng.standard_normal((2, 4, 5, 4)).astype(np.float32)
    tx = torch.from_numpy(x).requires_grad_(True)
    tw = torch.from_numpy(layer.weight.data.copy()).requires_grad_(True)
    tb = torch.from_numpy(layer.bias.data.copy()).requires_grad_(True)
    ty = torch.nn.functional.conv_transpose2d(tx, tw, tb, **kwargs)
    y = layer(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(layer.backward(g), tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.weight.grad, tw.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.bias.grad, tb.grad.numpy(), rtol=1e-4, atol=1e-4)


# -- the per-call context (issue 15) --------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"stride": 2, "padding": 1, "output_padding": 1, "activation": "relu"}, {"groups": 2, "dilation": 2}],
    ids=["strided-relu", "groups-dilation"],
)
def test_two_calls_keep_separate_records_and_sum_gradients(float64, rng, kwargs):
    from test_conv import assert_calls_are_independent

    layer = ConvTranspose2d(4, 2, 3, **kwargs)
    x1, x2 = rng.standard_normal((2, 4, 4, 5)), rng.standard_normal((3, 4, 3, 3))
    assert_calls_are_independent(layer, x1, x2, rng)


def test_inference_call_keeps_no_state_on_the_layer(rng):
    from test_conv import assert_inference_keeps_no_state

    assert_inference_keeps_no_state(ConvTranspose2d(2, 3, 3, stride=2), rng.standard_normal((2, 2, 4, 4)))
