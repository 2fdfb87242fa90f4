"""Batch Normalization as a Keras 3 layer, written from scratch with ``keras.ops``."""

import keras
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")


@keras.saving.register_keras_serializable(package="course_lib")
class BatchNormalization(keras.layers.Layer):
    """Normalize each feature with mini-batch statistics while training (Ioffe & Szegedy, 2015).

    A drop-in replacement for ``keras.layers.BatchNormalization`` with the same arguments,
    defaults and behaviour, written in ``keras.ops`` only so that every step is visible:

    ```
    training:   mu, var = mean(x), mean((x - mu)**2)        # over every axis but `axis`
                moving_mean = moving_mean * momentum + mu  * (1 - momentum)
                moving_var  = moving_var  * momentum + var * (1 - momentum)
    inference:  mu, var = moving_mean, moving_var
    both:       y = gamma * (x - mu) / sqrt(var + epsilon) + beta
    ```

    The batch variance is the biased one (divides by m), in the normalization and in the
    moving average, exactly as Keras does. PyTorch differs in two conventions: its
    ``momentum=0.1`` is the weight of the *new* batch (Keras's 0.99 is PyTorch's 0.01), and
    its running variance stores the unbiased batch variance (m / (m - 1) times larger).

    Args:
        axis: Integer, the feature axis (channels). ``-1`` for channels-last data, ``1`` after
            a ``Conv2D`` with ``data_format="channels_first"``.
        momentum: Momentum of the moving averages, in ``[0, 1]``.
        epsilon: Positive float added to the variance inside the square root.
        center: If True, add the learned offset ``beta``.
        scale: If True, multiply by the learned scale ``gamma``.
        beta_initializer, gamma_initializer: Initializers of ``beta`` and ``gamma``.
        moving_mean_initializer, moving_variance_initializer: Initializers of the
            moving statistics.
        beta_regularizer, gamma_regularizer: Optional regularizers.
        beta_constraint, gamma_constraint: Optional constraints.
        **kwargs: Base layer arguments (``name``, ``dtype``, ``trainable``...).

    Call arguments:
        inputs: A tensor of any rank.
        training: If True, normalize with the batch statistics and update the moving ones.
            Otherwise (the default, and always when ``layer.trainable`` is False), normalize
            with the moving statistics. Setting ``trainable = False`` therefore puts the layer
            in inference mode, as in Keras: the usual choice when fine-tuning.
        mask: Optional boolean tensor with one dimension fewer than ``inputs`` (no feature
            axis). Masked-out positions do not count towards the batch statistics.

    Returns:
        A tensor of the same shape as ``inputs``, in the layer's compute dtype.

    Reference:
        Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by
        Reducing Internal Covariate Shift", ICML 2015. https://arxiv.org/abs/1502.03167

    >>> import numpy as np
    >>> layer = BatchNormalization()
    >>> y = layer(np.array([[1.0, 10.0], [3.0, 30.0]]), training=True)
    >>> np.round(np.asarray(y), 4)  # each column: mean 0, variance var / (var + epsilon)
    array([[-0.9995, -1.    ],
           [ 0.9995,  1.    ]], dtype=float32)
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"`axis` must be an integer. Received: axis={axis!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"`momentum` must be in [0, 1]. Received: momentum={momentum!r}")
        if not epsilon > 0.0:
            raise ValueError(f"`epsilon` must be positive. Received: epsilon={epsilon!r}")
        _check_bool("center", center)
        _check_bool("scale", scale)
        self.axis = axis
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.supports_masking = True
        self.gamma = None
        self.beta = None

    def build(self, input_shape):
        ndim = len(input_shape)
        if not -ndim <= self.axis < ndim:
            raise ValueError(
                f"`axis` is out of range for inputs of rank {ndim}. "
                f"Received: axis={self.axis}, input_shape={tuple(input_shape)}"
            )
        self._axis = self.axis % ndim
        channels = input_shape[self._axis]
        if channels is None:
            raise ValueError(
                "The feature axis of the input must have a known size. "
                f"Received: axis={self.axis}, input_shape={tuple(input_shape)}"
            )
        self._reduction_axes = [a for a in range(ndim) if a != self._axis]
        shape = (channels,)
        # autocast=False: under mixed precision the parameters and statistics stay float32.
        if self.scale:
            self.gamma = self.add_weight(
                shape=shape,
                name="gamma",
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
                autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                shape=shape,
                name="beta",
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
                autocast=False,
            )
        self.moving_mean = self.add_weight(
            shape=shape,
            name="moving_mean",
            initializer=self.moving_mean_initializer,
            trainable=False,
            autocast=False,
        )
        self.moving_variance = self.add_weight(
            shape=shape,
            name="moving_variance",
            initializer=self.moving_variance_initializer,
            trainable=False,
            autocast=False,
        )
        self.input_spec = keras.layers.InputSpec(ndim=ndim, axes={self._axis: channels})

    def _broadcast(self, v, ndim):
        shape = [1] * ndim
        shape[self._axis] = -1
        return ops.reshape(v, shape)

    def _moments(self, x, mask):
        """Per-feature batch mean and biased variance, counting only unmasked positions."""
        if mask is None:
            mean = ops.mean(x, axis=self._reduction_axes)
            centred = x - self._broadcast(mean, len(x.shape))
            var = ops.mean(ops.square(centred), axis=self._reduction_axes)
            return mean, var
        weights = ops.cast(ops.expand_dims(mask, axis=self._axis), x.dtype)
        weights = ops.broadcast_to(weights, ops.shape(x))
        count = ops.sum(weights, axis=self._reduction_axes) + keras.config.epsilon()
        mean = ops.sum(x * weights, axis=self._reduction_axes) / count
        centred = (x - self._broadcast(mean, len(x.shape))) * weights
        var = ops.sum(ops.square(centred), axis=self._reduction_axes) / count
        return mean, var

    def call(self, inputs, training=None, mask=None):
        ndim = len(inputs.shape)
        if mask is not None and len(mask.shape) != ndim - 1:
            raise ValueError(
                "`mask` must have one dimension fewer than the inputs. "
                f"Received: mask.shape={tuple(mask.shape)}, inputs.shape={tuple(inputs.shape)}"
            )
        # float16/bfloat16 statistics overflow easily: compute in at least float32.
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, compute_dtype)

        if training and self.trainable:
            mean, var = self._moments(x, mask)
            m = self.momentum
            self.moving_mean.assign(
                ops.cast(self.moving_mean, compute_dtype) * m + mean * (1.0 - m)
            )
            self.moving_variance.assign(
                ops.cast(self.moving_variance, compute_dtype) * m + var * (1.0 - m)
            )
        else:
            mean = ops.cast(self.moving_mean, compute_dtype)
            var = ops.cast(self.moving_variance, compute_dtype)

        # y = gamma * (x - mean) / sqrt(var + eps) + beta, folded into one scale and offset.
        inv = ops.rsqrt(var + self.epsilon)
        if self.scale:
            inv = inv * ops.cast(self.gamma, compute_dtype)
        offset = -mean * inv
        if self.center:
            offset = offset + ops.cast(self.beta, compute_dtype)
        outputs = x * self._broadcast(inv, ndim) + self._broadcast(offset, ndim)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": initializers.serialize(
                self.moving_variance_initializer
            ),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
        }
        return {**super().get_config(), **config}
