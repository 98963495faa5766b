"""Save and load of a 10-million-parameter model against raw h5py on the same arrays.

Run: ``python benchmarks/bench_checkpoint.py [--rounds 7]``. Rounds interleave
the framework and the raw baseline (A B A B) and report medians, the spread
(min-max) and the ratio framework / raw. The target is within 1.5x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import h5py
import numpy as np

import framework
from framework import Sequential
from framework.models.persistence import load_model


def build_model() -> Sequential:
    framework.set_seed(0)
    # 2048*2048*2 + 2048*512 + biases ~= 9.4M, plus 1024x512 -> about 10M parameters.
    model = Sequential(
        [
            framework.layers.Linear(1024, 2048, activation="relu"),
            framework.layers.Linear(2048, 2048, activation="relu"),
            framework.layers.Linear(2048, 2048, activation="relu"),
            framework.layers.Linear(2048, 512),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    return model


def raw_save(arrays: dict[str, np.ndarray], path: str) -> None:
    with h5py.File(path, "w") as handle:
        for name, array in arrays.items():
            handle.create_dataset(name, data=array)


def raw_save_fsync(arrays: dict[str, np.ndarray], path: str) -> None:
    """The raw write plus the fsync that an atomic, durable save needs."""
    raw_save(arrays, path)
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def raw_load(path: str) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {name: handle[name][()] for name in handle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    model = build_model()
    n_params = model.count_params()
    arrays = {name.replace(".", "_"): a for name, a in model.state_dict().items()}
    folder = tempfile.mkdtemp()
    ours, raw = os.path.join(folder, "model.h5"), os.path.join(folder, "raw.h5")
    times: dict[str, list[float]] = {
        "save": [],
        "raw save": [],
        "raw save+fsync": [],
        "load": [],
        "raw load": [],
    }
    for _ in range(args.rounds):
        t = time.perf_counter()
        model.save(ours)
        times["save"].append(time.perf_counter() - t)
        t = time.perf_counter()
        raw_save(arrays, raw)
        times["raw save"].append(time.perf_counter() - t)
        t = time.perf_counter()
        raw_save_fsync(arrays, raw)
        times["raw save+fsync"].append(time.perf_counter() - t)
        t = time.perf_counter()
        load_model(ours)
        times["load"].append(time.perf_counter() - t)
        t = time.perf_counter()
        raw_load(raw)
        times["raw load"].append(time.perf_counter() - t)
    print(f"model: {n_params:,} parameters, {n_params * 4 / 2**20:.1f} MiB float32; {args.rounds} rounds")
    print(f"{'case':<15} {'median ms':>10} {'min-max ms':>18}")
    for name, values in times.items():
        lo, hi = min(values) * 1e3, max(values) * 1e3
        print(f"{name:<15} {statistics.median(values) * 1e3:>10.1f} {lo:>8.1f}-{hi:<8.1f}")
    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"save / raw save:        {med['save'] / med['raw save']:.2f}x")
    print(f"save / raw save+fsync:  {med['save'] / med['raw save+fsync']:.2f}x")
    print(f"load / raw load:        {med['load'] / med['raw load']:.2f}x")


if __name__ == "__main__":
    main()
