"""course_lib.experiments against independent oracles: a NumPy forward pass on the model's own
weights (with the NumPy BN reference), np.percentile, and a second run with the same seed."""

import keras
import numpy as np
import pytest

import course_lib
from course_lib import experiments
from course_lib import reference


@pytest.fixture(scope="module")
def mnist():
    (x_train, y_train), (x_test, y_test) = course_lib.load_mnist()
    # A small slice keeps the test fast. 570 images hold 9 full mini-batches of 60, so the
    # 25-step runs below also cross epoch boundaries (a fresh shuffle every 9 steps).
    return (
        experiments.flatten_images(x_train[:570]),
        y_train[:570],
        experiments.flatten_images(x_test[:300]),
        y_test[:300],
    )


def _train(mnist, batch_norm, steps=25, record_every=10, seed=0, **kwargs):
    x_train, y_train, x_test, y_test = mnist
    model = experiments.build_mlp(batch_norm=batch_norm, seed=seed)
    record = experiments.train_and_record(
        model, x_train, y_train, x_test, y_test,
        steps=steps, record_every=record_every, seed=seed, **kwargs,
    )
    return model, record


def _weights(layer):
    return [w.numpy() for w in layer.weights]


def numpy_forward(model, x, batch_norm, hidden_layers=3):
    """Inference-mode forward pass in NumPy: (input of the last sigmoid layer, logits)."""
    h = x.astype(np.float64)
    for i in range(1, hidden_layers + 1):
        dense = _weights(model.get_layer(f"dense_{i}"))
        z = h @ dense[0] + (dense[1] if len(dense) > 1 else 0.0)
        if batch_norm:
            bn = model.get_layer(f"batch_norm_{i}")
            g, b, mm, mv = (v.numpy() for v in
                            (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
            z = reference.batchnorm_forward_inference(z, g, b, mm, mv, eps=bn.epsilon)
        pre = z
        h = 1.0 / (1.0 + np.exp(-z))
    kernel, bias = _weights(model.get_layer("logits"))
    return pre, h @ kernel + bias


@pytest.mark.parametrize("batch_norm", [False, True])
def test_structure(batch_norm):
    model = experiments.build_mlp(batch_norm=batch_norm)
    names = [layer.name for layer in model.layers[1:]]
    block = ["dense_{}", "batch_norm_{}", "sigmoid_{}"] if batch_norm else ["dense_{}", "sigmoid_{}"]
    assert names == [n.format(i) for i in (1, 2, 3) for n in block] + ["logits"]
    for i in (1, 2, 3):
        dense = model.get_layer(f"dense_{i}")
        assert dense.units == 100
        # A bias before BN is cancelled by the mean subtraction: the BN network has none.
        assert dense.use_bias is not batch_norm
        assert len(dense.weights) == (1 if batch_norm else 2)
        assert model.get_layer(f"sigmoid_{i}").activation is keras.activations.sigmoid
        if batch_norm:
            assert type(model.get_layer(f"batch_norm_{i}")) is course_lib.BatchNormalization
    assert not any(isinstance(lay, keras.layers.BatchNormalization) for lay in model.layers)
    assert model.count_params() == (784 * 100 + 2 * 100 * 100 + 4 * 100 * 3 + 1010 if batch_norm
                                    else 784 * 100 + 2 * 100 * 100 + 3 * 100 + 1010)


def test_pre_activation_model_is_the_input_of_the_last_sigmoid(mnist):
    model = experiments.build_mlp(batch_norm=True, seed=3)
    x = mnist[2][:50]
    got = keras.ops.convert_to_numpy(experiments.pre_activation_model(model)(x, training=False))
    expected, _ = numpy_forward(model, x, batch_norm=True)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    layer1 = experiments.pre_activation_model(model, layer=1)(x, training=False)
    assert layer1.shape == (50, 100)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_recorded_percentiles_and_accuracy_match_numpy_oracle(mnist, batch_norm):
    _, _, x_test, y_test = mnist
    probe = x_test[100:250]
    model, record = _train(mnist, batch_norm, probe_images=probe, unit=7)

    np.testing.assert_array_equal(record.steps, [0, 10, 20, 25])
    assert record.percentiles.shape == (4, len(experiments.PERCENTILES))
    assert np.isnan(record.train_loss[0]) and np.all(np.isfinite(record.train_loss[1:]))

    # The last recording is taken after the last step, so the final weights reproduce it.
    pre, logits = numpy_forward(model, probe, batch_norm)
    expected = np.percentile(pre[:, 7], [15, 50, 85])
    np.testing.assert_allclose(record.percentiles[-1], expected, rtol=1e-5, atol=1e-5)

    _, logits = numpy_forward(model, x_test, batch_norm)
    accuracy = np.mean(np.argmax(logits, axis=1) == y_test)
    assert abs(record.test_accuracy[-1] - accuracy) <= 1.0 / len(y_test)  # float32 vs float64 ties

    # Training really changed the weights between recordings.
    assert not np.allclose(record.percentiles[0], record.percentiles[-1])


def test_bn_layers_train_in_training_mode_and_record_in_inference_mode(mnist):
    model, _ = _train(mnist, batch_norm=True)
    bn = model.get_layer("batch_norm_1")
    moving_mean = bn.moving_mean.numpy()
    # train_on_batch runs BN with training=True: the moving statistics followed the batches.
    assert np.abs(moving_mean).max() > 1e-3
    # Recording (training=False) must not move them.
    experiments.pre_activation_model(model)(mnist[2], training=False)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), moving_mean)


def test_step_zero_is_the_untrained_network(mnist):
    x_train, y_train, x_test, y_test = mnist
    model = experiments.build_mlp(batch_norm=False, seed=5)
    pre, logits = numpy_forward(model, x_test, batch_norm=False)
    record = experiments.train_and_record(
        model, x_train, y_train, x_test, y_test, steps=3, record_every=5, seed=5)
    np.testing.assert_array_equal(record.steps, [0, 3])
    np.testing.assert_allclose(record.percentiles[0], np.percentile(pre[:, 0], [15, 50, 85]),
                               rtol=1e-5, atol=1e-5)
    assert record.test_accuracy[0] == pytest.approx(np.mean(logits.argmax(1) == y_test), abs=1 / 300)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_deterministic_given_a_seed(mnist, batch_norm):
    _, first = _train(mnist, batch_norm, seed=11)
    _, second = _train(mnist, batch_norm, seed=11)
    _, other = _train(mnist, batch_norm, seed=12)
    for field in ("steps", "test_accuracy", "percentiles", "train_loss"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field), err_msg=field)
    assert not np.array_equal(first.percentiles, other.percentiles)


def test_percentile_shift_against_direct_computation():
    steps = np.arange(0, 1001, 50)
    percentiles = np.stack([steps * 0.001, steps * 0.0, -steps * 0.002], axis=1)
    record = experiments.TrainingRecord(steps, np.zeros(len(steps)), percentiles, np.zeros(len(steps)))
    shift = experiments.percentile_shift(record, start=100, window=200)
    early = percentiles[(steps >= 100) & (steps < 300)].mean(axis=0)   # steps 100..250
    late = percentiles[steps > 800].mean(axis=0)                        # steps 850..1000
    np.testing.assert_allclose(shift, late - early)
    np.testing.assert_allclose(shift, [0.75, 0.0, -1.5])  # mean step 925 - mean step 175 = 750
    with pytest.raises(ValueError, match="window"):
        experiments.percentile_shift(record, start=400, window=400)


def test_flatten_images():
    images = np.arange(2 * 28 * 28, dtype=np.uint16).reshape(2, 28, 28) % 256
    flat = experiments.flatten_images(images.astype(np.uint8))
    assert flat.shape == (2, 784) and flat.dtype == np.float32
    np.testing.assert_allclose(flat, images.reshape(2, 784) / 255.0, rtol=1e-6)


def test_record_every_is_validated(mnist):
    model = experiments.build_mlp(batch_norm=False)
    with pytest.raises(ValueError, match="record_every=0"):
        experiments.train_and_record(model, *mnist, steps=1, record_every=0)
