"""course_lib: the code behind the Batch Normalization course.

The NumPy parts (``course_lib.reference``, ``course_lib.data``, ``course_lib.checks``) import
without Keras, so a problem set on NumPy never pays for a TensorFlow import. The Keras layers
are loaded on first use:

>>> import course_lib
>>> layer = course_lib.BatchNormalization()      # imports Keras here
"""

import importlib

__version__ = "0.1.0"

# name -> module that defines it; resolved lazily by __getattr__ below.
_LAZY = {
    "BatchNormalization": "course_lib.batch_normalization",
    "LayerNormalization": "course_lib.layer_normalization",
    "GroupNormalization": "course_lib.group_normalization",
    "InstanceNormalization": "course_lib.instance_normalization",
    "WeightNormalization": "course_lib.weight_normalization",
    "WSConv2D": "course_lib.weight_standardization",
    "ScalarBias": "course_lib.fixup",
    "ScalarMultiplier": "course_lib.fixup",
    "fixup_initializer": "course_lib.fixup",
    "FixupResidualBlock": "course_lib.fixup",
    "BatchRenormalization": "course_lib.batch_normalization",
    "recalibrate_batchnorm": "course_lib.recalibration",
    "fold_batchnorm": "course_lib.folding",
    "load_mnist": "course_lib.data",
    "reference": "course_lib.reference",
    "data": "course_lib.data",
    "checks": "course_lib.checks",
    "experiments": "course_lib.experiments",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'course_lib' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if _LAZY[name].endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
