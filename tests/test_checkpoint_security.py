"""Hostile checkpoints (issue 20) and exact round trips (issue 14 items 6 and 9).

Each test names the hole it closes. Files that point outside themselves are
tested with a marker that is a named pipe watched by another process: opening
a FIFO is observable from outside (the C library's ``open`` bypasses Python's
audit hooks, so an audit hook alone could not prove it), and an audit hook
checks that no Python-level ``open`` names another file either.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import opened_paths, subprocess_env

import framework
from framework import CheckpointError, Input, Model, Sequential, load_model
from framework.layers import LSTM, BatchNorm, Linear

h5py = pytest.importorskip("h5py", reason="h5py is not installed (pip install -e '.[dev]')")


_WATCHER = textwrap.dedent(
    """
    import os, sys, time
    fifo, flag, stop = sys.argv[1:4]
    open(stop + ".ready", "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists(stop) and time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.001)
            continue
        with open(flag, "a") as out:
            out.write("opened\\n")
        os.close(fd)
    """
)


@contextmanager
def _watched(marker: Path) -> Iterator[list[str]]:
    """Turn ``marker`` into a FIFO; yield the Python-level opens; fail if anything opened the FIFO."""
    if marker.exists():
        marker.unlink()
    os.mkfifo(marker)
    flag, stop = marker.with_suffix(".flag"), marker.with_suffix(".stop")
    proc = subprocess.Popen([sys.executable, "-c", _WATCHER, str(marker), str(flag), str(stop)])
    while not Path(str(stop) + ".ready").exists():
        time.sleep(0.005)
    try:
        with opened_paths() as opened:
            yield opened
    finally:
        stop.touch()
        proc.wait(timeout=30)
    assert not flag.exists(), f"{marker} was opened while loading"
    assert str(marker) not in opened


def _mlp() -> Sequential:
    framework.set_seed(0)
    model = Sequential([Linear(4, 8), BatchNorm(8), Linear(8, 3)])
    model.compile(optimizer="adam", loss="cross_entropy")
    x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    model.fit(x, np.arange(16) % 3, epochs=1, batch_size=8, verbose=0)
    return model


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "model.h5"
    _mlp().save(path)
    return path


def _first_linear(handle: h5py.File) -> str:
    names = json.loads(handle["weights"].attrs["layer_names"])
    return f"weights/{names[0]}"


def _replace(handle: h5py.File, path: str, make) -> None:
    del handle[path]
    make(path)


# -- 1. reading other files ---------------------------------------------------


def test_hole1_external_link_weight_never_opens_its_target(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "secret.h5"
    with h5py.File(saved, "a") as handle:
        layer = _first_linear(handle)
        _replace(
            handle, f"{layer}/weight", lambda p: handle.__setitem__(p, h5py.ExternalLink(str(marker), "/w"))
        )
    with _watched(marker) as opened, pytest.raises(CheckpointError, match="external link"):
        load_model(saved)
    assert all(os.path.samefile(p, saved) for p in opened if os.path.exists(p))


def test_hole1_external_link_group_and_relative_path_refused(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "other.h5"
    with h5py.File(saved, "a") as handle:
        layer = _first_linear(handle)
        _replace(handle, layer, lambda p: handle.__setitem__(p, h5py.ExternalLink("other.h5", "/g")))
    with _watched(marker), pytest.raises(CheckpointError, match="external link"):
        load_model(saved)


def test_hole1_external_storage_never_opens_the_named_file(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "passwd"
    marker.write_bytes(b"x" * 256)
    with h5py.File(saved, "a") as handle:
        layer = _first_linear(handle)
        shape = handle[f"{layer}/weight"].shape
        _replace(
            handle,
            f"{layer}/weight",
            lambda p: handle.create_dataset(p, shape=shape, dtype="f4", external=[(str(marker), 0, 4 * 32)]),
        )
    with _watched(marker), pytest.raises(CheckpointError, match="external files"):
        load_model(saved)


def test_hole1_virtual_dataset_never_opens_its_source(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "source.h5"
    with h5py.File(saved, "a") as handle:
        layer = _first_linear(handle)
        shape = handle[f"{layer}/weight"].shape
        vlayout = h5py.VirtualLayout(shape=shape, dtype="f4")
        vlayout[...] = h5py.VirtualSource(str(marker), "w", shape=shape)
        _replace(handle, f"{layer}/weight", lambda p: handle.create_virtual_dataset(p, vlayout, fillvalue=0))
    with _watched(marker), pytest.raises(CheckpointError, match="virtual"):
        load_model(saved)


def test_hole1_soft_link_is_not_followed(saved: Path) -> None:
    with h5py.File(saved, "a") as handle:
        layer = _first_linear(handle)
        slot = f"/optimizer/slots/{layer.split('/')[1]}/weight/exp_avg"
        assert slot in handle
        _replace(handle, f"{layer}/weight", lambda p: handle.__setitem__(p, h5py.SoftLink(slot)))
    with pytest.raises(CheckpointError, match="soft link"):
        load_model(saved)


# -- 2. memory amplification -----------------------------------------------------

# -- what needs processes of its own, in one fresh interpreter --------------------------------
#
# ``python -c _FRESH SPEC`` (SPEC a JSON object of paths) does, and prints as one JSON line:
# - ``bombs``: loads each of ``SPEC["bombs"]`` in turn, ``[verdict, peak RSS growth in MiB]``
#   each (hole 2). The peak is the VmHWM of /proc/self/status, which starts afresh at exec:
#   ``ru_maxrss`` does not on Linux (a child starts from its parent's peak, so under a test
#   process that once held 1 GB a load could allocate hundreds of MiB and show no growth). Each
#   growth is counted from the peak before that load, so the bombs are loaded first.
# - ``limited``: a forked child with a 100 kB file-size limit saves a 260 kB model over
#   ``SPEC["limited"]`` (hole 6, a real write failure): ``[exit code, what it reported]``.
# - ``race``: two forked children fill a model with 1.0 and 2.0 and save it 15 times each to
#   ``SPEC["race"]`` at the same time (hole 6): ``[[exit code, report], ...]``.
# One interpreter instead of four (each start imports the framework: about 0.3 s).
_FRESH = textwrap.dedent(
    """
    import json, os, resource, signal, sys, traceback
    import framework
    from framework.layers import Linear
    from framework.registry import REGISTRY

    spec = json.loads(sys.argv[1])

    def peak_kib():
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def start(work):
        # work() in a forked child, which reports its return value through a pipe
        read, write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            code = 1
            try:
                os.write(write, work().encode())
                code = 0
            except BaseException:
                traceback.print_exc()
            sys.stderr.flush()
            os._exit(code)
        os.close(write)
        return pid, read

    def finish(pid, read):
        with os.fdopen(read) as pipe:
            report = pipe.read()
        return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), report]

    result = {"bombs": []}
    REGISTRY.load()  # the plugins' imports are not the load's allocation
    for path in spec["bombs"]:
        before = peak_kib()
        try:
            framework.load_model(path)
            verdict = "loaded"
        except framework.CheckpointError as exc:
            verdict = "refused " + str(exc).replace("\\n", " ")
        result["bombs"].append([verdict, (peak_kib() - before) // 1024])

    def save_limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        model = framework.Sequential([Linear(256, 256), Linear(256, 4)])
        model.build((None, 256))
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        try:
            model.save(spec["limited"])
        except framework.CheckpointError as exc:
            return f"CheckpointError {exc}"
        return "saved"

    result["limited"] = finish(*start(save_limited))

    racer = framework.Sequential([Linear(64, 256), Linear(256, 256), Linear(256, 4)])
    racer.build((None, 64))

    def race(value):
        def work():
            for p in racer.parameters():
                p.data.fill(value)
            for _ in range(15):
                racer.save(spec["race"])
            return "done"
        return work

    racers = [start(race(value)) for value in (1.0, 2.0)]  # both running before either is waited for
    result["race"] = [finish(*r) for r in racers]
    print(json.dumps(result))
    """
)


def _unwritten_chunked_weight(path: Path) -> None:
    model = Sequential([Linear(8, 8)])
    model.build((None, 8))
    model.save(path)
    n = 12000  # 576 MB declared, a few KB on disk
    with h5py.File(path, "a") as handle:
        config = json.loads(handle["model"].attrs["config"])
        config["config"]["layers"][0]["config"].update(input_size=n, output_size=n)
        config["build_input_shape"] = config["config"]["input_shape"] = [None, n]
        handle["model"].attrs["config"] = json.dumps(config)
        layer = _first_linear(handle)
        del handle[f"{layer}/weight"], handle[f"{layer}/bias"]
        handle.create_dataset(
            f"{layer}/weight", shape=(n, n), dtype="f4", compression="gzip", chunks=(1000, 1000)
        )
        handle.create_dataset(f"{layer}/bias", data=np.zeros(n, np.float32))


def _oversized_optimizer_slot(path: Path) -> None:
    _mlp().save(path)
    with h5py.File(path, "a") as handle:
        layer = _first_linear(handle).split("/")[1]
        group = handle[f"optimizer/slots/{layer}/weight"]
        group.create_dataset("huge", shape=(2**27,), dtype="f4", compression="gzip", chunks=(2**20,))


def _run_fresh(spec: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _FRESH, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=subprocess_env(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"),
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout.strip(), out.stdout + out.stderr
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """:data:`_FRESH`'s results, with the paths it was given and the limited save's previous file."""
    folder = tmp_path_factory.mktemp("fresh")
    bombs = {"chunked": folder / "bomb.h5", "slot": folder / "slot.h5"}
    _unwritten_chunked_weight(bombs["chunked"])
    _oversized_optimizer_slot(bombs["slot"])
    limited, race = folder / "limited" / "model.h5", folder / "race" / "race.h5"
    limited.parent.mkdir()
    race.parent.mkdir()
    _mlp().save(limited)
    before = limited.read_bytes()
    spec = {"bombs": [str(p) for p in bombs.values()], "limited": str(limited), "race": str(race)}
    result = _run_fresh(spec)
    return {
        **{name: (path, *found) for (name, path), found in zip(bombs.items(), result["bombs"])},
        "limited": (limited, before, *result["limited"]),
        "race": (race, result["race"]),
        "stderr": result["stderr"],
    }


def test_hole2_unwritten_chunked_weight_is_refused_without_allocating(fresh) -> None:
    path, verdict, peak = fresh["chunked"]
    assert path.stat().st_size < 100_000
    assert verdict.startswith("refused") and "chunks written" in verdict, verdict
    assert peak < 200, f"the load grew the peak RSS by {peak} MiB (576 MB declared)"


def test_hole2_oversized_optimizer_slot_is_refused_before_reading(fresh) -> None:
    _, verdict, peak = fresh["slot"]
    assert verdict.startswith("refused") and "huge" in verdict, verdict
    assert peak < 200, f"the load grew the peak RSS by {peak} MiB (512 MB declared)"


def test_hole2_max_bytes_is_checked_before_reading(saved: Path) -> None:
    with pytest.raises(CheckpointError, match="max_bytes"):
        load_model(saved, max_bytes=64)
    assert load_model(saved, max_bytes=10_000) is not None


def test_hole2_contiguous_data_past_the_end_is_refused(saved: Path, tmp_path: Path) -> None:
    data = saved.read_bytes()
    cut = tmp_path / "cut.h5"
    with h5py.File(saved) as handle:
        offsets = [
            handle[f"{_first_linear(handle)}/{k}"].id.get_offset() for k in ("weight", "bias")
        ]  # cut inside the last array, keeping the metadata
    cut.write_bytes(data[: max(offsets) + 4])
    with pytest.raises(CheckpointError):
        load_model(cut)


# -- 3. values that poison training ------------------------------------------------


def _set(path: Path, dataset: str, fn) -> None:
    with h5py.File(path, "a") as handle:
        array = handle[dataset][()]
        handle[dataset][...] = fn(array)


def test_hole3_nan_weights_warn_by_default_and_strict_refuses(saved: Path) -> None:
    with h5py.File(saved) as handle:
        layer = _first_linear(handle)
    _set(saved, f"{layer}/weight", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, np.nan, a))
    with pytest.warns(UserWarning, match="non-finite"):
        load_model(saved)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_model(saved, strict=True)


def test_hole3_negative_running_variance_is_refused(saved: Path) -> None:
    with h5py.File(saved) as handle:
        bn = json.loads(handle["weights"].attrs["layer_names"])[1]
    _set(saved, f"weights/{bn}/running_var", lambda a: -a)
    with pytest.raises(CheckpointError, match="running_var"):
        load_model(saved)


def test_hole3_nan_adam_second_moment_is_refused(saved: Path) -> None:
    with h5py.File(saved) as handle:
        layer = _first_linear(handle).split("/")[1]
    _set(saved, f"optimizer/slots/{layer}/bias/exp_avg_sq", lambda a: np.full_like(a, np.nan))
    with pytest.raises(CheckpointError, match="exp_avg_sq"):
        load_model(saved)


def test_hole3_zero_d_optimizer_slot_is_refused(saved: Path) -> None:
    with h5py.File(saved, "a") as handle:
        layer = _first_linear(handle).split("/")[1]
        del handle[f"optimizer/slots/{layer}/bias/exp_avg"]
        handle[f"optimizer/slots/{layer}/bias/exp_avg"] = np.float32(0.5)
    with pytest.raises(CheckpointError, match="exp_avg"):
        load_model(saved)


@pytest.mark.parametrize("iterations", [-1, 10**15])
def test_hole3_step_count_out_of_range_is_refused(saved: Path, iterations: int) -> None:
    with h5py.File(saved, "a") as handle:
        handle["optimizer"].attrs["iterations"] = np.int64(iterations)
    with pytest.raises(CheckpointError, match="iterations"):
        load_model(saved)


@pytest.mark.parametrize("epoch", [1.5, True, -2, 10**12])
def test_hole3_epoch_must_be_a_sane_integer(saved: Path, epoch) -> None:
    with h5py.File(saved, "a") as handle:
        state = json.loads(handle["training"].attrs["state"])
        state["epoch"] = epoch
        handle["training"].attrs["state"] = json.dumps(state)
    with pytest.raises(CheckpointError, match="epoch"):
        load_model(saved)


def test_hole3_layer_removed_from_config_with_weights_left_is_refused(saved: Path) -> None:
    with h5py.File(saved, "a") as handle:
        config = json.loads(handle["model"].attrs["config"])
        del config["config"]["layers"][1]  # the BatchNorm; its weights stay
        handle["model"].attrs["config"] = json.dumps(config)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_model(saved)


def test_hole3_extra_dataset_in_a_layer_is_refused(saved: Path) -> None:
    with h5py.File(saved, "a") as handle:
        handle[f"{_first_linear(handle)}/extra"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_model(saved)


# -- 4. inputs from the file handed to code ----------------------------------------


def _functional_lstm(path: Path) -> None:
    framework.set_seed(0)
    inputs = Input((5, 3))
    out = Linear(4, 2)(LSTM(3, 4, batch_first=True, output="last")(inputs))
    Model(inputs, out).save(path)


@pytest.mark.parametrize(
    "kwargs", [{"state": [[1.0]]}, {"state": "junk"}, {"__class__": "os.system"}, {"h0": None}]
)
def test_hole4_call_kwargs_must_be_declared_and_typed(tmp_path: Path, kwargs) -> None:
    path = tmp_path / "f.h5"
    _functional_lstm(path)
    with h5py.File(path, "a") as handle:
        config = json.loads(handle["model"].attrs["config"])
        entry = next(e for e in config["config"]["layers"] if e["class_name"] == "LSTM")
        entry["inbound_nodes"][0]["kwargs"] = kwargs
        handle["model"].attrs["config"] = json.dumps(config)
    with pytest.raises(CheckpointError, match="argument"):
        load_model(path)


# -- 6. durability under faults ------------------------------------------------------


def test_hole6_disk_full_mid_save_keeps_the_previous_checkpoint(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = saved.read_bytes()
    real = h5py.Group.create_dataset
    calls = []

    def fill_disk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # a few arrays are written, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", fill_disk)
    with pytest.raises(CheckpointError, match="disk is full") as info:
        _mlp().save(saved)
    assert str(saved) in str(info.value)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir() if p.name.endswith(".tmp")] == []
    load_model(saved)


def test_hole6_real_write_failure_in_a_size_limited_process(fresh) -> None:
    saved, before, code, report = fresh["limited"]  # a forked child of _FRESH with a file-size limit
    assert code == 0, fresh["stderr"]
    assert report.startswith("CheckpointError") and str(saved) in report, report
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_hole6_two_processes_saving_to_one_path_leave_one_complete_checkpoint(fresh) -> None:
    path, racers = fresh["race"]  # two forked children of _FRESH, saving at the same time
    assert racers == [[0, "done"], [0, "done"]], fresh["stderr"]
    model = load_model(path)
    values = {float(v) for p in model.parameters() for v in np.unique(p.data)}
    assert values in ({1.0}, {2.0})
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


# -- issue 14 ------------------------------------------------------------------------


def test_issue14_item6_float64_model_comes_back_float64(tmp_path: Path) -> None:
    framework.set_seed(0)
    model = Sequential([Linear(3, 4), BatchNorm(4), Linear(4, 2)]).astype(np.float64)
    model.build((None, 3))
    x = np.random.default_rng(1).standard_normal((5, 3))
    model.eval()
    expected = model.predict(x)
    model.save(tmp_path / "f64.h5")
    loaded = load_model(tmp_path / "f64.h5")
    assert {str(a.dtype) for a in loaded.state_dict().values()} == {"float64"}
    np.testing.assert_array_equal(loaded.predict(x), expected)


def test_issue14_item6_frozen_parameters_stay_frozen(tmp_path: Path) -> None:
    model = _mlp()
    params = model.parameters()
    params[0].trainable = False
    params[3].trainable = False
    model.save(tmp_path / "frozen.h5")
    loaded = load_model(tmp_path / "frozen.h5")
    assert [p.trainable for p in loaded.parameters()] == [p.trainable for p in params]
    assert loaded.count_params(trainable=True) == model.count_params(trainable=True)


def test_issue14_item9_load_model_touches_no_global_random_state(saved: Path) -> None:
    from framework.runtime.random import get_rng

    framework.set_seed(99)
    np.random.seed(7)  # noqa: NPY002 - the legacy global state is what must stay untouched
    framework_state = get_rng().bit_generator.state
    numpy_state = np.random.get_state()[1].copy()  # noqa: NPY002
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_model(saved)
    assert get_rng().bit_generator.state == framework_state
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)  # noqa: NPY002
    assert model.training_state["epoch"] == model.epoch == 1
    assert model.training_state["rng"]["bit_generator"] == type(get_rng().bit_generator).__name__
