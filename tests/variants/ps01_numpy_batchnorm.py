"""ps01_numpy_batchnorm submissions for the generic pipeline test (tests/test_problem_sets.py).

ALTERNATIVES: correct implementations written differently from the solution; each must score
full marks. MISTAKES: one catalogued mistake each; the autograded notebook must contain
``message`` in the outputs of the test cells of ``part`` (a test cell's grade id, or a tuple of
them), which must lose points, and every test cell of every other part keeps its points (a
part is a test cell with its ``_visible``/``_hidden`` sibling). Cells not listed keep the
solution's source.
"""

ALTERNATIVES = {
    "np.var, keepdims, a fused inference and the compact backward": {
        "A_forward_train": '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-3, axis=-1):
    axes = reduction_axes(x.ndim, axis)
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.var(x, axis=axes, keepdims=True)
    y = per_feature(gamma, x.ndim, axis) * (x - mean) / np.sqrt(var + eps) + per_feature(beta, x.ndim, axis)
    return y, mean.ravel(), var.ravel()
''',
        "B_forward_inference": '''
def batchnorm_forward_inference(x, gamma, beta, moving_mean, moving_var, eps=1e-3, axis=-1):
    scale = gamma / np.sqrt(moving_var + eps)
    return x * per_feature(scale, x.ndim, axis) + per_feature(beta - moving_mean * scale, x.ndim, axis)
''',
        "B_moving_average": '''
def update_moving_average(moving, batch_value, momentum=0.99):
    return moving + (1 - momentum) * (batch_value - moving)
''',
        "C_backward": '''
def batchnorm_backward(dy, x, gamma, eps=1e-3, axis=-1):
    axes = reduction_axes(x.ndim, axis)
    m = x.size // x.shape[axis]
    inv_std = 1.0 / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    xhat = (x - x.mean(axis=axes, keepdims=True)) * inv_std
    dbeta = dy.sum(axis=axes, keepdims=True)
    dgamma = (dy * xhat).sum(axis=axes, keepdims=True)
    dx = per_feature(gamma, x.ndim, axis) * inv_std / m * (m * dy - dbeta - xhat * dgamma)
    return dx, dgamma.ravel(), dbeta.ravel()
''',
        "D_q1_answer": 'answer_q1 = "B"',
        "D_q2_answer": 'answer_q2 = " c "',
        "D_q3_answer": 'answer_q3 = "A"',
        "D_q4_answer": 'answer_q4 = "(d)"',
    },
    "einsum after moving the feature axis last": {
        "A_forward_train": '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-3, axis=-1):
    xt = np.moveaxis(x, axis, -1)
    flat = xt.reshape(-1, xt.shape[-1])
    m = flat.shape[0]
    mean = np.einsum("ic->c", flat) / m
    xc = flat - mean
    var = np.einsum("ic,ic->c", xc, xc) / m
    y = (gamma * xc / np.sqrt(var + eps) + beta).reshape(xt.shape)
    return np.moveaxis(y, -1, axis), mean, var
''',
        "C_backward": '''
def batchnorm_backward(dy, x, gamma, eps=1e-3, axis=-1):
    xt, dyt = np.moveaxis(x, axis, -1), np.moveaxis(dy, axis, -1)
    x2, d2 = xt.reshape(-1, xt.shape[-1]), dyt.reshape(-1, xt.shape[-1])
    m = x2.shape[0]
    xc = x2 - np.einsum("ic->c", x2) / m
    inv_std = 1 / np.sqrt(np.einsum("ic,ic->c", xc, xc) / m + eps)
    xhat = xc * inv_std
    dbeta, dgamma = np.einsum("ic->c", d2), np.einsum("ic,ic->c", d2, xhat)
    dx = gamma * inv_std / m * (m * d2 - dbeta - xhat * dgamma)
    return np.moveaxis(dx.reshape(xt.shape), -1, axis), dgamma, dbeta
''',
        "D_q2_answer": 'answer_q2 = "(c)"',
    },
    "float64 throughout": {
        "A_forward_train": '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-3, axis=-1):
    x, gamma, beta = (np.asarray(a, dtype=np.float64) for a in (x, gamma, beta))
    axes = reduction_axes(x.ndim, axis)
    mean = x.mean(axis=axes)
    var = x.var(axis=axes)
    xhat = (x - per_feature(mean, x.ndim, axis)) / np.sqrt(per_feature(var, x.ndim, axis) + eps)
    return per_feature(gamma, x.ndim, axis) * xhat + per_feature(beta, x.ndim, axis), mean, var
''',
        "B_forward_inference": '''
def batchnorm_forward_inference(x, gamma, beta, moving_mean, moving_var, eps=1e-3, axis=-1):
    xt = np.moveaxis(x.astype(np.float64), axis, -1)
    y = gamma * (xt - moving_mean) / np.sqrt(moving_var + eps) + beta
    return np.moveaxis(y, -1, axis)
''',
        "C_backward": '''
def batchnorm_backward(dy, x, gamma, eps=1e-3, axis=-1):
    dy, x, gamma = (np.asarray(a, dtype=np.float64) for a in (dy, x, gamma))
    axes = reduction_axes(x.ndim, axis)
    m = x.size // x.shape[axis]
    b = lambda v: per_feature(v, x.ndim, axis)
    mu, var = x.mean(axis=axes), x.var(axis=axes)
    xc = x - b(mu)
    xhat = xc / b(np.sqrt(var + eps))
    dxhat = dy * b(gamma)
    dvar = np.sum(dxhat * xc, axis=axes) * -0.5 * (var + eps) ** -1.5
    dmu = -np.sum(dxhat, axis=axes) / np.sqrt(var + eps) + dvar * np.sum(-2 * xc, axis=axes) / m
    dx = dxhat / b(np.sqrt(var + eps)) + b(dvar) * 2 * xc / m + b(dmu) / m
    return dx, np.sum(dy * xhat, axis=axes), np.sum(dy, axis=axes)
''',
    },
    "one-pass variance and a two-pass mean": {
        "A_forward_train": '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-3, axis=-1):
    axes = reduction_axes(x.ndim, axis)
    mean = x.mean(axis=axes)
    var = (x**2).mean(axis=axes) - mean**2
    scale = per_feature(gamma / np.sqrt(var + eps), x.ndim, axis)
    return scale * (x - per_feature(mean, x.ndim, axis)) + per_feature(beta, x.ndim, axis), mean, var
''',
        "B_moving_average": '''
def update_moving_average(moving, batch_value, momentum=0.99):
    new = np.array(moving, copy=True)
    new *= momentum
    new += (1 - momentum) * batch_value
    return new
''',
    },
    "lists returned, broadcasting by transposes": {
        "A_forward_train": '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-3, axis=-1):
    xt = np.swapaxes(x, axis, -1)
    axes = tuple(range(xt.ndim - 1))
    mean = xt.mean(axis=axes)
    var = ((xt - mean) ** 2).mean(axis=axes)
    y = np.swapaxes(gamma * (xt - mean) / np.sqrt(var + eps) + beta, axis, -1)
    return [y, mean, var]
''',
        "B_forward_inference": '''
def batchnorm_forward_inference(x, gamma, beta, moving_mean, moving_var, eps=1e-3, axis=-1):
    xt = np.swapaxes(x, axis, -1)
    return np.swapaxes((xt - moving_mean) / np.sqrt(moving_var + eps) * gamma + beta, axis, -1)
''',
        "D_q1_answer": 'answer_q1 = "(b)"',
    },
}

_FORWARD = '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-3, axis=-1):
    axes = reduction_axes(x.ndim, axis)
    mean = x.mean(axis=axes)
    var = x.var(axis=axes{ddof})
    xhat = (x - per_feature(mean, x.ndim, axis)) / {denominator}
    return {affine}, mean, var
'''


def _forward(ddof="", denominator="np.sqrt(per_feature(var, x.ndim, axis) + eps)",
             affine="per_feature(gamma, x.ndim, axis) * xhat + per_feature(beta, x.ndim, axis)"):
    return _FORWARD.format(ddof=ddof, denominator=denominator, affine=affine)


MISTAKES = {
    "unbiased variance": {
        "cells": {"A_forward_train": _forward(ddof=", ddof=1")},
        "message": "Most likely mistake (unbiased variance)",
        "part": "A_forward_train_visible",
    },
    "epsilon outside the square root": {
        "cells": {"A_forward_train": _forward(
            denominator="(np.sqrt(per_feature(var, x.ndim, axis)) + eps)")},
        "message": "Most likely mistake (epsilon outside the square root)",
        "part": "A_forward_train_visible",
    },
    "gamma and beta swapped": {
        "cells": {"A_forward_train": _forward(
            affine="per_feature(beta, x.ndim, axis) * xhat + per_feature(gamma, x.ndim, axis)")},
        "message": "Most likely mistake (gamma and beta swapped)",
        "part": "A_forward_train_visible",
    },
    "wrong reduction axis: the batch axis only": {
        "cells": {"A_forward_train": '''
def batchnorm_forward_train(x, gamma, beta, eps=1e-3, axis=-1):
    mean = x.mean(axis=0)
    var = x.var(axis=0)
    xhat = (x - mean) / np.sqrt(var + eps)
    return per_feature(gamma, x.ndim, axis) * xhat + per_feature(beta, x.ndim, axis), mean, var
'''},
        "message": "Most likely mistake (wrong reduction axis: the batch axis only)",
        "part": "A_forward_train_visible",
    },
    "batch statistics at inference": {
        "cells": {"B_forward_inference": '''
def batchnorm_forward_inference(x, gamma, beta, moving_mean, moving_var, eps=1e-3, axis=-1):
    axes = reduction_axes(x.ndim, axis)
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return per_feature(gamma, x.ndim, axis) * (x - mean) / np.sqrt(var + eps) + per_feature(beta, x.ndim, axis)
'''},
        "message": "Most likely mistake (batch statistics at inference)",
        "part": "B_forward_inference_visible",
    },
    "momentum reversed": {
        "cells": {"B_moving_average": '''
def update_moving_average(moving, batch_value, momentum=0.99):
    return moving * (1 - momentum) + batch_value * momentum
'''},
        "message": "Most likely mistake (momentum reversed)",
        "part": "B_moving_average_visible",
    },
    "mean and variance treated as constants": {
        "cells": {"C_backward": '''
def batchnorm_backward(dy, x, gamma, eps=1e-3, axis=-1):
    axes = reduction_axes(x.ndim, axis)
    std = np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    xhat = (x - x.mean(axis=axes, keepdims=True)) / std
    dx = dy * per_feature(gamma, x.ndim, axis) / std
    return dx, (dy * xhat).sum(axis=axes), dy.sum(axis=axes)
'''},
        "message": "Most likely mistake (mean and variance treated as constants)",
        "part": "C_backward_visible",
    },
    "dgamma and dbeta swapped": {
        "cells": {"C_backward": '''
def batchnorm_backward(dy, x, gamma, eps=1e-3, axis=-1):
    axes = reduction_axes(x.ndim, axis)
    m = x.size // x.shape[axis]
    inv_std = 1.0 / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    xhat = (x - x.mean(axis=axes, keepdims=True)) * inv_std
    dbeta = dy.sum(axis=axes, keepdims=True)
    dgamma = (dy * xhat).sum(axis=axes, keepdims=True)
    dx = per_feature(gamma, x.ndim, axis) * inv_std / m * (m * dy - dbeta - xhat * dgamma)
    return dx, dbeta.ravel(), dgamma.ravel()
'''},
        "message": "Most likely mistake (dgamma and dbeta swapped)",
        "part": "C_backward_visible",
    },
    "q1: NaN expected from a zero variance": {
        "cells": {"D_q1_answer": 'answer_q1 = "c"'},
        "message": "epsilon is added inside the square root",
        "part": "D_q1",
    },
    "q2: one update with momentum reversed": {
        "cells": {"D_q2_answer": 'answer_q2 = "a"'},
        "message": "with momentum reversed",
        "part": "D_q2",
    },
    "q4: BN's output taken to scale with its input": {
        "cells": {"D_q4_answer": 'answer_q4 = "a"'},
        "message": "multiplied by 10 as well",
        "part": "D_q4",
    },
}
