"""course_lib.WSConv2D against a NumPy reference (standardize the kernel, then convolve) and
numeric gradients, alone and followed by course_lib.GroupNormalization."""

import doctest

import keras
import numpy as np
import pytest
from conftest import layer_gradients

import course_lib
import course_lib.weight_standardization
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


def _conv2d(x, w, strides=1, padding="valid"):
    """NumPy channels-last 2-D cross-correlation (as Keras): x (N,H,W,C), w (kh,kw,C,F)."""
    kh, kw = w.shape[:2]
    if padding == "same":
        x = np.pad(x, [(0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)])
    oh, ow = (x.shape[1] - kh) // strides + 1, (x.shape[2] - kw) // strides + 1
    out = np.zeros((x.shape[0], oh, ow, w.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + strides * (oh - 1) + 1, strides)
            cols = slice(j, j + strides * (ow - 1) + 1, strides)
            out += x[:, rows, cols] @ w[i, j]
    return out


def _standardize(w, eps=1e-5):
    """Per output channel (last axis): zero mean, unit (biased) variance over (kh, kw, in)."""
    w = np.asarray(w, np.float64)
    mean = w.mean(axis=(0, 1, 2), keepdims=True)
    var = w.var(axis=(0, 1, 2), keepdims=True)
    return (w - mean) / np.sqrt(var + eps)


def _reference(conv, x):
    y = _conv2d(np.asarray(x, np.float64), _standardize(conv.kernel.numpy(), conv.epsilon),
                conv.strides[0], conv.padding)  # fmt: skip
    if conv.use_bias:
        y = y + conv.bias.numpy()
    return y


CASES = [  # (Conv2D arguments, input shape); every dimension differs
    (dict(filters=4, kernel_size=3), (2, 7, 6, 3)),
    (dict(filters=5, kernel_size=(3, 2), strides=2), (3, 9, 8, 2)),
    (dict(filters=2, kernel_size=3, padding="same"), (2, 5, 6, 4)),
    (dict(filters=3, kernel_size=1), (2, 4, 5, 6)),
]
IDS = ["3x3", "3x2-stride2", "same", "1x1"]


def _layer(rng, kwargs, shape, dtype="float32", **extra):
    conv = course_lib.WSConv2D(**kwargs, dtype=dtype, **extra)
    conv.build(shape)
    conv.bias.assign(rng.normal(size=conv.bias.shape).astype(conv.bias.dtype))
    # A kernel far from standardized: an offset and a different scale per filter.
    kernel = rng.normal(size=conv.kernel.shape) * rng.uniform(0.1, 3.0, conv.kernel.shape[-1])
    conv.kernel.assign((kernel + rng.normal(size=conv.kernel.shape[-1])).astype(conv.kernel.dtype))
    return conv


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kwargs,shape", CASES, ids=IDS)
def test_forward_matches_numpy_reference(rng, kwargs, shape, dtype):
    conv = _layer(rng, kwargs, shape, dtype)
    kernel = conv.kernel.numpy().copy()
    x = rng.normal(size=shape).astype(dtype)
    y = np.asarray(conv(x))
    assert y.dtype == dtype
    tols = {"float32": dict(rtol=1e-4, atol=1e-4), "float64": dict(rtol=1e-11, atol=1e-11)}
    np.testing.assert_allclose(y, _reference(conv, x), **tols[dtype])
    np.testing.assert_array_equal(conv.kernel.numpy(), kernel)  # the stored kernel is untouched


def test_standardized_kernel_statistics(rng):
    conv = _layer(rng, dict(filters=6, kernel_size=3), (1, 5, 5, 4))
    w = np.asarray(conv.standardized_kernel()).reshape(-1, 6)
    var = conv.kernel.numpy().reshape(-1, 6).var(axis=0)
    np.testing.assert_allclose(w.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(w.var(axis=0), var / (var + conv.epsilon), rtol=1e-5)


def test_output_ignores_the_offset_and_scale_of_each_filter(rng):
    """Property of the method, independent of the code: W and a * W + b give the same conv."""
    conv = _layer(rng, dict(filters=3, kernel_size=3), (2, 6, 5, 4), epsilon=1e-12)
    x = rng.normal(size=(2, 6, 5, 4)).astype("float32")
    y = np.asarray(conv(x))
    kernel = conv.kernel.numpy()
    conv.kernel.assign(kernel * np.array([0.5, 4.0, 20.0], "float32") + np.float32(3.0))
    np.testing.assert_allclose(np.asarray(conv(x)), y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float64"])
@pytest.mark.parametrize("kwargs,shape", [CASES[0], CASES[1]], ids=IDS[:2])
def test_gradients_match_numeric_gradients(rng, kwargs, shape, dtype):
    conv = _layer(rng, dict(kwargs, filters=2), shape, dtype)
    x = rng.normal(size=shape)
    dy = rng.normal(size=conv.compute_output_shape(shape))
    dx, (dkernel, dbias) = layer_gradients(conv, x, dy)
    loss = lambda v: float(np.sum(np.asarray(conv(v)) * dy))  # noqa: E731
    np.testing.assert_allclose(dx, numeric_gradient(loss, x, 1e-6), rtol=1e-6, atol=1e-9)
    kernel = conv.kernel.numpy()

    def loss_at(w):
        conv.kernel.assign(w)
        return loss(x)

    expected = numeric_gradient(loss_at, kernel, 1e-6)
    conv.kernel.assign(kernel)
    np.testing.assert_allclose(dkernel, expected, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(dbias, dy.sum(axis=(0, 1, 2)), rtol=1e-10)
    # Shifting a filter by a constant changes nothing, so its gradient sums to zero.
    np.testing.assert_allclose(dkernel.reshape(-1, 2).sum(axis=0), 0.0, atol=1e-9)


def _ws_gn_model(shape):
    return keras.Sequential(
        [
            keras.Input(shape[1:]),
            course_lib.WSConv2D(8, 3, padding="same", use_bias=False),
            course_lib.GroupNormalization(groups=4),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1),
        ]
    )


def test_ws_conv_then_group_normalization(rng, tmp_path):
    """The intended use: WS + GN, trained with micro-batches, saved and loaded."""
    shape = (2, 6, 5, 3)
    keras.utils.set_random_seed(0)
    model = _ws_gn_model(shape)
    conv, gn = model.layers[0], model.layers[1]
    x = rng.normal(size=shape).astype("float32")
    # Forward against NumPy: standardized conv, then group norm over (H, W, 2 channels).
    z = _reference(conv, x)
    zg = z.reshape(2, -1, 4, 2)
    mean, var = zg.mean(axis=(1, 3), keepdims=True), zg.var(axis=(1, 3), keepdims=True)
    zn = (zg - mean) / np.sqrt(var + 1e-3)
    features = keras.Model(model.inputs, model.layers[1].output)
    np.testing.assert_allclose(np.asarray(features(x)), zn.reshape(z.shape), rtol=1e-4, atol=1e-4)
    # A few steps with batches of 2 train without trouble.
    y = rng.normal(size=(8, 1)).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    history = model.fit(np.repeat(x, 4, axis=0), y, batch_size=2, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    path = tmp_path / "ws_gn.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[0]) is course_lib.WSConv2D
    assert loaded.layers[0].get_config() == conv.get_config()
    assert type(loaded.layers[1]) is course_lib.GroupNormalization
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_constant_input_and_batch_of_one_give_the_bias(rng):
    """Each standardized filter sums to zero: a constant image maps to the bias (valid padding)."""
    conv = _layer(rng, dict(filters=4, kernel_size=3), (1, 5, 6, 3))
    y = np.asarray(conv(np.full((1, 5, 6, 3), 7.0, "float32")))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, np.broadcast_to(conv.bias.numpy(), y.shape), atol=1e-4)


def test_mixed_float16_and_magnitude_1e6(rng):
    conv = _layer(rng, dict(filters=4, kernel_size=3), (2, 6, 5, 3), dtype="mixed_float16")
    x = (rng.normal(size=(2, 6, 5, 3)) * 10.0).astype("float16")
    y = conv(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    y = np.asarray(y, "float32")
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, _reference(conv, x), rtol=1e-2, atol=0.1)
    big = _layer(rng, dict(filters=4, kernel_size=3), (2, 6, 5, 3))
    x = (rng.normal(size=(2, 6, 5, 3)) * 1e6).astype("float32")
    y = np.asarray(big(x))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, _reference(big, x), rtol=1e-4, atol=1.0)


@pytest.mark.parametrize("epsilon", [0.0, -1e-5, "small", True])
def test_bad_epsilon_names_argument_and_value(epsilon):
    with pytest.raises(ValueError) as info:
        course_lib.WSConv2D(4, 3, epsilon=epsilon)
    assert f"`epsilon` must be positive. Received: epsilon={epsilon!r}" in str(info.value)


def test_conv2d_arguments_are_still_checked():
    with pytest.raises(ValueError, match="filters"):
        course_lib.WSConv2D(-1, 3)


def test_docstring_example():
    result = doctest.testmod(course_lib.weight_standardization)
    assert result.attempted > 0 and result.failed == 0
