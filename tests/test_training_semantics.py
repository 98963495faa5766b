"""Issue 14 (training-loop items) and issue 20 point 5 (fit's inputs): what fit/evaluate/predict promise.

Item 5 (full-batch layers), sample_weight, dict data, the *_on_batch steps,
callbacks accepted alone, verbose="auto", the on_test_* / on_predict_* hooks,
and NaN/Inf/dtype checks with a model left consistent after a failure.
"""

from __future__ import annotations

import csv
from typing import Any

import numpy as np
import pytest

import framework
from framework import Input, Model, Sequential
from framework.base.layer import Layer
from framework.errors import ConfigError, DataError
from framework.layers import Linear
from framework.training.callbacks import Callback, CSVLogger, LambdaCallback


class FixedMix(Layer):
    """A graph-like layer: mixes the samples with a fixed (N, N) matrix, so it needs them all, in order."""

    needs_full_batch = True

    def __init__(self, mix: np.ndarray) -> None:
        super().__init__()
        self.mix = mix
        self.seen: list[np.ndarray] = []

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.seen.append(np.array(x, copy=True))
        if len(x) != len(self.mix):  # a batch that is not the whole graph: wrong, but shown by `seen`
            return x
        return (self.mix @ x).astype(x.dtype)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if len(grad_out) != len(self.mix):
            return grad_out
        return (self.mix.T @ grad_out).astype(grad_out.dtype)


def _graph_data(n: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    mix = (np.eye(n) + np.roll(np.eye(n), 1, axis=1)).astype(np.float32) / 2
    y = (x.sum(axis=1) > 0).astype(np.int64)
    return x, y, mix


def _gcn_like(mix: np.ndarray) -> tuple[Sequential, FixedMix]:
    framework.set_seed(0)
    layer = FixedMix(mix)
    model = Sequential([Linear(3, 4), layer, Linear(4, 2)])
    model.compile("sgd", "cross_entropy", weighted_metrics=["accuracy"])
    layer.seen.clear()
    return model, layer


def test_item5_gcn_full_batch_fit_uses_one_unshuffled_step_per_epoch():
    x, y, mix = _graph_data()
    model, layer = _gcn_like(mix)
    model.fit(x, y, epochs=3, verbose=0)
    assert len(layer.seen) == 3  # one full batch per epoch
    for seen in layer.seen:
        assert seen.shape[0] == len(x)
    # evaluate and predict run the graph whole too
    layer.seen.clear()
    model.evaluate(x, y)
    model.predict(x)
    assert [s.shape[0] for s in layer.seen] == [len(x), len(x)]


def test_item5_gcn_full_batch_rows_are_never_permuted():
    x, y, mix = _graph_data()
    framework.set_seed(0)
    layer = FixedMix(mix)
    model = Sequential([layer, Linear(3, 2)])  # the mixing layer sees x itself
    model.compile("sgd", "cross_entropy")
    layer.seen.clear()
    model.fit(x, y, epochs=2, verbose=0)
    steps = [seen for seen in layer.seen if len(seen) > 1]  # (the build probe is one zero row)
    assert len(steps) == 2 and all(np.array_equal(seen, x) for seen in steps)


def test_item5_gcn_full_batch_refuses_shuffle_and_small_batches():
    x, y, mix = _graph_data()
    model, _ = _gcn_like(mix)
    with pytest.raises(
        ConfigError, match=r"shuffle=True reorders the samples, but FixedMix.* needs the whole batch"
    ):
        model.fit(x, y, shuffle=True, verbose=0)
    with pytest.raises(ConfigError, match="batch_size=8 is smaller than the 40 samples"):
        model.fit(x, y, batch_size=8, verbose=0)
    with pytest.raises(ConfigError, match="validation_split"):
        model.fit(x, y, validation_split=0.2, verbose=0)
    model.fit(x, y, batch_size=40, shuffle=False, verbose=0)  # explicit full batch is fine


def test_item5_gcn_node_masks_through_sample_weight():
    x, y, mix = _graph_data()
    train_mask = np.zeros(len(x))
    train_mask[:20] = 1.0
    val_mask = 1.0 - train_mask
    model, _ = _gcn_like(mix)
    history = model.fit(x, y, sample_weight=train_mask, validation_data=(x, y, val_mask), epochs=2, verbose=0)
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    # As in Keras the weighted loss is sum(w * l) / N: the training nodes' mean times 20 / 40.
    out = model.predict(x)
    loss_fn = framework.losses.get("cross_entropy")
    masked = model.evaluate(x, y, sample_weight=train_mask)["loss"]
    assert masked == pytest.approx(float(loss_fn.forward(out[:20], y[:20])) * 20 / 40, rel=1e-5)
    accuracy = float((out.argmax(axis=1)[20:] == y[20:]).mean())
    assert model.evaluate(x, y, sample_weight=val_mask)["accuracy"] == pytest.approx(accuracy)


def test_ordinary_models_keep_batch_32_and_shuffling():
    x, y, _ = _graph_data(100)
    model = Sequential([Linear(3, 2)])
    model.compile("sgd", "cross_entropy")
    seen: list[int] = []
    model.fit(
        x,
        y,
        epochs=1,
        verbose=0,
        callbacks=LambdaCallback(on_train_batch_begin=lambda b, logs: seen.append(b)),
    )
    assert seen == [0, 1, 2, 3]  # ceil(100 / 32); a single callback needs no list


# -- sample_weight -----------------------------------------------------------


def _regression(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    return x, (x @ np.array([[1.0], [-1.0], [0.5]], dtype=np.float32))


def test_sample_weight_zero_equals_dropping_the_samples():
    x, y = _regression()
    w = np.full(len(x), 2.0)  # sum(w * l) / N over 64 samples = the mean over the first 32
    w[32:] = 0.0
    a = Sequential([Linear(3, 1)])
    a.compile("sgd", "mse")
    b = Sequential([Linear(3, 1)])
    b.compile("sgd", "mse")
    b.load_state_dict(a.state_dict())
    a.fit(x, y, sample_weight=w, batch_size=64, epochs=3, verbose=0)
    b.fit(x[:32], y[:32], batch_size=64, epochs=3, verbose=0)
    for key, value in a.state_dict().items():
        np.testing.assert_allclose(value, b.state_dict()[key], rtol=1e-5, atol=1e-6)


def test_sample_weight_multiplies_class_weight_and_weights_metrics():
    x, y = _regression()
    labels = (y[:, 0] > 0).astype(np.int64)
    model = Sequential([Linear(3, 2)])
    model.compile("sgd", "cross_entropy", weighted_metrics=["accuracy"])
    w = np.linspace(0.5, 2.0, len(x))
    out = model.predict(x)
    loss_fn = framework.losses.get("cross_entropy")
    combined = w * np.where(labels == 1, 3.0, 1.0)
    got = model.test_on_batch(x, labels, sample_weight=combined)
    assert got == pytest.approx(float(loss_fn.forward(out, labels, combined)), rel=1e-5)
    correct = (out.argmax(axis=1) == labels).astype(float)
    scores = model.evaluate(x, labels, sample_weight=w)
    assert scores["accuracy"] == pytest.approx(float((correct * w).sum() / w.sum()))
    with pytest.raises(DataError, match=r"sample_weight: expected one weight per sample, shape \(64,\)"):
        model.fit(x, labels, sample_weight=w[:10], verbose=0)


def test_sample_weight_per_output_list_and_dict():
    x, y = _regression()
    inp = Input((3,), name="features")
    a = Linear(3, 1, name="first")(inp)
    b = Linear(3, 1, name="second")(inp)
    model = Model(inp, [a, b])
    model.compile("sgd", "mse")
    w = np.zeros(len(x))
    w[:10] = 1.0
    base = model.evaluate(x, [y, y])
    weighted = model.evaluate(x, {"first": y, "second": y}, sample_weight={"second": w})
    assert weighted["first_loss"] == pytest.approx(base["first_loss"])
    out = model.predict(x)
    assert weighted["second_loss"] == pytest.approx(
        float(np.mean((out[1][:10] - y[:10]) ** 2)) * 10 / 64, rel=1e-5
    )
    as_list = model.evaluate(x, [y, y], sample_weight=[None, w])
    assert as_list["second_loss"] == pytest.approx(weighted["second_loss"])
    with pytest.raises(DataError, match="unknown output names"):
        model.evaluate(x, [y, y], sample_weight={"third": w})


# -- dict data -----------------------------------------------------------------


def _two_in_two_out() -> Model:
    framework.set_seed(0)
    image = Input((3,), name="image")
    meta = Input((2,), name="meta")
    merged = Linear(3, 4, name="trunk")(image)
    label = Linear(4, 2, name="label")(merged)
    box = Linear(2, 1, name="box")(meta)
    model = Model([image, meta], [label, box])
    model.compile("sgd", ["cross_entropy", "mse"])
    return model


def test_dict_inputs_and_targets_by_name():
    model = _two_in_two_out()
    rng = np.random.default_rng(0)
    xi = rng.standard_normal((16, 3)).astype(np.float32)
    xm = rng.standard_normal((16, 2)).astype(np.float32)
    y1 = rng.integers(0, 2, 16)
    y2 = rng.standard_normal((16, 1)).astype(np.float32)
    history = model.fit({"meta": xm, "image": xi}, {"box": y2, "label": y1}, epochs=1, verbose=0)
    assert {"loss", "label_loss", "box_loss"} <= set(history.history)
    by_name = model.evaluate({"image": xi, "meta": xm}, {"label": y1, "box": y2})
    assert by_name == model.evaluate([xi, xm], [y1, y2])
    out = model.predict({"image": xi, "meta": xm})
    np.testing.assert_array_equal(out[0], model.predict([xi, xm])[0])
    with pytest.raises(
        DataError, match=r"Input names \['image', 'meta'\].*unknown: \['img'\].*missing: \['image'\]"
    ):
        model.fit({"img": xi, "meta": xm}, [y1, y2], verbose=0)
    with pytest.raises(DataError, match=r"output names \['label', 'box'\].*missing: \['box'\]"):
        model.evaluate([xi, xm], {"label": y1})


def test_dict_input_to_a_single_input_model():
    inp = Input((3,), name="features")
    model = Model(inp, Linear(3, 1)(inp))
    model.compile("sgd", "mse")
    x, y = _regression(8)
    assert model.evaluate({"features": x}, y) == model.evaluate(x, y)
    with pytest.raises(DataError, match=r"Input names \['features'\]; unknown: \['x'\]"):
        model.predict({"x": x})
    seq = Sequential([Linear(3, 1)])
    seq.compile("sgd", "mse")
    with pytest.raises(DataError, match=r"got a dict with keys.*no named Inputs"):
        seq.fit({"features": x}, y, verbose=0)


# -- *_on_batch ----------------------------------------------------------------


def test_train_test_predict_on_batch():
    x, y = _regression(16)
    model = Sequential([Linear(3, 1)])
    model.compile("sgd", "mse", metrics=["mae"])
    before = model.test_on_batch(x, y)
    assert before == pytest.approx(model.evaluate(x, y)["loss"])
    logs = model.test_on_batch(x, y, return_dict=True)
    assert set(logs) == {"loss", "mae"}
    loss = model.train_on_batch(x, y, sample_weight=np.ones(16))
    assert loss == pytest.approx(before)
    assert model.test_on_batch(x, y) < before
    np.testing.assert_array_equal(model.predict_on_batch(x), model.predict(x))


# -- callbacks -----------------------------------------------------------------


class HookRecorder(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def on_test_begin(self, logs: Any = None) -> None:
        self.calls.append("test_begin")

    def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
        self.calls.append(f"test_batch {batch}")

    def on_test_end(self, logs: Any = None) -> None:
        self.calls.append(f"test_end {sorted(logs)}")

    def on_predict_begin(self, logs: Any = None) -> None:
        self.calls.append("predict_begin")

    def on_predict_batch_end(self, batch: int, logs: Any = None) -> None:
        self.calls.append(f"predict_batch {batch} {logs['outputs'].shape}")

    def on_predict_end(self, logs: Any = None) -> None:
        self.calls.append("predict_end")

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.calls.append(f"epoch_end {epoch}")


def test_on_test_and_on_predict_hooks_fire():
    x, y = _regression(40)
    model = Sequential([Linear(3, 1)])
    model.compile("sgd", "mse")
    rec = HookRecorder()
    model.evaluate(x, y, batch_size=32, callbacks=rec)
    assert rec.calls == ["test_begin", "test_batch 0", "test_batch 1", "test_end ['loss']"]
    rec.calls.clear()
    model.predict(x, batch_size=32, callbacks=[rec])
    assert rec.calls == ["predict_begin", "predict_batch 0 (32, 1)", "predict_batch 1 (8, 1)", "predict_end"]
    rec.calls.clear()
    model.fit(x, y, epochs=1, validation_data=(x, y), batch_size=40, callbacks=rec, verbose=0)
    assert rec.calls == ["test_begin", "test_batch 0", "test_end ['loss']", "epoch_end 0"]


def test_verbose_auto_writes_one_line_per_epoch_to_a_log(capsys):
    x, y = _regression()
    model = Sequential([Linear(3, 1)])
    model.compile("sgd", "mse")
    model.fit(x, y, epochs=3)  # the default verbose="auto"; captured output is not a terminal
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[2].startswith("Epoch 3/3") and "loss" in lines[2]
    model.fit(x, y, epochs=2, verbose=1)  # an explicit bar, in a log, is one line per epoch too
    out = capsys.readouterr().out
    assert "\r" not in out and len(out.strip().splitlines()) == 2 and "2/2" in out
    with pytest.raises(ConfigError, match="verbose must be 'auto', 0, 1 or 2"):
        model.fit(x, y, verbose=3)


def test_csv_logger_append_keeps_one_header_and_its_columns(tmp_path):
    x, y = _regression()
    model = Sequential([Linear(3, 1)])
    model.compile("sgd", "mse")
    path = tmp_path / "log.csv"
    model.fit(x, y, epochs=2, validation_data=(x, y), callbacks=CSVLogger(path), verbose=0)
    model.fit(x, y, epochs=1, callbacks=[CSVLogger(path, append=True)], verbose=0)
    text = path.read_text()
    assert text.count("epoch,") == 1
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == 3 and rows[2]["val_loss"] == "NA" and float(rows[2]["loss"]) > 0


# -- issue 20 point 5: bad inputs and failures mid-fit ---------------------------


def test_issue20_nan_and_inf_in_x_and_y_are_named_with_their_index():
    x, y = _regression()
    model = Sequential([Linear(3, 1)])
    model.compile("sgd", "mse")
    bad_x = x.copy()
    bad_x[5, 2] = np.nan
    with pytest.raises(DataError, match=r"^x contains nan at index \(5, 2\)"):
        model.fit(bad_x, y, verbose=0)
    bad_y = y.copy()
    bad_y[7, 0] = np.inf
    with pytest.raises(DataError, match=r"y contains inf at index \(7, 0\)"):
        model.evaluate(x, bad_y)
    with pytest.raises(DataError, match=r"x of batch 1 of the iterable contains nan at index \(5, 2\)"):
        model.fit([(x[:8], y[:8]), (bad_x[:8], y[:8])], verbose=0)
    with np.errstate(all="ignore"):
        history = model.fit(x, bad_y, epochs=1, verbose=0, check_finite=False)
    assert not np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    ("x", "kind"),
    [
        (np.array([["a", "b", "c"]] * 4), "string"),
        (np.array([[1, 2, 3]] * 4, dtype=object), "object"),
        (np.ones((4, 3), dtype=np.complex64), "complex"),
    ],
)
def test_issue20_x_of_a_non_numeric_dtype_is_named(x: np.ndarray, kind: str):
    model = Sequential([Linear(3, 1)])
    model.compile("sgd", "mse")
    with pytest.raises(DataError, match=rf"x: arrays of dtype .* \({kind}\) cannot be fed"):
        model.fit(x, np.zeros((4, 1), dtype=np.float32), verbose=0)


def test_issue20_a_callback_raising_mid_epoch_leaves_the_model_consistent():
    x, y = _regression()
    model = Sequential([Linear(3, 8, activation="tanh"), Linear(8, 1)])
    model.compile("adam", "mse")

    def boom(batch: int, logs: Any) -> None:
        if batch == 1:
            raise RuntimeError("user callback failed")

    with pytest.raises(RuntimeError, match="user callback failed"):
        model.fit(x, y, epochs=3, batch_size=16, callbacks=LambdaCallback(on_train_batch_end=boom), verbose=0)
    assert not model.training
    assert all(np.all(np.isfinite(v)) for v in model.state_dict().values())
    before = model.evaluate(x, y)["loss"]
    history = model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert history.epoch == [0, 1, 2, 3, 4] and model.evaluate(x, y)["loss"] < before


def test_issue20_second_ctrl_c_inside_the_optimizer_step_waits_for_the_step():
    """The second SIGINT raises at once, except inside optimizer.step (no half-updated parameters)."""
    from framework.training.trainer import Interrupt

    model = Sequential([Linear(3, 1)])
    model.compile("sgd", "mse")
    interrupt = Interrupt(model.optimizer)
    interrupt._handle(2, None)
    assert interrupt.flag
    frames: list[Any] = []

    class Spy:
        def step(self) -> None:
            import sys

            frames.append(sys._getframe())

    spy = Spy()
    spy.step()
    interrupt.optimizer = spy
    interrupt._handle(2, frames[0])  # inside step: deferred, no raise
    with pytest.raises(KeyboardInterrupt):
        interrupt._handle(2, None)
