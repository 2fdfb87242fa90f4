"""Instance Normalization: Group Normalization with one channel per group."""

import keras

from course_lib.group_normalization import GroupNormalization


@keras.saving.register_keras_serializable(package="course_lib")
class InstanceNormalization(GroupNormalization):
    """Normalize each channel of each example over its spatial positions (Ulyanov et al., 2016).

    Group Normalization with ``groups=-1`` (one channel per group), under its own name so that
    a model says what it means and a ``.keras`` file stores ``InstanceNormalization``:

    ```
    x: (N, H, W, C)
    mu, var = mean(x), mean((x - mu)**2)           # per (example, channel): over H, W
    y = gamma * (x - mu) / sqrt(var + epsilon) + beta   # gamma, beta: one per channel
    ```

    Each image is normalized on its own, in training and at inference alike: the contrast of
    the content image is removed, which is why style transfer uses it. Without spatial axes
    (inputs of rank 2) every statistic would be over one number and the output would be
    ``beta``, so such inputs are refused. PyTorch's ``InstanceNorm2d`` uses ``eps=1e-5``,
    ``affine=False`` by default (``center=False, scale=False`` here) and can keep running
    statistics; this layer never does.

    Args:
        axis: Integer, the channel axis. ``-1`` for channels-last data, ``1`` for
            ``data_format="channels_first"``.
        epsilon: Positive float added to the variance inside the square root.
        center: If True, add the learned offset ``beta``.
        scale: If True, multiply by the learned scale ``gamma``.
        beta_initializer, gamma_initializer: Initializers of ``beta`` and ``gamma``.
        beta_regularizer, gamma_regularizer: Optional regularizers.
        beta_constraint, gamma_constraint: Optional constraints.
        **kwargs: Base layer arguments (``name``, ``dtype``, ``trainable``...).

    Call arguments:
        inputs: A tensor of rank 3 or more: batch, spatial axes and the channel axis.
        training: Ignored: instance normalization behaves the same in training and inference.
        mask: Ignored by the statistics; passed on to the next layer unchanged.

    Returns:
        A tensor of the same shape as ``inputs``, in the layer's compute dtype.

    Reference:
        Ulyanov, Vedaldi & Lempitsky, "Instance Normalization: The Missing Ingredient for Fast
        Stylization", 2016. https://arxiv.org/abs/1607.08022

    >>> import numpy as np
    >>> layer = InstanceNormalization()
    >>> x = np.array([[[1.0, 10.0], [3.0, 30.0]]])  # (N=1, W=2, C=2)
    >>> np.round(np.asarray(layer(x))[0], 4)  # each channel over its 2 positions
    array([[-0.9995, -1.    ],
           [ 0.9995,  1.    ]], dtype=float32)
    """

    def __init__(
        self,
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
        if "groups" in kwargs:
            raise ValueError(
                "`groups` is fixed to one group per channel in InstanceNormalization; use "
                f"GroupNormalization for other groupings. Received: groups={kwargs['groups']!r}"
            )
        super().__init__(
            groups=-1,
            axis=axis,
            epsilon=epsilon,
            center=center,
            scale=scale,
            beta_initializer=beta_initializer,
            gamma_initializer=gamma_initializer,
            beta_regularizer=beta_regularizer,
            gamma_regularizer=gamma_regularizer,
            beta_constraint=beta_constraint,
            gamma_constraint=gamma_constraint,
            **kwargs,
        )

    def build(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(
                "InstanceNormalization needs inputs with at least one spatial axis "
                f"(rank >= 3). Received: input_shape={tuple(input_shape)}"
            )
        super().build(input_shape)

    def get_config(self):
        config = super().get_config()
        del config["groups"]
        return config
