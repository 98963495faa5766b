"""Bug hunt: multi-input / multi-output functional models under compile, fit, evaluate, predict and the
``*_on_batch`` steps, against Keras 3's documented semantics transcribed in NumPy.

The reference model is linear (a shared trunk and two heads), so one SGD step has a closed form:
with per-output losses ``L_k = sum_i s_ki l_ki / N`` (``l`` the mean over the last axis, ``s`` the
sample weights) and ``L = sum_k w_k L_k``, the gradient reaching head ``k`` is ``w_k dL_k/dP_k`` and
the trunk receives the sum over the heads. Deliberate, documented differences from Keras 3 are
respected: a flat ``metrics`` list applies to every output (``Model.compile``), metrics take the
sample weights (docs/guide/training.md), ``evaluate`` returns a dict (DESIGN.md).

Tests marked ``xfail(strict=True, reason="BUG: ...")`` pin a bug outside this area's files.
"""

from __future__ import annotations

import numpy as np
import pytest

import framework
from framework import Input, Model, Sequential
from framework.errors import ConfigError, DataError, FrameworkError, ShapeError
from framework.layers import Concatenate, Linear
from framework.optimizers import SGD
from framework.training.callbacks import LambdaCallback
from plugins.metrics import MeanAbsoluteError

N = 10
LR = 0.1


# -- the reference: a trunk and two linear heads, Keras's loss reduction in NumPy ---------------


def two_heads(dtype: str = "float64", seed: int = 0) -> Model:
    """``x (3) -> h (4) -> a (2)`` and ``h -> b (1)``, all linear."""
    old = framework.get_default_dtype()
    framework.set_default_dtype(dtype)
    try:
        framework.set_seed(seed)
        inp = Input((3,), name="x")
        h = Linear(3, 4, name="h")(inp)
        return Model(inp, [Linear(4, 2, name="a")(h), Linear(4, 1, name="b")(h)])
    finally:
        framework.set_default_dtype(old)


def data(n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)
    return gen.standard_normal((n, 3)), gen.standard_normal((n, 2)), gen.standard_normal((n, 1))


def params(model: Model) -> dict[str, list[np.ndarray]]:
    return {name: [p.data.astype(np.float64) for p in model.get_layer(name).parameters()] for name in "hab"}


def per_sample(kind: str, pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keras's per-sample loss (mean over the last axis) and its derivative wrt ``pred`` (not / N)."""
    e = pred - target
    d = pred.shape[-1]
    if kind == "mse":
        return np.mean(e**2, axis=-1), 2 * e / d
    if kind == "mae":
        return np.mean(np.abs(e), axis=-1), np.sign(e) / d
    raise AssertionError(kind)


def reference(p, x, ys, kinds, lw, sws):
    """Per-output losses, the weighted total and the SGD-updated parameters (Keras 3 semantics).

    ``kinds[k] is None``: output ``k`` has no loss (no value, no gradient).
    """
    (wh, bh), (wa, ba), (wb, bb) = p["h"], p["a"], p["b"]
    n = len(x)
    hidden = x @ wh.T + bh
    preds = [hidden @ wa.T + ba, hidden @ wb.T + bb]
    values, grads = [], []
    for kind, pred, y, w, s in zip(kinds, preds, ys, lw, sws):
        s = np.ones(n) if s is None else np.asarray(s, dtype=np.float64)
        if kind is None:
            values.append(None)
            grads.append(np.zeros_like(pred))
            continue
        l, dl = per_sample(kind, pred, y)
        values.append(float(np.sum(s * l) / n))
        grads.append(w * s[:, None] * dl / n)
    total = sum(w * v for w, v in zip(lw, values) if v is not None)
    gh = grads[0] @ wa + grads[1] @ wb
    new = {
        "h": [wh - LR * gh.T @ x, bh - LR * gh.sum(0)],
        "a": [wa - LR * grads[0].T @ hidden, ba - LR * grads[0].sum(0)],
        "b": [wb - LR * grads[1].T @ hidden, bb - LR * grads[1].sum(0)],
    }
    return values, total, new, preds


def assert_params(model: Model, expected, rtol: float = 1e-12, atol: float = 1e-14) -> None:
    got = params(model)
    for name in "hab":
        for g, e in zip(got[name], expected[name]):
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=name)


# -- loss / loss_weights / sample_weight forms: one SGD step against the closed form -------------

LOSS_FORMS = {
    "shared": ("mse", ("mse", "mse")),
    "list": (["mse", "mae"], ("mse", "mae")),
    "dict": ({"b": "mae", "a": "mse"}, ("mse", "mae")),
    "tuple": (("mae", "mse"), ("mae", "mse")),
}
WEIGHT_FORMS = {
    "none": (None, (1.0, 1.0)),
    "list": ([0.7, 1.9], (0.7, 1.9)),
    "dict": ({"b": 1.9, "a": 0.7}, (0.7, 1.9)),
}


def _sample_weights(form: str, gen: np.random.Generator):
    sa, sb = gen.uniform(0.2, 2.0, N), gen.uniform(0.2, 2.0, N)
    return {
        "none": (None, (None, None)),
        "one array": (sa, (sa, sa)),
        "list": ([sa, sb], (sa, sb)),
        "list with None": ([None, sb], (None, sb)),
        "dict": ({"a": sa, "b": sb}, (sa, sb)),
        "dict partial": ({"b": sb}, (None, sb)),
    }[form]


@pytest.mark.parametrize("loss_form", sorted(LOSS_FORMS))
@pytest.mark.parametrize("weight_form", sorted(WEIGHT_FORMS))
@pytest.mark.parametrize("sw_form", ["none", "one array", "list", "list with None", "dict", "dict partial"])
def test_one_fit_step_is_the_closed_form_weighted_sum(loss_form, weight_form, sw_form):
    loss, kinds = LOSS_FORMS[loss_form]
    loss_weights, lw = WEIGHT_FORMS[weight_form]
    sample_weight, sws = _sample_weights(sw_form, np.random.default_rng(5))
    model = two_heads()
    x, ya, yb = data()
    values, total, new, _ = reference(params(model), x, (ya, yb), kinds, lw, sws)
    model.compile(SGD(learning_rate=LR), loss, loss_weights=loss_weights)
    hist = model.fit(x, [ya, yb], sample_weight=sample_weight, batch_size=N, verbose=0).history
    assert list(hist) == ["loss", "a_loss", "b_loss"]
    assert hist["a_loss"][0] == pytest.approx(values[0], rel=1e-12)
    assert hist["b_loss"][0] == pytest.approx(values[1], rel=1e-12)
    assert hist["loss"][0] == pytest.approx(total, rel=1e-12)
    assert_params(model, new)


@pytest.mark.parametrize("step", ["train_on_batch", "fit with dict targets", "fit with a generator"])
def test_every_training_entry_point_takes_the_same_step(step):
    model = two_heads()
    x, ya, yb = data()
    sa = np.linspace(0.5, 1.5, N)
    values, total, new, _ = reference(params(model), x, (ya, yb), ("mse", "mae"), (2.0, 0.5), (None, sa))
    model.compile(SGD(learning_rate=LR), ["mse", "mae"], loss_weights=[2.0, 0.5])
    if step == "train_on_batch":
        logs = model.train_on_batch(x, [ya, yb], sample_weight=[None, sa], return_dict=True)
    elif step == "fit with dict targets":
        logs = model.fit({"x": x}, {"b": yb, "a": ya}, sample_weight={"b": sa}, batch_size=N, verbose=0)
        logs = {k: v[0] for k, v in logs.history.items()}
    else:
        logs = model.fit(iter([(x, [ya, yb], [None, sa])]), verbose=0)
        logs = {k: v[0] for k, v in logs.history.items()}
    assert logs["loss"] == pytest.approx(total, rel=1e-12)
    # Keras 3: the per-output (unweighted) losses are logged by every entry point
    assert logs["a_loss"] == pytest.approx(values[0], rel=1e-12)
    assert logs["b_loss"] == pytest.approx(values[1], rel=1e-12)
    assert_params(model, new)


def test_float32_model_takes_the_float64_step_to_float32_precision():
    model = two_heads("float32")
    x, ya, yb = data()
    _, total, new, _ = reference(params(model), x, (ya, yb), ("mse", "mae"), (0.3, 3.0), (None, None))
    model.compile(SGD(learning_rate=LR), ["mse", "mae"], loss_weights=[0.3, 3.0])
    hist = model.fit(x, [ya, yb], batch_size=N, verbose=0).history
    assert all(p.data.dtype == np.float32 for p in model.parameters())
    assert hist["loss"][0] == pytest.approx(total, rel=1e-5)
    assert_params(model, new, rtol=2e-5, atol=2e-6)


def test_single_output_loss_weight_scales_loss_and_gradient(float64):
    framework.set_seed(0)
    inp = Input((3,), name="x")
    model = Model(inp, Linear(3, 2, name="a")(inp))
    x, ya, _ = data()
    (w, b) = [p.data.copy() for p in model.parameters()]
    r = x @ w.T + b - ya
    model.compile(SGD(learning_rate=LR), "mse", loss_weights=3.0)
    hist = model.fit(x, ya, batch_size=N, verbose=0).history
    assert hist["loss"][0] == pytest.approx(3.0 * float(np.mean(r**2)), rel=1e-12)
    grad = 3.0 * 2 * r / r.size
    np.testing.assert_allclose(model.get_layer("a").weight.data, w - LR * grad.T @ x, rtol=1e-12)


# -- epoch means over uneven batches; evaluate; validation ---------------------------------------


def test_epoch_and_evaluate_values_are_sample_weighted_means_over_uneven_batches(float64):
    model = two_heads()
    x, ya, yb = data(11)
    gen = np.random.default_rng(3)
    sa, sb = gen.uniform(0.2, 2, 11), gen.uniform(0.2, 2, 11)
    model.compile(SGD(learning_rate=0.0), ["mse", "mae"], weighted_metrics=["mae"], loss_weights=[0.5, 2.0])
    values, total, _, preds = reference(params(model), x, (ya, yb), ("mse", "mae"), (0.5, 2.0), (sa, sb))
    mae_a = float(np.sum(sa * np.mean(np.abs(preds[0] - ya), -1)) / sa.sum())
    mae_b = float(np.sum(sb * np.mean(np.abs(preds[1] - yb), -1)) / sb.sum())
    expected = {"loss": total, "a_loss": values[0], "b_loss": values[1], "a_mae": mae_a, "b_mae": mae_b}
    result = model.evaluate(x, [ya, yb], sample_weight=[sa, sb], batch_size=4)
    assert list(result) == list(expected)  # Keras's order: loss, per-output losses, metrics
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-12), key
    hist = model.fit(
        x,
        [ya, yb],
        sample_weight={"a": sa, "b": sb},
        batch_size=4,
        shuffle=False,
        validation_data=(x, {"a": ya, "b": yb}, {"a": sa, "b": sb}),
        verbose=0,
    ).history
    assert list(hist) == list(expected) + ["val_" + k for k in expected]
    for key, value in expected.items():
        assert hist[key][0] == pytest.approx(value, rel=1e-12), key
        assert hist["val_" + key][0] == pytest.approx(value, rel=1e-12), key


def test_batch_logs_carry_running_per_output_losses(float64):
    model = two_heads()
    x, ya, yb = data(12)
    model.compile(SGD(learning_rate=0.0), ["mse", "mae"], loss_weights=[1.0, 3.0])
    values, _, _, _ = reference(params(model), x, (ya, yb), ("mse", "mae"), (1.0, 3.0), (None, None))
    seen: list[dict] = []
    cb = LambdaCallback(on_train_batch_end=lambda step, logs: seen.append(dict(logs)))
    model.fit(x, [ya, yb], batch_size=5, shuffle=False, callbacks=[cb], verbose=0)
    assert len(seen) == 3
    assert seen[-1]["a_loss"] == pytest.approx(values[0], rel=1e-12)
    assert seen[-1]["b_loss"] == pytest.approx(values[1], rel=1e-12)
    first = reference(params(model), x[:5], (ya[:5], yb[:5]), ("mse", "mae"), (1.0, 3.0), (None, None))[0]
    assert seen[0]["a_loss"] == pytest.approx(first[0], rel=1e-12)


def test_test_on_batch_return_dict_has_the_per_output_losses(float64):
    model = two_heads()
    x, ya, yb = data()
    model.compile("sgd", ["mse", "mae"], metrics={"a": "mae"})
    logs = model.test_on_batch(x, [ya, yb], return_dict=True)
    assert logs == pytest.approx(model.evaluate(x, [ya, yb], batch_size=N), rel=1e-12)
    assert list(logs) == ["loss", "a_loss", "b_loss", "a_mae"]


def test_evaluate_accepts_keras_return_dict(float64):
    model = two_heads()
    x, ya, yb = data()
    model.compile("sgd", "mse")
    assert model.evaluate(x, [ya, yb], return_dict=True) == model.evaluate(x, [ya, yb])


def test_evaluate_return_dict_false_gives_keras_list_in_the_dict_order(float64):
    """Keras's default form: a list of the values, or the loss alone; a dict unpacked as
    ``loss, mae = ...`` would silently give its keys."""
    model = two_heads()
    x, ya, yb = data()
    model.compile("sgd", "mse", metrics=["mae"])
    logs = model.evaluate(x, [ya, yb])
    values = model.evaluate(x, [ya, yb], return_dict=False)
    assert isinstance(values, list) and values == list(logs.values()) and len(values) == 5
    single = Sequential([Linear(3, 1)], input_shape=(3,))
    single.compile("sgd", "mse")
    loss = single.evaluate(x, yb, return_dict=False)
    assert isinstance(loss, float) and loss == single.evaluate(x, yb)["loss"]


# -- the weighted gradient reaches each branch; threads -----------------------------------------


def test_two_threads_equal_one_thread(float64):
    x, ya, yb = data(24, seed=4)
    gen = np.random.default_rng(4)
    sw = {"a": gen.uniform(0.5, 1.5, 24), "b": gen.uniform(0.5, 1.5, 24)}
    runs = []
    for threads in (None, 2):
        model = two_heads(seed=3)
        model.compile(
            SGD(learning_rate=0.05), {"a": "mse", "b": "mae"}, metrics=["mae"], loss_weights=[0.5, 2]
        )
        hist = model.fit(
            x,
            [ya, yb],
            sample_weight=sw,
            epochs=2,
            batch_size=8,
            seed=1,
            threads=threads,
            verbose=0,
            validation_data=(x, [ya, yb]),
        ).history
        runs.append((hist, [p.data.copy() for p in model.parameters()]))
    (h1, p1), (h2, p2) = runs
    assert list(h1) == list(h2)
    for key in h1:
        np.testing.assert_allclose(h2[key], h1[key], rtol=1e-12, err_msg=key)
    for a, b in zip(p1, p2):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)


def test_two_inputs_two_outputs_gradient_matches_closed_form(float64):
    framework.set_seed(0)
    i1, i2 = Input((3,), name="i1"), Input((2,), name="i2")
    merged = Concatenate()([i1, i2])
    model = Model([i1, i2], [Linear(5, 2, name="p")(merged), Linear(2, 1, name="q")(i2)])
    gen = np.random.default_rng(0)
    x1, x2 = gen.standard_normal((N, 3)), gen.standard_normal((N, 2))
    yp, yq = gen.standard_normal((N, 2)), gen.standard_normal((N, 1))
    wp, bp = (a.copy() for a in (model.get_layer("p").weight.data, model.get_layer("p").bias.data))
    wq, bq = (a.copy() for a in (model.get_layer("q").weight.data, model.get_layer("q").bias.data))
    xc = np.concatenate([x1, x2], 1)
    gp = 0.25 * 2 * (xc @ wp.T + bp - yp) / (N * 2)
    gq = 4.0 * 2 * (x2 @ wq.T + bq - yq) / N
    model.compile(SGD(learning_rate=LR), "mse", loss_weights={"p": 0.25, "q": 4.0})
    model.fit({"i2": x2, "i1": x1}, {"q": yq, "p": yp}, batch_size=N, verbose=0)
    np.testing.assert_allclose(model.get_layer("p").weight.data, wp - LR * gp.T @ xc, rtol=1e-12)
    np.testing.assert_allclose(model.get_layer("q").weight.data, wq - LR * gq.T @ x2, rtol=1e-12)
    np.testing.assert_allclose(model.get_layer("q").bias.data, bq - LR * gq.sum(0), rtol=1e-12)
    out_list, out_dict = model.predict([x1, x2]), model.predict({"i2": x2, "i1": x1})
    assert isinstance(out_list, list) and len(out_list) == 2
    for a, b, c in zip(out_list, out_dict, model([x1, x2])):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-12)
    with pytest.raises(DataError, match="takes 2 inputs, got 3"):
        model.predict([x1, x2, x2])
    with pytest.raises(DataError, match="takes 2 inputs, got 1"):
        model.fit(x1, [yp, yq], verbose=0)


# -- loss None for an output (Keras allows) --------------------------------------------------------


@pytest.mark.parametrize(
    "loss", [["mse", None], {"a": "mse", "b": None}, ("mse", None)], ids=["list", "dict", "tuple"]
)
@pytest.mark.parametrize("targets", ["full", "None entry", "keras partial", "dict partial"])
def test_an_output_without_a_loss_gets_no_gradient(loss, targets, float64):
    model = two_heads()
    x, ya, yb = data()
    values, total, new, _ = reference(params(model), x, (ya, yb), ("mse", None), (2.0, 5.0), (None, None))
    model.compile(SGD(learning_rate=LR), loss, loss_weights=[2.0, 5.0])
    y = {"full": [ya, yb], "None entry": [ya, None], "keras partial": [ya], "dict partial": {"a": ya}}[
        targets
    ]
    hist = model.fit(x, y, batch_size=N, verbose=0).history
    assert hist["loss"][0] == pytest.approx(total, rel=1e-12)
    assert hist["a_loss"][0] == pytest.approx(values[0], rel=1e-12)
    assert_params(model, new)  # head b unchanged, trunk stepped by head a alone
    assert model.evaluate(x, y)["loss"] == pytest.approx(
        reference(params(model), x, (ya, yb), ("mse", None), (2.0, 5.0), (None, None))[1], rel=1e-12
    )
    before = model.evaluate(x, y)
    assert before["b_loss"] == 0.0  # an output without a loss logs 0
    assert model.train_on_batch(x, y) == pytest.approx(before["loss"], rel=1e-12)


def test_an_output_without_a_loss_can_still_have_metrics(float64):
    model = two_heads()
    x, ya, yb = data()
    model.compile("sgd", [None, "mse"], metrics={"a": "mae"})
    out = model.predict(x)
    result = model.evaluate(x, [ya, yb])
    assert result["a_mae"] == pytest.approx(float(np.mean(np.abs(out[0] - ya))), rel=1e-12)
    assert result["loss"] == pytest.approx(float(np.mean((out[1] - yb) ** 2)), rel=1e-12)
    with pytest.raises(DataError, match=r"'a'.*metric"):
        model.evaluate(x, [None, yb])
    with pytest.raises(DataError, match=r"'b'"):
        model.evaluate(x, [ya, None])


def test_all_losses_none_is_refused():
    model = two_heads()
    with pytest.raises(ConfigError, match="at least one"):
        model.compile("sgd", [None, None])


def test_loss_none_survives_compile_config_round_trip(float64):
    model = two_heads()
    model.compile("sgd", {"a": None, "b": "mae"}, loss_weights={"b": 2.0})
    config = model.compile_config()
    other = two_heads()
    other.compile_from_config(config)
    x, ya, yb = data()
    assert other.evaluate(x, [ya, yb]) == model.evaluate(x, [ya, yb])


# -- compile arguments: loss_weights, metrics forms, names -------------------------------------


def test_loss_weights_dict_leaves_missing_outputs_at_one(float64):
    model = two_heads()
    x, ya, yb = data()
    model.compile("sgd", "mse", loss_weights={"b": 4.0})
    r = model.evaluate(x, [ya, yb])
    assert r["loss"] == pytest.approx(r["a_loss"] + 4.0 * r["b_loss"], rel=1e-12)


@pytest.mark.parametrize(
    "loss_weights, match",
    [
        (["x", 1.0], r"loss_weights.*'a'.*'x'"),
        ({"a": None, "b": 1.0}, r"loss_weights.*'a'.*None"),
        ([1.0, float("nan")], r"loss_weights.*'b'.*nan"),
        ([1.0], "1 entries"),
        ({"c": 1.0}, r"unknown \['c'\]"),
        (2.0, "list or dict"),
    ],
)
def test_bad_loss_weights_are_config_errors(loss_weights, match):
    model = two_heads()
    with pytest.raises(ConfigError, match=match):
        model.compile("sgd", "mse", loss_weights=loss_weights)


METRIC_FORMS = {
    "flat list applies to every output": (["mae", "mse"], {"a": ["mae", "mse"], "b": ["mae", "mse"]}),
    "single name": ("mae", {"a": ["mae"], "b": ["mae"]}),
    "list of lists": ([["mae"], ["mse", "mae"]], {"a": ["mae"], "b": ["mse", "mae"]}),
    "keras 3 mixed list": ([["mae", "mse"], "mse"], {"a": ["mae", "mse"], "b": ["mse"]}),
    "keras 3 list with None": ([None, ["mae"]], {"a": [], "b": ["mae"]}),
    "dict": ({"b": "mse"}, {"a": [], "b": ["mse"]}),
    "dict with None": ({"a": None, "b": ["mae", "mse"]}, {"a": [], "b": ["mae", "mse"]}),
}


@pytest.mark.parametrize("form", sorted(METRIC_FORMS))
def test_metrics_forms_give_keras_keys_and_per_output_values(form, float64):
    metrics, per_output = METRIC_FORMS[form]
    model = two_heads()
    x, ya, yb = data()
    model.compile("sgd", "mse", metrics=metrics)
    out = model.predict(x)
    result = model.evaluate(x, {"a": ya, "b": yb})
    expected = {}
    for k, name in enumerate("ab"):
        target = (ya, yb)[k]
        for metric in per_output[name]:
            fn = np.abs if metric == "mae" else np.square
            expected[f"{name}_{metric}"] = float(np.mean(fn(out[k] - target)))
    assert list(result) == ["loss", "a_loss", "b_loss", *expected]
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-12), key


def test_one_metric_instance_for_two_outputs_keeps_separate_state(float64):
    model = two_heads()
    x, ya, yb = data()
    shared = MeanAbsoluteError()
    model.compile("sgd", "mse", metrics=[shared])
    out = model.predict(x)
    result = model.evaluate(x, [ya, yb], batch_size=3)
    assert result["a_mae"] == pytest.approx(float(np.mean(np.abs(out[0] - ya))), rel=1e-12)
    assert result["b_mae"] == pytest.approx(float(np.mean(np.abs(out[1] - yb))), rel=1e-12)
    model.compile("sgd", "mse", metrics={"a": [shared], "b": [shared]})
    result = model.evaluate(x, [ya, yb], batch_size=3)
    assert result["b_mae"] == pytest.approx(float(np.mean(np.abs(out[1] - yb))), rel=1e-12)


@pytest.mark.parametrize(
    "metrics, match",
    [
        ({"a": ["mae", "mae"]}, "repeat"),
        ([["mae"]], "1 entries"),
        ({"c": "mae"}, r"unknown \['c'\]"),
        ([[MeanAbsoluteError(name="loss")], []], r"a_loss"),
    ],
)
def test_colliding_or_malformed_metrics_are_config_errors(metrics, match):
    model = two_heads()
    with pytest.raises(ConfigError, match=match):
        model.compile("sgd", "mse", metrics=metrics)


def test_a_metric_named_loss_on_a_single_output_is_refused():
    framework.set_seed(0)
    inp = Input((3,), name="x")
    model = Model(inp, Linear(3, 1, name="a")(inp))
    with pytest.raises(ConfigError, match="'loss'"):
        model.compile("sgd", "mse", metrics=[MeanAbsoluteError(name="loss")])


def test_renamed_output_layer_renames_every_key(float64):
    model = two_heads()
    x, ya, yb = data()
    model.compile("sgd", "mse", metrics=["mae"])
    model.get_layer("a").name = "alpha"
    hist = model.fit(x, [ya, yb], verbose=0, validation_data=(x, {"alpha": ya, "b": yb})).history
    assert list(hist) == [
        "loss", "alpha_loss", "b_loss", "alpha_mae", "b_mae",
        "val_loss", "val_alpha_loss", "val_b_loss", "val_alpha_mae", "val_b_mae",
    ]  # fmt: skip


def _same_layer_twice() -> Model:
    framework.set_seed(0)
    inp = Input((3,), name="x")
    h = Linear(3, 2, name="h")(inp)
    return Model(inp, [h, h])


def test_two_outputs_of_one_layer_get_distinct_keys(float64):
    model = _same_layer_twice()
    x, ya, _ = data()
    model.compile("sgd", ["mse", "mae"], metrics=["mse"])
    result = model.evaluate(x, [ya, 2 * ya])
    out = model.predict(x)[0]
    assert list(result) == ["loss", "h_loss", "h_1_loss", "h_mse", "h_1_mse"]
    assert result["h_loss"] == pytest.approx(float(np.mean((out - ya) ** 2)), rel=1e-12)
    assert result["h_1_loss"] == pytest.approx(float(np.mean(np.abs(out - 2 * ya))), rel=1e-12)
    assert result["h_1_mse"] == pytest.approx(float(np.mean((out - 2 * ya) ** 2)), rel=1e-12)
    hist = model.fit(x, [ya, 2 * ya], verbose=0).history
    assert list(hist) == list(result)


def test_dicts_keyed_by_a_repeated_output_name_are_refused():
    model = _same_layer_twice()
    x, ya, _ = data()
    with pytest.raises(ConfigError, match=r"'h'.*list"):
        model.compile("sgd", {"h": "mse"})
    model.compile("sgd", "mse")
    with pytest.raises(DataError, match=r"'h'.*list"):
        model.fit(x, {"h": ya}, verbose=0)
    with pytest.raises(DataError, match=r"'h'.*list"):
        model.evaluate(x, [ya, ya], sample_weight={"h": np.ones(N)})


# -- a list of one output (Keras keeps the list structure) -----------------------------------------


@pytest.mark.parametrize("form", ["array", "list", "dict"])
def test_model_with_a_list_of_one_output_trains_like_a_single_output(form, float64):
    x, ya, _ = data()
    sw = np.linspace(0.5, 2.0, N)
    models = []
    for outputs_as_list in (False, True):
        framework.set_seed(0)
        inp = Input((3,), name="x")
        out = Linear(3, 2, name="a")(inp)
        model = Model(inp, [out] if outputs_as_list else out)
        model.compile(SGD(learning_rate=LR), "mse", metrics=["mae"])
        models.append(model)
    single, listed = models
    y = {"array": ya, "list": [ya], "dict": {"a": ya}}[form]
    expected = single.fit(x, ya, sample_weight=sw, batch_size=N, verbose=0).history
    got = listed.fit(x, y, sample_weight=sw, batch_size=N, verbose=0).history
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-12)
    np.testing.assert_allclose(
        listed.get_layer("a").weight.data, single.get_layer("a").weight.data, rtol=1e-12
    )
    assert listed.evaluate(x, y)["loss"] == pytest.approx(single.evaluate(x, ya)["loss"], rel=1e-12)
    assert listed.train_on_batch(x, y, sample_weight=[sw]) == pytest.approx(
        single.train_on_batch(x, ya, sample_weight=sw), rel=1e-12
    )
    prediction = listed.predict(x)
    assert isinstance(prediction, list) and len(prediction) == 1
    np.testing.assert_allclose(prediction[0], single.predict(x), rtol=1e-12)


# -- bad targets and weights: errors that name the output -----------------------------------------


def _call(model, entry, x, y, sample_weight=None):
    if entry == "fit":
        return model.fit(x, y, sample_weight=sample_weight, verbose=0)
    if entry == "generator":
        return model.fit(iter([(x, y) if sample_weight is None else (x, y, sample_weight)]), verbose=0)
    return getattr(model, entry)(x, y, sample_weight=sample_weight)


ENTRIES = ["fit", "evaluate", "train_on_batch", "test_on_batch", "generator"]


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_target_of_the_wrong_shape_names_its_output(entry):
    model = two_heads()
    x, ya, yb = data()
    model.compile("sgd", ["mse", "mae"])
    with pytest.raises(ShapeError, match=r"output 'b'.*\(10, 1\).*\(10, 2\)"):
        _call(model, entry, x, [ya, ya])
    with pytest.raises(ShapeError, match=r"output 'a'"):
        _call(model, entry, x, [yb, yb])


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_metric_target_of_the_wrong_shape_names_its_output(entry):
    model = two_heads()
    x, _, yb = data()
    model.compile("sgd", [None, "mse"], metrics={"a": "mae"})
    with pytest.raises(ShapeError, match=r"output 'a'"):
        _call(model, entry, x, [yb[:, 0:1] * np.ones((1, 3)), yb])


@pytest.mark.parametrize("entry", ENTRIES[:4])
@pytest.mark.parametrize(
    "y, match",
    [
        ("one", "2 outputs, got 1"),
        ("three", "2 outputs, got 3"),
        ("wrong key", r"unknown: \['c'\]"),
        ("missing key", r"missing: \['b'\]"),
    ],
)
def test_wrong_target_structure_is_a_data_error(entry, y, match):
    model = two_heads()
    x, ya, yb = data()
    model.compile("sgd", "mse")
    targets = {"one": [ya], "three": [ya, yb, yb], "wrong key": {"a": ya, "c": yb}, "missing key": {"a": ya}}
    with pytest.raises(DataError, match=match):
        _call(model, entry, x, targets[y])


def test_class_weight_with_several_outputs_is_refused():
    model = two_heads()
    x, ya, yb = data()
    model.compile("sgd", "mse")
    with pytest.raises(ConfigError, match="one output"):
        model.fit(x, [ya, yb], class_weight={0: 1.0, 1: 2.0}, verbose=0)


@pytest.mark.parametrize(
    "sample_weight, match",
    [
        ("abc", r"sample_weight.*str"),
        ([np.ones(N)], "2 outputs, got a list of 1"),
        ({"c": np.ones(N)}, r"unknown output names \['c'\]"),
        ([np.ones(N), np.ones(4)], r"sample_weight\[1\].*\(10,\).*\(4,\)"),
    ],
)
def test_bad_sample_weights_are_data_errors(sample_weight, match):
    model = two_heads()
    x, ya, yb = data()
    model.compile("sgd", "mse")
    with pytest.raises(DataError, match=match):
        model.fit(x, [ya, yb], sample_weight=sample_weight, verbose=0)


def test_errors_are_framework_errors_for_none_targets_of_lossy_outputs():
    model = two_heads()
    x, ya, _ = data()
    model.compile("sgd", "mse")
    with pytest.raises(FrameworkError, match=r"'b'"):
        model.fit(x, [ya, None], verbose=0)
    with pytest.raises(FrameworkError, match=r"y\[1\]"):
        model.fit(iter([(x, [ya, None])]), verbose=0)


def test_calling_a_list_of_one_input_model_with_a_list():
    framework.set_seed(0)
    inp = Input((3,), name="x")
    model = Model([inp], Linear(3, 2)(inp))
    x, _, _ = data()
    np.testing.assert_array_equal(model([x]), model(x))


def test_a_generator_of_dict_batches_may_leave_out_the_target_of_an_output_without_a_loss(float64):
    model = two_heads()
    x, ya, yb = data()
    values, total, new, _ = reference(params(model), x, (ya, yb), (None, "mae"), (1.0, 1.5), (None, None))
    model.compile(SGD(learning_rate=LR), {"a": None, "b": "mae"}, loss_weights={"b": 1.5})
    hist = model.fit(iter([({"x": x}, {"b": yb})]), verbose=0).history
    assert hist["loss"][0] == pytest.approx(total, rel=1e-12)
    assert hist["b_loss"][0] == pytest.approx(values[1], rel=1e-12)
    assert_params(model, new)


def test_each_output_pairs_its_own_activation_loss_and_accuracy(float64):
    framework.set_seed(0)
    inp = Input((3,), name="x")
    heads = [
        Linear(3, 3, name="a", activation="softmax")(inp),
        Linear(3, 1, name="b")(inp),
        Linear(3, 1, name="c", activation="sigmoid")(inp),
    ]
    model = Model(inp, heads)
    gen = np.random.default_rng(0)
    x = gen.standard_normal((8, 3))
    ys = [np.eye(3)[gen.integers(0, 3, 8)], *(gen.integers(0, 2, (8, 1)).astype(float) for _ in range(2))]
    start = {n: [p.data.copy() for p in model.get_layer(n).parameters()] for n in "abc"}
    losses = ["categorical_crossentropy", "bce_with_logits", "binary_crossentropy"]
    model.compile(SGD(learning_rate=LR), losses, metrics=["accuracy"])
    out = model.predict(x)
    result = model.evaluate(x, ys)
    assert result["a_accuracy"] == np.mean(out[0].argmax(1) == ys[0].argmax(1))
    assert result["b_accuracy"] == np.mean((out[1] > 0) == ys[1])  # logits: threshold 0
    assert result["c_accuracy"] == np.mean((out[2] > 0.5) == ys[2])  # probabilities: threshold 0.5
    model.fit(x, ys, batch_size=8, verbose=0)
    for name, y in zip("abc", ys):
        w, b = start[name]
        z = x @ w.T + b
        e = np.exp(z - z.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True) if name == "a" else 1 / (1 + np.exp(-z))
        np.testing.assert_allclose(
            model.get_layer(name).weight.data, w - LR * ((p - y) / 8).T @ x, rtol=1e-12, err_msg=name
        )


def test_two_threads_equal_one_thread_with_an_output_without_a_loss(float64):
    x, ya, yb = data(20, seed=6)
    runs = []
    for threads in (None, 2):
        model = two_heads()
        model.compile(SGD(learning_rate=LR), [None, "mse"], metrics={"a": "mae"})
        hist = model.fit(x, [ya, yb], batch_size=8, epochs=2, shuffle=False, threads=threads, verbose=0)
        runs.append((hist.history, [p.data.copy() for p in model.parameters()]))
    (h1, p1), (h2, p2) = runs
    assert h1["a_loss"] == [0.0, 0.0]
    for key in h1:
        np.testing.assert_allclose(h2[key], h1[key], rtol=1e-12, err_msg=key)
    for a, b in zip(p1, p2):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)


def test_validation_split_holds_out_the_tail_of_every_target_and_weight(float64):
    model = two_heads()
    x, ya, yb = data(20, seed=7)
    sw = np.random.default_rng(7).uniform(0.5, 2.0, 20)
    model.compile(SGD(learning_rate=0.0), "mse", metrics=["mae"])
    hist = model.fit(x, [ya, yb], sample_weight={"b": sw}, validation_split=0.3, verbose=0).history
    tail = model.evaluate(x[14:], [ya[14:], yb[14:]], sample_weight=[None, sw[14:]])
    for key, value in tail.items():
        assert hist["val_" + key][0] == pytest.approx(value, rel=1e-12), key


def test_class_weight_on_a_model_with_a_list_of_one_output(float64):
    framework.set_seed(0)
    inp = Input((3,), name="x")
    model = Model(inp, [Linear(3, 2, name="a")(inp)])
    model.compile(SGD(learning_rate=LR), "cross_entropy")
    x, _, _ = data()
    labels = np.arange(N) % 2
    weights = np.where(labels == 1, 3.0, 1.0)
    expected = model.evaluate(x, labels, sample_weight=weights)["loss"]
    hist = model.fit(x, [labels], class_weight={0: 1.0, 1: 3.0}, batch_size=N, verbose=0).history
    assert hist["loss"][0] == pytest.approx(expected, rel=1e-12)
