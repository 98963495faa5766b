"""Conv1d: gradients by finite differences, forward against a slow loop, shapes, config, errors."""

from __future__ import annotations

import numpy as np
import pytest

from framework.errors import ConfigError, NotBuiltError, ShapeError
from framework.testing import check_gradients, check_layer
from plugins.conv import Conv1d


def reference_conv1d(x, weight, bias, stride, pads, dilation, groups):
    """Grouped, dilated 1-D cross-correlation one output element at a time."""
    before, after = pads
    n, c, length = x.shape
    oc, cg, k = weight.shape
    og = oc // groups
    xp = np.zeros((n, c, length + before + after))
    xp[:, :, before : before + length] = x
    out = (xp.shape[2] - dilation * (k - 1) - 1) // stride + 1
    y = np.zeros((n, oc, out))
    for b in range(n):
        for o in range(oc):
            first = (o // og) * cg
            for t in range(out):
                total = 0.0 if bias is None else bias[o]
                for ch in range(cg):
                    for i in range(k):
                        total += weight[o, ch, i] * xp[b, first + ch, t * stride + i * dilation]
                y[b, o, t] = total
    return y


# (in_ch, out_ch, kernel, stride, padding, dilation, groups, bias, length)
CONFIGS = [
    (2, 3, 3, 1, 0, 1, 1, True, 7),
    (2, 3, 3, 2, 1, 1, 1, True, 8),  # stride and padding
    (1, 2, 3, 1, 2, 2, 1, False, 7),  # dilation
    (2, 2, 4, 3, 1, 2, 1, True, 12),  # stride, padding and dilation
    (2, 3, 3, 1, "same", 1, 1, True, 6),
    (2, 2, 4, 1, "same", 2, 1, True, 7),  # even kernel, dilated: 6 zeros split 3 / 3
    (2, 2, 2, 1, "same", 1, 1, True, 5),  # odd total: the extra zero goes to the end
    (2, 2, 3, 1, "valid", 1, 1, True, 5),
    (4, 6, 3, 1, 1, 1, 2, True, 6),  # groups 2
    (3, 3, 3, 2, 1, 1, 3, True, 7),  # depthwise
]
IDS = [f"k{c[2]}-s{c[3]}-p{c[4]}-d{c[5]}-g{c[6]}-bias{c[7]}" for c in CONFIGS]


def make(in_ch, out_ch, kernel, stride, padding, dilation, groups, bias):
    return Conv1d(in_ch, out_ch, kernel, stride, padding, dilation, groups, bias)


@pytest.mark.parametrize(
    "in_ch, out_ch, kernel, stride, padding, dilation, groups, bias, length", CONFIGS, ids=IDS
)
def test_gradients(float64, rng, in_ch, out_ch, kernel, stride, padding, dilation, groups, bias, length):
    layer = make(in_ch, out_ch, kernel, stride, padding, dilation, groups, bias)
    if bias:
        layer.bias.data[:] = rng.standard_normal(out_ch)
    report = check_gradients(layer, rng.standard_normal((2, in_ch, length)))
    assert set(report.errors) == ({"input", "weight", "bias"} if bias else {"input", "weight"})


def test_gradients_with_an_activation(float64, rng):
    layer = Conv1d(2, 3, 3, stride=2, padding=1, activation="tanh")
    layer.bias.data[:] = rng.standard_normal(3)
    check_gradients(layer, rng.standard_normal((3, 2, 9)))


@pytest.mark.parametrize(
    "in_ch, out_ch, kernel, stride, padding, dilation, groups, bias, length", CONFIGS, ids=IDS
)
def test_forward_matches_reference_loop(
    rng, in_ch, out_ch, kernel, stride, padding, dilation, groups, bias, length
):
    layer = make(in_ch, out_ch, kernel, stride, padding, dilation, groups, bias)
    if bias:
        layer.bias.data[:] = rng.standard_normal(out_ch)
    x = rng.standard_normal((3, in_ch, length)).astype(np.float32)
    (pads,) = layer.pads
    expected = reference_conv1d(
        x.astype(np.float64),
        layer.weight.data.astype(np.float64),
        None if layer.bias is None else layer.bias.data,
        stride,
        pads,
        dilation,
        groups,
    )
    y = layer(x)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert layer.output_shape((None, in_ch, length)) == (None, *y.shape[1:])
    if padding == "same":
        assert y.shape[2] == length


def test_same_padding_puts_the_odd_zero_at_the_end():
    layer = Conv1d(1, 1, 2, padding="same", bias=False)
    layer.weight.data[:] = [[[0.0, 1.0]]]  # picks x[t + 1]
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 5)
    np.testing.assert_array_equal(layer(x)[0, 0], [2, 3, 4, 5, 0])


def test_weight_layout_and_attributes():
    layer = Conv1d(4, 6, 5, stride=2, dilation=3, groups=2)
    assert layer.weight.shape == (6, 2, 5)
    assert layer.bias.shape == (6,)
    assert (layer.kernel_size, layer.stride, layer.dilation, layer.padding) == ((5,), (2,), (3,), (0,))
    assert Conv1d(2, 3, 3, bias=False).bias is None


def test_float32_in_float32_out_and_length_may_vary(rng):
    layer = Conv1d(2, 3, 3, padding=1)
    for length in (6, 11):
        x = rng.standard_normal((2, 2, length)).astype(np.float32)
        y = layer(x)
        assert y.shape == (2, 3, length) and y.dtype == np.float32
        dx = layer.backward(np.ones_like(y))
        assert dx.shape == x.shape and dx.dtype == np.float32
    assert layer.weight.grad.dtype == np.float32


def test_matches_a_height_one_conv2d(rng):
    from plugins.conv import Conv2d

    c1 = Conv1d(3, 4, 3, stride=2, padding=1, dilation=2)
    c2 = Conv2d(3, 4, (1, 3), stride=(1, 2), padding=(0, 1), dilation=(1, 2))
    c2.weight.data[:] = c1.weight.data[:, :, None, :]
    x = rng.standard_normal((2, 3, 10)).astype(np.float32)
    np.testing.assert_allclose(c1(x), c2(x[:, :, None, :])[:, :, 0], rtol=1e-6)


def test_second_backward_without_forward_is_refused(rng):
    layer = Conv1d(1, 2, 3)
    y = layer(rng.standard_normal((1, 1, 5)).astype(np.float32))
    layer.backward(np.ones_like(y))
    with pytest.raises(NotBuiltError, match="forward"):
        layer.backward(np.ones_like(y))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 3, "out_channels": 8, "kernel_size": 3},
        {
            "in_channels": 4,
            "out_channels": 2,
            "kernel_size": 5,
            "stride": 2,
            "padding": 2,
            "dilation": 2,
            "groups": 2,
            "bias": False,
            "activation": "relu",
            "name": "c1",
        },
        {"in_channels": 2, "out_channels": 2, "kernel_size": 4, "padding": "same"},
    ],
)
def test_config_round_trip(kwargs):
    layer = Conv1d(**kwargs)
    config = layer.get_config()
    assert isinstance(config["kernel_size"], int) and isinstance(config["padding"], (int, str))
    rebuilt = Conv1d.from_config(config)
    assert rebuilt.get_config() == config
    assert rebuilt.weight.shape == layer.weight.shape


def test_registered_by_name():
    from framework import layers

    layer = layers.get("Conv1d", in_channels=2, out_channels=3, kernel_size=4)
    assert isinstance(layer, Conv1d) and layer.weight.shape == (3, 2, 4)


def test_wrong_channels_and_rank_are_shape_errors():
    layer = Conv1d(3, 4, 3, name="seq")
    with pytest.raises(ShapeError, match=r"seq.*\(N, 3, L\).*\(None, 2, 8\)"):
        layer(np.zeros((1, 2, 8), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"\(N, 3, L\).*\(None, 3, 8, 8\)"):
        Conv1d(3, 4, 3)(np.zeros((1, 3, 8, 8), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"\(N, 3, L\)"):
        layer.output_shape((None, 3))


def test_kernel_longer_than_padded_input_is_a_shape_error():
    layer = Conv1d(1, 1, 3, dilation=3, padding=1, name="long")
    with pytest.raises(ShapeError, match=r"long.*kernel \(3,\) \(dilation \(3,\)\).*padded input \(6,\)"):
        layer(np.zeros((1, 1, 4), dtype=np.float32))
    assert layer.output_shape((None, 1, 5)) == (None, 1, 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_channels": 0}, "in_channels"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": (3, 3)}, "kernel_size"),
        ({"stride": 0}, "stride"),
        ({"padding": -1}, "padding"),
        ({"padding": (1, 1)}, "padding"),
        ({"padding": "full"}, r"'valid', 'same'.*'full'"),
        ({"padding": "same", "stride": 2}, "stride"),
        ({"dilation": 0}, "dilation"),
        ({"in_channels": 6, "groups": 4}, "in_channels=6 is not divisible by groups=4"),
        ({"out_channels": 3, "groups": 2}, "out_channels=3 is not divisible by groups=2"),
        ({"bias": 1}, "bias"),
    ],
)
def test_bad_hyperparameters_are_config_errors(kwargs, match):
    args = {"in_channels": 4, "out_channels": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(ConfigError, match=match):
        Conv1d(**args)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"padding": 1},
        {"stride": 2, "dilation": 2, "activation": "relu"},
        {"padding": "same", "groups": 2, "out_channels": 4},
    ],
)
def test_passes_the_conformance_kit(kwargs):
    args = {"in_channels": 2, "out_channels": 3, "kernel_size": 3, **kwargs}
    assert check_layer(Conv1d(**args), (2, 2, 9)).ok


def test_matches_torch_when_available(rng):
    torch = pytest.importorskip("torch")
    layer = Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2)
    layer.bias.data[:] = rng.standard_normal(6)
    x = rng.standard_normal((2, 4, 13)).astype(np.float32)
    expected = torch.nn.functional.conv1d(
        torch.from_numpy(x),
        torch.from_numpy(layer.weight.data),
        torch.from_numpy(layer.bias.data),
        stride=2,
        padding=2,
        dilation=2,
        groups=2,
    )
    np.testing.assert_allclose(layer(x), expected.numpy(), rtol=1e-5, atol=1e-5)


# -- the per-call context (issue 15) --------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"padding": 1, "activation": "tanh"}, {"stride": 2, "groups": 2, "dilation": 2}],
    ids=["tanh", "groups-dilation"],
)
def test_two_calls_keep_separate_records_and_sum_gradients(float64, rng, kwargs):
    from test_conv import assert_calls_are_independent

    layer = Conv1d(4, 4, 3, **kwargs)
    assert_calls_are_independent(layer, rng.standard_normal((2, 4, 11)), rng.standard_normal((3, 4, 9)), rng)


def test_inference_call_keeps_no_state_on_the_layer(rng):
    from test_conv import assert_inference_keeps_no_state

    assert_inference_keeps_no_state(Conv1d(2, 3, 3, padding="same"), rng.standard_normal((2, 2, 10)))
