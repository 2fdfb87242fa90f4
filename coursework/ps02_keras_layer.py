"""Checks for problem set 2, "A Keras BatchNormalization layer".

The learner writes ``build`` and ``call`` of a ``keras.layers.Layer`` subclass (``BatchNorm``
in the notebook). One check per graded part:

>>> from coursework import ps02_keras_layer as checks
>>> checks.check_build(BatchNorm)                     # doctest: +SKIP
>>> checks.check_training(BatchNorm, hidden=True)     # doctest: +SKIP

Each check is two steps (see ``coursework._core``). ``record(key, cls, hidden)`` drives
the learner's class through a fixed scenario on seeded inputs and keeps plain data only: the
layer's outputs and variables as NumPy arrays (or the exception). ``compare(key, records)``
runs the same scenario on ``keras.layers.BatchNormalization`` (the oracle), compares, and names
the catalogued mistake that explains the layer's outputs on every case (computed by a NumPy
model of the layer with that mistake), if one does. A float64 layer must give float64 (the
notebook: "let the layer's dtype decide the precision").

The parts are independent. Only ``check_build`` uses the learner's ``build``: the other checks
run the learner's ``build`` (so that ``call`` finds whatever ``build`` prepared), then give the
layer the check's own ``gamma``, ``beta``, ``moving_mean`` and ``moving_variance`` (creating
them if ``build`` failed or made them with the wrong shape), set to non-trivial values so that,
for example, swapping gamma and beta shows.

Parts B to E use inputs whose features are on the last axis: a dense layer (N, C) and
channels-last images (N, H, W, C), visible; float64, sequences (N, T, C) and other momenta and
epsilons, hidden. Part F runs training, the moving statistics and inference on channels-first
inputs (``axis=1``: images (N, C, H, W) and sequences (N, C, T), visible; ``axis=-3``, float64
and volumes (N, C, D, H, W), hidden). It grades the handling of the axis, not the formulas:
it passes when the layer agrees with Keras there, or gives on channels-first data exactly what
it gives on the same data channels last (so a formula mistake, graded in B to E, costs nothing
more in F). ``check_build`` uses all layouts. Every dimension of a shape differs from every
other.
"""

import warnings

import numpy as np

from course_lib.reference import per_feature
from coursework._core import Case, Checks, Mistake, Output, Problem, Spec, close
from coursework._core import compare as _compare
from coursework._core import record as _record

__all__ = ["check_build", "check_training", "check_moving_statistics", "check_inference",
           "check_frozen", "check_channels_first", "record", "compare", "cases", "SPECS", "WEIGHTS", "NumpyBatchNorm"]

WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")
_TRAINABLE = {"gamma": True, "beta": True, "moving_mean": False, "moving_variance": False}
_INITIAL = {"gamma": 1.0, "beta": 0.0, "moving_mean": 0.0, "moving_variance": 1.0}
ORACLE = "keras.layers.BatchNormalization"

# ---------------------------------------------------------------------------------------------
# Fixed inputs

# (label, shape, axis, dtype, momentum, epsilon). Momentum 0.5 is never used: there the
# reversed convention gives the same answer.
# Parts B to E: the feature axis is the last one. Part F: it is not (channels first).
_VISIBLE = [
    ("dense layer", (8, 5), -1, np.float32, 0.9, 1e-3),
    ("images, channels last", (6, 4, 3, 5), -1, np.float32, 0.8, 1e-3),
]
_HIDDEN = [
    ("dense layer, float64", (10, 7), -1, np.float64, 0.99, 1e-5),
    ("sequence (batch, time, features)", (5, 7, 3), -1, np.float32, 0.8, 1e-2),
    ("images, channels last, float64", (3, 5, 4, 6), -1, np.float64, 0.6, 1e-3),
    ("images, channels last", (2, 6, 5, 4), -1, np.float32, 0.75, 1e-3),
]
_CF_VISIBLE = [
    ("images, channels first", (4, 5, 3, 6), 1, np.float32, 0.7, 1e-3),
    ("sequence, channels first (batch, features, time)", (6, 4, 7), 1, np.float32, 0.8, 1e-3),
]
_CF_HIDDEN = [
    ("images, channels first", (3, 4, 5, 6), -3, np.float32, 0.9, 1e-3),
    ("images, channels first, float64", (2, 3, 4, 5), 1, np.float64, 0.75, 1e-3),
    ("volumes, channels first (batch, channels, depth, height, width)", (2, 3, 4, 5, 6), 1,
     np.float32, 0.6, 1e-2),
]
_KEYS = ("build", "training", "moving_statistics", "inference", "frozen", "channels_first")
STEPS = 3  # training steps of check_moving_statistics


def _rng(key, hidden, index):
    return np.random.default_rng([2015, 2, _KEYS.index(key), int(hidden), index])


def _describe(label, shape, axis, dtype, momentum, eps, extra=""):
    return (f"{label}: x of shape {shape}, {np.dtype(dtype).name}, axis={axis}, "
            f"momentum={momentum:g}, epsilon={eps:g}{extra}")


def _x(rng, shape, axis, dtype):
    """Per-feature means in [-2, 3], standard deviations in [0.5, 2], one of them 0.1 (so that
    epsilon matters) -- as in problem set 1."""
    c = shape[axis]
    ndim = len(shape)
    loc = rng.uniform(-2.0, 3.0, c)
    scale = rng.uniform(0.5, 2.0, c)
    scale[rng.integers(c)] = 0.1
    x = per_feature(loc, ndim, axis) + per_feature(scale, ndim, axis) * rng.standard_normal(shape)
    return x.astype(dtype)


def _weights(rng, c, dtype, small_variance=True):
    gamma = rng.uniform(0.5, 2.0, c)
    beta = rng.normal(0.0, 1.0, c)
    moving_mean = rng.uniform(-1.0, 2.5, c)
    moving_var = rng.uniform(0.5, 3.0, c)
    if small_variance:
        moving_var[rng.integers(c)] = 0.01  # epsilon matters at inference too
    return tuple(v.astype(dtype) for v in (gamma, beta, moving_mean, moving_var))


def _layouts(hidden, channels_first=False):
    if channels_first:
        return _CF_HIDDEN if hidden else _CF_VISIBLE
    return _HIDDEN if hidden else _VISIBLE


_LAYER_ARGS = ("axis", "momentum", "epsilon")


def _build_cases(hidden):
    out = []
    # build() is checked on every layout, channels first included: it sizes the weights.
    layouts = _layouts(hidden)[:2] + _layouts(hidden, channels_first=True)[:1] + \
        (_layouts(hidden)[2:] + _layouts(hidden, channels_first=True)[1:] if hidden else [])
    for label, shape, axis, dtype, momentum, eps in layouts:
        out.append(Case(_describe(label, shape, axis, dtype, momentum, eps,
                                  "; the layer is built, not called"),
                        ("input_shape", "dtype") + _LAYER_ARGS,
                        (shape, np.dtype(dtype).name, axis, momentum, eps), np.dtype(dtype),
                        shape[axis]))
    return out


def _call_cases(key, hidden, extra="", steps=0, channels_first=False):
    out = []
    for i, (label, shape, axis, dtype, momentum, eps) in enumerate(
            _layouts(hidden, channels_first)):
        rng = _rng(key, hidden, i)
        x = (np.stack([_x(rng, shape, axis, dtype) for _ in range(steps)]) if steps
             else _x(rng, shape, axis, dtype))
        weights = _weights(rng, shape[axis], dtype)
        out.append(Case(_describe(label, shape, axis, dtype, momentum, eps, extra),
                        ("x",) + WEIGHTS + _LAYER_ARGS, (x,) + weights + (axis, momentum, eps),
                        np.dtype(dtype), shape[axis]))
    return out


def _training_cases(hidden):
    return _call_cases("training", hidden, "; gamma, beta and the moving statistics set first")


def _moving_cases(hidden):
    return _call_cases("moving_statistics", hidden,
                       f"; {STEPS} training steps on {STEPS} different batches, from given "
                       "moving statistics", steps=STEPS)


def _inference_cases(hidden):
    return _call_cases("inference", hidden, "; given gamma, beta and moving statistics")


def _frozen_cases(hidden):
    return _call_cases("frozen", hidden, "; layer.trainable = False, then called with "
                                         "training=True")


def _channels_first_cases(hidden):
    return _call_cases("channels_first", hidden, "; two training steps, then inference on a "
                                                 "third batch", steps=3, channels_first=True)


# ---------------------------------------------------------------------------------------------
# Drivers: the same scenario runs the learner's class (record) and Keras's layer (compare).


def _numpy(value):
    if hasattr(value, "numpy"):  # a TensorFlow tensor or a Keras variable
        value = value.numpy()
    return np.array(value)


def _construct(cls, dtype, axis, momentum, epsilon):
    import keras

    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        raise Problem(f"is {type(cls).__name__}, not a subclass of keras.layers.Layer: pass the "
                      "class itself, `check(BatchNorm)`.")
    if issubclass(cls, keras.layers.BatchNormalization) and _LEARNER.get("strict", True):
        raise Problem("is keras.layers.BatchNormalization (or a subclass of it). Write the layer "
                      "yourself, as a subclass of keras.layers.Layer: the problem set grades "
                      "your implementation.")
    return cls(axis=axis, momentum=momentum, epsilon=epsilon, dtype=dtype)


def _weight(layer, name):
    import keras

    value = getattr(layer, name, None)
    if value is None:
        raise Problem(f"has no `self.{name}` after build(): create it there with "
                      f"`self.{name} = self.add_weight(...)`.")
    if not isinstance(value, keras.Variable):
        raise Problem(f"has a `self.{name}` of type {type(value).__name__}, not a variable: "
                      f"create it with `self.{name} = self.add_weight(...)`, so that Keras can "
                      "train (or save) it.")
    return value


def _drive_build(cls, input_shape, dtype, axis, momentum, epsilon):
    layer = _construct(cls, dtype, axis, momentum, epsilon)
    layer.build(tuple(input_shape))
    weights = [_weight(layer, name) for name in WEIGHTS]
    flags = np.array([float(bool(w.trainable)) for w in weights])
    return tuple(_numpy(w) for w in weights) + (flags,)


def _probe(cls):
    """``cls`` with a build that runs the learner's, then makes sure the four weights exist."""
    import keras

    class Probe(cls):
        def build(self, input_shape):
            try:
                super().build(input_shape)  # whatever else call() needs from build()
            except Exception:  # noqa: BLE001 - check_build reports build's own problems
                pass
            c = input_shape[self.axis]
            for name in WEIGHTS:
                w = getattr(self, name, None)
                if not (isinstance(w, keras.Variable) and tuple(w.shape) == (c,)):
                    setattr(self, name, self.add_weight(
                        shape=(c,), name=name, initializer="zeros",
                        trainable=_TRAINABLE[name]))

    Probe.__name__, Probe.__qualname__ = cls.__name__, cls.__qualname__
    Probe.__module__ = cls.__module__
    return Probe


def _prepared(cls, x, weights, axis, momentum, epsilon):
    if not isinstance(cls, type):
        _construct(cls, None, axis, momentum, epsilon)  # raises the "not a class" problem
    layer = _construct(_probe(cls), np.dtype(x.dtype).name, axis, momentum, epsilon)
    layer.build(tuple(x.shape))
    for name, value in zip(WEIGHTS, weights):
        variable = getattr(layer, name)
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return layer


def _output(y, what):
    if y is None:
        raise Problem(f"returned None from {what}: did you forget `return outputs` at the end "
                      "of call()?")
    return _numpy(y)


def _state(layer):
    return _numpy(layer.moving_mean), _numpy(layer.moving_variance)


def _drive_training(cls, x, gamma, beta, moving_mean, moving_variance, axis, momentum, epsilon):
    import keras

    weights = (gamma, beta, moving_mean, moving_variance)
    layer = _prepared(cls, x, weights, axis, momentum, epsilon)
    y = _output(layer(x, training=True), "layer(x, training=True)")
    # The same call on a symbolic input, as inside a keras.Model: only keras.ops can be traced.
    # (A symbolic call computes shapes only; it changes no variable.)
    symbolic = _prepared(cls, x, weights, axis, momentum, epsilon)
    try:
        out = symbolic(keras.Input(batch_shape=x.shape, dtype=np.dtype(x.dtype).name),
                       training=True)
    except Exception as exc:  # noqa: BLE001 - reported to the learner
        first = _plain(str(exc)).strip().splitlines()
        detail = next((line for line in reversed(first) if line.strip()), type(exc).__name__)
        raise Problem("works on arrays but not on a symbolic input, as inside a keras.Model "
                      "(`keras.Model(inputs, BatchNorm()(inputs))`). call() must use "
                      "keras.ops only -- no NumPy, math or Python `float()` on tensors -- so "
                      f"that Keras can trace it. The error was: {type(exc).__name__}: "
                      f"{detail[:300]}") from None
    if tuple(out.shape) != tuple(x.shape):
        raise Problem(f"returns a tensor of shape {tuple(out.shape)} for a symbolic input of "
                      f"shape {tuple(x.shape)}: the output must have the shape of the input.")
    return (y,)


def _plain(text):
    """Text without the terminal colour codes Keras puts in its messages."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _drive_moving(cls, xs, gamma, beta, moving_mean, moving_variance, axis, momentum, epsilon):
    layer = _prepared(cls, xs[0], (gamma, beta, moving_mean, moving_variance), axis, momentum,
                      epsilon)
    for x in xs:
        _output(layer(x, training=True), "layer(x, training=True)")
    return _state(layer)


def _drive_inference(cls, x, gamma, beta, moving_mean, moving_variance, axis, momentum, epsilon):
    layer = _prepared(cls, x, (gamma, beta, moving_mean, moving_variance), axis, momentum, epsilon)
    y_false = _output(layer(x, training=False), "layer(x, training=False)")
    y_default = _output(layer(x), "layer(x)")
    return (y_false, y_default) + _state(layer)


def _drive_frozen(cls, x, gamma, beta, moving_mean, moving_variance, axis, momentum, epsilon):
    layer = _prepared(cls, x, (gamma, beta, moving_mean, moving_variance), axis, momentum, epsilon)
    layer.trainable = False
    y = _output(layer(x, training=True), "layer(x, training=True) with trainable=False")
    return (y,) + _state(layer)


_LEARNER = {"strict": True}  # False while the oracle itself is driven


def _run_channels_first(cls, xs, weights, axis, momentum, epsilon):
    layer = _prepared(cls, xs[0], weights, axis, momentum, epsilon)
    y_train = _output(layer(xs[0], training=True), "layer(x, training=True)")
    _output(layer(xs[1], training=True), "layer(x, training=True)")
    moving_mean, moving_variance = _state(layer)
    y_inference = _output(layer(xs[2], training=False), "layer(x, training=False)")
    return y_train, moving_mean, moving_variance, y_inference


def _drive_channels_first_oracle(cls, xs, gamma, beta, moving_mean, moving_variance, axis,
                                 momentum, epsilon):
    return _run_channels_first(cls, xs, (gamma, beta, moving_mean, moving_variance), axis,
                               momentum, epsilon)


def _drive_channels_first(cls, xs, gamma, beta, moving_mean, moving_variance, axis, momentum,
                          epsilon):
    """The scenario on the channels-first input, then on the same data with the feature axis
    moved last (and the results moved back): 8 arrays."""
    weights = (gamma, beta, moving_mean, moving_variance)
    first = _run_channels_first(cls, xs, weights, axis, momentum, epsilon)
    ax = axis % (xs.ndim - 1) + 1  # in the stack of batches
    last = _run_channels_first(cls, np.ascontiguousarray(np.moveaxis(xs, ax, -1)), weights, -1,
                               momentum, epsilon)
    back = lambda y: np.moveaxis(y, -1, ax - 1)  # noqa: E731
    return first + (back(last[0]), last[1], last[2], back(last[3]))


def _oracle(driver):
    def reference(*args):
        import keras

        _LEARNER["strict"] = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outputs = driver(keras.layers.BatchNormalization, *args)
        finally:
            _LEARNER["strict"] = True
        return tuple(np.asarray(v, dtype=np.float64) for v in outputs)

    return reference


# ---------------------------------------------------------------------------------------------
# The catalogued mistakes: a NumPy model of the layer, with one mistake switched on.


class NumpyBatchNorm:
    """Keras's BatchNormalization in NumPy (float64), with switches for catalogued mistakes.

    With no switch it is the right layer (tests/test_checks_ps02_keras_layer.py compares it with Keras).

    Switches:
        ddof: 1 for the unbiased variance (m - 1) in training.
        moving_ddof: the variance fed to the moving average (default: the same as ``ddof``);
            1 is PyTorch's convention.
        eps: "inside" sqrt(var + eps), "missing" sqrt(var), "outside" sqrt(var) + eps.
        affine: "normal" gamma * xhat + beta, "swapped" beta * xhat + gamma.
        axes: reduction axes: "others" (right), "feature" (the feature axis: Layer Norm),
            "batch" (axis 0 only), "all", "last" (everything but the LAST axis, whatever
            ``axis`` says; it fails on channels first, as the learner's code does),
            "reshape" (x reshaped to (-1, C) without moving the feature axis
            last first: right for channels last, scrambled for channels first).
        ema: "keras" moving*m + batch*(1-m), "reversed" moving*(1-m) + batch*m, "none" (never
            updated), "replace" (moving = batch), "no_complement" moving*m + batch.
        infer_update: None, "before" or "after": the moving statistics are also updated with
            the batch statistics at inference, before or after they are used.
        infer_stats: "moving" (right) or "batch" (batch statistics at inference).
        none_trains: ``training=None`` treated as training (``if training is not False``).
        frozen: how ``trainable = False`` is treated: "respect" (inference behaviour),
            "ignore" (trains anyway), "batch_only" (batch statistics, no update),
            "update_only" (moving statistics used, but updated).
    """

    def __init__(self, axis, momentum, epsilon, weights, *, ddof=0, moving_ddof=None,
                 eps="inside", affine="normal", axes="others", ema="keras", infer_update=None,
                 infer_stats="moving", none_trains=False, frozen="respect"):
        self.axis, self.momentum, self.epsilon = axis, momentum, epsilon
        self.gamma, self.beta, self.moving_mean, self.moving_variance = (
            np.asarray(w, dtype=np.float64) for w in weights)
        self.ddof, self.moving_ddof = ddof, ddof if moving_ddof is None else moving_ddof
        self.eps, self.affine, self.axes, self.ema = eps, affine, axes, ema
        self.infer_update, self.infer_stats = infer_update, infer_stats
        self.none_trains, self.frozen = none_trains, frozen
        self.trainable = True

    # -- pieces
    def _flat(self, x):
        """The view the statistics are computed on, and how to undo it."""
        nd, ax = x.ndim, self.axis % x.ndim
        if self.axes == "reshape":
            c = x.shape[ax]
            return x.reshape(-1, c), 1, lambda y: y.reshape(x.shape)
        if self.axes == "last":
            return x, nd - 1, lambda y: y
        return x, ax, lambda y: y

    def _reduce(self, v, feature):
        nd = v.ndim
        if self.axes in ("others", "reshape", "last"):
            return tuple(a for a in range(nd) if a != feature % nd)
        return {"feature": (feature % nd,), "batch": (0,), "all": tuple(range(nd))}[self.axes]

    def _moments(self, v, feature):
        axes = self._reduce(v, feature)
        m = int(np.prod([v.shape[a] for a in axes]))
        mean = v.mean(axis=axes, keepdims=True)
        ss = ((v - mean) ** 2).sum(axis=axes, keepdims=True)
        return mean, ss / (m - self.ddof), ss / (m - self.moving_ddof)

    def _normalise(self, v, feature, mean, var):
        b = lambda w: per_feature(w, v.ndim, feature)  # noqa: E731
        denom = {"inside": np.sqrt(var + self.epsilon), "missing": np.sqrt(var),
                 "outside": np.sqrt(var) + self.epsilon}[self.eps]
        xhat = (v - mean) / denom
        if self.affine == "swapped":
            return b(self.beta) * xhat + b(self.gamma)
        return b(self.gamma) * xhat + b(self.beta)

    def _update(self, mean, var):
        c = self.gamma.shape[0]
        k = self.momentum
        new = []
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, var)):
            batch = np.squeeze(batch)
            value = {"keras": lambda: moving * k + batch * (1 - k),
                     "reversed": lambda: moving * (1 - k) + batch * k,
                     "none": lambda: moving,
                     "replace": lambda: batch + 0 * moving,
                     "no_complement": lambda: moving * k + batch}[self.ema]()
            if np.shape(value) != (c,):
                raise ValueError(f"a moving statistic of shape {np.shape(value)} for {c} features")
            new.append(value)
        self.moving_mean, self.moving_variance = new

    # -- the layer
    def __call__(self, x, training=None):
        x = np.asarray(x, dtype=np.float64)
        train = (training is not False) if self.none_trains else bool(training)
        frozen = not self.trainable
        if train:
            use_batch = not frozen or self.frozen in ("ignore", "batch_only")
            update = not frozen or self.frozen in ("ignore", "update_only")
        else:
            use_batch = self.infer_stats == "batch"
            update = self.infer_update is not None
        v, feature, back = self._flat(x)
        mean, var, moving_var = self._moments(v, feature)
        if update and not train and self.infer_update == "before":
            self._update(mean, moving_var)
            update = False
        if use_batch:
            stats = mean, var
        else:
            stats = (per_feature(self.moving_mean, v.ndim, feature),
                     per_feature(self.moving_variance, v.ndim, feature))
        y = back(self._normalise(v, feature, *stats))
        if update:
            self._update(mean, moving_var)
        return y


def _model_scenario(driver_name, **switches):
    """Outputs of a scenario, run on the NumPy model with the given mistake switched on."""

    def outputs(x, gamma, beta, moving_mean, moving_variance, axis, momentum, epsilon):
        weights = (gamma, beta, moving_mean, moving_variance)
        layer = NumpyBatchNorm(axis, momentum, epsilon, weights, **switches)
        if driver_name == "training":
            return (layer(x, training=True),)
        if driver_name == "moving_statistics":
            for batch in x:
                layer(batch, training=True)
            return layer.moving_mean, layer.moving_variance
        if driver_name == "inference":
            y_false = layer(x, training=False)
            y_default = layer(x)
            return y_false, y_default, layer.moving_mean, layer.moving_variance
        if driver_name == "channels_first":
            y_train = layer(x[0], training=True)
            layer(x[1], training=True)
            state = layer.moving_mean, layer.moving_variance
            return (y_train,) + state + (layer(x[2], training=False),)
        layer.trainable = False
        y = layer(x, training=True)
        return y, layer.moving_mean, layer.moving_variance

    return outputs


_EXPLAIN = {
    "unbiased variance": (
        "your training-mode variance divides by m-1 (the unbiased estimate: `ddof=1`, or "
        "dividing by `count - 1`). BN normalises with the biased batch variance: divide by m, "
        "as `keras.ops.var` and `keras.ops.moments` do."),
    "missing epsilon": (
        "you divide by sqrt(var) without epsilon. Add `self.epsilon` to the variance inside "
        "the square root: (x - mean) / sqrt(var + epsilon)."),
    "epsilon outside the square root": (
        "you divide by sqrt(var) + epsilon. Epsilon goes inside the square root: "
        "(x - mean) / sqrt(var + epsilon)."),
    "gamma and beta swapped": (
        "you computed beta * xhat + gamma. gamma scales and beta shifts: "
        "y = gamma * xhat + beta."),
    "wrong reduction axis: all axes": (
        "you reduced over every axis, giving one mean for the whole batch. BN keeps one mean "
        "and one variance per feature: reduce over every axis except `self.axis`."),
    "channels-first input reshaped without a transpose": (
        "you reshaped x to (-1, C) to put the features in the last column, but with "
        "channels first (axis=1) the values of one channel are not contiguous in memory: the "
        "reshape mixes channels and positions. Move the feature axis last first "
        "(`keras.ops.moveaxis(x, self.axis, -1)`) and back afterwards, or reduce over the "
        "right axes without reshaping."),
    "momentum reversed": (
        "you computed moving * (1 - momentum) + batch * momentum (PyTorch's convention, where "
        "momentum weights the NEW value). In Keras momentum weights the OLD moving value: "
        "moving * momentum + batch * (1 - momentum)."),
    "moving statistics not updated": (
        "the moving statistics did not change during training. In call(), when training, "
        "assign the new values: `self.moving_mean.assign(self.moving_mean * self.momentum + "
        "mean * (1 - self.momentum))`, and the same for the variance."),
    "moving statistics replaced by the batch statistics": (
        "after each step your moving statistics equal the last batch's statistics, which "
        "forgets the history: blend them in, moving * momentum + batch * (1 - momentum)."),
    "(1 - momentum) factor missing": (
        "you added the whole batch statistic: moving * momentum + batch. Weight it by "
        "(1 - momentum) so the weights sum to one."),
    "unbiased variance in the moving average": (
        "your moving variance averages the unbiased batch variance, which divides by m-1 "
        "(PyTorch's convention for its running variance, or an unbiased variance in training). "
        "Keras averages the biased variance (divide by m), the same one it normalises with."),
    "moving statistics updated at inference": (
        "the moving statistics changed during a call with training=False (or without "
        "`training`). Update them only when training: `if training: ... assign ...`. At "
        "inference the layer must not learn from the batch it is given."),
    "batch statistics at inference": (
        "with training=False you normalised with the statistics of the batch. At inference BN "
        "uses the moving statistics, so that an example's output does not depend on the rest "
        "of the batch."),
    "training=None treated as training": (
        "`layer(x)` (training not given, so training=None) behaved as training. Keras layers "
        "run in inference mode unless told `training=True`: test `if training:`, not "
        "`if training is not False:`."),
    "moving mean and variance swapped": (
        "at inference you subtracted `moving_variance` and divided by sqrt(moving_mean + "
        "epsilon). Subtract the mean; divide by the square root of the variance plus epsilon."),
    "trainable=False ignored": (
        "with `layer.trainable = False` your layer still normalised with batch statistics and "
        "updated the moving statistics. As in Keras, a frozen BN layer runs in inference mode "
        "even when called with training=True: use `if training and self.trainable:`."),
    "trainable=False: batch statistics used": (
        "with `layer.trainable = False` and training=True your layer normalised with the "
        "batch statistics. A frozen BN layer runs in inference mode (the moving statistics): "
        "use `training and self.trainable` for the choice of statistics too."),
    "trainable=False: moving statistics updated": (
        "with `layer.trainable = False` your layer still updated the moving statistics. A "
        "frozen layer changes nothing: update only `if training and self.trainable`."),
}

# Reducing over the feature axis, or over the batch axis only, gives batch statistics of the
# wrong shape, which no moving statistic of shape (C,) accepts: the learner's layer raises (and
# the exception's hint explains); so does the model. Only these give outputs to match.
_AXIS_MISTAKES = (("wrong reduction axis: all axes", {"axes": "all"}),)
_CHANNELS_FIRST_MISTAKES = (
    ("channels-first input reshaped without a transpose", {"axes": "reshape"}),
) + _AXIS_MISTAKES


def _mistakes(scenario, catalogue):
    return tuple(Mistake(label, _EXPLAIN[label], _model_scenario(scenario, **switches))
                 for label, switches in catalogue)


_TRAINING_MISTAKES = _mistakes("training", (
    ("unbiased variance", {"ddof": 1}),
    ("missing epsilon", {"eps": "missing"}),
    ("epsilon outside the square root", {"eps": "outside"}),
    ("gamma and beta swapped", {"affine": "swapped"}),
) + _AXIS_MISTAKES)

_MOVING_MISTAKES = _mistakes("moving_statistics", (
    ("momentum reversed", {"ema": "reversed"}),
    ("moving statistics not updated", {"ema": "none"}),
    ("moving statistics replaced by the batch statistics", {"ema": "replace"}),
    ("(1 - momentum) factor missing", {"ema": "no_complement"}),
    ("unbiased variance in the moving average", {"moving_ddof": 1}),
) + _AXIS_MISTAKES)

_INFERENCE_MISTAKES = _mistakes("inference", (
    ("moving statistics updated at inference", {"infer_update": "before"}),
    ("moving statistics updated at inference", {"infer_update": "after"}),
    ("batch statistics at inference", {"infer_stats": "batch"}),
    ("training=None treated as training", {"none_trains": True}),
    ("missing epsilon", {"eps": "missing"}),
    ("epsilon outside the square root", {"eps": "outside"}),
    ("gamma and beta swapped", {"affine": "swapped"}),
))
_INFERENCE_MISTAKES += (Mistake(
    "moving mean and variance swapped", _EXPLAIN["moving mean and variance swapped"],
    lambda x, g, b, mm, mv, axis, k, eps: _model_scenario("inference")(x, g, b, mv, mm, axis,
                                                                        k, eps)[:2] + (mm, mv)),)

_FROZEN_MISTAKES = _mistakes("frozen", (
    ("trainable=False ignored", {"frozen": "ignore"}),
    ("trainable=False: batch statistics used", {"frozen": "batch_only"}),
    ("trainable=False: moving statistics updated", {"frozen": "update_only"}),
    ("missing epsilon", {"eps": "missing"}),
    ("epsilon outside the square root", {"eps": "outside"}),
    ("gamma and beta swapped", {"affine": "swapped"}),
))


_CF_MISTAKES = _mistakes("channels_first", _CHANNELS_FIRST_MISTAKES)


def _build_mistake(values=None, flags=(1.0, 1.0, 0.0, 0.0), size="axis"):
    def outputs(input_shape, dtype, axis, momentum, epsilon):
        c = input_shape[axis] if size == "axis" else input_shape[-1]
        init = dict(_INITIAL, **(values or {}))
        return tuple(np.full(c, init[name], dtype=np.float64) for name in WEIGHTS) + \
            (np.array(flags, dtype=np.float64),)

    return outputs


_BUILD_MISTAKES = (
    Mistake("moving statistics trainable",
            "`moving_mean` and `moving_variance` are trainable. They are not learned by "
            "gradient descent but updated in call(): create them with `trainable=False`.",
            _build_mistake(flags=(1.0, 1.0, 1.0, 1.0))),
    Mistake("gamma and beta not trainable",
            "`gamma` and `beta` are the layer's learned parameters: create them with "
            "`trainable=True` (the default of add_weight).",
            _build_mistake(flags=(0.0, 0.0, 0.0, 0.0))),
    Mistake("gamma and beta initialisers swapped",
            "gamma starts at 1 (`initializer=\"ones\"`) and beta at 0 (`\"zeros\"`), so that a "
            "new layer outputs the normalised input unchanged.",
            _build_mistake(values={"gamma": 0.0, "beta": 1.0})),
    Mistake("moving variance initialised to zero",
            "`moving_variance` starts at 1 (`initializer=\"ones\"`), as in Keras: a layer used "
            "before any training then divides by sqrt(1 + epsilon), not by sqrt(epsilon).",
            _build_mistake(values={"moving_variance": 0.0})),
    Mistake("moving mean initialised to one",
            "`moving_mean` starts at 0 (`initializer=\"zeros\"`) and `moving_variance` at 1.",
            _build_mistake(values={"moving_mean": 1.0})),
    Mistake("weights sized by the last axis",
            "your weights have one value per entry of the LAST axis, `input_shape[-1]`. The "
            "features are along `self.axis`: use `input_shape[self.axis]` (here axis=1, "
            "channels first).",
            _build_mistake(size="last")),
)


def _exception_hint(case, err):
    message = err["message"]
    args = dict(zip(case.names, case.args))
    axis = args.get("axis")
    shape = args.get("input_shape") or np.shape(case.args[0])
    if case.features and axis is not None and shape[axis] != case.features:
        shape = shape[1:]  # a stack of batches (check_moving_statistics)
    if axis is None:
        return ""
    words = ("shape", "broadcast", "Incompatible", "incompatible", "dimension", "size")
    if any(w in message for w in words):
        if axis % len(shape) != len(shape) - 1:
            return ("Hint: here the features are along axis=1, not the last axis. gamma, beta "
                    "and the statistics have shape (C,) and broadcast only against the LAST axis: "
                    "reshape them to [1, C, 1, ...] (`keras.ops.reshape(v, shape)`) or keep the "
                    "reduced axes (`keepdims=True`); reduce over every axis except `self.axis`.")
        return ("Hint: gamma, beta and the moving statistics have shape (C,), C = "
                "input_shape[self.axis]; the batch statistics must have that shape too when "
                "they are assigned to the moving ones. BN has one mean and one variance per "
                "feature: reduce over every axis except `self.axis` (for images: the batch AND "
                "the spatial axes, not axis 0 alone; not the feature axis, which would be "
                "Layer Normalization), e.g. `axes = [a for a in range(len(inputs.shape)) "
                "if a != self.axis % len(inputs.shape)]`.")
    return ""


SPECS = {
    "build": Spec(
        "build", "BatchNorm",
        tuple(Output(name, per_feature=True) for name in WEIGHTS)
        + (Output("trainable flags of (gamma, beta, moving_mean, moving_variance)"),),
        (0, 1, 2, 3, 4), _oracle(_drive_build), _build_cases, _BUILD_MISTAKES,
        (("gamma", "self.gamma = self.add_weight(shape=(C,), initializer=\"ones\", "
                   "trainable=True, name=\"gamma\")"),),
        oracle=ORACLE, features="C = input_shape[axis]", driver=_drive_build,
        exception_hint=_exception_hint, verb="gave",
        precision=True),
    "training": Spec(
        "training", "BatchNorm", (Output("layer(x, training=True)"),), (0,),
        _oracle(_drive_training), _training_cases, _TRAINING_MISTAKES,
        (("layer(x, training=True)", "y = gamma * (x - mean) / sqrt(var + epsilon) + beta, with "
          "the batch mean and (biased) variance over every axis except `self.axis`, and every "
          "per-feature array broadcast along `self.axis`."),),
        oracle=ORACLE, features="C = x.shape[axis]", driver=_drive_training,
        exception_hint=_exception_hint, precision=True),
    "moving_statistics": Spec(
        "moving_statistics", "BatchNorm",
        (Output("moving_mean", per_feature=True), Output("moving_variance", per_feature=True)),
        (0, 1), _oracle(_drive_moving), _moving_cases, _MOVING_MISTAKES,
        (("moving_mean", "after each training call: moving = moving * momentum + batch * "
                         "(1 - momentum), with the batch's mean and biased variance."),
         ("moving_variance", "the same update with the biased batch variance.")),
        oracle=ORACLE, features="C = x.shape[axis]", driver=_drive_moving,
        exception_hint=_exception_hint, verb="gave",
        precision=True),
    "inference": Spec(
        "inference", "BatchNorm",
        (Output("layer(x, training=False)"), Output("layer(x)"),
         Output("moving_mean after the two inference calls", per_feature=True),
         Output("moving_variance after the two inference calls", per_feature=True)),
        (2, 3, 0, 1), _oracle(_drive_inference), _inference_cases, _INFERENCE_MISTAKES,
        (("layer(x, training=False)", "y = gamma * (x - moving_mean) / sqrt(moving_variance + "
          "epsilon) + beta; nothing is updated."),),
        oracle=ORACLE, features="C = x.shape[axis]", driver=_drive_inference,
        exception_hint=_exception_hint, verb="gave",
        precision=True),
    "frozen": Spec(
        "frozen", "BatchNorm",
        (Output("layer(x, training=True) with trainable=False"),
         Output("moving_mean after the call", per_feature=True),
         Output("moving_variance after the call", per_feature=True)),
        (1, 2, 0), _oracle(_drive_frozen), _frozen_cases, _FROZEN_MISTAKES,
        (("layer(x, training=True) with trainable=False",
          "a frozen layer (trainable=False) behaves as at inference, whatever `training` says."),),
        oracle=ORACLE, features="C = x.shape[axis]", driver=_drive_frozen,
        exception_hint=_exception_hint, verb="gave",
        precision=True),
    "channels_first": Spec(
        "channels_first", "BatchNorm",
        (Output("layer(x, training=True)"),
         Output("moving_mean after two training steps", per_feature=True),
         Output("moving_variance after two training steps", per_feature=True),
         Output("layer(x, training=False) after them")),
        (1, 2, 0, 3), _oracle(_drive_channels_first_oracle), _channels_first_cases,
        _CF_MISTAKES,
        (("layer(x, training=True)", "the features are along `self.axis` (here 1): reduce over "
          "every other axis, and reshape gamma, beta and the statistics to [1, C, 1, ...] to "
          "broadcast them."),),
        oracle=ORACLE, features="C = x.shape[axis]", driver=_drive_channels_first,
        exception_hint=_exception_hint, verb="gave",
        precision=True),
}


_DONE = {"build": "build()", "training": "call() in training mode",
         "moving_statistics": "the moving statistics", "inference": "inference",
         "frozen": "trainable=False", "channels_first": "channels first"}
_CHECKS = Checks(__name__, SPECS,
                 label=lambda key, cls: f"{getattr(cls, '__name__', cls)}, {_DONE[key]}")
cases, _check = _CHECKS.cases, _CHECKS.check


def record(key, cls, hidden=False):
    """Step 1: drive the learner's layer class on the fixed inputs; return plain-data records."""
    return _record(SPECS[key], cls, hidden)


def compare(key, records):
    """Step 2: run the same scenario on Keras's layer; raise AssertionError with a diagnosis."""
    __tracebackhide__ = True  # noqa: F841
    if key == "channels_first":
        return _compare_channels_first(records)
    return _compare(SPECS[key], records)


def _compare_channels_first(records):
    """Part F grades the handling of the feature axis, not the formulas (Parts B to E do).

    A record holds the scenario's outputs on channels-first data and, after them, the outputs
    of the same layer on the same data with the feature axis moved last. The part passes if
    the first agree with Keras, or if they agree with the second: then the layer treats
    ``axis=1`` exactly as ``axis=-1``, and a mistake in a formula is not counted twice.
    """
    __tracebackhide__ = True  # noqa: F841
    absolute = [dict(r, returned=tuple(r["returned"][:4]))
                if isinstance(r["returned"], tuple) and len(r["returned"]) == 8 else r
                for r in records]
    try:
        return _compare(SPECS["channels_first"], absolute)
    except AssertionError as exc:
        verdict = exc
    by_case = {}
    for r in records:
        if r["hidden"] not in by_case:
            by_case[r["hidden"]] = cases("channels_first", r["hidden"])
    if all(_consistent(r, by_case[r["hidden"]][r["case"]]) for r in records):
        return len(records)
    raise verdict


def _consistent(rec, case):
    returned = rec["returned"]
    if rec["error"] is not None or not isinstance(returned, tuple) or len(returned) != 8:
        return False
    return all(np.shape(a) == np.shape(b) and close(a, b, case.dtype)
               for a, b in zip(returned[:4], returned[4:]))


def check_build(cls, hidden=False):
    """Part A: the four weights, their shapes, initial values and trainable flags."""
    __tracebackhide__ = True  # noqa: F841
    _check("build", cls, hidden)


def check_training(cls, hidden=False):
    """Part B: ``layer(x, training=True)``."""
    __tracebackhide__ = True  # noqa: F841
    _check("training", cls, hidden)


def check_moving_statistics(cls, hidden=False):
    """Part C: the moving statistics after several training steps."""
    __tracebackhide__ = True  # noqa: F841
    _check("moving_statistics", cls, hidden)


def check_inference(cls, hidden=False):
    """Part D: ``layer(x, training=False)`` and ``layer(x)``, and nothing updated."""
    __tracebackhide__ = True  # noqa: F841
    _check("inference", cls, hidden)


def check_frozen(cls, hidden=False):
    """Part E: ``layer.trainable = False``: inference behaviour, even with ``training=True``."""
    __tracebackhide__ = True  # noqa: F841
    _check("frozen", cls, hidden)


def check_channels_first(cls, hidden=False):
    """Part F: training, moving statistics and inference with the features on ``axis=1``."""
    __tracebackhide__ = True  # noqa: F841
    _check("channels_first", cls, hidden)
