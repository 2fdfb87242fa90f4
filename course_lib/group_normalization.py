"""Group Normalization as a Keras 3 layer, written from scratch with ``keras.ops``."""

import keras
from keras import constraints, initializers, ops, regularizers

from course_lib._common import check_bool as _check_bool
from course_lib._common import compute_dtype as _compute_dtype
from course_lib._common import mean as _mean


@keras.saving.register_keras_serializable(package="course_lib")
class GroupNormalization(keras.layers.Layer):
    """Normalize each example over groups of channels and all spatial positions (Wu & He, 2018).

    A drop-in replacement for ``keras.layers.GroupNormalization`` with the same arguments and
    defaults. The ``C`` channels are split into ``groups`` consecutive groups of ``C / groups``
    channels; each example is normalized with the statistics of each of its groups:

    ```
    x: (N, H, W, C)  ->  (N, H, W, G, C/G)
    mu, var = mean(x), mean((x - mu)**2)           # per (example, group): over H, W, C/G
    y = gamma * (x - mu) / sqrt(var + epsilon) + beta   # gamma, beta: one per channel
    ```

    No statistic involves another example, so training and inference agree and any batch
    size works. ``groups=1`` normalizes over all of (H, W, C) (like Layer Normalization over
    those axes, but with per-channel ``gamma``/``beta``); ``groups=-1`` means one channel per
    group, which is Instance Normalization.

    Args:
        groups: Positive integer that divides the number of channels, or ``-1`` for one group
            per channel.
        axis: Integer, the channel axis. ``-1`` for channels-last data, ``1`` for
            ``data_format="channels_first"``. Axis 0 (the batch) is not allowed.
        epsilon: Positive float added to the variance inside the square root.
        center: If True, add the learned offset ``beta``.
        scale: If True, multiply by the learned scale ``gamma``.
        beta_initializer, gamma_initializer: Initializers of ``beta`` and ``gamma``.
        beta_regularizer, gamma_regularizer: Optional regularizers.
        beta_constraint, gamma_constraint: Optional constraints.
        **kwargs: Base layer arguments (``name``, ``dtype``, ``trainable``...).

    Call arguments:
        inputs: A tensor of rank 2 or more, the batch on axis 0.
        training: Ignored: group normalization behaves the same in training and inference.
        mask: Ignored by the statistics; passed on to the next layer unchanged.

    Returns:
        A tensor of the same shape as ``inputs``, in the layer's compute dtype.

    Reference:
        Wu & He, "Group Normalization", ECCV 2018. https://arxiv.org/abs/1803.08494

    >>> import numpy as np
    >>> layer = GroupNormalization(groups=2)
    >>> x = np.array([[1.0, 3.0, 10.0, 30.0]])  # groups (1, 3) and (10, 30)
    >>> np.round(np.asarray(layer(x)), 4)
    array([[-0.9995,  0.9995, -1.    ,  1.    ]], dtype=float32)
    """

    def __init__(
        self,
        groups=32,
        axis=-1,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Under mixed precision, inputs beyond float16's range (~65504) must reach the float32
        # statistics intact rather than be cast to inf first.
        self.autocast = False
        if isinstance(groups, bool) or not isinstance(groups, int) or not (
            groups > 0 or groups == -1
        ):
            raise ValueError(
                "The argument `groups` must be a positive integer, or -1 for one group per "
                f"channel. Received: groups={groups!r}"
            )
        if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
            raise ValueError(
                f"`axis` must be an integer other than 0 (the batch axis). Received: axis={axis!r}"
            )
        if not epsilon > 0.0:
            raise ValueError(f"`epsilon` must be positive. Received: epsilon={epsilon!r}")
        _check_bool("center", center)
        _check_bool("scale", scale)
        self.groups = groups
        self.axis = axis
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.supports_masking = True
        self.gamma = None
        self.beta = None

    def build(self, input_shape):
        ndim = len(input_shape)
        if not -ndim <= self.axis < ndim or self.axis % ndim == 0:
            raise ValueError(
                f"`axis` is out of range (or is the batch axis) for inputs of rank {ndim}. "
                f"Received: axis={self.axis}, input_shape={tuple(input_shape)}"
            )
        self._axis = self.axis % ndim
        c = input_shape[self._axis]
        if c is None:
            raise ValueError(
                f"Axis {self.axis} of the input tensor should have a defined dimension but the "
                f"layer received an input with shape {tuple(input_shape)}. Received: axis={self.axis}"
            )
        # `self.groups` keeps -1 so that get_config() round-trips; `_groups` is the real count.
        groups = c if self.groups == -1 else self.groups
        if groups > c:
            raise ValueError(
                f"`groups` ({groups}) cannot be more than the number of channels ({c}). "
                f"Received: groups={self.groups}, channels={c}"
            )
        if c % groups != 0:
            raise ValueError(
                "`groups` must divide the channel count. "
                f"Received: groups={self.groups}, channels={c}"
            )
        self._groups = groups
        # autocast=False: under mixed precision the parameters stay float32.
        if self.scale:
            self.gamma = self.add_weight(
                shape=(c,),
                name="gamma",
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
                autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                shape=(c,),
                name="beta",
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
                autocast=False,
            )
        self.input_spec = keras.layers.InputSpec(ndim=ndim, axes={self._axis: c})

    def _broadcast(self, v, ndim):
        shape = [1] * ndim
        shape[self._axis] = -1
        return ops.reshape(v, shape)

    def call(self, inputs, training=None, mask=None):
        ndim = len(inputs.shape)
        compute_dtype = _compute_dtype(inputs.dtype)
        x = ops.cast(inputs, compute_dtype)

        # Split the channel axis into (groups, channels per group): (N, ..., G, C/G, ...).
        # Unknown sizes (the batch, variable spatial sizes) are read from the running tensor.
        shape = [
            ops.shape(inputs)[i] if size is None else size for i, size in enumerate(inputs.shape)
        ]
        c = shape[self._axis]
        grouped_shape = shape[: self._axis] + [self._groups, c // self._groups]
        grouped_shape += shape[self._axis + 1 :]
        grouped = ops.reshape(x, grouped_shape)
        # Reduce over everything but the batch (0) and the group axis (self._axis).
        axes = [a for a in range(1, ndim + 1) if a != self._axis]
        mean = _mean(grouped, axes)
        centred = grouped - mean
        var = _mean(ops.square(centred), axes)
        normalized = ops.reshape(centred * ops.rsqrt(var + self.epsilon), ops.shape(x))

        if self.scale:
            normalized = normalized * self._broadcast(ops.cast(self.gamma, compute_dtype), ndim)
        if self.center:
            normalized = normalized + self._broadcast(ops.cast(self.beta, compute_dtype), ndim)
        return ops.cast(normalized, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {
            "groups": self.groups,
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
        }
        return {**super().get_config(), **config}
