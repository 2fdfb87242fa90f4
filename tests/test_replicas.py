"""course_lib.replicas: K seeds trained as one batched model must be K ordinary training runs.

The oracle is the single-model path the chapters already use: the builder of
``course_lib.experiments`` with ``seed=seeds[k]``, trained by ``experiments.sgd_fit`` with the same
seed (same mini-batches). The equivalence tests run in float64, where the two computations agree
to rounding (1e-13) even after 50 steps; in float32 the rounding differences of a chaotic network
can grow over many steps (see the module's docstring), so float32 is checked on the Figure 1
sigmoid MLP only, at a float32 tolerance.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import course_lib  # noqa: E402
from course_lib import experiments, replicas  # noqa: E402

STEPS, RECORD_EVERY = 50, 25


@pytest.fixture(scope="module")
def mnist():
    (x_train, y_train), (x_test, y_test) = course_lib.load_mnist()
    return x_train[:1200], y_train[:1200], x_test[:300], y_test[:300]


@pytest.fixture
def float64():
    # Both: Keras fixes its global dtype policy from floatx the first time a layer needs it.
    previous, previous_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield "float64"
    keras.config.set_floatx(previous)
    keras.config.set_dtype_policy(previous_policy)


def _inputs(images, conv, dtype):
    if not conv:
        return experiments.flatten_images(images).astype(dtype)
    # MNIST's background is exactly 0, so after a convolution without bias (and with Weight
    # Standardization, whose filters sum to 0) whole 2 x 2 pooling windows hold tied values. Which
    # element of a tie gets max-pooling's gradient then depends on the last bit of the forward
    # pass, so the grouped and the single convolution would part after a step for a reason that
    # has nothing to do with replicas. A little noise removes the ties.
    noise = np.random.default_rng(0).normal(scale=0.01, size=images.shape)
    return (images / 255.0 + noise)[..., None].astype(dtype)


def _single_runs(spec, x, y, x_test, y_test, **fit):
    """Each replica's oracle: the single model from its builder, trained alone by sgd_fit."""
    runs = []
    for k, seed in enumerate(spec.seeds):
        model = spec.build_single(k)
        losses = []
        experiments.sgd_fit(model, x, y, seed=seed, on_record=lambda s, l, out=losses: out.append(l),
                            **fit)
        runs.append((model, losses, experiments.classification_accuracy(model, x_test, y_test)))
    return runs


def _assert_replicas_match_single_runs(model, mnist, conv, dtype, rtol, atol, steps=STEPS,
                                       batch_size=16, learning_rate=0.3, record_every=RECORD_EVERY):
    x_train, y_train, x_test, y_test = mnist
    x, xt = _inputs(x_train, conv, dtype), _inputs(x_test, conv, dtype)
    assert {v.dtype for v in model.weights} == {dtype}  # really computing in that precision
    fit = dict(steps=steps, batch_size=batch_size, learning_rate=learning_rate,
               record_every=record_every)
    record = replicas.fit_replicas(model, x, y_train, x_test=xt, y_test=y_test, **fit)
    runs = _single_runs(model.replica_spec, x, y_train, xt, y_test, **fit)
    for k, (single, losses, accuracy) in enumerate(runs):
        extracted = replicas.extract_replica(model, k)
        names = [v.path for v in single.weights]
        assert names == [v.path for v in extracted.weights]
        for name, got, want in zip(names, extracted.get_weights(), single.get_weights()):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"replica {k} {name}")
        np.testing.assert_allclose(record.train_loss[k, 1:], losses[1:], rtol=rtol * 10)
        assert record.test_accuracy[k, -1] == accuracy
    return record, runs


@pytest.mark.parametrize("batch_norm", [False, True])
def test_figure1_mlp_replicas_match_single_runs(mnist, float64, batch_norm):
    seeds = (3, 8)
    model = replicas.build_mlp_replicas(batch_norm, seeds=seeds, hidden_layers=2, units=12)
    record, runs = _assert_replicas_match_single_runs(model, mnist, False, float64, 1e-9, 1e-12,
                                                      learning_rate=0.5)
    assert record.steps.tolist() == [0, 25, 50]
    shape = (len(seeds), 3)
    assert record.test_accuracy.shape == record.test_loss.shape == record.train_loss.shape == shape
    assert np.isnan(record.train_loss[:, 0]).all() and record.seeds.tolist() == list(seeds)
    if batch_norm:  # the moving statistics are per replica, and moved away from their start
        for k, (single, _, _) in enumerate(runs):
            layer = replicas.extract_replica(model, k).get_layer("batch_norm_2")
            np.testing.assert_allclose(np.asarray(layer.moving_mean),
                                       np.asarray(single.get_layer("batch_norm_2").moving_mean),
                                       rtol=1e-9, atol=1e-12)
            assert np.abs(np.asarray(layer.moving_variance) - 1.0).max() > 1e-3


@pytest.mark.parametrize("normalization", ["none", "bn"])
def test_cnn_replicas_match_single_runs(mnist, float64, normalization):
    model = replicas.build_norm_cnn_replicas(normalization, seeds=(1, 2), filters=(2, 4))
    _assert_replicas_match_single_runs(model, mnist, True, float64, 1e-9, 1e-12, batch_size=8,
                                       learning_rate=0.1)


@pytest.mark.parametrize("build, normalization", [
    (replicas.build_norm_mlp_replicas, "gn"),     # K * groups contiguous groups
    (replicas.build_norm_cnn_replicas, "ln"),     # ReplicaLayerNormalization, "channels" layout
    (replicas.build_norm_cnn_replicas, "ws+gn"),  # grouped WSConv2D
])
def test_other_normalizations_match_single_runs(mnist, float64, build, normalization):
    conv = build is replicas.build_norm_cnn_replicas
    shape = dict(filters=(4, 4)) if conv else dict(hidden_layers=2, units=8)
    model = build(normalization, seeds=(4, 6), groups=2, **shape)
    _assert_replicas_match_single_runs(model, mnist, conv, float64, 1e-9, 1e-12, steps=20,
                                       batch_size=8, learning_rate=0.1, record_every=20)


def test_float32_figure1_mlp_with_bn_matches_to_float32_rounding(mnist):
    model = replicas.build_mlp_replicas(True, seeds=(0, 1), hidden_layers=2, units=12)
    _assert_replicas_match_single_runs(model, mnist, False, "float32", 1e-4, 1e-5,
                                       learning_rate=0.5)


# (The trained cases above start from these weights too, or they could not match after training.)
@pytest.mark.parametrize("build, options", [
    (replicas.build_norm_mlp_replicas, dict(normalization="none", dropout=0.1)),
    (replicas.build_norm_mlp_replicas, dict(normalization="brn", dropout=0.1)),
    (replicas.build_norm_mlp_replicas, dict(normalization="ln")),
    (replicas.build_norm_cnn_replicas, dict(normalization="brn")),
    (replicas.build_norm_cnn_replicas, dict(normalization="gn")),
])
def test_initial_weights_are_exactly_the_single_builders(build, options):
    kw = dict(filters=(4, 8)) if build is replicas.build_norm_cnn_replicas else dict(units=8)
    model = build(seeds=[7, 2], **options, **kw)
    for k, seed in enumerate((7, 2)):
        single = getattr(experiments, model.replica_spec.builder)(seed=seed, **options, **kw)
        extracted = replicas.extract_replica(model, k)
        assert len(single.get_weights()) == len(extracted.get_weights()) > 0
        for got, want in zip(extracted.get_weights(), single.get_weights()):
            np.testing.assert_array_equal(got, want)
    # The replicas really are different networks (different seeds, different weights).
    first = [w for w in replicas.extract_replica(model, 0).get_weights() if w.ndim > 1][0]
    second = [w for w in replicas.extract_replica(model, 1).get_weights() if w.ndim > 1][0]
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("build, normalization", [
    (replicas.build_norm_mlp_replicas, "ln"),
    (replicas.build_norm_mlp_replicas, "brn"),
    (replicas.build_norm_cnn_replicas, "gn"),
    (replicas.build_norm_cnn_replicas, "bn"),
])
def test_replica_outputs_are_the_single_models_outputs(mnist, build, normalization):
    # Column k of the stacked output is replica k's single model on its own input column, in
    # training mode (batch statistics of its own batch only) and in inference mode.
    conv = build is replicas.build_norm_cnn_replicas
    model = build(normalization, seeds=(0, 1, 2), **(dict(filters=(4, 8)) if conv else dict(units=8)))
    x = _inputs(mnist[0][:30], conv, "float32")
    stacked = np.stack([x[0:10], x[10:20], x[20:30]], axis=1)
    singles = [replicas.extract_replica(model, k) for k in range(3)]
    for training in (True, False):
        out = np.asarray(model(stacked, training=training))
        for k in range(3):
            single = np.asarray(singles[k](x[10 * k:10 * k + 10], training=training))
            np.testing.assert_allclose(out[:, k], single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer_class", [replicas.StackedConv2D, replicas.StackedWSConv2D])
def test_stacked_conv_is_a_grouped_conv(layer_class):
    # The oracle: Keras's own grouped Conv2D with the same kernel (with the kernel standardized
    # per output channel first, for Weight Standardization), forward and gradients.
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 9, 9, 3 * 2)).astype("float32"))
    stacked = layer_class(3 * 4, 3, groups=3, use_bias=False)
    grouped = keras.layers.Conv2D(3 * 4, 3, groups=3, use_bias=False)
    stacked.build(x.shape)
    grouped.build(x.shape)
    kernel = np.asarray(stacked.kernel)
    if layer_class is replicas.StackedWSConv2D:
        mean = kernel.mean(axis=(0, 1, 2))
        kernel = (kernel - mean) / np.sqrt(kernel.var(axis=(0, 1, 2)) + stacked.epsilon)
    grouped.kernel.assign(kernel)
    dy = tf.constant(rng.normal(size=(2, 7, 7, 12)).astype("float32"))
    results = []
    for layer in (stacked, grouped):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * dy)
        results.append([y.numpy(), tape.gradient(loss, x).numpy()])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_replica_batches_are_each_seeds_sgd_fit_batches():
    idx = replicas.replica_batches(500, 30, 20, seeds=(5, 9))
    assert idx.shape == (30, 20, 2)
    for k, seed in enumerate((5, 9)):
        np.testing.assert_array_equal(idx[..., k], experiments.minibatch_indices(500, 30, 20, seed))


def test_replica_accuracy_and_on_record(mnist):
    x_train, y_train, x_test, y_test = mnist
    x, xt = experiments.flatten_images(x_train), experiments.flatten_images(x_test)
    model = replicas.build_mlp_replicas(True, seeds=(0, 1), hidden_layers=1, units=8)
    seen = []
    record = replicas.fit_replicas(model, x, y_train, x_test=xt, y_test=y_test, steps=5,
                                   record_every=2, on_record=lambda s, m: seen.append(s))
    assert seen == record.steps.tolist() == [0, 2, 4, 5]
    accuracy, loss = replicas.replica_accuracy(model, xt, y_test)
    np.testing.assert_array_equal(accuracy, record.test_accuracy[:, -1])
    for k in range(2):
        assert accuracy[k] == experiments.classification_accuracy(
            replicas.extract_replica(model, k), xt, y_test)
    no_test = replicas.fit_replicas(model, x, y_train, steps=2, record_every=2)
    assert np.isnan(no_test.test_accuracy).all() and np.isfinite(no_test.train_loss[:, 1]).all()


def test_matmul_flops_are_k_times_one_run():
    single = experiments.build_mlp(True, seed=0)
    model = replicas.build_mlp_replicas(True, seeds=range(5))
    dense = [layer.kernel.shape for layer in single.layers if isinstance(layer, keras.layers.Dense)]
    forward = sum(2 * 60 * a * b for a, b in dense)
    backward = 2 * forward - 2 * 60 * dense[0][0] * dense[0][1]  # no gradient for the images
    assert replicas.matmul_flops_per_step(single, 60) == forward + backward
    assert replicas.matmul_flops_per_step(model, 60) == 5 * (forward + backward)


# --- Bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: replicas.build_mlp_replicas(True, seeds=[]),
     r"`seeds` must be a non-empty .*Received: seeds=\(\)"),
    (lambda: replicas.build_mlp_replicas(True, seeds=[1, 1]), r"Received: seeds=\(1, 1\)"),
    (lambda: replicas.build_mlp_replicas(True, seeds=[0.5, 1]), r"Received: seeds=\(0.5, 1\)"),
    (lambda: replicas.build_mlp_replicas(True, seeds=3),
     r"`seeds` must be a sequence .*Received: seeds=3"),
    (lambda: replicas.build_mlp_replicas("yes", seeds=[0]),
     r"`batch_norm` must be True or False. Received: batch_norm='yes'"),
    (lambda: replicas.build_mlp_replicas(True, seeds=[0], units=0),
     r"`units` must be a positive integer. Received: units=0"),
    (lambda: replicas.build_norm_mlp_replicas("ws+gn", seeds=[0]),
     r"Received: normalization='ws\+gn'"),
    (lambda: replicas.build_norm_mlp_replicas("gn", seeds=[0], units=10, groups=4),
     r"`groups` must divide `units`. Received: groups=4, units=10"),
    (lambda: replicas.build_norm_mlp_replicas("bn", seeds=[0], dropout=1.0),
     r"`dropout` must be in \[0, 1\). Received: dropout=1.0"),
    (lambda: replicas.build_norm_cnn_replicas("batch", seeds=[0]),
     r"Received: normalization='batch'"),
    (lambda: replicas.build_norm_cnn_replicas("gn", seeds=[0], filters=(6, 8)),
     r"Received: groups=4, filters=\(6, 8\)"),
    (lambda: replicas.ReplicaLayerNormalization(2, layout="rows"), r"Received: layout='rows'"),
    (lambda: replicas.StackedDense(0, 4),
     r"`replicas` must be a positive integer. Received: replicas=0"),
    (lambda: replicas.StackedDense(2, 4, implementation="bmm"),
     r"`implementation` must be 'matmuls' or 'einsum'. Received: implementation='bmm'"),
])
def test_bad_builder_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.fixture(scope="module")
def small():
    model = replicas.build_mlp_replicas(False, seeds=(0, 1), hidden_layers=1, units=4, input_dim=6)
    rng = np.random.default_rng(0)
    return model, rng.normal(size=(40, 6)).astype("float32"), rng.integers(0, 10, 40)


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), r"`steps` must be a positive integer. Received: steps=0"),
    (dict(steps=2.5), r"Received: steps=2.5"),
    (dict(record_every=0), r"`record_every` must be a positive integer. Received: record_every=0"),
    (dict(batch_size=41), r"`batch_size` must be at most .*Received: batch_size=41, num_examples=40"),
    (dict(learning_rate=-0.1), r"`learning_rate` must be a positive number. Received: learning_rate=-0.1"),
    (dict(learning_rate=float("nan")), r"Received: learning_rate=nan"),
    (dict(x_test=np.zeros((3, 6))), r"`x_test` and `y_test` go together"),
    (dict(batch_seeds=(0, 1, 2)),
     r"`batch_seeds` must hold one seed per replica \(2\). Received: batch_seeds=\(0, 1, 2\)"),
    (dict(on_record=3), r"`on_record` must be callable. Received: on_record=3"),
    (dict(x_test=np.zeros((3, 5)), y_test=np.zeros(3)),
     r"`x_test` must hold inputs of shape \(6,\).*Received: x_test.shape=\(3, 5\)"),
])
def test_bad_fit_arguments(small, kwargs, match):
    model, x, y = small
    with pytest.raises(ValueError, match=match):
        replicas.fit_replicas(model, x, y, **{"steps": 2, "batch_size": 4, **kwargs})


def test_bad_data_model_and_index(small):
    model, x, y = small
    with pytest.raises(ValueError, match=r"`y_train` must hold one integer label per input. "
                                         r"Received: y_train.shape=\(39,\), x_train.shape=\(40, 6\)"):
        replicas.fit_replicas(model, x, y[:39], steps=1, batch_size=4)
    single = experiments.build_mlp(False, hidden_layers=1, units=4, input_dim=6)
    with pytest.raises(ValueError, match=r"`model` must come from build_mlp_replicas.*"
                                         r"Received: model='mlp_without_bn'"):
        replicas.fit_replicas(single, x, y, steps=1, batch_size=4)
    for k in (2, -1, True):
        with pytest.raises(ValueError, match=rf"`k` must be an integer in \[0, 2\). Received: k={k!r}"):
            replicas.extract_replica(model, k)
