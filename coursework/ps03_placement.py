"""Checks for problem set 3, "Placement and training behaviour".

The grade cells of ``ps03_placement.ipynb`` call:

>>> from coursework import ps03_placement as checks
>>> checks.check_bias_gradient(bias_gradient)                    # doctest: +SKIP
>>> checks.check_largest_trainable_lr(largest_trainable_lr)      # doctest: +SKIP
>>> checks.check_answer("lr_none", answer_lr_none, hidden=True)  # doctest: +SKIP

Parts A and B grade functions on fixed inputs (record, then compare; ``coursework._core``).
Parts C and D grade measured numbers, and never against a typed-in key: the hidden check
**recomputes** the experiment itself (its own models, its own training loop, the protocol the
notebook states: bundled MNIST, seeds, ``enable_op_determinism``) and compares the learner's
numbers with the recomputation, with tolerances. The recomputation runs once per process.

The experiment (also in the notebook, where the learner runs it): a 784-32-32-10 ReLU network,
with Batch Normalization nowhere ("none"), between each hidden Dense layer and its ReLU
("before") or after each ReLU ("after"), trained from the same initial weights with plain SGD
for ``STEPS`` steps of ``BATCH`` examples at each learning rate of ``GRID``.
"""

import contextlib
import functools
import math
import numbers

import numpy as np

from coursework._core import Case, Checks, Mistake, Output, Spec, close, fail, judge, named, show

__all__ = ["check_bias_gradient", "check_largest_trainable_lr", "check_answer", "record",
           "compare", "record_answer", "compare_answer", "cases", "recompute", "SPECS",
           "GRID", "STEPS", "BATCH", "TRAINS_BELOW", "GAP_LR", "PLACEMENTS", "build_model"]

# The protocol. The notebook states the same numbers; tests/test_checks_ps03_placement.py checks that
# they agree.
GRID = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
STEPS, BATCH = 100, 50
TRAIN_EXAMPLES = 1000
TRAINS_BELOW = 1.0  # "still trains": the mean loss of the last 10 steps is below this
LAST = 10
GAP_LR = 1.0
PLACEMENTS = ("none", "before", "after")
UNITS = 32


# ---------------------------------------------------------------------------------------------
# The models and the data (the check's own, independent of the notebook's cells)


def build_model(placement, bias_before_bn=False, seed=0, hidden_layers=2, units=UNITS):
    """The experiment's network: ``Dense -> [BN] -> ReLU -> [BN]`` per hidden layer."""
    import keras

    if placement not in PLACEMENTS:
        raise ValueError(f"`placement` must be one of {PLACEMENTS}. Received: {placement!r}")
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(784,), name="images")
    h = inputs
    for i in range(1, hidden_layers + 1):
        use_bias = placement != "before" or bias_before_bn
        h = keras.layers.Dense(units, use_bias=use_bias, name=f"dense_{i}")(h)
        if placement == "before":
            h = keras.layers.BatchNormalization(name=f"bn_{i}")(h)
        h = keras.layers.Activation("relu", name=f"relu_{i}")(h)
        if placement == "after":
            h = keras.layers.BatchNormalization(name=f"bn_{i}")(h)
    outputs = keras.layers.Dense(10, name="logits")(h)
    return keras.Model(inputs, outputs, name=f"mlp_{placement}")


@functools.lru_cache(maxsize=1)
def _data():
    from course_lib.data import load_mnist

    (x_train, y_train), (x_test, y_test) = load_mnist()
    x_train = x_train[:TRAIN_EXAMPLES].reshape(TRAIN_EXAMPLES, -1).astype("float32") / 255.0
    x_test = x_test.reshape(len(x_test), -1).astype("float32") / 255.0
    return (x_train, y_train[:TRAIN_EXAMPLES].astype("int32"),
            x_test, y_test.astype("int32"))


def batches():
    """The fixed mini-batches: ``(STEPS, BATCH)`` indices into the first 1000 training images."""
    rng = np.random.default_rng(0)
    per_epoch = TRAIN_EXAMPLES // BATCH
    order = np.concatenate([rng.permutation(TRAIN_EXAMPLES)
                            for _ in range(-(-STEPS // per_epoch))])
    return order[: STEPS * BATCH].reshape(STEPS, BATCH)


# ---------------------------------------------------------------------------------------------
# Part A: the gradient of a Dense bias


def _loss_and_grad(model, x, y, variable, training=True, reduction="mean", from_logits=True):
    import keras
    import tensorflow as tf

    # The cross-entropy written out: Keras's own loss "repairs" a softmax fed to it as logits,
    # which would hide the double-softmax mistake.
    labels = keras.ops.expand_dims(keras.ops.convert_to_tensor(y, dtype="int32"), -1)
    with tf.GradientTape() as tape:
        logits = model(x, training=training)
        z = logits if from_logits else keras.ops.softmax(logits)
        log_p = keras.ops.take_along_axis(keras.ops.log_softmax(z, axis=-1), labels, axis=-1)
        per_example = -keras.ops.squeeze(log_p, -1)
        loss = keras.ops.mean(per_example) if reduction == "mean" else keras.ops.sum(per_example)
    return tape.gradient(loss, variable)


def _gradient_case_model(config):
    placement, bias_before_bn, seed, layers = config
    return build_model(placement, bias_before_bn=bias_before_bn, seed=seed, hidden_layers=layers)


def _drive_gradient(fn, config, x, y):
    model = _gradient_case_model(config)
    value = fn(model, x, y)
    if value is not None and hasattr(value, "numpy"):
        value = value.numpy()
    return value


def _gradient_of(which="bias", **kwargs):
    def outputs(config, x, y):
        model = _gradient_case_model(config)
        if which == "bias_value":
            return (model.get_layer("dense_1").bias.numpy(),)
        layer = model.get_layer("dense_1" if which in ("bias", "kernel") else "logits")
        variable = layer.kernel if which == "kernel" else layer.bias
        return (np.asarray(_loss_and_grad(model, x, y, variable, **kwargs)),)

    return outputs


_GRADIENT_MISTAKES = (
    Mistake("model called in inference mode",
            "you called the model with training=False (or without `training`). At inference BN "
            "normalises with its moving statistics, which do not depend on the batch, so a bias "
            "before BN does get a gradient there. SGD trains in training mode, "
            "`model(x, training=True)`: there the batch mean subtracts the bias away, and its "
            "gradient is zero.",
            _gradient_of(training=False)),
    Mistake("loss summed over the batch",
            "your loss is the SUM of the per-example losses; the training loss (and so the "
            "gradient SGD follows) is their MEAN: `keras.ops.mean(...)`, or the default "
            "reduction of `keras.losses.SparseCategoricalCrossentropy`.",
            _gradient_of(reduction="sum")),
    Mistake("softmax applied to probabilities",
            "your loss treats the logits as probabilities (`from_logits=False`, or a softmax "
            "applied before a loss that applies it again). The network outputs logits: use "
            "`from_logits=True`.",
            _gradient_of(from_logits=False)),
    Mistake("the bias itself, not its gradient",
            "you returned the bias's current value. Return the gradient of the loss with respect "
            "to it: `tape.gradient(loss, model.get_layer(\"dense_1\").bias)`.",
            _gradient_of("bias_value")),
    Mistake("the gradient of the output layer's bias",
            "you returned the gradient of the LAST Dense layer's bias (10 values). The question "
            "is about the first hidden layer, `model.get_layer(\"dense_1\").bias` (32 values).",
            _gradient_of("logits_bias")),
    Mistake("the gradient of the kernel",
            "you returned the gradient of the kernel (the weights matrix) of dense_1; the "
            "question is about its bias, `model.get_layer(\"dense_1\").bias`.",
            _gradient_of("kernel")),
)

# (label, placement, bias_before_bn, seed, hidden layers, first example, batch size)
_GRADIENT_LAYOUTS = {
    False: [("bias before BN (placement \"before\", the Dense layers keep their bias)",
             "before", True, 0, 2, 0, 64),
            ("no BN (placement \"none\")", "none", False, 0, 2, 0, 64)],
    True: [("BN after the ReLU (placement \"after\")", "after", False, 0, 2, 100, 48),
           ("bias before BN, 3 hidden layers, another seed", "before", True, 1, 3, 200, 17),
           ("no BN, another seed", "none", False, 2, 2, 300, 33)],
}


def _gradient_cases(hidden):
    x_train, y_train, _, _ = _data()
    out = []
    for label, placement, bias, seed, layers, start, n in _GRADIENT_LAYOUTS[hidden]:
        x, y = x_train[start:start + n], y_train[start:start + n]
        out.append(Case(f"{label}: model from build_model, x of shape {x.shape}",
                        ("model", "x", "y"), ((placement, bias, seed, layers), x, y),
                        np.dtype(np.float32), UNITS, tolerance=(1e-3, 1e-4)))
    return out


def _gradient_reference(config, x, y):
    return _gradient_of()(config, x, y)


# ---------------------------------------------------------------------------------------------
# Part B: the largest learning rate that still trains


def _trains(loss, threshold):
    return loss is not None and math.isfinite(float(loss)) and float(loss) < threshold


def _largest_ref(losses, grid, threshold):
    trained = [float(lr) for lr, loss in zip(grid, losses) if _trains(loss, threshold)]
    return (np.float64(max(trained)),)


def _largest_variant(which):
    def outputs(losses, grid, threshold):
        pairs = [(float(lr), float(loss)) for lr, loss in zip(grid, losses)]
        ordered = sorted(pairs)
        ok = [lr for lr, loss in ordered if _trains(loss, threshold)]
        if which == "first_failure":  # the first learning rate above the last that trains
            above = [lr for lr, _ in ordered if lr > max(ok)]
            return (np.float64(min(above)),) if above else (np.float64(max(ok)),)
        if which == "smallest":
            return (np.float64(min(ok)),)
        if which == "stop_at_failure":
            best = None
            for lr, loss in ordered:
                if not _trains(loss, threshold):
                    break
                best = lr
            if best is None:  # the code returns None there: nothing to compare
                raise ValueError("the smallest learning rate already fails")
            return (np.float64(best),)
        if which == "nan_trains":
            kept = [lr for lr, loss in ordered if not loss >= threshold]
            return (np.float64(max(kept)),)
        if which == "inclusive":
            kept = [lr for lr, loss in ordered if math.isfinite(loss) and loss <= threshold]
            return (np.float64(max(kept)),)
        if which == "lowest_loss":
            finite = [(loss, lr) for lr, loss in ordered if math.isfinite(loss)]
            return (np.float64(min(finite)[1]),)
        if which == "index":
            index = max(i for i, (lr, loss) in enumerate(pairs) if _trains(loss, threshold))
            return (np.float64(index),)
        raise ValueError(which)

    return outputs


_LARGEST_MISTAKES = (
    Mistake("the first learning rate that fails",
            "you returned the smallest learning rate at which the network no longer trains. "
            "Return the largest one at which it still does (loss below the threshold).",
            _largest_variant("first_failure")),
    Mistake("stopped at the first failure",
            "you scanned the grid upwards and stopped at the first learning rate that fails. "
            "A network can fail at one rate and train at a larger one (training is noisy): "
            "take the largest rate that trains, over the whole grid.",
            _largest_variant("stop_at_failure")),
    Mistake("the smallest learning rate that trains",
            "you returned the smallest learning rate whose loss is below the threshold; the "
            "question asks for the LARGEST.", _largest_variant("smallest")),
    Mistake("a diverged run counted as training",
            "a loss of NaN counted as 'trains'. A diverged run's loss is NaN (or inf), and "
            "`not loss >= threshold` is True for NaN: test `loss < threshold` (False for NaN), "
            "or `math.isfinite(loss) and loss < threshold`.", _largest_variant("nan_trains")),
    Mistake("threshold counted as training",
            "a loss exactly equal to the threshold counted as 'trains'; 'still trains' means "
            "strictly below it: `loss < threshold`.", _largest_variant("inclusive")),
    Mistake("the learning rate with the lowest loss",
            "you returned the learning rate with the LOWEST final loss, the best rate. The "
            "question asks for the largest rate that still trains (loss below the threshold), "
            "however good.", _largest_variant("lowest_loss")),
    Mistake("an index instead of a learning rate",
            "you returned the position in the grid; return the learning rate itself, "
            "`grid[i]`.", _largest_variant("index")),
)

_LARGEST_LAYOUTS = {
    False: [("a network that stops training above 0.3",
             [1.42, 0.46, 0.29, 1.57, 2.32, 2.42], GRID, 1.0),
            ("a network that trains up to 3.0", [0.74, 0.28, 0.093, 0.091, 0.23, 2.2], GRID, 1.0)],
    True: [("diverged runs (NaN and inf)", [0.9, 0.5, 0.4, float("nan"), float("inf"),
                                            float("nan")], GRID, 1.0),
           ("noisy: fails at 0.1, trains again at 0.3", [0.8, 1.3, 0.6, 2.0, 2.3, 2.3],
            GRID, 1.0),
           ("a loss exactly at the threshold, as NumPy arrays",
            np.array([0.7, 0.4, 0.3, 0.5, 0.5, float("nan")]), np.array([0.01, 0.03, 0.1, 0.3,
                                                                          1.0, 3.0]), 0.5),
           ("another threshold, a list grid", [1.4, 1.2, 1.45, 1.9, 2.4, 2.3],
            list(GRID), 1.5)],
}


def _largest_cases(hidden):
    out = []
    for label, losses, grid, threshold in _LARGEST_LAYOUTS[hidden]:
        shown = ", ".join(f"{v:g}" for v in np.asarray(losses, dtype=float))
        out.append(Case(f"{label}: losses [{shown}], threshold {threshold:g}",
                        ("losses", "grid", "threshold"),
                        (losses if isinstance(losses, np.ndarray) else list(losses),
                         grid if isinstance(grid, np.ndarray) else tuple(grid), threshold),
                        np.dtype(np.float64)))
    return out


SPECS = {
    "bias_gradient": Spec(
        "bias_gradient", "bias_gradient", (Output("gradient"),), (0,), _gradient_reference,
        _gradient_cases, _GRADIENT_MISTAKES,
        (("gradient", "with tf.GradientTape(): logits = model(x, training=True); loss = the "
                      "mean sparse categorical cross-entropy of the logits "
                      "(from_logits=True); then tape.gradient(loss, dense_1's bias)."),),
        oracle="the check's own tf.GradientTape computation", features="dense_1's units",
        driver=_drive_gradient),
    "largest_trainable_lr": Spec(
        "largest_trainable_lr", "largest_trainable_lr", (Output("lr"),), (0,), _largest_ref,
        _largest_cases, _LARGEST_MISTAKES,
        (("lr", "keep the learning rates whose loss is finite and strictly below the "
                "threshold; return the largest of them."),),
        oracle="the check's own selection"),
}


_CHECKS = Checks(__name__, SPECS)
cases, record, compare, _check = _CHECKS.cases, _CHECKS.record, _CHECKS.compare, _CHECKS.check


def check_bias_gradient(fn, hidden=False):
    """Part A: ``fn(model, x, y) -> gradient of the training loss w.r.t. dense_1's bias``."""
    __tracebackhide__ = True  # noqa: F841
    _check("bias_gradient", fn, hidden)


def check_largest_trainable_lr(fn, hidden=False):
    """Part B: ``fn(losses, grid, threshold) -> the largest learning rate that trains``."""
    __tracebackhide__ = True  # noqa: F841
    _check("largest_trainable_lr", fn, hidden)


# ---------------------------------------------------------------------------------------------
# Parts C and D: the measured numbers, recomputed by the check


@contextlib.contextmanager
def _determinism():
    """Deterministic TensorFlow ops while the experiment runs, as in the notebook; the previous
    setting is restored after (TensorFlow has no public switch back, hence the guarded import)."""
    import keras
    import tensorflow as tf

    try:
        from tensorflow.python.framework import config as tf_config

        was_on = tf_config.is_op_determinism_enabled()
    except (ImportError, AttributeError):  # pragma: no cover - another TensorFlow version
        tf_config, was_on = None, True
    keras.utils.set_random_seed(0)
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was_on:
            tf_config.disable_op_determinism()


def _sweep(placement):
    """Train ``placement`` at every learning rate of GRID from the same initial weights.

    Returns ``(rows)``, one ``(final_loss, test_accuracy, last_step_loss)`` per learning rate;
    ``final_loss`` is the mean loss of the last 10 steps, inf if not finite.
    """
    import keras

    x_train, y_train, x_test, y_test = _data()
    model = build_model(placement)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=GRID[0]),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = [v.numpy() for v in model.variables]
    rows = []
    for lr in GRID:
        for variable, value in zip(model.variables, start):
            variable.assign(value)
        for variable in model.optimizer.variables:
            variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
        model.optimizer.learning_rate.assign(lr)
        step_losses = [float(model.train_on_batch(x_train[idx], y_train[idx]))
                       for idx in batches()]
        final = float(np.mean(step_losses[-LAST:]))
        logits = np.asarray(model(x_test, training=False))
        accuracy = float(np.mean(np.argmax(logits, axis=1) == y_test))
        rows.append((final if math.isfinite(final) else math.inf, accuracy, step_losses[-1]))
    return rows


@functools.lru_cache(maxsize=1)
def recompute():
    """The experiment, run by the check: ``{placement: [(final loss, test accuracy,
    last step's loss) for each lr in GRID]}``. Cached: it runs once per process."""
    import warnings

    with _determinism(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {placement: _sweep(placement) for placement in PLACEMENTS}


def _measured():
    table = recompute()
    losses = {p: np.array([row[0] for row in table[p]]) for p in PLACEMENTS}
    lr = {p: _largest_ref(losses[p], GRID, TRAINS_BELOW)[0] for p in PLACEMENTS}
    i = GRID.index(GAP_LR)
    accuracy = {p: table[p][i][1] for p in PLACEMENTS}
    return table, losses, lr, accuracy


QUESTIONS = {
    "losses": "the final losses, {placement: [one per learning rate of GRID]}",
    "lr_none": "the largest learning rate of GRID at which the network without BN still trains",
    "lr_before": "the largest learning rate of GRID at which the network with BN before each "
                 "ReLU still trains",
    "lr_after": "the largest learning rate of GRID at which the network with BN after each "
                "ReLU still trains",
    "gap": f"test accuracy at lr={GAP_LR:g}, BN before the ReLU minus no BN",
}


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        return None
    return float(value)


def record_answer(question, answer):
    """Step 1 for a measured answer: keep it as plain data (floats, lists of floats)."""
    rec = {"check": question, "type": type(answer).__name__, "returned": None}
    if question == "losses":
        if isinstance(answer, dict):
            rec["returned"] = {str(k): _floats(v) for k, v in answer.items()}
    else:
        if hasattr(answer, "numpy"):
            answer = answer.numpy()
        if isinstance(answer, np.ndarray) and answer.size == 1:
            answer = answer.reshape(()).item()
        rec["returned"] = _number(answer)
    return rec


def _floats(values):
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def compare_answer(rec, hidden=False):
    """Step 2: the format (visible) or the value against the recomputation (hidden)."""
    __tracebackhide__ = True  # noqa: F841
    question = rec["check"]
    name = f"answer_{question}" if question != "losses" else "losses"
    if question == "losses":
        _compare_losses(rec, hidden)
        return
    value = rec["returned"]
    if rec["type"] == "NoneType":
        fail(f"`{name}` is None: you have not answered yet. Set it to {QUESTIONS[question]} "
             "(a number your code computes).")
    if value is None:
        fail(f"`{name}` must be a number; received a {rec['type']}.")
    if question.startswith("lr_") and not any(np.isclose(value, lr) for lr in GRID):
        fail(f"`{name}` = {value:g} is not one of the learning rates of GRID {GRID}.")
    if not hidden:
        return
    _, losses, lr, accuracy = _measured()
    if question.startswith("lr_"):
        placement = question[3:]
        expected = lr[placement]
        if np.isclose(value, expected, rtol=1e-6):
            return
        lines = [f"`{name}` = {value:g}, but the grader's own run of the experiment finds "
                 f"{expected:g}.",
                 f"  the grader's final losses ({placement}): "
                 + ", ".join(f"lr={g:g}: {loss:.3g}" for g, loss in zip(GRID, losses[placement]))
                 + f"  (trains: below {TRAINS_BELOW:g})"]
        lines.append(_diagnose_lr(value, placement, lr, losses[placement]))
        fail("\n".join(lines), mistake=named(lines[-1]), kind="measured")
    expected = accuracy["before"] - accuracy["none"]
    if abs(value - expected) <= 0.02:
        return
    i = GRID.index(GAP_LR)
    candidates = [
        ("sign reversed", -expected, "you computed no BN minus BN; the question asks for the "
                                     "accuracy WITH BN (before the ReLU) minus WITHOUT."),
        ("percentage points", 100 * expected, "you gave the gap in percentage points; give it "
                                               "as a fraction (accuracies between 0 and 1)."),
        ("BN after the ReLU", accuracy["after"] - accuracy["none"],
         "you used the placement \"after\"; the question is about BN before the ReLU."),
    ] + [(f"another learning rate ({g:g})",
          recompute()["before"][j][1] - recompute()["none"][j][1],
          f"you measured at lr={g:g}; the question asks for lr={GAP_LR:g}.")
         for j, g in enumerate(GRID) if j != i]
    why = next((f"Most likely mistake ({label}): {text}" for label, v, text in candidates
                if abs(value - v) <= 0.02 and abs(v - expected) > 0.02), "")
    fail(f"`{name}` = {value:.4g}, but the grader's own run finds {expected:.4g} (test accuracy "
         f"at lr={GAP_LR:g}: {accuracy['before']:.4f} with BN before the ReLU, "
         f"{accuracy['none']:.4f} without BN; tolerance 0.02).\n" + why, mistake=named(why),
         kind="measured")


def _diagnose_lr(value, placement, lr, losses):
    expected = lr[placement]
    above = [g for g in GRID if g > expected]
    if above and np.isclose(value, min(above)):
        return ("Most likely mistake (the first learning rate that fails): that is the "
                "smallest rate at which it no longer trains; the question asks for the largest "
                "at which it still does.")
    for other in PLACEMENTS:
        if other != placement and np.isclose(value, lr[other]) and not np.isclose(
                lr[other], expected):
            return (f"Most likely mistake (another placement): {value:g} is the answer for "
                    f"placement \"{other}\"; this question is about \"{placement}\".")
    best = GRID[int(np.argmin(np.where(np.isfinite(losses), losses, np.inf)))]
    if np.isclose(value, best):
        return ("Most likely mistake (the learning rate with the lowest loss): the question "
                "asks for the largest rate that still trains, not the best one.")
    return ("Is your loss the mean over the last 10 steps, and did every run start from the "
            "same initial weights (train_and_evaluate builds a fresh model each time)?")


def _compare_losses(rec, hidden):
    value = rec["returned"]
    if rec["type"] == "NoneType":
        fail("`losses` is None: you have not run the sweep yet.")
    if value is None:
        fail(f"`losses` must be a dict {{placement: list of final losses}}; received a "
             f"{rec['type']}.")
    missing = [p for p in PLACEMENTS if p not in value]
    if missing:
        fail(f"`losses` has no entry for {missing}: it needs one for each of {PLACEMENTS}.")
    for p in PLACEMENTS:
        if value[p] is None or len(value[p]) != len(GRID):
            got = "not a list of numbers" if value[p] is None else f"{len(value[p])} values"
            fail(f"`losses[\"{p}\"]` must hold {len(GRID)} numbers, one per learning rate of "
                 f"GRID; received {got}.")
    if not hidden:
        return
    table, losses, _, _ = _measured()

    def same(received, expected):
        r = np.where(np.isfinite(received), received, np.inf)
        return close(r, expected, np.float32, tol=(2e-2, 2e-3))

    for p in PLACEMENTS:
        received = np.array(value[p], dtype=float)
        if same(received, losses[p]):
            continue
        why = ""
        for other in PLACEMENTS:
            if other != p and same(received, losses[other]):
                why = (f"Most likely mistake (placements mixed up): these are the losses of "
                       f"\"{other}\".")
        last = np.array([row[2] for row in table[p]])
        if not why and same(received, np.where(np.isfinite(last), last, np.inf)):
            why = ("Most likely mistake (last step only): these are the losses of the LAST step; "
                   "the final loss is the mean over the last 10 steps (one step is noisy).")
        fail(f"`losses[\"{p}\"]` differs from the grader's own run of the experiment.\n"
             f"  expected: {show(losses[p], 6)}\n  received: {show(received, 6)}\n"
             + (why or "Did you run train_and_evaluate(placement, lr) for each lr of GRID, in "
                       "order?"), mistake=named(why), kind="measured")


def check_answer(question, answer, hidden=False):
    """Parts C and D: ``check_answer("lr_none", answer_lr_none)``; hidden checks recompute."""
    __tracebackhide__ = True  # noqa: F841
    judge(__name__, "compare_answer", record_answer(question, answer), hidden)
    name = "losses" if question == "losses" else f"answer_{question}"
    print(f"{name}: " + ("agrees with the grader's own run of the experiment." if hidden else
                         "a valid answer (it is compared with the grader's own run of the "
                         "experiment when you submit)."))
