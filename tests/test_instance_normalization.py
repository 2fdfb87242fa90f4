"""course_lib.InstanceNormalization against a float64 NumPy reference and numeric gradients."""

import doctest

import keras
import numpy as np
import pytest
from conftest import layer_gradients

import course_lib
import course_lib.instance_normalization
from course_lib.reference import numeric_gradient

# (shape, channel axis); every dimension of a shape differs.
CASES = [((4, 5, 3, 6), -1), ((4, 6, 5, 3), 1), ((3, 7, 4), -1), ((2, 3, 4, 5, 6), -1)]
IDS = [f"{s}-axis{a}" for s, a in CASES]


@pytest.fixture(autouse=True)
def _jax_float64(request):
    """JAX silently computes float64 in float32 unless x64 is on: turn it on for float64 cases."""
    params = getattr(request.node, "callspec", None)
    if params and "float64" in params.params.values() and keras.backend.backend() == "jax":
        import jax

        with jax.enable_x64(True):
            yield
    else:
        yield


def _reference(x, axis, gamma, beta, eps=1e-3):
    """Float64 NumPy instance normalization: per example and channel, over the spatial axes."""
    x = np.asarray(x, np.float64)
    axis = axis % x.ndim
    spatial = tuple(a for a in range(1, x.ndim) if a != axis)
    mean = x.mean(axis=spatial, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=spatial, keepdims=True)
    shape = [1] * x.ndim
    shape[axis] = -1
    return (x - mean) / np.sqrt(var + eps) * gamma.reshape(shape) + beta.reshape(shape)


def _layer(rng, shape, axis=-1, dtype="float32", **kwargs):
    """A built layer with random gamma and beta (not 1 and 0)."""
    layer = course_lib.InstanceNormalization(axis=axis, dtype=dtype, **kwargs)
    layer.build(shape)
    for w in layer.weights:
        w.assign(rng.uniform(0.5, 1.5, size=w.shape).astype(w.dtype))
    return layer


def _inputs(rng, shape, dtype="float32"):
    return (rng.normal(size=shape) * 3.0 + 2.0).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,axis", CASES, ids=IDS)
def test_forward_matches_numpy_reference(rng, shape, axis, dtype):
    x = _inputs(rng, shape, dtype)
    layer = _layer(rng, shape, axis, dtype)
    y = np.asarray(layer(x))
    assert y.dtype == dtype
    tols = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}
    expected = _reference(x, axis, layer.gamma.numpy(), layer.beta.numpy())
    np.testing.assert_allclose(y, expected, **tols[dtype])
    np.testing.assert_array_equal(np.asarray(layer(x, training=True)), y)


@pytest.mark.parametrize("dtype", ["float64"])
@pytest.mark.parametrize("axis", [-1, 1])
def test_gradients_match_numeric_gradients(rng, axis, dtype):
    shape = (2, 3, 4, 5)
    x = rng.normal(size=shape) + 0.5
    dy = rng.normal(size=shape)
    layer = _layer(rng, shape, axis, dtype)
    dx, (dgamma, dbeta) = layer_gradients(layer, x, dy)
    f = lambda v: float(np.sum(np.asarray(layer(v)) * dy))  # noqa: E731
    np.testing.assert_allclose(dx, numeric_gradient(f, x, 1e-6), rtol=1e-6, atol=1e-8)
    # dL/dgamma = sum of dy * xhat, dL/dbeta = sum of dy, both per channel.
    xhat = _reference(x, axis, np.ones(shape[axis]), np.zeros(shape[axis]))
    others = tuple(a for a in range(4) if a != axis % 4)
    np.testing.assert_allclose(dgamma, (dy * xhat).sum(axis=others), rtol=1e-10)
    np.testing.assert_allclose(dbeta, dy.sum(axis=others), rtol=1e-10)


def test_equals_group_normalization_with_one_channel_per_group(rng):
    x = _inputs(rng, (4, 5, 3, 6))
    ours = course_lib.InstanceNormalization()
    np.testing.assert_allclose(
        np.asarray(ours(x)),
        np.asarray(keras.layers.GroupNormalization(groups=-1)(x)),
        rtol=1e-5,
        atol=1e-5,
    )
    assert isinstance(ours, course_lib.GroupNormalization)


def test_constant_input_gives_beta(rng):
    # -2.5 and 32 positions: exact sums and mean, even where XLA divides by multiplying
    # with 1 / 32. Otherwise x - mean ~ 1e-7 is amplified by 1 / sqrt(epsilon).
    layer = _layer(rng, (3, 4, 8, 6))
    y = np.asarray(layer(np.full((3, 4, 8, 6), -2.5, "float32")))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, np.broadcast_to(layer.beta.numpy(), y.shape), atol=1e-6)


def test_batch_of_one_and_independence_of_examples(rng):
    x = _inputs(rng, (1, 5, 3, 6))
    layer = _layer(rng, x.shape)
    y = np.asarray(layer(x))
    np.testing.assert_allclose(
        y, _reference(x, -1, layer.gamma.numpy(), layer.beta.numpy()), rtol=1e-5, atol=1e-5
    )
    big = np.concatenate([x, _inputs(rng, (3, 5, 3, 6)) * 9.0])
    np.testing.assert_allclose(np.asarray(layer(big))[:1], y, rtol=1e-6, atol=1e-6)


def test_mixed_float16_is_finite_and_correct(rng):
    x = (rng.normal(size=(4, 5, 3, 6)) * 50.0).astype("float16")  # squares overflow float16
    layer = _layer(rng, x.shape, dtype="mixed_float16")
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in layer.weights)
    y = np.asarray(y, dtype="float32")
    assert np.all(np.isfinite(y))
    expected = _reference(x, -1, layer.gamma.numpy(), layer.beta.numpy())
    np.testing.assert_allclose(y, expected, atol=1e-2)


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_magnitude_1e6_is_finite_and_correct(rng, offset):
    x = (rng.normal(size=(4, 5, 3, 6)) * 1e6 + offset).astype("float32")
    layer = _layer(rng, x.shape)
    y = np.asarray(layer(x))
    assert np.all(np.isfinite(y))
    expected = _reference(x, -1, layer.gamma.numpy(), layer.beta.numpy())
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_keras_file_round_trip(rng, tmp_path):
    x = _inputs(rng, (2, 6, 5, 3))
    norm = course_lib.InstanceNormalization(axis=1, epsilon=1e-5, center=False)
    model = keras.Sequential([keras.Input(x.shape[1:]), norm])
    norm.gamma.assign(rng.uniform(0.5, 1.5, size=6).astype("float32"))
    path = tmp_path / "in.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.layers[0]
    assert type(layer) is course_lib.InstanceNormalization
    assert "groups" not in layer.get_config()
    assert layer.get_config() == norm.get_config()
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)


def test_config_round_trip():
    layer = course_lib.InstanceNormalization(axis=1, gamma_regularizer="l2", scale=False)
    clone = course_lib.InstanceNormalization.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"groups": 2}, "`groups` is fixed to one group per channel"),
        ({"groups": 2}, "Received: groups=2"),
        ({"axis": 0}, "Received: axis=0"),
        ({"epsilon": -1.0}, "`epsilon` must be positive. Received: epsilon=-1.0"),
        ({"center": 0}, "`center` must be True or False. Received: center=0"),
    ],
)
def test_bad_arguments_name_argument_and_value(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        course_lib.InstanceNormalization(**kwargs)
    assert fragment in str(info.value)


def test_inputs_without_spatial_axes_are_refused():
    with pytest.raises(ValueError, match=r"rank >= 3\). Received: input_shape=\(4, 6\)"):
        course_lib.InstanceNormalization()(np.zeros((4, 6), "float32"))


def test_docstring_example():
    result = doctest.testmod(course_lib.instance_normalization)
    assert result.attempted > 0 and result.failed == 0
