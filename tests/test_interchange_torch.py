"""PyTorch state dicts in and out (issue 17): safetensors and .npz files written by PyTorch load key for key.

Random PyTorch models (nothing trained), their state dicts saved with
``safetensors.torch`` and as ``.npz``, loaded into the framework twins;
predictions equal PyTorch's eval outputs (1e-5, float32). The reverse: a
file written by ``save_weights`` loads into the PyTorch twin with ``strict=True``.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import requires_safetensors, requires_torch

from framework import Input, Model, Sequential
from framework.errors import CheckpointError, ConfigError, ShapeError
from framework.layers import GRU, LSTM, BatchNorm, Conv2d, Flatten, Linear, MaxPool2d, ReLU

try:
    import torch

    nn = torch.nn
except ImportError:
    torch = nn = None
try:
    import safetensors.torch as st_torch
except ImportError:
    st_torch = None

#: the base class of the PyTorch twins (``object`` without torch, whose tests skip)
_Module = nn.Module if nn is not None else object


class _Recurrent(_Module):
    """``rnn`` then ``head`` on the last hidden state (the twin of a functional framework model)."""

    def __init__(self, kind: type, hidden: int) -> None:
        super().__init__()
        self.rnn = kind(3, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x):
        _, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state
        return self.head(h[-1])


def _mlp():
    twin = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    ours = Sequential([Linear(4, 8, activation="relu"), Linear(8, 8, activation="tanh"), Linear(8, 3)])
    return twin, ours, (5, 4)


def _cnn():
    twin = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 3),
    )
    ours = Sequential(
        [
            Conv2d(1, 4, 3, padding=1),
            BatchNorm(4),
            ReLU(),
            MaxPool2d(2),
            Conv2d(4, 6, 3, activation="relu"),
            Flatten(),
            Linear(6 * 2 * 2, 3),
        ],
        input_shape=(1, 8, 8),
    )
    with torch.no_grad():  # non-trivial running statistics
        twin[1].running_mean.uniform_(-0.5, 0.5)
        twin[1].running_var.uniform_(0.5, 2.0)
        twin[1].weight.uniform_(0.5, 1.5)
        twin[1].bias.uniform_(-0.5, 0.5)
    return twin, ours, (5, 1, 8, 8)


def _recurrent(kind: str):
    torch_kind, ours_kind = (nn.LSTM, LSTM) if kind == "lstm" else (nn.GRU, GRU)
    twin = _Recurrent(torch_kind, 5)
    x = Input((6, 3))
    h = ours_kind(3, 5, num_layers=2, batch_first=True, output="last", name="rnn")(x)
    ours = Model(x, Linear(5, 2, name="head")(h))
    return twin, ours, (4, 6, 3)


MODELS = {"mlp": _mlp, "cnn": _cnn, "lstm": lambda: _recurrent("lstm"), "gru": lambda: _recurrent("gru")}


@pytest.fixture(params=sorted(MODELS))
def pair(request):
    torch.manual_seed(0)
    twin, ours, shape = MODELS[request.param]()
    twin.eval()
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    return twin, ours, x


def _torch_out(twin, x):
    with torch.no_grad():
        return twin(torch.from_numpy(x)).numpy()


@requires_torch
@pytest.mark.parametrize("suffix", [pytest.param(".safetensors", marks=requires_safetensors), ".npz"])
def test_pytorch_file_loads_and_predicts_the_same(pair, suffix, tmp_path):
    twin, ours, x = pair
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        st_torch.save_file(twin.state_dict(), str(path))
    else:
        np.savez(path, **{k: v.numpy() for k, v in twin.state_dict().items()})
    result = ours.load_weights(path)
    assert result == ([], [], [])
    np.testing.assert_allclose(ours.predict(x), _torch_out(twin, x), rtol=1e-5, atol=1e-5)


@requires_torch
def test_state_dict_of_tensors_loads_directly(pair):
    twin, ours, x = pair
    ours.load_state_dict(twin.state_dict())
    np.testing.assert_allclose(ours.predict(x), _torch_out(twin, x), rtol=1e-5, atol=1e-5)


@requires_torch
@requires_safetensors
def test_our_file_loads_into_the_pytorch_twin_strictly(pair, tmp_path):
    twin, ours, x = pair
    assert set(ours.state_dict(format="torch")) == set(twin.state_dict())
    ours.save_weights(tmp_path / "ours.safetensors")
    twin.load_state_dict(st_torch.load_file(str(tmp_path / "ours.safetensors")), strict=True)
    np.testing.assert_allclose(_torch_out(twin, x), ours.predict(x), rtol=1e-5, atol=1e-5)


@requires_torch
def test_native_names_round_trip(tmp_path):
    _, ours, _ = _mlp()
    ours.save_weights(tmp_path / "n.npz", names="native")
    twin = _mlp()[1]
    assert sorted(np.load(tmp_path / "n.npz").files) == sorted(ours.state_dict())
    twin.load_weights(tmp_path / "n.npz")
    np.testing.assert_array_equal(twin.predict(np.ones((2, 4))), ours.predict(np.ones((2, 4))))


@requires_torch
def test_missing_unexpected_and_misshapen_keys_are_listed():
    twin, ours, _ = _mlp()
    state = {k: v.numpy() for k, v in twin.state_dict().items()}
    del state["4.bias"]
    state["9.weight"] = np.zeros(3)
    with pytest.raises(ConfigError, match=r"missing keys \[4\.bias\].*unexpected keys \[9\.weight\]"):
        ours.load_state_dict(state)
    result = ours.load_state_dict(state, strict=False)
    assert result.missing_keys == ["4.bias"] and result.unexpected_keys == ["9.weight"]
    state = {k: v.numpy() for k, v in twin.state_dict().items()}
    state["0.weight"] = np.zeros((8, 5), np.float32)
    before = ours.state_dict()["linear.bias"].copy()
    with pytest.raises(ShapeError, match=r"0\.weight: expected \(8, 4\), got \(8, 5\)"):
        ours.load_state_dict(state)
    np.testing.assert_array_equal(ours.state_dict()["linear.bias"], before)  # nothing loaded
    assert ours.load_state_dict(state, strict=False).mismatched_keys == [
        "0.weight: expected (8, 4), got (8, 5)"
    ]


@requires_torch
@requires_safetensors
def test_bad_files_raise_checkpoint_errors(tmp_path):
    _, ours, _ = _mlp()
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        ours.load_weights(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match=r"no \.npz file"):
        ours.load_weights(tmp_path / "missing.npz")
    with pytest.raises(ConfigError, match="names must be one of"):
        ours.save_weights(tmp_path / "x.npz", names="keras")
