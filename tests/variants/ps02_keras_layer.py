"""ps02_keras_layer submissions for the generic pipeline test (tests/test_problem_sets.py).

ALTERNATIVES: correct layers written differently from the solution; each must score full
marks. MISTAKES: one catalogued mistake each, made in the solution's own class (one or two
lines changed), so that each reads like a learner's slip; the autograded notebook must contain
``message`` in the outputs of the test cells of ``part`` (a test cell's grade id, or a tuple of
them), which must lose points, and every other part keeps its points. A mistake in a formula
that training and inference share (epsilon, gamma and beta, a reshape) shows in every part
that uses it, and its ``part`` lists them all; Part F (channels first) grades the axis only,
so such a mistake costs nothing there.
"""

import json
import pathlib

_SOURCE = pathlib.Path(__file__).resolve().parents[2] / "solutions" / "ps02_keras_layer" / "ps02_keras_layer.ipynb"


def _solution_class():
    cells = json.loads(_SOURCE.read_text())["cells"]
    (source,) = ["".join(c["source"]) for c in cells
                 if c["metadata"].get("nbgrader", {}).get("grade_id") == "layer"]
    return "\n".join(line for line in source.splitlines()
                     if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line)


def _patch(*edits):
    """The solution's class with each (old, new) replaced; old must occur exactly once."""
    source = _solution_class()
    for old, new in edits:
        assert source.count(old) == 1, f"the solution changed: update tests/variants/ps02_keras_layer.py ({old!r})"
        source = source.replace(old, new)
    return {"layer": source}


_HEAD = '''class BatchNorm(keras.layers.Layer):
    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.momentum = momentum
        self.epsilon = epsilon
'''

ALTERNATIVES = {
    "ops.moments, ops.batch_normalization, the increment form of the update": {"layer": _HEAD + '''
    def build(self, input_shape):
        shape = (input_shape[self.axis],)
        self.gamma = self.add_weight(shape=shape, initializer=keras.initializers.Ones())
        self.beta = self.add_weight(shape=shape, initializer=keras.initializers.Zeros())
        self.moving_mean = self.add_weight(shape=shape, initializer="zeros", trainable=False)
        self.moving_variance = self.add_weight(shape=shape, initializer="ones", trainable=False)

    def call(self, inputs, training=None):
        axis = self.axis % len(inputs.shape)
        axes = [a for a in range(len(inputs.shape)) if a != axis]
        if not training or not self.trainable:
            mean, var = self.moving_mean, self.moving_variance
        else:
            mean, var = ops.moments(inputs, axes)
            self.moving_mean.assign_add((1 - self.momentum) * (mean - self.moving_mean))
            self.moving_variance.assign_add((1 - self.momentum) * (var - self.moving_variance))
        return ops.batch_normalization(inputs, mean, var, axis=axis, offset=self.beta,
                                       scale=self.gamma, epsilon=self.epsilon)
'''},
    "feature axis moved last, einsum statistics, moved back": {"layer": _HEAD + '''
    def build(self, input_shape):
        self.c = input_shape[self.axis]
        for name, init, trainable in (("gamma", "ones", True), ("beta", "zeros", True),
                                      ("moving_mean", "zeros", False),
                                      ("moving_variance", "ones", False)):
            setattr(self, name, self.add_weight(shape=(self.c,), initializer=init,
                                                trainable=trainable, name=name))

    def call(self, inputs, training=None):
        moved = ops.moveaxis(inputs, self.axis, -1)
        flat = ops.reshape(moved, (-1, self.c))
        if training and self.trainable:
            m = flat.shape[0]
            mean = ops.einsum("ic->c", flat) / m
            centred = flat - mean
            var = ops.einsum("ic,ic->c", centred, centred) / m
            self.moving_mean.assign(self.momentum * self.moving_mean + (1 - self.momentum) * mean)
            self.moving_variance.assign(self.momentum * self.moving_variance
                                        + (1 - self.momentum) * var)
        else:
            mean, var = self.moving_mean, self.moving_variance
        y = self.gamma * (flat - mean) * ops.rsqrt(var + self.epsilon) + self.beta
        return ops.moveaxis(ops.reshape(y, moved.shape), -1, self.axis)
'''},
    "float64 inside, ops.var with keepdims, axes computed in build": {"layer": _HEAD + '''
    def build(self, input_shape):
        ndim = len(input_shape)
        axis = self.axis % ndim
        self.reduce_axes = tuple(a for a in range(ndim) if a != axis)
        self.shape = [input_shape[a] if a == axis else 1 for a in range(ndim)]
        c = input_shape[axis]
        self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(shape=(c,), initializer="zeros", trainable=False,
                                           name="moving_mean")
        self.moving_variance = self.add_weight(shape=(c,), initializer="ones", trainable=False,
                                               name="moving_variance")

    def call(self, inputs, training=None):
        x = ops.cast(inputs, "float64")
        if training and self.trainable:
            mean = ops.mean(x, axis=self.reduce_axes, keepdims=True)
            var = ops.var(x, axis=self.reduce_axes, keepdims=True)
            k = self.momentum
            new_mean = ops.reshape(mean, (-1,)) * (1 - k) + ops.cast(self.moving_mean, "float64") * k
            new_var = ops.reshape(var, (-1,)) * (1 - k) + ops.cast(self.moving_variance, "float64") * k
            self.moving_mean.assign(ops.cast(new_mean, self.moving_mean.dtype))
            self.moving_variance.assign(ops.cast(new_var, self.moving_variance.dtype))
        else:
            mean = ops.reshape(ops.cast(self.moving_mean, "float64"), self.shape)
            var = ops.reshape(ops.cast(self.moving_variance, "float64"), self.shape)
        gamma = ops.reshape(ops.cast(self.gamma, "float64"), self.shape)
        beta = ops.reshape(ops.cast(self.beta, "float64"), self.shape)
        return ops.cast(gamma * (x - mean) / ops.sqrt(var + self.epsilon) + beta, inputs.dtype)
'''},
}

_INFERENCE_FORMULA = ("xhat = (inputs - ops.reshape(mean, shape)) / ops.sqrt(\n"
                      "            ops.reshape(variance, shape) + self.epsilon)")
_EVERY_CALL = ("B_training_visible", "D_inference_visible", "E_frozen_visible")

MISTAKES = {
    "unbiased variance in training": {
        "cells": _patch((
            "variance = ops.mean(ops.square(inputs - ops.reshape(mean, shape)), axis=axes)",
            "count = 1\n"
            "            for a in axes:\n"
            "                count *= inputs.shape[a]\n"
            "            variance = ops.sum(ops.square(inputs - ops.reshape(mean, shape)), "
            "axis=axes) / (count - 1)")),
        "message": "Most likely mistake (unbiased variance)",
        # the same variance feeds the moving average: Part C is diagnosed there too
        "part": ("B_training_visible", "C_moving_visible"),
    },
    "wrong reduction axis: the batch axis only": {
        "cells": _patch(("mean = ops.mean(inputs, axis=axes)", "mean = ops.mean(inputs, axis=0)"),
                        ("variance = ops.mean(ops.square(inputs - ops.reshape(mean, shape)), "
                         "axis=axes)", "variance = ops.var(inputs, axis=0)")),
        "message": "reduce over every axis except `self.axis`",
        "part": ("B_training_visible", "C_moving_visible", "F_channels_first_visible"),
    },
    "missing epsilon": {
        "cells": _patch((_INFERENCE_FORMULA, "xhat = (inputs - ops.reshape(mean, shape)) / "
                                             "ops.sqrt(ops.reshape(variance, shape))")),
        "message": "Most likely mistake (missing epsilon)",
        "part": _EVERY_CALL,
    },
    "epsilon outside the square root": {
        "cells": _patch((_INFERENCE_FORMULA, "xhat = (inputs - ops.reshape(mean, shape)) / (\n"
                                             "            ops.sqrt(ops.reshape(variance, shape)) "
                                             "+ self.epsilon)")),
        "message": "Most likely mistake (epsilon outside the square root)",
        "part": _EVERY_CALL,
    },
    "gamma and beta swapped": {
        "cells": _patch(("return ops.reshape(self.gamma, shape) * xhat + ops.reshape(self.beta, "
                         "shape)",
                         "return ops.reshape(self.beta, shape) * xhat + ops.reshape(self.gamma, "
                         "shape)")),
        "message": "Most likely mistake (gamma and beta swapped)",
        "part": _EVERY_CALL,
    },
    "moving statistics updated at inference": {
        "cells": _patch(("        if training and self.trainable:\n"
                         "            mean = ops.mean(inputs, axis=axes)",
                         "        if True:  # the moving statistics learn from every batch\n"
                         "            mean = ops.mean(inputs, axis=axes)"),
                        ("        else:\n            mean, variance = self.moving_mean, "
                         "self.moving_variance",
                         "        if not (training and self.trainable):\n"
                         "            mean, variance = self.moving_mean, self.moving_variance")),
        "message": "Most likely mistake (moving statistics updated at inference)",
        # a frozen layer then updates its statistics too
        "part": ("D_inference_visible", "E_frozen_visible"),
    },
    "momentum reversed": {
        "cells": _patch(("self.moving_mean.assign(self.moving_mean * self.momentum\n"
                         "                                    + mean * (1.0 - self.momentum))",
                         "self.moving_mean.assign(self.moving_mean * (1.0 - self.momentum)\n"
                         "                                    + mean * self.momentum)"),
                        ("self.moving_variance.assign(self.moving_variance * self.momentum\n"
                         "                                        + variance * (1.0 - "
                         "self.momentum))",
                         "self.moving_variance.assign(self.moving_variance * (1.0 - "
                         "self.momentum)\n                                        + variance * "
                         "self.momentum)")),
        "message": "Most likely mistake (momentum reversed)",
        "part": "C_moving_visible",
    },
    "channels-first input reshaped without a transpose": {
        "cells": {"layer": _solution_class().split("    def call(")[0] + '''    def call(self, inputs, training=None):
        c = inputs.shape[self.axis]
        x = ops.reshape(inputs, (-1, c))  # features in the last column... or so it seems
        if training and self.trainable:
            mean = ops.mean(x, axis=0)
            variance = ops.var(x, axis=0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum
                                        + variance * (1 - self.momentum))
        else:
            mean, variance = self.moving_mean, self.moving_variance
        y = self.gamma * (x - mean) / ops.sqrt(variance + self.epsilon) + self.beta
        return ops.reshape(y, inputs.shape)
'''},
        "message": "Most likely mistake (channels-first input reshaped without a transpose)",
        "part": "F_channels_first_visible",
    },
    "trainable=False ignored": {
        "cells": _patch(("if training and self.trainable:", "if training:")),
        "message": "Most likely mistake (trainable=False ignored)",
        "part": "E_frozen_visible",
    },
    "moving statistics trainable": {
        "cells": _patch(('self.moving_mean = self.add_weight(shape=(c,), initializer="zeros", '
                         'trainable=False,', 'self.moving_mean = self.add_weight(shape=(c,), '
                         'initializer="zeros", trainable=True,'),
                        ('initializer="ones",\n                                               '
                         'trainable=False, name="moving_variance")',
                         'initializer="ones",\n                                               '
                         'trainable=True, name="moving_variance")')),
        "message": "Most likely mistake (moving statistics trainable)",
        "part": "A_build_visible",
    },
}
