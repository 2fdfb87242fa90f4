"""course_lib.fold_batchnorm: the folded model computes the original's inference function."""

import doctest

import keras
import numpy as np
import pytest

import course_lib
import course_lib.folding

L = keras.layers
BN_TYPES = (course_lib.BatchNormalization, keras.layers.BatchNormalization)


def _randomize(model, rng):
    """Non-trivial weights and BN statistics everywhere (the initial 0/1 would hide bugs)."""
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, BN_TYPES):
            for w in layer.weights:
                low, high = (0.5, 2.0) if "variance" in w.name or "gamma" in w.name else (-1, 1)
                w.assign(rng.uniform(low, high, w.shape).astype("float32"))
        elif layer.weights and not isinstance(layer, keras.Model):
            layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32")
                               for w in layer.get_weights()])
    return model


def _bns(model):
    return [l for l in model._flatten_layers(include_self=False) if isinstance(l, BN_TYPES)]


def _check(model, x, expected_bns):
    weights = [w.copy() for w in model.get_weights()]
    folded = course_lib.fold_batchnorm(model)
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x, training=False)),
                               rtol=1e-5, atol=1e-5)
    assert len(_bns(folded)) == expected_bns, [type(l).__name__ for l in folded.layers]
    # The original is untouched and shares no variable with the folded model.
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not {id(v) for v in folded.weights} & {id(v) for v in model.weights}
    return folded


@pytest.mark.parametrize("bn", BN_TYPES, ids=["course_lib", "keras"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_sequential_conv_bn_relu_stack(rng, bn, use_bias):
    model = _randomize(keras.Sequential([
        keras.Input((9, 7, 3)),
        L.Conv2D(5, 3, use_bias=use_bias), bn(), L.ReLU(),
        L.Conv2D(4, 3, padding="same", strides=2, use_bias=use_bias), bn(), L.ReLU(),
        L.Flatten(), L.Dense(6, use_bias=use_bias), bn(), L.Dense(2),
    ]), rng)
    folded = _check(model, rng.normal(size=(4, 9, 7, 3)).astype("float32"), expected_bns=0)
    assert [type(l).__name__ for l in folded.layers] == [
        "Conv2D", "ReLU", "Conv2D", "ReLU", "Flatten", "Dense", "Dense"]
    assert all(l.use_bias for l in folded.layers if hasattr(l, "use_bias"))


def test_functional_residual_block_and_nested_sequential(rng):
    inputs = keras.Input((8, 6, 4))
    h = L.ReLU()(course_lib.BatchNormalization()(L.Conv2D(4, 3, padding="same")(inputs)))
    h = L.Add()([h, inputs])
    block = keras.Sequential([keras.Input((8, 6, 4)), L.Conv2D(3, 1, use_bias=False),
                              keras.layers.BatchNormalization(), L.ReLU()])
    h = L.GlobalAveragePooling2D()(block(h))
    outputs = course_lib.BatchNormalization()(L.Dense(5)(h))
    model = _randomize(keras.Model(inputs, outputs), rng)
    folded = _check(model, rng.normal(size=(3, 8, 6, 4)).astype("float32"), expected_bns=0)
    assert isinstance(folded.layers[-1], L.Dense)


def test_dense_bn_on_sequences_and_conv1d(rng):
    model = _randomize(keras.Sequential([
        keras.Input((10, 3)), L.Conv1D(4, 3), course_lib.BatchNormalization(),
        L.Dense(5), course_lib.BatchNormalization(momentum=0.5, epsilon=0.1),
    ]), rng)
    _check(model, rng.normal(size=(2, 10, 3)).astype("float32"), expected_bns=0)


def test_channels_first_conv_with_bn_on_axis_1(rng):
    if keras.backend.backend() == "tensorflow":
        pytest.skip("TensorFlow's CPU Conv2D does not support channels_first")
    model = _randomize(keras.Sequential([
        keras.Input((3, 9, 7)), L.Conv2D(5, 3, data_format="channels_first"),
        course_lib.BatchNormalization(axis=1),
    ]), rng)
    _check(model, rng.normal(size=(2, 3, 9, 7)).astype("float32"), expected_bns=0)


def test_bn_not_after_a_foldable_layer_is_kept(rng):
    inputs = keras.Input((6,))
    a = course_lib.BatchNormalization()(inputs)  # after the input
    b = course_lib.BatchNormalization()(L.Dense(4, activation="relu")(a))  # after an activation
    shared = L.Dense(4)(a)
    c = course_lib.BatchNormalization()(shared)  # the Dense output also feeds the Add
    d = course_lib.BatchNormalization()(L.Add()([b, c, shared]))  # after an Add
    e = course_lib.BatchNormalization(axis=1)(L.Dense(3)(L.Reshape((2, 2))(d)))  # not channels
    f = course_lib.BatchNormalization()(L.Dense(3)(L.Flatten()(e)))  # the only foldable one
    model = _randomize(keras.Model(inputs, f), rng)
    _check(model, rng.normal(size=(5, 6)).astype("float32"), expected_bns=5)


def test_bn_used_in_training_mode_or_shared_is_kept(rng):
    inputs = keras.Input((6,))
    always_training = course_lib.BatchNormalization()(L.Dense(4)(inputs), training=True)
    shared_bn = course_lib.BatchNormalization()
    h = shared_bn(L.Dense(4)(always_training))
    h = shared_bn(L.Dense(4)(h))
    model = _randomize(keras.Model(inputs, h), rng)
    folded = course_lib.fold_batchnorm(model)
    assert len(_bns(folded)) == 2
    x = rng.normal(size=(5, 6)).astype("float32")
    np.testing.assert_allclose(np.asarray(folded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-5)


def test_folded_weights_are_the_formula(rng):
    dense, bn = L.Dense(3), course_lib.BatchNormalization(epsilon=0.01)
    model = _randomize(keras.Sequential([keras.Input((4,)), dense, bn]), rng)
    (folded_dense,) = course_lib.fold_batchnorm(model).layers
    w, b = dense.get_weights()
    s = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + 0.01)
    np.testing.assert_allclose(folded_dense.kernel.numpy(), w * s, rtol=1e-6)
    np.testing.assert_allclose(folded_dense.bias.numpy(),
                               (b - bn.moving_mean.numpy()) * s + bn.beta.numpy(), rtol=1e-6)


def test_renorm_and_scale_center_off(rng):
    model = _randomize(keras.Sequential([
        keras.Input((4,)), L.Dense(5), course_lib.BatchRenormalization(),
        L.Dense(3), course_lib.BatchNormalization(center=False, scale=False),
    ]), rng)
    _check(model, rng.normal(size=(6, 4)).astype("float32"), expected_bns=0)


def test_folded_model_round_trips_a_keras_file(rng, tmp_path):
    model = _randomize(keras.Sequential([keras.Input((4,)), L.Dense(5),
                                         course_lib.BatchNormalization()]), rng)
    folded = course_lib.fold_batchnorm(model)
    folded.save(tmp_path / "folded.keras")
    loaded = keras.models.load_model(tmp_path / "folded.keras")
    x = rng.normal(size=(3, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense, self.bn = L.Dense(3), course_lib.BatchNormalization()

    def call(self, x):
        return self.bn(self.dense(x))


def test_unsupported_models_raise_naming_what_was_received():
    model = _Subclassed()
    model(np.zeros((1, 2), "float32"))
    message = r"subclassed model .*Received: model='.*' of type _Subclassed"
    with pytest.raises(ValueError, match=message):
        course_lib.fold_batchnorm(model)
    with pytest.raises(ValueError, match=r"`model` must be a Keras model. Received: model=<Dense"):
        course_lib.fold_batchnorm(L.Dense(3))
    inputs = keras.Input((2,))
    outer = keras.Model(inputs, model(inputs))
    with pytest.raises(ValueError, match="_Subclassed"):
        course_lib.fold_batchnorm(outer)
    with pytest.raises(ValueError, match="must be built"):
        course_lib.fold_batchnorm(keras.Sequential([L.Dense(2), course_lib.BatchNormalization()]))


def test_docstring_example():
    result = doctest.testmod(course_lib.folding)
    assert result.attempted > 0 and result.failed == 0
