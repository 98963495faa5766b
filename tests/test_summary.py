"""Tests for ``model.summary()``: nested models (``expand_nested``, issue 14) and shared parameters."""

from __future__ import annotations

import inspect
import re

import pytest

from framework import Input, Model, Sequential
from framework.layers import BatchNorm, Linear, ReLU
from framework.models.summary import NEST_MARK, summary_rows, summary_text


def _totals(text: str) -> tuple[int, int, int]:
    """The total / trainable / non-trainable counts printed under the table."""
    found = [
        int(re.search(rf"^{label} params: ([\d,]+)$", text, re.M).group(1).replace(",", ""))
        for label in ("Total", "Trainable", "Non-trainable")
    ]
    return found[0], found[1], found[2]


def _sequential_in_model() -> Model:
    """A functional model whose middle is a Sequential with a frozen layer and a BatchNorm."""
    encoder = Sequential(
        [
            Linear(4, 8, name="enc_in"),
            BatchNorm(8, name="enc_norm"),
            ReLU(name="enc_act"),
            Linear(8, 6, name="enc_out"),
        ],
        name="encoder",
    )
    encoder.get_layer("enc_in").weight.trainable = False
    x = Input((4,))
    return Model(x, Linear(6, 3, name="head")(encoder(x)), name="outer")


def _model_in_sequential() -> Sequential:
    x = Input((5,))
    inner = Model(x, Linear(5, 7, name="proj")(x), name="backbone")
    return Sequential([inner, Linear(7, 2, name="classifier")], name="wrapper")


_NESTED = [_sequential_in_model, _model_in_sequential]


def _names(text: str) -> list[str]:
    """The first column of every table row (between the two rules)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("-")) + 1
    stop = next(i for i in range(start, len(lines)) if lines[i].startswith("="))
    return [line.split("  ")[0] for line in lines[start:stop]]


def test_expand_nested_shows_a_nested_sequentials_layers_under_its_row():
    model = _sequential_in_model()
    text = summary_text(model, expand_nested=True)
    assert _names(text) == [
        "input",
        "encoder",
        NEST_MARK + "enc_in",
        NEST_MARK + "enc_norm",
        NEST_MARK + "enc_act",
        NEST_MARK + "enc_out",
        "head",
    ]
    inner = {row[0]: row for row in summary_rows(model, expand_nested=True)}
    assert inner[NEST_MARK + "enc_out"][1:4] == ("Linear", "(None, 6)", 8 * 6 + 6)


def test_expand_nested_shows_a_nested_functional_models_layers_under_its_row():
    text = summary_text(_model_in_sequential(), expand_nested=True)
    assert _names(text) == ["backbone", NEST_MARK + "input", NEST_MARK + "proj", "classifier"]


def test_expand_nested_indents_once_per_level():
    x = Input((3,))
    innermost = Sequential([Linear(3, 3, name="deep")], name="innermost")
    middle = Sequential([innermost, Linear(3, 2, name="mid")], name="middle")
    model = Model(x, middle(x), name="top")
    assert _names(summary_text(model, expand_nested=True)) == [
        "input",
        "middle",
        NEST_MARK + "innermost",
        NEST_MARK * 2 + "deep",
        NEST_MARK + "mid",
    ]


@pytest.mark.parametrize(
    "build", [_sequential_in_model, _model_in_sequential], ids=["seq-in-model", "model-in-seq"]
)
def test_default_summary_does_not_expand(build):
    model = build()
    text = summary_text(model)
    assert text == summary_text(model, expand_nested=False)
    assert not any(name.startswith(NEST_MARK) for name in _names(text))
    assert "enc_in" not in text and "proj" not in text


@pytest.mark.parametrize("expand", [False, True])
@pytest.mark.parametrize(
    "build", [_sequential_in_model, _model_in_sequential], ids=["seq-in-model", "model-in-seq"]
)
def test_totals_equal_count_params(build, expand):
    model = build()
    total, trainable, frozen = _totals(summary_text(model, expand_nested=expand))
    assert total == model.count_params()
    assert trainable == model.count_params(trainable=True)
    assert frozen == model.count_params(trainable=False)
    assert total == trainable + frozen


def test_nested_frozen_weights_and_buffers_are_non_trainable():
    model = _sequential_in_model()
    _, trainable, frozen = _totals(summary_text(model, expand_nested=True))
    # enc_in's weight (4*8) is frozen; BatchNorm's running mean and variance (2*8) are buffers.
    assert frozen >= 4 * 8 + 2 * 8
    assert trainable == model.count_params() - frozen


def test_tied_parameters_are_counted_once_in_the_totals():
    first, second = Linear(4, 4, name="first"), Linear(4, 4, name="second")
    second.weight = first.weight  # tied: one Parameter in two layers
    model = Sequential([first, second], name="tied")
    rows = summary_rows(model)
    assert [r[3] for r in rows] == [20, 20]  # each layer shows its own count
    total, trainable, _ = _totals(summary_text(model))
    assert total == model.count_params() == 16 + 4 + 4
    assert trainable == total


def test_tied_parameters_inside_a_nested_model_are_counted_once():
    first, second = Linear(4, 4, name="first"), Linear(4, 4, name="second")
    inner = Sequential([first], name="inner")
    second.weight = first.weight
    x = Input((4,))
    model = Model(x, second(inner(x)), name="outer")
    total, _, _ = _totals(summary_text(model, expand_nested=True))
    assert total == model.count_params() == 16 + 4 + 4


def test_a_layer_called_twice_in_a_graph_is_counted_once():
    x = Input((4,))
    shared = Linear(4, 4, name="shared")
    model = Model(x, shared(shared(x)))
    rows = summary_rows(model)
    assert [r[0] for r in rows].count("shared") == 2
    assert _totals(summary_text(model))[0] == model.count_params() == 20


@pytest.mark.skipif(
    "expand_nested" not in inspect.signature(Model.summary).parameters,
    reason="Model.summary does not take expand_nested yet (wired in framework/models/model.py)",
)
def test_model_summary_expand_nested():
    lines: list[str] = []
    _sequential_in_model().summary(print_fn=lines.append, expand_nested=True)
    text = "\n".join(lines)
    for name in ("enc_in", "enc_norm", "enc_act", "enc_out"):
        assert NEST_MARK + name in text
