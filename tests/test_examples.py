"""The example scripts run end to end (``--quick``), and ``History.plot`` draws a PNG.

Each example runs as ``python examples/<name>.py --quick --output DIR`` runs it: the
script executed as ``__main__`` with that ``sys.argv``, its folder first on
``sys.path``, BLAS on one thread (what the scripts ask for). One of them
(``regression_mlp``) starts in its own interpreter, exactly as a user runs it; the
others run in this process (``runpy``), sparing each a fresh interpreter's imports
(scikit-learn, h5py, matplotlib, torch). Each must exit with 0, print the test
metrics, write its checkpoint, and report that the model reloaded with
``framework.load_model`` predicts bit for bit what the trained one did (the script
asserts it; the test also checks the message and the file).
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import requires_h5py, run_script, subprocess_env

import framework
from framework import ConfigError, Sequential
from framework.datasets import load_fashion_mnist
from framework.errors import DataError
from framework.layers import Linear

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RELOADED = "reloaded with framework.load_model: predictions identical (bit for bit)"


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@functools.cache
def _fashion_available() -> bool:
    try:
        load_fashion_mnist(kind="test")
    except DataError:
        return False
    return True


@pytest.fixture
def needs_fashion() -> None:
    """Skip without the Fashion-MNIST files (checked when a test asks, not at every worker's collection)."""
    if not _fashion_available():
        pytest.skip("Fashion-MNIST files not installed")


needs_sklearn = pytest.mark.skipif(not _has("sklearn"), reason="digits ship with scikit-learn")
needs_matplotlib = pytest.mark.skipif(not _has("matplotlib"), reason="matplotlib (the 'plot' extra)")


def _check_run(name: str, stdout: str, output: Path) -> None:
    assert "Total params" in stdout, "the script did not print model.summary()"
    assert ("test " in stdout and "accuracy" in stdout) or "MSE" in stdout
    assert RELOADED in stdout, f"{name} did not confirm the reload check:\n{stdout[-2000:]}"
    checkpoint = output / f"{name}.h5"
    assert checkpoint.is_file() and checkpoint.stat().st_size > 0


def run_example(
    name: str, output: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """Run ``examples/<name>.py --quick --output <output>`` in this process; return its stdout after
    checking it passed."""
    stdout = run_script(EXAMPLES / f"{name}.py", ["--quick", "--output", str(output)], monkeypatch, capsys)
    _check_run(name, stdout, output)
    return stdout


def run_example_process(name: str, output: Path) -> str:
    """``run_example`` in a fresh interpreter: ``python examples/<name>.py --quick --output <output>``."""
    env = subprocess_env(OPENBLAS_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, (
        f"{name} exited with {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    )
    _check_run(name, done.stdout, output)
    return done.stdout


@needs_sklearn
@requires_h5py
def test_digits_cnn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_example("digits_cnn", tmp_path, monkeypatch, capsys)
    assert "450 test images" in out  # a quarter of the 1797 digits, held out


@needs_sklearn
@requires_h5py
def test_transformer_digits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_example("transformer_digits", tmp_path, monkeypatch, capsys)


@requires_h5py
def test_spirals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run_example("spirals", tmp_path, monkeypatch, capsys)
    if _has("matplotlib"):
        assert (tmp_path / "spirals_boundary.png").read_bytes()[:8] == PNG_MAGIC


@requires_h5py
def test_regression_mlp(tmp_path: Path) -> None:
    """The one example started in its own interpreter, as a user runs it."""
    out = run_example_process("regression_mlp", tmp_path)
    assert "test MSE" in out


@pytest.mark.usefixtures("needs_fashion")
@requires_h5py
def test_fashion_mnist_mlp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_example("fashion_mnist_mlp", tmp_path, monkeypatch, capsys)


@pytest.mark.usefixtures("needs_fashion")
@requires_h5py
def test_fashion_mnist_lenet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_example("fashion_mnist_lenet", tmp_path, monkeypatch, capsys)


@pytest.mark.usefixtures("needs_fashion")
@requires_h5py
def test_fashion_mnist_cnn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_example("fashion_mnist_cnn", tmp_path, monkeypatch, capsys)
    if _has("matplotlib"):
        for png in ("fashion_mnist_cnn_curves.png", "fashion_mnist_cnn_predictions.png"):
            assert (tmp_path / png).read_bytes()[:8] == PNG_MAGIC, png


def _trained_history(epochs: int = 3):
    x = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
    y = (x.sum(axis=1) > 0).astype(np.int64)
    model = Sequential([Linear(3, 8, activation="relu"), Linear(8, 2)])
    model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"])
    return model.fit(x, y, epochs=epochs, batch_size=16, validation_data=(x[:16], y[:16]), verbose=0)


@needs_matplotlib
def test_history_plot_writes_png(tmp_path: Path) -> None:
    history = _trained_history()
    path = tmp_path / "curves.png"
    figure = history.plot(path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    # One panel per training key (loss, accuracy), each with the train and validation curves.
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["loss", "accuracy"]
    for ax, key in zip(figure.axes, titles):
        train, val = ax.get_lines()
        np.testing.assert_allclose(train.get_ydata(), history.history[key])
        np.testing.assert_allclose(val.get_ydata(), history.history[f"val_{key}"])
        np.testing.assert_array_equal(train.get_xdata(), [1, 2, 3])


@needs_matplotlib
def test_history_plot_selected_metric_and_errors(tmp_path: Path) -> None:
    history = _trained_history()
    figure = history.plot(metrics="accuracy")
    assert [ax.get_title() for ax in figure.axes] == ["accuracy"]
    with pytest.raises(ConfigError, match="val_acc"):
        history.plot(metrics=["val_acc"])
    with pytest.raises(ConfigError, match="nothing recorded"):
        framework.training.callbacks.History().plot(tmp_path / "empty.png")


def test_history_plot_without_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    history = _trained_history(epochs=1)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"framework\[plot\]"):
        history.plot()


def test_char_transformer_smoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The decoder-only character model on the Debian fortunes (installed by .ci/run): a few
    steps next to its PyTorch twin, validated on a few batches, the checkpoint reloaded, samples drawn."""
    from framework.datasets import load_fortunes

    try:
        load_fortunes()
    except framework.DataError:
        pytest.skip("the Debian fortunes package is not installed (apt-get install -y fortunes)")
    twin = _has("torch")  # the PyTorch twin needs the [parity] extra; CI installs it
    out = run_script(
        EXAMPLES / "char_transformer.py",
        ["--steps", "3", "--batch", "4", "--length", "16", "--d-model", "16", "--heads", "2",
         "--layers", "1", "--val-batches", "2", "--sample-chars", "24", "--out", str(tmp_path),
         *([] if twin else ["--no-torch"])],
        monkeypatch,
        capsys,
    )  # fmt: skip
    assert "unigram baseline" in out and "validation: ours" in out
    assert ("validation: torch" in out) == twin and "--- sample" in out
    assert (tmp_path / "weights.npz").is_file() and (tmp_path / "config.json").is_file()
