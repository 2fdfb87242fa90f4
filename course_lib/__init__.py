"""course_lib: the code behind the Batch Normalization course.

The NumPy parts (``course_lib.reference``, ``course_lib.data``) import
without Keras, so a problem set on NumPy never pays for a TensorFlow import (seconds and about
650 MB per kernel). The Keras layers load on first use:

>>> import course_lib
>>> layer = course_lib.BatchNormalization()      # imports Keras here

Loading a saved ``.keras`` model needs the classes registered with Keras. That happens as soon
as any layer is touched, and at ``import course_lib`` when Keras is already imported (import
``keras`` first, as usual); ``course_lib.register_layers()`` does it explicitly.
"""

import importlib
import sys

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
    "RMSNormalization": "course_lib.rms_normalization",
    "RenormClippingSchedule": "course_lib.batch_normalization",
    "adaptive_clip_gradients": "course_lib.gradient_clipping",
    "AdaptiveClippingOptimizer": "course_lib.gradient_clipping",
    "TransformerBlock": "course_lib.transformer",
    "TokenAndPositionEmbedding": "course_lib.transformer",
    "build_transformer_classifier": "course_lib.transformer",
    "load_mnist": "course_lib.data",
    "reference": "course_lib.reference",
    "data": "course_lib.data",
    "experiments": "course_lib.experiments",
    "replicas": "course_lib.replicas",
    "evidence": "course_lib.evidence",
}

__all__ = sorted(_LAZY) + ["register_layers"]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'course_lib' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if _LAZY[name].endswith("." + name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)


_LAYER_MODULES = sorted(
    {m for n, m in _LAZY.items() if n[0].isupper() or n.startswith(("fixup", "fold", "recal"))}
)


def register_layers():
    """Import every Keras layer module, registering its classes for ``keras.models.load_model``."""
    for module in _LAYER_MODULES:
        importlib.import_module(module)


if "keras" in sys.modules:
    register_layers()
