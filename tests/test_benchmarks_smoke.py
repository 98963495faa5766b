"""Smoke tests of the benchmark harness (no torch needed) and of the naive LeNet baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import requires_numba

ROOT = Path(__file__).resolve().parent.parent


def test_harness_runs_one_case_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmarks`` (its ``main``, in this process: the workers are subprocesses either way;
    ``test_unknown_case_is_refused`` starts the module itself) runs a quick case end to end."""
    from benchmarks.__main__ import main

    out = tmp_path / "bench.json"
    argv = ["--quick", "--rounds", "2", "--cases", "mlp_train", "--impls", "ours", "floor"]
    assert main([*argv, "--settle", "0", "--json", str(out)]) == 0  # no waits between the rounds
    stdout = capsys.readouterr().out
    assert "mlp_train" in stdout and "ours/floor" in stdout
    results = json.loads(out.read_text())
    entry = results["cases"]["mlp_train"]
    assert entry["errors"] == {}
    assert len(entry["samples"]["ours"]) == 2 and len(entry["samples"]["floor"]) == 2
    assert all(v > 0 for v in entry["samples"]["ours"] + entry["samples"]["floor"])
    assert set(entry["ratios"]) == {"floor"}
    assert results["settings"]["threads"] == 2


def test_unknown_case_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--cases", "no_such_case"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no_such_case" in proc.stderr


def test_summarize_and_ratios() -> None:
    from benchmarks.report import paired_ratios, summarize

    stats = summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert stats["median"] == 3.0 and stats["min"] == 1.0 and stats["max"] == 5.0
    assert stats["q1"] == 2.0 and stats["q3"] == 4.0
    ratios = paired_ratios({"ours": [1.0, 2.0, 4.0], "torch": [2.0, 2.0, 2.0]})
    assert ratios["torch"]["paired_median"] == 1.0
    assert ratios["torch"]["paired_min"] == 0.5 and ratios["torch"]["paired_max"] == 2.0
    assert ratios["torch"]["of_medians"] == 1.0


def test_naive_lenet_matches_the_framework(float64: None) -> None:
    """Same weights, same batch, no dropout: the loop baseline and the framework agree."""
    from benchmarks.cases_models import build_ours
    from benchmarks.naive_lenet import NaiveLeNet

    model = build_ours("lenet_bn")
    model.layers[-2].p = 0.0  # the Dropout before the classifier
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 1, 28, 28))
    labels = np.array([1, 7, 3])
    model.train()
    logits = model.forward(x)
    naive = NaiveLeNet(p=0.0, dtype=np.float64)
    naive.load([p.data for p in model.parameters()])
    naive_logits = naive.forward(x)
    np.testing.assert_allclose(naive_logits, logits, rtol=1e-10, atol=1e-12)

    _, dlogits = naive.loss_and_grad(naive_logits, labels)
    model.zero_grad()
    model.backward(dlogits)
    naive.backward(dlogits)
    for name, p in zip(
        ("conv1.weight", "bn1.weight", "conv2.weight", "fc1.weight", "fc3.bias"),
        [model.parameters()[i] for i in (0, 2, 4, 8, 13)],
    ):
        np.testing.assert_allclose(naive.grads[name], p.grad, rtol=1e-8, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("pad", [0, 2])
def test_naive_conv_backward_is_the_adjoint(pad: int) -> None:
    """<conv(x), g> = <x, conv_backward(g)>: the loop's input gradient is the forward's adjoint."""
    from benchmarks.naive_lenet import conv2d_backward, conv2d_forward

    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    y, xp = conv2d_forward(x, w, np.zeros(4), pad)
    g = rng.standard_normal(y.shape)
    dx, _, _ = conv2d_backward(g, xp, w, pad)
    assert dx.shape == x.shape
    assert np.isclose(np.vdot(y, g), np.vdot(x, dx))


def test_fashion_case_builds_the_example_model() -> None:
    """The fashion_cnn case trains the example's own model (it imports its sibling ``common``)."""
    from benchmarks.cases_models import _fashion_example, build_ours

    assert _fashion_example() is not None
    model = build_ours("fashion_cnn")
    model.build((None, 1, 28, 28))
    assert model.layers[0].out_channels == 16
    conv = (1 * 9 + 1) * 16 + (16 * 9 + 1) * 32
    batch_norm = 2 * (16 + 32)
    linear = (32 * 7 * 7 + 1) * 128 + (128 + 1) * 10
    assert model.count_params(trainable=True) == conv + batch_norm + linear


@pytest.mark.parametrize("layer", ["fashion", "lenet"])
def test_conv_phases_runs_and_times_the_lowerings(capsys: pytest.CaptureFixture[str], layer: str) -> None:
    """The three lowerings built on products, and the direct one's kernels where numba imports."""
    from benchmarks import conv_phases
    from framework.runtime import jit

    conv_phases.main(["--threads", "1", "--calls", "1", "--layer", layer])
    out = capsys.readouterr().out
    assert (
        "per-sample (1 threads)" in out and "row grid (1 threads)" in out and "batch last (1 threads)" in out
    )
    direct = jit.available() and jit.first_use_kernels()
    assert ("direct, each kernel on one thread" in out) is direct
    assert out.count("= total") == 3 + direct
    if direct:
        assert "= taps (direct)" in out and "dW taps" in out


def test_batched_floor_counts_the_plain_products_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The attention floor is the plain products' time plus the batched ones', not the plain twice."""
    import time

    import benchmarks.floors as floors
    from benchmarks.cases_attention import batched_gemm_floor

    def slow_plain(shapes: list[tuple[int, ...]], steps: int) -> object:
        def run() -> float:
            time.sleep(0.05)  # 50 ms of "products" in all, reported as 5 ms per step over 10 steps
            return 5.0

        return run

    monkeypatch.setattr(floors, "gemm_floor", slow_plain)
    run = batched_gemm_floor([(2, 3, 4, 5)], steps=10)
    assert 5.0 <= run() < 6.0  # was 10+: the plain products' 50 ms were counted again as batched time


def test_jit_ab_times_both_engines_of_one_case(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import jit_ab
    from framework.runtime import jit

    jit_ab.main(["mlp_train_ours", "--rounds", "1", "--threads", "1", "--quick"])  # no kernel: no compile
    out = capsys.readouterr().out
    assert out.startswith("mlp_train_ours, 1 rounds, ms/step")
    assert "NumPy path" in out
    assert ("compiled kernels" in out) is jit.available()
    with pytest.raises(SystemExit):
        jit_ab.main(["not_a_case"])


def test_layer_times_splits_a_step_by_layer_for_each_layout(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import layer_times

    layer_times.main(["lenet", "--epochs", "1", "--threads", "1", "--quick", "--layouts", "never", "always"])
    out = capsys.readouterr().out
    assert out.startswith("lenet: ms per step, 1 epochs of")
    never, always = out.split("layouts 'always'")
    # the public layout calls forward/backward; the batch-last run (both convolutions and their
    # pools) calls the starred forms, the layers after it the plain ones
    assert "3 Conv2d forward " in never and "*" not in never
    assert "0 Conv2d forward*" in always and "5 MaxPool2d backward*" in always
    assert "7 Linear forward " in always and "Linear forward*" not in always
    assert "outside the layers" in never and "outside the layers" in always
    with pytest.raises(SystemExit):
        layer_times.main(["resnet"])


@requires_numba
def test_the_header_says_which_kernels_ours_runs(monkeypatch, tmp_path):
    from benchmarks.__main__ import kernels_note

    monkeypatch.setenv("FRAMEWORK_KERNEL_CACHE", str(tmp_path))  # empty: no build
    monkeypatch.setenv("FRAMEWORK_JIT", "auto")
    assert "compiled at first use: no ahead-of-time build" in kernels_note()
    monkeypatch.setenv("FRAMEWORK_JIT", "0")
    assert kernels_note().startswith("on NumPy (FRAMEWORK_JIT=0")
