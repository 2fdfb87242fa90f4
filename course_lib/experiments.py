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
    "TimeVaryingNoise",
    "build_santurkar_noisy_bn_mlp",
    "build_santurkar_noisy_bn_mlp_replicas",
    "replica_gradient_norms",
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
    warm-up, :class:`course_lib.RenormClippingSchedule` (plain BN for the first 5,000 training
    steps, then the clipping relaxed towards ``rmax=3, dmax=5``; Ioffe 2017, section 4.1), and
    ``renorm_momentum=momentum``; ``"gn"`` and ``"ws+gn"``: ``GroupNormalization``
    (``"ws+gn"`` also swaps the convolutions for ``WSConv2D`` in :func:`build_norm_cnn`);
    ``"ln"``: ``LayerNormalization`` over ``ln_axis`` (``[1, 2, 3]`` for images: every axis
    but the batch).
    """
    import course_lib

    if kind == "bn":
        return course_lib.BatchNormalization(momentum=momentum, name=name)
    if kind == "brn":
        return course_lib.BatchRenormalization(
            momentum=momentum, renorm_momentum=momentum,
            renorm_clipping=course_lib.RenormClippingSchedule(), name=name)
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


class _TrainingNoise(keras.layers.Layer):
    """Base of the noise layers below: identity at inference, ``_noisy(inputs)`` in training,
    one seeded random generator, the seed in the config."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        return self._noisy(inputs) if training else inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="course_lib")
class RandomShiftScale(_TrainingNoise):
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
        super().__init__(seed=seed, **kwargs)
        if not shift_stddev >= 0:
            raise ValueError(f"`shift_stddev` must be >= 0. Received: shift_stddev={shift_stddev!r}")
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(
                f"`scale_range` must be (low, high) with 0 < low <= high. Received: scale_range={scale_range!r}"
            )
        self.shift_stddev = float(shift_stddev)
        self.scale_range = (float(low), float(high))

    def _noisy(self, inputs):
        shape = (1,) * (len(inputs.shape) - 1) + (inputs.shape[-1],)
        low, high = self.scale_range
        scale = keras.random.uniform(shape, low, high, seed=self.seed_generator)
        shift = keras.random.normal(shape, stddev=self.shift_stddev, seed=self.seed_generator)
        return inputs * keras.ops.cast(scale, inputs.dtype) + keras.ops.cast(shift, inputs.dtype)

    def get_config(self):
        return {**super().get_config(), "shift_stddev": self.shift_stddev,
                "scale_range": list(self.scale_range)}


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


# --- Chapter 6: noisy BN as Santurkar et al. published it, and gradients per replica. --------


@keras.saving.register_keras_serializable(package="course_lib")
class TimeVaryingNoise(_TrainingNoise):
    """The noise of Santurkar et al.'s "noisy BN": i.i.d. per example and activation, with a
    mean and a variance that are themselves redrawn at every training step.

    In training, every call first draws, for each feature ``j`` (every axis but the batch
    axis), the noise's mean ``m_j`` and standard deviation ``s_j``; then every activation of
    every example gets its own noise from ``N(m_j, s_j**2)``. At inference the layer is the
    identity:

    ```
    training:   m_j ~ Uniform(-mean_range, mean_range),  s_j ~ Uniform(std_range)   (each call)
                y_ij = x_ij + m_j + s_j * e_ij,           e_ij ~ N(0, 1)            (each example i)
    inference:  y = x
    ```

    Placed after Batch Normalization, the distribution of each unit's output moves at every
    step (its mean by ``m_j``, its variance from about 1 to about ``1 + s_j**2``), on top of the
    noise each example gets. The distributions of ``m`` and ``s`` are this course's choice;
    the paper specifies only noise "with non-zero mean and non-unit variance" whose
    distribution changes at each time step.

    Args:
        mean_range: Half-width of the uniform distribution of the means, ``>= 0``.
        std_range: ``(low, high)`` of the uniform standard deviations, ``0 <= low <= high``.
        seed: Optional integer seed of the layer's random generator.

    Reference:
        Santurkar, Tsipras, Ilyas & Madry, "How Does Batch Normalization Help Optimization?",
        NeurIPS 2018, section 2.1. https://arxiv.org/abs/1805.11604

    >>> layer = TimeVaryingNoise(mean_range=1.0, std_range=(0.5, 1.5), seed=0)
    >>> x = np.ones((3, 2), dtype="float32")
    >>> bool(np.all(np.asarray(layer(x, training=False)) == x))
    True
    """

    def __init__(self, mean_range=1.0, std_range=(0.5, 1.5), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not mean_range >= 0:
            raise ValueError(f"`mean_range` must be >= 0. Received: mean_range={mean_range!r}")
        low, high = std_range
        if not 0 <= low <= high:
            raise ValueError(
                f"`std_range` must be (low, high) with 0 <= low <= high. Received: std_range={std_range!r}"
            )
        self.mean_range = float(mean_range)
        self.std_range = (float(low), float(high))

    def _noisy(self, inputs):
        features = (1, *inputs.shape[1:])
        low, high = self.std_range
        mean = keras.random.uniform(features, -self.mean_range, self.mean_range,
                                    seed=self.seed_generator)
        std = keras.random.uniform(features, low, high, seed=self.seed_generator)
        noise = keras.random.normal(keras.ops.shape(inputs), seed=self.seed_generator)
        dtype = inputs.dtype
        return (inputs + keras.ops.cast(mean, dtype)
                + keras.ops.cast(std, dtype) * keras.ops.cast(noise, dtype))

    def get_config(self):
        return {**super().get_config(), "mean_range": self.mean_range,
                "std_range": list(self.std_range)}


def build_santurkar_noisy_bn_mlp(*, mean_range=1.0, std_range=(0.5, 1.5), hidden_layers=3,
                                 units=100, seed=0):
    """:func:`build_mlp` with BN, plus a :class:`TimeVaryingNoise` after every BN layer.

    Same layer names as ``build_mlp(batch_norm=True)`` (``noise_i`` added) and the same initial
    weights for the same seed.
    """
    from course_lib.batch_normalization import BatchNormalization

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(784,), name="images")
    h = inputs
    for i in range(1, hidden_layers + 1):
        h = keras.layers.Dense(units, use_bias=False, name=f"dense_{i}")(h)
        h = BatchNormalization(name=f"batch_norm_{i}")(h)
        h = TimeVaryingNoise(mean_range, std_range, seed=seed + i, name=f"noise_{i}")(h)
        h = keras.layers.Activation("sigmoid", name=f"sigmoid_{i}")(h)
    outputs = keras.layers.Dense(10, name="logits")(h)
    return keras.Model(inputs, outputs, name="mlp_with_santurkar_noisy_bn")


def build_santurkar_noisy_bn_mlp_replicas(*, seeds, mean_range=1.0, std_range=(0.5, 1.5),
                                          hidden_layers=3, units=100):
    """K replicas of :func:`build_santurkar_noisy_bn_mlp`, for ``replicas.fit_replicas``.

    The replicas of ``replicas.build_mlp_replicas(True, ...)`` (replica ``k`` starts from the
    weights of ``build_mlp(True, seed=seeds[k])``) with a :class:`TimeVaryingNoise` after every
    BN layer, on the stacked ``(batch, K, units)`` activations: every replica, unit and example
    gets its own noise, and every replica and unit its own mean and variance at each step.
    ``replicas.extract_replica`` returns a :func:`build_santurkar_noisy_bn_mlp`.
    """
    from course_lib import replicas

    base = replicas.build_mlp_replicas(True, seeds=seeds, hidden_layers=hidden_layers,
                                       units=units)
    spec = base.replica_spec
    inputs = keras.Input(shape=(spec.replicas, 784), name="images")
    h = inputs
    for layer in base.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        h = layer(h)
        if layer.name.startswith("batch_norm_") and layer.name.endswith("_unflatten"):
            i = int(layer.name.split("_")[2])
            h = TimeVaryingNoise(mean_range, std_range, seed=spec.seeds[0] + i,
                                 name=f"noise_{i}")(h)
    model = keras.Model(inputs, h, name=f"mlp_with_santurkar_noisy_bn_x{spec.replicas}")
    options = dict(mean_range=mean_range, std_range=tuple(std_range),
                   hidden_layers=hidden_layers, units=units)
    model.replica_spec = replicas.ReplicaSpec(
        builder="build_santurkar_noisy_bn_mlp", options=tuple(sorted(options.items())),
        seeds=spec.seeds, input_shape=spec.input_shape)
    return model


def replica_gradient_norms(model, x, y):
    """:func:`gradient_norms` for every replica of a ``course_lib.replicas`` model at once.

    The loss is the sum over the replicas of each replica's mean softmax cross-entropy on the
    same ``x, y`` (training mode), as in ``replicas.fit_replicas``: replica ``k``'s slice of
    each stacked kernel's gradient is then exactly the gradient of its own single model. The
    moving statistics are restored afterwards. TensorFlow backend.

    Args:
        model: A model from a ``build_*_replicas`` function (stacked dense kernels
            ``(K, in, out)``, grouped convolution kernels ``(h, w, C, K * F)``).
        x, y: Single-model inputs and integer labels, shared by every replica.

    Returns:
        ``(K, layers)`` float array: the norm of replica ``k``'s slice of each kernel's gradient,
        in the order of ``model.layers`` (the order :func:`gradient_norms` uses on a replica).
    """
    import tensorflow as tf

    from course_lib.replicas import StackedDense

    k = model.replica_spec.replicas
    layers = [layer for layer in model.layers if isinstance(layer, (StackedDense, keras.layers.Conv2D))]
    kernels = [layer.kernel for layer in layers]
    saved = [np.array(keras.ops.convert_to_numpy(v)) for v in model.non_trainable_variables]
    x = np.asarray(x, dtype=keras.backend.standardize_dtype(model.inputs[0].dtype))
    stacked = np.broadcast_to(x[:, None], (len(x), k, *x.shape[1:]))
    labels = np.broadcast_to(np.asarray(y, dtype="int32")[:, None], (len(x), k))
    with tf.GradientTape() as tape:
        logits = model(stacked, training=True)
        losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        loss = tf.reduce_sum(tf.reduce_mean(losses, axis=0))
    grads = tape.gradient(loss, kernels)
    for variable, value in zip(model.non_trainable_variables, saved):
        variable.assign(value)
    norms = np.zeros((k, len(layers)))
    for j, (layer, g) in enumerate(zip(layers, grads)):
        g = keras.ops.convert_to_numpy(g)
        if isinstance(layer, StackedDense):
            per_replica = g.reshape(k, -1)
        else:  # a grouped convolution: replica r owns output channels r*F .. (r+1)*F - 1
            per_replica = np.moveaxis(g.reshape(*g.shape[:-1], k, -1), -2, 0).reshape(k, -1)
        norms[:, j] = np.linalg.norm(per_replica, axis=1)
    return norms


# --- Chapters 4 and 9: the paper's Gaussian initial weights; BN before or after the ReLU. ----

__all__ += ["gaussian_initial_weights", "PLACEMENTS", "build_placement_mlp",
            "build_placement_mlp_replicas"]

#: Where chapter 4 puts BN relative to the ReLU (``"none"``: no BN, the reference).
PLACEMENTS = ("before", "after", "none")


def gaussian_initial_weights(model, stddev=0.01, *, seed=None):
    """Re-draw every dense kernel from ``N(0, stddev**2)`` and set every dense bias to zero.

    Ioffe & Szegedy (2015) initialise the Figure 1 network with "small random Gaussian values"
    and give no scale; :func:`build_mlp` uses Keras's default (Glorot uniform). This gives a
    model of ``Dense`` layers (:func:`build_mlp`) or a ``replicas.build_mlp_replicas`` model the
    paper's kind of initialisation, with a scale of your choice:

    - a single model: a NumPy generator seeded with ``seed`` draws the kernels layer after layer,
      in the order of ``model.layers`` (each of shape ``(in, out)``);
    - a replicated model (leave ``seed`` None): replica ``k`` gets exactly the draws of the
      single model with ``seed=model.replica_spec.seeds[k]``.

    Two models of the same shapes (with and without BN) and the same seed thus start from the
    same kernels. BN's ``gamma``, ``beta`` and moving statistics are left as they are.

    Args:
        model: A model whose dense layers are ``keras.layers.Dense`` or ``replicas.StackedDense``.
        stddev: Standard deviation of the kernels.
        seed: Seed of the draws for a single model; None for a replicated model.

    Returns:
        ``model``, changed in place.
    """
    import numbers

    from course_lib.replicas import StackedDense

    if isinstance(stddev, bool) or not isinstance(stddev, numbers.Real) or not stddev > 0:
        raise ValueError(f"`stddev` must be a positive number. Received: stddev={stddev!r}")
    layers = [layer for layer in model.layers if isinstance(layer, (keras.layers.Dense, StackedDense))]
    if not layers:
        raise ValueError(f"`model` has no Dense layer. Received: model={model.name!r}")
    spec = getattr(model, "replica_spec", None)
    if (spec is None) == (seed is None):
        raise ValueError("Give `seed` for a single model and no `seed` for a replicated model "
                         f"(each replica uses its own). Received: seed={seed!r}, replicated="
                         f"{spec is not None}")

    def draws(s):
        rng = np.random.default_rng(s)
        return [rng.normal(0.0, stddev, size=tuple(layer.kernel.shape[-2:])) for layer in layers]

    if spec is None:
        kernels = draws(seed)
    else:
        per_replica = [draws(s) for s in spec.seeds]
        kernels = [np.stack([p[i] for p in per_replica]) for i in range(len(layers))]
    for layer, kernel in zip(layers, kernels):
        layer.kernel.assign(kernel.astype(layer.kernel.dtype))
        if layer.bias is not None:
            layer.bias.assign(np.zeros(layer.bias.shape, dtype=layer.bias.dtype))
    return model


def _check_placement(placement):
    if placement not in PLACEMENTS:
        raise ValueError(f"`placement` must be one of {PLACEMENTS}. Received: placement={placement!r}")


def build_placement_mlp(placement="before", *, hidden_layers=3, units=100, num_classes=10,
                        input_dim=784, seed=0):
    """Chapter 4's ReLU network with BN before every ReLU, after it, or nowhere.

    - ``"before"``: ``Dense (no bias) -> BN -> ReLU``, the paper's placement; this is
      ``build_norm_mlp("bn", activation="relu")``;
    - ``"after"``: ``Dense -> ReLU -> BN``; the dense layer keeps its bias, which decides what
      the ReLU cuts off before BN sees it;
    - ``"none"``: ``Dense -> ReLU``, no BN: ``build_norm_mlp("none", activation="relu")``.

    Layers are named ``dense_i``, ``norm_i``, ``relu_i`` and ``logits``. For the same seed the
    three start from the same kernels (the dense layers are created in the same order, biases
    start at zero and BN has no random weights).

    Returns:
        An uncompiled ``keras.Model``.
    """
    _check_placement(placement)
    shape = dict(hidden_layers=hidden_layers, units=units, num_classes=num_classes,
                 input_dim=input_dim, seed=seed)
    if placement != "after":
        return build_norm_mlp("bn" if placement == "before" else "none", activation="relu", **shape)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(input_dim,), name="images")
    h = inputs
    for i in range(1, hidden_layers + 1):
        h = keras.layers.Dense(units, name=f"dense_{i}")(h)
        h = keras.layers.Activation("relu", name=f"relu_{i}")(h)
        h = normalization_layer("bn", f"norm_{i}")(h)
    outputs = keras.layers.Dense(num_classes, name="logits")(h)
    return keras.Model(inputs, outputs, name="mlp_bn_after_relu")


def build_placement_mlp_replicas(placement="before", *, seeds, hidden_layers=3, units=100,
                                 num_classes=10, input_dim=784):
    """K replicas of :func:`build_placement_mlp`, for ``replicas.fit_replicas``.

    ``"before"`` and ``"none"`` are ``replicas.build_norm_mlp_replicas`` with ReLU; ``"after"``
    takes the ``"none"`` replicas and puts a BN layer after every ReLU, on the stacked
    ``(batch, K * units)`` features (every replica and unit its own feature, as in
    ``replicas``). Replica ``k`` starts from the weights of
    ``build_placement_mlp(placement, seed=seeds[k])``, and ``replicas.extract_replica`` returns
    that model.
    """
    from course_lib import replicas

    _check_placement(placement)
    shape = dict(hidden_layers=hidden_layers, units=units, num_classes=num_classes,
                 input_dim=input_dim)
    if placement != "after":
        return replicas.build_norm_mlp_replicas("bn" if placement == "before" else "none",
                                                seeds=seeds, activation="relu", **shape)
    base = replicas.build_norm_mlp_replicas("none", seeds=seeds, activation="relu", **shape)
    spec = base.replica_spec
    k = spec.replicas
    inputs = keras.Input(shape=(k, input_dim), name="images")
    h = inputs
    for layer in base.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        h = layer(h)
        if layer.name.startswith("relu_"):
            i = layer.name.split("_")[1]
            h = keras.layers.Reshape((k * units,), name=f"norm_{i}_flatten")(h)
            h = normalization_layer("bn", f"norm_{i}")(h)
            h = keras.layers.Reshape((k, units), name=f"norm_{i}_unflatten")(h)
    model = keras.Model(inputs, h, name=f"mlp_bn_after_relu_x{k}")
    model.replica_spec = replicas.ReplicaSpec(
        builder="build_placement_mlp", options=tuple(sorted({"placement": "after", **shape}.items())),
        seeds=spec.seeds, input_shape=spec.input_shape)
    return model


# --- Chapter 12: K seeds of course_lib.transformer's classifier as one model. -----------------

__all__ += ["StackedTransformerClassifier", "build_transformer_replicas"]


@keras.saving.register_keras_serializable(package="course_lib")
class StackedTransformerClassifier(keras.layers.Layer):
    """K replicas of ``transformer.build_transformer_classifier`` in one layer (chapter 12).

    Every weight of the single classifier gets a leading replica axis ``K``, and replica ``k``
    computes exactly what the single model computes with the weights ``w[k]``:

    ```
    x = E[tokens] + P                                      (token and position embeddings)
    pre:   x = x + Attn(N1(x));   x = x + FF(N2(x))        (per block), then a final N
    post:  x = N1(x + Attn(x));   x = N2(x + FF(x))
    logits = mean over positions(x) @ W + b
    ```

    with ``Attn`` the scaled dot-product attention of ``keras.layers.MultiHeadAttention``,
    ``FF(h) = Dense(d_model)(gelu(Dense(ff_dim)(h)))`` and ``N`` layer normalization
    (``gamma``, ``beta``) or RMS normalization (``scale``) over the features, epsilon ``1e-6``.
    Internally the activations are laid out ``(K, batch, length, features)``, so that every
    dense map is one batched matmul over ``K``: the graph does not grow with ``K``, which is
    what makes five seeds of several arms affordable on a CPU (the single models, side by
    side in one graph, would cost a trace each).

    Differences from the single model: no dropout, no padding mask, no causal mask (chapter
    12's task needs none of them). ``tests/test_experiments.py`` checks the outputs against the
    single models for both norms and both positions.

    Args:
        replicas: K.
        vocab_size, sequence_length, num_classes, d_model, num_heads, ff_dim, num_layers,
            norm, norm_position: As for ``build_transformer_classifier``.
        epsilon: The normalizations' epsilon (``TransformerBlock``'s default, ``1e-6``).
        **kwargs: Base layer arguments.

    Call arguments:
        tokens: Integer token ids ``(batch, K, length)``; replica ``k`` reads ``tokens[:, k]``.

    Returns:
        Logits ``(batch, K, num_classes)``.
    """

    def __init__(self, replicas, vocab_size, sequence_length, num_classes, d_model=32,
                 num_heads=2, ff_dim=64, num_layers=2, norm="layer", norm_position="pre",
                 epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        from course_lib import transformer

        for name, value in [("replicas", replicas), ("vocab_size", vocab_size),
                            ("sequence_length", sequence_length), ("num_classes", num_classes),
                            ("d_model", d_model), ("num_heads", num_heads), ("ff_dim", ff_dim),
                            ("num_layers", num_layers)]:
            transformer._check_positive_int(name, value)
        if d_model % num_heads:
            raise ValueError("`num_heads` must divide `d_model`. "
                             f"Received: d_model={d_model}, num_heads={num_heads}")
        self.norm = transformer._check_choice("norm", norm, transformer._NORMS)
        self.norm_position = transformer._check_choice("norm_position", norm_position,
                                                       transformer._POSITIONS)
        self.epsilon = transformer._check_epsilon(epsilon)
        self.replicas, self.vocab_size = int(replicas), int(vocab_size)
        self.sequence_length, self.num_classes = int(sequence_length), int(num_classes)
        self.d_model, self.num_heads = int(d_model), int(num_heads)
        self.ff_dim, self.num_layers = int(ff_dim), int(num_layers)

    def _add(self, name, shape, initializer="zeros"):
        return self.add_weight(name=name, shape=(self.replicas, *shape), initializer=initializer)

    def _add_norm(self, prefix):
        if self.norm == "rms":
            return {"scale": self._add(f"{prefix}_scale", (self.d_model,), "ones")}
        return {"gamma": self._add(f"{prefix}_gamma", (self.d_model,), "ones"),
                "beta": self._add(f"{prefix}_beta", (self.d_model,))}

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] != self.replicas:
            raise ValueError(f"The inputs must be token ids (batch, {self.replicas}, length). "
                             f"Received: input_shape={tuple(input_shape)}")
        if input_shape[2] is not None and input_shape[2] > self.sequence_length:
            raise ValueError("The inputs are longer than `sequence_length`. Received: "
                             f"input_shape={tuple(input_shape)}, "
                             f"sequence_length={self.sequence_length}")
        d, h = self.d_model, self.num_heads
        e = d // h
        self.token_embedding = self._add("token_embedding", (self.vocab_size, d))
        self.position_embedding = self._add("position_embedding", (self.sequence_length, d))
        self.blocks = []
        for i in range(self.num_layers):
            block = {}
            for part in ("query", "key", "value"):
                block[f"{part}_kernel"] = self._add(f"block_{i}_{part}_kernel", (d, h, e))
                block[f"{part}_bias"] = self._add(f"block_{i}_{part}_bias", (h, e))
            block["output_kernel"] = self._add(f"block_{i}_output_kernel", (h, e, d))
            block["output_bias"] = self._add(f"block_{i}_output_bias", (d,))
            block["attention_norm"] = self._add_norm(f"block_{i}_attention_norm")
            block["ffn_inner_kernel"] = self._add(f"block_{i}_ffn_inner_kernel", (d, self.ff_dim))
            block["ffn_inner_bias"] = self._add(f"block_{i}_ffn_inner_bias", (self.ff_dim,))
            block["ffn_outer_kernel"] = self._add(f"block_{i}_ffn_outer_kernel", (self.ff_dim, d))
            block["ffn_outer_bias"] = self._add(f"block_{i}_ffn_outer_bias", (d,))
            block["ffn_norm"] = self._add_norm(f"block_{i}_ffn_norm")
            self.blocks.append(block)
        self.final_norm = self._add_norm("final_norm") if self.norm_position == "pre" else None
        self.logits_kernel = self._add("logits_kernel", (d, self.num_classes))
        self.logits_bias = self._add("logits_bias", (self.num_classes,))

    def _normalize(self, x, weights):
        """LN or RMSNorm of ``x`` (K, B, L, d) over d, with replica k's own weights."""
        def per_replica(w):
            return keras.ops.reshape(w, (self.replicas, 1, 1, self.d_model))

        if self.norm == "rms":
            mean_square = keras.ops.mean(keras.ops.square(x), axis=-1, keepdims=True)
            scaled = x * keras.ops.rsqrt(mean_square + self.epsilon)
            return scaled * per_replica(weights["scale"])
        centred = x - keras.ops.mean(x, axis=-1, keepdims=True)
        var = keras.ops.mean(keras.ops.square(centred), axis=-1, keepdims=True)
        return (centred * keras.ops.rsqrt(var + self.epsilon) * per_replica(weights["gamma"])
                + per_replica(weights["beta"]))

    def _dense(self, x, kernel, bias):
        """``x @ kernel[k] + bias[k]`` for each replica: one batched matmul on (K, B * L, in)."""
        k, batch, length, width = keras.ops.shape(x)
        y = keras.ops.matmul(keras.ops.reshape(x, (k, -1, width)), keras.ops.reshape(kernel, (k, width, -1)))
        return keras.ops.reshape(y, (k, batch, length, -1)) + keras.ops.reshape(bias, (k, 1, 1, -1))

    def _attend(self, x, block):
        k, batch, length, _ = keras.ops.shape(x)
        h, e = self.num_heads, self.d_model // self.num_heads

        def heads(part):  # (K, B, L, h * e) -> (K, B, h, L, e)
            y = self._dense(x, block[f"{part}_kernel"], block[f"{part}_bias"])
            return keras.ops.transpose(keras.ops.reshape(y, (k, batch, length, h, e)), (0, 1, 3, 2, 4))

        query = heads("query") * (1.0 / float(e) ** 0.5)
        keys = keras.ops.transpose(heads("key"), (0, 1, 2, 4, 3))
        scores = keras.ops.softmax(keras.ops.matmul(query, keys), axis=-1)
        out = keras.ops.transpose(keras.ops.matmul(scores, heads("value")), (0, 1, 3, 2, 4))
        return self._dense(keras.ops.reshape(out, (k, batch, length, h * e)), block["output_kernel"],
                           block["output_bias"])

    def _feed_forward(self, x, block):
        inner = keras.activations.gelu(
            self._dense(x, block["ffn_inner_kernel"], block["ffn_inner_bias"]))
        return self._dense(inner, block["ffn_outer_kernel"], block["ffn_outer_bias"])

    def call(self, tokens):
        onehot = keras.ops.one_hot(keras.ops.transpose(tokens, (1, 0, 2)), self.vocab_size)  # (K, B, L, V)
        k, batch, length, _ = keras.ops.shape(onehot)
        x = keras.ops.matmul(keras.ops.reshape(onehot, (k, -1, self.vocab_size)), self.token_embedding)
        x = keras.ops.reshape(x, (k, batch, length, self.d_model))
        x = x + keras.ops.expand_dims(self.position_embedding[:, :length], 1)
        for block in self.blocks:
            if self.norm_position == "pre":
                x = x + self._attend(self._normalize(x, block["attention_norm"]), block)
                x = x + self._feed_forward(self._normalize(x, block["ffn_norm"]), block)
            else:
                x = self._normalize(x + self._attend(x, block), block["attention_norm"])
                x = self._normalize(x + self._feed_forward(x, block), block["ffn_norm"])
        if self.final_norm is not None:
            x = self._normalize(x, self.final_norm)
        logits = keras.ops.matmul(keras.ops.mean(x, axis=2), self.logits_kernel)  # (K, B, classes)
        logits = logits + keras.ops.expand_dims(self.logits_bias, 1)
        return keras.ops.transpose(logits, (1, 0, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.replicas, self.num_classes)

    def get_config(self):
        return {**super().get_config(), "replicas": self.replicas, "vocab_size": self.vocab_size,
                "sequence_length": self.sequence_length, "num_classes": self.num_classes,
                "d_model": self.d_model, "num_heads": self.num_heads, "ff_dim": self.ff_dim,
                "num_layers": self.num_layers, "norm": self.norm,
                "norm_position": self.norm_position, "epsilon": self.epsilon}


def _single_transformer_weights(model, num_layers, norm_position):
    """The weights of a ``build_transformer_classifier`` model under the stacked layer's names."""
    weights = {}
    embedding = model.get_layer("embedding")
    weights["token_embedding"] = embedding.token_embedding.embeddings.numpy()
    weights["position_embedding"] = embedding.position_embedding.embeddings.numpy()
    for i in range(num_layers):
        block = model.get_layer(f"block_{i}")
        attention = block.attention
        for part, dense in [("query", attention._query_dense), ("key", attention._key_dense),
                            ("value", attention._value_dense),
                            ("output", attention._output_dense)]:
            weights[f"block_{i}_{part}_kernel"] = dense.kernel.numpy()
            weights[f"block_{i}_{part}_bias"] = dense.bias.numpy()
        for part in ("attention_norm", "ffn_norm"):
            for w in getattr(block, part).weights:
                weights[f"block_{i}_{part}_{w.name}"] = w.numpy()
        for part in ("ffn_inner", "ffn_outer"):
            weights[f"block_{i}_{part}_kernel"] = getattr(block, part).kernel.numpy()
            weights[f"block_{i}_{part}_bias"] = getattr(block, part).bias.numpy()
    if norm_position == "pre":
        for w in model.get_layer("final_norm").weights:
            weights[f"final_norm_{w.name}"] = w.numpy()
    weights["logits_kernel"] = model.get_layer("logits").kernel.numpy()
    weights["logits_bias"] = model.get_layer("logits").bias.numpy()
    return weights


def build_transformer_replicas(*, seeds, vocab_size, sequence_length, num_classes, d_model=32,
                               num_heads=2, ff_dim=64, num_layers=2, norm="layer",
                               norm_position="pre"):
    """K seeds of ``course_lib.build_transformer_classifier`` as one model (chapter 12).

    Replica ``k`` starts from exactly the weights of the single classifier built right after
    ``keras.utils.set_random_seed(seeds[k])`` (built here and copied; a seed may repeat, e.g.
    for two learning rates of one arm, and its replicas then start equal). The weights are drawn in
    the same order whatever ``norm`` and ``norm_position`` (the normalizations draw nothing), so
    a pre-norm and a post-norm model, or an LN and an RMSNorm model, of the same seed start from
    the same embeddings, attention and feed-forward kernels: the arms of a comparison are paired.

    As with ``course_lib.replicas``, train with the **sum** over replicas of each replica's mean
    loss: replica ``k``'s weights enter only its own term, so each gets its single-model
    gradient.

    Returns:
        An uncompiled ``keras.Model`` from token ids ``(batch, K, sequence_length)`` to logits
        ``(batch, K, num_classes)``; its last layer is the
        :class:`StackedTransformerClassifier` (every weight ``(K, ...)``, named as in the layer's
        ``build``), and ``model.replica_seeds`` holds the seeds.
    """
    import numbers

    from course_lib.transformer import build_transformer_classifier

    try:
        seeds = tuple(seeds)
    except TypeError:
        raise ValueError("`seeds` must be a sequence of integers. "
                         f"Received: seeds={seeds!r}") from None
    if not seeds or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                            for s in seeds):
        raise ValueError("`seeds` must be a non-empty sequence of integers. "
                         f"Received: seeds={seeds!r}")
    options = dict(vocab_size=vocab_size, sequence_length=sequence_length,
                   num_classes=num_classes, d_model=d_model, num_heads=num_heads, ff_dim=ff_dim,
                   num_layers=num_layers, norm=norm, norm_position=norm_position)
    stacked = StackedTransformerClassifier(len(seeds), name="replicas", **options)
    inputs = keras.Input((len(seeds), sequence_length), dtype="int32", name="tokens")
    model = keras.Model(inputs, stacked(inputs),
                        name=f"transformer_{norm_position}_{norm}_x{len(seeds)}")
    per_seed = {}  # a seed may appear twice (two learning rates of one arm): built once
    for seed in dict.fromkeys(int(s) for s in seeds):
        keras.utils.set_random_seed(seed)
        single = build_transformer_classifier(**options)
        per_seed[seed] = _single_transformer_weights(single, num_layers, norm_position)
    for weight in stacked.weights:
        weight.assign(np.stack([per_seed[int(s)][weight.name] for s in seeds]).astype(weight.dtype))
    model.replica_seeds = tuple(int(s) for s in seeds)
    return model
