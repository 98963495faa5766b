"""AdaptiveAvgPool1d/2d and AdaptiveMaxPool2d against PyTorch (float64)."""

from __future__ import annotations

import numpy as np
import pytest
from support import requires_torch

from framework import layers as L
from framework.errors import ConfigError, ShapeError
from framework.testing import check_layer

try:
    import torch
except ImportError:
    torch = None


def _compare(t, m, shape):
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    out = t(x)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    np.testing.assert_allclose(m.forward(x.detach().numpy()), out.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.backward(grad.numpy()), x.grad.numpy(), rtol=1e-12, atol=1e-14)


@requires_torch
@pytest.mark.parametrize("size", [(3, 2), (5, 7), 4, (None, 3), 1, (7, 6)])
def test_2d_matches_torch(float64, size):
    _compare(torch.nn.AdaptiveAvgPool2d(size), L.AdaptiveAvgPool2d(size), (2, 3, 7, 6))
    _compare(torch.nn.AdaptiveMaxPool2d(size), L.AdaptiveMaxPool2d(size), (2, 3, 7, 6))


@requires_torch
@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_1d_matches_torch(float64, size):
    _compare(torch.nn.AdaptiveAvgPool1d(size), L.AdaptiveAvgPool1d(size), (2, 3, 7))


def test_conformance_and_errors():
    check_layer(L.AdaptiveMaxPool2d((2, 3)), (2, 2, 5, 7))
    check_layer(L.AdaptiveAvgPool2d(2), (2, 2, 5, 4))
    with pytest.raises(ConfigError, match="output_size"):
        L.AdaptiveAvgPool2d((0, 2))
    with pytest.raises(ShapeError, match="rank-4"):
        L.AdaptiveMaxPool2d(2)(np.zeros((2, 3, 4), dtype=np.float32))
