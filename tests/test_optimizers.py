"""Tests of the built-in optimizers: update rules, clipping, decay, state, config, in-place updates."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from framework import optimizers
from framework.base.parameter import Parameter
from framework.base.schedules import StepDecay, WarmUp
from framework.errors import ConfigError
from plugins.optimizers import SGD, AdaGrad, Adam, AdamW, RMSProp

try:  # optional parity checks
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

P0 = np.array([[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]])
GRADS = [
    np.array([[0.1, -0.2, 0.3], [1.0, -0.5, 0.0]]),
    np.array([[-0.3, 0.1, 0.2], [0.4, 0.4, -0.1]]),
    np.array([[0.2, 0.2, -0.6], [-0.2, 0.0, 0.5]]),
]


def run(opt_cls, steps=GRADS, **kwargs) -> np.ndarray:
    """Apply ``opt_cls`` to a copy of P0 with the fixed gradients; return the parameter values."""
    p = Parameter(P0.copy())
    opt = opt_cls([p], **kwargs)
    for g in steps:
        p.grad[...] = g
        opt.step()
    return p.data


# -- formula-level references, written out step by step -------------------------


def ref_sgd(lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    p, buf = P0.copy(), None
    for g in GRADS:
        d = g + weight_decay * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


def ref_adagrad(lr, eps=1e-10, initial=0.0, lr_decay=0.0, weight_decay=0.0):
    p, acc = P0.copy(), np.full_like(P0, initial)
    for t, g in enumerate(GRADS, start=1):
        g = g + weight_decay * p
        acc = acc + g * g
        p = p - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(acc) + eps)
    return p


def ref_rmsprop(lr, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, weight_decay=0.0):
    p = P0.copy()
    v, m, buf = np.zeros_like(P0), np.zeros_like(P0), np.zeros_like(P0)
    for g in GRADS:
        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            m = alpha * m + (1 - alpha) * g
            denom = np.sqrt(v - m * m) + eps
        else:
            denom = np.sqrt(v) + eps
        if momentum:
            buf = momentum * buf + g / denom
            p = p - lr * buf
        else:
            p = p - lr * g / denom
    return p


def ref_adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    b1, b2 = betas
    p = P0.copy()
    m, v, vmax = np.zeros_like(P0), np.zeros_like(P0), np.zeros_like(P0)
    for t, g in enumerate(GRADS, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        m_hat = m / (1 - b1**t)
        v_hat = (vmax if amsgrad else v) / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


REFERENCE_CASES = [
    (SGD, {"lr": 0.1}, lambda: ref_sgd(0.1)),
    (SGD, {"lr": 0.1, "momentum": 0.9}, lambda: ref_sgd(0.1, 0.9)),
    (
        SGD,
        {"lr": 0.1, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.05},
        lambda: ref_sgd(0.1, 0.8, 0.3, weight_decay=0.05),
    ),
    (SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}, lambda: ref_sgd(0.1, 0.9, nesterov=True)),
    (AdaGrad, {"lr": 0.1}, lambda: ref_adagrad(0.1)),
    (
        AdaGrad,
        {"lr": 0.1, "initial_accumulator_value": 0.2, "lr_decay": 0.1, "weight_decay": 0.1},
        lambda: ref_adagrad(0.1, initial=0.2, lr_decay=0.1, weight_decay=0.1),
    ),
    (RMSProp, {"lr": 0.01}, lambda: ref_rmsprop(0.01)),
    (
        RMSProp,
        {"lr": 0.01, "alpha": 0.9, "momentum": 0.5, "centered": True, "weight_decay": 0.1},
        lambda: ref_rmsprop(0.01, 0.9, momentum=0.5, centered=True, weight_decay=0.1),
    ),
    (Adam, {"lr": 0.01}, lambda: ref_adam(0.01)),
    (
        Adam,
        {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1, "amsgrad": True},
        lambda: ref_adam(0.01, (0.8, 0.99), weight_decay=0.1, amsgrad=True),
    ),
    (AdamW, {"lr": 0.01}, lambda: ref_adam(0.01, weight_decay=0.01, decoupled=True)),
    (
        AdamW,
        {"lr": 0.05, "weight_decay": 0.2, "amsgrad": True},
        lambda: ref_adam(0.05, weight_decay=0.2, amsgrad=True, decoupled=True),
    ),
]


@pytest.mark.parametrize(("cls", "kwargs", "reference"), REFERENCE_CASES)
def test_three_steps_match_formula_reference(cls, kwargs, reference):
    np.testing.assert_allclose(run(cls, **kwargs), reference(), rtol=1e-12, atol=1e-14)


def test_adam_first_step_moves_every_entry_by_lr():
    # bias correction makes the first Adam step exactly lr * sign(g) (up to eps)
    moved = P0 - run(Adam, steps=GRADS[:1], lr=0.01)
    nonzero = GRADS[0] != 0
    np.testing.assert_allclose(moved[nonzero], 0.01 * np.sign(GRADS[0][nonzero]), rtol=1e-6)
    assert np.all(moved[~nonzero] == 0)


TORCH_CASES = [
    (SGD, "SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}),
    (SGD, "SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    (AdaGrad, "Adagrad", {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1}),
    (RMSProp, "RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.1}),
    (Adam, "Adam", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    (AdamW, "AdamW", {"lr": 0.01, "betas": (0.8, 0.99)}),
]


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize(("cls", "torch_name", "kwargs"), TORCH_CASES)
def test_matches_torch(cls, torch_name, kwargs):
    t = torch.tensor(P0.copy(), requires_grad=True)
    opt = getattr(torch.optim, torch_name)([t], **kwargs)
    for g in GRADS:
        t.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(run(cls, **kwargs), t.detach().numpy(), rtol=1e-12, atol=1e-14)


# -- behaviour -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (SGD, {"lr": 0.1}),
        (SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
        (AdaGrad, {"lr": 0.5}),
        (RMSProp, {"lr": 0.01}),
        (Adam, {"lr": 0.05}),
        (AdamW, {"lr": 0.05, "weight_decay": 0.0}),
    ],
)
def test_converges_on_a_quadratic(cls, kwargs):
    # f(x) = 0.5 * sum(a * (x - c)^2), minimum at c
    a = np.array([1.0, 3.0, 0.5, 2.0])
    c = np.array([1.0, -2.0, 0.5, 3.0])
    p = Parameter(np.zeros(4))
    opt = cls([p], **kwargs)
    for _ in range(500):
        opt.zero_grad()
        p.grad += a * (p.data - c)
        opt.step()
    np.testing.assert_allclose(p.data, c, atol=1e-2)


def test_clipnorm_rescales_global_norm():
    p1, p2 = Parameter(np.zeros(2)), Parameter(np.zeros(1))
    opt = SGD([p1, p2], lr=1.0, clipnorm=1.0)
    p1.grad[...] = [3.0, 0.0]
    p2.grad[...] = [4.0]  # global norm 5
    opt.step()
    np.testing.assert_allclose(p1.data, [-0.6, 0.0])
    np.testing.assert_allclose(p2.data, [-0.8])


def test_clipnorm_leaves_small_gradients_alone():
    p = Parameter(np.zeros(2))
    opt = SGD([p], lr=1.0, clipnorm=10.0)
    p.grad[...] = [3.0, -4.0]
    opt.step()
    np.testing.assert_allclose(p.data, [-3.0, 4.0])


def test_clipvalue_clips_each_entry():
    p = Parameter(np.zeros(3))
    opt = SGD([p], lr=1.0, clipvalue=0.5)
    p.grad[...] = [2.0, -0.25, -3.0]
    opt.step()
    np.testing.assert_allclose(p.data, [-0.5, 0.25, 0.5])


def test_sgd_weight_decay_is_added_to_the_gradient():
    p = Parameter(np.array([2.0, -1.0]))
    opt = SGD([p], lr=0.1, weight_decay=0.5)
    p.grad[...] = [1.0, 1.0]
    opt.step()
    np.testing.assert_allclose(p.data, [2.0 - 0.1 * (1.0 + 1.0), -1.0 - 0.1 * (1.0 - 0.5)])
    np.testing.assert_allclose(p.grad, [1.0, 1.0])  # the stored gradient is not changed


def test_adamw_decay_is_decoupled_from_the_moments():
    # zero gradient: AdamW only shrinks the weights, Adam(L2) moves by ~lr * sign(p)
    p_w, p_l2 = Parameter(np.array([2.0, -1.0])), Parameter(np.array([2.0, -1.0]))
    adamw = AdamW([p_w], lr=0.1, weight_decay=0.5)
    adam = Adam([p_l2], lr=0.1, weight_decay=0.5)
    adamw.step()
    adam.step()
    np.testing.assert_allclose(p_w.data, np.array([2.0, -1.0]) * (1 - 0.1 * 0.5))
    np.testing.assert_allclose(p_l2.data, [2.0 - 0.1, -1.0 + 0.1], rtol=1e-6)
    assert np.all(adamw.state[0]["exp_avg"] == 0)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (SGD, {"lr": 0.1, "momentum": 0.9}),
        (AdaGrad, {"lr": 0.1}),
        (RMSProp, {"lr": 0.01, "momentum": 0.5, "centered": True}),
        (Adam, {"lr": 0.01, "amsgrad": True}),
        (AdamW, {"lr": 0.01}),
    ],
)
def test_state_dict_round_trip_gives_identical_next_steps(cls, kwargs):
    p = Parameter(P0.copy())
    opt = cls([p], **kwargs)
    for g in GRADS[:2]:
        p.grad[...] = g
        opt.step()
    saved = opt.state_dict()
    saved_slots = {k: v.copy() for k, v in saved["slots"][0].items()}
    assert saved["iterations"] == 2 and saved_slots
    assert all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in saved_slots.items())

    q = Parameter(p.data.copy())
    fresh = cls([q], **kwargs)
    fresh.load_state_dict(saved)
    for opt_, param in ((opt, p), (fresh, q)):
        param.grad[...] = GRADS[2]
        opt_.step()
    np.testing.assert_array_equal(p.data, q.data)
    for key, value in saved["slots"][0].items():  # later steps did not alter the saved copy
        np.testing.assert_array_equal(value, saved_slots[key])


def test_load_state_dict_rejects_mismatched_state():
    opt = Adam([Parameter(np.zeros(3))])
    with pytest.raises(ConfigError, match="1 parameters"):
        opt.load_state_dict({"iterations": 1, "slots": [{}, {}]})
    with pytest.raises(ConfigError, match=r"\(2,\)"):
        opt.load_state_dict({"iterations": 1, "slots": [{"exp_avg": np.zeros(2)}]})


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (SGD, {"momentum": 0.9, "weight_decay": 0.01}),
        (AdaGrad, {}),
        (RMSProp, {"momentum": 0.9, "centered": True}),
        (Adam, {"amsgrad": True}),
        (AdamW, {}),
    ],
)
def test_updates_in_place_without_large_temporaries(cls, kwargs):
    p = Parameter(np.ones(200_000, dtype=np.float32))
    data = p.data
    opt = cls([p], **kwargs)
    p.grad.fill(0.5)
    opt.step()  # creates the slots and scratch arrays
    tracemalloc.start()
    opt.step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert p.data is data
    assert p.data.dtype == np.float32
    assert all(s.dtype == np.float32 for s in opt.state[0].values())
    assert peak < p.data.nbytes // 4, f"a step allocated {peak} bytes for a {p.data.nbytes}-byte parameter"


def test_tied_parameter_is_updated_once():
    p = Parameter(np.zeros(2))
    opt = SGD([p, p], lr=1.0)
    p.grad[...] = [1.0, 2.0]
    opt.step()
    np.testing.assert_allclose(p.data, [-1.0, -2.0])


# -- learning rate ---------------------------------------------------------------


def test_learning_rate_spellings():
    p = Parameter(np.zeros(1))
    assert SGD(0.3).lr == 0.3  # Keras: the rate positionally
    assert SGD([p], 0.2).lr == 0.2  # PyTorch: params first
    assert SGD([p], lr=0.4).learning_rate == 0.4
    assert Adam().lr == 1e-3 and AdamW().weight_decay == 0.01 and SGD().lr == 0.01
    opt = Adam(lr=0.1)
    opt.lr = 0.05
    assert opt.learning_rate == 0.05
    with pytest.raises(ConfigError, match="learning_rate"):
        opt.lr = -1.0


def test_schedule_drives_the_step_size():
    p = Parameter(np.zeros(1))
    opt = SGD([p], learning_rate=StepDecay(1.0, step_size=2, gamma=0.5))
    moves = []
    for _ in range(5):
        before = p.data.copy()
        p.grad[...] = 1.0
        opt.step()
        moves.append(float(before[0] - p.data[0]))
    np.testing.assert_allclose(moves, [1.0, 1.0, 0.5, 0.5, 0.25])
    assert opt.lr == 0.25 and opt.iterations == 5


@pytest.mark.parametrize(
    "opt",
    [
        SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, clipnorm=1.0),
        AdaGrad(lr=0.2, initial_accumulator_value=0.1, clipvalue=0.5),
        RMSProp(lr=0.01, alpha=0.9, momentum=0.1, centered=True),
        Adam(lr=WarmUp(StepDecay(0.01, 10), 5), betas=(0.8, 0.95), amsgrad=True),
        AdamW(lr=0.002, weight_decay=0.0),
    ],
)
def test_config_round_trip_through_json(opt):
    data = json.loads(json.dumps({"class_name": type(opt).__name__, "config": opt.get_config()}))
    rebuilt = optimizers.get(data)
    assert type(rebuilt) is type(opt)
    assert rebuilt.get_config() == opt.get_config()
    for step in (0, 7, 30):
        rebuilt.iterations = opt.iterations = step
        assert rebuilt.lr == opt.lr


def test_lambda_schedule_cannot_be_saved():
    opt = SGD(learning_rate=lambda step: 0.1)
    assert opt.lr == 0.1
    with pytest.raises(ConfigError, match="get_config"):
        opt.get_config()


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: SGD(lr=-0.1), "learning_rate"),
        (lambda: SGD(momentum=-0.5), "momentum"),
        (lambda: SGD(nesterov=True), "nesterov"),
        (lambda: SGD(momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
        (lambda: SGD(dampening=1.5), "dampening"),
        (lambda: SGD(weight_decay=-1.0), "weight_decay"),
        (lambda: SGD(clipnorm=0.0), "clipnorm"),
        (lambda: SGD(clipvalue=-1.0), "clipvalue"),
        (lambda: Adam(betas=(1.0, 0.999)), "betas"),
        (lambda: Adam(betas=(0.9, -0.1)), "betas"),
        (lambda: Adam(betas=0.9), "betas"),
        (lambda: Adam(eps=0.0), "eps"),
        (lambda: AdamW(eps=-1e-8), "eps"),
        (lambda: AdaGrad(initial_accumulator_value=-1.0), "initial_accumulator_value"),
        (lambda: AdaGrad(eps=0), "eps"),
        (lambda: RMSProp(alpha=1.5), "alpha"),
        (lambda: RMSProp(momentum=-1), "momentum"),
        (lambda: SGD([1.0, 2.0]), "Parameters"),
        (lambda: SGD(learning_rate={"class_name": "os.system", "config": {}}), "schedule"),
    ],
)
def test_invalid_hyperparameters_raise_config_error(factory, match):
    with pytest.raises(ConfigError, match=match):
        factory()


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("sgd", SGD),
        ("adagrad", AdaGrad),
        ("rmsprop", RMSProp),
        ("RMSprop", RMSProp),
        ("adam", Adam),
        ("AdamW", AdamW),
    ],
)
def test_registered_names(name, cls):
    opt = optimizers.get(name, lr=0.5)
    assert type(opt) is cls and opt.lr == 0.5
