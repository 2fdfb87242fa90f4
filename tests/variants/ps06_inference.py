"""ps06_inference submissions for the generic pipeline test (tests/test_problem_sets.py).

ALTERNATIVES: correct implementations written differently from the solution; each must score
full marks. MISTAKES: one catalogued mistake each; the autograded notebook must contain
``message`` and the test cell ``part`` must lose its points (every other part keeps them).
Cells not listed keep the solution's source.
"""

ALTERNATIVES = {
    "reshape, Sequential head, ddof=1 batches, a loop over blocks": {
        "A_fold_conv_bn": '''
def fold_conv_bn(kernel, bias, gamma, beta, moving_mean, moving_var, eps=1e-3):
    std = np.sqrt(moving_var + eps)
    folded_kernel = kernel / std.reshape(1, 1, 1, -1) * gamma.reshape(1, 1, 1, -1)
    return folded_kernel, beta + gamma * (bias - moving_mean) / std
''',
        "B_build_finetune_model": '''
def build_finetune_model(base, num_classes):
    base.trainable = True
    for layer in base.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.trainable = False
    return keras.Sequential([base, keras.layers.Dense(num_classes)])
''',
        "C_population_statistics": '''
def population_statistics(x, batch_size, axis=-1):
    # m/(m-1) times the biased variance of m values is their unbiased variance
    xt = np.moveaxis(x, axis, -1)
    batches = xt.reshape(len(x) // batch_size, -1, xt.shape[-1])
    return batches.mean(axis=1).mean(axis=0), batches.var(axis=1, ddof=1).mean(axis=0)
''',
        "C_adabn_statistics": '''
def adabn_statistics(x, params, eps=1e-3):
    params = dict(params)
    out, h = [], x
    for j in (1, 2):
        z = h @ params[f"kernel{j}"]
        params[f"moving_mean{j}"], params[f"moving_var{j}"] = z.mean(axis=0), z.var(axis=0)
        out += [params[f"moving_mean{j}"], params[f"moving_var{j}"]]
        h = block_forward(h, params[f"kernel{j}"], params[f"gamma{j}"], params[f"beta{j}"],
                          params[f"moving_mean{j}"], params[f"moving_var{j}"], eps)
    return tuple(out)
''',
        "B_q1_answer": 'answer_q1 = "B"',
        "D_q3_answer": 'answer_q3 = " (a) "',
    },
    "einsum, float64, a wrapper layer with training=False, keepdims": {
        "A_fold_conv_bn": '''
def fold_conv_bn(kernel, bias, gamma, beta, moving_mean, moving_var, eps=1e-3):
    kernel, bias = kernel.astype(np.float64), bias.astype(np.float64)
    s = gamma / np.sqrt(moving_var.astype(np.float64) + eps)
    return [np.einsum("hwio,o->hwio", kernel, s), bias * s + (beta - moving_mean * s)]
''',
        "B_build_finetune_model": '''
class InferenceBase(keras.layers.Layer):
    """Calls the base with training=False: inside a layer's call, that is respected."""

    def __init__(self, base, **kwargs):
        super().__init__(**kwargs)
        self.base = base

    def call(self, x, training=None):
        return self.base(x, training=False)


def build_finetune_model(base, num_classes):
    base.trainable = True
    inputs = keras.Input(base.input_shape[1:])
    outputs = keras.layers.Dense(num_classes)(InferenceBase(base)(inputs))
    return keras.Model(inputs, outputs)
''',
        "C_population_statistics": '''
def population_statistics(x, batch_size, axis=-1):
    x = x.astype(np.float64)
    k = len(x) // batch_size
    axes = tuple(a + 1 for a in range(x.ndim) if a != axis % x.ndim)
    b = x.reshape((k, batch_size) + x.shape[1:])
    mean_b = b.mean(axis=axes, keepdims=True)
    var_b = ((b - mean_b) ** 2).mean(axis=axes, keepdims=True)
    m = b[0].size / x.shape[axis]
    return mean_b.mean(axis=0), m / (m - 1) * var_b.mean(axis=0)
''',
        "C_adabn_statistics": '''
def adabn_statistics(x, params, eps=1e-3):
    z1 = x.astype(np.float64) @ params["kernel1"]
    m1, v1 = z1.mean(axis=0, keepdims=True), z1.var(axis=0, keepdims=True)
    h1 = np.maximum(params["gamma1"] * (z1 - m1) / np.sqrt(v1 + eps) + params["beta1"], 0)
    z2 = h1 @ params["kernel2"]
    return m1, v1, z2.mean(axis=0), ((z2 - z2.mean(axis=0)) ** 2).mean(axis=0)
''',
    },
}

MISTAKES = {
    "conv bias ignored": {
        "cells": {"A_fold_conv_bn": '''
def fold_conv_bn(kernel, bias, gamma, beta, moving_mean, moving_var, eps=1e-3):
    s = gamma / np.sqrt(moving_var + eps)
    return kernel * s, beta - moving_mean * s
'''},
        "message": "Most likely mistake (conv bias ignored)",
        "part": "A_fold_conv_bn_visible",
    },
    "bug left as given": {
        "cells": {"B_build_finetune_model": '''
def build_finetune_model(base, num_classes):
    base.trainable = True
    inputs = keras.Input(shape=base.input_shape[1:])
    features = base(inputs)
    outputs = keras.layers.Dense(num_classes)(features)
    return keras.Model(inputs, outputs)
'''},
        "message": "Most likely mistake (BN layers in training mode)",
        "part": "B_build_finetune_model_visible",
    },
    "training=False only (overridden in Keras 3.15)": {
        "cells": {"B_build_finetune_model": '''
def build_finetune_model(base, num_classes):
    base.trainable = True
    inputs = keras.Input(shape=base.input_shape[1:])
    features = base(inputs, training=False)
    outputs = keras.layers.Dense(num_classes)(features)
    return keras.Model(inputs, outputs)
'''},
        "message": "Most likely mistake (training=False overridden)",
        "part": "B_build_finetune_model_visible",
    },
    "whole base frozen": {
        "cells": {"B_build_finetune_model": '''
def build_finetune_model(base, num_classes):
    base.trainable = False
    inputs = keras.Input(shape=base.input_shape[1:])
    outputs = keras.layers.Dense(num_classes)(base(inputs, training=False))
    return keras.Model(inputs, outputs)
'''},
        "message": "Most likely mistake (whole base frozen)",
        "part": "B_build_finetune_model_visible",
    },
    "m/(m-1) correction missing": {
        "cells": {"C_population_statistics": '''
def population_statistics(x, batch_size, axis=-1):
    axes = reduction_axes(x.ndim, axis)
    batches = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    means = np.mean([b.mean(axis=axes) for b in batches], axis=0)
    variances = np.mean([b.var(axis=axes) for b in batches], axis=0)
    return means, variances
'''},
        "message": "Most likely mistake (m/(m-1) correction missing)",
        "part": "C_population_statistics_visible",
    },
    "stale statistics upstream": {
        "cells": {"C_adabn_statistics": '''
def adabn_statistics(x, params, eps=1e-3):
    z1 = x @ params["kernel1"]
    h1 = block_forward(x, params["kernel1"], params["gamma1"], params["beta1"],
                       params["moving_mean1"], params["moving_var1"], eps)
    z2 = h1 @ params["kernel2"]
    return z1.mean(axis=0), z1.var(axis=0), z2.mean(axis=0), z2.var(axis=0)
'''},
        "message": "Most likely mistake (stale statistics upstream)",
        "part": "C_adabn_statistics_visible",
    },
    "q1: trainable=False read as PyTorch's requires_grad": {
        "cells": {"B_q1_answer": 'answer_q1 = "a"'},
        "message": "That is PyTorch's behaviour",
        "part": "B_q1",
    },
    "q2: batch statistics at inference": {
        "cells": {"D_q2_answer": 'answer_q2 = "a"'},
        "message": "a batch of one has variance 0",
        "part": "D_q2",
    },
}
