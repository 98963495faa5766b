"""Second parity hunt of attention, Transformer, recurrent and embedding layers against PyTorch.

The other hunts (test_attention_hunt.py, test_sequence_hunt.py) pin hand-picked cases; this file
draws *combinations* of options from a seeded generator, one pytest case per draw, so a failing
draw names its options:

- MultiheadAttention: self (one array), self as ``[x, x, x]`` and cross attention, kdim/vdim,
  bias, both layouts, dropout > 0 in eval, 2-D and per-head 3-D masks (bool and float with -inf),
  bool/float key padding masks, ``is_causal`` (ours builds the mask; PyTorch gets it explicitly),
  need_weights averaged or not, with a gradient into the returned weights too;
- Transformer encoder/decoder blocks and stacks (with and without a final norm), norm_first,
  activations given as names *and as activation instances* (PyTorch: callables), bias, eps,
  dropout > 0 in eval, every decoder mask kind, ``is_causal`` / ``tgt_is_causal`` /
  ``memory_is_causal`` with padding masks;
- RNN (tanh, relu), LSTM, GRU: layers, directions, layouts, bias, dropout in eval, initial states,
  ``output=`` modes, gradients into outputs and final states; the cells, with the state given as
  arguments or as a list, gradients into h only, c only or both;
- ``F.scaled_dot_product_attention`` with broadcast masks, scales, long causal sequences.

Where PyTorch has no deterministic equivalent (training-mode dropout), gradients are checked by
central differences with a fixed seed. Compared in float64 at rtol 1e-8 / atol 1e-9.

Documented differences from PyTorch are not failures here: a query row whose every key is masked
gives weights 0 and output ``b_o`` with ``need_weights=True`` (PyTorch: NaN), and ``is_causal``
builds the causal mask itself (PyTorch: a hint that needs ``attn_mask``). Such draws are skipped
from the parity checks (no row is fully masked).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from support import requires_torch, torch_on_one_thread  # noqa: F401  (an autouse fixture)

import framework
from framework import Input, Model
from framework import layers as L
from framework.testing import numerical_gradient, relative_error

try:
    import torch

    F = torch.nn.functional
except ImportError:  # pragma: no cover - the whole module is skipped then
    torch = F = None

pytestmark = [
    requires_torch,
    pytest.mark.filterwarnings("ignore:Support for mismatched:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*dropout option adds dropout after all but last:UserWarning"),
    pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning"),
]

RTOL, ATOL = 1e-8, 1e-9


def close(ours, theirs, what=""):
    if isinstance(theirs, torch.Tensor):
        theirs = theirs.detach().numpy()
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs {theirs.shape}"
    assert np.isfinite(ours).all(), f"{what}: non-finite values in ours"
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=what)


def randomize(module, seed, scale=0.5):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64))


def copy_weights(t, m):
    assert sorted(m.state_dict()) == sorted(t.state_dict())
    m.load_state_dict({k: v.detach().numpy().copy() for k, v in t.state_dict().items()})


def compare_param_grads(t, m):
    ours = dict(m.named_parameters())
    theirs = dict(t.named_parameters())
    assert sorted(ours) == sorted(theirs)
    for name, p in theirs.items():
        close(ours[name].grad, p.grad, f"grad {name}")


def leaf(a):
    return torch.tensor(np.array(a, dtype=np.float64), requires_grad=True)


def _no_full_rows(rng, shape, p=0.3):
    """A boolean mask with ``p`` of the pairs masked, never column 0: no row is fully masked."""
    mask = rng.random(shape) < p
    mask[..., 0] = False
    return mask


def _attn_mask(rng, kind, shape):
    """``(torch mask, our mask)`` of kind ``b`` (bool) or ``f`` (float with -inf entries)."""
    if kind == "b":
        m = _no_full_rows(rng, shape)
    else:
        m = rng.standard_normal(shape)
        m[_no_full_rows(rng, shape)] = -np.inf
    return torch.from_numpy(m), m


def _kpm(rng, kind, n, s):
    b = _no_full_rows(rng, (n, s))
    m = b if kind == "b" else np.where(b, -np.inf, rng.standard_normal((n, s)))
    return torch.from_numpy(m), m


# -- MultiheadAttention: seeded option combinations -----------------------------------------------------


def _mha_draw(seed):
    rng = np.random.default_rng(1000 + seed)
    h = int(rng.choice([1, 2, 3]))
    e = h * int(rng.choice([1, 2, 3]))
    mode = str(rng.choice(["self", "list_self", "cross"]))
    kdim = vdim = None
    if mode == "cross" and rng.random() < 0.6:
        kdim, vdim = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        if rng.random() < 0.3:
            kdim = e  # only vdim differs: still the separate projections
    opts = dict(
        h=h,
        e=e,
        mode=mode,
        kdim=kdim,
        vdim=vdim,
        bias=bool(rng.random() < 0.6),
        batch_first=bool(rng.random() < 0.5),
        dropout=float(rng.choice([0.0, 0.3])),  # eval mode: no dropout either way
        n=int(rng.integers(1, 4)),
        length=int(rng.integers(1, 6)),
        need_weights=bool(rng.random() < 0.5),
        average=bool(rng.random() < 0.5),
        attn_mask=str(rng.choice(["none", "b2", "f2", "b3", "f3", "causal"])),
        kpm=str(rng.choice(["none", "b", "f"])),
    )
    opts["source"] = opts["length"] if mode != "cross" else int(rng.integers(1, 6))
    return opts, rng


@pytest.mark.parametrize("seed", range(48))
def test_mha_option_combinations_match_torch(float64, seed):
    o, rng = _mha_draw(seed)
    kw = dict(
        bias=o["bias"], batch_first=o["batch_first"], kdim=o["kdim"], vdim=o["vdim"], dropout=o["dropout"]
    )
    t = torch.nn.MultiheadAttention(o["e"], o["h"], dtype=torch.float64, **kw)
    randomize(t, seed)
    m = L.MultiheadAttention(o["e"], o["h"], **kw)
    copy_weights(t, m)
    t.eval()
    m.eval()
    n, length, source, e, h = o["n"], o["length"], o["source"], o["e"], o["h"]

    def seq(steps, size):
        return rng.standard_normal((n, steps, size) if o["batch_first"] else (steps, n, size))

    q = seq(length, e)
    arrays = [q] if o["mode"] != "cross" else [q, seq(source, o["kdim"] or e), seq(source, o["vdim"] or e)]
    kw_t, kw_m = {}, {}
    if o["attn_mask"] == "causal":
        kw_t = {"attn_mask": torch.triu(torch.ones(length, source, dtype=torch.bool), 1), "is_causal": True}
        kw_m = {"is_causal": True}
    elif o["attn_mask"] != "none":
        shape = (length, source) if o["attn_mask"][1] == "2" else (n * h, length, source)
        kw_t["attn_mask"], kw_m["attn_mask"] = _attn_mask(rng, o["attn_mask"][0], shape)
    if o["kpm"] != "none":
        kw_t["key_padding_mask"], kw_m["key_padding_mask"] = _kpm(rng, o["kpm"], n, source)
    masks_before = {k: v.copy() for k, v in kw_m.items() if isinstance(v, np.ndarray)}
    arrays_before = [a.copy() for a in arrays]

    leaves = [leaf(a) for a in arrays]
    tq, tk, tv = (leaves[0],) * 3 if o["mode"] != "cross" else leaves
    out, w_t = t(tq, tk, tv, need_weights=o["need_weights"], average_attn_weights=o["average"], **kw_t)
    g = rng.standard_normal(tuple(out.shape))
    loss = (out * torch.from_numpy(g)).sum()
    gw = None
    if o["need_weights"]:
        gw = rng.standard_normal(tuple(w_t.shape))
        loss = loss + (w_t * torch.from_numpy(gw)).sum()
    loss.backward()

    x = {"self": arrays[0], "list_self": [q, q, q], "cross": arrays}[o["mode"]]
    m.zero_grad()
    res = m(x, need_weights=o["need_weights"], average_attn_weights=o["average"], **kw_m)
    y = res[0] if o["need_weights"] else res
    close(y, out, f"output {o}")
    if o["need_weights"]:
        close(res[1], w_t, f"weights {o}")
    grads = m.backward((g, gw) if o["need_weights"] else g)
    if o["mode"] == "self":
        close(grads, leaves[0].grad, "d x")
    elif o["mode"] == "list_self":
        close(grads[0] + grads[1] + grads[2], leaves[0].grad, "d x (sum of the three roles)")
    else:
        for name, mine, lf in zip("qkv", grads, leaves):
            close(mine, lf.grad, f"d {name}")
    compare_param_grads(t, m)
    for k, v in masks_before.items():
        np.testing.assert_array_equal(kw_m[k], v, err_msg=f"{k} modified")
    for a, b in zip(arrays, arrays_before):
        np.testing.assert_array_equal(a, b, err_msg="an input modified")


# -- Transformer blocks and stacks: seeded option combinations -----------------------------------------


def _activations():
    from plugins.activation_fns import ELU, GELU, LeakyReLU, Sigmoid, SiLU, Softplus, Tanh

    return {
        "relu": ("relu", "relu"),
        "gelu": ("gelu", "gelu"),
        "tanh_instance": (torch.tanh, Tanh()),
        "silu_instance": (F.silu, SiLU()),
        "leaky_instance": (functools.partial(F.leaky_relu, negative_slope=0.2), LeakyReLU(0.2)),
        "elu_instance": (F.elu, ELU()),
        "softplus_instance": (F.softplus, Softplus()),
        "sigmoid_instance": (torch.sigmoid, Sigmoid()),
        "gelu_tanh_instance": (functools.partial(F.gelu, approximate="tanh"), GELU(approximate="tanh")),
    }


ACT_NAMES = [
    "relu",
    "gelu",
    "tanh_instance",
    "silu_instance",
    "leaky_instance",
    "elu_instance",
    "softplus_instance",
    "sigmoid_instance",
    "gelu_tanh_instance",
]


def _block_draw(seed):
    rng = np.random.default_rng(2000 + seed)
    nhead = int(rng.choice([1, 2]))
    stack = bool(rng.random() < 0.5)
    return (
        dict(
            kind=str(rng.choice(["encoder", "decoder"])),
            stack=stack,
            num_layers=int(rng.integers(1, 4)),
            norm=stack and bool(rng.random() < 0.5),
            nhead=nhead,
            d=nhead * int(rng.choice([2, 3])),
            act=ACT_NAMES[seed % len(ACT_NAMES)],
            norm_first=bool(rng.random() < 0.5),
            batch_first=bool(rng.random() < 0.5),
            bias=bool(rng.random() < 0.7),
            eps=float(rng.choice([1e-5, 0.1])),
            dropout=float(rng.choice([0.0, 0.2])),
            n=int(rng.integers(1, 4)),
            T=int(rng.integers(1, 5)),
            S=int(rng.integers(1, 5)),
        ),
        rng,
    )


def _mask_kwargs(rng, kind, length, source, n, heads, name, causal_name):
    """PyTorch's and our keywords for one attention mask of ``kind`` (causal: ours builds it)."""
    if kind == "none":
        return {}, {}
    if kind == "causal":
        explicit = torch.triu(torch.ones(length, source, dtype=torch.bool), 1)
        return {name: explicit, causal_name: True}, {causal_name: True}
    shape = (length, source) if kind[1] == "2" else (n * heads, length, source)
    tm, mm = _attn_mask(rng, kind[0], shape)
    return {name: tm}, {name: mm}


@pytest.mark.parametrize("seed", range(27))
def test_transformer_option_combinations_match_torch(float64, seed):
    o, rng = _block_draw(seed)
    t_act, m_act = _activations()[o["act"]]
    kw = dict(
        dim_feedforward=7,
        dropout=o["dropout"],
        layer_norm_eps=o["eps"],
        batch_first=o["batch_first"],
        norm_first=o["norm_first"],
        bias=o["bias"],
    )
    enc = o["kind"] == "encoder"
    t_cls = torch.nn.TransformerEncoderLayer if enc else torch.nn.TransformerDecoderLayer
    m_cls = L.TransformerEncoderLayer if enc else L.TransformerDecoderLayer
    d, heads, n, T, S = o["d"], o["nhead"], o["n"], o["T"], o["S"]
    t = t_cls(d, heads, activation=t_act, dtype=torch.float64, **kw)
    m = m_cls(d, heads, activation=m_act, **kw)
    if o["stack"]:
        t_norm = torch.nn.LayerNorm(d, eps=1e-3, dtype=torch.float64) if o["norm"] else None
        m_norm = L.LayerNorm(d, eps=1e-3) if o["norm"] else None
        if enc:
            t = torch.nn.TransformerEncoder(t, o["num_layers"], norm=t_norm, enable_nested_tensor=False)
            m = L.TransformerEncoder(m, o["num_layers"], norm=m_norm)
        else:
            t = torch.nn.TransformerDecoder(t, o["num_layers"], norm=t_norm)
            m = L.TransformerDecoder(m, o["num_layers"], norm=m_norm)
    randomize(t, seed, scale=0.3)
    copy_weights(t, m)
    t.eval()
    m.eval()

    def seq(steps):
        return rng.standard_normal((n, steps, d) if o["batch_first"] else (steps, n, d))

    kinds = ["none", "b2", "f2", "b3", "f3", "causal"]
    kw_t, kw_m = {}, {}
    if enc:
        arrays = [seq(T)]
        mask_name = "mask" if o["stack"] else "src_mask"
        a, b = _mask_kwargs(rng, str(rng.choice(kinds)), T, T, n, heads, mask_name, "is_causal")
        kw_t.update(a)
        kw_m.update(b)
        if rng.random() < 0.6:
            kw_t["src_key_padding_mask"], kw_m["src_key_padding_mask"] = _kpm(
                rng, str(rng.choice(["b", "f"])), n, T
            )
    else:
        arrays = [seq(T), seq(S)]
        for name, causal, length, source in (
            ("tgt_mask", "tgt_is_causal", T, T),
            ("memory_mask", "memory_is_causal", T, S),
        ):
            a, b = _mask_kwargs(rng, str(rng.choice(kinds)), length, source, n, heads, name, causal)
            kw_t.update(a)
            kw_m.update(b)
        for name, source in (("tgt_key_padding_mask", T), ("memory_key_padding_mask", S)):
            if rng.random() < 0.6:
                kw_t[name], kw_m[name] = _kpm(rng, str(rng.choice(["b", "f"])), n, source)
    o["masks"] = sorted(kw_m)
    leaves = [leaf(a) for a in arrays]
    out = t(*leaves, **kw_t)
    g = rng.standard_normal(tuple(out.shape))
    (out * torch.from_numpy(g)).sum().backward()
    m.zero_grad()
    y = m(arrays[0] if enc else list(arrays), **kw_m)
    close(y, out, f"output {o}")
    grads = m.backward(g)
    for i, (mine, lf) in enumerate(zip([grads] if enc else grads, leaves)):
        close(mine, lf.grad, f"d input {i} {o}")
    compare_param_grads(t, m)


# -- recurrent layers: seeded option combinations -------------------------------------------------------


def _recurrent_draw(seed):
    rng = np.random.default_rng(3000 + seed)
    return (
        dict(
            kind=["rnn_tanh", "rnn_relu", "lstm", "gru"][seed % 4],
            input_size=int(rng.integers(1, 5)),
            hidden=int(rng.integers(1, 5)),
            num_layers=int(rng.integers(1, 4)),
            bidirectional=bool(rng.random() < 0.5),
            batch_first=bool(rng.random() < 0.5),
            bias=bool(rng.random() < 0.7),
            dropout=float(rng.choice([0.0, 0.4])),  # eval: off
            n=int(rng.integers(1, 4)),
            T=int(rng.integers(1, 5)),
            output=str(rng.choice(["both", "sequence", "last"])),
            state=bool(rng.random() < 0.5),
        ),
        rng,
    )


@pytest.mark.parametrize("seed", range(48))
def test_recurrent_option_combinations_match_torch(float64, seed):
    o, rng = _recurrent_draw(seed)
    kw = dict(
        num_layers=o["num_layers"],
        bidirectional=o["bidirectional"],
        batch_first=o["batch_first"],
        bias=o["bias"],
        dropout=o["dropout"],
    )
    kind = o["kind"]
    if kind.startswith("rnn"):
        t_cls, m_cls = torch.nn.RNN, L.RNN
        kw["nonlinearity"] = kind[4:]
    else:
        t_cls, m_cls = {"lstm": (torch.nn.LSTM, L.LSTM), "gru": (torch.nn.GRU, L.GRU)}[kind]
    hidden, n, T, D = o["hidden"], o["n"], o["T"], 2 if o["bidirectional"] else 1
    t = t_cls(o["input_size"], hidden, dtype=torch.float64, **kw)
    randomize(t, seed, scale=0.6)
    m = m_cls(o["input_size"], hidden, output=o["output"], **kw)
    copy_weights(t, m)
    t.eval()
    m.eval()
    lstm = kind == "lstm"
    x = rng.standard_normal((n, T, o["input_size"]) if o["batch_first"] else (T, n, o["input_size"]))
    state = None
    if o["state"]:
        state = [rng.standard_normal((D * o["num_layers"], n, hidden)) for _ in range(2 if lstm else 1)]
    x_before = x.copy()
    tx = leaf(x)
    tstate = None if state is None else [leaf(s) for s in state]
    if state is None:
        out_t, fin_t = t(tx)
        res = m(x)
    else:
        out_t, fin_t = t(tx, tuple(tstate) if lstm else tstate[0])
        res = m(x, tuple(state) if lstm else state[0])
    fins_t = list(fin_t) if lstm else [fin_t]
    if o["output"] == "last":
        h_n = fins_t[0]
        last = torch.cat([h_n[-2], h_n[-1]], dim=1) if o["bidirectional"] else h_n[-1]
        close(res, last, f"last {o}")
        g = rng.standard_normal(tuple(last.shape))
        (last * torch.from_numpy(g)).sum().backward()
        m.zero_grad()
        dx = m.backward(g)
    elif o["output"] == "sequence":
        close(res, out_t, f"sequence {o}")
        g = rng.standard_normal(tuple(out_t.shape))
        (out_t * torch.from_numpy(g)).sum().backward()
        m.zero_grad()
        dx = m.backward(g)
    else:
        out, fin = res
        close(out, out_t, f"output {o}")
        for i, (mine, theirs) in enumerate(zip(list(fin) if lstm else [fin], fins_t)):
            close(mine, theirs, f"final state {i}")
        g = rng.standard_normal(tuple(out_t.shape))
        gf = [rng.standard_normal(tuple(f.shape)) for f in fins_t]
        loss = (out_t * torch.from_numpy(g)).sum()
        loss = loss + sum((f * torch.from_numpy(a)).sum() for f, a in zip(fins_t, gf))
        loss.backward()
        m.zero_grad()
        dx = m.backward(g, tuple(gf) if lstm else gf[0])
    close(dx, tx.grad, f"d x {o}")
    if state is not None:
        close(m.grad_h0, tstate[0].grad, "d h0")
        if lstm:
            close(m.grad_c0, tstate[1].grad, "d c0")
    compare_param_grads(t, m)
    np.testing.assert_array_equal(x, x_before, err_msg="the input was modified")


@pytest.mark.parametrize("seed", range(24))
def test_cell_option_combinations_match_torch(float64, seed):
    rng = np.random.default_rng(4000 + seed)
    kind = ["rnn_tanh", "rnn_relu", "lstm", "gru"][seed % 4]
    input_size, hidden, n = int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 4))
    bias = bool(rng.random() < 0.6)
    given = bool(rng.random() < 0.7)
    listed = given and bool(rng.random() < 0.5)
    which = ["h", "c", "both"][seed // 4 % 3] if kind == "lstm" else "h"
    kw = {"bias": bias}
    if kind.startswith("rnn"):
        t_cls, m_cls = torch.nn.RNNCell, L.RNNCell
        kw["nonlinearity"] = kind[4:]
    else:
        t_cls, m_cls = {"lstm": (torch.nn.LSTMCell, L.LSTMCell), "gru": (torch.nn.GRUCell, L.GRUCell)}[kind]
    t = t_cls(input_size, hidden, dtype=torch.float64, **kw)
    randomize(t, seed, scale=0.6)
    m = m_cls(input_size, hidden, **kw)
    copy_weights(t, m)
    lstm = kind == "lstm"
    x = rng.standard_normal((n, input_size))
    state = [rng.standard_normal((n, hidden)) for _ in range(2 if lstm else 1)] if given else None
    tx = leaf(x)
    tstate = [leaf(s) for s in state] if given else None
    if given:
        out = t(tx, tuple(tstate) if lstm else tstate[0])
    else:
        out = t(tx)
    outs = list(out) if lstm else [out]
    gs = [rng.standard_normal((n, hidden)) for _ in outs]
    if which == "h" and lstm:
        gs[1] = None
    if which == "c":
        gs[0] = None
    sum((a * torch.from_numpy(g)).sum() for a, g in zip(outs, gs) if g is not None).backward()
    m.zero_grad()
    if listed:
        res = m([x, *state])
    elif given:
        res = m(x, tuple(state) if lstm else state[0])
    else:
        res = m(x)
    for i, (mine, theirs) in enumerate(zip(list(res) if lstm else [res], outs)):
        close(mine, theirs, f"output {i}")
    grads = m.backward(tuple(gs)) if lstm else m.backward(gs[0])
    if listed:
        close(grads[0], tx.grad, "d x")
        for i, (mine, lf) in enumerate(zip(grads[1:], tstate)):
            close(mine, lf.grad, f"d state {i}")
    else:
        close(grads, tx.grad, "d x")
        if given:
            close(m.grad_h0, tstate[0].grad, "d h0")
            if lstm:
                close(m.grad_c0, tstate[1].grad, "d c0")
    compare_param_grads(t, m)


# -- scaled dot-product attention: seeded combinations -----------------------------------------------


@pytest.mark.parametrize("seed", range(24))
def test_sdpa_option_combinations_match_torch(float64, seed):
    from plugins.attention import ScaledDotProductAttention, scaled_dot_product_attention

    rng = np.random.default_rng(5000 + seed)
    lead = tuple(int(a) for a in rng.integers(1, 4, size=int(rng.integers(0, 3))))
    length, source = int(rng.choice([1, 3, 5, 64, 70])), int(rng.choice([1, 4, 6, 66, 80]))
    e, ev = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    q, k, v = (rng.standard_normal(lead + s) for s in ((length, e), (source, e), (source, ev)))
    causal = bool(rng.random() < 0.4)
    scale = None if rng.random() < 0.5 else float(rng.uniform(0.1, 2.0))
    mask = None
    if not causal and rng.random() < 0.7:
        nd = int(rng.integers(0, len(lead) + 1))
        shape = tuple(1 if rng.random() < 0.5 else s for s in lead[len(lead) - nd :])
        shape += (1 if rng.random() < 0.3 else length, source)
        if rng.random() < 0.5:
            mask = ~_no_full_rows(rng, shape)  # True = takes part; column 0 always takes part
        else:
            mask = rng.standard_normal(shape)
            mask[_no_full_rows(rng, shape)] = -np.inf
    tq, tk, tv = (leaf(a) for a in (q, k, v))
    tm = None if mask is None else torch.from_numpy(mask)
    out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, is_causal=causal, scale=scale)
    g = rng.standard_normal(tuple(out.shape))
    out.backward(torch.from_numpy(g))
    close(scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale), out, "fn")
    layer = ScaledDotProductAttention(is_causal=causal, scale=scale)
    close(layer([q, k, v], **({} if mask is None else {"attn_mask": mask})), out, "layer")
    for name, mine, lf in zip("qkv", layer.backward(g), (tq, tk, tv)):
        close(mine, lf.grad, f"d {name}")


# -- a recurrent layer's three outputs in a functional graph ------------------------------------------


@pytest.mark.parametrize("used", ["all", "c_only", "h_only"])
def test_lstm_both_outputs_as_graph_nodes_match_torch(float64, used):
    rng = np.random.default_rng(60)
    t = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    randomize(t, 60, scale=0.6)
    lstm = L.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    copy_weights(t, lstm)
    x = Input((5, 3))
    out, h, c = lstm(x)
    picked = {"all": [out, h, c], "c_only": [c], "h_only": [h]}[used]
    model = Model(x, picked if len(picked) > 1 else picked[0])
    xa = rng.standard_normal((2, 5, 3))
    tx = leaf(xa)
    o_t, (h_t, c_t) = t(tx)
    theirs = {"all": [o_t, h_t, c_t], "c_only": [c_t], "h_only": [h_t]}[used]
    gs = [rng.standard_normal(tuple(a.shape)) for a in theirs]
    sum((a * torch.from_numpy(g)).sum() for a, g in zip(theirs, gs)).backward()
    ys = model.forward(xa)
    for mine, th in zip(ys if len(picked) > 1 else [ys], theirs):
        close(mine, th, "output")
    model.zero_grad()
    dx = model.backward(gs if len(gs) > 1 else gs[0])
    close(dx, tx.grad, "d x")
    compare_param_grads(t, lstm)


# -- training-mode dropout: no PyTorch equivalent, central differences with a fixed seed --------------


@pytest.mark.parametrize("cls_name", ["LSTM", "GRU", "RNN"])
def test_recurrent_inter_layer_dropout_in_training_with_state_gradients_by_finite_differences(
    float64, cls_name
):
    rng = np.random.default_rng(70)
    cls = getattr(L, cls_name)
    lstm = cls_name == "LSTM"
    m = cls(3, 2, num_layers=3, bidirectional=True, dropout=0.4, batch_first=True)
    x = rng.standard_normal((2, 3, 3))
    h0 = rng.standard_normal((6, 2, 2))
    c0 = rng.standard_normal((6, 2, 2))
    state = (h0, c0) if lstm else h0
    go, gh, gc = (rng.standard_normal(s) for s in ((2, 3, 4), (6, 2, 2), (6, 2, 2)))

    def run():
        framework.set_seed(9)
        return m(x, state, training=True)

    def loss():
        out, fin = run()
        if lstm:
            return float((out * go).sum() + (fin[0] * gh).sum() + (fin[1] * gc).sum())
        return float((out * go).sum() + (fin * gh).sum())

    out, _ = run()
    m.eval()
    assert not np.allclose(out, m(x, state)[0]), "dropout did nothing in training mode"
    run()
    m.zero_grad()
    dx = m.backward(go, (gh, gc) if lstm else gh)
    analytic = {name: p.grad.copy() for name, p in m.named_parameters()}
    dh0 = m.grad_h0.copy()
    dc0 = m.grad_c0.copy() if lstm else None
    assert relative_error(dx, numerical_gradient(loss, x)) < 1e-7
    assert relative_error(dh0, numerical_gradient(loss, h0)) < 1e-7
    if lstm:
        assert relative_error(dc0, numerical_gradient(loss, c0)) < 1e-7
    for name, p in m.named_parameters():
        assert relative_error(analytic[name], numerical_gradient(loss, p.data)) < 1e-7, name


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_stack_dropout_in_training_by_finite_differences(float64, norm_first):
    rng = np.random.default_rng(71)
    block = L.TransformerDecoderLayer(4, 2, 3, 0.3, norm_first=norm_first, activation="gelu")
    m = L.TransformerDecoder(block, 2, norm=L.LayerNorm(4))
    tgt, mem = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    kpm = np.zeros((2, 5), dtype=bool)
    kpm[1, 3:] = True
    g = rng.standard_normal((2, 3, 4))

    def run(training=None):
        framework.set_seed(4)
        return m([tgt, mem], tgt_is_causal=True, memory_key_padding_mask=kpm, training=training)

    def loss():  # the stack's own mode, training: a call's training= walks every sublayer first
        return float((run() * g).sum())

    assert m.training
    run(training=True)
    m.zero_grad()
    dt, dm = m.backward(g)
    analytic = {name: p.grad.copy() for name, p in m.named_parameters()}
    assert relative_error(dt, numerical_gradient(loss, tgt)) < 1e-7
    assert relative_error(dm, numerical_gradient(loss, mem)) < 1e-7
    for name, p in m.named_parameters():
        assert relative_error(analytic[name], numerical_gradient(loss, p.data)) < 1e-6, name


def test_mha_long_causal_with_dropout_in_training_is_causal_and_exact(float64):
    """L >= 64 with dropout in training leaves the blocked causal path: still causal, exact gradient."""
    rng = np.random.default_rng(72)
    m = L.MultiheadAttention(4, 2, dropout=0.3)
    x = rng.standard_normal((1, 66, 4))
    g = rng.standard_normal((1, 66, 4))

    def run(a):
        framework.set_seed(5)
        return m(a, is_causal=True, training=True)

    y = run(x)
    later = x.copy()
    later[:, 40:] += 1.0
    np.testing.assert_array_equal(run(later)[:, :40], y[:, :40])  # no query sees a later key
    run(x)
    m.zero_grad()
    dx = m.backward(g)
    entries = list(range(0, x.size, 7))
    numeric = numerical_gradient(lambda: float((run(x) * g).sum()), x, entries=entries)
    assert relative_error(dx.reshape(-1)[entries], numeric.reshape(-1)[entries]) < 1e-7


def test_positional_encoding_dropout_in_training_gradient(float64):
    rng = np.random.default_rng(73)
    pe = L.PositionalEncoding(4, max_len=10, dropout=0.5, batch_first=False)
    x, g = rng.standard_normal((6, 2, 4)), rng.standard_normal((6, 2, 4))

    def run():
        framework.set_seed(2)
        return pe(x, training=True)

    y = run()
    assert (y == 0).any()
    dx = pe.backward(g)
    assert relative_error(dx, numerical_gradient(lambda: float((run() * g).sum()), x)) < 1e-8


# -- configs keep activation instances' parameters: a rebuilt block computes the same -----------------


@pytest.mark.parametrize("act", ["gelu_tanh_instance", "leaky_instance", "elu_instance", "softplus_instance"])
def test_block_with_activation_instance_rebuilt_from_config_computes_the_same(float64, act):
    from framework.registry.namespace import resolve, serialize

    _, m_act = _activations()[act]
    stack = L.TransformerEncoder(
        L.TransformerEncoderLayer(6, 2, 8, 0.0, activation=m_act, norm_first=True), 2, norm=L.LayerNorm(6)
    )
    rebuilt = resolve("layers", serialize("layers", stack))
    rebuilt.load_state_dict(stack.state_dict())
    x = np.random.default_rng(74).standard_normal((2, 3, 6)) * 3
    np.testing.assert_array_equal(rebuilt(x), stack(x))


# -- Embedding feeding a recurrent layer in a Sequential: end-to-end gradients into the table ----------


@pytest.mark.parametrize("padding_idx", [None, 0, -2])
def test_embedding_into_bidirectional_gru_sequential_matches_torch(float64, padding_idx):
    from framework import Sequential

    rng = np.random.default_rng(80)
    t_emb = torch.nn.Embedding(9, 4, padding_idx=padding_idx, dtype=torch.float64)
    t_gru = torch.nn.GRU(4, 3, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64)
    t_head = torch.nn.Linear(6, 2, dtype=torch.float64)
    for i, mod in enumerate((t_emb, t_gru, t_head)):
        randomize(mod, 80 + i, scale=0.6)
    emb = L.Embedding(9, 4, padding_idx=padding_idx)
    gru = L.GRU(4, 3, num_layers=2, bidirectional=True, batch_first=True, output="last")
    head = L.Linear(6, 2)
    for tm, mm in ((t_emb, emb), (t_gru, gru), (t_head, head)):
        copy_weights(tm, mm)
    model = Sequential([emb, gru, head])
    ids = rng.integers(0, 9, (3, 5))
    ids[0, 3:] = emb.padding_idx if padding_idx is not None else 0
    _, h_n = t_gru(t_emb(torch.from_numpy(ids)))
    y_t = t_head(torch.cat([h_n[-2], h_n[-1]], dim=1))
    g = rng.standard_normal((3, 2))
    (y_t * torch.from_numpy(g)).sum().backward()
    model.zero_grad()
    close(model.forward(ids), y_t, "output")
    model.backward(g)
    for tm, mm in ((t_emb, emb), (t_gru, gru), (t_head, head)):
        compare_param_grads(tm, mm)
