"""The ps03_placement checks: right answers pass however they are computed, each catalogued mistake fails
with a message that names it, and the grader's recomputation follows the notebook's protocol.
"""

import math
import pickle
import re
from pathlib import Path

import keras
import nbformat
import numpy as np
import pytest
import tensorflow as tf

from coursework import ps03_placement as checks

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# Part A


def grad_loss_object(model, x, y):
    bias = model.get_layer("dense_1").bias
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x, training=True))
    return tape.gradient(loss, bias).numpy()


def grad_functional_loss_tensor(model, x, y):
    """keras.ops throughout, and a tf.Tensor returned (converted by the check)."""
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, logits,
                                                                            from_logits=True))
    return tape.gradient(loss, model.get_layer("dense_1").bias)


def grad_all_variables(model, x, y):
    """Every trainable variable's gradient, then the right one picked out by path."""
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        labels = tf.one_hot(y, 10)
        loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, model.trainable_variables)
    (g,) = [g for g, v in zip(grads, model.trainable_variables) if v.path == "dense_1/bias"]
    return np.asarray(g)


def grad_numeric_check_friendly(model, x, y):
    """In float64 after the fact (the check compares in float64 anyway)."""
    return grad_loss_object(model, x, y).astype(np.float64)


GRADIENT_ALTERNATIVES = [grad_loss_object, grad_functional_loss_tensor, grad_all_variables,
                         grad_numeric_check_friendly]


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", GRADIENT_ALTERNATIVES, ids=lambda f: f.__name__)
def test_bias_gradient_alternatives_pass(fn, hidden):
    checks.check_bias_gradient(fn, hidden=hidden)


def _grad_mistake(training=True, reduce="mean", from_logits=True, which="dense_1.bias"):
    def fn(model, x, y):
        if which == "dense_1.value":
            return model.get_layer("dense_1").bias.numpy()
        layer, attribute = which.split(".")
        variable = getattr(model.get_layer(layer), attribute)
        with tf.GradientTape() as tape:
            logits = model(x, training=training)
            out = logits if from_logits else tf.nn.softmax(logits)
            # a softmax, then a loss that applies one again
            per_example = keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True)
            loss = tf.reduce_mean(per_example) if reduce == "mean" else tf.reduce_sum(per_example)
        return tape.gradient(loss, variable).numpy()

    return fn


GRADIENT_MISTAKES = {
    "model called in inference mode": _grad_mistake(training=False),
    "loss summed over the batch": _grad_mistake(reduce="sum"),
    "softmax applied to probabilities": _grad_mistake(from_logits=False),
    "the bias itself, not its gradient": _grad_mistake(which="dense_1.value"),
    "the gradient of the output layer's bias": _grad_mistake(which="logits.bias"),
    "the gradient of the kernel": _grad_mistake(which="dense_1.kernel"),
}


@pytest.mark.parametrize("label", list(GRADIENT_MISTAKES))
def test_bias_gradient_mistakes_are_named(label):
    with pytest.raises(AssertionError, match=re.escape(f"Most likely mistake ({label})")):
        checks.check_bias_gradient(GRADIENT_MISTAKES[label])


def test_the_bias_before_bn_has_a_zero_gradient_and_the_others_do_not():
    for case in checks.cases("bias_gradient", False) + checks.cases("bias_gradient", True):
        (g,) = checks.SPECS["bias_gradient"].reference(*case.args)
        config = case.args[0]
        if config[0] == "before":
            assert np.max(np.abs(g)) < 1e-6, case.label
        else:
            assert np.max(np.abs(g)) > 1e-3, case.label


# ----------------------------------------------------------------------------------------------
# Part B


def lr_loop(losses, grid, threshold):
    best = None
    for lr, loss in zip(grid, losses):
        if math.isfinite(loss) and loss < threshold and (best is None or lr > best):
            best = lr
    return best


def lr_mask(losses, grid, threshold):
    losses, grid = np.asarray(losses, dtype=float), np.asarray(grid, dtype=float)
    with np.errstate(invalid="ignore"):
        return grid[losses < threshold].max()  # NaN < threshold is False; inf is not < threshold


def lr_reversed(losses, grid, threshold):
    for lr, loss in sorted(zip(grid, losses), reverse=True):
        if loss < threshold:
            return float(lr)


@pytest.mark.parametrize("hidden", [False, True], ids=["visible", "hidden"])
@pytest.mark.parametrize("fn", [lr_loop, lr_mask, lr_reversed])
def test_largest_trainable_lr_alternatives_pass(fn, hidden):
    checks.check_largest_trainable_lr(fn, hidden=hidden)


def _first_failure(losses, grid, threshold):
    ok = max(lr for lr, loss in zip(grid, losses) if loss < threshold)
    above = [lr for lr in grid if lr > ok]
    return min(above) if above else ok


def _stop_at_failure(losses, grid, threshold):
    best = None
    for lr, loss in zip(grid, losses):
        if not loss < threshold:
            break
        best = lr
    return best


LARGEST_MISTAKES = {
    "the first learning rate that fails": (_first_failure, False),
    "the smallest learning rate that trains": (
        lambda losses, grid, t: min(lr for lr, loss in zip(grid, losses) if loss < t), False),
    "stopped at the first failure": (_stop_at_failure, True),
    "a diverged run counted as training": (
        lambda losses, grid, t: max(lr for lr, loss in zip(grid, losses) if not loss >= t), True),
    "threshold counted as training": (
        lambda losses, grid, t: max(lr for lr, loss in zip(grid, losses) if loss <= t), True),
    "the learning rate with the lowest loss": (
        lambda losses, grid, t: grid[int(np.nanargmin(np.where(np.isinf(losses), np.nan,
                                                                 losses)))], False),
    "an index instead of a learning rate": (
        lambda losses, grid, t: max(i for i, loss in enumerate(losses) if loss < t), False),
}


@pytest.mark.parametrize("label", list(LARGEST_MISTAKES))
def test_largest_trainable_lr_mistakes_are_named(label):
    fn, hidden_only = LARGEST_MISTAKES[label]
    if not hidden_only:
        with pytest.raises(AssertionError, match=re.escape(f"Most likely mistake ({label})")):
            checks.check_largest_trainable_lr(fn)
    with pytest.raises(AssertionError, match=re.escape(f"Most likely mistake ({label})")):
        checks.check_largest_trainable_lr(fn, hidden=True)


# ----------------------------------------------------------------------------------------------
# Parts C and D: the measured answers, against the grader's recomputation


@pytest.fixture(scope="module")
def measured():
    table = checks.recompute()
    losses = {p: [row[0] for row in table[p]] for p in checks.PLACEMENTS}
    lr = {p: checks._largest_ref(losses[p], checks.GRID, checks.TRAINS_BELOW)[0]
          for p in checks.PLACEMENTS}
    i = checks.GRID.index(checks.GAP_LR)
    gap = table["before"][i][1] - table["none"][i][1]
    return table, losses, lr, gap


def test_the_experiment_shows_what_the_course_claims(measured):
    _, losses, lr, gap = measured
    assert lr["none"] < lr["before"] and lr["none"] < lr["after"]
    # margins: the decisions are far from the threshold, so they are robust
    for p in checks.PLACEMENTS:
        for value in losses[p]:
            assert abs(value - checks.TRAINS_BELOW) > 0.2, (p, losses[p])
    assert gap > 0.2


def test_right_answers_pass(measured):
    _, losses, lr, gap = measured
    for p in checks.PLACEMENTS:
        checks.check_answer(f"lr_{p}", lr[p], hidden=True)
        checks.check_answer(f"lr_{p}", np.float32(lr[p]), hidden=True)
    checks.check_answer("gap", gap + 0.01, hidden=True)
    checks.check_answer("gap", np.float64(gap), hidden=True)
    checks.check_answer("losses", losses, hidden=True)
    nan_for_inf = {p: [v if math.isfinite(v) else float("nan") for v in losses[p]]
                   for p in losses}
    checks.check_answer("losses", nan_for_inf, hidden=True)
    checks.check_answer("losses", {p: np.array(v, dtype=np.float32) for p, v in losses.items()},
                        hidden=True)


def test_wrong_lr_answers_are_diagnosed(measured):
    _, losses, lr, _ = measured
    above = min(g for g in checks.GRID if g > lr["none"])
    checks.check_answer("lr_none", above)  # a valid answer: the form is right
    with pytest.raises(AssertionError, match=r"grader's own run(.|\n)*the first learning rate "
                                             r"that fails"):
        checks.check_answer("lr_none", above, hidden=True)
    with pytest.raises(AssertionError, match=r"another placement(.|\n)*\"before\""):
        checks.check_answer("lr_none", lr["before"], hidden=True)
    with pytest.raises(AssertionError, match="not one of the learning rates of GRID"):
        checks.check_answer("lr_none", 0.5)
    with pytest.raises(AssertionError, match="not answered yet"):
        checks.check_answer("lr_before", None)
    with pytest.raises(AssertionError, match="must be a number"):
        checks.check_answer("lr_before", "0.3")


def test_wrong_gap_is_diagnosed(measured):
    gap = measured[3]
    with pytest.raises(AssertionError, match=r"sign reversed"):
        checks.check_answer("gap", -gap, hidden=True)
    with pytest.raises(AssertionError, match=r"percentage points"):
        checks.check_answer("gap", 100 * gap, hidden=True)
    checks.check_answer("gap", 100 * gap)  # visible: the form only


def test_wrong_losses_are_diagnosed(measured):
    table, losses, _, _ = measured
    swapped = dict(losses, none=losses["before"], before=losses["none"])
    with pytest.raises(AssertionError, match=r"placements mixed up"):
        checks.check_answer("losses", swapped, hidden=True)
    last = {p: [row[2] for row in table[p]] for p in checks.PLACEMENTS}
    with pytest.raises(AssertionError, match=r"last step only"):
        checks.check_answer("losses", last, hidden=True)
    with pytest.raises(AssertionError, match="has no entry for"):
        checks.check_answer("losses", {"none": losses["none"]})
    with pytest.raises(AssertionError, match="must hold 6 numbers"):
        checks.check_answer("losses", dict(losses, after=losses["after"][:5]))


def test_the_notebook_runs_the_graders_protocol(measured):
    """The set-up cell of the solution gives the constants, batches and numbers the grader
    recomputes with its own code."""
    nb = nbformat.read(REPO / "solutions" / "ps03_placement" / "ps03_placement.ipynb", as_version=4)
    (setup,) = [c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id")
                == "setup"]
    from tensorflow.python.framework import config as tf_config

    was_on = tf_config.is_op_determinism_enabled()
    ns = {}
    try:
        exec(compile(setup, "setup", "exec"), ns)  # noqa: S102 - our own notebook
        _compare_with_the_grader(ns, measured)
    finally:
        if not was_on:  # the set-up cell switched it on for the whole process
            tf_config.disable_op_determinism()


def _compare_with_the_grader(ns, measured):
    for name in ("GRID", "STEPS", "BATCH", "TRAINS_BELOW", "GAP_LR", "PLACEMENTS"):
        assert ns[name] == getattr(checks, name), name
    np.testing.assert_array_equal(ns["BATCHES"], checks.batches())
    table = measured[0]
    for placement, i in (("none", 2), ("before", 4)):
        loss, accuracy = ns["train_and_evaluate"](placement, checks.GRID[i])
        assert np.isclose(loss, table[placement][i][0], rtol=1e-5)
        assert abs(accuracy - table[placement][i][1]) < 1e-9


def test_the_recomputation_leaves_determinism_as_it_found_it():
    from tensorflow.python.framework import config as tf_config

    was_on = tf_config.is_op_determinism_enabled()
    with checks._determinism():
        assert tf_config.is_op_determinism_enabled()
    assert tf_config.is_op_determinism_enabled() == was_on


def test_records_are_plain_data():
    rec = pickle.loads(pickle.dumps(checks.record_answer("lr_none", np.float32(0.3))))
    assert rec["returned"] == pytest.approx(0.3)
    records = pickle.loads(pickle.dumps(checks.record("largest_trainable_lr", lr_loop, True)))
    assert checks.compare("largest_trainable_lr", records) == 4
    records = pickle.loads(pickle.dumps(checks.record("bias_gradient",
                                                      grad_functional_loss_tensor)))
    assert all(isinstance(r["returned"], np.ndarray) for r in records)
    assert checks.compare("bias_gradient", records) == 2


def test_no_stderr_and_returns_none(capfd):
    assert checks.check_largest_trainable_lr(lr_loop) is None
    with pytest.raises(AssertionError):
        checks.check_bias_gradient(GRADIENT_MISTAKES["model called in inference mode"])
    out, err = capfd.readouterr()
    assert err == ""
