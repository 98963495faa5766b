"""float16 training: float32 master weights and slots, dynamic loss scaling (issue 14, item 8)."""

from __future__ import annotations

import numpy as np
import pytest

import framework
from framework import Parameter, Sequential
from framework.base.mixed_precision import LossScaler
from framework.base.optimizer import Optimizer
from framework.errors import ConfigError
from framework.layers import Linear
from framework.optimizers import SGD, Adam, AdamW, RMSProp


@pytest.fixture
def float16():
    """Build layers in float16; restore the previous default after."""
    old = framework.get_default_dtype()
    framework.set_default_dtype("float16")
    yield
    framework.set_default_dtype(old)


def _data(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 4))
    y = x @ np.array([[1.0], [-2.0], [0.5], [0.3]])
    return x.astype(dtype), y.astype(dtype)


def _train(dtype: str, optimizer: object, epochs: int) -> tuple[Sequential, list[float]]:
    old = framework.get_default_dtype()
    framework.set_default_dtype(dtype)
    try:
        framework.set_seed(0)
        model = Sequential([Linear(4, 8, activation="relu"), Linear(8, 1)])
        model.compile(optimizer=optimizer, loss="mse")
        x, y = _data(dtype)
        history = model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=False)
    finally:
        framework.set_default_dtype(old)
    return model, history.history["loss"]


def test_float16_adam_trains_like_float32():
    """The issue's reproduction: float16 + Adam gave an all-NaN history."""
    model, losses = _train("float16", "adam", 20)
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    _, reference = _train("float32", "adam", 20)
    assert losses[-1] == pytest.approx(reference[-1], rel=0.1)
    for p in model.parameters():
        assert p.data.dtype == np.float16
        assert np.isfinite(p.data).all()


def test_float16_sgd_momentum_trains_like_float32():
    model, losses = _train("float16", SGD(0.05, momentum=0.9), 5)
    _, reference = _train("float32", SGD(0.05, momentum=0.9), 5)
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] / 10
    assert losses[-1] == pytest.approx(reference[-1], rel=0.1)
    slots = model.optimizer.state_dict()["slots"]
    assert all(s["momentum_buffer"].dtype == np.float32 for s in slots)


@pytest.mark.parametrize("optimizer", [Adam(1e-3, amsgrad=True), AdamW(1e-3), RMSProp(1e-3, centered=True)])
def test_other_optimizers_stay_finite(optimizer):
    _, losses = _train("float16", optimizer, 3)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_master_and_slots_are_float32(float16):
    model = Sequential([Linear(4, 8, activation="relu"), Linear(8, 1)])
    model.compile(optimizer="adam", loss="mse")
    x, y = _data("float16")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    opt = model.optimizer
    assert isinstance(opt.loss_scaler, LossScaler)
    for p, slots in zip(opt.params, opt.state_dict()["slots"]):
        assert set(slots) == {"exp_avg", "exp_avg_sq", "master"}
        assert all(v.dtype == np.float32 for v in slots.values())
        # the parameter is its master rounded to float16
        np.testing.assert_array_equal(p.data, slots["master"].astype(np.float16))
        assert opt.slot_dtype(p) == np.float32


def test_float32_takes_the_plain_path(monkeypatch):
    """float32 parameters never reach the mixed-precision step, keep no master and no loss scale."""

    def refuse(self, param):
        raise AssertionError("float32 parameters took the mixed-precision path")

    monkeypatch.setattr(Optimizer, "master", refuse)
    model, _ = _train("float32", "adam", 2)
    assert not model.optimizer._mixed and model.optimizer.loss_scaler is None
    state = model.optimizer.state_dict()
    assert "loss_scale" not in state
    assert all("master" not in s and s["exp_avg"].dtype == np.float32 for s in state["slots"])


def test_plain_path_unchanged_for_a_fixed_seed():
    """float32 results are those of a plain hand-rolled Adam loop (PyTorch's rule) for the same gradients."""
    rng = np.random.default_rng(3)
    start = rng.standard_normal(5).astype(np.float32)
    p = Parameter(start.copy())
    opt = Adam([p], 1e-2)
    m = np.zeros(5, np.float32)
    v = np.zeros(5, np.float32)
    w = start.copy()
    for t in range(1, 6):
        g = rng.standard_normal(5).astype(np.float32)
        p.grad[...] = g
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - 1e-2 / (1 - 0.9**t) * m / (np.sqrt(v) / np.sqrt(1 - 0.999**t) + 1e-8)
    np.testing.assert_allclose(p.data, w, rtol=1e-5)
    assert p.data.dtype == np.float32 and opt.loss_scaler is None


def test_overflow_skips_the_step_and_halves_the_scale(float16):
    model = Sequential([Linear(4, 8, activation="relu"), Linear(8, 1)])
    model.compile(optimizer="adam", loss="mse")
    x, y = _data("float16")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    opt = model.optimizer
    before = {k: v.copy() for k, v in model.state_dict().items()}
    iterations, skipped = opt.iterations, opt.loss_scaler.skipped
    opt.loss_scaler.scale = 2.0**40  # every scaled gradient overflows float16
    model.train_on_batch(x[:32], y[:32])
    assert opt.iterations == iterations
    assert opt.loss_scaler.scale == 2.0**39
    assert opt.loss_scaler.skipped == skipped + 1
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    for p in opt.params:
        assert not p.grad.any()
    # the scale comes down by itself and training resumes, never producing NaN weights
    history = model.fit(x, y, epochs=6, batch_size=32, verbose=0)  # 48 steps: ~24 halvings, then steps
    assert opt.loss_scaler.scale <= 2.0**16
    assert opt.iterations > iterations
    assert all(np.isfinite(history.history["loss"]))
    assert all(np.isfinite(p.data).all() for p in model.parameters())


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_huge_inputs_never_give_nan_weights(float16):
    model = Sequential([Linear(4, 8, activation="relu"), Linear(8, 1)])
    model.compile(optimizer="adam", loss="mse")
    x, y = _data("float16")
    model.fit(x * np.float16(200), y, epochs=2, batch_size=32, verbose=0)
    assert model.optimizer.loss_scaler.skipped > 0
    assert all(np.isfinite(p.data).all() for p in model.parameters())


def test_scale_doubles_after_growth_interval():
    p = Parameter(np.zeros(3, np.float16))
    opt = SGD([p], 0.1)
    scaler = opt.loss_scaler
    assert scaler is not None and scaler.scale == 2.0**15
    scaler.growth_interval = 3
    for _ in range(3):
        p.grad[...] = np.float16(scaler.scale * 1e-3)
        scaler.pending = True
        opt.step()
    assert scaler.scale == 2.0**16 and scaler.good_steps == 0 and opt.iterations == 3
    np.testing.assert_allclose(p.data, -3 * 0.1 * 1e-3, rtol=1e-3)


def test_unscaled_in_float32_before_clipping():
    """A float16 gradient is divided by the scale in float32 (no underflow), then clipped."""
    p16 = Parameter(np.zeros(4, np.float16))
    p32 = Parameter(np.zeros(4, np.float32))
    opt = SGD([p16, p32], 1.0, clipnorm=0.5)
    scale = opt.loss_scaler.scale
    p16.grad[...] = np.float16(0.01)  # unscaled: 3e-7, a float16 subnormal that float16 would round off
    opt.loss_scaler.pending = True
    opt.step()
    np.testing.assert_allclose(opt.master(p16).data, -float(np.float16(0.01)) / scale, rtol=1e-6)
    np.testing.assert_array_equal(p32.data, 0.0)
    # clipnorm sees the unscaled gradients of both parameters
    p16.grad[...] = np.float16(scale / 32)  # unscaled: 1/32 per entry
    p32.grad[...] = np.float32(scale)  # unscaled: 1 per entry; the float32 gradient is unscaled in place
    opt.loss_scaler.pending = True
    opt.step()
    total = np.sqrt(4 * (1 / 32) ** 2 + 4 * 1.0)
    np.testing.assert_allclose(p32.data, -0.5 / total, rtol=1e-5)


def test_without_loss_scaling_the_master_path_still_works():
    """A hand-written loop (no scaled loss) on float16: Adam's eps no longer underflows to NaN."""
    p = Parameter(np.ones(3, np.float16))
    opt = Adam([p], 1e-3)
    for _ in range(5):
        p.grad[...] = np.float16(1e-4)
        opt.step()
    assert np.isfinite(p.data).all()
    np.testing.assert_allclose(opt.master(p).data, 1 - 5e-3, rtol=1e-4)
    assert opt.loss_scaler.scale == 2.0**15  # untouched: nothing was scaled


def test_weights_set_between_fits_are_kept(float16):
    model = Sequential([Linear(4, 8, activation="relu"), Linear(8, 1)])
    model.compile(optimizer=SGD(0.0), loss="mse")
    x, y = _data("float16")
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    weight = model.parameters()[0]
    weight.assign(np.full(weight.shape, 0.25))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)  # lr 0: the weights stay what was set
    np.testing.assert_array_equal(weight.data, np.full(weight.shape, 0.25, np.float16))


def test_save_and_load_mid_training_continues_exactly(float16, tmp_path):
    pytest.importorskip("h5py")
    from framework import load_model

    x, y = _data("float16")

    def make() -> Sequential:
        framework.set_seed(0)
        model = Sequential([Linear(4, 8, activation="relu"), Linear(8, 1)])
        model.compile(optimizer="adam", loss="mse")
        return model

    straight = make()
    straight.fit(x, y, epochs=4, batch_size=32, verbose=0, shuffle=False)
    first = make()
    first.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
    path = tmp_path / "half.h5"
    first.save(path)
    resumed = load_model(path)
    opt = resumed.optimizer
    assert opt.loss_scaler.state_dict() == first.optimizer.loss_scaler.state_dict()
    assert opt.iterations == first.optimizer.iterations
    for saved, original in zip(opt.state_dict()["slots"], first.optimizer.state_dict()["slots"]):
        assert set(saved) == {"exp_avg", "exp_avg_sq", "master"}
        for key, value in saved.items():
            assert value.dtype == np.float32
            np.testing.assert_array_equal(value, original[key])
    resumed.fit(x, y, epochs=4, initial_epoch=2, batch_size=32, verbose=0, shuffle=False)
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value)


def test_optimizer_state_dict_round_trip():
    p = Parameter(np.ones(3, np.float16))
    opt = Adam([p], 1e-3)
    p.grad[...] = np.float16(0.5)
    opt.step()
    state = opt.state_dict()
    other = Adam([Parameter(p.data.copy())], 1e-3)
    other.load_state_dict(state)
    assert other.state_dict()["loss_scale"] == state["loss_scale"]
    np.testing.assert_array_equal(other.master(other.params[0]).data, opt.master(p).data)
    with pytest.raises(ConfigError, match="scale"):
        other.load_state_dict({**state, "loss_scale": {"scale": -1.0, "good_steps": 0}})


def test_loss_scaler_arguments_checked():
    with pytest.raises(ConfigError, match="scale"):
        LossScaler(scale=0.0)
    with pytest.raises(ConfigError, match="growth_interval"):
        LossScaler(growth_interval=0)
