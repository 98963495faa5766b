"""Subclassed-model hunt: the lifecycle of user-written classes against PyTorch twins in float64.

Kinds of user code: a ``Model`` subclass in the context form (``forward(self, ctx, x)``
calling its children with ``ctx.child(...)``, layers held in a list and a dict, a
``Parameter`` and a ``Buffer`` of its own, one child used twice), one in the older form
(``forward(self, x)`` calling its children directly, with BatchNorm), a ``Sequential``
inside a functional ``Model`` inside a subclass, tied weights, and a custom layer with its
own ``Parameter`` and ``Buffer`` registered in a script or published as a plugin.

For each: build (explicit and lazy), ``summary()`` against the twin's parameter count,
``named_parameters`` names and order, state dicts and Keras's weight lists (and their
errors), freezing, modes reaching children in containers, one ``fit`` step and a manual
backward against ``torch.autograd``, ``save`` / ``load_model`` (``custom_objects``, a
class missing at load, a subclass without ``get_config``), ``save_weights``, ONNX export,
``copy.deepcopy`` and inference from several threads. Strict xfails mark the bugs left.
"""

from __future__ import annotations

import copy
import itertools
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import requires_h5py, requires_torch

import framework
from framework import Input, Model, Parameter, Sequential, hookimpl
from framework.base.context import Context
from framework.base.layer import Layer
from framework.base.parameter import Buffer
from framework.errors import CheckpointError, ConfigError, ExportError, NotBuiltError, ShapeError
from framework.layers import BatchNorm, Dropout, Linear, ReLU
from framework.registry.manager import REGISTRY

try:
    import torch

    nn = torch.nn
except ImportError:
    torch = nn = None

#: the base class of the PyTorch twins (``object`` without torch, whose tests skip)
_Module = nn.Module if nn is not None else object

TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def _dtype() -> np.dtype:
    return np.dtype(framework.get_default_dtype())


# -- the user code under test --------------------------------------------------------------------


class CtxNet(Model):
    """Context form: own Parameter and Buffer, a list and a dict of layers, one child used twice.

    ``y = out(b(b(tanh(fc1 x)))) * scale + offset`` with ``b = blocks[0]`` (shared).
    """

    def __init__(self, hidden: int = 5, name: str | None = None) -> None:
        super().__init__(name=name)
        self.hidden = hidden
        self.scale = Parameter(np.linspace(0.5, 1.5, 2).astype(_dtype()))
        self.fc1 = Linear(3, hidden, activation="tanh")
        self.blocks = [Linear(hidden, hidden)]
        self.heads = {"out": Linear(hidden, 2)}
        self.offset = Buffer(np.array([0.25, -0.5], dtype=_dtype()))

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        h = self.fc1.forward(ctx.child("fc1"), x)
        h = self.blocks[0].forward(ctx.child("first"), h)
        h = self.blocks[0].forward(ctx.child("second"), h)
        ctx.y = self.heads["out"].forward(ctx.child("out"), h)
        return ctx.y * self.scale.data + self.offset.data

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        self.scale.add_grad((grad_out * ctx.y).sum(axis=0))
        g = self.heads["out"].backward(ctx.child("out"), grad_out * self.scale.data)
        g = self.blocks[0].backward(ctx.child("second"), g)
        g = self.blocks[0].backward(ctx.child("first"), g)
        return self.fc1.backward(ctx.child("fc1"), g)

    def get_config(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "name": self.name}


class TorchCtxNet(_Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(2, dtype=torch.float64))
        self.fc1 = nn.Linear(3, 5)
        self.blocks = nn.ModuleList([nn.Linear(5, 5)])
        self.heads = nn.ModuleDict({"out": nn.Linear(5, 2)})
        self.register_buffer("offset", torch.zeros(2, dtype=torch.float64))

    def forward(self, x: Any) -> Any:
        h = self.blocks[0](self.blocks[0](torch.tanh(self.fc1(x))))
        return self.heads["out"](h) * self.scale + self.offset


class LegacyNet(Model):
    """The older form: ``forward(x)`` / ``backward(grad)`` calling the children by hand."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)
        self.fc1 = Linear(3, 6)
        self.bn = BatchNorm(6)
        self.act = ReLU()
        self.drop = Dropout(0.0)
        self.fc2 = Linear(6, 2)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.fc2(self.drop(self.act(self.bn(self.fc1(x)))))

    def backward(self, grad: np.ndarray) -> np.ndarray:
        g = self.act.backward(self.drop.backward(self.fc2.backward(grad)))
        return self.fc1.backward(self.bn.backward(g))


class TorchLegacyNet(_Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 6)
        self.bn = nn.BatchNorm1d(6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x: Any) -> Any:
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def _functional() -> Model:
    x = Input((4,))
    h = Sequential([Linear(4, 5, activation="tanh"), Linear(5, 4)])(x)
    return Model(x, Linear(4, 3)(h), name="func")


class NestedNet(Model):
    """A Sequential inside a functional Model inside this subclass."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)
        self.pre = Linear(3, 4, activation="relu")
        self.func = _functional()
        self.head = Linear(3, 2)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        h = self.pre.forward(ctx.child("pre"), x)
        h = self.func.forward(ctx.child("func"), h)
        return self.head.forward(ctx.child("head"), h)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        g = self.head.backward(ctx.child("head"), grad_out)
        g = self.func.backward(ctx.child("func"), g)
        return self.pre.backward(ctx.child("pre"), g)


class TorchNested(_Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Linear(3, 4)
        self.func = nn.Module()
        self.func.seq = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 4))
        self.func.lin = nn.Linear(4, 3)
        self.head = nn.Linear(3, 2)

    def forward(self, x: Any) -> Any:
        return self.head(self.func.lin(self.func.seq(torch.relu(self.pre(x)))))


class TiedNet(Model):
    """``dec.weight`` is ``enc.weight`` (one Parameter, two layers)."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)
        self.enc = Linear(3, 3, activation="tanh")
        self.dec = Linear(3, 3)
        self.dec.weight = self.enc.weight
        self.out = Linear(3, 2)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        h = self.dec.forward(ctx.child("dec"), self.enc.forward(ctx.child("enc"), x))
        return self.out.forward(ctx.child("out"), h)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        g = self.dec.backward(ctx.child("dec"), self.out.backward(ctx.child("out"), grad_out))
        return self.enc.backward(ctx.child("enc"), g)


class TorchTied(_Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(3, 3)
        self.dec = nn.Linear(3, 3)
        self.dec.weight = self.enc.weight
        self.out = nn.Linear(3, 2)

    def forward(self, x: Any) -> Any:
        return self.out(self.dec(torch.tanh(self.enc(x))))


class ScaleShift(Layer):
    """A custom layer: ``y = x * weight + shift``; ``weight`` a Parameter, ``shift`` a Buffer.

    ``num_features=None`` is inferred at build from the last axis.
    """

    def __init__(self, num_features: int | None = None, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.num_features = num_features
        self.weight: Parameter | None = None
        self.shift: Buffer | None = None
        if num_features is not None:
            self.build((None, num_features))

    def build(self, input_shape: Any) -> None:
        n = input_shape[-1]
        self.num_features = n
        self.weight = Parameter(np.linspace(0.5, 2.0, n).astype(_dtype()))
        self.shift = Buffer(np.linspace(-1.0, 1.0, n).astype(_dtype()))
        super().build(input_shape)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        ctx.x = x
        return x * self.weight.data + self.shift.data

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        self.weight.add_grad((grad_out * ctx.x).reshape(-1, self.num_features).sum(axis=0))
        return grad_out * self.weight.data

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_features": self.num_features}


class TorchScaleShift(_Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n, dtype=torch.float64))
        self.register_buffer("shift", torch.zeros(n, dtype=torch.float64))

    def forward(self, x: Any) -> Any:
        return x * self.weight + self.shift


def _scale_seq() -> Sequential:
    return Sequential([Linear(3, 4, activation="tanh"), ScaleShift(), Linear(4, 2)])


def _torch_scale_seq() -> Any:
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), TorchScaleShift(4), nn.Linear(4, 2))


def _scale_functional() -> Model:
    x = Input((3,))
    h = Linear(3, 4, activation="tanh")(x)
    return Model(x, Linear(4, 2)(ScaleShift()(h)))


KINDS: dict[str, tuple[Callable[[], Model], Callable[[], Any]]] = {
    "ctx": (CtxNet, TorchCtxNet),
    "legacy": (LegacyNet, TorchLegacyNet),
    "nested": (NestedNet, TorchNested),
    "tied": (TiedNet, TorchTied),
    "custom_seq": (_scale_seq, _torch_scale_seq),
    "custom_func": (_scale_functional, _torch_scale_seq),
}
SUBCLASSES = ["ctx", "legacy", "nested", "tied"]


def _data(n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3)), rng.standard_normal((n, 2))


def _twins(kind: str, seed: int = 0) -> tuple[Model, Any]:
    """A built model of ``kind`` with random weights, and its torch twin holding the same values."""
    make, make_torch = KINDS[kind]
    model = make()
    model.build((None, 3))
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = rng.uniform(-0.8, 0.8, p.shape)
    twin = make_torch().double()
    _copy_to_torch(model, twin)
    return model, twin


def _torch_buffers(twin: Any) -> list[tuple[str, Any]]:
    return [(k, b) for k, b in twin.named_buffers() if not k.endswith("num_batches_tracked")]


def _copy_to_torch(model: Model, twin: Any) -> None:
    ours = list(model.named_parameters())
    theirs = list(twin.named_parameters())
    assert len(ours) == len(theirs), ([n for n, _ in ours], [n for n, _ in theirs])
    with torch.no_grad():
        for (_, p), (name, t) in zip(ours, theirs):
            assert tuple(t.shape) == p.shape, name
            t.copy_(torch.from_numpy(np.asarray(p.data, dtype=np.float64)))
        for (_, b), (name, t) in zip(model.named_buffers(), _torch_buffers(twin)):
            assert tuple(t.shape) == b.shape, name
            t.copy_(torch.from_numpy(np.asarray(b.data, dtype=np.float64)))


# -- registering user classes for a test, and forgetting them ------------------------------------

_COUNTER = itertools.count()


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``plugins.register(*classes, distribution=None)`` / ``plugins.forget(cls)``; undone after the test."""
    REGISTRY.load()
    monkeypatch.setattr(REGISTRY, "_tables", {k: dict(v) for k, v in REGISTRY._tables.items()})
    monkeypatch.setattr(REGISTRY, "_by_object", {k: dict(v) for k, v in REGISTRY._by_object.items()})
    monkeypatch.setattr(REGISTRY, "plugins", list(REGISTRY.plugins))
    monkeypatch.setattr(REGISTRY, "_info_of", dict(REGISTRY._info_of))
    added: list[str] = []

    def register(*classes: type, distribution: str | None = None, version: str | None = None) -> None:
        module = types.ModuleType(f"hunt_subclassed_{next(_COUNTER)}")

        @hookimpl
        def register_layers(register: Any) -> None:
            for cls in classes:
                register(cls)

        module.register_layers = register_layers  # type: ignore[attr-defined]
        info = REGISTRY.register_plugin(module, distribution=distribution, version=version)
        added.append(f"{info.distribution or '-'}:{info.name}")

    def forget(cls: type) -> None:
        """As if the class were not registered (a fresh process that never ran the script)."""
        table = REGISTRY._tables["layers"]
        for key in [k for k, e in table.items() if e.obj is cls]:
            del table[key]
        REGISTRY._by_object["layers"].pop(id(cls), None)

    yield types.SimpleNamespace(register=register, forget=forget)
    for name in added:
        REGISTRY.pm.unregister(name=name)


# -- build ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_explicit_and_lazy_build_make_the_same_parameters(kind: str, float64: None) -> None:
    make = KINDS[kind][0]
    explicit = make()
    explicit.build((None, 3))
    lazy = make()
    out = lazy(np.zeros((2, 3)))
    assert out.shape == (2, 2)
    assert lazy.built and explicit.built
    shapes = [(n, p.shape) for n, p in explicit.named_parameters()]
    assert shapes == [(n, p.shape) for n, p in lazy.named_parameters()]
    assert [n for n, _ in explicit.named_buffers()] == [n for n, _ in lazy.named_buffers()]


def test_lazy_children_of_a_subclass_are_built_by_build(float64: None) -> None:
    class Lazy(Model):
        def __init__(self) -> None:
            super().__init__()
            self.layers_ = [Linear(output_size=4), ScaleShift()]

        def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
            h = self.layers_[0].forward(ctx.child(0), x)
            return self.layers_[1].forward(ctx.child(1), h)

        def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
            return self.layers_[0].backward(ctx.child(0), self.layers_[1].backward(ctx.child(1), grad_out))

    model = Lazy()
    with pytest.raises(NotBuiltError, match="Linear layer"):  # Keras: no count before the weights exist
        model.count_params()
    assert _summary_counts(model) == (0, 0, 0)
    model.build((None, 7))
    assert [(n, p.shape) for n, p in model.named_parameters()] == [
        ("layers_.0.weight", (4, 7)),
        ("layers_.0.bias", (4,)),
        ("layers_.1.weight", (4,)),
    ]
    assert model.count_params() == 7 * 4 + 4 + 4 + 4  # the Buffer counts as non-trainable
    assert model.count_params(trainable=False) == 4


# -- summary, parameters, order ------------------------------------------------------------------


def _summary_counts(model: Model) -> tuple[int, int, int]:
    lines: list[str] = []
    model.summary(print_fn=lines.append)

    def count(label: str) -> int:
        (line,) = [ln for ln in lines if ln.startswith(label)]
        return int(line.split(":")[1].replace(",", ""))

    return count("Total params"), count("Trainable params"), count("Non-trainable params")


@requires_torch
@pytest.mark.parametrize("kind", list(KINDS))
def test_summary_counts_equal_the_torch_twin(kind: str, float64: None) -> None:
    model, twin = _twins(kind)
    trainable = sum(p.numel() for p in twin.parameters())  # each tied parameter once
    buffers = sum(b.numel() for _, b in _torch_buffers(twin))
    assert _summary_counts(model) == (trainable + buffers, trainable, buffers)
    assert model.count_params() == trainable + buffers


@requires_torch
@pytest.mark.parametrize("kind", list(KINDS))
def test_parameters_are_unique_and_in_the_twin_order(kind: str, float64: None) -> None:
    model, twin = _twins(kind)
    params = model.parameters()
    assert len({id(p) for p in params}) == len(params)
    assert [p.shape for p in params] == [tuple(t.shape) for t in twin.parameters()]
    names = [n for n, _ in model.named_parameters()]
    assert len(set(names)) == len(names)


@requires_torch
def test_context_form_names_are_torch_names_with_list_and_dict_children(float64: None) -> None:
    model, twin = _twins("ctx")
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in twin.named_parameters()]
    assert sorted(model.state_dict()) == sorted(twin.state_dict())
    assert sorted(model.state_dict(format="torch")) == sorted(twin.state_dict())


@requires_torch
def test_tied_weight_is_one_parameter_counted_and_named_once(float64: None) -> None:
    model, twin = _twins("tied")
    assert model.dec.weight is model.enc.weight
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in twin.named_parameters()]
    assert model.count_params() == 12 + 3 + 8


# -- layers held in containers: parameters, modes, freezing ---------------------------------------


class Containers(Model):
    """Children in a list, a dict, a tuple, a list of lists and a dict of lists; Parameters in a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.listed = [Linear(3, 3)]
        self.keyed = {"drop": Dropout(0.5), "bn": BatchNorm(3)}
        self.pair = (Linear(3, 3), Linear(3, 3))
        self.deep = [[Linear(3, 3)], {"inner": [Dropout(0.2)]}]
        self.gains = {"g": Parameter(np.ones(3, dtype=_dtype()))}

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        for i, layer in enumerate(self._chain()):
            x = layer.forward(ctx.child(i), x)
        return x * self.gains["g"].data

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        g = grad_out * self.gains["g"].data
        for i, layer in reversed(list(enumerate(self._chain()))):
            g = layer.backward(ctx.child(i), g)
        return g

    def _chain(self) -> list[Layer]:
        return [
            self.listed[0],
            self.keyed["bn"],
            self.keyed["drop"],
            *self.pair,
            self.deep[0][0],
            self.deep[1]["inner"][0],
        ]


def test_parameters_in_lists_dicts_and_nested_containers_are_found(float64: None) -> None:
    model = Containers()
    model.build((None, 3))
    names = [n for n, _ in model.named_parameters()]
    assert names == [
        "gains.g",
        "listed.0.weight",
        "listed.0.bias",
        "keyed.bn.weight",
        "keyed.bn.bias",
        "pair.0.weight",
        "pair.0.bias",
        "pair.1.weight",
        "pair.1.bias",
        "deep.0.0.weight",
        "deep.0.0.bias",
    ]
    assert [n for n, _ in model.named_buffers()] == ["keyed.bn.running_mean", "keyed.bn.running_var"]
    assert model.count_params() == 3 + 4 * 12 + 6 + 6
    assert _summary_counts(model)[0] == model.count_params()


@pytest.mark.parametrize("attribute", ["layers", "weights", "dtype", "trainable_weights"])
def test_assigning_a_read_only_model_property_is_a_clear_config_error(attribute: str) -> None:
    """``self.layers = [...]`` is PyTorch's idiom; Model.layers is a property: say so, name the way out."""

    class Blocks(Model):
        def __init__(self) -> None:
            super().__init__(name="blocks_model")
            setattr(self, attribute, [Linear(3, 3)])

    with pytest.raises(
        ConfigError, match=rf"Blocks layer 'blocks_model': '{attribute}' is a read-only property"
    ):
        Blocks()


def test_train_eval_and_trainable_reach_children_in_containers(float64: None) -> None:
    model = Containers()
    model.build((None, 3))
    chain = model._chain()
    model.eval()
    assert [layer.training for layer in chain] == [False] * len(chain)
    model.train()
    assert all(layer.training for layer in chain)
    with model.mode(False):
        assert not any(layer.training for layer in chain)
    assert all(layer.training for layer in chain)
    model.trainable = False
    assert model.count_params(trainable=True) == 0
    assert not any(p.trainable for p in model.parameters())
    model.trainable = True
    assert all(p.trainable for p in model.parameters())


def test_a_model_in_a_container_runs_in_the_mode_of_the_call(float64: None) -> None:
    model = Containers()
    model.keyed["drop"].p = 0.9
    x = np.ones((64, 3))
    model.build((None, 3))
    model.train()
    a = model.predict(x)  # inference: Dropout off although every flag says training
    b = model.predict(x)
    np.testing.assert_array_equal(a, b)
    assert all(layer.training for layer in model._chain())


class LegacyBlock(Layer):
    """A custom composite layer in the older form: ``drop(bn(x))``, children called by hand."""

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.bn = BatchNorm(3)
        self.drop = Dropout(0.5)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.drop(self.bn(x))

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return self.bn.backward(self.drop.backward(grad))


@pytest.mark.parametrize(
    "kind",  # _twins builds the PyTorch twin too
    [pytest.param("legacy", marks=requires_torch), pytest.param("ctx", marks=requires_torch), "legacy_layer"],
)
@pytest.mark.parametrize("call_mode", [False, True])
def test_the_training_argument_of_a_call_reaches_children_called_by_hand(kind: str, call_mode: bool) -> None:
    """``model(x, training=m)`` runs as if every flag were ``m``, and leaves the flags as they were."""
    if kind == "legacy_layer":
        model: Layer = LegacyBlock()
        model.build((None, 3))
        model.bn.running_mean.data[...] = 0.5
        x = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    else:
        model, _ = _twins(kind, seed=21)
        x = _data(16)[0].astype(np.float32)
        if kind == "legacy":
            model.bn.running_mean.data[...] = 0.5
    model.train(not call_mode)
    flags = [m.training for m in model.modules()]
    framework.set_seed(5)
    got = model(x, training=call_mode)
    assert [m.training for m in model.modules()] == flags
    model.train(call_mode)
    framework.set_seed(5)
    expected = model(x)
    np.testing.assert_array_equal(got, expected)


# -- state dicts and Keras's weight lists --------------------------------------------------------


@requires_torch
@pytest.mark.parametrize("kind", [*SUBCLASSES, "custom_seq"])
def test_state_dict_round_trip_into_a_fresh_instance(kind: str, float64: None) -> None:
    model, _ = _twins(kind, seed=1)
    fresh, _ = _twins(kind, seed=2)
    x, _ = _data()
    model.eval()
    fresh.eval()
    assert not np.allclose(fresh(x), model(x))
    fresh.load_state_dict({k: v.copy() for k, v in model.state_dict().items()})
    np.testing.assert_array_equal(fresh(x), model(x))


@requires_torch
@pytest.mark.parametrize("kind", ["ctx", "legacy", "custom_seq"])
def test_a_torch_state_dict_loads_key_for_key_and_predicts_as_torch(kind: str, float64: None) -> None:
    model, twin = _twins(kind, seed=3)
    torch.manual_seed(0)
    with torch.no_grad():
        for t in [*twin.parameters(), *(b for _, b in _torch_buffers(twin))]:
            t.uniform_(0.2, 1.0)
    model.load_state_dict(twin.state_dict())
    x, _ = _data()
    model.eval()
    twin.eval()
    np.testing.assert_allclose(model(x), twin(torch.from_numpy(x)).detach().numpy(), **TIGHT)


@requires_torch
def test_a_torch_state_dict_of_tied_weights_loads_strictly(float64: None) -> None:
    model, twin = _twins("tied", seed=3)
    with torch.no_grad():
        for t in twin.parameters():
            t.uniform_(0.2, 1.0)
    model.load_state_dict(twin.state_dict())
    x, _ = _data()
    np.testing.assert_allclose(model.predict(x), twin(torch.from_numpy(x)).detach().numpy(), **TIGHT)


@requires_torch
def test_torch_loads_the_torch_format_state_dict_of_tied_weights_strictly(float64: None) -> None:
    model, _ = _twins("tied", seed=3)
    twin = TorchTied().double()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict(format="torch").items()})
    assert twin.dec.weight is twin.enc.weight
    np.testing.assert_array_equal(twin.enc.weight.detach().numpy(), model.enc.weight.data)


@requires_torch
def test_a_tied_weight_given_two_different_values_is_refused(float64: None) -> None:
    model, twin = _twins("tied", seed=3)
    state = {k: v.detach().numpy().copy() for k, v in twin.state_dict().items()}
    state["dec.weight"] = state["dec.weight"] + 1.0
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="name one tied parameter but hold different values"):
        model.load_state_dict(state)
    assert all(np.array_equal(v, model.state_dict()[k]) for k, v in before.items())


@requires_torch
def test_load_state_dict_names_missing_unexpected_and_misshaped_keys(float64: None) -> None:
    model, _ = _twins("ctx")
    state = {k: v.copy() for k, v in model.state_dict().items()}
    del state["heads.out.bias"], state["scale"]
    state["heads.out.gain"] = np.zeros(2)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(
        ConfigError, match=r"missing keys \[(scale, heads\.out\.bias|heads\.out\.bias, scale)\]"
    ) as info:
        model.load_state_dict(state)
    assert "unexpected keys [heads.out.gain]" in str(info.value) and "CtxNet" in str(info.value)
    state = {k: v.copy() for k, v in model.state_dict().items()}
    state["blocks.0.weight"] = np.zeros((5, 4))
    with pytest.raises(ShapeError, match=r"blocks\.0\.weight.*\(5, 5\).*\(5, 4\)"):
        model.load_state_dict(state)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    result = model.load_state_dict({"scale": np.full(2, 7.0), "nope": np.zeros(1)}, strict=False)
    assert result.unexpected_keys == ["nope"] and "fc1.weight" in result.missing_keys
    np.testing.assert_array_equal(model.scale.data, [7.0, 7.0])


@requires_torch
@pytest.mark.parametrize("kind", SUBCLASSES)
def test_get_set_weights_round_trip_and_refuse_wrong_count_or_shape(kind: str, float64: None) -> None:
    model, _ = _twins(kind, seed=4)
    fresh, _ = _twins(kind, seed=5)
    weights = model.get_weights()
    assert len(weights) == len(model.parameters()) + len(model.buffers())
    fresh.set_weights(weights)
    for a, b in zip(fresh.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(
        ShapeError, match=rf"set_weights: expected {len(weights)} arrays.*got {len(weights) - 1}"
    ):
        fresh.set_weights(weights[:-1])
    bad = [w.copy() for w in weights]
    bad[-1] = np.zeros((*bad[-1].shape, 2))
    name = [n for n, _ in fresh.named_weights()][-1]  # Keras's order: layer by layer
    with pytest.raises(ShapeError, match=rf"{name} expected shape"):
        fresh.set_weights(bad)


# -- training against torch ----------------------------------------------------------------------


def _torch_step(twin: Any, x: np.ndarray, y: np.ndarray, lr: float) -> float:
    twin.train()
    opt = torch.optim.SGD([p for p in twin.parameters() if p.requires_grad], lr=lr)
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(twin(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    opt.step()
    return float(loss.detach())


@requires_torch
@pytest.mark.parametrize("kind", list(KINDS))
def test_one_fit_step_equals_torch(kind: str, float64: None) -> None:
    model, twin = _twins(kind, seed=6)
    x, y = _data(8, seed=1)
    model.compile(framework.optimizers.get("sgd", learning_rate=0.1), "mse")
    history = model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    loss = _torch_step(twin, x, y, 0.1)
    np.testing.assert_allclose(history.history["loss"][0], loss, **TIGHT)
    for (name, p), t in zip(model.named_parameters(), twin.parameters()):
        np.testing.assert_allclose(p.data, t.detach().numpy(), **TIGHT, err_msg=name)
    for (name, b), (_, t) in zip(model.named_buffers(), _torch_buffers(twin)):
        np.testing.assert_allclose(b.data, t.numpy(), **TIGHT, err_msg=name)
    twin.eval()
    np.testing.assert_allclose(model.predict(x), twin(torch.from_numpy(x)).detach().numpy(), **TIGHT)
    logs = model.evaluate(x, y, verbose=0)
    expected = torch.nn.functional.mse_loss(twin(torch.from_numpy(x)), torch.from_numpy(y))
    np.testing.assert_allclose(logs["loss"], float(expected.detach()), **TIGHT)


@requires_torch
@pytest.mark.parametrize("kind", ["ctx", "nested", "tied", "custom_seq"])
def test_manual_backward_equals_torch_autograd(kind: str, float64: None) -> None:
    model, twin = _twins(kind, seed=7)
    x, _ = _data(5, seed=2)
    g = np.random.default_rng(3).standard_normal((5, 2))
    model.zero_grad()
    ctx = Context(True)
    out = model.forward(ctx, x)
    gx = model.backward(ctx, g)
    tx = torch.from_numpy(x).requires_grad_(True)
    tout = twin(tx)
    tout.backward(torch.from_numpy(g))
    np.testing.assert_allclose(out, tout.detach().numpy(), **TIGHT)
    np.testing.assert_allclose(gx, tx.grad.numpy(), **TIGHT)
    for (name, p), t in zip(model.named_parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), **TIGHT, err_msg=name)


@requires_torch
def test_a_shared_child_sums_its_gradients_over_two_calls(float64: None) -> None:
    """CtxNet calls blocks[0] twice; its weight gradient is the sum of both uses, as torch's."""
    model, twin = _twins("ctx", seed=8)
    x, _ = _data(4, seed=4)
    g = np.ones((4, 2))
    ctx = Context(True)
    model.zero_grad()
    model.backward(ctx, np.ones_like(model.forward(ctx, x)) * g)
    twin(torch.from_numpy(x)).backward(torch.from_numpy(g))
    np.testing.assert_allclose(model.blocks[0].weight.grad, twin.blocks[0].weight.grad.numpy(), **TIGHT)
    assert np.abs(model.blocks[0].weight.grad).sum() > 0


class LegacyShared(Model):
    """The older form calling one (context-form) child twice by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = Linear(3, 3)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.fc(self.fc(x))

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return self.fc.backward(self.fc.backward(grad))


@requires_torch
def test_older_form_child_used_twice_gets_the_torch_gradient_or_a_clear_error(float64: None) -> None:
    model = LegacyShared()
    model.build((None, 3))
    twin = nn.Linear(3, 3).double()
    with torch.no_grad():
        twin.weight.copy_(torch.from_numpy(model.fc.weight.data))
        twin.bias.copy_(torch.from_numpy(model.fc.bias.data))
    x, _ = _data(4)
    g = np.random.default_rng(1).standard_normal((4, 3))
    model.zero_grad()
    ctx = Context(True)
    try:
        model.backward(ctx, 0 * model.forward(ctx, x) + g)
    except ConfigError:
        return  # refusing clearly is acceptable (one call at a time, docs/plugins.md)
    twin(twin(torch.from_numpy(x))).backward(torch.from_numpy(g))
    np.testing.assert_allclose(model.fc.weight.grad, twin.weight.grad.numpy(), **TIGHT)


@requires_torch
def test_freezing_a_sub_model_of_a_subclass_matches_torch_requires_grad(float64: None) -> None:
    model, twin = _twins("nested", seed=9)
    model.func.trainable = False
    for p in twin.func.parameters():
        p.requires_grad_(False)
    frozen = [p.data.copy() for p in model.func.parameters()]
    assert model.count_params(trainable=True) == sum(p.numel() for p in twin.parameters() if p.requires_grad)
    assert _summary_counts(model)[1] == model.count_params(trainable=True)
    x, y = _data(8, seed=5)
    model.compile(framework.optimizers.get("sgd", learning_rate=0.2), "mse")
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    _torch_step(twin, x, y, 0.2)
    for p, before in zip(model.func.parameters(), frozen):
        np.testing.assert_array_equal(p.data, before)
    for (name, p), t in zip(model.named_parameters(), twin.parameters()):
        np.testing.assert_allclose(p.data, t.detach().numpy(), **TIGHT, err_msg=name)


@requires_torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_subclass_runs_in_its_dtype_and_predicts_as_torch(dtype: str) -> None:
    with framework.runtime.dtype.default_dtype(dtype):
        model = CtxNet()
        model.build((None, 3))
    assert all(p.dtype == np.dtype(dtype) for p in model.parameters())
    twin = TorchCtxNet().double()
    _copy_to_torch(model, twin)
    x, _ = _data(6)
    out = model.predict(x)  # float64 data cast once at the model's edge
    assert out.dtype == np.dtype(dtype)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else TIGHT
    np.testing.assert_allclose(out, twin(torch.from_numpy(x)).detach().numpy(), **tol)


# -- copies and threads --------------------------------------------------------------------------


@requires_torch
@pytest.mark.parametrize("kind", SUBCLASSES)
def test_deepcopy_is_independent_and_keeps_ties(kind: str, float64: None) -> None:
    model, _ = _twins(kind, seed=10)
    x, y = _data()
    model.compile(framework.optimizers.get("sgd", learning_rate=0.1), "mse")
    clone = copy.deepcopy(model)
    model.eval()
    clone.eval()
    np.testing.assert_array_equal(clone(x), model(x))
    ids = {id(p) for p in model.parameters()}
    assert not ids & {id(p) for p in clone.parameters()}
    if kind == "tied":
        assert clone.dec.weight is clone.enc.weight
    before = [p.data.copy() for p in model.parameters()]
    clone.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)
    assert any(not np.array_equal(p.data, b) for p, b in zip(clone.parameters(), before))


@requires_torch
@pytest.mark.parametrize("kind", ["ctx", "nested", "tied", "custom_func"])
def test_inference_from_threads_equals_one_thread(kind: str) -> None:
    model, _ = _twins(kind, seed=11)
    inputs = [np.random.default_rng(i).standard_normal((32, 3)).astype(np.float32) for i in range(6)]
    expected = [model.predict(x) for x in inputs]
    got: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(inputs))

    def run(i: int) -> None:
        try:
            barrier.wait()
            got[i] = [model(inputs[i], training=False) for _ in range(15)]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, outs in got.items():
        for out in outs:
            np.testing.assert_array_equal(out, expected[i])


@requires_torch
def test_older_form_subclass_from_threads_is_right_or_refused_clearly() -> None:
    model, _ = _twins("legacy", seed=12)
    model.eval()
    inputs = [np.random.default_rng(i).standard_normal((64, 3)).astype(np.float32) for i in range(4)]
    expected = [model(x) for x in inputs]
    wrong: list[int] = []
    other: list[BaseException] = []
    barrier = threading.Barrier(len(inputs))

    def run(i: int) -> None:
        barrier.wait()
        for _ in range(20):
            try:
                out = model(inputs[i])
            except ConfigError as exc:
                assert "two threads" in str(exc) and "LegacyNet" in str(exc)
                continue
            except BaseException as exc:  # reported below
                other.append(exc)
                return
            if not np.array_equal(out, expected[i]):
                wrong.append(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not other, other
    assert not wrong


# -- save / load ---------------------------------------------------------------------------------


def _register_kind(plugins: Any, kind: str) -> None:
    classes = {"ctx": CtxNet, "legacy": LegacyNet, "nested": NestedNet, "tied": TiedNet}
    plugins.register(classes[kind], ScaleShift) if kind in classes else plugins.register(ScaleShift)


@requires_torch
@requires_h5py
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_and_load_model_restore_everything(kind: str, dtype: str, plugins: Any, tmp_path: Path) -> None:
    _register_kind(plugins, kind)
    with framework.runtime.dtype.default_dtype(dtype):
        model, _ = _twins(kind, seed=13)
    x, y = _data(16, seed=6)
    model.compile(framework.optimizers.get("adam", learning_rate=0.01), "mse")
    model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    path = tmp_path / "model.h5"
    model.save(path)
    loaded = framework.load_model(path)
    assert type(loaded) is type(model)
    for (name, p), (lname, q) in zip(model.named_parameters(), loaded.named_parameters()):
        assert name == lname and q.dtype == p.dtype
        np.testing.assert_array_equal(q.data, p.data, err_msg=name)
    for (name, b), (_, c) in zip(model.named_buffers(), loaded.named_buffers()):
        np.testing.assert_array_equal(c.data, b.data, err_msg=name)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    if kind == "tied":
        assert loaded.dec.weight is loaded.enc.weight
    model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    loaded.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)  # optimizer state resumed
    for p, q in zip(model.parameters(), loaded.parameters()):
        np.testing.assert_array_equal(q.data, p.data)


def _frozen_cases() -> dict[str, Callable[[], tuple[Model, Callable[[Model], Layer]]]]:
    def subclass_in_functional() -> tuple[Model, Callable[[Model], Layer]]:
        inner = CtxNet()
        x = Input((3,))
        return Model(x, Linear(2, 2)(inner(x))), lambda m: m.layers[1].fc1

    def functional_in_subclass() -> tuple[Model, Callable[[Model], Layer]]:
        return NestedNet(), lambda m: m.func

    def subclass_in_sequential() -> tuple[Model, Callable[[Model], Layer]]:
        return Sequential([NestedNet(), Linear(2, 2)]), lambda m: m.layers[0].func.layers[1]

    return {
        "subclass_in_functional": subclass_in_functional,
        "functional_in_subclass": functional_in_subclass,
        "subclass_in_sequential": subclass_in_sequential,
    }


@requires_h5py
@pytest.mark.parametrize("case", list(_frozen_cases()))
def test_frozen_flags_of_nested_layers_survive_save_and_load(case: str, plugins: Any, tmp_path: Path) -> None:
    plugins.register(CtxNet, NestedNet)
    model, pick = _frozen_cases()[case]()
    model.build((None, 3))
    pick(model).trainable = False
    model.save(tmp_path / "m.h5")
    loaded = framework.load_model(tmp_path / "m.h5")
    assert pick(loaded).trainable is False
    frozen = [(n, p.trainable) for n, p in model.named_parameters()]
    assert [(n, p.trainable) for n, p in loaded.named_parameters()] == frozen
    assert any(not t for _, t in frozen) and any(t for _, t in frozen)
    loaded.trainable = True  # the flags are real: unfreezing reaches every parameter
    assert all(p.trainable for p in loaded.parameters())


class Block(Layer):
    """A custom composite layer (context form): ``relu(bn(fc(x)))`` with its children made in ``__init__``."""

    def __init__(self, features: int, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.features = features
        self.fc = Linear(features, features)
        self.bn = BatchNorm(features)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        return self.bn.forward(ctx.child("bn"), self.fc.forward(ctx.child("fc"), x))

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return self.fc.backward(ctx.child("fc"), self.bn.backward(ctx.child("bn"), grad_out))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "features": self.features}


@requires_h5py
def test_a_frozen_child_of_a_custom_layer_comes_back_frozen(plugins: Any, tmp_path: Path) -> None:
    plugins.register(Block)
    model = Sequential([Linear(3, 4), Block(4), Linear(4, 2)])
    model.build((None, 3))
    model.layers[1].bn.trainable = False
    x, y = _data(16, seed=8)
    model.save(tmp_path / "b.h5")
    loaded = framework.load_model(tmp_path / "b.h5")
    assert loaded.layers[1].bn.trainable is False and loaded.layers[1].fc.trainable is True
    for m in (model, loaded):  # a frozen BatchNorm keeps its running statistics under fit
        m.compile(framework.optimizers.get("sgd", learning_rate=0.1), "mse")
        m.fit(x.astype(np.float32), y.astype(np.float32), epochs=1, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_array_equal(loaded.layers[1].bn.running_mean.data, model.layers[1].bn.running_mean.data)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


@requires_torch
@requires_h5py
def test_a_frozen_layer_inside_a_subclass_comes_back_frozen(plugins: Any, tmp_path: Path) -> None:
    """A frozen BatchNorm runs in inference mode under fit (Keras's rule); after loading too."""
    plugins.register(LegacyNet)
    model, _ = _twins("legacy", seed=14)
    model.bn.trainable = False
    path = tmp_path / "frozen.h5"
    model.save(path)
    loaded = framework.load_model(path)
    assert loaded.bn.trainable is False and loaded.fc1.trainable is True
    assert loaded.count_params(trainable=True) == model.count_params(trainable=True)
    x, y = _data(16, seed=7)
    for m in (model, loaded):
        m.compile(framework.optimizers.get("sgd", learning_rate=0.1), "mse")
        m.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_array_equal(loaded.bn.running_mean.data, model.bn.running_mean.data)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


@requires_torch
@requires_h5py
def test_a_class_registered_in_a_script_loads_with_custom_objects_only(plugins: Any, tmp_path: Path) -> None:
    plugins.register(CtxNet)
    model, _ = _twins("ctx", seed=15)
    path = tmp_path / "ctx.h5"
    model.save(path)
    plugins.forget(CtxNet)
    with pytest.raises(CheckpointError, match=r"'CtxNet'.*custom_objects=\{'CtxNet': CtxNet\}"):
        framework.load_model(path)
    loaded = framework.load_model(path, custom_objects={"CtxNet": CtxNet})
    x, _ = _data()
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_array_equal(loaded.scale.data, model.scale.data)


@requires_torch
@requires_h5py
def test_a_published_plugin_layer_missing_at_load_names_its_distribution(
    plugins: Any, tmp_path: Path
) -> None:
    plugins.register(ScaleShift, distribution="framework-scaleshift", version="2.1")
    model, _ = _twins("custom_func", seed=16)
    path = tmp_path / "plugin.h5"
    model.save(path)
    plugins.forget(ScaleShift)
    with pytest.raises(CheckpointError, match=r"ScaleShift.*framework-scaleshift 2\.1.*pip install"):
        framework.load_model(path)
    loaded = framework.load_model(path, custom_objects={"ScaleShift": ScaleShift})
    x, _ = _data()
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


class NoConfig(Model):
    """A subclass with a constructor argument and no get_config."""

    def __init__(self, units: int) -> None:
        super().__init__()
        self.fc = Linear(3, units)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        return self.fc.forward(ctx.child("fc"), x)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return self.fc.backward(ctx.child("fc"), grad_out)


class NoConfigLayer(ScaleShift):
    """A custom layer whose get_config leaves out a required argument."""

    def __init__(self, num_features: int, factor: float, *, name: str | None = None) -> None:
        super().__init__(num_features, name=name)
        self.factor = factor


@requires_h5py
@pytest.mark.parametrize("which", ["model", "layer"])
def test_a_class_without_get_config_is_refused_at_save_leaving_the_file(
    which: str, plugins: Any, tmp_path: Path
) -> None:
    plugins.register(NoConfig, NoConfigLayer)
    path = tmp_path / "model.h5"
    Sequential([Linear(3, 2)]).save(path)
    before = path.read_bytes()
    if which == "model":
        model: Model = NoConfig(2)
        model.build((None, 3))
        pattern = r"NoConfig layer.*get_config\(\).*units"
    else:
        model = Sequential([Linear(3, 2), NoConfigLayer(2, 0.5)])
        pattern = r"NoConfigLayer layer.*get_config\(\).*factor"
    with pytest.raises(ConfigError, match=pattern):
        model.save(path)
    assert path.read_bytes() == before
    with pytest.raises(ConfigError, match=pattern):
        model.save(tmp_path / "new.h5")
    assert not (tmp_path / "new.h5").exists()


@requires_h5py
def test_a_subclass_whose_constructor_takes_no_name_round_trips(plugins: Any, tmp_path: Path) -> None:
    class Plain(Model):
        def __init__(self) -> None:
            super().__init__(name="plain")
            self.fc = Linear(3, 2)

        def forward(self, x: np.ndarray) -> np.ndarray:
            return self.fc(x)

        def backward(self, grad: np.ndarray) -> np.ndarray:
            return self.fc.backward(grad)

    plugins.register(Plain)
    model = Plain()
    model.build((None, 3))
    model.fc.weight.data[...] = 0.5
    model.save(tmp_path / "plain.h5")
    loaded = framework.load_model(tmp_path / "plain.h5")
    assert loaded.name == "plain"
    np.testing.assert_array_equal(loaded.fc.weight.data, model.fc.weight.data)


class NumpyConfig(CtxNet):
    def get_config(self) -> dict[str, Any]:
        return {"hidden": np.int64(self.hidden), "name": self.name}


@requires_h5py
def test_a_config_json_cannot_hold_is_refused_naming_the_layer(plugins: Any, tmp_path: Path) -> None:
    plugins.register(NumpyConfig)
    model = NumpyConfig()
    model.build((None, 3))
    path = tmp_path / "m.h5"
    path.write_bytes(b"previous")
    with pytest.raises(ConfigError, match=r"NumpyConfig layer.*get_config\(\).*not JSON data.*int64"):
        model.save(path)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5"]


@requires_torch
def test_an_unregistered_subclass_is_refused_at_save(tmp_path: Path) -> None:
    model, _ = _twins("ctx")
    with pytest.raises(ConfigError, match=r"CtxNet is not registered.*register_layers"):
        model.save(tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


@requires_torch
@requires_h5py
@pytest.mark.parametrize("kind", [*SUBCLASSES, "custom_func"])
def test_save_weights_and_load_weights_round_trip(kind: str, tmp_path: Path) -> None:
    model, _ = _twins(kind, seed=17)
    fresh, _ = _twins(kind, seed=18)
    path = tmp_path / "w.h5"
    model.save_weights(path)
    fresh.load_weights(path)
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        np.testing.assert_array_equal(b, a, err_msg=name)
    x, _ = _data()
    np.testing.assert_array_equal(fresh.predict(x), model.predict(x))


@requires_torch
@requires_h5py
def test_load_weights_by_name_restores_the_models_own_weights(tmp_path: Path) -> None:
    model, _ = _twins("ctx", seed=19)
    fresh, _ = _twins("ctx", seed=20)
    model.save_weights(tmp_path / "w.h5")
    fresh.load_weights(tmp_path / "w.h5", by_name=True)
    np.testing.assert_array_equal(fresh.scale.data, model.scale.data)
    np.testing.assert_array_equal(fresh.offset.data, model.offset.data)
    np.testing.assert_array_equal(fresh.heads["out"].weight.data, model.heads["out"].weight.data)


@requires_torch
@requires_h5py
def test_load_weights_refuses_a_file_without_the_models_own_weights(tmp_path: Path) -> None:
    """A file of another architecture must not load, leaving the model's own Parameter unset silently."""
    other = Sequential([Linear(3, 5), Linear(5, 5), Linear(5, 2)])
    other.build((None, 3))
    path = tmp_path / "other.h5"
    other.save_weights(path)
    model, _ = _twins("ctx")
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"model's own.*\['scale', 'offset'\]"):
        model.load_weights(path)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


# -- export --------------------------------------------------------------------------------------


@requires_torch
@pytest.mark.parametrize("where", ["top", "in_sequential", "custom_layer"])
def test_onnx_export_of_a_subclass_is_a_clear_export_error(where: str, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    model, _ = _twins("custom_func" if where == "custom_layer" else "ctx")
    target: Model = Sequential([model, Linear(2, 2)]) if where == "in_sequential" else model
    target.build((None, 3))
    with pytest.raises(ExportError, match="ScaleShift" if where == "custom_layer" else "CtxNet"):
        target.export(tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# -- several inputs ------------------------------------------------------------------------------


class TwoInputs(Model):
    """``y = a(x1) * b(x2)``: a subclass whose forward takes a list of two arrays."""

    def __init__(self, width: int = 3, name: str | None = None) -> None:
        super().__init__(name=name)
        self.width = width
        self.a = Linear(3, 2)
        self.b = Linear(width, 2)

    def forward(self, ctx: Context, inputs: list[np.ndarray]) -> np.ndarray:
        x1, x2 = inputs
        ctx.ya = self.a.forward(ctx.child("a"), x1)
        ctx.yb = self.b.forward(ctx.child("b"), x2)
        return ctx.ya * ctx.yb

    def backward(self, ctx: Context, grad_out: np.ndarray) -> list[np.ndarray]:
        return [
            self.a.backward(ctx.child("a"), grad_out * ctx.yb),
            self.b.backward(ctx.child("b"), grad_out * ctx.ya),
        ]

    def get_config(self) -> dict[str, Any]:
        return {"width": self.width, "name": self.name}


@requires_torch
@pytest.mark.parametrize("width", [3, 4])  # same shapes were stacked into one array, others crashed
@pytest.mark.parametrize("how", ["call", "predict", "fit"])
def test_a_subclass_taking_a_list_of_inputs_matches_torch(width: int, how: str, float64: None) -> None:
    model = TwoInputs(width)
    model.build([(None, 3), (None, width)])
    a, b = nn.Linear(3, 2).double(), nn.Linear(width, 2).double()
    with torch.no_grad():
        for mine, theirs in ((model.a, a), (model.b, b)):
            theirs.weight.copy_(torch.from_numpy(mine.weight.data))
            theirs.bias.copy_(torch.from_numpy(mine.bias.data))
    rng = np.random.default_rng(0)
    x1, x2, y = rng.standard_normal((6, 3)), rng.standard_normal((6, width)), rng.standard_normal((6, 2))
    expected = a(torch.from_numpy(x1)) * b(torch.from_numpy(x2))
    if how == "call":
        np.testing.assert_allclose(model([x1, x2]), expected.detach().numpy(), **TIGHT)
    elif how == "predict":
        np.testing.assert_allclose(model.predict([x1, x2], batch_size=4), expected.detach().numpy(), **TIGHT)
    else:
        model.compile(framework.optimizers.get("sgd", learning_rate=0.1), "mse")
        model.fit([x1, x2], y, epochs=1, batch_size=6, shuffle=False, verbose=0)
        torch.nn.functional.mse_loss(expected, torch.from_numpy(y)).backward()
        for mine, theirs in ((model.a, a), (model.b, b)):
            np.testing.assert_allclose(
                mine.weight.data, (theirs.weight - 0.1 * theirs.weight.grad).detach(), **TIGHT
            )


@requires_h5py
def test_a_subclass_of_two_inputs_saves_and_loads(plugins: Any, tmp_path: Path) -> None:
    plugins.register(TwoInputs)
    model = TwoInputs(4)
    model.build([(None, 3), (None, 4)])
    model.save(tmp_path / "two.h5")
    loaded = framework.load_model(tmp_path / "two.h5")
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((5, 4)).astype(np.float32)]
    np.testing.assert_array_equal(loaded.predict(xs), model.predict(xs))
