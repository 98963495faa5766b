"""``fit`` with a non-scalar metric (``confusion_matrix``): History keeps one array per epoch.

Every callback that prints, writes or compares the epoch logs takes such a
value: the progress output leaves it out, CSVLogger writes it as one JSON
field, TensorBoard skips it, and a callback told to monitor it refuses with
a ConfigError naming the callback, the key and the shape.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import framework
from framework import Sequential
from framework.errors import ConfigError
from framework.layers import Linear
from framework.training.callbacks import (
    CSVLogger,
    EarlyStopping,
    History,
    ModelCheckpoint,
    ProgbarLogger,
    ReduceLROnPlateau,
    TensorBoard,
)
from framework.training.callbacks import tensorboard as tensorboard_module

CLASSES = 3


def _data(seed: int, n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)), rng.integers(0, CLASSES, n)


def _model(lr: float = 0.1, metrics: Any = ("confusion_matrix", "accuracy")) -> Sequential:
    framework.set_seed(0)
    model = Sequential([Linear(4, 6, activation="tanh"), Linear(6, CLASSES)])
    model.compile(framework.optimizers.get("sgd", learning_rate=lr), "cross_entropy", metrics=list(metrics))
    return model


def _assert_matrices(values: list[Any], epochs: int) -> None:
    assert len(values) == epochs
    for value in values:
        assert isinstance(value, np.ndarray) and value.shape == (CLASSES, CLASSES)


@pytest.mark.parametrize("verbose", [0, 1, 2])
def test_fit_records_one_confusion_matrix_per_epoch(verbose: int, capsys: pytest.CaptureFixture[str]) -> None:
    x, y = _data(0)
    history = _model().fit(x, y, epochs=2, batch_size=16, verbose=verbose)
    matrices = history.history["confusion_matrix"]
    _assert_matrices(matrices, 2)
    for matrix in matrices:  # every sample counted once per epoch
        assert matrix.sum() == len(x)
        np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(y, minlength=CLASSES))
    assert matrices[0] is not matrices[1] and not np.shares_memory(matrices[0], matrices[1])
    for key in ("loss", "accuracy"):  # scalars stay Python floats
        assert all(type(v) is float for v in history.history[key])
    out = capsys.readouterr().out
    if verbose:
        lines = [line for line in out.splitlines() if line.strip()]
        assert [line.split(" - ")[0] for line in lines] == ["Epoch 1/2", "Epoch 2/2"]
        assert all("loss: " in line and "accuracy: " in line for line in lines)
        assert "confusion_matrix" not in out and "[" not in out
    else:
        assert out == ""


def test_history_copies_the_array_it_records() -> None:
    history = History()
    value = np.eye(2)
    history.on_epoch_end(0, {"loss": np.float32(0.5), "confusion_matrix": value})
    value[0, 0] = 7.0
    np.testing.assert_array_equal(history.history["confusion_matrix"][0], np.eye(2))
    assert type(history.history["loss"][0]) is float


def test_one_epoch_at_lr_0_records_what_evaluate_returns(float64) -> None:
    x, y = _data(1)
    x_val, y_val = _data(2, n=30)
    model = _model(lr=0.0)
    expected = model.evaluate(x, y, batch_size=16)
    expected_val = model.evaluate(x_val, y_val, batch_size=16)
    history = model.fit(x, y, epochs=1, batch_size=16, validation_data=(x_val, y_val), verbose=0).history
    assert sorted(history) == sorted([*expected, *("val_" + k for k in expected_val)])
    np.testing.assert_array_equal(history["confusion_matrix"][0], expected["confusion_matrix"])
    np.testing.assert_array_equal(history["val_confusion_matrix"][0], expected_val["confusion_matrix"])
    assert history["accuracy"][0] == expected["accuracy"]
    assert history["val_accuracy"][0] == expected_val["accuracy"]
    assert history["loss"][0] == pytest.approx(expected["loss"], rel=1e-12)
    assert history["val_loss"][0] == pytest.approx(expected_val["loss"], rel=1e-12)


def test_validation_split_records_val_confusion_matrix() -> None:
    x, y = _data(3, n=60)
    history = _model().fit(x, y, epochs=2, batch_size=16, validation_split=0.25, verbose=0).history
    _assert_matrices(history["val_confusion_matrix"], 2)
    assert all(m.sum() == 15 for m in history["val_confusion_matrix"])


@pytest.mark.parametrize(
    "make",
    [
        lambda path: EarlyStopping(monitor="confusion_matrix", patience=1),
        lambda path: ReduceLROnPlateau(monitor="val_confusion_matrix", patience=1),
        lambda path: ModelCheckpoint(path / "m.h5", monitor="confusion_matrix", save_best_only=True),
    ],
    ids=["EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint"],
)
def test_monitoring_a_non_scalar_metric_is_a_clear_error(make: Any, tmp_path: Path) -> None:
    x, y = _data(4)
    callback = make(tmp_path)
    with pytest.raises(ConfigError) as info:
        _model().fit(x, y, epochs=2, batch_size=16, validation_data=(x, y), callbacks=[callback], verbose=0)
    message = str(info.value)
    assert type(callback).__name__ in message
    assert repr(callback.monitor) in message
    assert f"({CLASSES}, {CLASSES})" in message
    assert "val_loss" in message  # the way out: a scalar key to monitor instead
    assert not list(tmp_path.iterdir())


def test_early_stopping_on_a_scalar_key_beside_an_array_metric() -> None:
    x, y = _data(5)
    stop = EarlyStopping(monitor="accuracy", patience=0)
    history = _model(lr=0.0).fit(x, y, epochs=5, batch_size=16, callbacks=[stop], verbose=0)
    assert len(history.epoch) == 2  # lr=0: accuracy never improves after the first epoch
    _assert_matrices(history.history["confusion_matrix"], 2)


def test_csv_logger_writes_the_matrix_as_one_json_field(tmp_path: Path) -> None:
    x, y = _data(6)
    path = tmp_path / "log.csv"
    history = _model().fit(x, y, epochs=2, batch_size=16, callbacks=[CSVLogger(path)], verbose=0).history
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    for row, matrix in zip(rows, history["confusion_matrix"]):
        np.testing.assert_array_equal(np.array(json.loads(row["confusion_matrix"])), matrix)
        assert float(row["accuracy"]) == pytest.approx(history["accuracy"][int(row["epoch"])])


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_progress_bar_leaves_the_matrix_out() -> None:
    x, y = _data(7)
    out = _TTY()
    bar = ProgbarLogger(verbose=1, file=out)
    assert bar.live
    history = _model().fit(x, y, epochs=1, batch_size=16, validation_data=(x, y), callbacks=[bar], verbose=0)
    _assert_matrices(history.history["val_confusion_matrix"], 1)
    text = out.getvalue()
    assert "loss: " in text and "val_accuracy: " in text
    assert "confusion_matrix" not in text


class _Writer:
    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        assert isinstance(value, float)
        self.scalars.append((tag, value, step))

    def add_histogram(self, *args: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_tensorboard_writes_the_scalars_and_skips_the_matrix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    writers: list[_Writer] = []

    def writer(log_dir: str) -> _Writer:
        writers.append(_Writer(log_dir))
        return writers[-1]

    monkeypatch.setattr(tensorboard_module, "_summary_writer", lambda: writer)
    x, y = _data(8)
    board = TensorBoard(tmp_path, update_freq="batch")
    _model().fit(x, y, epochs=1, batch_size=16, validation_data=(x, y), callbacks=[board], verbose=0)
    tags = {tag for w in writers for tag, _, _ in w.scalars}
    assert {"epoch_loss", "epoch_accuracy", "batch_loss", "batch_accuracy"} <= tags
    assert not any("confusion" in tag for tag in tags)


class _Axes:
    def __init__(self, drawn: dict[str, list[str]]) -> None:
        self.drawn = drawn
        self.labels: list[str] = []
        self.xaxis = self

    def plot(self, epochs: Any, values: Any, **kwargs: Any) -> None:
        assert np.asarray(values, dtype=float).shape == np.shape(epochs)
        self.labels.append(kwargs["label"])

    def set_title(self, name: str) -> None:
        self.drawn[name] = self.labels

    def __getattr__(self, name: str) -> Any:  # set_xlabel, grid, legend, set_major_locator
        return lambda *args, **kwargs: None


@pytest.fixture
def fake_matplotlib(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Just enough of matplotlib's object API for ``History.plot``: records each panel's curves."""
    import sys
    import types

    drawn: dict[str, list[str]] = {}

    class Figure:
        def __init__(self, **kwargs: Any) -> None:
            pass

        def subplots(self, rows: int, cols: int, squeeze: bool) -> list[list[_Axes]]:
            return [[_Axes(drawn) for _ in range(cols)]]

    figure, ticker = types.ModuleType("matplotlib.figure"), types.ModuleType("matplotlib.ticker")
    figure.Figure = Figure  # type: ignore[attr-defined]
    ticker.MaxNLocator = lambda **kwargs: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "matplotlib", types.ModuleType("matplotlib"))
    monkeypatch.setitem(sys.modules, "matplotlib.figure", figure)
    monkeypatch.setitem(sys.modules, "matplotlib.ticker", ticker)
    return drawn


def test_history_plot_leaves_the_matrix_out(fake_matplotlib: dict[str, list[str]]) -> None:
    x, y = _data(9)
    history = _model().fit(x, y, epochs=2, batch_size=16, validation_data=(x, y), verbose=0)
    history.plot()
    assert fake_matplotlib == {"loss": ["train", "validation"], "accuracy": ["train", "validation"]}
    with pytest.raises(ConfigError, match=r"'confusion_matrix'.*array per epoch.*'accuracy'"):
        history.plot(metrics=["accuracy", "confusion_matrix"])


def test_model_checkpoint_filepath_with_a_number_format_for_the_matrix_is_a_config_error(
    tmp_path: Path,
) -> None:
    x, y = _data(10)
    checkpoint = ModelCheckpoint(tmp_path / "m-{confusion_matrix:.2f}.h5", save_weights_only=True)
    with pytest.raises(ConfigError, match="cannot format filepath"):
        _model().fit(x, y, epochs=1, batch_size=16, callbacks=[checkpoint], verbose=0)
