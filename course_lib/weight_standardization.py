"""Weight Standardization: a Conv2D whose kernel is standardized before every convolution."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="course_lib")
class WSConv2D(keras.layers.Conv2D):
    """A ``Conv2D`` that standardizes each filter before convolving (Qiao et al., 2019).

    The stored ``kernel`` is left as it is; the convolution uses, for each output channel
    ``k``, its standardized version (over the kernel's height, width and input channels):

    ```
    mu[k], var[k] = mean(W[:, :, :, k]), mean((W[:, :, :, k] - mu[k])**2)
    W_hat[:, :, :, k] = (W[:, :, :, k] - mu[k]) / sqrt(var[k] + epsilon)
    y = activation(conv(x, W_hat) + bias)
    ```

    Standardizing the weights (zero mean, unit variance per filter) smooths the loss landscape
    the way Batch Normalization does for activations, without batch statistics: it is meant
    to be followed by ``GroupNormalization`` (or ``LayerNormalization``), which train well with
    micro-batches. The variance is the biased one; the authors' code divides by the unbiased
    standard deviation plus 1e-5, and timm's ``StdConv2d`` uses ``eps=1e-6``: the differences
    are of order ``1 / fan_in``. The gradient flows through the standardization to ``W``.

    Args:
        filters, kernel_size, ...: Every argument of ``keras.layers.Conv2D``, with its default.
        epsilon: Positive float added to the kernel variance. It must be small next to
            that variance, about ``1 / fan_in`` under Keras's default initializers.

    Call arguments:
        inputs: A 4-D tensor, as for ``Conv2D``.
        training: Ignored (the standardization is the same in training and inference).
        mask: Ignored.

    Returns:
        The 4-D output of the convolution with the standardized kernel.

    Reference:
        Qiao, Wang, Liu, Shen & Yuille, "Micro-Batch Training with Batch-Channel Normalization
        and Weight Standardization", 2019. https://arxiv.org/abs/1903.10520

    >>> import numpy as np
    >>> conv = WSConv2D(1, 2, use_bias=False, kernel_initializer="ones")
    >>> conv.build((None, 2, 2, 1))
    >>> _ = conv.kernel.assign(np.array([1.0, 2.0, 3.0, 4.0]).reshape(2, 2, 1, 1))
    >>> x = np.array([1.0, 0.0, 0.0, 0.0]).reshape(1, 2, 2, 1)  # picks W_hat[0, 0]
    >>> np.round(np.asarray(conv(x)).ravel(), 4)  # (1 - 2.5) / sqrt(1.25 + 1e-5)
    array([-1.3416], dtype=float32)
    """

    def __init__(self, *args, epsilon=1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
            raise ValueError(f"`epsilon` must be positive. Received: epsilon={epsilon!r}")
        self.epsilon = float(epsilon)

    def standardized_kernel(self, kernel=None):
        """The kernel the convolution uses: ``kernel`` (default ``self.kernel``) standardized."""
        kernel = ops.convert_to_tensor(self.kernel if kernel is None else kernel)
        # Statistics in at least float32, even when mixed precision gives a float16 kernel.
        # (Not keras.backend.result_type(dtype, "float32"), nor ops.mean: on JAX, Keras
        # computes those in float32 even for float64.)
        float64 = keras.backend.standardize_dtype(kernel.dtype) == "float64"
        compute_dtype = "float64" if float64 else "float32"
        w = ops.cast(kernel, compute_dtype)
        axes = list(range(len(w.shape) - 1))  # (kh, kw, in/groups); the last axis is out
        count = float(np.prod(w.shape[:-1]))
        mean = ops.sum(w, axis=axes, keepdims=True) / count
        centred = w - mean
        var = ops.sum(ops.square(centred), axis=axes, keepdims=True) / count
        return ops.cast(centred * ops.rsqrt(var + self.epsilon), kernel.dtype)

    def convolution_op(self, inputs, kernel):
        # Conv2D.call passes self.kernel here; every other step (bias, activation) is Conv2D's.
        return super().convolution_op(inputs, self.standardized_kernel(kernel))

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs)

    def get_config(self):
        config = {"epsilon": self.epsilon}
        return {**super().get_config(), **config}
