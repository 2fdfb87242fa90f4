"""Checks for problem set 6, "Inference and deployment".

The grade cells of ``ps06_inference.ipynb`` call one function per graded part:

>>> from coursework import ps06_inference as checks
>>> checks.check_fold_conv_bn(fold_conv_bn)                              # doctest: +SKIP
>>> checks.check_finetune(build_finetune_model, hidden=True)             # doctest: +SKIP
>>> checks.check_population_statistics(population_statistics)            # doctest: +SKIP
>>> checks.check_adabn_statistics(adabn_statistics)                      # doctest: +SKIP

Each check is two separate steps: ``record(key, fn, hidden)`` calls the learner's function on
fixed, seeded inputs and keeps what came back as plain data; ``compare(key, records)``
recomputes what is expected from the same seeds, in NumPy, and names the catalogued mistake
that explains the outputs of every case, if one does (Part A also keeps the input's precision,
as the notebook asks).

* Part A, ``fold_conv_bn``: the folded kernel and bias of a Conv2D followed by inference-mode
  BN, the formula of ``course_lib.folding`` (``tests/test_checks_ps06_inference.py`` checks the oracle
  against ``course_lib.fold_batchnorm`` and Keras's Conv2D + BatchNormalization). A failure
  also reports how far the learner's folded convolution is from conv + BN on test images.
* Part B, ``build_finetune_model``: a behaviour check. ``record`` builds a "pretrained" Keras
  base from the seed, calls the learner's function, and runs a few fine-tuning steps on
  new-domain data (the one part of the checks that imports Keras); ``compare`` judges what it
  recorded: the BN moving statistics are the pretrained ones, the model computes the same in
  training and inference mode, and the base's kernels were fine-tuned.
* Part C, ``population_statistics``: Algorithm 2 of Ioffe & Szegedy (2015),
  ``course_lib.reference.population_statistics`` with ``m`` the values per feature in a
  batch; ``adabn_statistics``: AdaBN (Li et al. 2016) through a two-block network, layer by
  layer as ``course_lib.recalibrate_batchnorm(method="adabn")`` does (checked in the tests).
* Multiple choice, ``check_answer``: Q1 (Part B) and Q2 to Q4 (Part D), keys in ``QUESTIONS``.
"""

import contextlib
import io
import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from course_lib import reference as ref
from coursework import _choice
from coursework._core import Case, Checks, Mistake, Output, Spec, _describe_exception, fail, named
from coursework._core import close as _close
from coursework._core import compare as _compare
from coursework._core import record as _record
from coursework._core import show as _show

__all__ = [
    "check_fold_conv_bn", "check_finetune", "check_population_statistics",
    "check_adabn_statistics", "check_answer", "record", "compare", "record_answer",
    "compare_answer", "cases", "SPECS", "QUESTIONS", "conv2d", "FINETUNE_STEPS",
]

_KEYS = ("fold_conv_bn", "finetune", "population_statistics", "adabn_statistics")


def _rng(key, hidden, index):
    return np.random.default_rng([2018, 6, _KEYS.index(key), int(hidden), index])


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def conv2d(x, kernel, bias):
    """A Conv2D in NumPy: NHWC images, kernel (kh, kw, cin, cout), 'valid' padding, stride 1."""
    kh, kw = kernel.shape[:2]
    windows = sliding_window_view(x, (kh, kw), axis=(1, 2))  # (N, H', W', cin, kh, kw)
    return np.einsum("nhwcij,ijco->nhwo", windows, kernel) + bias


# ---------------------------------------------------------------------------------------------
# Part A: fold BN into the convolution before it

# (kernel shape (kh, kw, cin, cout), dtype, eps, with a conv bias)
_FOLD_VISIBLE = [((3, 5, 2, 4), np.float32, 1e-3, True), ((1, 1, 6, 3), np.float32, 1e-3, True)]
_FOLD_HIDDEN = [((5, 3, 4, 6), np.float64, 1e-5, True), ((2, 4, 3, 7), np.float32, 1e-3, False),
                ((3, 1, 8, 2), np.float64, 1e-2, True)]
_FOLD_NAMES = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_var", "eps")


def _fold_cases(hidden):
    out = []
    for i, (shape, dtype, eps, with_bias) in enumerate(_FOLD_HIDDEN if hidden else _FOLD_VISIBLE):
        rng = _rng("fold_conv_bn", hidden, i)
        c = shape[-1]
        kernel = rng.normal(0.0, 0.5, shape)
        bias = rng.normal(0.0, 1.0, c) if with_bias else np.zeros(c)
        gamma = rng.uniform(0.5, 2.0, c)
        beta = rng.normal(0.0, 1.0, c)
        moving_mean = rng.uniform(-2.0, 2.0, c)
        moving_var = rng.uniform(0.5, 3.0, c)
        moving_var[rng.integers(c)] = 0.01  # a small variance: the place of eps shows
        args = tuple(a.astype(dtype) for a in (kernel, bias, gamma, beta, moving_mean, moving_var))
        label = (f"kernel of shape {shape}, {np.dtype(dtype).name}, eps={eps:g}"
                 + ("" if with_bias else ", a convolution without bias (bias = 0)"))
        out.append(Case(label, _FOLD_NAMES, args + (eps,), np.dtype(dtype), c))
    return out


def _fold(kernel, bias, gamma, beta, mean, var, eps, std="inside", use_bias=True,
          use_beta=True, scale_bias=True, scale_mean=True, scale_kernel=True, invert=False):
    kernel, bias, gamma, beta, mean, var = _f64(kernel, bias, gamma, beta, mean, var)
    denominator = {"inside": np.sqrt(var + eps), "missing": np.sqrt(var),
                   "outside": np.sqrt(var) + eps, "no_sqrt": var + eps}[std]
    s = denominator / gamma if invert else gamma / denominator
    b = bias if use_bias else 0.0
    new_kernel = kernel * s if scale_kernel else kernel
    if scale_bias and scale_mean:
        new_bias = (b - mean) * s
    elif scale_mean:  # only the mean is scaled
        new_bias = b - mean * s
    elif scale_bias:  # only the conv bias is scaled
        new_bias = b * s - mean
    else:
        new_bias = b - mean
    return new_kernel, new_bias + (beta if use_beta else 0.0)


def _fold_ref(*args):
    return _fold(*args)


def _fold_variant(**change):
    return lambda *args: _fold(*args, **change)


_FOLD_MISTAKES = (
    Mistake("conv bias ignored",
            "your folded bias is beta - moving_mean * s: the convolution's own bias b is lost. "
            "BN sees conv(x) + b, so the folded bias is (b - moving_mean) * s + beta.",
            _fold_variant(use_bias=False)),
    Mistake("missing epsilon",
            "your scale is gamma / sqrt(moving_var), without epsilon. BN at inference divides by "
            "sqrt(moving_var + eps): s = gamma / sqrt(moving_var + eps).",
            _fold_variant(std="missing")),
    Mistake("epsilon outside the square root",
            "your scale is gamma / (sqrt(moving_var) + eps); use gamma / sqrt(moving_var + eps).",
            _fold_variant(std="outside")),
    Mistake("variance instead of standard deviation",
            "you divided by moving_var + eps; BN divides by its square root: "
            "s = gamma / sqrt(moving_var + eps).",
            _fold_variant(std="no_sqrt")),
    Mistake("scale inverted",
            "your scale is sqrt(moving_var + eps) / gamma; BN multiplies by gamma and divides by "
            "the standard deviation: s = gamma / sqrt(moving_var + eps).",
            _fold_variant(invert=True)),
    Mistake("beta missing",
            "your folded bias lacks beta: BN adds beta after scaling, so the folded bias is "
            "(b - moving_mean) * s + beta.",
            _fold_variant(use_beta=False)),
    Mistake("conv bias not scaled",
            "you scaled moving_mean but not the convolution's bias b. BN scales everything the "
            "convolution outputs, its bias included: (b - moving_mean) * s + beta.",
            _fold_variant(scale_bias=False)),
    Mistake("moving mean not scaled",
            "you subtracted moving_mean after the scaling. BN subtracts the mean first, then "
            "scales: (b - moving_mean) * s + beta, not b * s - moving_mean + beta.",
            _fold_variant(scale_mean=False)),
    Mistake("bias not scaled at all",
            "your folded bias is b - moving_mean + beta. BN multiplies (b - moving_mean) by "
            "s = gamma / sqrt(moving_var + eps) before adding beta.",
            _fold_variant(scale_bias=False, scale_mean=False)),
    Mistake("kernel not scaled",
            "the folded kernel must include BN's per-channel scale: kernel * s, with s of shape "
            "(cout,) multiplying the LAST axis of the kernel (the output channels).",
            _fold_variant(scale_kernel=False)),
)


def _fold_images(case, hidden, index):
    """Test images for the conv-output comparison in the failure message."""
    kh, kw, cin, _ = case.args[0].shape
    rng = np.random.default_rng([2018, 6, 99, int(hidden), index])
    return rng.normal(0.5, 1.0, (2, kh + 3, kw + 2, cin))


def _conv_note(records):
    """One line: how far the learner's folded convolution is from conv + BN on test images."""
    for rec in records:
        if rec["error"] is not None or not isinstance(rec["returned"], (tuple, list)) \
                or len(rec["returned"]) != 2:
            continue
        case = SPECS["fold_conv_bn"].cases(rec["hidden"])[rec["case"]]
        kernel, bias, gamma, beta, mean, var, eps = case.args
        try:
            k, b = (np.asarray(v, dtype=np.float64) for v in rec["returned"])
            if k.shape != kernel.shape or b.shape != bias.shape:
                continue
            x = _fold_images(case, rec["hidden"], rec["case"])
            z = conv2d(x, *_f64(kernel, bias))
            expected = (z - mean) / np.sqrt(_f64(var)[0] + eps) * gamma + beta
            received = conv2d(x, k, b)
        except Exception:  # noqa: BLE001 - odd values: no note
            continue
        if _close(received, expected, case.dtype):
            continue
        diff = float(np.max(np.abs(received - expected)))
        kind = "hidden" if rec["hidden"] else "visible"
        return (f"\n\nOn {kind} case {rec['case'] + 1}, conv2d(x, folded_kernel, folded_bias) "
                f"differs from BN(conv2d(x, kernel, bias)) by up to {diff:.4g} on test images x "
                f"of shape {x.shape}: the folded layer does not compute what conv + BN computes.")
    return ""


# ---------------------------------------------------------------------------------------------
# Part B: the fine-tuning bug (Keras)

FINETUNE_STEPS = 3
# label, layers of the base: ("conv", filters, kernel size) or ("dense", units), each followed by
# a BN layer and a ReLU; input shape; number of classes of the new head.
_FINETUNE_VISIBLE = [("a Conv2D + BN base, 6x5 RGB images", (("conv", 4, 3),), (6, 5, 3), 3)]
_FINETUNE_HIDDEN = [("a Dense + BN + Dense + BN base", (("dense", 5), ("dense", 4)), (7,), 2),
                    ("a base of two Conv2D + BN blocks", (("conv", 3, 2), ("conv", 5, 2)),
                     (7, 6, 2), 4)]


def _finetune_cases(hidden):
    return _FINETUNE_HIDDEN if hidden else _FINETUNE_VISIBLE


def _finetune_weights(hidden, index):
    """The "pretrained" weights of the base, from the seed: {layer name: [arrays]}."""
    label, blocks, input_shape, classes = _finetune_cases(hidden)[index]
    rng = _rng("finetune", hidden, index)
    weights = {}
    channels = input_shape[-1]
    for j, block in enumerate(blocks, start=1):
        units = block[1]
        fan_in = channels * (block[2] ** 2 if block[0] == "conv" else 1)
        shape = (block[2], block[2], channels, units) if block[0] == "conv" else (channels, units)
        weights[f"{block[0]}_{j}"] = [rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)]
        weights[f"bn_{j}"] = [rng.uniform(0.8, 1.2, units), rng.normal(0.0, 0.1, units),
                              rng.normal(0.0, 0.3, units), rng.uniform(0.3, 0.8, units)]
        channels = units
    return {name: [w.astype(np.float32) for w in ws] for name, ws in weights.items()}


def _finetune_data(hidden, index):
    """New-domain batches: inputs far from the pretraining domain, so BN's batch statistics
    differ from its moving statistics. (probe, [(x, y), ...])."""
    label, blocks, input_shape, classes = _finetune_cases(hidden)[index]
    rng = np.random.default_rng([2018, 6, 98, int(hidden), index])
    batches = [(rng.normal(2.0, 3.0, (8,) + input_shape).astype(np.float32),
                rng.integers(0, classes, 8)) for _ in range(FINETUNE_STEPS)]
    probe = rng.normal(2.0, 3.0, (6,) + input_shape).astype(np.float32)
    return probe, batches


def _build_base(hidden, index):
    import keras

    label, blocks, input_shape, classes = _finetune_cases(hidden)[index]
    layers = [keras.Input(input_shape)]
    for j, block in enumerate(blocks, start=1):
        if block[0] == "conv":
            layers.append(keras.layers.Conv2D(block[1], block[2], use_bias=False, name=f"conv_{j}"))
        else:
            layers.append(keras.layers.Dense(block[1], use_bias=False, name=f"dense_{j}"))
        layers += [keras.layers.BatchNormalization(name=f"bn_{j}"),
                   keras.layers.ReLU(name=f"relu_{j}")]
    if blocks[-1][0] == "conv":
        layers.append(keras.layers.GlobalAveragePooling2D(name="pool"))
    base = keras.Sequential(layers, name="base")
    for name, values in _finetune_weights(hidden, index).items():
        base.get_layer(name).set_weights(values)
    base.trainable = False  # as after phase 1 of transfer learning: the head was trained on it
    return base


def _record_finetune(fn, hidden=False):
    """Step 1 of Part B: build the base, call ``fn(base, classes)``, fine-tune a few steps."""
    return [_finetune_one(fn, hidden, i) for i in range(len(_finetune_cases(hidden)))]


def _finetune_one(fn, hidden, index):
    rec = {"check": "finetune", "hidden": bool(hidden), "case": index, "error": None,
           "problem": None, "stage": "", "module": getattr(fn, "__module__", None)}
    if not callable(fn):
        rec["problem"] = f"is {type(fn).__name__}, not a function"
        return rec
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            _run_finetune(fn, hidden, index, rec)
        except Exception as exc:  # noqa: BLE001 - whatever the learner's code raises is reported
            rec["error"] = _describe_exception(exc)
    return rec


def _run_finetune(fn, hidden, index, rec):
    import keras

    label, blocks, input_shape, classes = _finetune_cases(hidden)[index]
    base = _build_base(hidden, index)
    rec["stage"] = f"calling it as build_finetune_model(base, {classes})"
    model = fn(base, classes)
    if model is None:
        rec["problem"] = "returned None: did you forget `return model`?"
        return
    if not isinstance(model, keras.Model):
        rec["problem"] = f"returned a {type(model).__name__}, not a keras.Model"
        return
    layers = {layer.name: layer for layer in model._flatten_layers(include_self=False)}
    missing = [name for name in _finetune_weights(hidden, index) if name not in layers]
    if missing:
        rec["problem"] = (f"returned a model without the base's layer(s) {missing}: build the "
                          "fine-tuning model on the pretrained `base` you are given")
        return
    base_calls = [layer for layer in model._flatten_layers(include_self=False)
                  if layer.name == "base"]
    try:
        rec["training_args"] = [node.arguments.kwargs.get("training")
                                for layer in base_calls for node in layer._inbound_nodes]
    except Exception:  # noqa: BLE001 - a diagnosis aid only
        rec["training_args"] = []
    probe, batches = _finetune_data(hidden, index)
    rec["stage"] = "calling the model on new-domain images"
    train_out = keras.ops.convert_to_numpy(model(probe, training=True))
    infer_out = keras.ops.convert_to_numpy(model(probe, training=False))
    rec["output_shape"] = list(np.shape(infer_out))
    if tuple(np.shape(infer_out)) != (len(probe), classes):
        rec["problem"] = (f"returned a model whose output has shape {tuple(np.shape(infer_out))} "
                          f"for {len(probe)} images; expected ({len(probe)}, {classes}), one "
                          "logit per class")
        return
    rec["output_training"] = np.asarray(train_out, dtype=np.float64).tolist()
    rec["output_inference"] = np.asarray(infer_out, dtype=np.float64).tolist()
    rec["stage"] = f"fine-tuning it for {FINETUNE_STEPS} steps (compile, then train_on_batch)"
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=True)
    for x, y in batches:
        model.train_on_batch(x, y)
    rec["weights"] = {name: [keras.ops.convert_to_numpy(w).astype(np.float64).tolist()
                             for w in layers[name].weights]
                      for name in _finetune_weights(hidden, index)}
    rec["stage"] = ""


def _compare_finetune(records):
    __tracebackhide__ = True  # noqa: F841
    for rec in records:
        message = _judge_finetune(rec)
        if message:
            fail(message, mistake=named(message), kind="behaviour")
    return len(records)


def _judge_finetune(rec):
    fn = "`build_finetune_model`"
    label, blocks, input_shape, classes = _finetune_cases(rec["hidden"])[rec["case"]]
    where = f"{'hidden' if rec['hidden'] else 'visible'} case {rec['case'] + 1} ({label})"
    if rec["error"] is not None:
        err = rec["error"]
        if err["type"] == "NotImplementedError" and not err["message"]:
            return ("`build_finetune_model` is not implemented yet: replace "
                    "`raise NotImplementedError()` with your code.")
        text = f"{fn} raised {err['type']}: {err['message']}\n  on {where}"
        if rec["stage"]:
            text += f", while {rec['stage']}"
        if err["where"]:
            text += f"\n  in your code at {err['where']}"
        return text
    if rec["problem"]:
        end = "" if rec["problem"].endswith(("?", ".")) else "."
        return f"{fn} {rec['problem']}{end}\n  on {where}"

    pretrained = _finetune_weights(rec["hidden"], rec["case"])
    weights = {name: [np.asarray(w) for w in ws] for name, ws in rec["weights"].items()}
    steps = f"{FINETUNE_STEPS} fine-tuning steps on new-domain batches"
    moved = []
    for name in pretrained:
        if name.startswith("bn_"):
            for k, stat in ((2, "moving_mean"), (3, "moving_variance")):
                if not _close(weights[name][k], pretrained[name][k].astype(np.float64),
                              np.float32):
                    moved.append((name, stat, pretrained[name][k], weights[name][k]))
    out_t, out_i = np.asarray(rec["output_training"]), np.asarray(rec["output_inference"])
    same_modes = _close(out_t, out_i, np.float32)
    kernels = [name for name in pretrained if not name.startswith("bn_")]
    frozen = [name for name in kernels
              if np.array_equal(weights[name][0], pretrained[name][0].astype(np.float64))]

    if moved:
        name, stat, before, after = moved[0]
        lines = [f"{fn}: the BN statistics changed during fine-tuning, on {where}.",
                 f"  expected: `{stat}` of layer '{name}' stays at the pretrained "
                 f"{_show(before)}",
                 f"  received: {_show(after)} after {steps}"]
        args = rec.get("training_args") or []
        if same_modes:
            lines.append("Your model computes the same in training and inference mode, but "
                         "something still updates the moving statistics: fine-tuning must "
                         "leave them as they were pretrained.")
        elif False in args:
            lines.append(
                "Most likely mistake (training=False overridden): you call the base with "
                "`base(inputs, training=False)`, the fix of the Keras guide, but in this "
                "course's Keras (3.15) a functional model called with training=True, as `fit` "
                "does, passes training=True on to every layer and overrides it "
                "(keras-team/keras#20285; Chapter 5 measures it). Keep the base's BN layers in "
                "inference mode another way: after unfreezing the base, set `trainable = False` "
                "on each of its BatchNormalization layers.")
        elif True in args:
            lines.append("Most likely mistake (base called with training=True): that forces "
                         "its BN layers to normalise with the new batches' statistics and to "
                         "update their moving statistics.")
        else:
            lines.append(
                "Most likely mistake (BN layers in training mode): with the base unfrozen, "
                "`fit` runs its BN layers in training mode: they normalise with the statistics "
                "of the new mini-batches and overwrite the pretrained moving statistics. After "
                "`base.trainable = True`, set `trainable = False` on each BatchNormalization "
                "layer of the base: in Keras 3 a non-trainable BN layer runs in inference "
                "mode whatever `training` says.")
        return "\n".join(lines)
    if not same_modes:
        diff = float(np.max(np.abs(out_t - out_i)))
        return (f"{fn}: the model computes something else in training mode than in inference "
                f"mode, on {where}.\n"
                f"  expected: model(x, training=True) == model(x, training=False) (BN in "
                f"inference mode; the head has no Dropout)\n"
                f"  received: they differ by up to {diff:.4g} on new-domain images\n"
                "Most likely mistake (BN still normalises with batch statistics): the moving "
                "statistics are kept (a momentum of 1?), but in training mode the BN layers "
                "still normalise with the statistics of each mini-batch, so the head is "
                "fine-tuned on features it never sees at inference. Put the BN layers in "
                "inference mode: `trainable = False` on each BN layer of the base.")
    if frozen:
        return (f"{fn}: the base was not fine-tuned, on {where}.\n"
                f"  expected: the kernel of layer '{frozen[0]}' changes during the {steps}\n"
                "  received: it did not change\n"
                "Most likely mistake (whole base frozen): fine-tuning trains the pretrained "
                "layers too. Unfreeze the base (`base.trainable = True`) and keep only its BN "
                "layers in inference mode (`trainable = False` on each of them).")
    return None


# ---------------------------------------------------------------------------------------------
# Part C1: Algorithm 2, the population statistics from the new domain's mini-batches

# (label, shape, axis, batch_size, dtype)
_POP_VISIBLE = [("dense layer", (48, 5), -1, 8, np.float32),
                ("images, channels last", (12, 3, 4, 5), -1, 4, np.float32)]
_POP_HIDDEN = [("dense layer, float64", (60, 7), -1, 10, np.float64),
               ("images, channels first, float64", (8, 3, 5, 4), 1, 2, np.float64),
               ("dense layer, batches of 3", (30, 4), -1, 3, np.float32),
               ("sequence (batch, time, features), float64", (18, 5, 3), -1, 6, np.float64)]


def _population_cases(hidden):
    out = []
    for i, (label, shape, axis, batch_size, dtype) in enumerate(
            _POP_HIDDEN if hidden else _POP_VISIBLE):
        rng = _rng("population_statistics", hidden, i)
        c, ndim = shape[axis], len(shape)
        view = [1] * ndim
        view[axis % ndim] = c
        loc = rng.uniform(-2.0, 3.0, c).reshape(view)
        scale = rng.uniform(0.5, 2.0, c).reshape(view)
        # Batches that differ from each other (a drifting stream), so the mean of the batch
        # variances and the variance of all the data differ.
        drift = np.repeat(rng.normal(0.0, 1.0, (shape[0] // batch_size,) + (1,) * (ndim - 1)),
                          batch_size, axis=0)
        x = loc + scale * rng.standard_normal(shape) + drift
        m = batch_size * x[0].size // c
        out.append(Case(f"{label}: x of shape {shape}, {np.dtype(dtype).name}, axis={axis}, "
                        f"batch_size={batch_size} ({shape[0] // batch_size} batches, m={m} "
                        "values per feature and batch)", ("x", "batch_size", "axis"),
                        (x.astype(dtype), batch_size, axis), np.dtype(dtype), c))
    return out


def _batch_moments(x, batch_size, axis, ddof=0):
    x = _f64(x)[0]
    axes = ref.reduction_axes(x.ndim, axis)
    batches = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    means = np.stack([b.mean(axis=axes) for b in batches])
    variances = np.stack([b.var(axis=axes, ddof=ddof) for b in batches])
    return means, variances, batch_size * x[0].size // x.shape[axis]


def _population_ref(x, batch_size, axis):
    means, variances, m = _batch_moments(x, batch_size, axis)
    return ref.population_statistics(means, variances, m)


def _population_variant(correction="m", ddof=0, pooled=False, fixed_axis=None):
    def outputs(x, batch_size, axis):
        if fixed_axis is not None:  # `axis` ignored: the features read along a fixed axis
            axis = fixed_axis
        if pooled:
            x64 = _f64(x)[0]
            axes = ref.reduction_axes(x64.ndim, axis)
            return x64.mean(axis=axes), x64.var(axis=axes, ddof=ddof)
        means, variances, m = _batch_moments(x, batch_size, axis, ddof=ddof)
        factor = {"m": m / (m - 1.0), "none": 1.0, "batch": batch_size / (batch_size - 1.0)}
        return means.mean(axis=0), factor[correction] * variances.mean(axis=0)

    return outputs


_POPULATION_MISTAKES = (
    Mistake("m/(m-1) correction missing",
            "your variance is the mean of the (biased) batch variances. Algorithm 2 corrects it "
            "to an unbiased estimate: Var[x] = m/(m-1) * mean of the batch variances.",
            _population_variant(correction="none")),
    Mistake("m counts examples only",
            "you used m = batch_size. m is the number of values each feature has in a batch: "
            "after a convolution, batch_size * H * W (every axis except `axis`).",
            _population_variant(correction="batch")),
    Mistake("corrected twice",
            "your batch variances are already unbiased (ddof=1) and you multiplied by m/(m-1) "
            "again. Take the biased batch variances (divide by m), then correct once.",
            _population_variant(correction="m", ddof=1)),
    Mistake("variance of all the data",
            "you took the variance of all the data at once. Algorithm 2 averages the "
            "variances WITHIN the batches (each batch normalised with its own statistics in "
            "training): split x into consecutive batches of batch_size first.",
            _population_variant(pooled=True)),
    Mistake("unbiased variance of all the data",
            "you took the unbiased variance of all the data at once. Algorithm 2 averages the "
            "variances WITHIN the batches: split x into consecutive batches of batch_size, "
            "average their biased variances, multiply by m/(m-1).",
            _population_variant(pooled=True, ddof=1)),
    Mistake("wrong feature axis",
            "the features are along `axis` (axis=1 for channels-first images): average over "
            "every other axis. Your statistics are those of the features along the last axis, "
            "whatever `axis` says.",
            _population_variant(fixed_axis=-1)),
    Mistake("wrong feature axis",
            "the features are along `axis` (the last axis for channels-last images): average "
            "over every other axis. Your statistics are those of the features along axis 1, "
            "whatever `axis` says.",
            _population_variant(fixed_axis=1)),
)


# ---------------------------------------------------------------------------------------------
# Part C2: AdaBN through a two-block network, layer by layer

# (N, D, C1, C2, dtype, eps)
_ADABN_VISIBLE = [(40, 6, 5, 4, np.float32, 1e-3)]
_ADABN_HIDDEN = [(64, 7, 6, 3, np.float64, 1e-5), (30, 4, 8, 5, np.float32, 1e-2)]
_PARAMS = ("kernel1", "gamma1", "beta1", "moving_mean1", "moving_var1",
           "kernel2", "gamma2", "beta2", "moving_mean2", "moving_var2")


def _adabn_cases(hidden):
    out = []
    for i, (n, d, c1, c2, dtype, eps) in enumerate(_ADABN_HIDDEN if hidden else _ADABN_VISIBLE):
        rng = _rng("adabn_statistics", hidden, i)
        params = {}
        for j, (fan_in, units) in enumerate(((d, c1), (c1, c2)), start=1):
            params[f"kernel{j}"] = rng.normal(0.0, 1.0 / np.sqrt(fan_in), (fan_in, units))
            params[f"gamma{j}"] = rng.uniform(0.5, 1.5, units)
            params[f"beta{j}"] = rng.normal(0.0, 0.5, units)
            params[f"moving_mean{j}"] = rng.normal(0.0, 0.2, units)  # the old domain's
            params[f"moving_var{j}"] = rng.uniform(0.5, 1.0, units)
        params = {k: params[k].astype(dtype) for k in _PARAMS}
        # The new domain: shifted and rescaled inputs.
        x = rng.uniform(1.0, 3.0, d) + rng.uniform(1.0, 2.5, d) * rng.standard_normal((n, d))
        out.append(Case(f"x of shape ({n}, {d}), blocks of {c1} and {c2} units, "
                        f"{np.dtype(dtype).name}, eps={eps:g}", ("x", "params", "eps"),
                        (x.astype(dtype), params, eps), np.dtype(dtype), 0))
    return out


def _block(x, p, j, eps, mean, var):
    z = x @ p[f"kernel{j}"]
    return np.maximum(p[f"gamma{j}"] * (z - mean) / np.sqrt(var + eps) + p[f"beta{j}"], 0.0)


def _adabn(x, params, eps, ddof=0, stale=False, where="input", recompute=True):
    x = _f64(x)[0]
    p = {k: _f64(v)[0] for k, v in params.items()}
    out, h = [], x
    for j in (1, 2):
        z = h @ p[f"kernel{j}"]
        mean, var = z.mean(axis=0), z.var(axis=0, ddof=ddof)
        old = (p[f"moving_mean{j}"], p[f"moving_var{j}"])
        h_next = _block(h, p, j, eps, *(old if stale else (mean, var)))
        if where == "output":
            mean, var = h_next.mean(axis=0), h_next.var(axis=0, ddof=ddof)
        elif where == "dense input":
            mean, var = h.mean(axis=0), h.var(axis=0, ddof=ddof)
        out += [mean, var] if recompute else list(old)
        h = h_next
    return tuple(out)


def _adabn_ref(x, params, eps):
    return _adabn(x, params, eps)


_ADABN_MISTAKES = (
    Mistake("stale statistics upstream",
            "your block-2 statistics were computed with block 1 still normalising with its OLD "
            "moving statistics. Recalibrate layer by layer: set block 1's new statistics first, "
            "then run block 1 with them to get block 2's inputs.",
            lambda x, params, eps: _adabn(x, params, eps, stale=True)),
    Mistake("unbiased variance",
            "your variances divide by N-1. AdaBN takes the statistics of the new domain's data "
            "itself: the mean and the biased variance (divide by N) of the BN inputs.",
            lambda x, params, eps: _adabn(x, params, eps, ddof=1)),
    Mistake("statistics of the block's output",
            "you took the statistics after BN and ReLU. BN's moving statistics describe BN's "
            "INPUT, z = h @ kernel, the dense layer's output.",
            lambda x, params, eps: _adabn(x, params, eps, where="output")),
    Mistake("statistics of the dense layer's input",
            "you took the statistics of the block's input h. BN normalises the dense layer's "
            "OUTPUT z = h @ kernel: take the statistics of z (one value per unit of the block).",
            lambda x, params, eps: _adabn(x, params, eps, where="dense input")),
    Mistake("old statistics returned",
            "you returned the old moving statistics from `params`. Compute new ones from the "
            "new-domain data x.",
            lambda x, params, eps: _adabn(x, params, eps, recompute=False)),
)


# ---------------------------------------------------------------------------------------------

SPECS = {
    "fold_conv_bn": Spec(
        "fold_conv_bn", "fold_conv_bn",
        (Output("folded_kernel"), Output("folded_bias")), (1, 0), _fold_ref, _fold_cases,
        _FOLD_MISTAKES,
        (("folded_bias", "folded_bias = (bias - moving_mean) * s + beta, with "
                         "s = gamma / sqrt(moving_var + eps)."),
         ("folded_kernel", "folded_kernel = kernel * s: s has shape (cout,) and multiplies the "
                           "last axis.")),
        oracle="the folding formula of course_lib.folding, in float64", precision=True),
    "population_statistics": Spec(
        "population_statistics", "population_statistics",
        (Output("mean", per_feature=True), Output("var", per_feature=True)), (0, 1),
        _population_ref, _population_cases, _POPULATION_MISTAKES,
        (("mean", "the mean of the batch means (which, for equal batches, is the mean of x)."),
         ("var", "m/(m-1) times the mean of the biased batch variances, m the values per "
                 "feature in one batch.")),
        oracle="course_lib.reference.population_statistics"),
    "adabn_statistics": Spec(
        "adabn_statistics", "adabn_statistics",
        (Output("mean1", per_feature=True), Output("var1", per_feature=True),
         Output("mean2", per_feature=True), Output("var2", per_feature=True)), (0, 1, 2, 3),
        _adabn_ref, _adabn_cases, _ADABN_MISTAKES,
        (("mean1", "the mean over the examples of z1 = x @ kernel1."),
         ("var1", "the biased variance over the examples of z1 = x @ kernel1."),
         ("mean2", "z2 = h1 @ kernel2, with h1 = block_forward(x, ...) run with the NEW "
                   "statistics of block 1."),
         ("var2", "the biased variance of z2 = h1 @ kernel2, h1 computed with the new "
                  "statistics of block 1.")),
        oracle="the NumPy oracle (= course_lib.recalibrate_batchnorm, method='adabn')",
        features="C = the number of units of that block"),
}


_CHECKS = Checks(__name__, SPECS, label=lambda key, fn: (
    "build_finetune_model" if key == "finetune" else SPECS[key].function))
cases, _check = _CHECKS.cases, _CHECKS.check


def record(key, fn, hidden=False):
    """Step 1: call the learner's function on the fixed inputs; return plain-data records."""
    if key == "finetune":
        return _record_finetune(fn, hidden)
    return _record(SPECS[key], fn, hidden)


def compare(key, records):
    """Step 2: judge the records; raise AssertionError with a diagnosis."""
    __tracebackhide__ = True  # noqa: F841
    if key == "finetune":
        return _compare_finetune(records)
    if key == "fold_conv_bn":
        try:
            return _compare(SPECS[key], records)
        except AssertionError as exc:
            fail(str(exc) + _conv_note(records), mistake=getattr(exc, "mistake", None),
                 kind=getattr(exc, "kind", None))
    return _compare(SPECS[key], records)


def check_fold_conv_bn(fn, hidden=False):
    """Part A: ``fn(kernel, bias, gamma, beta, moving_mean, moving_var, eps)`` returns
    ``(folded_kernel, folded_bias)``."""
    __tracebackhide__ = True  # noqa: F841
    _check("fold_conv_bn", fn, hidden)


def check_finetune(fn, hidden=False):
    """Part B: ``fn(base, num_classes) -> keras.Model``, judged by its behaviour in fine-tuning."""
    __tracebackhide__ = True  # noqa: F841
    _check("finetune", fn, hidden)


def check_population_statistics(fn, hidden=False):
    """Part C1: ``fn(x, batch_size, axis) -> (mean, var)``, Algorithm 2."""
    __tracebackhide__ = True  # noqa: F841
    _check("population_statistics", fn, hidden)


def check_adabn_statistics(fn, hidden=False):
    """Part C2: ``fn(x, params, eps) -> (mean1, var1, mean2, var2)``, AdaBN layer by layer."""
    __tracebackhide__ = True  # noqa: F841
    _check("adabn_statistics", fn, hidden)


# ---------------------------------------------------------------------------------------------
# Multiple choice (see coursework._choice): Q1 in Part B, Q2 to Q4 in Part D.

QUESTIONS = {
    "q1": {
        "options": "abcd",
        "key": "8db93559748f88791a96d8507afa70370687dd960fa2f02e714470f2caa022d1",
        "explanations": {
            "a": "That is PyTorch's behaviour for `requires_grad=False`. In Keras 3 a "
                 "BatchNormalization layer with trainable=False also runs in inference mode "
                 "(Chapter 5).",
            "b": "",
            "c": "With trainable=False the layer does not normalise with batch statistics "
                 "either: it runs in inference mode, with its moving statistics.",
            "d": "The layer still normalises, with its moving statistics, then scales and "
                 "shifts with its (now frozen) gamma and beta.",
        },
    },
    "q2": {
        "options": "abcd",
        "key": "5d674058d7484c7076ea82fd5f3e2c61f46d756aced057c1cf325b3d4378930b",
        "explanations": {
            "a": "With the statistics of the batch served, an example's output depends on the "
                 "other examples served with it, and a batch of one has variance 0: every BN "
                 "layer then outputs beta, whatever the input (Chapter 5). Inference uses the "
                 "moving statistics.",
            "b": "Updated with every batch served, the moving statistics learn from whatever the "
                 "service is sent, and its answers drift with the traffic. At inference nothing "
                 "is updated; to adapt to new data, recalibrate deliberately (Part C).",
            "c": "At inference BN still normalises, with its moving statistics, then scales and "
                 "shifts with gamma and beta: a fixed affine map, not the identity. (Dropout is "
                 "the layer that does nothing at inference.)",
            "d": "",
        },
    },
    "q3": {
        "options": "abcd",
        "key": "79513c5f9e7138aea4b1799328c1f64a3878fc1a4c86f9d33f51ee5b1c20031b",
        "explanations": {
            "a": "",
            "b": "In training mode BN normalises with the statistics of each batch, which change "
                 "from batch to batch and depend on every example in it; a convolution's fixed "
                 "kernel and bias cannot reproduce that. Folding holds in inference mode only.",
            "c": "The folded bias is (b - moving_mean) * s + beta: it absorbs the convolution's "
                 "own bias b (Part A), and with b = 0 it is the same formula.",
            "d": "Folding is exact algebra: at inference BN is an affine map of each channel, "
                 "and a convolution followed by an affine map of each output channel is one "
                 "convolution. Only floating-point rounding differs.",
        },
    },
    "q4": {
        "options": "abcd",
        "key": "aace9fe6150fc9b6307c66a4f080181d0d9767ae3bf11211ba7e05555b1fa1b5",
        "explanations": {
            "a": "Recomputing the statistics needs no labels and no gradient step: run the "
                 "network on the new images and take each BN layer's input mean and variance "
                 "(AdaBN, Part C2).",
            "b": "A BN layer's inputs depend on the statistics of the BN layers before it: "
                 "computed with the old ones upstream, they describe inputs the recalibrated "
                 "network never produces. Recalibrate one layer after the other (Part C2).",
            "c": "",
            "d": "Batch statistics at deployment make every output depend on the rest of the "
                 "batch, and a batch of one outputs beta. AdaBN computes the new statistics "
                 "once, on the new data, and inference then uses them as fixed moving "
                 "statistics.",
        },
    },
}


_CHOICES = _choice.Choices(__name__, QUESTIONS)
record_answer, compare_answer, check_answer = (
    _CHOICES.record_answer, _CHOICES.compare_answer, _CHOICES.check_answer)
