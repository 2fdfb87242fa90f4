"""course_lib.BatchNormalization against its oracle, keras.layers.BatchNormalization."""

import doctest

import keras
import numpy as np
import pytest

import course_lib
import course_lib.batch_normalization
from conftest import layer_gradients

# Every dimension differs, so a wrong reshape or reduction axis cannot pass by accident.
SHAPES = {2: (11, 7), 4: (6, 5, 9, 4)}
CASES = [(rank, axis) for rank in (2, 4) for axis in (-1, 1)]


def _pair(**kwargs):
    """The layer under test and Keras's, with identical arguments."""
    return course_lib.BatchNormalization(**kwargs), keras.layers.BatchNormalization(**kwargs)


def _inputs(rng, rank, scale=3.0, shift=2.0, dtype="float32"):
    return (rng.normal(size=SHAPES[rank]) * scale + shift).astype(dtype)


def _tols(dtype):
    return {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-10)}[dtype]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rank,axis", CASES)
def test_forward_matches_keras(rng, rank, axis, dtype):
    ours, theirs = _pair(axis=axis, momentum=0.9, epsilon=1e-3, dtype=dtype)
    # Random gamma/beta/moving statistics, so inference uses something other than 0/1.
    x = _inputs(rng, rank, dtype=dtype)
    ours.build(x.shape)
    theirs.build(x.shape)
    for w_ours, w_theirs in zip(ours.weights, theirs.weights):
        value = rng.uniform(0.5, 1.5, size=w_ours.shape).astype(dtype)
        w_ours.assign(value)
        w_theirs.assign(value)
    for training in (True, False, None):
        np.testing.assert_allclose(
            np.asarray(ours(x, training=training)),
            np.asarray(theirs(x, training=training)),
            **_tols(dtype),
            err_msg=f"training={training}",
        )


@pytest.mark.parametrize("rank,axis", CASES)
def test_moving_statistics_after_several_steps(rng, rank, axis):
    ours, theirs = _pair(axis=axis, momentum=0.8)
    for step in range(5):
        # A different distribution each step, so the running average is really exercised.
        x = _inputs(rng, rank, scale=1.0 + step, shift=float(step))
        ours(x, training=True)
        theirs(x, training=True)
    np.testing.assert_allclose(ours.moving_mean.numpy(), theirs.moving_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        ours.moving_variance.numpy(), theirs.moving_variance.numpy(), rtol=1e-5
    )
    # And the statistics moved away from their initial values.
    assert not np.allclose(ours.moving_variance.numpy(), 1.0)


@pytest.mark.parametrize("rank,axis", CASES)
def test_inference_does_not_update_statistics(rng, rank, axis):
    layer = course_lib.BatchNormalization(axis=axis)
    x = _inputs(rng, rank)
    layer(x, training=True)
    before = [w.numpy().copy() for w in layer.non_trainable_weights]
    layer(x * 10.0, training=False)
    layer(x * 10.0)
    for b, w in zip(before, layer.non_trainable_weights):
        np.testing.assert_array_equal(b, w.numpy())


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("rank,axis", CASES)
def test_gradients_match_keras(rng, rank, axis, training):
    ours, theirs = _pair(axis=axis)
    x = _inputs(rng, rank)
    dy = rng.normal(size=x.shape).astype("float32")
    for layer in (ours, theirs):
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 2.0, layer.gamma.shape[0]).astype("float32"))
    dx_o, dw_o = layer_gradients(ours, x, dy, training=training)
    dx_t, dw_t = layer_gradients(theirs, x, dy, training=training)
    np.testing.assert_allclose(dx_o, dx_t, rtol=1e-4, atol=1e-5)
    assert len(dw_o) == len(dw_t) == 2
    for g_o, g_t in zip(dw_o, dw_t):
        np.testing.assert_allclose(g_o, g_t, rtol=1e-4, atol=1e-4)


def test_trainable_false_means_inference_mode(rng):
    ours, theirs = _pair(momentum=0.5)
    x = _inputs(rng, 2)
    ours(x, training=True)
    theirs(x, training=True)
    ours.trainable = False
    theirs.trainable = False
    before = ours.moving_mean.numpy().copy()
    y_ours = np.asarray(ours(x * 3.0, training=True))
    np.testing.assert_allclose(y_ours, np.asarray(theirs(x * 3.0, training=True)), rtol=1e-5)
    np.testing.assert_allclose(y_ours, np.asarray(ours(x * 3.0, training=False)), rtol=1e-6)
    np.testing.assert_array_equal(before, ours.moving_mean.numpy())
    assert ours.trainable_weights == []


def test_mixed_float16_matches_keras(rng):
    ours, theirs = _pair(axis=-1, dtype="mixed_float16")
    x = _inputs(rng, 4).astype("float16")
    y_ours = ours(x, training=True)
    y_theirs = theirs(x, training=True)
    assert keras.backend.standardize_dtype(y_ours.dtype) == "float16"
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in ours.weights)
    np.testing.assert_allclose(
        np.asarray(y_ours, dtype="float32"), np.asarray(y_theirs, dtype="float32"), atol=2e-3
    )
    np.testing.assert_allclose(
        ours.moving_variance.numpy(), theirs.moving_variance.numpy(), rtol=1e-3
    )


@pytest.mark.parametrize("center,scale", [(False, True), (True, False), (False, False)])
def test_center_and_scale_flags(rng, center, scale):
    ours, theirs = _pair(center=center, scale=scale)
    x = _inputs(rng, 4)
    np.testing.assert_allclose(
        np.asarray(ours(x, training=True)), np.asarray(theirs(x, training=True)), rtol=1e-5
    )
    assert len(ours.trainable_weights) == len(theirs.trainable_weights) == center + scale


def test_mask_matches_keras(rng):
    ours, theirs = _pair(momentum=0.5)
    x = rng.normal(size=(3, 8, 5)).astype("float32")
    mask = rng.uniform(size=(3, 8)) > 0.4
    x[~mask] = 1e3  # masked positions must not leak into the statistics
    y_ours = np.asarray(ours(x, training=True, mask=mask))
    y_theirs = np.asarray(theirs(x, training=True, mask=mask))
    np.testing.assert_allclose(y_ours[mask], y_theirs[mask], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.moving_mean.numpy(), theirs.moving_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        ours.moving_variance.numpy(), theirs.moving_variance.numpy(), rtol=1e-5
    )
    with pytest.raises(ValueError, match="mask"):
        ours(x, training=True, mask=mask[..., None])


def test_regularizers_and_constraints_match_keras(rng):
    kwargs = dict(
        gamma_regularizer=keras.regularizers.L2(0.1),
        beta_regularizer=keras.regularizers.L1(0.2),
        gamma_constraint=keras.constraints.NonNeg(),
        beta_initializer="ones",
    )
    ours, theirs = _pair(**kwargs)
    x = _inputs(rng, 2)
    ours(x, training=True)
    theirs(x, training=True)
    np.testing.assert_allclose(
        [float(v) for v in ours.losses], [float(v) for v in theirs.losses], rtol=1e-6
    )
    assert ours.gamma.constraint is not None


def test_fit_updates_like_keras(rng):
    """Inside model.fit (compiled training step), statistics and weights evolve identically."""
    x = _inputs(rng, 2)
    y = rng.normal(size=(x.shape[0], 1)).astype("float32")
    results = []
    for bn in _pair(momentum=0.7):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input(x.shape[1:]), bn, keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        results.append([w.numpy() for w in bn.weights] + [np.asarray(model.predict(x, verbose=0))])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_keras_file_round_trip(rng, tmp_path):
    x = _inputs(rng, 4)
    bn = course_lib.BatchNormalization(axis=1, momentum=0.9, epsilon=1e-2, center=False)
    model = keras.Sequential([keras.Input(x.shape[1:]), bn])
    model(x, training=True)  # move the moving statistics
    path = tmp_path / "bn.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.layers[0]
    assert type(layer) is course_lib.BatchNormalization
    assert layer.get_config() == bn.get_config()
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)


def test_config_round_trip():
    bn = course_lib.BatchNormalization(axis=2, momentum=0.5, gamma_regularizer="l2")
    clone = course_lib.BatchNormalization.from_config(bn.get_config())
    assert clone.get_config() == bn.get_config()
    keras_cfg = keras.layers.BatchNormalization().get_config()
    # Every argument of this release exists in Keras with the same default.
    ours_cfg = course_lib.BatchNormalization().get_config()
    for key, value in ours_cfg.items():
        if key not in ("name",):
            assert keras_cfg[key] == value, key


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"axis": 1.5}, "`axis` must be an integer. Received: axis=1.5"),
        ({"axis": "channels"}, "Received: axis='channels'"),
        ({"momentum": 1.5}, "`momentum` must be in [0, 1]. Received: momentum=1.5"),
        ({"momentum": -0.1}, "Received: momentum=-0.1"),
        ({"epsilon": 0.0}, "`epsilon` must be positive. Received: epsilon=0.0"),
        ({"epsilon": -1e-3}, "Received: epsilon=-0.001"),
        ({"center": "yes"}, "`center` must be True or False. Received: center='yes'"),
        ({"scale": 1}, "Received: scale=1"),
    ],
)
def test_bad_arguments_name_argument_and_value(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        course_lib.BatchNormalization(**kwargs)
    assert fragment in str(info.value)


def test_axis_out_of_range_names_axis_and_shape():
    layer = course_lib.BatchNormalization(axis=3)
    with pytest.raises(ValueError, match=r"Received: axis=3, input_shape=\(4, 5\)"):
        layer(np.zeros((4, 5), "float32"))


def test_docstring_example():
    result = doctest.testmod(course_lib.batch_normalization)
    assert result.attempted > 0 and result.failed == 0
