"""Run under ``mpiexec -n 2``: the ranks build models of different shapes; ``fit`` must refuse, not hang.

Rank 0 has a hidden layer of 6 units, rank 1 of 5. Broadcasting rank 0's
parameters cannot fit rank 1's model: the job must fail with an error naming
the mismatch. Prints ``TRAINED <rank> <hidden units>`` if ``fit`` returns. With a path
argument, each rank also writes its error to ``<path>.<rank>`` before it
propagates (mpiexec may drop an aborting rank's last stderr lines under load).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from framework import Sequential, distributed
from framework.distributed import DistributedOptimizer
from framework.layers import Linear, ReLU
from framework.optimizers import SGD


def main() -> None:
    distributed.init(timeout=10)
    hidden = 6 - distributed.rank()
    model = Sequential([Linear(4, hidden), ReLU(), Linear(hidden, 2)])
    model.build((None, 4))
    model.compile(DistributedOptimizer(SGD(0.1)), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    try:
        model.fit(x, x[:, :2], epochs=1, batch_size=8, verbose=0)
    except Exception as error:
        if len(sys.argv) > 1:  # written whole, then renamed: the other rank's abort may kill this one
            report = Path(f"{sys.argv[1]}.{distributed.rank()}")
            partial = report.with_name(report.name + ".partial")
            partial.write_text(f"{type(error).__name__}: {error}")
            partial.rename(report)
        raise
    print("TRAINED", distributed.rank(), model.layers[0].weight.shape, flush=True)


if __name__ == "__main__":
    main()
