"""MultiheadAttention and scaled_dot_product_attention against PyTorch (float64, 1e-6 relative)."""

from __future__ import annotations

import numpy as np
import pytest
from support import requires_torch

import framework
from framework.errors import ConfigError, DataError, ShapeError
from framework.testing import check_gradients
from plugins.attention import ScaledDotProductAttention, scaled_dot_product_attention
from plugins.multihead_attention import MultiheadAttention

try:
    import torch
except ImportError:
    torch = None


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / (np.abs(np.asarray(b)).max() + 1e-30))


def _mha_case(e, h, self_attn, kdim=None, vdim=None, kpm=None, mask=None, causal=False, batch_first=True):
    torch.manual_seed(0)
    t = torch.nn.MultiheadAttention(e, h, batch_first=batch_first, kdim=kdim, vdim=vdim, dtype=torch.float64)
    with torch.no_grad():
        for p in t.parameters():
            p.normal_()
    m = MultiheadAttention(e, h, kdim=kdim, vdim=vdim, batch_first=batch_first)
    m.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    n, length, source = 2, 4, 4 if self_attn else 5

    def make(size, ln):
        shape = (n, ln, size) if batch_first else (ln, n, size)
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    q = make(e, length)
    k, v = (q, q) if self_attn else (make(kdim or e, source), make(vdim or e, source))
    kw_t, kw_m = {}, {}
    if kpm is not None:
        kw_t["key_padding_mask"] = torch.from_numpy(kpm)
        kw_m["key_padding_mask"] = kpm
    if mask is not None:
        kw_t["attn_mask"] = torch.from_numpy(mask)
        kw_m["attn_mask"] = mask
    if causal:
        kw_t["attn_mask"] = torch.triu(torch.ones(length, source, dtype=torch.bool), 1)
        kw_t["is_causal"] = True
        kw_m["is_causal"] = True
    out, _ = t(q, k, v, need_weights=False, **kw_t)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    x = q.detach().numpy() if self_attn else [a.detach().numpy() for a in (q, k, v)]
    y = m.forward(x, **kw_m)
    g = m.backward(grad.numpy())
    assert rel(y, out.detach().numpy()) < 1e-6
    grads = [g] if self_attn else g
    for mine, theirs in zip(grads, [q] if self_attn else [q, k, v]):
        assert not np.isnan(mine).any()
        assert rel(mine, theirs.grad.numpy()) < 1e-6
    tp = dict(t.named_parameters())
    for name, p in m.named_parameters():
        assert rel(p.grad, tp[name].grad.numpy()) < 1e-6, name
    assert sorted(m.state_dict()) == sorted(t.state_dict())


@requires_torch
@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("self_attn", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_mha_matches_torch(float64, heads, self_attn, causal):
    _mha_case(8, heads, self_attn, causal=causal)


@requires_torch
def test_mha_kdim_vdim_and_seq_first(float64):
    _mha_case(6, 3, False, kdim=4, vdim=5)
    _mha_case(6, 2, False, batch_first=False)
    _mha_case(6, 2, True, batch_first=False)


@requires_torch
def test_mha_masks_bool_float_and_fully_masked_rows(float64):
    kpm = np.zeros((2, 5), dtype=bool)
    kpm[0, -2:] = True
    kpm[1, :] = True  # sample 1: every key masked -> output is out_proj.bias, no NaN
    _mha_case(8, 2, False, kpm=kpm)
    rng = np.random.default_rng(0)
    _mha_case(8, 2, False, mask=rng.standard_normal((4, 5)))
    _mha_case(8, 2, False, mask=rng.random((2 * 2, 4, 5)) < 0.3, kpm=kpm)
    fkpm = np.where(kpm, -1e9, 0.0)
    fkpm[1] = 0.5
    _mha_case(8, 2, False, kpm=fkpm, causal=True)


def test_need_weights_average(float64):
    m = MultiheadAttention(6, 3)
    x = np.random.default_rng(0).standard_normal((2, 4, 6))
    _, w = m(x, need_weights=True)
    assert w.shape == (2, 4, 4) and np.allclose(w.sum(-1), 1.0)
    _, w2 = m(x, need_weights=True, average_attn_weights=False)
    assert w2.shape == (2, 3, 4, 4) and np.allclose(w2.mean(1), w)


@requires_torch
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_matches_torch(float64, causal):
    rng = np.random.default_rng(1)
    q, k, v = (
        rng.standard_normal((2, 3, 4, 5)),
        rng.standard_normal((2, 3, 6, 5)),
        rng.standard_normal((2, 3, 6, 2)),
    )
    mask = None if causal else rng.random((4, 6)) < 0.7
    if mask is not None:
        mask[1] = False  # a fully masked row: PyTorch returns 0 there
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=None if mask is None else torch.from_numpy(mask), is_causal=causal, scale=0.3
    )
    g = rng.standard_normal(out.shape)
    (out * torch.from_numpy(g)).sum().backward()
    layer = ScaledDotProductAttention(is_causal=causal, scale=0.3)
    y = layer([q, k, v], attn_mask=mask)
    assert rel(y, out.detach().numpy()) < 1e-6
    assert rel(scaled_dot_product_attention(q, k, v, mask, is_causal=causal, scale=0.3), y) < 1e-12
    for mine, theirs in zip(layer.backward(g), (tq, tk, tv)):
        assert not np.isnan(mine).any()
        assert rel(mine, theirs.grad.numpy()) < 1e-6


def test_finite_differences(float64):
    rng = np.random.default_rng(2)
    kpm = np.zeros((2, 5), dtype=bool)
    kpm[1, 3:] = True
    for layer, x in (
        (MultiheadAttention(6, 2), rng.standard_normal((2, 5, 6))),
        (
            MultiheadAttention(4, 2, kdim=3, vdim=5),
            [rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 5))],
        ),
    ):
        report = check_gradients(layer, x)
        assert report.ok, str(report)
    report = check_gradients(ScaledDotProductAttention(is_causal=True), [rng.standard_normal((2, 3, 4))] * 3)
    assert report.ok, str(report)


def test_dropout_backward_finite_differences(float64):
    """The fused softmax backward (row sums taken as rowsum(G * Y)) with dropout on P."""
    from plugins.attention import attention_backward, attention_forward, causal_bias

    rng = np.random.default_rng(3)
    q, k, v = (
        rng.standard_normal((2, 3, 4, 5)),
        rng.standard_normal((2, 3, 6, 5)),
        rng.standard_normal((2, 3, 6, 2)),
    )
    g = rng.standard_normal((2, 3, 4, 2))
    bias = causal_bias(4, 6, np.float64)

    def loss(q, k, v):  # the same dropout mask on every call: a fixed seed
        y, _ = attention_forward(q, k, v, bias, 0.4, 0.3, rng=np.random.default_rng(7))
        return float((y * g).sum())

    _, cache = attention_forward(q, k, v, bias, 0.4, 0.3, rng=np.random.default_rng(7))
    assert cache["keep"] is not None and (cache["keep"] == 0).any()
    grads = attention_backward(g, cache)
    eps = 1e-6
    for i, (a, da) in enumerate(zip((q, k, v), grads)):
        numeric = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            args = [q, k, v]
            plus, minus = a.copy(), a.copy()
            plus[idx] += eps
            minus[idx] -= eps
            args[i] = plus
            up = loss(*args)
            args[i] = minus
            numeric[idx] = (up - loss(*args)) / (2 * eps)
        assert rel(da, numeric) < 1e-6


@pytest.mark.parametrize("blocks", [2, 3, 4])
@pytest.mark.parametrize("length,source", [(12, 12), (9, 14), (15, 6), (13, 13)])
def test_causal_blocks_match_general_path(blocks, length, source):
    """The blocked causal path (row blocks on key prefixes) against the one-buffer path, float64."""
    from plugins.attention import attention_backward, attention_forward, causal_bias

    rng = np.random.default_rng(length * 100 + source)
    q = rng.standard_normal((2, 3, length, 5))
    k = rng.standard_normal((2, 3, source, 5))
    v = rng.standard_normal((2, 3, source, 4))
    g = rng.standard_normal((2, 3, length, 4))
    bias = causal_bias(length, source, np.float64)
    y0, c0 = attention_forward(q, k, v, bias, 0.4, causal=False)
    assert "probs" in c0
    y1, c1 = attention_forward(q, k, v, bias, 0.4, causal=True, causal_blocks=blocks)
    assert "blocks" in c1 and len(c1["blocks"]) == blocks
    assert rel(y1, y0) < 1e-12
    grads0 = attention_backward(g, c0)
    grads1 = attention_backward(g, c1)
    for a, b in zip(grads1, grads0):
        assert rel(a, b) < 1e-12
    # strided outputs (the packed layouts MultiheadAttention passes), poisoned beforehand
    y2 = np.full((2, 3, length, 9), np.nan)[..., 2:6]
    attention_forward(q, k, v, bias, 0.4, out=y2, causal=True, causal_blocks=blocks)
    assert rel(y2, y0) < 1e-12
    outs = (
        np.full((2, 3, length, 8), np.nan)[..., 1:6],
        np.full((2, 3, source, 8), np.nan)[..., 2:7],
        np.full((2, 3, source, 8), np.nan)[..., 3:7],
    )
    attention_backward(g, c1, out=outs)
    for a, b in zip(outs, grads0):
        assert rel(a, b) < 1e-12


@pytest.mark.parametrize(("length", "source"), [(7, 7), (5, 9), (9, 4)])
def test_unmasked_one_block_path_matches_general_path(length, source):
    """keep_probs=False without a mask: one transposed block, equal to the one-buffer path (float64)."""
    from plugins.attention import attention_backward, attention_forward

    rng = np.random.default_rng(length * 10 + source)
    q = rng.standard_normal((2, 3, length, 5))
    k = rng.standard_normal((2, 3, source, 5))
    v = rng.standard_normal((2, 3, source, 4))
    g = rng.standard_normal((2, 3, length, 4))
    y0, c0 = attention_forward(q, k, v, None, 0.4)
    y1, c1 = attention_forward(q, k, v, None, 0.4, keep_probs=False)
    assert "probs" in c0 and "blocks" in c1 and len(c1["blocks"]) == 1
    assert rel(y1, y0) < 1e-12
    for a, b in zip(attention_backward(g, c1), attention_backward(g, c0)):
        assert rel(a, b) < 1e-12


def test_mha_causal_blocks_match_mask(float64):
    """is_causal on a long sequence (the blocked path) equals the same mask given as attn_mask."""
    from plugins.attention_causal import CAUSAL_MIN_LENGTH

    rng = np.random.default_rng(5)
    length = CAUSAL_MIN_LENGTH + 3
    m = MultiheadAttention(8, 2)
    x = rng.standard_normal((2, length, 8))
    g = rng.standard_normal((2, length, 8))
    mask = np.triu(np.ones((length, length), dtype=bool), k=1)
    results = []
    for kwargs in ({"is_causal": True}, {"attn_mask": mask}):
        m.zero_grad()
        y = m.forward(x, **kwargs)
        dx = m.backward(g)
        results.append((y, dx, *(p.grad.copy() for p in m.parameters())))
    for a, b in zip(*results):
        assert rel(a, b) < 1e-12


def test_causal_mask_is_a_shared_read_only_constant():
    from plugins.attention import causal_bias

    a = causal_bias(5, 7, np.float32)
    assert a is causal_bias(5, 7, np.float32) and not a.flags.writeable
    assert np.array_equal(np.isneginf(a), ~np.tril(np.ones((5, 7), dtype=bool)))
    assert causal_bias(5, 7, np.float64).dtype == np.float64


def test_bad_inputs():
    with pytest.raises(ConfigError, match="divisible"):
        MultiheadAttention(10, 3)
    m = MultiheadAttention(4, 2)
    x = np.ones((2, 3, 4), dtype=np.float32)
    with pytest.raises(ShapeError, match="key_padding_mask"):
        m(x, key_padding_mask=np.zeros((2, 4), dtype=bool))
    with pytest.raises(ShapeError, match="attn_mask"):
        m(x, attn_mask=np.zeros((3, 2), dtype=bool))
    with pytest.raises(DataError, match="boolean"):
        m(x, attn_mask=np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ShapeError, match="batch"):
        m([x, np.ones((3, 3, 4), dtype=np.float32), np.ones((3, 3, 4), dtype=np.float32)])
    with pytest.raises(ShapeError, match="query"):
        m(np.ones((2, 3, 5), dtype=np.float32))


def test_save_load_round_trip(tmp_path):
    pytest.importorskip("h5py")
    model = framework.Sequential([MultiheadAttention(8, 2)])
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    y = model.predict(x)
    model.save(tmp_path / "mha.h5")
    loaded = framework.load_model(tmp_path / "mha.h5")
    np.testing.assert_allclose(loaded.predict(x), y, rtol=1e-6)


def test_attention_over_no_keys_is_a_clear_shape_error():
    """S = 0: no softmax exists; a ShapeError naming the layer, not NumPy's zero-size reduction error."""
    from framework.errors import ShapeError
    from framework.layers import MultiheadAttention, ScaledDotProductAttention
    from plugins.attention import scaled_dot_product_attention

    q, k, v = np.ones((2, 3, 4)), np.ones((2, 0, 4)), np.ones((2, 0, 4))
    with pytest.raises(ShapeError, match=r"scaled_dot_product_attention.*at least one key"):
        scaled_dot_product_attention(q, k, v)
    with pytest.raises(ShapeError, match=r"ScaledDotProductAttention.*at least one key"):
        ScaledDotProductAttention()([q, k, v])
    with pytest.raises(ShapeError, match=r"MultiheadAttention.*at least one key"):
        MultiheadAttention(4, 2)([q.astype(np.float32), k.astype(np.float32), v.astype(np.float32)])
