"""Hunting checkpoint contract violations not covered by test_checkpoint*.py.

ModelCheckpoint resume, optimizer slot presence, float16 masters, BatchNorm
buffers, tied weights, failed loads leaving the model unchanged, and
hand-edited files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import framework
from framework import CheckpointError, Input, Model, Sequential, load_model
from framework.layers import BatchNorm, Dropout, Embedding, Linear
from framework.training.callbacks import ModelCheckpoint

h5py = pytest.importorskip("h5py")


def _data(n: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    return x, x[:, :2].copy()


def _mlp(optimizer: str = "adam") -> Sequential:
    framework.set_seed(3)
    model = Sequential([Linear(4, 8, activation="relu"), Dropout(0.2), Linear(8, 2)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(u.dtype == v.dtype and np.array_equal(u, v) for u, v in zip(a, b))


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    x, y = _data()
    model = _mlp()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "full.h5"
    model.save(path)
    return path


# -- ModelCheckpoint -------------------------------------------------------


def test_model_checkpoint_file_holds_that_epochs_weights(tmp_path: Path) -> None:
    x, y = _data()
    model = _mlp()
    model.fit(
        x, y, epochs=3, batch_size=8, verbose=0, callbacks=[ModelCheckpoint(str(tmp_path / "ck-{epoch}.h5"))]
    )
    restored = load_model(tmp_path / "ck-3.h5")
    assert _same(model.get_weights(), restored.get_weights())
    assert restored.optimizer.iterations == model.optimizer.iterations


def test_model_checkpoint_records_the_completed_epoch(tmp_path: Path) -> None:
    x, y = _data()
    model = _mlp()
    model.fit(
        x, y, epochs=3, batch_size=8, verbose=0, callbacks=[ModelCheckpoint(str(tmp_path / "ck-{epoch}.h5"))]
    )
    restored = load_model(tmp_path / "ck-2.h5")
    assert restored.epoch == 2  # two epochs completed; 4 steps of 8 per epoch
    assert restored.optimizer.iterations == 8


def test_resume_from_model_checkpoint_equals_uninterrupted(tmp_path: Path) -> None:
    x, y = _data()
    straight = _mlp()
    straight.fit(x, y, epochs=3, batch_size=8, verbose=0)
    first = _mlp()
    first.fit(
        x, y, epochs=3, batch_size=8, verbose=0, callbacks=[ModelCheckpoint(str(tmp_path / "ck-{epoch}.h5"))]
    )
    resumed = load_model(tmp_path / "ck-2.h5")
    resumed.fit(x, y, epochs=3, initial_epoch=resumed.epoch, batch_size=8, verbose=0)
    assert _same(straight.get_weights(), resumed.get_weights())


# -- optimizer state -------------------------------------------------------


def test_include_optimizer_false_restarts_the_step_count_but_keeps_the_epoch(tmp_path: Path) -> None:
    x, y = _data()
    model = _mlp()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    model.save(tmp_path / "noopt.h5", include_optimizer=False)
    with h5py.File(tmp_path / "noopt.h5") as handle:
        assert "optimizer" not in handle and "compile" in handle
    restored = load_model(tmp_path / "noopt.h5")
    assert restored.epoch == 2
    assert restored.optimizer.iterations == 0  # documented: no optimizer state saved
    restored.fit(x, y, epochs=3, initial_epoch=restored.epoch, batch_size=8, verbose=0)
    assert restored.optimizer.iterations == 4 and restored.epoch == 3


def test_optimizer_slots_round_trip_exactly(saved: Path) -> None:
    restored = load_model(saved)
    with h5py.File(saved) as handle:
        assert restored.optimizer.iterations == handle["optimizer"].attrs["iterations"] == 8
        names = json.loads(handle["optimizer"].attrs["param_names"])
        for name, slot in zip(names, restored.optimizer.state):
            stored = handle["optimizer/slots/" + name.replace(".", "/")]
            assert sorted(slot) == sorted(stored)
            for key, value in slot.items():
                assert value.dtype == stored[key].dtype
                np.testing.assert_array_equal(value, stored[key][()])


def test_missing_optimizer_slot_is_refused(saved: Path) -> None:
    with h5py.File(saved, "a") as handle:
        del handle["optimizer/slots/linear/weight/exp_avg"]
    with pytest.raises(CheckpointError, match="exp_avg"):
        load_model(saved)


def test_missing_slot_group_of_one_parameter_is_refused(saved: Path) -> None:
    with h5py.File(saved, "a") as handle:
        del handle["optimizer/slots/linear/weight"]
    with pytest.raises(CheckpointError, match="linear"):
        load_model(saved)


def test_unknown_optimizer_slot_is_refused(saved: Path) -> None:
    with h5py.File(saved, "a") as handle:
        handle["optimizer/slots/linear/weight/bogus"] = np.zeros((8, 4), np.float32)
    with pytest.raises(CheckpointError, match="bogus"):
        load_model(saved)


def test_nan_optimizer_first_moment_strict_refuses_and_default_warns(saved: Path) -> None:
    with h5py.File(saved, "a") as handle:
        handle["optimizer/slots/linear_1/bias/exp_avg"][0] = np.nan
    framework.set_seed(42)
    rng_before = framework.runtime.random.get_rng().bit_generator.state
    with pytest.raises(CheckpointError, match="/optimizer/slots/linear_1/bias/exp_avg"):
        load_model(saved, strict=True)
    assert framework.runtime.random.get_rng().bit_generator.state == rng_before
    with pytest.warns(framework.saving.checkpoint.CheckpointWarning):
        load_model(saved)


def test_wrong_dtype_slot_names_the_dataset(saved: Path) -> None:
    with h5py.File(saved, "a") as handle:
        data = handle["optimizer/slots/linear/bias/exp_avg_sq"][()]
        del handle["optimizer/slots/linear/bias/exp_avg_sq"]
        handle["optimizer/slots/linear/bias/exp_avg_sq"] = data.astype(np.int32)
    with pytest.raises(CheckpointError, match="/optimizer/slots/linear/bias/exp_avg_sq"):
        load_model(saved)


# -- load_weights failing changes nothing -----------------------------------


def test_load_weights_second_layer_shape_mismatch_changes_nothing(tmp_path: Path) -> None:
    model = _mlp()
    model.build((None, 4))
    model.save_weights(tmp_path / "w.h5")
    framework.set_seed(9)
    other = Sequential([Linear(4, 8, activation="relu"), Dropout(0.2), Linear(8, 3)])
    other.build((None, 4))
    before = [w.copy() for w in other.get_weights()]
    with pytest.raises(CheckpointError, match="linear_1"):
        other.load_weights(tmp_path / "w.h5")
    assert _same(before, other.get_weights())


def test_load_weights_strict_nan_in_last_layer_changes_nothing(tmp_path: Path) -> None:
    model = _mlp()
    model.build((None, 4))
    model.save_weights(tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5", "a") as handle:
        handle["weights/linear_1/bias"][1] = np.inf
    framework.set_seed(9)
    other = _mlp()
    other.build((None, 4))
    before = [w.copy() for w in other.get_weights()]
    with pytest.raises(CheckpointError, match="/weights/linear_1/bias"):
        other.load_weights(tmp_path / "w.h5", strict=True)
    assert _same(before, other.get_weights())


def test_load_weights_keeps_the_models_dtype(tmp_path: Path) -> None:
    old = framework.get_default_dtype()
    framework.set_default_dtype("float64")
    try:
        model = Sequential([Linear(4, 3)])
        model.build((None, 4))
    finally:
        framework.set_default_dtype(old)
    model.save_weights(tmp_path / "w64.h5")
    other = Sequential([Linear(4, 3)])
    other.build((None, 4))
    other.load_weights(tmp_path / "w64.h5")
    assert other.get_weights()[0].dtype == np.float32  # documented: arrays keep the model's dtypes
    np.testing.assert_array_equal(other.get_weights()[0], model.get_weights()[0].astype(np.float32))


# -- buffers, ties, frozen layers ------------------------------------------


def test_batchnorm_running_stats_and_counter_round_trip(tmp_path: Path) -> None:
    x, y = _data()
    framework.set_seed(1)
    model = Sequential([Linear(4, 6), BatchNorm(6), Linear(6, 2)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    model.save(tmp_path / "bn.h5")
    restored = load_model(tmp_path / "bn.h5")
    a, b = model.state_dict(), restored.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert any("running_var" in k for k in a)


def test_tied_weights_stay_tied_and_train_as_one(tmp_path: Path) -> None:
    framework.set_seed(2)
    tokens = Input((4,), name="tokens")
    embed = Embedding(20, 6, name="embed")
    head = Linear(6, 20, bias=False, name="head")
    head.weight = embed.weight
    model = Model(tokens, head(embed(tokens)))
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).integers(0, 20, size=(16, 4))
    y = np.random.default_rng(1).standard_normal((16, 4, 20)).astype(np.float32)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "tied.h5")
    with h5py.File(tmp_path / "tied.h5") as handle:
        assert "weight" in handle["weights/embed"]
        assert "weight" not in handle["weights"].get("head", {})
    restored = load_model(tmp_path / "tied.h5")
    layers = dict(restored.named_children())
    assert layers["head"].weight is layers["embed"].weight
    restored.fit(x, y, epochs=2, initial_epoch=1, batch_size=8, verbose=0)
    assert layers["head"].weight is layers["embed"].weight


def test_frozen_layer_and_layer_names_round_trip(tmp_path: Path) -> None:
    model = _mlp()
    model.build((None, 4))
    model.layers[0].trainable = False
    model.save(tmp_path / "frozen.h5")
    restored = load_model(tmp_path / "frozen.h5")
    assert [n for n, _ in restored.named_children()] == [n for n, _ in model.named_children()]
    assert restored.layers[0].trainable is False
    assert all(not p.trainable for p in restored.layers[0].parameters())
    assert all(p.trainable for p in restored.layers[2].parameters())


# -- float16 ---------------------------------------------------------------


def _fp16_model() -> Sequential:
    old = framework.get_default_dtype()
    framework.set_default_dtype("float16")
    try:
        framework.set_seed(4)
        model = Sequential([Linear(4, 8, activation="tanh"), Linear(8, 2)])
    finally:
        framework.set_default_dtype(old)
    model.compile(optimizer="adam", loss="mse")
    return model


def test_float16_masters_saved_and_resume_is_bit_identical(tmp_path: Path) -> None:
    x, y = _data()
    x16, y16 = x.astype(np.float16), y.astype(np.float16)
    straight = _fp16_model()
    straight.fit(x16, y16, epochs=4, batch_size=8, verbose=0)
    first = _fp16_model()
    first.fit(x16, y16, epochs=2, batch_size=8, verbose=0)
    first.save(tmp_path / "fp16.h5")
    with h5py.File(tmp_path / "fp16.h5") as handle:
        assert handle["weights/linear/weight"].dtype == np.float16
        assert handle["optimizer/slots/linear/weight/master"].dtype == np.float32
        assert "loss_scale" in handle["optimizer"].attrs
    resumed = load_model(tmp_path / "fp16.h5")
    assert resumed.get_weights()[0].dtype == np.float16
    resumed.fit(x16, y16, epochs=4, initial_epoch=resumed.epoch, batch_size=8, verbose=0)
    assert _same(straight.get_weights(), resumed.get_weights())


# -- RNG and resume --------------------------------------------------------


@pytest.mark.parametrize("seed", [None, 7])
def test_sgd_momentum_resume_with_shuffle_and_dropout(seed, tmp_path: Path) -> None:
    x, y = _data(40, seed=5)
    straight = _mlp("sgd")
    straight.fit(x, y, epochs=4, batch_size=8, shuffle=True, seed=seed, verbose=0)
    first = _mlp("sgd")
    first.fit(x, y, epochs=1, batch_size=8, shuffle=True, seed=seed, verbose=0)
    first.save(tmp_path / "a.h5")
    mid = load_model(tmp_path / "a.h5")
    mid.fit(x, y, epochs=3, initial_epoch=mid.epoch, batch_size=8, shuffle=True, seed=seed, verbose=0)
    mid.save(tmp_path / "a.h5")  # resave over the file it came from
    framework.set_seed(1234)
    resumed = load_model(tmp_path / "a.h5")
    resumed.fit(x, y, epochs=4, initial_epoch=resumed.epoch, batch_size=8, shuffle=True, seed=seed, verbose=0)
    assert _same(straight.get_weights(), resumed.get_weights())


def test_corrupt_rng_state_fails_at_fit_before_any_step(saved: Path) -> None:
    with h5py.File(saved, "a") as handle:
        state = json.loads(handle["training"].attrs["state"])
        state["rng"] = {"bit_generator": "PCG64", "state": {"state": "x"}}
        handle["training"].attrs["state"] = json.dumps(state)
    framework.set_seed(5)
    rng_before = framework.runtime.random.get_rng().bit_generator.state
    restored = load_model(saved)
    weights = [w.copy() for w in restored.get_weights()]
    x, y = _data()
    with pytest.raises(CheckpointError, match="RNG"):
        restored.fit(x, y, epochs=3, initial_epoch=restored.epoch, verbose=0)
    assert _same(weights, restored.get_weights())
    assert restored.optimizer.iterations == 8
    assert framework.runtime.random.get_rng().bit_generator.state == rng_before


# -- hand-edited files -----------------------------------------------------


def test_unknown_layer_in_config_names_the_class(saved: Path) -> None:
    with h5py.File(saved, "a") as handle:
        config = handle["model"].attrs["config"].replace('"Linear"', '"NoSuchLayer"')
        handle["model"].attrs["config"] = config
    with pytest.raises(CheckpointError, match="NoSuchLayer") as info:
        load_model(saved)
    assert str(saved) in str(info.value)


def test_huge_shape_in_config_is_refused_before_allocating(saved: Path) -> None:
    with h5py.File(saved, "a") as handle:
        config = json.loads(handle["model"].attrs["config"])
        config["config"]["layers"][0]["config"]["output_size"] = 4_000_000_000
        handle["model"].attrs["config"] = json.dumps(config)
    # The rebuild allocates the config's shapes before any check (here a MemoryError turned into a
    # CheckpointError "corrupted or inconsistent"); only the type and the path are asserted.
    with pytest.raises(CheckpointError) as info:
        load_model(saved)
    assert str(saved) in str(info.value)


def test_weight_dataset_float64_where_model_is_float32_loads_float64(saved: Path) -> None:
    with h5py.File(saved, "a") as handle:
        data = handle["weights/linear/bias"][()]
        del handle["weights/linear/bias"]
        handle["weights/linear/bias"] = data.astype(np.float64)
    restored = load_model(saved)
    bias = dict(restored.named_parameters())["linear.bias"]
    assert bias.dtype == np.float64  # documented: "in its saved dtype"
    np.testing.assert_array_equal(bias.data, data.astype(np.float64))
