"""Batch Normalization as a Keras 3 layer, written from scratch with ``keras.ops``."""

import numbers

import keras
from keras import constraints, initializers, ops, regularizers

from course_lib._common import check_bool as _check_bool
from course_lib._common import compute_dtype as _compute_dtype

_CLIPPING_KEYS = ("rmax", "rmin", "dmax")


def _check_clipping(clipping):
    """Validate a ``renorm_clipping`` dict; the messages also match Keras's own tests."""
    if not isinstance(clipping, dict):
        raise ValueError(
            "`renorm_clipping` must be a dict or a schedule (a callable of the step, such as "
            f"RenormClippingSchedule). Received: renorm_clipping={clipping!r}"
        )
    unknown = sorted(set(clipping) - set(_CLIPPING_KEYS))
    if unknown:
        raise ValueError(
            f"Received invalid keys for `renorm_clipping`: {unknown}. Supported keys: "
            f"{list(_CLIPPING_KEYS)}. Received: renorm_clipping={clipping!r}"
        )
    for key, value in clipping.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(
                f"`renorm_clipping[{key!r}]` must be a number. Received: {key}={value!r}"
            )
    rmax, rmin, dmax = (clipping.get(key) for key in _CLIPPING_KEYS)
    if rmax is not None and rmin is not None and rmax < rmin:
        raise ValueError(
            "In `renorm_clipping`, rmax should be greater than or equal to rmin. "
            f"Received: rmax={rmax!r}, rmin={rmin!r}"
        )
    if dmax is not None and dmax < 0:
        raise ValueError(
            f"In `renorm_clipping`, dmax should be non-negative. Received: dmax={dmax!r}"
        )


def _is_serialized_object(value):
    """A dict written by ``keras.saving.serialize_keras_object`` (a saved schedule)."""
    return isinstance(value, dict) and "class_name" in value and "config" in value


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
    return int(value)


@keras.saving.register_keras_serializable(package="course_lib")
class RenormClippingSchedule:
    """Batch renorm's warm-up: plain BN first, then ``rmax`` and ``dmax`` relaxed linearly.

    Ioffe (2017) starts training with the correction switched off and lets it in gradually.
    Section 4.1 (Baseline) of the paper: "For Batch Renorm, we used rmax = 1, dmax = 0 (i.e.
    simply batchnorm) for the first 5000 training steps, after which these were gradually
    relaxed to reach rmax = 3 at 40k steps, and dmax = 5 at 25k steps." The defaults are
    those numbers; the end steps count from the start of training, as in the quote (so
    ``rmax`` rises over 35k steps and ``dmax`` over 20k). "Gradually" is all the paper says
    of the shape: here it is linear. At training step ``t`` (counted by the layer)::

        ramp(t, end) = clip((t - warmup_steps) / (end - warmup_steps), 0, 1)
        rmax(t) = 1 + (rmax - 1) * ramp(t, rmax_end_step),    rmin(t) = 1 / rmax(t)
        dmax(t) = dmax * ramp(t, dmax_end_step)

    so ``r`` is clipped to ``[1 / rmax(t), rmax(t)]`` (the paper's ``rmin``) and ``d`` to
    ``[-dmax(t), dmax(t)]``: ``r = 1, d = 0`` (plain batch normalization) up to
    ``warmup_steps``, fixed clipping ``rmax``, ``dmax`` from the end steps on.

    Pass it as ``renorm_clipping``; the layer then counts its training calls in a variable
    ``renorm_step`` (saved with the model) and clips with ``schedule(renorm_step)``::

        BatchRenormalization(renorm_clipping=RenormClippingSchedule())

    Args:
        rmax: Final bound of ``r`` (>= 1); ``rmin = 1 / rmax``.
        dmax: Final bound of ``|d|`` (>= 0).
        warmup_steps: Training steps of plain batch normalization before the relaxation.
        rmax_end_step, dmax_end_step: Steps (from the start, >= ``warmup_steps``) at which
            ``rmax`` and ``dmax`` reach their final values.

    >>> schedule = RenormClippingSchedule(warmup_steps=10, rmax_end_step=30, dmax_end_step=20)
    >>> {k: round(float(v), 3) for k, v in schedule(20).items()}
    {'rmax': 2.0, 'rmin': 0.5, 'dmax': 5.0}
    """

    def __init__(self, rmax=3.0, dmax=5.0, warmup_steps=5000, rmax_end_step=40000,
                 dmax_end_step=25000):
        for name, value, low in [("rmax", rmax, 1.0), ("dmax", dmax, 0.0)]:
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not low <= value < float("inf")):
                raise ValueError(
                    f"`{name}` must be a finite number >= {low:g}. Received: {name}={value!r}"
                )
        warmup_steps = _check_count("warmup_steps", warmup_steps)
        for name, value in [("rmax_end_step", rmax_end_step), ("dmax_end_step", dmax_end_step)]:
            if _check_count(name, value) < warmup_steps:
                raise ValueError(
                    f"`{name}` must be >= `warmup_steps`. "
                    f"Received: {name}={value!r}, warmup_steps={warmup_steps}"
                )
        self.rmax = float(rmax)
        self.dmax = float(dmax)
        self.warmup_steps = warmup_steps
        self.rmax_end_step = int(rmax_end_step)
        self.dmax_end_step = int(dmax_end_step)

    def _ramp(self, step, end):
        if end == self.warmup_steps:  # no ramp: a jump at `end`
            return ops.cast(step >= end, "float32")
        return ops.clip((step - self.warmup_steps) / float(end - self.warmup_steps), 0.0, 1.0)

    def __call__(self, step):
        """``{"rmax", "rmin", "dmax"}`` at training step ``step`` (float32 tensors)."""
        step = ops.cast(step, "float32")
        rmax = 1.0 + (self.rmax - 1.0) * self._ramp(step, self.rmax_end_step)
        dmax = self.dmax * self._ramp(step, self.dmax_end_step)
        return {"rmax": rmax, "rmin": 1.0 / rmax, "dmax": dmax}

    def get_config(self):
        return {
            "rmax": self.rmax,
            "dmax": self.dmax,
            "warmup_steps": self.warmup_steps,
            "rmax_end_step": self.rmax_end_step,
            "dmax_end_step": self.dmax_end_step,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash((type(self), tuple(self.get_config().items())))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _sum_over_replicas(value):
    """Sum a per-replica tensor over the replicas of a ``tf.distribute`` strategy.

    The only line of the layer that is not ``keras.ops``: Keras has no backend-neutral
    cross-replica reduction. Outside ``strategy.run`` (or with one replica) it is the identity.
    """
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


# Where the hand-written backward pass of `_normalize_train` is used. TensorFlow runs a
# tf.function's graph op by op unless it is XLA-compiled, so fewer ops is faster (make bench).
# JAX always compiles with XLA, which fuses autodiff's ops into the neighbouring layers and
# recomputes them in the backward pass; a custom gradient would pin its saved tensors in
# memory instead (make bench: peak memory of a training step, 1.40x with it, 1.00x without).
_HAND_WRITTEN_BACKWARD = {"tensorflow"}


def _normalize_train(x, gamma, beta, axes, shape, epsilon):
    """Training-mode BN, ``(y, mean, var)``, with the backward pass written out by hand.

    Autodiff of the forward pass builds a graph of a dozen small ops; the closed form of the
    backward pass (chapter 2) needs two reductions::

        dbeta = sum(dy),  dgamma = sum(dy * xhat)
        dx = gamma / sqrt(var + eps) * (dy - dbeta / m - xhat * dgamma / m)

    ``sum(dy * xhat)`` is computed as ``(sum(dy * (x - s)) - (mean - s) * dbeta) / sigma``,
    with ``s`` the batch's first sample: the same value, but the large reduction no longer waits
    for the batch statistics, so XLA runs it beside them (make bench). Keras's gradient takes
    ``s = 0``, whose subtraction loses more digits the larger ``|mean| / std``; a sample of the
    batch lies within a few standard deviations of its mean, so nothing is lost.

    ``mean`` and ``var`` are returned for the moving averages only; they carry no gradient.
    """
    first = [1 if a in axes else n for a, n in enumerate(x.shape)]
    shift = ops.stop_gradient(ops.reshape(ops.slice(x, [0] * len(first), first), shape))

    @ops.custom_gradient
    def transform(x, gamma, beta, shift):
        count = ops.cast(ops.size(x) // ops.size(gamma), x.dtype)
        mean = ops.sum(x, axis=axes, keepdims=True) / count
        centred = x - mean
        var = ops.sum(ops.square(centred), axis=axes, keepdims=True) / count
        inv = ops.rsqrt(var + epsilon)
        scale = inv * ops.reshape(gamma, shape)
        y = centred * scale + ops.reshape(beta, shape)

        def grad(*upstream):
            # TensorFlow passes one upstream gradient per output, JAX one tuple of them.
            if len(upstream) == 1 and isinstance(upstream[0], (tuple, list)):
                upstream = upstream[0]
            dy = upstream[0]
            dbeta = ops.sum(dy, axis=axes, keepdims=True)
            dgamma = (ops.sum(dy * (x - shift), axis=axes, keepdims=True)
                      - (mean - shift) * dbeta) * inv
            dx = scale * (dy - (dbeta + centred * inv * dgamma) / count)
            return (dx, ops.reshape(dgamma, (-1,)), ops.reshape(dbeta, (-1,)),
                    ops.zeros_like(shift))

        return (y, ops.reshape(mean, (-1,)), ops.reshape(var, (-1,))), grad

    y, mean, var = transform(x, gamma, beta, shift)
    return y, ops.stop_gradient(mean), ops.stop_gradient(var)


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

    renorm=True, training (Ioffe, 2017); inference is unchanged:
                sigma = sqrt(var + epsilon)
                r = stop_gradient(clip(sigma / renorm_stddev, rmin, rmax))
                d = stop_gradient(clip((mu - renorm_mean) / renorm_stddev, -dmax, dmax))
                y = gamma * ((x - mu) / sigma * r + d) + beta
                renorm_mean, renorm_stddev  track mu, sigma with renorm_momentum
                moving_mean, moving_stddev  track mu, sigma with momentum
                moving_var = moving_stddev**2 - epsilon
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
        renorm: If True, use Batch Renormalization: the training output is corrected by
            ``r`` and ``d`` towards what inference with the (renorm) moving statistics
            would give. Adds the variables ``moving_stddev``, ``renorm_mean``,
            ``renorm_stddev``.
        renorm_clipping: Optional dict with the keys ``"rmax"``, ``"rmin"``, ``"dmax"``:
            ``r`` is clipped to ``[rmin, rmax]`` and ``d`` to ``[-dmax, dmax]`` (a missing
            key means no clipping on that side). The paper uses ``rmin = 1 / rmax``.
            Or a schedule, such as ``RenormClippingSchedule()`` (the paper's warm-up): a
            callable of the layer's training step returning such a dict; the layer then
            counts its training calls in the non-trainable variable ``renorm_step``.
        renorm_momentum: Momentum of ``renorm_mean`` and ``renorm_stddev``, the statistics
            ``r`` and ``d`` are computed from. ``momentum`` still drives the inference ones.
        synchronized: If True, the batch statistics are those of the *global* batch across
            the replicas of a ``tf.distribute`` strategy (sync BN). TensorFlow backend only.
        **kwargs: Base layer arguments (``name``, ``dtype``, ``trainable``...).

    Call arguments:
        inputs: A tensor of any rank.
        training: If True, normalize with the batch statistics and update the moving ones.
            Otherwise (the default, and always when ``layer.trainable`` is False), normalize
            with the moving statistics. Setting ``trainable = False`` therefore puts the layer
            in inference mode, as in Keras: the usual choice when fine-tuning.
        mask: Optional boolean tensor of shape ``inputs.shape[:-1]`` (Keras's convention, as
            produced by ``Masking`` or ``Embedding(mask_zero=True)``). Masked-out positions
            do not count towards the batch statistics.

    Returns:
        A tensor of the same shape as ``inputs``, in the layer's compute dtype.

    Reference:
        Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by
        Reducing Internal Covariate Shift", ICML 2015. https://arxiv.org/abs/1502.03167
        Ioffe, "Batch Renormalization: Towards Reducing Minibatch Dependence in
        Batch-Normalized Models", NeurIPS 2017. https://arxiv.org/abs/1702.03275

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
        renorm=False,
        renorm_clipping=None,
        renorm_momentum=0.99,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise ValueError(f"`axis` must be an integer. Received: axis={axis!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"`momentum` must be in [0, 1]. Received: momentum={momentum!r}")
        if not epsilon > 0.0:
            raise ValueError(f"`epsilon` must be positive. Received: epsilon={epsilon!r}")
        for name, value in [("center", center), ("scale", scale), ("renorm", renorm),
                            ("synchronized", synchronized)]:
            _check_bool(name, value)
        if _is_serialized_object(renorm_clipping):  # a schedule, from get_config()
            renorm_clipping = keras.saving.deserialize_keras_object(renorm_clipping)
        if callable(renorm_clipping):
            pass  # a schedule: called with the step counter in training
        elif renorm_clipping is not None:
            _check_clipping(renorm_clipping)
            renorm_clipping = dict(renorm_clipping)
        elif renorm:
            renorm_clipping = {}  # as Keras: {} with renorm, None without
        if not 0.0 <= renorm_momentum <= 1.0:
            raise ValueError(
                "`renorm_momentum` must be in [0, 1]. "
                f"Received: renorm_momentum={renorm_momentum!r}"
            )
        if synchronized and keras.backend.backend() != "tensorflow":
            raise ValueError(
                "`synchronized=True` is only supported with the TensorFlow backend. "
                f"Received: synchronized={synchronized}, backend={keras.backend.backend()!r}"
            )
        self.axis = int(axis)
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
        self.renorm = renorm
        self.renorm_clipping = renorm_clipping
        self.renorm_momentum = renorm_momentum
        self.synchronized = synchronized
        self.supports_masking = True
        # Inputs are not cast to the compute dtype on the way in (call casts them to float32):
        # float32 activations above float16's max (65504) must not become inf under
        # mixed_float16 before they are normalized. Keras does this for GroupNormalization.
        self.autocast = False
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

        # autocast=False: under mixed precision the parameters and statistics stay float32.
        def weight(name, initializer, trainable=False, **kwargs):
            return self.add_weight(
                shape=(channels,), name=name, initializer=initializer,
                trainable=trainable, autocast=False, **kwargs,
            )

        if self.scale:
            self.gamma = weight("gamma", self.gamma_initializer, True,
                                regularizer=self.gamma_regularizer,
                                constraint=self.gamma_constraint)
        if self.center:
            self.beta = weight("beta", self.beta_initializer, True,
                               regularizer=self.beta_regularizer,
                               constraint=self.beta_constraint)
        self.moving_mean = weight("moving_mean", self.moving_mean_initializer)
        self.moving_variance = weight("moving_variance", self.moving_variance_initializer)
        if self.renorm:
            # Renorm tracks standard deviations, as the paper does: sqrt of the variance init.
            def stddev_initializer(shape, dtype=None):
                return ops.sqrt(_fresh(self.moving_variance_initializer)(shape, dtype=dtype))

            self.moving_stddev = weight("moving_stddev", stddev_initializer)
            self.renorm_mean = weight("renorm_mean", _fresh(self.moving_mean_initializer))
            self.renorm_stddev = weight("renorm_stddev", stddev_initializer)
            if callable(self.renorm_clipping):
                # Training calls so far: the schedule's clock (saved with the layer).
                self.renorm_step = self.add_weight(
                    shape=(), name="renorm_step", initializer="zeros", dtype="int",
                    trainable=False, autocast=False, aggregation="only_first_replica",
                )
        self.input_spec = keras.layers.InputSpec(ndim=ndim, axes={self._axis: channels})

    def _broadcast(self, v, ndim):
        shape = [1] * ndim
        shape[self._axis] = -1
        return ops.reshape(v, shape)

    def _moments(self, x, mask):
        """Per-feature batch mean and biased variance, counting only unmasked positions.

        With ``synchronized=True`` the sums run over the global batch of every replica, in
        two passes (sums and counts, then squared deviations from the global mean): the
        one-pass ``E[x**2] - E[x]**2`` loses every digit when ``|mean| >> std``. Sums divided
        by counts rather than ``ops.mean``, which computes in float32 on JAX.
        """
        axes, ndim = self._reduction_axes, len(x.shape)
        replicas = _sum_over_replicas if self.synchronized else (lambda v: v)
        weights = None
        if mask is None:
            count = ops.cast(ops.size(x), x.dtype) / x.shape[self._axis]
            total = ops.sum(x, axis=axes)
        else:  # Keras's convention: the mask covers every axis but the last.
            weights = ops.cast(ops.expand_dims(ops.cast(mask, "bool"), axis=-1), x.dtype)
            weights = ops.broadcast_to(weights, ops.shape(x))
            count = ops.sum(weights, axis=axes)
            total = ops.sum(x * weights, axis=axes)
        count = ops.maximum(replicas(count), 1.0)  # a fully masked batch: mean = var = 0
        mean = replicas(total) / count
        centred = x - self._broadcast(mean, ndim)
        if weights is not None:
            centred = centred * weights
        var = replicas(ops.sum(ops.square(centred), axis=axes)) / count
        return mean, var

    def _renorm_correction(self, mean, var):
        """Batch renorm's ``r`` and ``d`` (constants for the gradient), then its updates."""
        dtype = mean.dtype
        stddev = ops.sqrt(var + self.epsilon)
        renorm_mean = ops.cast(self.renorm_mean, dtype)
        renorm_stddev = ops.cast(self.renorm_stddev, dtype)
        floor = ops.maximum(renorm_stddev, self.epsilon**0.5)  # as Keras: no division by ~0
        r = stddev / floor
        d = (mean - renorm_mean) / floor
        if callable(self.renorm_clipping):  # a schedule of the training step
            clipping = self.renorm_clipping(ops.convert_to_tensor(self.renorm_step))
            rmax, rmin, dmax = (
                None if clipping.get(key) is None else ops.cast(clipping[key], dtype)
                for key in _CLIPPING_KEYS
            )
            self.renorm_step.assign_add(ops.ones((), self.renorm_step.dtype))
        else:
            rmax, rmin, dmax = (self.renorm_clipping.get(key) for key in _CLIPPING_KEYS)
        if rmin is not None:
            r = ops.maximum(r, rmin)
        if rmax is not None:
            r = ops.minimum(r, rmax)
        if dmax is not None:
            d = ops.clip(d, -dmax, dmax)

        def average(variable, value, momentum):
            new = ops.cast(variable, dtype) * momentum + value * (1.0 - momentum)
            variable.assign(new)
            return new

        average(self.renorm_mean, mean, self.renorm_momentum)
        average(self.renorm_stddev, stddev, self.renorm_momentum)
        average(self.moving_mean, mean, self.momentum)
        moving_stddev = average(self.moving_stddev, stddev, self.momentum)
        # Inference reads moving_variance: keep it consistent (relu against rounding).
        self.moving_variance.assign(ops.relu(ops.square(moving_stddev) - self.epsilon))
        return ops.stop_gradient(r), ops.stop_gradient(d)

    def call(self, inputs, training=None, mask=None):
        ndim = len(inputs.shape)
        if mask is not None and len(mask.shape) != ndim - 1:
            raise ValueError(
                "`mask` must have one dimension fewer than the inputs. "
                f"Received: mask.shape={tuple(mask.shape)}, inputs.shape={tuple(inputs.shape)}"
            )
        compute_dtype = _compute_dtype(inputs.dtype)  # float16 statistics overflow: float32
        x = ops.cast(inputs, compute_dtype)
        r = d = None

        if (training and self.trainable and mask is None and not (self.renorm or self.synchronized)
                and keras.backend.backend() in _HAND_WRITTEN_BACKWARD):
            # The common case, with the hand-written backward pass (same values as below).
            channels = x.shape[self._axis]
            gamma = ops.cast(self.gamma, compute_dtype) if self.scale else ops.ones(channels, compute_dtype)
            beta = ops.cast(self.beta, compute_dtype) if self.center else ops.zeros(channels, compute_dtype)
            shape = [1] * ndim
            shape[self._axis] = -1
            outputs, mean, var = _normalize_train(x, gamma, beta, self._reduction_axes, shape, self.epsilon)
            self._update_moving(mean, var, compute_dtype)
            return ops.cast(outputs, self.compute_dtype)

        if training and self.trainable:
            mean, var = self._moments(x, mask)
            if self.renorm:
                r, d = self._renorm_correction(mean, var)
            else:
                self._update_moving(mean, var, compute_dtype)
        else:
            mean = ops.cast(self.moving_mean, compute_dtype)
            var = ops.cast(self.moving_variance, compute_dtype)

        # y = gamma * ((x - mean) / sqrt(var + eps) * r + d) + beta, as one scale and offset.
        inv = ops.rsqrt(var + self.epsilon)
        offset = -mean * inv
        if r is not None:
            inv, offset = inv * r, offset * r + d
        if self.scale:
            gamma = ops.cast(self.gamma, compute_dtype)
            inv, offset = inv * gamma, offset * gamma
        if self.center:
            offset = offset + ops.cast(self.beta, compute_dtype)
        outputs = x * self._broadcast(inv, ndim) + self._broadcast(offset, ndim)
        return ops.cast(outputs, self.compute_dtype)

    def _update_moving(self, mean, var, dtype):
        m = self.momentum
        self.moving_mean.assign(ops.cast(self.moving_mean, dtype) * m + mean * (1.0 - m))
        self.moving_variance.assign(ops.cast(self.moving_variance, dtype) * m + var * (1.0 - m))

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
            "renorm": self.renorm,
            "renorm_clipping": (
                keras.saving.serialize_keras_object(self.renorm_clipping)
                if callable(self.renorm_clipping) else self.renorm_clipping
            ),
            "renorm_momentum": self.renorm_momentum,
            "synchronized": self.synchronized,
        }
        return {**super().get_config(), **config}


@keras.saving.register_keras_serializable(package="course_lib")
class BatchRenormalization(BatchNormalization):
    """``BatchNormalization(renorm=True)`` under its own name (Ioffe, 2017).

    Same arguments as ``BatchNormalization``; only the default of ``renorm`` differs.

    >>> layer = BatchRenormalization(renorm_clipping={"rmax": 3.0, "rmin": 1 / 3, "dmax": 5.0})
    >>> layer.renorm, layer.get_config()["renorm_clipping"]["dmax"]
    (True, 5.0)
    """

    def __init__(self, renorm=True, **kwargs):
        super().__init__(renorm=renorm, **kwargs)


def _fresh(initializer):
    """A copy of ``initializer`` (a seeded random initializer would repeat its draw)."""
    if isinstance(initializer, initializers.Initializer):
        return initializer.__class__.from_config(initializer.get_config())
    return initializer
