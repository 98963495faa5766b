"""The compiled kernels (``framework.runtime.jit``, the ``[jit]`` extra): the switch, and each kernel
against the NumPy path it replaces, against float64 references and against PyTorch."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading

import numpy as np
import pytest

from framework.errors import ConfigError
from framework.layers import BatchNorm
from framework.runtime import jit
from framework.runtime.dtype import default_dtype
from framework.testing import check_gradients
from tests.support import requires_numba, requires_torch, spy_on, subprocess_env

ENGINES = (False, True)


# -- the switch ------------------------------------------------------------------


@pytest.fixture
def default_choice():
    jit.set_enabled(None)
    yield
    jit.set_enabled(None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", False), ("off", False), ("auto", None), ("", None), ("1", True), ("yes", True)],
)
def test_environment_variable_decides_when_nothing_is_set(monkeypatch, default_choice, value, expected):
    monkeypatch.setenv("FRAMEWORK_JIT", value)
    if expected is True and not jit.available():
        with pytest.raises(ConfigError, match=r"framework\[jit\]"):
            jit.enabled()
        return
    assert jit.enabled() is (jit.available() if expected is None else expected)


def test_a_bad_environment_value_is_refused(monkeypatch, default_choice):
    monkeypatch.setenv("FRAMEWORK_JIT", "maybe")
    with pytest.raises(ConfigError, match=r"FRAMEWORK_JIT: expected 0, 1 or auto, got 'maybe'"):
        jit.enabled()


def test_set_enabled_wins_over_the_environment_and_using_restores(monkeypatch, default_choice):
    monkeypatch.setenv("FRAMEWORK_JIT", "0")
    with jit.using(jit.available()):
        assert jit.enabled() is jit.available()
        with jit.using(False):
            assert jit.enabled() is False
        assert jit.enabled() is jit.available()
    assert jit.enabled() is False
    with pytest.raises(ConfigError, match="expected True, False or None, got 1"):
        jit.set_enabled(1)  # type: ignore[arg-type]


def test_asking_for_kernels_without_numba_names_the_extra(monkeypatch, default_choice):
    monkeypatch.setattr(jit, "_available", False)
    expected = r'numba is not installed \(or does not import\); pip install "framework\[jit\]"'
    with pytest.raises(ConfigError, match=expected):
        jit.set_enabled(True)
    monkeypatch.setenv("FRAMEWORK_JIT", "1")
    with pytest.raises(ConfigError, match=r"FRAMEWORK_JIT=1 asks for the compiled kernels"):
        jit.enabled()
    monkeypatch.setenv("FRAMEWORK_JIT", "auto")
    assert jit.enabled() is False  # the default falls back to NumPy
    layer = BatchNorm(3)
    x = np.random.default_rng(0).standard_normal((4, 3, 10)).astype(np.float32)
    assert layer(x).shape == x.shape


def test_import_framework_does_not_import_numba():
    code = "import sys, framework, framework.layers; print('numba' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), check=True
    )
    assert out.stdout.strip() == "False", out.stderr


# -- BatchNorm: compiled against NumPy -------------------------------------------


def _run(engine: bool, x: np.ndarray, g: np.ndarray, training: bool, **options):
    """One forward + backward of a fresh BatchNorm (gamma, beta set), under ``engine``."""
    rng = np.random.default_rng(7)
    with default_dtype(x.dtype):
        layer = BatchNorm(x.shape[1], **options)
    if layer.weight is not None:
        layer.weight.data[...] = rng.uniform(0.5, 1.5, x.shape[1])
        layer.bias.data[...] = rng.normal(size=x.shape[1])
    if layer.running_mean is not None:
        layer.running_mean.data[...] = rng.normal(size=x.shape[1])
        layer.running_var.data[...] = rng.uniform(0.5, 2.0, x.shape[1])
    layer.train(training)
    with jit.using(engine):
        y = layer(x)
        dx = layer.backward(g)
    state = {k: np.array(v) for k, v in layer.state_dict().items()}
    grads = {n: p.grad for n, p in layer.named_parameters()}
    return y, dx, state, grads


CASES = [  # (shape, options): rows of 8 and more take the kernels, longer than a block of 1024 too
    ((16, 3, 10), {}),
    ((8, 4, 7, 9), {}),
    ((3, 2, 2500), {}),
    ((64, 5, 4, 4), {"affine": False}),
    ((8, 3, 5, 5), {"momentum": None}),
    ((8, 3, 5, 5), {"track_running_stats": False}),
    ((6, 3, 2), {}),  # rows of 2: NumPy either way
]


@requires_numba
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm_kernels_equal_the_numpy_path(monkeypatch, dtype, training):
    from plugins import bn_kernels

    calls = spy_on(monkeypatch, bn_kernels, ("moments", "centred_affine", "train_backward"))
    rng = np.random.default_rng(3)
    tol = {"rtol": 2e-5, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    for shape, options in CASES:
        x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        calls.clear()
        ours = _run(True, x, g, training, **options)
        rows = int(np.prod(shape[2:]))
        uses_batch = training or options.get("track_running_stats") is False
        kernels = ["moments", "centred_affine", "train_backward"] if uses_batch else ["centred_affine"]
        expected = kernels if rows >= 8 else []
        assert calls == expected, (shape, options, calls)
        theirs = _run(False, x, g, training, **options)
        assert calls == expected, "the NumPy run called a kernel"
        for name, a, b in zip(("y", "dx"), ours[:2], theirs[:2], strict=True):
            assert a.dtype == b.dtype == dtype, (shape, options, name)
            np.testing.assert_allclose(a, b, **tol, err_msg=f"{shape} {options} {name}")
        for part in (2, 3):
            assert ours[part].keys() == theirs[part].keys()
            for key in ours[part]:
                a, b = ours[part][key], theirs[part][key]
                np.testing.assert_allclose(a, b, **tol, err_msg=f"{shape} {key}")


@requires_numba
def test_batchnorm_kernels_are_as_accurate_as_float64_on_an_offset_input():
    """A mean of 1e4 over a std of 1: the kernels centre before they scale, so float32 keeps ~1e-3."""
    rng = np.random.default_rng(5)
    x64 = rng.standard_normal((32, 4, 64)) + 1e4
    g64 = rng.standard_normal(x64.shape)
    reference = _run(False, x64, g64, True)
    for engine in ENGINES:
        y, dx, _, grads = _run(engine, x64.astype(np.float32), g64.astype(np.float32), True)
        assert np.abs(y - reference[0]).max() < 5e-3, engine
        assert np.abs(dx - reference[1]).max() < 5e-3, engine
        np.testing.assert_allclose(grads["weight"], reference[3]["weight"], rtol=1e-3, atol=0.2)


@requires_numba
def test_batchnorm_kernels_propagate_nan_and_inf_like_numpy():
    x = np.random.default_rng(1).standard_normal((8, 3, 12)).astype(np.float32)
    x[2, 0, 5], x[3, 1, 0] = np.nan, np.inf
    g = np.ones_like(x)
    with np.errstate(invalid="ignore"):
        _check_nan_and_inf(x, g)


def _check_nan_and_inf(x: np.ndarray, g: np.ndarray) -> None:
    for training in (True, False):
        ours, theirs = _run(True, x, g, training), _run(False, x, g, training)
        for a, b in zip(ours[:2], theirs[:2], strict=True):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            finite = np.isfinite(b)
            np.testing.assert_allclose(a[finite], b[finite], rtol=2e-5, atol=2e-5)


@requires_numba
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm_kernel_gradients_match_finite_differences(training):
    rng = np.random.default_rng(11)
    with default_dtype(np.float64):
        layer = BatchNorm(3)
    layer.weight.data[...] = rng.uniform(0.5, 1.5, 3)
    layer.bias.data[...] = rng.normal(size=3)
    layer.train(training)
    with jit.using(True):
        check_gradients(layer, rng.standard_normal((4, 3, 3, 5)))


@requires_numba
def test_batchnorm_kernels_run_side_by_side_in_threads():
    """The kernels release the GIL; two threads on two layers get what one thread gets."""
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((16, 8, 100)).astype(np.float32) for _ in range(2)]
    expected = [_run(True, x, x, True)[1] for x in xs]
    results: list[list[np.ndarray]] = [[], []]

    def work(k: int) -> None:
        for _ in range(20):
            results[k].append(_run(True, xs[k], xs[k], True)[1])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        assert len(results[k]) == 20
        for dx in results[k]:
            np.testing.assert_array_equal(dx, expected[k])


@requires_torch
@pytest.mark.parametrize("engine", [False, pytest.param(True, marks=requires_numba)], ids=["numpy", "jit"])
def test_batchnorm_training_steps_match_pytorch_on_either_engine(engine):
    import torch

    rng = np.random.default_rng(4)
    ours = BatchNorm(6, momentum=0.2)
    theirs = torch.nn.BatchNorm2d(6, momentum=0.2)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, 6).astype(np.float32)))
        theirs.bias.copy_(torch.from_numpy(rng.normal(size=6).astype(np.float32)))
    ours.weight.data[...] = theirs.weight.detach().numpy()
    ours.bias.data[...] = theirs.bias.detach().numpy()
    with jit.using(engine):
        for step in range(3):
            x = (rng.standard_normal((10, 6, 9, 9)) * 2 + step).astype(np.float32)
            g = rng.standard_normal(x.shape).astype(np.float32)
            ours.zero_grad()
            y = ours(x)
            dx = ours.backward(g)
            xt = torch.from_numpy(x).requires_grad_(True)
            theirs.zero_grad()
            yt = theirs(xt)
            yt.backward(torch.from_numpy(g))
            np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ours.running_mean.data, theirs.running_mean.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.running_var.data, theirs.running_var.numpy(), rtol=1e-5, atol=1e-6)
        ours.eval()
        theirs.eval()
        x = rng.standard_normal((5, 6, 9, 9)).astype(np.float32)
        expected = theirs(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(ours(x), expected, rtol=1e-5, atol=1e-5)


# -- MaxPool2d(2): compiled against NumPy -----------------------------------------


def _pool_run(engine: bool, x: np.ndarray, g_seed: int, training: bool):
    from framework.layers import MaxPool2d

    layer = MaxPool2d(2)
    layer.train(training)
    with jit.using(engine):
        y = layer(x)
        g = np.random.default_rng(g_seed).standard_normal(y.shape).astype(x.dtype)
        return y, layer.backward(g)


@requires_numba
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_max_pool_2x2_kernels_equal_the_numpy_path(monkeypatch, dtype, training):
    from plugins import pool_kernels

    calls = spy_on(monkeypatch, pool_kernels, ("max_pool_2x2", "max_pool_2x2_backward"))
    rng = np.random.default_rng(8)
    for shape in [(2, 3, 4, 4), (3, 2, 7, 9), (1, 1, 2, 2), (4, 5, 28, 28), (2, 3, 3, 2)]:
        # small integers: many ties (the first maximum wins), zeros, and NaN and -inf windows
        x = rng.integers(-2, 3, size=shape).astype(dtype)
        x[0, 0].flat[:3] = np.nan
        x[-1, -1, :2, :2] = -np.inf
        x[0, -1, 0, 1] = np.nan
        calls.clear()
        y, dx = _pool_run(True, x, 1, training)
        assert calls == ["max_pool_2x2", "max_pool_2x2_backward"], (shape, calls)
        y_np, dx_np = _pool_run(False, x, 1, training)
        assert len(calls) == 2, "the NumPy run called a kernel"
        assert y.dtype == dx.dtype == dtype
        np.testing.assert_array_equal(y, y_np, err_msg=str(shape))
        np.testing.assert_array_equal(dx, dx_np, err_msg=str(shape))


@requires_numba
def test_max_pool_kernels_leave_other_windows_to_numpy(monkeypatch):
    from framework.layers import MaxPool2d
    from plugins import pool_kernels

    monkeypatch.setattr(pool_kernels, "max_pool_2x2", lambda *a, **k: pytest.fail("kernel called"))
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 9)).astype(np.float32)
    with jit.using(True):
        for layer in (
            MaxPool2d(3, 2),
            MaxPool2d(2, 1),
            MaxPool2d(2, padding=1),
            MaxPool2d(2, ceil_mode=True),
        ):
            layer(x)
        MaxPool2d(2)(x[:, :, ::2])  # not contiguous
        MaxPool2d(2)(x.astype(np.float16))


@requires_numba
def test_max_pool_kernel_gradients_match_finite_differences():
    from framework.layers import MaxPool2d

    x = np.random.default_rng(3).permutation(2 * 3 * 5 * 6).reshape(2, 3, 5, 6).astype(np.float64) / 7
    with jit.using(True):
        check_gradients(MaxPool2d(2), x)


# -- a whole model under fit -------------------------------------------------------


@requires_numba
@pytest.mark.parametrize("threads", [1, 2], ids=["one-thread", "two-shards"])
@pytest.mark.parametrize("layout", ["never", "auto"], ids=["public-layout", "batch-last-runs"])
def test_a_cnn_trains_to_the_same_weights_on_either_engine(monkeypatch, threads, layout):
    """The example CNN's layers (per-sample and batch-last convolutions, BatchNorm, MaxPool2d(2)) in
    fit, in the public layout and with the batch-last runs (the whole stack one run when compiled)."""
    import plugins.conv_base as conv_base
    from framework import Sequential
    from framework.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
    from framework.models import layouts
    from plugins import bn_kernels, im2col_kernels, pool_kernels

    monkeypatch.setattr(conv_base.blas, "num_threads", lambda: 2)  # as on 2 BLAS threads
    calls: list[str] = []
    spy_on(monkeypatch, bn_kernels, ("train_backward",), into=calls)
    spy_on(monkeypatch, pool_kernels, ("max_pool_2x2_backward",), into=calls)
    spy_on(monkeypatch, im2col_kernels, ("to_batch_last", "im2col"), into=calls)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((32, 1, 16, 16))
    y = rng.integers(0, 3, 32)
    weights = []
    with default_dtype(np.float64):
        for engine in ENGINES:
            framework_rng = np.random.default_rng(0)
            model = Sequential(
                [
                    Conv2d(1, 8, 3, padding=1),
                    BatchNorm(8),
                    ReLU(),
                    MaxPool2d(2),
                    Conv2d(8, 8, 3, padding=1),  # 72 rows: the row grid on NumPy, batch-last compiled
                    BatchNorm(8),
                    ReLU(),
                    MaxPool2d(2),
                    Flatten(),
                    Linear(128, 3),
                ]
            )
            model.build((None, 1, 16, 16))
            for parameter in model.parameters():  # not the running variances, which must stay positive
                parameter.data[...] = framework_rng.standard_normal(parameter.data.shape) * 0.3
            model.compile("adam", loss="cross_entropy")
            with jit.using(engine), layouts.using(layout):
                history = model.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0, threads=threads)
            weights.append((history.history["loss"], model.get_weights()))
    ran = set(calls)
    if layout == "never":
        assert ran == {"train_backward", "max_pool_2x2_backward", "to_batch_last", "im2col"}, ran
    else:  # one run: NCHW's pool and per-sample im2col unused; the closing pool's gradient converted
        assert ran == {"train_backward", "to_batch_last"}, ran
    np.testing.assert_allclose(weights[0][0], weights[1][0], rtol=1e-7)
    for a, b in zip(weights[0][1], weights[1][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)  # float64 sums in another order, 12 Adam steps


def test_a_numba_that_does_not_import_is_warned_about_and_numpy_runs(monkeypatch, default_choice, tmp_path):
    import importlib.util

    monkeypatch.setenv("FRAMEWORK_KERNEL_CACHE", str(tmp_path))  # no build that would serve without numba
    monkeypatch.setattr(jit, "_available", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "numba" else None)
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` raises ImportError
    monkeypatch.setenv("FRAMEWORK_JIT", "auto")
    with pytest.warns(RuntimeWarning, match="numba is installed but does not import"):
        assert jit.enabled() is False
    x = np.random.default_rng(0).standard_normal((4, 3, 10)).astype(np.float32)
    assert BatchNorm(3)(x, training=True).shape == x.shape  # the NumPy path, no second warning
    with pytest.raises(ConfigError, match=r"numba is not installed \(or does not import\)"):
        jit.set_enabled(True)


# -- LayerNorm: compiled against NumPy ---------------------------------------------


@requires_numba
def test_layernorm_kernels_equal_the_numpy_path(monkeypatch, dtype):
    from framework.layers import LayerNorm
    from plugins import ln_kernels

    calls = spy_on(monkeypatch, ln_kernels, ("row_moments", "normalize", "backward"))
    rng = np.random.default_rng(9)
    tol = {"rtol": 2e-5, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    for shape, normalized, options in [
        ((6, 16), 16, {}),
        ((2, 5, 12), 12, {"bias": False}),
        ((3, 4, 5, 6), (5, 6), {}),
        ((4, 7), 7, {"elementwise_affine": False}),
    ]:
        x = (rng.standard_normal(shape) * 3 + 50).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        results = []
        for engine in ENGINES:
            with default_dtype(dtype):
                layer = LayerNorm(normalized, **options)
            for p in layer.parameters():
                p.data[...] = np.random.default_rng(2).standard_normal(p.data.shape)
            calls.clear()
            with jit.using(engine):
                y = layer(x, training=True)
                dx = layer.backward(g)
            assert calls == (["row_moments", "normalize", "backward"] if engine else []), calls
            results.append((y, dx, *(p.grad for p in layer.parameters())))
        for a, b in zip(*results, strict=True):
            assert a.dtype == b.dtype == dtype
            np.testing.assert_allclose(a, b, **tol, err_msg=f"{shape} {options}")


@requires_numba
def test_layernorm_rows_whose_squares_overflow_go_to_numpy_and_still_normalise():
    from framework.layers import LayerNorm

    x = np.array([[3e19, -3e19, 1e19, 0.0], [1.0, 2.0, 3.0, 4.0]], np.float32)
    with jit.using(True):
        y = LayerNorm(4)(x)
    with jit.using(False):
        expected = LayerNorm(4)(x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, expected, rtol=1e-6)


@requires_numba
def test_layernorm_kernel_gradients_match_finite_differences():
    from framework.layers import LayerNorm

    with default_dtype(np.float64), jit.using(True):
        layer = LayerNorm((3, 4))
        for p in layer.parameters():
            p.data[...] = np.random.default_rng(5).standard_normal(p.data.shape)
        check_gradients(layer, np.random.default_rng(6).standard_normal((2, 3, 4)))


def test_a_kernel_holds_the_lock_between_processes_on_its_first_call_per_kind_only(monkeypatch):
    entered: list[int] = []

    @contextlib.contextmanager
    def counting():
        entered.append(1)
        yield

    monkeypatch.setattr(jit, "_across_processes", counting)
    kernel = jit._FirstCalls(lambda a, b: a.sum() + b)
    f32, f64 = np.ones(3, np.float32), np.ones(3)
    assert kernel(f32, 1) == kernel(f32, 1) == 4.0
    assert len(entered) == 1
    kernel(f64, 1)  # another dtype: another compile
    kernel(f32[::2], 1)  # not contiguous: another compile
    kernel(f64, 2)
    assert len(entered) == 3


def test_a_lock_file_that_cannot_be_opened_only_loses_the_lock(monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "missing"))
    kernel = jit._FirstCalls(lambda a: a + 1)
    assert kernel(1) == 2  # the open fails (no such folder): the call runs without the lock
    assert not (tmp_path / "missing").exists()
