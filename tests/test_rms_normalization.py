"""course_lib.RMSNormalization against its oracles: keras.layers.RMSNormalization, the NumPy
reference (course_lib.reference.rms_norm_forward/backward, itself checked against numeric
gradients here) and float64 numeric gradients of the layer."""

import doctest

import keras
import numpy as np
import pytest
from conftest import layer_gradients, with_training_argument

import course_lib
import course_lib.rms_normalization
from course_lib import reference
from course_lib.reference import numeric_gradient, relative_error

# Every dimension differs, so a wrong reshape or reduction axis cannot pass by accident.
SHAPE = (5, 4, 3, 6)
AXES = [-1, 1, [1, 2], [1, 2, 3], [-1, -3], [-2, -1]]
EPS = 1e-6

pytestmark = pytest.mark.usefixtures("jax_float64")  # conftest.py

# The oracle (conftest.with_training_argument: unchanged but for `training`).
_KerasRMSNormalization = with_training_argument(keras.layers.RMSNormalization)


def _axes(axis):
    return axis if isinstance(axis, list) else [axis]


def _built(rng, shape, dtype="float32", **kwargs):
    """Ours, built, with a random scale (not ones)."""
    layer = course_lib.RMSNormalization(dtype=dtype, **kwargs)
    layer.build(shape)
    layer.scale.assign(rng.uniform(0.5, 1.5, size=layer.scale.shape).astype(layer.scale.dtype))
    return layer


def _tols(dtype):
    return {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}[dtype]


# --- The NumPy reference itself ------------------------------------------------------------


@pytest.mark.parametrize("axis", [-1, 0, [1, 2], (0, 2)])
def test_reference_forward_matches_definition(rng, axis):
    x = rng.normal(size=(4, 3, 5)) * 2.0 + 0.5
    axes = tuple(sorted(a % 3 for a in _axes(list(axis) if isinstance(axis, tuple) else axis)))
    scale = rng.uniform(0.5, 1.5, size=[x.shape[a] for a in axes])
    y, rms = reference.rms_norm_forward(x, scale, eps=1e-3, axis=axis)
    # Independently: move the normalized axes last and flatten them.
    rest = [a for a in range(3) if a not in axes]
    flat = np.transpose(x, rest + list(axes)).reshape(np.prod([x.shape[a] for a in rest]), -1)
    expected = flat / np.sqrt(np.mean(flat**2, axis=1, keepdims=True) + 1e-3) * scale.ravel()
    got = np.transpose(y, rest + list(axes)).reshape(flat.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert rms.shape == tuple(1 if a in axes else n for a, n in enumerate(x.shape))


@pytest.mark.parametrize("axis", [-1, 1, [1, 2], [0, 2]])
def test_reference_backward_matches_numeric_gradient(rng, axis):
    x = rng.normal(size=(3, 4, 5)) + 0.3
    axes = sorted(a % 3 for a in _axes(axis))
    scale = rng.uniform(0.5, 1.5, size=[x.shape[a] for a in axes])
    dy = rng.normal(size=x.shape)
    eps = 1e-3
    dx, dscale = reference.rms_norm_backward(dy, x, scale, eps=eps, axis=axis)
    assert dx.shape == x.shape and dscale.shape == scale.shape

    def loss_x(v):
        return np.sum(reference.rms_norm_forward(v, scale, eps, axis)[0] * dy)

    def loss_scale(s):
        return np.sum(reference.rms_norm_forward(x, s, eps, axis)[0] * dy)

    assert relative_error(dx, numeric_gradient(loss_x, x)) <= 1e-7
    assert relative_error(dscale, numeric_gradient(loss_scale, scale)) <= 1e-7


# --- The layer -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis", AXES)
def test_forward_matches_numpy_reference(rng, axis, dtype):
    x = (rng.normal(size=SHAPE) * 3.0 + 1.0).astype(dtype)
    layer = _built(rng, SHAPE, dtype, axis=axis)
    y = np.asarray(layer(x))
    assert y.dtype == dtype
    expected, _ = reference.rms_norm_forward(x.astype("float64"), layer.scale.numpy(), EPS, axis)
    np.testing.assert_allclose(y, expected, **_tols(dtype))
    # Training makes no difference: no batch statistics.
    np.testing.assert_allclose(np.asarray(layer(x, training=True)), y, **_tols(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis", AXES)
def test_gradients_match_numpy_reference(rng, axis, dtype):
    x = (rng.normal(size=SHAPE) * 2.0 + 0.5).astype(dtype)
    dy = rng.normal(size=SHAPE).astype(dtype)
    layer = _built(rng, SHAPE, dtype, axis=axis)
    dx, (dscale,) = layer_gradients(layer, x, dy)
    expected_dx, expected_dscale = reference.rms_norm_backward(
        dy.astype("float64"), x.astype("float64"), layer.scale.numpy().astype("float64"),
        EPS, axis,
    )
    tols = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-12)}
    np.testing.assert_allclose(dx, expected_dx, **tols[dtype])
    np.testing.assert_allclose(dscale, expected_dscale, **tols[dtype])


@pytest.mark.parametrize("dtype", ["float64"])
def test_input_gradient_matches_numeric_gradient(rng, dtype):
    shape = (2, 3, 4)
    x = rng.normal(size=shape) + 0.5
    dy = rng.normal(size=shape)
    layer = _built(rng, shape, dtype, axis=[1, 2], epsilon=1e-3)
    dx, _ = layer_gradients(layer, x, dy)
    f = lambda v: float(np.sum(np.asarray(layer(v)) * dy))  # noqa: E731
    np.testing.assert_allclose(dx, numeric_gradient(f, x, 1e-6), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("axis", [-1, [-2, -1], [1, 2, 3]])  # Keras: trailing axes only
def test_forward_and_gradients_match_keras(rng, axis):
    x = (rng.normal(size=SHAPE) + 1.5).astype("float32")
    dy = rng.normal(size=SHAPE).astype("float32")
    ours = _built(rng, SHAPE, axis=axis, epsilon=1e-4)
    theirs = _KerasRMSNormalization(axis=axis, epsilon=1e-4)
    theirs.build(SHAPE)
    assert ours.scale.shape == theirs.scale.shape and ours.scale.path.endswith("/scale")
    theirs.scale.assign(ours.scale.numpy())
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(theirs(x)), rtol=1e-5, atol=1e-5)
    dx_o, (ds_o,) = layer_gradients(ours, x, dy)
    dx_t, (ds_t,) = layer_gradients(theirs, x, dy)
    np.testing.assert_allclose(dx_o, dx_t, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ds_o, ds_t, rtol=1e-4, atol=1e-4)


def test_keras_docstring_example_and_defaults():
    """Keras's own expected output for arange(10) with the default epsilon 1e-6."""
    y = np.asarray(course_lib.RMSNormalization()(np.arange(10, dtype="float32")[None]))
    expected = np.arange(10) / np.sqrt(np.mean(np.arange(10.0) ** 2) + 1e-6)
    np.testing.assert_allclose(y[0], expected, rtol=1e-6)
    np.testing.assert_allclose(y[0, 1], 0.18731716, rtol=1e-6)


def test_negative_axis_follows_the_rank_of_each_call(rng):
    """Keras's own test builds on rank 3 and calls on rank 4: axis=-1 is still the last axis."""
    layer = course_lib.RMSNormalization(axis=-1)
    layer.build((2, 2, 5))
    x = rng.normal(size=(7, 2, 2, 5)).astype("float32")
    expected, _ = reference.rms_norm_forward(x.astype("float64"), np.ones(5), EPS, -1)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-6)


def test_a_call_where_the_axes_have_other_sizes_names_axis(rng):
    """Keras fails in a broadcast there; ours says which argument and which shapes."""
    layer = course_lib.RMSNormalization(axis=-1)
    layer.build((2, 3, 4))
    with pytest.raises(ValueError, match=r"Received: axis=-1, input_shape=\(2, 3, 4, 5\)"):
        layer(np.zeros((2, 3, 4, 5), "float32"))


def test_zero_input_is_finite(rng):
    layer = _built(rng, (3, 6))
    x = np.zeros((3, 6), "float32")
    np.testing.assert_array_equal(np.asarray(layer(x)), 0.0)
    dx, (ds,) = layer_gradients(layer, x, rng.normal(size=(3, 6)).astype("float32"))
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(ds))


def test_batch_of_one_and_scale_invariance(rng):
    x = rng.normal(size=(1, 7, 6)).astype("float32")
    layer = _built(rng, (None, 7, 6))
    y = np.asarray(layer(x))
    big = np.concatenate([x, rng.normal(size=(3, 7, 6)).astype("float32") * 9.0])
    np.testing.assert_allclose(np.asarray(layer(big))[:1], y, rtol=1e-6, atol=1e-6)
    # RMSNorm(c * x) = RMSNorm(x) for c > 0 (up to epsilon), and it is odd: RMSNorm(-x) = -y.
    np.testing.assert_allclose(np.asarray(layer(x * 50.0)), y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(layer(-x)), -y, rtol=1e-6, atol=1e-7)


def test_mixed_float16(rng):
    """Squares of 400 overflow float16 (> 65504): computed in float32, output float16."""
    x = (rng.normal(size=SHAPE) * 400.0).astype("float16")
    layer = _built(rng, SHAPE, "mixed_float16", axis=[2, 3])
    assert keras.backend.standardize_dtype(layer.scale.dtype) == "float32"
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    y = np.asarray(y, dtype="float32")
    assert np.all(np.isfinite(y))
    expected, _ = reference.rms_norm_forward(x.astype("float64"), layer.scale.numpy(), EPS,
                                             [2, 3])
    np.testing.assert_allclose(y, expected, rtol=2e-3, atol=2e-3)
    theirs = _KerasRMSNormalization(axis=[2, 3], dtype="mixed_float16")
    theirs.build(SHAPE)
    theirs.scale.assign(layer.scale.numpy())
    np.testing.assert_allclose(y, np.asarray(theirs(x), dtype="float32"), rtol=2e-3, atol=2e-3)


def test_mask_is_passed_on_and_changes_nothing(rng):
    """Each position is normalized over its own features, so padding cannot leak in; the
    mask flows on to the next layer (Keras's RMSNormalization would drop it)."""
    tokens = np.array([[3, 1, 4, 0, 0], [2, 7, 1, 8, 0]])
    inputs = keras.Input((5,), dtype="int32")
    embedded = keras.layers.Embedding(10, 6, mask_zero=True)(inputs)
    normalized = course_lib.RMSNormalization()(embedded)
    pooled = keras.layers.GlobalAveragePooling1D()(normalized)
    model = keras.Model(inputs, [normalized, pooled])
    y, p = (np.asarray(t) for t in model(tokens))
    mask = tokens != 0
    expected = np.stack([y[i][mask[i]].mean(axis=0) for i in range(2)])
    np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-6)  # the mask reached pooling
    layer = model.layers[2]
    e = model.layers[1](tokens)
    np.testing.assert_allclose(np.asarray(layer(e, mask=mask)), y, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(layer.compute_mask(e, mask)), mask)


def test_keras_file_round_trip(rng, tmp_path):
    x = rng.normal(size=SHAPE).astype("float32")
    layer = course_lib.RMSNormalization(axis=[1, 3], epsilon=1e-4)
    model = keras.Sequential([keras.Input(SHAPE[1:]), layer])
    layer.scale.assign(rng.normal(size=layer.scale.shape).astype("float32"))
    path = tmp_path / "rms.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    restored = loaded.layers[0]
    assert type(restored) is course_lib.RMSNormalization
    assert restored.get_config() == layer.get_config()
    np.testing.assert_array_equal(restored.scale.numpy(), layer.scale.numpy())
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)


def test_config_matches_keras():
    ours = course_lib.RMSNormalization(axis=[1, 2], epsilon=1e-5)
    assert course_lib.RMSNormalization.from_config(ours.get_config()).get_config() == (
        ours.get_config()
    )
    keras_cfg = keras.layers.RMSNormalization().get_config()
    ours_cfg = course_lib.RMSNormalization().get_config()
    assert set(ours_cfg) == set(keras_cfg)
    for key, value in ours_cfg.items():
        if key != "name":
            assert keras_cfg[key] == value, key
    # Building does not rewrite `axis` (Keras's build turns -1 into [-1]).
    layer = course_lib.RMSNormalization(axis=-1)
    layer.build((2, 3))
    assert layer.get_config()["axis"] == -1


def test_a_saved_keras_config_loads_into_ours():
    config = keras.layers.RMSNormalization(axis=[-2, -1], epsilon=1e-5).get_config()
    layer = course_lib.RMSNormalization.from_config(config)
    assert layer.axis == [-2, -1] and layer.epsilon == 1e-5


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"axis": 1.5}, "Received: axis=1.5"),
        ({"axis": []},
         "`axis` must be an integer or a non-empty list of integers. Received: axis=[]"),
        ({"axis": [1, "a"]}, "Received: axis=[1, 'a']"),
        ({"axis": True}, "Received: axis=True"),
        ({"epsilon": 0.0}, "`epsilon` must be a positive finite number. Received: epsilon=0.0"),
        ({"epsilon": -1e-3}, "Received: epsilon=-0.001"),
        ({"epsilon": None}, "Received: epsilon=None"),
        ({"epsilon": "1e-6"}, "Received: epsilon='1e-6'"),
        ({"epsilon": float("inf")}, "Received: epsilon=inf"),
    ],
)
def test_bad_arguments_name_argument_and_value(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        course_lib.RMSNormalization(**kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "axis,fragment",
    [(3, r"Received: axis=3, input_shape=\(4, 5\)"), ([1, -1], r"twice. Received: axis=\[1, -1\]")],
)
def test_bad_axis_for_the_input(axis, fragment):
    with pytest.raises(ValueError, match=fragment):
        course_lib.RMSNormalization(axis=axis)(np.zeros((4, 5), "float32"))


def test_docstring_example():
    result = doctest.testmod(course_lib.rms_normalization)
    assert result.attempted > 0 and result.failed == 0
