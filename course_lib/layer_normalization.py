"""Layer Normalization as a Keras 3 layer, written from scratch with ``keras.ops``."""

import keras
from keras import constraints, initializers, ops, regularizers

from course_lib._common import check_bool as _check_bool
from course_lib._common import compute_dtype as _compute_dtype
from course_lib._common import mean as _mean


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def check_axis(axis):
    """``axis`` as the per-example normalization layers keep it (an int, or a list of ints);
    ValueError naming the value otherwise."""
    if isinstance(axis, (list, tuple)) and axis and all(_is_int(a) for a in axis):
        return list(axis)
    if _is_int(axis):
        return axis
    raise ValueError(
        f"`axis` must be an integer or a non-empty list of integers. Received: axis={axis!r}"
    )


def normalized_axes(axis, input_shape):
    """The axes ``axis`` names in an input of shape ``input_shape``, sorted and non-negative.

    Resolved against each input's own rank, as Keras resolves them: a negative axis counts
    from the last, so a layer built on a rank-3 input with ``axis=-1`` normalizes the last
    axis of a rank-4 input too.
    """
    ndim = len(input_shape)
    given = axis if isinstance(axis, list) else [axis]
    for a in given:
        if not -ndim <= a < ndim:
            raise ValueError(
                f"`axis` is out of range for inputs of rank {ndim}. "
                f"Received: axis={axis}, input_shape={tuple(input_shape)}"
            )
    axes = sorted({a % ndim for a in given})
    if len(axes) != len(given):
        raise ValueError(f"`axis` names an axis twice. Received: axis={axis}")
    return axes


def weight_shape(axis, input_shape):
    """The shape of a per-feature weight: the sizes of the normalized axes, which must be known."""
    shape = tuple(input_shape[a] for a in normalized_axes(axis, input_shape))
    if None in shape:
        raise ValueError(
            "The normalized axes of the input must have a known size. "
            f"Received: axis={axis}, input_shape={tuple(input_shape)}"
        )
    return shape


def broadcast_weight(v, axis, input_shape):
    """Reshape a per-feature weight to broadcast against an input of shape ``input_shape``.

    A layer may be called on inputs of another rank than the one it was built on (Keras's
    layers allow it): the normalized axes are those ``axis`` names in this input, and their
    sizes must be the weight's. Where they differ Keras fails in a reshape; here a ValueError
    names ``axis`` and the shapes.
    """
    axes = normalized_axes(axis, input_shape)
    sizes = tuple(input_shape[a] for a in axes)
    if any(n is not None and n != size for n, size in zip(sizes, v.shape)):
        raise ValueError(
            f"The axes `axis` names in this input have sizes {sizes}; the layer was built for "
            f"sizes {tuple(v.shape)}. Received: axis={axis}, input_shape={tuple(input_shape)}"
        )
    shape = [1] * len(input_shape)
    for a, size in zip(axes, v.shape):
        shape[a] = size
    return ops.reshape(v, shape)


@keras.saving.register_keras_serializable(package="course_lib")
class LayerNormalization(keras.layers.Layer):
    """Normalize each example over its own features, not over the batch (Ba et al., 2016).

    A drop-in replacement for ``keras.layers.LayerNormalization`` with the same arguments and
    defaults. The statistics are those of one example, so the layer computes the same thing in
    training and at inference, for any batch size (a batch of one included):

    ```
    mu, var = mean(x), mean((x - mu)**2)          # per example, over the axes in `axis`
    y = gamma * (x - mu) / sqrt(var + epsilon) + beta
    rms_scaling=True:  y = gamma * x / sqrt(mean(x**2) + epsilon)      # no centering, no beta
    ```

    ``gamma`` and ``beta`` have the shape of the normalized axes (one value per feature).
    As in Keras, ``axis`` names the axes of each input the layer is called on (a negative axis
    counts from the last), so a layer built on one rank may be called on another where those
    axes have the sizes it was built for; where they do not, Keras fails in a reshape and this
    layer raises a ``ValueError`` naming ``axis`` and the input's shape.
    ``rms_scaling`` divides by the root mean square, as RMSNorm (Zhang & Sennrich, 2019) does
    and as ``keras.layers.RMSNormalization`` computes. Keras's own (deprecated)
    ``rms_scaling=True`` divides by the standard deviation instead; we do not copy that bug.

    Args:
        axis: Integer or list/tuple of integers, the axis or axes to normalize over (the
            feature axes). ``-1``, the default, is the last axis.
        epsilon: Positive float added to the variance inside the square root.
        center: If True, add the learned offset ``beta``.
        scale: If True, multiply by the learned scale ``gamma``.
        rms_scaling: If True, RMSNorm: divide by the root mean square without subtracting the
            mean; ``gamma`` is used (even when ``scale=False``) and ``beta`` is not.
        beta_initializer, gamma_initializer: Initializers of ``beta`` and ``gamma``.
        beta_regularizer, gamma_regularizer: Optional regularizers.
        beta_constraint, gamma_constraint: Optional constraints.
        **kwargs: Base layer arguments (``name``, ``dtype``, ``trainable``...).

    Call arguments:
        inputs: A tensor of any rank.
        training: Ignored: layer normalization behaves the same in training and inference.
        mask: Ignored by the statistics; passed on to the next layer unchanged.

    Returns:
        A tensor of the same shape as ``inputs``, in the layer's compute dtype.

    Reference:
        Ba, Kiros & Hinton, "Layer Normalization", 2016. https://arxiv.org/abs/1607.06450

    >>> import numpy as np
    >>> layer = LayerNormalization()
    >>> y = layer(np.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]]))
    >>> np.round(np.asarray(y), 3)  # each row: mean 0, variance var / (var + epsilon)
    array([[-1.224,  0.   ,  1.224],
           [-1.225,  0.   ,  1.225]], dtype=float32)
    """

    def __init__(
        self,
        axis=-1,
        epsilon=1e-3,
        center=True,
        scale=True,
        rms_scaling=False,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        axis = check_axis(axis)
        if not epsilon > 0.0:
            raise ValueError(f"`epsilon` must be positive. Received: epsilon={epsilon!r}")
        _check_bool("center", center)
        _check_bool("scale", scale)
        _check_bool("rms_scaling", rms_scaling)
        self.axis = axis
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.rms_scaling = rms_scaling
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
        shape = weight_shape(self.axis, input_shape)
        # autocast=False: under mixed precision the parameters stay float32.
        if self.scale or self.rms_scaling:
            self.gamma = self.add_weight(
                shape=shape,
                name="gamma",
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
                autocast=False,
            )
        if self.center and not self.rms_scaling:
            self.beta = self.add_weight(
                shape=shape,
                name="beta",
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
                autocast=False,
            )

    def call(self, inputs, training=None, mask=None):
        # The axes `axis` names in *this* input: it may have another rank than the one the
        # layer was built on, as in Keras.
        axes = normalized_axes(self.axis, inputs.shape)
        compute_dtype = _compute_dtype(inputs.dtype)
        x = ops.cast(inputs, compute_dtype)
        if self.rms_scaling:
            outputs = x * ops.rsqrt(_mean(ops.square(x), axes) + self.epsilon)
        else:
            mean = _mean(x, axes)
            centred = x - mean  # centre first: x * inv - mean * inv cancels badly for |x| >> std
            var = _mean(ops.square(centred), axes)
            outputs = centred * ops.rsqrt(var + self.epsilon)
        if self.gamma is not None:
            gamma = ops.cast(self.gamma, compute_dtype)
            outputs = outputs * broadcast_weight(gamma, self.axis, inputs.shape)
        if self.beta is not None:
            beta = ops.cast(self.beta, compute_dtype)
            outputs = outputs + broadcast_weight(beta, self.axis, inputs.shape)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "rms_scaling": self.rms_scaling,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
            "beta_constraint": constraints.serialize(self.beta_constraint),
            "gamma_constraint": constraints.serialize(self.gamma_constraint),
        }
        return {**super().get_config(), **config}
