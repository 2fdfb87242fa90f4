"""The experiments behind the chapters, small enough to run on a laptop CPU.

Chapter 1 repeats the set-up of Figure 1 of Ioffe & Szegedy (2015), shortened: a fully
connected network with three hidden layers of 100 sigmoid units on MNIST, trained with plain
SGD on mini-batches of 60, once without and once with Batch Normalization before each sigmoid.
While it trains we record, every few steps, the test accuracy and the 15th, 50th and 85th
percentiles of the input to one sigmoid unit of the last hidden layer, evaluated on a fixed
batch of test images.

Everything is Keras 3 plus NumPy and deterministic given a seed (two helpers use TensorFlow:
:func:`sgd_fit` feeds its batches with ``tf.data``, which Keras accepts on every backend, and
:func:`gradient_norms` needs the TensorFlow backend):
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
    "minibatch_indices",
    "classification_accuracy",
    "sgd_fit",
    "train_and_record_fast",
    "first_step_reaching",
    "smoothed_accuracy",
    "steps_to_match",
    "percentile_shift",
    "VERDICTS",
    "NORMALIZATIONS",
    "snapshot",
    "train_from",
    "normalization_layer",
    "build_norm_mlp",
    "build_norm_cnn",
    "gradient_norms",
    "RandomShiftScale",
    "build_noisy_bn_mlp",
    "verdict",
    "verdict_rule",
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
    y_train = np.asarray(y_train, dtype="int32")

    rows, losses = [], []

    def record(step):
        pre = keras.ops.convert_to_numpy(probe(probe_images, training=False))[:, unit]
        loss = float(np.mean(losses)) if losses else float("nan")
        rows.append((step, _accuracy(model, x_test, y_test), np.percentile(pre, PERCENTILES), loss))
        losses.clear()

    batches = minibatch_indices(len(x_train), steps, batch_size, seed)
    record(0)
    for step, idx in enumerate(batches, start=1):
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


def minibatch_indices(num_examples, steps, batch_size, seed):
    """The mini-batch order of :func:`train_and_record`, as one ``(steps, batch_size)`` array.

    A NumPy generator seeded with ``seed`` shuffles the training set; mini-batches are taken
    from the shuffle in order, and a fresh shuffle starts when fewer than ``batch_size``
    examples are left (those are skipped, so every batch is full).
    """
    if not 1 <= batch_size <= num_examples:
        raise ValueError(
            "`batch_size` must be between 1 and the number of training examples. "
            f"Received: batch_size={batch_size}, num_examples={num_examples}"
        )
    rng = np.random.default_rng(seed)
    batches = np.empty((steps, batch_size), dtype="int64")
    order, cursor = rng.permutation(num_examples), 0
    for step in range(steps):
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(num_examples), 0
        batches[step] = order[cursor : cursor + batch_size]
        cursor += batch_size
    return batches


def classification_accuracy(model, x, y, batch_size=1000):
    """The fraction of ``x`` that ``model`` (in inference mode) classifies as ``y``."""
    return _accuracy(model, x, np.asarray(y), batch_size=batch_size)


def sgd_fit(
    model,
    x_train,
    y_train,
    *,
    steps,
    batch_size=60,
    learning_rate=0.5,
    record_every=100,
    seed=0,
    on_record=None,
    jit_compile=False,
):
    """Train ``model`` with plain SGD, ``record_every`` steps per compiled call.

    The mini-batches are those of :func:`minibatch_indices` (the order
    :func:`train_and_record` uses), the optimizer is SGD without momentum and the loss the
    softmax cross-entropy on logits, as in :func:`train_and_record`. Only the loop differs:
    ``train_and_record`` calls ``model.train_on_batch`` once per step, a round trip from
    Python for every mini-batch. Here one ``model.fit`` runs all the steps: a ``tf.data``
    pipeline (which Keras accepts on every backend) gathers the mini-batches,
    ``steps_per_execution=record_every`` runs that many steps per compiled call, and between
    two calls ``on_record`` is called. For small networks this is several times faster; the
    results agree with ``train_and_record`` up to float32 rounding.

    Args:
        model: A Keras model that maps inputs to logits; compiled here, trained in place.
        x_train, y_train: Training inputs and integer labels.
        steps: Number of SGD steps.
        batch_size: Mini-batch size.
        learning_rate: SGD learning rate.
        record_every: Steps per compiled call, and between two calls of ``on_record``.
        seed: Seed of the mini-batch order.
        on_record: Optional ``on_record(step, loss)``, called before training with
            ``(0, nan)`` and after every call with the number of steps taken so far and the
            mean training loss of the steps since the previous call.
        jit_compile: Compile the training step with XLA. Off by default: on a small CPU
            network it brings no measurable speed-up, and Keras refuses it (with a warning)
            when TensorFlow's op determinism is enabled.

    Returns:
        ``model``.
    """
    import tensorflow as tf  # only for tf.data, which feeds Keras on any backend

    if record_every < 1:
        raise ValueError(f"`record_every` must be at least 1. Received: record_every={record_every}")
    if steps < 1:
        raise ValueError(f"`steps` must be at least 1. Received: steps={steps}")
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=record_every,
        jit_compile=jit_compile,
    )
    batches = minibatch_indices(len(x_train), steps, batch_size, seed)
    x_all = tf.constant(np.asarray(x_train))
    y_all = tf.constant(np.asarray(y_train, dtype="int32"))
    dataset = (
        tf.data.Dataset.from_tensor_slices(batches)
        .map(lambda idx: (tf.gather(x_all, idx), tf.gather(y_all, idx)))
        .prefetch(4)
    )
    report = on_record if on_record is not None else (lambda step, loss: None)

    class Recorder(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            # The optimizer counts the steps actually taken (the last call may run fewer).
            step = int(self.model.optimizer.iterations.numpy())
            report(step, float(logs["loss"]))
            self.model.reset_metrics()  # the next "loss" is the mean over the next call only

    report(0, float("nan"))
    model.fit(dataset, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0,
              callbacks=[Recorder()])
    return model


def train_and_record_fast(
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
    jit_compile=False,
):
    """:func:`train_and_record` on the faster loop of :func:`sgd_fit`.

    Same arguments, mini-batches, optimizer, loss and recordings as :func:`train_and_record`;
    ``record_every`` steps run per compiled call.

    Returns:
        A :class:`TrainingRecord`.
    """
    if probe_images is None:
        probe_images = x_test[:1000]
    probe = pre_activation_model(model)
    rows = []

    def record(step, loss):
        pre = keras.ops.convert_to_numpy(probe(probe_images, training=False))[:, unit]
        rows.append((step, _accuracy(model, x_test, y_test), np.percentile(pre, PERCENTILES), loss))

    sgd_fit(model, x_train, y_train, steps=steps, batch_size=batch_size,
            learning_rate=learning_rate, record_every=record_every, seed=seed,
            on_record=record, jit_compile=jit_compile)
    steps_, acc, pct, loss = zip(*rows)
    return TrainingRecord(
        steps=np.array(steps_),
        test_accuracy=np.array(acc),
        percentiles=np.array(pct),
        train_loss=np.array(loss),
    )

def first_step_reaching(record, accuracy):
    """The first recorded step at which the test accuracy is at least ``accuracy``, or None."""
    reached = np.flatnonzero(np.asarray(record.test_accuracy) >= accuracy)
    return int(record.steps[reached[0]]) if len(reached) else None


# --- Chapters 6 to 8 and the claims ledger: sweeps over small models, measured cheaply. ------
#
# A sweep trains the *same* compiled model many times from a saved state (weights, moving
# statistics, random-generator states), changing only the learning rate, the batch size or the
# initial weights. Keras then traces its training step once per model instead of once per run.

VERDICTS = ("holds", "holds with caveats", "does not hold")
NORMALIZATIONS = ("none", "bn", "brn", "gn", "ln", "ws+gn")


def snapshot(model):
    """Copies of every variable of ``model``: weights, moving statistics, seed-generator states.

    ``model.get_weights()`` would miss the states of the random generators of ``Dropout`` (and
    of any layer that draws random numbers), so a run restarted from it would not repeat.
    """
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.variables]


def train_from(model, state, x, y, *, learning_rate, epochs, batch_size, seed=0):
    """Restore ``state`` (from :func:`snapshot`), then train ``model`` with ``model.fit``.

    The optimizer's own variables (iteration count, momenta) are reset to zero and its learning
    rate set to ``learning_rate``, so every call starts from the same point; the compiled
    training step is reused. ``keras.utils.set_random_seed(seed)`` fixes the shuffling.

    Args:
        model: A compiled ``keras.Model`` (with a loss; any optimizer).
        state: The list returned by :func:`snapshot` for this model.
        x, y: Training inputs and integer labels.
        learning_rate: The optimizer's learning rate for this run.
        epochs: Passes over ``x``.
        batch_size: Mini-batch size.
        seed: Seed of the shuffling (and of dropout masks drawn from the global generator).

    Returns:
        ``(epochs,)`` float array: the mean training loss of each epoch (NaN once it diverged).
    """
    if not getattr(model, "compiled", False):
        raise ValueError(f"`model` must be compiled first. Received: model={model.name!r}")
    if len(state) != len(model.variables):
        raise ValueError(
            "`state` must hold one array per model variable. "
            f"Received: {len(state)} arrays for {len(model.variables)} variables"
        )
    for variable, value in zip(model.variables, state):
        variable.assign(value)
    for variable in model.optimizer.variables:
        variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
    model.optimizer.learning_rate.assign(learning_rate)
    keras.utils.set_random_seed(seed)
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    return np.array(history.history["loss"], dtype=float)


def normalization_layer(kind, name, *, groups=4, momentum=0.99, ln_axis=-1):
    """The normalization layer that ``kind`` names (one of :data:`NORMALIZATIONS` but "none").

    ``"bn"``: ``BatchNormalization``; ``"brn"``: ``BatchRenormalization`` with the paper's
    clipping ``rmax=3, rmin=1/3, dmax=5`` (and ``renorm_momentum=momentum``); ``"gn"`` and ``"ws+gn"``: ``GroupNormalization``
    (``"ws+gn"`` also swaps the convolutions for ``WSConv2D`` in :func:`build_norm_cnn`);
    ``"ln"``: ``LayerNormalization`` over ``ln_axis`` (``[1, 2, 3]`` for images: every axis
    but the batch).
    """
    import course_lib

    if kind == "bn":
        return course_lib.BatchNormalization(momentum=momentum, name=name)
    if kind == "brn":
        clipping = {"rmax": 3.0, "rmin": 1.0 / 3.0, "dmax": 5.0}
        return course_lib.BatchRenormalization(
            momentum=momentum, renorm_momentum=momentum, renorm_clipping=clipping, name=name)
    if kind in ("gn", "ws+gn"):
        return course_lib.GroupNormalization(groups=groups, name=name)
    if kind == "ln":
        return course_lib.LayerNormalization(axis=ln_axis, name=name)
    raise ValueError(
        f"`kind` must be one of {NORMALIZATIONS[1:]}. Received: kind={kind!r}"
    )


def build_norm_mlp(normalization="bn", *, hidden_layers=3, units=100, activation="relu",
                   dropout=0.0, groups=4, momentum=0.99, num_classes=10, input_dim=784, seed=0):
    """A fully connected classifier with a choice of normalization before each activation.

    Each hidden layer is ``Dense -> [normalization] -> activation [-> Dropout]``; the dense
    layer has no bias when a normalization follows (its ``beta`` takes the bias's role). Layers
    are named ``dense_i``, ``norm_i``, ``<activation>_i``, ``dropout_i`` and ``logits``.

    Args:
        normalization: ``"none"`` or a kind of :func:`normalization_layer` except ``"ws+gn"``.
        hidden_layers, units, activation: Depth, width and nonlinearity of the hidden layers.
        dropout: If positive, a ``Dropout`` of this rate after every hidden activation, the
            usual place. With BN, every dropout but the last then feeds a ``Dense -> BN``:
            the order whose "variance shift" chapter 6 measures.
        groups: Groups of ``"gn"``.
        momentum: Momentum of the moving statistics of ``"bn"`` and ``"brn"``.
        num_classes, input_dim: Output logits and input length.
        seed: Seed of the initial weights.

    Returns:
        An uncompiled ``keras.Model`` named ``mlp_<normalization>``.
    """
    if normalization not in NORMALIZATIONS or normalization == "ws+gn":
        raise ValueError(
            f"`normalization` must be one of {tuple(k for k in NORMALIZATIONS if k != 'ws+gn')}. "
            f"Received: normalization={normalization!r}"
        )
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(input_dim,), name="images")
    h = inputs
    for i in range(1, hidden_layers + 1):
        h = keras.layers.Dense(units, use_bias=normalization == "none", name=f"dense_{i}")(h)
        if normalization != "none":
            h = normalization_layer(normalization, f"norm_{i}", groups=groups,
                                    momentum=momentum)(h)
        h = keras.layers.Activation(activation, name=f"{activation}_{i}")(h)
        if dropout:
            h = keras.layers.Dropout(dropout, seed=seed + i, name=f"dropout_{i}")(h)
    outputs = keras.layers.Dense(num_classes, name="logits")(h)
    return keras.Model(inputs, outputs, name=f"mlp_{normalization}")


def build_norm_cnn(normalization="bn", *, filters=(8, 16), groups=4, momentum=0.99,
                   num_classes=10, seed=0):
    """A small convolutional classifier for 28 x 28 x 1 images, one normalization per block.

    Each block is ``Conv2D 3x3 (no bias) -> normalization -> ReLU -> MaxPooling 2x2``; then
    ``Flatten -> Dense`` logits. With ``"ws+gn"`` the convolutions are ``WSConv2D`` (Weight
    Standardization) followed by ``GroupNormalization``; with ``"none"`` they keep their bias.

    Args:
        normalization: One of :data:`NORMALIZATIONS`.
        filters: Filters of each block.
        groups: Groups of ``"gn"`` and ``"ws+gn"``; must divide every entry of ``filters``.
        momentum: Momentum of the moving statistics of ``"bn"`` and ``"brn"``.
        num_classes: Output logits.
        seed: Seed of the initial weights.

    Returns:
        An uncompiled ``keras.Model`` named ``cnn_<normalization>`` (``+`` written ``_``).
    """
    import course_lib

    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be one of {NORMALIZATIONS}. Received: normalization={normalization!r}"
        )
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(28, 28, 1), name="images")
    h = inputs
    conv = course_lib.WSConv2D if normalization == "ws+gn" else keras.layers.Conv2D
    for i, f in enumerate(filters, start=1):
        h = conv(f, 3, use_bias=normalization == "none", name=f"conv_{i}")(h)
        if normalization != "none":
            h = normalization_layer(normalization, f"norm_{i}", groups=groups,
                                    momentum=momentum, ln_axis=[1, 2, 3])(h)
        h = keras.layers.Activation("relu", name=f"relu_{i}")(h)
        h = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    outputs = keras.layers.Dense(num_classes, name="logits")(h)
    return keras.Model(inputs, outputs, name=f"cnn_{normalization.replace('+', '_')}")


def gradient_norms(model, x, y):
    """Euclidean norm of the loss gradient for each ``Dense``/``Conv`` kernel, in training mode.

    The loss is the mean softmax cross-entropy of the logits ``model(x, training=True)``
    against ``y``. The forward pass in training mode would move BN's moving statistics; they
    (and every other non-trainable variable) are restored afterwards, so measuring does not
    change the model. TensorFlow backend (``tf.GradientTape``).

    Returns:
        ``(layers,)`` float array, in the order of ``model.layers``.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"gradient_norms needs the TensorFlow backend. Received: backend={keras.backend.backend()!r}"
        )
    import tensorflow as tf

    kernels = [layer.kernel for layer in model.layers
               if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))]
    saved = [np.array(keras.ops.convert_to_numpy(v)) for v in model.non_trainable_variables]
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(np.asarray(y), model(x, training=True))
    grads = tape.gradient(loss, kernels)
    for variable, value in zip(model.non_trainable_variables, saved):
        variable.assign(value)
    return np.array([float(np.linalg.norm(keras.ops.convert_to_numpy(g))) for g in grads])


@keras.saving.register_keras_serializable(package="course_lib")
class RandomShiftScale(keras.layers.Layer):
    """Santurkar et al.'s "noisy BN": a random per-feature scale and shift, new at every step.

    In training, every call draws for each feature ``j`` (the last axis) a scale and a shift,
    the same for every example of the batch, so the distribution of each feature moves at
    every step; at inference the layer is the identity:

    ```
    training:   s_j ~ Uniform(scale_range), b_j ~ Normal(0, shift_stddev**2);  y = s * x + b
    inference:  y = x
    ```

    Placed after Batch Normalization it re-creates, on purpose, an "internal covariate shift"
    larger than a network without BN has.

    Args:
        shift_stddev: Standard deviation of the shifts.
        scale_range: ``(low, high)`` of the uniform scales, ``0 < low <= high``.
        seed: Optional integer seed of the layer's random generator.

    Reference:
        Santurkar, Tsipras, Ilyas & Madry, "How Does Batch Normalization Help Optimization?",
        NeurIPS 2018, section 2.1. https://arxiv.org/abs/1805.11604

    >>> layer = RandomShiftScale(shift_stddev=1.0, scale_range=(0.5, 2.0), seed=0)
    >>> x = np.ones((3, 2), dtype="float32")
    >>> bool(np.all(np.asarray(layer(x, training=False)) == x))
    True
    """

    def __init__(self, shift_stddev=1.0, scale_range=(0.5, 2.0), seed=None, **kwargs):
        super().__init__(**kwargs)
        if not shift_stddev >= 0:
            raise ValueError(f"`shift_stddev` must be >= 0. Received: shift_stddev={shift_stddev!r}")
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(
                f"`scale_range` must be (low, high) with 0 < low <= high. Received: scale_range={scale_range!r}"
            )
        self.shift_stddev = float(shift_stddev)
        self.scale_range = (float(low), float(high))
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        shape = (1,) * (len(inputs.shape) - 1) + (inputs.shape[-1],)
        low, high = self.scale_range
        scale = keras.random.uniform(shape, low, high, seed=self.seed_generator)
        shift = keras.random.normal(shape, stddev=self.shift_stddev, seed=self.seed_generator)
        return inputs * keras.ops.cast(scale, inputs.dtype) + keras.ops.cast(shift, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {"shift_stddev": self.shift_stddev, "scale_range": list(self.scale_range),
                  "seed": self.seed}
        return {**super().get_config(), **config}


def build_noisy_bn_mlp(*, shift_stddev=1.0, scale_range=(0.25, 4.0), hidden_layers=3, units=100,
                       seed=0):
    """:func:`build_mlp` with BN, plus a :class:`RandomShiftScale` after every BN layer.

    Same layer names as ``build_mlp(batch_norm=True)`` (``noise_i`` added), so
    :func:`pre_activation_model` works on it, and the same initial weights for the same seed.
    """
    from course_lib.batch_normalization import BatchNormalization

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(784,), name="images")
    h = inputs
    for i in range(1, hidden_layers + 1):
        h = keras.layers.Dense(units, use_bias=False, name=f"dense_{i}")(h)
        h = BatchNormalization(name=f"batch_norm_{i}")(h)
        h = RandomShiftScale(shift_stddev, scale_range, seed=seed + i, name=f"noise_{i}")(h)
        h = keras.layers.Activation("sigmoid", name=f"sigmoid_{i}")(h)
    outputs = keras.layers.Dense(10, name="logits")(h)
    return keras.Model(inputs, outputs, name="mlp_with_noisy_bn")


def verdict(value, *, holds, caveats, higher_holds=True):
    """The claims ledger's rule: compare a measured number with two thresholds.

    With ``higher_holds=True``: ``"holds"`` if ``value >= holds``, ``"holds with caveats"`` if
    ``caveats <= value < holds``, ``"does not hold"`` otherwise (also for NaN). With
    ``higher_holds=False`` the comparisons are mirrored (``value <= holds`` holds).

    >>> verdict(12.0, holds=3.0, caveats=1.5), verdict(2.0, holds=3.0, caveats=1.5)
    ('holds', 'holds with caveats')
    """
    if higher_holds and not holds >= caveats or not higher_holds and not holds <= caveats:
        raise ValueError(
            "`holds` must be the stricter threshold. "
            f"Received: holds={holds}, caveats={caveats}, higher_holds={higher_holds}"
        )
    sign = 1.0 if higher_holds else -1.0
    value = float(value)
    if np.isnan(value):
        return VERDICTS[2]
    if sign * value >= sign * holds:
        return VERDICTS[0]
    if sign * value >= sign * caveats:
        return VERDICTS[1]
    return VERDICTS[2]


def verdict_rule(quantity, *, holds, caveats, higher_holds=True, fmt="{:g}"):
    """The rule of :func:`verdict` in words, for the ledger: one sentence, thresholds filled in."""
    at_least, below = ("≥", "<") if higher_holds else ("≤", ">")
    h, c = fmt.format(holds), fmt.format(caveats)
    if holds == caveats:  # no "with caveats" band
        return f"holds if {quantity} {at_least} {h}; does not hold if {below} {h}"
    return (f"holds if {quantity} {at_least} {h}; with caveats if {at_least} {c}; "
            f"does not hold if {below} {c}")


def smoothed_accuracy(record, window):
    """The test accuracy averaged over the last ``window`` recordings up to each recording.

    A trailing (causal) mean: entry ``i`` averages recordings ``max(0, i - window + 1)..i``,
    so it uses nothing recorded after step ``record.steps[i]``. ``window=1`` is the raw curve.
    """
    if window < 1:
        raise ValueError(f"`window` must be at least 1. Received: window={window}")
    acc = np.asarray(record.test_accuracy, dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(acc)])
    ends = np.arange(1, len(acc) + 1)
    starts = np.maximum(0, ends - window)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def steps_to_match(baseline, other, window=1):
    """For every recording of ``baseline``: when did ``other`` first reach its accuracy?

    Both curves are smoothed with :func:`smoothed_accuracy` first. For each recorded step
    ``s > 0`` of ``baseline`` the target is the baseline's smoothed accuracy at ``s``, and
    the answer is the first recorded step ``t > 0`` at which the smoothed accuracy of
    ``other`` is at least the target (NaN if it never is). ``s / t`` is then how many times
    fewer steps ``other`` needed to match the baseline trained for ``s`` steps; the paper's
    "14 times fewer steps" is this ratio at the baseline's last step.

    Returns:
        ``(horizons, steps)``: the baseline's recorded steps ``s > 0`` and, for each, ``t``
        as a float array with NaN where ``other`` never reached the target.
    """
    base_steps = np.asarray(baseline.steps)
    base = smoothed_accuracy(baseline, window)
    other_steps = np.asarray(other.steps)
    acc = smoothed_accuracy(other, window)
    later = other_steps > 0
    other_steps, acc = other_steps[later], acc[later]
    horizons = base_steps[base_steps > 0]
    targets = base[base_steps > 0]
    steps = np.full(len(horizons), np.nan)
    for i, target in enumerate(targets):
        reached = np.flatnonzero(acc >= target)
        if len(reached):
            steps[i] = other_steps[reached[0]]
    return horizons, steps
