"""course_lib.TransformerBlock and build_transformer_classifier: the pre-/post-norm layouts
recomposed by hand (normalization and feed-forward in NumPy, attention from the block's own
sublayer), the causal and padding masks, configs and files, and a quick training run."""

import doctest
import math

import keras
import numpy as np
import pytest

import course_lib
import course_lib.transformer
from course_lib import reference

D, HEADS, FF, LENGTH = 8, 2, 16, 6
CASES = [(norm, position) for norm in ("layer", "rms") for position in ("pre", "post")]
_erf = np.vectorize(math.erf)


def _block(rng, norm, position, **kwargs):
    block = course_lib.TransformerBlock(D, HEADS, FF, norm=norm, norm_position=position,
                                        **kwargs)
    block.build((None, LENGTH, D))
    for w in block.weights:  # nothing left at its initial 1 or 0
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.5
                 + (1.0 if w.name in ("gamma", "scale") else 0.0))
    return block


def _numpy_norm(layer, x):
    x = x.astype("float64")
    if isinstance(layer, course_lib.RMSNormalization):
        return reference.rms_norm_forward(x, layer.scale.numpy(), layer.epsilon, -1)[0]
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.epsilon) * layer.gamma.numpy() + layer.beta.numpy()


def _numpy_ffn(block, h):
    z = h @ block.ffn_inner.kernel.numpy() + block.ffn_inner.bias.numpy()
    z = 0.5 * z * (1.0 + _erf(z / np.sqrt(2.0)))  # exact GELU, Keras's default
    return z @ block.ffn_outer.kernel.numpy() + block.ffn_outer.bias.numpy()


def _attend(block, h):
    return np.asarray(block.attention(h.astype("float32"), h.astype("float32")), np.float64)


@pytest.mark.parametrize("norm,position", CASES)
def test_block_is_the_documented_composition(rng, norm, position):
    block = _block(rng, norm, position)
    x = rng.normal(size=(3, LENGTH, D)).astype("float32")
    norm_type = {"layer": course_lib.LayerNormalization, "rms": course_lib.RMSNormalization}
    assert type(block.attention_norm) is type(block.ffn_norm) is norm_type[norm]
    if position == "pre":  # x + Attn(Norm(x)), then + FF(Norm(.))
        x1 = x + _attend(block, _numpy_norm(block.attention_norm, x))
        expected = x1 + _numpy_ffn(block, _numpy_norm(block.ffn_norm, x1))
    else:  # Norm(x + Attn(x)), then Norm(. + FF(.))
        x1 = _numpy_norm(block.attention_norm, x + _attend(block, x))
        expected = _numpy_norm(block.ffn_norm, x1 + _numpy_ffn(block, x1))
    np.testing.assert_allclose(np.asarray(block(x)), expected, rtol=1e-4, atol=1e-4)


def test_pre_and_post_norm_differ(rng):
    x = rng.normal(size=(2, LENGTH, D)).astype("float32")
    pre = _block(np.random.default_rng(5), "layer", "pre")
    post = _block(np.random.default_rng(5), "layer", "post")
    assert not np.allclose(np.asarray(pre(x)), np.asarray(post(x)), atol=1e-3)


@pytest.mark.parametrize("norm,position", CASES)
def test_causal_mask_blocks_future_positions(rng, norm, position):
    x = rng.normal(size=(2, LENGTH, D)).astype("float32")
    for causal in (True, False):
        block = _block(np.random.default_rng(9), norm, position, causal=causal)
        y = np.asarray(block(x))
        for t in range(1, LENGTH):
            changed = x.copy()
            changed[:, t] += rng.normal(size=(2, D)).astype("float32") * 3.0
            y2 = np.asarray(block(changed))
            before = np.abs(y2[:, :t] - y[:, :t]).max()
            assert np.abs(y2[:, t:] - y[:, t:]).max() > 1e-3  # the change itself shows
            if causal:
                assert before < 1e-5, (t, before)
            else:
                assert before > 1e-3, (t, before)  # without the mask, the past sees it


@pytest.mark.parametrize("position", ["pre", "post"])
def test_padding_mask_hides_padded_positions(rng, position):
    block = _block(rng, "rms", position)
    x = rng.normal(size=(2, LENGTH, D)).astype("float32")
    mask = np.array([[True] * 4 + [False] * 2, [True] * 6])
    y = np.asarray(block(x, mask=mask))
    changed = x.copy()
    changed[0, 4:] = rng.normal(size=(2, D)) * 10.0
    y2 = np.asarray(block(changed, mask=mask))
    np.testing.assert_allclose(y2[0, :4], y[0, :4], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y2[1], y[1], rtol=1e-6, atol=1e-6)
    assert not np.allclose(np.asarray(block(changed))[0, :4], y[0, :4], atol=1e-3)
    np.testing.assert_array_equal(np.asarray(block.compute_mask(x, mask)), mask)


def test_dropout_only_in_training(rng):
    block = _block(rng, "layer", "pre", dropout=0.5)
    x = rng.normal(size=(2, LENGTH, D)).astype("float32")
    y = np.asarray(block(x))
    np.testing.assert_array_equal(np.asarray(block(x, training=False)), y)
    assert not np.allclose(np.asarray(block(x, training=True)), y)


def test_mixed_precision(rng):
    block = course_lib.TransformerBlock(D, HEADS, FF, norm="rms", dtype="mixed_float16")
    x = rng.normal(size=(2, LENGTH, D)).astype("float16")
    y = block(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert np.all(np.isfinite(np.asarray(y, dtype="float32")))
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in block.weights)


def test_config_round_trip():
    block = course_lib.TransformerBlock(16, 4, 32, norm="rms", norm_position="post",
                                        dropout=0.1, causal=True, activation="relu",
                                        epsilon=1e-5, name="b")
    config = block.get_config()
    clone = course_lib.TransformerBlock.from_config(config)
    assert clone.get_config() == config
    assert (clone.norm, clone.norm_position, clone.causal, clone.dropout) == (
        "rms", "post", True, 0.1)
    embedding = course_lib.TokenAndPositionEmbedding(10, 7, 4, mask_zero=True)
    assert course_lib.TokenAndPositionEmbedding.from_config(
        embedding.get_config()).get_config() == embedding.get_config()


@pytest.mark.parametrize("norm,position", [("rms", "pre"), ("layer", "post")])
def test_classifier_round_trips_through_a_keras_file(rng, tmp_path, norm, position):
    model = course_lib.build_transformer_classifier(
        vocab_size=12, sequence_length=LENGTH, num_classes=3, d_model=D, num_heads=HEADS,
        ff_dim=FF, num_layers=2, norm=norm, norm_position=position, causal=True,
        mask_zero=True,
    )
    tokens = rng.integers(1, 12, size=(4, LENGTH))
    tokens[0, 4:] = 0  # padding
    path = tmp_path / "transformer.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [type(l).__name__ for l in loaded.layers] == [type(l).__name__ for l in model.layers]
    np.testing.assert_allclose(np.asarray(loaded(tokens)), np.asarray(model(tokens)),
                               rtol=1e-5, atol=1e-6)
    norms = [l for l in model.layers if l.name == "final_norm"]
    assert len(norms) == (position == "pre")


def test_classifier_padding_does_not_change_the_prediction(rng):
    model = course_lib.build_transformer_classifier(12, LENGTH, 2, d_model=D, num_heads=HEADS,
                                                    ff_dim=FF, mask_zero=True)
    tokens = rng.integers(1, 12, size=(1, LENGTH))
    tokens[0, 3:] = 0
    logits = np.asarray(model(tokens))
    # Two more padding positions (a longer model, the same weights): masked out everywhere.
    shorter = course_lib.build_transformer_classifier(12, LENGTH + 2, 2, d_model=D,
                                                      num_heads=HEADS, ff_dim=FF,
                                                      mask_zero=True)
    for a, b in zip(shorter.weights, model.weights):
        if a.shape == b.shape:
            a.assign(b)
        else:  # the position table is longer: copy the first rows
            a.assign(np.concatenate([b.numpy(), a.numpy()[b.shape[0]:]]))
    padded = np.concatenate([tokens, np.zeros((1, 2), int)], axis=1)
    np.testing.assert_allclose(np.asarray(shorter(padded)), logits, rtol=1e-5, atol=1e-5)


def test_classifier_trains_in_seconds():
    """Is token 7 in the sequence? A couple of epochs on a CPU get it right."""
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    tokens = rng.integers(1, 7, size=(512, 8))
    labels = rng.integers(0, 2, size=512)
    where = rng.integers(0, 8, size=512)
    tokens[labels == 1, where[labels == 1]] = 7
    model = course_lib.build_transformer_classifier(8, 8, 2, norm="rms", num_layers=1)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(tokens, labels, batch_size=64, epochs=8, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.9


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"d_model": 0}, "`d_model` must be a positive integer. Received: d_model=0"),
        ({"d_model": 8.0}, "Received: d_model=8.0"),
        ({"num_heads": 3}, "`num_heads` must divide `d_model`. Received: d_model=8, num_heads=3"),
        ({"num_heads": True}, "Received: num_heads=True"),
        ({"ff_dim": -1}, "`ff_dim` must be a positive integer. Received: ff_dim=-1"),
        ({"norm": "batch"}, "`norm` must be one of ['layer', 'rms']. Received: norm='batch'"),
        ({"norm_position": "middle"},
         "`norm_position` must be one of ['pre', 'post']. Received: norm_position='middle'"),
        ({"dropout": 1.0}, "`dropout` must be in [0, 1). Received: dropout=1.0"),
        ({"dropout": -0.1}, "Received: dropout=-0.1"),
        ({"causal": "yes"}, "`causal` must be True or False. Received: causal='yes'"),
        ({"epsilon": 0.0}, "`epsilon` must be a positive finite number. Received: epsilon=0.0"),
    ],
)
def test_bad_arguments_name_argument_and_value(kwargs, fragment):
    args = {"d_model": D, "num_heads": HEADS, "ff_dim": FF, **kwargs}
    with pytest.raises(ValueError) as info:
        course_lib.TransformerBlock(**args)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "call,fragment",
    [
        (lambda: course_lib.TransformerBlock(D, HEADS, FF)(np.zeros((2, 3, 5), "float32")),
         "Received: input_shape=(2, 3, 5), d_model=8"),
        (lambda: course_lib.TokenAndPositionEmbedding(5, 3, 4)(np.zeros((2, 4), "int32")),
         "Received: input_shape=(2, 4), sequence_length=3"),
        (lambda: course_lib.TokenAndPositionEmbedding(5, 3, 4, mask_zero=1),
         "Received: mask_zero=1"),
        (lambda: course_lib.build_transformer_classifier(5, 3, 2, num_layers=0),
         "`num_layers` must be a positive integer. Received: num_layers=0"),
        (lambda: course_lib.build_transformer_classifier(5, 3, 2, norm="group"),
         "Received: norm='group'"),
    ],
)
def test_bad_inputs_and_helper_arguments(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value)


def test_docstring_example():
    result = doctest.testmod(course_lib.transformer)
    assert result.attempted > 0 and result.failed == 0
