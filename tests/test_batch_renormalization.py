"""Batch Renormalization (``renorm=True``) against keras.layers.BatchNormalization(renorm=True)
and against a NumPy transcription of the paper's equations (Ioffe, 2017, Algorithm 1)."""

import doctest

import keras
import numpy as np
import pytest
from conftest import layer_gradients

import course_lib
import course_lib.batch_normalization
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
        b = lambda v: reference.per_feature(v, x.ndim, axis)  # noqa: E731
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
    b = lambda v: reference.per_feature(v, x.ndim, axis)  # noqa: E731
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
    b = lambda v: reference.per_feature(v, x.ndim, axis)  # noqa: E731
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
         "`renorm_clipping` must be a dict or a schedule"),
        ({"renorm_clipping": [3.0]}, "Received: renorm_clipping=[3.0]"),
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


# --- The warm-up schedule of r_max and d_max (Ioffe, 2017, Section 4.1) -------------------


def _numpy_schedule(step, rmax=3.0, dmax=5.0, warmup=5000, rmax_end=40000, dmax_end=25000):
    """The paper's warm-up, written independently: r_max = 1, d_max = 0 for `warmup` steps,
    then straight lines to r_max at step `rmax_end` and d_max at step `dmax_end`."""

    def line(final, start, end):
        if step >= end:
            return final
        if step <= warmup:
            return start
        return start + (final - start) * (step - warmup) / (end - warmup)

    r = line(rmax, 1.0, rmax_end)
    return {"rmax": r, "rmin": 1.0 / r, "dmax": line(dmax, 0.0, dmax_end)}


SHORT = dict(rmax=1.5, dmax=0.4, warmup_steps=2, rmax_end_step=6, dmax_end_step=4)


def _short_reference(step):
    return _numpy_schedule(step, 1.5, 0.4, 2, 6, 4)


@pytest.mark.parametrize(
    "kwargs,steps",
    [
        ({}, [0, 1, 4999, 5000, 5001, 12345, 24999, 25000, 30000, 39999, 40000, 10**6]),
        (SHORT, list(range(9))),
        (dict(rmax=2.0, dmax=1.0, warmup_steps=3, rmax_end_step=3, dmax_end_step=7), range(9)),
        (dict(warmup_steps=0, rmax_end_step=10, dmax_end_step=0), range(12)),
    ],
)
def test_schedule_matches_numpy_reference(kwargs, steps):
    schedule = course_lib.RenormClippingSchedule(**kwargs)
    names = dict(rmax="rmax", dmax="dmax", warmup_steps="warmup", rmax_end_step="rmax_end",
                 dmax_end_step="dmax_end")
    ref_kwargs = {names[k]: v for k, v in kwargs.items()}
    for step in steps:
        expected = _numpy_schedule(step, **ref_kwargs)
        got = {k: float(v) for k, v in schedule(step).items()}
        assert got.keys() == expected.keys()
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, err_msg=f"{key} {step}")


def test_schedule_defaults_are_the_papers():
    """rmax = 1, dmax = 0 for 5000 steps; rmax = 3 at 40k steps and dmax = 5 at 25k."""
    schedule = course_lib.RenormClippingSchedule()
    at = lambda step: {k: float(v) for k, v in schedule(step).items()}  # noqa: E731
    assert at(0) == at(5000) == {"rmax": 1.0, "rmin": 1.0, "dmax": 0.0}
    assert at(25000)["dmax"] == 5.0 and at(40000)["rmax"] == 3.0
    assert 1.0 < at(25000)["rmax"] < 3.0 and at(15000)["dmax"] == pytest.approx(2.5)


def _schedule_layer(schedule, **kwargs):
    return course_lib.BatchNormalization(renorm=True, renorm_clipping=schedule, **kwargs)


def _randomize_by_name(rng, layers, shape):
    """As _randomize, by weight name: a schedule adds the int weight renorm_step (left at 0)."""
    for layer in layers:
        layer.build(shape)
    for name in ("gamma", "beta") + STATS:
        value = rng.uniform(0.5, 1.5, size=getattr(layers[0], name).shape).astype("float32")
        for layer in layers:
            getattr(layer, name).assign(value)


def test_step_zero_is_plain_batch_normalization(rng):
    """With the paper's schedule, the first training steps give exactly plain BN's output,
    however far the renorm statistics are from the batch's (r = 1, d = 0)."""
    layer = _schedule_layer(course_lib.RenormClippingSchedule(), momentum=0.5)
    plain = keras.layers.BatchNormalization(momentum=0.5)
    batches = _batches(rng, 4)
    _randomize_by_name(rng, [layer], batches[0].shape)
    plain.build(batches[0].shape)
    for name in ("gamma", "beta"):
        getattr(plain, name).assign(getattr(layer, name))
    layer.renorm_mean.assign(layer.renorm_mean * 0.0 + 7.0)  # far away: d would be large
    assert int(layer.renorm_step.numpy()) == 0
    for step, x in enumerate(batches):
        np.testing.assert_allclose(
            np.asarray(layer(x, training=True)), np.asarray(plain(x, training=True)),
            rtol=1e-5, atol=1e-5, err_msg=f"step {step}",
        )
    assert int(layer.renorm_step.numpy()) == len(batches)


@pytest.mark.parametrize("rank,axis", CASES)
def test_schedule_follows_the_paper_step_by_step(rng, rank, axis):
    """Each training step's output is Algorithm 1 with that step's r_max and d_max."""
    eps, momentum = 1e-3, 0.6
    layer = _schedule_layer(course_lib.RenormClippingSchedule(**SHORT), axis=axis,
                            epsilon=eps, momentum=momentum, renorm_momentum=momentum)
    batches = _batches(rng, rank, steps=9)
    c = batches[0].shape[axis]
    layer.build(batches[0].shape)
    gamma, beta = rng.uniform(0.5, 1.5, size=(2, c))
    mu, sigma = rng.normal(size=c), rng.uniform(0.5, 1.5, size=c)
    for name, value in [("gamma", gamma), ("beta", beta), ("moving_mean", mu),
                        ("renorm_mean", mu), ("moving_stddev", sigma), ("renorm_stddev", sigma),
                        ("moving_variance", sigma**2 - eps)]:
        getattr(layer, name).assign(value.astype("float32"))
    for step, x in enumerate(batches):
        clip = _short_reference(step)
        [expected], mu, sigma = _numpy_renorm(
            [x], gamma, beta, mu, sigma, 1 - momentum, eps, axis, clip["rmax"], clip["dmax"]
        )
        np.testing.assert_allclose(
            np.asarray(layer(x, training=True)), expected, rtol=1e-4, atol=1e-4,
            err_msg=f"step {step}",
        )
        # Inference neither uses nor advances the schedule.
        layer(x, training=False)
        assert int(layer.renorm_step.numpy()) == step + 1


def test_after_the_warm_up_equals_fixed_clipping(rng):
    scheduled = _schedule_layer(course_lib.RenormClippingSchedule(**SHORT), momentum=0.7)
    fixed = course_lib.BatchNormalization(
        renorm=True, momentum=0.7, renorm_clipping={"rmax": 1.5, "rmin": 1 / 1.5, "dmax": 0.4}
    )
    batches = _batches(rng, 2, steps=9)
    _randomize_by_name(rng, [scheduled, fixed], batches[0].shape)
    differed = []
    for step, x in enumerate(batches):
        y_s = np.asarray(scheduled(x, training=True))
        y_f = np.asarray(fixed(x, training=True))
        if step >= SHORT["rmax_end_step"]:
            np.testing.assert_allclose(y_s, y_f, rtol=1e-6, atol=1e-6, err_msg=f"step {step}")
        else:
            differed.append(not np.allclose(y_s, y_f, rtol=1e-4, atol=1e-4))
        for name in STATS:  # the statistics never depend on the clipping
            np.testing.assert_allclose(getattr(scheduled, name).numpy(),
                                       getattr(fixed, name).numpy(), rtol=1e-6, err_msg=name)
    assert all(differed)  # the clipping really bit during the warm-up (the test can fail)


def test_schedule_counts_steps_in_fit_and_keeps_gradients(rng):
    x = _batches(rng, 2)[2]
    y = rng.normal(size=(x.shape[0], 1)).astype("float32")
    bn = _schedule_layer(course_lib.RenormClippingSchedule(**SHORT))
    model = keras.Sequential([keras.Input(x.shape[1:]), bn, keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    assert int(bn.renorm_step.numpy()) == 2 * int(np.ceil(x.shape[0] / 4))
    model.predict(x, verbose=0)
    model.evaluate(x, y, verbose=0)
    assert int(bn.renorm_step.numpy()) == 6
    assert len(bn.trainable_weights) == 2 and len(bn.non_trainable_weights) == 6


def test_schedule_round_trips_through_a_keras_file(rng, tmp_path):
    batches = _batches(rng, 4, steps=6)
    bn = course_lib.BatchRenormalization(
        axis=1, renorm_clipping=course_lib.RenormClippingSchedule(**SHORT), momentum=0.8
    )
    model = keras.Sequential([keras.Input(batches[0].shape[1:]), bn])
    for x in batches[:3]:
        model(x, training=True)
    path = tmp_path / "schedule.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.layers[0]
    assert type(layer) is course_lib.BatchRenormalization
    assert layer.get_config() == bn.get_config()
    assert layer.renorm_clipping == course_lib.RenormClippingSchedule(**SHORT)
    assert int(layer.renorm_step.numpy()) == 3
    for x in batches[3:]:  # training goes on where it stopped, schedule included
        np.testing.assert_allclose(np.asarray(loaded(x, training=True)),
                                   np.asarray(model(x, training=True)), rtol=1e-6, atol=1e-6)
    assert int(layer.renorm_step.numpy()) == int(bn.renorm_step.numpy()) == 6


def test_schedule_config_round_trip():
    schedule = course_lib.RenormClippingSchedule(rmax=2.5, dmax=3.0, warmup_steps=10,
                                                 rmax_end_step=100, dmax_end_step=50)
    layer = course_lib.BatchNormalization(renorm=True, renorm_clipping=schedule)
    config = layer.get_config()
    assert config["renorm_clipping"]["config"] == schedule.get_config()
    clone = course_lib.BatchNormalization.from_config(config)
    assert clone.renorm_clipping == schedule and clone.get_config() == config
    assert course_lib.RenormClippingSchedule.from_config(schedule.get_config()) == schedule
    # The dict form is untouched: no step counter, the same weights as Keras.
    plain = course_lib.BatchNormalization(renorm=True, renorm_clipping={"rmax": 3.0})
    plain.build((None, 3))
    assert not hasattr(plain, "renorm_step") and len(plain.weights) == 7


def test_a_plain_callable_schedule_works(rng):
    """Any callable of the step returning the dict will do (not saved unless registered)."""
    fixed = course_lib.BatchNormalization(renorm=True, renorm_clipping={"rmax": 1.2, "dmax": 0.1})
    scheduled = course_lib.BatchNormalization(
        renorm=True, renorm_clipping=lambda step: {"rmax": 1.2, "dmax": 0.1}
    )
    batches = _batches(rng, 2, steps=3)
    _randomize(rng, [fixed, scheduled], batches[0].shape)
    for x in batches:
        np.testing.assert_allclose(np.asarray(scheduled(x, training=True)),
                                   np.asarray(fixed(x, training=True)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"rmax": 0.5}, "`rmax` must be a finite number >= 1. Received: rmax=0.5"),
        ({"dmax": -1.0}, "`dmax` must be a finite number >= 0. Received: dmax=-1.0"),
        ({"rmax": "3"}, "Received: rmax='3'"),
        ({"warmup_steps": -1}, "`warmup_steps` must be a non-negative integer. "
                               "Received: warmup_steps=-1"),
        ({"warmup_steps": 2.5}, "Received: warmup_steps=2.5"),
        ({"rmax_end_step": 100}, "`rmax_end_step` must be >= `warmup_steps`. "
                                 "Received: rmax_end_step=100, warmup_steps=5000"),
        ({"dmax_end_step": True}, "Received: dmax_end_step=True"),
    ],
)
def test_schedule_bad_arguments_name_argument_and_value(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        course_lib.RenormClippingSchedule(**kwargs)
    assert fragment in str(info.value)
