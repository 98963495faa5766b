"""Seeded fuzzing of checkpoints (issue 20 point 5).

Real checkpoints of an MLP, a CNN with BatchNorm, an LSTM and a functional
model (plain and gzip-compressed) are mutated by byte flips, truncation and
attribute mutation. Every load must end in a model or a ``FrameworkError``,
within a time bound, and open no file but the checkpoint (an audit hook
records every Python-level ``open``). ``python tests/test_checkpoint_fuzz.py N``
prints the counts that docs/security.md quotes.

The CI test loads 84 of the first 600 seed-20 inputs (:data:`CI_INPUTS`): the
first 48 (six per source file, every kind of mutation) and those of the rest
that reach a line or branch of ``framework`` or ``plugins`` no other input
reaches; measured with coverage (branch arcs), these 84 reach every arc the 600
do. Two seed-7 inputs (:data:`SEED_7_INPUTS`) reach branches none of the 600
does. Input *i* is mutated from its own generator ``(seed, i)``, so a selection
replays exactly those inputs.
"""

from __future__ import annotations

import collections
import faulthandler
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import opened_paths

import framework
from framework import FrameworkError, Input, Model, Sequential, load_model
from framework.layers import LSTM, BatchNorm, Conv2d, Flatten, Linear, MaxPool2d, ReLU

h5py = pytest.importorskip("h5py", reason="h5py is not installed (pip install -e '.[dev]')")


def _models() -> dict[str, tuple[Model, np.ndarray, np.ndarray]]:
    framework.set_seed(0)
    rng = np.random.default_rng(0)
    mlp = Sequential([Linear(6, 8), ReLU(), Linear(8, 3)])
    cnn = Sequential(
        [Conv2d(1, 2, 3, padding=1), BatchNorm(2), ReLU(), MaxPool2d(2), Flatten(), Linear(8, 3)]
    )
    lstm = Sequential([LSTM(3, 4, batch_first=True, output="last"), Linear(4, 3)])
    inputs = Input((6,))
    functional = Model(inputs, Linear(4, 3)(ReLU()(Linear(6, 4)(inputs))))
    y = np.arange(8) % 3
    return {
        "mlp": (mlp, rng.standard_normal((8, 6)).astype(np.float32), y),
        "cnn": (cnn, rng.standard_normal((8, 1, 4, 4)).astype(np.float32), y),
        "lstm": (lstm, rng.standard_normal((8, 5, 3)).astype(np.float32), y),
        "functional": (functional, rng.standard_normal((8, 6)).astype(np.float32), y),
    }


def _sources(folder: Path) -> list[Path]:
    paths = []
    for name, (model, x, y) in _models().items():
        model.compile(optimizer="adam", loss="cross_entropy")
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)
        for compression in (None, "gzip"):
            path = folder / f"{name}-{compression or 'plain'}.h5"
            model.save(path, compression=compression)
            paths.append(path)
    return paths


_ATTR_VALUES: list[object] = [
    "",
    "null",
    "[]",
    "{",
    '{"class_name": "builtins.eval", "config": {}}',
    np.int64(-1),
    np.int64(2**62),
    np.float64(np.nan),
    np.zeros(3),
    b"\xff\xfe",
]


def _mutate(source: Path, target: Path, rng: np.random.Generator) -> str:
    """Write a mutated copy of ``source`` to ``target``; return the kind of mutation."""
    data = bytearray(source.read_bytes())
    kind = ("flip", "truncate", "attribute", "json")[int(rng.integers(4))]
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            pos = int(rng.integers(len(data)))
            data[pos] ^= 1 << int(rng.integers(8))
        target.write_bytes(bytes(data))
    elif kind == "truncate":
        target.write_bytes(bytes(data[: int(rng.integers(len(data)))]))
    else:
        shutil.copyfile(source, target)
        with h5py.File(target, "a") as handle:
            owners: list = []
            handle.visititems(lambda _, obj: owners.append(obj) if len(obj.attrs) else None)
            owners.append(handle)
            owner = owners[int(rng.integers(len(owners)))]
            key = sorted(owner.attrs)[int(rng.integers(len(owner.attrs)))]
            if kind == "json" and isinstance(owner.attrs[key], str) and owner.attrs[key][:1] in "{[":
                value = json.loads(owner.attrs[key])
                owner.attrs[key] = json.dumps(_mutate_json(value, rng))
            else:
                owner.attrs[key] = _ATTR_VALUES[int(rng.integers(len(_ATTR_VALUES)))]
    return kind


def _mutate_json(value: object, rng: np.random.Generator) -> object:
    """Replace one node of a JSON document by a hostile value."""
    nodes: list[tuple[object, object]] = []

    def walk(node: object) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            nodes.append((node, key))
            walk(child)

    walk(value)
    if not nodes:
        return value
    parent, key = nodes[int(rng.integers(len(nodes)))]
    choices = [None, -1, 10**9, 1.5, "os.system", [], {}, True, "x" * 100, [[0]]]
    parent[key] = choices[int(rng.integers(len(choices)))]  # type: ignore[index]
    return value


def run_fuzz(
    count: int,
    seed: int,
    folder: Path,
    first: int = 0,
    report: Any = None,
    indices: Sequence[int] | None = None,
    sources: list[Path] | None = None,
) -> collections.Counter:
    """Mutate and load inputs ``first .. count - 1`` (or only ``indices``); return the outcome
    counts. Fails on any escape.

    Input ``i`` is mutated from its own generator ``(seed, i)``, so any input can be
    replayed alone; ``report(i, kind, outcome)`` is told each outcome as it happens.
    ``sources`` are the files of :func:`_sources` if they are already written.
    """
    sources = _sources(folder) if sources is None else sources
    outcomes: collections.Counter = collections.Counter()
    target = folder / "mutant.h5"
    chosen = range(first, count) if indices is None else indices
    assert all(first <= i < count for i in chosen), "indices outside first .. count - 1"
    for i in chosen:
        source = sources[i % len(sources)]
        kind = _mutate(source, target, np.random.default_rng([seed, i]))
        outcomes[f"input:{kind}"] += 1
        start = time.perf_counter()
        faulthandler.dump_traceback_later(30, exit=True)  # a hang inside libhdf5 cannot be interrupted
        try:
            with opened_paths() as opened, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load_model(target)
            outcome = "loaded"
        except FrameworkError as exc:
            outcome = type(exc).__name__
        except Exception as exc:  # pragma: no cover - what the test exists to catch
            raise AssertionError(
                f"mutant {i} ({kind} of {source.name}) raised {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            faulthandler.cancel_dump_traceback_later()
        outcomes[outcome] += 1
        elapsed = time.perf_counter() - start
        assert elapsed < 5, f"mutant {i} ({kind} of {source.name}) took {elapsed:.1f} s"
        foreign = [p for p in opened if os.path.abspath(p) != str(target.resolve())]
        assert not foreign, f"mutant {i} ({kind} of {source.name}) opened {foreign}"
        if report is not None:
            report(i, kind, outcome)
    outcomes["inputs"] = len(chosen)
    return outcomes


#: The seed-20 inputs the CI test loads: the first 48, then each input of the first 600 that
#: reaches an arc (a line-to-line step of ``framework`` or ``plugins``, coverage's branch
#: measure) that neither those nor the other chosen ones reach (a greedy cover), and input 75
#: (an attribute mutation that still loads, an outcome the others lack). Together they reach
#: every arc the 600 reach (2059 with the code of 2026-12). To redo the choice after the loader
#: changes, record each input's arcs with ``coverage`` (``report`` can switch the context).
CI_INPUTS: tuple[int, ...] = (
    *range(48),
    *(55, 61, 64, 68, 70, 72, 75, 79, 92, 93, 95, 115, 119, 134, 147, 165, 173, 188, 196),
    *(213, 214, 215, 222, 272, 283, 294, 295, 335, 341, 342, 363, 414, 425, 437, 448, 457),
)


#: Inputs of seed 7 that reach branches no seed-20 input of the first 600 reaches: 25 (a byte
#: flip: an optimizer group without its ``slots`` group) and 31 (a byte flip that still loads: a
#: layer group missing for a layer that holds no weights).
SEED_7_INPUTS: tuple[int, ...] = (25, 31)


def test_fuzzed_checkpoints_load_or_raise_framework_errors(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    outcomes = run_fuzz(600, seed=20, folder=tmp_path, indices=CI_INPUTS, sources=sources)
    assert outcomes["inputs"] == len(CI_INPUTS) == 84
    assert outcomes["loaded"] > 0 and outcomes["CheckpointError"] > 0
    assert {f"input:{kind}" for kind in ("flip", "truncate", "attribute", "json")} <= set(outcomes)
    more = run_fuzz(40, seed=7, folder=tmp_path, indices=SEED_7_INPUTS, sources=sources)
    assert more["inputs"] == 2 and more["loaded"] > 0 and more["CheckpointError"] > 0, more


def run_isolated(count: int, seed: int, folder: Path, per_input: float = 20.0) -> collections.Counter:
    """:func:`run_fuzz` in a worker process, restarted past any input that hangs.

    A hang inside libhdf5's C code cannot be interrupted from Python, so the
    worker reports each outcome on a line and the parent kills it when one input
    takes longer than ``per_input`` seconds, counts that input as ``hang`` and
    starts a new worker at the next one.
    """
    import selectors
    import subprocess

    outcomes: collections.Counter = collections.Counter()
    start = 0
    while start < count:
        worker = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(start), str(count), str(seed), str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert worker.stdout is not None
        chooser = selectors.DefaultSelector()
        chooser.register(worker.stdout, selectors.EVENT_READ)
        last = start - 1
        while True:
            if not chooser.select(timeout=per_input):
                worker.kill()
                worker.wait()
                outcomes["hang"] += 1
                start = last + 2  # the input after the last reported one hung: skip it
                break
            line = worker.stdout.readline()
            if not line:
                worker.wait()
                assert worker.returncode == 0, worker.stderr.read()[-3000:] if worker.stderr else ""
                start = count
                break
            index, kind, outcome = line.split()
            last = int(index)
            outcomes[f"input:{kind}"] += 1
            outcomes[outcome] += 1
        chooser.close()
    outcomes["inputs"] = count
    return outcomes


@pytest.mark.slow
def test_fuzzed_checkpoints_many_more(tmp_path: Path) -> None:
    """5000 inputs, each load in a worker that is replaced when an input hangs in libhdf5
    (docs/security.md: seed 20 finds such a bit-flipped file); every other outcome is a
    model or a FrameworkError, and no escape in the worker (an audit-hook or timing
    failure) goes unnoticed: the worker then exits non-zero."""
    outcomes = run_isolated(5000, seed=20, folder=tmp_path)
    allowed = {"inputs", "loaded", "hang", "CheckpointError", "ShapeError", "ConfigError", "UnknownNameError"}
    assert set(outcomes) <= allowed | {k for k in outcomes if k.endswith("Error")}, outcomes
    assert outcomes["loaded"] > 0 and outcomes["CheckpointError"] > 0
    assert outcomes["hang"] <= 5, outcomes  # a libhdf5 limitation, counted in docs/security.md


def test_isolated_runner_counts_like_the_in_process_one(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # 16 inputs, two per source file: both outcomes, every kind of mutation
    isolated = run_isolated(16, seed=7, folder=tmp_path / "a")
    inline = run_fuzz(16, seed=7, folder=tmp_path / "b")
    assert isolated["hang"] == 0
    assert isolated["loaded"] > 0 and isolated["CheckpointError"] > 0
    assert {k: v for k, v in isolated.items() if not k.startswith("input")} == {
        k: v for k, v in inline.items() if not k.startswith("input")
    }


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--worker":  # pragma: no cover
    _start, _count, _seed, _folder = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
    _folder.mkdir(parents=True, exist_ok=True)
    run_fuzz(_count, _seed, _folder, first=_start, report=lambda i, k, o: print(i, k, o, flush=True))
elif __name__ == "__main__":  # pragma: no cover - prints the counts for docs/security.md
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        counts = run_isolated(int(sys.argv[1]) if len(sys.argv) > 1 else 600, seed=20, folder=Path(tmp))
    print(dict(sorted(counts.items())))
