"""ps07_modern_networks submissions for the generic pipeline test (tests/test_problem_sets.py).

ALTERNATIVES: correct implementations written differently from the solution; each must score
full marks. MISTAKES: one catalogued mistake each; the autograded notebook must contain
``message`` in the outputs of the test cells of ``part`` (a test cell's grade id, or a tuple of
them), which must lose points, and every test cell of every other part keeps its points (a
part is a test cell with its ``_visible``/``_hidden`` sibling). Cells not listed keep the
solution's source.
"""

ALTERNATIVES = {
    "squeezed rms, the compact backward, Jacobians, the vector step, the first-order equilibrium": {
        "A_rms_forward": '''
def rms_norm_forward(x, gamma, eps=1e-6, axis=-1):
    xt = np.moveaxis(x, axis, -1)
    rms = np.sqrt(np.einsum("...c,...c->...", xt, xt) / xt.shape[-1] + eps)
    return np.moveaxis(xt / rms[..., None] * gamma, -1, axis), rms
''',
        "A_rms_backward": '''
def rms_norm_backward(dy, x, gamma, eps=1e-6, axis=-1):
    xt, dyt = np.moveaxis(x, axis, -1), np.moveaxis(dy, axis, -1)
    rms = np.sqrt((xt**2).mean(axis=-1, keepdims=True) + eps)
    xhat = xt / rms
    dxhat = dyt * gamma
    dx = (dxhat - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)) / rms
    dgamma = (dyt * xhat).reshape(-1, xt.shape[-1]).sum(axis=0)
    return np.moveaxis(dx, -1, axis), dgamma
''',
        "B_gradient_norms": '''
def residual_gradient_norms(x, weights, c, eps=1e-6):
    d = x.shape[1]

    def vjp(g, h):  # g times the Jacobian of rms_norm at h, row by row
        r = np.sqrt((h**2).mean(axis=-1) + eps)[:, None, None]
        jac = np.eye(d) / r - h[:, :, None] * h[:, None, :] / (d * r**3)
        return np.einsum("ni,nij->nj", g, jac)

    hs, _ = pre_norm_forward(x, weights, eps)
    g, pre = vjp(c, hs[-1]), []
    for w, h in zip(weights[::-1], hs[-2::-1]):
        g = g + vjp(g @ w.T, h)
        pre.append(np.sqrt(np.sum(g**2)))
    hs, _ = post_norm_forward(x, weights, eps)
    g, post = c, []
    for w, h in zip(weights[::-1], hs[-2::-1]):
        g = vjp(g, h + h @ w) @ (np.eye(d) + w).T
        post.append(np.sqrt(np.sum(g**2)))
    return pre[::-1], post[::-1]
''',
        "C_decay_step": '''
def weight_decay_step(w, g, eta, lam):
    new = w - eta * (g + lam * w)
    return np.linalg.norm(new, axis=1), eta / np.sum(w * w, axis=1)
''',
        "C_equilibrium": '''
def equilibrium(eta, lam, g_unit):
    # first order in eta * lam: ||w||^4 = eta g^2 / (2 lam)
    effective_lr = np.sqrt(2 * eta * lam) / g_unit
    return np.sqrt(eta / effective_lr), effective_lr
''',
        "D_q1_answer": 'answer_q1 = "A"',
        "D_q2_answer": 'answer_q2 = " c "',
        "D_q5_answer": 'answer_q5 = "(d)"',
    },
    "numeric gradients, loops and float64 throughout": {
        "A_rms_forward": '''
def rms_norm_forward(x, gamma, eps=1e-6, axis=-1):
    x, gamma = x.astype(np.float64), gamma.astype(np.float64)
    rms = np.sqrt(np.mean(np.square(x), axis=axis) + eps)
    return x / np.expand_dims(rms, axis) * per_feature(gamma, x.ndim, axis), rms
''',
        "A_rms_backward": '''
def rms_norm_backward(dy, x, gamma, eps=1e-6, axis=-1):
    dy, x, gamma = (np.asarray(a, dtype=np.float64) for a in (dy, x, gamma))
    dx = numeric_gradient(lambda z: np.sum(dy * rms_norm_forward(z, gamma, eps, axis)[0]), x)
    others = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    rms = np.sqrt(np.mean(x**2, axis=axis, keepdims=True) + eps)
    return dx, np.sum(dy * x / rms, axis=others)
''',
        "B_gradient_norms": '''
def residual_gradient_norms(x, weights, c, eps=1e-6):
    result = []
    for forward in (pre_norm_forward, post_norm_forward):
        hs, _ = forward(x, weights, eps)
        norms = []
        for start in range(len(weights)):
            loss = lambda h: np.sum(c * forward(h, weights, eps, start)[1])
            norms.append(np.linalg.norm(numeric_gradient(loss, hs[start])))
        result.append(np.array(norms))
    return tuple(result)
''',
        "C_decay_step": '''
def weight_decay_step(w, g, eta, lam):
    new_norm, effective_lr = [], []
    for wi, gi in zip(w, g):
        squared = wi @ wi
        new_norm.append(np.sqrt((1 - eta * lam) ** 2 * squared + eta**2 * (gi @ gi)))
        effective_lr.append(eta / squared)
    return np.array(new_norm, dtype=w.dtype), np.array(effective_lr, dtype=w.dtype)
''',
        "C_equilibrium": '''
def equilibrium(eta, lam, g_unit):
    # n2 = (1 - eta lam)^2 n2 + eta^2 g_unit^2 / n2, solved for n2 = ||w||^2 as it stands
    n2 = np.sqrt(eta**2 * g_unit**2 / (1 - (1 - eta * lam) ** 2))
    return np.sqrt(n2), eta / n2
''',
        "D_q3_answer": 'answer_q3 = "B"',
        "D_q4_answer": 'answer_q4 = "(b)"',
    },
}

# Part B's function, right (the solution's computation, more compact); each of its catalogued
# mistakes below is this source with one or two lines changed.
_GRADIENT_NORMS = '''
def residual_gradient_norms(x, weights, c, eps=1e-6):
    def norm_backward(g, h):
        rms = np.sqrt(np.mean(h**2, axis=-1, keepdims=True) + eps)
        return g / rms - h * np.sum(g * h, axis=-1, keepdims=True) / (h.shape[-1] * rms**3)

    hs, _ = pre_norm_forward(x, weights, eps)
    g, pre = norm_backward(c, hs[-1]), np.zeros(len(weights))
    for l in reversed(range(len(weights))):
        g = g + norm_backward(g @ weights[l].T, hs[l])
        pre[l] = np.linalg.norm(g)
    hs, _ = post_norm_forward(x, weights, eps)
    g, post = c, np.zeros(len(weights))
    for l in reversed(range(len(weights))):
        gz = norm_backward(g, hs[l] + hs[l] @ weights[l])
        g = gz + gz @ weights[l].T
        post[l] = np.linalg.norm(g)
    return pre, post
'''


def _changed(source, *edits):
    """``source`` with each ``(old, new)`` of ``edits`` made; each ``old`` must occur once."""
    for old, new in edits:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return source


MISTAKES = {
    "mean subtracted (that is LayerNorm)": {
        "cells": {"A_rms_forward": '''
def rms_norm_forward(x, gamma, eps=1e-6, axis=-1):
    xc = x - x.mean(axis=axis, keepdims=True)
    rms = np.sqrt(np.mean(xc**2, axis=axis, keepdims=True) + eps)
    return per_feature(gamma, x.ndim, axis) * xc / rms, rms
'''},
        "message": "Most likely mistake (mean subtracted (that is LayerNorm))",
        "part": "A_rms_forward_visible",
    },
    "epsilon outside the square root": {
        "cells": {"A_rms_forward": '''
def rms_norm_forward(x, gamma, eps=1e-6, axis=-1):
    rms = np.sqrt(np.mean(x**2, axis=axis, keepdims=True)) + eps
    return per_feature(gamma, x.ndim, axis) * x / rms, rms
'''},
        "message": "Most likely mistake (epsilon outside the square root)",
        "part": "A_rms_forward_visible",
    },
    "wrong axis: the batch statistics": {
        "cells": {"A_rms_forward": '''
def rms_norm_forward(x, gamma, eps=1e-6, axis=-1):
    axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    rms = np.sqrt(np.mean(x**2, axis=axes, keepdims=True) + eps)
    return per_feature(gamma, x.ndim, axis) * x / rms, rms
'''},
        "message": "Most likely mistake (wrong axis: the batch statistics)",
        "part": "A_rms_forward_visible",
    },
    "float32 computation for float64 input": {
        "cells": {"A_rms_forward": '''
def rms_norm_forward(x, gamma, eps=1e-6, axis=-1):
    x, gamma = x.astype(np.float32), gamma.astype(np.float32)
    rms = np.sqrt(np.mean(x**2, axis=axis, keepdims=True) + eps)
    return per_feature(gamma, x.ndim, axis) * x / rms, rms
'''},
        "message": "returned float32 for float64 input",
        "part": "A_rms_forward_visible",
    },
    "RMS treated as a constant": {
        "cells": {"A_rms_backward": '''
def rms_norm_backward(dy, x, gamma, eps=1e-6, axis=-1):
    rms = np.sqrt(np.mean(x**2, axis=axis, keepdims=True) + eps)
    others = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    return dy * per_feature(gamma, x.ndim, axis) / rms, np.sum(dy * x / rms, axis=others)
'''},
        "message": "Most likely mistake (RMS treated as a constant)",
        "part": "A_rms_backward_visible",
    },
    "1/n missing from the correction term": {
        "cells": {"A_rms_backward": '''
def rms_norm_backward(dy, x, gamma, eps=1e-6, axis=-1):
    rms = np.sqrt(np.mean(x**2, axis=axis, keepdims=True) + eps)
    dxhat = dy * per_feature(gamma, x.ndim, axis)
    dx = dxhat / rms - x * np.sum(dxhat * x, axis=axis, keepdims=True) / rms**3
    others = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    return dx, np.sum(dy * x / rms, axis=others)
'''},
        "message": "Most likely mistake (1/n missing from the correction term)",
        "part": "A_rms_backward_visible",
    },
    "final normalisation left out": {
        "cells": {"B_gradient_norms": _changed(
            _GRADIENT_NORMS, ("g, pre = norm_backward(c, hs[-1]),", "g, pre = c,"))},
        "message": "Most likely mistake (final normalisation left out)",
        "part": "B_gradient_norms_visible",
    },
    "identity path left out of the backward pass": {
        "cells": {"B_gradient_norms": _changed(
            _GRADIENT_NORMS,
            ("g = g + norm_backward(g @ weights[l].T, hs[l])",
             "g = norm_backward(g @ weights[l].T, hs[l])"),
            ("gz = norm_backward(g, hs[l] + hs[l] @ weights[l])\n        g = gz + gz @ weights[l].T",
             "g = norm_backward(g, hs[l] + hs[l] @ weights[l]) @ weights[l].T"))},
        "message": "Most likely mistake (identity path left out of the backward pass)",
        "part": "B_gradient_norms_visible",
    },
    "orderings swapped": {
        "cells": {"B_gradient_norms": _changed(
            _GRADIENT_NORMS, ("return pre, post", "return post, pre"))},
        "message": "Most likely mistake (wrong order)",
        "part": "B_gradient_norms_visible",
    },
    "decay term forgotten": {
        "cells": {"C_decay_step": '''
def weight_decay_step(w, g, eta, lam):
    return np.linalg.norm(w - eta * g, axis=1), eta / np.linalg.norm(w, axis=1) ** 2
'''},
        "message": "Most likely mistake (decay term forgotten)",
        "part": "C_decay_step_visible",
    },
    "||w|| instead of ||w||^2 (one step)": {
        "cells": {"C_decay_step": '''
def weight_decay_step(w, g, eta, lam):
    w_norm = np.linalg.norm(w, axis=1)
    new_norm = np.sqrt((1 - eta * lam) ** 2 * w_norm**2 + eta**2 * np.linalg.norm(g, axis=1) ** 2)
    return new_norm, eta / w_norm
'''},
        "message": "Most likely mistake (||w|| instead of ||w||^2)",
        "part": "C_decay_step_visible",
    },
    "||w||^2 instead of ||w||^4": {
        "cells": {"C_equilibrium": '''
def equilibrium(eta, lam, g_unit):
    w_norm = np.sqrt(eta * g_unit**2 / (2 * lam))
    return w_norm, eta / w_norm**2
'''},
        "message": "Most likely mistake (||w||^2 instead of ||w||^4)",
        "part": "C_equilibrium_visible",
    },
    "factor 2 missing": {
        "cells": {"C_equilibrium": '''
def equilibrium(eta, lam, g_unit):
    w_norm = (eta * g_unit**2 / lam) ** 0.25
    return w_norm, eta / w_norm**2
'''},
        "message": "Most likely mistake (factor 2 missing)",
        "part": "C_equilibrium_visible",
    },
    "q1: pre-norm and post-norm swapped": {
        "cells": {"D_q1_answer": 'answer_q1 = "b"'},
        "message": "The two are the other way round",
        "part": "D_q1",
    },
    "q5: weight decay taken to lower the effective learning rate": {
        "cells": {"D_q5_answer": 'answer_q5 = "c"'},
        "message": "a smaller ||w|| RAISES it",
        "part": "D_q5",
    },
}
