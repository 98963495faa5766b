"""Whole programs, as a user writes them, held against the same program in PyTorch.

Each test builds a model here and its twin in PyTorch with identical weights,
trains both for a few steps (``fit`` / ``train_on_batch`` here, a plain loop
there) and compares the losses of every step, the final weights and the
predictions: to 1e-10 in float64, to ~1e-5 in float32.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import framework  # noqa: E402
from framework import Input, Model, Sequential  # noqa: E402
from framework.base.schedules import CosineDecay, WarmUp  # noqa: E402
from framework.layers import (  # noqa: E402
    GRU,
    LSTM,
    BatchNorm,
    Conv2d,
    Dropout,
    Embedding,
    Flatten,
    LayerNorm,
    Linear,
    MaxPool2d,
    Permute,
    ReLU,
    TransformerEncoderLayer,
)
from framework.optimizers import SGD, Adam, AdamW, RMSProp  # noqa: E402

torch.set_num_threads(1)

TOL64 = dict(rtol=1e-10, atol=1e-10)
TOL32 = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture
def f64():
    old = framework.get_default_dtype()
    framework.set_default_dtype("float64")
    try:
        yield
    finally:
        framework.set_default_dtype(old)


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _load_layer(ours, tmod):
    """Copy a torch module's state (names and layouts are PyTorch's) into one of our layers."""
    state = {k: v.detach().numpy().copy() for k, v in tmod.state_dict().items() if "num_batches" not in k}
    ours.load_state_dict(state)


def _copy_params(pairs):
    """Copy (our Parameter, torch tensor) pairs from ours to torch."""
    with torch.no_grad():
        for p, t in pairs:
            t.copy_(_t(p.data.astype(np.float64 if t.dtype == torch.float64 else np.float32)))


def _assert_same(pairs, tol):
    for p, t in pairs:
        np.testing.assert_allclose(p.data, t.detach().numpy(), **tol)


def _batches(n, batch_size):
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _epoch_mean(losses, sizes):
    """Keras's epoch loss: the batch losses weighted by batch size."""
    return float(np.dot(losses, sizes) / np.sum(sizes))


# --------------------------------------------------------------------------------------------
# 1. Text classifier: Embedding(padding) -> bidirectional LSTM -> Linear, CrossEntropy, Adam, fit
# --------------------------------------------------------------------------------------------


class _TorchText(nn.Module):
    def __init__(self, vocab, dim, hidden, classes, cell):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.rnn = cell(dim, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        _out, state = self.rnn(self.emb(x))
        h = state[0] if isinstance(state, tuple) else state
        return self.fc(torch.cat([h[-2], h[-1]], dim=1))


def _tokens(n, length, vocab, seed):
    gen = np.random.default_rng(seed)
    toks = gen.integers(1, vocab, (n, length))
    for i in range(n):  # right padding of random length
        cut = gen.integers(2, length + 1)
        toks[i, cut:] = 0
    return toks


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_text_classifier_fit_matches_torch(f64, kind):
    vocab, dim, hidden, classes, n, length = 12, 6, 5, 3, 10, 7
    torch.manual_seed(0)
    twin = _TorchText(vocab, dim, hidden, classes, nn.LSTM if kind == "lstm" else nn.GRU).double()
    cell = LSTM if kind == "lstm" else GRU
    model = Sequential(
        [
            Embedding(vocab, dim, padding_idx=0),
            cell(dim, hidden, batch_first=True, bidirectional=True, output="last"),
            Linear(2 * hidden, classes),
        ]
    )
    model.build((None, length))
    for ours, theirs in zip(model.layers, [twin.emb, twin.rnn, twin.fc]):
        _load_layer(ours, theirs)
    x = _tokens(n, length, vocab, 1)
    y = np.random.default_rng(2).integers(0, classes, n)
    np.testing.assert_allclose(model.predict(x), twin(_t(x)).detach().numpy(), **TOL64)

    model.compile(optimizer=Adam(learning_rate=0.02), loss="cross_entropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)

    opt = torch.optim.Adam(twin.parameters(), lr=0.02)
    expected = []
    for _ in range(2):
        losses, sizes = [], []
        for s in _batches(n, 4):
            opt.zero_grad()
            loss = F.cross_entropy(twin(_t(x[s])), _t(y[s]))
            loss.backward()
            opt.step()
            losses.append(loss.item())
            sizes.append(s.stop - s.start)
        expected.append(_epoch_mean(losses, sizes))
    np.testing.assert_allclose(history.history["loss"], expected, **TOL64)
    ours_state = model.state_dict(format="torch")
    theirs_state = {
        "0.weight": twin.emb.weight,
        **{f"1.{k}": v for k, v in twin.rnn.state_dict().items()},
        "2.weight": twin.fc.weight,
        "2.bias": twin.fc.bias,
    }
    assert set(ours_state) == set(theirs_state)
    for k, v in theirs_state.items():
        np.testing.assert_allclose(ours_state[k], v.detach().numpy(), **TOL64, err_msg=k)
    assert np.all(model.layers[0].weight.data[0] == 0)  # the padding row is never trained
    logits = twin(_t(x)).detach().numpy()
    np.testing.assert_allclose(model.predict(x), logits, **TOL64)
    # evaluate() in inference mode: loss and accuracy on the whole set, by hand
    scores = model.evaluate(x, y, batch_size=3, verbose=0)
    ce = F.cross_entropy(_t(logits), _t(y)).item()
    assert scores["loss"] == pytest.approx(ce, rel=1e-10)
    assert scores["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y), rel=1e-12)


# --------------------------------------------------------------------------------------------
# 2. Stacked GRU with dropout=0 between layers, SGD momentum + nesterov + weight decay, manual loop
# --------------------------------------------------------------------------------------------


def test_stacked_gru_sgd_nesterov_weight_decay_train_on_batch(f64):
    torch.manual_seed(3)
    tg = nn.GRU(3, 4, num_layers=2, batch_first=True).double()
    tl = nn.Linear(4, 2).double()
    model = Sequential([GRU(3, 4, num_layers=2, batch_first=True, output="last"), Linear(4, 2)])
    model.build((None, 6, 3))
    _load_layer(model.layers[0], tg)
    _load_layer(model.layers[1], tl)
    gen = np.random.default_rng(4)
    x = gen.standard_normal((8, 6, 3))
    y = gen.standard_normal((8, 2))
    model.compile(SGD(learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), "mse")
    params = list(tg.parameters()) + list(tl.parameters())
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    for step in range(5):
        s = slice(0, 8) if step % 2 == 0 else slice(2, 7)
        ours = model.train_on_batch(x[s], y[s])
        opt.zero_grad()
        _out, h = tg(_t(x[s]))
        loss = F.mse_loss(tl(h[-1]), _t(y[s]))
        loss.backward()
        opt.step()
        assert ours == pytest.approx(loss.item(), rel=1e-10)
    _out, h = tg(_t(x))
    np.testing.assert_allclose(model.predict(x), tl(h[-1]).detach().numpy(), **TOL64)
    np.testing.assert_allclose(model.layers[0].weight_hh_l1.data, tg.weight_hh_l1.detach().numpy(), **TOL64)


# --------------------------------------------------------------------------------------------
# 3. A small Transformer language model: causal pre-norm block, GELU, tied embedding/head,
#    AdamW + weight decay, global-norm clipping, warm-up then cosine decay
# --------------------------------------------------------------------------------------------


class _TorchLM(nn.Module):
    def __init__(self, vocab, d, nhead, ff):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.block = nn.TransformerEncoderLayer(
            d, nhead, ff, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        length = x.shape[1]
        mask = torch.triu(torch.full((length, length), float("-inf"), dtype=torch.float64), diagonal=1)
        h = self.block(self.emb(x), src_mask=mask, is_causal=True)
        return self.head(self.ln(h)).permute(0, 2, 1)  # (N, V, L) for cross_entropy


def _our_lm(vocab, d, nhead, ff, length):
    tokens = Input((length,), name="tokens")
    embed = Embedding(vocab, d, name="embed")
    block = TransformerEncoderLayer(
        d, nhead, ff, dropout=0.0, activation="gelu", norm_first=True, name="block"
    )
    norm = LayerNorm(d, name="ln")
    head = Linear(d, vocab, bias=False, name="head")
    head.weight = embed.weight
    out = Permute((2, 1))(head(norm(block(embed(tokens), is_causal=True))))
    return Model(tokens, out), embed, block, norm


def _torch_clip(params, max_norm):
    """Global-norm clipping as the framework documents it (rescale to at most ``max_norm``)."""
    grads = [p.grad for p in params if p.grad is not None]
    total = math.sqrt(sum(float((g * g).sum()) for g in grads))
    if total > max_norm:
        for g in grads:
            g.mul_(max_norm / (total + 1e-12))


def test_transformer_lm_adamw_clip_warmup_cosine(f64):
    vocab, d, nhead, ff, length, n = 11, 8, 2, 16, 6, 8
    torch.manual_seed(5)
    twin = _TorchLM(vocab, d, nhead, ff).double()
    with torch.no_grad():
        twin.emb.weight.mul_(0.3)
    model, embed, block, norm = _our_lm(vocab, d, nhead, ff, length)
    _load_layer(embed, twin.emb)
    _load_layer(block, twin.block)
    _load_layer(norm, twin.ln)
    seq = np.random.default_rng(6).integers(0, vocab, (n, length + 1))
    x, y = seq[:, :-1], seq[:, 1:]
    np.testing.assert_allclose(model.predict(x), twin(_t(x)).detach().numpy(), **TOL64)

    schedule = WarmUp(CosineDecay(0.02, decay_steps=6), warmup_steps=3)
    model.compile(AdamW(learning_rate=schedule, weight_decay=0.1, clipnorm=0.5), "cross_entropy")
    history = model.fit(x, y, epochs=3, batch_size=4, shuffle=False, verbose=0)

    params = list(twin.parameters())
    assert len(params) == len(model.parameters())  # the tied weight counted once on both sides
    opt = torch.optim.AdamW(params, lr=0.0, weight_decay=0.1)
    expected, step = [], 0
    for _ in range(3):
        losses = []
        for s in _batches(n, 4):
            for group in opt.param_groups:
                group["lr"] = schedule(step)
            opt.zero_grad()
            loss = F.cross_entropy(twin(_t(x[s])), _t(y[s]))
            loss.backward()
            _torch_clip(params, 0.5)
            opt.step()
            losses.append(loss.item())
            step += 1
        expected.append(float(np.mean(losses)))
    np.testing.assert_allclose(history.history["loss"], expected, **TOL64)
    np.testing.assert_allclose(embed.weight.data, twin.emb.weight.detach().numpy(), **TOL64)
    np.testing.assert_allclose(
        block.self_attn.in_proj_weight.data, twin.block.self_attn.in_proj_weight.detach().numpy(), **TOL64
    )
    np.testing.assert_allclose(model.predict(x), twin(_t(x)).detach().numpy(), **TOL64)


# --------------------------------------------------------------------------------------------
# 4. CNN with BatchNorm and a seeded Dropout, trained with fit, then evaluated in eval mode
# --------------------------------------------------------------------------------------------


def _our_cnn(p, seed):
    return Sequential(
        [
            Conv2d(1, 4, 3, padding=1),
            BatchNorm(4, momentum=0.2),
            ReLU(),
            MaxPool2d(2),
            Flatten(),
            Dropout(p, seed=seed),
            Linear(4 * 4 * 4, 3),
        ]
    )


class _TorchCNN(nn.Module):
    def __init__(self, p, seed):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, momentum=0.2)
        self.fc = nn.Linear(64, 3)
        self.p = p
        self.gen = np.random.default_rng(seed)  # the framework's Dropout(seed=...) masks, replayed

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2).flatten(1)
        if self.training:
            keep = self.gen.random(tuple(h.shape), dtype=np.float64) >= self.p
            h = h * _t(keep.astype(np.float64) / (1 - self.p))
        return self.fc(h)


def test_cnn_batchnorm_dropout_fit_then_eval(f64):
    torch.manual_seed(7)
    twin = _TorchCNN(0.3, seed=11).double()
    model = _our_cnn(0.3, seed=11)
    model.build((None, 1, 8, 8))
    _load_layer(model.layers[0], twin.conv)
    _load_layer(model.layers[1], twin.bn)
    _load_layer(model.layers[6], twin.fc)
    gen = np.random.default_rng(8)
    x = gen.standard_normal((10, 1, 8, 8)) * 2 + 0.5
    y = gen.integers(0, 3, 10)
    model.compile(SGD(learning_rate=0.05, momentum=0.9), "cross_entropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    assert not model.training  # fit leaves inference mode

    opt = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    twin.train()
    expected = []
    for _ in range(2):
        losses, sizes = [], []
        for s in _batches(10, 4):
            opt.zero_grad()
            loss = F.cross_entropy(twin(_t(x[s])), _t(y[s]))
            loss.backward()
            opt.step()
            losses.append(loss.item())
            sizes.append(s.stop - s.start)
        expected.append(_epoch_mean(losses, sizes))
    twin.eval()
    np.testing.assert_allclose(history.history["loss"], expected, **TOL64)
    bn = model.layers[1]
    np.testing.assert_allclose(bn.running_mean.data, twin.bn.running_mean.numpy(), **TOL64)
    np.testing.assert_allclose(bn.running_var.data, twin.bn.running_var.numpy(), **TOL64)
    np.testing.assert_allclose(model.layers[0].weight.data, twin.conv.weight.detach().numpy(), **TOL64)
    with torch.no_grad():
        logits = twin(_t(x)).numpy()
    first = model.predict(x, batch_size=3)
    np.testing.assert_allclose(first, logits, **TOL64)
    np.testing.assert_array_equal(model.predict(x, batch_size=3), first)  # inference is deterministic
    model.train()
    np.testing.assert_array_equal(model.predict(x, batch_size=3), first)  # whatever the layers' flags
    assert model.training and model.layers[5].training  # and predict leaves them alone
    scores = model.evaluate(x, y, batch_size=4, verbose=0)
    assert scores["loss"] == pytest.approx(F.cross_entropy(_t(logits), _t(y)).item(), rel=1e-10)
    assert scores["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))


# --------------------------------------------------------------------------------------------
# 5. Functional autoencoder with two outputs (reconstruction + class), loss_weights
# --------------------------------------------------------------------------------------------


def test_two_output_autoencoder_loss_weights(f64):
    torch.manual_seed(9)
    enc, dec, cls = nn.Linear(6, 3).double(), nn.Linear(3, 6).double(), nn.Linear(3, 2).double()
    inp = Input((6,), name="x")
    z = Linear(6, 3, activation="tanh", name="enc")(inp)
    recon = Linear(3, 6, name="recon")(z)
    label = Linear(3, 2, name="label")(z)
    model = Model(inp, [recon, label])
    for name, tmod in (("enc", enc), ("recon", dec), ("label", cls)):
        _load_layer(model.get_layer(name), tmod)
    gen = np.random.default_rng(10)
    x = gen.standard_normal((9, 6))
    y = gen.integers(0, 2, 9)
    model.compile(Adam(learning_rate=0.05), loss=["mse", "cross_entropy"], loss_weights=[0.5, 2.0])
    history = model.fit(x, [x, y], epochs=2, batch_size=4, shuffle=False, verbose=0)
    params = [*enc.parameters(), *dec.parameters(), *cls.parameters()]
    opt = torch.optim.Adam(params, lr=0.05)
    totals, recons, labels = [], [], []
    for _ in range(2):
        parts, sizes = [], []
        for s in _batches(9, 4):
            opt.zero_grad()
            h = torch.tanh(enc(_t(x[s])))
            lr_, lc = F.mse_loss(dec(h), _t(x[s])), F.cross_entropy(cls(h), _t(y[s]))
            total = 0.5 * lr_ + 2.0 * lc
            total.backward()
            opt.step()
            parts.append((total.item(), lr_.item(), lc.item()))
            sizes.append(s.stop - s.start)
        parts = np.array(parts)
        totals.append(_epoch_mean(parts[:, 0], sizes))
        recons.append(_epoch_mean(parts[:, 1], sizes))
        labels.append(_epoch_mean(parts[:, 2], sizes))
    np.testing.assert_allclose(history.history["loss"], totals, **TOL64)
    np.testing.assert_allclose(history.history["recon_loss"], recons, **TOL64)
    np.testing.assert_allclose(history.history["label_loss"], labels, **TOL64)
    out_r, out_c = model.predict(x)
    with torch.no_grad():
        h = torch.tanh(enc(_t(x)))
        np.testing.assert_allclose(out_r, dec(h).numpy(), **TOL64)
        np.testing.assert_allclose(out_c, cls(h).numpy(), **TOL64)
        scores = model.evaluate(x, [x, y], verbose=0)
        want_r, want_c = F.mse_loss(dec(h), _t(x)).item(), F.cross_entropy(cls(h), _t(y)).item()
    assert scores["recon_loss"] == pytest.approx(want_r, rel=1e-10)
    assert scores["label_loss"] == pytest.approx(want_c, rel=1e-10)
    assert scores["loss"] == pytest.approx(0.5 * want_r + 2.0 * want_c, rel=1e-10)


# --------------------------------------------------------------------------------------------
# 6. Fine-tuning: a frozen Linear and a frozen BatchNorm (inference mode, Keras's rule)
# --------------------------------------------------------------------------------------------


def _mlp_bn(bias=True):
    return Sequential([Linear(5, 8, bias=bias), BatchNorm(8), ReLU(), Linear(8, 2)])


def _torch_mlp_bn(bias=True):
    return nn.Sequential(nn.Linear(5, 8, bias=bias), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)).double()


def _copy_torch_seq(model, twin):
    for i in (0, 1, 3):
        _load_layer(model.layers[i], twin[i])


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_fine_tuning_frozen_layers(f64, freeze_bn):
    torch.manual_seed(12)
    twin = _torch_mlp_bn()
    with torch.no_grad():
        twin[1].running_mean.uniform_(-0.5, 0.5)
        twin[1].running_var.uniform_(0.5, 2.0)
        twin[1].weight.uniform_(0.5, 1.5)
    model = _mlp_bn()
    model.build((None, 5))
    _copy_torch_seq(model, twin)
    model.layers[0].trainable = False
    twin[0].requires_grad_(False)
    if freeze_bn:
        model.layers[1].trainable = False
        twin[1].requires_grad_(False)
    gen = np.random.default_rng(13)
    x = gen.standard_normal((12, 5))
    y = gen.integers(0, 2, 12)
    model.compile(Adam(learning_rate=0.05), "cross_entropy")
    history = model.fit(x, y, epochs=2, batch_size=6, shuffle=False, verbose=0)
    opt = torch.optim.Adam([p for p in twin.parameters() if p.requires_grad], lr=0.05)
    twin.train()
    if freeze_bn:
        twin[1].eval()
    expected = []
    for _ in range(2):
        losses = []
        for s in _batches(12, 6):
            opt.zero_grad()
            loss = F.cross_entropy(twin(_t(x[s])), _t(y[s]))
            loss.backward()
            opt.step()
            losses.append(loss.item())
        expected.append(float(np.mean(losses)))
    twin.eval()
    np.testing.assert_allclose(history.history["loss"], expected, **TOL64)
    for i, tmod in ((0, twin[0]), (1, twin[1]), (3, twin[3])):
        for k, v in tmod.state_dict().items():
            if "num_batches" in k:
                continue
            np.testing.assert_allclose(
                model.layers[i].state_dict()[k], v.numpy(), **TOL64, err_msg=f"{i}.{k}"
            )
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x), twin(_t(x)).numpy(), **TOL64)


# --------------------------------------------------------------------------------------------
# 7. Weights moved to a second model with get_weights/set_weights, then trained further
# --------------------------------------------------------------------------------------------


def test_get_set_weights_transfer_then_train(f64):
    torch.manual_seed(14)
    twin = _torch_mlp_bn()
    gen = np.random.default_rng(15)
    x = gen.standard_normal((12, 5)) * 3 + 1
    y = gen.integers(0, 2, 12)
    framework.set_seed(1)
    first = _mlp_bn()
    first.build((None, 5))
    _copy_torch_seq(first, twin)
    first.compile(SGD(learning_rate=0.1), "cross_entropy")
    first.fit(x, y, epochs=1, batch_size=6, shuffle=False, verbose=0)
    topt = torch.optim.SGD(twin.parameters(), lr=0.1)
    twin.train()
    for s in _batches(12, 6):
        topt.zero_grad()
        F.cross_entropy(twin(_t(x[s])), _t(y[s])).backward()
        topt.step()

    framework.set_seed(2)
    second = _mlp_bn()
    second.build((None, 5))
    weights = first.get_weights()
    assert len(weights) == 8  # Keras counts the BatchNorm's moving statistics too
    second.set_weights(weights)
    np.testing.assert_array_equal(second.predict(x), first.predict(x))
    second.compile(RMSProp(learning_rate=0.01, momentum=0.5), "cross_entropy")
    history = second.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    topt = torch.optim.RMSprop(twin.parameters(), lr=0.01, momentum=0.5)
    twin.train()
    expected = []
    for _ in range(2):
        losses = []
        for s in _batches(12, 4):
            topt.zero_grad()
            loss = F.cross_entropy(twin(_t(x[s])), _t(y[s]))
            loss.backward()
            topt.step()
            losses.append(loss.item())
        expected.append(float(np.mean(losses)))
    twin.eval()
    np.testing.assert_allclose(history.history["loss"], expected, **TOL64)
    with torch.no_grad():
        np.testing.assert_allclose(second.predict(x), twin(_t(x)).numpy(), **TOL64)
    np.testing.assert_allclose(second.layers[1].running_var.data, twin[1].running_var.numpy(), **TOL64)


# --------------------------------------------------------------------------------------------
# 8. Optimizers on an MLP with LayerNorm and GELU: PyTorch's rules step for step (float64)
# --------------------------------------------------------------------------------------------

_OPTIMIZERS = {
    "sgd_nesterov_wd": (
        lambda: SGD(learning_rate=0.05, momentum=0.8, nesterov=True, weight_decay=0.05),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05),
    ),
    "sgd_dampening": (
        lambda: SGD(learning_rate=0.05, momentum=0.8, dampening=0.3),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, dampening=0.3),
    ),
    "rmsprop": (
        lambda: RMSProp(learning_rate=0.01),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01),
    ),
    "rmsprop_centered_momentum_wd": (
        lambda: RMSProp(learning_rate=0.01, alpha=0.9, momentum=0.7, centered=True, weight_decay=0.1),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, momentum=0.7, centered=True, weight_decay=0.1),
    ),
    "adam_amsgrad": (
        lambda: Adam(learning_rate=0.03, betas=(0.8, 0.95), amsgrad=True),
        lambda ps: torch.optim.Adam(ps, lr=0.03, betas=(0.8, 0.95), amsgrad=True),
    ),
    "adam_l2": (
        lambda: Adam(learning_rate=0.03, weight_decay=0.2, eps=1e-3),
        lambda ps: torch.optim.Adam(ps, lr=0.03, weight_decay=0.2, eps=1e-3),
    ),
    "adamw_amsgrad": (
        lambda: AdamW(learning_rate=0.03, weight_decay=0.3, amsgrad=True),
        lambda ps: torch.optim.AdamW(ps, lr=0.03, weight_decay=0.3, amsgrad=True),
    ),
    "adagrad": (
        lambda: framework.optimizers.get(
            "adagrad", learning_rate=0.1, lr_decay=0.1, initial_accumulator_value=0.2
        ),
        lambda ps: torch.optim.Adagrad(ps, lr=0.1, lr_decay=0.1, initial_accumulator_value=0.2),
    ),
}


@pytest.mark.parametrize("name", sorted(_OPTIMIZERS))
def test_optimizer_rules_match_torch(f64, name):
    ours_opt, torch_opt = _OPTIMIZERS[name]
    torch.manual_seed(16)
    twin = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.GELU(), nn.Linear(6, 3)).double()
    model = Sequential([Linear(4, 6), LayerNorm(6), framework.layers.GELU(), Linear(6, 3)])
    model.build((None, 4))
    for i in (0, 1, 3):
        _load_layer(model.layers[i], twin[i])
    gen = np.random.default_rng(17)
    x = gen.standard_normal((10, 4))
    y = gen.integers(0, 3, 10)
    model.compile(ours_opt(), "cross_entropy")
    opt = torch_opt(list(twin.parameters()))
    for step in range(6):
        s = slice(step % 3, step % 3 + 7)
        ours = model.train_on_batch(x[s], y[s])
        opt.zero_grad()
        loss = F.cross_entropy(twin(_t(x[s])), _t(y[s]))
        loss.backward()
        opt.step()
        assert ours == pytest.approx(loss.item(), rel=1e-10, abs=1e-12), step
    for i in (0, 1, 3):
        for k, v in twin[i].state_dict().items():
            np.testing.assert_allclose(
                model.layers[i].state_dict()[k], v.numpy(), **TOL64, err_msg=f"{i}.{k}"
            )


# --------------------------------------------------------------------------------------------
# 9. class_weight and sample_weight against torch's per-sample losses (Keras: sum w l / N)
# --------------------------------------------------------------------------------------------


def test_class_weight_times_sample_weight_fit_and_evaluate(f64):
    torch.manual_seed(18)
    tl = nn.Linear(3, 3).double()
    model = Sequential([Linear(3, 3)])
    model.build((None, 3))
    _load_layer(model.layers[0], tl)
    gen = np.random.default_rng(19)
    x = gen.standard_normal((10, 3))
    y = gen.integers(0, 3, 10)
    sw = gen.uniform(0.0, 2.0, 10)
    cw = {0: 1.0, 1: 3.0, 2: 0.5}
    model.compile(SGD(learning_rate=0.2), "cross_entropy", weighted_metrics=["accuracy"])
    history = model.fit(
        x, y, class_weight=cw, sample_weight=sw, epochs=2, batch_size=4, shuffle=False, verbose=0
    )
    w = sw * np.array([cw[int(c)] for c in y])
    opt = torch.optim.SGD(tl.parameters(), lr=0.2)
    expected, accs = [], []
    for _ in range(2):
        losses, sizes, hits = [], [], []
        for s in _batches(10, 4):
            opt.zero_grad()
            z = tl(_t(x[s]))
            loss = (F.cross_entropy(z, _t(y[s]), reduction="none") * _t(w[s])).mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            sizes.append(s.stop - s.start)
            hits.append((z.argmax(1).numpy() == y[s]).astype(float))
        expected.append(_epoch_mean(losses, sizes))
        hits = np.concatenate(hits)
        accs.append(float(np.sum(hits * w) / np.sum(w)))  # weighted mean, weights as given to the loss
    np.testing.assert_allclose(history.history["loss"], expected, **TOL64)
    np.testing.assert_allclose(history.history["accuracy"], accs, **TOL64)
    np.testing.assert_allclose(model.layers[0].weight.data, tl.weight.detach().numpy(), **TOL64)
    # evaluate with sample_weight: the loss as Keras (sum w l / N per batch, batch-size weighted),
    # the accuracy as a weighted mean
    with torch.no_grad():
        z = tl(_t(x))
        per = F.cross_entropy(z, _t(y), reduction="none").numpy()
    scores = model.evaluate(x, y, sample_weight=sw, batch_size=3, verbose=0)
    assert scores["loss"] == pytest.approx(float(np.sum(per * sw) / 10), rel=1e-10)
    correct = (z.numpy().argmax(1) == y).astype(float)
    assert scores["accuracy"] == pytest.approx(float(np.sum(correct * sw) / np.sum(sw)), rel=1e-10)


# --------------------------------------------------------------------------------------------
# 10. evaluate()'s metrics against the same numbers computed by hand (batches that do not divide N)
# --------------------------------------------------------------------------------------------


def test_evaluate_metrics_by_hand():
    framework.set_seed(20)
    model = Sequential([Linear(4, 8, activation="relu"), Linear(8, 3)])
    model.compile(
        "adam",
        "cross_entropy",
        metrics=[
            "accuracy",
            framework.metrics.get("top_k_accuracy", k=2),
            framework.metrics.get("precision", average="micro"),
            framework.metrics.get("f1_score", average="weighted"),
            framework.metrics.get("recall", average="macro"),
        ],
    )
    gen = np.random.default_rng(21)
    x = gen.standard_normal((23, 4)).astype(np.float32)
    y = gen.integers(0, 3, 23)
    logits = model.predict(x)
    scores = model.evaluate(x, y, batch_size=5, verbose=0)
    with torch.no_grad():
        want_loss = F.cross_entropy(_t(logits.astype(np.float64)), _t(y)).item()
    pred = logits.argmax(1)
    assert scores["loss"] == pytest.approx(want_loss, rel=1e-5)
    assert scores["accuracy"] == pytest.approx(np.mean(pred == y))
    top2 = np.argsort(-logits, axis=1)[:, :2]
    assert scores["top_k_accuracy"] == pytest.approx(np.mean((top2 == y[:, None]).any(1)))
    tp = np.array([np.sum((pred == c) & (y == c)) for c in range(3)], float)
    fp = np.array([np.sum((pred == c) & (y != c)) for c in range(3)], float)
    fn = np.array([np.sum((pred != c) & (y == c)) for c in range(3)], float)
    recall_macro = np.mean(np.divide(tp, tp + fn, out=np.zeros(3), where=(tp + fn) > 0))
    assert scores["recall"] == pytest.approx(recall_macro)
    assert scores["precision"] == pytest.approx(tp.sum() / (tp.sum() + fp.sum()))  # micro
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(3), where=(2 * tp + fp + fn) > 0)
    support = np.bincount(y, minlength=3)
    assert scores["f1_score"] == pytest.approx(np.sum(f1 * support) / support.sum())  # weighted


# --------------------------------------------------------------------------------------------
# 11. Sequence tagger: Embedding -> bidirectional GRU (sequence) -> Linear, per-token CrossEntropy
#     with class weights, label smoothing and ignore_index on the padding
# --------------------------------------------------------------------------------------------


def test_sequence_tagger_weighted_smoothed_ignored_tokens(f64):
    vocab, dim, hidden, tags, n, length = 10, 5, 4, 3, 9, 6
    torch.manual_seed(22)
    temb = nn.Embedding(vocab, dim, padding_idx=0).double()
    tgru = nn.GRU(dim, hidden, batch_first=True, bidirectional=True).double()
    tfc = nn.Linear(2 * hidden, tags).double()
    class_w = np.array([0.5, 2.0, 1.0])
    model = Sequential(
        [
            Embedding(vocab, dim, padding_idx=0),
            GRU(dim, hidden, batch_first=True, bidirectional=True, output="sequence"),
            Linear(2 * hidden, tags),
            Permute((2, 1)),
        ]
    )
    model.build((None, length))
    for ours, theirs in zip(model.layers, [temb, tgru, tfc]):
        _load_layer(ours, theirs)
    x = _tokens(n, length, vocab, 23)
    y = np.random.default_rng(24).integers(0, tags, (n, length))
    y[x == 0] = -1  # padding positions are not scored
    loss = framework.losses.get("cross_entropy", weight=class_w, label_smoothing=0.2, ignore_index=-1)
    model.compile(Adam(learning_rate=0.05), loss)
    history = model.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)

    params = [*temb.parameters(), *tgru.parameters(), *tfc.parameters()]
    opt = torch.optim.Adam(params, lr=0.05)

    def forward(xb):
        out, _ = tgru(temb(_t(xb)))
        return tfc(out).permute(0, 2, 1)

    expected = []
    for _ in range(2):
        losses, sizes = [], []
        for s in _batches(n, 4):
            opt.zero_grad()
            value = F.cross_entropy(
                forward(x[s]), _t(y[s]), weight=_t(class_w), label_smoothing=0.2, ignore_index=-1
            )
            value.backward()
            opt.step()
            losses.append(value.item())
            sizes.append(s.stop - s.start)
        expected.append(_epoch_mean(losses, sizes))
    np.testing.assert_allclose(history.history["loss"], expected, **TOL64)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x), forward(x).numpy(), **TOL64)


# --------------------------------------------------------------------------------------------
# 12. Probability outputs: Sigmoid + binary_crossentropy and Softmax + categorical_crossentropy
#     (fused gradients), bce_with_logits with pos_weight, huber regression
# --------------------------------------------------------------------------------------------


def _train_pair(model, twin_forward, twin_params, loss_fn, x, y, opt_ours, opt_torch, epochs=2, bs=4):
    model.compile(opt_ours, loss_fn[0])
    history = model.fit(x, y, epochs=epochs, batch_size=bs, shuffle=False, verbose=0)
    opt = opt_torch(twin_params)
    expected = []
    n = len(x)
    for _ in range(epochs):
        losses, sizes = [], []
        for s in _batches(n, bs):
            opt.zero_grad()
            value = loss_fn[1](twin_forward(_t(x[s])), _t(y[s]))
            value.backward()
            opt.step()
            losses.append(value.item())
            sizes.append(s.stop - s.start)
        expected.append(_epoch_mean(losses, sizes))
    return history.history["loss"], expected


_HEADS = {
    "sigmoid_bce": (
        1,
        framework.layers.Sigmoid,
        ("binary_crossentropy", lambda p, t: F.binary_cross_entropy(p, t)),
        torch.sigmoid,
        "binary",
    ),
    "softmax_cce": (
        3,
        lambda: framework.layers.Softmax(),
        ("categorical_crossentropy", lambda p, t: -(t * torch.log(p)).sum(1).mean()),
        lambda z: torch.softmax(z, 1),
        "onehot",
    ),
    "softmax_sparse": (
        3,
        lambda: framework.layers.Softmax(),
        ("sparse_categorical_crossentropy", lambda p, t: F.nll_loss(torch.log(p), t)),
        lambda z: torch.softmax(z, 1),
        "labels",
    ),
    "bce_logits_pos_weight": (
        2,
        None,
        (
            framework.losses.get("bce_with_logits", pos_weight=[2.0, 0.5]),
            lambda z, t: F.binary_cross_entropy_with_logits(
                z, t, pos_weight=torch.tensor([2.0, 0.5], dtype=torch.float64)
            ),
        ),
        None,
        "multilabel",
    ),
    "huber": (
        2,
        None,
        (framework.losses.get("huber", delta=0.3), lambda z, t: F.huber_loss(z, t, delta=0.3)),
        None,
        "regression",
    ),
    "mae": (2, None, ("mae", F.l1_loss), None, "regression"),
}


@pytest.mark.parametrize("name", sorted(_HEADS))
def test_output_heads_and_losses(f64, name):
    outs, act, loss_fn, link, kind = _HEADS[name]
    torch.manual_seed(25)
    t1, t2 = nn.Linear(4, 5).double(), nn.Linear(5, outs).double()
    layers = [Linear(4, 5, activation="tanh"), Linear(5, outs)] + ([act()] if act else [])
    model = Sequential(layers)
    model.build((None, 4))
    _load_layer(model.layers[0], t1)
    _load_layer(model.layers[1], t2)
    gen = np.random.default_rng(26)
    x = gen.standard_normal((10, 4))
    if kind == "binary":
        y = gen.integers(0, 2, (10, 1)).astype(np.float64)
    elif kind == "onehot":
        y = np.eye(3)[gen.integers(0, 3, 10)]
    elif kind == "labels":
        y = gen.integers(0, 3, 10)
    elif kind == "multilabel":
        y = gen.integers(0, 2, (10, 2)).astype(np.float64)
    else:
        y = gen.standard_normal((10, 2))

    def forward(xt):
        z = t2(torch.tanh(t1(xt)))
        return link(z) if link else z

    got, want = _train_pair(
        model,
        forward,
        [*t1.parameters(), *t2.parameters()],
        loss_fn,
        x,
        y,
        SGD(learning_rate=0.3, momentum=0.5),
        lambda ps: torch.optim.SGD(ps, lr=0.3, momentum=0.5),
    )
    np.testing.assert_allclose(got, want, **TOL64)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x), forward(_t(x)).numpy(), **TOL64)


# --------------------------------------------------------------------------------------------
# 13. Checkpoint and resume: save after one epoch, load_model, go on == one uninterrupted run
# --------------------------------------------------------------------------------------------


def test_save_load_resume_matches_uninterrupted_torch_run(f64, tmp_path):
    # no bias before the BatchNorm: its exact gradient is 0, and Adam would amplify the rounding
    # residue (a documented effect, docs/guide/training.md)
    torch.manual_seed(27)
    twin = _torch_mlp_bn(bias=False)
    gen = np.random.default_rng(28)
    x = gen.standard_normal((12, 5))
    y = gen.integers(0, 2, 12)
    model = _mlp_bn(bias=False)
    model.build((None, 5))
    _copy_torch_seq(model, twin)
    schedule = WarmUp(0.05, warmup_steps=4)
    model.compile(Adam(learning_rate=schedule, amsgrad=True), "cross_entropy")
    first = model.fit(x, y, epochs=1, batch_size=5, shuffle=False, verbose=0)
    model.save(tmp_path / "m.h5")
    resumed = framework.load_model(tmp_path / "m.h5")
    second = resumed.fit(x, y, epochs=3, initial_epoch=1, batch_size=5, shuffle=False, verbose=0)

    opt = torch.optim.Adam(twin.parameters(), lr=0.0, amsgrad=True)
    twin.train()
    expected, step = [], 0
    for _ in range(3):
        losses, sizes = [], []
        for s in _batches(12, 5):
            for g in opt.param_groups:
                g["lr"] = schedule(step)
            opt.zero_grad()
            value = F.cross_entropy(twin(_t(x[s])), _t(y[s]))
            value.backward()
            opt.step()
            step += 1
            losses.append(value.item())
            sizes.append(s.stop - s.start)
        expected.append(_epoch_mean(losses, sizes))
    twin.eval()
    np.testing.assert_allclose(first.history["loss"] + second.history["loss"], expected, **TOL64)
    assert resumed.optimizer.iterations == 9
    with torch.no_grad():
        np.testing.assert_allclose(resumed.predict(x), twin(_t(x)).numpy(), **TOL64)


# --------------------------------------------------------------------------------------------
# 14. Two fit calls with a per-epoch LearningRateScheduler == one torch run with the same rates
# --------------------------------------------------------------------------------------------


def test_two_fit_calls_with_epoch_schedule(f64):
    from framework.training.callbacks import LearningRateScheduler

    torch.manual_seed(29)
    t1, t2 = nn.Linear(3, 6).double(), nn.Linear(6, 1).double()
    model = Sequential([Linear(3, 6, activation="relu"), Linear(6, 1)])
    model.build((None, 3))
    _load_layer(model.layers[0], t1)
    _load_layer(model.layers[1], t2)
    gen = np.random.default_rng(30)
    x = gen.standard_normal((10, 3))
    y = gen.standard_normal((10, 1))
    rate = lambda epoch: 0.1 * 0.5**epoch  # noqa: E731
    model.compile(SGD(learning_rate=1.0, momentum=0.9), "mse", metrics=["mae"])
    h1 = model.fit(
        x, y, epochs=2, batch_size=4, shuffle=False, verbose=0, callbacks=[LearningRateScheduler(rate)]
    )
    h2 = model.fit(
        x,
        y,
        epochs=4,
        initial_epoch=2,
        batch_size=4,
        shuffle=False,
        verbose=0,
        callbacks=[LearningRateScheduler(rate)],
    )
    opt = torch.optim.SGD([*t1.parameters(), *t2.parameters()], lr=1.0, momentum=0.9)
    expected, maes = [], []
    for epoch in range(4):
        for g in opt.param_groups:
            g["lr"] = rate(epoch)
        losses, errs, sizes = [], [], []
        for s in _batches(10, 4):
            opt.zero_grad()
            out = t2(F.relu(t1(_t(x[s]))))
            value = F.mse_loss(out, _t(y[s]))
            value.backward()
            opt.step()
            losses.append(value.item())
            errs.append(F.l1_loss(out, _t(y[s])).item())
            sizes.append(s.stop - s.start)
        expected.append(_epoch_mean(losses, sizes))
        maes.append(_epoch_mean(errs, sizes))
    np.testing.assert_allclose(h1.history["loss"] + h2.history["loss"], expected, **TOL64)
    np.testing.assert_allclose(h1.history["mae"] + h2.history["mae"], maes, **TOL64)
    np.testing.assert_allclose(model.layers[1].weight.data, t2.weight.detach().numpy(), **TOL64)


# --------------------------------------------------------------------------------------------
# 15. Validation: val_loss / val_accuracy after each epoch, weighted, batches not dividing N
# --------------------------------------------------------------------------------------------


def test_validation_data_with_weights_and_split(f64):
    framework.set_seed(31)
    model = Sequential([Linear(4, 6, activation="tanh"), Linear(6, 3)])
    gen = np.random.default_rng(32)
    x = gen.standard_normal((20, 4))
    y = gen.integers(0, 3, 20)
    xv, yv, wv = gen.standard_normal((7, 4)), gen.integers(0, 3, 7), gen.uniform(0, 2, 7)
    model.compile(SGD(learning_rate=0.1), "cross_entropy", weighted_metrics=["accuracy"])
    seen = []

    class Grab(framework.training.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            z = self.model.predict(xv)
            per = F.cross_entropy(_t(z), _t(yv), reduction="none").numpy()
            hit = (z.argmax(1) == yv).astype(float)
            seen.append((float(np.sum(per * wv) / 7), float(np.sum(hit * wv) / np.sum(wv))))

    history = model.fit(
        x,
        y,
        validation_data=(xv, yv, wv),
        epochs=2,
        batch_size=3,
        shuffle=False,
        verbose=0,
        callbacks=[Grab()],
    )
    np.testing.assert_allclose(history.history["val_loss"], [s[0] for s in seen], **TOL64)
    np.testing.assert_allclose(history.history["val_accuracy"], [s[1] for s in seen], **TOL64)

    # validation_split keeps the first floor(N * (1 - s)) samples for training
    twin = Sequential([Linear(4, 6, activation="tanh"), Linear(6, 3)])
    twin.build((None, 4))
    twin.set_weights(model.get_weights())
    model.compile(SGD(learning_rate=0.1), "cross_entropy")
    twin.compile(SGD(learning_rate=0.1), "cross_entropy")
    a = model.fit(x, y, validation_split=0.25, epochs=1, batch_size=4, shuffle=False, verbose=0)
    b = twin.fit(
        x[:15], y[:15], validation_data=(x[15:], y[15:]), epochs=1, batch_size=4, shuffle=False, verbose=0
    )
    assert a.history == b.history


# --------------------------------------------------------------------------------------------
# 16. float32 programs: a conv autoencoder (Conv2d stride 2, GroupNorm, ConvTranspose2d) and a
#     text CNN (Embedding, Conv1d, InstanceNorm1d, RMSNorm); float64 data cast at the model's edge
# --------------------------------------------------------------------------------------------


def test_float32_conv_autoencoder_and_text_cnn():
    from framework.layers import (
        AdaptiveAvgPool1d,
        Conv1d,
        ConvTranspose2d,
        GroupNorm,
        InstanceNorm1d,
        RMSNorm,
    )

    assert framework.get_default_dtype() == np.float32
    torch.manual_seed(33)
    tc = nn.Conv2d(2, 4, 3, stride=2, padding=1)
    tg = nn.GroupNorm(2, 4)
    tt = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
    model = Sequential(
        [
            Conv2d(2, 4, 3, stride=2, padding=1),
            GroupNorm(2, 4),
            ReLU(),
            ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
        ]
    )
    model.build((None, 2, 8, 8))
    for ours, theirs in zip([model.layers[0], model.layers[1], model.layers[3]], [tc, tg, tt]):
        _load_layer(ours, theirs)
    x = np.random.default_rng(34).standard_normal((6, 2, 8, 8))  # float64, cast once at the edge
    model.compile(Adam(learning_rate=0.01), "mse")
    history = model.fit(x, x, epochs=2, batch_size=4, shuffle=False, verbose=0)
    opt = torch.optim.Adam([*tc.parameters(), *tg.parameters(), *tt.parameters()], lr=0.01)
    x32 = x.astype(np.float32)
    fwd = lambda a: tt(F.relu(tg(tc(a))))  # noqa: E731
    expected = []
    for _ in range(2):
        losses, sizes = [], []
        for s in _batches(6, 4):
            opt.zero_grad()
            value = F.mse_loss(fwd(_t(x32[s])), _t(x32[s]))
            value.backward()
            opt.step()
            losses.append(value.item())
            sizes.append(s.stop - s.start)
        expected.append(_epoch_mean(losses, sizes))
    np.testing.assert_allclose(history.history["loss"], expected, **TOL32)
    predicted = model.predict(x)
    assert predicted.dtype == np.float32
    with torch.no_grad():
        np.testing.assert_allclose(predicted, fwd(_t(x32)).numpy(), **TOL32)
    np.testing.assert_allclose(model.layers[3].weight.data, tt.weight.detach().numpy(), **TOL32)

    # the text CNN
    te = nn.Embedding(9, 6, padding_idx=0)
    tcv = nn.Conv1d(6, 5, 3, padding=1)
    tin = nn.InstanceNorm1d(5, affine=True)
    trms = nn.RMSNorm(5, eps=1e-6)
    tfc = nn.Linear(5, 2)
    text = Sequential(
        [
            Embedding(9, 6, padding_idx=0),
            Permute((2, 1)),
            Conv1d(6, 5, 3, padding=1),
            InstanceNorm1d(5, affine=True),
            ReLU(),
            AdaptiveAvgPool1d(1),
            Flatten(),
            RMSNorm(5, eps=1e-6),
            Linear(5, 2),
        ]
    )
    text.build((None, 7))
    for i, theirs in ((0, te), (2, tcv), (3, tin), (7, trms), (8, tfc)):
        _load_layer(text.layers[i], theirs)
    toks = _tokens(8, 7, 9, 35)
    labels = np.random.default_rng(36).integers(0, 2, 8)
    text.compile(RMSProp(learning_rate=0.01, centered=True), "cross_entropy")
    history = text.fit(toks, labels, epochs=2, batch_size=3, shuffle=False, verbose=0)
    params = [*te.parameters(), *tcv.parameters(), *tin.parameters(), *trms.parameters(), *tfc.parameters()]
    opt = torch.optim.RMSprop(params, lr=0.01, centered=True)

    def tfwd(a):
        h = F.relu(tin(tcv(te(a).permute(0, 2, 1))))
        return tfc(trms(h.mean(2)))

    expected = []
    for _ in range(2):
        losses, sizes = [], []
        for s in _batches(8, 3):
            opt.zero_grad()
            value = F.cross_entropy(tfwd(_t(toks[s])), _t(labels[s]))
            value.backward()
            opt.step()
            losses.append(value.item())
            sizes.append(s.stop - s.start)
        expected.append(_epoch_mean(losses, sizes))
    np.testing.assert_allclose(history.history["loss"], expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(text.predict(toks), tfwd(_t(toks)).numpy(), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# 17. Siamese network: one tower (a nested Sequential) called on two inputs, contrastive-ish MSE
# --------------------------------------------------------------------------------------------


def test_siamese_shared_tower(f64):
    from framework.layers import Subtract

    torch.manual_seed(37)
    t1, t2 = nn.Linear(5, 8).double(), nn.Linear(8, 3).double()
    tower = Sequential([Linear(5, 8, activation="tanh"), Linear(8, 3)], name="tower")
    left, right = Input((5,), name="left"), Input((5,), name="right")
    model = Model([left, right], Subtract()([tower(left), tower(right)]))
    tower.build((None, 5))
    _load_layer(tower.layers[0], t1)
    _load_layer(tower.layers[1], t2)
    gen = np.random.default_rng(38)
    a, b = gen.standard_normal((2, 10, 5))
    target = gen.standard_normal((10, 3))
    model.compile(SGD(learning_rate=0.1, momentum=0.9, nesterov=True), "mse")
    history = model.fit([a, b], target, epochs=2, batch_size=4, shuffle=False, verbose=0)
    opt = torch.optim.SGD([*t1.parameters(), *t2.parameters()], lr=0.1, momentum=0.9, nesterov=True)
    tw = lambda v: t2(torch.tanh(t1(v)))  # noqa: E731
    expected = []
    for _ in range(2):
        losses, sizes = [], []
        for s in _batches(10, 4):
            opt.zero_grad()
            value = F.mse_loss(tw(_t(a[s])) - tw(_t(b[s])), _t(target[s]))
            value.backward()
            opt.step()
            losses.append(value.item())
            sizes.append(s.stop - s.start)
        expected.append(_epoch_mean(losses, sizes))
    np.testing.assert_allclose(history.history["loss"], expected, **TOL64)
    np.testing.assert_allclose(tower.layers[0].weight.data, t1.weight.detach().numpy(), **TOL64)


# --------------------------------------------------------------------------------------------
# 18. Encoder stack with a key padding mask + decoder layer with cross-attention, manual loop
# --------------------------------------------------------------------------------------------


def test_encoder_decoder_manual_loop_with_padding_mask(f64):
    from framework.base.context import Context
    from framework.layers import TransformerDecoderLayer, TransformerEncoder

    torch.manual_seed(39)
    d, nhead, ff = 8, 2, 12
    tenc = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(d, nhead, ff, dropout=0.0, batch_first=True), 2, enable_nested_tensor=False
    ).double()
    tdec = nn.TransformerDecoderLayer(d, nhead, ff, dropout=0.0, batch_first=True, norm_first=True).double()
    enc = TransformerEncoder(TransformerEncoderLayer(d, nhead, ff, dropout=0.0), 2)
    dec = TransformerDecoderLayer(d, nhead, ff, dropout=0.0, norm_first=True)
    gen = np.random.default_rng(40)
    src = gen.standard_normal((3, 5, d))
    tgt = gen.standard_normal((3, 4, d))
    enc(src)
    dec([tgt, src])
    _load_layer(enc, tenc)
    _load_layer(dec, tdec)
    pad = np.zeros((3, 5), bool)
    pad[0, 3:] = True
    pad[2, 4:] = True
    target = gen.standard_normal((3, 4, d))
    params = [*enc.parameters(), *dec.parameters()]
    opt = Adam(params, learning_rate=0.01)
    topt = torch.optim.Adam([*tenc.parameters(), *tdec.parameters()], lr=0.01)
    causal = np.triu(np.ones((4, 4), bool), 1)
    for _ in range(3):
        opt.zero_grad()
        ctx_e, ctx_d = Context(True), Context(True)
        memory = enc.forward(ctx_e, src, src_key_padding_mask=pad)
        out = dec.forward(ctx_d, [tgt, memory], tgt_mask=causal, memory_key_padding_mask=pad)
        loss = float(np.mean((out - target) ** 2))
        grads = dec.backward(ctx_d, 2 * (out - target) / out.size)
        enc.backward(ctx_e, grads[1])
        opt.step()
        topt.zero_grad()
        tm = tenc(_t(src), src_key_padding_mask=_t(pad))
        tout = tdec(_t(tgt), tm, tgt_mask=_t(causal), memory_key_padding_mask=_t(pad))
        tloss = F.mse_loss(tout, _t(target))
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-10)
    ours = {
        **{f"e.{k}": v for k, v in enc.state_dict().items()},
        **{f"d.{k}": v for k, v in dec.state_dict().items()},
    }
    theirs = {
        **{f"e.{k}": v for k, v in tenc.state_dict().items()},
        **{f"d.{k}": v for k, v in tdec.state_dict().items()},
    }
    for k, v in theirs.items():
        np.testing.assert_allclose(ours[k], v.detach().numpy(), **TOL64, err_msg=k)


# --------------------------------------------------------------------------------------------
# 19. fit(threads=2), a BatchNorm pinned to training=False, a layer unfrozen mid-fit by a callback
# --------------------------------------------------------------------------------------------


def _torch_epochs(params_or_opt, forward, batches, epochs, before_epoch=None):
    opt = params_or_opt
    out = []
    for e in range(epochs):
        if before_epoch:
            before_epoch(e)
        losses, sizes = [], []
        for xb, yb in batches:
            opt.zero_grad()
            value = F.cross_entropy(forward(_t(xb)), _t(yb))
            value.backward()
            opt.step()
            losses.append(value.item())
            sizes.append(len(xb))
        out.append(_epoch_mean(losses, sizes))
    return out


def test_threads_pinned_batchnorm_and_unfreezing(f64):
    from framework.training.callbacks import LambdaCallback

    gen = np.random.default_rng(41)
    x = gen.standard_normal((12, 5))
    y = gen.integers(0, 2, 12)
    # fit(threads=2): BatchNorm statistics of the whole batch, gradients summed over the shards
    torch.manual_seed(42)
    twin = _torch_mlp_bn()
    model = _mlp_bn()
    model.build((None, 5))
    _copy_torch_seq(model, twin)
    model.compile(SGD(learning_rate=0.1, momentum=0.9), "cross_entropy")
    history = model.fit(x, y, epochs=2, batch_size=6, shuffle=False, verbose=0, threads=2)
    twin.train()
    expected = _torch_epochs(
        torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9), twin, [(x[:6], y[:6]), (x[6:], y[6:])], 2
    )
    twin.eval()
    np.testing.assert_allclose(history.history["loss"], expected, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x), twin(_t(x)).numpy(), rtol=1e-12, atol=1e-12)

    # BatchNorm pinned to inference in the graph: running stats kept, scale and shift trained
    torch.manual_seed(43)
    tl, tb, tl2 = nn.Linear(5, 8).double(), nn.BatchNorm1d(8).double(), nn.Linear(8, 2).double()
    with torch.no_grad():
        tb.running_mean.uniform_(-1, 1)
        tb.running_var.uniform_(0.5, 2)
    inp = Input((5,))
    l1, bn, l2 = Linear(5, 8), BatchNorm(8), Linear(8, 2)
    pinned = Model(inp, l2(ReLU()(bn(l1(inp), training=False))))
    for ours, theirs in ((l1, tl), (bn, tb), (l2, tl2)):
        _load_layer(ours, theirs)
    pinned.compile(Adam(learning_rate=0.05), "cross_entropy")
    history = pinned.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0)
    tb.eval()
    batches = [(x[s], y[s]) for s in _batches(12, 4)]
    params = [*tl.parameters(), *tb.parameters(), *tl2.parameters()]
    expected = _torch_epochs(torch.optim.Adam(params, lr=0.05), lambda a: tl2(F.relu(tb(tl(a)))), batches, 2)
    np.testing.assert_allclose(history.history["loss"], expected, **TOL64)
    np.testing.assert_allclose(bn.running_mean.data, tb.running_mean.numpy(), **TOL64)
    np.testing.assert_allclose(bn.weight.data, tb.weight.detach().numpy(), **TOL64)

    # a frozen layer unfrozen at epoch 1 by a callback joins the optimizer (momentum from zero)
    torch.manual_seed(44)
    ta, tb2 = nn.Linear(5, 6).double(), nn.Linear(6, 2).double()
    model = Sequential([Linear(5, 6, activation="tanh"), Linear(6, 2)])
    model.build((None, 5))
    _load_layer(model.layers[0], ta)
    _load_layer(model.layers[1], tb2)
    model.layers[0].trainable = False
    thaw = LambdaCallback(
        on_epoch_begin=lambda epoch, logs=None: epoch == 1 and setattr(model.layers[0], "trainable", True)
    )
    model.compile(SGD(learning_rate=0.1, momentum=0.9, weight_decay=0.01), "cross_entropy")
    history = model.fit(x, y, epochs=3, batch_size=4, shuffle=False, verbose=0, callbacks=[thaw])
    ta.requires_grad_(False)
    opt = torch.optim.SGD([*ta.parameters(), *tb2.parameters()], lr=0.1, momentum=0.9, weight_decay=0.01)
    expected = _torch_epochs(
        opt,
        lambda a: tb2(torch.tanh(ta(a))),
        batches,
        3,
        before_epoch=lambda e: e == 1 and ta.requires_grad_(True),
    )
    np.testing.assert_allclose(history.history["loss"], expected, **TOL64)
    np.testing.assert_allclose(model.layers[0].weight.data, ta.weight.detach().numpy(), **TOL64)


# --------------------------------------------------------------------------------------------
# 20. Two heads with a dict of losses, loss_weights, sample_weight for one head, per-head metrics
# --------------------------------------------------------------------------------------------


def test_two_heads_dict_losses_sample_weight_one_head(f64):
    gen = np.random.default_rng(45)
    x = gen.standard_normal((12, 5))
    yc, yr, w = gen.integers(0, 3, 12), gen.standard_normal((12, 1)), gen.uniform(0, 2, 12)
    torch.manual_seed(46)
    ta, tc, tr = nn.Linear(5, 4).double(), nn.Linear(4, 3).double(), nn.Linear(4, 1).double()
    inp = Input((5,))
    trunk = Linear(5, 4, activation="relu", name="trunk")(inp)
    model = Model(inp, [Linear(4, 3, name="cls")(trunk), Linear(4, 1, name="reg")(trunk)])
    for name, tmod in (("trunk", ta), ("cls", tc), ("reg", tr)):
        _load_layer(model.get_layer(name), tmod)
    model.compile(
        SGD(learning_rate=0.1),
        loss={"cls": "cross_entropy", "reg": "mse"},
        loss_weights={"reg": 0.3},
        weighted_metrics={"cls": ["accuracy"], "reg": ["mae"]},
    )
    h = model.fit(
        x, {"cls": yc, "reg": yr}, sample_weight={"cls": w}, epochs=1, batch_size=5, shuffle=False, verbose=0
    )
    opt = torch.optim.SGD([*ta.parameters(), *tc.parameters(), *tr.parameters()], lr=0.1)
    rows, hits, errs = [], 0.0, 0.0
    for s in _batches(12, 5):
        opt.zero_grad()
        z = F.relu(ta(_t(x[s])))
        zc, zr = tc(z), tr(z)
        lc = (F.cross_entropy(zc, _t(yc[s]), reduction="none") * _t(w[s])).mean()
        lr_ = F.mse_loss(zr, _t(yr[s]))
        total = lc + 0.3 * lr_
        total.backward()
        opt.step()
        rows.append((total.item(), lc.item(), lr_.item(), s.stop - s.start))
        hits += float(((zc.argmax(1).numpy() == yc[s]) * w[s]).sum())
        errs += float(np.abs(zr.detach().numpy() - yr[s]).sum())
    rows = np.array(rows)
    sizes = rows[:, 3]
    assert h.history["loss"][0] == pytest.approx(_epoch_mean(rows[:, 0], sizes), rel=1e-10)
    assert h.history["cls_loss"][0] == pytest.approx(_epoch_mean(rows[:, 1], sizes), rel=1e-10)
    assert h.history["reg_loss"][0] == pytest.approx(_epoch_mean(rows[:, 2], sizes), rel=1e-10)
    assert h.history["cls_accuracy"][0] == pytest.approx(hits / w.sum(), rel=1e-10)
    assert h.history["reg_mae"][0] == pytest.approx(errs / 12, rel=1e-10)


# --------------------------------------------------------------------------------------------
# 21. Batches from an iterable of unequal sizes, a 2-layer bidirectional LSTM, evaluate on it
# --------------------------------------------------------------------------------------------


def test_iterable_batches_of_unequal_size_two_layer_bilstm(f64):
    torch.manual_seed(47)
    tl = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True).double()
    tf = nn.Linear(8, 2).double()
    model = Sequential(
        [LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, output="last"), Linear(8, 2)]
    )
    model.build((None, 5, 3))
    _load_layer(model.layers[0], tl)
    _load_layer(model.layers[1], tf)
    gen = np.random.default_rng(48)
    x, y = gen.standard_normal((11, 5, 3)), gen.integers(0, 2, 11)

    def forward(a):
        _, (h, _) = tl(a)
        return tf(torch.cat([h[-2], h[-1]], 1))

    bounds = [0, 5, 7, 11]
    batches = [(x[a:b], y[a:b]) for a, b in itertools.pairwise(bounds)]
    model.compile(Adam(learning_rate=0.05), "cross_entropy", metrics=["accuracy"])
    history = model.fit(batches, epochs=2, verbose=0)
    expected = _torch_epochs(
        torch.optim.Adam([*tl.parameters(), *tf.parameters()], lr=0.05), forward, batches, 2
    )
    np.testing.assert_allclose(history.history["loss"], expected, **TOL64)
    scores = model.evaluate(batches, verbose=0)
    with torch.no_grad():
        z = forward(_t(x))
    assert scores["loss"] == pytest.approx(F.cross_entropy(z, _t(y)).item(), rel=1e-10)
    assert scores["accuracy"] == pytest.approx(np.mean(z.argmax(1).numpy() == y))
