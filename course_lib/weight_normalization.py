"""Weight Normalization: a Keras 3 wrapper that writes a kernel as a length times a direction."""

import keras
from keras import ops

_SUPPORTED = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


@keras.saving.register_keras_serializable(package="course_lib")
class WeightNormalization(keras.layers.Wrapper):
    """Learn each unit's weight length ``g`` apart from its direction (Salimans & Kingma, 2016).

    Wraps a ``Dense`` or ``Conv1D/2D/3D`` layer, whose ``kernel`` becomes the unnormalized
    direction ``v``; the wrapper adds one length ``g`` per output unit and computes with

    ```
    w[..., k] = g[k] * v[..., k] / ||v[..., k]||     # norm over every kernel axis but the last
    y = activation(x (*) w + b)                      # (*): the wrapped layer's matmul or conv
    g = ||v|| at build, so the wrapped layer initially computes the same function.

    data_init=True, first call with training=True, on that batch:
    t = x (*) (v / ||v||);   mu, sigma = mean(t), std(t)   # per output unit
    g = 1 / sigma,  b = -mu / sigma   =>   the pre-activations have mean 0, variance 1
    ```

    The gradient of the loss with respect to ``v`` is orthogonal to ``v`` and scaled by
    ``g / ||v||``: the length of a unit is learned by ``g`` alone. The data-dependent
    initialization is done once (a non-trainable flag ``initialized`` is saved with the
    weights). Do it with one eager call, ``model(x_init, training=True)``, before
    ``model.fit``: the JAX trainer discards assignments to trainable weights (``g``, ``b``)
    made inside its compiled step. Without a bias (``use_bias=False``) only ``g`` is set.

    Args:
        layer: A ``keras.layers.Dense``, ``Conv1D``, ``Conv2D`` or ``Conv3D`` layer. Its
            ``activation`` is applied after the normalized linear map.
        data_init: If True, initialize ``g`` and the bias from the statistics of the first
            training batch, as in section 3 of the paper.
        **kwargs: Base layer arguments (``name``, ``trainable``...). ``dtype`` defaults to
            the wrapped layer's dtype policy.

    Call arguments:
        inputs: The input of the wrapped layer.
        training: If True and ``data_init`` is True, the first such call does the
            data-dependent initialization. Otherwise ignored.
        mask: Ignored.

    Returns:
        The wrapped layer's output, computed with the normalized kernel, in the wrapped
        layer's compute dtype.

    Reference:
        Salimans & Kingma, "Weight Normalization: A Simple Reparameterization to Accelerate
        Training of Deep Neural Networks", NeurIPS 2016. https://arxiv.org/abs/1602.07868

    >>> import numpy as np
    >>> layer = WeightNormalization(keras.layers.Dense(2, kernel_initializer="ones"))
    >>> y = layer(np.array([[1.0, 2.0]]))      # g = ||v|| at first: y = x @ v
    >>> layer.g.numpy().round(4), np.asarray(y).round(4)
    (array([1.4142, 1.4142], dtype=float32), array([[3., 3.]], dtype=float32))
    """

    def __init__(self, layer, data_init=False, **kwargs):
        if not isinstance(layer, _SUPPORTED):
            raise ValueError(
                "`layer` must be a keras.layers.Dense, Conv1D, Conv2D or Conv3D layer. "
                f"Received: layer={layer!r}"
            )
        if not isinstance(data_init, bool):
            raise ValueError(
                f"`data_init` must be True or False. Received: data_init={data_init!r}"
            )
        # By default the wrapper computes in the wrapped layer's dtype (float64, mixed_float16...).
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self.data_init = data_init
        # Read the wrapped layer's float32 weights unrounded; cast to its compute dtype by hand.
        self.autocast = False
        self.g = None
        self.initialized = None

    def build(self, input_shape=None):
        super().build(input_shape)  # builds the wrapped layer: its kernel is v
        kernel = self.layer.kernel
        self._norm_axes = list(range(len(kernel.shape) - 1))
        if isinstance(self.layer, keras.layers.Dense) or self.layer.data_format == "channels_last":
            self._channel_axis = -1
        else:
            self._channel_axis = 1

        def length_of_v(shape, dtype=None):
            return ops.cast(ops.sqrt(ops.sum(ops.square(kernel), axis=self._norm_axes)), dtype)

        self.g = self.add_weight(
            shape=(kernel.shape[-1],), name="g", initializer=length_of_v, dtype=kernel.dtype
        )
        if self.data_init:
            self.initialized = self.add_weight(
                shape=(), name="initialized", initializer="zeros", dtype="bool", trainable=False
            )

    def _linear(self, x, kernel):
        """The wrapped layer's linear map (no bias, no activation) with another kernel."""
        layer = self.layer
        if isinstance(layer, keras.layers.Dense):
            return ops.matmul(x, kernel)
        padding = layer.padding
        if padding == "causal":  # Conv1D: pad on the left only, then a valid convolution
            pad = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
            spatial = 1 if layer.data_format == "channels_last" else 2
            widths = [[0, 0], [0, 0], [0, 0]]
            widths[spatial] = [pad, 0]
            x, padding = ops.pad(x, widths), "valid"
        return ops.conv(
            x,
            kernel,
            strides=list(layer.strides),
            padding=padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )

    def _per_unit(self, v, ndim):
        shape = [1] * ndim
        shape[self._channel_axis] = -1
        return ops.reshape(v, shape)

    def call(self, inputs, training=None, mask=None):
        dtype = self.layer.compute_dtype
        v = ops.copy(self.layer.kernel)
        direction = v * ops.rsqrt(
            ops.maximum(ops.sum(ops.square(v), axis=self._norm_axes, keepdims=True), 1e-12)
        )
        x = ops.cast(inputs, dtype)
        # ops.copy: tensors, not the Variables themselves (which ops.cond cannot return on TF).
        g = ops.copy(self.g)
        bias = ops.copy(self.layer.bias) if self.layer.use_bias else None

        if self.data_init and training:

            def from_this_batch():
                # Statistics in float32 at least (float64 stays float64: not ops.mean/ops.var,
                # which Keras's JAX backend computes in float32).
                stats_dtype = "float64" if dtype == "float64" else "float32"
                t = ops.cast(self._linear(x, ops.cast(direction, dtype)), stats_dtype)
                axes = [a for a in range(len(t.shape)) if a != self._channel_axis % len(t.shape)]
                count = 1
                for a in axes:
                    count = count * ops.shape(t)[a]
                count = ops.cast(count, stats_dtype)
                mean = ops.sum(t, axis=axes, keepdims=True) / count
                var = ops.sum(ops.square(t - mean), axis=axes) / count
                mean = ops.reshape(mean, (-1,))
                inv_std = ops.rsqrt(var + keras.config.epsilon())
                new_g = ops.stop_gradient(ops.cast(inv_std, g.dtype))
                if bias is None:
                    return new_g
                return new_g, ops.stop_gradient(ops.cast(-mean * inv_std, bias.dtype))

            def as_they_are():
                return g if bias is None else (g, bias)

            values = ops.cond(ops.copy(self.initialized), as_they_are, from_this_batch)
            g, bias = (values, None) if bias is None else values
            self.g.assign(g)
            if bias is not None:
                self.layer.bias.assign(bias)
            self.initialized.assign(True)

        kernel = ops.cast(direction * g, dtype)  # g broadcasts over the last (output) axis
        outputs = self._linear(x, kernel)
        if bias is not None:
            outputs = outputs + self._per_unit(ops.cast(bias, dtype), len(outputs.shape))
        if self.layer.activation is not None:
            outputs = self.layer.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = {"data_init": self.data_init}
        return {**super().get_config(), **config}
