"""K independent training runs (seeds) of one small network as ONE batched Keras model.

A verdict in the book rests on at least five paired seeds (:mod:`course_lib.evidence`). Five
runs one after the other cost five times one run; here the K runs are *replicas* inside one
Keras model, so that one compiled training step advances all of them at once:

- a dense layer is a :class:`StackedDense` with kernel ``(K, in, out)`` applied to activations
  shaped ``(batch, K, in)``: replica ``k``'s slice meets only its own kernel ``kernel[k]``;
- a convolution is a :class:`StackedConv2D`: a ``Conv2D(K * filters, groups=K)`` (same kernel
  ``(h, w, C, K * F)``, same numbers) on inputs ``(batch, H, W, K * C)``, whose group ``k``
  (input channels ``k*C .. (k+1)*C - 1``, output channels ``k*F .. (k+1)*F - 1``) is replica
  ``k``, but computed as K ordinary convolutions side by side. A plain grouped ``Conv2D`` would
  be wrong for speed, not for numbers: TensorFlow's CPU kernels have no gradient for grouped
  convolutions, so Keras runs every grouped convolution through XLA on a CPU, whose grouped
  convolution is 20 to 100 times slower than K ordinary ones (measured on the chapters' CNN);
- Batch Normalization is ``course_lib.BatchNormalization`` on ``(batch, K * units)`` (the stacked
  activations reshaped; for a convolution the channels ``K * C`` already are): every
  (replica, unit) pair is its own feature, so the batch statistics, ``gamma``, ``beta`` and the
  moving statistics are per replica. Keras 3's layer takes a single ``axis``, hence the reshape;
- Group Normalization with ``G`` groups becomes ``GroupNormalization(K * G)`` on the same
  ``K * units`` (or ``K * C``) features: its groups are contiguous, so group ``k * G + g`` is group
  ``g`` of replica ``k``; Batch Renormalization is per feature like BN; Layer Normalization is a
  :class:`ReplicaLayerNormalization` (statistics per example *and* replica, ``gamma`` and
  ``beta`` per replica).

Each replica has its own initial weights, exactly those of the single-model builder of
:mod:`course_lib.experiments` called with ``seed=seeds[k]`` (the K single models are built and
their weights copied into the stack), and its own mini-batches: :func:`fit_replicas` feeds
replica ``k`` the batches ``x[idx[k]]`` of ``minibatch_indices(..., seed=seeds[k])``, the order
``experiments.sgd_fit(..., seed=seeds[k])`` uses. The training loss is the **sum over replicas**
of each replica's mean loss. Replica ``k``'s parameters enter only its own term, so the gradient
of that sum with respect to them is exactly the gradient of its single-model loss, and plain SGD
(no momentum, no weight decay) moves each replica exactly as the single model would move. In
float64 the two agree to about 1e-13 after 50 steps (``tests/test_replicas.py``); in float32 they
agree up to rounding, which a chaotic network (ReLU units switching, GN over a few units) can
amplify over many steps: the replicas are then as good as the single runs, not bit for bit the
same. A *mean* over replicas would divide every gradient by K; anything that mixes the replicas'
gradients (clipping by a global norm) would couple them.

What it saves (``make bench``, "replicas": the Figure 1 MLP with BN, batch 60, K = 5, on a
2-core CPU): a batched step costs 3 to 6 times one run's step; that is 1.0 to 1.5 times less than
5 runs one after the other in the same compiled loop, and 1.6 to 2.4 times less than 5 runs
through Keras's ``fit`` (``experiments.sgd_fit``). The arithmetic is the limit: 5 replicas are 5
times the FLOPs, and one run (with XLA) already computes at about 75 % of the rate of a large
matmul on these cores, so no arrangement of the same arithmetic brings a batched step under
about 4 times one XLA run there. What batching removes is Python and per-call overhead (one
compiled loop, one evaluation call for all seeds); on an accelerator, where a small network's
step is dominated by launch latency, K replicas cost little more than one.

>>> import course_lib
>>> from course_lib import experiments, replicas
>>> (x_train, y_train), (x_test, y_test) = course_lib.load_mnist()
>>> x_train, x_test = experiments.flatten_images(x_train), experiments.flatten_images(x_test)
>>> model = replicas.build_mlp_replicas(batch_norm=True, seeds=range(5))
>>> record = replicas.fit_replicas(model, x_train, y_train, x_test=x_test, y_test=y_test,
...                                steps=200, record_every=100)
>>> record.test_accuracy.shape        # (replicas, recordings at steps 0, 100, 200)
(5, 3)
>>> single = replicas.extract_replica(model, 2)   # == build_mlp(True, seed=2) trained alone
"""

import dataclasses
import functools
import math
import numbers

import keras
import numpy as np
from keras import ops

from course_lib.weight_standardization import WSConv2D

__all__ = [
    "StackedDense",
    "StackedConv2D",
    "StackedWSConv2D",
    "ReplicaLayerNormalization",
    "ReplicaSpec",
    "ReplicaRecord",
    "build_mlp_replicas",
    "build_norm_mlp_replicas",
    "build_norm_cnn_replicas",
    "extract_replica",
    "replica_batches",
    "replica_accuracy",
    "fit_replicas",
    "matmul_flops_per_step",
]


# --- Layers -----------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="course_lib")
class StackedDense(keras.layers.Layer):
    """K independent ``Dense`` layers applied to stacked inputs ``(batch, K, in)``.

    ```
    y[b, k, :] = x[b, k, :] @ kernel[k] + bias[k]        # kernel (K, in, out), bias (K, out)
    ```

    Args:
        replicas: K, the number of stacked layers.
        units: Output size of each.
        use_bias: If True, each replica has its own bias.
        kernel_initializer, bias_initializer: Initializers (the replica builders overwrite the
            weights with those of K single models anyway).
        implementation: ``"matmuls"`` (default): K matmuls side by side in one graph;
            ``"einsum"``: one ``einsum("bki,kio->bko")``, which TensorFlow runs as a transpose,
            a batched matmul and a transpose back (in the backward pass too). Same numbers;
            on a 2-core CPU ``make bench`` ("replicas") measures the einsum 1.5 to 2 times
            slower in a plain ``tf.function``, and no faster under XLA.
        **kwargs: Base layer arguments (``name``, ``dtype``...).

    Call arguments:
        inputs: A tensor ``(batch, K, in)``.

    Returns:
        A tensor ``(batch, K, units)``.
    """

    def __init__(self, replicas, units, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", implementation="matmuls", **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("replicas", replicas)
        _check_positive_int("units", units)
        if implementation not in ("matmuls", "einsum"):
            raise ValueError("`implementation` must be 'matmuls' or 'einsum'. "
                             f"Received: implementation={implementation!r}")
        self.replicas = int(replicas)
        self.units = int(units)
        self.use_bias = bool(use_bias)
        self.implementation = implementation
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] != self.replicas or input_shape[2] is None:
            raise ValueError(
                f"StackedDense needs inputs of shape (batch, {self.replicas}, features). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.kernel = self.add_weight(shape=(self.replicas, input_shape[2], self.units),
                                      initializer=self.kernel_initializer, name="kernel")
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.replicas, self.units),
                                        initializer=self.bias_initializer, name="bias")

    def call(self, inputs):
        if self.implementation == "einsum":
            y = ops.einsum("bki,kio->bko", inputs, self.kernel)
        else:
            columns = ops.unstack(inputs, self.replicas, axis=1)
            kernels = ops.unstack(self.kernel, self.replicas, axis=0)
            y = ops.stack([ops.matmul(x, w) for x, w in zip(columns, kernels)], axis=1)
        return y + self.bias if self.bias is not None else y

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.replicas, self.units)

    def get_config(self):
        return {**super().get_config(), "replicas": self.replicas, "units": self.units,
                "use_bias": self.use_bias, "implementation": self.implementation,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer)}


def _convolve_per_replica(layer, inputs, kernel, convolve):
    """``layer.groups`` ordinary convolutions, one per replica's channels, side by side."""
    k = layer.groups
    columns = ops.split(inputs, k, axis=-1)
    kernels = ops.split(kernel, k, axis=-1)
    return ops.concatenate([convolve(x, w) for x, w in zip(columns, kernels)], axis=-1)


@keras.saving.register_keras_serializable(package="course_lib")
class StackedConv2D(keras.layers.Conv2D):
    """``Conv2D(K * filters, groups=K)``, computed as K ordinary convolutions.

    Takes every argument of ``keras.layers.Conv2D``; ``groups`` is K, the number of replicas
    (channels-last data). Replica ``k`` convolves input channels ``k * C .. (k+1) * C - 1`` with
    the kernel's output channels ``k * F .. (k+1) * F - 1``: a grouped convolution, with the
    same weights and the same numbers, but each group goes through TensorFlow's ordinary
    convolution kernels (a grouped one would go through XLA on a CPU, and slowly: see the
    module's docstring).
    """

    def convolution_op(self, inputs, kernel):
        return _convolve_per_replica(self, inputs, kernel, super().convolution_op)


@keras.saving.register_keras_serializable(package="course_lib")
class StackedWSConv2D(WSConv2D):
    """:class:`StackedConv2D` with Weight Standardization (``course_lib.WSConv2D``'s).

    The standardization is per output channel, over ``(h, w, C)``: per replica, exactly as
    each single ``WSConv2D`` does it; then the K convolutions run as in :class:`StackedConv2D`.
    """

    def convolution_op(self, inputs, kernel):
        plain = functools.partial(keras.layers.Conv2D.convolution_op, self)
        return _convolve_per_replica(self, inputs, self.standardized_kernel(kernel), plain)


@keras.saving.register_keras_serializable(package="course_lib")
class ReplicaLayerNormalization(keras.layers.Layer):
    """Layer Normalization of K stacked replicas: statistics per example and per replica.

    ``course_lib.LayerNormalization`` normalizes every example over its feature axes and has one
    ``gamma``/``beta`` of the features' shape. For replicas, the features of replica ``k`` must be
    normalized on their own, and ``gamma``/``beta`` are per replica, so this layer runs a
    ``course_lib.LayerNormalization`` without ``gamma``/``beta`` over the right axes and then
    applies ``gamma[k]``, ``beta[k]`` (the same arithmetic, in the same order, as the single
    layer: ``(x - mean) * rsqrt(var + epsilon) * gamma + beta``).

    Two layouts:

    - ``"stacked"``: inputs ``(batch, K, *features)``, normalized over ``features``; replica k's
      ``gamma`` has the features' shape (a single MLP's ``LayerNormalization(axis=-1)``);
    - ``"channels"``: inputs ``(batch, H, W, K * C)`` (a grouped convolution's output), normalized
      over ``H, W`` and the ``C`` channels of each replica; replica k's ``gamma`` is ``(H, W, C)``
      (a single CNN's ``LayerNormalization(axis=[1, 2, 3])``).

    ``gamma`` and ``beta`` are stored as ``(K, *replica_shape)``.

    Args:
        replicas: K.
        layout: ``"stacked"`` or ``"channels"``.
        epsilon: As ``course_lib.LayerNormalization``'s.
        **kwargs: Base layer arguments.
    """

    def __init__(self, replicas, layout="stacked", epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        from course_lib.layer_normalization import LayerNormalization

        _check_positive_int("replicas", replicas)
        if layout not in ("stacked", "channels"):
            raise ValueError(
                f"`layout` must be 'stacked' or 'channels'. Received: layout={layout!r}")
        self.replicas = int(replicas)
        self.layout = layout
        self.epsilon = float(epsilon)
        axis = -1 if layout == "stacked" else [1, 2, 4]
        self.normalize = LayerNormalization(axis=axis, epsilon=epsilon, center=False,
                                            scale=False, name="normalize")

    def build(self, input_shape):
        k = self.replicas
        if self.layout == "stacked":
            if len(input_shape) < 3 or input_shape[1] != k:
                raise ValueError(
                    f"The 'stacked' layout needs inputs (batch, {k}, features). "
                    f"Received: input_shape={tuple(input_shape)}")
            shape = tuple(input_shape[2:])
            self.normalize.axis = list(range(2, len(input_shape)))
            self.normalize.build(input_shape)
        else:
            if len(input_shape) != 4 or input_shape[-1] is None or input_shape[-1] % k:
                raise ValueError(
                    f"The 'channels' layout needs inputs (batch, H, W, {k} * C). "
                    f"Received: input_shape={tuple(input_shape)}")
            h, w, c = input_shape[1], input_shape[2], input_shape[3] // k
            shape = (h, w, c)
            self.normalize.build((input_shape[0], h, w, k, c))
        self.gamma = self.add_weight(shape=(k, *shape), initializer="ones", name="gamma",
                                     autocast=False)
        self.beta = self.add_weight(shape=(k, *shape), initializer="zeros", name="beta",
                                    autocast=False)

    def call(self, inputs):
        k = self.replicas
        if self.layout == "stacked":
            return self.normalize(inputs) * self.gamma + self.beta
        _, h, w, kc = inputs.shape
        x = ops.reshape(inputs, (-1, h, w, k, kc // k))
        gamma = ops.transpose(self.gamma, (1, 2, 0, 3))  # (H, W, K, C)
        beta = ops.transpose(self.beta, (1, 2, 0, 3))
        return ops.reshape(self.normalize(x) * gamma + beta, (-1, h, w, kc))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "replicas": self.replicas, "layout": self.layout,
                "epsilon": self.epsilon}


# --- Builders ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReplicaSpec:
    """How a replicated model was built: enough to rebuild any replica as a single model.

    Attributes:
        builder: Name of the single-model builder in :mod:`course_lib.experiments`
            (``"build_mlp"``, ``"build_norm_mlp"`` or ``"build_norm_cnn"``).
        options: The builder's keyword arguments (all but ``seed``), as sorted ``(name, value)``
            pairs.
        seeds: The seed of each replica's initial weights, and by default of its mini-batches.
        input_shape: The shape of one single-model input (``(784,)``, ``(28, 28, 1)``).
    """

    builder: str
    options: tuple
    seeds: tuple
    input_shape: tuple

    @property
    def replicas(self):
        """K, the number of replicas."""
        return len(self.seeds)

    def build_single(self, k):
        """A fresh single model from the builder with ``seed=seeds[k]`` (its initial weights)."""
        from course_lib import experiments

        return getattr(experiments, self.builder)(seed=self.seeds[k], **dict(self.options))


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")


def _check_seeds(seeds):
    try:
        seeds = tuple(seeds)
    except TypeError:
        raise ValueError(
            f"`seeds` must be a sequence of distinct integers. Received: seeds={seeds!r}") from None
    if (not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds)):
        raise ValueError(
            f"`seeds` must be a non-empty sequence of distinct integers. Received: seeds={seeds!r}")
    return tuple(int(s) for s in seeds)


def _stack_weights(replicated, singles):
    """Copy the weights of the K ``singles`` into ``replicated``, layer by layer (same names)."""
    for layer in singles[0].layers:
        if not layer.weights:
            continue
        target = replicated.get_layer(layer.name)
        per_replica = [s.get_layer(layer.name).get_weights() for s in singles]
        target.set_weights([_stack(target, [w[i] for w in per_replica])
                            for i in range(len(per_replica[0]))])


def _stack(layer, arrays):
    """K single-model arrays of one weight -> the replicated layer's array."""
    if isinstance(layer, (StackedDense, ReplicaLayerNormalization)):
        return np.stack(arrays, axis=0)
    if np.ndim(arrays[0]) == 0:  # a counter every replica shares (BRN's warm-up step)
        if any(a != arrays[0] for a in arrays):
            raise ValueError(f"The replicas of `{layer.name}` disagree on a scalar weight: {arrays!r}")
        return arrays[0]
    # Grouped convolutions, BN, BRN, GN: the replicas' channels side by side on the last axis.
    return np.concatenate(arrays, axis=-1)


def _unstack(layer, array, k, replicas):
    """The replicated layer's array of one weight -> replica ``k``'s single-model array."""
    if isinstance(layer, (StackedDense, ReplicaLayerNormalization)):
        return array[k]
    if np.ndim(array) == 0:  # a counter every replica shares (BRN's warm-up step)
        return array
    width = array.shape[-1] // replicas
    return array[..., k * width:(k + 1) * width]


def _finish(model, builder, options, seeds, input_shape):
    spec = ReplicaSpec(builder=builder, options=tuple(sorted(options.items())), seeds=seeds,
                       input_shape=tuple(input_shape))
    model.replica_spec = spec
    _stack_weights(model, [spec.build_single(k) for k in range(len(seeds))])
    return model


def _flat_norm(h, layer, k, units):
    """``layer`` (per-feature or contiguous groups) on stacked ``(batch, K, units)``."""
    h = keras.layers.Reshape((k * units,), name=f"{layer.name}_flatten")(h)
    h = layer(h)
    return keras.layers.Reshape((k, units), name=f"{layer.name}_unflatten")(h)


def _norm_mlp_layer(kind, name, k, units, groups, momentum):
    from course_lib import experiments

    if kind in ("bn", "brn"):
        layer = experiments.normalization_layer(kind, name, momentum=momentum)
    elif kind == "gn":
        if units % groups:
            raise ValueError(f"`groups` must divide `units`. Received: groups={groups!r}, "
                             f"units={units!r}")
        layer = experiments.normalization_layer("gn", name, groups=k * groups)
    else:  # "ln": per example and replica
        return lambda h: ReplicaLayerNormalization(k, "stacked", name=name)(h)
    return lambda h: _flat_norm(h, layer, k, units)


def build_mlp_replicas(batch_norm, *, seeds, hidden_layers=3, units=100, num_classes=10,
                       input_dim=784):
    """K replicas of :func:`course_lib.experiments.build_mlp` (the Figure 1 sigmoid MLP).

    Replica ``k`` starts from exactly the weights of ``build_mlp(batch_norm, seed=seeds[k], ...)``.
    Layers keep the single model's names (``dense_i``, ``batch_norm_i``, ``sigmoid_i``,
    ``logits``), as :func:`extract_replica` needs.

    Args:
        batch_norm: If True, Batch Normalization before every sigmoid (per replica).
        seeds: The replicas' seeds: K distinct integers.
        hidden_layers, units, num_classes, input_dim: As for ``build_mlp``.

    Returns:
        An uncompiled ``keras.Model`` from ``(batch, K, input_dim)`` to logits
        ``(batch, K, num_classes)``, with a ``replica_spec`` attribute (:class:`ReplicaSpec`).
    """
    from course_lib.batch_normalization import BatchNormalization

    seeds = _check_seeds(seeds)
    if not isinstance(batch_norm, bool):
        raise ValueError(f"`batch_norm` must be True or False. Received: batch_norm={batch_norm!r}")
    for name, value in [("hidden_layers", hidden_layers), ("units", units),
                        ("num_classes", num_classes), ("input_dim", input_dim)]:
        _check_positive_int(name, value)
    k = len(seeds)
    inputs = keras.Input(shape=(k, input_dim), name="images")
    h = inputs
    for i in range(1, hidden_layers + 1):
        h = StackedDense(k, units, use_bias=not batch_norm, name=f"dense_{i}")(h)
        if batch_norm:
            h = _flat_norm(h, BatchNormalization(name=f"batch_norm_{i}"), k, units)
        h = keras.layers.Activation("sigmoid", name=f"sigmoid_{i}")(h)
    outputs = StackedDense(k, num_classes, name="logits")(h)
    model = keras.Model(inputs, outputs,
                        name=f"mlp_{'with' if batch_norm else 'without'}_bn_x{k}")
    options = dict(batch_norm=batch_norm, hidden_layers=hidden_layers, units=units,
                   num_classes=num_classes, input_dim=input_dim)
    return _finish(model, "build_mlp", options, seeds, (input_dim,))


def build_norm_mlp_replicas(normalization="bn", *, seeds, hidden_layers=3, units=100,
                            activation="relu", dropout=0.0, groups=4, momentum=0.99,
                            num_classes=10, input_dim=784):
    """K replicas of :func:`course_lib.experiments.build_norm_mlp`.

    Replica ``k`` starts from exactly the weights of ``build_norm_mlp(..., seed=seeds[k])``.
    Every normalization of ``build_norm_mlp`` is supported: ``"bn"`` and ``"brn"`` per (replica,
    unit) feature, ``"gn"`` as ``GroupNormalization(K * groups)`` (contiguous groups: group
    ``k * groups + g`` is group ``g`` of replica ``k``), ``"ln"`` as
    :class:`ReplicaLayerNormalization`.

    With ``dropout > 0`` the masks are drawn independently for every replica, but from one
    generator: each replica's masks have the single model's distribution, not its draws, so a
    replica then matches a single run statistically rather than number for number.

    Args:
        normalization: ``"none"``, ``"bn"``, ``"brn"``, ``"gn"`` or ``"ln"``.
        seeds: The replicas' seeds: K distinct integers.
        hidden_layers, units, activation, dropout, groups, momentum, num_classes, input_dim:
            As for ``build_norm_mlp``.

    Returns:
        An uncompiled ``keras.Model`` from ``(batch, K, input_dim)`` to logits
        ``(batch, K, num_classes)``, with a ``replica_spec`` attribute.
    """
    from course_lib import experiments

    seeds = _check_seeds(seeds)
    allowed = tuple(n for n in experiments.NORMALIZATIONS if n != "ws+gn")
    if normalization not in allowed:
        raise ValueError(f"`normalization` must be one of {allowed}. "
                         f"Received: normalization={normalization!r}")
    for name, value in [("hidden_layers", hidden_layers), ("units", units),
                        ("num_classes", num_classes), ("input_dim", input_dim)]:
        _check_positive_int(name, value)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
    k = len(seeds)
    inputs = keras.Input(shape=(k, input_dim), name="images")
    h = inputs
    for i in range(1, hidden_layers + 1):
        h = StackedDense(k, units, use_bias=normalization == "none", name=f"dense_{i}")(h)
        if normalization != "none":
            h = _norm_mlp_layer(normalization, f"norm_{i}", k, units, groups, momentum)(h)
        h = keras.layers.Activation(activation, name=f"{activation}_{i}")(h)
        if dropout:
            h = keras.layers.Dropout(dropout, seed=seeds[0] + i, name=f"dropout_{i}")(h)
    outputs = StackedDense(k, num_classes, name="logits")(h)
    model = keras.Model(inputs, outputs, name=f"mlp_{normalization}_x{k}")
    options = dict(normalization=normalization, hidden_layers=hidden_layers, units=units,
                   activation=activation, dropout=dropout, groups=groups, momentum=momentum,
                   num_classes=num_classes, input_dim=input_dim)
    return _finish(model, "build_norm_mlp", options, seeds, (input_dim,))


def build_norm_cnn_replicas(normalization="bn", *, seeds, filters=(8, 16), groups=4,
                            momentum=0.99, num_classes=10):
    """K replicas of :func:`course_lib.experiments.build_norm_cnn` in grouped convolutions.

    Inputs are stacked ``(batch, K, 28, 28, 1)`` like the MLPs'; the model moves the replicas
    to the channel axis, ``(batch, 28, 28, K)``, and every ``Conv2D(f, 3)`` becomes a
    :class:`StackedConv2D` ``(K * f, 3, groups=K)`` (:class:`StackedWSConv2D` for ``"ws+gn"``: it
    standardizes each output channel over its own replica's inputs). BN and BRN normalize per channel,
    so per replica; GN becomes ``GroupNormalization(K * groups)``; LN a
    :class:`ReplicaLayerNormalization` with the ``"channels"`` layout. Before the logits, each
    replica's ``(H, W, C)`` block is flattened in the single ``Flatten``'s order.

    Args:
        normalization: One of ``experiments.NORMALIZATIONS``.
        seeds: The replicas' seeds: K distinct integers.
        filters, groups, momentum, num_classes: As for ``build_norm_cnn``.

    Returns:
        An uncompiled ``keras.Model`` from ``(batch, K, 28, 28, 1)`` to logits
        ``(batch, K, num_classes)``, with a ``replica_spec`` attribute.
    """
    from course_lib import experiments

    seeds = _check_seeds(seeds)
    if normalization not in experiments.NORMALIZATIONS:
        raise ValueError(f"`normalization` must be one of {experiments.NORMALIZATIONS}. "
                         f"Received: normalization={normalization!r}")
    try:
        filters = tuple(filters)
    except TypeError:
        raise ValueError(f"`filters` must be a sequence of positive integers. "
                         f"Received: filters={filters!r}") from None
    for f in filters:
        _check_positive_int("filters", f)
    if normalization in ("gn", "ws+gn") and any(f % groups for f in filters):
        raise ValueError(f"`groups` must divide every entry of `filters`. "
                         f"Received: groups={groups!r}, filters={filters!r}")
    k = len(seeds)
    inputs = keras.Input(shape=(k, 28, 28, 1), name="images")
    h = keras.layers.Permute((2, 3, 1, 4), name="replicas_to_channels")(inputs)
    h = keras.layers.Reshape((28, 28, k), name="channels")(h)
    conv = StackedWSConv2D if normalization == "ws+gn" else StackedConv2D
    for i, f in enumerate(filters, start=1):
        h = conv(k * f, 3, groups=k, use_bias=normalization == "none", name=f"conv_{i}")(h)
        if normalization in ("bn", "brn"):
            h = experiments.normalization_layer(normalization, f"norm_{i}", momentum=momentum)(h)
        elif normalization in ("gn", "ws+gn"):
            h = experiments.normalization_layer("gn", f"norm_{i}", groups=k * groups)(h)
        elif normalization == "ln":
            h = ReplicaLayerNormalization(k, "channels", name=f"norm_{i}")(h)
        h = keras.layers.Activation("relu", name=f"relu_{i}")(h)
        h = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(h)
    _, height, width, channels = h.shape
    c = channels // k
    h = keras.layers.Reshape((height, width, k, c), name="split_replicas")(h)
    h = keras.layers.Permute((3, 1, 2, 4), name="replicas_first")(h)
    h = keras.layers.Reshape((k, height * width * c), name="flatten")(h)
    outputs = StackedDense(k, num_classes, name="logits")(h)
    model = keras.Model(inputs, outputs, name=f"cnn_{normalization.replace('+', '_')}_x{k}")
    options = dict(normalization=normalization, filters=filters, groups=groups,
                   momentum=momentum, num_classes=num_classes)
    return _finish(model, "build_norm_cnn", options, seeds, (28, 28, 1))


def _spec(model):
    spec = getattr(model, "replica_spec", None)
    if not isinstance(spec, ReplicaSpec):
        raise ValueError(
            "`model` must come from build_mlp_replicas, build_norm_mlp_replicas or "
            f"build_norm_cnn_replicas. Received: model={getattr(model, 'name', model)!r}")
    return spec


def extract_replica(model, k):
    """Replica ``k`` of a replicated model as a single model, with all its current state.

    The single model comes from the builder the replicated model mirrors (``build_mlp``,
    ``build_norm_mlp`` or ``build_norm_cnn``, with ``seed=seeds[k]``; it calls
    ``keras.utils.set_random_seed``), and receives replica ``k``'s slice of every weight:
    kernels, biases, ``gamma``, ``beta``, moving statistics. Evaluate it, check it, or keep
    training it like any model from that builder.

    Args:
        model: A model from one of the ``build_*_replicas`` functions.
        k: The replica's index, ``0 <= k < K``.

    Returns:
        An uncompiled ``keras.Model``.
    """
    spec = _spec(model)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k < spec.replicas:
        raise ValueError(f"`k` must be an integer in [0, {spec.replicas}). Received: k={k!r}")
    single = spec.build_single(int(k))
    for layer in single.layers:
        if layer.weights:
            source = model.get_layer(layer.name)
            layer.set_weights([_unstack(source, w, int(k), spec.replicas)
                               for w in source.get_weights()])
    return single


# --- Training ---------------------------------------------------------------------------------


@dataclasses.dataclass
class ReplicaRecord:
    """What :func:`fit_replicas` measured: one row per replica, one column per recording.

    Attributes:
        seeds: ``(K,)`` int array, the replicas' seeds (weights and mini-batches).
        steps: ``(r,)`` int array, the SGD steps taken at each recording (starts at 0).
        test_accuracy: ``(K, r)`` float array, each replica's fraction of test images classified
            correctly (inference mode); NaN when no test set was given.
        test_loss: ``(K, r)`` float array, each replica's mean test cross-entropy; NaN likewise.
        train_loss: ``(K, r)`` float array, each replica's mean training loss over the steps since
            the previous recording (NaN at step 0).
    """

    seeds: np.ndarray
    steps: np.ndarray
    test_accuracy: np.ndarray
    test_loss: np.ndarray
    train_loss: np.ndarray


def replica_batches(num_examples, steps, batch_size, seeds):
    """Every replica's mini-batch order: ``(steps, batch_size, K)`` indices.

    Column ``k`` is ``experiments.minibatch_indices(num_examples, steps, batch_size, seeds[k])``
    (the order ``sgd_fit(..., seed=seeds[k])`` uses), laid out so that ``x[idx[step]]`` is the
    stacked batch ``(batch_size, K, ...)`` of that step.
    """
    from course_lib.experiments import minibatch_indices

    seeds = _check_seeds(seeds)
    _check_positive_int("steps", steps)
    per_replica = [minibatch_indices(num_examples, steps, batch_size, s) for s in seeds]
    return np.stack(per_replica, axis=-1)


def _check_data(name_x, x, name_y, y, spec, dtype):
    x = np.asarray(x)
    y = np.asarray(y)
    if x.shape[1:] != spec.input_shape:
        raise ValueError(
            f"`{name_x}` must hold inputs of shape {spec.input_shape} (one single-model input "
            f"each; every replica sees the same data set). Received: {name_x}.shape={x.shape}")
    if y.shape != (len(x),):
        raise ValueError(f"`{name_y}` must hold one integer label per input. "
                         f"Received: {name_y}.shape={y.shape}, {name_x}.shape={x.shape}")
    return x.astype(dtype, copy=False), y.astype("int32", copy=False)


def _input_dtype(model):
    """The dtype of the model's input (``keras.config.floatx()`` when it was built)."""
    return keras.backend.standardize_dtype(model.inputs[0].dtype)


def _evaluator(model, k, jit_compile):
    import tensorflow as tf

    spec = model.replica_spec
    signature = [tf.TensorSpec([None, *spec.input_shape], _input_dtype(model)),
                 tf.TensorSpec([None], tf.int32)]

    @tf.function(jit_compile=jit_compile, input_signature=signature)
    def evaluate(x, y):
        stacked = tf.broadcast_to(x[:, None], [tf.shape(x)[0], k, *x.shape[1:]])
        logits = model(stacked, training=False)
        labels = tf.broadcast_to(y[:, None], [tf.shape(y)[0], k])
        losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), "float64")
        losses = tf.cast(losses, "float64")
        return tf.reduce_sum(correct, 0), tf.reduce_sum(losses, 0)

    return evaluate


def replica_accuracy(model, x, y, batch_size=1000):
    """Each replica's test accuracy and mean cross-entropy on the same ``x, y`` (inference mode).

    Returns:
        ``(accuracy, loss)``: two ``(K,)`` float arrays.
    """
    spec = _spec(model)
    x, y = _check_data("x", x, "y", y, spec, _input_dtype(model))
    _check_positive_int("batch_size", batch_size)
    with _QuietRetracing():
        return _evaluate(_evaluator(model, spec.replicas, False), x, y, spec.replicas, batch_size)


def _evaluate(evaluate, x, y, k, batch_size):
    correct, loss = np.zeros(k), np.zeros(k)
    for start in range(0, len(x), batch_size):
        c, l = evaluate(x[start:start + batch_size], y[start:start + batch_size])
        correct += c.numpy()
        loss += l.numpy()
    return correct / len(x), loss / len(x)


def _train_chunk_fn(model, x_all, y_all, learning_rate, batch_size, jit_compile):
    """A ``tf.function`` running a chunk of SGD steps in one graph loop.

    For a replicated model ``idx`` is ``(n, batch, K)`` and the function returns each replica's
    mean loss over the chunk, ``(K,)``; for a plain single model (the benchmark's baseline)
    ``idx`` is ``(n, batch)`` and it returns ``(1,)``. Any ``n`` runs on the same trace.
    """
    import tensorflow as tf

    variables = model.trainable_variables
    replicated = isinstance(getattr(model, "replica_spec", None), ReplicaSpec)
    k = model.replica_spec.replicas if replicated else 1

    def step(idx):
        xb = tf.gather(x_all, idx)  # (batch, K, ...): replica k's column is its own batch
        yb = tf.gather(y_all, idx)
        with tf.GradientTape() as tape:
            logits = model(xb, training=True)
            per_replica = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                yb, logits, from_logits=True), axis=0)  # (K,): each replica's mean loss
            loss = tf.reduce_sum(per_replica)  # sum: each replica keeps its own gradient
        grads = tape.gradient(loss, variables)
        for variable, grad in zip(variables, grads):
            # tf.constant, not tf.cast: a Python float would pass through float32 first.
            variable.assign_sub(tf.constant(learning_rate, variable.dtype) * grad)
        return tf.reshape(tf.cast(per_replica, "float64"), (k,))

    shape = [None, batch_size, k] if replicated else [None, batch_size]

    @tf.function(jit_compile=jit_compile, input_signature=[tf.TensorSpec(shape, tf.int32)])
    def train_chunk(idx):
        total = tf.zeros((k,), "float64")
        for i in tf.range(tf.shape(idx)[0]):
            total += step(idx[i])
        return total / tf.cast(tf.shape(idx)[0], "float64")

    return train_chunk


class _QuietRetracing:
    """Drop TensorFlow's "triggered tf.function retracing" warning while fit_replicas runs.

    Every call of :func:`fit_replicas` traces its own functions for its own model: expected, and
    not the mistake the warning is about. A chapter that trains several arms would otherwise get
    the warning on stderr, which fails the book's build.
    """

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()

    def __enter__(self):
        import logging

        logging.getLogger("tensorflow").addFilter(self)
        return self

    def __exit__(self, *exc):
        import logging

        logging.getLogger("tensorflow").removeFilter(self)


def fit_replicas(model, x_train, y_train, *, steps, x_test=None, y_test=None, batch_size=60,
                 learning_rate=0.5, record_every=100, batch_seeds=None, on_record=None,
                 jit_compile=False, eval_batch_size=1000):
    """Train every replica of ``model`` with plain SGD on its own mini-batches, in one graph.

    Replica ``k`` takes the steps ``experiments.sgd_fit(single_k, x_train, y_train, steps=steps,
    batch_size=batch_size, learning_rate=learning_rate, seed=batch_seeds[k])`` would take on
    ``single_k = extract_replica(model, k)``: same mini-batches, same softmax cross-entropy, SGD
    without momentum. The loss of a step is the sum over the replicas of each replica's mean
    loss, so each replica's gradient is its single-model gradient (see the module's docstring),
    and the results agree with K separate runs up to float32 rounding.

    ``record_every`` steps run per call of one compiled ``tf.function`` (a loop inside the graph,
    no Python between steps). At step 0, every ``record_every`` steps and after the last step it
    records, in inference mode, each replica's test accuracy and loss, then calls ``on_record``.

    Args:
        model: A model from one of the ``build_*_replicas`` functions; trained in place.
        x_train, y_train: Training inputs of the single model's shape (``(n, 784)`` for the MLPs,
            ``(n, 28, 28, 1)`` for the CNN) and integer labels; shared by all replicas, each
            drawing its own mini-batches.
        steps: Number of SGD steps.
        x_test, y_test: Optional test set for the recordings (both or neither).
        batch_size: Mini-batch size.
        learning_rate: SGD learning rate.
        record_every: Steps between two recordings (and per compiled call).
        batch_seeds: Seeds of the replicas' mini-batch orders; by default the replicas' own
            seeds (``model.replica_spec.seeds``), as ``sgd_fit(build(seed=s), ..., seed=s)``.
            Two arms of a paired comparison built with the same seeds thus see the same batches.
        on_record: Optional ``on_record(step, model)``, called after each recording (extract a
            replica, measure something else...).
        jit_compile: Compile the training loop and the evaluation with XLA. Off by default:
            on a 2-core CPU, XLA makes a step of the Figure 1 MLP 1.3 to 1.5 times faster
            (``make bench``, "replicas") but costs seconds of compilation per call, more than it
            saves in a chapter's few thousand steps, and it runs convolutions about 3 times
            slower than TensorFlow's own kernels.
        eval_batch_size: Test images per evaluation call.

    Returns:
        A :class:`ReplicaRecord` with ``(K, recordings)`` arrays.
    """
    import tensorflow as tf

    spec = _spec(model)
    _check_positive_int("steps", steps)
    _check_positive_int("record_every", record_every)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("eval_batch_size", eval_batch_size)
    if (isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real)
            or not math.isfinite(learning_rate) or learning_rate <= 0):
        raise ValueError(f"`learning_rate` must be a positive number. "
                         f"Received: learning_rate={learning_rate!r}")
    if (x_test is None) != (y_test is None):
        raise ValueError("`x_test` and `y_test` go together: give both or neither. "
                         f"Received: x_test={type(x_test).__name__}, y_test={type(y_test).__name__}")
    if on_record is not None and not callable(on_record):
        raise ValueError(f"`on_record` must be callable. Received: on_record={on_record!r}")
    dtype = _input_dtype(model)
    x_train, y_train = _check_data("x_train", x_train, "y_train", y_train, spec, dtype)
    if not batch_size <= len(x_train):
        raise ValueError("`batch_size` must be at most the number of training examples. "
                         f"Received: batch_size={batch_size}, num_examples={len(x_train)}")
    k = spec.replicas
    seeds = spec.seeds if batch_seeds is None else _check_seeds(batch_seeds)
    if len(seeds) != k:
        raise ValueError(f"`batch_seeds` must hold one seed per replica ({k}). "
                         f"Received: batch_seeds={batch_seeds!r}")
    if x_test is not None:
        x_test, y_test = _check_data("x_test", x_test, "y_test", y_test, spec, dtype)
        evaluate = _evaluator(model, k, jit_compile)

    batches = replica_batches(len(x_train), steps, batch_size, seeds).astype("int32")
    train_chunk = _train_chunk_fn(model, tf.constant(x_train), tf.constant(y_train),
                                  float(learning_rate), batch_size, jit_compile)
    rows = []

    def record(step, train_loss):
        if x_test is None:
            acc = loss = np.full(k, np.nan)
        else:
            acc, loss = _evaluate(evaluate, x_test, y_test, k, eval_batch_size)
        rows.append((step, acc, loss, train_loss))
        if on_record is not None:
            on_record(step, model)

    with _QuietRetracing():
        record(0, np.full(k, np.nan))
        for start in range(0, steps, record_every):
            chunk = batches[start:start + record_every]
            record(start + len(chunk), train_chunk(tf.constant(chunk)).numpy().astype(float))

    steps_, acc, loss, train = zip(*rows)
    return ReplicaRecord(seeds=np.array(seeds), steps=np.array(steps_),
                         test_accuracy=np.stack(acc, 1), test_loss=np.stack(loss, 1),
                         train_loss=np.stack(train, 1))


def matmul_flops_per_step(model, batch_size):
    """Floating-point operations of the matmuls and convolutions of one SGD step, all replicas.

    Counts 2 per multiply-add: the forward product of every ``StackedDense``/``Dense`` and
    convolution, and in the backward pass the kernel gradient of each and the input gradient of
    each but the first (nothing needs the gradient of the images). Normalizations, activations
    and the update are elementwise and left out (a few percent for these networks).
    """
    forward = backward = 0
    first = True
    for layer in model.layers:
        if isinstance(layer, (StackedDense, keras.layers.Dense)):
            shape = layer.kernel.shape
            flops = 2 * batch_size * math.prod(shape)
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, out = layer.output.shape
            kh, kw, cin, _ = layer.kernel.shape
            flops = 2 * batch_size * h * w * out * kh * kw * cin
        else:
            continue
        forward += flops
        backward += flops if first else 2 * flops
        first = False
    return forward + backward
