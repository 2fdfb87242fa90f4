"""The ps01_numpy_batchnorm checks: right answers pass however they are written, and each catalogued mistake
fails with a message that names it.

The implementations below are written the way learners write them, independently of the
mistake generators in ``coursework.ps01_numpy_batchnorm`` (a check is never tested against itself).
"""

import re

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
from coursework import ps01_numpy_batchnorm as checks


def _axes(x, axis):
    axis = axis % x.ndim
    return tuple(a for a in range(x.ndim) if a != axis)


def _pf(v, x, axis):
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return np.reshape(v, shape)


# ----------------------------------------------------------------------------------------------
# Part A: training-mode forward


def fwd_np_var(x, gamma, beta, eps=1e-3, axis=-1):
    axes = _axes(x, axis)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    xhat = (x - _pf(mean, x, axis)) / np.sqrt(_pf(var, x, axis) + eps)
    return _pf(gamma, x, axis) * xhat + _pf(beta, x, axis), mean, var


def fwd_two_pass_keepdims(x, gamma, beta, eps=1e-3, axis=-1):
    axes = _axes(x, axis)
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=axes, keepdims=True)
    y = _pf(gamma, x, axis) * (x - mean) / np.sqrt(var + eps) + _pf(beta, x, axis)
    return y, mean.reshape(-1), var.reshape(-1)


def fwd_keepdims_returned(x, gamma, beta, eps=1e-3, axis=-1):
    axes = _axes(x, axis)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return _pf(gamma, x, axis) * (x - mean) / np.sqrt(var + eps) + _pf(beta, x, axis), mean, var


def fwd_einsum(x, gamma, beta, eps=1e-3, axis=-1):
    xt = np.moveaxis(x, axis, -1)
    flat = xt.reshape(-1, xt.shape[-1])
    m = flat.shape[0]
    mean = np.einsum("ic->c", flat) / m
    xc = flat - mean
    var = np.einsum("ic,ic->c", xc, xc) / m
    y = (gamma * xc / np.sqrt(var + eps) + beta).reshape(xt.shape)
    return np.moveaxis(y, -1, axis), mean, var


def fwd_one_pass(x, gamma, beta, eps=1e-3, axis=-1):
    axes = _axes(x, axis)
    mean = x.mean(axis=axes)
    var = (x**2).mean(axis=axes) - mean**2
    y = _pf(gamma / np.sqrt(var + eps), x, axis) * (x - _pf(mean, x, axis)) + _pf(beta, x, axis)
    return y, mean, var


def fwd_float64(x, gamma, beta, eps=1e-3, axis=-1):
    return fwd_np_var(x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64),
                      eps, axis)


def fwd_list_return(x, gamma, beta, eps=1e-3, axis=-1):
    return list(fwd_np_var(x, gamma, beta, eps, axis))


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [fwd_np_var, fwd_two_pass_keepdims, fwd_keepdims_returned,
                                fwd_einsum, fwd_one_pass, fwd_float64, fwd_list_return])
def test_forward_train_alternatives_pass(fn, hidden):
    checks.check_forward_train(fn, hidden=hidden)


def _fwd_mistake(ddof=0, denom="inside", affine="normal", report="var", axes="others"):
    def fn(x, gamma, beta, eps=1e-3, axis=-1):
        red = {"others": _axes(x, axis), "feature": axis, "batch": 0, "all": None}[axes]
        mean = x.mean(axis=red, keepdims=True)
        var = x.var(axis=red, keepdims=True, ddof=ddof)
        std = {"inside": np.sqrt(var + eps), "missing": np.sqrt(var),
               "outside": np.sqrt(var) + eps, "no_sqrt": var + eps}[denom]
        xhat = (x - mean) / std
        g, b = _pf(gamma, x, axis), _pf(beta, x, axis)
        y = {"normal": g * xhat + b, "swapped": b * xhat + g, "none": xhat}[affine]
        out = np.sqrt(var) if report == "std" else var
        return y, np.squeeze(mean), np.squeeze(out)

    return fn


FORWARD_TRAIN_MISTAKES = {
    "unbiased variance": _fwd_mistake(ddof=1),
    "missing epsilon": _fwd_mistake(denom="missing"),
    "epsilon outside the square root": _fwd_mistake(denom="outside"),
    "square root missing": _fwd_mistake(denom="no_sqrt"),
    "gamma and beta swapped": _fwd_mistake(affine="swapped"),
    "no scale and shift": _fwd_mistake(affine="none"),
    "standard deviation returned": _fwd_mistake(report="std"),
    "wrong reduction axis: the feature axis": _fwd_mistake(axes="feature"),
    "wrong reduction axis: the batch axis only": _fwd_mistake(axes="batch"),
    "wrong reduction axis: all axes": _fwd_mistake(axes="all"),
}


@pytest.mark.parametrize("label", list(FORWARD_TRAIN_MISTAKES))
def test_forward_train_mistakes_are_named(label):
    fn = FORWARD_TRAIN_MISTAKES[label]
    with pytest.raises(AssertionError, match=f"Most likely mistake \\({label}\\)"):
        checks.check_forward_train(fn)
    with pytest.raises(AssertionError):
        checks.check_forward_train(fn, hidden=True)


def test_unbiased_variance_message_says_what_to_do():
    with pytest.raises(AssertionError) as info:
        checks.check_forward_train(FORWARD_TRAIN_MISTAKES["unbiased variance"])
    message = str(info.value)
    assert "returned the wrong `var`" in message
    assert "expected:" in message and "received:" in message
    assert "m-1" in message and "biased variance" in message


# ----------------------------------------------------------------------------------------------
# Part B: inference forward and the moving-average update


def inf_direct(x, gamma, beta, moving_mean, moving_var, eps=1e-3, axis=-1):
    b = lambda v: _pf(v, x, axis)  # noqa: E731
    return b(gamma) * (x - b(moving_mean)) / np.sqrt(b(moving_var) + eps) + b(beta)


def inf_fused(x, gamma, beta, moving_mean, moving_var, eps=1e-3, axis=-1):
    scale = gamma / np.sqrt(moving_var + eps)
    shift = beta - moving_mean * scale
    return x * _pf(scale, x, axis) + _pf(shift, x, axis)


def inf_moveaxis(x, gamma, beta, moving_mean, moving_var, eps=1e-3, axis=-1):
    xt = np.moveaxis(x.astype(np.float64), axis, -1)
    y = gamma * (xt - moving_mean) / np.sqrt(moving_var + eps) + beta
    return np.moveaxis(y, -1, axis)


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [inf_direct, inf_fused, inf_moveaxis])
def test_forward_inference_alternatives_pass(fn, hidden):
    checks.check_forward_inference(fn, hidden=hidden)


def _inf_mistake(stats="moving", denom="inside", affine="normal"):
    def fn(x, gamma, beta, moving_mean, moving_var, eps=1e-3, axis=-1):
        b = lambda v: _pf(v, x, axis)  # noqa: E731
        mean, var = b(moving_mean), b(moving_var)
        if stats == "batch":
            mean = x.mean(axis=_axes(x, axis), keepdims=True)
            var = x.var(axis=_axes(x, axis), keepdims=True)
        elif stats == "swapped":
            mean, var = var, mean
        std = {"inside": np.sqrt(var + eps), "missing": np.sqrt(var),
               "outside": np.sqrt(var) + eps, "no_sqrt": var + eps}[denom]
        xhat = (x - mean) / std
        return {"normal": b(gamma) * xhat + b(beta), "swapped": b(beta) * xhat + b(gamma),
                "none": xhat}[affine]

    return fn


FORWARD_INFERENCE_MISTAKES = {
    "batch statistics at inference": _inf_mistake(stats="batch"),
    "moving mean and variance swapped": _inf_mistake(stats="swapped"),
    "missing epsilon": _inf_mistake(denom="missing"),
    "epsilon outside the square root": _inf_mistake(denom="outside"),
    "square root missing": _inf_mistake(denom="no_sqrt"),
    "gamma and beta swapped": _inf_mistake(affine="swapped"),
    "no scale and shift": _inf_mistake(affine="none"),
}


@pytest.mark.parametrize("label", list(FORWARD_INFERENCE_MISTAKES))
def test_forward_inference_mistakes_are_named(label):
    fn = FORWARD_INFERENCE_MISTAKES[label]
    with pytest.raises(AssertionError, match=f"Most likely mistake \\({label}\\)"):
        checks.check_forward_inference(fn)
    with pytest.raises(AssertionError, match=f"Most likely mistake \\({label}\\)"):
        checks.check_forward_inference(fn, hidden=True)


def ema_keras(moving, batch_value, momentum=0.99):
    return moving * momentum + batch_value * (1 - momentum)


def ema_increment(moving, batch_value, momentum=0.99):
    return moving + (1.0 - momentum) * (batch_value - moving)


def ema_copy_inplace(moving, batch_value, momentum=0.99):
    new = np.array(moving, copy=True)
    new *= momentum
    new += (1 - momentum) * batch_value
    return new


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [ema_keras, ema_increment, ema_copy_inplace])
def test_moving_average_alternatives_pass(fn, hidden):
    checks.check_moving_average(fn, hidden=hidden)


MOVING_AVERAGE_MISTAKES = {
    "momentum reversed": lambda m, b, k=0.99: m * (1 - k) + b * k,
    "(1 - momentum) factor missing": lambda m, b, k=0.99: m * k + b,
    "moving statistic not updated": lambda m, b, k=0.99: m,
    "moving statistic replaced": lambda m, b, k=0.99: b,
}


@pytest.mark.parametrize("label", list(MOVING_AVERAGE_MISTAKES))
def test_moving_average_mistakes_are_named(label):
    fn = MOVING_AVERAGE_MISTAKES[label]
    for hidden in (False, True):
        with pytest.raises(AssertionError, match=re.escape(f"Most likely mistake ({label})")):
            checks.check_moving_average(fn, hidden=hidden)


def test_moving_average_in_place_update_of_the_input_fails():
    def in_place(moving, batch_value, momentum=0.99):
        moving *= momentum
        moving += (1 - momentum) * batch_value
        return moving

    with pytest.raises(AssertionError, match="modified its input `moving` in place"):
        checks.check_moving_average(in_place)


# ----------------------------------------------------------------------------------------------
# Part C: backward


def bwd_paper(dy, x, gamma, eps=1e-3, axis=-1):
    axes = _axes(x, axis)
    m = x.size // x.shape[axis]
    b = lambda v: _pf(v, x, axis)  # noqa: E731
    mu = x.mean(axis=axes)
    var = x.var(axis=axes)
    xc = x - b(mu)
    xhat = xc / b(np.sqrt(var + eps))
    dxhat = dy * b(gamma)
    dvar = np.sum(dxhat * xc, axis=axes) * -0.5 * (var + eps) ** -1.5
    dmu = -np.sum(dxhat, axis=axes) / np.sqrt(var + eps) + dvar * np.sum(-2 * xc, axis=axes) / m
    dx = dxhat / b(np.sqrt(var + eps)) + b(dvar) * 2 * xc / m + b(dmu) / m
    return dx, np.sum(dy * xhat, axis=axes), np.sum(dy, axis=axes)


def bwd_compact(dy, x, gamma, eps=1e-3, axis=-1):
    axes = _axes(x, axis)
    m = x.size // x.shape[axis]
    mean = x.mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    xhat = (x - mean) * inv_std
    dbeta = dy.sum(axis=axes, keepdims=True)
    dgamma = (dy * xhat).sum(axis=axes, keepdims=True)
    dx = _pf(gamma, x, axis) * inv_std / m * (m * dy - dbeta - xhat * dgamma)
    return dx, dgamma.ravel(), dbeta.ravel()


def bwd_einsum(dy, x, gamma, eps=1e-3, axis=-1):
    xt, dyt = np.moveaxis(x, axis, -1), np.moveaxis(dy, axis, -1)
    shape = xt.shape
    x2, d2 = xt.reshape(-1, shape[-1]), dyt.reshape(-1, shape[-1])
    m = x2.shape[0]
    xc = x2 - np.einsum("ic->c", x2) / m
    var = np.einsum("ic,ic->c", xc, xc) / m
    xhat = xc / np.sqrt(var + eps)
    dbeta = np.einsum("ic->c", d2)
    dgamma = np.einsum("ic,ic->c", d2, xhat)
    dx = gamma / np.sqrt(var + eps) / m * (m * d2 - dbeta - xhat * dgamma)
    return np.moveaxis(dx.reshape(shape), -1, axis), dgamma, dbeta


def bwd_float64(dy, x, gamma, eps=1e-3, axis=-1):
    return bwd_paper(dy.astype(np.float64), x.astype(np.float64), gamma.astype(np.float64), eps, axis)


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [bwd_paper, bwd_compact, bwd_einsum, bwd_float64])
def test_backward_alternatives_pass(fn, hidden):
    checks.check_backward(fn, hidden=hidden)


def _bwd_mistake(ddof=0, denom="inside", mean_term=True, var_term=True, use_gamma=True,
                 dgamma_of="xhat", params="others", reduce="sum", swap=False):
    def fn(dy, x, gamma, eps=1e-3, axis=-1):
        axes = _axes(x, axis)
        m = x.size // x.shape[axis]
        xc = x - x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, keepdims=True, ddof=ddof)
        std = {"inside": np.sqrt(var + eps), "missing": np.sqrt(var),
               "outside": np.sqrt(var) + eps}[denom]
        xhat = xc / std
        dxhat = dy * _pf(gamma, x, axis) if use_gamma else dy
        dx = dxhat / std
        if var_term:
            dvar = np.sum(dxhat * xc, axis=axes, keepdims=True) * -0.5 / std**3
            dx = dx + dvar * 2 * xc / m
        if mean_term:
            dx = dx - np.sum(dxhat, axis=axes, keepdims=True) / std / m
        red = {"others": axes, "feature": axis, "batch": 0}[params]
        agg = np.mean if reduce == "mean" else np.sum
        dgamma = agg(dy * (x if dgamma_of == "x" else xhat), axis=red)
        dbeta = agg(dy, axis=red)
        return (dx, dbeta, dgamma) if swap else (dx, dgamma, dbeta)

    return fn


BACKWARD_MISTAKES = {
    "mean and variance treated as constants": _bwd_mistake(mean_term=False, var_term=False),
    "variance term missing from dx": _bwd_mistake(var_term=False),
    "mean term missing from dx": _bwd_mistake(mean_term=False),
    "gamma missing from dx": _bwd_mistake(use_gamma=False),
    "dgamma uses x instead of xhat": _bwd_mistake(dgamma_of="x"),
    "dgamma and dbeta swapped": _bwd_mistake(swap=True),
    "dgamma and dbeta averaged instead of summed": _bwd_mistake(reduce="mean"),
    "dgamma and dbeta summed over the wrong axis: the feature axis": _bwd_mistake(params="feature"),
    "dgamma and dbeta summed over the wrong axis: the batch axis only": _bwd_mistake(params="batch"),
    "unbiased variance": _bwd_mistake(ddof=1),
    "missing epsilon": _bwd_mistake(denom="missing"),
    "epsilon outside the square root": _bwd_mistake(denom="outside"),
}


@pytest.mark.parametrize("label", list(BACKWARD_MISTAKES))
def test_backward_mistakes_are_named(label):
    fn = BACKWARD_MISTAKES[label]
    with pytest.raises(AssertionError, match=f"Most likely mistake \\({label}\\)"):
        checks.check_backward(fn)
    with pytest.raises(AssertionError):
        checks.check_backward(fn, hidden=True)


# ----------------------------------------------------------------------------------------------
# Type, shape and exception messages, for every graded function

SIGNATURES = {
    "forward_train": (checks.check_forward_train, fwd_np_var, "y, mean, var"),
    "forward_inference": (checks.check_forward_inference, inf_direct, "y"),
    "moving_average": (checks.check_moving_average, ema_keras, "new moving value"),
    "backward": (checks.check_backward, bwd_paper, "dx, dgamma, dbeta"),
}


@pytest.mark.parametrize("key", list(SIGNATURES))
def test_not_implemented_yet(key):
    check, _, _ = SIGNATURES[key]

    def stub(*args):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="is not implemented yet"):
        check(stub)


@pytest.mark.parametrize("key", list(SIGNATURES))
def test_exception_is_reported_with_the_learners_line(key):
    check, _, _ = SIGNATURES[key]

    def broken(*args):
        values = np.ones(3)
        return values[7]  # IndexError

    with pytest.raises(AssertionError) as info:
        check(broken)
    message = str(info.value)
    assert "raised IndexError: index 7 is out of bounds" in message
    assert "return values[7]" in message


@pytest.mark.parametrize("key", list(SIGNATURES))
def test_missing_return(key):
    check, _, returns = SIGNATURES[key]
    with pytest.raises(AssertionError, match=f"returned None: did you forget `return {returns}`"):
        check(lambda *args: None)


@pytest.mark.parametrize("key", ["forward_train", "backward"])
def test_single_array_instead_of_a_tuple(key):
    check, good, _ = SIGNATURES[key]
    with pytest.raises(AssertionError, match="returned a single ndarray of shape .*expected 3 values"):
        check(lambda *args: good(*args)[0])
    with pytest.raises(AssertionError, match="returned 2 values; expected 3"):
        check(lambda *args: good(*args)[:2])


def test_outputs_in_the_wrong_order():
    def reordered(*args):
        y, mean, var = fwd_np_var(*args)
        return mean, var, y

    with pytest.raises(AssertionError, match=r"Most likely mistake \(wrong order\)"):
        checks.check_forward_train(reordered)


def test_broadcasting_error_gets_an_axis_hint():
    def last_axis_only(x, gamma, beta, eps=1e-3, axis=-1):
        return fwd_np_var(x, gamma, beta, eps, -1)

    checks.check_forward_train(last_axis_only)  # every visible case has axis=-1
    with pytest.raises(AssertionError, match="raised ValueError(.|\n)*axis=1(.|\n)*per_feature"):
        checks.check_forward_train(last_axis_only, hidden=True)


def test_not_callable_and_reference_implementation():
    with pytest.raises(AssertionError, match="is NoneType, not a function"):
        checks.check_forward_train(None)
    with pytest.raises(AssertionError, match="course_lib's reference implementation"):
        checks.check_forward_train(ref.batchnorm_forward_train)


def test_modifying_the_input_fails():
    def centres_in_place(x, gamma, beta, eps=1e-3, axis=-1):
        y, mean, var = fwd_np_var(x, gamma, beta, eps, axis)
        x -= x.mean(axis=_axes(x, axis), keepdims=True)
        return y, mean, var

    with pytest.raises(AssertionError, match="modified its input `x` in place"):
        checks.check_forward_train(centres_in_place)


def test_nan_output():
    def negative_sqrt(x, gamma, beta, eps=1e-3, axis=-1):
        y, mean, var = fwd_np_var(x, gamma, beta, eps, axis)
        return y * np.sqrt(-1.0), mean, var

    with pytest.raises(AssertionError, match="contains NaN"):
        checks.check_forward_train(negative_sqrt)


def test_float32_output_for_float64_input():
    def to_float32(dy, x, gamma, eps=1e-3, axis=-1):
        return bwd_paper(dy.astype(np.float32), x.astype(np.float32), gamma.astype(np.float32),
                         eps, axis)

    checks.check_backward(to_float32)  # the visible cases are float32
    with pytest.raises(AssertionError, match=r"returned float32 for float64 input") as info:
        checks.check_backward(to_float32, hidden=True)
    assert "the problem set asks for float64 out" in str(info.value).lower()
    assert "Most likely mistake" not in str(info.value)
    assert info.value.mistake is None and info.value.kind == "dtype"


def test_float32_cast_of_right_values_fails_the_precision_rule():
    """Values within the float64 tolerance, returned as float32: the dtype alone fails."""
    def rounded(x, gamma, beta, eps=1e-3, axis=-1):
        return tuple(v.astype(np.float32) for v in fwd_np_var(x.astype(np.float64), gamma,
                                                               beta, eps, axis))

    checks.check_forward_train(rounded)
    with pytest.raises(AssertionError, match=r"returned float32 for float64 input") as info:
        checks.check_forward_train(rounded, hidden=True)
    assert info.value.kind == "dtype" and info.value.mistake is None


def test_float64_output_for_float32_input_passes():
    """The rule is about losing precision: float64 out for float32 in is accepted."""
    checks.check_forward_train(fwd_float64)
    checks.check_backward(bwd_float64)


def test_no_stderr_even_when_the_learner_warns_or_prints(capfd):
    def missing_epsilon(x, gamma, beta, eps=1e-3, axis=-1):
        return fwd_np_var(x, gamma, beta, 0.0, axis)

    assert_quiet(capfd, checks.check_forward_train, missing_epsilon, fwd_np_var)


def test_check_returns_none():
    # nbgrader reads a number returned by a grade cell as partial credit: return nothing.
    assert checks.check_forward_train(fwd_np_var) is None


# ----------------------------------------------------------------------------------------------
# The two steps are separate, and records are plain data


def test_records_are_plain_data_and_compare_needs_nothing_else():
    restored = assert_records_are_plain_data(checks, "backward", _bwd_mistake(ddof=1),
                                             "unbiased variance")
    assert {type(r["returned"]) for r in restored} == {tuple}
    assert checks.compare("backward", checks.record("backward", bwd_paper, hidden=True)) == 5


@pytest.mark.parametrize("key", list(checks.SPECS))
@pytest.mark.parametrize("hidden", [False, True])
def test_cases_are_fixed_and_every_dimension_differs(key, hidden):
    first = fixed_cases(checks, key, hidden)
    for a in first:
        x = a.args[a.names.index("x")] if "x" in a.names else a.args[0]
        assert len(set(x.shape)) == x.ndim, x.shape
    if hidden and key != "moving_average":
        dtypes = {c.dtype for c in first}
        axes = {c.args[-1] for c in first}
        assert np.dtype(np.float64) in dtypes and {1, -3, 0, -1} <= axes


@pytest.mark.parametrize("key", list(checks.SPECS))
def test_every_catalogued_mistake_is_visible_on_the_visible_cases(key):
    assert_every_mistake_shows(checks.SPECS[key], checks.cases(key, False))


def test_mistake_generators_without_a_mistake_are_the_reference():
    from coursework.ps01_numpy_batchnorm import _backward_variant, _forward_train_variant

    for hidden in (False, True):
        for case in checks.cases("forward_train", hidden):
            for got, ref_ in zip(_forward_train_variant()(*case.args),
                                 checks.SPECS["forward_train"].reference(*case.args)):
                np.testing.assert_allclose(got, ref_, rtol=1e-12, atol=1e-12)
        for case in checks.cases("backward", hidden):
            for got, ref_ in zip(_backward_variant()(*case.args),
                                 checks.SPECS["backward"].reference(*case.args)):
                np.testing.assert_allclose(got, ref_, rtol=1e-9, atol=1e-9)


def test_reference_is_course_lib_reference():
    (case,) = checks.cases("forward_train")[:1]
    x, gamma, beta, eps, axis = case.args
    y, mean, var = checks.SPECS["forward_train"].reference(*case.args)
    y_ref, _, _ = ref.batchnorm_forward_train(x.astype(np.float64), gamma.astype(np.float64),
                                              beta.astype(np.float64), eps, axis)
    np.testing.assert_array_equal(y, y_ref)


# ----------------------------------------------------------------------------------------------
# Part D: multiple choice

KEY = {"q1": "b", "q2": "c", "q3": "a", "q4": "d"}
globals().update(multiple_choice_tests(checks, KEY))  # tests/checks_tests.py


def test_answer_keys_match_the_reasoning():
    rng = np.random.default_rng(4)
    # q1: a training-mode BN on a batch of one example outputs beta.
    x = np.array([[0.3, -1.2, 2.0]])
    gamma, beta = np.array([1.5, 0.5, 2.0]), np.array([0.1, -0.2, 0.3])
    np.testing.assert_allclose(ref.batchnorm_forward_train(x, gamma, beta)[0][0], beta)
    # q2: 100 Keras updates of a moving mean starting at 0 towards 5: about 3.17.
    moving = 0.0
    for _ in range(100):
        moving = ref.update_moving_average(moving, 5.0, 0.99)
    assert round(moving, 2) == 3.17
    # q3: whatever dy, the dx of a feature sum to zero (and dbeta, the q3 distractor, does not).
    x = rng.normal(2.0, 3.0, (6, 4, 5))
    dy = rng.normal(1.0, 1.0, x.shape)
    dx, _, dbeta = ref.batchnorm_backward(dy, x, rng.uniform(0.5, 2.0, 4), 1e-3, axis=1)
    np.testing.assert_allclose(dx.sum(axis=(0, 2)), 0.0, atol=1e-12)
    assert np.all(np.abs(dbeta) > 1.0)
    # q4: scaling x by 10 leaves y unchanged (eps aside; here eps is negligible).
    x = rng.normal(2.0, 3.0, (8, 5))
    gamma, beta = rng.uniform(0.5, 2.0, 5), rng.normal(0.0, 1.0, 5)
    y = ref.batchnorm_forward_train(x, gamma, beta, 1e-12)[0]
    np.testing.assert_allclose(ref.batchnorm_forward_train(10 * x, gamma, beta, 1e-12)[0], y,
                               rtol=1e-9, atol=1e-9)
