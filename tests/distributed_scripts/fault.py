"""Run under ``mpiexec -n 2``: a failure on rank 1 must end the whole job quickly.

``python fault.py raise``: rank 1 raises in the middle of the first epoch
while rank 0 goes on into the next gradient allreduce; the abort hook must
print rank 1's traceback and abort both ranks.

``python fault.py timeout [report]``: rank 1 never joins an allreduce; rank
0's collective, with a 0.25 s timeout, must raise DistributedError naming it
(rank 1 sleeps a minute, so the timeout is the only way out, however loaded
the machine: a short one cannot fire for any other reason).
Rank 0 also writes the error to the file ``report`` before it propagates:
mpiexec may lose a rank's last stderr lines when the job aborts under load.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from framework import Sequential, distributed
from framework.distributed import DistributedOptimizer
from framework.layers import Linear
from framework.training.callbacks import LambdaCallback


def fail_mid_epoch(batch: int, logs: object) -> None:
    if distributed.rank() == 1 and batch == 3:
        raise ValueError("injected failure on batch 3")


def main(mode: str) -> None:
    if mode == "timeout":
        distributed.init(timeout=0.25)
        if distributed.rank() == 1:
            time.sleep(60)
        try:
            distributed.allreduce(np.ones(4))
        except Exception as error:
            if len(sys.argv) > 2:
                with open(sys.argv[2], "w") as report:
                    report.write(f"{type(error).__name__}: {error}\n")
            raise
        return
    model = Sequential([Linear(8, 4)])
    model.compile(DistributedOptimizer("sgd"), loss="mse")
    x = np.random.default_rng(0).normal(size=(640, 8)).astype(np.float32)
    model.fit(
        x,
        x[:, :4],
        epochs=3,
        batch_size=16,
        verbose=0,
        callbacks=[LambdaCallback(on_train_batch_end=fail_mid_epoch)],
    )


if __name__ == "__main__":
    main(sys.argv[1])
