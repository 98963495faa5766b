"""GroupNorm, InstanceNorm1d/2d and RMSNorm against PyTorch (float64, 1e-6 relative)."""

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


def rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / (np.abs(np.asarray(b)).max() + 1e-30))


def _compare(t, m, shape, train=True):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.3 * torch.randn_like(p))
    m.load_state_dict(
        {k: v.detach().numpy() for k, v in t.state_dict().items() if k != "num_batches_tracked"}
    )
    t.train(train)
    m.train(train)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    out = t(x)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    y = m.forward(x.detach().numpy())
    g = m.backward(grad.numpy())
    assert rel(y, out.detach().numpy()) < 1e-6
    assert rel(g, x.grad.numpy()) < 1e-6
    tp = dict(t.named_parameters())
    for name, p in m.named_parameters():
        assert rel(p.grad, tp[name].grad.numpy()) < 1e-6


D = torch.float64 if torch is not None else None


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: (torch.nn.GroupNorm(3, 6, dtype=D), L.GroupNorm(3, 6)), (2, 6, 4, 5)),
        (
            lambda: (torch.nn.GroupNorm(2, 4, affine=False, dtype=D), L.GroupNorm(2, 4, affine=False)),
            (2, 4, 7),
        ),
        (lambda: (torch.nn.GroupNorm(1, 3, dtype=D), L.GroupNorm(1, 3)), (3, 3)),
        (
            lambda: (torch.nn.InstanceNorm2d(3, affine=True, dtype=D), L.InstanceNorm2d(3, affine=True)),
            (2, 3, 4, 5),
        ),
        (lambda: (torch.nn.InstanceNorm1d(3, dtype=D), L.InstanceNorm1d(3)), (2, 3, 6)),
        (lambda: (torch.nn.RMSNorm(5, dtype=D), L.RMSNorm(5)), (2, 3, 5)),
        (lambda: (torch.nn.RMSNorm((3, 5), eps=1e-3, dtype=D), L.RMSNorm((3, 5), eps=1e-3)), (2, 3, 5)),
    ],
)
@requires_torch
def test_matches_torch(float64, make, shape):
    t, m = make()
    _compare(t, m, shape)


@requires_torch
def test_instance_norm_running_stats(float64):
    t = torch.nn.InstanceNorm1d(3, affine=True, track_running_stats=True, dtype=D)
    m = L.InstanceNorm1d(3, affine=True, track_running_stats=True)
    _compare(t, m, (2, 3, 6))
    np.testing.assert_allclose(m.running_var.data, t.running_var.numpy(), rtol=1e-12)
    np.testing.assert_allclose(m.running_mean.data, t.running_mean.numpy(), rtol=1e-12)
    _compare(t, m, (2, 3, 6), train=False)


def test_conformance_and_errors():
    check_layer(L.GroupNorm(2, 4), (2, 4, 3))
    check_layer(L.RMSNorm(4, elementwise_affine=False), (2, 4))
    with pytest.raises(ConfigError, match="divisible"):
        L.GroupNorm(3, 4)
    with pytest.raises(ShapeError, match="GroupNorm"):
        L.GroupNorm(2, 4)(np.zeros((2, 6, 3), dtype=np.float32))
    with pytest.raises(ShapeError, match="rank-4"):
        L.InstanceNorm2d(3)(np.zeros((2, 3, 4), dtype=np.float32))
