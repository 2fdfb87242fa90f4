"""Checks for problem set 7, "Normalization in modern networks".

The grade cells of ``ps07_modern_networks.ipynb`` call one function per graded part:

>>> from coursework import ps07_modern_networks as checks
>>> checks.check_rms_norm_forward(rms_norm_forward)                    # doctest: +SKIP
>>> checks.check_gradient_norms(residual_gradient_norms, hidden=True)  # doctest: +SKIP
>>> checks.check_answer("q1", answer_q1)                               # doctest: +SKIP

Each check is two separate steps (see ``coursework._core``): ``record(key, fn, hidden)``
calls the learner's function on fixed, seeded inputs and keeps what it returned;
``compare(key, records)`` recomputes the expected values in float64 from the same inputs and,
when an output is wrong, names the catalogued mistake that explains every output of every
case, if one does. Every part is checked on raw inputs, so no part's grade depends on another
part being right, and every function keeps the input's precision (float64 in, float64 out),
as the notebook asks. The oracles:

* ``rms_norm_forward`` and ``rms_norm_backward``: ``course_lib.reference.rms_norm_forward`` and
  ``rms_norm_backward`` (Zhang & Sennrich, 2019), in float64.
* ``residual_gradient_norms``: :func:`_gradient_norms_ref`, written here: a forward pass through
  the pre-norm and post-norm stacks and an explicit backward pass.
  ``tests/test_checks_ps07_modern_networks.py`` checks it against a central-difference gradient.
* ``weight_decay_step`` and ``equilibrium``: the norm of one SGD step with weight decay on a
  scale-invariant weight, and its fixed point (van Laarhoven, 2017), in closed form; the test
  file checks them by simulating SGD.

Pure NumPy: no Keras import.
"""

import numpy as np

from course_lib import reference as ref
from course_lib.reference import per_feature
from coursework import _choice
from coursework._core import Case, Checks, Mistake, Output, Spec

__all__ = [
    "check_rms_norm_forward", "check_rms_norm_backward", "check_gradient_norms",
    "check_weight_decay_step", "check_equilibrium", "check_answer", "record", "compare",
    "record_answer", "compare_answer", "cases", "SPECS", "QUESTIONS",
]

_KEYS = ("rms_forward", "rms_backward", "gradient_norms", "decay_step", "equilibrium")


def _rng(key, hidden, index):
    return np.random.default_rng([2019, 7, _KEYS.index(key), int(hidden), index])


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


# ---------------------------------------------------------------------------------------------
# Part A: RMSNorm forward and backward

# (label, shape, axis, dtype, eps). `axis` is the normalised axis (as in LayerNorm): one RMS per
# example, gamma of shape (C,), C = x.shape[axis]. Every dimension differs from every other.
_RMS_VISIBLE = [
    ("tokens (N, C)", (6, 8), -1, np.float32, 1e-3),
    ("channels first (N, C, T), float64", (3, 5, 4), 1, np.float64, 1e-2),
]
_RMS_HIDDEN = [
    ("tokens (N, C), float64", (7, 10), -1, np.float64, 1e-5),
    ("sequence (N, T, C)", (4, 6, 5), -1, np.float32, 1e-3),
    ("channels first (N, C, H, W), float64", (2, 5, 3, 4), 1, np.float64, 1e-3),
    ("features along axis 0, float64", (9, 4), 0, np.float64, 1e-2),
    ("sequence (N, C, T), axis=-2", (3, 7, 2), -2, np.float32, 1e-2),
]


def _rms_x(rng, shape, axis, eps):
    """Inputs whose examples (the slices along `axis`) have offsets far from 0 (so subtracting
    the mean shows) and scales in [0.5, 2], one example with mean(x**2) = 2 eps (so a missing
    or misplaced epsilon shows)."""
    ndim = len(shape)
    kept = list(shape)
    kept[axis % ndim] = 1
    sign = rng.choice([-1.0, 1.0], kept)
    offset = sign * rng.uniform(0.5, 2.0, kept)
    scale = rng.uniform(0.5, 2.0, kept)
    x = scale * (offset + rng.standard_normal(shape))
    # One example (the first along every other axis) scaled down to mean(x**2) = 2 eps.
    index = [0] * ndim
    index[axis % ndim] = slice(None)
    index = tuple(index)
    x[index] *= np.sqrt(2.0 * eps / np.mean(x[index] ** 2))
    return x


def _rms_describe(label, shape, axis, dtype, eps, extra=""):
    return (f"{label}: x of shape {shape}, {np.dtype(dtype).name}, axis={axis}, eps={eps:g}"
            + extra)


def _rms_forward_cases(hidden):
    out = []
    for i, (label, shape, axis, dtype, eps) in enumerate(_RMS_HIDDEN if hidden else _RMS_VISIBLE):
        rng = _rng("rms_forward", hidden, i)
        x = _rms_x(rng, shape, axis, eps)
        gamma = rng.uniform(0.5, 2.0, shape[axis])
        out.append(Case(_rms_describe(label, shape, axis, dtype, eps),
                        ("x", "gamma", "eps", "axis"),
                        (x.astype(dtype), gamma.astype(dtype), eps, axis), np.dtype(dtype)))
    return out


def _rms_backward_cases(hidden):
    out = []
    for i, (label, shape, axis, dtype, eps) in enumerate(_RMS_HIDDEN if hidden else _RMS_VISIBLE):
        rng = _rng("rms_backward", hidden, i)
        x = _rms_x(rng, shape, axis, eps)
        c = shape[axis]
        gamma = rng.uniform(0.5, 2.0, c)
        # A per-feature offset in dy, so that dgamma is far from zero.
        dy = per_feature(rng.uniform(-1.0, 1.0, c), len(shape), axis) + rng.standard_normal(shape)
        out.append(Case(_rms_describe(label, shape, axis, dtype, eps, ", with upstream gradient dy"),
                        ("dy", "x", "gamma", "eps", "axis"),
                        (dy.astype(dtype), x.astype(dtype), gamma.astype(dtype), eps, axis),
                        np.dtype(dtype), c))
    return out


def _rms_forward_ref(x, gamma, eps, axis):
    x, gamma = _f64(x, gamma)
    y, rms = ref.rms_norm_forward(x, gamma, eps, axis)
    return y, np.squeeze(rms, axis=axis)


def _rms_axes(ndim, axis, which):
    """The axes the RMS is taken over: the right one, or a catalogued wrong choice."""
    axis = axis % ndim
    return {"axis": (axis,), "others": tuple(a for a in range(ndim) if a != axis),
            "all": tuple(range(ndim))}[which]


def _rms_forward_variant(center=False, mode="inside", which="axis", scale=True, total="mean"):
    """RMSNorm with one catalogued change; rms is returned with the normalised axis dropped
    (or, for a wrong reduction, the shape that reduction gives)."""

    def outputs(x, gamma, eps, axis):
        x, gamma = _f64(x, gamma)
        axes = _rms_axes(x.ndim, axis, which)
        if center:
            x = x - x.mean(axis=axes, keepdims=True)
        square = (x**2).sum(axis=axes, keepdims=True) if total == "sum" else \
            (x**2).mean(axis=axes, keepdims=True)
        rms = {"inside": np.sqrt(square + eps), "missing": np.sqrt(square),
               "outside": np.sqrt(square) + eps, "no_sqrt": square + eps}[mode]
        y = x / rms * (per_feature(gamma, x.ndim, axis) if scale else 1.0)
        return y, np.squeeze(rms, axis=axes)

    return outputs


_RMS_FORWARD_MISTAKES = (
    Mistake("mean subtracted (that is LayerNorm)",
            "you subtracted each example's mean before dividing: that is LayerNorm without beta. "
            "RMSNorm does not centre: rms = sqrt(mean(x**2) + eps) over `axis`, and "
            "y = gamma * x / rms.",
            _rms_forward_variant(center=True)),
    Mistake("epsilon outside the square root",
            "you divide by sqrt(mean(x**2)) + eps. Epsilon goes inside the square root: "
            "rms = sqrt(mean(x**2) + eps).",
            _rms_forward_variant(mode="outside")),
    Mistake("missing epsilon",
            "you divide by sqrt(mean(x**2)) without epsilon. Add `eps` inside the square root: "
            "rms = sqrt(mean(x**2) + eps).",
            _rms_forward_variant(mode="missing")),
    Mistake("square root missing",
            "you divide by the mean square, mean(x**2) + eps, instead of its square root.",
            _rms_forward_variant(mode="no_sqrt")),
    Mistake("L2 norm instead of the RMS",
            "you divide by sqrt(sum(x**2) + eps), the length of the example. The RMS divides the "
            "sum by the number of values first: sqrt(mean(x**2) + eps).",
            _rms_forward_variant(total="sum")),
    Mistake("no scale",
            "you returned x / rms. Scale it: y = gamma * x / rms, gamma broadcast along `axis`.",
            _rms_forward_variant(scale=False)),
    Mistake("wrong axis: the batch statistics",
            "you took the mean of x**2 over every axis EXCEPT `axis`, one RMS per feature, as BN "
            "does. RMSNorm is per example: the mean over `axis` only, one RMS per example, "
            "`np.mean(x**2, axis=axis, keepdims=True)`.",
            _rms_forward_variant(which="others")),
    Mistake("wrong axis: all axes",
            "you took one RMS for the whole batch. RMSNorm keeps one RMS per example: the mean "
            "of x**2 over `axis` only.",
            _rms_forward_variant(which="all")),
)


def _rms_backward_ref(dy, x, gamma, eps, axis):
    dy, x, gamma = _f64(dy, x, gamma)
    return ref.rms_norm_backward(dy, x, gamma, eps, axis)


def _rms_backward_variant(correction=1.0, n_in_correction=True, mode="inside", use_gamma=True,
                          dgamma_of="xhat", params="others", which="axis", center=False):
    """The backward pass of RMSNorm (dx, dgamma), with one catalogued change.

    correction: the factor of the term through the RMS (1: right; 0: the RMS treated as a
    constant; -1: its sign flipped)."""

    def outputs(dy, x, gamma, eps, axis):
        dy, x, gamma = _f64(dy, x, gamma)
        axes = _rms_axes(x.ndim, axis, which)
        n = int(np.prod([x.shape[a] for a in axes]))
        g = per_feature(gamma, x.ndim, axis)
        dxhat = dy * g if use_gamma else dy
        if center:  # LayerNorm's gradient (no beta): xhat = (x - mean) / std
            xc = x - x.mean(axis=axes, keepdims=True)
            std = np.sqrt((xc**2).mean(axis=axes, keepdims=True) + eps)
            xhat = xc / std
            dx = (dxhat - dxhat.mean(axis=axes, keepdims=True)
                  - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)) / std
        else:
            square = (x**2).mean(axis=axes, keepdims=True)
            rms = {"inside": np.sqrt(square + eps), "outside": np.sqrt(square) + eps}[mode]
            xhat = x / rms
            through = x * (dxhat * x).sum(axis=axes, keepdims=True) / rms**3
            dx = dxhat / rms - correction * through / (n if n_in_correction else 1)
        param_axes = {"others": tuple(a for a in range(x.ndim) if a != axis % x.ndim),
                      "axis": (axis % x.ndim,)}[params]
        dgamma = (dy * (x if dgamma_of == "x" else xhat)).sum(axis=param_axes)
        return dx, dgamma

    return outputs


_RMS_BACKWARD_MISTAKES = (
    Mistake("RMS treated as a constant",
            "your dx is dy * gamma / rms, as if the RMS did not depend on x. It does: derive "
            "d rms / d x_j and add the term that flows through the RMS (proportional to "
            "x_j * sum(dxhat * x) over `axis`, dxhat = dy * gamma, as the task says).",
            _rms_backward_variant(correction=0.0)),
    Mistake("mean subtracted (LayerNorm's gradient)",
            "your gradients are those of LayerNorm, which centres x. RMSNorm does not "
            "(xhat = x / rms): its gradient has no term with the mean of dxhat.",
            _rms_backward_variant(center=True)),
    Mistake("correction term with the wrong sign",
            "the term through the RMS is SUBTRACTED: a larger x_j makes the RMS larger, which "
            "makes every y smaller.",
            _rms_backward_variant(correction=-1.0)),
    Mistake("1/n missing from the correction term",
            "rms = sqrt(mean(x**2) + eps) averages over the n values of `axis`, so "
            "d rms / d x_j = x_j / (n * rms): divide the correction term by n.",
            _rms_backward_variant(n_in_correction=False)),
    Mistake("gamma missing from dx",
            "dxhat = dy * gamma: the gradient reaching x / rms is scaled by gamma.",
            _rms_backward_variant(use_gamma=False)),
    Mistake("dgamma uses x instead of xhat",
            "dgamma = sum(dy * xhat), with the NORMALISED input xhat = x / rms, not x.",
            _rms_backward_variant(dgamma_of="x")),
    Mistake("dgamma summed over the wrong axis",
            "gamma has one value per feature, shape (C,): sum dy * xhat over every axis EXCEPT "
            "`axis` (the examples), not over `axis`.",
            _rms_backward_variant(params="axis")),
    Mistake("epsilon outside the square root",
            "your backward pass divides by sqrt(mean(x**2)) + eps; the forward pass uses "
            "rms = sqrt(mean(x**2) + eps), and the gradient must use the same.",
            _rms_backward_variant(mode="outside")),
    Mistake("wrong axis: the batch statistics",
            "your RMS is taken over every axis EXCEPT `axis`, as BN's statistics are. RMSNorm's "
            "RMS is per example, over `axis` only: the sums in dx run over `axis` too.",
            _rms_backward_variant(which="others")),
)


# ---------------------------------------------------------------------------------------------
# Part B: gradient norms in a pre-norm and a post-norm residual stack
#
#   norm(h)      = h / sqrt(mean(h**2, axis=-1) + eps)          (RMSNorm without gain)
#   pre-norm     h_l = h_{l-1} + norm(h_{l-1}) @ W_l,   output y = norm(h_L)
#   post-norm    h_l = norm(h_{l-1} + h_{l-1} @ W_l),    output y = h_L
#   loss         sum(c * y)
#
# Returned: ||d loss / d h_{l-1}|| (Frobenius, over the batch), the gradient at the input of
# block l = 1..L, for each ordering: two arrays of shape (L,).

# (N, d, L, weight scale s: W ~ N(0, s / d), eps)
_GRAD_VISIBLE = [(3, 6, 8, 1.0, 1e-6), (2, 5, 12, 2.0, 1e-5)]
_GRAD_HIDDEN = [(4, 8, 16, 1.0, 1e-6), (5, 3, 6, 0.5, 1e-3), (2, 7, 24, 1.0, 1e-6),
                (1, 6, 10, 1.5, 1e-6)]


def _gradient_norms_cases(hidden):
    out = []
    for i, (n, d, depth, s, eps) in enumerate(_GRAD_HIDDEN if hidden else _GRAD_VISIBLE):
        rng = _rng("gradient_norms", hidden, i)
        x = _norm(rng.standard_normal((n, d)), 0.0)  # embeddings of RMS 1
        weights = rng.normal(0.0, np.sqrt(s / d), (depth, d, d))
        c = rng.standard_normal((n, d))
        out.append(Case(f"x and c of shape ({n}, {d}), {depth} blocks (weights of shape "
                        f"({depth}, {d}, {d}), std sqrt({s:g}/{d})), eps={eps:g}, float64",
                        ("x", "weights", "c", "eps"), (x, weights, c, eps), np.dtype(np.float64)))
    return out


def _norm(h, eps):
    return h / np.sqrt((h**2).mean(axis=-1, keepdims=True) + eps)


def _norm_backward(g, h, eps, through=True):
    """The gradient at h of norm(h), given the gradient g at its output (through=False: the
    RMS treated as a constant)."""
    rms = np.sqrt((h**2).mean(axis=-1, keepdims=True) + eps)
    dx = g / rms
    if through:
        dx = dx - h * (g * h).sum(axis=-1, keepdims=True) / (h.shape[-1] * rms**3)
    return dx


def _gradient_norms(x, weights, c, eps, final=True, through=True, at="input", report="norm",
                    identity=True):
    """(pre, post): the gradient norm at the input of every block, with one catalogued change."""
    x, weights, c = _f64(x, weights, c)
    measure = {"norm": lambda g: np.sqrt((g**2).sum()),
               "squared": lambda g: (g**2).sum(),
               "per example": lambda g: np.sqrt((g**2).sum(axis=-1)).mean()}[report]
    back = lambda g, h: _norm_backward(g, h, eps, through)  # noqa: E731

    # Pre-norm: h_l = h_{l-1} + norm(h_{l-1}) @ W_l, y = norm(h_L).
    hs = [x]
    for w in weights:
        hs.append(hs[-1] + _norm(hs[-1], eps) @ w)
    g = back(c, hs[-1]) if final else c
    pre = []
    for layer in range(len(weights) - 1, -1, -1):
        above = g
        branch = back(g @ weights[layer].T, hs[layer])
        g = (g if identity else 0.0) + branch
        pre.append(measure(above if at == "output" else g))

    # Post-norm: z_l = h_{l-1} + h_{l-1} @ W_l, h_l = norm(z_l), y = h_L.
    hs, zs = [x], []
    for w in weights:
        zs.append(hs[-1] + hs[-1] @ w)
        hs.append(_norm(zs[-1], eps))
    g = c
    post = []
    for layer in range(len(weights) - 1, -1, -1):
        above = g
        gz = back(g, zs[layer])
        g = (gz if identity else 0.0) + gz @ weights[layer].T
        post.append(measure(above if at == "output" else g))
    return np.array(pre[::-1]), np.array(post[::-1])


def _gradient_norms_ref(x, weights, c, eps):
    return _gradient_norms(x, weights, c, eps)


def _grad_variant(**change):
    return lambda x, weights, c, eps: _gradient_norms(x, weights, c, eps, **change)


_GRADIENT_NORMS_MISTAKES = (
    Mistake("final normalisation left out",
            "your pre-norm gradients are those of a stack whose output is h_L itself. In the "
            "pre-norm stack the output is y = norm(h_L), as in pre-norm Transformers (the final "
            "LayerNorm): start the backward pass with the gradient of sum(c * norm(h_L)) at h_L.",
            _grad_variant(final=False)),
    Mistake("RMS treated as a constant",
            "your backward pass through norm(h) is g / rms, as if the RMS did not depend on h. "
            "It does (Part A): subtract h * sum(g * h) / (d * rms**3), the sum over the last "
            "axis.",
            _grad_variant(through=False)),
    Mistake("block outputs instead of inputs",
            "you returned the gradient norms at the OUTPUT of each block, h_l. The task asks for "
            "the gradient at the input of block l, h_{l-1}: the first value is the gradient at "
            "x itself.",
            _grad_variant(at="output")),
    Mistake("squared norms",
            "you returned sum(g**2); return the norm, sqrt(sum(g**2)) over the whole batch.",
            _grad_variant(report="squared")),
    Mistake("mean of per-example norms",
            "you averaged the norms of the rows of the gradient. Return the norm of the whole "
            "gradient array, sqrt(sum(g**2)) over every example and unit.",
            _grad_variant(report="per example")),
    Mistake("identity path left out of the backward pass",
            "a residual block h + F(...) passes its gradient to h along TWO paths: through F and "
            "straight through the addition. Add the gradient arriving at the block's output to "
            "the one coming back through the branch.",
            _grad_variant(identity=False)),
)


# ---------------------------------------------------------------------------------------------
# Part C: the effective learning rate of a scale-invariant weight under weight decay

# (K weight vectors, d, eta, lam, dtype). eta is never 1 (there a decay of lam and one of
# eta * lam coincide).
_STEP_VISIBLE = [(4, 6, 0.2, 0.1, np.float64), (3, 5, 0.5, 0.05, np.float64)]
_STEP_HIDDEN = [(5, 7, 0.3, 0.2, np.float64), (6, 4, 2.0, 0.01, np.float64),
                (3, 9, 0.1, 0.5, np.float32)]


def _decay_step_cases(hidden):
    out = []
    for i, (k, d, eta, lam, dtype) in enumerate(_STEP_HIDDEN if hidden else _STEP_VISIBLE):
        rng = _rng("decay_step", hidden, i)
        # Norms far from 1 (so ||w|| and ||w||^2 differ), small and large.
        norms = np.where(rng.random(k) < 0.5, rng.uniform(0.4, 0.7, k), rng.uniform(1.5, 3.0, k))
        w = rng.standard_normal((k, d))
        w *= (norms / np.linalg.norm(w, axis=1))[:, None]
        # The gradient of a scale-invariant loss is orthogonal to w; its step eta * ||g|| is
        # 20% to 60% of ||w||, so that every term of the new norm shows.
        r = rng.standard_normal((k, d))
        g = r - (r * w).sum(axis=1, keepdims=True) / (w * w).sum(axis=1, keepdims=True) * w
        g *= (rng.uniform(0.2, 0.6, k) * norms / eta / np.linalg.norm(g, axis=1))[:, None]
        out.append(Case(f"w and g of shape ({k}, {d}), eta={eta:g}, lam={lam:g}, "
                        f"{np.dtype(dtype).name}", ("w", "g", "eta", "lam"),
                        (w.astype(dtype), g.astype(dtype), eta, lam), np.dtype(dtype), k))
    return out


def _decay_step(w, g, eta, lam, decay="coupled", gradient=True, power=2, after=False):
    w, g = _f64(w, g)
    shrink = {"coupled": 1.0 - eta * lam, "none": 1.0, "unscaled": 1.0 - lam}[decay]
    new = shrink * w - (eta * g if gradient else 0.0)
    norm = np.sqrt((w**2).sum(axis=1))
    new_norm = np.sqrt((new**2).sum(axis=1))
    return new_norm, eta / (new_norm if after else norm) ** power


def _decay_step_ref(w, g, eta, lam):
    return _decay_step(w, g, eta, lam)


def _step_variant(**change):
    return lambda w, g, eta, lam: _decay_step(w, g, eta, lam, **change)


_DECAY_STEP_MISTAKES = (
    Mistake("decay term forgotten",
            "your new norm is that of w - eta * g. Weight decay adds lam * w to the gradient: "
            "w_new = w - eta * (g + lam * w) = (1 - eta * lam) * w - eta * g.",
            _step_variant(decay="none")),
    Mistake("decay not scaled by the learning rate",
            "you shrank w by (1 - lam). The decay term lam * w is part of the gradient, so it is "
            "multiplied by eta like the rest: w_new = (1 - eta * lam) * w - eta * g.",
            _step_variant(decay="unscaled")),
    Mistake("gradient's contribution forgotten",
            "your new norm is (1 - eta * lam) * ||w||. The step eta * g is orthogonal to w, so it "
            "adds to the squared norm: ||w_new||^2 = (1 - eta * lam)^2 ||w||^2 + eta^2 ||g||^2.",
            _step_variant(gradient=False)),
    Mistake("||w|| instead of ||w||^2",
            "the effective learning rate is eta / ||w||^2: the gradient scales as 1 / ||w|| AND "
            "a step of a given length turns w by an angle that scales as 1 / ||w||.",
            _step_variant(power=1)),
    Mistake("new norm in the effective learning rate",
            "the effective learning rate of THIS step is eta / ||w_t||^2, with the norm of w "
            "before the step, the one the gradient was computed at.",
            _step_variant(after=True)),
)


# (K settings, dtype). eta * lam <= 2e-3, where ||w||^4 = eta ||g~||^2 / (2 lam) and the exact
# fixed point eta ||g~||^2 / (lam (2 - eta lam)) agree to 2.5e-4 in ||w|| (both are accepted).
_EQUILIBRIUM_VISIBLE = [(5, np.float64), (4, np.float64)]
_EQUILIBRIUM_HIDDEN = [(7, np.float64), (4, np.float32), (6, np.float64)]
_EQUILIBRIUM_TOLERANCE = (1e-3, 1e-6)


def _equilibrium_cases(hidden):
    out = []
    for i, (k, dtype) in enumerate(_EQUILIBRIUM_HIDDEN if hidden else _EQUILIBRIUM_VISIBLE):
        rng = _rng("equilibrium", hidden, i)
        eta = np.exp(rng.uniform(np.log(0.01), np.log(0.5), k))
        lam = np.exp(rng.uniform(np.log(1e-5), np.log(2e-3 / eta)))
        g_unit = np.exp(rng.uniform(np.log(0.2), np.log(5.0), k))
        out.append(Case(f"{k} settings of eta, lam and g_unit, {np.dtype(dtype).name}",
                        ("eta", "lam", "g_unit"),
                        (eta.astype(dtype), lam.astype(dtype), g_unit.astype(dtype)),
                        np.dtype(dtype), k, tolerance=_EQUILIBRIUM_TOLERANCE))
    return out


def _equilibrium(eta, lam, g_unit, fourth=True, two=True, eta_power=1, lr_power=2):
    eta, lam, g_unit = _f64(eta, lam, g_unit)
    q = eta**eta_power * g_unit**2 / (lam * ((2.0 - eta * lam) if two else 1.0))
    norm = q**0.25 if fourth else np.sqrt(q)
    return norm, eta / norm**lr_power


def _equilibrium_ref(eta, lam, g_unit):
    return _equilibrium(eta, lam, g_unit)


def _equilibrium_variant(**change):
    return lambda eta, lam, g_unit: _equilibrium(eta, lam, g_unit, **change)


_EQUILIBRIUM_MISTAKES = (
    Mistake("||w||^2 instead of ||w||^4",
            "you solved ||w||^2 = eta ||g~||^2 / (2 lam), with the gradient's norm held fixed. "
            "The gradient of a scale-invariant loss is ||g|| = ||g~|| / ||w||: the growth per "
            "step is eta^2 ||g~||^2 / ||w||^2, and the balance gives ||w||^4.",
            _equilibrium_variant(fourth=False)),
    Mistake("factor 2 missing",
            "(1 - eta lam)^2 = 1 - 2 eta lam + (eta lam)^2: the decay removes about "
            "2 eta lam ||w||^2 per step, so ||w||^4 = eta ||g~||^2 / (2 lam) (to first order).",
            _equilibrium_variant(two=False)),
    Mistake("learning rate squared",
            "the growth per step is eta^2 ||g~||^2 / ||w||^2 and the decay 2 eta lam ||w||^2: "
            "one eta cancels, ||w||^4 = eta ||g~||^2 / (2 lam), not eta^2.",
            _equilibrium_variant(eta_power=2)),
    Mistake("||w|| instead of ||w||^2",
            "the effective learning rate is eta / ||w||^2, not eta / ||w||.",
            _equilibrium_variant(lr_power=1)),
)


SPECS = {
    "rms_forward": Spec(
        "rms_forward", "rms_norm_forward",
        (Output("y"), Output("rms", per_feature=True, entries="examples")), (1, 0),
        _rms_forward_ref, _rms_forward_cases, _RMS_FORWARD_MISTAKES,
        (("rms", "rms = sqrt(mean(x**2, axis=axis) + eps): one value per example, no mean "
                 "subtracted."),
         ("y", "y = gamma * x / rms, with gamma broadcast along `axis`.")),
        features="one RMS per example: x.shape without `axis`", precision=True),
    "rms_backward": Spec(
        "rms_backward", "rms_norm_backward",
        (Output("dx"), Output("dgamma", per_feature=True)), (1, 0),
        _rms_backward_ref, _rms_backward_cases, _RMS_BACKWARD_MISTAKES,
        (("dgamma", "dgamma = sum(dy * x / rms) over every axis except `axis`."),
         ("dx", "dx has two terms: dxhat / rms (dxhat = dy * gamma) and one through the RMS, "
                "proportional to x * sum(dxhat * x) over `axis`; compare with `numeric_gradient` "
                "on a small input.")),
        precision=True),
    "gradient_norms": Spec(
        "gradient_norms", "residual_gradient_norms",
        (Output("pre"), Output("post")), (0, 1),
        _gradient_norms_ref, _gradient_norms_cases, _GRADIENT_NORMS_MISTAKES,
        (("pre", "Run the pre-norm stack forward keeping every h_l, then backward from "
                 "d loss / d y = c, through the final norm and the blocks from the top; "
                 "compare with `numeric_gradient` on one block."),
         ("post", "Run the post-norm stack forward keeping every z_l, then backward: through "
                  "norm at z_l, then through z_l = h + h @ W (both paths).")),
        oracle="a backward pass written in the checks, in float64", precision=True),
    "decay_step": Spec(
        "decay_step", "weight_decay_step",
        (Output("new_norm", per_feature=True), Output("effective_lr", per_feature=True)), (0, 1),
        _decay_step_ref, _decay_step_cases, _DECAY_STEP_MISTAKES,
        (("new_norm", "w_new = w - eta * (g + lam * w); its norm, per row."),
         ("effective_lr", "eta / ||w||^2, with the norm of each row of w before the step.")),
        oracle="the SGD step, in float64", features="K = w.shape[0]", precision=True),
    "equilibrium": Spec(
        "equilibrium", "equilibrium",
        (Output("w_norm", per_feature=True), Output("effective_lr", per_feature=True)), (0, 1),
        _equilibrium_ref, _equilibrium_cases, _EQUILIBRIUM_MISTAKES,
        (("w_norm", "Set ||w_new|| = ||w|| in the step's norm, with ||g|| = g_unit / ||w||, "
                    "and solve for ||w||."),
         ("effective_lr", "eta / w_norm**2.")),
        oracle="the fixed point of the norm's recursion, in float64", features="K = len(eta)",
        precision=True),
}


_CHECKS = Checks(__name__, SPECS)
cases, record, compare, _check = _CHECKS.cases, _CHECKS.record, _CHECKS.compare, _CHECKS.check


def check_rms_norm_forward(fn, hidden=False):
    """Part A: ``fn(x, gamma, eps, axis) -> (y, rms)``."""
    __tracebackhide__ = True  # noqa: F841
    _check("rms_forward", fn, hidden)


def check_rms_norm_backward(fn, hidden=False):
    """Part A: ``fn(dy, x, gamma, eps, axis) -> (dx, dgamma)``."""
    __tracebackhide__ = True  # noqa: F841
    _check("rms_backward", fn, hidden)


def check_gradient_norms(fn, hidden=False):
    """Part B: ``fn(x, weights, c, eps) -> (pre, post)``, each of shape (L,)."""
    __tracebackhide__ = True  # noqa: F841
    _check("gradient_norms", fn, hidden)


def check_weight_decay_step(fn, hidden=False):
    """Part C: ``fn(w, g, eta, lam) -> (new_norm, effective_lr)``, one value per row of w."""
    __tracebackhide__ = True  # noqa: F841
    _check("decay_step", fn, hidden)


def check_equilibrium(fn, hidden=False):
    """Part C: ``fn(eta, lam, g_unit) -> (w_norm, effective_lr)`` at the equilibrium."""
    __tracebackhide__ = True  # noqa: F841
    _check("equilibrium", fn, hidden)


# ---------------------------------------------------------------------------------------------
# Part D: multiple choice (see coursework._choice). The key is stored hashed only so that reading
# this file does not spoil the questions; it is no secret (the solutions are in the same
# repository).

QUESTIONS = {
    "q1": {
        "options": "abcd",
        "key": "58c8ac1506a1b2cd58801c5d82902a0dd693d7ea85d42a548bd6f053268c3ace",
        "explanations": {
            "a": "",
            "b": "The two are the other way round. In post-norm, h_l = norm(h_{l-1} + F(h_{l-1})): "
                 "the addition is normalised, so every path from the loss down to block l goes "
                 "through the norms of all the blocks above it. In pre-norm, "
                 "h_l = h_{l-1} + F(norm(h_{l-1})): the identity path skips the blocks' norms. "
                 "Post-norm is the ordering that needs warm-up (Xiong et al., 2020).",
            "c": "Both orderings add the block's input, but post-norm then normalises the sum, so "
                 "its identity path is rescaled by every block's norm above it (Part B's "
                 "backward pass goes through each of them). Post-norm Transformers need "
                 "learning-rate warm-up; pre-norm ones train without it (Xiong et al., 2020).",
            "d": "In pre-norm the norm sits on the residual branch, F(norm(h)), not on the main "
                 "path: from the final norm down to x, the identity path h_l = h_{l-1} + ... "
                 "meets no block's norm. Only post-norm puts every block's norm on every path, "
                 "and it is the ordering that needs warm-up (Xiong et al., 2020).",
        },
    },
    "q2": {
        "options": "abcd",
        "key": "25ed5c48d0e9b564535918c726cdf7c64c25048d65407afa5e6f5431e2a3499a",
        "explanations": {
            "a": "BatchNorm only needs a feature axis: for a sequence (N, T, C) it can average "
                 "each feature over the batch and the positions, as Chapter 3 does over N, H and "
                 "W. It can be applied; what it computes is the problem: statistics shared "
                 "across the sequences of a batch, padding included.",
            "b": "They compute different statistics: BatchNorm one mean and variance per feature, "
                 "over the batch (and positions); LayerNorm one per token, over its features. "
                 "Only LayerNorm's make a token's output independent of the other sequences.",
            "c": "",
            "d": "BatchNorm has the same learned per-feature gain and offset (gamma and beta). "
                 "The difference is which values the statistics average over: the batch for "
                 "BatchNorm, one token's features for LayerNorm.",
        },
    },
    "q3": {
        "options": "abcd",
        "key": "a5971f0aa1677406d4c4d360d663c7213339cb9b87fe8046d9e5b1c9e8ff1f09",
        "explanations": {
            "a": "That is the other half of LayerNorm. RMSNorm keeps the division and drops the "
                 "centring: y = gamma * x / sqrt(mean(x**2) + eps), no mean subtracted (Part A).",
            "b": "",
            "c": "RMSNorm keeps the learned per-feature gain gamma (Part A's `gamma`); what it "
                 "drops is the centring: no mean subtracted, no offset beta.",
            "d": "RMSNorm's statistic is per example, like LayerNorm's: the root mean square of "
                 "one example over `axis`, never averaged over the batch. What it drops is the "
                 "centring: no mean subtracted, no offset beta.",
        },
    },
    "q4": {
        "options": "abcd",
        "key": "e3752e5be71374849774ef91fbaf9a2c6ef2e85ceef476a12137b680732e2e58",
        "explanations": {
            "a": "gamma's gradient is sum(dy * xhat), which is not zero when gamma is: gamma "
                 "leaves zero at the first step, and BN works as usual from then on. Zero gamma "
                 "only makes each block start as the identity, x + 0.",
            "b": "",
            "c": "The zero gamma belongs to the block's LAST BN, after its last convolution: the "
                 "ReLUs inside the block see the earlier BN layers' outputs, which it does not "
                 "change. What it changes is the block's output: x + 0, the identity.",
            "d": "The convolutions get a zero gradient only while gamma is exactly zero; gamma's "
                 "own gradient, sum(dy * xhat), is not zero, so gamma moves at the first step "
                 "and the convolutions learn from the next. Nothing waits for a warm-up.",
        },
    },
    "q5": {
        "options": "abcd",
        "key": "4e080c5401437a3e382722941d429c0f82623761692ed78fafb5ba3d02bd9264",
        "explanations": {
            "a": "The loss ignores ||w||, but the training does not: the gradient's steps make "
                 "||w|| grow, and the effective learning rate eta / ||w||^2 falls as it does. "
                 "Without decay the direction of w moves ever more slowly; the decay holds "
                 "||w|| at an equilibrium (Part C2).",
            "b": "With BN after the layer, the function does not depend on ||w|| at all, so "
                 "keeping ||w|| small cannot make it simpler or its outputs smaller. What the "
                 "decay changes is the effective learning rate eta / ||w||^2 (Part C).",
            "c": "The decay shrinks ||w||, and the effective learning rate is eta / ||w||^2: a "
                 "smaller ||w|| RAISES it. With decay, the equilibrium effective learning rate "
                 "is about sqrt(2 eta lam) / ||g~|| (Part C2), which grows with lam.",
            "d": "",
        },
    },
}


_CHOICES = _choice.Choices(__name__, QUESTIONS)
record_answer, compare_answer, check_answer = (
    _CHOICES.record_answer, _CHOICES.compare_answer, _CHOICES.check_answer)
