"""Float64 parity hunt of the sequence layers against PyTorch: combinations the other tests leave out.

MultiheadAttention (masks of every kind and rank, weights, layouts, kdim/vdim, bias=False, shared
inputs), the Transformer blocks and stacks (masks, norm_first, eps, bias=False, seq-first), the
recurrent layers and cells (stacks, both directions, initial states and their gradients, final
states, gradients into output and final states at once) and Embedding (padding_idx, repeated rows).
Outputs and every gradient (inputs, initial states, parameters) are compared at rtol 1e-9 / atol 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import requires_torch

from framework import layers as L
from framework.errors import DataError, ShapeError

try:
    import torch
except ImportError:
    torch = None

pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched:UserWarning")

RTOL, ATOL = 1e-9, 1e-10


def close(ours, theirs, what=""):
    if isinstance(theirs, torch.Tensor):
        theirs = theirs.detach().numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=RTOL, atol=ATOL, err_msg=what)


def tt(a, grad=True):
    """A float64 torch leaf holding a copy of ``a``."""
    return torch.tensor(np.array(a, dtype=np.float64), dtype=torch.float64, requires_grad=grad)


def randomize(t, scale=0.5, seed=0):
    """Non-trivial parameters (non-zero biases) for a torch module, reproducibly."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in t.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64))


def copy_weights(t, m):
    """PyTorch's state dict into ours, key for key (the layouts are the same)."""
    assert sorted(m.state_dict()) == sorted(t.state_dict())
    m.load_state_dict({k: v.detach().numpy().copy() for k, v in t.state_dict().items()})


def compare_param_grads(t, m):
    ours = dict(m.named_parameters())
    theirs = dict(t.named_parameters())
    assert sorted(ours) == sorted(theirs)
    for name, p in theirs.items():
        assert p.grad is not None, name
        close(ours[name].grad, p.grad, name)


# -- MultiheadAttention -----------------------------------------------------------------------------


def _mha(e, h, seed=0, **kw):
    t = torch.nn.MultiheadAttention(e, h, dtype=torch.float64, **kw)
    randomize(t, seed=seed)
    m = L.MultiheadAttention(e, h, **kw)
    copy_weights(t, m)
    return t, m


def _run_mha(t, m, arrays, *, shared=False, kw_t=None, kw_m=None, need_weights=False, average=True):
    """Forward and backward in both; ``shared``: one array for query, key and value."""
    kw_t, kw_m = dict(kw_t or {}), dict(kw_m or {})
    t.zero_grad()
    before = [a.copy() for a in (*arrays, *kw_m.values()) if isinstance(a, np.ndarray)]
    if shared:
        x = tt(arrays[0])
        tq = tk = tv = x
        leaves = [x]
    else:
        tq, tk, tv = (tt(a) for a in arrays)
        leaves = [tq, tk, tv]
    out, w_t = t(tq, tk, tv, need_weights=need_weights, average_attn_weights=average, **kw_t)
    g = np.random.default_rng(11).standard_normal(tuple(out.shape))
    (out * torch.from_numpy(g)).sum().backward()
    m.zero_grad()
    res = m.forward(
        arrays[0] if shared else list(arrays),
        need_weights=need_weights,
        **kw_m,
        **({"average_attn_weights": average} if need_weights else {}),
    )
    y, w_m = res if need_weights else (res, None)
    grads = m.backward((g, None) if need_weights else g)
    close(y, out, "output")
    after = [a for a in (*arrays, *kw_m.values()) if isinstance(a, np.ndarray)]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b, err_msg="an input or mask was modified in place")
    if shared:
        close(grads, x.grad, "d x")
    else:
        for name, mine, leaf in zip("qkv", grads, leaves):
            close(mine, leaf.grad, f"d {name}")
    compare_param_grads(t, m)
    return y, w_m, w_t


def _bool_mask(rng, shape, p=0.3):
    mask = rng.random(shape) < p
    mask[..., 0] = False  # every query keeps one key: no fully masked row
    return mask


@requires_torch
@pytest.mark.parametrize("batch_first", [True, False])
def test_mha_self_attention_kpm_bool_and_float_attn_mask_with_inf(float64, batch_first):
    rng = np.random.default_rng(0)
    t, m = _mha(8, 2, batch_first=batch_first)
    n, length = 3, 5
    x = rng.standard_normal((n, length, 8) if batch_first else (length, n, 8))
    kpm = np.zeros((n, length), dtype=bool)
    kpm[0, -2:] = True
    kpm[2, 1] = True
    am = rng.standard_normal((length, length))
    am[np.triu_indices(length, 1)] = -np.inf  # a float causal mask with -inf entries
    _run_mha(
        t,
        m,
        [x],
        shared=True,
        kw_t={"key_padding_mask": torch.from_numpy(kpm), "attn_mask": torch.from_numpy(am)},
        kw_m={"key_padding_mask": kpm, "attn_mask": am},
    )


@requires_torch
@pytest.mark.parametrize("batch_first", [True, False])
def test_mha_cross_attention_per_head_float_mask_and_float_kpm(float64, batch_first):
    rng = np.random.default_rng(1)
    h, n, length, source = 2, 2, 3, 6
    t, m = _mha(8, h, batch_first=batch_first, seed=1)

    def seq(ln):
        return rng.standard_normal((n, ln, 8) if batch_first else (ln, n, 8))

    q, k, v = seq(length), seq(source), seq(source)
    am = rng.standard_normal((n * h, length, source))
    am[1, 0, 2:] = -np.inf  # sample 0, head 1 only
    kpm = np.where(rng.random((n, source)) < 0.3, -np.inf, rng.standard_normal((n, source)))
    kpm[:, 0] = 0.0
    _run_mha(
        t,
        m,
        [q, k, v],
        kw_t={"key_padding_mask": torch.from_numpy(kpm), "attn_mask": torch.from_numpy(am)},
        kw_m={"key_padding_mask": kpm, "attn_mask": am},
    )


@requires_torch
def test_mha_self_attention_per_head_bool_mask_with_bool_kpm(float64):
    """The packed (one-array) path with a 3-D per-head mask: head order is sample * H + head."""
    rng = np.random.default_rng(2)
    h, n, length = 4, 2, 5
    t, m = _mha(8, h, seed=2, batch_first=True)
    x = rng.standard_normal((n, length, 8))
    am = _bool_mask(rng, (n * h, length, length), 0.5)
    kpm = np.zeros((n, length), dtype=bool)
    kpm[1, 3:] = True
    _run_mha(
        t,
        m,
        [x],
        shared=True,
        kw_t={"key_padding_mask": torch.from_numpy(kpm), "attn_mask": torch.from_numpy(am)},
        kw_m={"key_padding_mask": kpm, "attn_mask": am},
    )


@requires_torch
@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_mha_need_weights_match_torch(float64, average, batch_first):
    rng = np.random.default_rng(3)
    h, n, length, source = 2, 2, 4, 3
    t, m = _mha(6, h, batch_first=batch_first, seed=3)

    def seq(ln):
        return rng.standard_normal((n, ln, 6) if batch_first else (ln, n, 6))

    am = _bool_mask(rng, (length, source))
    kpm = np.zeros((n, source), dtype=bool)
    kpm[1, 2] = True
    _, w_m, w_t = _run_mha(
        t,
        m,
        [seq(length), seq(source), seq(source)],
        kw_t={"key_padding_mask": torch.from_numpy(kpm), "attn_mask": torch.from_numpy(am)},
        kw_m={"key_padding_mask": kpm, "attn_mask": am},
        need_weights=True,
        average=average,
    )
    assert w_m.shape == tuple(w_t.shape)
    close(w_m, w_t, "attention weights")


@requires_torch
def test_mha_need_weights_self_attention_causal(float64):
    """is_causal with the weights returned (the one-buffer path, not the blocked one)."""
    rng = np.random.default_rng(4)
    t, m = _mha(8, 4, seed=4, batch_first=True)
    x = rng.standard_normal((2, 5, 8))
    causal = torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    _, w_m, w_t = _run_mha(
        t,
        m,
        [x],
        shared=True,
        kw_t={"attn_mask": causal},
        kw_m={"is_causal": True},
        need_weights=True,
        average=False,
    )
    close(w_m, w_t, "weights")


@requires_torch
@pytest.mark.parametrize(("length", "source"), [(3, 5), (5, 3), (1, 4)])
def test_mha_is_causal_without_mask_cross_lengths(float64, length, source):
    """Ours builds the top-left causal mask itself; PyTorch gets it explicitly (tril(ones(L, S)))."""
    rng = np.random.default_rng(5)
    t, m = _mha(4, 2, seed=5, batch_first=True)
    q = rng.standard_normal((2, length, 4))
    kv = [rng.standard_normal((2, source, 4)) for _ in range(2)]
    mask = torch.triu(torch.ones(length, source, dtype=torch.bool), 1)
    _run_mha(t, m, [q, *kv], kw_t={"attn_mask": mask, "is_causal": True}, kw_m={"is_causal": True})


@requires_torch
def test_mha_is_causal_with_explicit_mask_and_kpm(float64):
    rng = np.random.default_rng(6)
    t, m = _mha(4, 2, seed=6, batch_first=False)
    x = rng.standard_normal((4, 2, 4))
    mask = np.triu(np.ones((4, 4), dtype=bool), 1)
    kpm = np.array([[False, False, True, True], [False, True, False, False]])
    _run_mha(
        t,
        m,
        [x],
        shared=True,
        kw_t={
            "attn_mask": torch.from_numpy(mask),
            "is_causal": True,
            "key_padding_mask": torch.from_numpy(kpm),
        },
        kw_m={"attn_mask": mask, "is_causal": True, "key_padding_mask": kpm},
    )


@requires_torch
@pytest.mark.parametrize("batch_first", [True, False])
def test_mha_kdim_vdim_without_bias_and_masks(float64, batch_first):
    rng = np.random.default_rng(7)
    n, length, source = 2, 3, 4
    t, m = _mha(6, 3, seed=7, kdim=5, vdim=2, bias=False, batch_first=batch_first)
    assert m.in_proj_bias is None and m.out_proj.bias is None

    def seq(ln, f):
        return rng.standard_normal((n, ln, f) if batch_first else (ln, n, f))

    kpm = np.array([[False, False, False, True], [True, False, False, False]])
    am = rng.standard_normal((length, source))
    _run_mha(
        t,
        m,
        [seq(length, 6), seq(source, 5), seq(source, 2)],
        kw_t={"key_padding_mask": torch.from_numpy(kpm), "attn_mask": torch.from_numpy(am)},
        kw_m={"key_padding_mask": kpm, "attn_mask": am},
    )


@requires_torch
@pytest.mark.parametrize("shared", [True, False])
def test_mha_without_bias_same_embed_dim(float64, shared):
    rng = np.random.default_rng(8)
    t, m = _mha(8, 2, seed=8, bias=False, batch_first=True)
    arrays = (
        [rng.standard_normal((2, 3, 8))] if shared else [rng.standard_normal((2, s, 8)) for s in (3, 4, 4)]
    )
    _run_mha(t, m, arrays, shared=shared)


@requires_torch
def test_mha_one_head_one_query_one_key(float64):
    rng = np.random.default_rng(9)
    t, m = _mha(3, 1, seed=9, batch_first=True)
    _run_mha(t, m, [rng.standard_normal((1, 1, 3)) for _ in range(3)])
    _run_mha(t, m, [rng.standard_normal((1, 1, 3))], shared=True)


@requires_torch
def test_mha_dropout_is_off_in_eval_mode(float64):
    rng = np.random.default_rng(10)
    t, m = _mha(8, 2, seed=10, dropout=0.5, batch_first=True)
    t.eval()
    m.eval()
    kpm = np.zeros((2, 4), dtype=bool)
    kpm[0, 1] = True
    _run_mha(
        t,
        m,
        [rng.standard_normal((2, 4, 8))],
        shared=True,
        kw_t={"key_padding_mask": torch.from_numpy(kpm)},
        kw_m={"key_padding_mask": kpm},
    )


@requires_torch
def test_mha_same_array_given_as_a_list_sums_to_torch_gradient(float64):
    """Self-attention with [x, x, x]: the three returned gradients sum to PyTorch's d x."""
    rng = np.random.default_rng(12)
    t, m = _mha(8, 2, seed=12, batch_first=True)
    x = rng.standard_normal((2, 4, 8))
    tx = tt(x)
    out, _ = t(tx, tx, tx, need_weights=False)
    g = rng.standard_normal(tuple(out.shape))
    (out * torch.from_numpy(g)).sum().backward()
    m.zero_grad()
    close(m.forward([x, x, x]), out)
    dq, dk, dv = m.backward(g)
    close(dq + dk + dv, tx.grad)
    compare_param_grads(t, m)
    # and the packed one-array call agrees with it
    m.zero_grad()
    close(m.forward(x), out)
    close(m.backward(g), tx.grad)
    compare_param_grads(t, m)


@requires_torch
def test_mha_key_is_value_gradients_sum(float64):
    rng = np.random.default_rng(13)
    t, m = _mha(4, 2, seed=13, batch_first=True)
    q, kv = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    tq, tkv = tt(q), tt(kv)
    out, _ = t(tq, tkv, tkv, need_weights=False)
    g = rng.standard_normal(tuple(out.shape))
    (out * torch.from_numpy(g)).sum().backward()
    m.zero_grad()
    close(m.forward([q, kv, kv]), out)
    dq, dk, dv = m.backward(g)
    close(dq, tq.grad)
    close(dk + dv, tkv.grad)
    compare_param_grads(t, m)


@requires_torch
def test_mha_fully_masked_row_by_attn_mask(float64):
    """A query row with every key masked: PyTorch's need_weights=False path gives 0 attention there."""
    rng = np.random.default_rng(14)
    t, m = _mha(4, 2, seed=14, batch_first=True)
    am = np.zeros((3, 4), dtype=bool)
    am[1] = True  # query 1 sees nothing
    arrays = [rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 4, 4)), rng.standard_normal((2, 4, 4))]
    y, _, _ = _run_mha(t, m, arrays, kw_t={"attn_mask": torch.from_numpy(am)}, kw_m={"attn_mask": am})
    close(y[:, 1], np.broadcast_to(m.out_proj.bias.data, (2, 4)))
    # with the weights: ours documents zeros (PyTorch's weights path gives NaN there)
    y2, w = m(arrays, attn_mask=am, need_weights=True, average_attn_weights=False)
    close(y2, y)
    assert np.all(w[:, :, 1] == 0) and np.isfinite(w).all()
    close(w[:, :, [0, 2]].sum(-1), np.ones((2, 2, 2)))


@requires_torch
def test_mha_fully_masked_sample_by_float_kpm_self_attention(float64):
    rng = np.random.default_rng(15)
    t, m = _mha(4, 2, seed=15, batch_first=True)
    kpm = np.zeros((2, 3))
    kpm[1] = -np.inf
    _run_mha(
        t,
        m,
        [rng.standard_normal((2, 3, 4))],
        shared=True,
        kw_t={"key_padding_mask": torch.from_numpy(kpm)},
        kw_m={"key_padding_mask": kpm},
    )


def test_mha_mask_errors():
    m = L.MultiheadAttention(4, 2)
    x = np.ones((2, 3, 4))
    with pytest.raises(ShapeError, match=r"N \* num_heads"):
        m(x, attn_mask=np.zeros((2, 3, 3), dtype=bool))  # (N, L, S): not (N*H, L, S)
    with pytest.raises(DataError, match="key_padding_mask"):
        m(x, key_padding_mask=np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ShapeError, match="key_padding_mask"):
        m(x, key_padding_mask=np.zeros((3, 2), dtype=bool))


@pytest.mark.parametrize("kwarg", ["add_bias_kv", "add_zero_attn"])
def test_mha_unsupported_torch_arguments_are_refused_not_ignored(kwarg):
    with pytest.raises(TypeError, match=kwarg):
        L.MultiheadAttention(4, 2, **{kwarg: True})


@requires_torch
@pytest.mark.parametrize(("length", "source"), [(66, 70), (70, 40)])
def test_mha_long_causal_cross_attention_blocked_path(float64, length, source):
    """L >= 64 with is_causal and no other mask takes the blocked causal path: still PyTorch's numbers."""
    rng = np.random.default_rng(16)
    t, m = _mha(4, 2, seed=16, batch_first=False)
    q = rng.standard_normal((length, 2, 4))
    kv = [rng.standard_normal((source, 2, 4)) for _ in range(2)]
    mask = torch.triu(torch.ones(length, source, dtype=torch.bool), 1)
    _run_mha(t, m, [q, *kv], kw_t={"attn_mask": mask, "is_causal": True}, kw_m={"is_causal": True})


@requires_torch
def test_mha_long_causal_self_attention_seq_first(float64):
    rng = np.random.default_rng(17)
    t, m = _mha(8, 2, seed=17, batch_first=False)
    mask = torch.triu(torch.ones(65, 65, dtype=torch.bool), 1)
    _run_mha(
        t,
        m,
        [rng.standard_normal((65, 2, 8))],
        shared=True,
        kw_t={"attn_mask": mask, "is_causal": True},
        kw_m={"is_causal": True},
    )


# -- Transformer blocks and stacks --------------------------------------------------------------------


def _run_block(t, m, arrays, kw_t, kw_m, seed=0):
    """Train mode (dropout 0: PyTorch's slow, differentiable path), output and every gradient."""
    randomize(t, scale=0.3, seed=seed)
    copy_weights(t, m)
    t.train()
    leaves = [tt(a) for a in arrays]
    out = t(*leaves, **kw_t)
    g = np.random.default_rng(seed + 100).standard_normal(tuple(out.shape))
    (out * torch.from_numpy(g)).sum().backward()
    m.zero_grad()
    y = m.forward(arrays[0] if len(arrays) == 1 else list(arrays), **kw_m)
    grads = m.backward(g)
    close(y, out, "output")
    for i, (mine, leaf) in enumerate(zip(grads if len(arrays) > 1 else [grads], leaves)):
        close(mine, leaf.grad, f"d input {i}")
    compare_param_grads(t, m)


def _layout(batch_first, n, length, e, rng):
    return rng.standard_normal((n, length, e) if batch_first else (length, n, e))


BLOCK_CASES = [
    # norm_first, activation, batch_first, bias, layer_norm_eps
    (False, "relu", False, True, 1e-5),
    (True, "gelu", False, False, 1e-3),
    (True, "relu", True, False, 0.5),
    (False, "gelu", True, True, 1e-2),
]


@requires_torch
@pytest.mark.parametrize(("norm_first", "activation", "batch_first", "bias", "eps"), BLOCK_CASES)
def test_encoder_layer_masks_layouts_bias_eps(float64, norm_first, activation, batch_first, bias, eps):
    rng = np.random.default_rng(20)
    kw = dict(
        dim_feedforward=12,
        dropout=0.0,
        activation=activation,
        layer_norm_eps=eps,
        batch_first=batch_first,
        norm_first=norm_first,
        bias=bias,
    )
    t = torch.nn.TransformerEncoderLayer(8, 2, dtype=torch.float64, **kw)
    m = L.TransformerEncoderLayer(8, 2, **kw)
    n, length = 3, 5
    src_mask = rng.standard_normal((length, length))
    src_mask[0, 3:] = -np.inf
    kpm = np.zeros((n, length), dtype=bool)
    kpm[1, -2:] = True
    kpm[2, 0] = True
    _run_block(
        t,
        m,
        [_layout(batch_first, n, length, 8, rng)],
        {"src_mask": torch.from_numpy(src_mask), "src_key_padding_mask": torch.from_numpy(kpm)},
        {"src_mask": src_mask, "src_key_padding_mask": kpm},
    )


@requires_torch
def test_encoder_layer_per_head_bool_src_mask(float64):
    rng = np.random.default_rng(21)
    t = torch.nn.TransformerEncoderLayer(8, 4, 16, 0.0, batch_first=True, dtype=torch.float64)
    m = L.TransformerEncoderLayer(8, 4, 16, 0.0)
    mask = _bool_mask(rng, (2 * 4, 5, 5), 0.4)
    _run_block(
        t, m, [rng.standard_normal((2, 5, 8))], {"src_mask": torch.from_numpy(mask)}, {"src_mask": mask}
    )


@requires_torch
@pytest.mark.parametrize(("norm_first", "activation", "batch_first", "bias", "eps"), BLOCK_CASES)
def test_decoder_layer_every_mask(float64, norm_first, activation, batch_first, bias, eps):
    rng = np.random.default_rng(22)
    kw = dict(
        dim_feedforward=12,
        dropout=0.0,
        activation=activation,
        layer_norm_eps=eps,
        batch_first=batch_first,
        norm_first=norm_first,
        bias=bias,
    )
    t = torch.nn.TransformerDecoderLayer(8, 2, dtype=torch.float64, **kw)
    m = L.TransformerDecoderLayer(8, 2, **kw)
    n, tl, sl = 2, 4, 6
    tgt_kpm = np.array([[False, False, False, True], [False, True, False, False]])
    mem_kpm = np.zeros((n, sl), dtype=bool)
    mem_kpm[0, 4:] = True
    mem_mask = rng.standard_normal((tl, sl))
    causal = torch.nn.Transformer.generate_square_subsequent_mask(tl, dtype=torch.float64)
    _run_block(
        t,
        m,
        [_layout(batch_first, n, tl, 8, rng), _layout(batch_first, n, sl, 8, rng)],
        {
            "tgt_mask": causal,
            "tgt_is_causal": True,
            "memory_mask": torch.from_numpy(mem_mask),
            "tgt_key_padding_mask": torch.from_numpy(tgt_kpm),
            "memory_key_padding_mask": torch.from_numpy(mem_kpm),
        },
        {
            "tgt_is_causal": True,
            "memory_mask": mem_mask,
            "tgt_key_padding_mask": tgt_kpm,
            "memory_key_padding_mask": mem_kpm,
        },
    )


@requires_torch
def test_decoder_layer_explicit_float_tgt_mask(float64):
    rng = np.random.default_rng(23)
    t = torch.nn.TransformerDecoderLayer(6, 3, 10, 0.0, batch_first=True, dtype=torch.float64)
    m = L.TransformerDecoderLayer(6, 3, 10, 0.0)
    tgt_mask = rng.standard_normal((3, 3))
    tgt_mask[0, 1:] = -np.inf
    _run_block(
        t,
        m,
        [rng.standard_normal((2, 3, 6)), rng.standard_normal((2, 5, 6))],
        {"tgt_mask": torch.from_numpy(tgt_mask)},
        {"tgt_mask": tgt_mask},
    )


@requires_torch
@pytest.mark.parametrize("batch_first", [True, False])
def test_encoder_stack_with_norm_and_masks(float64, batch_first):
    rng = np.random.default_rng(24)
    kw = dict(dim_feedforward=12, dropout=0.0, batch_first=batch_first, norm_first=True, activation="gelu")
    t = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(8, 2, dtype=torch.float64, **kw),
        3,
        norm=torch.nn.LayerNorm(8, eps=1e-4, dtype=torch.float64),
        enable_nested_tensor=False,
    )
    m = L.TransformerEncoder(L.TransformerEncoderLayer(8, 2, **kw), 3, norm=L.LayerNorm(8, eps=1e-4))
    n, length = 2, 5
    kpm = np.zeros((n, length), dtype=bool)
    kpm[0, 3:] = True
    causal = torch.nn.Transformer.generate_square_subsequent_mask(length, dtype=torch.float64)
    _run_block(
        t,
        m,
        [_layout(batch_first, n, length, 8, rng)],
        {"mask": causal, "is_causal": True, "src_key_padding_mask": torch.from_numpy(kpm)},
        {"mask": causal.numpy(), "src_key_padding_mask": kpm},
        seed=3,
    )


@requires_torch
def test_encoder_stack_is_causal_without_mask(float64):
    rng = np.random.default_rng(25)
    t = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(8, 2, 12, 0.0, batch_first=True, dtype=torch.float64),
        2,
        enable_nested_tensor=False,
    )
    m = L.TransformerEncoder(L.TransformerEncoderLayer(8, 2, 12, 0.0), 2)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)
    _run_block(
        t, m, [rng.standard_normal((2, 4, 8))], {"mask": causal, "is_causal": True}, {"is_causal": True}
    )


@requires_torch
@pytest.mark.parametrize("batch_first", [True, False])
def test_decoder_stack_with_norm_and_every_mask(float64, batch_first):
    rng = np.random.default_rng(26)
    kw = dict(dim_feedforward=12, dropout=0.0, batch_first=batch_first, bias=False)
    t = torch.nn.TransformerDecoder(
        torch.nn.TransformerDecoderLayer(8, 2, dtype=torch.float64, **kw),
        3,
        norm=torch.nn.LayerNorm(8, dtype=torch.float64),
    )
    m = L.TransformerDecoder(L.TransformerDecoderLayer(8, 2, **kw), 3, norm=L.LayerNorm(8))
    n, tl, sl = 2, 3, 4
    tgt_kpm = np.array([[False, False, True], [False, False, False]])
    mem_kpm = np.array([[False, True, False, False], [False, False, False, True]])
    mem_mask = _bool_mask(rng, (tl, sl))
    causal = torch.nn.Transformer.generate_square_subsequent_mask(tl, dtype=torch.float64)
    _run_block(
        t,
        m,
        [_layout(batch_first, n, tl, 8, rng), _layout(batch_first, n, sl, 8, rng)],
        {
            "tgt_mask": causal,
            "tgt_is_causal": True,
            "memory_mask": torch.from_numpy(mem_mask),
            "tgt_key_padding_mask": torch.from_numpy(tgt_kpm),
            "memory_key_padding_mask": torch.from_numpy(mem_kpm),
        },
        {
            "tgt_is_causal": True,
            "memory_mask": mem_mask,
            "tgt_key_padding_mask": tgt_kpm,
            "memory_key_padding_mask": mem_kpm,
        },
        seed=5,
    )


# -- RNN / LSTM / GRU -----------------------------------------------------------------------------------

IN, HID = 3, 4


def _recurrent(kind, **kw):
    nonlinearity = None
    if kind.startswith("rnn_"):
        kind, nonlinearity = "rnn", kind[4:]
        kw["nonlinearity"] = nonlinearity
    torch_cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    ours_cls = {"rnn": L.RNN, "lstm": L.LSTM, "gru": L.GRU}[kind]
    t = torch_cls(IN, HID, dtype=torch.float64, **kw)
    m = ours_cls(IN, HID, **kw)
    randomize(t, scale=0.6)
    copy_weights(t, m)
    return t, m


def _run_recurrent(t, m, x, state, grad_seq=True, grad_state=True, seed=0):
    """Forward with the given initial state, backward with gradients into the output and final states."""
    lstm = isinstance(m, L.LSTM)
    t.zero_grad()
    leaves = [tt(x)]
    if state is None:
        out_t, fin_t = t(leaves[0])
    else:
        st = tuple(tt(s) for s in state) if lstm else tt(state)
        leaves += list(st) if lstm else [st]
        out_t, fin_t = t(leaves[0], st)
    fins_t = list(fin_t) if lstm else [fin_t]
    rng = np.random.default_rng(seed)
    g_seq = rng.standard_normal(tuple(out_t.shape)) if grad_seq else None
    g_fin = [rng.standard_normal(tuple(f.shape)) for f in fins_t] if grad_state else None
    loss = 0
    if grad_seq:
        loss = loss + (out_t * torch.from_numpy(g_seq)).sum()
    if grad_state:
        loss = loss + sum((f * torch.from_numpy(g)).sum() for f, g in zip(fins_t, g_fin))
    loss.backward()

    m.zero_grad()
    out, fin = m.forward(x) if state is None else m.forward(x, state)
    fins = list(fin) if lstm else [fin]
    close(out, out_t, "output")
    for i, (mine, theirs) in enumerate(zip(fins, fins_t)):
        close(mine, theirs, f"final state {i}")
    if lstm:
        dx = m.backward(g_seq, None if g_fin is None else tuple(g_fin))
    else:
        dx = m.backward(g_seq, None if g_fin is None else g_fin[0])
    close(dx, leaves[0].grad, "d x")
    if state is not None:
        close(m.grad_h0, leaves[1].grad, "d h0")
        if lstm:
            close(m.grad_c0, leaves[2].grad, "d c0")
    compare_param_grads(t, m)


def _initial_state(rng, m, n):
    shape = (m.num_directions * m.num_layers, n, HID)
    if isinstance(m, L.LSTM):
        return (rng.standard_normal(shape), rng.standard_normal(shape))
    return rng.standard_normal(shape)


KINDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
STACKS = [
    # num_layers, bidirectional, batch_first, bias
    (2, True, False, True),
    (3, True, True, False),
    (3, False, True, True),
    (2, False, False, False),
]


@requires_torch
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("num_layers", "bidirectional", "batch_first", "bias"), STACKS)
def test_recurrent_stacks_with_initial_state_and_final_state_gradients(
    float64, kind, num_layers, bidirectional, batch_first, bias
):
    t, m = _recurrent(
        kind, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias
    )
    rng = np.random.default_rng(30)
    n, length = 2, 4
    x = rng.standard_normal((n, length, IN) if batch_first else (length, n, IN))
    _run_recurrent(t, m, x, _initial_state(rng, m, n))


@requires_torch
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_length_one_batch_one(float64, kind, bidirectional):
    t, m = _recurrent(kind, num_layers=2, bidirectional=bidirectional, batch_first=True)
    rng = np.random.default_rng(31)
    _run_recurrent(t, m, rng.standard_normal((1, 1, IN)), _initial_state(rng, m, 1))
    _run_recurrent(t, m, rng.standard_normal((1, 1, IN)), None)


@requires_torch
@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_gradient_into_final_states_only(float64, kind):
    t, m = _recurrent(kind, num_layers=2, bidirectional=True)
    rng = np.random.default_rng(32)
    x = rng.standard_normal((5, 2, IN))
    _run_recurrent(t, m, x, _initial_state(rng, m, 2), grad_seq=False)


@requires_torch
@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_gradient_into_sequence_only_without_initial_state(float64, kind):
    t, m = _recurrent(kind, num_layers=3, bidirectional=True, batch_first=True, bias=False)
    rng = np.random.default_rng(33)
    _run_recurrent(t, m, rng.standard_normal((2, 3, IN)), None, grad_state=False)


@requires_torch
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_relu"])
def test_recurrent_inter_layer_dropout_is_off_in_eval(float64, kind):
    t, m = _recurrent(kind, num_layers=3, dropout=0.5, bidirectional=True)
    t.eval()
    m.eval()
    rng = np.random.default_rng(34)
    _run_recurrent(t, m, rng.standard_normal((4, 2, IN)), _initial_state(rng, m, 2))


@requires_torch
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_recurrent_output_last_is_torch_last_layer_final_states(float64, kind):
    t, m_both = _recurrent(kind, num_layers=2, bidirectional=True, batch_first=True)
    cls = type(m_both)
    extra = {"nonlinearity": "tanh"} if kind.startswith("rnn") else {}
    m = cls(IN, HID, num_layers=2, bidirectional=True, batch_first=True, output="last", **extra)
    copy_weights(t, m)
    rng = np.random.default_rng(35)
    x = rng.standard_normal((3, 5, IN))
    tx = tt(x)
    _, fin = t(tx)
    h_n = fin[0] if isinstance(fin, tuple) else fin
    last = torch.cat([h_n[-2], h_n[-1]], dim=1)  # [forward, reverse] of the last layer
    g = rng.standard_normal(tuple(last.shape))
    (last * torch.from_numpy(g)).sum().backward()
    m.zero_grad()
    close(m.forward(x), last)
    close(m.backward(g), tx.grad)
    compare_param_grads(t, m)


# -- cells ------------------------------------------------------------------------------------------------


@requires_torch
@pytest.mark.parametrize(
    ("cls_t", "cls_m", "kw"),
    [
        ("RNNCell", L.RNNCell, {"nonlinearity": "relu", "bias": False}),  # torch.nn's, by name
        ("RNNCell", L.RNNCell, {"nonlinearity": "tanh"}),
        ("GRUCell", L.GRUCell, {"bias": False}),
        ("GRUCell", L.GRUCell, {}),
    ],
)
def test_single_state_cells_match_torch(float64, cls_t, cls_m, kw):
    t = getattr(torch.nn, cls_t)(IN, HID, dtype=torch.float64, **kw)
    randomize(t, scale=0.6)
    m = cls_m(IN, HID, **kw)
    copy_weights(t, m)
    rng = np.random.default_rng(40)
    x, h0 = rng.standard_normal((3, IN)), rng.standard_normal((3, HID))
    tx, th = tt(x), tt(h0)
    out = t(tx, th)
    g = rng.standard_normal((3, HID))
    (out * torch.from_numpy(g)).sum().backward()
    m.zero_grad()
    close(m.forward(x, h0), out)
    close(m.backward(g), tx.grad)
    close(m.grad_h0, th.grad)
    compare_param_grads(t, m)
    # the list form returns [dx, dh]
    m.zero_grad()
    m.forward([x, h0])
    dx, dh = m.backward(g)
    close(dx, tx.grad)
    close(dh, th.grad)


@requires_torch
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell_gradients_into_h_and_c(float64, bias):
    t = torch.nn.LSTMCell(IN, HID, bias=bias, dtype=torch.float64)
    randomize(t, scale=0.6)
    m = L.LSTMCell(IN, HID, bias=bias)
    copy_weights(t, m)
    rng = np.random.default_rng(41)
    x, h0, c0 = rng.standard_normal((2, IN)), rng.standard_normal((2, HID)), rng.standard_normal((2, HID))
    tx, th, tc = tt(x), tt(h0), tt(c0)
    h1, c1 = t(tx, (th, tc))
    gh, gc = rng.standard_normal((2, HID)), rng.standard_normal((2, HID))
    ((h1 * torch.from_numpy(gh)).sum() + (c1 * torch.from_numpy(gc)).sum()).backward()
    m.zero_grad()
    h, c = m.forward(x, (h0, c0))
    close(h, h1)
    close(c, c1)
    close(m.backward(gh, gc), tx.grad)
    close(m.grad_h0, th.grad)
    close(m.grad_c0, tc.grad)
    compare_param_grads(t, m)
    m.zero_grad()
    m.forward([x, h0, c0])
    dx, dh, dc = m.backward((gh, gc))
    close(dx, tx.grad)
    close(dh, th.grad)
    close(dc, tc.grad)


def test_recurrent_unsupported_torch_arguments_are_refused_not_ignored():
    with pytest.raises(TypeError, match="proj_size"):
        L.LSTM(IN, HID, proj_size=2)


# -- Embedding ---------------------------------------------------------------------------------------------


@requires_torch
@pytest.mark.parametrize("padding_idx", [None, 2, -1, -7])
def test_embedding_padding_idx_repeated_indices_match_torch(float64, padding_idx):
    t = torch.nn.Embedding(7, 3, padding_idx=padding_idx, dtype=torch.float64)
    randomize(t)  # the padding row is non-zero too (a loaded table): the lookup still returns it
    m = L.Embedding(7, 3, padding_idx=padding_idx)
    copy_weights(t, m)
    assert m.padding_idx == t.padding_idx
    idx = np.array([[2, 6, 2, 0], [6, 6, 1, 2], [0, 3, 3, 6]])
    out = t(torch.from_numpy(idx))
    g = np.random.default_rng(50).standard_normal(tuple(out.shape))
    (out * torch.from_numpy(g)).sum().backward()
    m.zero_grad()
    close(m.forward(idx), out)
    assert m.backward(g) is None
    close(m.weight.grad, t.weight.grad)
    if padding_idx is not None:
        assert np.all(m.weight.grad[t.padding_idx] == 0)


def test_embedding_default_padding_row_is_zero_like_torch(float64):
    m = L.Embedding(5, 4, padding_idx=-2)
    assert m.padding_idx == 3
    assert np.all(m.weight.data[3] == 0) and np.any(m.weight.data[2] != 0)


@pytest.mark.parametrize("kwarg", [{"max_norm": 1.0}, {"scale_grad_by_freq": True}, {"sparse": True}])
def test_embedding_unsupported_torch_arguments_are_refused_not_ignored(kwarg):
    with pytest.raises(TypeError, match=next(iter(kwarg))):
        L.Embedding(5, 4, **kwarg)


# -- more attention and Transformer cases ----------------------------------------------------------------


@requires_torch
def test_shared_mha_in_a_functional_graph_matches_torch(float64):
    """One layer used at two nodes (self-attention, then query/value from the first node, key from x)."""
    from framework import Input, Model

    rng = np.random.default_rng(60)
    t, mha = _mha(4, 2, seed=60, batch_first=True)
    kpm = np.zeros((2, 5), dtype=bool)
    kpm[1, 2:] = True
    x = Input((5, 4))
    h = mha(x, key_padding_mask=kpm)
    model = Model(x, mha([h, x, h], is_causal=True))
    a = rng.standard_normal((2, 5, 4))
    ta = tt(a)
    th, _ = t(ta, ta, ta, key_padding_mask=torch.from_numpy(kpm), need_weights=False)
    mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    ty, _ = t(th, ta, th, attn_mask=mask, is_causal=True, need_weights=False)
    g = rng.standard_normal((2, 5, 4))
    (ty * torch.from_numpy(g)).sum().backward()
    model.zero_grad()
    close(model.forward(a), ty)
    close(model.backward(g), ta.grad)
    compare_param_grads(t, mha)


@requires_torch
def test_mha_dropout_in_training_weights_are_the_ones_used_and_gradients_are_exact(float64):
    """Training-mode dropout on P: the returned (dropped) weights reproduce Y; backward = finite diffs."""
    from framework import set_seed
    from framework.testing import numerical_gradient, relative_error

    rng = np.random.default_rng(61)
    m = L.MultiheadAttention(4, 2, dropout=0.4)
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 4))
    kpm = np.zeros((2, 5), dtype=bool)
    kpm[0, 3:] = True
    set_seed(3)
    y, w = m([q, k, v], key_padding_mask=kpm, need_weights=True, average_attn_weights=False, training=True)
    assert (w == 0).any()
    wv = m.in_proj_weight.data[8:]
    bv = m.in_proj_bias.data[8:]
    vh = (v @ wv.T + bv).reshape(2, 5, 2, 2).transpose(0, 2, 1, 3)
    merged = (w @ vh).transpose(0, 2, 1, 3).reshape(2, 3, 4)
    close(y, merged @ m.out_proj.weight.data.T + m.out_proj.bias.data)

    g = rng.standard_normal(y.shape)

    def run():
        set_seed(3)
        return m([q, k, v], key_padding_mask=kpm, training=True)

    def loss():
        return float((run() * g).sum())

    run()
    m.zero_grad()
    grads = m.backward(g)
    analytic = {name: p.grad.copy() for name, p in m.named_parameters()}
    for a, da in zip((q, k, v), grads):
        assert relative_error(da, numerical_gradient(loss, a)) < 1e-7
    for name, p in m.named_parameters():
        assert relative_error(analytic[name], numerical_gradient(loss, p.data)) < 1e-7, name


@requires_torch
def test_decoder_layer_memory_is_causal(float64):
    rng = np.random.default_rng(62)
    t = torch.nn.TransformerDecoderLayer(
        6, 2, 10, 0.0, batch_first=True, norm_first=True, dtype=torch.float64
    )
    m = L.TransformerDecoderLayer(6, 2, 10, 0.0, norm_first=True)
    mem_mask = torch.triu(torch.ones(4, 3, dtype=torch.bool), 1)
    _run_block(
        t,
        m,
        [rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 3, 6))],
        {"memory_mask": mem_mask, "memory_is_causal": True},
        {"memory_is_causal": True},
    )


@requires_torch
def test_encoder_layer_with_a_fully_padded_sample(float64):
    """Every key of sample 1 padded: attention gives 0 there (PyTorch's slow path too), no NaN."""
    rng = np.random.default_rng(63)
    t = torch.nn.TransformerEncoderLayer(8, 2, 12, 0.0, batch_first=True, dtype=torch.float64)
    m = L.TransformerEncoderLayer(8, 2, 12, 0.0)
    kpm = np.zeros((2, 4), dtype=bool)
    kpm[1] = True
    _run_block(
        t,
        m,
        [rng.standard_normal((2, 4, 8))],
        {"src_key_padding_mask": torch.from_numpy(kpm)},
        {"src_key_padding_mask": kpm},
    )


@requires_torch
def test_transformer_dropouts_are_off_in_eval_mode(float64):
    """Eval mode with dropout 0.3 everywhere (PyTorch in eval with gradients: its slow path, no dropout)."""
    rng = np.random.default_rng(64)
    kw = dict(dim_feedforward=10, dropout=0.3, batch_first=True)
    t = torch.nn.TransformerDecoder(torch.nn.TransformerDecoderLayer(6, 2, dtype=torch.float64, **kw), 2)
    m = L.TransformerDecoder(L.TransformerDecoderLayer(6, 2, **kw), 2)
    randomize(t, scale=0.3)
    copy_weights(t, m)
    t.eval()
    m.eval()
    tgt, mem = rng.standard_normal((2, 3, 6)), rng.standard_normal((2, 4, 6))
    ttgt, tmem = tt(tgt), tt(mem)
    out = t(ttgt, tmem)
    g = rng.standard_normal(tuple(out.shape))
    (out * torch.from_numpy(g)).sum().backward()
    m.zero_grad()
    close(m.forward([tgt, mem]), out)
    dt, dm = m.backward(g)
    close(dt, ttgt.grad)
    close(dm, tmem.grad)
    compare_param_grads(t, m)


@requires_torch
@pytest.mark.parametrize("batch_first", [True, False])
def test_positional_encoding_odd_d_model_formula(float64, batch_first):
    d, length = 5, 7
    pe = L.PositionalEncoding(d, max_len=10, dropout=0.0, batch_first=batch_first)
    x = np.random.default_rng(65).standard_normal((2, length, d) if batch_first else (length, 2, d))
    pos = np.arange(length)[:, None]
    table = np.zeros((length, d))
    for i in range(d):
        angle = pos[:, 0] / 10000 ** ((i - i % 2) / d)
        table[:, i] = np.sin(angle) if i % 2 == 0 else np.cos(angle)
    expected = x + (table if batch_first else table[:, None, :])
    close(pe(x), expected)
    g = np.ones_like(x)
    close(pe.backward(g), g)


# -- error messages ------------------------------------------------------------------------------------------


def test_mha_need_weights_in_a_functional_graph_is_a_clear_error():
    from framework import FrameworkError, Input, Model

    with pytest.raises(FrameworkError, match="need_weights"):
        x = Input((4, 8))
        y = L.Linear(8, 3)(L.MultiheadAttention(8, 2)(x, need_weights=True))
        Model(x, y).forward(np.ones((2, 4, 8), dtype=np.float32))


@pytest.mark.parametrize(
    "make",
    [
        lambda: L.MultiheadAttention(4, 2, batch_first=False),
        lambda: L.TransformerEncoderLayer(4, 2, 8, 0.0, batch_first=False),
    ],
)
def test_seq_first_shape_error_names_the_right_layout_and_the_given_shape(make):
    with pytest.raises(ShapeError, match=r"\(L, N, 4\).*\(2, 5, 3\)"):
        make()(np.ones((2, 5, 3)))


@pytest.mark.parametrize(
    "make", [lambda: L.MultiheadAttention(4, 2), lambda: L.TransformerEncoderLayer(4, 2, 8, 0.0)]
)
def test_unbatched_input_error_names_the_given_shape(make):
    with pytest.raises(ShapeError, match=r"\(5, 4\)"):
        make()(np.ones((5, 4)))


def test_recurrent_and_cell_error_messages():
    with pytest.raises(ShapeError, match=r"\(L, N, 3\).*\(5, 3\)"):
        L.GRU(3, 4)(np.ones((5, 3)))  # PyTorch's unbatched input is not supported: a clear error
    with pytest.raises(ShapeError, match=r"pair \(h0, c0\)"):
        L.LSTM(3, 4)(np.ones((5, 2, 3)), np.ones((1, 2, 4)))
    gru = L.GRU(3, 4)
    gru(np.ones((5, 2, 3)))
    with pytest.raises(ShapeError, match=r"final-state gradient of shape \(1, 2, 4\)"):
        gru.backward(np.ones((5, 2, 4)), np.ones((2, 2, 4)))
    with pytest.raises(ShapeError, match=r"h0 of shape \(2, 4\)"):
        L.RNNCell(3, 4)(np.ones((2, 3)), np.ones((3, 4)))


@requires_torch
@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("cross", [False, True])
def test_mha_gradient_of_the_returned_weights_is_used(float64, average, cross):
    """A loss reading the returned weights: their gradient reaches inputs and parameters, as in PyTorch."""
    rng = np.random.default_rng(70)
    t, m = _mha(4, 2, seed=70, batch_first=True)
    x = rng.standard_normal((2, 3, 4))
    kv = rng.standard_normal((2, 5, 4)) if cross else x
    tx = tt(x)
    tkv = tt(kv) if cross else tx
    out, w_t = t(tx, tkv, tkv, need_weights=True, average_attn_weights=average)
    g, gw = rng.standard_normal(tuple(out.shape)), rng.standard_normal(tuple(w_t.shape))
    ((out * torch.from_numpy(g)).sum() + (w_t * torch.from_numpy(gw)).sum()).backward()
    m.zero_grad()
    _, w = m([x, kv, kv] if cross else x, need_weights=True, average_attn_weights=average)
    close(w, w_t)
    grads = m.backward((g, gw))
    if cross:
        close(grads[0], tx.grad, "d query")
        close(grads[1] + grads[2], tkv.grad, "d key + d value")
    else:
        close(grads, tx.grad, "d x")
    compare_param_grads(t, m)
    m(x, need_weights=True)
    with pytest.raises(ShapeError, match=r"weights gradient of shape \(2, 3, 3\)"):
        m.backward((g, np.ones((2, 3, 4))))


@requires_torch
def test_mha_backward_accepts_the_weights_pair_as_a_list(float64):
    rng = np.random.default_rng(71)
    m = L.MultiheadAttention(4, 2)
    x = rng.standard_normal((2, 3, 4))
    g = rng.standard_normal((2, 3, 4))
    m(x, need_weights=True)
    expected = m.backward((g, None))
    m(x, need_weights=True)
    close(m.backward([g, None]), expected)


# -- scaled dot-product attention ------------------------------------------------------------------------


def _sdpa_case(rng, qs, ks, vs, mask=None, causal=False, scale=None):
    from plugins.attention import ScaledDotProductAttention, scaled_dot_product_attention

    q, k, v = rng.standard_normal(qs), rng.standard_normal(ks), rng.standard_normal(vs)
    tq, tk, tv = tt(q), tt(k), tt(v)
    out = torch.nn.functional.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=None if mask is None else torch.from_numpy(mask), is_causal=causal, scale=scale
    )
    g = rng.standard_normal(tuple(out.shape))
    (out * torch.from_numpy(g)).sum().backward()
    layer = ScaledDotProductAttention(is_causal=causal, scale=scale)
    close(layer([q, k, v], attn_mask=mask), out)
    close(scaled_dot_product_attention(q, k, v, mask, is_causal=causal, scale=scale), out)
    for name, mine, leaf in zip("qkv", layer.backward(g), (tq, tk, tv)):
        close(mine, leaf.grad, f"d {name}")


@requires_torch
def test_sdpa_broadcast_masks_fully_masked_rows_and_long_causal(float64):
    rng = np.random.default_rng(80)
    shapes = ((2, 3, 4, 5), (2, 3, 6, 5), (2, 3, 6, 7))
    _sdpa_case(rng, *shapes, mask=rng.standard_normal((2, 1, 4, 6)))  # float, broadcast over heads
    keep = rng.random((4, 6)) < 0.6
    keep[2] = False  # True = attend here (the function's convention); row 2 attends to nothing
    _sdpa_case(rng, *shapes, mask=keep, scale=0.3)
    _sdpa_case(rng, *shapes, mask=rng.random((3, 4, 6)) < 0.6)  # per head, broadcast over batch
    _sdpa_case(rng, (2, 70, 3), (2, 66, 3), (2, 66, 2), causal=True)  # the blocked causal path
    _sdpa_case(rng, (2, 66, 3), (2, 70, 3), (2, 70, 2), causal=True, scale=0.7)
    _sdpa_case(rng, (4, 5), (6, 5), (6, 3), causal=True)  # no batch axes at all
