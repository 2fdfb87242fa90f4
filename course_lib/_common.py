"""Small helpers shared by the normalization layers."""

import keras
from keras import ops


def check_bool(name, value):
    """Raise the house-style ValueError unless ``value`` is a real bool."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False. Received: {name}={value!r}")


def compute_dtype(dtype):
    """float64 stays float64; narrower floats are computed in float32 (float16 overflows).

    ``keras.backend.result_type(dtype, "float32")`` would say the same, except on JAX, where
    Keras never returns float64 (it follows JAX's default of 32-bit types).
    """
    return "float64" if keras.backend.standardize_dtype(dtype) == "float64" else "float32"


def mean(x, axes):
    """``ops.mean(x, axes, keepdims=True)``, but exact in float64 on JAX too.

    Keras's JAX ``mean`` and ``var`` accumulate float64 inputs in float32; ``sum`` does not.
    """
    shape = ops.shape(x)
    count = 1
    for a in axes:
        count = count * shape[a]
    return ops.sum(x, axis=axes, keepdims=True) / ops.cast(count, x.dtype)
