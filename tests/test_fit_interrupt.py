"""Ctrl-C during fit: training stops after the current batch and fit returns the History so far."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from support import subprocess_env

import framework
from framework import Sequential
from framework.layers import Linear

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import framework
    from framework import Sequential
    from framework.training.callbacks import LambdaCallback
    from framework.layers import Linear

    out_npz, out_json = sys.argv[1], sys.argv[2]
    framework.set_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model = Sequential([Linear(4, 32, activation="relu"), Linear(32, 2)])
    model.compile("adam", "cross_entropy", metrics=["accuracy"])

    def marker(epoch, logs):
        if epoch == 1:
            print("EPOCHS_RUNNING", flush=True)

    history = model.fit(x, y, epochs=100000, batch_size=16, verbose=0,
                        callbacks=[LambdaCallback(on_epoch_end=marker)])
    np.savez(out_npz, **model.state_dict())
    json.dump({"history": history.history, "epoch": history.epoch, "model_epoch": model.epoch,
               "interrupted": history.interrupted, "training": model.training}, open(out_json, "w"))
    print("FIT_RETURNED", flush=True)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery to a child differs on Windows")
def test_sigint_stops_fit_and_returns_history(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out_npz, out_json = tmp_path / "weights.npz", tmp_path / "history.json"
    env = subprocess_env(PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out_npz), str(out_json)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "EPOCHS_RUNNING", proc.stderr.read()
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "FIT_RETURNED" in stdout
    assert "Training interrupted" in stderr

    result = json.loads(out_json.read_text())
    assert result["interrupted"] is True
    n = len(result["epoch"])
    assert n >= 2 and result["model_epoch"] == n
    assert result["epoch"] == list(range(n))
    assert all(len(v) == n for v in result["history"].values())
    assert result["training"] is False  # fit returns the model in inference mode, interrupted or not

    model = Sequential([Linear(4, 32, activation="relu"), Linear(32, 2)])
    with np.load(out_npz) as saved:
        state = dict(saved)
    assert all(np.all(np.isfinite(v)) for v in state.values())
    model.load_state_dict(state)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model.compile("adam", "cross_entropy", metrics=["accuracy"])
    assert model.evaluate(x, y)["accuracy"] > 0.9  # the weights are the trained ones


def test_keyboard_interrupt_raised_inside_a_batch_is_caught(capsys):
    """Where no SIGINT handler can be installed, a raised KeyboardInterrupt still ends fit cleanly."""
    framework.set_seed(0)
    x = np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = Sequential([Linear(2, 4), Linear(4, 2)])
    model.compile("sgd", "cross_entropy")

    def interrupt(epoch, logs):
        if epoch == 2:
            raise KeyboardInterrupt

    cb = framework.training.callbacks.LambdaCallback(on_epoch_begin=interrupt)
    history = model.fit(x, y, epochs=10, callbacks=[cb], verbose=0)
    assert history.interrupted and history.epoch == [0, 1] and model.epoch == 2
    assert "Training interrupted" in capsys.readouterr().err
    assert np.all(np.isfinite(model.predict(x)))
