"""Tests of Reshape, Permute, ZeroPadding2d and UpSampling2d: values, gradients, shapes, errors, config."""

from __future__ import annotations

import numpy as np
import pytest

import framework
from framework.base.context import Context
from framework.base.layer import takes_context
from framework.errors import ConfigError, ShapeError
from framework.layers import Linear
from framework.testing import check_gradients
from plugins.reshaping import Permute, Reshape, UpSampling2d, ZeroPadding2d

# -- Reshape ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, in_shape, out_shape",
    [((6,), (2, 3), (6,)), ((3, -1), (4, 3), (3, 4)), (((2, 2, 3),), (12,), (2, 2, 3))],
)
def test_reshape_values_gradient_and_shape(float64, rng, args, in_shape, out_shape):
    layer = Reshape(*args)
    x = rng.standard_normal((2, *in_shape))
    y = layer(x)
    assert y.shape == (2, *out_shape)
    np.testing.assert_array_equal(y.reshape(-1), x.reshape(-1))  # C order, batch kept
    assert layer.output_shape((None, *in_shape)) == (None, *out_shape)
    check_gradients(layer, x)


def test_reshape_minus_one_follows_the_input_size(rng):
    layer = Reshape(-1, 2)
    assert layer(rng.standard_normal((3, 4))).shape == (3, 2, 2)
    assert layer(rng.standard_normal((3, 6))).shape == (3, 3, 2)
    assert layer.output_shape((None, None)) == (None, None, 2)


def test_reshape_incompatible_size_names_expected_and_actual(rng):
    with pytest.raises(
        ShapeError,
        match=r"Reshape layer 'r': cannot reshape samples of shape \(2, 5\).*expected 12 elements .*got 10",
    ):
        Reshape(3, 4, name="r")(rng.standard_normal((2, 2, 5)))
    layer = Reshape(3, 4)
    layer(rng.standard_normal((2, 12)))
    with pytest.raises(ShapeError, match="expected 12 elements per sample, got 13"):
        layer(rng.standard_normal((2, 13)))
    with pytest.raises(ShapeError, match="expected a multiple of 4 elements per sample, got 6"):
        Reshape(-1, 4).output_shape((None, 6))


@pytest.mark.parametrize("args", [(), (0, 2), (-1, -1), (2.0,), (-2,)])
def test_reshape_config_errors(args):
    with pytest.raises(ConfigError, match="Reshape"):
        Reshape(*args)
    with pytest.raises(ConfigError, match="once"):
        Reshape(2, target_shape=(2,))


def test_reshape_config_round_trip():
    layer = Reshape(4, -1, name="r")
    config = layer.get_config()
    assert config == {"name": "r", "target_shape": [4, -1]}
    assert Reshape.from_config(config).target_shape == (4, -1)
    assert framework.layers.get("reshape", target_shape=[2]).target_shape == (2,)


# -- Permute ---------------------------------------------------------------------


@pytest.mark.parametrize("dims, in_shape", [((2, 1), (3, 4)), ((2, 3, 1), (2, 3, 4)), ((3, 1, 2), (2, 3, 4))])
def test_permute_values_gradient_and_shape(float64, rng, dims, in_shape):
    layer = Permute(dims)
    x = rng.standard_normal((2, *in_shape))
    y = layer(x)
    # Keras numbering: output axis i + 1 is input axis dims[i]
    np.testing.assert_array_equal(y, np.transpose(x, (0, *dims)))
    assert y.shape == (2, *(in_shape[d - 1] for d in dims))
    assert layer.output_shape((None, *in_shape)) == (None, *y.shape[1:])
    check_gradients(layer, x)


def test_permute_nchw_to_nhwc(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    y = Permute((2, 3, 1))(x)
    assert y.shape == (2, 4, 5, 3) and y[1, 2, 3, 0] == x[1, 0, 2, 3]


@pytest.mark.parametrize("dims", [(0, 1), (1, 1), (1, 3), (), 2, (1.0, 2.0)])
def test_permute_config_errors(dims):
    with pytest.raises(ConfigError, match=r"permutation of 1\.\.k"):
        Permute(dims)


def test_permute_wrong_rank(rng):
    layer = Permute((2, 1), name="p")
    with pytest.raises(ShapeError, match=r"Permute layer 'p' expected input of shape \(N, d1, d2\), got"):
        layer(rng.standard_normal((2, 3, 4, 5)))
    assert Permute.from_config(layer.get_config()).dims == (2, 1)


# -- ZeroPadding2d -------------------------------------------------------------------


@pytest.mark.parametrize(
    "padding, sides",  # sides = (left, right, top, bottom)
    [(1, (1, 1, 1, 1)), ((2, 1), (1, 1, 2, 2)), ((0, 2, 1, 3), (0, 2, 1, 3))],
)
def test_zero_padding_values_gradient_and_shape(float64, rng, padding, sides):
    layer = ZeroPadding2d(padding)
    assert layer.padding == sides
    left, right, top, bottom = sides
    x = rng.standard_normal((2, 3, 4, 5))
    y = layer(x)
    np.testing.assert_array_equal(y, np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))))
    assert layer.output_shape((None, 3, 4, 5)) == (None, 3, 4 + top + bottom, 5 + left + right)
    assert layer.output_shape((None, 3, None, 5))[2] is None
    check_gradients(layer, x)


def test_zero_padding_other_image_sizes_and_errors(rng):
    layer = ZeroPadding2d(1, name="pad")
    assert layer(rng.standard_normal((1, 2, 3, 3))).shape == (1, 2, 5, 5)
    assert layer(rng.standard_normal((1, 2, 6, 4))).shape == (1, 2, 8, 6)
    with pytest.raises(ShapeError, match=r"expected input of shape \(None, 2, None, None\)"):
        layer(rng.standard_normal((1, 3, 3, 3)))
    with pytest.raises(ShapeError, match=r"ZeroPadding2d layer expected input of shape \(N, C, H, W\)"):
        ZeroPadding2d(1)(rng.standard_normal((2, 3, 4)))
    for bad in (-1, (1, 2, 3), (1.5, 1), "1"):
        with pytest.raises(ConfigError, match="padding must be an integer or 2 integers or 4 integers"):
            ZeroPadding2d(bad)
    assert ZeroPadding2d.from_config(ZeroPadding2d((1, 2)).get_config()).padding == (2, 2, 1, 1)
    assert type(framework.layers.get("ZeroPad2d", padding=1)) is ZeroPadding2d


# -- UpSampling2d -------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, (2, 3), (1, 2)])
def test_upsampling_values_gradient_and_shape(float64, rng, scale):
    layer = UpSampling2d(scale)
    sh, sw = (scale, scale) if isinstance(scale, int) else scale
    x = rng.standard_normal((2, 3, 4, 5))
    y = layer(x)
    np.testing.assert_array_equal(y, x.repeat(sh, axis=2).repeat(sw, axis=3))
    assert layer.output_shape((None, 3, 4, 5)) == (None, 3, 4 * sh, 5 * sw)
    check_gradients(layer, x)


def test_upsampling_backward_sums_each_block(rng):
    layer = UpSampling2d(2)
    layer(np.zeros((1, 1, 2, 2)))
    g = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(
        layer.backward(g)[0, 0], [[0 + 1 + 4 + 5, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]
    )


def test_upsampling_errors_and_config(rng):
    for bad in (0, (2, 0), (2, 2, 2), 1.5):
        with pytest.raises(ConfigError, match="scale_factor must be an integer or 2 integers"):
            UpSampling2d(bad)
    with pytest.raises(ConfigError, match=r"mode must be one of \('nearest',\), got 'bilinear'"):
        UpSampling2d(2, mode="bilinear")
    with pytest.raises(ShapeError, match=r"\(N, C, H, W\)"):
        UpSampling2d(2)(rng.standard_normal((2, 3, 4)))
    layer = UpSampling2d((2, 3), name="up")
    clone = framework.layers.get("upsampling2d", **layer.get_config())
    assert clone.scale_factor == (2, 3) and clone.name == "up"


# -- the per-call context -------------------------------------------------------


@pytest.mark.parametrize(
    "layer, shape1, shape2",
    [
        (Reshape(-1), (2, 3, 4), (5, 6, 2)),
        (Permute((2, 3, 1)), (2, 3, 4, 5), (1, 3, 4, 5)),
        (ZeroPadding2d((1, 2, 0, 3)), (2, 3, 4, 5), (1, 3, 6, 2)),
        (UpSampling2d((2, 3)), (2, 3, 4, 5), (1, 3, 2, 6)),
    ],
    ids=["reshape", "permute", "zero_padding", "upsampling"],
)
def test_interleaved_calls_keep_their_own_context(rng, layer, shape1, shape2):
    """Two forwards on inputs of different sizes, then their backwards in reverse order."""
    assert takes_context(layer)
    x1, x2 = rng.standard_normal(shape1), rng.standard_normal(shape2)
    c1, c2 = Context(True), Context(True)
    y1, y2 = layer.forward(c1, x1), layer.forward(c2, x2)
    g1, g2 = rng.standard_normal(y1.shape), rng.standard_normal(y2.shape)
    dx2 = layer.backward(c2, g2)
    dx1 = layer.backward(c1, g1)
    assert dx1.shape == shape1 and dx2.shape == shape2
    # the gradient of a linear map is its adjoint: <dy, J x> = <J^T dy, x>
    np.testing.assert_allclose(np.sum(g1 * y1), np.sum(dx1 * x1), rtol=1e-12)
    np.testing.assert_allclose(np.sum(g2 * y2), np.sum(dx2 * x2), rtol=1e-12)


def test_a_shape_layer_shared_by_two_places_of_a_model(float64, rng):
    """One Permute at two places of a functional model: (N, A, B) -> (N, B, A) -> (N, A, B)."""
    swap = Permute((2, 1))
    x = framework.Input((3, 4))
    h = Linear(4, 3)(x)  # (N, 3, 3)
    y = Linear(3, 2)(swap(Linear(3, 3)(swap(h))))
    check_gradients(framework.Model(x, y), rng.standard_normal((2, 3, 4)))
