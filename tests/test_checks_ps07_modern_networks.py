"""The ps07_modern_networks checks: right answers pass however they are written, each catalogued
mistake fails with a message that names it, the hidden cases are not the visible ones, and the
oracles agree with independent computations (a central-difference gradient of the residual
stacks, SGD simulated step by step on scale-invariant weights).

The implementations below are written the way learners write them, independently of the
mistake generators in ``coursework.ps07_modern_networks`` (a check is never tested against
itself).
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
from coursework import ps07_modern_networks as checks


def _pf(v, x, axis):
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return np.reshape(v, shape)


def _others(x, axis):
    return tuple(a for a in range(x.ndim) if a != axis % x.ndim)


# ----------------------------------------------------------------------------------------------
# Part A: RMSNorm forward


def fwd_keepdims(x, gamma, eps=1e-6, axis=-1):
    rms = np.sqrt(np.mean(x**2, axis=axis, keepdims=True) + eps)
    return _pf(gamma, x, axis) * x / rms, rms


def fwd_squeezed(x, gamma, eps=1e-6, axis=-1):
    ms = np.square(x).mean(axis=axis)
    rms = np.sqrt(ms + eps)
    return x / np.expand_dims(rms, axis) * _pf(gamma, x, axis), rms


def fwd_moveaxis_einsum(x, gamma, eps=1e-6, axis=-1):
    xt = np.moveaxis(x, axis, -1)
    rms = np.sqrt(np.einsum("...c,...c->...", xt, xt) / xt.shape[-1] + eps)
    y = xt / rms[..., None] * gamma
    return np.moveaxis(y, -1, axis), rms


def fwd_linalg_norm(x, gamma, eps=1e-6, axis=-1):
    n = x.shape[axis]
    rms = np.sqrt(np.linalg.norm(x, axis=axis, keepdims=True) ** 2 / n + eps)
    return [x * _pf(gamma, x, axis) / rms, rms]


def fwd_float64(x, gamma, eps=1e-6, axis=-1):
    """float64 out for float32 in: accepted (the rule is about losing precision)."""
    return fwd_keepdims(x.astype(np.float64), gamma.astype(np.float64), eps, axis)


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [fwd_keepdims, fwd_squeezed, fwd_moveaxis_einsum, fwd_linalg_norm,
                                fwd_float64])
def test_rms_forward_alternatives_pass(fn, hidden):
    checks.check_rms_norm_forward(fn, hidden=hidden)


def _fwd(center=False, denominator=lambda ms, eps: np.sqrt(ms + eps), total=np.mean, scale=True,
         axes=lambda x, axis: axis):
    def fn(x, gamma, eps=1e-6, axis=-1):
        red = axes(x, axis)
        if center:
            x = x - x.mean(axis=red, keepdims=True)
        rms = denominator(total(x**2, axis=red, keepdims=True), eps)
        y = x / rms
        return (y * _pf(gamma, x, axis) if scale else y), rms

    return fn


RMS_FORWARD_MISTAKES = {
    "mean subtracted (that is LayerNorm)": _fwd(center=True),
    "epsilon outside the square root": _fwd(denominator=lambda ms, eps: np.sqrt(ms) + eps),
    "missing epsilon": _fwd(denominator=lambda ms, eps: np.sqrt(ms)),
    "square root missing": _fwd(denominator=lambda ms, eps: ms + eps),
    "L2 norm instead of the RMS": _fwd(total=np.sum),
    "no scale": _fwd(scale=False),
    "wrong axis: the batch statistics": _fwd(axes=_others),
    "wrong axis: all axes": _fwd(axes=lambda x, axis: None),
}


def _named(label):
    return f"Most likely mistake \\({label.replace('(', '.').replace(')', '.')}\\)"


@pytest.mark.parametrize("label", list(RMS_FORWARD_MISTAKES))
def test_rms_forward_mistakes_are_named(label):
    fn = RMS_FORWARD_MISTAKES[label]
    with pytest.raises(AssertionError, match=_named(label)) as info:
        checks.check_rms_norm_forward(fn)
    assert info.value.mistake == label
    with pytest.raises(AssertionError):
        checks.check_rms_norm_forward(fn, hidden=True)


def test_rms_forward_float32_computation_fails_the_precision_rule():
    """The catalogued precision mistake: float64 inputs computed (and returned) in float32. The
    visible float64 case shows it, with the rule, and names no other mistake."""
    def in_float32(x, gamma, eps=1e-6, axis=-1):
        return fwd_keepdims(x.astype(np.float32), gamma.astype(np.float32), eps, axis)

    with pytest.raises(AssertionError, match=r"returned float32 for float64 input") as info:
        checks.check_rms_norm_forward(in_float32)
    message = str(info.value)
    assert "visible case 2" in message and "float64 out" in message
    assert "Most likely mistake" not in message
    assert info.value.mistake is None and info.value.kind == "dtype"


@pytest.mark.parametrize("check,good", [
    (checks.check_rms_norm_backward, lambda dy, x, g, eps, axis: bwd_paper(dy, x, g, eps, axis)),
    (checks.check_weight_decay_step, lambda w, g, eta, lam: step_formula(w, g, eta, lam)),
    (checks.check_equilibrium, lambda eta, lam, g: eq_exact(eta, lam, g)),
])
def test_float32_computation_fails_the_precision_rule_everywhere(check, good):
    def in_float32(*args):
        args = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64
                else a for a in args]
        return tuple(np.asarray(v, dtype=np.float32) for v in good(*args))

    with pytest.raises(AssertionError, match=r"float32 for float64 input") as info:
        check(in_float32, hidden=True)
    assert info.value.kind == "dtype"


def test_rms_forward_ignoring_axis_gets_the_exception_and_the_line():
    def last_axis_only(x, gamma, eps=1e-6, axis=-1):
        return fwd_keepdims(x, gamma, eps, -1)

    with pytest.raises(AssertionError, match=r"raised ValueError(.|\n)*visible case 2") as info:
        checks.check_rms_norm_forward(last_axis_only)
    assert "fwd_keepdims(x, gamma, eps, -1)" in str(info.value) or "in your code" in str(info.value)


# ----------------------------------------------------------------------------------------------
# Part A: RMSNorm backward


def bwd_paper(dy, x, gamma, eps=1e-6, axis=-1):
    n = x.shape[axis]
    rms = np.sqrt((x**2).mean(axis=axis, keepdims=True) + eps)
    dxhat = dy * _pf(gamma, x, axis)
    drms = -(dxhat * x).sum(axis=axis, keepdims=True) / rms**2  # d loss / d rms
    dx = dxhat / rms + drms * x / (n * rms)  # d rms / d x_j = x_j / (n rms)
    return dx, (dy * x / rms).sum(axis=_others(x, axis))


def bwd_projection(dy, x, gamma, eps=1e-6, axis=-1):
    """The compact form: (dxhat - xhat * mean(dxhat * xhat) * ms / rms^2) / rms, ms = mean(x^2)."""
    xt, dyt = np.moveaxis(x, axis, -1), np.moveaxis(dy, axis, -1)
    ms = (xt**2).mean(axis=-1, keepdims=True)
    rms = np.sqrt(ms + eps)
    xhat = xt / rms
    dxhat = dyt * gamma
    dx = (dxhat - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)) / rms
    dgamma = (dyt * xhat).reshape(-1, xt.shape[-1]).sum(axis=0)
    return np.moveaxis(dx, -1, axis), dgamma


def bwd_numeric(dy, x, gamma, eps=1e-6, axis=-1):
    """dx by central differences of sum(dy * y), in float64; dgamma analytic."""
    dy64, x64, g64 = (np.asarray(a, dtype=np.float64) for a in (dy, x, gamma))
    f = lambda z: np.sum(dy64 * fwd_keepdims(z, g64, eps, axis)[0])  # noqa: E731
    dx = ref.numeric_gradient(f, x64.copy(), h=1e-6)
    rms = np.sqrt((x64**2).mean(axis=axis, keepdims=True) + eps)
    return dx, (dy64 * x64 / rms).sum(axis=_others(x, axis))


def bwd_keepdims_dgamma(dy, x, gamma, eps=1e-6, axis=-1):
    dx, dgamma = bwd_paper(dy, x, gamma, eps, axis)
    return dx, _pf(dgamma, x, axis)


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [bwd_paper, bwd_projection, bwd_numeric, bwd_keepdims_dgamma])
def test_rms_backward_alternatives_pass(fn, hidden):
    checks.check_rms_norm_backward(fn, hidden=hidden)


def test_rms_backward_reference_is_the_numeric_gradient():
    for hidden in (False, True):
        for case in checks.cases("rms_backward", hidden):
            dy, x, gamma, eps, axis = (np.asarray(a, dtype=np.float64) if isinstance(a, np.ndarray)
                                       else a for a in case.args)
            dx, dgamma = checks.SPECS["rms_backward"].reference(*case.args)
            def loss(z, dy=dy, gamma=gamma, eps=eps, axis=axis):
                return np.sum(dy * fwd_keepdims(z, gamma, eps, axis)[0])

            def loss_g(g, dy=dy, x=x, eps=eps, axis=axis):
                return np.sum(dy * fwd_keepdims(x, g, eps, axis)[0])

            assert ref.relative_error(dx, ref.numeric_gradient(loss, x.copy())) < 1e-7
            assert ref.relative_error(dgamma, ref.numeric_gradient(loss_g, gamma.copy())) < 1e-7


def _bwd(correction=1.0, n_factor=True, use_gamma=True, dgamma_x=False, dgamma_axes=None,
         denominator=lambda ms, eps: np.sqrt(ms + eps), stat_axes=None, center=False):
    def fn(dy, x, gamma, eps=1e-6, axis=-1):
        red = axis if stat_axes is None else stat_axes(x, axis)
        n = x.shape[axis] if stat_axes is None else x.size // x.shape[axis]
        dxhat = dy * _pf(gamma, x, axis) if use_gamma else dy
        if center:
            xc = x - x.mean(axis=red, keepdims=True)
            std = np.sqrt((xc**2).mean(axis=red, keepdims=True) + eps)
            xhat = xc / std
            dx = (n * dxhat - dxhat.sum(axis=red, keepdims=True)
                  - xhat * (dxhat * xhat).sum(axis=red, keepdims=True)) / (n * std)
        else:
            rms = denominator((x**2).mean(axis=red, keepdims=True), eps)
            xhat = x / rms
            term = x * (dxhat * x).sum(axis=red, keepdims=True) / rms**3
            dx = dxhat / rms - correction * term / (n if n_factor else 1)
        dgamma_axes_ = _others(x, axis) if dgamma_axes is None else dgamma_axes(x, axis)
        dgamma = (dy * (x if dgamma_x else xhat)).sum(axis=dgamma_axes_)
        return dx, dgamma

    return fn


RMS_BACKWARD_MISTAKES = {
    "RMS treated as a constant": _bwd(correction=0.0),
    "mean subtracted (LayerNorm's gradient)": _bwd(center=True),
    "correction term with the wrong sign": _bwd(correction=-1.0),
    "1/n missing from the correction term": _bwd(n_factor=False),
    "gamma missing from dx": _bwd(use_gamma=False),
    "dgamma uses x instead of xhat": _bwd(dgamma_x=True),
    "dgamma summed over the wrong axis": _bwd(dgamma_axes=lambda x, axis: axis),
    "epsilon outside the square root": _bwd(denominator=lambda ms, eps: np.sqrt(ms) + eps),
    "wrong axis: the batch statistics": _bwd(stat_axes=_others),
}


@pytest.mark.parametrize("label", list(RMS_BACKWARD_MISTAKES))
def test_rms_backward_mistakes_are_named(label):
    fn = RMS_BACKWARD_MISTAKES[label]
    with pytest.raises(AssertionError, match=_named(label)) as info:
        checks.check_rms_norm_backward(fn)
    assert info.value.mistake == label
    with pytest.raises(AssertionError):
        checks.check_rms_norm_backward(fn, hidden=True)


def test_rms_backward_swapped_outputs_are_named():
    with pytest.raises(AssertionError, match=r"wrong order|shape"):
        checks.check_rms_norm_backward(lambda *args: bwd_paper(*args)[::-1])


# ----------------------------------------------------------------------------------------------
# Part B: gradient norms in pre-norm and post-norm stacks


def _rms(h, eps):
    return h / np.sqrt((h**2).mean(axis=-1, keepdims=True) + eps)


def stack_loss(order, h, weights, c, eps, start):
    """The loss as a function of h_start (the notebook's definition, written again here)."""
    for w in weights[start:]:
        h = h + _rms(h, eps) @ w if order == "pre" else _rms(h + h @ w, eps)
    return np.sum(c * (_rms(h, eps) if order == "pre" else h))


def stack_inputs(order, x, weights, eps):
    hs = [x]
    for w in weights[:-1]:
        h = hs[-1]
        hs.append(h + _rms(h, eps) @ w if order == "pre" else _rms(h + h @ w, eps))
    return hs


def gn_numeric(x, weights, c, eps=1e-6):
    """Central differences at the input of every block: the independent oracle."""
    out = []
    for order in ("pre", "post"):
        norms = []
        for start, h in enumerate(stack_inputs(order, x, weights, eps)):
            def loss(z, order=order, start=start):
                return stack_loss(order, z, weights, c, eps, start)

            g = ref.numeric_gradient(loss, h.copy(), h=1e-6)
            norms.append(np.linalg.norm(g))
        out.append(np.array(norms))
    return tuple(out)


def gn_jacobians(x, weights, c, eps=1e-6):
    """Explicit per-row Jacobians of norm, multiplied down the stack."""
    d = x.shape[1]

    def jac(h):  # (N, d, d): d norm(h)_i / d h_j, per row
        r = np.sqrt((h**2).mean(axis=-1) + eps)[:, None, None]
        return np.eye(d) / r - h[:, :, None] * h[:, None, :] / (d * r**3)

    def vjp(g, h):
        return np.einsum("ni,nij->nj", g, jac(h))

    pre_hs = [x]
    for w in weights:
        pre_hs.append(pre_hs[-1] + _rms(pre_hs[-1], eps) @ w)
    g = vjp(c, pre_hs[-1])
    pre = []
    for w, h in zip(weights[::-1], pre_hs[-2::-1]):
        g = g + vjp(g @ w.T, h)
        pre.append(np.sqrt(np.sum(g * g)))
    post_hs, post_zs = [x], []
    for w in weights:
        post_zs.append(post_hs[-1] + post_hs[-1] @ w)
        post_hs.append(_rms(post_zs[-1], eps))
    g = c
    post = []
    for w, z in zip(weights[::-1], post_zs[::-1]):
        gz = vjp(g, z)
        g = gz @ (np.eye(d) + w).T
        post.append(np.sqrt(np.sum(g * g)))
    return pre[::-1], post[::-1]


def gn_recursive(x, weights, c, eps=1e-6):
    """The backward pass written recursively, lists returned."""
    def norm_bwd(g, h):
        r = np.sqrt(np.mean(h * h, axis=1, keepdims=True) + eps)
        return g / r - h * np.sum(g * h, axis=1, keepdims=True) / (h.shape[1] * r**3)

    def pre(h, layer):  # returns (gradient at h, norms from `layer` up)
        if layer == len(weights):
            return norm_bwd(c, h), []
        g_out, norms = pre(h + _rms(h, eps) @ weights[layer], layer + 1)
        g = g_out + norm_bwd(g_out @ weights[layer].T, h)
        return g, [np.linalg.norm(g)] + norms

    def post(h, layer):
        if layer == len(weights):
            return c, []
        z = h + h @ weights[layer]
        g_out, norms = post(_rms(z, eps), layer + 1)
        gz = norm_bwd(g_out, z)
        g = gz + gz @ weights[layer].T
        return g, [np.linalg.norm(g)] + norms

    return pre(x, 0)[1], post(x, 0)[1]


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [gn_numeric, gn_jacobians, gn_recursive])
def test_gradient_norms_alternatives_pass(fn, hidden):
    checks.check_gradient_norms(fn, hidden=hidden)


def test_gradient_norms_reference_is_the_numeric_gradient():
    for hidden in (False, True):
        for case in checks.cases("gradient_norms", hidden):
            expected = gn_numeric(*case.args)
            for got, want in zip(checks.SPECS["gradient_norms"].reference(*case.args), expected):
                np.testing.assert_allclose(got, want, rtol=1e-7)


def _gn(final=True, constant_rms=False, outputs=False, squared=False, per_example=False,
        identity=True):
    def fn(x, weights, c, eps=1e-6):
        def norm_bwd(g, h):
            r = np.sqrt(np.mean(h**2, axis=-1, keepdims=True) + eps)
            if constant_rms:
                return g / r
            return g / r - h * np.sum(g * h, axis=-1, keepdims=True) / (h.shape[-1] * r**3)

        def size(g):
            if per_example:
                return np.mean(np.linalg.norm(g, axis=1))
            return np.sum(g**2) if squared else np.linalg.norm(g)

        hs = [x]
        for w in weights:
            hs.append(hs[-1] + _rms(hs[-1], eps) @ w)
        g = norm_bwd(c, hs[-1]) if final else c
        pre = []
        for layer in reversed(range(len(weights))):
            if outputs:
                pre.insert(0, size(g))
            g = (g if identity else 0) + norm_bwd(g @ weights[layer].T, hs[layer])
            if not outputs:
                pre.insert(0, size(g))
        hs = [x]
        for w in weights:
            hs.append(_rms(hs[-1] + hs[-1] @ w, eps))
        g = c
        post = []
        for layer in reversed(range(len(weights))):
            if outputs:
                post.insert(0, size(g))
            gz = norm_bwd(g, hs[layer] + hs[layer] @ weights[layer])
            g = (gz if identity else 0) + gz @ weights[layer].T
            if not outputs:
                post.insert(0, size(g))
        return np.array(pre), np.array(post)

    return fn


GRADIENT_NORMS_MISTAKES = {
    "final normalisation left out": _gn(final=False),
    "RMS treated as a constant": _gn(constant_rms=True),
    "block outputs instead of inputs": _gn(outputs=True),
    "squared norms": _gn(squared=True),
    "mean of per-example norms": _gn(per_example=True),
    "identity path left out of the backward pass": _gn(identity=False),
}


@pytest.mark.parametrize("label", list(GRADIENT_NORMS_MISTAKES))
def test_gradient_norms_mistakes_are_named(label):
    fn = GRADIENT_NORMS_MISTAKES[label]
    with pytest.raises(AssertionError, match=_named(label)) as info:
        checks.check_gradient_norms(fn)
    assert info.value.mistake == label
    with pytest.raises(AssertionError):
        checks.check_gradient_norms(fn, hidden=True)


def test_gradient_norms_orderings_swapped_are_named():
    with pytest.raises(AssertionError, match=r"Most likely mistake \(wrong order\)"):
        checks.check_gradient_norms(lambda *args: gn_recursive(*args)[::-1])


# ----------------------------------------------------------------------------------------------
# Part C1: one SGD step with weight decay


def step_vector(w, g, eta, lam):
    new = w - eta * (g + lam * w)
    return np.linalg.norm(new, axis=1), eta / np.sum(w * w, axis=1)


def step_formula(w, g, eta, lam):
    wn2, gn2 = np.sum(w**2, axis=1), np.sum(g**2, axis=1)
    return np.sqrt((1 - eta * lam) ** 2 * wn2 + eta**2 * gn2), eta / wn2


def step_loop_float64(w, g, eta, lam):
    out, lr = [], []
    for wi, gi in zip(w.astype(np.float64), g.astype(np.float64)):
        wi_new = (1 - eta * lam) * wi - eta * gi
        out.append(np.sqrt(wi_new @ wi_new))
        lr.append(eta / (wi @ wi))
    return np.array(out), np.array(lr)


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [step_vector, step_formula, step_loop_float64])
def test_decay_step_alternatives_pass(fn, hidden):
    checks.check_weight_decay_step(fn, hidden=hidden)


def test_decay_step_cases_are_scale_invariant_gradients():
    for hidden in (False, True):
        for case in checks.cases("decay_step", hidden):
            w, g, eta, lam = case.args
            w64, g64 = w.astype(np.float64), g.astype(np.float64)
            cosine = np.sum(w64 * g64, axis=1) / np.linalg.norm(w64, axis=1) / np.linalg.norm(g64, axis=1)
            assert np.all(np.abs(cosine) < (1e-6 if case.dtype == np.float32 else 1e-12))
            assert eta != 1.0
            assert np.all(np.abs(np.log(np.linalg.norm(w64, axis=1))) > 0.3)  # far from 1


STEP_MISTAKES = {
    "decay term forgotten": lambda w, g, eta, lam: (np.linalg.norm(w - eta * g, axis=1),
                                                    eta / np.linalg.norm(w, axis=1) ** 2),
    "decay not scaled by the learning rate": lambda w, g, eta, lam: (
        np.linalg.norm((1 - lam) * w - eta * g, axis=1), eta / np.linalg.norm(w, axis=1) ** 2),
    "gradient's contribution forgotten": lambda w, g, eta, lam: (
        (1 - eta * lam) * np.linalg.norm(w, axis=1), eta / np.linalg.norm(w, axis=1) ** 2),
    "||w|| instead of ||w||^2": lambda w, g, eta, lam: (step_vector(w, g, eta, lam)[0],
                                                        eta / np.linalg.norm(w, axis=1)),
    "new norm in the effective learning rate": lambda w, g, eta, lam: (
        step_vector(w, g, eta, lam)[0], eta / step_vector(w, g, eta, lam)[0] ** 2),
}


@pytest.mark.parametrize("label", list(STEP_MISTAKES))
def test_decay_step_mistakes_are_named(label):
    fn = STEP_MISTAKES[label]
    pattern = f"Most likely mistake \\({label.replace('|', '.').replace('^', '.')}\\)"
    with pytest.raises(AssertionError, match=pattern) as info:
        checks.check_weight_decay_step(fn)
    assert info.value.mistake == label
    with pytest.raises(AssertionError):
        checks.check_weight_decay_step(fn, hidden=True)


# ----------------------------------------------------------------------------------------------
# Part C2: the equilibrium norm


def eq_exact(eta, lam, g_unit):
    w4 = eta * g_unit**2 / (lam * (2 - eta * lam))
    return w4**0.25, eta / np.sqrt(w4)


def eq_first_order(eta, lam, g_unit):
    """||w||^4 = eta ||g~||^2 / (2 lam), and eta / ||w||^2 = sqrt(2 eta lam) / ||g~||."""
    return np.sqrt(np.sqrt(eta / (2 * lam)) * g_unit), np.sqrt(2 * eta * lam) / g_unit


def eq_iterated(eta, lam, g_unit):
    """The norm's recursion run to its fixed point, in float64."""
    eta, lam, g_unit = (np.asarray(a, dtype=np.float64) for a in (eta, lam, g_unit))
    n2 = np.ones_like(eta)
    for _ in range(200):  # Newton on f(n2) = n2 - (1 - eta lam)^2 n2 - eta^2 g^2 / n2
        f = n2 * (1 - (1 - eta * lam) ** 2) - eta**2 * g_unit**2 / n2
        df = (1 - (1 - eta * lam) ** 2) + eta**2 * g_unit**2 / n2**2
        n2 = n2 - f / df
    return np.sqrt(n2), eta / n2


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [eq_exact, eq_first_order, eq_iterated])
def test_equilibrium_alternatives_pass(fn, hidden):
    checks.check_equilibrium(fn, hidden=hidden)


EQUILIBRIUM_MISTAKES = {
    "||w||^2 instead of ||w||^4": lambda eta, lam, g: (
        np.sqrt(eta * g**2 / (2 * lam)), eta / (eta * g**2 / (2 * lam))),
    "factor 2 missing": lambda eta, lam, g: ((eta * g**2 / lam) ** 0.25,
                                             eta / np.sqrt(eta * g**2 / lam)),
    "learning rate squared": lambda eta, lam, g: ((eta**2 * g**2 / (2 * lam)) ** 0.25,
                                                  eta / np.sqrt(eta**2 * g**2 / (2 * lam))),
    "||w|| instead of ||w||^2": lambda eta, lam, g: (eq_exact(eta, lam, g)[0],
                                                     eta / eq_exact(eta, lam, g)[0]),
}


@pytest.mark.parametrize("label", list(EQUILIBRIUM_MISTAKES))
def test_equilibrium_mistakes_are_named(label):
    fn = EQUILIBRIUM_MISTAKES[label]
    pattern = f"Most likely mistake \\({label.replace('|', '.').replace('^', '.')}\\)"
    with pytest.raises(AssertionError, match=pattern) as info:
        checks.check_equilibrium(fn)
    assert info.value.mistake == label
    with pytest.raises(AssertionError):
        checks.check_equilibrium(fn, hidden=True)


def _sgd_with_decay(w, eta, lam, g_unit, steps, rng):
    """``steps`` steps of w <- w - eta (g + lam w) on K weight vectors at once (rows of w), with g
    orthogonal to w, in a random direction, of norm g_unit / ||w||: the gradient of a
    scale-invariant loss whose gradient on the unit sphere has norm g_unit."""
    for _ in range(steps):
        r = rng.standard_normal(w.shape)
        r -= np.sum(r * w, axis=1, keepdims=True) / np.sum(w * w, axis=1, keepdims=True) * w
        norm_w = np.linalg.norm(w, axis=1, keepdims=True)
        g = r / np.linalg.norm(r, axis=1, keepdims=True) * (g_unit[:, None] / norm_w)
        w = w - eta[:, None] * (g + lam[:, None] * w)
    return w


def _settings():
    eta, lam, g_unit = (np.concatenate(a) for a in zip(*(
        [a.astype(np.float64) for a in case.args]
        for hidden in (False, True) for case in checks.cases("equilibrium", hidden))))
    return eta, lam, g_unit


def test_equilibrium_is_a_fixed_point_of_sgd_with_weight_decay():
    """Every setting of the checks' cases, simulated from the reference's equilibrium norm: the
    norm stays there (to rounding), step after step."""
    eta, lam, g_unit = _settings()
    w_star, lr_star = checks.SPECS["equilibrium"].reference(eta, lam, g_unit)
    rng = np.random.default_rng(11)
    w = rng.standard_normal((len(eta), 16))
    w *= (w_star / np.linalg.norm(w, axis=1))[:, None]
    w = _sgd_with_decay(w, eta, lam, g_unit, 2000, rng)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), w_star, rtol=1e-9)
    np.testing.assert_allclose(eta / np.sum(w * w, axis=1), lr_star, rtol=1e-9)


def test_sgd_with_weight_decay_converges_to_the_equilibrium():
    """From norms 3 times too small and 3 times too large, SGD settles at the equilibrium (the
    settings with eta * lam large enough to get there in 6000 steps)."""
    rng = np.random.default_rng(12)
    eta = np.array([0.5, 0.1, 0.02, 0.3])
    lam = np.array([2e-3, 1e-2, 0.1, 5e-3])
    g_unit = np.array([0.3, 1.0, 4.0, 2.0])
    w_star, lr_star = checks.SPECS["equilibrium"].reference(eta, lam, g_unit)
    for start in (1 / 3, 3.0):
        w = rng.standard_normal((4, 12))
        w *= (start * w_star / np.linalg.norm(w, axis=1))[:, None]
        w = _sgd_with_decay(w, eta, lam, g_unit, 6000, rng)
        np.testing.assert_allclose(np.linalg.norm(w, axis=1), w_star, rtol=1e-6)
        np.testing.assert_allclose(eta / np.sum(w * w, axis=1), lr_star, rtol=1e-6)
    first_order = (eta * g_unit**2 / (2 * lam)) ** 0.25
    assert np.all(np.abs(first_order / w_star - 1) < eta * lam)  # the approximation's error


def test_equilibrium_of_a_noisy_scale_invariant_loss():
    """A genuinely scale-invariant loss, L_t(w) = a_t . w / ||w|| with a fresh a_t ~ N(0, I)
    each step: its gradient is (I - w w^T / ||w||^2) a_t / ||w||, and E ||g~||^2 = d - 1. The
    time-averaged ||w||^4 settles at eta (d - 1) / (2 lam), the first-order formula."""
    rng = np.random.default_rng(12)
    d, eta, lam = 10, 0.05, 0.02
    w = rng.standard_normal(d)
    fourth = []
    for t in range(60_000):
        a = rng.standard_normal(d)
        norm = np.linalg.norm(w)
        g = (a - (a @ w) / norm**2 * w) / norm
        w = w - eta * (g + lam * w)
        if t >= 20_000:
            fourth.append(np.linalg.norm(w) ** 4)
    predicted = eta * (d - 1) / (2 * lam)
    np.testing.assert_allclose(np.mean(fourth), predicted, rtol=0.05)
    w_norm, _ = checks.SPECS["equilibrium"].reference(np.array([eta]), np.array([lam]),
                                                      np.array([np.sqrt(d - 1.0)]))
    np.testing.assert_allclose(w_norm[0] ** 4, predicted, rtol=2 * eta * lam)


def test_effective_learning_rate_is_the_angular_step():
    """One small step turns w by about eta ||g~|| / ||w||^2: the direction moves as if the
    learning rate were eta / ||w||^2, whatever ||w|| is."""
    rng = np.random.default_rng(13)
    eta, g_unit = 1e-3, 0.7
    for scale in (0.3, 1.0, 4.0):
        w = rng.standard_normal(8)
        w *= scale / np.linalg.norm(w)
        r = rng.standard_normal(8)
        r -= (r @ w) / (w @ w) * w
        g = r / np.linalg.norm(r) * g_unit / scale
        new = w - eta * g
        angle = np.arccos(np.clip(new @ w / np.linalg.norm(new) / scale, -1, 1))
        _, lr = checks.SPECS["decay_step"].reference(w[None], g[None], eta, 0.0)
        np.testing.assert_allclose(angle, lr[0] * g_unit, rtol=1e-3)


# ----------------------------------------------------------------------------------------------
# Every check: bad types, exceptions, the two steps, the fixed inputs, the catalogue

SIGNATURES = {
    "rms_forward": (checks.check_rms_norm_forward, fwd_keepdims, "y, rms"),
    "rms_backward": (checks.check_rms_norm_backward, bwd_paper, "dx, dgamma"),
    "gradient_norms": (checks.check_gradient_norms, gn_recursive, "pre, post"),
    "decay_step": (checks.check_weight_decay_step, step_vector, "new_norm, effective_lr"),
    "equilibrium": (checks.check_equilibrium, eq_exact, "w_norm, effective_lr"),
}


@pytest.mark.parametrize("key", list(SIGNATURES))
def test_not_implemented_yet(key):
    check, _, _ = SIGNATURES[key]

    def stub(*args):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="is not implemented yet") as info:
        check(stub)
    assert info.value.kind == "not implemented"


@pytest.mark.parametrize("key", list(SIGNATURES))
def test_missing_return(key):
    check, _, returns = SIGNATURES[key]
    with pytest.raises(AssertionError, match=f"returned None: did you forget `return {returns}`"):
        check(lambda *args: None)


@pytest.mark.parametrize("key", list(SIGNATURES))
def test_bad_types_are_reported(key):
    check, good, _ = SIGNATURES[key]
    with pytest.raises(AssertionError, match="not an array of numbers") as info:
        check(lambda *args: ("done", good(*args)[1]))
    assert info.value.kind == "type"
    with pytest.raises(AssertionError, match=r"returned a single ndarray|returned a single list"):
        check(lambda *args: np.asarray(good(*args)[0]))
    with pytest.raises(AssertionError, match="returned 3 values; expected 2"):
        check(lambda *args: (*good(*args), 1.0))
    with pytest.raises(AssertionError, match="is NoneType, not a function"):
        check(None)


@pytest.mark.parametrize("key", list(SIGNATURES))
def test_exception_is_reported_with_the_learners_line(key):
    check, _, _ = SIGNATURES[key]

    def broken(*args):
        values = np.ones(3)
        return values[7]  # IndexError

    with pytest.raises(AssertionError) as info:
        check(broken)
    assert "raised IndexError: index 7 is out of bounds" in str(info.value)
    assert "return values[7]" in str(info.value)


def test_modifying_the_input_fails():
    def normalises_in_place(x, gamma, eps=1e-6, axis=-1):
        rms = np.sqrt(np.mean(x**2, axis=axis, keepdims=True) + eps)
        x /= rms
        return x * _pf(gamma, x, axis), rms

    with pytest.raises(AssertionError, match="modified its input `x` in place"):
        checks.check_rms_norm_forward(normalises_in_place)


def test_reference_implementation_is_refused():
    with pytest.raises(AssertionError, match="course_lib's reference implementation"):
        checks.check_rms_norm_forward(ref.rms_norm_forward)
    with pytest.raises(AssertionError, match="course_lib's reference implementation"):
        checks.check_rms_norm_backward(ref.rms_norm_backward)


def test_nan_output_is_reported():
    def zero_rms(x, gamma, eps=1e-6, axis=-1):
        return fwd_keepdims(x, gamma, eps, axis)[0] * np.sqrt(-1.0), fwd_keepdims(x, gamma, eps, axis)[1]

    with pytest.raises(AssertionError, match="contains NaN"):
        checks.check_rms_norm_forward(zero_rms)


def test_no_stderr_even_when_the_learner_warns_or_prints(capfd):
    def without_epsilon(x, gamma, eps=1e-6, axis=-1):
        return fwd_keepdims(x, gamma, 0.0, axis)

    assert_quiet(capfd, checks.check_rms_norm_forward, without_epsilon, fwd_keepdims)


def test_check_returns_none():
    # nbgrader reads a number returned by a grade cell as partial credit: return nothing.
    assert checks.check_equilibrium(eq_exact) is None


def test_records_are_plain_data_and_compare_needs_nothing_else():
    assert_records_are_plain_data(checks, "rms_backward",
                                  RMS_BACKWARD_MISTAKES["RMS treated as a constant"],
                                  "RMS treated as a constant")
    assert checks.compare("rms_backward", checks.record("rms_backward", bwd_paper,
                                                        hidden=True)) == 5


@pytest.mark.parametrize("key", list(checks.SPECS))
@pytest.mark.parametrize("hidden", [False, True])
def test_cases_are_fixed_and_dimensions_differ(key, hidden):
    first = fixed_cases(checks, key, hidden)
    for a in first:
        x = a.args[a.names.index("x")] if "x" in a.names else a.args[0]
        if np.ndim(x) > 1:
            assert len(set(x.shape)) == x.ndim, x.shape
    if hidden:
        assert np.dtype(np.float64) in {c.dtype for c in first}


@pytest.mark.parametrize("key", list(checks.SPECS))
def test_hidden_cases_differ_from_the_visible_ones(key):
    visible, hidden = checks.cases(key, False), checks.cases(key, True)
    assert len(hidden) > len(visible)
    shapes = {tuple(np.shape(a) for a in c.args) for c in visible}
    for case in hidden:
        for seen in visible:
            assert not all(np.shape(u) == np.shape(v) and np.array_equal(u, v)
                           for u, v in zip(case.args, seen.args)), case.label
    if key in ("rms_forward", "rms_backward", "gradient_norms"):
        assert any(tuple(np.shape(a) for a in c.args) not in shapes for c in hidden)
    if key in ("rms_forward", "rms_backward"):
        assert {c.args[-1] for c in hidden} - {c.args[-1] for c in visible}  # other axes
        assert {c.args[-2] for c in hidden} - {c.args[-2] for c in visible}  # other epsilons


@pytest.mark.parametrize("key", list(checks.SPECS))
def test_every_catalogued_mistake_is_visible_on_the_visible_cases(key):
    assert_every_mistake_shows(checks.SPECS[key], checks.cases(key, False))


@pytest.mark.parametrize("key", list(checks.SPECS))
def test_each_catalogued_mistake_is_named_as_itself(key):
    """Each mistake's own outputs, as a learner would return them, are named after it and not
    after another mistake of the catalogue (no two are confused on the visible cases)."""
    spec = checks.SPECS[key]
    for mistake in spec.mistakes:
        records = checks.record(key, mistake.outputs)
        with pytest.raises(AssertionError) as info:
            checks.compare(key, records)
        assert info.value.mistake == mistake.label, (mistake.label, str(info.value))


def test_the_mistake_catalogue_is_learner_tested():
    """Every catalogued mistake has a learner-written version in this file."""
    written = {"rms_forward": RMS_FORWARD_MISTAKES, "rms_backward": RMS_BACKWARD_MISTAKES,
               "gradient_norms": GRADIENT_NORMS_MISTAKES, "decay_step": STEP_MISTAKES,
               "equilibrium": EQUILIBRIUM_MISTAKES}
    for key, spec in checks.SPECS.items():
        assert {m.label for m in spec.mistakes} == set(written[key]), key


def test_reference_is_course_lib_reference():
    case = checks.cases("rms_forward", True)[2]
    x, gamma, eps, axis = case.args
    y, rms = checks.SPECS["rms_forward"].reference(*case.args)
    y_ref, rms_ref = ref.rms_norm_forward(x.astype(np.float64), gamma.astype(np.float64), eps, axis)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(rms, np.squeeze(rms_ref, axis=axis))


# ----------------------------------------------------------------------------------------------
# Part D: multiple choice

KEY = {"q1": "a", "q2": "c", "q3": "b", "q4": "b", "q5": "d"}
globals().update(multiple_choice_tests(checks, KEY))  # tests/checks_tests.py


def test_keyed_letters_are_balanced():
    assert set(KEY.values()) == set("abcd")
    assert max(list(KEY.values()).count(k) for k in "abcd") <= 2


def test_q1_key_pre_norm_keeps_a_path_past_every_norm():
    """Pre-norm: with the branches switched off (W = 0) the gradient reaches every block
    unchanged, and in deep stacks at initialisation it reaches x at least as large as at the top
    block; post-norm goes through every block's norm: its gradient at x drifts by orders of
    magnitude from one stack to the next (here it typically vanishes)."""
    spec = checks.SPECS["gradient_norms"]
    rng = np.random.default_rng(14)
    x = _rms(rng.standard_normal((4, 8)), 0.0)
    c = rng.standard_normal((4, 8))
    pre, _ = spec.reference(x, np.zeros((6, 8, 8)), c, 1e-6)
    np.testing.assert_allclose(pre, pre[-1], rtol=1e-12)
    pre_ratio, post_ratio = [], []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        x = _rms(rng.standard_normal((4, 8)), 0.0)
        weights = rng.normal(0.0, np.sqrt(1 / 8), (64, 8, 8))
        pre, post = spec.reference(x, weights, rng.standard_normal((4, 8)), 1e-6)
        pre_ratio.append(pre[0] / pre[-1])
        post_ratio.append(post[0] / post[-1])
    assert min(pre_ratio) >= 1.0
    assert np.median(post_ratio) < 0.5 and max(post_ratio) / min(post_ratio) > 100
    for hidden in (False, True):  # and in every case the checks use
        for case in checks.cases("gradient_norms", hidden):
            pre, _ = spec.reference(*case.args)
            assert pre[0] >= pre[-1]


def test_q3_key_rmsnorm_is_layernorm_without_centring():
    rng = np.random.default_rng(15)
    x = rng.normal(0.0, 2.0, (5, 6))
    x -= x.mean(axis=-1, keepdims=True)  # zero mean per example: the two coincide
    gamma, eps = rng.uniform(0.5, 2.0, 6), 1e-5
    y_rms, _ = ref.rms_norm_forward(x, gamma, eps)
    y_ln = gamma * (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, keepdims=True) + eps)
    np.testing.assert_allclose(y_rms, y_ln, rtol=1e-12)
    shifted = x + 3.0  # a mean of 3: LayerNorm removes it, RMSNorm does not
    assert not np.allclose(ref.rms_norm_forward(shifted, gamma, eps)[0], y_rms, rtol=1e-2)


def test_q4_key_zero_gamma_starts_each_block_as_the_identity_and_gamma_still_learns():
    rng = np.random.default_rng(16)
    x = rng.normal(size=(32, 5))
    branch = x @ rng.normal(size=(5, 5))  # the block's convolution, as a dense layer
    gamma, beta = np.zeros(5), np.zeros(5)
    y, _, _ = ref.batchnorm_forward_train(branch, gamma, beta)
    np.testing.assert_array_equal(x + y, x)  # the block is the identity
    dy = rng.normal(size=x.shape)  # gradient at the block's output = at the BN's output
    _, dgamma, _ = ref.batchnorm_backward(dy, branch, gamma)
    assert np.all(np.abs(dgamma) > 1e-3)  # gamma leaves zero at the first step


def test_q5_key_weight_decay_raises_the_effective_learning_rate():
    """BN makes the loss ignore ||w||; without decay ||w|| grows and eta / ||w||^2 falls, with
    decay it settles (Part C2) and stays higher."""
    rng = np.random.default_rng(17)
    u = rng.normal(size=(64, 6))
    w = rng.normal(size=6)
    y1, _, _ = ref.batchnorm_forward_train((u @ w)[:, None], np.ones(1), np.zeros(1), 1e-12)
    y2, _, _ = ref.batchnorm_forward_train((u @ (7.5 * w))[:, None], np.ones(1), np.zeros(1), 1e-12)
    np.testing.assert_allclose(y1, y2, atol=1e-9)  # scale-invariant
    eta, g_unit = 0.1, 1.0
    lrs = {}
    for lam in (0.0, 5e-3):
        w = rng.standard_normal(10)
        for _ in range(20_000):
            r = rng.standard_normal(10)
            r -= (r @ w) / (w @ w) * w
            w = w - eta * (r / np.linalg.norm(r) * g_unit / np.linalg.norm(w) + lam * w)
        lrs[lam] = eta / (w @ w)
    assert lrs[5e-3] > 2 * lrs[0.0]
    _, lr_star = checks.SPECS["equilibrium"].reference(np.array([eta]), np.array([5e-3]),
                                                       np.array([g_unit]))
    np.testing.assert_allclose(lrs[5e-3], lr_star[0], rtol=0.02)
