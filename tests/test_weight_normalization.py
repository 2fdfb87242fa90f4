"""course_lib.WeightNormalization against a NumPy reference (w = g * v / ||v||), the wrapped
Keras layer itself (at initialization), and numeric gradients."""

import doctest
import json

import keras
import numpy as np
import pytest
from conftest import layer_gradients

import course_lib
import course_lib.weight_normalization
from course_lib.reference import numeric_gradient


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


def _conv(x, w, strides=1, padding="valid", dilation=1):
    """NumPy channels-last convolution of any rank: x (N, *spatial, C), w (*k, C, F)."""
    rank = w.ndim - 2
    k = np.array(w.shape[:rank])
    eff = (k - 1) * dilation + 1  # the dilated kernel's extent
    if padding == "same":
        total = eff - 1
        x = np.pad(x, [(0, 0)] + [(t // 2, t - t // 2) for t in total] + [(0, 0)])
    elif padding == "causal":
        x = np.pad(x, [(0, 0), (eff[0] - 1, 0), (0, 0)])
    out_sizes = (np.array(x.shape[1:-1]) - eff) // strides + 1
    out = np.zeros((x.shape[0], *out_sizes, w.shape[-1]))
    for offset in np.ndindex(*k):
        index = tuple(
            slice(o * dilation, o * dilation + strides * (n - 1) + 1, strides)
            for o, n in zip(offset, out_sizes)
        )
        out += x[(slice(None),) + index] @ w[offset]
    return out


# name -> (wrapped layer factory, input shape, NumPy linear map)
LAYERS = {
    "dense": (lambda **kw: keras.layers.Dense(3, **kw), (4, 5), lambda x, w: x @ w),
    "dense_rank3": (lambda **kw: keras.layers.Dense(3, **kw), (2, 4, 5), lambda x, w: x @ w),
    "conv1d_causal": (
        lambda **kw: keras.layers.Conv1D(4, 3, padding="causal", dilation_rate=2, **kw),
        (2, 9, 3),
        lambda x, w: _conv(x, w, padding="causal", dilation=2),
    ),
    "conv2d_strided": (
        lambda **kw: keras.layers.Conv2D(4, (3, 2), strides=2, **kw),
        (2, 7, 6, 3),
        lambda x, w: _conv(x, w, strides=2),
    ),
    "conv2d_same": (
        lambda **kw: keras.layers.Conv2D(2, 3, padding="same", **kw),
        (3, 5, 4, 3),
        lambda x, w: _conv(x, w, padding="same"),
    ),
    "conv3d": (
        lambda **kw: keras.layers.Conv3D(2, 2, **kw),
        (2, 4, 3, 5, 2),
        lambda x, w: _conv(x, w),
    ),
}


def _reference(wrapper, x):
    """NumPy: y = x (*) (g * v / ||v||) + b, then the wrapped layer's activation."""
    _, _, linear = LAYERS[wrapper.name]
    v = wrapper.layer.kernel.numpy().astype(np.float64)
    g = wrapper.g.numpy().astype(np.float64)
    norm = np.sqrt((v**2).sum(axis=tuple(range(v.ndim - 1))))
    y = linear(np.asarray(x, np.float64), g * v / norm)
    if wrapper.layer.use_bias:
        y = y + wrapper.layer.bias.numpy()
    return np.asarray(wrapper.layer.activation(y))


def _wrapped(name, rng=None, data_init=False, **kwargs):
    factory, shape, _ = LAYERS[name]
    wrapper = course_lib.WeightNormalization(factory(**kwargs), data_init=data_init, name=name)
    wrapper.build(shape)
    if rng is not None:  # random g and bias, so that neither is at its initial value
        wrapper.g.assign(rng.uniform(0.5, 2.0, size=wrapper.g.shape))
        wrapper.layer.bias.assign(rng.normal(size=wrapper.layer.bias.shape))
    return wrapper, shape


@pytest.mark.parametrize("name", LAYERS)
def test_initially_computes_the_wrapped_layers_function(rng, name):
    wrapper, shape = _wrapped(name, bias_initializer="random_normal", activation="tanh")
    x = rng.normal(size=shape).astype("float32")
    v = wrapper.layer.kernel.numpy()
    norm = np.sqrt((v**2).reshape(-1, v.shape[-1]).sum(axis=0))  # over all axes but the last
    np.testing.assert_allclose(wrapper.g.numpy(), norm, rtol=1e-6)
    # The oracle is Keras's own layer, called with its unnormalized kernel v.
    np.testing.assert_allclose(
        np.asarray(wrapper(x)), np.asarray(wrapper.layer(x)), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", LAYERS)
def test_forward_matches_numpy_reference(rng, name, dtype):
    wrapper, shape = _wrapped(name, rng, activation="relu", dtype=dtype)
    x = rng.normal(size=shape).astype(dtype)
    y = np.asarray(wrapper(x))
    assert y.dtype == dtype
    tols = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-11, atol=1e-11)}
    np.testing.assert_allclose(y, _reference(wrapper, x), **tols[dtype])


@pytest.mark.parametrize("dtype", ["float64"])
@pytest.mark.parametrize("name", ["dense", "conv2d_strided"])
def test_gradients_match_numeric_gradients(rng, name, dtype):
    # No activation: it is Keras's, and on JAX Keras computes tanh & co. of float64 in float32.
    wrapper, shape = _wrapped(name, rng, dtype=dtype)
    x = rng.normal(size=shape)
    dy = rng.normal(size=wrapper.compute_output_shape(shape))
    dx, dws = layer_gradients(wrapper, x, dy)
    loss = lambda v: float(np.sum(np.asarray(wrapper(v)) * dy))  # noqa: E731
    # A central difference with step h is exact to O(h**2) but carries the rounding of the
    # loss's sum, up to eps * sum|y * dy| / (2h), 1.1e-10 * sum|y * dy| here (about 1e-8 for
    # the strided convolution): the absolute tolerance is that bound. How far below it the
    # error lands depends on how the backend orders the sums.
    atol = 1e-10 * max(1.0, float(np.sum(np.abs(np.asarray(wrapper(x)) * dy))))
    np.testing.assert_allclose(dx, numeric_gradient(loss, x, 1e-6), rtol=1e-6, atol=atol)
    assert len(dws) == 3  # v (the kernel), the bias and g
    for variable, dw in zip(wrapper.trainable_weights, dws):
        value = variable.numpy()

        def loss_at(w, variable=variable):
            variable.assign(w)
            return loss(x)

        expected = numeric_gradient(loss_at, value, 1e-6)
        variable.assign(value)
        np.testing.assert_allclose(dw, expected, rtol=1e-6, atol=atol, err_msg=variable.path)
    # The gradient of v is orthogonal to v, unit by unit: g alone sets the length.
    v = wrapper.layer.kernel.numpy()
    dv = dws[[w.path for w in wrapper.trainable_weights].index(wrapper.layer.kernel.path)]
    np.testing.assert_allclose((v * dv).reshape(-1, v.shape[-1]).sum(axis=0), 0.0, atol=1e-10)


@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("name", ["dense", "dense_rank3", "conv2d_strided", "conv2d_same"])
def test_data_dependent_init_standardizes_the_first_batch(rng, name, activation):
    wrapper, shape = _wrapped(name, data_init=True, activation=activation)
    x = (rng.normal(size=shape) * 3.0 + 1.0).astype("float32")
    wrapper(x)  # inference: no initialization
    assert not bool(wrapper.initialized.numpy())
    y = np.asarray(wrapper(x, training=True))
    assert bool(wrapper.initialized.numpy())
    # Recompute the pre-activations with the new g and b: mean 0, std 1 per output unit.
    wrapper.layer.activation = keras.activations.linear
    t = _reference(wrapper, x).reshape(-1, wrapper.g.shape[0])
    np.testing.assert_allclose(t.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(t.std(axis=0), 1.0, atol=1e-4)
    expected = t if activation is None else np.maximum(t, 0.0)
    np.testing.assert_allclose(y.reshape(expected.shape), expected, atol=1e-5)
    # Done once: a second training batch leaves g and b alone.
    g, b = wrapper.g.numpy().copy(), wrapper.layer.bias.numpy().copy()
    wrapper(x * 5.0 - 2.0, training=True)
    np.testing.assert_array_equal(wrapper.g.numpy(), g)
    np.testing.assert_array_equal(wrapper.layer.bias.numpy(), b)


def test_data_dependent_init_on_a_batch_of_one_image(rng):
    wrapper, shape = _wrapped("conv2d_same", data_init=True)
    x = rng.normal(size=(1,) + shape[1:]).astype("float32") + 4.0
    y = np.asarray(wrapper(x, training=True)).reshape(-1, 2)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=0), 1.0, atol=1e-4)


def test_data_init_then_fit(rng):
    """The documented recipe, on every backend: one eager training call, then model.fit."""
    x = rng.normal(size=(16, 5)).astype("float32") * 2.0 + 3.0
    y = rng.normal(size=(16, 1)).astype("float32")
    dense = keras.layers.Dense(4, activation="relu")
    hidden = course_lib.WeightNormalization(dense, data_init=True)
    model = keras.Sequential([keras.Input((5,)), hidden, keras.layers.Dense(1)])
    model(x, training=True)
    g = hidden.g.numpy().copy()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert bool(hidden.initialized.numpy()) and not np.allclose(hidden.g.numpy(), g)


def test_keras_file_round_trip(rng, tmp_path):
    x = rng.normal(size=(3, 6, 5, 2)).astype("float32")
    conv = course_lib.WeightNormalization(keras.layers.Conv2D(4, 3, activation="relu"))
    dense = course_lib.WeightNormalization(keras.layers.Dense(3), data_init=True)
    model = keras.Sequential([keras.Input(x.shape[1:]), conv, keras.layers.Flatten(), dense])
    model(x, training=True)  # data-dependent init of `dense`
    conv.g.assign(rng.uniform(0.5, 2.0, size=4).astype("float32"))
    path = tmp_path / "wn.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    conv2, dense2 = loaded.layers[0], loaded.layers[2]
    assert type(conv2) is type(dense2) is course_lib.WeightNormalization
    assert type(conv2.layer) is keras.layers.Conv2D and type(dense2.layer) is keras.layers.Dense
    as_json = lambda config: json.loads(json.dumps(config))  # noqa: E731 (tuples -> lists)
    assert as_json(dense2.get_config()) == as_json(dense.get_config()) and dense2.data_init
    np.testing.assert_allclose(conv2.g.numpy(), conv.g.numpy())
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    # The saved flag stops a second initialization after loading.
    assert bool(dense2.initialized.numpy())
    g = dense2.g.numpy().copy()
    loaded(x * 3.0, training=True)
    np.testing.assert_array_equal(dense2.g.numpy(), g)


def test_mixed_float16(rng):
    wrapper, shape = _wrapped("conv2d_same", rng, dtype="mixed_float16")
    x = (rng.normal(size=shape) * 100.0).astype("float16")
    y = wrapper(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    y = np.asarray(y, "float32")
    assert np.all(np.isfinite(y))
    expected = _reference(wrapper, x.astype("float32"))
    np.testing.assert_allclose(y, expected, rtol=1e-2, atol=0.5)


@pytest.mark.parametrize("name", ["dense", "conv2d_same"])
def test_magnitude_1e6_and_constant_inputs_stay_finite(rng, name):
    wrapper, shape = _wrapped(name, rng)
    x = (rng.normal(size=shape) * 1e6).astype("float32")
    y = np.asarray(wrapper(x))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, _reference(wrapper, x), rtol=1e-4, atol=1.0)
    # Data-dependent init on a constant batch (zero variance): large but finite values.
    init, _ = _wrapped(name, data_init=True)
    y = np.asarray(init(np.full(shape, 2.0, "float32"), training=True))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(init.g.numpy()))


@pytest.mark.parametrize(
    "layer,kwargs,fragment",
    [
        (lambda: keras.layers.DepthwiseConv2D(3), {}, "`layer` must be a keras.layers.Dense"),
        (lambda: keras.layers.Conv2DTranspose(2, 3), {}, "Received: layer=<Conv2DTranspose"),
        (lambda: "dense", {}, "Received: layer='dense'"),
        (lambda: keras.layers.Dense(2), {"data_init": "yes"}, "Received: data_init='yes'"),
    ],
)
def test_bad_arguments_name_argument_and_value(layer, kwargs, fragment):
    with pytest.raises(ValueError) as info:
        course_lib.WeightNormalization(layer(), **kwargs)
    assert fragment in str(info.value)


def test_docstring_example():
    result = doctest.testmod(course_lib.weight_normalization)
    assert result.attempted > 0 and result.failed == 0
