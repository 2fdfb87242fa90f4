"""Checks for problem set 5, "Dropout vs BatchNorm".

The grade cells of ``ps05_dropout_vs_bn.ipynb`` call one function per graded part:

>>> from coursework import ps05_dropout_vs_bn as checks
>>> checks.check_dropout_variances(dropout_variances)                 # doctest: +SKIP
>>> checks.check_channel_statistics(channel_statistics, hidden=True)  # doctest: +SKIP
>>> checks.check_answer("q1", answer_q1)                              # doctest: +SKIP

Each check is two separate steps (see ``coursework._core``): ``record(key, fn, hidden)``
calls the learner's function on fixed, seeded inputs and keeps what it returned;
``compare(key, records)`` recomputes the expected values in float64 from the same inputs and,
when an output is wrong, names the catalogued mistake that explains the outputs of every
case, if one does (``dropout_variances`` and ``channel_statistics`` also keep the input's
precision, as the notebook asks). The oracles:

* ``dropout_variances``: the variance of a unit after inverted Dropout with keep probability
  ``p`` (Li et al. 2019, section 3): ``Var_train = (E[x]^2 + Var[x]) / p - E[x]^2``,
  ``Var_inference = Var[x]``.
* ``measured_variances``: the same, measured on a batch and a fixed Dropout mask.
* ``channel_statistics``: the per-channel mean and biased variance of
  ``course_lib.reference.batchnorm_forward_train`` (``axis=-1`` for NHWC, ``axis=1`` for
  NCHW), which ``tests/test_checks_ps05_dropout_vs_bn.py`` checks against ``keras.layers.BatchNormalization``.

Pure NumPy: no Keras import.
"""

import numpy as np

from course_lib import reference as ref
from coursework import _choice
from coursework._core import Case, Checks, Mistake, Output, Spec

__all__ = [
    "check_dropout_variances", "check_measured_variances", "check_channel_statistics",
    "check_answer", "record", "compare", "record_answer", "compare_answer", "cases", "SPECS",
    "QUESTIONS",
]

_KEYS = ("dropout_variances", "measured_variances", "channel_statistics")


def _rng(key, hidden, index):
    return np.random.default_rng([2019, 5, _KEYS.index(key), int(hidden), index])


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


# ---------------------------------------------------------------------------------------------
# Part B1: the variance of a unit after Dropout, from its mean and variance (Li et al. 2019)

# (units, keep probability p, dtype). p = 0.5 is never used: there, mixing up the keep
# probability and the rate gives the same answer.
_DROPOUT_VISIBLE = [(5, 0.8, np.float32), (4, 0.9, np.float32)]
_DROPOUT_HIDDEN = [(7, 0.6, np.float64), (3, 0.95, np.float32), (6, 0.7, np.float64)]


def _dropout_variances_cases(hidden):
    out = []
    for i, (c, p, dtype) in enumerate(_DROPOUT_HIDDEN if hidden else _DROPOUT_VISIBLE):
        rng = _rng("dropout_variances", hidden, i)
        # Means of both signs and far from 0 (one unit exactly 0), so the mean term shows.
        mean = rng.choice([-1.0, 1.0], c) * rng.uniform(0.5, 2.5, c)
        mean[rng.integers(c)] = 0.0
        var = rng.uniform(0.3, 3.0, c)
        out.append(Case(f"{c} units, keep probability p={p:g}, {np.dtype(dtype).name}",
                        ("mean", "var", "p"), (mean.astype(dtype), var.astype(dtype), p),
                        np.dtype(dtype), c))
    return out


def _dropout_formula(mean, var, p, keep="p", scale="inverted"):
    """Var of x * mask * scale with mask ~ Bernoulli(keep): E[X^2] - E[X]^2."""
    mean, var = _f64(mean, var)
    q = {"p": p, "rate": 1.0 - p}[keep]
    second = mean**2 + var  # E[x^2]
    if scale == "inverted":  # X = x * mask / q: E[X] = E[x], E[X^2] = E[x^2] / q
        train = second / q - mean**2
    elif scale == "none":  # X = x * mask: E[X] = q E[x], E[X^2] = q E[x^2]
        train = q * second - (q * mean) ** 2
    else:  # "squared": E[mask^2] taken as 1, E[X^2] = E[x^2] / q^2
        train = second / q**2 - mean**2
    return train, var


def _dropout_variances_ref(mean, var, p):
    return _dropout_formula(mean, var, p)


_DROPOUT_VARIANCES_MISTAKES = (
    Mistake("rate instead of keep probability",
            "you used 1 - p. Here p is the KEEP probability (Keras's `Dropout(rate)` keeps a unit "
            "with probability p = 1 - rate): the kept units are multiplied by 1/p.",
            lambda mean, var, p: _dropout_formula(mean, var, p, keep="rate")),
    Mistake("mean term missing",
            "your training variance is Var[x] / p, which holds only for a unit of mean 0. "
            "E[X^2] = E[x^2] / p with E[x^2] = E[x]^2 + Var[x], and E[X] = E[x], so "
            "Var_train = (E[x]^2 + Var[x]) / p - E[x]^2.",
            lambda mean, var, p: (_f64(var)[0] / p, _f64(var)[0])),
    Mistake("no inverted scaling",
            "you computed the variance of x * mask, without the 1/p. Keras's Dropout (inverted "
            "Dropout) multiplies the kept units by 1/p in training, so that the mean is "
            "unchanged: X = x * mask / p.",
            lambda mean, var, p: _dropout_formula(mean, var, p, scale="none")),
    Mistake("mask squared as 1",
            "you divided E[x^2] by p^2, as if the mask were always 1. The mask is 0 or 1, so "
            "mask^2 = mask and E[mask^2] = p: E[X^2] = p * E[x^2] / p^2 = E[x^2] / p.",
            lambda mean, var, p: _dropout_formula(mean, var, p, scale="squared")),
    Mistake("no variance shift",
            "you returned Var[x] for training too. Inverted Dropout keeps the MEAN, not the "
            "variance: the random mask adds variance in training, "
            "Var_train = (E[x]^2 + Var[x]) / p - E[x]^2 > Var[x].",
            lambda mean, var, p: (_f64(var)[0], _f64(var)[0])),
)


# ---------------------------------------------------------------------------------------------
# Part B2: the same, measured on a batch with a fixed Dropout mask

# (N, C, keep probability p, dtype)
_MEASURED_VISIBLE = [(30, 5, 0.8, np.float32), (24, 6, 0.7, np.float32)]
_MEASURED_HIDDEN = [(40, 7, 0.6, np.float64), (12, 9, 0.9, np.float32), (50, 3, 0.75, np.float64)]


def _measured_variances_cases(hidden):
    out = []
    for i, (n, c, p, dtype) in enumerate(_MEASURED_HIDDEN if hidden else _MEASURED_VISIBLE):
        rng = _rng("measured_variances", hidden, i)
        loc = rng.uniform(0.5, 2.0, c)  # ReLU-like units: positive means
        scale = rng.uniform(0.5, 1.5, c)
        x = np.abs(loc + scale * rng.standard_normal((n, c)))
        mask = rng.random((n, c)) < p
        mask[0, :] = True  # no unit dropped everywhere, however the seed falls
        out.append(Case(f"x and mask of shape ({n}, {c}), keep probability p={p:g}, "
                        f"{np.dtype(dtype).name}", ("x", "mask", "p"),
                        (x.astype(dtype), mask, p), np.dtype(dtype), c))
    return out


def _measured(x, mask, p, ddof=0, train="inverted", infer="plain", ratio="infer/train", axis=0):
    x = _f64(x)[0]
    mask = np.asarray(mask, dtype=np.float64)
    dropped = {"inverted": x * mask / p, "none": x * mask, "rate": x * mask / (1.0 - p),
               "no mask": x / p}[train]
    inference = {"plain": x, "dropout": dropped}[infer]
    var_train = dropped.var(axis=axis, ddof=ddof)
    var_infer = inference.var(axis=axis, ddof=ddof)
    shift = var_infer / var_train if ratio == "infer/train" else var_train / var_infer
    return var_train, var_infer, shift


def _measured_variances_ref(x, mask, p):
    return _measured(x, mask, p)


_MEASURED_VARIANCES_MISTAKES = (
    Mistake("unbiased variance",
            "your variances divide by N-1 (e.g. `np.var(..., ddof=1)`). Measure them as BN does "
            "in training: the biased variance, divide by N.",
            lambda x, mask, p: _measured(x, mask, p, ddof=1)),
    Mistake("no inverted scaling",
            "your training-mode activations are x * mask. Keras's Dropout multiplies the kept "
            "units by 1/p in training: x * mask / p.",
            lambda x, mask, p: _measured(x, mask, p, train="none")),
    Mistake("rate instead of keep probability",
            "you divided by 1 - p. Here p is the KEEP probability: the kept units are "
            "multiplied by 1/p.",
            lambda x, mask, p: _measured(x, mask, p, train="rate")),
    Mistake("mask not applied",
            "your training-mode activations are x / p, without the mask. Dropout zeroes the "
            "units where mask is False: x * mask / p.",
            lambda x, mask, p: _measured(x, mask, p, train="no mask")),
    Mistake("Dropout applied at inference",
            "at inference Dropout does nothing: the inference-mode activations are x itself, "
            "not x * mask / p.",
            lambda x, mask, p: _measured(x, mask, p, infer="dropout")),
    Mistake("shift inverted",
            "`shift` is Var_inference / Var_train (below 1: at inference the units vary LESS "
            "than the statistics BN learned in training); you returned Var_train / Var_inference.",
            lambda x, mask, p: _measured(x, mask, p, ratio="train/infer")),
    Mistake("variance over the wrong axis: per example",
            "each UNIT (column) has a variance over the batch: reduce over axis 0 (the "
            "examples), giving one value per unit, shape (C,).",
            lambda x, mask, p: _measured(x, mask, p, axis=1)),
)


# ---------------------------------------------------------------------------------------------
# Part C: per-channel statistics of a convolution's output, NHWC and NCHW

# (label, shape, data_format, dtype). Every dimension differs from every other.
_CHANNEL_VISIBLE = [
    ("images, channels last (NHWC)", (3, 5, 4, 6), "channels_last", np.float32),
    ("images, channels first (NCHW)", (4, 3, 5, 2), "channels_first", np.float32),
]
_CHANNEL_HIDDEN = [
    ("images, channels last (NHWC), float64", (2, 7, 6, 5), "channels_last", np.float64),
    ("images, channels first (NCHW), float64", (3, 8, 5, 4), "channels_first", np.float64),
    ("images, channels last (NHWC), a batch of one", (1, 4, 3, 6), "channels_last", np.float32),
    ("images, channels first (NCHW), two channels", (4, 2, 7, 5), "channels_first", np.float32),
]


def _channel_axis(data_format):
    return {"channels_last": -1, "channels_first": 1}[data_format]


def _channel_statistics_cases(hidden):
    out = []
    for i, (label, shape, data_format, dtype) in enumerate(
            _CHANNEL_HIDDEN if hidden else _CHANNEL_VISIBLE):
        rng = _rng("channel_statistics", hidden, i)
        axis = _channel_axis(data_format)
        c = shape[axis]
        view = [1] * 4
        view[axis] = c
        # Per-channel offsets and scales, plus a per-image offset (so averaging over the images
        # matters) and a vertical gradient (so averaging over the positions matters).
        loc = rng.uniform(-2.0, 3.0, c).reshape(view)
        scale = rng.uniform(0.5, 2.0, c).reshape(view)
        per_image = rng.normal(0.0, 1.0, (shape[0], 1, 1, 1))
        h_axis = 1 if data_format == "channels_last" else 2
        ramp = np.linspace(-1.0, 1.0, shape[h_axis]).reshape(
            [-1 if a == h_axis else 1 for a in range(4)])
        x = loc + scale * rng.standard_normal(shape) + per_image + ramp
        out.append(Case(f"{label}: x of shape {shape}, {np.dtype(dtype).name}, "
                        f"data_format={data_format!r}", ("x", "data_format"),
                        (x.astype(dtype), data_format), np.dtype(dtype), c))
    return out


def _channel_statistics_ref(x, data_format):
    x = _f64(x)[0]
    c = x.shape[_channel_axis(data_format)]
    _, mean, var = ref.batchnorm_forward_train(x, np.ones(c), np.zeros(c), 1e-3,
                                               _channel_axis(data_format))
    return mean, var


def _channel_variant(axes="channel", ddof=0, report="var"):
    def outputs(x, data_format):
        x = _f64(x)[0]
        channel = _channel_axis(data_format) % 4
        other = {"channels_last": 1, "channels_first": 3}[data_format]  # the other format's
        red = {"channel": tuple(a for a in range(4) if a != channel),
               "batch": (0,),
               "swapped": tuple(a for a in range(4) if a != other),
               "last": (0, 1, 2),  # data_format ignored: channels always last
               "first": (0, 2, 3),  # data_format ignored: channels always first
               "per image": tuple(a for a in range(1, 4) if a != channel),
               "all": None}[axes]
        mean = x.mean(axis=red)
        var = x.var(axis=red, ddof=ddof)
        return mean, (np.sqrt(var) if report == "std" else var)

    return outputs


_CHANNEL_STATISTICS_MISTAKES = (
    Mistake("batch axis only (a dense layer's statistics)",
            "you averaged over the batch axis only, which gives one statistic per position and "
            "channel. After a convolution BN keeps ONE mean and variance per channel, shared by "
            "every position: average over N, H and W.",
            _channel_variant(axes="batch")),
    Mistake("wrong channel axis",
            "the channels are the LAST axis for data_format='channels_last' (N, H, W, C) and "
            "axis 1 for 'channels_first' (N, C, H, W): average over every other axis.",
            _channel_variant(axes="swapped")),
) + tuple(
    # The same mistake made another way: data_format ignored, one layout assumed for both.
    Mistake("wrong channel axis",
            "`data_format` decides the channel axis: the LAST axis for 'channels_last' "
            "(N, H, W, C), axis 1 for 'channels_first' (N, C, H, W). Your statistics are "
            f"those of channels {layout} whatever `data_format` says: average over every axis "
            "except the channel axis of the given layout.",
            _channel_variant(axes=layout))
    for layout in ("last", "first")
) + (
    Mistake("per-image statistics",
            "you averaged over H and W for each image separately (that is Instance "
            "Normalization). BN averages over the batch too: N, H and W.",
            _channel_variant(axes="per image")),
    Mistake("all axes",
            "you averaged over every axis, channels included. BN keeps one mean and one "
            "variance per channel: average over every axis EXCEPT the channel axis.",
            _channel_variant(axes="all")),
    Mistake("unbiased variance",
            "your variance divides by m-1 (e.g. `ddof=1`). BN uses the biased variance: divide "
            "by m = N * H * W.",
            _channel_variant(ddof=1)),
    Mistake("standard deviation returned",
            "you returned the standard deviation; return the variance (its square).",
            _channel_variant(report="std")),
)


SPECS = {
    "dropout_variances": Spec(
        "dropout_variances", "dropout_variances",
        (Output("var_train", per_feature=True), Output("var_inference", per_feature=True)),
        (1, 0), _dropout_variances_ref, _dropout_variances_cases, _DROPOUT_VARIANCES_MISTAKES,
        (("var_inference", "at inference Dropout does nothing: the variance is Var[x]."),
         ("var_train", "write X = x * mask / p, then Var[X] = E[X^2] - E[X]^2 with "
                       "E[mask] = E[mask^2] = p.")),
        oracle="Li et al.'s formula, in float64", features="C = len(mean)", precision=True),
    "measured_variances": Spec(
        "measured_variances", "measured_variances",
        (Output("var_train", per_feature=True), Output("var_inference", per_feature=True),
         Output("shift", per_feature=True)),
        (1, 0, 2), _measured_variances_ref, _measured_variances_cases,
        _MEASURED_VARIANCES_MISTAKES,
        (("var_inference", "the variance over the batch (axis 0) of x, divided by N."),
         ("var_train", "the variance over the batch (axis 0) of x * mask / p, divided by N."),
         ("shift", "shift = var_inference / var_train.")),
        oracle="the same inputs, recomputed in float64", features="C = x.shape[1]"),
    "channel_statistics": Spec(
        "channel_statistics", "channel_statistics",
        (Output("mean", per_feature=True), Output("var", per_feature=True)),
        (0, 1), _channel_statistics_ref, _channel_statistics_cases, _CHANNEL_STATISTICS_MISTAKES,
        (("mean", "the mean over N, H and W, one value per channel."),
         ("var", "the mean of (x - mean)**2 over N, H and W (divide by m = N * H * W).")),
        features="C = the number of channels", precision=True),
}


_CHECKS = Checks(__name__, SPECS)
cases, record, compare, _check = _CHECKS.cases, _CHECKS.record, _CHECKS.compare, _CHECKS.check


def check_dropout_variances(fn, hidden=False):
    """Part B1: ``fn(mean, var, p) -> (var_train, var_inference)``."""
    __tracebackhide__ = True  # noqa: F841
    _check("dropout_variances", fn, hidden)


def check_measured_variances(fn, hidden=False):
    """Part B2: ``fn(x, mask, p) -> (var_train, var_inference, shift)``."""
    __tracebackhide__ = True  # noqa: F841
    _check("measured_variances", fn, hidden)


def check_channel_statistics(fn, hidden=False):
    """Part C: ``fn(x, data_format) -> (mean, var)``, per channel."""
    __tracebackhide__ = True  # noqa: F841
    _check("channel_statistics", fn, hidden)


# ---------------------------------------------------------------------------------------------
# Part A: multiple choice (see coursework._choice)

QUESTIONS = {
    "q1": {
        "options": "abcd",
        "key": "393163cc136ef77622335107154355b14cd320ca4522b282e96fe31bde20c653",
        "explanations": {
            "a": "The paper does make the internal-covariate-shift claim, but Santurkar et al. "
                 "(2018) contest it: with random noise injected after every BN layer, so that the "
                 "distributions shift MORE than without BN, the network still trains about as "
                 "fast (Chapter 6 repeats the experiment). Reduced internal covariate shift is "
                 "the paper's hypothesis, not an established mechanism.",
            "b": "The paper's motivation is internal covariate shift; regularisation is "
                 "mentioned as a side benefit (its Section 3.4), not as the problem BN solves.",
            "c": "",
            "d": "BN was designed for feed-forward (and convolutional) networks; Chapter 7 shows "
                 "why it is awkward inside a recurrent network.",
        },
    },
    "q2": {
        "options": "abcd",
        "key": "c27ea4797b4f1d4eb40c33418e82ecf77acc23abe7a9aecd576ce756b6f16e75",
        "explanations": {
            "a": "",
            "b": "The paper normalises x = Wu, BEFORE the nonlinearity (its Section 3.2), because "
                 "Wu is more symmetric, 'more Gaussian', than a nonlinearity's output. BN after "
                 "a ReLU is common and trains well too, but not always better: which placement "
                 "wins is an empirical question, and Chapter 4 measures it over several seeds "
                 "instead of assuming an answer.",
            "c": "A bias right before BN is cancelled: adding b to every example adds b to the "
                 "batch mean, so x - mean does not change and the bias's gradient is exactly "
                 "zero (Chapter 4). BN subtracts the mean as well as rescaling; beta takes the "
                 "bias's role.",
            "d": "The two placements compute different functions (BN(g(z)) is not g(BN(z))). And "
                 "a bias right before BN is cancelled by the mean subtraction, while a bias "
                 "before g in the 'after' placement still decides what the ReLU cuts off.",
        },
    },
    "q3": {
        "options": "abcd",
        "key": "8d72ba12aa2861636274422ee9657b89e74beb4c299475876f115711d6d4d9ea",
        "explanations": {
            "a": "That is why the paper adds gamma and beta: y = gamma * xhat + beta can take "
                 "any mean and scale, and gamma = sqrt(Var[x] + eps), beta = E[x] give back the "
                 "original activations, so a sigmoid can still saturate if that helps.",
            "b": "The moving averages are the statistics BN normalises WITH at inference; they do "
                 "not undo the normalisation. gamma and beta can.",
            "c": "Training and inference compute the same kind of transform, normalise then "
                 "scale and shift; in both, gamma and beta set the output's mean and scale.",
            "d": "",
        },
    },
    "q4": {
        "options": "abcd",
        "key": "8c4d93fcdd25e5e4e8d87b1a5faefd081fdc939cc911ac396727429c52c9632c",
        "explanations": {
            "a": "BN's batch noise regularises a little, but it does not make Dropout go away: "
                 "in training Dropout still adds variance, which the BN layer after it learns in "
                 "its moving variance, and at inference, without Dropout, the variance is "
                 "smaller (Part B's variance shift). The pair does not behave as BN alone.",
            "b": "",
            "c": "The 1/p keeps the MEAN: E[x * mask / p] = E[x]. The variance grows: "
                 "Var_train = (E[x]^2 + Var[x]) / p - E[x]^2 > Var[x] for p < 1 (Part B1).",
            "d": "At inference BN normalises with its moving statistics, learned in training, "
                 "not with the statistics of the batch it is given (that would make an example's "
                 "output depend on the rest of the batch). Those moving statistics include "
                 "Dropout's extra variance.",
        },
    },
}


_CHOICES = _choice.Choices(__name__, QUESTIONS)
record_answer, compare_answer, check_answer = (
    _CHOICES.record_answer, _CHOICES.compare_answer, _CHOICES.check_answer)
