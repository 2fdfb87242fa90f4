"""ps04_alternatives submissions for the generic pipeline test (tests/test_problem_sets.py).

ALTERNATIVES: correct implementations written differently from the solution; each must score
full marks. MISTAKES: one catalogued mistake each; the autograded notebook must contain
``message`` in the outputs of the test cells of ``part`` (a test cell's grade id, or a tuple of
them), which must lose points, and every other part keeps its points.
"""

ALTERNATIVES = {
    "np.var, keepdims, PyTorch's channels-first reshape": {
        "A_layer_norm": '''
def layer_norm(x, gamma, beta, eps=1e-3, axis=-1):
    axes = tuple(range(1, x.ndim))
    xhat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return per_feature(gamma, x.ndim, axis) * xhat + per_feature(beta, x.ndim, axis)
''',
        "B_group_norm": '''
def group_norm(x, gamma, beta, groups, eps=1e-3, axis=-1):
    cf = np.moveaxis(x, axis, 1)
    g = cf.reshape(len(x), groups, -1)
    xhat = (g - g.mean(axis=2, keepdims=True)) / np.sqrt(g.var(axis=2, keepdims=True) + eps)
    xhat = np.moveaxis(xhat.reshape(cf.shape), 1, axis)
    return per_feature(gamma, x.ndim, axis) * xhat + per_feature(beta, x.ndim, axis)
''',
        "C_instance_norm": '''
def instance_norm(x, gamma, beta, eps=1e-3, axis=-1):
    cf = np.moveaxis(x, axis, 1)
    flat = cf.reshape(cf.shape[0], cf.shape[1], -1)
    xhat = (flat - flat.mean(axis=2, keepdims=True)) / np.sqrt(flat.var(axis=2, keepdims=True) + eps)
    y = gamma[:, None] * xhat + beta[:, None]
    return np.moveaxis(y.reshape(cf.shape), 1, axis)
''',
        "D_first_example_outputs": '''
def first_example_outputs(norm, x):
    out = np.empty((len(x),) + x.shape[1:], dtype=x.dtype)
    for b in range(len(x)):
        out[b] = norm(x[: b + 1])[0]
    return out
''',
        "D_answer_depends": 'answer_depends = dict(batch=np.bool_(True), layer=False, group=False, instance=False)',
    },
    "einsum, float64, a loop over groups": {
        "A_layer_norm": '''
def layer_norm(x, gamma, beta, eps=1e-3, axis=-1):
    x64 = x.astype(np.float64)
    flat = x64.reshape(len(x), -1)
    m = flat.shape[1]
    mean = np.einsum("nk->n", flat) / m
    centred = flat - mean[:, None]
    var = np.einsum("nk,nk->n", centred, centred) / m
    xhat = (centred / np.sqrt(var + eps)[:, None]).reshape(x.shape)
    return np.moveaxis(np.moveaxis(xhat, axis, -1) * gamma + beta, -1, axis)
''',
        "B_group_norm": '''
def group_norm(x, gamma, beta, groups, eps=1e-3, axis=-1):
    axis = axis % x.ndim
    size = x.shape[axis] // groups
    y = np.empty(x.shape, dtype=np.float64)
    for n in range(len(x)):
        for k in range(groups):
            index = [n] + [slice(None)] * (x.ndim - 1)
            index[axis] = slice(k * size, (k + 1) * size)
            part = x[tuple(index)].astype(np.float64)
            centred = part - part.sum() / part.size
            y[tuple(index)] = centred / np.sqrt((centred**2).sum() / part.size + eps)
    return per_feature(gamma, x.ndim, axis) * y + per_feature(beta, x.ndim, axis)
''',
        "C_instance_norm": '''
def instance_norm(x, gamma, beta, eps=1e-3, axis=-1):
    return group_norm(x, gamma, beta, x.shape[axis], eps, axis)  # Instance Norm is GN with G = C
''',
        "D_first_example_outputs": '''
def first_example_outputs(norm, x):
    return np.array([norm(x[:b])[0, ...] for b in range(1, x.shape[0] + 1)])
''',
    },
}

MISTAKES = {
    "LN: statistics over the channel axis only": {
        "cells": {"A_layer_norm": '''
def layer_norm(x, gamma, beta, eps=1e-3, axis=-1):
    mean = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, keepdims=True)
    return per_feature(gamma, x.ndim, axis) * (x - mean) / np.sqrt(var + eps) + per_feature(beta, x.ndim, axis)
'''},
        "message": "Most likely mistake (statistics over the channel axis only)",
        "part": "A_layer_norm_visible",
    },
    "LN: unbiased variance": {
        "cells": {"A_layer_norm": '''
def layer_norm(x, gamma, beta, eps=1e-3, axis=-1):
    axes = tuple(range(1, x.ndim))
    xhat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True, ddof=1) + eps)
    return per_feature(gamma, x.ndim, axis) * xhat + per_feature(beta, x.ndim, axis)
'''},
        "message": "Most likely mistake (unbiased variance)",
        "part": "A_layer_norm_visible",
    },
    "GN: groups interleaved": {
        "cells": {"B_group_norm": '''
def group_norm(x, gamma, beta, groups, eps=1e-3, axis=-1):
    moved = np.moveaxis(x, axis, -1)
    c = moved.shape[-1]
    g = moved.reshape(moved.shape[:-1] + (c // groups, groups))
    axes = tuple(range(1, g.ndim - 1))
    xhat = (g - g.mean(axis=axes, keepdims=True)) / np.sqrt(g.var(axis=axes, keepdims=True) + eps)
    xhat = np.moveaxis(xhat.reshape(moved.shape), -1, axis)
    return per_feature(gamma, x.ndim, axis) * xhat + per_feature(beta, x.ndim, axis)
'''},
        "message": "Most likely mistake (groups interleaved)",
        "part": "B_group_norm_visible",
    },
    "GN: PyTorch's reshape on channels-last input": {
        "cells": {"B_group_norm": '''
def group_norm(x, gamma, beta, groups, eps=1e-3, axis=-1):
    g = x.reshape(len(x), groups, -1)
    xhat = ((g - g.mean(axis=2, keepdims=True)) / np.sqrt(g.var(axis=2, keepdims=True) + eps)).reshape(x.shape)
    return per_feature(gamma, x.ndim, axis) * xhat + per_feature(beta, x.ndim, axis)
'''},
        "message": "Most likely mistake (channels-first reshape on channels-last input)",
        "part": "B_group_norm_visible",
    },
    "IN: statistics over the batch": {
        "cells": {"C_instance_norm": '''
def instance_norm(x, gamma, beta, eps=1e-3, axis=-1):
    axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    xhat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return per_feature(gamma, x.ndim, axis) * xhat + per_feature(beta, x.ndim, axis)
'''},
        "message": "Most likely mistake (statistics over the batch)",
        "part": "C_instance_norm_visible",
    },
    "IN: epsilon outside the square root": {
        "cells": {"C_instance_norm": '''
def instance_norm(x, gamma, beta, eps=1e-3, axis=-1):
    axes = tuple(a for a in range(1, x.ndim) if a != axis % x.ndim)
    xhat = (x - x.mean(axis=axes, keepdims=True)) / (np.sqrt(x.var(axis=axes, keepdims=True)) + eps)
    return per_feature(gamma, x.ndim, axis) * xhat + per_feature(beta, x.ndim, axis)
'''},
        "message": "Most likely mistake (epsilon outside the square root)",
        "part": "C_instance_norm_visible",
    },
    "first example: the last example followed": {
        "cells": {"D_first_example_outputs": '''
def first_example_outputs(norm, x):
    return np.stack([norm(x[:b])[-1] for b in range(1, len(x) + 1)])
'''},
        "message": "Most likely mistake (output of the last example)",
        "part": "D_first_example_outputs_visible",
    },
    "Group Norm said to depend on the batch": {
        "cells": {"D_answer_depends": '''
answer_depends = {"batch": True, "layer": False, "group": True, "instance": False}
'''},
        "message": "does NOT depend on the rest of the batch",
        "part": "D_depends_group",
    },
}
