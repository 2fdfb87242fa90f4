"""course_lib.fixup against NumPy references: the scalar layers, the initialization rule (by
sampling), and the residual block (forward, gradients, identity at initialization)."""

import doctest

import keras
import numpy as np
import pytest
from conftest import layer_gradients

import course_lib
import course_lib.fixup
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


def _conv2d_same(x, w):
    """NumPy channels-last 2-D convolution, stride 1, 'same' padding: x (N,H,W,C), w (k,k,C,F)."""
    kh, kw = w.shape[:2]
    x = np.pad(x, [(0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)])
    oh, ow = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    return sum(x[:, i : i + oh, j : j + ow] @ w[i, j] for i in range(kh) for j in range(kw))


def _reference(block, x):
    """y = relu(x + bias2b + scale * conv2(bias2a + relu(bias1b + conv1(bias1a + x))))."""
    s = {w.path.split("/")[-2]: w.numpy().astype(np.float64) for w in block.weights}
    x = np.asarray(x, np.float64)
    out = _conv2d_same(x + s["bias1a"], s["conv1"])
    out = np.maximum(out + s["bias1b"], 0.0)
    out = _conv2d_same(out + s["bias2a"], s["conv2"]) * s["scale"] + s["bias2b"]
    return np.maximum(x + out, 0.0)


def _randomized_block(rng, shape, dtype="float32", **kwargs):
    """A built block with every weight moved off its initial value (conv2 is zero at first)."""
    block = course_lib.FixupResidualBlock(num_residual_branches=4, dtype=dtype, **kwargs)
    block.build(shape)
    for w in block.weights:
        w.assign((rng.normal(size=w.shape) * 0.3 + (1.0 if w.shape == () else 0.0)).astype(w.dtype))
    return block


def test_scalar_layers_against_numpy(rng):
    x = rng.normal(size=(3, 4, 5)).astype("float32")
    bias, mult = course_lib.ScalarBias(), course_lib.ScalarMultiplier()
    np.testing.assert_array_equal(np.asarray(bias(x)), x)  # initialized to 0
    np.testing.assert_array_equal(np.asarray(mult(x)), x)  # initialized to 1
    assert bias.scalar.shape == mult.scalar.shape == () and bias.scalar.trainable
    bias.scalar.assign(0.75)
    mult.scalar.assign(-2.0)
    np.testing.assert_allclose(np.asarray(bias(x)), x + 0.75, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(mult(x)), x * -2.0, rtol=1e-6)
    dy = rng.normal(size=x.shape).astype("float32")
    dx, (db,) = layer_gradients(bias, x, dy)
    np.testing.assert_allclose(dx, dy, rtol=1e-6)
    np.testing.assert_allclose(db, dy.sum(), rtol=1e-4)
    dx, (dm,) = layer_gradients(mult, x, dy)
    np.testing.assert_allclose(dx, -2.0 * dy, rtol=1e-6)
    np.testing.assert_allclose(dm, (x * dy).sum(), rtol=1e-4)


@pytest.mark.parametrize("branches,layers", [(1, 2), (16, 2), (8, 3), (100, 4)])
def test_initializer_scales_he_by_the_fixup_rule(branches, layers):
    """Sampled std = sqrt(2 / fan_in) * L ** (-1 / (2m - 2)), within sampling tolerance."""
    shape = (3, 3, 32, 64)  # fan_in = 288; 18432 samples: the std is known to about 1 %
    init = course_lib.fixup_initializer(branches, layers, seed=7)
    sample = np.asarray(init(shape))
    expected = np.sqrt(2.0 / 288) * branches ** (-1.0 / (2 * layers - 2))
    assert abs(sample.std() / expected - 1.0) < 0.04
    assert abs(sample.mean()) < 4 * expected / np.sqrt(sample.size)


def test_initializer_is_serializable():
    init = course_lib.fixup_initializer(9, 3, seed=1)
    clone = keras.initializers.deserialize(keras.initializers.serialize(init))
    np.testing.assert_array_equal(np.asarray(clone((4, 5))), np.asarray(init((4, 5))))


def test_block_starts_as_identity_then_relu(rng):
    x = rng.normal(size=(3, 6, 5, 4)).astype("float32")
    block = course_lib.FixupResidualBlock(num_residual_branches=10)
    np.testing.assert_array_equal(np.asarray(block(x)), np.maximum(x, 0.0))
    np.testing.assert_array_equal(block.conv2.kernel.numpy(), 0.0)  # last layer of the branch
    for name in ("bias1a", "bias1b", "bias2a", "bias2b"):
        assert float(getattr(block, name).scalar.numpy()) == 0.0
    assert float(block.scale.scalar.numpy()) == 1.0


@pytest.mark.parametrize("branches", [1, 25])
def test_block_inner_layer_std_follows_the_rule(branches):
    """conv1 of a block in a network of L branches (m = 2): He std times L ** (-1/2)."""
    block = course_lib.FixupResidualBlock(num_residual_branches=branches, seed=3)
    block.build((1, 8, 8, 48))
    kernel = block.conv1.kernel.numpy()  # (3, 3, 48, 48): 20736 samples
    expected = np.sqrt(2.0 / (3 * 3 * 48)) / np.sqrt(branches)
    assert abs(kernel.std() / expected - 1.0) < 0.04


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "kernel_size,shape", [(3, (2, 6, 5, 4)), (2, (3, 5, 4, 3)), (1, (1, 4, 3, 5))]
)
def test_block_forward_matches_numpy_reference(rng, kernel_size, shape, dtype):
    block = _randomized_block(rng, shape, dtype, kernel_size=kernel_size)
    x = rng.normal(size=shape).astype(dtype)
    y = np.asarray(block(x))
    assert y.dtype == dtype and y.shape == shape
    tols = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}
    np.testing.assert_allclose(y, _reference(block, x), **tols[dtype])


@pytest.mark.parametrize("dtype", ["float64"])
def test_block_gradients_match_numeric_gradients(rng, dtype):
    shape = (2, 4, 3, 2)
    block = _randomized_block(rng, shape, dtype)
    x = rng.normal(size=shape)
    dy = rng.normal(size=shape)
    dx, dws = layer_gradients(block, x, dy)
    loss = lambda v: float(np.sum(np.asarray(block(v)) * dy))  # noqa: E731
    np.testing.assert_allclose(dx, numeric_gradient(loss, x, 1e-6), rtol=1e-6, atol=1e-9)
    assert len(dws) == 7  # 4 biases, 2 kernels, 1 multiplier
    for variable, dw in zip(block.trainable_weights, dws):
        value = variable.numpy()

        def loss_at(w, variable=variable):
            variable.assign(w)
            return loss(x)

        expected = numeric_gradient(loss_at, value, 1e-6)
        variable.assign(value)
        np.testing.assert_allclose(dw, expected, rtol=1e-6, atol=1e-8, err_msg=variable.path)


def test_block_extreme_inputs_stay_finite(rng):
    block = _randomized_block(rng, (1, 5, 4, 3))
    for x in (np.full((1, 5, 4, 3), 2.5, "float32"), rng.normal(size=(1, 5, 4, 3)) * 1e6):
        x = np.asarray(x, "float32")
        y = np.asarray(block(x))
        assert np.all(np.isfinite(y))
        np.testing.assert_allclose(y, _reference(block, x), rtol=1e-4, atol=1e-4 * np.abs(x).max())
    half = course_lib.FixupResidualBlock(num_residual_branches=4, dtype="mixed_float16")
    x = (rng.normal(size=(2, 5, 4, 3)) * 100.0).astype("float16")
    y = half(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    np.testing.assert_array_equal(np.asarray(y), np.maximum(x, 0))  # identity + relu at init


def test_stack_of_blocks_trains_and_round_trips(rng, tmp_path):
    shape = (4, 6, 5, 3)
    blocks = 3
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input(shape[1:])]
        + [course_lib.FixupResidualBlock(blocks, name=f"block{i}") for i in range(blocks)]
        + [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1, kernel_initializer="zeros")]
    )
    x = rng.normal(size=shape).astype("float32")
    y = rng.normal(size=(4, 1)).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    history = model.fit(x, y, batch_size=2, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert not np.allclose(model.layers[0].conv2.kernel.numpy(), 0.0)  # it learned
    path = tmp_path / "fixup.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[0]) is course_lib.FixupResidualBlock
    assert loaded.layers[1].get_config() == model.layers[1].get_config()
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    bias = course_lib.ScalarBias(initializer="ones", regularizer="l2")
    assert course_lib.ScalarBias.from_config(bias.get_config()).get_config() == bias.get_config()


@pytest.mark.parametrize(
    "call,fragment",
    [
        (
            lambda: course_lib.fixup_initializer(0, 2),
            "`num_residual_branches` must be an integer >= 1. Received: num_residual_branches=0",
        ),
        (
            lambda: course_lib.fixup_initializer(4, 1),
            "`layers_per_branch` must be an integer >= 2. Received: layers_per_branch=1",
        ),
        (lambda: course_lib.fixup_initializer(2.5, 2), "Received: num_residual_branches=2.5"),
        (lambda: course_lib.FixupResidualBlock(-3), "Received: num_residual_branches=-3"),
        (
            lambda: course_lib.FixupResidualBlock(4, kernel_size=0),
            "`kernel_size` must be an integer >= 1. Received: kernel_size=0",
        ),
        (
            lambda: course_lib.FixupResidualBlock(4)(np.zeros((2, 3), "float32")),
            "Received: input_shape=(2, 3)",
        ),
    ],
)
def test_bad_arguments_name_argument_and_value(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value)


def test_docstring_examples():
    result = doctest.testmod(course_lib.fixup)
    assert result.attempted > 0 and result.failed == 0
