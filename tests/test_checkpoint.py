"""HDF5 checkpoints: round trips, resume, atomicity under SIGKILL, corrupted files."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import subprocess_env

import framework
from framework import CheckpointError, Sequential, load_model
from framework.layers import BatchNorm, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU
from framework.saving.checkpoint import restore_rng_state

h5py = pytest.importorskip(
    "h5py", reason="h5py is not installed (a run-time dependency: pip install -e '.[dev]')"
)


def _cnn() -> Sequential:
    return Sequential(
        [
            Conv2d(1, 4, 3, padding=1),
            BatchNorm(4),
            ReLU(),
            MaxPool2d(2),
            Dropout(0.25),
            Flatten(),
            Linear(4 * 4 * 4, 3),
        ]
    )


def _data(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=n)
    return x, y


def _summary(model: Sequential) -> str:
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    return "\n".join(lines)


@pytest.fixture(scope="module")
def _trained_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Sequential, np.ndarray, np.ndarray, bytes]:
    """The CNN trained 2 epochs, once for the module, and the bytes of its checkpoint."""
    framework.set_seed(0)
    model = _cnn()
    model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"])
    x, y = _data()
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path_factory.mktemp("trained") / "good.h5"
    model.save(path)
    return model, x, y, path.read_bytes()


@pytest.fixture
def trained(_trained_once):
    """A copy of the trained CNN of its own for each test, with the data it was trained on."""
    model, x, y, _ = _trained_once
    return copy.deepcopy(model), x, y


def test_round_trip_is_bit_identical(trained, tmp_path: Path) -> None:
    model, x, _ = trained
    path = tmp_path / "model.h5"
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_array_equal(model.predict(x), loaded.predict(x))
    assert _summary(model) == _summary(loaded)
    for (name, a), (name_b, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == name_b
        np.testing.assert_array_equal(a, b)
    assert loaded.optimizer is not None and loaded.optimizer.iterations == model.optimizer.iterations
    assert loaded.epoch == model.epoch == 2
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_gzip_compression_round_trip(trained, tmp_path: Path) -> None:
    model, x, _ = trained
    path = tmp_path / "model.h5"
    model.save(path, compression="gzip")
    with h5py.File(path) as handle:
        assert handle["weights/conv2d/weight"].compression == "gzip"
    np.testing.assert_array_equal(model.predict(x), load_model(path).predict(x))


def test_file_records_format_and_plugins(trained, tmp_path: Path) -> None:
    model, _, _ = trained
    path = tmp_path / "model.h5"
    model.save(path)
    with h5py.File(path) as handle:
        assert handle.attrs["format"] == "framework.checkpoint"
        assert handle.attrs["format_version"] == 1
        plugins = json.loads(handle["model"].attrs["plugins"])
        assert plugins["layers:Conv2d"]["distribution"] == "framework"
        assert "optimizer" in handle and handle["optimizer"].attrs["iterations"] == model.optimizer.iterations


@pytest.mark.parametrize(
    "optimizer",
    [
        {"class_name": "sgd", "config": {"learning_rate": 0.05, "momentum": 0.9}},
        {"class_name": "adam", "config": {"learning_rate": 0.01}},
    ],
)
def test_resume_is_bit_identical(optimizer, tmp_path: Path) -> None:
    x, y = _data(32, seed=1)

    def fresh() -> Sequential:
        framework.set_seed(7)
        model = _cnn()
        model.compile(optimizer=framework.optimizers.get(optimizer), loss="cross_entropy")
        return model

    straight = fresh()
    straight.fit(x, y, epochs=5, batch_size=8, shuffle=False, verbose=0)

    first = fresh()
    first.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    first.save(tmp_path / "mid.h5")
    del first
    framework.set_seed(12345)  # load_model leaves it alone; restore_rng_state puts the saved one back
    resumed = load_model(tmp_path / "mid.h5")
    restore_rng_state(resumed)
    resumed.fit(x, y, epochs=5, initial_epoch=resumed.epoch, batch_size=8, shuffle=False, verbose=0)

    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_save_and_load_weights(trained, tmp_path: Path) -> None:
    model, x, _ = trained
    path = tmp_path / "weights.h5"
    model.save_weights(path)
    framework.set_seed(99)
    other = _cnn()
    other.build((None, 1, 8, 8))
    other.load_weights(path)
    np.testing.assert_array_equal(model.predict(x), other.predict(x))
    with pytest.raises(CheckpointError, match="load_weights"):
        load_model(path)


def test_load_weights_mismatch_changes_nothing(trained, tmp_path: Path) -> None:
    model, _, _ = trained
    path = tmp_path / "weights.h5"
    model.save_weights(path)
    other = Sequential(
        [Conv2d(1, 4, 3, padding=1), BatchNorm(4), ReLU(), MaxPool2d(2), Flatten(), Linear(64, 5)]
    )
    other.build((None, 1, 8, 8))
    before = {k: v.copy() for k, v in other.state_dict().items()}
    with pytest.raises(CheckpointError, match="shape"):
        other.load_weights(path)
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(before[key], value)
    with pytest.warns(UserWarning, match="linear"):
        other.load_weights(path, by_name=True, skip_mismatch=True)
    np.testing.assert_array_equal(other.state_dict()["conv2d.weight"], model.state_dict()["conv2d.weight"])
    np.testing.assert_array_equal(other.state_dict()["linear.weight"], before["linear.weight"])


# -- corrupted inputs ------------------------------------------------------


@pytest.fixture
def saved(_trained_once, tmp_path: Path) -> Path:
    path = tmp_path / "good.h5"
    path.write_bytes(_trained_once[3])  # the trained CNN's checkpoint
    return path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.h5")


def test_truncated_file(saved: Path, tmp_path: Path) -> None:
    data = saved.read_bytes()
    for cut in (0, 10, len(data) // 3, len(data) - 100):
        bad = tmp_path / f"cut{cut}.h5"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            load_model(bad)


def test_random_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "random.h5"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="not a readable HDF5"):
        load_model(bad)


def test_empty_hdf5_file(tmp_path: Path) -> None:
    bad = tmp_path / "empty.h5"
    h5py.File(bad, "w").close()
    with pytest.raises(CheckpointError, match="not a framework checkpoint"):
        load_model(bad)


def test_file_from_another_program(tmp_path: Path) -> None:
    bad = tmp_path / "other.h5"
    with h5py.File(bad, "w") as handle:
        handle.attrs["format"] = "keras"
        handle.create_dataset("model_weights/dense/kernel", data=np.zeros((3, 3)))
    with pytest.raises(CheckpointError, match="another program"):
        load_model(bad)


def test_newer_format_refused(saved: Path) -> None:
    with h5py.File(saved, "r+") as handle:
        handle.attrs["format_version"] = 99
    with pytest.raises(CheckpointError, match="newer"):
        load_model(saved)


def test_missing_group(saved: Path) -> None:
    with h5py.File(saved, "r+") as handle:
        del handle["weights/conv2d"]
    with pytest.raises(CheckpointError, match="conv2d"):
        load_model(saved)


def test_dataset_of_wrong_shape(saved: Path) -> None:
    with h5py.File(saved, "r+") as handle:
        del handle["weights/linear/weight"]
        handle.create_dataset("weights/linear/weight", data=np.zeros((3, 5), dtype=np.float32))
    with pytest.raises(CheckpointError, match="shape"):
        load_model(saved)


def test_dataset_of_wrong_dtype(saved: Path) -> None:
    with h5py.File(saved, "r+") as handle:
        shape = handle["weights/linear/weight"].shape
        del handle["weights/linear/weight"]
        handle.create_dataset("weights/linear/weight", data=np.full(shape, b"x", dtype="S1"))
    with pytest.raises(CheckpointError, match="dtype"):
        load_model(saved)


def test_unknown_layer_names_layer_and_distribution(saved: Path) -> None:
    with h5py.File(saved, "r+") as handle:
        group = handle["model"]
        text = group.attrs["config"].replace('"Conv2d"', '"FancyConv"')
        group.attrs["config"] = text
        plugins = json.loads(group.attrs["plugins"])
        plugins["layers:FancyConv"] = {"distribution": "fancy-layers", "version": "2.1", "plugin": "fancy"}
        group.attrs["plugins"] = json.dumps(plugins)
    with pytest.raises(CheckpointError) as info:
        load_model(saved)
    assert "FancyConv" in str(info.value) and "fancy-layers" in str(info.value)


def test_config_that_is_not_json(saved: Path) -> None:
    with h5py.File(saved, "r+") as handle:
        handle["model"].attrs["config"] = "{not json"
    with pytest.raises(CheckpointError, match="JSON"):
        load_model(saved)


def test_loading_never_unpickles(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("pickle was called while loading a checkpoint")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(np, "load", refuse)
    model = load_model(saved)
    assert model.count_params() > 0


@settings(
    max_examples=20,
    deadline=None,
    # the same 20 inputs each run: reproducible, and never a libhdf5 hang met by chance (docs/security.md)
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_mutated_bytes_never_escape_as_other_errors(saved: Path, data) -> None:
    raw = bytearray(saved.read_bytes())
    n = data.draw(st.integers(1, 8))
    for _ in range(n):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    bad = saved.with_name("mutated.h5")
    bad.write_bytes(bytes(raw))
    try:
        load_model(bad)
    except CheckpointError:
        pass


_ATTR_VALUES = st.one_of(
    st.integers(-5, 5),
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20),
    st.just("{}"),
    st.just("[]"),
    st.just('{"class_name": 3}'),
)


@settings(
    max_examples=20,
    deadline=None,
    # the same 20 inputs each run: reproducible, and never a libhdf5 hang met by chance (docs/security.md)
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    where=st.sampled_from(["/", "/model", "/compile", "/training", "/optimizer", "/weights"]),
    key=st.sampled_from(
        [
            "format",
            "format_version",
            "contents",
            "config",
            "plugins",
            "state",
            "iterations",
            "layer_names",
            "param_names",
        ]
    ),
    value=_ATTR_VALUES,
)
# two explicit inputs for paths the generated ones reached only at 40 examples: a number where
# the header's text belongs, and a Sequential config without its layers (a ConfigError inside)
@example(where="/", key="contents", value=3)
@example(where="/model", key="config", value='{"class_name": "Sequential", "config": {}}')
def test_mutated_attributes_raise_checkpoint_error_or_load(saved: Path, where, key, value) -> None:
    bad = saved.with_name("attr.h5")
    bad.write_bytes(saved.read_bytes())
    with h5py.File(bad, "r+") as handle:
        handle[where].attrs[key] = value
    try:
        load_model(bad)
    except CheckpointError:
        pass


# -- atomicity ---------------------------------------------------------------

# One interpreter imports the framework once, then forks a saver per command ``<point> <value>``:
# the saver fills every parameter with ``value`` and saves. At a named point of the save it
# prints ``at <point> <pid>`` and waits to be killed: ``weights`` (two arrays written into the
# temporary file), ``replace`` (the temporary file complete and closed, not yet moved over the
# target), ``renamed`` (moved, the folder not yet synced). ``anywhere`` saves in a loop, value
# after value, and prints ``saving <pid>`` after its first save, to be killed at whatever moment.
# The fork server then prints ``ended <wait status>``.
_SAVER = textwrap.dedent(
    """
    import os, signal, sys, traceback
    import h5py, numpy as np, framework
    import framework.saving.atomic as atomic
    import framework.saving.writer as writer
    from framework import Sequential
    from framework.layers import Linear

    framework.set_seed(1)
    model = Sequential([Linear(4, 8), Linear(8, 8), Linear(8, 2)])
    model.compile(optimizer="adam", loss="mse")
    path = sys.argv[1]

    def wait_for_the_kill(point):
        print("at", point, os.getpid(), flush=True)
        while True:
            signal.pause()

    def fill(value):
        for p in model.parameters():
            p.data.fill(value)

    def saver(point, value):
        signal.alarm(60)  # never outlive a test that stopped killing
        if point == "weights":
            real, calls = writer._write_array, []
            def write_array(*args, **kwargs):
                calls.append(1)
                if len(calls) == 3:
                    wait_for_the_kill(point)
                return real(*args, **kwargs)
            writer._write_array = write_array
        elif point == "replace":
            real_replace = os.replace
            os.replace = lambda *args: wait_for_the_kill(point) or real_replace(*args)
        elif point == "renamed":
            atomic._fsync_folder = lambda folder: wait_for_the_kill(point)
        fill(value)
        model.save(path)
        if point == "anywhere":
            print("saving", os.getpid(), flush=True)
            while True:
                value += 1.0
                fill(value)
                model.save(path)
        print("finished", point, flush=True)  # the named point was never reached

    for line in sys.stdin:
        point, value = line.split()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                saver(point, float(value))
                code = 0
            except BaseException:
                traceback.print_exc()
            sys.stderr.flush()
            os._exit(code)
        print("ended", os.waitpid(pid, 0)[1], flush=True)
    """
)


def test_sigkill_during_save_leaves_a_loadable_file(tmp_path: Path) -> None:
    path = tmp_path / "atomic.h5"
    framework.set_seed(1)
    first = Sequential([Linear(4, 8), Linear(8, 8), Linear(8, 2)])
    first.compile(optimizer="adam", loss="mse")
    for p in first.parameters():
        p.data.fill(-1.0)
    first.save(path)
    server = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"),
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        # (kill point, value the saver writes, value the target must hold after the kill)
        expected = -1.0
        for point, value in (("weights", 1.0), ("replace", 2.0), ("renamed", 3.0), ("anywhere", 4.0)):
            server.stdin.write(f"{point} {value}\n")
            server.stdin.flush()
            line = server.stdout.readline().split()
            if point == "anywhere":
                assert line[0] == "saving", line
                time.sleep(0.02)  # the loop goes on saving 5.0, 6.0, ...: kill it wherever it is
            else:
                assert line[:2] == ["at", point], line
            os.kill(int(line[-1]), signal.SIGKILL)
            status = int(server.stdout.readline().split()[1])
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (point, status)
            temporary = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
            if point in ("weights", "replace"):
                assert temporary, f"killed at {point}: the save had written no temporary file"
            model = load_model(path)
            values = {float(p.data.flat[0]) for p in model.parameters()}
            assert len(values) == 1, (point, values)  # one consistent save, old or new, never a mix
            if point == "renamed":
                expected = value  # the new file was moved over the target before the kill
            if point == "anywhere":
                assert values.pop() >= value, point
            else:
                assert values == {expected}, (point, values)
        server.stdin.close()
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    leftovers = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    # A killed save may leave its temporary file; the target itself is always whole.
    assert all(name.startswith(".atomic.h5.") for name in leftovers)


def test_failed_save_keeps_previous_file(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _, _ = trained
    path = tmp_path / "keep.h5"
    model.save(path)
    before = path.read_bytes()

    import framework.saving.writer as writer

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer, "_write_weights", explode)
    with pytest.raises(RuntimeError):
        model.save(path)
    assert path.read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_stringio_is_not_a_path() -> None:
    with pytest.raises((CheckpointError, TypeError)):
        load_model(io.StringIO("x"))  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [None, 5])
def test_item10_resume_with_shuffling_and_dropout_is_bit_identical(seed, tmp_path: Path) -> None:
    """Issue 14 item 10: 2 epochs + save + load + 2 epochs equals 4 epochs bit for bit,
    shuffling on, dropout from the global generator and from a layer's own seeded one,
    with nothing but ``fit(initial_epoch=model.epoch)`` after ``load_model``."""
    x, y = _data(40, seed=2)

    def fresh() -> Sequential:
        framework.set_seed(11)
        model = Sequential(
            [
                framework.layers.Flatten(),
                framework.layers.Linear(64, 32, activation="relu"),
                framework.layers.Dropout(0.3),
                framework.layers.Linear(32, 16, activation="relu"),
                framework.layers.Dropout(0.2, seed=3),
                framework.layers.Linear(16, 3),
            ]
        )
        model.compile(optimizer="adam", loss="cross_entropy")
        return model

    straight = fresh()
    straight.fit(x, y, epochs=4, batch_size=8, seed=seed, verbose=0)

    first = fresh()
    first.fit(x, y, epochs=2, batch_size=8, seed=seed, verbose=0)
    first.save(tmp_path / "mid.h5")
    del first
    framework.set_seed(999)  # whatever happened in between
    resumed = load_model(tmp_path / "mid.h5")
    resumed.fit(x, y, epochs=4, initial_epoch=resumed.epoch, batch_size=8, seed=seed, verbose=0)

    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
