"""The ps04_alternatives checks: right answers pass however they are written, each catalogued mistake fails
with a message that names it, and the checks' NumPy oracle agrees with Keras's own layers.

The implementations below are written the way learners write them, independently of the
mistake generator in ``coursework.ps04_alternatives``.
"""

import pickle
import re

import numpy as np
import pytest
from checks_tests import assert_every_mistake_shows, assert_records_are_plain_data, fixed_cases

from coursework import ps04_alternatives as checks


def _pf(v, x, axis):
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return np.reshape(v, shape)


def _affine(xhat, gamma, beta, axis, swapped=False):
    g, b = _pf(gamma, xhat, axis), _pf(beta, xhat, axis)
    return b * xhat + g if swapped else g * xhat + b


# ----------------------------------------------------------------------------------------------
# Part A: Layer Norm


def ln_np_var(x, gamma, beta, eps=1e-3, axis=-1):
    axes = tuple(range(1, x.ndim))
    xhat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return _affine(xhat, gamma, beta, axis)


def ln_flat_two_pass(x, gamma, beta, eps=1e-3, axis=-1):
    flat = x.reshape(len(x), -1)
    mean = flat.sum(axis=1) / flat.shape[1]
    centred = flat - mean[:, None]
    var = (centred * centred).sum(axis=1) / flat.shape[1]
    xhat = (centred / np.sqrt(var[:, None] + eps)).reshape(x.shape)
    return _affine(xhat, gamma, beta, axis)


def ln_einsum(x, gamma, beta, eps=1e-3, axis=-1):
    flat = x.reshape(len(x), -1)
    m = flat.shape[1]
    mean = np.einsum("nk->n", flat) / m
    centred = flat - mean[:, None]
    var = np.einsum("nk,nk->n", centred, centred) / m
    moved = np.moveaxis((centred / np.sqrt(var + eps)[:, None]).reshape(x.shape), axis, -1)
    return np.moveaxis(moved * gamma + beta, -1, axis)  # broadcasting along the last axis


def ln_float64(x, gamma, beta, eps=1e-3, axis=-1):
    return ln_np_var(x.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64),
                     eps, axis)


def ln_one_pass(x, gamma, beta, eps=1e-3, axis=-1):
    axes = tuple(range(1, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = (x**2).mean(axis=axes, keepdims=True) - mean**2
    return _affine((x - mean) / np.sqrt(var + eps), gamma, beta, axis)


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [ln_np_var, ln_flat_two_pass, ln_einsum, ln_float64, ln_one_pass])
def test_layer_norm_alternatives_pass(fn, hidden):
    checks.check_layer_norm(fn, hidden=hidden)


def _norm_mistake(ddof=0, denom="inside", swapped=False, axes="example"):
    """A Layer Norm with one slip; with ``axes="positions"``, an Instance Norm (Part C)."""
    def fn(x, gamma, beta, eps=1e-3, axis=-1):
        ax = axis % x.ndim
        every = tuple(range(x.ndim))
        red = {"example": every[1:], "positions": tuple(a for a in every[1:] if a != ax),
               "channel": ax, "batch_too": every,
               "batch_and_positions": tuple(a for a in every if a != ax)}[axes]
        mean = x.mean(axis=red, keepdims=True)
        var = x.var(axis=red, keepdims=True, ddof=ddof)
        std = {"inside": np.sqrt(var + eps), "missing": np.sqrt(var),
               "outside": np.sqrt(var) + eps}[denom]
        return _affine((x - mean) / std, gamma, beta, axis, swapped)

    return fn


LN_MISTAKES = {
    "unbiased variance": _norm_mistake(ddof=1),
    "missing epsilon": _norm_mistake(denom="missing"),
    "epsilon outside the square root": _norm_mistake(denom="outside"),
    "gamma and beta swapped": _norm_mistake(swapped=True),
    "statistics over the channel axis only": _norm_mistake(axes="channel"),
    "statistics over the batch": _norm_mistake(axes="batch_too"),
}


# ----------------------------------------------------------------------------------------------
# Part B: Group Norm


def gn_moveaxis(x, gamma, beta, groups, eps=1e-3, axis=-1):
    moved = np.moveaxis(x, axis, -1)
    c = moved.shape[-1]
    g = moved.reshape(moved.shape[:-1] + (groups, c // groups))
    axes = tuple(range(1, g.ndim - 2)) + (g.ndim - 1,)
    xhat = (g - g.mean(axis=axes, keepdims=True)) / np.sqrt(g.var(axis=axes, keepdims=True) + eps)
    return np.moveaxis(xhat.reshape(moved.shape) * gamma + beta, -1, axis)


def gn_channels_first(x, gamma, beta, groups, eps=1e-3, axis=-1):
    """PyTorch's way: channels next to the batch, then (N, G, -1)."""
    cf = np.moveaxis(x, axis, 1)
    g = cf.reshape(len(x), groups, -1)
    mean = g.mean(axis=2, keepdims=True)
    var = ((g - mean) ** 2).mean(axis=2, keepdims=True)
    xhat = ((g - mean) / np.sqrt(var + eps)).reshape(cf.shape)
    return _affine(np.moveaxis(xhat, 1, axis), gamma, beta, axis)


def gn_loop(x, gamma, beta, groups, eps=1e-3, axis=-1):
    axis = axis % x.ndim
    c = x.shape[axis]
    size = c // groups
    y = np.empty_like(x)
    for n in range(len(x)):
        for k in range(groups):
            index = [n] + [slice(None)] * (x.ndim - 1)
            index[axis] = slice(k * size, (k + 1) * size)
            part = x[tuple(index)]
            y[tuple(index)] = (part - part.mean()) / np.sqrt(part.var() + eps)
    return _affine(y, gamma, beta, axis)


def gn_einsum_float64(x, gamma, beta, groups, eps=1e-3, axis=-1):
    cf = np.moveaxis(x.astype(np.float64), axis, 1)
    g = cf.reshape(len(x), groups, -1)
    m = g.shape[2]
    mean = np.einsum("ngk->ng", g) / m
    centred = g - mean[..., None]
    var = np.einsum("ngk,ngk->ng", centred, centred) / m
    xhat = np.moveaxis((centred / np.sqrt(var[..., None] + eps)).reshape(cf.shape), 1, axis)
    return _affine(xhat, gamma, beta, axis)


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [gn_moveaxis, gn_channels_first, gn_loop, gn_einsum_float64])
def test_group_norm_alternatives_pass(fn, hidden):
    checks.check_group_norm(fn, hidden=hidden)


def _gn_mistake(ddof=0, denom="inside", swapped=False, layout="grouped", batch_too=False,
                positions=True):
    def fn(x, gamma, beta, groups, eps=1e-3, axis=-1):
        if layout == "reshape_as_is":
            g = x.reshape(len(x), groups, -1)
            red = (0, 2) if batch_too else (2,)
        else:
            moved = np.moveaxis(x, axis, -1)
            c = moved.shape[-1]
            split = (groups, c // groups) if layout == "grouped" else (c // groups, groups)
            g = moved.reshape(moved.shape[:-1] + split)
            channel = g.ndim - 1 if layout == "grouped" else g.ndim - 2
            red = ((0,) if batch_too else ()) + (
                tuple(range(1, g.ndim - 2)) if positions else ()) + (channel,)
        mean = g.mean(axis=red, keepdims=True)
        var = g.var(axis=red, keepdims=True, ddof=ddof)
        std = {"inside": np.sqrt(var + eps), "missing": np.sqrt(var),
               "outside": np.sqrt(var) + eps}[denom]
        xhat = (g - mean) / std
        if layout == "reshape_as_is":
            xhat = xhat.reshape(x.shape)
        else:
            xhat = np.moveaxis(xhat.reshape(moved.shape), -1, axis)
        return _affine(xhat, gamma, beta, axis, swapped)

    return fn


GN_MISTAKES = {
    "unbiased variance": _gn_mistake(ddof=1),
    "missing epsilon": _gn_mistake(denom="missing"),
    "epsilon outside the square root": _gn_mistake(denom="outside"),
    "gamma and beta swapped": _gn_mistake(swapped=True),
    "groups interleaved": _gn_mistake(layout="interleaved"),
    "channels-first reshape on channels-last input": _gn_mistake(layout="reshape_as_is"),
    "statistics over the batch": _gn_mistake(batch_too=True),
    "positions left out of the statistics": _gn_mistake(positions=False),
}


# ----------------------------------------------------------------------------------------------
# Part C: Instance Norm


def in_np_var(x, gamma, beta, eps=1e-3, axis=-1):
    axes = tuple(a for a in range(1, x.ndim) if a != axis % x.ndim)
    xhat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return _affine(xhat, gamma, beta, axis)


def in_moveaxis_einsum(x, gamma, beta, eps=1e-3, axis=-1):
    cf = np.moveaxis(x, axis, 1)
    flat = cf.reshape(cf.shape[0], cf.shape[1], -1)
    m = flat.shape[2]
    mean = np.einsum("nck->nc", flat) / m
    centred = flat - mean[..., None]
    var = np.einsum("nck,nck->nc", centred, centred) / m
    y = gamma[:, None] * centred / np.sqrt(var[..., None] + eps) + beta[:, None]
    return np.moveaxis(y.reshape(cf.shape), 1, axis)


def in_float64(x, gamma, beta, eps=1e-3, axis=-1):
    return in_np_var(x.astype(np.float64), gamma, beta, eps, axis)


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [in_np_var, in_moveaxis_einsum, in_float64])
def test_instance_norm_alternatives_pass(fn, hidden):
    checks.check_instance_norm(fn, hidden=hidden)


IN_MISTAKES = {  # _norm_mistake: see Part A
    "unbiased variance": _norm_mistake(ddof=1, axes="positions"),
    "missing epsilon": _norm_mistake(denom="missing", axes="positions"),
    "epsilon outside the square root": _norm_mistake(denom="outside", axes="positions"),
    "gamma and beta swapped": _norm_mistake(swapped=True, axes="positions"),
    "statistics over the channels at each position": _norm_mistake(axes="channel"),
    "statistics over all of an example's values": _norm_mistake(axes="example"),
    "statistics over the batch": _norm_mistake(axes="batch_and_positions"),
}

MISTAKES = ([(checks.check_layer_norm, label, fn) for label, fn in LN_MISTAKES.items()]
            + [(checks.check_group_norm, label, fn) for label, fn in GN_MISTAKES.items()]
            + [(checks.check_instance_norm, label, fn) for label, fn in IN_MISTAKES.items()])


@pytest.mark.parametrize("check,label,fn", MISTAKES,
                         ids=[f"{c.__name__}-{label}" for c, label, _ in MISTAKES])
def test_mistakes_are_named(check, label, fn):
    with pytest.raises(AssertionError, match=re.escape(f"Most likely mistake ({label})")):
        check(fn)
    with pytest.raises(AssertionError):
        check(fn, hidden=True)


def test_gamma_broadcast_along_the_last_axis_gets_a_hint():
    def last_axis(x, gamma, beta, eps=1e-3, axis=-1):
        axes = tuple(range(1, x.ndim))
        xhat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
        return gamma * xhat + beta

    checks.check_layer_norm(last_axis)  # every visible case is channels last
    with pytest.raises(AssertionError, match="raised ValueError(.|\n)*axis=1(.|\n)*per_feature"):
        checks.check_layer_norm(last_axis, hidden=True)


def test_groups_not_dividing_a_reshape_gets_a_hint():
    def per_group_gamma(x, gamma, beta, groups, eps=1e-3, axis=-1):
        return gn_moveaxis(x, gamma, beta, groups, eps, axis).reshape(len(x), groups, groups, -1)

    with pytest.raises(AssertionError, match="raised ValueError(.|\n)*consecutive"):
        checks.check_group_norm(per_group_gamma)


def test_messages_say_expected_received_and_why():
    with pytest.raises(AssertionError) as info:
        checks.check_group_norm(GN_MISTAKES["groups interleaved"])
    message = str(info.value)
    assert "returned the wrong `y`" in message
    assert "expected:" in message and "received:" in message
    assert "CONSECUTIVE" in message


# ----------------------------------------------------------------------------------------------
# The oracle against Keras


@pytest.mark.parametrize("key", ["layer_norm", "group_norm", "instance_norm"])
@pytest.mark.parametrize("hidden", [False, True])
def test_oracle_is_keras_group_normalization(key, hidden):
    import keras

    for case in checks.cases(key, hidden):
        args = dict(zip(case.names, case.args))
        x, axis = args["x"].astype(np.float64), args["axis"]
        c = x.shape[axis]
        groups = {"layer_norm": 1, "instance_norm": c}.get(key, args.get("groups"))
        layer = keras.layers.GroupNormalization(groups=groups, axis=axis, epsilon=args["eps"],
                                                dtype="float64")
        layer.build(x.shape)
        layer.gamma.assign(args["gamma"].astype(np.float64))
        layer.beta.assign(args["beta"].astype(np.float64))
        expected = np.asarray(layer(x))
        (got,) = checks.SPECS[key].reference(*case.args)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_layer_norm_on_a_dense_layer_is_keras_layer_normalization():
    import keras

    for case in checks.cases("layer_norm", False)[:1]:
        x, gamma, beta, eps, axis = case.args
        layer = keras.layers.LayerNormalization(axis=-1, epsilon=eps, dtype="float64")
        layer.build(x.shape)
        layer.gamma.assign(gamma.astype(np.float64))
        layer.beta.assign(beta.astype(np.float64))
        np.testing.assert_allclose(checks.SPECS["layer_norm"].reference(*case.args)[0],
                                   np.asarray(layer(x.astype(np.float64))), rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------------------------
# Part D


def first_loop(norm, x):
    out = np.empty((len(x),) + x.shape[1:], dtype=x.dtype)
    for b in range(len(x)):
        out[b] = norm(x[: b + 1])[0]
    return out


def first_list(norm, x):
    return np.array([norm(x[:b])[0, ...] for b in range(1, x.shape[0] + 1)])


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [first_loop, first_list])
def test_first_example_outputs_alternatives_pass(fn, hidden):
    checks.check_first_example_outputs(fn, hidden=hidden)


FIRST_MISTAKES = {
    "output of the last example": lambda norm, x: np.stack([norm(x[:b])[-1]
                                                            for b in range(1, len(x) + 1)]),
    "the full batch every time": lambda norm, x: np.stack([norm(x)[0] for _ in x]),
    "one example at a time": lambda norm, x: np.stack([norm(x[b:b + 1])[0] for b in range(len(x))]),
    "batch sizes in reverse": lambda norm, x: np.stack([norm(x[:b])[0]
                                                        for b in range(len(x), 0, -1)]),
}


@pytest.mark.parametrize("label", list(FIRST_MISTAKES))
def test_first_example_outputs_mistakes_are_named(label):
    with pytest.raises(AssertionError, match=re.escape(f"Most likely mistake ({label})")):
        checks.check_first_example_outputs(FIRST_MISTAKES[label])


def test_first_example_outputs_off_by_one():
    with pytest.raises(AssertionError, match=r"with shape \(5, 4, 3, 6\)"):
        checks.check_first_example_outputs(
            lambda norm, x: np.stack([norm(x[:b])[0] for b in range(2, len(x) + 1)]))


RIGHT = {"batch": True, "layer": False, "group": False, "instance": False}


@pytest.mark.parametrize("method", checks.METHODS)
def test_depends_right_answers_pass(method):
    checks.check_depends(RIGHT, method)
    checks.check_depends(RIGHT, method, hidden=True)
    checks.check_depends({k: np.bool_(v) for k, v in RIGHT.items()}, method, hidden=True)


@pytest.mark.parametrize("method", checks.METHODS)
def test_depends_wrong_answers_fail_hidden_only(method):
    wrong = dict(RIGHT, **{method: not RIGHT[method]})
    checks.check_depends(wrong, method)
    with pytest.raises(AssertionError, match="is not what the grader measures(.|\n)*"
                                             + ("DOES" if RIGHT[method] else "does NOT")):
        checks.check_depends(wrong, method, hidden=True)


@pytest.mark.parametrize("answer,match", [
    ({"batch": None, "layer": None, "group": None, "instance": None}, "not answered yet"),
    ({"batch": "yes", "layer": False, "group": False, "instance": False}, "True or False"),
    ({"batch": True}, "has no key"),
    ([True, False, False, False], "must be a dict"),
])
def test_depends_format_is_checked_visibly(answer, match):
    with pytest.raises(AssertionError, match=match):
        checks.check_depends(answer, "batch")


def test_the_grader_measures_the_dependence():
    changes = checks.measured_changes()
    assert changes["batch"] > 0.1
    assert max(changes[m] for m in ("layer", "group", "instance")) < 1e-12


# ----------------------------------------------------------------------------------------------


def test_records_are_plain_data():
    assert_records_are_plain_data(checks, "group_norm", GN_MISTAKES["groups interleaved"],
                                  "groups interleaved")
    rec = pickle.loads(pickle.dumps(checks.record_depends(RIGHT, "layer")))
    checks.compare_depends(rec, hidden=True)


@pytest.mark.parametrize("key", ["layer_norm", "group_norm", "instance_norm"])
@pytest.mark.parametrize("hidden", [False, True])
def test_cases_are_fixed_and_every_dimension_differs(key, hidden):
    first = fixed_cases(checks, key, hidden)
    for a in first:
        x = a.args[0]
        assert len(set(x.shape)) == x.ndim, x.shape
    if hidden:
        assert np.dtype(np.float64) in {c.dtype for c in first}
        assert {1, -3} <= {dict(zip(c.names, c.args))["axis"] for c in first}


@pytest.mark.parametrize("key", ["layer_norm", "group_norm", "instance_norm",
                                 "first_example_outputs"])
def test_every_catalogued_mistake_is_visible_on_the_visible_cases(key):
    assert_every_mistake_shows(checks.SPECS[key], checks.cases(key, False))


def test_no_stderr_and_returns_none(capfd):
    assert checks.check_layer_norm(ln_np_var) is None
    with pytest.raises(AssertionError):
        checks.check_layer_norm(lambda x, g, b, eps=1e-3, axis=-1: np.log(-x))
    out, err = capfd.readouterr()
    assert err == "" and "all 2 visible cases pass" in out
