"""The ps05_dropout_vs_bn checks: right answers pass however they are written, each catalogued mistake fails
with a message that names it, and the oracles agree with independent computations (an exact
expectation over the Dropout mask, and keras.layers.BatchNormalization).

The implementations below are written the way learners write them, independently of the
mistake generators in ``coursework.ps05_dropout_vs_bn`` (a check is never tested against itself).
"""


import numpy as np
import pytest
from checks_tests import (
    assert_every_mistake_shows,
    assert_quiet,
    assert_records_are_plain_data,
    fixed_cases,
    multiple_choice_tests,
)

from course_lib import reference as ref
from coursework import ps05_dropout_vs_bn as checks

# ----------------------------------------------------------------------------------------------
# Part B1: the variances from the formula


def dv_direct(mean, var, p):
    return (mean**2 + var) / p - mean**2, var


def dv_moments(mean, var, p):
    second = p * (mean**2 + var) / p**2  # E[mask^2] E[x^2] / p^2
    return second - mean**2, np.copy(var)


def dv_shift_form(mean, var, p):
    return var / p + (1 - p) / p * mean**2, var * 1.0  # Li et al.'s form


def dv_float64_list(mean, var, p):
    mean, var = mean.astype(np.float64), var.astype(np.float64)
    return [(mean**2 + var) / p - mean**2, var]


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [dv_direct, dv_moments, dv_shift_form, dv_float64_list])
def test_dropout_variances_alternatives_pass(fn, hidden):
    checks.check_dropout_variances(fn, hidden=hidden)


DROPOUT_VARIANCES_MISTAKES = {
    "rate instead of keep probability":
        lambda mean, var, p: ((mean**2 + var) / (1 - p) - mean**2, var),
    "mean term missing": lambda mean, var, p: (var / p, var),
    "no inverted scaling": lambda mean, var, p: (p * (mean**2 + var) - (p * mean) ** 2, var),
    "mask squared as 1": lambda mean, var, p: ((mean**2 + var) / p**2 - mean**2, var),
    "no variance shift": lambda mean, var, p: (var.copy(), var.copy()),
}


@pytest.mark.parametrize("label", list(DROPOUT_VARIANCES_MISTAKES))
def test_dropout_variances_mistakes_are_named(label):
    fn = DROPOUT_VARIANCES_MISTAKES[label]
    with pytest.raises(AssertionError, match=f"Most likely mistake \\({label}\\)"):
        checks.check_dropout_variances(fn)
    with pytest.raises(AssertionError):
        checks.check_dropout_variances(fn, hidden=True)


def test_dropout_variances_swapped_outputs_are_named():
    with pytest.raises(AssertionError, match=r"wrong order"):
        checks.check_dropout_variances(lambda mean, var, p: dv_direct(mean, var, p)[::-1])


def test_formula_is_the_exact_expectation_over_the_mask():
    """The oracle against Var[X] of X = x * mask / p computed from its distribution: x uniform
    over N values, mask 1 with probability p, every (value, mask) pair enumerated."""
    rng = np.random.default_rng(0)
    for p in (0.6, 0.8, 0.95):
        x = rng.normal(1.5, 2.0, 50)
        values = np.concatenate([x / p, np.zeros_like(x)])  # (x_i, kept), (x_i, dropped)
        weights = np.concatenate([np.full(50, p / 50), np.full(50, (1 - p) / 50)])
        mean_x = np.average(values, weights=weights)
        exact = np.average((values - mean_x) ** 2, weights=weights)
        train, infer = checks.SPECS["dropout_variances"].reference(
            np.array([x.mean()]), np.array([x.var()]), p)
        np.testing.assert_allclose(train, [exact], rtol=1e-12)
        np.testing.assert_allclose(infer, [x.var()], rtol=1e-12)


def test_measured_and_formula_agree_on_a_large_batch():
    rng = np.random.default_rng(1)
    x = rng.normal([0.0, 1.0, 3.0], [1.0, 0.5, 2.0], size=(400_000, 3))
    mask = rng.random(x.shape) < 0.7
    measured = checks.SPECS["measured_variances"].reference(x, mask, 0.7)
    formula = checks.SPECS["dropout_variances"].reference(x.mean(axis=0), x.var(axis=0), 0.7)
    np.testing.assert_allclose(measured[0], formula[0], rtol=2e-2)
    np.testing.assert_allclose(measured[2][0], 0.7, rtol=2e-2)  # zero mean: the shift is p


# ----------------------------------------------------------------------------------------------
# Part B2: the variances measured


def mv_np_var(x, mask, p):
    train, infer = np.var(x * mask / p, axis=0), np.var(x, axis=0)
    return train, infer, infer / train


def mv_where_two_pass(x, mask, p):
    dropped = np.where(mask, x / p, 0.0)
    centred = dropped - dropped.mean(axis=0, keepdims=True)
    train = (centred**2).sum(axis=0) / len(x)
    infer = ((x - x.mean(axis=0)) ** 2).mean(axis=0)
    return train, infer, infer / train


def mv_einsum_float64(x, mask, p):
    x = x.astype(np.float64)
    d = x * mask.astype(np.float64) / p
    n = x.shape[0]
    dc, xc = d - d.mean(axis=0), x - x.mean(axis=0)
    train, infer = np.einsum("nc,nc->c", dc, dc) / n, np.einsum("nc,nc->c", xc, xc) / n
    return train, infer, infer / train


def mv_keepdims(x, mask, p):
    train = (x * mask / p).var(axis=0, keepdims=True)
    infer = x.var(axis=0, keepdims=True)
    return train, infer, infer / train


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [mv_np_var, mv_where_two_pass, mv_einsum_float64, mv_keepdims])
def test_measured_variances_alternatives_pass(fn, hidden):
    checks.check_measured_variances(fn, hidden=hidden)


def _mv(train=lambda x, m, p: x * m / p, infer=lambda x, m, p: x, ddof=0, axis=0, inverted=False):
    def fn(x, mask, p):
        t = train(x, mask, p).var(axis=axis, ddof=ddof)
        i = infer(x, mask, p).var(axis=axis, ddof=ddof)
        return t, i, (t / i if inverted else i / t)

    return fn


MEASURED_VARIANCES_MISTAKES = {
    "unbiased variance": _mv(ddof=1),
    "no inverted scaling": _mv(train=lambda x, m, p: x * m),
    "rate instead of keep probability": _mv(train=lambda x, m, p: x * m / (1 - p)),
    "mask not applied": _mv(train=lambda x, m, p: x / p),
    "Dropout applied at inference": _mv(infer=lambda x, m, p: x * m / p),
    "shift inverted": _mv(inverted=True),
    "variance over the wrong axis: per example": _mv(axis=1),
}


@pytest.mark.parametrize("label", list(MEASURED_VARIANCES_MISTAKES))
def test_measured_variances_mistakes_are_named(label):
    fn = MEASURED_VARIANCES_MISTAKES[label]
    with pytest.raises(AssertionError, match=f"Most likely mistake \\({label}\\)"):
        checks.check_measured_variances(fn)
    with pytest.raises(AssertionError):
        checks.check_measured_variances(fn, hidden=True)


def test_writing_into_x_is_reported():
    def in_place(x, mask, p):
        infer = x.var(axis=0)
        x *= mask / p
        train = x.var(axis=0)
        return train, infer, infer / train

    with pytest.raises(AssertionError, match="modified its input `x` in place"):
        checks.check_measured_variances(in_place)


# ----------------------------------------------------------------------------------------------
# Part C: per-channel statistics


def cs_axes(x, data_format="channels_last"):
    axes = (0, 1, 2) if data_format == "channels_last" else (0, 2, 3)
    return x.mean(axis=axes), x.var(axis=axes)


def cs_moveaxis_reshape(x, data_format="channels_last"):
    if data_format == "channels_first":
        x = np.moveaxis(x, 1, -1)
    flat = x.reshape(-1, x.shape[-1])
    return flat.mean(axis=0), flat.var(axis=0)


def cs_transpose_einsum(x, data_format="channels_last"):
    if "first" in data_format:
        x = x.transpose(0, 2, 3, 1)
    m = x.shape[0] * x.shape[1] * x.shape[2]
    mean = np.einsum("nhwc->c", x) / m
    xc = x - mean
    return mean, np.einsum("nhwc,nhwc->c", xc, xc) / m


def cs_keepdims_float64(x, data_format="channels_last"):
    x = x.astype(np.float64)
    axis = -1 if data_format == "channels_last" else 1
    axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    return x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)


def cs_one_pass(x, data_format="channels_last"):
    axes = (0, 1, 2) if data_format == "channels_last" else (0, 2, 3)
    mean = x.mean(axis=axes)
    return mean, (x**2).mean(axis=axes) - mean**2


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [cs_axes, cs_moveaxis_reshape, cs_transpose_einsum,
                                cs_keepdims_float64, cs_one_pass])
def test_channel_statistics_alternatives_pass(fn, hidden):
    checks.check_channel_statistics(fn, hidden=hidden)


def _cs(axes_last, axes_first, ddof=0, std=False):
    def fn(x, data_format="channels_last"):
        axes = axes_last if data_format == "channels_last" else axes_first
        var = x.var(axis=axes, ddof=ddof)
        return x.mean(axis=axes), (np.sqrt(var) if std else var)

    return fn


CHANNEL_STATISTICS_MISTAKES = {
    "batch axis only (a dense layer's statistics)": _cs(0, 0),
    "wrong channel axis": _cs((0, 1, 2), (0, 1, 2)),  # NCHW read as NHWC
    "per-image statistics": _cs((1, 2), (2, 3)),
    "all axes": _cs(None, None),
    "unbiased variance": _cs((0, 1, 2), (0, 2, 3), ddof=1),
    "standard deviation returned": _cs((0, 1, 2), (0, 2, 3), std=True),
}


@pytest.mark.parametrize("label", list(CHANNEL_STATISTICS_MISTAKES))
def test_channel_statistics_mistakes_are_named(label):
    fn = CHANNEL_STATISTICS_MISTAKES[label]
    pattern = f"Most likely mistake \\({label.replace('(', '.').replace(')', '.')}\\)"
    with pytest.raises(AssertionError, match=pattern):
        checks.check_channel_statistics(fn)
    with pytest.raises(AssertionError):
        checks.check_channel_statistics(fn, hidden=True)


def test_wrong_channel_axis_message_names_the_layout_and_shape():
    with pytest.raises(AssertionError) as info:
        checks.check_channel_statistics(CHANNEL_STATISTICS_MISTAKES["wrong channel axis"])
    message = str(info.value)
    assert "channels_first" in message and "expected shape: (3,)" in message
    assert "1 of 2" not in message  # only the NCHW case fails: no "(n of m fail)" footer


@pytest.mark.parametrize("data_format,axis", [("channels_last", -1), ("channels_first", 1)])
def test_channel_oracle_matches_keras_batchnormalization(data_format, axis):
    """With momentum 0, one training step leaves Keras's batch statistics in its moving ones."""
    keras = pytest.importorskip("keras")
    for case in checks.cases("channel_statistics", hidden=True):
        x, fmt = case.args
        if fmt != data_format:
            continue
        layer = keras.layers.BatchNormalization(axis=axis, momentum=0.0)
        layer(x.astype(np.float32), training=True)
        mean, var = checks.SPECS["channel_statistics"].reference(x, fmt)
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean,
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), var,
                                   rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# The two steps, the fixed inputs, and the catalogue


def test_records_are_plain_data_and_compare_needs_nothing_else():
    assert_records_are_plain_data(checks, "channel_statistics",
                                  CHANNEL_STATISTICS_MISTAKES["unbiased variance"],
                                  "unbiased variance")
    assert checks.compare("channel_statistics", checks.record("channel_statistics", cs_axes,
                                                              hidden=True)) == 4


@pytest.mark.parametrize("key", list(checks.SPECS))
@pytest.mark.parametrize("hidden", [False, True])
def test_cases_are_fixed_and_dimensions_differ(key, hidden):
    first = fixed_cases(checks, key, hidden)
    for a in first:
        x = a.args[0]
        if x.ndim > 1:
            assert len(set(x.shape)) == x.ndim, x.shape
    if hidden:
        assert np.dtype(np.float64) in {c.dtype for c in first}


@pytest.mark.parametrize("key", list(checks.SPECS))
def test_every_catalogued_mistake_is_visible_on_the_visible_cases(key):
    assert_every_mistake_shows(checks.SPECS[key], checks.cases(key, False))


def test_no_stderr_even_when_the_learner_warns_or_prints(capfd):
    def rate_for_probability(x, mask, p):
        return mv_np_var(x, mask, 1 - p)

    assert_quiet(capfd, checks.check_measured_variances, rate_for_probability, mv_np_var)


def test_reference_implementation_is_refused():
    def uses_reference(x, data_format="channels_last"):
        return None

    uses_reference.__module__ = "course_lib.reference"
    with pytest.raises(AssertionError, match="course_lib's reference implementation"):
        checks.check_channel_statistics(uses_reference)


# ----------------------------------------------------------------------------------------------
# Part A: multiple choice

KEY = {"q1": "c", "q2": "a", "q3": "d", "q4": "b"}
globals().update(multiple_choice_tests(checks, KEY))  # tests/checks_tests.py


def test_q2_key_a_bias_before_bn_is_cancelled():
    """Adding a bias b to every example leaves training-mode BN unchanged: its gradient is 0."""
    rng = np.random.default_rng(2)
    z = rng.normal(1.0, 2.0, size=(32, 3))  # Wu
    b = np.array([0.5, -3.0, 10.0])
    gamma, beta = rng.uniform(0.5, 2.0, 3), rng.normal(0.0, 1.0, 3)
    y = ref.batchnorm_forward_train(z, gamma, beta)[0]
    np.testing.assert_allclose(ref.batchnorm_forward_train(z + b, gamma, beta)[0], y,
                               rtol=1e-12, atol=1e-12)
    dy = rng.normal(size=z.shape)
    dx = ref.batchnorm_backward(dy, z + b, gamma)[0]
    np.testing.assert_allclose(dx.sum(axis=0), 0.0, atol=1e-12)  # d loss / d b


def test_q4_key_dropout_before_bn_shifts_the_variance():
    """Dropout keeps the mean and raises the variance BN learns in training; at inference the
    variance is the smaller Var[x]: the moving variance BN divides by is too large. Measured by
    enumerating the mask exactly, for units of several means."""
    rng = np.random.default_rng(5)
    for p in (0.5, 0.8, 0.95):
        for loc in (0.0, 1.0, 3.0):
            x = rng.normal(loc, 1.0, 200)
            values = np.concatenate([x / p, np.zeros_like(x)])
            weights = np.concatenate([np.full(x.size, p / x.size), np.full(x.size, (1 - p) / x.size)])
            mean_train = np.average(values, weights=weights)
            var_train = np.average((values - mean_train) ** 2, weights=weights)
            np.testing.assert_allclose(mean_train, x.mean(), rtol=1e-12, atol=1e-12)
            assert var_train > x.var() * 1.04  # the variance BN learns, above inference's


def test_q3_key_gamma_and_beta_undo_the_normalisation():
    rng = np.random.default_rng(3)
    x = rng.normal([2.0, -1.0], [3.0, 0.5], size=(64, 2))
    eps = 1e-3
    y, _, _ = ref.batchnorm_forward_train(x, np.sqrt(x.var(axis=0) + eps), x.mean(axis=0), eps)
    np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-12)
