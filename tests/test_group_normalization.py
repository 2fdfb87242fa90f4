"""course_lib.GroupNormalization against its oracles: keras.layers.GroupNormalization, a
float64 NumPy reference and numeric gradients."""

import doctest

import keras
import numpy as np
import pytest
from conftest import layer_gradients

import course_lib
import course_lib.group_normalization
from course_lib.reference import numeric_gradient

# (shape, channel axis, groups); every dimension of a shape differs.
CASES = [
    ((4, 5, 3, 6), -1, 2),
    ((4, 5, 3, 6), -1, 3),
    ((4, 5, 3, 6), -1, 1),
    ((4, 5, 3, 6), -1, -1),
    ((4, 6, 5, 3), 1, 2),  # channels first
    ((5, 12), -1, 4),  # after a Dense layer
    ((2, 3, 4, 5, 6), -1, 3),  # 3-D images
]
IDS = [f"{s}-axis{a}-groups{g}" for s, a, g in CASES]


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


class _KerasGroupNormalization(keras.layers.GroupNormalization):
    """The oracle, unchanged, with a `training` argument: on JAX, conftest.layer_gradients
    passes one to `stateless_call`, which Keras's call() would refuse."""

    def call(self, inputs, training=None):
        return super().call(inputs)


def _keras_tols(dtype, loose=1e-5):
    return dict(rtol=loose, atol=loose) if dtype == "float32" else dict(rtol=1e-10, atol=1e-10)


def _skip_float64_keras_oracle_on_jax(dtype):
    if dtype == "float64" and keras.backend.backend() == "jax":
        pytest.skip(
            "on JAX, Keras computes float64 in float32 (keras.backend.result_type never returns "
            "float64 there): our float64 is checked against NumPy and numeric gradients instead"
        )


def _pair(rng, shape, axis, groups, dtype="float32", **kwargs):
    """Ours and Keras's, built, with the same random gamma and beta (not 1 and 0)."""
    ours = course_lib.GroupNormalization(groups=groups, axis=axis, dtype=dtype, **kwargs)
    theirs = _KerasGroupNormalization(groups=groups, axis=axis, dtype=dtype, **kwargs)
    ours.build(shape)
    theirs.build(shape)
    for w_ours, w_theirs in zip(ours.weights, theirs.weights):
        value = rng.uniform(0.5, 1.5, size=w_ours.shape).astype(w_ours.dtype)
        w_ours.assign(value)
        w_theirs.assign(value)
    return ours, theirs


def _reference(x, groups, axis, gamma, beta, eps=1e-3):
    """Float64 NumPy group normalization: consecutive channels form a group."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)  # (N, ..., C)
    n, c = x.shape[0], x.shape[-1]
    g = c if groups == -1 else groups
    xg = x.reshape(n, -1, g, c // g)  # (N, positions, G, C/G)
    mean = xg.mean(axis=(1, 3), keepdims=True)
    var = xg.var(axis=(1, 3), keepdims=True)
    y = ((xg - mean) / np.sqrt(var + eps)).reshape(x.shape) * gamma + beta
    return np.moveaxis(y, -1, axis)


def _inputs(rng, shape, dtype="float32"):
    return (rng.normal(size=shape) * 3.0 + 2.0).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,axis,groups", CASES, ids=IDS)
def test_forward_matches_keras_and_numpy(rng, shape, axis, groups, dtype):
    x = _inputs(rng, shape, dtype)
    ours, theirs = _pair(rng, shape, axis, groups, dtype)
    y = np.asarray(ours(x))
    assert y.dtype == dtype
    if dtype == "float32" or keras.backend.backend() != "jax":  # JAX: Keras's float64 is float32
        np.testing.assert_allclose(y, np.asarray(theirs(x)), **_keras_tols(dtype))
    expected = _reference(x, groups, axis, ours.gamma.numpy(), ours.beta.numpy())
    tight = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}
    np.testing.assert_allclose(y, expected, **tight[dtype])
    np.testing.assert_array_equal(np.asarray(ours(x, training=True)), y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "shape,axis,groups", [CASES[i] for i in (0, 3, 4, 5)], ids=[IDS[i] for i in (0, 3, 4, 5)]
)
def test_gradients_match_keras(rng, shape, axis, groups, dtype):
    _skip_float64_keras_oracle_on_jax(dtype)
    x = _inputs(rng, shape, dtype)
    dy = rng.normal(size=shape).astype(dtype)
    ours, theirs = _pair(rng, shape, axis, groups, dtype)
    dx_o, dw_o = layer_gradients(ours, x, dy)
    dx_t, dw_t = layer_gradients(theirs, x, dy)
    np.testing.assert_allclose(dx_o, dx_t, **_keras_tols(dtype, 1e-4))
    assert len(dw_o) == len(dw_t) == 2
    for g_o, g_t in zip(dw_o, dw_t):
        np.testing.assert_allclose(g_o, g_t, **_keras_tols(dtype, 1e-4))


@pytest.mark.parametrize("dtype", ["float64"])
def test_input_gradient_matches_numeric_gradient(rng, dtype):
    shape = (2, 3, 4)
    x = rng.normal(size=shape) + 0.5
    dy = rng.normal(size=shape)
    layer = course_lib.GroupNormalization(groups=2, dtype=dtype)
    layer.build(shape)
    layer.gamma.assign(rng.uniform(0.5, 1.5, size=4))
    dx, _ = layer_gradients(layer, x, dy)
    f = lambda v: float(np.sum(np.asarray(layer(v)) * dy))  # noqa: E731
    np.testing.assert_allclose(dx, numeric_gradient(f, x, 1e-6), rtol=1e-6, atol=1e-8)


def test_groups_minus_one_is_one_group_per_channel(rng):
    x = _inputs(rng, (4, 5, 3, 6))
    minus_one = course_lib.GroupNormalization(groups=-1)
    per_channel = course_lib.GroupNormalization(groups=6)
    np.testing.assert_allclose(np.asarray(minus_one(x)), np.asarray(per_channel(x)), rtol=1e-6)
    assert minus_one.get_config()["groups"] == -1  # unlike Keras, which rewrites it to C


@pytest.mark.parametrize("center,scale", [(False, True), (True, False), (False, False)])
def test_center_and_scale_flags(rng, center, scale):
    x = _inputs(rng, (4, 5, 3, 6))
    ours, theirs = _pair(rng, x.shape, -1, 3, center=center, scale=scale)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(theirs(x)), rtol=1e-5, atol=1e-5)
    assert len(ours.trainable_weights) == len(theirs.trainable_weights) == center + scale


def test_constant_input_gives_beta(rng):
    # -2.5 and 64 values per group: exact sums and mean, even where XLA divides by
    # multiplying with 1 / 64. Otherwise x - mean ~ 1e-7 is amplified by 1 / sqrt(epsilon).
    ours, _ = _pair(rng, (3, 4, 4, 8), -1, 2)
    y = np.asarray(ours(np.full((3, 4, 4, 8), -2.5, "float32")))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, np.broadcast_to(ours.beta.numpy(), y.shape), atol=1e-6)


def test_batch_of_one_and_independence_of_examples(rng):
    x = _inputs(rng, (1, 5, 3, 6))
    ours, theirs = _pair(rng, x.shape, -1, 3)
    y = np.asarray(ours(x))
    np.testing.assert_allclose(y, np.asarray(theirs(x)), rtol=1e-5, atol=1e-5)
    big = np.concatenate([x, _inputs(rng, (3, 5, 3, 6)) * 9.0])
    np.testing.assert_allclose(np.asarray(ours(big))[:1], y, rtol=1e-6, atol=1e-6)


def test_mixed_float16_matches_keras(rng):
    x = (rng.normal(size=(4, 5, 3, 6)) * 50.0).astype("float16")  # squares overflow float16
    ours, theirs = _pair(rng, x.shape, -1, 2, "mixed_float16")
    y = ours(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in ours.weights)
    y = np.asarray(y, dtype="float32")
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, np.asarray(theirs(x), dtype="float32"), atol=1e-2)


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_magnitude_1e6_is_finite_and_correct(rng, offset):
    x = (rng.normal(size=(4, 5, 3, 6)) * 1e6 + offset).astype("float32")
    ours, _ = _pair(rng, x.shape, -1, 3)
    y = np.asarray(ours(x))
    assert np.all(np.isfinite(y))
    expected = _reference(x, 3, -1, ours.gamma.numpy(), ours.beta.numpy())
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_keras_file_round_trip_with_unknown_spatial_sizes(rng, tmp_path):
    gn = course_lib.GroupNormalization(groups=-1, epsilon=1e-2, beta_initializer="ones")
    model = keras.Sequential([keras.Input((None, None, 6)), gn])
    gn.gamma.assign(rng.uniform(0.5, 1.5, size=6).astype("float32"))
    path = tmp_path / "gn.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.layers[0]
    assert type(layer) is course_lib.GroupNormalization
    assert layer.get_config() == gn.get_config()
    for shape in [(2, 5, 3, 6), (3, 4, 7, 6)]:  # any batch and image size
        x = _inputs(rng, shape)
        expected = _reference(x, -1, -1, gn.gamma.numpy(), gn.beta.numpy(), eps=1e-2)
        np.testing.assert_allclose(np.asarray(loaded.predict(x, verbose=0)), expected, atol=1e-5)


def test_config_defaults_match_keras():
    ours = course_lib.GroupNormalization(groups=4, axis=1, gamma_regularizer="l2")
    assert course_lib.GroupNormalization.from_config(ours.get_config()).get_config() == (
        ours.get_config()
    )
    keras_cfg = keras.layers.GroupNormalization().get_config()
    for key, value in course_lib.GroupNormalization().get_config().items():
        if key != "name":
            assert keras_cfg[key] == value, key


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"groups": 0}, "`groups` must be a positive integer, or -1 for one group per channel. "
         "Received: groups=0"),
        ({"groups": -2}, "Received: groups=-2"),
        ({"groups": 2.5}, "Received: groups=2.5"),
        ({"groups": True}, "Received: groups=True"),
        ({"axis": 0}, "`axis` must be an integer other than 0 (the batch axis). Received: axis=0"),
        ({"axis": [1, 2]}, "Received: axis=[1, 2]"),
        ({"epsilon": 0.0}, "`epsilon` must be positive. Received: epsilon=0.0"),
        ({"center": "yes"}, "`center` must be True or False. Received: center='yes'"),
        ({"scale": None}, "Received: scale=None"),
    ],
)
def test_bad_arguments_name_argument_and_value(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        course_lib.GroupNormalization(**kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "groups,shape,fragment",
    [
        (4, (2, 3, 6), "`groups` must divide the channel count. Received: groups=4, channels=6"),
        (12, (2, 3, 6), "Received: groups=12, channels=6"),
        (32, (2, 3, 6), "Received: groups=32, channels=6"),  # the default, on a small layer
    ],
)
def test_groups_must_divide_channels(groups, shape, fragment):
    with pytest.raises(ValueError) as info:
        course_lib.GroupNormalization(groups=groups)(np.zeros(shape, "float32"))
    assert fragment in str(info.value)


def test_axis_out_of_range_names_axis_and_shape():
    with pytest.raises(ValueError, match=r"Received: axis=3, input_shape=\(4, 6\)"):
        course_lib.GroupNormalization(groups=2, axis=3)(np.zeros((4, 6), "float32"))
    with pytest.raises(ValueError, match=r"Received: axis=-2, input_shape=\(4, 6\)"):
        course_lib.GroupNormalization(groups=2, axis=-2)(np.zeros((4, 6), "float32"))


def test_docstring_example():
    result = doctest.testmod(course_lib.group_normalization)
    assert result.attempted > 0 and result.failed == 0
