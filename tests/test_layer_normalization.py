"""course_lib.LayerNormalization against its oracles: keras.layers.LayerNormalization (and
keras.layers.RMSNormalization for ``rms_scaling``), and a float64 NumPy reference."""

import doctest
import re

import keras
import numpy as np
import pytest
from conftest import layer_gradients, with_training_argument

import course_lib
import course_lib.layer_normalization
from course_lib.reference import numeric_gradient

# Every dimension differs, so a wrong reshape or reduction axis cannot pass by accident.
SHAPE = (5, 4, 3, 6)
AXES = [-1, 1, [1, 2], [1, 2, 3], [-1, -3], 2]

pytestmark = pytest.mark.usefixtures("jax_float64")  # conftest.py

# The oracles (conftest.with_training_argument: unchanged but for `training`).
_KerasLayerNormalization = with_training_argument(keras.layers.LayerNormalization)
_KerasRMSNormalization = with_training_argument(keras.layers.RMSNormalization)


def _tols(dtype):
    return {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-10)}[dtype]


def _skip_float64_keras_oracle_on_jax(dtype):
    if dtype == "float64" and keras.backend.backend() == "jax":
        pytest.skip(
            "on JAX, Keras computes float64 in float32 (keras.backend.result_type never returns "
            "float64 there): our float64 is checked against NumPy and numeric gradients instead"
        )


def _pair(rng, shape, dtype="float32", **kwargs):
    """Ours and Keras's, built, with the same random gamma and beta (not 1 and 0)."""
    ours = course_lib.LayerNormalization(dtype=dtype, **kwargs)
    theirs = _KerasLayerNormalization(dtype=dtype, **kwargs)
    ours.build(shape)
    theirs.build(shape)
    for w_ours, w_theirs in zip(ours.weights, theirs.weights):
        value = rng.uniform(0.5, 1.5, size=w_ours.shape).astype(w_ours.dtype)
        w_ours.assign(value)
        w_theirs.assign(value)
    return ours, theirs


def _reference(x, gamma, beta, axes, eps=1e-3):
    """Float64 NumPy layer normalization over `axes`; gamma/beta have the normalized shape."""
    x = np.asarray(x, np.float64)
    axes = tuple(sorted(a % x.ndim for a in axes))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
    return (x - mean) / np.sqrt(var + eps) * gamma.reshape(shape) + beta.reshape(shape)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis", AXES)
def test_forward_matches_keras(rng, axis, dtype):
    _skip_float64_keras_oracle_on_jax(dtype)
    x = (rng.normal(size=SHAPE) * 3.0 + 2.0).astype(dtype)
    ours, theirs = _pair(rng, SHAPE, dtype, axis=axis)
    y = np.asarray(ours(x))
    assert y.dtype == dtype
    np.testing.assert_allclose(y, np.asarray(theirs(x)), **_tols(dtype))
    # Training makes no difference: no batch statistics.
    np.testing.assert_allclose(np.asarray(ours(x, training=True)), y, **_tols(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis", [-1, [1, 2], [-1, -3]])
def test_forward_matches_numpy_reference(rng, axis, dtype):
    x = (rng.normal(size=SHAPE) * 4.0 - 1.0).astype(dtype)
    layer, _ = _pair(rng, SHAPE, dtype, axis=axis)
    axes = axis if isinstance(axis, list) else [axis]
    expected = _reference(x, layer.gamma.numpy(), layer.beta.numpy(), axes)
    tols = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}
    np.testing.assert_allclose(np.asarray(layer(x)), expected, **tols[dtype])


@pytest.mark.parametrize("dtype", ["float64"])
@pytest.mark.parametrize("rms_scaling", [False, True])
def test_input_gradient_matches_numeric_gradient(rng, rms_scaling, dtype):
    shape = (2, 3, 4)
    x = rng.normal(size=shape) + 0.5
    dy = rng.normal(size=shape)
    layer = course_lib.LayerNormalization(axis=[1, 2], rms_scaling=rms_scaling, dtype=dtype)
    layer.build(shape)
    layer.gamma.assign(rng.uniform(0.5, 1.5, size=layer.gamma.shape))
    dx, _ = layer_gradients(layer, x, dy)
    f = lambda v: float(np.sum(np.asarray(layer(v)) * dy))  # noqa: E731
    np.testing.assert_allclose(dx, numeric_gradient(f, x, 1e-6), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis", [-1, 1, [1, 2], [-1, -3]])
def test_gradients_match_keras(rng, axis, dtype):
    _skip_float64_keras_oracle_on_jax(dtype)
    x = (rng.normal(size=SHAPE) * 2.0 + 1.0).astype(dtype)
    dy = rng.normal(size=SHAPE).astype(dtype)
    ours, theirs = _pair(rng, SHAPE, dtype, axis=axis)
    dx_o, dw_o = layer_gradients(ours, x, dy)
    dx_t, dw_t = layer_gradients(theirs, x, dy)
    tols = {"float32": dict(rtol=1e-4, atol=1e-4), "float64": dict(rtol=1e-9, atol=1e-9)}[dtype]
    np.testing.assert_allclose(dx_o, dx_t, **tols)
    assert len(dw_o) == len(dw_t) == 2
    for g_o, g_t in zip(dw_o, dw_t):
        np.testing.assert_allclose(g_o, g_t, **tols)


@pytest.mark.parametrize("axis", [-1])  # Keras's RMSNormalization breaks on other axes
def test_rms_scaling_matches_keras_rms_normalization(rng, axis):
    """Keras's own rms_scaling=True divides by the std (deprecated); RMSNormalization is right."""
    x = (rng.normal(size=SHAPE) + 1.5).astype("float32")
    dy = rng.normal(size=SHAPE).astype("float32")
    ours = course_lib.LayerNormalization(axis=axis, rms_scaling=True, epsilon=1e-4)
    theirs = _KerasRMSNormalization(axis=axis, epsilon=1e-4)
    ours.build(SHAPE)
    theirs.build(SHAPE)
    assert ours.beta is None and ours.gamma.shape == theirs.scale.shape
    gamma = rng.uniform(0.5, 1.5, size=ours.gamma.shape).astype("float32")
    ours.gamma.assign(gamma)
    theirs.scale.assign(gamma)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(theirs(x)), rtol=1e-5, atol=1e-5)
    dx_o, (dg_o,) = layer_gradients(ours, x, dy)
    dx_t, (dg_t,) = layer_gradients(theirs, x, dy)
    np.testing.assert_allclose(dx_o, dx_t, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dg_o, dg_t, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("center,scale", [(False, True), (True, False), (False, False)])
def test_center_and_scale_flags(rng, center, scale):
    x = rng.normal(size=SHAPE).astype("float32")
    ours, theirs = _pair(rng, SHAPE, center=center, scale=scale, axis=[1, 2])
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(theirs(x)), rtol=1e-5, atol=1e-5)
    assert len(ours.trainable_weights) == len(theirs.trainable_weights) == center + scale


def test_rms_scaling_over_several_axes_matches_numpy(rng):
    x = (rng.normal(size=SHAPE) + 1.5).astype("float32")
    layer = course_lib.LayerNormalization(axis=[1, 3], rms_scaling=True)
    layer.build(SHAPE)
    gamma = rng.uniform(0.5, 1.5, size=(SHAPE[1], SHAPE[3]))
    layer.gamma.assign(gamma)
    x64 = x.astype(np.float64)
    rms = np.sqrt((x64**2).mean(axis=(1, 3), keepdims=True) + 1e-3)
    expected = x64 / rms * gamma[None, :, None, :]
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value,atol", [(-2.5, 1e-6), (3.7, 1e-3)])
def test_constant_input_gives_beta(rng, value, atol):
    """var = 0, so y = beta. For 3.7 the float32 rounding of the mean (x - mean ~ 1e-6) is
    amplified by gamma / sqrt(epsilon) ~ 45; -2.5 over 64 values has an exact sum and mean
    (even where XLA divides by multiplying with 1 / 64)."""
    shape = (3, 4, 2, 8)
    layer, _ = _pair(rng, shape, axis=[1, 2, 3])
    x = np.full(shape, value, dtype="float32")
    y = np.asarray(layer(x))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, np.broadcast_to(layer.beta.numpy(), shape), atol=atol)
    dx, dw = layer_gradients(layer, x, rng.normal(size=shape).astype("float32"))
    assert all(np.all(np.isfinite(g)) for g in [dx] + dw)


def test_batch_of_one(rng):
    x = rng.normal(size=(1,) + SHAPE[1:]).astype("float32")
    ours, theirs = _pair(rng, x.shape, axis=-1)
    y = np.asarray(ours(x, training=True))
    np.testing.assert_allclose(y, np.asarray(theirs(x)), rtol=1e-5, atol=1e-5)
    # The same example inside a bigger batch gets the same output.
    big = np.concatenate([x, rng.normal(size=(3,) + SHAPE[1:]).astype("float32") * 9.0])
    np.testing.assert_allclose(np.asarray(ours(big))[:1], y, rtol=1e-6, atol=1e-6)


def test_mixed_float16_matches_keras(rng):
    x = (rng.normal(size=SHAPE) * 50.0).astype("float16")  # squares overflow float16 (> 65504)
    ours, theirs = _pair(rng, SHAPE, "mixed_float16", axis=[1, 2])
    assert ours.gamma.dtype == "float32"
    y = ours(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in ours.weights)
    y = np.asarray(y, dtype="float32")
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, np.asarray(theirs(x), dtype="float32"), atol=1e-2)


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_magnitude_1e6_is_finite_and_correct(rng, offset):
    x = (rng.normal(size=SHAPE) * 1e6 + offset).astype("float32")
    layer, _ = _pair(rng, SHAPE, axis=[1, 2, 3])
    y = np.asarray(layer(x))
    assert np.all(np.isfinite(y))
    expected = _reference(x, layer.gamma.numpy(), layer.beta.numpy(), [1, 2, 3])
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_regularizers_and_constraints_match_keras(rng):
    kwargs = dict(
        gamma_regularizer=keras.regularizers.L2(0.1),
        beta_regularizer=keras.regularizers.L1(0.2),
        gamma_constraint=keras.constraints.NonNeg(),
    )
    ours, theirs = _pair(rng, SHAPE, **kwargs)
    np.testing.assert_allclose(
        [float(v) for v in ours.losses], [float(v) for v in theirs.losses], rtol=1e-6
    )
    assert ours.gamma.constraint is not None


def test_keras_file_round_trip(rng, tmp_path):
    x = rng.normal(size=SHAPE).astype("float32")
    ln = course_lib.LayerNormalization(axis=[1, 3], epsilon=1e-2, gamma_initializer="he_normal")
    model = keras.Sequential([keras.Input(SHAPE[1:]), ln])
    ln.beta.assign(rng.normal(size=ln.beta.shape).astype("float32"))
    path = tmp_path / "ln.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.layers[0]
    assert type(layer) is course_lib.LayerNormalization
    assert layer.get_config() == ln.get_config()
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)


def test_config_defaults_match_keras():
    ours = course_lib.LayerNormalization(axis=[1, 2], rms_scaling=False, gamma_regularizer="l2")
    assert course_lib.LayerNormalization.from_config(ours.get_config()).get_config() == (
        ours.get_config()
    )
    keras_cfg = keras.layers.LayerNormalization().get_config()
    for key, value in course_lib.LayerNormalization().get_config().items():
        if key != "name":
            assert keras_cfg[key] == value, key


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"axis": 1.5}, "Received: axis=1.5"),
        (
            {"axis": []},
            "`axis` must be an integer or a non-empty list of integers. Received: axis=[]",
        ),
        ({"axis": [1, "a"]}, "Received: axis=[1, 'a']"),
        ({"axis": True}, "Received: axis=True"),
        ({"epsilon": 0.0}, "`epsilon` must be positive. Received: epsilon=0.0"),
        ({"epsilon": -1e-3}, "Received: epsilon=-0.001"),
        ({"center": "yes"}, "`center` must be True or False. Received: center='yes'"),
        ({"scale": 1}, "Received: scale=1"),
        ({"rms_scaling": None}, "Received: rms_scaling=None"),
    ],
)
def test_bad_arguments_name_argument_and_value(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        course_lib.LayerNormalization(**kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "axis,fragment",
    [(3, r"Received: axis=3, input_shape=\(4, 5\)"), ([1, -1], r"twice. Received: axis=\[1, -1\]")],
)
def test_bad_axis_for_the_input(axis, fragment):
    with pytest.raises(ValueError, match=fragment):
        course_lib.LayerNormalization(axis=axis)(np.zeros((4, 5), "float32"))


# (axis, the shape the layer is built on, the shape of another rank it is then called on)
OTHER_RANK = [(-1, (2, 3, 4), (5, 2, 3, 4)), (-1, (2, 3, 4), (2, 3, 5, 4)),
              (1, (2, 3, 4), (2, 3, 4, 5)), ([1, 2], (2, 3, 4), (2, 3, 4, 5)),
              ([-2, -1], (2, 3, 4), (5, 2, 3, 4)), (-1, (5, 2, 3, 4), (2, 3, 4))]
# ... and calls where the axes `axis` names have other sizes than the built ones.
OTHER_SIZES = [(-1, (2, 3, 4), (2, 3, 4, 5)), (1, (2, 3, 4), (5, 2, 3, 4)),
               (2, (2, 3, 4), (2, 3, 5, 4)), ([-2, -1], (2, 3, 4), (2, 3, 4, 5))]


@pytest.mark.parametrize("axis,built,called", OTHER_RANK)
def test_a_call_on_another_rank_matches_keras(rng, axis, built, called):
    """Keras resolves `axis` against each input's rank, so a layer built on rank 3 may be
    called on rank 4 where the axes `axis` names there have the built sizes."""
    ours, theirs = _pair(rng, built, axis=axis)
    ours(rng.normal(size=built).astype("float32"))  # a call on the built rank first
    x = (rng.normal(size=called) * 2.0 + 1.0).astype("float32")
    y = np.asarray(ours(x))
    assert y.shape == called
    np.testing.assert_allclose(y, np.asarray(theirs(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis,built,called", OTHER_SIZES)
def test_a_call_where_the_axes_have_other_sizes_raises_as_keras_does(rng, axis, built, called):
    """Keras fails there too (in a reshape); ours says which argument and which shapes."""
    ours, theirs = _pair(rng, built, axis=axis)
    x = rng.normal(size=called).astype("float32")
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the backend's reshape raises
        theirs(x)
    with pytest.raises(ValueError, match=re.escape(f"Received: axis={axis}, input_shape={called}")):
        ours(x)


def test_docstring_example():
    result = doctest.testmod(course_lib.layer_normalization)
    assert result.attempted > 0 and result.failed == 0
