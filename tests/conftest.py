"""Shared test set-up: quiet TensorFlow, and backend-neutral gradient helpers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# float64 tests must really run in float64 on the JAX backend too (JAX defaults to float32).
os.environ.setdefault("JAX_ENABLE_X64", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def layer_gradients(layer, x, dy, training=True):
    """d(sum(layer(x) * dy)) with respect to x and each trainable weight, on any backend.

    Returns ``(dx, [dw for w in layer.trainable_weights])`` as NumPy arrays. The layer must be
    built already.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=training)
            loss = tf.reduce_sum(tf.cast(y, tf.float64) * tf.cast(dy, tf.float64))
        grads = tape.gradient(loss, [xt] + list(layer.trainable_weights))
        return np.asarray(grads[0]), [np.asarray(g) for g in grads[1:]]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(xv, tv):
            y, _ = layer.stateless_call(tv, non_trainable, xv, training=training)
            return jnp.sum(y.astype(jnp.float64 if y.dtype == jnp.float64 else jnp.float32) * dy)

        dx, dw = jax.grad(loss, argnums=(0, 1))(jnp.asarray(x), trainable)
        return np.asarray(dx), [np.asarray(g) for g in dw]
    pytest.skip(f"no gradient helper for backend {backend}")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def jax_float64(request):
    """JAX silently computes float64 in float32 unless x64 is on: on for a test parametrized
    with "float64" (a test module opts in with ``pytest.mark.usefixtures("jax_float64")``)."""
    params = getattr(request.node, "callspec", None)
    wants_64 = params is not None and "float64" in params.params.values()
    import keras

    if wants_64 and keras.backend.backend() == "jax":
        import jax

        with jax.enable_x64(True):
            yield
    else:
        yield


def with_training_argument(layer_class):
    """A Keras layer class, unchanged but for a ``training`` argument to ``call``: on JAX,
    :func:`layer_gradients` passes one to ``stateless_call``, which Keras's own ``call`` of a
    normalization layer without one would refuse. Used to make Keras's layers oracles."""

    class Oracle(layer_class):
        def call(self, inputs, training=None):
            return super().call(inputs)

    Oracle.__name__ = Oracle.__qualname__ = f"_{layer_class.__name__}"
    return Oracle


# The order in which `make test` hands out its test files. It runs pytest-xdist with
# `--dist loadfile --no-loadscope-reorder`: each file goes to one worker, in this order, and
# every worker holds two files at a time: the first three files go to the three workers, the
# next three become their second files. A worker's second file waits until its first is done,
# so the book build's (the longest) is a file of a few seconds; the JAX child follows the Colab
# stand-in, and the rest are handed out as workers free up.
LONGEST_FIRST = (
    "test_book.py",           # the book build (8-14 minutes under make test), then the page checks
    "test_problem_sets.py",   # nbgrader: release and autograde each set (12-20 minutes)
    "test_colab.py",          # a fresh environment, then the notebooks in it
    "test_pages.py",          # seconds: the book worker's second file
    "test_execute_chapters.py",  # seconds
    "test_jax_backend.py",    # every layer test again, on JAX, in one child process
    "test_grading_pipeline.py",
    "test_grading_adversarial.py",
    "test_keras_suites.py",
    "test_class_view.py",
    "test_grading_postgres.py",
    "test_lab.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files keep their order
