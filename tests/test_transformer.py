"""Transformer blocks and stacks against PyTorch: outputs, gradients, state-dict keys, save/load."""

from __future__ import annotations

import numpy as np
import pytest
from support import requires_torch

import framework
from framework import layers as L
from framework.errors import ShapeError
from framework.testing import check_gradients

try:
    import torch
except ImportError:
    torch = None


def rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / (np.abs(np.asarray(b)).max() + 1e-30))


def _compare(t, m, xs, kw_t, kw_m, listed=False, tol=1e-6):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.1 * torch.randn_like(p))
    m.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    t.train()
    out = t(*xs, **kw_t)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    arrays = [x.detach().numpy() for x in xs]
    y = m.forward(arrays if listed else arrays[0], **kw_m)
    g = m.backward(grad.numpy())
    assert rel(y, out.detach().numpy()) < tol
    for mine, x in zip(g if listed else [g], xs):
        assert rel(mine, x.grad.numpy()) < tol
    tp = dict(t.named_parameters())
    for name, p in m.named_parameters():
        assert rel(p.grad, tp[name].grad.numpy()) < tol, name


def _x(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


@requires_torch
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_matches_torch(float64, norm_first, activation):
    t = torch.nn.TransformerEncoderLayer(
        8, 2, 16, 0.0, activation, batch_first=True, norm_first=norm_first, dtype=torch.float64
    )
    m = L.TransformerEncoderLayer(8, 2, 16, 0.0, activation, norm_first=norm_first)
    kpm = np.zeros((3, 5), dtype=bool)
    kpm[0, -2:] = True
    causal = torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    _compare(
        t,
        m,
        [_x(3, 5, 8)],
        {"src_key_padding_mask": torch.from_numpy(kpm), "src_mask": causal, "is_causal": True},
        {"src_key_padding_mask": kpm, "is_causal": True},
    )


@requires_torch
def test_encoder_stack_matches_torch(float64):
    t = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(8, 4, 16, 0.0, batch_first=True, dtype=torch.float64),
        3,
        norm=torch.nn.LayerNorm(8, dtype=torch.float64),
        enable_nested_tensor=False,
    )
    m = L.TransformerEncoder(L.TransformerEncoderLayer(8, 4, 16, 0.0), 3, norm=L.LayerNorm(8))
    assert sorted(m.state_dict()) == sorted(t.state_dict())
    _compare(t, m, [_x(2, 6, 8)], {}, {})


@requires_torch
@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_stack_matches_torch(float64, norm_first):
    t = torch.nn.TransformerDecoder(
        torch.nn.TransformerDecoderLayer(
            8, 2, 16, 0.0, batch_first=True, norm_first=norm_first, dtype=torch.float64
        ),
        2,
    )
    m = L.TransformerDecoder(L.TransformerDecoderLayer(8, 2, 16, 0.0, norm_first=norm_first), 2)
    assert sorted(m.state_dict()) == sorted(t.state_dict())
    mk = np.zeros((3, 6), dtype=bool)
    mk[1, :3] = True
    causal = torch.nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)
    _compare(
        t,
        m,
        [_x(3, 4, 8), _x(3, 6, 8)],
        {"tgt_mask": causal, "tgt_is_causal": True, "memory_key_padding_mask": torch.from_numpy(mk)},
        {"tgt_is_causal": True, "memory_key_padding_mask": mk},
        listed=True,
    )


@requires_torch
def test_torch_trained_weights_load_by_name_float32(tmp_path):
    torch.manual_seed(3)
    t = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, batch_first=True)
    opt = torch.optim.SGD(t.parameters(), lr=0.1)
    for _ in range(3):  # a few training steps, so the weights are "trained in PyTorch"
        opt.zero_grad()
        t(torch.randn(4, 7, 16)).pow(2).mean().backward()
        opt.step()
    t.eval()
    np.savez(tmp_path / "w.npz", **{k: v.detach().numpy() for k, v in t.state_dict().items()})
    m = L.TransformerEncoderLayer(16, 4, 32, dropout=0.1)
    m.load_state_dict(dict(np.load(tmp_path / "w.npz")))
    x = np.random.default_rng(0).standard_normal((4, 7, 16)).astype(np.float32)
    with torch.no_grad():
        expected = t(torch.from_numpy(x)).numpy()
    m.eval()
    assert rel(m(x), expected) < 1e-5


def test_finite_differences(float64):
    rng = np.random.default_rng(0)
    for layer, x in (
        (L.TransformerEncoderLayer(4, 2, 6, 0.0, norm_first=True), rng.standard_normal((2, 3, 4))),
        (
            L.TransformerDecoderLayer(4, 2, 6, 0.0, activation="gelu"),
            [rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))],
        ),
        (L.PositionalEncoding(4, 10, 0.0), rng.standard_normal((2, 3, 4))),
    ):
        report = check_gradients(layer, x)
        assert report.ok, str(report)


def test_positional_encoding_table_and_errors():
    pe = L.PositionalEncoding(6, max_len=8, dropout=0.0)
    y = pe(np.zeros((1, 8, 6), dtype=np.float32))
    assert np.allclose(y[0, 3, 0], np.sin(3.0)) and np.allclose(y[0, 3, 1], np.cos(3.0))
    with pytest.raises(ShapeError, match="max_len"):
        pe(np.zeros((1, 9, 6), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"\(N, L, 8\)"):
        L.TransformerEncoderLayer(8, 2)(np.zeros((2, 3, 4), dtype=np.float32))


def test_save_load_round_trip(tmp_path):
    pytest.importorskip("h5py")
    inp = framework.Input((5, 8))
    block = L.TransformerEncoderLayer(8, 2, 16, dropout=0.1)
    out = L.TransformerEncoder(block, 2, norm=L.LayerNorm(8))(inp, is_causal=True)
    model = framework.Model(inp, out)
    x = np.random.default_rng(0).standard_normal((3, 5, 8)).astype(np.float32)
    y = model.predict(x)
    model.save(tmp_path / "enc.h5")
    loaded = framework.load_model(tmp_path / "enc.h5")
    np.testing.assert_allclose(loaded.predict(x), y, rtol=1e-5, atol=1e-6)
