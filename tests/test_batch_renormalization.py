"""Batch Renormalization (``renorm=True``) against keras.layers.BatchNormalization(renorm=True)
and against a NumPy transcription of the paper's equations (Ioffe, 2017, Algorithm 1)."""

import doctest

import keras
import numpy as np
import pytest

import course_lib
import course_lib.batch_normalization
from conftest import layer_gradients
from course_lib import reference

SHAPES = {2: (11, 7), 4: (6, 5, 9, 4)}
CASES = [(rank, axis) for rank in (2, 4) for axis in (-1, 1)]
STATS = ("moving_mean", "moving_variance", "moving_stddev", "renorm_mean", "renorm_stddev")
# Tight enough that r and d are really clipped on the drifting batches below.
CLIPPINGS = [None, {"rmax": 1.5, "rmin": 0.8, "dmax": 0.4}, {"rmax": 1.2}]


def _batches(rng, rank, steps=4):
    """A drifting distribution, so that r != 1 and d != 0 (and the clipping bites)."""
    return [
        (rng.normal(size=SHAPES[rank]) * (1.0 + step) + 2.0 * step).astype("float32")
        for step in range(steps)
    ]


def _numpy_renorm(batches, gamma, beta, mu, sigma, alpha, eps, axis, rmax, dmax):
    """The paper's Algorithm 1 with one moving mu, sigma (Keras: momentum == renorm_momentum).

        sigma_B = sqrt(var_B + eps);  r = clip(sigma_B / sigma, 1/rmax, rmax)
        d = clip((mu_B - mu) / sigma, -dmax, dmax);  y = gamma * (xhat * r + d) + beta
        mu += alpha * (mu_B - mu);  sigma += alpha * (sigma_B - sigma)
    """
    outputs = []
    for x in batches:
        x = x.astype("float64")
        axes = reference.reduction_axes(x.ndim, axis)
        b = lambda v: reference._broadcast(v, x.ndim, axis)  # noqa: E731
        mu_b = x.mean(axis=axes)
        sigma_b = np.sqrt(x.var(axis=axes) + eps)
        r = np.clip(sigma_b / sigma, 1.0 / rmax, rmax)
        d = np.clip((mu_b - mu) / sigma, -dmax, dmax)
        xhat = (x - b(mu_b)) / b(sigma_b)
        outputs.append(b(gamma) * (xhat * b(r) + b(d)) + b(beta))
        mu = mu + alpha * (mu_b - mu)
        sigma = sigma + alpha * (sigma_b - sigma)
    return outputs, mu, sigma


def _pair(**kwargs):
    return (
        course_lib.BatchNormalization(renorm=True, **kwargs),
        keras.layers.BatchNormalization(renorm=True, **kwargs),
    )


def _randomize(rng, layers, shape):
    """Same non-trivial gamma, beta and statistics in every layer (stddevs > sqrt(eps))."""
    for layer in layers:
        layer.build(shape)
    for i, w in enumerate(layers[0].weights):
        value = rng.uniform(0.5, 1.5, size=w.shape).astype("float32")
        for layer in layers:
            layer.weights[i].assign(value)


@pytest.mark.parametrize("clipping", CLIPPINGS)
@pytest.mark.parametrize("rank,axis", CASES)
def test_outputs_and_statistics_match_keras_over_steps(rng, rank, axis, clipping):
    kwargs = dict(axis=axis, momentum=0.7, renorm_momentum=0.5, renorm_clipping=clipping)
    ours, theirs = _pair(**kwargs)
    batches = _batches(rng, rank)
    _randomize(rng, [ours, theirs], batches[0].shape)
    assert [w.name for w in ours.weights] == [w.name for w in theirs.weights]
    for step, x in enumerate(batches):
        np.testing.assert_allclose(
            np.asarray(ours(x, training=True)), np.asarray(theirs(x, training=True)),
            rtol=1e-5, atol=1e-5, err_msg=f"step {step}",
        )
        for name in STATS:
            np.testing.assert_allclose(
                getattr(ours, name).numpy(), getattr(theirs, name).numpy(),
                rtol=1e-5, atol=1e-6, err_msg=f"{name} after step {step}",
            )
    np.testing.assert_allclose(
        np.asarray(ours(batches[0])), np.asarray(theirs(batches[0])), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("clipping", CLIPPINGS)
@pytest.mark.parametrize("rank,axis", CASES)
def test_gradients_match_keras(rng, rank, axis, clipping):
    ours, theirs = _pair(axis=axis, renorm_clipping=clipping)
    x = _batches(rng, rank, steps=3)[-1]
    dy = rng.normal(size=x.shape).astype("float32")
    _randomize(rng, [ours, theirs], x.shape)
    dx_o, dw_o = layer_gradients(ours, x, dy)
    dx_t, dw_t = layer_gradients(theirs, x, dy)
    np.testing.assert_allclose(dx_o, dx_t, rtol=1e-4, atol=1e-5)
    assert len(dw_o) == len(dw_t) == 2
    for g_o, g_t in zip(dw_o, dw_t):
        np.testing.assert_allclose(g_o, g_t, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rank,axis", CASES)
def test_matches_the_paper_over_steps(rng, rank, axis):
    eps, momentum, rmax, dmax = 1e-3, 0.6, 1.5, 0.5
    layer = course_lib.BatchNormalization(
        axis=axis, momentum=momentum, epsilon=eps, renorm=True, renorm_momentum=momentum,
        renorm_clipping={"rmax": rmax, "rmin": 1.0 / rmax, "dmax": dmax},
    )
    batches = _batches(rng, rank, steps=5)
    c = batches[0].shape[axis]
    layer.build(batches[0].shape)
    gamma, beta = rng.uniform(0.5, 1.5, size=(2, c))
    mu, sigma = rng.normal(size=c), rng.uniform(0.5, 1.5, size=c)
    for name, value in [("gamma", gamma), ("beta", beta), ("moving_mean", mu),
                        ("renorm_mean", mu), ("moving_stddev", sigma), ("renorm_stddev", sigma),
                        ("moving_variance", sigma**2 - eps)]:
        getattr(layer, name).assign(value.astype("float32"))
    expected, mu, sigma = _numpy_renorm(
        batches, gamma, beta, mu, sigma, 1 - momentum, eps, axis, rmax, dmax
    )
    for step, (x, y) in enumerate(zip(batches, expected)):
        np.testing.assert_allclose(
            np.asarray(layer(x, training=True)), y, rtol=1e-4, atol=1e-4, err_msg=f"step {step}"
        )
    for name, value in [("moving_mean", mu), ("renorm_mean", mu),
                        ("moving_stddev", sigma), ("renorm_stddev", sigma)]:
        np.testing.assert_allclose(getattr(layer, name).numpy(), value, rtol=1e-5, err_msg=name)
    # Inference: y = gamma * (x - mu) / sigma + beta with the paper's moving mu and sigma.
    x = batches[0]
    b = lambda v: reference._broadcast(v, x.ndim, axis)  # noqa: E731
    np.testing.assert_allclose(
        np.asarray(layer(x)), b(gamma) * (x - b(mu)) / b(sigma) + b(beta), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("rank,axis", CASES)
def test_gradient_treats_r_and_d_as_constants(rng, rank, axis):
    """The paper: dL/dx is plain BN's with gamma * r; dL/dgamma = sum(dy * (xhat * r + d))."""
    eps = 1e-3
    layer = course_lib.BatchNormalization(axis=axis, epsilon=eps, renorm=True)
    x = _batches(rng, rank, steps=3)[-1].astype("float64")
    dy = rng.normal(size=x.shape)
    c = x.shape[axis]
    layer.build(x.shape)
    gamma, mu, sigma = rng.uniform(0.5, 1.5, size=(3, c))
    layer.gamma.assign(gamma.astype("float32"))
    layer.renorm_mean.assign(mu.astype("float32"))
    layer.renorm_stddev.assign(sigma.astype("float32"))
    dx, (dgamma, dbeta) = layer_gradients(layer, x.astype("float32"), dy.astype("float32"))

    axes = reference.reduction_axes(x.ndim, axis)
    b = lambda v: reference._broadcast(v, x.ndim, axis)  # noqa: E731
    sigma_b = np.sqrt(x.var(axis=axes) + eps)
    r, d = sigma_b / sigma, (x.mean(axis=axes) - mu) / sigma
    expected_dx, _, _ = reference.batchnorm_backward(dy, x, gamma * r, eps=eps, axis=axis)
    xhat = (x - b(x.mean(axis=axes))) / b(sigma_b)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(dgamma, (dy * (xhat * b(r) + b(d))).sum(axis=axes), rtol=1e-4)
    np.testing.assert_allclose(dbeta, dy.sum(axis=axes), rtol=1e-4)


def test_zero_variance_initializer_floors_renorm_stddev_like_keras(rng):
    """renorm_stddev starts at 0 here: r and d divide by max(renorm_stddev, sqrt(epsilon))."""
    ours, theirs = _pair(moving_variance_initializer="zeros", renorm_momentum=0.9)
    for x in _batches(rng, 2, steps=2):
        np.testing.assert_allclose(
            np.asarray(ours(x, training=True)), np.asarray(theirs(x, training=True)), rtol=1e-5
        )
    for name in STATS:
        np.testing.assert_allclose(getattr(ours, name).numpy(), getattr(theirs, name).numpy(),
                                   rtol=1e-5, atol=1e-7, err_msg=name)


def test_inference_is_plain_batch_normalization(rng):
    renorm = course_lib.BatchNormalization(renorm=True, epsilon=1e-3)
    plain = keras.layers.BatchNormalization(epsilon=1e-3)
    x = _batches(rng, 2)[0]
    _randomize(rng, [plain], x.shape)
    renorm.build(x.shape)
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        getattr(renorm, name).assign(getattr(plain, name))
    np.testing.assert_allclose(np.asarray(renorm(x)), np.asarray(plain(x)), rtol=1e-5, atol=1e-6)


def test_stddev_variables_start_at_sqrt_of_variance_initializer():
    layer = course_lib.BatchNormalization(
        renorm=True, moving_variance_initializer=keras.initializers.Constant(4.0)
    )
    layer.build((None, 3))
    assert len(layer.non_trainable_weights) == 5
    np.testing.assert_allclose(layer.moving_stddev.numpy(), 2.0)
    np.testing.assert_allclose(layer.renorm_stddev.numpy(), 2.0)


def test_mask_and_mixed_precision_match_keras(rng):
    ours, theirs = _pair(momentum=0.5, renorm_momentum=0.5, dtype="mixed_float16")
    x = rng.normal(size=(3, 8, 5)).astype("float16")
    mask = rng.uniform(size=(3, 8)) > 0.4
    _randomize(rng, [ours, theirs], x.shape)
    for _ in range(2):
        y_ours = np.asarray(ours(x, training=True, mask=mask), dtype="float32")
        y_theirs = np.asarray(theirs(x, training=True, mask=mask), dtype="float32")
        np.testing.assert_allclose(y_ours[mask], y_theirs[mask], atol=3e-3)
    for name in STATS:
        np.testing.assert_allclose(
            getattr(ours, name).numpy(), getattr(theirs, name).numpy(), rtol=1e-3, err_msg=name
        )


def test_fit_matches_keras(rng):
    x = _batches(rng, 2)[2]
    y = rng.normal(size=(x.shape[0], 1)).astype("float32")
    results = []
    for bn in _pair(momentum=0.7, renorm_momentum=0.6, renorm_clipping={"rmax": 2.0, "dmax": 1.0}):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input(x.shape[1:]), bn, keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        results.append([w.numpy() for w in bn.weights] + [np.asarray(model.predict(x, verbose=0))])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [course_lib.BatchNormalization, course_lib.BatchRenormalization])
def test_keras_file_round_trip(rng, tmp_path, cls):
    x = _batches(rng, 4)[1]
    kwargs = dict(renorm_clipping={"rmax": 3.0, "rmin": 0.3, "dmax": 5.0}, renorm_momentum=0.9)
    bn = cls(axis=1, **kwargs) if cls is course_lib.BatchRenormalization else cls(
        axis=1, renorm=True, **kwargs)
    model = keras.Sequential([keras.Input(x.shape[1:]), bn])
    model(x, training=True)
    path = tmp_path / "renorm.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.layers[0]
    assert type(layer) is cls
    assert layer.get_config() == bn.get_config()
    assert layer.renorm and layer.renorm_clipping == kwargs["renorm_clipping"]
    for name in STATS:
        np.testing.assert_array_equal(getattr(layer, name).numpy(), getattr(bn, name).numpy())
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)


def test_config_matches_keras():
    kwargs = dict(renorm=True, renorm_clipping={"rmax": 3.0, "dmax": 5.0}, renorm_momentum=0.9)
    ours = course_lib.BatchNormalization(**kwargs).get_config()
    theirs = keras.layers.BatchNormalization(**kwargs).get_config()
    for key, value in ours.items():
        if key != "name":
            assert theirs[key] == value, key
    assert course_lib.BatchRenormalization().get_config()["renorm_clipping"] == {}
    assert course_lib.BatchNormalization().get_config()["renorm_clipping"] is None
    clone = course_lib.BatchRenormalization.from_config(
        course_lib.BatchRenormalization(renorm_momentum=0.5).get_config())
    assert clone.renorm and clone.renorm_momentum == 0.5


def test_clipping_dict_is_copied():
    clipping = {"rmax": 3.0}
    layer = course_lib.BatchNormalization(renorm=True, renorm_clipping=clipping)
    clipping["rmax"] = 0.0
    assert layer.renorm_clipping == {"rmax": 3.0}


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"renorm_clipping": {"random_key": 1.0}},
         "Received invalid keys for `renorm_clipping`: ['random_key']"),
        ({"renorm_clipping": {"rmax": 0.5, "rmin": 1.0}},
         "rmax should be greater than or equal to rmin. Received: rmax=0.5, rmin=1.0"),
        ({"renorm_clipping": {"dmax": -1.0}}, "dmax should be non-negative. Received: dmax=-1.0"),
        ({"renorm_clipping": {"rmax": "3"}}, "Received: rmax='3'"),
        ({"renorm_clipping": {"dmax": True}}, "Received: dmax=True"),
        ({"renorm_clipping": [3.0]},
         "`renorm_clipping` must be a dict. Received: renorm_clipping=[3.0]"),
        ({"renorm_momentum": 1.5},
         "`renorm_momentum` must be in [0, 1]. Received: renorm_momentum=1.5"),
        ({"renorm": "yes"}, "`renorm` must be True or False. Received: renorm='yes'"),
        ({"synchronized": 1}, "`synchronized` must be True or False. Received: synchronized=1"),
    ],
)
def test_bad_arguments_name_argument_and_value(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        course_lib.BatchNormalization(**{"renorm": True, **kwargs})
    assert fragment in str(info.value)


def test_docstring_examples():
    result = doctest.testmod(course_lib.batch_normalization)
    assert result.attempted >= 2 and result.failed == 0
