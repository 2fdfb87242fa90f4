"""course_lib.recalibrate_batchnorm against NumPy transcriptions of Algorithm 2 and AdaBN."""

import doctest

import keras
import numpy as np
import pytest

import course_lib
import course_lib.recalibration
from course_lib import reference

EPS = 1e-3


def _mlp(kind, bn=course_lib.BatchNormalization):
    """Dense(6) -> BN -> ReLU -> Dense(5) -> BN, as Sequential, functional+nested or subclass."""
    keras.utils.set_random_seed(0)
    if kind == "sequential":
        return keras.Sequential([
            keras.Input((4,)), keras.layers.Dense(6), bn(epsilon=EPS), keras.layers.ReLU(),
            keras.layers.Dense(5), bn(epsilon=EPS),
        ])
    if kind == "nested":  # the first half is a Sequential inside a functional model
        inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6), bn(epsilon=EPS)])
        inputs = keras.Input((4,))
        h = keras.layers.ReLU()(inner(inputs))
        return keras.Model(inputs, bn(epsilon=EPS)(keras.layers.Dense(5)(h)))

    class MLP(keras.Model):
        def __init__(self):
            super().__init__()
            self.d1, self.bn1 = keras.layers.Dense(6), bn(epsilon=EPS)
            self.d2, self.bn2 = keras.layers.Dense(5), bn(epsilon=EPS)

        def call(self, x, training=None):
            h = keras.ops.relu(self.bn1(self.d1(x), training=training))
            return self.bn2(self.d2(h), training=training)

    model = MLP()
    model(np.zeros((1, 4), "float32"))
    return model


def _parts(model):
    """(dense, bn) pairs in forward order."""
    kinds = (keras.layers.Dense, keras.layers.BatchNormalization, course_lib.BatchNormalization)
    layers = [l for l in model._flatten_layers(include_self=False) if isinstance(l, kinds)]
    dense = [l for l in layers if isinstance(l, keras.layers.Dense)]
    bns = [l for l in layers if not isinstance(l, keras.layers.Dense)]
    return list(zip(dense, bns))  # each list is in forward order in all three models


def _randomize_statistics(rng, model):
    """Far-off gamma, beta and statistics: a wrong layer order would show."""
    for _, bn in _parts(model):
        bn.gamma.assign(rng.uniform(0.5, 2.0, bn.gamma.shape).astype("float32"))
        bn.beta.assign(rng.normal(size=bn.beta.shape).astype("float32"))
        bn.moving_mean.assign(rng.normal(3.0, 1.0, bn.moving_mean.shape).astype("float32"))
        bn.moving_variance.assign(rng.uniform(5.0, 9.0, bn.moving_variance.shape).astype("float32"))


def _numpy_statistics(model, x, batch_size, method):
    """Each BN's new (mean, var) in NumPy, layer by layer, with the earlier layers' new ones."""
    h, expected = x.astype("float64"), []
    for i, (dense, bn) in enumerate(_parts(model)):
        if i:
            h = np.maximum(h, 0.0)
        kernel, bias = (np.asarray(w, "float64") for w in dense.get_weights())
        h = h @ kernel + bias
        batches = [h[s:s + batch_size] for s in range(0, len(h), batch_size)]
        if method == "population":
            mean, var = reference.population_statistics(
                [b.mean(axis=0) for b in batches], [b.var(axis=0) for b in batches], batch_size)
        else:
            mean, var = h.mean(axis=0), h.var(axis=0)
        expected.append((mean, var))
        gamma, beta = (np.asarray(w, "float64") for w in (bn.gamma, bn.beta))
        h = reference.batchnorm_forward_inference(h, gamma, beta, mean, var, eps=EPS)
    return expected


@pytest.mark.parametrize("kind", ["sequential", "nested", "subclassed"])
@pytest.mark.parametrize("method,n", [("population", 96), ("adabn", 100)])
def test_statistics_match_numpy_layer_by_layer(rng, kind, method, n):
    model = _mlp(kind)
    _randomize_statistics(rng, model)
    x = (rng.normal(size=(n, 4)) * [1.0, 2.0, 3.0, 0.5] + [1.0, -2.0, 0.0, 4.0]).astype("float32")
    expected = _numpy_statistics(model, x, 16, method)
    assert course_lib.recalibrate_batchnorm(model, x, batch_size=16, method=method) is model
    for (_, bn), (mean, var) in zip(_parts(model), expected):
        np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-4, atol=1e-6)
    assert all("call" not in vars(bn) for _, bn in _parts(model))  # hooks removed


def test_later_layers_see_the_recalibrated_earlier_ones(rng):
    """With the old first-layer statistics, the second layer's inputs would differ."""
    model = _mlp("sequential")
    _randomize_statistics(rng, model)
    x = rng.normal(size=(64, 4)).astype("float32")
    course_lib.recalibrate_batchnorm(model, x, batch_size=16)
    (dense1, bn1), (dense2, bn2) = _parts(model)
    h = np.asarray(dense2(keras.ops.relu(bn1(dense1(x)))))  # with the *new* BN1 statistics
    mean = np.mean([h[s:s + 16].mean(axis=0) for s in range(0, 64, 16)], axis=0)
    np.testing.assert_allclose(bn2.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    assert not np.allclose(mean, 0.0, atol=1e-2)


def test_keras_layers_and_renorm_layers_count(rng):
    """keras.layers.BatchNormalization too; renorm layers also get moving_stddev."""
    model = _mlp("sequential", bn=keras.layers.BatchNormalization)
    x = rng.normal(size=(48, 4)).astype("float32")
    expected = _numpy_statistics(model, x, 16, "population")
    course_lib.recalibrate_batchnorm(model, x, batch_size=16)
    for (_, bn), (mean, var) in zip(_parts(model), expected):
        np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-4, atol=1e-6)

    model = _mlp("sequential", bn=course_lib.BatchRenormalization)
    course_lib.recalibrate_batchnorm(model, x, batch_size=16, method="adabn")
    for _, bn in _parts(model):
        np.testing.assert_allclose(
            bn.moving_stddev.numpy(), np.sqrt(bn.moving_variance.numpy() + EPS), rtol=1e-6)


def test_conv_layers_count_every_position_in_m(rng):
    """After a Conv2D, m = batch * H * W values per channel (the paper's effective batch)."""
    keras.utils.set_random_seed(1)
    conv, bn = keras.layers.Conv2D(3, 3, padding="same"), course_lib.BatchNormalization()
    model = keras.Sequential([keras.Input((7, 6, 2)), conv, bn, keras.layers.ReLU()])
    x = rng.normal(1.0, 2.0, size=(12, 7, 6, 2)).astype("float32")
    h = np.asarray(conv(x), "float64")
    batches = [h[s:s + 4] for s in range(0, 12, 4)]
    mean, var = reference.population_statistics(
        [b.mean(axis=(0, 1, 2)) for b in batches], [b.var(axis=(0, 1, 2)) for b in batches],
        batch_size=4 * 7 * 6)
    course_lib.recalibrate_batchnorm(model, x, batch_size=4)
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), var, rtol=1e-5)


def test_smaller_last_batch_is_weighted_by_its_size(rng):
    model = keras.Sequential([keras.Input((3,)), course_lib.BatchNormalization()])
    x = rng.normal(size=(40, 3))
    course_lib.recalibrate_batchnorm(model, x, batch_size=16)  # batches of 16, 16, 8
    batches = [x[:16], x[16:32], x[32:]]
    m = np.array([16, 16, 8])[:, None]
    var = (m * m / (m - 1) * np.array([b.var(axis=0) for b in batches])).sum(0) / m.sum()
    np.testing.assert_allclose(model.layers[0].moving_mean.numpy(), x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(model.layers[0].moving_variance.numpy(), var, rtol=1e-5)


def test_masked_positions_do_not_count(rng):
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.Masking(),
                              course_lib.BatchNormalization()])
    x = rng.normal(2.0, 1.5, size=(8, 5, 3)).astype("float32")
    x[:, 3:] = 0.0  # padded time steps
    course_lib.recalibrate_batchnorm(model, x, batch_size=4, method="adabn")
    kept = x[:, :3].reshape(-1, 3)
    np.testing.assert_allclose(model.layers[1].moving_mean.numpy(), kept.mean(0), rtol=1e-5)
    np.testing.assert_allclose(model.layers[1].moving_variance.numpy(), kept.var(0), rtol=1e-4)


def test_iterables_and_steps(rng):
    x = rng.normal(size=(64, 4)).astype("float32")
    y = np.zeros((64, 1), "float32")
    results = []
    for data in [x[:32], [(x[s:s + 16], y[s:s + 16]) for s in range(0, 64, 16)],
                 (x[s:s + 16] for s in range(0, 64, 16))]:
        model = _mlp("sequential")
        course_lib.recalibrate_batchnorm(model, data, batch_size=16, steps=2)
        results.append([w.numpy() for _, bn in _parts(model) for w in bn.non_trainable_weights])
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        model = _mlp("sequential")
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        course_lib.recalibrate_batchnorm(model, dataset, steps=2)
        results.append([w.numpy() for _, bn in _parts(model) for w in bn.non_trainable_weights])
    for result in results[1:]:
        for a, b in zip(result, results[0]):
            np.testing.assert_allclose(a, b, rtol=1e-6)


def test_adabn_recovers_accuracy_under_domain_shift(rng):
    """Trained on one domain, tested on a rescaled and shifted one (Li et al.'s setting)."""
    def domain(n, scale=1.0, shift=0.0):
        labels = rng.integers(0, 2, size=n)
        direction = np.linspace(-1.0, 1.0, 8)
        x = rng.normal(size=(n, 8)) + np.outer(2 * labels - 1, direction)
        return (x * scale + np.asarray(shift)).astype("float32"), labels

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8,)), keras.layers.Dense(16), course_lib.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    x_src, y_src = domain(1024)
    model.fit(x_src, y_src, batch_size=64, epochs=5, verbose=0)
    # Shrunk and shifted: the source statistics push most units to one side of the ReLU.
    x_tgt, y_tgt = domain(1024, scale=0.3, shift=[-0.4, 0.5, 1.0, 0.0, -2.6, 4.0, 4.0, 0.8])

    def accuracy(x, y):
        return float(np.mean(np.argmax(np.asarray(model.predict(x, verbose=0)), axis=1) == y))

    source, before = accuracy(*domain(1024)), accuracy(x_tgt, y_tgt)
    course_lib.recalibrate_batchnorm(model, x_tgt, batch_size=128, method="adabn")
    after = accuracy(x_tgt, y_tgt)
    print(f"accuracy: source {source:.3f}, shifted target {before:.3f} -> {after:.3f} with AdaBN")
    assert source > 0.9 and before < 0.75 and after > source - 0.03


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"method": "mean"}, "Received: method='mean'"),
        ({"batch_size": 0}, "`batch_size` must be a positive integer. Received: batch_size=0"),
        ({"batch_size": 8.0}, "Received: batch_size=8.0"),
        ({"batch_size": True}, "Received: batch_size=True"),
        ({"steps": 0}, "`steps` must be None or a positive integer. Received: steps=0"),
        ({"batch_size": 1}, "Received: m=1 in a batch for layer"),
        ({"data": np.zeros((0, 4), "float32")}, "`data` gave no batch"),
        ({"data": 5}, "Received: data=5"),
        ({"model": keras.layers.Dense(3)}, "`model` must be a Keras model. Received: model=<Dense"),
        ({"model": "no-bn"}, "has no BatchNormalization layer to recalibrate. Received: model="),
    ],
)
def test_bad_arguments_name_the_value(rng, kwargs, fragment):
    args = {"model": _mlp("sequential"), "data": rng.normal(size=(8, 4)).astype("float32")}
    if kwargs.get("model") == "no-bn":
        kwargs = {"model": keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])}
    with pytest.raises(ValueError) as info:
        course_lib.recalibrate_batchnorm(**{**args, **kwargs})
    assert fragment in str(info.value)


def test_hooks_are_removed_when_the_model_fails(rng):
    model = _mlp("sequential")
    with pytest.raises(Exception):
        course_lib.recalibrate_batchnorm(model, rng.normal(size=(8, 9)).astype("float32"))
    assert all("call" not in vars(bn) for _, bn in _parts(model))


def test_docstring_example():
    result = doctest.testmod(course_lib.recalibration)
    assert result.attempted > 0 and result.failed == 0
