"""A decoder-only character language model on the Debian ``fortunes`` text, against PyTorch.

The model: token embedding (tied with the output projection), sinusoidal
positions, ``--layers`` pre-norm Transformer blocks with causal
self-attention (``TransformerEncoder`` called with ``is_causal=True``), a
final LayerNorm, logits ``h E^T``. A PyTorch model of the same architecture
starts from the same weights (its state dict loads into ours key for key) and
trains on the same batches for the same number of steps; the script reports
validation loss and bits per character of both against a unigram baseline,
saves a checkpoint (``.npz`` state dict + JSON config), and samples text
from a prompt with temperature and top-k.

Run (needs ``apt-get install -y fortunes``; torch is optional)::

    python examples/char_transformer.py --steps 600
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

import framework
from framework.base.context import Context
from framework.base.layer import Layer
from framework.datasets import load_fortunes
from framework.layers import (
    Embedding,
    LayerNorm,
    PositionalEncoding,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from framework.losses import CrossEntropy
from framework.optimizers import Adam
from framework.training.replicas import Replicas


class CharTransformer(Layer):
    """Token embedding -> positions -> causal Transformer blocks -> tied output projection.

    Shape:
        - Input: ``(N, L)`` integer characters; Output: ``(N, L, V)`` logits.

    Gradient:
        The head ``Z = H E^T`` gives ``dE += G^T H`` and ``dH = G E``; the
        embedding lookup adds its rows into the same ``E`` (a tied Parameter
        receives the sum of its two uses).
    """

    accepts_integer_input = True

    def __init__(self, vocab: int, d_model: int, nhead: int, layers: int, max_len: int) -> None:
        super().__init__()
        self.config = {
            "vocab": vocab,
            "d_model": d_model,
            "nhead": nhead,
            "layers": layers,
            "max_len": max_len,
        }
        self.tok = Embedding(vocab, d_model, weight_init="normal")
        self.pos = PositionalEncoding(d_model, max_len, dropout=0.0)
        block = TransformerEncoderLayer(
            d_model, nhead, 4 * d_model, dropout=0.0, activation="gelu", norm_first=True
        )
        self.blocks = TransformerEncoder(block, layers, norm=LayerNorm(d_model))

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.input_spec = None  # any length up to max_len

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        h = self.tok.forward(ctx.child("tok"), x)
        h = self.pos.forward(ctx.child("pos"), h)
        h = self.blocks.forward(ctx.child("blocks"), h, is_causal=True)
        ctx.h = h
        return h @ self.tok.weight.data.T

    def backward(self, ctx: Context, grad_out: np.ndarray) -> None:
        h, w = ctx.h, self.tok.weight
        v = w.shape[0]
        w.add_grad_product(grad_out.reshape(-1, v).T, h.reshape(-1, h.shape[-1]))
        g = self.blocks.backward(ctx.child("blocks"), grad_out @ w.data)
        g = self.pos.backward(ctx.child("pos"), g)
        self.tok.backward(ctx.child("tok"), g)

    def get_config(self) -> dict[str, Any]:
        return dict(self.config)


def torch_model(vocab: int, d_model: int, nhead: int, layers: int, max_len: int) -> Any:
    """The same architecture in PyTorch, with the same parameter names."""
    import torch
    from torch import nn

    class TorchChar(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok = nn.Embedding(vocab, d_model)
            block = nn.TransformerEncoderLayer(
                d_model, nhead, 4 * d_model, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            self.blocks = nn.TransformerEncoder(
                block, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
            )
            pe = PositionalEncoding(d_model, max_len)._pe.astype(np.float32)
            self.register_buffer("pe", torch.from_numpy(pe), persistent=False)

        def forward(self, x: Any) -> Any:
            length = x.shape[1]
            mask = nn.Transformer.generate_square_subsequent_mask(length)
            h = self.tok(x) + self.pe[:length]
            h = self.blocks(h, mask=mask, is_causal=True)
            return h @ self.tok.weight.T

    return TorchChar()


def encode(texts: list[str]) -> tuple[np.ndarray, list[str]]:
    text = "\n\n".join(texts)
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    return np.fromiter((lookup[c] for c in text), dtype=np.int64, count=len(text)), chars


def batch_of(
    data: np.ndarray, rng: np.random.Generator, batch: int, length: int
) -> tuple[np.ndarray, np.ndarray]:
    starts = rng.integers(0, len(data) - length - 1, size=batch)
    idx = starts[:, None] + np.arange(length + 1)
    windows = data[idx]
    return windows[:, :-1], windows[:, 1:]


def evaluate(logits_fn: Any, data: np.ndarray, batch: int, length: int, batches: int) -> float:
    rng = np.random.default_rng(123)  # the same validation windows for every model
    total = 0.0
    for _ in range(batches):
        x, y = batch_of(data, rng, batch, length)
        z = logits_fn(x).reshape(-1, logits_fn.vocab)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        total += -float(logp[np.arange(len(z)), y.reshape(-1)].mean())
    return total / batches


def sample(
    model: CharTransformer,
    chars: list[str],
    prompt: str,
    n: int,
    temperature: float,
    top_k: int,
    rng: np.random.Generator,
    max_len: int,
) -> str:
    lookup = {c: i for i, c in enumerate(chars)}
    ids = [lookup.get(c, 0) for c in prompt]
    for _ in range(n):
        x = np.array([ids[-max_len:]])
        z = model.forward(Context(False, record=False), x)[0, -1] / temperature
        if top_k:
            z[z < np.sort(z)[-top_k]] = -np.inf
        p = np.exp(z - z.max())
        p /= p.sum()
        ids.append(int(rng.choice(len(p), p=p)))
    return "".join(chars[i] for i in ids)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=1, help="shards of each batch, one thread each (Replicas)"
    )
    parser.add_argument(
        "--out",
        "--output",
        type=Path,
        default=Path(__file__).resolve().parent / "output" / "char_transformer",
        help="folder for the weights and config (default: examples/output/char_transformer, as the others)",
    )
    parser.add_argument("--prompt", default="The ")
    parser.add_argument(
        "--val-batches", type=int, default=20, help="validation batches of 32 windows (fewer: a smoke test)"
    )
    parser.add_argument(
        "--sample-chars",
        type=int,
        default=200,
        help="characters sampled per temperature (fewer: a smoke test)",
    )
    args = parser.parse_args(argv)

    data, chars = encode(load_fortunes())
    vocab = len(chars)
    split = int(0.9 * len(data))
    train, val = data[:split], data[split:]
    counts = np.bincount(train, minlength=vocab) + 1.0
    unigram = -float((np.log(counts / counts.sum())[val]).mean())
    print(
        f"{len(data):,} characters, vocabulary {vocab}; unigram baseline {unigram:.3f} nats "
        f"({unigram / math.log(2):.3f} bits/char)"
    )

    framework.set_seed(0)
    model = CharTransformer(vocab, args.d_model, args.heads, args.layers, args.length)
    tmodel = None
    if not args.no_torch:
        import torch

        torch.manual_seed(0)
        tmodel = torch_model(vocab, args.d_model, args.heads, args.layers, args.length)
        model.load_state_dict({k: v.detach().numpy() for k, v in tmodel.state_dict().items()})
        topt = torch.optim.Adam(tmodel.parameters(), lr=args.lr)
    opt = Adam(model, learning_rate=args.lr)
    loss_fn = CrossEntropy()
    rng = np.random.default_rng(0)
    times = {"ours": 0.0, "torch": 0.0}
    # With --threads K, each batch runs as K shards on K threads (the model's own gradients
    # are the sum of theirs); with 1, Replicas is not needed and the model runs itself.
    shards = Replicas(model, args.threads) if args.threads > 1 else contextlib.nullcontext(model)
    with shards as runner:
        for step in range(1, args.steps + 1):
            x, y = batch_of(train, rng, args.batch, args.length)
            start = time.perf_counter()
            model.zero_grad()
            ctx = Context(True)
            z = runner.forward(ctx, x)
            loss = loss_fn.forward(z.reshape(-1, vocab), y.reshape(-1))
            runner.backward(ctx, loss_fn.backward().reshape(z.shape))
            opt.step()
            times["ours"] += time.perf_counter() - start
            if tmodel is not None:
                start = time.perf_counter()
                topt.zero_grad()
                tz = tmodel(torch.from_numpy(x))
                tloss = torch.nn.functional.cross_entropy(
                    tz.reshape(-1, vocab), torch.from_numpy(y).reshape(-1)
                )
                tloss.backward()
                topt.step()
                times["torch"] += time.perf_counter() - start
            if step % 100 == 0 or step == args.steps:
                extra = f", torch {tloss.item():.3f}" if tmodel is not None else ""
                print(f"step {step}: train loss {loss:.3f}{extra}")

    def ours(x: np.ndarray) -> np.ndarray:
        return model.forward(Context(False, record=False), x)

    ours.vocab = vocab  # type: ignore[attr-defined]
    result: dict[str, Any] = {"steps": args.steps, "unigram": unigram, "vocab": vocab}
    result["val_ours"] = evaluate(ours, val, 32, args.length, args.val_batches)
    print(
        f"validation: ours {result['val_ours']:.3f} nats = {result['val_ours'] / math.log(2):.3f} bits/char "
        f"({times['ours'] / args.steps * 1e3:.1f} ms/step)"
    )
    if tmodel is not None:

        def theirs(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return tmodel(torch.from_numpy(x)).numpy()

        theirs.vocab = vocab  # type: ignore[attr-defined]
        result["val_torch"] = evaluate(theirs, val, 32, args.length, args.val_batches)
        print(
            f"validation: torch {result['val_torch']:.3f} nats = {result['val_torch'] / math.log(2):.3f} "
            f"bits/char ({times['torch'] / args.steps * 1e3:.1f} ms/step)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "weights.npz", **model.state_dict())
    (args.out / "config.json").write_text(json.dumps({**model.get_config(), "chars": chars}))
    restored = CharTransformer(vocab, args.d_model, args.heads, args.layers, args.length)
    restored.load_state_dict(dict(np.load(args.out / "weights.npz")))
    srng = np.random.default_rng(1)
    result["samples"] = [
        sample(restored, chars, args.prompt, args.sample_chars, t, 10, srng, args.length) for t in (0.8, 1.0)
    ]
    for text, t in zip(result["samples"], (0.8, 1.0)):
        print(f"--- sample (temperature {t}, top-k 10) ---\n{text}")
    return result


if __name__ == "__main__":
    main()
