"""course_lib.experiments against independent oracles: a NumPy forward pass on the model's own
weights (with the NumPy BN reference), np.percentile, and a second run with the same seed."""

import keras
import numpy as np
import pytest

import course_lib
from course_lib import experiments, reference


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


# ---- The faster training loop (sgd_fit, train_and_record_fast) and its helpers. ----------


def test_minibatch_indices_epochs_are_shuffles_without_repeats():
    n, batch_size, steps = 130, 20, 15          # 6 full batches per epoch, 10 examples skipped
    batches = experiments.minibatch_indices(n, steps, batch_size, seed=4)
    assert batches.shape == (steps, batch_size)
    # Oracle: the same seeded generator, drawn by hand.
    rng = np.random.default_rng(4)
    first, second = rng.permutation(n), rng.permutation(n)
    np.testing.assert_array_equal(batches[:6].ravel(), first[:120])
    np.testing.assert_array_equal(batches[6:12].ravel(), second[:120])
    for epoch in (batches[:6], batches[6:12]):
        assert len(np.unique(epoch)) == epoch.size  # no example twice in one epoch
    np.testing.assert_array_equal(batches, experiments.minibatch_indices(n, steps, batch_size, 4))
    with pytest.raises(ValueError, match="batch_size=200"):
        experiments.minibatch_indices(n, 3, 200, seed=0)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_train_and_record_fast_matches_train_on_batch_loop(mnist, batch_norm):
    # The oracle is train_and_record: one train_on_batch per step, no compiled loop, no tf.data.
    # 25 steps with recordings every 10: the last compiled call runs only 5 steps.
    _, slow = _train(mnist, batch_norm, seed=6, probe_images=mnist[2][:120], unit=3)
    model = experiments.build_mlp(batch_norm=batch_norm, seed=6)
    fast = experiments.train_and_record_fast(
        model, *mnist, steps=25, record_every=10, seed=6, probe_images=mnist[2][:120], unit=3)
    np.testing.assert_array_equal(fast.steps, slow.steps)
    np.testing.assert_allclose(fast.test_accuracy, slow.test_accuracy, atol=1.5 / len(mnist[3]))
    np.testing.assert_allclose(fast.percentiles, slow.percentiles, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fast.train_loss[1:], slow.train_loss[1:], rtol=1e-4)
    assert np.isnan(fast.train_loss[0])
    # And the final weights reproduce the last recording (NumPy forward pass).
    pre, _ = numpy_forward(model, mnist[2][:120], batch_norm)
    np.testing.assert_allclose(fast.percentiles[-1], np.percentile(pre[:, 3], [15, 50, 85]),
                               rtol=1e-5, atol=1e-5)


def test_sgd_fit_reports_steps_and_mean_losses(mnist):
    x_train, y_train, x_test, y_test = mnist
    calls = []
    model = experiments.build_mlp(batch_norm=True, seed=2)
    experiments.sgd_fit(model, x_train, y_train, steps=7, record_every=3, seed=2,
                        learning_rate=0.1, on_record=lambda s, l: calls.append((s, l)))
    assert [s for s, _ in calls] == [0, 3, 6, 7]
    assert np.isnan(calls[0][1]) and all(np.isfinite(l) for _, l in calls[1:])
    # Oracle for the loss: the same 7 steps with train_on_batch, averaged by hand.
    oracle = experiments.build_mlp(batch_norm=True, seed=2)
    oracle.compile(optimizer=keras.optimizers.SGD(0.1),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = experiments.minibatch_indices(len(x_train), 7, 60, seed=2)
    losses = [float(oracle.train_on_batch(x_train[b], y_train[b].astype("int32"))) for b in batches]
    np.testing.assert_allclose([l for _, l in calls[1:]],
                               [np.mean(losses[0:3]), np.mean(losses[3:6]), losses[6]], rtol=1e-4)
    for a, b in zip(model.weights, oracle.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
    with pytest.raises(ValueError, match="steps=0"):
        experiments.sgd_fit(model, x_train, y_train, steps=0)


def test_sgd_fit_is_deterministic(mnist):
    x_train, y_train = mnist[0], mnist[1]
    weights = []
    for _ in range(2):
        model = experiments.build_mlp(batch_norm=True, seed=9)
        experiments.sgd_fit(model, x_train, y_train, steps=12, record_every=5, seed=9)
        weights.append([w.numpy() for w in model.weights])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_classification_accuracy_against_numpy(mnist):
    _, _, x_test, y_test = mnist
    model = experiments.build_mlp(batch_norm=True, seed=1)
    _, logits = numpy_forward(model, x_test, batch_norm=True)
    expected = np.mean(logits.argmax(axis=1) == y_test)
    got = experiments.classification_accuracy(model, x_test, y_test, batch_size=128)
    assert got == pytest.approx(expected, abs=1 / len(y_test))


def test_first_step_reaching():
    steps = np.array([0, 10, 20, 30, 40])
    accuracy = np.array([0.1, 0.5, 0.45, 0.8, 0.9])
    record = experiments.TrainingRecord(steps, accuracy, np.zeros((5, 3)), np.zeros(5))
    assert experiments.first_step_reaching(record, 0.5) == 10
    assert experiments.first_step_reaching(record, 0.46) == 10
    assert experiments.first_step_reaching(record, 0.85) == 40
    assert experiments.first_step_reaching(record, 0.95) is None


def test_smoothed_accuracy_is_a_trailing_mean():
    accuracy = np.array([0.0, 0.3, 0.6, 0.3, 0.9, 0.6])
    record = experiments.TrainingRecord(np.arange(6) * 10, accuracy, np.zeros((6, 3)), np.zeros(6))
    # Oracle: the loop written out.
    expected = [np.mean(accuracy[max(0, i - 2):i + 1]) for i in range(6)]
    np.testing.assert_allclose(experiments.smoothed_accuracy(record, 3), expected)
    np.testing.assert_allclose(experiments.smoothed_accuracy(record, 1), accuracy)
    np.testing.assert_allclose(experiments.smoothed_accuracy(record, 100),
                               np.cumsum(accuracy) / np.arange(1, 7))
    with pytest.raises(ValueError, match="window=0"):
        experiments.smoothed_accuracy(record, 0)


def test_steps_to_match_by_hand():
    def rec(steps, acc):
        return experiments.TrainingRecord(np.array(steps), np.array(acc), np.zeros((len(acc), 3)),
                                          np.zeros(len(acc)))

    baseline = rec([0, 100, 200, 300, 400], [0.1, 0.2, 0.5, 0.7, 0.8])
    other = rec([0, 50, 100, 150, 200], [0.3, 0.5, 0.75, 0.7, 0.72])
    horizons, steps = experiments.steps_to_match(baseline, other)
    np.testing.assert_array_equal(horizons, [100, 200, 300, 400])
    # targets 0.2, 0.5, 0.7, 0.8; the step-0 recording of `other` (0.3) does not count.
    np.testing.assert_array_equal(steps, [50, 50, 100, np.nan])
    # window=2: baseline targets 0.15, 0.35, 0.6, 0.75; other smoothed (from step 50):
    # 0.4, 0.625, 0.725, 0.71.
    horizons, steps = experiments.steps_to_match(baseline, other, window=2)
    np.testing.assert_array_equal(steps, [50, 50, 100, np.nan])
    _, steps = experiments.steps_to_match(baseline, other, window=3)
    # baseline 0.1333, 0.2667, 0.4667, 0.6667; other 0.4, 0.5167, 0.65, 0.7233
    np.testing.assert_array_equal(steps, [50, 50, 100, 200])


# ---- Sweeps, builders, gradient norms, noisy BN and the ledger's rule (chapters 6-8, 10). ----


def _softmax_xent_grad(x, y, kernel, bias):
    """Mean softmax cross-entropy of a linear model and its gradients, in NumPy (float64)."""
    logits = x @ kernel + bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.eye(kernel.shape[1])[y]
    loss = -np.mean(np.log(p[np.arange(len(y)), y]))
    dlogits = (p - onehot) / len(y)
    return loss, x.T @ dlogits, dlogits.sum(axis=0)


def _linear_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(), steps_per_execution=4,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_train_from_full_batch_matches_numpy_gradient_descent():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 6)).astype("float32"), rng.integers(0, 3, size=12)
    model = _linear_model()
    state = experiments.snapshot(model)
    kernel, bias = (w.astype(np.float64) for w in state)
    losses = experiments.train_from(model, state, x, y, learning_rate=0.5, epochs=3, batch_size=12)
    expected = []
    for _ in range(3):  # full batch: the shuffling cannot matter
        loss, dk, db = _softmax_xent_grad(x.astype(np.float64), y, kernel, bias)
        expected.append(loss)
        kernel, bias = kernel - 0.5 * dk, bias - 0.5 * db
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.layers[0].bias.numpy(), bias, rtol=1e-5, atol=1e-6)


def test_train_from_restarts_from_the_state_every_time(mnist):
    x_train, y_train = mnist[0][:256], mnist[1][:256]
    model = experiments.build_norm_mlp("bn", hidden_layers=2, units=16, dropout=0.3, seed=3)
    model.compile(optimizer=keras.optimizers.SGD(momentum=0.9), steps_per_execution=8,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    state = experiments.snapshot(model)
    runs = []
    for _ in range(2):
        losses = experiments.train_from(model, state, x_train, y_train, learning_rate=0.05,
                                        epochs=2, batch_size=32, seed=1)
        runs.append((losses, experiments.snapshot(model)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    for a, b in zip(runs[0][1], runs[1][1]):  # weights, moving statistics, dropout seeds
        np.testing.assert_array_equal(a, b)
    moving = model.get_layer("norm_1").moving_mean.numpy()
    assert np.abs(moving).max() > 1e-3  # BN really trained (and was reset before run 2)
    assert model.optimizer.learning_rate.numpy() == pytest.approx(0.05)
    other = experiments.train_from(model, state, x_train, y_train, learning_rate=0.05,
                                   epochs=2, batch_size=32, seed=2)
    assert not np.array_equal(other, runs[0][0])  # the seed sets the shuffling


def test_train_from_validates():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="must be compiled"):
        experiments.train_from(model, experiments.snapshot(model), np.zeros((2, 6)), np.zeros(2),
                               learning_rate=0.1, epochs=1, batch_size=2)
    model = _linear_model()
    with pytest.raises(ValueError, match="Received: 1 arrays for 2 variables"):
        experiments.train_from(model, experiments.snapshot(model)[:1], np.zeros((2, 6)),
                               np.zeros(2), learning_rate=0.1, epochs=1, batch_size=2)


@pytest.mark.parametrize("kind, cls", [("bn", "BatchNormalization"), ("brn", "BatchRenormalization"),
                                       ("gn", "GroupNormalization"), ("ln", "LayerNormalization")])
def test_build_norm_mlp_structure(kind, cls):
    model = experiments.build_norm_mlp(kind, hidden_layers=2, units=12, dropout=0.25, groups=3)
    names = [layer.name for layer in model.layers[1:]]
    assert names == ["dense_1", "norm_1", "relu_1", "dropout_1",
                     "dense_2", "norm_2", "relu_2", "dropout_2", "logits"]
    assert type(model.get_layer("norm_1")).__name__ == cls
    assert not model.get_layer("dense_1").use_bias
    if kind == "brn":
        norm = model.get_layer("norm_1")
        # The paper's warm-up (plain BN first), not fixed clipping from step 0.
        assert norm.renorm and isinstance(norm.renorm_clipping, course_lib.RenormClippingSchedule)
        assert norm.renorm_clipping == course_lib.RenormClippingSchedule()
    plain = experiments.build_norm_mlp("none", hidden_layers=2, units=12)
    assert [layer.name for layer in plain.layers[1:]] == ["dense_1", "relu_1", "dense_2", "relu_2", "logits"]
    assert plain.get_layer("dense_1").use_bias
    with pytest.raises(ValueError, match="normalization='batch'"):
        experiments.build_norm_mlp("batch")
    with pytest.raises(ValueError, match="kind='xx'"):
        experiments.normalization_layer("xx", "n")


def test_build_norm_mlp_ln_forward_against_numpy():
    model = experiments.build_norm_mlp("ln", hidden_layers=2, units=7, input_dim=5,
                                       activation="tanh", seed=4)
    x = np.random.default_rng(1).normal(size=(9, 5)).astype("float32")
    h = x.astype(np.float64)
    for i in (1, 2):
        z = h @ model.get_layer(f"dense_{i}").kernel.numpy()
        norm = model.get_layer(f"norm_{i}")
        z = (z - z.mean(axis=1, keepdims=True)) / np.sqrt(z.var(axis=1, keepdims=True) + norm.epsilon)
        h = np.tanh(z * norm.gamma.numpy() + norm.beta.numpy())
    logits = h @ model.get_layer("logits").kernel.numpy() + model.get_layer("logits").bias.numpy()
    np.testing.assert_allclose(model(x, training=False).numpy(), logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", experiments.NORMALIZATIONS)
def test_build_norm_cnn(kind):
    model = experiments.build_norm_cnn(kind, filters=(4, 8), groups=2)
    assert model.output_shape == (None, 10)
    conv = model.get_layer("conv_1")
    assert (type(conv) is course_lib.WSConv2D) == (kind == "ws+gn")
    assert conv.use_bias == (kind == "none")
    if kind == "ln":
        assert model.get_layer("norm_1").axis == [1, 2, 3]
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")
    assert np.all(np.isfinite(model(x, training=True).numpy()))


def test_gradient_norms_against_numpy_backprop():
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="sigmoid"),
                              keras.layers.Dense(3)])
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(10, 5)).astype("float32"), rng.integers(0, 3, size=10)
    (w1, b1), (w2, b2) = ([w.numpy().astype(np.float64) for w in layer.weights]
                          for layer in model.layers)
    h = 1 / (1 + np.exp(-(x @ w1 + b1)))
    _, dw2, _ = _softmax_xent_grad(h, y, w2, b2)
    logits = h @ w2 + b2
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dh = ((p - np.eye(3)[y]) / len(y)) @ w2.T
    dw1 = x.T @ (dh * h * (1 - h))
    np.testing.assert_allclose(experiments.gradient_norms(model, x, y),
                               [np.linalg.norm(dw1), np.linalg.norm(dw2)], rtol=1e-4)


def test_gradient_norms_leave_the_moving_statistics_alone():
    model = experiments.build_norm_mlp("bn", hidden_layers=2, units=8, input_dim=5)
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(16, 5)).astype("float32")
    before = experiments.snapshot(model)
    norms = experiments.gradient_norms(model, x, np.zeros(16, dtype=int))
    assert norms.shape == (3,) and np.all(norms > 0)
    for a, b in zip(before, experiments.snapshot(model)):
        np.testing.assert_array_equal(a, b)


def test_random_shift_scale():
    layer = experiments.RandomShiftScale(shift_stddev=2.0, scale_range=(0.5, 3.0), seed=1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4, 5)).astype("float32")  # every axis but the last is shared
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
    draws = []
    for _ in range(2):
        y = layer(x, training=True).numpy()
        flat_x, flat_y = x.reshape(-1, 5), y.reshape(-1, 5)
        # Oracle: a per-feature affine map, y = s * x + b, fitted by least squares.
        fits = [np.polyfit(flat_x[:, j], flat_y[:, j], 1) for j in range(5)]
        s, b = np.array([f[0] for f in fits]), np.array([f[1] for f in fits])
        np.testing.assert_allclose(flat_y, flat_x * s + b, rtol=1e-4, atol=1e-4)
        assert np.all((s >= 0.5) & (s <= 3.0))
        draws.append((s, b))
    assert not np.allclose(draws[0][0], draws[1][0])  # a new draw at every step
    clone = experiments.RandomShiftScale.from_config(layer.get_config())
    assert clone.scale_range == (0.5, 3.0) and clone.shift_stddev == 2.0 and clone.seed == 1
    with pytest.raises(ValueError, match="scale_range"):
        experiments.RandomShiftScale(scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="shift_stddev=-1"):
        experiments.RandomShiftScale(shift_stddev=-1)


def test_noisy_bn_mlp_is_the_bn_mlp_at_inference(mnist):
    noisy = experiments.build_noisy_bn_mlp(seed=5)
    plain = experiments.build_mlp(batch_norm=True, seed=5)
    for i in (1, 2, 3):
        np.testing.assert_array_equal(noisy.get_layer(f"dense_{i}").kernel.numpy(),
                                      plain.get_layer(f"dense_{i}").kernel.numpy())
    x = mnist[2][:20]
    np.testing.assert_allclose(noisy(x, training=False).numpy(), plain(x, training=False).numpy(),
                               rtol=1e-6)
    pre, _ = numpy_forward(plain, x, batch_norm=True)
    np.testing.assert_allclose(
        experiments.pre_activation_model(noisy)(x, training=False).numpy(), pre, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value, higher, expected", [
    (5.0, True, "holds"), (3.0, True, "holds"), (2.999, True, "holds with caveats"),
    (1.5, True, "holds with caveats"), (1.49, True, "does not hold"), (float("nan"), True, "does not hold"),
    (0.1, False, "holds"), (0.2, False, "holds"), (0.3, False, "holds with caveats"),
    (0.5, False, "holds with caveats"), (0.51, False, "does not hold"),
])
def test_verdict_rule(value, higher, expected):
    thresholds = {"holds": 3.0, "caveats": 1.5} if higher else {"holds": 0.2, "caveats": 0.5}
    assert experiments.verdict(value, higher_holds=higher, **thresholds) == expected
    assert expected in experiments.VERDICTS


def test_verdict_rule_text_and_validation():
    text = experiments.verdict_rule("the ratio", holds=3, caveats=1.5)
    assert text == "holds if the ratio ≥ 3; with caveats if ≥ 1.5; does not hold if < 1.5"
    text = experiments.verdict_rule("the loss", holds=0.2, caveats=0.5, higher_holds=False, fmt="{:.1f}")
    assert text == "holds if the loss ≤ 0.2; with caveats if ≤ 0.5; does not hold if > 0.5"
    text = experiments.verdict_rule("t", holds=1, caveats=1)
    assert text == "holds if t ≥ 1; does not hold if < 1"
    assert experiments.verdict(1.0, holds=1, caveats=1) == "holds"
    assert experiments.verdict(0.99, holds=1, caveats=1) == "does not hold"
    with pytest.raises(ValueError, match="holds=1, caveats=2"):
        experiments.verdict(1.0, holds=1, caveats=2)


# --- Chapters 4 and 9: Gaussian initial weights, BN before or after the ReLU. --------------------


def test_gaussian_initial_weights_single_and_replicas():
    from course_lib import replicas

    plain = experiments.gaussian_initial_weights(experiments.build_mlp(False, seed=3), 0.01, seed=3)
    bn = experiments.gaussian_initial_weights(experiments.build_mlp(True, seed=3), 0.01, seed=3)
    # Oracle: the draws of a NumPy generator with the same seed, layer after layer.
    rng = np.random.default_rng(3)
    for name, shape in [("dense_1", (784, 100)), ("dense_2", (100, 100)), ("dense_3", (100, 100)),
                        ("logits", (100, 10))]:
        want = rng.normal(0.0, 0.01, size=shape).astype("float32")
        np.testing.assert_array_equal(plain.get_layer(name).kernel.numpy(), want)
        np.testing.assert_array_equal(bn.get_layer(name).kernel.numpy(), want)  # same start
    assert all(not np.any(plain.get_layer(n).bias.numpy()) for n in ("dense_1", "logits"))
    assert abs(plain.get_layer("dense_1").kernel.numpy().std() - 0.01) < 2e-4
    stacked = experiments.gaussian_initial_weights(
        replicas.build_mlp_replicas(True, seeds=(3, 5), hidden_layers=2, units=8), 0.5)
    for k, seed in enumerate((3, 5)):
        single = experiments.gaussian_initial_weights(
            experiments.build_mlp(True, hidden_layers=2, units=8, seed=seed), 0.5, seed=seed)
        for got, want in zip(replicas.extract_replica(stacked, k).get_weights(), single.get_weights()):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="seed"):
        experiments.gaussian_initial_weights(experiments.build_mlp(False), 0.01)
    with pytest.raises(ValueError, match="seed"):
        experiments.gaussian_initial_weights(stacked, 0.01, seed=1)
    with pytest.raises(ValueError, match="stddev"):
        experiments.gaussian_initial_weights(plain, 0.0, seed=1)


def test_placement_mlps_share_their_start_and_put_bn_where_they_say():
    shape = dict(hidden_layers=2, units=8)
    models = {p: experiments.build_placement_mlp(p, seed=4, **shape) for p in experiments.PLACEMENTS}
    for name in ("dense_1", "dense_2", "logits"):
        kernels = [m.get_layer(name).kernel.numpy() for m in models.values()]
        assert all(np.array_equal(kernels[0], k) for k in kernels[1:])
    order = {p: [type(layer).__name__ for layer in m.layers[1:3]] for p, m in models.items()}
    assert order["before"] == ["Dense", "BatchNormalization"] and models["before"].get_layer(
        "dense_1").bias is None
    assert [layer.name for layer in models["after"].layers[1:4]] == ["dense_1", "relu_1", "norm_1"]
    assert not any("norm" in layer.name for layer in models["none"].layers)
    with pytest.raises(ValueError, match="placement"):
        experiments.build_placement_mlp("between")


def test_bn_after_relu_replicas_match_single_runs(mnist):
    from course_lib import replicas

    # float64 for the comparison. Keras caches its global dtype policy at the first layer built
    # (from floatx at that moment), so set the policy itself, not only floatx.
    previous, previous_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        x_train, y_train, x_test, y_test = (a.astype("float64") if a.dtype.kind == "f" else a
                                            for a in mnist)
        model = experiments.build_placement_mlp_replicas("after", seeds=(1, 6), hidden_layers=2,
                                                         units=8)
        assert model.replica_spec.builder == "build_placement_mlp"
        assert keras.backend.standardize_dtype(model.get_layer("dense_1").kernel.dtype) == "float64"
        fit = dict(steps=20, batch_size=16, learning_rate=0.2, record_every=10)
        record = replicas.fit_replicas(model, x_train, y_train, x_test=x_test, y_test=y_test, **fit)
        for k, seed in enumerate((1, 6)):
            single = experiments.build_placement_mlp("after", hidden_layers=2, units=8, seed=seed)
            experiments.sgd_fit(single, x_train, y_train, seed=seed, **fit)
            for got, want in zip(replicas.extract_replica(model, k).get_weights(), single.get_weights()):
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
            assert record.test_accuracy[k, -1] == experiments.classification_accuracy(
                single, x_test, y_test)
    finally:
        keras.config.set_floatx(previous)
        keras.config.set_dtype_policy(previous_policy)


# ---- Chapter 6: noisy BN as published (TimeVaryingNoise) and gradients per replica. ----------


def test_time_varying_noise_is_per_example_with_a_new_mean_and_variance_every_step():
    layer = experiments.TimeVaryingNoise(mean_range=1.0, std_range=(0.5, 1.5), seed=3)
    x = np.zeros((4000, 3, 2), dtype="float32")  # zero input: the output is the noise itself
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
    draws = []
    for _ in range(2):
        noise = layer(x, training=True).numpy()
        # Per example: different values for different examples of the same feature.
        assert np.all(noise.std(axis=0) > 0.3)
        # Per feature: a mean in [-1, 1] and a standard deviation in [0.5, 1.5] (with sampling
        # error of 4000 draws).
        mean, std = noise.mean(axis=0), noise.std(axis=0)
        assert np.all(np.abs(mean) <= 1.0 + 0.1) and np.all((std > 0.45) & (std < 1.55))
        draws.append((mean, std))
    assert not np.allclose(draws[0][0], draws[1][0], atol=0.1)  # a new mean at every step
    assert not np.allclose(draws[0][1], draws[1][1], atol=0.1)  # and a new variance
    clone = experiments.TimeVaryingNoise.from_config(layer.get_config())
    assert clone.mean_range == 1.0 and clone.std_range == (0.5, 1.5) and clone.seed == 3
    with pytest.raises(ValueError, match="std_range"):
        experiments.TimeVaryingNoise(std_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="mean_range=-1"):
        experiments.TimeVaryingNoise(mean_range=-1)


def test_santurkar_noisy_bn_replicas_start_as_the_bn_mlp_and_train(mnist):
    from course_lib import replicas

    x_train, y_train, x_test, y_test = mnist
    model = experiments.build_santurkar_noisy_bn_mlp_replicas(seeds=(4, 9))
    for k, seed in enumerate((4, 9)):
        single = replicas.extract_replica(model, k)
        assert single.get_layer("noise_1").std_range == (0.5, 1.5)
        plain = experiments.build_mlp(batch_norm=True, seed=seed)
        for i in (1, 2, 3):
            np.testing.assert_array_equal(single.get_layer(f"dense_{i}").kernel.numpy(),
                                          plain.get_layer(f"dense_{i}").kernel.numpy())
        x = x_test[:20]  # at inference the noise is off: the BN MLP, replica by replica
        stacked = np.stack([x, x], axis=1)
        np.testing.assert_allclose(model(stacked, training=False).numpy()[:, k],
                                   plain(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    record = replicas.fit_replicas(model, x_train, y_train, steps=20, record_every=10,
                                   learning_rate=0.1)
    assert np.all(np.isfinite(record.train_loss[:, 1:]))


@pytest.mark.parametrize("build", ["mlp", "cnn"])
def test_replica_gradient_norms_are_each_replicas_own(mnist, build):
    from course_lib import replicas

    x, y = mnist[0][:64], mnist[1][:64]
    if build == "mlp":
        model = replicas.build_norm_mlp_replicas("bn", seeds=(0, 1, 2), hidden_layers=2, units=16)
    else:
        model = replicas.build_norm_cnn_replicas("bn", seeds=(0, 1, 2), filters=(4, 8))
        x = x.reshape(-1, 28, 28, 1)
    before = [v.numpy().copy() for v in model.non_trainable_variables]
    norms = experiments.replica_gradient_norms(model, x, y)
    for a, b in zip(before, model.non_trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())  # moving statistics restored
    assert norms.shape == (3, 3)
    for k in range(3):
        single = replicas.extract_replica(model, k)
        # float32: the grouped convolution sums in another order than the single one
        np.testing.assert_allclose(norms[k], experiments.gradient_norms(single, x, y), rtol=1e-3)


# --- Chapter 12: transformer replicas ----------------------------------------------------------

_TINY_TRANSFORMER = dict(vocab_size=11, sequence_length=7, num_classes=3, d_model=8, num_heads=2,
                         ff_dim=12, num_layers=2)


@pytest.mark.parametrize("norm", ["layer", "rms"])
@pytest.mark.parametrize("position", ["pre", "post"])
def test_transformer_replicas_compute_the_single_classifiers(norm, position):
    from course_lib.transformer import build_transformer_classifier

    seeds = (3, 8)
    model = experiments.build_transformer_replicas(seeds=seeds, norm=norm, norm_position=position,
                                                   **_TINY_TRANSFORMER)
    assert model.replica_seeds == seeds
    tokens = np.random.default_rng(0).integers(0, 11, size=(5, 2, 7)).astype("int32")
    logits = model(tokens).numpy()
    assert logits.shape == (5, 2, 3)
    for k, seed in enumerate(seeds):
        keras.utils.set_random_seed(seed)
        single = build_transformer_classifier(norm=norm, norm_position=position, **_TINY_TRANSFORMER)
        np.testing.assert_allclose(logits[:, k], single(tokens[:, k]).numpy(), rtol=1e-5, atol=1e-5)
    # Every weight count of the single model, one axis more.
    assert len(model.layers[-1].weights) == len(single.weights)


def test_transformer_replicas_are_paired_across_arms_and_independent():
    import tensorflow as tf

    arms = {(n, p): experiments.build_transformer_replicas(seeds=(0, 1), norm=n, norm_position=p,
                                                           **_TINY_TRANSFORMER)
            for n in ("layer", "rms") for p in ("pre", "post")}
    first = {w.name: w.numpy() for w in arms["layer", "pre"].layers[-1].weights}
    for model in arms.values():
        for w in model.layers[-1].weights:
            if w.name in first and "norm" not in w.name:  # same seed, same kernels in every arm
                np.testing.assert_array_equal(w.numpy(), first[w.name])
    assert not np.allclose(first["block_0_ffn_inner_kernel"][0], first["block_0_ffn_inner_kernel"][1])
    twins = experiments.build_transformer_replicas(seeds=(1, 1), **_TINY_TRANSFORMER)  # seed repeated
    for w in twins.layers[-1].weights:
        np.testing.assert_array_equal(w.numpy()[0], w.numpy()[1])
        np.testing.assert_array_equal(w.numpy()[0], first[w.name][1])
    # Replica 0's loss has no gradient on replica 1's weights.
    model = arms["layer", "post"]
    tokens = np.random.default_rng(1).integers(0, 11, size=(4, 2, 7)).astype("int32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(tokens)[:, 0])
    for grad in tape.gradient(loss, model.trainable_variables):
        assert np.all(grad.numpy()[1] == 0) and np.any(grad.numpy()[0] != 0)


def test_transformer_replicas_check_their_arguments():
    with pytest.raises(ValueError, match="seeds"):
        experiments.build_transformer_replicas(seeds=(), **_TINY_TRANSFORMER)
    with pytest.raises(ValueError, match="norm_position"):
        experiments.build_transformer_replicas(seeds=(0,), norm_position="middle", **_TINY_TRANSFORMER)
    with pytest.raises(ValueError, match="num_heads"):
        experiments.StackedTransformerClassifier(2, 11, 7, 3, d_model=8, num_heads=3)
    layer = experiments.StackedTransformerClassifier(2, 11, 7, 3, d_model=8, num_heads=2)
    with pytest.raises(ValueError, match="batch, 2, length"):
        layer(np.zeros((4, 3, 7), "int32"))
    clone = experiments.StackedTransformerClassifier.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
