"""Placeholders passed to a layer as call arguments in a functional model (a padding mask as an Input).

Before, ``layer(x, key_padding_mask=Input(...))`` traced without complaint and
the first run handed the placeholder object itself to the layer, which refused
it as "dtype object".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import framework
from framework import Input, Model
from framework.base.context import Context
from framework.errors import CheckpointError, ConfigError
from framework.layers import Embedding, Linear, MultiheadAttention, TransformerEncoderLayer
from framework.models.cloning import clone_model
from framework.models.summary import summary_rows


def _encoder() -> tuple[Model, TransformerEncoderLayer]:
    framework.set_seed(0)
    tokens = Input((5, 8), dtype="float64", name="tokens")
    padding = Input((5,), dtype="bool", name="padding")
    layer = TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    return Model([tokens, padding], layer(tokens, src_key_padding_mask=padding)), layer


def _data() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(1).standard_normal((3, 5, 8))
    mask = np.zeros((3, 5), dtype=bool)
    mask[0, 3:] = mask[2, 1:] = True
    return x, mask


def test_the_mask_input_reaches_the_layer_each_run(float64):
    model, layer = _encoder()
    x, mask = _data()
    direct = layer.forward(Context(False, record=False), x, src_key_padding_mask=mask)
    np.testing.assert_array_equal(model.predict([x, mask]), direct)
    unmasked = layer.forward(Context(False, record=False), x)
    assert np.abs(model.predict([x, mask]) - unmasked).max() > 1e-3  # the mask changes the result
    other = np.zeros_like(mask)
    np.testing.assert_allclose(
        model.predict([x, other]), unmasked, rtol=1e-12, atol=1e-14
    )  # no padding: no masking


def test_gradients_through_the_model_equal_the_layer_called_with_the_mask(float64):
    model, layer = _encoder()
    x, mask = _data()
    g = np.random.default_rng(2).standard_normal((3, 5, 8))
    ctx = Context(True, record=True)
    model.forward(ctx, [x, mask])
    model.zero_grad()
    dx, dmask = model.backward(ctx, g)
    ours = {n: p.grad.copy() for n, p in layer.named_parameters()}
    layer.zero_grad()
    own = Context(True, record=True)
    layer.forward(own, x, src_key_padding_mask=mask)
    expected_dx = layer.backward(own, g)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-12, atol=1e-14)
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(ours[name], p.grad, rtol=1e-12, atol=1e-14, err_msg=name)
    assert not np.any(dmask)  # no gradient flows into a mask


def test_fit_predict_and_threads_take_the_mask_with_the_inputs(float64):
    model, _ = _encoder()
    x, mask = _data()
    model.compile("sgd", "mse")
    history = model.fit([x, mask], np.zeros((3, 5, 8)), epochs=2, batch_size=2, verbose=0)
    assert len(history.history["loss"]) == 2
    np.testing.assert_allclose(model.predict([x, mask], threads=2), model.predict([x, mask]), rtol=1e-12)
    # a float 0/1 array for the bool Input reads as its non-zeros, not as an additive float mask
    np.testing.assert_array_equal(model.predict([x, mask.astype(np.float32)]), model.predict([x, mask]))


def test_save_load_config_and_clone_keep_the_mask(tmp_path: Path, float64):
    pytest.importorskip("h5py")
    model, _ = _encoder()
    x, mask = _data()
    expected = model.predict([x, mask])
    model.save(tmp_path / "m.h5")
    np.testing.assert_array_equal(framework.load_model(tmp_path / "m.h5").predict([x, mask]), expected)
    rebuilt = Model.from_config(json.loads(json.dumps(model.get_config())))
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt.predict([x, mask]), expected)
    twin = clone_model(model)
    twin.set_weights(model.get_weights())
    np.testing.assert_array_equal(twin.predict([x, mask]), expected)
    connected = [row[-1] for row in summary_rows(model)]
    assert connected[-1] == "tokens, src_key_padding_mask=padding"


def test_a_positional_mask_and_a_keyword_mask_in_one_call(float64):
    framework.set_seed(3)
    q = Input((4, 6), dtype="float64")
    pad = Input((4,), dtype="bool")
    mha = MultiheadAttention(6, 2, batch_first=True)
    model = Model([q, pad], mha(q, pad, is_causal=False))  # key_padding_mask is forward's second argument
    x = np.random.default_rng(4).standard_normal((2, 4, 6))
    mask = np.array([[False, False, True, True], [False, False, False, True]])
    direct = mha.forward(Context(False, record=False), x, mask)
    np.testing.assert_array_equal(model.predict([x, mask]), direct)
    rebuilt = Model.from_config(json.loads(json.dumps(model.get_config())))
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(rebuilt.predict([x, mask]), direct)


def test_a_floating_placeholder_as_a_call_argument_is_refused():
    tokens = Input((5, 8))
    layer = TransformerEncoderLayer(8, 2, 16)
    with pytest.raises(ConfigError, match=r"src_key_padding_mask.*float32 placeholder.*dtype='bool'"):
        layer(tokens, src_key_padding_mask=Input((5,)))


def test_a_placeholder_inside_a_tuple_is_refused():
    tokens = Input((5, 8))
    with pytest.raises(ConfigError, match="inside a tuple"):
        MultiheadAttention(8, 2, batch_first=True)(tokens, key_padding_mask=(Input((5,), dtype="bool"),))


def test_a_bool_input_feeding_a_floating_layer_is_refused():
    flags = Input((4,), dtype="bool", name="flags")
    with pytest.raises(ConfigError, match=r"'flags' is declared bool.*Linear"):
        Model(flags, Linear(4, 2)(flags))


def test_an_integer_input_feeds_an_embedding():
    ids = Input((3,), dtype="int64", name="ids")
    model = Model(ids, Embedding(10, 4)(ids))
    tokens = np.array([[1, 2, 3], [4, 5, 9]])
    np.testing.assert_array_equal(model.predict(tokens), model.layers[1].weight.data[tokens])
    np.testing.assert_array_equal(model.predict(tokens.astype(np.float32)), model.predict(tokens))


def test_a_checkpoint_whose_placeholder_reference_is_malformed_is_refused(tmp_path: Path, float64):
    h5py = pytest.importorskip("h5py")
    model, _ = _encoder()
    path = tmp_path / "m.h5"
    model.save(path)
    with h5py.File(path, "a") as handle:
        config = json.loads(handle["model"].attrs["config"])
        text = json.dumps(config).replace(
            '"placeholders": {"src_key_padding_mask": ["padding", 0, 0]}',
            '"placeholders": {"src_key_padding_mask": "os.system"}',
        )
        assert text != json.dumps(config)
        handle["model"].attrs["config"] = text
    with pytest.raises(CheckpointError, match="placeholder 'src_key_padding_mask' must be"):
        framework.load_model(path)
