"""The ps02_keras_layer checks: right layers pass however they are written, and each catalogued mistake
fails with a message that names it.

The layers below are written the way learners write them (keras.ops, one class per variant),
independently of the NumPy model of mistakes in ``coursework.ps02_keras_layer``. The oracle of the
checks is keras.layers.BatchNormalization; the NumPy model is compared with it here too.
"""

import re

import keras
import numpy as np
import pytest
from checks_tests import assert_every_mistake_shows, assert_records_are_plain_data, fixed_cases
from keras import ops

from coursework import ps02_keras_layer as checks

# ----------------------------------------------------------------------------------------------
# A learner's layer, with switches for the mistakes (keras.ops throughout)


class Learner(keras.layers.Layer):
    """The solution's layout; the class attributes switch on one mistake each."""

    ddof = 0  # 1: unbiased variance in training
    eps_mode = "inside"  # "missing", "outside"
    swapped = False  # beta * xhat + gamma
    reduce = "others"  # "all", "batch", "feature"
    reshape_nchw = False  # x reshaped to (-1, C) without a transpose
    ema = "keras"  # "reversed", "none", "replace"
    moving_ddof = None  # 1: PyTorch's unbiased moving variance
    update_at_inference = None  # "before", "after"
    batch_stats_at_inference = False
    none_is_training = False
    frozen = "respect"  # "ignore", "batch_only", "update_only"
    init = {"gamma": "ones", "beta": "zeros", "moving_mean": "zeros", "moving_variance": "ones"}
    moving_trainable = False
    size_from_last_axis = False

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.momentum = momentum
        self.epsilon = epsilon

    def build(self, input_shape):
        c = input_shape[-1] if self.size_from_last_axis else input_shape[self.axis]
        self.gamma = self.add_weight(shape=(c,), initializer=self.init["gamma"], name="gamma")
        self.beta = self.add_weight(shape=(c,), initializer=self.init["beta"], name="beta")
        self.moving_mean = self.add_weight(shape=(c,), initializer=self.init["moving_mean"],
                                           trainable=self.moving_trainable, name="moving_mean")
        self.moving_variance = self.add_weight(
            shape=(c,), initializer=self.init["moving_variance"],
            trainable=self.moving_trainable, name="moving_variance")

    def _stats(self, x, axes, shape):
        m = 1
        for a in axes:
            m *= x.shape[a]
        mean = ops.mean(x, axis=axes)
        centred = x - (ops.expand_dims(mean, 0) if self.reduce == "batch" else
                       ops.reshape(mean, shape) if self.reduce != "all" else mean)
        ss = ops.sum(ops.square(centred), axis=axes)
        moving_ddof = self.ddof if self.moving_ddof is None else self.moving_ddof
        return mean, ss / (m - self.ddof), ss / (m - moving_ddof)

    def _update(self, mean, var):
        k = self.momentum
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, var)):
            if self.ema == "keras":
                moving.assign(moving * k + batch * (1 - k))
            elif self.ema == "reversed":
                moving.assign(moving * (1 - k) + batch * k)
            elif self.ema == "replace":
                moving.assign(ops.zeros_like(moving) + batch)

    def call(self, inputs, training=None):
        x = inputs
        back = None
        if self.reshape_nchw:
            c = x.shape[self.axis]
            back = x.shape
            x = ops.reshape(x, (-1, c))
            axis = 1
        else:
            axis = self.axis % len(x.shape)
        nd = len(x.shape)
        axes = {"others": [a for a in range(nd) if a != axis], "all": list(range(nd)),
                "batch": [0], "feature": [axis]}[self.reduce]
        shape = [1] * nd
        shape[axis] = -1
        training = (training is not False) if self.none_is_training else training
        if training:
            use_batch = self.trainable or self.frozen in ("ignore", "batch_only")
            update = self.trainable or self.frozen in ("ignore", "update_only")
        else:
            use_batch, update = self.batch_stats_at_inference, False
        mean, var, moving_var = self._stats(x, axes, shape)
        if not training and self.update_at_inference == "before":
            self._update(mean, moving_var)
        if use_batch:
            m, v = mean, var
            if self.reduce == "batch":
                m, v = ops.expand_dims(m, 0), ops.expand_dims(v, 0)
            elif self.reduce != "all":
                m, v = ops.reshape(m, shape), ops.reshape(v, shape)
        else:
            m, v = ops.reshape(self.moving_mean, shape), ops.reshape(self.moving_variance, shape)
        denom = {"inside": ops.sqrt(v + self.epsilon), "missing": ops.sqrt(v),
                 "outside": ops.sqrt(v) + self.epsilon}[self.eps_mode]
        xhat = (x - m) / denom
        g, b = ops.reshape(self.gamma, shape), ops.reshape(self.beta, shape)
        y = b * xhat + g if self.swapped else g * xhat + b
        if update or (not training and self.update_at_inference == "after"):
            self._update(mean, moving_var)
        return ops.reshape(y, back) if back is not None else y


def variant(**switches):
    return type("BatchNorm", (Learner,), switches)


# ----------------------------------------------------------------------------------------------
# Correct layers, written differently


class Moments(keras.layers.Layer):
    """ops.moments with keepdims, and keras.ops.batch_normalization for the formula."""

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.axis, self.momentum, self.epsilon = axis, momentum, epsilon

    def build(self, input_shape):
        shape = (input_shape[self.axis],)
        self.gamma = self.add_weight(shape=shape, initializer=keras.initializers.Ones())
        self.beta = self.add_weight(shape=shape, initializer=keras.initializers.Zeros())
        self.moving_mean = self.add_weight(shape=shape, initializer="zeros", trainable=False)
        self.moving_variance = self.add_weight(shape=shape, initializer="ones", trainable=False)

    def call(self, inputs, training=None):
        axis = self.axis % len(inputs.shape)
        axes = [a for a in range(len(inputs.shape)) if a != axis]
        if not training or not self.trainable:
            mean, var = self.moving_mean, self.moving_variance
        else:
            mean, var = ops.moments(inputs, axes)
            # the increment form of the same update
            self.moving_mean.assign_add((1 - self.momentum) * (mean - self.moving_mean))
            self.moving_variance.assign_add((1 - self.momentum) * (var - self.moving_variance))
        return ops.batch_normalization(inputs, mean, var, axis=axis, offset=self.beta,
                                       scale=self.gamma, epsilon=self.epsilon)


class MoveAxisEinsum(keras.layers.Layer):
    """Feature axis moved last and flattened to (m, C); statistics with einsum; moved back."""

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.axis, self.momentum, self.epsilon = axis, momentum, epsilon

    def build(self, input_shape):
        self._c = input_shape[self.axis]
        for name, init, trainable in (("gamma", "ones", True), ("beta", "zeros", True),
                                      ("moving_mean", "zeros", False),
                                      ("moving_variance", "ones", False)):
            setattr(self, name, self.add_weight(shape=(self._c,), initializer=init,
                                                trainable=trainable, name=name))

    def call(self, inputs, training=None):
        moved = ops.moveaxis(inputs, self.axis, -1)
        flat = ops.reshape(moved, (-1, self._c))
        if training and self.trainable:
            m = flat.shape[0]
            mean = ops.einsum("ic->c", flat) / m
            centred = flat - mean
            var = ops.einsum("ic,ic->c", centred, centred) / m
            self.moving_mean.assign(self.momentum * self.moving_mean + (1 - self.momentum) * mean)
            self.moving_variance.assign(self.momentum * self.moving_variance
                                        + (1 - self.momentum) * var)
        else:
            mean, var = self.moving_mean, self.moving_variance
        y = self.gamma * (flat - mean) * ops.rsqrt(var + self.epsilon) + self.beta
        return ops.moveaxis(ops.reshape(y, moved.shape), -1, self.axis)


class Float64Inside(Learner):
    """Computes in float64 whatever the layer's dtype, and casts back."""

    def call(self, inputs, training=None):
        axis = self.axis % len(inputs.shape)
        axes = tuple(a for a in range(len(inputs.shape)) if a != axis)
        x = ops.cast(inputs, "float64")
        shape = [1] * len(inputs.shape)
        shape[axis] = -1
        if training and self.trainable:
            mean = ops.mean(x, axis=axes, keepdims=True)
            var = ops.var(x, axis=axes, keepdims=True)
            k = self.momentum
            self.moving_mean.assign(
                ops.cast(ops.reshape(mean, (-1,)) * (1 - k), self.moving_mean.dtype)
                + self.moving_mean * k)
            self.moving_variance.assign(
                ops.cast(ops.reshape(var, (-1,)) * (1 - k), self.moving_variance.dtype)
                + self.moving_variance * k)
        else:
            mean = ops.reshape(ops.cast(self.moving_mean, "float64"), shape)
            var = ops.reshape(ops.cast(self.moving_variance, "float64"), shape)
        scale = ops.reshape(ops.cast(self.gamma, "float64"), shape) / ops.sqrt(var + self.epsilon)
        y = (x - mean) * scale + ops.reshape(ops.cast(self.beta, "float64"), shape)
        return ops.cast(y, inputs.dtype)


class AxesFromBuild(Learner):
    """Reduction axes and broadcast shape computed once, in build."""

    def build(self, input_shape):
        super().build(input_shape)
        ndim = len(input_shape)
        self._axes = [a for a in range(ndim) if a != self.axis % ndim]
        self._shape = [input_shape[a] if a == self.axis % ndim else 1 for a in range(ndim)]

    def call(self, inputs, training=None):
        if training and self.trainable:
            mean = ops.mean(inputs, axis=self._axes, keepdims=True)
            var = ops.mean((inputs - mean) ** 2, axis=self._axes, keepdims=True)
            self.moving_mean.assign(self.moving_mean * self.momentum
                                    + ops.squeeze(mean) * (1 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum
                                        + ops.squeeze(var) * (1 - self.momentum))
        else:
            mean = ops.reshape(self.moving_mean, self._shape)
            var = ops.reshape(self.moving_variance, self._shape)
        gamma = ops.reshape(self.gamma, self._shape)
        return gamma * (inputs - mean) / ops.sqrt(var + self.epsilon) + ops.reshape(
            self.beta, self._shape)


ALTERNATIVES = [Learner, Moments, MoveAxisEinsum, Float64Inside, AxesFromBuild]
CHECKS = [checks.check_build, checks.check_training, checks.check_moving_statistics,
          checks.check_inference, checks.check_frozen, checks.check_channels_first]


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("cls", ALTERNATIVES, ids=lambda c: c.__name__)
def test_alternatives_pass(cls, check, hidden):
    check(cls, hidden=hidden)


# ----------------------------------------------------------------------------------------------
# The catalogue: (check, layer, label of the diagnosis). Every mistake shows on the visible
# tests.

MISTAKES = [
    (checks.check_training, variant(ddof=1), "unbiased variance"),
    (checks.check_training, variant(eps_mode="missing"), "missing epsilon"),
    (checks.check_training, variant(eps_mode="outside"), "epsilon outside the square root"),
    (checks.check_training, variant(swapped=True), "gamma and beta swapped"),
    (checks.check_training, variant(reduce="all"), "wrong reduction axis: all axes"),
    (checks.check_channels_first, variant(reshape_nchw=True),
     "channels-first input reshaped without a transpose"),
    (checks.check_moving_statistics, variant(ema="reversed"), "momentum reversed"),
    (checks.check_moving_statistics, variant(ema="none"), "moving statistics not updated"),
    (checks.check_moving_statistics, variant(ema="replace"),
     "moving statistics replaced by the batch statistics"),
    (checks.check_moving_statistics, variant(moving_ddof=1),
     "unbiased variance in the moving average"),
    (checks.check_moving_statistics, variant(ddof=1), "unbiased variance in the moving average"),
    (checks.check_moving_statistics, variant(reduce="all"), "wrong reduction axis: all axes"),
    (checks.check_inference, variant(update_at_inference="before"),
     "moving statistics updated at inference"),
    (checks.check_inference, variant(update_at_inference="after"),
     "moving statistics updated at inference"),
    (checks.check_inference, variant(batch_stats_at_inference=True),
     "batch statistics at inference"),
    (checks.check_inference, variant(none_is_training=True), "training=None treated as training"),
    (checks.check_inference, variant(eps_mode="missing"), "missing epsilon"),
    (checks.check_inference, variant(swapped=True), "gamma and beta swapped"),
    (checks.check_frozen, variant(frozen="ignore"), "trainable=False ignored"),
    (checks.check_frozen, variant(frozen="batch_only"), "trainable=False: batch statistics used"),
    (checks.check_frozen, variant(frozen="update_only"),
     "trainable=False: moving statistics updated"),
    (checks.check_build, variant(moving_trainable=True), "moving statistics trainable"),
    (checks.check_build, variant(init={"gamma": "zeros", "beta": "ones", "moving_mean": "zeros",
                                       "moving_variance": "ones"}),
     "gamma and beta initialisers swapped"),
    (checks.check_build, variant(init={"gamma": "ones", "beta": "zeros", "moving_mean": "zeros",
                                       "moving_variance": "zeros"}),
     "moving variance initialised to zero"),
    (checks.check_build, variant(size_from_last_axis=True), "weights sized by the last axis"),
]


@pytest.mark.parametrize("check,cls,label", MISTAKES,
                         ids=[f"{c.__name__}-{label}" for c, _, label in MISTAKES])
def test_mistakes_are_named(check, cls, label):
    with pytest.raises(AssertionError, match=re.escape(f"Most likely mistake ({label})")):
        check(cls)
    with pytest.raises(AssertionError):
        check(cls, hidden=True)


# Mistakes in one formula shared by training and inference (epsilon, gamma/beta, a reshape)
# show in every part that uses it; these are confined to their own part.
LOCAL = [m for m in MISTAKES if m[0] in (checks.check_training, checks.check_moving_statistics,
                                          checks.check_build, checks.check_channels_first)
         and m[2] in ("unbiased variance", "wrong reduction axis: all axes", "momentum reversed",
                      "channels-first input reshaped without a transpose",
                      "moving statistics not updated", "unbiased variance in the moving average",
                      "moving statistics replaced by the batch statistics",
                      "moving statistics trainable", "gamma and beta initialisers swapped",
                      "moving variance initialised to zero", "weights sized by the last axis")]


@pytest.mark.parametrize("check,cls,label", LOCAL,
                         ids=[f"{c.__name__}-{label}" for c, _, label in LOCAL])
def test_a_mistake_costs_its_own_part_only(check, cls, label):
    """A mistake in training, the moving statistics or build leaves inference and the frozen
    layer right, and a mistake in build costs nothing in the other parts."""
    others = [c for c in CHECKS if c is not check]
    if check in (checks.check_training, checks.check_moving_statistics):
        others = [checks.check_build, checks.check_inference, checks.check_frozen]
        if label != "wrong reduction axis: all axes":  # an axis mistake: F grades it too
            others.append(checks.check_channels_first)
    for other in others:
        other(cls)


def test_messages_say_expected_received_and_why():
    with pytest.raises(AssertionError) as info:
        checks.check_training(variant(ddof=1))
    message = str(info.value)
    assert "gave the wrong `layer(x, training=True)`" in message or \
        "returned the wrong `layer(x, training=True)`" in message
    assert "expected:" in message and "received:" in message
    assert "keras.layers.BatchNormalization" in message
    assert "m-1" in message and "biased" in message


def test_reduction_over_the_batch_axis_only_gets_an_axis_hint():
    with pytest.raises(AssertionError) as info:
        checks.check_training(variant(reduce="batch"))
    message = str(info.value)
    assert "raised ValueError" in message
    assert "reduce over every axis except `self.axis`" in message


def test_numpy_inside_call_is_reported():
    class WithNumpy(Learner):
        def call(self, inputs, training=None):
            y = super().call(inputs, training)
            return y + 0 * np.asarray(inputs).sum()

    with pytest.raises(AssertionError, match="not on a symbolic input(.|\n)*keras.ops only"):
        checks.check_training(WithNumpy)


def test_not_implemented_and_none_and_reference():
    class Blank(Learner):
        def build(self, input_shape):
            raise NotImplementedError()

        def call(self, inputs, training=None):
            raise NotImplementedError()

    for check in CHECKS:
        with pytest.raises(AssertionError, match="is not implemented yet"):
            check(Blank)

    class NoReturn(Learner):
        def call(self, inputs, training=None):
            super().call(inputs, training)

    with pytest.raises(AssertionError, match="returned None(.|\n)*return outputs"):
        checks.check_training(NoReturn)
    with pytest.raises(AssertionError, match="keras.layers.BatchNormalization"):
        checks.check_training(keras.layers.BatchNormalization)
    import course_lib

    with pytest.raises(AssertionError, match="course_lib's reference implementation"):
        checks.check_inference(course_lib.BatchNormalization)
    with pytest.raises(AssertionError, match="not a subclass of keras.layers.Layer"):
        checks.check_build(Learner(axis=1))


def test_build_without_a_weight_is_reported():
    class NoMovingVariance(Learner):
        def build(self, input_shape):
            super().build(input_shape)
            del self.moving_variance

    with pytest.raises(AssertionError, match=r"has no `self.moving_variance` after build"):
        checks.check_build(NoMovingVariance)
    # the other parts give the layer its weights: nothing lost there
    checks.check_training(NoMovingVariance)


def test_exception_in_call_points_at_the_learners_line():
    class Broken(Learner):
        def call(self, inputs, training=None):
            values = [1, 2, 3]
            return values[7]

    with pytest.raises(AssertionError) as info:
        checks.check_training(Broken)
    message = str(info.value)
    assert "raised IndexError" in message and "return values[7]" in message


def test_no_stderr(capfd):
    with pytest.raises(AssertionError):
        checks.check_training(variant(eps_mode="missing"))
    checks.check_training(Learner)
    out, err = capfd.readouterr()
    assert err == ""
    assert "all 2 visible cases pass" in out


# ----------------------------------------------------------------------------------------------
# The two steps, the cases, and the NumPy model of the mistakes


def test_records_are_plain_data_and_compare_needs_nothing_else():
    restored = assert_records_are_plain_data(checks, "moving_statistics", variant(ema="reversed"),
                                             "momentum reversed")
    assert all(isinstance(v, np.ndarray) for r in restored for v in r["returned"])
    assert checks.compare("moving_statistics", checks.record("moving_statistics", Learner)) == 2


@pytest.mark.parametrize("key", list(checks.SPECS))
@pytest.mark.parametrize("hidden", [False, True])
def test_cases_are_fixed_and_every_dimension_differs(key, hidden):
    first = fixed_cases(checks, key, hidden)
    for a in first:
        shape = a.args[0] if key == "build" else np.shape(a.args[0])
        if key in ("moving_statistics", "channels_first"):
            shape = shape[1:]
        assert len(set(shape)) == len(shape), shape
    axes = {dict(zip(c.names, c.args))["axis"] for c in first}
    if key in ("build", "channels_first"):
        assert 1 in axes or -3 in axes  # channels first, visible and hidden
    else:
        assert axes == {-1}
    if hidden:
        assert np.dtype(np.float64) in {c.dtype for c in first}


@pytest.mark.parametrize("key", ["training", "moving_statistics", "inference", "frozen",
                                 "channels_first"])
@pytest.mark.parametrize("hidden", [False, True])
def test_numpy_model_without_mistakes_is_keras(key, hidden):
    from coursework.ps02_keras_layer import _model_scenario

    for case in checks.cases(key, hidden):
        expected = checks.SPECS[key].reference(*case.args)
        got = _model_scenario(key)(*case.args)
        for e, g in zip(expected, got):
            np.testing.assert_allclose(g, e, rtol=1e-5 if case.dtype == np.float32 else 1e-12,
                                       atol=1e-5 if case.dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("key", list(checks.SPECS))
def test_every_catalogued_mistake_is_visible_on_the_visible_cases(key):
    assert_every_mistake_shows(checks.SPECS[key], checks.cases(key, False))


@pytest.mark.parametrize("switches", [{"eps_mode": "missing"}, {"swapped": True}, {"ddof": 1},
                                      {"ema": "reversed"}, {"update_at_inference": "before"}])
def test_part_f_does_not_count_a_formula_mistake_twice(switches):
    """A formula mistake fails its own parts, but a layer that treats axis=1 exactly as
    axis=-1 passes Part F."""
    checks.check_channels_first(variant(**switches))
    checks.check_channels_first(variant(**switches), hidden=True)


def test_part_f_fails_a_layer_that_only_knows_the_last_axis():
    class LastAxisOnly(Learner):
        def call(self, inputs, training=None):
            self.axis = -1
            return super().call(inputs, training)

    checks.check_training(LastAxisOnly)
    with pytest.raises(AssertionError, match="raised(.|\n)*Hint: here the features are along "
                                             "axis=1"):
        checks.check_channels_first(LastAxisOnly)
