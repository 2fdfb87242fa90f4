"""Root Mean Square Layer Normalization (RMSNorm) as a Keras 3 layer, written with ``keras.ops``."""

import numbers

import keras
from keras import ops

from course_lib._common import compute_dtype as _compute_dtype
from course_lib._common import mean as _mean
from course_lib.layer_normalization import broadcast_weight, check_axis, normalized_axes, weight_shape


@keras.saving.register_keras_serializable(package="course_lib")
class RMSNormalization(keras.layers.Layer):
    """Divide each example by its root mean square, without centring (Zhang & Sennrich, 2019).

    A drop-in replacement for ``keras.layers.RMSNormalization``: the same arguments, defaults
    (``axis=-1``, ``epsilon=1e-6``), weight (``scale``, initialized to ones) and output:

    ```
    y = x / sqrt(mean(x**2) + epsilon) * scale        # mean over the axes in `axis`, per example
    ```

    Layer normalization without the mean: no ``beta`` and no subtraction, so one reduction
    instead of two. Like layer normalization it computes the same thing in training and at
    inference, for any batch size. ``scale`` has the shape of the normalized axes.

    Differences from Keras, none of which changes a result Keras computes correctly:

    * ``axis`` may name any axes, not only the trailing ones (Keras multiplies by ``scale``
      without reshaping it, which is wrong or fails for, e.g., ``axis=1`` of a rank-3 input).
    * ``axis`` is kept as given: Keras's ``build`` rewrites it into a sorted list, so its
      ``get_config()`` changes once the layer is built.
    * Bad arguments raise ``ValueError`` naming the argument and the value, at construction.
    * ``scale`` stays float32 under mixed precision (Keras rounds it to float16 before
      computing in float32), and a mask is passed on to the next layer (Keras drops it).

    Args:
        axis: Integer or list/tuple of integers, the axis or axes to normalize over (the
            feature axes). ``-1``, the default, is the last axis.
        epsilon: Positive float added to the mean square inside the square root.
        **kwargs: Base layer arguments (``name``, ``dtype``, ``trainable``...).

    Call arguments:
        inputs: A tensor of any rank >= 1.
        training: Ignored: RMSNorm behaves the same in training and inference.
        mask: Ignored by the statistics (each position is normalized over its own features);
            passed on to the next layer unchanged.

    Returns:
        A tensor of the same shape as ``inputs``, in the layer's compute dtype.

    Reference:
        Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019.
        https://arxiv.org/abs/1910.07467

    >>> import numpy as np
    >>> layer = RMSNormalization()
    >>> y = layer(np.array([[3.0, 4.0], [-6.0, 8.0]]))
    >>> np.round(np.asarray(y), 4)  # each row divided by sqrt(mean of squares): 3.5355, 7.0711
    array([[ 0.8485,  1.1314],
           [-0.8485,  1.1314]], dtype=float32)
    """

    def __init__(self, axis=-1, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        axis = check_axis(axis)
        if (isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real)
                or not epsilon > 0.0 or epsilon == float("inf")):
            raise ValueError(
                f"`epsilon` must be a positive finite number. Received: epsilon={epsilon!r}"
            )
        self.axis = axis
        self.epsilon = float(epsilon)
        self.supports_masking = True
        self.scale = None

    def build(self, input_shape):
        # autocast=False: under mixed precision `scale` stays float32 (call computes in float32).
        self.scale = self.add_weight(
            name="scale", shape=weight_shape(self.axis, input_shape), initializer="ones",
            autocast=False,
        )

    def call(self, inputs, training=None, mask=None):
        # The axes of *this* input: a layer built on rank 3 may be called on rank 4 (Keras's
        # own test does), and `axis=-1` must still mean the last axis.
        axes = normalized_axes(self.axis, inputs.shape)
        compute_dtype = _compute_dtype(inputs.dtype)  # float16 squares overflow: use float32
        x = ops.cast(inputs, compute_dtype)
        outputs = x * ops.rsqrt(_mean(ops.square(x), axes) + self.epsilon)
        scale = ops.cast(self.scale, compute_dtype)
        outputs = outputs * broadcast_weight(scale, self.axis, inputs.shape)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        normalized_axes(self.axis, input_shape)  # raises for an axis out of range
        return input_shape

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon}
