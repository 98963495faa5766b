"""The TensorBoard callback writes real event files: read back with tensorboardX's protobufs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import read_events, requires_tensorboardx, scalars

import framework
from framework import Sequential
from framework.errors import ConfigError
from framework.layers import Linear
from framework.training.callbacks import TensorBoard


def _fit(tmp_path: Path, **kwargs: Any) -> tuple[Any, Sequential]:
    framework.set_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-1.0], [2.0]], dtype=np.float32)
    model = Sequential([Linear(3, 4), Linear(4, 1)])
    model.compile("sgd", "mse", metrics=["mae"])
    board = TensorBoard(tmp_path / "logs", **kwargs)
    history = model.fit(x, y, epochs=3, batch_size=16, validation_data=(x, y), callbacks=board, verbose=0)
    return history, model


@requires_tensorboardx
def test_tensorboard_writes_epoch_scalars_and_histograms(tmp_path):
    history, model = _fit(tmp_path, histogram_freq=2)
    train = scalars(tmp_path / "logs" / "train")
    val = scalars(tmp_path / "logs" / "validation")
    assert [step for step, _ in train["epoch_loss"]] == [0, 1, 2]
    np.testing.assert_allclose([v for _, v in train["epoch_loss"]], history.history["loss"], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in train["epoch_mae"]], history.history["mae"], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in val["epoch_loss"]], history.history["val_loss"], rtol=1e-6)
    assert not any(tag.startswith("batch_") for tag in train)  # update_freq="epoch"
    histograms: dict[str, list[int]] = {}
    for event in read_events(tmp_path / "logs" / "train"):
        for value in event.summary.value:
            if value.HasField("histo"):
                histograms.setdefault(value.tag, []).append(event.step)
                if value.tag == "0.weight" and event.step == 2:
                    assert value.histo.num == 12
                    assert value.histo.sum == pytest.approx(float(model[0].weight.data.sum()), rel=1e-5)
    assert histograms == {name: [0, 2] for name, _ in model.named_parameters()}


@requires_tensorboardx
def test_tensorboard_batch_scalars(tmp_path):
    _fit(tmp_path, update_freq="batch")
    train = scalars(tmp_path / "logs" / "train")
    assert [step for step, _ in train["batch_loss"]] == list(range(1, 13))  # 4 batches x 3 epochs
    _fit(tmp_path / "every3", update_freq=3)
    assert [s for s, _ in scalars(tmp_path / "every3" / "logs" / "train")["batch_loss"]] == [3, 6, 9, 12]


def test_tensorboard_arguments_and_missing_extra(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="update_freq"):
        TensorBoard(tmp_path, update_freq="sometimes")
    with pytest.raises(ConfigError, match="histogram_freq"):
        TensorBoard(tmp_path, histogram_freq=-1)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ImportError, match=r"framework\[tensorboard\]"):
        _fit(tmp_path)
