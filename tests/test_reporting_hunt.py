"""Reporting hunt: ``summary()``, the TensorBoard callback, the progress output and the command line.

Against trusted references: PyTorch's ``sum(p.numel() for p in module.parameters())`` (and its
buffers) for the parameter counts of ``summary()``, the shapes the layers really output for its
"Output shape" column, the TFRecord event files read back byte by byte (length, masked CRC-32C,
data, masked CRC-32C) for TensorBoard against ``History`` and the logs the loop hands the
callbacks, Keras's progress-bar number format, and the models themselves for ``framework
inspect`` / ``framework export``. Strict xfails mark the bugs left outside these modules.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import read_events, requires_h5py, requires_tensorboardx, scalars

import framework
from framework import Input, Model, Sequential
from framework.cli.main import main as cli_main
from framework.errors import ConfigError
from framework.layers import (
    GRU,
    LSTM,
    AvgPool1d,
    BatchNorm,
    Concatenate,
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool2d,
    GroupNorm,
    LayerNorm,
    Linear,
    MaxPool2d,
    MultiheadAttention,
    Permute,
    ReLU,
    Reshape,
    TransformerEncoderLayer,
    UpSampling2d,
)
from framework.models.summary import summary_rows, summary_text
from framework.training.callbacks import Callback, LambdaCallback, TensorBoard
from framework.training.callbacks.progress import format_logs, format_value

try:
    import torch
except ImportError:  # the [parity] extra: only the PyTorch count comparisons skip
    torch = None
requires_torch = pytest.mark.skipif(torch is None, reason="the [parity] extra (torch) is not installed")


def _totals(text: str) -> tuple[int, int, int]:
    """The total / trainable / non-trainable counts printed under the summary table."""
    found = []
    for label in ("Total", "Trainable", "Non-trainable"):
        match = re.search(rf"^{label} params: ([\d,]+)$", text, re.M)
        assert match is not None, text
        found.append(int(match.group(1).replace(",", "")))
    return found[0], found[1], found[2]


def _torch_counts(module: Any) -> tuple[int, int, int]:
    """PyTorch's counts: parameters (trainable) and buffers (non-trainable, Keras's rule).

    ``num_batches_tracked`` is left out: it is PyTorch's bookkeeping, not a Keras weight.
    """
    trainable = sum(p.numel() for p in module.parameters())
    buffers = sum(b.numel() for n, b in module.named_buffers() if not n.endswith("num_batches_tracked"))
    return trainable + buffers, trainable, buffers


# -- summary(): parameter counts against PyTorch ----------------------------------------------------

nn = torch.nn if torch is not None else None

#: (framework layer, PyTorch twin, the shape of one input sample)
COUNT_CASES = {
    "linear": (lambda: Linear(5, 7), lambda: nn.Linear(5, 7), (5,)),
    "linear-nobias": (lambda: Linear(5, 7, bias=False), lambda: nn.Linear(5, 7, bias=False), (5,)),
    "conv2d": (lambda: Conv2d(3, 4, 3), lambda: nn.Conv2d(3, 4, 3), (3, 6, 6)),
    "conv1d-groups": (
        lambda: Conv1d(4, 6, 3, groups=2, bias=False),
        lambda: nn.Conv1d(4, 6, 3, groups=2, bias=False),
        (4, 9),
    ),
    "convT-groups": (
        lambda: ConvTranspose2d(4, 6, 3, groups=2),
        lambda: nn.ConvTranspose2d(4, 6, 3, groups=2),
        (4, 5, 5),
    ),
    "batchnorm": (lambda: BatchNorm(6), lambda: nn.BatchNorm1d(6), (6,)),
    "batchnorm-noaffine": (lambda: BatchNorm(6, affine=False), lambda: nn.BatchNorm1d(6, affine=False), (6,)),
    "batchnorm-nostats": (
        lambda: BatchNorm(6, track_running_stats=False),
        lambda: nn.BatchNorm1d(6, track_running_stats=False),
        (6,),
    ),
    "layernorm": (lambda: LayerNorm((3, 4)), lambda: nn.LayerNorm((3, 4)), (3, 4)),
    "groupnorm": (lambda: GroupNorm(2, 6), lambda: nn.GroupNorm(2, 6), (6, 4, 4)),
    "embedding": (lambda: Embedding(10, 4), lambda: nn.Embedding(10, 4), (7,)),
    "lstm-2layer-bi": (
        lambda: LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True, output="last"),
        lambda: nn.LSTM(3, 5, num_layers=2, bidirectional=True),
        (6, 3),
    ),
    "gru-nobias": (
        lambda: GRU(3, 5, num_layers=2, bias=False, batch_first=True, output="sequence"),
        lambda: nn.GRU(3, 5, num_layers=2, bias=False),
        (6, 3),
    ),
    "mha-kdim-vdim": (
        lambda: MultiheadAttention(8, 2, kdim=3, vdim=5),
        lambda: nn.MultiheadAttention(8, 2, kdim=3, vdim=5),
        None,
    ),
    "transformer-encoder": (
        lambda: TransformerEncoderLayer(8, 2, 16),
        lambda: nn.TransformerEncoderLayer(8, 2, 16),
        (5, 8),
    ),
}


@requires_torch
@pytest.mark.parametrize("case", sorted(COUNT_CASES))
def test_summary_counts_equal_pytorchs_parameters_and_buffers(case: str, dtype: Any) -> None:
    ours, theirs, sample = COUNT_CASES[case]
    layer = ours()
    if sample is None:  # a layer of several inputs: the counts of the layer itself
        got = (layer.count_params(), layer.count_params(True), layer.count_params(False))
        assert got == _torch_counts(theirs())
        return
    model = Sequential([layer], input_shape=sample)
    assert _totals(summary_text(model)) == _torch_counts(theirs())
    ((_, _, _, row_count, _),) = summary_rows(model)
    assert row_count == _torch_counts(theirs())[0]


@requires_torch
def test_summary_of_a_whole_cnn_equals_pytorchs_count() -> None:
    ours = Sequential(
        [
            Conv2d(1, 4, 3, padding=1),
            BatchNorm(4),
            ReLU(),
            MaxPool2d(2),
            Flatten(),
            Dropout(0.3),
            Linear(64, 10),
        ],
        input_shape=(1, 8, 8),
    )
    theirs = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(64, 10),
    )
    assert _totals(summary_text(ours)) == _torch_counts(theirs)
    rows = summary_rows(ours)
    torch_rows = [
        sum(p.numel() for p in m.parameters()) + sum(b.numel() for b in m.buffers()) for m in theirs
    ]
    torch_rows[1] -= 1  # BatchNorm2d's num_batches_tracked
    assert [r[3] for r in rows] == torch_rows


def test_frozen_layers_and_running_stats_are_non_trainable_as_in_keras() -> None:
    first, norm, last = Linear(4, 8), BatchNorm(8), Linear(8, 3)
    first.trainable = False
    model = Sequential([first, norm, last], input_shape=(4,))
    # Keras: a frozen Dense's kernel and bias, and BatchNorm's moving mean and variance, are non-trainable.
    assert _totals(summary_text(model)) == (40 + 32 + 27, 16 + 27, 40 + 16)


def test_a_tied_frozen_parameter_is_counted_once_as_non_trainable() -> None:
    first, second = Linear(4, 4, bias=False), Linear(4, 4)
    second.weight = first.weight
    first.weight.trainable = False
    model = Sequential([first, second], input_shape=(4,))
    assert _totals(summary_text(model)) == (16 + 4, 4, 16)


# -- summary(): output shapes against what the layers output ------------------------------------------

SHAPE_STACKS = {
    "cnn": (lambda: [Conv2d(2, 4, 3, padding=1), MaxPool2d(2), Flatten(), Linear(64, 3)], (2, 8, 8), False),
    "lazy-linear": (lambda: [Conv2d(2, 4, 3), Flatten(), Linear(None, 3)], (2, 6, 6), False),
    "embed-lstm-last": (
        lambda: [Embedding(5, 4), LSTM(4, 3, batch_first=True, output="last"), Linear(3, 2)],
        (6,),
        True,
    ),
    "embed-gru-sequence": (
        lambda: [Embedding(5, 4), GRU(4, 3, batch_first=True, output="sequence"), Flatten()],
        (6,),
        True,
    ),
    "conv1d-permute-reshape": (
        lambda: [Conv1d(3, 4, 3), AvgPool1d(2), Permute((2, 1)), Reshape((-1,))],
        (3, 9),
        False,
    ),
    "upsampling": (
        lambda: [ConvTranspose2d(3, 2, 3, stride=2), UpSampling2d(2), GlobalAvgPool2d()],
        (3, 4, 4),
        False,
    ),
}


def _sample_batch(sample: tuple[int, ...], integer: bool, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    if integer:
        return rng.integers(0, 5, (n, *sample))
    return rng.standard_normal((n, *sample)).astype(framework.get_default_dtype())


@pytest.mark.parametrize("declared", [True, False], ids=["input_shape", "built-by-a-batch"])
@pytest.mark.parametrize("case", sorted(SHAPE_STACKS))
def test_sequential_output_shapes_are_what_each_layer_outputs(case: str, declared: bool) -> None:
    layers, sample, integer = SHAPE_STACKS[case]
    x = _sample_batch(sample, integer)
    model = Sequential(layers(), input_shape=sample) if declared else Sequential(layers())
    if not declared:
        model.predict(x)
    h: Any = x
    shown = [row[2] for row in summary_rows(model)]
    for layer, text in zip(model.layers, shown):
        h = layer(h, training=False)
        assert text == _format(h.shape)
    assert len(shown) == len(model.layers)
    assert _totals(summary_text(model))[0] == model.count_params()


def _format(shape: tuple[int, ...], batch_axis: int = 0) -> str:
    dims = ["None" if i == batch_axis else str(d) for i, d in enumerate(shape)]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def test_functional_shapes_with_recurrent_outputs_both_and_last_and_several_outputs() -> None:
    seq, meta = Input((7, 3), name="seq"), Input((2,), name="meta")
    both = LSTM(3, 4, batch_first=True, name="both")(seq)  # [sequence, h_n, c_n]
    last = GRU(4, 5, batch_first=True, output="last", name="last")(both[0])
    joined = Concatenate(name="join")([last, Linear(2, 3, name="proj")(meta)])
    out_a = Linear(8, 2, name="out_a")(joined)
    out_b = Linear(4, 1, name="out_b")(both[1])  # h_n: (num_layers, N, 4), batch on axis 1
    model = Model([seq, meta], [out_a, out_b])
    probe = Model([seq, meta], [*both, last, joined, out_a, out_b])
    rng = np.random.default_rng(1)
    x = [rng.standard_normal((3, 7, 3)).astype(np.float32), rng.standard_normal((3, 2)).astype(np.float32)]
    real = [o.shape for o in probe.predict(x)]
    rows = {row[0]: row for row in summary_rows(model)}
    h_n_shape = _format(real[1], batch_axis=1)
    assert rows["both"][2] == f"[{_format(real[0])}, {h_n_shape}, {_format(real[2], batch_axis=1)}]"
    assert rows["last"][2] == _format(real[3])
    assert rows["join"][2] == _format(real[4])
    assert rows["out_a"][2] == _format(real[5])
    assert rows["out_b"][2] == _format(real[6], batch_axis=1)
    assert rows["last"][4] == "both[0]" and rows["out_b"][4] == "both[1]"
    assert rows["join"][4] == "last, proj"
    assert _totals(summary_text(model))[0] == model.count_params() == sum(p.size for p in model.parameters())


@requires_torch
def test_unbuilt_layers_show_unknown_shapes_and_count_after_the_first_batch() -> None:
    model = Sequential([Linear(None, 8), ReLU(), Linear(8, 3)])
    rows = summary_rows(model)
    assert [r[2] for r in rows] == ["?", "?", "?"]
    assert [r[3] for r in rows] == [0, 0, 27]  # only what exists is counted
    model.predict(np.zeros((2, 5), np.float32))
    assert _totals(summary_text(model)) == _torch_counts(
        nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    )


def test_layers_without_parameters_have_rows_with_zero() -> None:
    model = Sequential([Flatten(), Dropout(0.5), ReLU()], input_shape=(2, 3))
    assert [(r[1], r[2], r[3]) for r in summary_rows(model)] == [
        ("Flatten", "(None, 6)", 0),
        ("Dropout", "(None, 6)", 0),
        ("ReLU", "(None, 6)", 0),
    ]
    assert _totals(summary_text(model)) == (0, 0, 0)


# -- summary(): the text ------------------------------------------------------------------------------


def test_counts_print_with_thousands_separators() -> None:
    model = Sequential([Linear(1000, 1000)], input_shape=(1000,))
    text = summary_text(model)
    assert "1,001,000" in text.splitlines()[4]
    assert "Total params: 1,001,000" in text


def test_long_names_are_not_cut_in_a_sequential_table() -> None:
    name = "a_rather_long_layer_name_" * 4
    model = Sequential([Linear(3, 2, name=name)], input_shape=(3,))
    assert name in summary_text(model, line_length=60)


@pytest.mark.parametrize("limit", [70, 90, 120])
def test_line_length_shortens_the_connected_to_column_only(limit: int) -> None:
    ins = [Input((2,), name=f"input_number_{i}") for i in range(6)]
    model = Model(ins, Linear(12, 1, name="out")(Concatenate(name="cat")(ins)))
    lines = summary_text(model, line_length=limit).splitlines()
    assert max(len(line) for line in lines) <= limit
    row = next(line for line in lines if line.startswith("cat "))
    full = ", ".join(f"input_number_{i}" for i in range(6))
    tail = row.split("  ")[-1]
    assert tail.endswith("...") and full.startswith(tail[:-3])
    wide = summary_text(model, line_length=400)
    assert full in wide


@pytest.mark.parametrize("bad", [0, -5, 2.5, "80", True])
def test_bad_line_length_is_a_config_error(bad: Any) -> None:
    x = Input((2,))
    model = Model(x, Linear(2, 1)(x))
    with pytest.raises(ConfigError, match=r"line_length.*positive integer.*got"):
        summary_text(model, line_length=bad)


def test_summary_print_fn_gets_every_line_and_the_default_prints(capsys: pytest.CaptureFixture[str]) -> None:
    model = Sequential([Linear(3, 2), BatchNorm(2)], input_shape=(3,), name="small")
    lines: list[str] = []
    text = model.summary(print_fn=lines.append)
    assert text == "\n".join(lines) == summary_text(model)
    assert lines[0] == 'Model: "small" (Sequential)'
    assert capsys.readouterr().out == ""
    assert model.summary() is None
    assert capsys.readouterr().out == summary_text(model) + "\n"


def test_summary_print_fn_not_callable_is_a_config_error() -> None:
    model = Sequential([Linear(3, 2)], input_shape=(3,))
    with pytest.raises(ConfigError, match="print_fn"):
        model.summary(print_fn=5)


# -- TensorBoard: the event files read back -------------------------------------------------------------


def _open_event_files() -> list[str]:
    """The event files this process holds open (Linux)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc/self/fd")
    found = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if "tfevents" in target:
                found.append(target)
    return found


N_SAMPLES, BATCH = 21, 8  # 3 batches per epoch, the last one of 5 samples
STEPS = math.ceil(N_SAMPLES / BATCH)


def _data(n: int = N_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    return x, x @ np.array([[1.0], [-1.0], [2.0]], np.float32) + 0.1


def _model() -> Sequential:
    framework.set_seed(0)
    model = Sequential([Linear(3, 4, activation="tanh"), Linear(4, 1)])
    model.compile("sgd", "mse", metrics=["mae"])
    return model


class _RecordBatches(Callback):
    """Keeps a copy of the logs of every training batch (in the order they come)."""

    def __init__(self) -> None:
        super().__init__()
        self.logs: list[dict[str, float]] = []

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.logs.append(dict(logs or {}))


def _f32(values: list[float]) -> list[float]:
    return [float(np.float32(v)) for v in values]


@requires_tensorboardx
@pytest.mark.parametrize("update_freq", ["epoch", "batch", 2])
def test_scalars_equal_history_and_the_batch_logs_exactly(tmp_path: Path, update_freq: Any) -> None:
    x, y = _data()
    record = _RecordBatches()
    board = TensorBoard(tmp_path, update_freq=update_freq)
    history = _model().fit(
        x, y, epochs=3, batch_size=BATCH, validation_data=(x[:7], y[:7]), callbacks=[board, record], verbose=0
    )
    train, val = scalars(tmp_path / "train"), scalars(tmp_path / "validation")
    for key in ("loss", "mae"):
        assert train[f"epoch_{key}"] == list(zip(range(3), _f32(history.history[key])))
        assert val[f"epoch_{key}"] == list(zip(range(3), _f32(history.history[f"val_{key}"])))
    assert not any(tag.startswith("val_") or tag.startswith("epoch_val") for tag in train)
    if update_freq == "epoch":
        assert not any(tag.startswith("batch_") for tag in train)
        return
    every = 1 if update_freq == "batch" else update_freq
    assert len(record.logs) == 3 * STEPS
    for key in ("loss", "mae"):
        expected = [
            (s, float(np.float32(record.logs[s - 1][key]))) for s in range(every, 3 * STEPS + 1, every)
        ]
        assert train[f"batch_{key}"] == expected
    # the running mean after an epoch's last (smaller) batch is the epoch's value
    for epoch in range(3):
        assert record.logs[(epoch + 1) * STEPS - 1]["loss"] == history.history["loss"][epoch]


@requires_tensorboardx
def test_two_fits_into_one_log_dir_keep_both_runs(tmp_path: Path) -> None:
    """Two fits in the same second used to write the same file name: the second erased the first."""
    x, y = _data()
    model = _model()
    first = model.fit(x, y, epochs=2, batch_size=BATCH, callbacks=[TensorBoard(tmp_path)], verbose=0)
    second = model.fit(
        x, y, epochs=4, initial_epoch=2, batch_size=BATCH, callbacks=[TensorBoard(tmp_path)], verbose=0
    )
    assert len(list((tmp_path / "train").glob("events.out.tfevents.*"))) == 2
    losses = first.history["loss"] + second.history["loss"]
    assert scalars(tmp_path / "train")["epoch_loss"] == list(zip(range(4), _f32(losses)))


@requires_tensorboardx
@pytest.mark.parametrize("same_callback", [True, False])
def test_resumed_fit_continues_the_batch_steps(tmp_path: Path, same_callback: bool) -> None:
    x, y = _data()
    model = _model()
    board = TensorBoard(tmp_path, update_freq="batch")
    model.fit(x, y, epochs=2, batch_size=BATCH, callbacks=[board], verbose=0)
    later = board if same_callback else TensorBoard(tmp_path, update_freq="batch")
    model.fit(x, y, epochs=3, initial_epoch=2, batch_size=BATCH, callbacks=[later], verbose=0)
    train = scalars(tmp_path / "train")
    assert [s for s, _ in train["epoch_loss"]] == [0, 1, 2]
    assert [s for s, _ in train["batch_loss"]] == list(range(1, 3 * STEPS + 1))  # no step written twice


@requires_tensorboardx
def test_an_epochs_scalars_are_on_disk_when_its_on_epoch_end_returns(tmp_path: Path) -> None:
    """tensorboardX's SummaryWriter.flush() does not wait for its writer thread's queue."""
    x, y = _data()
    seen: list[list[int]] = []

    def peek(epoch: int, logs: dict[str, Any]) -> None:
        seen.append([s for s, _ in scalars(tmp_path / "train").get("epoch_loss", [])])

    board = TensorBoard(tmp_path, histogram_freq=1)
    _model().fit(
        x, y, epochs=3, batch_size=BATCH, callbacks=[board, LambdaCallback(on_epoch_end=peek)], verbose=0
    )
    assert seen == [[0], [0, 1], [0, 1, 2]]


@requires_tensorboardx
def test_an_exception_loses_nothing_written_and_the_next_fit_closes_the_files(tmp_path: Path) -> None:
    x, y = _data()
    board = TensorBoard(tmp_path, update_freq="batch")

    def fail(epoch: int, logs: dict[str, Any]) -> None:
        if epoch == 1:
            raise RuntimeError("boom")

    model = _model()
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(
            x, y, epochs=4, batch_size=BATCH, callbacks=[board, LambdaCallback(on_epoch_end=fail)], verbose=0
        )
    train = scalars(tmp_path / "train")
    assert [s for s, _ in train["epoch_loss"]] == [0, 1]
    assert [s for s, _ in train["batch_loss"]] == list(range(1, 2 * STEPS + 1))
    model.fit(x, y, epochs=1, batch_size=BATCH, callbacks=[board], verbose=0)
    assert not [f for f in _open_event_files() if str(tmp_path) in f]


@requires_tensorboardx
def test_ctrl_c_closes_the_files_with_the_batches_so_far(tmp_path: Path) -> None:
    x, y = _data()
    board = TensorBoard(tmp_path, update_freq="batch")

    def interrupt(batch: int, logs: dict[str, Any]) -> None:
        if len(seen) == STEPS + 1:
            raise KeyboardInterrupt
        seen.append(batch)

    seen: list[int] = []
    with contextlib.redirect_stderr(io.StringIO()):
        history = _model().fit(
            x,
            y,
            epochs=3,
            batch_size=BATCH,
            callbacks=[board, LambdaCallback(on_train_batch_end=interrupt)],
            verbose=0,
        )
    assert history.interrupted
    assert not [f for f in _open_event_files() if str(tmp_path) in f]
    train = scalars(tmp_path / "train")
    assert [s for s, _ in train["epoch_loss"]] == [0]
    assert [s for s, _ in train["batch_loss"]] == list(range(1, STEPS + 3))


@requires_tensorboardx
def test_a_finished_fit_leaves_no_event_file_open(tmp_path: Path) -> None:
    x, y = _data()
    _model().fit(
        x, y, epochs=2, batch_size=BATCH, validation_data=(x, y), callbacks=[TensorBoard(tmp_path)], verbose=0
    )
    assert not [f for f in _open_event_files() if str(tmp_path) in f]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train", "validation"]


@requires_tensorboardx
def test_histograms_describe_each_parameter_at_each_histogram_epoch(tmp_path: Path, dtype: Any) -> None:
    x, y = _data()
    model = _model()
    snapshots: dict[int, dict[str, np.ndarray]] = {}

    def keep(epoch: int, logs: dict[str, Any]) -> None:
        snapshots[epoch] = {name: p.data.astype(np.float64) for name, p in model.named_parameters()}

    board = TensorBoard(tmp_path, histogram_freq=2)
    model.fit(
        x, y, epochs=5, batch_size=BATCH, callbacks=[board, LambdaCallback(on_epoch_end=keep)], verbose=0
    )
    found: dict[str, list[int]] = {}
    for event in read_events(tmp_path / "train"):
        for value in event.summary.value:
            if not value.HasField("histo"):
                continue
            found.setdefault(value.tag, []).append(event.step)
            data = snapshots[event.step][value.tag]
            histo = value.histo
            assert histo.num == data.size
            assert histo.min == data.min() and histo.max == data.max()
            assert histo.sum == pytest.approx(data.sum(), rel=1e-12, abs=1e-12)
            assert histo.sum_squares == pytest.approx((data**2).sum(), rel=1e-12)
            assert sum(histo.bucket) == data.size
    assert found == {name: [0, 2, 4] for name, _ in model.named_parameters()}


@requires_tensorboardx
def test_several_outputs_write_each_outputs_loss(tmp_path: Path) -> None:
    framework.set_seed(0)
    x = Input((3,))
    model = Model(x, [Linear(3, 1, name="a")(x), Linear(3, 2, name="b")(x)])
    model.compile("sgd", ["mse", "mae"])
    xs, y = _data()
    history = model.fit(
        xs, [y, np.hstack([y, -y])], epochs=2, batch_size=BATCH, callbacks=[TensorBoard(tmp_path)], verbose=0
    )
    train = scalars(tmp_path / "train")
    assert set(history.history) == {"loss", "a_loss", "b_loss"}
    for key, values in history.history.items():
        assert train[f"epoch_{key}"] == list(zip(range(2), _f32(values)))


@requires_tensorboardx
def test_missing_tensorboardx_fails_before_training_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorboardX.event_file_writer  # noqa: F401  # a submodule cached: the parent's absence must still count

    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    model = _model()
    x, y = _data()
    model.build((None, 3))
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ImportError, match=r"framework\[tensorboard\]"):
        model.fit(x, y, epochs=2, batch_size=BATCH, callbacks=[TensorBoard(tmp_path / "logs")], verbose=0)
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"update_freq": 0}, "update_freq"),
        ({"update_freq": True}, "update_freq"),
        ({"update_freq": 1.5}, "update_freq"),
        ({"histogram_freq": 1.0}, "histogram_freq"),
        ({"histogram_freq": True}, "histogram_freq"),
    ],
)
def test_bad_tensorboard_arguments_are_config_errors(
    tmp_path: Path, kwargs: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigError, match=rf"TensorBoard: {needle} must be .* got"):
        TensorBoard(tmp_path, **kwargs)


# -- the progress output ---------------------------------------------------------------------------------


def _fit_output(verbose: Any, stdout: Any = None, **kwargs: Any) -> tuple[str, str, Any]:
    x, y = _data()
    out, err = stdout if stdout is not None else io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        history = _model().fit(x, y, epochs=2, batch_size=BATCH, verbose=verbose, **kwargs)
    return out.getvalue(), err.getvalue(), history


def _expected_tail(history: Any, epoch: int) -> str:
    return " - ".join(f"{k}: {format_value(v[epoch])}" for k, v in history.history.items())


def test_verbose_0_prints_nothing() -> None:
    out, err, _ = _fit_output(0, validation_split=0.3)
    assert out == "" and err == ""


@pytest.mark.parametrize("verbose", [1, 2])
@pytest.mark.parametrize("split", [None, 0.3])
def test_one_line_per_epoch_with_historys_values(verbose: int, split: float | None) -> None:
    kwargs = {} if split is None else {"validation_split": split}
    out, err, history = _fit_output(verbose, **kwargs)
    lines = out.splitlines()
    assert len(lines) == 2 and err == ""
    n_train = N_SAMPLES if split is None else math.floor(N_SAMPLES * (1 - split))  # Keras's split_at
    steps = math.ceil(n_train / BATCH)
    for epoch, line in enumerate(lines):
        head = rf"Epoch {epoch + 1}/2 - " + (rf"{steps}/{steps} - " if verbose == 1 else "")
        assert re.fullmatch(head + r"\d+\.\d\ds - " + re.escape(_expected_tail(history, epoch)), line), line
    assert ("val_loss" in out) == (split is not None)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tqdm", [True, False], ids=["tqdm", "text-bar"])
def test_a_terminal_gets_a_bar_of_steps_batches_ending_with_historys_values(
    tqdm: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not tqdm:
        monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    else:
        pytest.importorskip("tqdm")
    out, _, history = _fit_output(1, stdout=_Terminal())
    epochs = [chunk for chunk in out.split("\n") if chunk]
    assert len(epochs) == 2
    for epoch, chunk in enumerate(epochs):
        last = chunk.split("\r")[-1].rstrip()
        assert f"Epoch {epoch + 1}/2" in last and f"{STEPS}/{STEPS}" in last
        assert last.rstrip("]").endswith(_expected_tail(history, epoch))


@pytest.mark.parametrize(
    "value, text",
    [
        (0.5, "0.5000"),
        (-2.25, "-2.2500"),
        (1234.5678, "1234.5678"),
        (3e-5, "3.0000e-05"),  # used to read 0.0000, as if the loss were zero
        (-4e-4, "-4.0000e-04"),
        (1e-3, "1.0000e-03"),
        (0.0, "0.0000e+00"),
        (np.float32(0.25), "0.2500"),  # not a float subclass: used to print its repr
        (np.float64(7e-6), "7.0000e-06"),
        (np.array(0.75), "0.7500"),
        (3, "3"),
        (np.int64(12), "12"),
        (float("nan"), "nan"),
    ],
)
def test_values_print_as_keras_progbar_prints_them(value: Any, text: str) -> None:
    assert format_value(value) == text
    assert format_logs({"loss": value, "matrix": np.eye(2)}) == f"loss: {text}"


def test_a_tiny_loss_is_not_printed_as_zero() -> None:
    x, _ = _data()
    framework.set_seed(0)
    model = Sequential([Linear(3, 1)])
    model.compile(framework.optimizers.SGD(learning_rate=1e-6), "mse")
    model.build((None, 3))
    y = model.predict(x) + 3e-3  # mse about 9e-6
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        history = model.fit(x, y, epochs=1, batch_size=BATCH, verbose=2)
    assert 0 < history.history["loss"][0] < 1e-4
    assert "loss: 0.0000" not in out.getvalue()
    assert f"loss: {history.history['loss'][0]:.4e}" in out.getvalue()


@pytest.mark.parametrize("bad", [3, -1, True, "yes", None])
@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_bad_verbose_is_a_config_error_naming_the_method(bad: Any, method: str) -> None:
    x, y = _data()
    model = _model()
    with pytest.raises(ConfigError, match=rf"{method}: verbose must be"):
        getattr(model, method)(x, y, verbose=bad)


def _classifier() -> tuple[Sequential, np.ndarray, np.ndarray]:
    framework.set_seed(0)
    x, _ = _data()
    y = np.random.default_rng(1).integers(0, 3, len(x))
    model = Sequential([Linear(3, 3)])
    model.compile("sgd", "cross_entropy", metrics=["accuracy", "confusion_matrix"])
    return model, x, y


def test_fit_line_leaves_the_confusion_matrix_out() -> None:
    model, x, y = _classifier()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        history = model.fit(x, y, epochs=1, verbose=2)
    assert out.getvalue().count("\n") == 1 and "confusion" not in out.getvalue()
    assert history.history["confusion_matrix"][0].shape == (3, 3)


def test_validation_split_cuts_where_keras_cuts() -> None:
    x, y = _data()  # 21 samples, validation_split=0.3: Keras trains on floor(21 * 0.7) = 14
    model = _model()
    model.compile(framework.optimizers.SGD(learning_rate=0.0), "mse")
    history = model.fit(x, y, epochs=1, batch_size=BATCH, validation_split=0.3, verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(model.evaluate(x[14:], y[14:], verbose=0)["loss"])


def test_evaluate_line_leaves_the_confusion_matrix_out() -> None:
    model, x, y = _classifier()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        logs = model.evaluate(x, y, verbose=1)
    assert out.getvalue() == format_logs(logs) + "\n"


# -- the command line ----------------------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli_main(list(args))
    return status, out.getvalue(), err.getvalue()


def _assert_clean_error(args: tuple[str, ...], *needles: str) -> str:
    status, out, err = _cli(*args)
    assert status == 1 and out == "", (status, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_inspect_npz_with_a_member_that_is_not_an_array(tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("0.weight.npy", b"not an npy header")
    _assert_clean_error(("inspect", str(path)), str(path), "0.weight", "not an array")


def test_read_state_dict_refuses_a_member_that_is_not_an_array(tmp_path: Path) -> None:
    from framework.errors import CheckpointError
    from framework.interchange.files import read_state_dict

    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("0.weight.npy", b"not an npy header")
    with pytest.raises(CheckpointError, match=r"0\.weight"):
        read_state_dict(path)


@requires_h5py
@pytest.mark.parametrize("where", ["weights", "model"])
def test_inspect_a_checkpoint_whose_group_is_a_dataset(tmp_path: Path, where: str) -> None:
    import h5py

    path = tmp_path / "m.h5"
    Sequential([Linear(4, 3)], input_shape=(4,)).save(path)
    with h5py.File(path, "a") as handle:
        del handle[where]
        handle[where] = np.zeros(3)
    _assert_clean_error(("inspect", str(path)), f"/{where} should be a group")


@requires_h5py
def test_inspect_a_dataset_with_a_null_dataspace(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "m.h5"
    Sequential([Linear(4, 3)], input_shape=(4,)).save(path)
    with h5py.File(path, "a") as handle:
        handle["weights/linear"].create_dataset("empty", shape=None, dtype="f4")
    status, out, err = _cli("inspect", str(path))
    assert status == 0, err
    assert "empty (null) float32" in out and "total: 15 values" in out


def _tied() -> Sequential:
    a, b = Linear(4, 4, name="a"), Linear(4, 4, name="b")
    b.weight = a.weight
    return Sequential([a, b], input_shape=(4,))


def _shared() -> Model:
    x = Input((4,))
    shared = Linear(4, 4, name="shared")
    return Model(x, shared(shared(x)))


def _nested() -> Model:
    inner = Sequential([Linear(4, 3, name="e1"), BatchNorm(3, name="bn")], name="enc")
    x = Input((4,))
    return Model(x, Linear(3, 2, name="head")(inner(x)))


def _two_inputs() -> Model:
    a, b = Input((5,), name="a"), Input((3,), name="b")
    joined = Concatenate()([Linear(5, 4, activation="relu")(a), Linear(3, 4)(b)])
    return Model([a, b], [Linear(8, 2)(joined), Linear(3, 1)(b)])


def _recurrent() -> Sequential:
    return Sequential([LSTM(3, 4, batch_first=True, output="last"), Linear(4, 2)], input_shape=(5, 3))


def _cnn() -> Sequential:
    return Sequential(
        [Conv2d(1, 3, 3, padding=1), BatchNorm(3), ReLU(), MaxPool2d(2), Flatten(), Linear(12, 2)],
        input_shape=(1, 4, 4),
    )


MODELS = {
    "tied": _tied,
    "shared": _shared,
    "nested": _nested,
    "two-inputs": _two_inputs,
    "lstm": _recurrent,
    "cnn": _cnn,
}


def _inputs(model: Any) -> Any:
    rng = np.random.default_rng(2)
    shapes = model.input_shape if isinstance(model.input_shape, list) else [model.input_shape]
    arrays = [rng.standard_normal((3, *s[1:])).astype(np.float32) for s in shapes]
    return arrays if len(arrays) > 1 else arrays[0]


def _trained(build: Any) -> Any:
    """A model with non-trivial BatchNorm statistics (a few steps of training)."""
    framework.set_seed(0)
    model = build()
    outputs = model.predict(_inputs(model))
    model.compile("sgd", "mse" if not isinstance(outputs, list) else ["mse"] * len(outputs))
    model.fit(_inputs(model), outputs, epochs=2, batch_size=3, verbose=0)
    return model


@requires_h5py
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_inspect_totals_equal_count_params(tmp_path: Path, kind: str) -> None:
    model = MODELS[kind]()
    model.save(tmp_path / "m.h5")
    status, out, err = _cli("inspect", str(tmp_path / "m.h5"))
    assert status == 0, err
    assert f"total: {model.count_params()} values" in out


@requires_h5py
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_export_numpy_predicts_what_the_model_predicts(tmp_path: Path, kind: str) -> None:
    model = _trained(MODELS[kind])
    model.save(tmp_path / "m.h5")
    status, out, err = _cli("export", str(tmp_path / "m.h5"), "--format", "numpy", str(tmp_path / "deploy"))
    assert status == 0, err
    assert out == f"wrote {tmp_path / 'deploy' / 'predict.py'}\n"
    predict = _load_predictor(tmp_path / "deploy" / "predict.py", f"predict_{kind.replace('-', '_')}")
    x = _inputs(model)
    expected = model.predict(x)
    got = predict(x)
    if isinstance(expected, list):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _load_predictor(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.predict


@requires_h5py
def test_export_twice_into_one_folder_replaces_the_first_export(tmp_path: Path) -> None:
    """Documented: a second export into the folder replaces the files of the first."""
    first, second = Sequential([Linear(4, 2)], input_shape=(4,)), Sequential([Linear(4, 2)], input_shape=(4,))
    second.get_layer("linear").weight.data[...] += 1.0
    first.save(tmp_path / "a.h5")
    second.save(tmp_path / "b.h5")
    for name in ("a.h5", "b.h5"):
        status, _, err = _cli("export", str(tmp_path / name), "--format", "numpy", str(tmp_path / "out"))
        assert status == 0, err
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(
        _load_predictor(tmp_path / "out" / "predict.py", "predict_twice")(x), second.predict(x)
    )


@requires_h5py
def test_export_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    Sequential([Linear(4, 2)], input_shape=(4,)).save(tmp_path / "m.h5")
    (tmp_path / "notes.h5").write_text("plain text")
    _assert_clean_error(
        ("export", str(tmp_path / "notes.h5"), "--format", "numpy", str(tmp_path / "o")), "notes.h5"
    )
    _assert_clean_error(
        ("export", str(tmp_path / "m.h5"), "--format", "numpy", str(tmp_path / "m.h5")), "m.h5"
    )
    assert not (tmp_path / "o").exists()
