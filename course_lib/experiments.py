"""The experiments behind the chapters, small enough to run on a laptop CPU.

Chapter 1 repeats the set-up of Figure 1 of Ioffe & Szegedy (2015), shortened: a fully
connected network with three hidden layers of 100 sigmoid units on MNIST, trained with plain
SGD on mini-batches of 60, once without and once with Batch Normalization before each sigmoid.
While it trains we record, every few steps, the test accuracy and the 15th, 50th and 85th
percentiles of the input to one sigmoid unit of the last hidden layer, evaluated on a fixed
batch of test images.

Everything is Keras 3 plus NumPy (no backend-specific code) and deterministic given a seed:
``keras.utils.set_random_seed`` fixes the initial weights and a NumPy generator seeded with
the same value fixes the order of the mini-batches.

>>> import course_lib
>>> from course_lib import experiments
>>> (x_train, y_train), (x_test, y_test) = course_lib.load_mnist()
>>> x_train, x_test = experiments.flatten_images(x_train), experiments.flatten_images(x_test)
>>> model = experiments.build_mlp(batch_norm=True, seed=0)
>>> record = experiments.train_and_record(
...     model, x_train, y_train, x_test, y_test, steps=100, record_every=50, seed=0)
>>> record.steps
array([  0,  50, 100])
"""

import dataclasses

import keras
import numpy as np

__all__ = [
    "PERCENTILES",
    "TrainingRecord",
    "flatten_images",
    "build_mlp",
    "pre_activation_model",
    "train_and_record",
    "percentile_shift",
]

# The percentiles of Figure 1(b, c) of the paper.
PERCENTILES = (15, 50, 85)


@dataclasses.dataclass
class TrainingRecord:
    """What :func:`train_and_record` measured, one row per recording.

    Attributes:
        steps: ``(r,)`` int array, the number of SGD steps taken at each recording (starts at 0).
        test_accuracy: ``(r,)`` float array, the fraction of test images classified correctly.
        percentiles: ``(r, len(PERCENTILES))`` float array, the percentiles of the input to the
            watched sigmoid unit over the fixed batch of test images.
        train_loss: ``(r,)`` float array, the mean training loss of the steps since the previous
            recording (NaN at step 0).
    """

    steps: np.ndarray
    test_accuracy: np.ndarray
    percentiles: np.ndarray
    train_loss: np.ndarray


def flatten_images(images):
    """``uint8`` images ``(n, 28, 28)`` -> ``float32`` vectors ``(n, 784)`` scaled to [0, 1]."""
    images = np.asarray(images)
    return images.reshape(len(images), -1).astype("float32") / 255.0


def build_mlp(batch_norm, *, hidden_layers=3, units=100, num_classes=10, input_dim=784, seed=0):
    """The fully connected sigmoid network of the paper's Figure 1, with or without BN.

    Each hidden layer is ``Dense -> [BatchNormalization] -> sigmoid``. With BN the dense
    layer has no bias: BN subtracts the batch mean, which would cancel it, and BN's ``beta``
    takes its role. The output layer gives logits (no softmax; the loss applies it).

    Layers are named so that they can be found again: ``dense_1``..., ``batch_norm_1``...,
    ``sigmoid_1``..., ``logits``. The batch-norm layers are ``course_lib.BatchNormalization``.

    Args:
        batch_norm: If True, insert Batch Normalization before every sigmoid.
        hidden_layers: Number of hidden layers.
        units: Sigmoid units per hidden layer.
        num_classes: Number of output logits.
        input_dim: Length of an input vector.
        seed: Seed of the initial weights (``keras.utils.set_random_seed``).

    Returns:
        An uncompiled ``keras.Model``.
    """
    from course_lib.batch_normalization import BatchNormalization

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(input_dim,), name="images")
    h = inputs
    for i in range(1, hidden_layers + 1):
        h = keras.layers.Dense(units, use_bias=not batch_norm, name=f"dense_{i}")(h)
        if batch_norm:
            h = BatchNormalization(name=f"batch_norm_{i}")(h)
        h = keras.layers.Activation("sigmoid", name=f"sigmoid_{i}")(h)
    outputs = keras.layers.Dense(num_classes, name="logits")(h)
    name = "mlp_with_bn" if batch_norm else "mlp_without_bn"
    return keras.Model(inputs, outputs, name=name)


def pre_activation_model(model, layer=None):
    """A model that maps images to the inputs of the sigmoid units of one hidden layer.

    It shares its weights with ``model``, so it always sees the current state of training.
    Call it with ``training=False``: a BN network then normalizes with its moving
    statistics, exactly as it does when it classifies test images.

    Args:
        model: A model from :func:`build_mlp`.
        layer: Which hidden layer (1-based); the last one by default.
    """
    if layer is None:
        layer = sum(1 for lay in model.layers if lay.name.startswith("sigmoid_"))
    sigmoid = model.get_layer(f"sigmoid_{layer}")
    return keras.Model(model.input, sigmoid.input, name=f"{model.name}_pre_sigmoid_{layer}")


def _accuracy(model, x, y, batch_size=1000):
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = keras.ops.convert_to_numpy(model(x[start : start + batch_size], training=False))
        correct += int(np.sum(np.argmax(logits, axis=1) == y[start : start + batch_size]))
    return correct / len(x)


def train_and_record(
    model,
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    steps,
    batch_size=60,
    learning_rate=0.5,
    record_every=100,
    probe_images=None,
    unit=0,
    seed=0,
):
    """Train ``model`` with SGD and record test accuracy and sigmoid-input percentiles.

    Mini-batches are drawn without replacement from a fresh shuffle of the training set each
    epoch (NumPy generator seeded with ``seed``); one step is one ``model.train_on_batch``
    with plain SGD (no momentum) on the softmax cross-entropy loss. At step 0 and every
    ``record_every`` steps (and after the last step) it records, with the model in inference
    mode, the test accuracy and the :data:`PERCENTILES` of the input to sigmoid unit ``unit``
    of the last hidden layer over ``probe_images``.

    Args:
        model: A model from :func:`build_mlp`; it is compiled here and trained in place.
        x_train, y_train: Training vectors ``(n, d)`` and integer labels ``(n,)``.
        x_test, y_test: Test vectors and labels for the accuracy.
        steps: Number of SGD steps.
        batch_size: Mini-batch size (60 in the paper).
        learning_rate: SGD learning rate.
        record_every: Steps between two recordings.
        probe_images: The fixed batch whose sigmoid inputs are recorded; by default the
            first 1000 test vectors.
        unit: Index of the watched sigmoid unit in the last hidden layer.
        seed: Seed of the mini-batch order.

    Returns:
        A :class:`TrainingRecord`.
    """
    if record_every < 1:
        raise ValueError(f"`record_every` must be at least 1. Received: record_every={record_every}")
    if probe_images is None:
        probe_images = x_test[:1000]
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    probe = pre_activation_model(model)
    rng = np.random.default_rng(seed)
    y_train = np.asarray(y_train, dtype="int32")

    rows, losses = [], []

    def record(step):
        pre = keras.ops.convert_to_numpy(probe(probe_images, training=False))[:, unit]
        loss = float(np.mean(losses)) if losses else float("nan")
        rows.append((step, _accuracy(model, x_test, y_test), np.percentile(pre, PERCENTILES), loss))
        losses.clear()

    order, cursor = rng.permutation(len(x_train)), 0
    record(0)
    for step in range(1, steps + 1):
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(x_train)), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        losses.append(float(model.train_on_batch(x_train[idx], y_train[idx])))
        if step % record_every == 0 or step == steps:
            record(step)

    steps_, acc, pct, loss = zip(*rows)
    return TrainingRecord(
        steps=np.array(steps_),
        test_accuracy=np.array(acc),
        percentiles=np.array(pct),
        train_loss=np.array(loss),
    )


def percentile_shift(record, start, window):
    """How far each recorded percentile moved between an early window and the end of training.

    Averaging over a window of recordings smooths out the step-to-step noise of the
    mini-batches, so the result measures a drift, not a jitter.

    Args:
        record: A :class:`TrainingRecord`.
        start: First step of the early window ``start <= step < start + window``.
        window: Width of both windows in steps; the late window is the last ``window``
            steps, ``step > last_step - window``.

    Returns:
        ``(len(PERCENTILES),)`` array: the mean of each percentile over the late window minus
        its mean over the early window.
    """
    steps = record.steps
    early = (steps >= start) & (steps < start + window)
    late = steps > steps[-1] - window
    if not early.any() or start + window > steps[-1] - window:
        raise ValueError(
            "The early window must hold recordings and end before the late one starts. "
            f"Received: start={start}, window={window}, last step={steps[-1]}"
        )
    return record.percentiles[late].mean(axis=0) - record.percentiles[early].mean(axis=0)
