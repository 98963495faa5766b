"""PyTorch's ``momentum=None`` for BatchNorm: the cumulative moving average of the running statistics.

``running = (1 - f) running + f batch_stat`` with ``f = 1 / num_batches_tracked``,
the count incremented before the update (so the first batch replaces the initial
estimates). Checked against PyTorch (float32 and float64, 1d / 2d / 3d inputs,
affine on and off), against the closed form (the average of the batches'
statistics), through HDF5 checkpoints (resumed training bit for bit), PyTorch
state dicts both ways, ``fit(threads=K)``, configs, gradients, SyncBatchNorm
(one process and two MPI ranks) and InstanceNorm's ``momentum=None`` (where
PyTorch passes 0: the estimates never move).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from support import launch_mpi, ort_session, requires_h5py, requires_onnx, requires_torch

import framework
from framework import Sequential
from framework.base.context import Context
from framework.errors import CheckpointError, ConfigError, ShapeError
from framework.interchange.state_dicts import load_state_dict, state_dict
from framework.layers import Conv2d, Flatten, Linear, ReLU
from framework.optimizers import SGD
from framework.testing import check_gradients
from plugins.distributed import SyncBatchNorm
from plugins.group_norms import InstanceNorm1d, InstanceNorm2d
from plugins.normalization import BatchNorm

try:
    import torch
except ImportError:
    torch = None
try:
    import h5py
except ImportError:
    h5py = None

TORCH_DTYPES = {np.float32: torch.float32, np.float64: torch.float64} if torch is not None else {}
TORCH_BN = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}
SHAPES = [(6, 3), (4, 3, 5), (2, 3, 4, 5), (2, 3, 2, 3, 2)]


def _tol(dtype: type) -> dict[str, float]:
    return {"rtol": 2e-5, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-12}


@pytest.fixture
def restore_dtype():
    old = framework.get_default_dtype()
    yield
    framework.set_default_dtype(old)


def _ours_step(layer, x, gout, training):
    ctx = Context(training)
    y = layer.forward(ctx, x.copy())
    return y, layer.backward(ctx, gout.copy())


def _torch_step(module, x, gout, training):
    module.train(training)
    t = torch.tensor(x, requires_grad=True)
    y = module(t)
    y.backward(torch.tensor(gout))
    return y.detach().numpy(), t.grad.numpy()


def _assert_same_buffers(ours, ref, tol):
    theirs = dict(ref.named_buffers())
    for name, b in ours.named_buffers():
        np.testing.assert_allclose(b.data, theirs[name].numpy(), **tol, err_msg=name)
    theirs_count = ref.num_batches_tracked  # None without running statistics
    assert ours.num_batches_tracked == (0 if theirs_count is None else int(theirs_count))


# == against PyTorch ========================================================================


@requires_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(
    "kwargs", [{}, {"affine": False}, {"track_running_stats": False}], ids=["affine", "no-affine", "no-stats"]
)
@pytest.mark.parametrize("shape", SHAPES, ids=["NC", "NCL", "NCHW", "NCDHW"])
def test_matches_torch_over_training_steps_then_eval(shape, kwargs, dtype, rng, restore_dtype):
    """Five training steps (outputs, gradients, running statistics, count), then two eval calls."""
    framework.set_default_dtype(np.dtype(dtype).name)
    ours = BatchNorm(3, momentum=None, **kwargs)
    ref = getattr(torch.nn, TORCH_BN[len(shape)])(3, momentum=None, **kwargs).to(TORCH_DTYPES[dtype])
    if ours.weight is not None:
        for name in ("weight", "bias"):
            value = rng.standard_normal(3).astype(dtype)
            getattr(ours, name).data[...] = value
            with torch.no_grad():
                getattr(ref, name).copy_(torch.tensor(value))
    tol = _tol(dtype)
    for training in (True,) * 5 + (False, False):
        x = (3 * rng.standard_normal(shape) + 2).astype(dtype)
        gout = rng.standard_normal(shape).astype(dtype)
        ours.zero_grad()
        ref.zero_grad()
        y, gx = _ours_step(ours, x, gout, training)
        ty, tgx = _torch_step(ref, x, gout, training)
        assert y.dtype == gx.dtype == dtype
        np.testing.assert_allclose(y, ty, **tol, err_msg="output")
        np.testing.assert_allclose(gx, tgx, **tol, err_msg="input gradient")
        for name, p in ours.named_parameters():
            np.testing.assert_allclose(p.grad, getattr(ref, name).grad.numpy(), **tol, err_msg=name)
        _assert_same_buffers(ours, ref, tol)
    assert ours.num_batches_tracked == (5 if ours.track_running_stats else 0)


def test_first_batch_replaces_the_initial_estimates(float64, rng):
    layer = BatchNorm(2, momentum=None)
    layer.running_mean.data[...] = [1e3, -7.0]
    layer.running_var.data[...] = [1e3, 0.5]
    x = rng.standard_normal((5, 2, 3))
    layer.forward(Context(True), x)
    assert layer.num_batches_tracked == 1
    np.testing.assert_array_equal(layer.running_mean.data, x.mean(axis=(0, 2)))
    np.testing.assert_allclose(layer.running_var.data, x.transpose(1, 0, 2).reshape(2, -1).var(1, ddof=1))


def test_running_estimates_are_the_average_of_every_batch(float64, rng):
    """Unweighted by batch size, as PyTorch: the mean of the batch means and of the unbiased variances."""
    layer = BatchNorm(3, momentum=None)
    batches = [rng.normal(k, 1 + k, (n, 3)) for k, n in enumerate([4, 9, 2, 6, 3])]
    for x in batches:
        layer.forward(Context(True), x)
    np.testing.assert_allclose(layer.running_mean.data, np.mean([b.mean(0) for b in batches], 0), rtol=1e-12)
    np.testing.assert_allclose(
        layer.running_var.data, np.mean([b.var(0, ddof=1) for b in batches], 0), rtol=1e-12
    )


def test_eval_and_frozen_calls_do_not_count(float64, rng):
    layer = BatchNorm(3, momentum=None)
    layer.forward(Context(True), rng.standard_normal((4, 3)))
    before = layer.running_mean.data.copy()
    layer.forward(Context(False), rng.standard_normal((4, 3)))
    layer.trainable = False
    layer.forward(Context(True), rng.standard_normal((4, 3)))
    assert layer.num_batches_tracked == 1
    np.testing.assert_array_equal(layer.running_mean.data, before)


@requires_torch
@pytest.mark.parametrize("cls", [InstanceNorm1d, InstanceNorm2d])
@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_momentum_none_is_torch_s_frozen_estimates(cls, affine, float64, rng):
    """PyTorch's InstanceNorm passes momentum 0 for None: the running estimates keep their initial values."""
    shape = (4, 3, 5) if cls is InstanceNorm1d else (2, 3, 3, 4)
    ours = cls(3, momentum=None, affine=affine, track_running_stats=True)
    ref = getattr(torch.nn, cls.__name__)(3, momentum=None, affine=affine, track_running_stats=True).double()
    for training in (True, True, True, False):
        x = 2 * rng.standard_normal(shape) + 1
        gout = rng.standard_normal(shape)
        y, gx = _ours_step(ours, x, gout, training)
        ty, tgx = _torch_step(ref, x, gout, training)
        np.testing.assert_allclose(y, ty, **_tol(np.float64))
        np.testing.assert_allclose(gx, tgx, **_tol(np.float64))
        np.testing.assert_array_equal(ours.running_mean.data, ref.running_mean.numpy())
        np.testing.assert_array_equal(ours.running_var.data, ref.running_var.numpy())
    np.testing.assert_array_equal(ours.running_mean.data, np.zeros(3))


# == arguments and configs ==================================================================


@pytest.mark.parametrize("cls", [BatchNorm, SyncBatchNorm, InstanceNorm1d, InstanceNorm2d])
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.1", True, [0.1]])
def test_bad_momentum_is_a_config_error_naming_the_layer(cls, bad):
    with pytest.raises(ConfigError, match=rf"{cls.__name__}: momentum must be a number in \[0, 1\], or None"):
        cls(3, momentum=bad)


@pytest.mark.parametrize("cls", [BatchNorm, SyncBatchNorm, InstanceNorm1d])
def test_momentum_none_config_round_trip(cls):
    layer = cls(3, momentum=None)
    config = json.loads(json.dumps(layer.get_config()))
    assert config["momentum"] is None
    again = cls.from_config(config)
    assert again.momentum is None and again.get_config() == layer.get_config()
    assert "momentum=None" in repr(layer) or cls is InstanceNorm1d


def test_batchnorm3d_is_a_registered_alias():
    layer = framework.layers.get("BatchNorm3d", num_features=2, momentum=None)
    assert type(layer) is BatchNorm and layer.momentum is None


# == gradients ==============================================================================


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (3, 3, 2, 2)])
def test_gradients_are_those_of_finite_differences(shape, affine, float64, rng):
    layer = BatchNorm(3, momentum=None, affine=affine)
    layer.train()
    check_gradients(layer, rng.standard_normal(shape))
    layer.eval()  # after the checker's training calls: the cumulative estimates normalise
    assert layer.num_batches_tracked > 0
    check_gradients(layer, rng.standard_normal(shape))


def test_training_outputs_and_gradients_do_not_depend_on_momentum(float64, rng):
    a, b = BatchNorm(3, momentum=None), BatchNorm(3, momentum=0.1)
    for _ in range(3):
        x, g = rng.standard_normal((4, 3, 5)), rng.standard_normal((4, 3, 5))
        a.zero_grad()
        b.zero_grad()
        (ya, ga), (yb, gb) = _ours_step(a, x, g, True), _ours_step(b, x, g, True)
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(ga, gb)
        np.testing.assert_array_equal(a.weight.grad, b.weight.grad)
    assert not np.allclose(a.running_mean.data, b.running_mean.data)  # only the estimates differ


# == checkpoints ============================================================================


def _model(seed: int = 3) -> Sequential:
    framework.set_seed(seed)
    model = Sequential([Linear(5, 6), BatchNorm(6, momentum=None), ReLU(), Linear(6, 3)])
    model.compile(SGD(0.1, momentum=0.9), loss="cross_entropy")
    return model


def _data(rng, n=40):
    return rng.standard_normal((n, 5)), rng.integers(0, 3, n)


def _fit(model, x, y):
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)


def _state(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


@requires_h5py
def test_training_resumed_from_a_checkpoint_continues_bit_for_bit(float64, rng, tmp_path):
    x, y = _data(rng)
    straight = _model()
    _fit(straight, x, y)
    _fit(straight, x, y)
    resumed = _model()
    _fit(resumed, x, y)
    resumed.save(tmp_path / "half.h5")
    loaded = framework.load_model(tmp_path / "half.h5")
    assert loaded.layers[1].num_batches_tracked == 5 and loaded.layers[1].momentum is None
    _fit(loaded, x, y)
    assert loaded.layers[1].num_batches_tracked == straight.layers[1].num_batches_tracked == 10
    for name, value in _state(straight).items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value, err_msg=name)
    # without the count, the next batch would replace the estimates instead of averaging them in
    lost = framework.load_model(tmp_path / "half.h5")
    lost.layers[1].num_batches_tracked = 0
    _fit(lost, x, y)
    assert not np.allclose(lost.layers[1].running_mean.data, straight.layers[1].running_mean.data)


def _running_mean_path(path: Path) -> str:
    found: list[str] = []
    with h5py.File(path, "r") as handle:
        handle["weights"].visit(lambda name: found.append(name) if name.endswith("running_mean") else None)
    assert len(found) == 1, found
    return "weights/" + found[0]


@requires_h5py
def test_the_count_is_an_attribute_of_the_running_mean_dataset(float64, rng, tmp_path):
    x, y = _data(rng, 16)
    model = _model()
    _fit(model, x, y)
    model.save_weights(tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5", "r") as handle:
        dataset = handle[_running_mean_path(tmp_path / "w.h5")]
        assert int(dataset.attrs["num_batches_tracked"]) == 2
    target = _model(seed=9)
    target.layers[1].num_batches_tracked = 7
    target.load_weights(tmp_path / "w.h5")
    assert target.layers[1].num_batches_tracked == 2


@requires_h5py
def test_a_checkpoint_without_the_count_still_loads(float64, rng, tmp_path):
    """Files written before the count was kept: load_model starts at 0, load_weights keeps the model's."""
    x, y = _data(rng, 16)
    model = _model()
    _fit(model, x, y)
    model.save(tmp_path / "old.h5")
    with h5py.File(tmp_path / "old.h5", "r+") as handle:
        del handle[_running_mean_path(tmp_path / "old.h5")].attrs["num_batches_tracked"]
    loaded = framework.load_model(tmp_path / "old.h5")
    assert loaded.layers[1].num_batches_tracked == 0
    np.testing.assert_array_equal(loaded.layers[1].running_mean.data, model.layers[1].running_mean.data)
    target = _model(seed=9)
    target.layers[1].num_batches_tracked = 4
    target.load_weights(tmp_path / "old.h5")
    assert target.layers[1].num_batches_tracked == 4


@requires_h5py
@pytest.mark.parametrize("value", [np.int64(-1), "3", np.float64(2.0)], ids=["negative", "text", "float"])
def test_a_bad_saved_count_is_a_checkpoint_error(value, float64, rng, tmp_path):
    model = _model()
    _fit(model, *_data(rng, 16))
    model.save(tmp_path / "bad.h5")
    where = _running_mean_path(tmp_path / "bad.h5")
    with h5py.File(tmp_path / "bad.h5", "r+") as handle:
        handle[where].attrs["num_batches_tracked"] = value
    with pytest.raises(CheckpointError, match=rf"num_batches_tracked.*/{where}"):
        framework.load_model(tmp_path / "bad.h5")
    target = _model(seed=9)
    before = _state(target)
    with pytest.raises(CheckpointError, match="num_batches_tracked"):
        target.load_weights(tmp_path / "bad.h5")
    assert target.layers[1].num_batches_tracked == 0  # nothing changed
    for name, array in before.items():
        np.testing.assert_array_equal(target.state_dict()[name], array)


# == PyTorch state dicts ====================================================================


def _pair(rng):
    ours = Sequential([Linear(4, 3), BatchNorm(3, momentum=None)])
    ours.build((None, 4))
    ref = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3, momentum=None)).double()
    with torch.no_grad():  # the affine parameters too, so that they matter in the comparisons
        for p in ref.parameters():
            p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape))))
    return ours, ref


def _both_train(ours, ref, rng, steps):
    for _ in range(steps):
        x = rng.normal(1.0, 2.0, (6, 4))
        ours.forward(Context(True), x)
        ref.train()
        ref(torch.tensor(x))


def _assert_same_model(ours, ref, rng):
    bn, tbn = ours.layers[1], ref[1]
    _assert_same_buffers(bn, tbn, _tol(np.float64))
    x = rng.standard_normal((5, 4))
    ref.eval()
    np.testing.assert_allclose(ours.predict(x), ref(torch.tensor(x)).detach().numpy(), **_tol(np.float64))


@requires_torch
def test_a_torch_state_dict_sets_the_count_and_training_continues_as_torch(float64, rng):
    ours, ref = _pair(rng)
    for _ in range(3):
        ref.train()
        ref(torch.tensor(rng.normal(1.0, 2.0, (6, 4))))
    ours.load_state_dict(ref.state_dict())
    assert ours.layers[1].num_batches_tracked == 3
    _both_train(ours, ref, rng, 3)
    _assert_same_model(ours, ref, rng)
    # a dict without the count leaves ours as it is (PyTorch's rule)
    other, _ = _pair(rng)
    other.load_state_dict({k: v for k, v in ref.state_dict().items() if "num_batches" not in k})
    assert other.layers[1].num_batches_tracked == 0


@requires_torch
def test_our_torch_state_dict_carries_the_count_into_torch(float64, rng):
    ours, ref = _pair(rng)
    for _ in range(4):
        ours.forward(Context(True), rng.normal(1.0, 2.0, (6, 4)))
    exported = ours.state_dict(format="torch")
    assert exported["1.num_batches_tracked"].dtype == np.int64 and int(exported["1.num_batches_tracked"]) == 4
    ref.load_state_dict({k: torch.tensor(v) for k, v in exported.items()}, strict=True)
    assert int(ref[1].num_batches_tracked) == 4
    _both_train(ours, ref, rng, 3)
    _assert_same_model(ours, ref, rng)


@requires_torch
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_weight_files_carry_the_count_to_us_and_to_torch(suffix, float64, rng, tmp_path):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    ours, ref = _pair(rng)
    for _ in range(3):
        ours.forward(Context(True), rng.standard_normal((6, 4)))
    ours.save_weights(tmp_path / f"w{suffix}")
    other, _ = _pair(rng)
    other.load_weights(tmp_path / f"w{suffix}")
    assert other.layers[1].num_batches_tracked == 3
    if suffix == ".npz":
        arrays = {k: torch.tensor(v) for k, v in np.load(tmp_path / "w.npz").items()}
    else:
        from safetensors.torch import load_file

        arrays = load_file(tmp_path / "w.safetensors")
    ref.load_state_dict(arrays)
    assert int(ref[1].num_batches_tracked) == 3


@requires_torch
def test_a_count_of_shape_1_loads_as_pytorch_loads_it(float64, rng):
    """PyTorch's rule for a 0-d buffer: a one-element vector is taken as the scalar."""
    ours, _ = _pair(rng)
    state = dict(ours.state_dict(format="torch")) | {"1.num_batches_tracked": np.array([6])}
    ours.load_state_dict(state)
    assert ours.layers[1].num_batches_tracked == 6


@requires_torch
def test_safetensors_keeps_the_scalar_shape_of_the_count(float64, rng, tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.numpy import load_file

    ours, _ = _pair(rng)
    ours.save_weights(tmp_path / "w.safetensors")
    assert load_file(tmp_path / "w.safetensors")["1.num_batches_tracked"].shape == ()


@requires_torch
def test_a_bare_layer_loads_and_exports_the_count(float64, rng):
    ref = torch.nn.BatchNorm2d(2, momentum=None).double()
    for _ in range(2):
        ref(torch.tensor(rng.standard_normal((3, 2, 2, 2))))
    layer = BatchNorm(2, momentum=None)
    layer.build((None, 2, 2, 2))
    assert load_state_dict(layer, ref.state_dict()) == ([], [], [])
    assert layer.num_batches_tracked == 2 and int(state_dict(layer, "torch")["num_batches_tracked"]) == 2


@requires_torch
@pytest.mark.parametrize(
    "value, error",
    [
        (np.array(-1), ConfigError),
        (np.array(2.5), ConfigError),
        (np.array(True), ConfigError),
        (np.array([1, 2]), ShapeError),
    ],
    ids=["negative", "fraction", "bool", "shape"],
)
def test_a_bad_count_in_a_state_dict_is_refused_and_changes_nothing(value, error, float64, rng):
    ours, _ = _pair(rng)
    good = {k: v.copy() for k, v in ours.state_dict(format="torch").items()}
    bad = {k: torch.tensor(rng.standard_normal(v.shape)) for k, v in good.items()} | {
        "1.num_batches_tracked": value
    }
    with pytest.raises(error, match="num_batches_tracked"):
        ours.load_state_dict(bad)
    assert ours.layers[1].num_batches_tracked == 0
    for key, array in ours.state_dict(format="torch").items():
        np.testing.assert_array_equal(array, good[key])
    if error is ShapeError:  # not strict: loads the rest, reports the count
        report = ours.load_state_dict(bad, strict=False)
        assert report.mismatched_keys == ["1.num_batches_tracked: expected (), got (2,)"]
        assert ours.layers[1].num_batches_tracked == 0


@requires_torch
def test_the_count_under_both_namings_is_refused(float64, rng):
    ours, _ = _pair(rng)
    state = dict(ours.state_dict()) | {"batch_norm.num_batches_tracked": np.array(2)}
    ours.load_state_dict(state)  # the native name alone is accepted
    assert ours.layers[1].num_batches_tracked == 2
    state["1.num_batches_tracked"] = np.array(3)
    with pytest.raises(ConfigError, match="given twice"):
        ours.load_state_dict(state)


# == threads ================================================================================


def _cnn(seed: int = 3) -> Sequential:
    framework.set_seed(seed)
    model = Sequential(
        [Conv2d(1, 3, 3, padding=1), BatchNorm(3, momentum=None), ReLU(), Flatten(), Linear(3 * 6 * 6, 4)]
    )
    model.compile(SGD(0.05, momentum=0.9), loss="cross_entropy")
    return model


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_count_each_step_once_and_equal_one_thread(threads, float64, rng):
    """38 samples at batch 8: five steps (the last of 6 samples), counted once each, not once per shard."""
    x, y = rng.standard_normal((38, 1, 6, 6)), rng.integers(0, 4, 38)
    one, many = _cnn(), _cnn()
    one.fit(x, y, epochs=2, batch_size=8, seed=1, verbose=0)
    many.fit(x, y, epochs=2, batch_size=8, seed=1, verbose=0, threads=threads)
    assert many.layers[1].num_batches_tracked == one.layers[1].num_batches_tracked == 10
    for name, value in one.state_dict().items():
        np.testing.assert_allclose(many.state_dict()[name], value, rtol=0, atol=1e-12, err_msg=name)


# == SyncBatchNorm ==========================================================================


def test_sync_batchnorm_in_one_process_is_batchnorm(float64, rng):
    sync, plain = SyncBatchNorm(3, momentum=None), BatchNorm(3, momentum=None)
    for training in (True, True, True, False):
        x, g = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 2))
        (ys, gs), (yp, gp) = _ours_step(sync, x, g, training), _ours_step(plain, x, g, training)
        np.testing.assert_array_equal(ys, yp)
        np.testing.assert_array_equal(gs, gp)
    assert sync.num_batches_tracked == plain.num_batches_tracked == 3
    np.testing.assert_array_equal(sync.running_var.data, plain.running_var.data)


_MPI_SCRIPT = """
import numpy as np

import framework
from framework import Sequential, distributed
from framework.distributed import DistributedOptimizer
from framework.layers import BatchNorm, Linear, ReLU, SyncBatchNorm
from framework.optimizers import SGD

framework.set_default_dtype(np.float64)
rank = distributed.rank()
assert distributed.size() == 2


def build(norm, seed, wrap):
    framework.set_seed(seed)
    model = Sequential([Linear(5, 4), norm(4, momentum=None), ReLU(), Linear(4, 3)])
    model.build((None, 5))
    opt = SGD(0.05, momentum=0.9)
    model.compile(DistributedOptimizer(opt) if wrap else opt, loss="cross_entropy")
    return model


rng = np.random.default_rng(0)
x, y = rng.normal(1.0, 2.0, (96, 5)), rng.integers(0, 3, 96)
model = build(SyncBatchNorm, 10 + rank, True)
model.fit(x, y, epochs=2, batch_size=8, seed=3, verbose=0)
bn = model.layers[1]
mine = {k: np.array(v) for k, v in model.state_dict().items()}
mine["count"] = np.array(float(bn.num_batches_tracked))
other = distributed.broadcast(mine, root=1)
for k in mine:
    assert np.max(np.abs(mine[k] - other[k])) <= 1e-10, (rank, k)
if rank == 0:
    ref = build(BatchNorm, 10, False)
    ref.fit(x, y, epochs=2, batch_size=16, seed=3, verbose=0)
    assert bn.num_batches_tracked == ref.layers[1].num_batches_tracked == 12, bn.num_batches_tracked
    theirs = {k.replace("sync_batch_norm", "batch_norm"): v for k, v in ref.state_dict().items()}
    for k, v in mine.items():
        if k != "count":
            assert np.max(np.abs(v - theirs[k.replace("sync_batch_norm", "batch_norm")])) <= 1e-10, k
    print("OK syncbn-momentum-none", flush=True)
"""


def test_sync_batchnorm_on_two_ranks_averages_the_synchronised_batches(tmp_path):
    script = tmp_path / "syncbn_cumulative.py"
    script.write_text(textwrap.dedent(_MPI_SCRIPT))
    result = launch_mpi(str(script))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK syncbn-momentum-none" in result.stdout


# == other consumers ========================================================================


@requires_onnx
def test_onnx_export_of_momentum_none(float64, rng, tmp_path):
    pytest.importorskip("onnxruntime")
    model = Sequential([Linear(4, 3), BatchNorm(3, momentum=None)])
    model.build((None, 4))
    model.forward(Context(True), rng.standard_normal((6, 4)))
    model.export(tmp_path / "bn.onnx")
    session = ort_session(tmp_path / "bn.onnx")
    x = rng.standard_normal((5, 4))
    name = session.get_inputs()[0].name
    got = session.run(None, {name: x.astype(model.dtype)})[0]
    np.testing.assert_allclose(got, model.predict(x), rtol=1e-10, atol=1e-12)
