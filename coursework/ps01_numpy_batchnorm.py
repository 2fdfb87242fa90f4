"""Checks for problem set 1, "BN forward and backward in NumPy".

The grade cells of ``ps01_numpy_batchnorm.ipynb`` call one function per graded part:

>>> from coursework import ps01_numpy_batchnorm as checks
>>> checks.check_forward_train(batchnorm_forward_train)               # doctest: +SKIP
>>> checks.check_forward_train(batchnorm_forward_train, hidden=True)  # doctest: +SKIP

Each check is two separate steps (see ``coursework._core``): ``record(key, fn, hidden)``
calls the learner's function on fixed, seeded inputs; ``compare(key, records)`` computes the
expected values with ``course_lib.reference`` and, when an output is wrong, says where and
by how much, and names the catalogued mistake that explains every output of every case (none
when no mistake does). Every part is checked on raw inputs, so no part's grade depends on
another part being right. The notebook's precision rule (float64 in, float64 out) is checked
too.

Visible cases: a dense layer (N, C) and channels-last images (N, H, W, C), float32.
Hidden cases: float64, channels-first images (axis=1 and axis=-3), a sequence (N, T, C),
features along axis 0, other epsilons; every dimension differs from every other.
"""

import numpy as np

from course_lib import reference as ref
from course_lib.reference import per_feature
from coursework import _choice
from coursework._core import Case, Checks, Mistake, Output, Spec

__all__ = [
    "check_forward_train", "check_forward_inference", "check_moving_average", "check_backward",
    "check_answer", "record", "compare", "record_answer", "compare_answer", "cases", "SPECS",
    "QUESTIONS",
]

# ---------------------------------------------------------------------------------------------
# Fixed inputs

# (label, shape, axis, dtype, eps). Every dimension of a shape differs from every other, so a
# wrong axis or reshape cannot pass by accident.
_VISIBLE = [
    ("dense layer", (8, 5), -1, np.float32, 1e-3),
    ("images, channels last", (6, 4, 3, 5), -1, np.float32, 1e-3),
]
_HIDDEN = [
    ("dense layer, float64", (10, 7), -1, np.float64, 1e-5),
    ("images, channels first", (3, 4, 5, 6), 1, np.float32, 1e-3),
    ("sequence (batch, time, features), float64", (5, 7, 3), -1, np.float64, 1e-2),
    ("features along axis 0, float64", (6, 9), 0, np.float64, 1e-3),
    ("images, channels first, float64", (2, 3, 4, 5), -3, np.float64, 1e-3),
]
_KEYS = ("forward_train", "forward_inference", "moving_average", "backward")


def _rng(key, hidden, index):
    return np.random.default_rng([2015, _KEYS.index(key), int(hidden), index])


def _layouts(hidden):
    return _HIDDEN if hidden else _VISIBLE


def _describe(label, shape, axis, dtype, eps, extra=""):
    return (f"{label}: x of shape {shape}, {np.dtype(dtype).name}, axis={axis}, eps={eps:g}"
            + extra)


def _x(rng, shape, axis, dtype):
    """Per-feature means in [-2, 3] and standard deviations in [0.5, 2], one of them 0.1.

    The small-variance feature makes epsilon matter (missing or misplaced epsilon changes its
    output by several percent); the offsets make a wrong reduction axis visible.
    """
    c = shape[axis]
    loc = rng.uniform(-2.0, 3.0, c)
    scale = rng.uniform(0.5, 2.0, c)
    scale[rng.integers(c)] = 0.1
    ndim = len(shape)
    x = per_feature(loc, ndim, axis) + per_feature(scale, ndim, axis) * rng.standard_normal(shape)
    return x.astype(dtype)


def _gamma_beta(rng, c, dtype):
    return rng.uniform(0.5, 2.0, c).astype(dtype), rng.normal(0.0, 1.0, c).astype(dtype)


def _forward_train_cases(hidden):
    out = []
    for i, (label, shape, axis, dtype, eps) in enumerate(_layouts(hidden)):
        rng = _rng("forward_train", hidden, i)
        x = _x(rng, shape, axis, dtype)
        gamma, beta = _gamma_beta(rng, shape[axis], dtype)
        out.append(Case(_describe(label, shape, axis, dtype, eps),
                        ("x", "gamma", "beta", "eps", "axis"), (x, gamma, beta, eps, axis),
                        np.dtype(dtype), shape[axis]))
    return out


def _forward_inference_cases(hidden):
    out = []
    for i, (label, shape, axis, dtype, eps) in enumerate(_layouts(hidden)):
        rng = _rng("forward_inference", hidden, i)
        x = _x(rng, shape, axis, dtype)
        c = shape[axis]
        gamma, beta = _gamma_beta(rng, c, dtype)
        # Moving statistics unlike the batch's own, so using batch statistics shows.
        moving_mean = rng.uniform(0.3, 2.5, c).astype(dtype)
        moving_var = rng.uniform(0.5, 3.0, c)
        moving_var[rng.integers(c)] = 0.01
        moving_var = moving_var.astype(dtype)
        out.append(Case(_describe(label, shape, axis, dtype, eps),
                        ("x", "gamma", "beta", "moving_mean", "moving_var", "eps", "axis"),
                        (x, gamma, beta, moving_mean, moving_var, eps, axis), np.dtype(dtype), c))
    return out


def _moving_average_cases(hidden):
    # momentum 0.5 is never used: there, the reversed convention gives the same answer.
    layouts = ([(5, np.float32, 0.99), (4, np.float32, 0.9)] if not hidden else
               [(7, np.float64, 0.8), (6, np.float64, 0.999), (3, np.float32, 0.6)])
    out = []
    for i, (c, dtype, momentum) in enumerate(layouts):
        rng = _rng("moving_average", hidden, i)
        moving = rng.normal(0.0, 1.0, c)
        batch = moving + rng.choice([-1.0, 1.0], c) * rng.uniform(2.0, 4.0, c)
        out.append(Case(f"moving and batch_value of shape ({c},), {np.dtype(dtype).name}, "
                        f"momentum={momentum:g}",
                        ("moving", "batch_value", "momentum"),
                        (moving.astype(dtype), batch.astype(dtype), momentum), np.dtype(dtype), c))
    return out


def _backward_cases(hidden):
    out = []
    for i, (label, shape, axis, dtype, eps) in enumerate(_layouts(hidden)):
        rng = _rng("backward", hidden, i)
        x = _x(rng, shape, axis, dtype)
        c = shape[axis]
        gamma, _ = _gamma_beta(rng, c, dtype)
        # A per-feature offset in dy, so that dbeta and dgamma are far from zero.
        offset = per_feature(rng.uniform(-1.0, 1.0, c), len(shape), axis)
        dy = (offset + rng.standard_normal(shape)).astype(dtype)
        out.append(Case(_describe(label, shape, axis, dtype, eps, ", with upstream gradient dy"),
                        ("dy", "x", "gamma", "eps", "axis"), (dy, x, gamma, eps, axis),
                        np.dtype(dtype), c))
    return out


# ---------------------------------------------------------------------------------------------
# The reference (course_lib.reference, in float64) and the catalogued mistakes


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def _axes(ndim, axis, which):
    """Reduction axes: the right ones, or a catalogued wrong choice."""
    return {"others": ref.reduction_axes(ndim, axis), "feature": (axis % ndim,),
            "batch": (0,), "all": tuple(range(ndim))}[which]


def _normalise(xc, var, eps, mode):
    denominator = {"inside": np.sqrt(var + eps), "missing": np.sqrt(var),
                   "outside": np.sqrt(var) + eps, "no_sqrt": var + eps}[mode]
    return xc / denominator


def _forward_train_ref(x, gamma, beta, eps, axis):
    x, gamma, beta = _f64(x, gamma, beta)
    return ref.batchnorm_forward_train(x, gamma, beta, eps, axis)


def _forward_train_variant(which="others", ddof=0, mode="inside", affine="normal", report="var"):
    def outputs(x, gamma, beta, eps, axis):
        x, gamma, beta = _f64(x, gamma, beta)
        axes = _axes(x.ndim, axis, which)
        m = int(np.prod([x.shape[a] for a in axes]))
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).sum(axis=axes, keepdims=True) / (m - ddof)
        xhat = _normalise(x - mean, var, eps, mode)
        g, b = per_feature(gamma, x.ndim, axis), per_feature(beta, x.ndim, axis)
        y = {"normal": g * xhat + b, "swapped": b * xhat + g, "none": xhat}[affine]
        var_out = np.sqrt(var) if report == "std" else var
        return y, np.squeeze(mean), np.squeeze(var_out)

    return outputs


_FORWARD_TRAIN_MISTAKES = (
    Mistake("unbiased variance",
            "your variance divides by m-1 (the unbiased estimate, e.g. `np.var(..., ddof=1)`). "
            "The BN transform uses the biased variance during training: divide by m.",
            _forward_train_variant(ddof=1)),
    Mistake("missing epsilon",
            "you divide by sqrt(var) without epsilon. Add `eps` to the variance inside the square "
            "root: (x - mean) / sqrt(var + eps).",
            _forward_train_variant(mode="missing")),
    Mistake("epsilon outside the square root",
            "you divide by sqrt(var) + eps. Epsilon goes inside the square root: "
            "(x - mean) / sqrt(var + eps).",
            _forward_train_variant(mode="outside")),
    Mistake("square root missing",
            "you divide by the variance (var + eps) instead of the standard deviation "
            "sqrt(var + eps).",
            _forward_train_variant(mode="no_sqrt")),
    Mistake("gamma and beta swapped",
            "you computed beta * xhat + gamma. gamma scales and beta shifts: y = gamma * xhat + beta.",
            _forward_train_variant(affine="swapped")),
    Mistake("no scale and shift",
            "you returned the normalised xhat. Scale and shift it: y = gamma * xhat + beta.",
            _forward_train_variant(affine="none")),
    Mistake("standard deviation returned",
            "your third output is the standard deviation; return the variance (the biased batch "
            "variance, without epsilon).",
            _forward_train_variant(report="std")),
    Mistake("wrong reduction axis: the feature axis",
            "you averaged over the feature axis `axis`, which normalises each example (that is "
            "Layer Normalization). BN averages over every axis EXCEPT `axis`: use "
            "`reduction_axes(x.ndim, axis)`.",
            _forward_train_variant(which="feature")),
    Mistake("wrong reduction axis: the batch axis only",
            "you averaged over axis 0 only. For images BN averages over the batch AND the spatial "
            "axes (N, H, W): every axis except `axis`. Use `reduction_axes(x.ndim, axis)`.",
            _forward_train_variant(which="batch")),
    Mistake("wrong reduction axis: all axes",
            "you averaged over every axis, giving one mean for the whole batch. BN keeps one "
            "mean and one variance per feature: reduce over every axis except `axis`.",
            _forward_train_variant(which="all")),
)


def _forward_inference_ref(x, gamma, beta, moving_mean, moving_var, eps, axis):
    x, gamma, beta, moving_mean, moving_var = _f64(x, gamma, beta, moving_mean, moving_var)
    return (ref.batchnorm_forward_inference(x, gamma, beta, moving_mean, moving_var, eps, axis),)


def _forward_inference_variant(stats="moving", mode="inside", affine="normal"):
    def outputs(x, gamma, beta, moving_mean, moving_var, eps, axis):
        x, gamma, beta, mean, var = _f64(x, gamma, beta, moving_mean, moving_var)
        b = lambda v: per_feature(v, x.ndim, axis)  # noqa: E731
        if stats == "batch":
            _, mean, var = ref.batchnorm_forward_train(x, gamma, beta, eps, axis)
        elif stats == "swapped":
            mean, var = var, mean
        xhat = _normalise(x - b(mean), b(var), eps, mode)
        y = {"normal": b(gamma) * xhat + b(beta), "swapped": b(beta) * xhat + b(gamma),
             "none": xhat}[affine]
        return (y,)

    return outputs


_FORWARD_INFERENCE_MISTAKES = (
    Mistake("batch statistics at inference",
            "you normalised with the mean and variance of this batch. At inference BN uses the "
            "moving statistics it is given (`moving_mean`, `moving_var`), so that an example's "
            "output does not depend on the rest of the batch.",
            _forward_inference_variant(stats="batch")),
    Mistake("moving mean and variance swapped",
            "you subtracted `moving_var` and divided by sqrt(moving_mean + eps). Subtract the mean; "
            "divide by the square root of the variance plus epsilon.",
            _forward_inference_variant(stats="swapped")),
    Mistake("missing epsilon",
            "you divide by sqrt(moving_var) without epsilon. Use sqrt(moving_var + eps).",
            _forward_inference_variant(mode="missing")),
    Mistake("epsilon outside the square root",
            "you divide by sqrt(moving_var) + eps. Epsilon goes inside: sqrt(moving_var + eps).",
            _forward_inference_variant(mode="outside")),
    Mistake("square root missing",
            "you divide by the variance (moving_var + eps) instead of sqrt(moving_var + eps).",
            _forward_inference_variant(mode="no_sqrt")),
    Mistake("gamma and beta swapped",
            "you computed beta * xhat + gamma. gamma scales and beta shifts: y = gamma * xhat + beta.",
            _forward_inference_variant(affine="swapped")),
    Mistake("no scale and shift",
            "you returned the normalised xhat. Scale and shift it: y = gamma * xhat + beta.",
            _forward_inference_variant(affine="none")),
)


def _moving_average_ref(moving, batch_value, momentum):
    moving, batch_value = _f64(moving, batch_value)
    return (ref.update_moving_average(moving, batch_value, momentum),)


def _moving(formula):
    def outputs(moving, batch_value, momentum):
        moving, batch_value = _f64(moving, batch_value)
        return (formula(moving, batch_value, momentum),)

    return outputs


_MOVING_AVERAGE_MISTAKES = (
    Mistake("momentum reversed",
            "you computed moving * (1 - momentum) + batch_value * momentum (PyTorch's convention, "
            "where momentum is the weight of the NEW value). In Keras momentum is the weight of the "
            "OLD moving value: moving * momentum + batch_value * (1 - momentum).",
            _moving(lambda m, b, k: m * (1 - k) + b * k)),
    Mistake("(1 - momentum) factor missing",
            "you added the whole batch value: moving * momentum + batch_value. Weight it by "
            "(1 - momentum) so the weights sum to one.",
            _moving(lambda m, b, k: m * k + b)),
    Mistake("moving statistic not updated",
            "you returned `moving` unchanged. Blend in the batch value: "
            "moving * momentum + batch_value * (1 - momentum).",
            _moving(lambda m, b, k: m)),
    Mistake("moving statistic replaced",
            "you returned `batch_value`, which forgets the history. Blend it in: "
            "moving * momentum + batch_value * (1 - momentum).",
            _moving(lambda m, b, k: b)),
)


def _backward_ref(dy, x, gamma, eps, axis):
    dy, x, gamma = _f64(dy, x, gamma)
    return ref.batchnorm_backward(dy, x, gamma, eps, axis)


def _backward_variant(ddof=0, mode="inside", mean_term=True, var_term=True, use_gamma=True,
                      dgamma_of="xhat", params="others", reduce="sum", swap=False):
    """The paper's backward equations, with one catalogued change."""

    def outputs(dy, x, gamma, eps, axis):
        dy, x, gamma = _f64(dy, x, gamma)
        axes = ref.reduction_axes(x.ndim, axis)
        m = x.size // x.shape[axis]
        b = lambda v: per_feature(v, x.ndim, axis)  # noqa: E731
        xc = x - x.mean(axis=axes, keepdims=True)
        var = (xc**2).sum(axis=axes, keepdims=True) / (m - ddof)
        std = {"inside": np.sqrt(var + eps), "missing": np.sqrt(var),
               "outside": np.sqrt(var) + eps}[mode]
        xhat = xc / std
        dxhat = dy * b(gamma) if use_gamma else dy
        dvar = (dxhat * xc).sum(axis=axes, keepdims=True) * -0.5 / std**3 if var_term else 0.0
        dmean = -dxhat.sum(axis=axes, keepdims=True) / std if mean_term else 0.0
        dx = dxhat / std + dvar * 2.0 * xc / m + dmean / m
        param_axes = _axes(x.ndim, axis, params)
        total = (lambda a: a.mean(axis=param_axes)) if reduce == "mean" else \
            (lambda a: a.sum(axis=param_axes))
        dgamma = total(dy * (x if dgamma_of == "x" else xhat))
        dbeta = total(dy)
        if swap:
            dgamma, dbeta = dbeta, dgamma
        return dx, dgamma, dbeta

    return outputs


_BACKWARD_MISTAKES = (
    Mistake("mean and variance treated as constants",
            "your dx is dy * gamma / sqrt(var + eps), as if the batch mean and variance did not "
            "depend on x. They do: add the terms through dvar and dmean (see the equations).",
            _backward_variant(mean_term=False, var_term=False)),
    Mistake("variance term missing from dx",
            "your dx has no contribution through the variance: add dvar * 2 (x - mean) / m, with "
            "dvar = sum(dxhat * (x - mean)) * -1/2 * (var + eps)**(-3/2).",
            _backward_variant(var_term=False)),
    Mistake("mean term missing from dx",
            "your dx has no contribution through the mean: add dmean / m, with "
            "dmean = -sum(dxhat) / sqrt(var + eps) (the dvar part of dmean is zero).",
            _backward_variant(mean_term=False)),
    Mistake("gamma missing from dx",
            "dxhat = dy * gamma: the gradient reaching xhat is scaled by gamma.",
            _backward_variant(use_gamma=False)),
    Mistake("dgamma uses x instead of xhat",
            "dgamma = sum(dy * xhat), with the NORMALISED input xhat, not x.",
            _backward_variant(dgamma_of="x")),
    Mistake("dgamma and dbeta swapped",
            "dgamma = sum(dy * xhat) and dbeta = sum(dy); return them in the order "
            "(dx, dgamma, dbeta).",
            _backward_variant(swap=True)),
    Mistake("dgamma and dbeta averaged instead of summed",
            "gamma and beta are used by every example, so their gradients ADD UP over the batch: "
            "sum, do not average.",
            _backward_variant(reduce="mean")),
    Mistake("dgamma and dbeta summed over the wrong axis: the feature axis",
            "dgamma and dbeta have one value per feature, shape (C,): sum over every axis EXCEPT "
            "`axis`, the same axes as the forward statistics.",
            _backward_variant(params="feature")),
    Mistake("dgamma and dbeta summed over the wrong axis: the batch axis only",
            "for images, sum over the batch AND the spatial axes (every axis except `axis`), so "
            "dgamma and dbeta have shape (C,).",
            _backward_variant(params="batch")),
    Mistake("unbiased variance",
            "your backward pass uses the variance with m-1; the forward pass used the biased "
            "variance (divide by m), and the gradient must use the same.",
            _backward_variant(ddof=1)),
    Mistake("missing epsilon",
            "you use sqrt(var) without epsilon; the forward pass divides by sqrt(var + eps), and so "
            "must the gradient.",
            _backward_variant(mode="missing")),
    Mistake("epsilon outside the square root",
            "you use sqrt(var) + eps; use sqrt(var + eps), as in the forward pass.",
            _backward_variant(mode="outside")),
)

SPECS = {
    "forward_train": Spec(
        "forward_train", "batchnorm_forward_train",
        (Output("y"), Output("mean", per_feature=True), Output("var", per_feature=True)),
        (1, 2, 0), _forward_train_ref, _forward_train_cases, _FORWARD_TRAIN_MISTAKES,
        (("mean", "mean: average x over every axis except `axis`."),
         ("var", "var: the mean of (x - mean)**2 over the same axes (divide by m)."),
         ("y", "y = gamma * (x - mean) / sqrt(var + eps) + beta, with gamma, beta, mean, var "
               "broadcast along `axis`.")), precision=True),
    "forward_inference": Spec(
        "forward_inference", "batchnorm_forward_inference", (Output("y"),), (0,),
        _forward_inference_ref, _forward_inference_cases, _FORWARD_INFERENCE_MISTAKES,
        (("y", "y = gamma * (x - moving_mean) / sqrt(moving_var + eps) + beta, with every "
               "per-feature array broadcast along `axis`."),), precision=True),
    "moving_average": Spec(
        "moving_average", "update_moving_average", (Output("new moving value"),), (0,),
        _moving_average_ref, _moving_average_cases, _MOVING_AVERAGE_MISTAKES,
        (("new moving value", "Keras: moving * momentum + batch_value * (1 - momentum)."),),
        precision=True),
    "backward": Spec(
        "backward", "batchnorm_backward",
        (Output("dx"), Output("dgamma", per_feature=True), Output("dbeta", per_feature=True)),
        (2, 1, 0), _backward_ref, _backward_cases, _BACKWARD_MISTAKES,
        (("dbeta", "dbeta = sum(dy) over every axis except `axis`."),
         ("dgamma", "dgamma = sum(dy * xhat) over every axis except `axis`."),
         ("dx", "follow the equations step by step (dxhat, dvar, dmean, dx), and compare with a "
                "numeric gradient on a small input.")), precision=True),
}


_CHECKS = Checks(__name__, SPECS)
cases, record, compare, _check = _CHECKS.cases, _CHECKS.record, _CHECKS.compare, _CHECKS.check


def check_forward_train(fn, hidden=False):
    """Part A: ``fn(x, gamma, beta, eps, axis) -> (y, mean, var)``."""
    __tracebackhide__ = True  # noqa: F841
    _check("forward_train", fn, hidden)


def check_forward_inference(fn, hidden=False):
    """Part B: ``fn(x, gamma, beta, moving_mean, moving_var, eps, axis) -> y``."""
    __tracebackhide__ = True  # noqa: F841
    _check("forward_inference", fn, hidden)


def check_moving_average(fn, hidden=False):
    """Part B: ``fn(moving, batch_value, momentum) -> new moving value`` (Keras's convention)."""
    __tracebackhide__ = True  # noqa: F841
    _check("moving_average", fn, hidden)


def check_backward(fn, hidden=False):
    """Part C: ``fn(dy, x, gamma, eps, axis) -> (dx, dgamma, dbeta)``."""
    __tracebackhide__ = True  # noqa: F841
    _check("backward", fn, hidden)


# ---------------------------------------------------------------------------------------------
# Part D: multiple choice. The visible check validates the format, the hidden one the answer.
# The key is stored hashed only so that reading this file does not spoil the questions; it is
# no secret (the solutions are in the same repository).

QUESTIONS = {
    "q1": {
        "options": "abcd",
        "key": "1dff818cc1bb0bab6f0c4d288c48c785fd569df8c5318a4291656125de903f1a",
        "explanations": {
            "a": "In training mode BN normalises with the batch's own statistics. With one example "
                 "per batch the mean of each feature IS that example's value, so x - mean = 0.",
            "b": "",
            "c": "The variance is 0, but epsilon is added inside the square root, so the "
                 "denominator is sqrt(eps) > 0: no NaN. Look at the numerator x - mean.",
            "d": "That would be BN with mean 0 and variance 1 - not the batch statistics. Here the "
                 "batch mean equals x itself.",
        },
    },
    "q2": {
        "options": "abcd",
        "key": "bdf68fe7ac7c5199dd361e9344077fa3a50ea8c0a6d42c7a674b85cc27b4bbae",
        "explanations": {
            "a": "4.95 is what ONE update gives with momentum reversed (PyTorch's convention: "
                 "0 * 0.01 + 5 * 0.99). Keras keeps 99% of the old value at every step.",
            "b": "0.05 is the value after ONE update (0 * 0.99 + 5 * 0.01). After k updates it is "
                 "5 * (1 - 0.99**k).",
            "c": "",
            "d": "The moving mean approaches 5 only geometrically: after k updates it is "
                 "5 * (1 - 0.99**k), still well short of 5 after 100.",
        },
    },
    "q3": {
        "options": "abcd",
        "key": "3d25268904518511e1efc4d2fa8d2977de0c088aacd3fc8d19ca3c546a926c19",
        "explanations": {
            "a": "",
            "b": "That is what a layer passing its input through unchanged would give. BN subtracts "
                 "the batch mean: adding the same amount to every value of a feature leaves y "
                 "unchanged, so the loss cannot change either, and the dx of a feature sum to "
                 "zero.",
            "c": "That is the sum when the batch mean and variance are treated as constants "
                 "(dx = dy * gamma / sqrt(var + eps)). The path through the mean passes back "
                 "exactly minus that, so the dx of a feature sum to zero.",
            "d": "dgamma is the gradient of gamma, a different quantity. Adding the same amount "
                 "to every value of a feature leaves y unchanged (the mean absorbs it), so the "
                 "dx of a feature sum to zero.",
        },
    },
    "q4": {
        "options": "abcd",
        "key": "859bf0c151b4bf1f9a5c002f90898e246aac8981025c7757687f7cdefb6afac5",
        "explanations": {
            "a": "That holds without BN. BN divides by the batch standard deviation, which is "
                 "multiplied by 10 as well: (10x - 10 mean) / (10 std) = (x - mean) / std, so y "
                 "does not change.",
            "b": "The variance is multiplied by 100, so the standard deviation by 10, exactly as "
                 "x - mean is: their ratio, and y, do not change.",
            "c": "Nothing divides y by the scale of x: the mean and the standard deviation both "
                 "grow tenfold with x, and (x - mean) / std does not change.",
            "d": "",
        },
    },
}


_CHOICES = _choice.Choices(__name__, QUESTIONS)
record_answer, compare_answer, check_answer = (
    _CHOICES.record_answer, _CHOICES.compare_answer, _CHOICES.check_answer)
