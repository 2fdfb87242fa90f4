"""Fixup: training deep residual networks without normalization, by initialization alone."""

import keras
from keras import constraints, initializers, ops, regularizers


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}"
        )


def fixup_initializer(num_residual_branches, layers_per_branch, seed=None):
    """He initialization scaled by ``L ** (-1 / (2m - 2))``, for the inner layers of a branch.

    Fixup's rule (Zhang, Dauphin & Ma, 2019, section 3) for ``L`` residual branches of ``m``
    layers each: initialize the classification layer and the last layer of every branch to
    zero (``kernel_initializer="zeros"``), and every other layer of a branch with the
    standard He initialization (std ``sqrt(2 / fan_in)``) scaled by ``L ** (-1/(2m-2))``:

    ```
    std = sqrt(2 / fan_in) * L ** (-1 / (2m - 2))     # i.e. variance 2 / fan_in * L ** (-1/(m-1))
    ```

    Args:
        num_residual_branches: ``L``, the number of residual branches in the network (>= 1).
        layers_per_branch: ``m``, the number of weight layers in each branch (>= 2).
        seed: Optional integer seed of the initializer.

    Returns:
        A ``keras.initializers.VarianceScaling`` (``mode="fan_in"``, truncated normal, as
        Keras's ``he_normal``), usable as any layer's ``kernel_initializer`` and serializable.

    Reference:
        Zhang, Dauphin & Ma, "Fixup Initialization: Residual Learning Without Normalization",
        ICLR 2019. https://arxiv.org/abs/1901.09321

    >>> init = fixup_initializer(num_residual_branches=16, layers_per_branch=2)
    >>> round(init.scale, 6)  # variance 2 * 16 ** (-1): the std is He's times 16 ** (-1/2)
    0.125
    """
    _check_int("num_residual_branches", num_residual_branches, 1)
    _check_int("layers_per_branch", layers_per_branch, 2)
    factor = float(num_residual_branches) ** (-1.0 / (2 * layers_per_branch - 2))
    return initializers.VarianceScaling(
        scale=2.0 * factor**2, mode="fan_in", distribution="truncated_normal", seed=seed
    )


class _Scalar(keras.layers.Layer):
    """One trainable scalar, combined with every element of the input.

    Args:
        initializer: Initializer of the scalar (``"zeros"`` for a bias, ``"ones"`` for a
            multiplier).
        regularizer, constraint: Optional regularizer and constraint of the scalar.
        **kwargs: Base layer arguments (``name``, ``dtype``, ``trainable``...).

    Call arguments:
        inputs: A tensor of any shape. ``training`` and ``mask`` are ignored.

    Returns:
        A tensor of the same shape as ``inputs``.
    """

    default_initializer = None
    weight_name = None

    def __init__(self, initializer=None, regularizer=None, constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.initializer = initializers.get(initializer or self.default_initializer)
        self.regularizer = regularizers.get(regularizer)
        self.constraint = constraints.get(constraint)
        self.supports_masking = True

    def build(self, input_shape):
        self.scalar = self.add_weight(
            shape=(),
            name=self.weight_name,
            initializer=self.initializer,
            regularizer=self.regularizer,
            constraint=self.constraint,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {
            "initializer": initializers.serialize(self.initializer),
            "regularizer": regularizers.serialize(self.regularizer),
            "constraint": constraints.serialize(self.constraint),
        }
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="course_lib")
class ScalarBias(_Scalar):
    """Add one trainable scalar to every element: Fixup's bias (Zhang et al., 2019).

    ```
    y = x + b        # b: one trainable scalar, initialized to 0
    ```

    Fixup puts one before each convolution and activation of a residual branch; with no
    normalization, they are what moves the inputs of each layer off zero mean. See
    ``_Scalar`` above for the arguments.

    >>> import numpy as np
    >>> np.asarray(ScalarBias(initializer="ones")(np.array([1.0, -2.0])))
    array([ 2., -1.], dtype=float32)
    """

    default_initializer = "zeros"
    weight_name = "bias"

    def call(self, inputs, training=None, mask=None):
        return inputs + ops.cast(self.scalar, inputs.dtype)


@keras.saving.register_keras_serializable(package="course_lib")
class ScalarMultiplier(_Scalar):
    """Multiply every element by one trainable scalar: Fixup's multiplier (Zhang et al., 2019).

    ```
    y = s * x        # s: one trainable scalar, initialized to 1
    ```

    One per residual branch, after its last layer: it learns the branch's scale, the role of
    the last Batch Normalization's ``gamma``. See ``_Scalar`` above for the arguments.

    >>> import numpy as np
    >>> np.asarray(ScalarMultiplier()(np.array([1.0, -2.0])))  # the identity at first
    array([ 1., -2.], dtype=float32)
    """

    default_initializer = "ones"
    weight_name = "multiplier"

    def call(self, inputs, training=None, mask=None):
        return inputs * ops.cast(self.scalar, inputs.dtype)


@keras.saving.register_keras_serializable(package="course_lib")
class FixupResidualBlock(keras.layers.Layer):
    """A basic residual block with no normalization, initialized by Fixup (Zhang et al., 2019).

    Two 3x3 convolutions (no bias) with scalar biases before each convolution and activation,
    and a scalar multiplier, around an identity shortcut (``C`` channels in and out):

    ```
    branch(x) = bias2b + scale * conv2(bias2a + relu(bias1b + conv1(bias1a + x)))
    y = relu(x + branch(x))
    init: biases 0, scale 1, conv1 ~ fixup_initializer(L, m=2), conv2 = 0
      =>  branch(x) = 0 and y = relu(x): the network starts as a stack of identities.
    ```

    The scalar biases and multiplier replace what the affine parameters of Batch
    Normalization learned; the initialization replaces what its statistics did, keeping the
    variance of the output bounded as ``L`` grows.

    Args:
        num_residual_branches: ``L``, the number of residual blocks in the whole network.
        kernel_size: Size of the (square) convolution windows.
        seed: Optional integer seed of ``conv1``'s initializer.
        **kwargs: Base layer arguments (``name``, ``dtype``, ``trainable``...).

    Call arguments:
        inputs: A 4-D channels-last tensor ``(N, H, W, C)``.
        training: Ignored (nothing differs between training and inference).
        mask: Ignored.

    Returns:
        A tensor of the same shape as ``inputs``.

    Reference:
        Zhang, Dauphin & Ma, "Fixup Initialization: Residual Learning Without Normalization",
        ICLR 2019. https://arxiv.org/abs/1901.09321

    >>> import numpy as np
    >>> block = FixupResidualBlock(num_residual_branches=8)
    >>> x = np.array([-1.0, 0.5, 2.0]).reshape(1, 1, 3, 1)
    >>> np.asarray(block(x)).ravel()  # relu(x): conv2 starts at zero
    array([0. , 0.5, 2. ], dtype=float32)
    """

    def __init__(self, num_residual_branches, kernel_size=3, seed=None, **kwargs):
        super().__init__(**kwargs)
        _check_int("num_residual_branches", num_residual_branches, 1)
        _check_int("kernel_size", kernel_size, 1)
        self.num_residual_branches = num_residual_branches
        self.kernel_size = kernel_size
        self.seed = seed

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "FixupResidualBlock needs channels-last inputs (N, H, W, C) with a known C. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        channels = input_shape[-1]
        policy = self.dtype_policy

        def conv(name, initializer):
            return keras.layers.Conv2D(
                channels, self.kernel_size, padding="same", use_bias=False,
                kernel_initializer=initializer, name=name, dtype=policy,
            )  # fmt: skip

        inner = fixup_initializer(self.num_residual_branches, 2, seed=self.seed)
        self.bias1a = ScalarBias(name="bias1a", dtype=policy)
        self.conv1 = conv("conv1", inner)
        self.bias1b = ScalarBias(name="bias1b", dtype=policy)
        self.bias2a = ScalarBias(name="bias2a", dtype=policy)
        self.conv2 = conv("conv2", "zeros")  # the last layer of the branch starts at zero
        self.scale = ScalarMultiplier(name="scale", dtype=policy)
        self.bias2b = ScalarBias(name="bias2b", dtype=policy)
        for layer in (self.bias1a, self.conv1, self.bias1b, self.bias2a, self.conv2):
            layer.build(input_shape)
        self.scale.build(input_shape)
        self.bias2b.build(input_shape)

    def call(self, inputs, training=None, mask=None):
        out = self.conv1(self.bias1a(inputs))
        out = self.bias2a(ops.relu(self.bias1b(out)))
        out = self.bias2b(self.scale(self.conv2(out)))
        return ops.relu(inputs + out)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {
            "num_residual_branches": self.num_residual_branches,
            "kernel_size": self.kernel_size,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}
