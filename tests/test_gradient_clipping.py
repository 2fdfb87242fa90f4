"""Adaptive gradient clipping (course_lib.gradient_clipping) against a NumPy transcription of
Brock et al. 2021, Eq. 3, written here independently, and in real Keras training steps."""

import doctest

import keras
import numpy as np
import pytest

import course_lib
import course_lib.gradient_clipping
from course_lib.gradient_clipping import unitwise_norm

# Keras's kernel layouts: the output units are the last axis.
SHAPES = {
    "dense": (5, 3),
    "conv1d": (3, 4, 5),
    "conv2d": (3, 3, 4, 6),
    "bias": (6,),
    "scalar": (),
}


def _numpy_agc(g, w, clipping, eps):
    """Eq. 3, unit by unit with an explicit loop: a unit is one output feature (the last axis)
    of a kernel, the whole tensor for a vector or a scalar."""
    g = np.array(g, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if g.ndim <= 1:
        units = [(Ellipsis,)]
    else:
        units = [(Ellipsis, i) for i in range(g.shape[-1])]
    for unit in units:
        g_norm = np.sqrt(np.sum(g[unit] ** 2))
        w_norm = max(np.sqrt(np.sum(w[unit] ** 2)), eps)
        if g_norm / w_norm > clipping:
            g[unit] = clipping * w_norm / g_norm * g[unit]
    return g


def _case(rng, shape, spread=True):
    """Weights and gradients whose per-unit ratios ||G_i|| / ||W_i|| range from 1e-4 to 1."""
    w = rng.normal(size=shape)
    g = rng.normal(size=shape)
    if spread and len(shape) >= 2:
        g = g / np.sqrt((g**2).sum(axis=tuple(range(len(shape) - 1)), keepdims=True))
        w_norm = np.sqrt((w**2).sum(axis=tuple(range(len(shape) - 1)), keepdims=True))
        g = g * w_norm * np.logspace(-4, 0, shape[-1])
    return w.astype("float32"), g.astype("float32")


@pytest.mark.parametrize("kind", list(SHAPES))
@pytest.mark.parametrize("clipping", [0.01, 0.1])
def test_matches_numpy_reference(rng, kind, clipping):
    w, g = _case(rng, SHAPES[kind])
    if kind in ("bias", "scalar"):
        g = g * 0.5 * clipping  # ||G|| / ||W|| near the threshold, either side by luck
    (got,) = course_lib.adaptive_clip_gradients([g], [w], clipping=clipping, eps=1e-3)
    expected = _numpy_agc(g, w, clipping, 1e-3)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("kind", ["dense", "conv1d", "conv2d"])
def test_some_units_clipped_and_others_untouched(rng, kind):
    """The ratios span 1e-4..1 across units, so lambda = 0.01 splits them: the clipped units
    end exactly on the threshold, the others are returned unchanged (bit for bit)."""
    w, g = _case(rng, SHAPES[kind])
    clipping = 0.01
    (got,) = course_lib.adaptive_clip_gradients([g], [w], clipping=clipping)
    got = np.asarray(got)
    axes = tuple(range(g.ndim - 1))
    ratio = np.sqrt((g.astype("float64") ** 2).sum(axes)) / np.maximum(
        np.sqrt((w.astype("float64") ** 2).sum(axes)), 1e-3)
    clipped = ratio > clipping
    assert clipped.any() and (~clipped).any()
    np.testing.assert_array_equal(got[..., ~clipped], g[..., ~clipped])
    new_ratio = np.sqrt((got.astype("float64") ** 2).sum(axes)) / np.sqrt(
        (w.astype("float64") ** 2).sum(axes))
    np.testing.assert_allclose(new_ratio[clipped], clipping, rtol=1e-5)
    # Only the length changes, not the direction.
    cos = (got * g).sum(axes)[clipped] / np.sqrt((got**2).sum(axes) * (g**2).sum(axes))[clipped]
    np.testing.assert_allclose(cos, 1.0, rtol=1e-5)


@pytest.mark.parametrize("kind", list(SHAPES))
def test_no_clipping_below_the_threshold(rng, kind):
    w, g = _case(rng, SHAPES[kind], spread=False)
    g = g * 1e-6  # every unit far below lambda * ||W_i||
    (got,) = course_lib.adaptive_clip_gradients([g], [w], clipping=0.01)
    np.testing.assert_array_equal(np.asarray(got), g)


def test_eps_floors_the_weight_norm(rng):
    """Zero weights (a fresh bias): the gradient is capped at lambda * eps, not at 0."""
    g = rng.normal(size=(4, 3)).astype("float32")
    w = np.zeros((4, 3), "float32")
    (got,) = course_lib.adaptive_clip_gradients([g], [w], clipping=0.1, eps=1e-2)
    np.testing.assert_allclose(np.sqrt((np.asarray(got) ** 2).sum(0)), 1e-3, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got), _numpy_agc(g, w, 0.1, 1e-2), rtol=1e-5)


def test_unitwise_norm_shapes(rng):
    x = rng.normal(size=(3, 3, 4, 6))
    n = np.asarray(unitwise_norm(x))
    assert n.shape == (1, 1, 1, 6)
    np.testing.assert_allclose(n.ravel(), np.linalg.norm(x.reshape(-1, 6), axis=0))
    assert np.asarray(unitwise_norm(np.array([3.0, 4.0]))).shape == ()
    np.testing.assert_allclose(np.asarray(unitwise_norm(np.array(-2.0))), 2.0)


def test_dtypes_are_kept(rng):
    w, g = _case(rng, (5, 3))
    g64, w64 = g.astype("float64"), w.astype("float64")
    (got,) = course_lib.adaptive_clip_gradients([g64], [w64])
    assert keras.backend.standardize_dtype(got.dtype) == "float64"
    np.testing.assert_allclose(np.asarray(got), _numpy_agc(g64, w64, 0.01, 1e-3), rtol=1e-12)
    (got,) = course_lib.adaptive_clip_gradients([g.astype("float16")], [w])
    assert keras.backend.standardize_dtype(got.dtype) == "float16"


def _two_dense_model(rng, names=("hidden", "head")):
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(3, name=names[0]),
        keras.layers.Dense(2, name=names[1]),
    ])
    for v in model.weights:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    return model


def test_exclude_by_variable_layer_and_path(rng):
    model = _two_dense_model(rng, names=("dense_1", "dense_10"))
    variables = model.trainable_variables
    grads = [np.asarray(v) * 10.0 for v in variables]  # ratio 10: everything clips
    clip = lambda exclude: [  # noqa: E731
        np.asarray(g) for g in course_lib.adaptive_clip_gradients(grads, variables,
                                                                  exclude=exclude)]
    untouched = lambda got: [np.array_equal(a, b) for a, b in zip(got, grads)]  # noqa: E731
    assert untouched(clip(None)) == [False] * 4
    assert untouched(clip([model.layers[1]])) == [False, False, True, True]
    assert untouched(clip(model.layers[1])) == [False, False, True, True]
    assert untouched(clip(["dense_10"])) == [False, False, True, True]
    assert untouched(clip(["dense_1"])) == [True, True, False, False]  # not dense_10
    assert untouched(clip(["dense_10/kernel"])) == [False, False, True, False]
    assert untouched(clip([variables[1]])) == [False, True, False, False]
    got = course_lib.adaptive_clip_gradients([None, grads[1]], variables[:2])
    assert got[0] is None


@pytest.fixture
def _restore_policy():
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


def _numpy_gradients(model_weights, x, t):
    """MSE loss of a two-layer linear network, differentiated by hand."""
    w1, b1, w2, b2 = (np.asarray(v, np.float64) for v in model_weights)
    h = x @ w1 + b1
    y = h @ w2 + b2
    dy = 2.0 * (y - t) / y.size
    dh = dy @ w2.T
    return [x.T @ dh, dh.sum(0), h.T @ dy, dy.sum(0)]


def _data(rng):
    x = rng.normal(size=(8, 4))
    t = rng.normal(size=(8, 2)) * 5.0
    return x, t


@pytest.mark.parametrize("loss_scale_factor", [None, 256.0])
def test_fit_applies_the_clipped_gradients(rng, loss_scale_factor):
    """One SGD step of model.fit: w <- w - lr * AGC(g) for the hidden layer, w - lr * g for
    the excluded final layer, with g the gradient worked out by hand."""
    model = _two_dense_model(rng)
    x, t = _data(rng)
    before = [np.asarray(v, np.float64) for v in model.weights]
    grads = _numpy_gradients(before, x, t)
    lr, clipping = 0.1, 0.01
    optimizer = course_lib.AdaptiveClippingOptimizer(
        keras.optimizers.SGD(lr, loss_scale_factor=loss_scale_factor),
        clipping=clipping, exclude=[model.layers[-1]],
    )
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x.astype("float32"), t.astype("float32"), batch_size=8, epochs=1,
              shuffle=False, verbose=0)
    clipped = [_numpy_agc(grads[0], before[0], clipping, 1e-3),
               _numpy_agc(grads[1], before[1], clipping, 1e-3), grads[2], grads[3]]
    assert not np.allclose(clipped[0], grads[0])  # the hidden layer really was clipped
    assert not np.allclose(clipped[1], grads[1])
    for v, w0, g, name in zip(model.weights, before, clipped, ["W1", "b1", "W2", "b2"]):
        np.testing.assert_allclose(np.asarray(v), w0 - lr * g, rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    assert int(optimizer.iterations.numpy()) == 1
    assert float(np.asarray(optimizer.learning_rate)) == pytest.approx(lr)


def test_large_threshold_is_plain_sgd(rng):
    """With lambda large enough nothing is clipped: the same weights as the bare optimizer."""
    x, t = _data(rng)
    x, t = x.astype("float32"), t.astype("float32")
    results = []
    for wrap in (False, True):
        model = _two_dense_model(np.random.default_rng(7))
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
        if wrap:
            optimizer = course_lib.AdaptiveClippingOptimizer(optimizer, clipping=1e6)
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, t, batch_size=4, epochs=3, shuffle=False, verbose=0)
        results.append([np.asarray(v) for v in model.weights])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_train_on_batch_with_adam_matches_manual_clipping(rng):
    """A stateful inner optimizer (Adam) sees exactly the clipped gradients: compare with an
    Adam fed AGC(g) by hand, over several steps."""
    x, t = _data(rng)
    model = _two_dense_model(np.random.default_rng(3))
    reference_model = _two_dense_model(np.random.default_rng(3))
    model.compile(course_lib.AdaptiveClippingOptimizer(keras.optimizers.Adam(0.01),
                                                       clipping=0.02), loss="mse")
    adam = keras.optimizers.Adam(0.01)
    for _ in range(3):
        grads = _numpy_gradients(reference_model.weights, x, t)
        clipped = [_numpy_agc(g, w, 0.02, 1e-3).astype("float32")
                   for g, w in zip(grads, reference_model.weights)]
        adam.apply(clipped, reference_model.trainable_variables)
        model.train_on_batch(x.astype("float32"), t.astype("float32"))
    for a, b in zip(model.weights, reference_model.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_mixed_precision_is_wrapped_by_loss_scaling(rng, _restore_policy):
    keras.config.set_dtype_policy("mixed_float16")
    model = _two_dense_model(rng)
    x, t = _data(rng)
    model.compile(course_lib.AdaptiveClippingOptimizer(keras.optimizers.SGD(0.1)), loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, course_lib.AdaptiveClippingOptimizer)
    before = [np.asarray(v, np.float64) for v in model.weights]
    model.fit(x.astype("float32"), t.astype("float32"), batch_size=8, epochs=1, verbose=0)
    grads = _numpy_gradients(before, x.astype("float16").astype("float64"), t)
    for v, w0, g in zip(model.weights, before, grads):
        expected = w0 - 0.1 * _numpy_agc(g, w0, 0.01, 1e-3)
        np.testing.assert_allclose(np.asarray(v), expected, rtol=1e-2, atol=1e-3)


def test_keras_file_round_trip(rng, tmp_path):
    x, t = _data(rng)
    x, t = x.astype("float32"), t.astype("float32")
    model = _two_dense_model(rng)
    model.compile(course_lib.AdaptiveClippingOptimizer(
        keras.optimizers.SGD(0.05, momentum=0.9), clipping=0.02, eps=1e-2,
        exclude=[model.layers[-1]]), loss="mse")
    model.fit(x, t, batch_size=4, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "agc.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    optimizer = loaded.optimizer
    assert type(optimizer) is course_lib.AdaptiveClippingOptimizer
    assert optimizer.get_config() == model.optimizer.get_config()
    # Saved as the unambiguous ends of the paths (which lose the model's name on loading).
    assert optimizer.get_config()["exclude"] == ["head/kernel", "head/bias"]
    flags = [course_lib.gradient_clipping._is_excluded(v, optimizer.exclude)
             for v in loaded.trainable_variables]
    assert flags == [False, False, True, True]
    assert int(optimizer.iterations.numpy()) == 2
    for a, b in zip(optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for m in (model, loaded):  # training goes on identically, momentum and exclusion included
        m.fit(x, t, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_exclude_config_before_and_after_build(rng):
    """Unbuilt, an excluded layer is saved by name; built, by the shortest unambiguous ends of
    its variables' paths (a nested layer's `kernel` alone would name every kernel)."""
    model = _two_dense_model(rng)
    optimizer = course_lib.AdaptiveClippingOptimizer(
        keras.optimizers.SGD(), exclude=[model.layers[0], model.layers[1].bias, "x/y"])
    assert optimizer.get_config()["exclude"] == ["hidden", model.layers[1].bias.path, "x/y"]
    optimizer.build(model.trainable_variables)
    assert optimizer.get_config()["exclude"] == ["hidden/kernel", "hidden/bias", "head/bias",
                                                 "x/y"]
    clone = course_lib.AdaptiveClippingOptimizer.from_config(optimizer.get_config())
    flags = [course_lib.gradient_clipping._is_excluded(v, clone.exclude)
             for v in model.trainable_variables]
    assert flags == [True, True, False, True]


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"clipping": 0.0}, "`clipping` must be a positive finite number. Received: clipping=0.0"),
        ({"clipping": -0.01}, "Received: clipping=-0.01"),
        ({"clipping": "0.01"}, "Received: clipping='0.01'"),
        ({"eps": 0}, "`eps` must be a positive finite number. Received: eps=0"),
        ({"eps": float("nan")}, "Received: eps=nan"),
        ({"exclude": [3]}, "3 is none of them. Received: exclude=[3]"),
        ({"exclude": 3}, "Received: exclude=3"),
    ],
)
def test_bad_arguments_name_argument_and_value(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        course_lib.adaptive_clip_gradients([np.ones(2)], [np.ones(2)], **kwargs)
    assert fragment in str(info.value)
    with pytest.raises(ValueError) as info:
        course_lib.AdaptiveClippingOptimizer(keras.optimizers.SGD(), **kwargs)
    assert fragment in str(info.value)


def test_bad_optimizer_and_lengths():
    with pytest.raises(ValueError, match="Received: inner_optimizer='sgd'"):
        course_lib.AdaptiveClippingOptimizer("sgd")
    with pytest.raises(ValueError, match="Received: gradient_accumulation_steps=2"):
        course_lib.AdaptiveClippingOptimizer(
            keras.optimizers.SGD(gradient_accumulation_steps=2))
    with pytest.raises(ValueError, match=r"len\(grads\)=2, len\(variables\)=1"):
        course_lib.adaptive_clip_gradients([np.ones(2), np.ones(2)], [np.ones(2)])


def test_docstring_example():
    result = doctest.testmod(course_lib.gradient_clipping)
    assert result.attempted > 0 and result.failed == 0
