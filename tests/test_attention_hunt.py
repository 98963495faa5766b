"""Bug hunt: attention and the Transformer layers against PyTorch, in float32 and float64.

``MultiheadAttention`` (layouts, self/cross attention, kdim/vdim, bias, heads from 1 to
``embed_dim``, lengths 1, every mask form, need_weights), ``scaled_dot_product_attention`` and
its layer (against ``F.scaled_dot_product_attention``), the encoder/decoder blocks and stacks
(norm_first, activation, bias, layer_norm_eps, masks, train/eval), a layer shared by several
nodes of one graph (per-call contexts: gradients summed as PyTorch's), dropout with a fixed
seed against finite differences, ``PositionalEncoding`` against its documented formula, empty
batches, and the errors of bad arguments and inputs (a ``FrameworkError`` naming the layer, the
expected and the actual value). Outputs and every gradient (inputs and parameters) are compared
at about 1e-10 (float64) and 2e-5 (float32) of their scale.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from support import requires_torch

import framework
from framework import Input, Model
from framework import layers as L
from framework.errors import ConfigError, DataError, FrameworkError, ShapeError
from plugins.activation_fns import GELU
from plugins.attention import ScaledDotProductAttention, scaled_dot_product_attention

try:
    import torch

    F = torch.nn.functional
except ImportError:
    torch = F = None

pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched:UserWarning")

ROOT = Path(__file__).resolve().parents[1]
TOL = {np.float64: 1e-10, np.float32: 2e-5}
DTYPES = [np.float64, np.float32]


@pytest.fixture(params=DTYPES, ids=["f64", "f32"])
def dtype(request):
    """Layers built in ``dtype`` (restored after)."""
    old = framework.get_default_dtype()
    framework.set_default_dtype(request.param)
    yield request.param
    framework.set_default_dtype(old)


def _tdtype(dtype):
    return torch.float64 if dtype == np.float64 else torch.float32


def close(ours, theirs, dtype=np.float64, what=""):
    """``|ours - theirs| <= tol * max(1, max |theirs|)``, the same shape, and no NaN in ours."""
    if torch is not None and isinstance(theirs, torch.Tensor):
        theirs = theirs.detach().numpy()
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    assert not np.isnan(ours).any(), f"{what}: NaN in ours"
    scale = max(1.0, float(np.abs(theirs).max(initial=0.0)))
    err = float(np.abs(ours.astype(np.float64) - theirs).max(initial=0.0))
    assert err <= TOL[dtype] * scale, f"{what}: max error {err:.3g} at scale {scale:.3g}"


def leaf(a, dtype):
    return torch.tensor(np.asarray(a), dtype=_tdtype(dtype), requires_grad=True)


def randomize(t, scale=0.5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in t.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def copy_weights(t, m, dtype):
    assert sorted(m.state_dict()) == sorted(t.state_dict())
    m.load_state_dict({k: v.detach().numpy().astype(dtype) for k, v in t.state_dict().items()})


def compare_param_grads(t, m, dtype):
    ours, theirs = dict(m.named_parameters()), dict(t.named_parameters())
    assert sorted(ours) == sorted(theirs)
    for name, p in theirs.items():
        assert ours[name].grad.dtype == dtype, name
        close(ours[name].grad, p.grad, dtype, name)


def _data(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# -- MultiheadAttention: layouts, sizes, weights ----------------------------------------------------

MHA_CASES = {
    # id: (embed_dim, heads, L, S, self-attention, kdim, vdim, bias, batch_first)
    "cross": (8, 2, 4, 5, False, None, None, True, True),
    "self": (8, 2, 4, 4, True, None, None, True, True),
    "self_seq_first": (8, 4, 4, 4, True, None, None, True, False),
    "cross_seq_first": (6, 3, 3, 6, False, None, None, True, False),
    "kdim_vdim": (6, 3, 4, 5, False, 4, 7, True, True),
    "kdim_vdim_seq_first_no_bias": (6, 2, 4, 5, False, 5, 3, False, False),
    "self_no_bias": (8, 2, 5, 5, True, None, None, False, True),
    "one_head": (6, 1, 3, 4, False, None, None, True, True),
    "heads_eq_embed": (4, 4, 3, 5, False, None, None, True, True),
    "self_heads_eq_embed": (4, 4, 3, 3, True, None, None, True, False),
    "L1_S1": (6, 2, 1, 1, False, None, None, True, True),
    "self_L1": (6, 2, 1, 1, True, None, None, True, True),
    "L1_S7": (6, 2, 1, 7, False, None, None, True, False),
    "L7_S1": (6, 2, 7, 1, False, None, None, True, True),
}


def _mha_pair(e, h, dtype, seed=0, **kw):
    kw.setdefault("batch_first", True)  # ours defaults to True, PyTorch to False: always given
    t = torch.nn.MultiheadAttention(e, h, dtype=_tdtype(dtype), **kw)
    randomize(t, seed=seed)
    m = L.MultiheadAttention(e, h, **kw)
    copy_weights(t, m, dtype)
    return t, m


def _run_mha(t, m, arrays, dtype, *, shared, kw_t=None, kw_m=None, need_weights=False, average=True):
    """Forward and backward through both with random output (and weights) gradients; compare all."""
    rng = np.random.default_rng(99)
    kw_t, kw_m = dict(kw_t or {}), dict(kw_m or {})
    if shared:
        x = leaf(arrays[0], dtype)
        leaves = [x]
        out, w_t = t(x, x, x, need_weights=need_weights, average_attn_weights=average, **kw_t)
    else:
        leaves = [leaf(a, dtype) for a in arrays]
        out, w_t = t(*leaves, need_weights=need_weights, average_attn_weights=average, **kw_t)
    g = _data(rng, tuple(out.shape), dtype)
    loss = (out * torch.from_numpy(g)).sum()
    gw = None
    if need_weights:
        gw = _data(rng, tuple(w_t.shape), dtype)
        loss = loss + (w_t * torch.from_numpy(gw)).sum()
    loss.backward()
    m.zero_grad()
    res = m(
        arrays[0] if shared else list(arrays), need_weights=need_weights, **kw_m, average_attn_weights=average
    )
    y = res[0] if need_weights else res
    assert y.dtype == dtype
    close(y, out, dtype, "output")
    if need_weights:
        close(res[1], w_t, dtype, "weights")
    grads = m.backward((g, gw) if need_weights else g)
    for i, (mine, lf) in enumerate(zip([grads] if shared else grads, leaves)):
        close(mine, lf.grad, dtype, f"d input {i}")
    compare_param_grads(t, m, dtype)
    return res


@requires_torch
@pytest.mark.parametrize("case", list(MHA_CASES))
def test_mha_matches_torch(dtype, case):
    """Without and with the weights (one test: pytest cost more per case than the case)."""
    e, h, length, source, self_attn, kdim, vdim, bias, bf = MHA_CASES[case]
    for need_weights in [False, True]:
        t, m = _mha_pair(e, h, dtype, kdim=kdim, vdim=vdim, bias=bias, batch_first=bf)
        rng = np.random.default_rng(1)

        def x(size, n_steps, rng=rng):
            return _data(rng, (2, n_steps, size) if bf else (n_steps, 2, size), dtype)

        arrays = [x(e, length)] if self_attn else [x(e, length), x(kdim or e, source), x(vdim or e, source)]
        try:
            _run_mha(
                t, m, arrays, dtype, shared=self_attn, need_weights=need_weights, average=case != "cross"
            )
        except AssertionError as exc:
            raise AssertionError(f"need_weights={need_weights}: {exc}") from exc


@requires_torch
@pytest.mark.parametrize("average", [True, False])
def test_mha_weights_not_averaged_have_one_matrix_per_head(float64, average):
    t, m = _mha_pair(6, 3, np.float64)
    x = np.random.default_rng(2).standard_normal((2, 4, 6))
    _, w = _run_mha(t, m, [x], np.float64, shared=True, need_weights=True, average=average)
    assert w.shape == ((2, 4, 4) if average else (2, 3, 4, 4))
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-12)


# -- MultiheadAttention: masks ------------------------------------------------------------------------

N, LQ, SK, H = 2, 4, 5, 2


def _masks(kind, self_attn, dtype):
    """``(torch kwargs, our kwargs)`` of one mask form; no row is fully masked."""
    rng = np.random.default_rng(3)
    s = LQ if self_attn else SK
    kpm = np.zeros((N, s), dtype=bool)
    kpm[0, -2:] = True
    kpm_f = np.where(kpm, -np.inf, 0.0) + rng.standard_normal((N, s)) * (~kpm)
    am2 = rng.random((LQ, s)) < 0.35
    am2[:, 0] = False
    am3 = rng.random((N * H, LQ, s)) < 0.35
    am3[..., 0] = False
    causal_t = torch.triu(torch.ones(LQ, s, dtype=torch.bool), 1)
    forms = {
        "kpm_bool": {"key_padding_mask": kpm},
        "kpm_float": {"key_padding_mask": kpm_f},
        "mask2d_bool": {"attn_mask": am2},
        "mask2d_float": {"attn_mask": rng.standard_normal((LQ, s))},
        "mask2d_float_inf": {"attn_mask": np.where(am2, -np.inf, 0.0)},
        "mask3d_bool": {"attn_mask": am3},
        "mask3d_float": {"attn_mask": rng.standard_normal((N * H, LQ, s))},
        "mask2d_bool_kpm_bool": {"attn_mask": am2, "key_padding_mask": kpm},
        "mask2d_bool_kpm_float": {"attn_mask": am2, "key_padding_mask": kpm_f},
        "mask2d_float_kpm_bool": {"attn_mask": rng.standard_normal((LQ, s)), "key_padding_mask": kpm},
        "mask3d_float_kpm_float": {
            "attn_mask": rng.standard_normal((N * H, LQ, s)),
            "key_padding_mask": kpm_f,
        },
    }
    if kind in forms:
        ours = {k: v if v.dtype == bool else v.astype(dtype) for k, v in forms[kind].items()}
        return {k: torch.from_numpy(v) for k, v in ours.items()}, ours
    if kind == "is_causal":
        return {"attn_mask": causal_t, "is_causal": True}, {"is_causal": True}
    if kind == "is_causal_kpm":
        return (
            {"attn_mask": causal_t, "is_causal": True, "key_padding_mask": torch.from_numpy(kpm)},
            {"is_causal": True, "key_padding_mask": kpm},
        )
    assert kind == "is_causal_hint_with_mask"  # an explicit mask wins over is_causal, as in PyTorch
    return {"attn_mask": torch.from_numpy(am2)}, {"attn_mask": am2, "is_causal": True}


MASK_KINDS = [
    "kpm_bool",
    "kpm_float",
    "mask2d_bool",
    "mask2d_float",
    "mask2d_float_inf",
    "mask3d_bool",
    "mask3d_float",
    "mask2d_bool_kpm_bool",
    "mask2d_bool_kpm_float",
    "mask2d_float_kpm_bool",
    "mask3d_float_kpm_float",
    "is_causal",
    "is_causal_kpm",
    "is_causal_hint_with_mask",
]


@requires_torch
@pytest.mark.parametrize("kind", MASK_KINDS)
def test_mha_masks_match_torch(kind):
    """Each layout, with and without the weights (one test per mask kind: pytest cost more per case
    than the case); every failing case is reported, by name."""
    failures = []
    for layout in ["self_bf", "cross_bf", "self_sf", "cross_sf"]:
        for need_weights in [False, True]:
            try:
                _check_mha_masks(kind, layout, need_weights)
            except Exception as exc:
                failures.append(f"{layout}, need_weights={need_weights}: {type(exc).__name__}: {exc}")
    assert not failures, f"{len(failures)} of 8 cases failed:\n" + "\n".join(failures)


def _check_mha_masks(kind, layout, need_weights):
    dtype = np.float64 if need_weights else np.float32  # both dtypes over the table, not every pair
    old = framework.get_default_dtype()
    framework.set_default_dtype(dtype)
    try:
        self_attn, bf = layout.startswith("self"), layout.endswith("bf")
        t, m = _mha_pair(2 * H, H, dtype, seed=4, batch_first=bf)
        rng = np.random.default_rng(5)
        shape = (lambda n_steps: (N, n_steps, 2 * H)) if bf else (lambda n_steps: (n_steps, N, 2 * H))
        arrays = [_data(rng, shape(LQ), dtype)]
        if not self_attn:
            arrays += [_data(rng, shape(SK), dtype), _data(rng, shape(SK), dtype)]
        kw_t, kw_m = _masks(kind, self_attn, dtype)
        before = {k: np.array(v, copy=True) for k, v in kw_m.items() if isinstance(v, np.ndarray)}
        _run_mha(t, m, arrays, dtype, shared=self_attn, kw_t=kw_t, kw_m=kw_m, need_weights=need_weights)
        for k, v in before.items():
            np.testing.assert_array_equal(kw_m[k], v, err_msg=f"{k} modified in place")
    finally:
        framework.set_default_dtype(old)


@requires_torch
@pytest.mark.parametrize(("length", "source"), [(64, 64), (70, 40), (65, 100), (64, 1), (100, 63)])
def test_mha_long_causal_blocked_path_matches_torch(dtype, length, source):
    """``L >= 64`` with only ``is_causal``: the row-block path (keys past each block never computed)."""
    t, m = _mha_pair(4, 2, dtype, seed=6, batch_first=True)
    rng = np.random.default_rng(6)
    q = _data(rng, (2, length, 4), dtype)
    kv = [_data(rng, (2, source, 4), dtype) for _ in range(2)]
    mask = torch.triu(torch.ones(length, source, dtype=torch.bool), 1)
    kw_t = {"attn_mask": mask, "is_causal": True}
    if length == source:
        _run_mha(t, m, [q], dtype, shared=True, kw_t=kw_t, kw_m={"is_causal": True})
    else:
        _run_mha(t, m, [q, *kv], dtype, shared=False, kw_t=kw_t, kw_m={"is_causal": True})


@requires_torch
@pytest.mark.parametrize("how", ["kpm", "attn_mask", "float_kpm"])
def test_mha_fully_masked_rows_are_zero_attention_as_torch_without_weights(float64, how):
    """PyTorch gives 0 attention (output = out_proj.bias) with need_weights=False, NaN with weights.

    Ours is documented (class docstring, docs/maths/attention.md) to give 0 in both cases: the
    weights of such a row are 0 and no NaN reaches any gradient.
    """
    t, m = _mha_pair(4, 2, np.float64, seed=7)
    rng = np.random.default_rng(7)
    q, k = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    if how == "attn_mask":
        mask = np.zeros((3, 5), dtype=bool)
        mask[1] = True  # query 1 of every sample sees no key
        kw = {"attn_mask": mask}
        dead = (slice(None), 1)
    else:
        kpm = np.zeros((2, 5), dtype=bool)
        kpm[0] = True  # sample 0 sees no key at all
        kw = {"key_padding_mask": kpm if how == "kpm" else np.where(kpm, -np.inf, 0.0)}
        dead = (0, slice(None))
    kw_t = {key: torch.from_numpy(v) for key, v in kw.items()}
    y = _run_mha(t, m, [q, k, k], np.float64, shared=False, kw_t=kw_t, kw_m=kw)
    np.testing.assert_allclose(y[dead], np.broadcast_to(m.out_proj.bias.data, y[dead].shape), rtol=1e-14)
    # with the weights, PyTorch's rows are NaN; ours are zeros and the gradients finite
    _, w_t = t(*(torch.from_numpy(a) for a in (q, k, k)), need_weights=True, **kw_t)
    assert torch.isnan(w_t[dead]).all()
    y2, w = m([q, k, k], need_weights=True, **kw)
    np.testing.assert_array_equal(y2, y)
    assert (w[dead] == 0).all() and not np.isnan(w).any()
    m.zero_grad()
    grads = m.backward((np.ones_like(y2), np.ones_like(w)))
    assert all(np.isfinite(g).all() for g in grads)
    assert all(np.isfinite(p.grad).all() for p in m.parameters())
    assert "attends to nothing" in L.MultiheadAttention.__doc__


# -- dropout: eval mode, p = 0, and the per-call masks -----------------------------------------------


def test_mha_and_blocks_dropout_zero_in_training_equals_eval_and_eval_ignores_dropout(float64):
    rng = np.random.default_rng(8)
    x, mem = rng.standard_normal((2, 5, 6)), rng.standard_normal((2, 3, 6))
    pairs = [
        (L.MultiheadAttention(6, 2, dropout=0.5), L.MultiheadAttention(6, 2), x),
        (L.TransformerEncoderLayer(6, 2, 8, 0.5), L.TransformerEncoderLayer(6, 2, 8, 0.0), x),
        (L.TransformerDecoderLayer(6, 2, 8, 0.4, norm_first=True), None, [x, mem]),
        (L.PositionalEncoding(6, dropout=0.3), L.PositionalEncoding(6, dropout=0.0), x),
    ]
    for with_dropout, without, inp in pairs:
        if without is None:
            without = type(with_dropout)(6, 2, 8, 0.0, norm_first=True)
        without.load_state_dict(with_dropout.state_dict())
        evaluated = with_dropout(inp, training=False)
        np.testing.assert_array_equal(evaluated, without(inp, training=True))
        np.testing.assert_array_equal(evaluated, without(inp, training=False))
        assert not np.allclose(with_dropout(inp, training=True), evaluated)


def test_shared_block_with_dropout_backward_uses_each_calls_own_masks(float64):
    """One encoder block at two nodes of a graph, training-mode dropout: finite differences (seeded)."""
    rng = np.random.default_rng(9)
    block = L.TransformerEncoderLayer(6, 2, 10, 0.3, norm_first=True)
    inp = Input((4, 6))
    model = Model(inp, block(block(inp)))
    x, g = rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 4, 6))

    def run():
        framework.set_seed(9)
        return model(x, training=True)

    run()
    model.zero_grad()
    dx = model.backward(g)
    analytic = block.linear1.weight.grad.copy()

    def numeric(array):
        out = np.zeros_like(array)
        flat, of = array.reshape(-1), out.reshape(-1)
        for i in range(0, flat.size, 3):  # every third entry: enough to catch a wrong mask
            old = flat[i]
            flat[i] = old + 1e-6
            up = float((run() * g).sum())
            flat[i] = old - 1e-6
            down = float((run() * g).sum())
            flat[i] = old
            of[i] = (up - down) / 2e-6
        return out

    num = numeric(x)
    np.testing.assert_allclose(dx.reshape(-1)[::3], num.reshape(-1)[::3], rtol=1e-6, atol=1e-7)
    num = numeric(block.linear1.weight.data)
    np.testing.assert_allclose(analytic.reshape(-1)[::3], num.reshape(-1)[::3], rtol=1e-6, atol=1e-7)


# -- shared layers in one graph: gradients summed over the calls, as PyTorch's --------------------------


@requires_torch
def test_shared_mha_self_then_cross_in_a_graph_matches_torch(dtype):
    t, m = _mha_pair(8, 2, dtype, seed=10, batch_first=True)
    rng = np.random.default_rng(10)
    a, z = _data(rng, (2, 5, 8), dtype), _data(rng, (2, 3, 8), dtype)
    inp, mem = Input((5, 8)), Input((3, 8))
    model = Model([inp, mem], m([m(inp, is_causal=True), mem, mem]))
    ta, tz = leaf(a, dtype), leaf(z, dtype)
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    h, _ = t(ta, ta, ta, attn_mask=causal, is_causal=True, need_weights=False)
    out, _ = t(h, tz, tz, need_weights=False)
    g = _data(rng, (2, 5, 8), dtype)
    out.backward(torch.from_numpy(g))
    model.zero_grad()
    close(model([a, z]), out, dtype, "output")
    da, dz = model.backward(g)
    close(da, ta.grad, dtype, "d x")
    close(dz, tz.grad, dtype, "d memory")
    compare_param_grads(t, m, dtype)
    assert len(model.parameters()) == 4  # the shared layer's parameters once


@requires_torch
@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_shared_transformer_block_twice_in_a_graph_matches_torch(dtype, kind):
    rng = np.random.default_rng(11)
    kw = dict(dim_feedforward=12, dropout=0.0, batch_first=True, norm_first=kind == "decoder")
    td = _tdtype(dtype)
    if kind == "encoder":
        t, m = torch.nn.TransformerEncoderLayer(8, 2, dtype=td, **kw), L.TransformerEncoderLayer(8, 2, **kw)
    else:
        t, m = torch.nn.TransformerDecoderLayer(8, 2, dtype=td, **kw), L.TransformerDecoderLayer(8, 2, **kw)
    randomize(t, scale=0.3, seed=11)
    copy_weights(t, m, dtype)
    a, z = _data(rng, (2, 5, 8), dtype), _data(rng, (2, 3, 8), dtype)
    ta, tz = leaf(a, dtype), leaf(z, dtype)
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    if kind == "encoder":
        inp = Input((5, 8))
        model = Model(inp, m(m(inp, is_causal=True)))
        out = t(t(ta, src_mask=causal, is_causal=True))
    else:
        inp, mem = Input((5, 8)), Input((3, 8))
        model = Model([inp, mem], m([m([inp, mem], tgt_is_causal=True), mem]))
        out = t(t(ta, tz, tgt_mask=causal, tgt_is_causal=True), tz)
    g = _data(rng, (2, 5, 8), dtype)
    out.backward(torch.from_numpy(g))
    model.zero_grad()
    close(model(a) if kind == "encoder" else model([a, z]), out, dtype, "output")
    grads = model.backward(g)
    if kind == "encoder":
        close(grads, ta.grad, dtype, "d x")
    else:
        close(grads[0], ta.grad, dtype, "d tgt")
        close(grads[1], tz.grad, dtype, "d memory (summed over both calls)")
    compare_param_grads(t, m, dtype)


# -- empty batches -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize(
    "kw", [{}, {"is_causal": True}, {"need_weights": True}], ids=["plain", "causal", "weights"]
)
def test_mha_empty_batch_gives_empty_results_as_torch(float64, batch_first, kw):
    """Batch size 0 (an empty last shard): PyTorch returns empty outputs and gradients."""
    m = L.MultiheadAttention(8, 2, batch_first=batch_first)
    x = np.ones((0, 4, 8) if batch_first else (4, 0, 8))
    kv = np.ones((0, 3, 8) if batch_first else (3, 0, 8))
    for inp, shapes in ((x, [x.shape]), ([x, kv, kv], [x.shape, kv.shape, kv.shape])):
        res = m(inp, **kw)
        y = res[0] if kw.get("need_weights") else res
        assert y.shape == x.shape
        if kw.get("need_weights"):
            assert res[1].shape == (0, 4, 4 if inp is x else 3)
        m.zero_grad()
        grads = m.backward((np.zeros(y.shape), None) if kw.get("need_weights") else np.zeros(y.shape))
        assert [g.shape for g in (grads if isinstance(grads, list) else [grads])] == shapes
        assert all((p.grad == 0).all() for p in m.parameters())


def test_transformer_blocks_and_sdpa_empty_batch(float64):
    enc, dec = L.TransformerEncoderLayer(8, 2, 16, 0.0), L.TransformerDecoderLayer(8, 2, 16, 0.0)
    x, mem = np.ones((0, 4, 8)), np.ones((0, 3, 8))
    assert enc(x, is_causal=True).shape == (0, 4, 8)
    assert enc.backward(np.zeros((0, 4, 8))).shape == (0, 4, 8)
    assert dec([x, mem]).shape == (0, 4, 8)
    assert [g.shape for g in dec.backward(np.zeros((0, 4, 8)))] == [(0, 4, 8), (0, 3, 8)]
    sdpa = ScaledDotProductAttention(is_causal=True)
    assert sdpa([x, mem, mem]).shape == (0, 4, 8)
    assert [g.shape for g in sdpa.backward(np.zeros((0, 4, 8)))] == [(0, 4, 8), (0, 3, 8), (0, 3, 8)]


# -- scaled dot-product attention: the function and the layer -------------------------------------------


def _sdpa_inputs(rng, qs, ks, vs, dtype):
    return _data(rng, qs, dtype), _data(rng, ks, dtype), _data(rng, vs, dtype)


SDPA_CASES = {
    # id: (q shape, k shape, v shape, mask builder, is_causal, scale)
    "4d": ((2, 3, 4, 5), (2, 3, 6, 5), (2, 3, 6, 7), None, False, None),
    "3d_scale": ((2, 4, 5), (2, 6, 5), (2, 6, 7), None, False, 0.3),
    "2d": ((4, 5), (6, 5), (6, 7), None, False, None),
    "causal": ((2, 4, 5), (2, 6, 5), (2, 6, 7), None, True, None),
    "causal_L_gt_S": ((2, 6, 5), (2, 3, 5), (2, 3, 2), None, True, 2.0),
    "causal_long": ((2, 70, 5), (2, 50, 5), (2, 50, 7), None, True, None),
    "long_no_mask": ((1, 80, 3), (1, 80, 3), (1, 80, 4), None, False, None),
    "bool_2d": ((2, 4, 5), (2, 6, 5), (2, 6, 7), lambda r: r.random((4, 6)) < 0.7, False, None),
    "bool_bcast_kpm": (
        (2, 3, 4, 5),
        (2, 3, 6, 5),
        (2, 3, 6, 7),
        lambda r: r.random((2, 1, 1, 6)) < 0.6,
        False,
        None,
    ),
    "float_bcast": (
        (2, 3, 4, 5),
        (2, 3, 6, 5),
        (2, 3, 6, 7),
        lambda r: r.standard_normal((3, 1, 6)),
        False,
        None,
    ),
    "bool_fully_masked_rows": (
        (2, 4, 5),
        (2, 6, 5),
        (2, 6, 7),
        lambda r: np.array([[True] * 6, [False] * 6, [True] * 6, [True, False] * 3]),
        False,
        None,
    ),
    "float_fully_masked_row": (
        (1, 2, 4),
        (1, 3, 4),
        (1, 3, 4),
        lambda r: np.array([[-np.inf] * 3, [0.0, -1.0, 2.0]]),
        False,
        None,
    ),
    "L1_S1_causal": ((2, 1, 5), (2, 1, 5), (2, 1, 7), None, True, None),
}


@requires_torch
@pytest.mark.parametrize("case", list(SDPA_CASES))
def test_sdpa_function_and_layer_match_torch(dtype, case):
    qs, ks, vs, make_mask, causal, scale = SDPA_CASES[case]
    rng = np.random.default_rng(12)
    q, k, v = _sdpa_inputs(rng, qs, ks, vs, dtype)
    mask = None if make_mask is None else make_mask(rng)
    if mask is not None and mask.dtype != bool:
        mask = mask.astype(dtype)
    tq, tk, tv = (leaf(a, dtype) for a in (q, k, v))
    tm = None if mask is None else torch.from_numpy(mask)
    out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, is_causal=causal, scale=scale)
    g = _data(rng, tuple(out.shape), dtype)
    out.backward(torch.from_numpy(g))
    y_fn = scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
    assert y_fn.dtype == dtype
    close(y_fn, out, dtype, "function")
    layer = ScaledDotProductAttention(is_causal=causal, scale=scale)
    y = layer([q, k, v], **({} if mask is None else {"attn_mask": mask}))
    close(y, out, dtype, "layer")
    for name, mine, lf in zip("qkv", layer.backward(g), (tq, tk, tv)):
        close(mine, lf.grad, dtype, f"d {name}")


def test_sdpa_layer_dropout_gradient_is_exact_for_the_drawn_mask(float64):
    rng = np.random.default_rng(13)
    q, k, v = (rng.standard_normal(s) for s in ((2, 3, 4), (2, 5, 4), (2, 5, 3)))
    g = rng.standard_normal((2, 3, 3))
    layer = ScaledDotProductAttention(dropout_p=np.float32(0.4))  # a NumPy scalar is a probability too

    def run():
        framework.set_seed(13)
        return layer([q, k, v], training=True)

    evaluated = layer([q, k, v], training=False)
    assert not np.allclose(run(), evaluated)
    grads = layer.backward(g)  # the context of the last call: the training one
    for a, da in zip((q, k, v), grads):
        num = np.zeros_like(a)
        flat, nf = a.reshape(-1), num.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + 1e-6
            up = float((run() * g).sum())
            flat[i] = old - 1e-6
            down = float((run() * g).sum())
            flat[i] = old
            nf[i] = (up - down) / 2e-6
        np.testing.assert_allclose(da, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("p", [1.0, -0.5, 2.0, True, "0.1", None])
def test_sdpa_function_refuses_a_dropout_outside_0_1(p):
    """``dropout_p=-0.5`` scaled the output by 1/1.5 silently (PyTorch: no dropout); 1.0 divided by 0."""
    x = np.ones((2, 3, 4))
    with pytest.raises(ConfigError, match=r"scaled_dot_product_attention: dropout_p .*\[0, 1\).*got"):
        scaled_dot_product_attention(x, x, x, dropout_p=p)


@pytest.mark.parametrize("which", ["query", "key", "value"])
def test_sdpa_integer_inputs_are_a_data_error_naming_the_input(which):
    arrays = {"query": np.ones((2, 3, 4)), "key": np.ones((2, 5, 4)), "value": np.ones((2, 5, 4))}
    arrays[which] = arrays[which].astype(np.int64)
    with pytest.raises(DataError, match=rf"scaled_dot_product_attention: {which} .*floating.*int64"):
        scaled_dot_product_attention(arrays["query"], arrays["key"], arrays["value"])
    with pytest.raises(DataError, match=rf"ScaledDotProductAttention.*{which}.*int64"):
        ScaledDotProductAttention()([arrays["query"], arrays["key"], arrays["value"]])


def test_numpy_scalar_hyperparameters_are_accepted():
    """``np.float32(0.1)`` is a valid dropout (it is not a Python float): no ConfigError."""
    assert L.MultiheadAttention(4, 2, dropout=np.float32(0.25)).dropout == 0.25
    assert L.TransformerEncoderLayer(4, 2, 8, dropout=np.float32(0.25)).dropout_p == 0.25
    assert L.TransformerEncoderLayer(4, 2, 8, layer_norm_eps=np.float32(0.5)).layer_norm_eps == 0.5
    assert ScaledDotProductAttention(scale=np.float32(0.5)).scale == 0.5
    assert L.PositionalEncoding(4, dropout=np.float32(0.25)).dropout.p == 0.25


# -- Transformer blocks and stacks -------------------------------------------------------------------------

BLOCK_CASES = [
    # norm_first, activation, batch_first, bias, layer_norm_eps
    (False, "relu", True, True, 1e-5),
    (True, "relu", False, True, 0.1),
    (False, "gelu", False, False, 0.5),
    (True, "gelu", True, False, 1e-3),
    (True, "gelu_tanh", True, True, 1e-5),
]


def _block_pair(kind, dtype, nf, act, bf, bias, eps):
    td = _tdtype(dtype)
    kw = dict(dim_feedforward=12, dropout=0.0, layer_norm_eps=eps, batch_first=bf, norm_first=nf, bias=bias)
    t_act = functools.partial(F.gelu, approximate="tanh") if act == "gelu_tanh" else act
    m_act = GELU(approximate="tanh") if act == "gelu_tanh" else act
    tcls = torch.nn.TransformerEncoderLayer if kind == "encoder" else torch.nn.TransformerDecoderLayer
    mcls = L.TransformerEncoderLayer if kind == "encoder" else L.TransformerDecoderLayer
    t = tcls(8, 2, activation=t_act, dtype=td, **kw)
    randomize(t, scale=0.3, seed=14)
    m = mcls(8, 2, activation=m_act, **kw)
    copy_weights(t, m, dtype)
    return t, m


def _run_block(t, m, arrays, dtype, kw_t, kw_m, train=True):
    t.train(train)
    m.train(train)
    leaves = [leaf(a, dtype) for a in arrays]
    out = t(*leaves, **kw_t)
    g = _data(np.random.default_rng(15), tuple(out.shape), dtype)
    out.backward(torch.from_numpy(g))
    m.zero_grad()
    y = m(arrays[0] if len(arrays) == 1 else list(arrays), **kw_m)
    close(y, out, dtype, "output")
    grads = m.backward(g)
    for i, (mine, lf) in enumerate(zip(grads if len(arrays) > 1 else [grads], leaves)):
        close(mine, lf.grad, dtype, f"d input {i}")
    compare_param_grads(t, m, dtype)


def _seq(rng, bf, n, length, dtype):
    return _data(rng, (n, length, 8) if bf else (length, n, 8), dtype)


@requires_torch
@pytest.mark.parametrize(("nf", "act", "bf", "bias", "eps"), BLOCK_CASES)
def test_encoder_layer_matches_torch(dtype, nf, act, bf, bias, eps):
    t, m = _block_pair("encoder", dtype, nf, act, bf, bias, eps)
    rng = np.random.default_rng(16)
    kpm = np.zeros((3, 5), dtype=bool)
    kpm[1, 3:] = True
    mask = rng.standard_normal((5, 5)).astype(dtype)
    _run_block(
        t,
        m,
        [_seq(rng, bf, 3, 5, dtype)],
        dtype,
        {"src_mask": torch.from_numpy(mask), "src_key_padding_mask": torch.from_numpy(kpm)},
        {"src_mask": mask, "src_key_padding_mask": kpm},
    )


@requires_torch
@pytest.mark.parametrize(("nf", "act", "bf", "bias", "eps"), BLOCK_CASES)
def test_decoder_layer_matches_torch(dtype, nf, act, bf, bias, eps):
    t, m = _block_pair("decoder", dtype, nf, act, bf, bias, eps)
    rng = np.random.default_rng(17)
    mem_kpm = np.zeros((3, 6), dtype=bool)
    mem_kpm[0, :2] = True
    mem_mask = rng.random((4 * 1, 6)) < 0.3
    mem_mask[:, -1] = False
    causal = torch.triu(torch.ones(4, 4, dtype=torch.bool), 1)
    _run_block(
        t,
        m,
        [_seq(rng, bf, 3, 4, dtype), _seq(rng, bf, 3, 6, dtype)],
        dtype,
        {
            "tgt_mask": causal,
            "tgt_is_causal": True,
            "memory_mask": torch.from_numpy(mem_mask),
            "memory_key_padding_mask": torch.from_numpy(mem_kpm),
        },
        {"tgt_is_causal": True, "memory_mask": mem_mask, "memory_key_padding_mask": mem_kpm},
    )


@requires_torch
@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_blocks_on_sequences_of_length_one_match_torch(float64, kind):
    t, m = _block_pair(kind, np.float64, kind == "decoder", "relu", False, True, 1e-5)
    rng = np.random.default_rng(22)
    arrays = [_seq(rng, False, 3, 1, np.float64)]
    if kind == "decoder":
        arrays.append(_seq(rng, False, 3, 1, np.float64))
    one = torch.zeros(1, 1, dtype=torch.bool)
    kw_t = (
        {"src_mask": one, "is_causal": True}
        if kind == "encoder"
        else {"tgt_mask": one, "tgt_is_causal": True}
    )
    kw_m = {"is_causal": True} if kind == "encoder" else {"tgt_is_causal": True}
    _run_block(t, m, arrays, np.float64, kw_t, kw_m)


@requires_torch
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_encoder_layer_long_causal_and_eval_mode_match_torch(float64, train):
    """L = 66: the blocked causal path inside the block; eval mode equals PyTorch's eval (slow path)."""
    t, m = _block_pair("encoder", np.float64, True, "gelu", True, True, 1e-5)
    x = _seq(np.random.default_rng(18), True, 2, 66, np.float64)
    causal = torch.triu(torch.ones(66, 66, dtype=torch.bool), 1)
    _run_block(t, m, [x], np.float64, {"src_mask": causal, "is_causal": True}, {"is_causal": True}, train)


@requires_torch
@pytest.mark.parametrize("norm", [False, True], ids=["no_norm", "norm"])
@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_stacks_match_torch(dtype, kind, norm):
    td = _tdtype(dtype)
    kw = dict(dim_feedforward=12, dropout=0.0, batch_first=True, norm_first=norm)
    rng = np.random.default_rng(19)
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    kpm = np.zeros((2, 5), dtype=bool)
    kpm[1, 4:] = True
    if kind == "encoder":
        t = torch.nn.TransformerEncoder(
            torch.nn.TransformerEncoderLayer(8, 2, dtype=td, **kw),
            3,
            norm=torch.nn.LayerNorm(8, dtype=td) if norm else None,
            enable_nested_tensor=False,
        )
        m = L.TransformerEncoder(
            L.TransformerEncoderLayer(8, 2, **kw), 3, norm=L.LayerNorm(8) if norm else None
        )
        arrays = [_data(rng, (2, 5, 8), dtype)]
        kw_t = {"mask": causal, "is_causal": True, "src_key_padding_mask": torch.from_numpy(kpm)}
        kw_m = {"is_causal": True, "src_key_padding_mask": kpm}
    else:
        t = torch.nn.TransformerDecoder(
            torch.nn.TransformerDecoderLayer(8, 2, dtype=td, **kw),
            2,
            norm=torch.nn.LayerNorm(8, dtype=td) if norm else None,
        )
        m = L.TransformerDecoder(
            L.TransformerDecoderLayer(8, 2, **kw), 2, norm=L.LayerNorm(8) if norm else None
        )
        arrays = [_data(rng, (2, 5, 8), dtype), _data(rng, (2, 3, 8), dtype)]
        kw_t = {"tgt_mask": causal, "tgt_is_causal": True, "tgt_key_padding_mask": torch.from_numpy(kpm)}
        kw_m = {"tgt_is_causal": True, "tgt_key_padding_mask": kpm}
    randomize(t, scale=0.3, seed=19)
    copy_weights(t, m, dtype)
    _run_block(t, m, arrays, dtype, kw_t, kw_m)


# -- PositionalEncoding ------------------------------------------------------------------------------------


def _pe_table(length, d):
    """The documented formula: PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(t / 10000^(2i/d))."""
    table = np.zeros((length, d))
    for t in range(length):
        for j in range(d):
            angle = t / 10000 ** ((j - j % 2) / d)
            table[t, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    return table


@pytest.mark.parametrize(("d", "batch_first"), [(6, True), (7, False), (1, True)])
def test_positional_encoding_is_the_documented_formula(dtype, d, batch_first):
    pe = L.PositionalEncoding(d, max_len=40, dropout=0.0, batch_first=batch_first)
    x = _data(np.random.default_rng(20), (3, 40, d) if batch_first else (40, 3, d), dtype)
    table = _pe_table(40, d)
    y = pe(x)
    assert y.dtype == dtype
    close(y, x.astype(np.float64) + (table if batch_first else table[:, None]), dtype, "x + PE")
    g = _data(np.random.default_rng(21), x.shape, dtype)
    np.testing.assert_array_equal(pe.backward(g), g)
    assert pe.state_dict() == {} and pe.parameters() == []
    short = pe(x[:, :5] if batch_first else x[:5])  # a shorter sequence uses the first rows
    close(short, x[:, :5] + table[:5] if batch_first else x[:5] + table[:5, None], dtype, "short")


@pytest.mark.parametrize("int_dtype", [np.int64, np.int32, np.bool_])
def test_positional_encoding_of_an_integer_input_is_not_truncated(int_dtype):
    """It used to cast the table to the input's dtype: sin/cos truncated to 0 or 1, silently."""
    pe = L.PositionalEncoding(4, max_len=8, dropout=0.0)
    x = np.ones((2, 5, 4), dtype=int_dtype)
    y = pe(x)
    assert y.dtype.kind == "f"
    np.testing.assert_allclose(y, np.broadcast_to(1.0 + _pe_table(5, 4), y.shape), rtol=1e-6)


# -- bad arguments and bad inputs: FrameworkError naming the layer, the expected and the actual ------------

X = np.ones((2, 4, 8), dtype=np.float32)
MEM = np.ones((2, 3, 8), dtype=np.float32)


def _enc():
    return L.TransformerEncoderLayer(8, 2, 16, 0.0)


def _dec():
    return L.TransformerDecoderLayer(8, 2, 16, 0.0)


BAD = {
    # id: (thunk, error class, regex the message must match)
    "mha_heads_not_dividing": (
        lambda: L.MultiheadAttention(8, 3),
        ConfigError,
        r"MultiheadAttention.*embed_dim=8.*num_heads=3",
    ),
    "mha_zero_heads": (
        lambda: L.MultiheadAttention(8, 0),
        ConfigError,
        r"MultiheadAttention: num_heads.*got 0",
    ),
    "mha_dropout_one": (
        lambda: L.MultiheadAttention(8, 2, dropout=1.0),
        ConfigError,
        r"MultiheadAttention: dropout.*1\.0",
    ),
    "encoder_heads_not_dividing": (
        lambda: L.TransformerEncoderLayer(8, 3),
        ConfigError,
        r"TransformerEncoderLayer: d_model must be divisible by nhead.*d_model=8, nhead=3",
    ),
    "decoder_heads_not_dividing": (
        lambda: L.TransformerDecoderLayer(6, 4),
        ConfigError,
        r"TransformerDecoderLayer: d_model must be divisible by nhead.*d_model=6, nhead=4",
    ),
    "encoder_eps_string": (
        lambda: L.TransformerEncoderLayer(8, 2, layer_norm_eps="x"),
        ConfigError,
        r"TransformerEncoderLayer: layer_norm_eps must be a positive number, got 'x'",
    ),
    "encoder_eps_none": (
        lambda: L.TransformerEncoderLayer(8, 2, layer_norm_eps=None),
        ConfigError,
        r"TransformerEncoderLayer: layer_norm_eps.*got None",
    ),
    "decoder_eps_negative": (
        lambda: L.TransformerDecoderLayer(8, 2, layer_norm_eps=-1e-5),
        ConfigError,
        r"TransformerDecoderLayer: layer_norm_eps.*-1e-05",
    ),
    "encoder_dropout": (
        lambda: L.TransformerEncoderLayer(8, 2, dropout=1.5),
        ConfigError,
        r"TransformerEncoderLayer: dropout.*1\.5",
    ),
    "pe_dropout": (
        lambda: L.PositionalEncoding(8, dropout=2.0),
        ConfigError,
        r"PositionalEncoding: dropout.*2\.0",
    ),
    "sdpa_layer_dropout": (
        lambda: ScaledDotProductAttention(dropout_p=1.0),
        ConfigError,
        r"ScaledDotProductAttention: dropout_p.*1\.0",
    ),
    "sdpa_layer_scale": (
        lambda: ScaledDotProductAttention(scale=float("inf")),
        ConfigError,
        r"ScaledDotProductAttention: scale.*inf",
    ),
    "mha_mask_shape": (
        lambda: L.MultiheadAttention(8, 2)(X, attn_mask=np.zeros((3, 4), dtype=bool)),
        ShapeError,
        r"MultiheadAttention.*attn_mask.*\(4, 4\) or \(4, 4, 4\).*got \(3, 4\)",
    ),
    "mha_mask_per_sample_not_per_head": (
        lambda: L.MultiheadAttention(8, 2)(X, attn_mask=np.zeros((2, 4, 4), dtype=bool)),
        ShapeError,
        r"MultiheadAttention.*N \* num_heads.*got \(2, 4, 4\)",
    ),
    "mha_mask_int": (
        lambda: L.MultiheadAttention(8, 2)(X, attn_mask=np.zeros((4, 4), dtype=np.int64)),
        DataError,
        r"MultiheadAttention.*attn_mask.*boolean.*float.*int64",
    ),
    "mha_kpm_shape": (
        lambda: L.MultiheadAttention(8, 2)([X, MEM, MEM], key_padding_mask=np.zeros((2, 4), dtype=bool)),
        ShapeError,
        r"MultiheadAttention.*key_padding_mask.*\(2, 3\).*got \(2, 4\)",
    ),
    "mha_kpm_int": (
        lambda: L.MultiheadAttention(8, 2)(X, key_padding_mask=np.zeros((2, 4), dtype=np.int8)),
        DataError,
        r"MultiheadAttention.*key_padding_mask.*int8",
    ),
    "mha_wrong_embed": (
        lambda: L.MultiheadAttention(8, 2)(np.ones((2, 4, 6), dtype=np.float32)),
        ShapeError,
        r"MultiheadAttention.*\(N, L, 8\).*6",
    ),
    "mha_batch_mismatch": (
        lambda: L.MultiheadAttention(8, 2)([X, np.ones((3, 3, 8)), np.ones((3, 3, 8))]),
        ShapeError,
        r"MultiheadAttention.*batch size.*\(2, 4, 8\).*\(3, 3, 8\)",
    ),
    "encoder_mask_shape": (
        lambda: _enc()(X, src_mask=np.zeros((3, 3), dtype=bool)),
        ShapeError,
        r"TransformerEncoderLayer.*src_mask.*attn_mask must have shape \(4, 4\).*got \(3, 3\)",
    ),
    "encoder_kpm_shape": (
        lambda: _enc()(X, src_key_padding_mask=np.zeros((4, 2), dtype=bool)),
        ShapeError,
        r"TransformerEncoderLayer.*src_key_padding_mask.*\(2, 4\), got \(4, 2\)",
    ),
    "encoder_mask_int": (
        lambda: _enc()(X, src_mask=np.zeros((4, 4), dtype=np.int32)),
        DataError,
        r"TransformerEncoderLayer.*src_mask.*int32",
    ),
    "decoder_memory_mask_shape": (
        lambda: _dec()([X, MEM], memory_mask=np.zeros((4, 4), dtype=bool)),
        ShapeError,
        r"TransformerDecoderLayer.*memory_mask.*\(4, 3\).*got \(4, 4\)",
    ),
    "decoder_tgt_kpm_shape": (
        lambda: _dec()([X, MEM], tgt_key_padding_mask=np.zeros((2, 3), dtype=bool)),
        ShapeError,
        r"TransformerDecoderLayer.*tgt_key_padding_mask.*\(2, 4\), got \(2, 3\)",
    ),
    "decoder_memory_batch": (
        lambda: _dec()([X, np.ones((3, 3, 8), dtype=np.float32)]),
        ShapeError,
        r"TransformerDecoderLayer.*tgt and memory.*batch size.*\(2, 4, 8\).*\(3, 3, 8\)",
    ),
    "sdpa_mask_shape": (
        lambda: ScaledDotProductAttention()([X, X, X], attn_mask=np.zeros((3, 4), dtype=bool)),
        ShapeError,
        r"ScaledDotProductAttention.*attn_mask of shape \(3, 4\).*\(2, 4, 4\)",
    ),
    "sdpa_mask_more_axes_than_scores": (
        lambda: scaled_dot_product_attention(X[0], X[0], X[0], attn_mask=np.ones((2, 4, 4), dtype=bool)),
        ShapeError,
        r"scaled_dot_product_attention: attn_mask of shape \(2, 4, 4\).*scores' shape \(4, 4\)",
    ),
    "sdpa_layer_mask_more_axes": (
        lambda: ScaledDotProductAttention()([X, X, X], attn_mask=np.zeros((3, 2, 4, 4))),
        ShapeError,
        r"ScaledDotProductAttention.*attn_mask of shape \(3, 2, 4, 4\).*\(2, 4, 4\)",
    ),
    "sdpa_mask_int": (
        lambda: scaled_dot_product_attention(X, X, X, attn_mask=np.zeros((4, 4), dtype=np.int8)),
        DataError,
        r"scaled_dot_product_attention: attn_mask.*int8",
    ),
    "sdpa_causal_and_mask": (
        lambda: ScaledDotProductAttention(is_causal=True)([X, X, X], attn_mask=np.ones((4, 4), dtype=bool)),
        ConfigError,
        r"ScaledDotProductAttention.*attn_mask or is_causal",
    ),
    "pe_too_long": (
        lambda: L.PositionalEncoding(8, max_len=3)(X),
        ShapeError,
        r"PositionalEncoding.*sequence length 4.*max_len=3",
    ),
    "pe_seq_first_layout": (
        lambda: L.PositionalEncoding(6, batch_first=False)(np.ones((4, 2, 8))),
        ShapeError,
        r"PositionalEncoding.*\(L, N, 6\).*\(4, 2, 8\)",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments_and_inputs_raise_a_framework_error(case):
    thunk, error, pattern = BAD[case]
    with pytest.raises(error, match=pattern) as info:
        thunk()
    assert isinstance(info.value, FrameworkError)


# -- the maths page ----------------------------------------------------------------------------------------


def test_attention_maths_page_has_no_control_characters_in_its_formulas():
    r"""``\top``, ``\tilde`` and ``\times`` written through a non-raw string became a TAB + "op"..."""
    text = (ROOT / "docs" / "maths" / "attention.md").read_text(encoding="utf-8")
    bad = [(i, repr(text[max(0, i - 10) : i + 10])) for i, c in enumerate(text) if ord(c) < 32 and c != "\n"]
    assert not bad, bad
    for macro in (r"\top", r"\tilde Q", r"E\times E"):
        assert macro in text
