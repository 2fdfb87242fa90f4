"""Adaptive gradient clipping (AGC, Brock et al. 2021), unit-wise, for Keras 3 optimizers.

Plain gradient clipping caps ``||G||`` at a constant, which has to be tuned to the scale of
the gradients. AGC caps each unit's gradient relative to the size of that unit's weights
(NFNets, Eq. 3): for unit ``i`` of a parameter ``W`` with gradient ``G``,

```
if ||G_i|| / max(||W_i||, eps) > clipping:
    G_i <- clipping * max(||W_i||, eps) / ||G_i|| * G_i
```

so a plain SGD step changes a unit's weights by at most a fraction ``learning_rate * clipping``
of their norm (``eps`` lets zero-initialized weights move). The units:

* a kernel of rank >= 2 has one unit per *output* feature, Keras's last axis: the norm is
  taken over every other axis (Dense ``(in, out)``: over ``in``; Conv2D ``(h, w, in, out)``:
  over ``h, w, in``; Conv1D ``(w, in, out)``: over ``w, in``);
* a vector (bias, BN's gamma and beta) or a scalar is one unit: the norm of the whole tensor.

Why the whole vector for biases: per element, ``||W_i||`` would be ``|b_i|``, which starts at
0, so every bias gradient above ``clipping * eps`` (1e-5 with the paper's values) would be
cut to that size and biases would hardly train early on. The authors' own implementation
(``unitwise_norm`` in deepmind-research/nfnets) treats vectors and scalars as one unit too.
Two cases where we follow the shapes of *Keras* kernels rather than that code: its 3-D rule
reduces over axis 0 only (Haiku's multi-head kernels), ours over all but the last axis (a
Keras Conv1D kernel is ``(w, in, out)``); and it treats a kernel with a single input, e.g.
``(1, out)``, as a vector, where we keep one unit per output. Keras kernels whose *last* axis
is not the output (``Conv2DTranspose``: ``(h, w, out, in)``; ``MultiHeadAttention``'s query,
key and value kernels ``(d, heads, key_dim)``) get units along their last axis all the same.

The paper leaves the final linear layer unclipped (its ablations of AGC, Section 4.1, found
that better): pass that layer in ``exclude``.

Two ways to use it:

* :func:`adaptive_clip_gradients` in a hand-written training loop;
* :class:`AdaptiveClippingOptimizer`, a wrapper around any Keras optimizer for ``model.fit``
  (Keras 3 optimizers have no hook that sees the variables next to their gradients:
  ``clipnorm``/``clipvalue`` see the gradients alone). It works on the TensorFlow backend
  (``apply``) and on JAX (``stateless_apply``).

Reference:
    Brock, De, Smith & Simonyan, "High-Performance Large-Scale Image Recognition Without
    Normalization", ICML 2021, Section 4 and Eq. 3. https://arxiv.org/abs/2102.06171
"""

import math
import numbers

import keras
from keras import ops

__all__ = ["unitwise_norm", "adaptive_clip_gradients", "AdaptiveClippingOptimizer"]


def unitwise_norm(x):
    """Euclidean norm of each unit of ``x``, shaped to broadcast against ``x``.

    Rank >= 2: over every axis but the last, keeping them (shape ``(1, ..., 1, out)``).
    Rank 0 or 1: the norm of the whole tensor (a scalar).
    """
    x = ops.convert_to_tensor(x)
    if len(x.shape) <= 1:
        return ops.sqrt(ops.sum(ops.square(x)))
    return ops.sqrt(ops.sum(ops.square(x), axis=tuple(range(len(x.shape) - 1)), keepdims=True))


def _check_positive(name, value):
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0.0 < value < math.inf):
        raise ValueError(f"`{name}` must be a positive finite number. Received: {name}={value!r}")
    return float(value)


def _check_exclude(exclude):
    """``exclude`` as a tuple of strings, variables and layers (one of them alone is fine)."""
    if exclude is None:
        return ()
    if isinstance(exclude, (str, keras.Variable, keras.layers.Layer)):
        exclude = [exclude]
    try:
        items = tuple(exclude)
    except TypeError:
        raise ValueError(
            "`exclude` must be a list of variables, layers or variable paths. "
            f"Received: exclude={exclude!r}"
        ) from None
    for item in items:
        if not isinstance(item, (str, keras.Variable, keras.layers.Layer)):
            raise ValueError(
                "`exclude` must be a list of variables, layers or variable paths; "
                f"{item!r} is none of them. Received: exclude={exclude!r}"
            )
    return items


def _is_excluded(variable, exclude):
    """Whether ``variable`` is named by ``exclude``.

    A string names every variable whose path contains it as whole ``/``-separated parts:
    ``"dense_1"`` names ``dense_1/kernel`` and ``dense_1/bias`` but not ``dense_10/kernel``;
    ``"dense_1/kernel"`` names the kernel alone. A layer names its weights.
    """
    path = getattr(variable, "path", None)
    for item in exclude:
        if isinstance(item, str):
            if path is not None and f"/{item.strip('/')}/" in f"/{path}/":
                return True
        elif isinstance(item, keras.layers.Layer):
            if any(w is variable for w in item.weights):
                return True
        elif item is variable:
            return True
    return False


def _clip(grad, param, clipping, eps):
    """One parameter's gradient, clipped unit-wise (computed in float32, or float64)."""
    dtype = keras.backend.standardize_dtype(grad.dtype)
    work = "float64" if dtype == "float64" else "float32"
    g = ops.cast(grad, work)
    max_norm = clipping * ops.maximum(unitwise_norm(ops.cast(param, work)), eps)
    # min(1, max_norm / ||G_i||) without a division by zero: below the threshold the
    # denominator is max_norm (> 0) and the factor exactly 1.
    factor = max_norm / ops.maximum(unitwise_norm(g), max_norm)
    return ops.cast(g * factor, dtype)


def adaptive_clip_gradients(grads, variables, clipping=0.01, eps=1e-3, exclude=None):
    """Clip each gradient unit-wise relative to its parameter (AGC, Brock et al. 2021, Eq. 3).

    Args:
        grads: List of gradients (tensors or ``None``), one per variable.
        variables: The parameters, in the same order: ``keras.Variable``s or tensors.
        clipping: The threshold ``lambda`` on ``||G_i|| / max(||W_i||, eps)``. The paper
            uses 0.01 to 0.16 depending on the batch size (smaller for larger batches).
        eps: Floor of the weight norm, so that zero-initialized weights can still move
            (the paper's 1e-3).
        exclude: Variables, layers, or variable paths (strings, see below) whose gradients
            are left alone, e.g. the final classifier layer, as in the paper. A string names
            the variables whose ``path`` contains it as whole ``/``-separated parts.

    Returns:
        The list of clipped gradients (``None`` stays ``None``), each in its own dtype.

    >>> import numpy as np
    >>> w = np.array([[3.0], [4.0]], "float32")       # one unit, ||W|| = 5
    >>> g = np.array([[0.6], [0.8]], "float32")       # ||G|| = 1 > 0.01 * 5
    >>> [np.asarray(c).ravel() for c in adaptive_clip_gradients([g], [w])]  # ||G|| -> 0.05
    [array([0.03, 0.04], dtype=float32)]
    """
    clipping = _check_positive("clipping", clipping)
    eps = _check_positive("eps", eps)
    exclude = _check_exclude(exclude)
    grads, variables = list(grads), list(variables)
    if len(grads) != len(variables):
        raise ValueError(
            "`grads` and `variables` must have the same length. "
            f"Received: len(grads)={len(grads)}, len(variables)={len(variables)}"
        )
    return [
        g if g is None or _is_excluded(v, exclude) else _clip(g, v, clipping, eps)
        for g, v in zip(grads, variables)
    ]


@keras.saving.register_keras_serializable(package="course_lib")
class AdaptiveClippingOptimizer(keras.optimizers.Optimizer):
    """Any Keras optimizer, with its gradients clipped by AGC first (Brock et al. 2021).

    ```python
    optimizer = AdaptiveClippingOptimizer(keras.optimizers.SGD(0.1, momentum=0.9),
                                          clipping=0.01, exclude=[model.layers[-1]])
    model.compile(optimizer=optimizer, loss=...)
    ```

    The wrapper clips the gradients with :func:`adaptive_clip_gradients`, from the current
    values of the variables, and hands them to ``inner_optimizer``, which does everything
    else (its own ``clipnorm`` and weight decay after AGC, momentum, EMA...).
    ``learning_rate`` and ``iterations`` are the inner optimizer's; the wrapper saves and
    loads with the model (``exclude`` is saved as the ends of variable paths).

    Notes:
        * Loss scaling: a ``loss_scale_factor`` of the inner optimizer is honoured (the
          gradients are unscaled before clipping), and so is Keras's ``LossScaleOptimizer``
          wrapped around this one (what ``compile`` does under ``mixed_float16``).
        * ``gradient_accumulation_steps`` on the inner optimizer is refused: each
          micro-batch's gradient would be clipped instead of their mean, which is not AGC.
        * Under a multi-replica ``tf.distribute`` strategy the gradients reach ``apply``
          before the inner optimizer sums them over replicas, so each replica's gradient is
          clipped separately.

    Args:
        inner_optimizer: The ``keras.optimizers.Optimizer`` to wrap.
        clipping: AGC's threshold ``lambda`` (the paper: 0.01 for batch 4096).
        eps: Floor of the weight norms (the paper: 1e-3).
        exclude: Variables, layers or variable paths not to clip (see
            :func:`adaptive_clip_gradients`); the paper leaves out the final linear layer.
        name: Optional name.
    """

    def __init__(self, inner_optimizer, clipping=0.01, eps=1e-3, exclude=None, name=None):
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                "`inner_optimizer` must be a keras.optimizers.Optimizer. "
                f"Received: inner_optimizer={inner_optimizer!r}"
            )
        if inner_optimizer.gradient_accumulation_steps:
            raise ValueError(
                "`inner_optimizer` must not accumulate gradients: AGC would clip each "
                "micro-batch's gradient, not their mean. Received: "
                f"gradient_accumulation_steps={inner_optimizer.gradient_accumulation_steps!r}"
            )
        clipping = _check_positive("clipping", clipping)
        eps = _check_positive("eps", eps)
        exclude = _check_exclude(exclude)
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.clipping = clipping
        self.eps = eps
        # Not through the variable tracker: excluded variables are the model's, not ours.
        object.__setattr__(self, "_exclude", exclude)

    @property
    def exclude(self):
        return self._exclude

    def build(self, var_list):
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self):
        return self._variables[:] + self.inner_optimizer.variables

    def _clipped(self, grads, values, variables):
        """Unscale (the inner loss scale), clip by AGC, rescale: what ``inner.apply`` expects."""
        scale = self.inner_optimizer.loss_scale_factor
        flags = [_is_excluded(v, self._exclude) for v in variables]
        out = []
        for g, w, skip in zip(grads, values, flags):
            if g is None or skip:
                out.append(g)
            elif scale is None:
                out.append(_clip(g, w, self.clipping, self.eps))
            else:
                out.append(_clip(g / scale, w, self.clipping, self.eps) * scale)
        return out

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer must already be "
                    "built on a list of variables. Call `optimizer.build(variables)` first."
                )
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
            self.built = True
        variables = (list(trainable_variables) if trainable_variables is not None
                     else self._trainable_variables)
        self.inner_optimizer.apply(
            self._clipped(grads, variables, variables), trainable_variables
        )

    def apply_gradients(self, grads_and_vars):
        grads, trainable_variables = zip(*grads_and_vars)
        self.apply(grads, trainable_variables)
        return self.iterations

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        """JAX's training step: the variables' values come in as ``trainable_variables``."""
        if not self.built:
            raise ValueError(
                f"To call `stateless_apply`, {self.__class__.__name__} must be built "
                "(i.e. its variables must have been created). You can build it via "
                "`optimizer.build(trainable_variables)`."
            )
        own = len(self._variables)
        clipped = self._clipped(list(grads), list(trainable_variables), self._trainable_variables)
        new_trainable, new_inner = self.inner_optimizer.stateless_apply(
            list(optimizer_variables[own:]), clipped, trainable_variables
        )
        # Our own variables (iterations, learning rate) do not change. LossScaleOptimizer
        # passes keras.Variables here, not values: return their values.
        unchanged = [ops.convert_to_tensor(v) for v in optimizer_variables[:own]]
        return new_trainable, unchanged + list(new_inner)

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def _exclude_as_strings(self):
        """``exclude`` for the config: variable paths, as short as unambiguous.

        A variable's path depends on how its model was built (``sequential/head/kernel``
        when built, ``head/kernel`` once loaded), but not its end: each excluded variable is
        saved as the shortest end of its path that names it alone among the variables this
        optimizer was built on. Before ``build``, a layer is saved as its name.
        """
        known = list(self._trainable_variables)
        out = []
        for item in self._exclude:
            if isinstance(item, str):
                out.append(item)
                continue
            if isinstance(item, keras.layers.Layer):
                variables = [w for w in item.weights if any(w is v for v in known)]
                if not variables:
                    out.append(item.name)
                    continue
            else:
                variables = [item]
            for variable in variables:
                parts = variable.path.split("/")
                for start in range(len(parts) - 1, -1, -1):
                    suffix = "/".join(parts[start:])
                    if [v for v in known if _is_excluded(v, (suffix,))] == [variable]:
                        break
                out.append(suffix)
        return out

    def get_config(self):
        exclude = self._exclude_as_strings()
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "clipping": self.clipping,
            "eps": self.eps,
            "exclude": exclude,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        return cls(inner, **config)
