"""Checks for problem set 4, "The alternatives": Layer, Group and Instance Normalization.

The grade cells of ``ps04_alternatives.ipynb`` call one function per graded part:

>>> from coursework import ps04_alternatives as checks
>>> checks.check_layer_norm(layer_norm)                       # doctest: +SKIP
>>> checks.check_group_norm(group_norm, hidden=True)          # doctest: +SKIP
>>> checks.check_depends(answer_depends, "group", hidden=True)  # doctest: +SKIP

Each check is two steps (``coursework._core``): ``record`` calls the learner's function
on fixed, seeded inputs and keeps plain data; ``compare`` recomputes the expected outputs with
the NumPy oracle below and names the catalogued mistake that explains the outputs of every
case, if one does (float64 in, float64 out, as the notebook says). The oracle follows
Wu & He (2018), Figure 2: every method normalises each example with statistics over some of its
own values, then scales and shifts each channel with ``gamma`` and ``beta`` (shape ``(C,)``):

    Layer Norm      over all of an example's values (its channels and positions)
    Group Norm      over a group of C / G consecutive channels, and the positions
    Instance Norm   over the positions of one channel

``axis`` is the channel axis (``-1`` channels last, ``1`` channels first); axis 0 is the batch.
The oracle equals ``keras.layers.GroupNormalization`` with ``groups`` = 1, G and C
(``tests/test_checks_ps04_alternatives.py`` checks it). Part D's answers are recomputed, never typed in:
the check runs the four methods (BN in training mode) on batches of 1..N examples and sees
whose output for example 0 changes.
"""

import numpy as np

from course_lib import reference as ref
from course_lib.reference import per_feature
from coursework._core import Case, Checks, Mistake, Output, Spec, fail, judge

__all__ = ["check_layer_norm", "check_group_norm", "check_instance_norm",
           "check_first_example_outputs", "check_depends", "record", "compare", "cases",
           "group_norm_reference", "METHODS", "SPECS"]

METHODS = ("batch", "layer", "group", "instance")
_KEYS = ("layer_norm", "group_norm", "instance_norm", "first_example_outputs", "depends")


def _rng(key, hidden, index):
    return np.random.default_rng([2018, 4, _KEYS.index(key), int(hidden), index])


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


# ---------------------------------------------------------------------------------------------
# The oracle, and the catalogued mistakes as switches of one generator


def group_norm_reference(x, gamma, beta, groups, eps=1e-3, axis=-1):
    """Group Normalization in NumPy, float64: ``groups=1`` is Layer Norm, ``groups=C`` is
    Instance Norm (the statistics of each example are over a group's channels and positions)."""
    return _variant()(x, gamma, beta, groups, eps, axis)


def _variant(ddof=0, eps_mode="inside", affine="normal", layout="grouped", with_batch=False,
             positions=True):
    """Group Norm with one catalogued change.

    layout: "grouped" (right: G groups of C/G consecutive channels), "interleaved" (channel c
        in group c % G: a reshape to (C/G, G) instead of (G, C/G)), "contiguous" (x reshaped to
        (N, G, -1) as is, the formula for channels first, applied whatever the layout).
    with_batch: the statistics also run over the batch axis.
    positions: False leaves the positions (H, W, T) out of the statistics.
    """

    def outputs(x, gamma, beta, groups, eps, axis):
        x, gamma, beta = _f64(x, gamma, beta)
        ax = axis % x.ndim
        c = x.shape[ax]
        if layout == "contiguous":
            g = x.reshape(x.shape[0], groups, -1)
            axes = (0, 2) if with_batch else (2,)
            xhat = _standardise(g, axes, ddof, eps, eps_mode).reshape(x.shape)
        else:
            moved = np.moveaxis(x, ax, -1)  # (N, ..., C)
            split = (groups, c // groups) if layout == "grouped" else (c // groups, groups)
            g = moved.reshape(moved.shape[:-1] + split)
            channel_axis = g.ndim - 1 if layout == "grouped" else g.ndim - 2
            axes = ((0,) if with_batch else ()) + (
                tuple(range(1, g.ndim - 2)) if positions else ()) + (channel_axis,)
            xhat = _standardise(g, axes, ddof, eps, eps_mode).reshape(moved.shape)
            xhat = np.moveaxis(xhat, -1, ax)
        b = lambda v: per_feature(v, x.ndim, ax)  # noqa: E731
        if affine == "swapped":
            return (b(beta) * xhat + b(gamma),)
        return (b(gamma) * xhat + b(beta),)

    return outputs


def _standardise(g, axes, ddof, eps, eps_mode):
    m = int(np.prod([g.shape[a] for a in axes]))
    mean = g.mean(axis=axes, keepdims=True)
    var = ((g - mean) ** 2).sum(axis=axes, keepdims=True) / (m - ddof)
    denominator = {"inside": np.sqrt(var + eps), "missing": np.sqrt(var),
                   "outside": np.sqrt(var) + eps}[eps_mode]
    return (g - mean) / denominator


def _fixed_groups(groups, **switches):
    """The generator for a method with a fixed number of groups: 1 (LN) or "C" (IN)."""
    inner = _variant(**switches)

    def outputs(x, gamma, beta, eps, axis):
        g = np.shape(x)[axis % np.ndim(x)] if groups == "C" else groups
        return inner(x, gamma, beta, g, eps, axis)

    return outputs


def _bn_train(x, gamma, beta, eps, axis):
    x, gamma, beta = _f64(x, gamma, beta)
    return (ref.batchnorm_forward_train(x, gamma, beta, eps, axis)[0],)


# ---------------------------------------------------------------------------------------------
# Fixed inputs


def _x(rng, shape, axis, dtype):
    """Values with per-channel offsets in [-2, 3] and scales in [0.5, 2], and a per-example
    offset (so that statistics over the batch differ from an example's own); one channel is
    nearly constant (so that epsilon matters for Instance Norm), and so is one example."""
    nd = len(shape)
    c = shape[axis]
    loc = per_feature(rng.uniform(-2.0, 3.0, c), nd, axis)
    scale = rng.uniform(0.5, 2.0, c)
    scale[rng.integers(c)] = 0.05
    example = rng.normal(0.0, 1.5, (shape[0],) + (1,) * (nd - 1))
    x = loc + example + per_feature(scale, nd, axis) * rng.standard_normal(shape)
    # One quiet example, its values spread by about 0.03: there epsilon matters for Layer and
    # Group Norm too (their statistics otherwise span channels of very different offsets).
    k = rng.integers(shape[0])
    x[k] = x[k].mean() + 0.03 * (x[k] - x[k].mean()) / x[k].std()
    return x.astype(dtype)


def _gamma_beta(rng, c, dtype):
    return rng.uniform(0.5, 2.0, c).astype(dtype), rng.normal(0.0, 1.0, c).astype(dtype)


def _label(label, shape, axis, dtype, eps, groups=None):
    g = f", groups={groups}" if groups is not None else ""
    return (f"{label}: x of shape {shape}, {np.dtype(dtype).name}, axis={axis}{g}, "
            f"eps={eps:g}")


# (label, shape, axis, dtype, eps). Every dimension of a shape differs from every other.
_LN_VISIBLE = [("dense layer", (8, 5), -1, np.float32, 1e-3),
               ("images, channels last", (6, 4, 3, 5), -1, np.float32, 1e-3)]
_LN_HIDDEN = [("dense layer, float64", (10, 7), -1, np.float64, 1e-5),
              ("images, channels first", (3, 4, 5, 6), 1, np.float32, 1e-3),
              ("sequence (batch, time, features), float64", (5, 7, 3), -1, np.float64, 1e-2),
              ("images, channels first, float64", (2, 3, 4, 5), -3, np.float64, 1e-3)]
# (label, shape, axis, dtype, eps, groups): groups strictly between 1 and C, except two
# hidden cases where Group Norm is Layer Norm (groups=1) and Instance Norm (groups=C).
_GN_VISIBLE = [("dense layer", (7, 6), -1, np.float32, 1e-3, 2),
               ("images, channels last", (5, 4, 3, 6), -1, np.float32, 1e-3, 3)]
_GN_HIDDEN = [("images, channels first", (3, 8, 5, 4), 1, np.float32, 1e-3, 4),
              ("sequence (batch, time, features), float64", (5, 7, 6), -1, np.float64, 1e-5, 2),
              ("images, channels last, groups=1 (Layer Norm)", (4, 5, 3, 6), -1, np.float32,
               1e-3, 1),
              ("images, channels last, groups=C (Instance Norm)", (2, 3, 4, 6), -1, np.float64,
               1e-3, 6),
              ("images, channels first, float64", (2, 6, 4, 5), -3, np.float64, 1e-2, 3)]
# Instance Norm needs positions: no dense layer.
_IN_VISIBLE = [("images, channels last", (6, 4, 3, 5), -1, np.float32, 1e-3),
               ("sequence (batch, time, features)", (5, 7, 3), -1, np.float32, 1e-3)]
_IN_HIDDEN = [("images, channels first", (3, 4, 5, 6), 1, np.float32, 1e-3),
              ("images, channels last, float64", (4, 6, 5, 3), -1, np.float64, 1e-5),
              ("sequence, channels first (batch, features, time), float64", (6, 4, 7), 1,
               np.float64, 1e-2),
              ("images, channels first, float64", (2, 3, 4, 5), -3, np.float64, 1e-3)]


def _norm_cases(key, layouts, with_groups):
    def cases(hidden):
        out = []
        for i, layout in enumerate(layouts[1] if hidden else layouts[0]):
            label, shape, axis, dtype, eps = layout[:5]
            rng = _rng(key, hidden, i)
            x = _x(rng, shape, axis, dtype)
            gamma, beta = _gamma_beta(rng, shape[axis], dtype)
            if with_groups:
                groups = layout[5]
                out.append(Case(_label(label, shape, axis, dtype, eps, groups),
                                ("x", "gamma", "beta", "groups", "eps", "axis"),
                                (x, gamma, beta, groups, eps, axis), np.dtype(dtype), shape[axis]))
            else:
                out.append(Case(_label(label, shape, axis, dtype, eps),
                                ("x", "gamma", "beta", "eps", "axis"),
                                (x, gamma, beta, eps, axis), np.dtype(dtype), shape[axis]))
        return out

    return cases


_COMMON = (
    ("unbiased variance",
     "your variance divides by m-1 (`ddof=1`). Like BN, these methods normalise with the "
     "biased variance: divide by m, the number of values the statistics run over.",
     {"ddof": 1}),
    ("missing epsilon",
     "you divide by sqrt(var) without epsilon. Use (x - mean) / sqrt(var + eps).",
     {"eps_mode": "missing"}),
    ("epsilon outside the square root",
     "you divide by sqrt(var) + eps. Epsilon goes inside: (x - mean) / sqrt(var + eps).",
     {"eps_mode": "outside"}),
    ("gamma and beta swapped",
     "you computed beta * xhat + gamma. gamma scales and beta shifts: y = gamma * xhat + beta.",
     {"affine": "swapped"}),
)


def _catalogue(groups, extra):
    entries = extra + _COMMON
    if groups is None:
        return tuple(Mistake(label, why, _variant(**s)) for label, why, s in entries)
    return tuple(Mistake(label, why, _fixed_groups(groups, **s)) for label, why, s in entries)


_LN_MISTAKES = _catalogue(1, (
    ("statistics over the channel axis only",
     "you normalised over the channel axis alone, separately at every position (what "
     "`keras.layers.LayerNormalization(axis=-1)` does to images). Layer Norm as in the GN "
     "paper normalises over ALL of an example's values: every axis except axis 0.",
     {"positions": False}),
    ("statistics over the batch",
     "your statistics include the batch axis: that is Batch Normalization (each output then "
     "depends on the other examples). Layer Norm uses each example's own values only: reduce "
     "over every axis except axis 0.",
     {"with_batch": True}),
))

_GN_MISTAKES = _catalogue(None, (
    ("groups interleaved",
     "your groups take every G-th channel (channel c in group c % G): a reshape to (C/G, G) "
     "instead of (G, C/G). A group is C/G CONSECUTIVE channels: split the channel axis as "
     "(groups, C // groups).",
     {"layout": "interleaved"}),
    ("channels-first reshape on channels-last input",
     "you reshaped x to (N, G, -1) directly. That groups consecutive channels only when the "
     "channels come right after the batch axis (channels first, axis=1). For channels last, "
     "move the channel axis next to the batch axis first (`np.moveaxis(x, axis, 1)`), or split "
     "the channel axis itself into (G, C/G).",
     {"layout": "contiguous"}),
    ("statistics over the batch",
     "your statistics include the batch axis, so each output depends on the other examples. "
     "Group Norm uses each example's own values: reduce over the group's channels and the "
     "positions, never over axis 0.",
     {"with_batch": True}),
    ("positions left out of the statistics",
     "your statistics run over the group's channels only, separately at every position. "
     "Group Norm reduces over the group's channels AND all positions (H, W, or T).",
     {"positions": False}),
))

_IN_MISTAKES = (
    Mistake("statistics over the channels at each position",
            "you normalised over the channels, separately at every position. Instance Norm is "
            "the other way round: for each example and each channel, the statistics run over "
            "the positions (H, W, or T).",
            _fixed_groups(1, positions=False)),
    Mistake("statistics over all of an example's values",
            "you normalised over all of an example's values (that is Layer Norm). Instance Norm "
            "keeps one mean and one variance per example AND per channel: reduce over the "
            "positions only.",
            _fixed_groups(1)),
) + _catalogue("C", (
    ("statistics over the batch",
     "your statistics include the batch axis: that is Batch Normalization. Instance Norm "
     "uses each example's own values: reduce over the positions only, never over axis 0.",
     {"with_batch": True}),
))


def _ln_ref(x, gamma, beta, eps, axis):
    return _fixed_groups(1)(x, gamma, beta, eps, axis)


def _in_ref(x, gamma, beta, eps, axis):
    return _fixed_groups("C")(x, gamma, beta, eps, axis)


def _gn_ref(x, gamma, beta, groups, eps, axis):
    return _variant()(x, gamma, beta, groups, eps, axis)


def _axis_hint(case, err):
    message = err["message"]
    args = dict(zip(case.names, case.args))
    if "groups" in args and ("reshape" in message or "size" in message):
        return (f"Hint: the channel axis (C = {case.features}) splits into groups={args['groups']}"
                f" groups of C // groups = {case.features // max(args['groups'], 1)} consecutive "
                "channels: reshape it to (groups, C // groups) after moving it next to the "
                "batch axis or to the end.")
    if "broadcast" in message or "shape" in message:
        x = case.args[0]
        if args["axis"] % x.ndim != x.ndim - 1:
            return ("Hint: gamma and beta have shape (C,) and broadcast only against the LAST "
                    f"axis of x. Here axis={args['axis']}: reshape them with "
                    "`per_feature(v, x.ndim, axis)`; keep reduced axes with `keepdims=True`.")
        return ("Hint: the statistics need `keepdims=True` (or a reshape) to broadcast back "
                "against x; gamma and beta have shape (C,).")
    return None


# ---------------------------------------------------------------------------------------------
# Part D: example 0's output as the batch grows


def _norm_function(method, gamma, beta, groups, eps, axis):
    if method == "batch":
        return lambda xb: _bn_train(xb, gamma, beta, eps, axis)[0]
    g = {"layer": 1, "group": groups, "instance": len(gamma)}[method]
    return lambda xb: _variant()(xb, gamma, beta, g, eps, axis)[0]


def _drive_first(fn, method, x, gamma, beta, groups, eps, axis):
    return fn(_norm_function(method, gamma, beta, groups, eps, axis), x)


def _first_ref(method, x, gamma, beta, groups, eps, axis):
    norm = _norm_function(method, gamma, beta, groups, eps, axis)
    return (np.stack([norm(x[:b])[0] for b in range(1, len(x) + 1)]),)


def _first_variant(which):
    def outputs(method, x, gamma, beta, groups, eps, axis):
        norm = _norm_function(method, gamma, beta, groups, eps, axis)
        n = len(x)
        rows = {"last": [norm(x[:b])[-1] for b in range(1, n + 1)],
                "full": [norm(x)[0] for _ in range(n)],
                "alone": [norm(x[b - 1:b])[0] for b in range(1, n + 1)],
                "reversed": [norm(x[:b])[0] for b in range(n, 0, -1)]}[which]
        return (np.stack(rows),)

    return outputs


_FIRST_MISTAKES = (
    Mistake("output of the last example",
            "row b-1 holds the output for the LAST example of x[:b]. Keep following example 0: "
            "`norm(x[:b])[0]`.", _first_variant("last")),
    Mistake("the full batch every time",
            "every row is example 0's output for the whole of x. Row b-1 is for the batch of "
            "the first b examples, `x[:b]`.", _first_variant("full")),
    Mistake("one example at a time",
            "row b-1 is the output of example b-1 normalised alone, `norm(x[b-1:b])`. Row b-1 "
            "is example 0's output when the batch holds the first b examples: "
            "`norm(x[:b])[0]`.", _first_variant("alone")),
    Mistake("batch sizes in reverse",
            "your rows go from batch size N down to 1. Row b-1 is for batch size b: "
            "b = 1, 2, ..., N.", _first_variant("reversed")),
)

_FIRST_LAYOUTS = {
    False: [("batch", (6, 4, 3, 6), -1, np.float32, 1e-3, 3),
            ("group", (6, 4, 3, 6), -1, np.float32, 1e-3, 3)],
    True: [("layer", (5, 6, 4), -1, np.float64, 1e-3, 2),
           ("instance", (4, 6, 3, 5), 1, np.float32, 1e-3, 2),
           ("batch", (7, 3, 5), 1, np.float64, 1e-3, 1)],
}


def _first_cases(hidden):
    out = []
    for i, (method, shape, axis, dtype, eps, groups) in enumerate(_FIRST_LAYOUTS[hidden]):
        rng = _rng("first_example_outputs", hidden, i)
        x = _x(rng, shape, axis, dtype)
        gamma, beta = _gamma_beta(rng, shape[axis], dtype)
        what = {"batch": "BN in training mode", "layer": "Layer Norm",
                "group": f"Group Norm ({groups} groups)", "instance": "Instance Norm"}[method]
        out.append(Case(f"norm = {what}, x of shape {shape}, {np.dtype(dtype).name}, "
                        f"axis={axis}", ("method", "x", "gamma", "beta", "groups", "eps", "axis"),
                        (method, x, gamma, beta, groups, eps, axis), np.dtype(dtype)))
    return out


# ---------------------------------------------------------------------------------------------

SPECS = {
    "layer_norm": Spec(
        "layer_norm", "layer_norm", (Output("y"),), (0,), _ln_ref,
        _norm_cases("layer_norm", (_LN_VISIBLE, _LN_HIDDEN), False), _LN_MISTAKES,
        (("y", "y = gamma * (x - mean) / sqrt(var + eps) + beta, with one mean and one "
               "variance per example over all its values (every axis except 0), and gamma, "
               "beta broadcast along `axis`."),),
        oracle="the NumPy oracle (= keras.layers.GroupNormalization(groups=1))",
        exception_hint=_axis_hint, precision=True),
    "group_norm": Spec(
        "group_norm", "group_norm", (Output("y"),), (0,), _gn_ref,
        _norm_cases("group_norm", (_GN_VISIBLE, _GN_HIDDEN), True), _GN_MISTAKES,
        (("y", "split the channel axis into (groups, C // groups); one mean and one variance "
               "per example and group, over the group's channels and all positions."),),
        oracle="the NumPy oracle (= keras.layers.GroupNormalization)",
        exception_hint=_axis_hint, precision=True),
    "instance_norm": Spec(
        "instance_norm", "instance_norm", (Output("y"),), (0,), _in_ref,
        _norm_cases("instance_norm", (_IN_VISIBLE, _IN_HIDDEN), False), _IN_MISTAKES,
        (("y", "one mean and one variance per example and channel, over the positions only "
               "(every axis except 0 and `axis`)."),),
        oracle="the NumPy oracle (= keras.layers.GroupNormalization(groups=C))",
        exception_hint=_axis_hint, precision=True),
    "first_example_outputs": Spec(
        "first_example_outputs", "first_example_outputs", (Output("rows"),), (0,), _first_ref,
        _first_cases, _FIRST_MISTAKES,
        (("rows", "row b-1 = norm(x[:b])[0], for b = 1, ..., N, stacked: "
                  "`np.stack([...])`."),),
        oracle="the check's recomputation", driver=_drive_first, precision=True),
}


_CHECKS = Checks(__name__, SPECS)
cases, record, compare, _check = _CHECKS.cases, _CHECKS.record, _CHECKS.compare, _CHECKS.check


def check_layer_norm(fn, hidden=False):
    """Part A: ``fn(x, gamma, beta, eps, axis) -> y``."""
    __tracebackhide__ = True  # noqa: F841
    _check("layer_norm", fn, hidden)


def check_group_norm(fn, hidden=False):
    """Part B: ``fn(x, gamma, beta, groups, eps, axis) -> y``."""
    __tracebackhide__ = True  # noqa: F841
    _check("group_norm", fn, hidden)


def check_instance_norm(fn, hidden=False):
    """Part C: ``fn(x, gamma, beta, eps, axis) -> y``."""
    __tracebackhide__ = True  # noqa: F841
    _check("instance_norm", fn, hidden)


def check_first_example_outputs(fn, hidden=False):
    """Part D: ``fn(norm, x) -> (N, ...)``, row b-1 = ``norm(x[:b])[0]``."""
    __tracebackhide__ = True  # noqa: F841
    _check("first_example_outputs", fn, hidden)


# ---------------------------------------------------------------------------------------------
# Part D: which methods' outputs depend on the rest of the batch? Recomputed, not typed in.

# The input of the recomputation: channels-last images, every dimension different.
_DEPENDS_INPUT = ((6, 4, 3, 6), -1, 3, 1e-3)


def measured_changes(hidden=False):
    """For each method: the largest change of example 0's output over batch sizes 1..N,
    relative to its size. Computed here, by the check (that is the grading)."""
    shape, axis, groups, eps = _DEPENDS_INPUT
    rng = _rng("depends", False, 0)
    x = _x(rng, shape, axis, np.float64)
    gamma, beta = _gamma_beta(rng, shape[axis], np.float64)
    changes = {}
    for method in METHODS:
        (rows,) = _first_ref(method, x, gamma, beta, groups, eps, axis)
        changes[method] = float(np.max(np.abs(rows - rows[-1])) / np.max(np.abs(rows[-1])))
    return changes


_WHY = {
    "batch": "BN in training mode normalises with the statistics of the batch: example 0's "
             "output moves with every example added (with one example it is just beta).",
    "layer": "Layer Norm's statistics are over example 0's own values only: the rest of the "
             "batch never enters.",
    "group": "Group Norm's statistics are over groups of example 0's own channels and positions: "
             "the rest of the batch never enters.",
    "instance": "Instance Norm's statistics are over the positions of each of example 0's own "
                "channels: the rest of the batch never enters.",
}


def record_depends(answer, method):
    """Step 1 for Part D's answer: keep the learner's value for one method, as plain data."""
    value = answer.get(method, "missing") if isinstance(answer, dict) else answer
    if isinstance(value, np.bool_):
        value = bool(value)
    return {"check": "depends", "method": method, "answer_type": type(answer).__name__,
            "keys": sorted(map(str, answer)) if isinstance(answer, dict) else None,
            "returned": value if value is None or isinstance(value, (bool, str)) else repr(value)}


def compare_depends(rec, hidden=False):
    """Step 2: the format (visible) or the value against the recomputation (hidden)."""
    __tracebackhide__ = True  # noqa: F841
    method, value = rec["method"], rec["returned"]
    if rec["answer_type"] != "dict":
        fail(f"`answer_depends` must be a dict with the keys {list(METHODS)}; received a "
             f"{rec['answer_type']}.")
    missing = [m for m in METHODS if m not in rec["keys"]]
    if missing or value == "missing":
        fail(f"`answer_depends` has no key {missing or [method]}: it needs one entry for each of "
             f"{list(METHODS)}, e.g. `{{\"batch\": ..., \"layer\": ..., ...}}`.")
    if value is None:
        fail(f"`answer_depends[\"{method}\"]` is None: you have not answered yet. Set it to True "
             "(example 0's output depends on the rest of the batch) or False.")
    if not isinstance(value, bool):
        fail(f"`answer_depends[\"{method}\"]` must be True or False; received {value}.")
    if hidden:
        change = measured_changes()[method]
        truth = change > 1e-9
        if value != truth:
            fail(f"`answer_depends[\"{method}\"]` = {value} is not what the grader measures: "
                 f"running the method on batches of 1..N examples, example 0's output changes "
                 f"by up to {change:.3g} (relative to its size), so it "
                 f"{'DOES' if truth else 'does NOT'} depend on the rest of the batch. "
                 f"{_WHY[method]}")


def check_depends(answer, method, hidden=False):
    """Part D: ``check_depends(answer_depends, "group")``; the hidden check grades the value."""
    __tracebackhide__ = True  # noqa: F841
    judge(__name__, "compare_depends", record_depends(answer, method), hidden)
    print(f"answer_depends[{method!r}] = {answer[method]!r}: " +
          ("right." if hidden else "a valid answer (it is graded when you submit)."))
