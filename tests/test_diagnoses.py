"""Diagnoses that are never wrong, for every problem set with a mistake catalogue.

A check names a catalogued mistake ("Most likely mistake (label): ...") only when that mistake
explains the learner's outputs: on every output of every case compared, its prediction
matches them, and it differs from the right output exactly where they do. Here, for every
check (``SPECS``) of every set whose checks catalogue mistakes:

* every catalogued mistake, applied alone (the catalogue's own generator, its outputs
  returned in the precision of the inputs, as a learner's code computing in that precision
  would), is named, on the visible and on the hidden cases;
* a precision loss (values off by float32-size relative errors on the float64 cases, returned
  as float64 and as float32), a shape bug (an output one entry short) and a random perturbation
  of the right outputs (all of them, or only the first one judged) are never given a
  mistake's name: the message says what differs, and a float32 result for a float64 input
  fails as such where the set states a precision rule.

The records are built here from the reference's and the mistakes' outputs and judged by each
module's ``compare``, the grader's entry point. Two regressions reproduce the reports behind
these rules with real code: a float64 input computed in float32 (problem sets 1 and 2).

The table "check: mistake -> named (visible, hidden)" and the controls' outcomes is printed at
the end of the module (``-s`` not needed) and, when ``DIAGNOSES_TABLE`` names a file, written
there as Markdown.
"""

import importlib
import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SETS = sorted(p.name for p in (REPO / "solutions").iterdir()
              if (REPO / "coursework" / f"{p.name}.py").is_file())


def _module(ps):
    return importlib.import_module(f"coursework.{ps}")


def _checks(ps):
    """The keys of the set's checks that catalogue mistakes."""
    return [key for key, spec in _module(ps).SPECS.items() if spec.mistakes]


CATALOGUED = [ps for ps in SETS if _checks(ps)]
MISTAKES = [(ps, key, number) for ps in CATALOGUED for key in _checks(ps)
            for number in range(len(_module(ps).SPECS[key].mistakes))]
CONTROLS = ("precision loss, float64 returned", "precision loss, float32 returned",
            "shape bug", "perturbation of every output", "perturbation of one output")
CONTROL_CASES = [(ps, key, control) for ps in CATALOGUED for key in _checks(ps)
                 for control in CONTROLS]

RESULTS = {}  # (ps, key, row) -> (visible, hidden): what the table shows


@pytest.fixture(scope="module", autouse=True)
def _table(request):
    """Print the table once the module's tests have run (and write it where asked)."""
    yield
    if not RESULTS:
        return
    lines = []
    for ps in CATALOGUED:
        rows = [(key, row, v) for (p, key, row), v in RESULTS.items() if p == ps]
        if not rows:
            continue
        lines += ["", f"### {ps}", "", "| check | mistake or control | visible | hidden |",
                  "|---|---|---|---|"]
        lines += [f"| {key} | {row} | {vis} | {hid} |" for key, row, (vis, hid) in rows]
    text = "\n".join(lines)
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n\nDiagnoses: catalogued mistake -> named; control -> no "
                                "mistake named")
            for line in lines:
                reporter.write_line(line)
    target = os.environ.get("DIAGNOSES_TABLE")
    if target:
        pathlib.Path(target).write_text(text.lstrip() + "\n")


# ----------------------------------------------------------------------------------------------
# Records, as a learner's function would have produced them


def _records(module, key, hidden, outputs):
    """One record per case of ``module``'s check ``key``: ``outputs(index, case)`` returns what
    the learner's function returns (a tuple of arrays), or raises as the learner's code would."""
    records = []
    for index, case in enumerate(module.cases(key, hidden)):
        rec = {"check": key, "hidden": hidden, "case": index, "returned": None, "error": None,
               "mutated": [], "module": "learner"}
        try:
            values = tuple(outputs(index, case))
            rec["returned"] = values[0] if len(values) == 1 else values
        except Exception as exc:  # noqa: BLE001 - the mistake raises there, as its code would
            rec["error"] = {"type": type(exc).__name__, "message": str(exc), "where": ""}
        records.append(rec)
    return records


def _in_precision(values, dtype):
    """Outputs as a learner's code computing in the inputs' precision returns them."""
    return tuple(np.asarray(v, dtype=np.float64).astype(dtype) for v in values)


def _verdict(module, key, records):
    """The CheckFailure of ``module.compare(key, records)``, or None if every record passes."""
    try:
        module.compare(key, records)
    except AssertionError as exc:
        return exc
    return None


# ----------------------------------------------------------------------------------------------
# Every catalogued mistake is named


@pytest.mark.parametrize("ps,key,number", MISTAKES,
                         ids=[f"{ps[:4]}-{key}-{_module(ps).SPECS[key].mistakes[n].label}"
                              for ps, key, n in MISTAKES])
def test_every_catalogued_mistake_is_named(ps, key, number):
    module = _module(ps)
    mistake = module.SPECS[key].mistakes[number]
    outcome = []
    for hidden in (False, True):
        records = _records(module, key, hidden,
                           lambda i, case: _in_precision(mistake.outputs(*case.args), case.dtype))
        verdict = _verdict(module, key, records)
        if verdict is None:
            outcome.append(f"n/a (no {'hidden' if hidden else 'visible'} case shows it)")
            continue
        if verdict.kind == "exception":
            outcome.append("n/a (it raises on a case, as its code would)")
            continue
        named = getattr(verdict, "mistake", None) == mistake.label
        outcome.append("yes" if named else f"no ({verdict.mistake})")
        assert named, f"{mistake.label} ({'hidden' if hidden else 'visible'}):\n{verdict}"
        assert f"Most likely mistake ({mistake.label}): " in str(verdict)
    assert outcome.count("yes"), f"{mistake.label}: no case shows it"
    labels = [m.label for m in module.SPECS[key].mistakes]
    row = mistake.label if labels.count(mistake.label) == 1 else \
        f"{mistake.label} (form {labels[:number + 1].count(mistake.label)})"
    RESULTS[(ps, key, row)] = tuple(outcome)


# ----------------------------------------------------------------------------------------------
# Differences no mistake explains are never given a mistake's name


def _controlled(module, key, control, hidden, rng):
    """The records of one control, or None where it does not apply to these cases."""
    spec = module.SPECS[key]
    first = spec.order[0]

    def outputs(index, case):
        expected = [np.asarray(e, dtype=np.float64) for e in spec.reference(*case.args)]
        dtype = case.dtype
        if control.startswith("precision loss"):
            if np.dtype(case.dtype) == np.float64:
                # Relative errors of float32 computations, up to 8e-6: beyond the float64
                # tolerance (1e-6), within the looser tolerance a mistake's prediction is
                # matched with (1e-5), so that only the rule "the mistake must explain the
                # difference" keeps a mistake that leaves an output unchanged from matching it.
                expected = [e * (1 + 4e-6 * np.clip(rng.standard_normal(e.shape), -2, 2))
                            for e in expected]
                dtype = np.float64 if control.endswith("float64 returned") else np.float32
        elif control == "shape bug":
            e = expected[first]
            expected[first] = e[:-1] if e.ndim and e.shape[0] > 1 else np.full(2, e)
        else:
            which = range(len(expected)) if control == "perturbation of every output" else [first]
            for i in which:
                e = expected[i]
                scale = max(float(np.max(np.abs(e), initial=0.0)), 1.0)
                expected[i] = e + 0.05 * scale * rng.standard_normal(e.shape)
        return _in_precision(expected, dtype)

    if control.startswith("precision loss") and not any(
            np.dtype(c.dtype) == np.float64 for c in module.cases(key, hidden)):
        return None
    return _records(module, key, hidden, outputs)


@pytest.mark.parametrize("ps,key,control", CONTROL_CASES,
                         ids=[f"{ps[:4]}-{key}-{c}" for ps, key, c in CONTROL_CASES])
def test_a_difference_no_mistake_explains_is_never_named(ps, key, control):
    module = _module(ps)
    spec = module.SPECS[key]
    outcome = []
    for hidden in (False, True):
        rng = np.random.default_rng([CONTROLS.index(control), len(key), int(hidden), 2015])
        records = _controlled(module, key, control, hidden, rng)
        if records is None:
            outcome.append("n/a (no float64 case)")
            continue
        verdict = _verdict(module, key, records)
        if verdict is None:
            # Only the float32 cases are visible: rounding there is within the tolerance.
            assert control.startswith("precision loss"), f"{control}: every case passes"
            outcome.append("passes (float32 cases)")
            continue
        message = str(verdict)
        assert verdict.mistake is None and "Most likely mistake" not in message, message
        if control == "shape bug":
            assert verdict.kind == "shape" and "with shape" in message, message
        elif control == "precision loss, float32 returned" and spec.precision:
            assert verdict.kind == "dtype", message
            assert f"{spec.verb} float32 for float64 input" in message, message
            assert "asks for float64 out" in message, message
        else:
            assert verdict.kind == "values", message
            assert "largest difference" in message and "No catalogued mistake" in message
        outcome.append(f"no name ({verdict.kind})")
    RESULTS[(ps, key, f"control: {control}")] = tuple(outcome)


# ----------------------------------------------------------------------------------------------
# The reported cases, with real code: a float64 input computed in float32


def test_ps01_float64_computed_in_float32_names_no_mistake():
    """Problem set 1: was diagnosed as "standard deviation returned", whose outputs `y` and
    `mean` are the right ones: the match was on outputs the mistake leaves unchanged."""
    checks = _module("ps01_numpy_batchnorm")

    def in_float32(x, gamma, beta, eps=1e-3, axis=-1):
        dtype = x.dtype
        x, gamma, beta = (a.astype(np.float32) for a in (x, gamma, beta))
        axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
        shape = [1] * x.ndim
        shape[axis % x.ndim] = -1
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + np.float32(eps))
        y = gamma.reshape(shape) * xhat + beta.reshape(shape)
        return y.astype(dtype), mean.astype(dtype), var.astype(dtype)

    checks.check_forward_train(in_float32)
    with pytest.raises(AssertionError) as info:
        checks.check_forward_train(in_float32, hidden=True)
    assert info.value.mistake is None and "Most likely mistake" not in str(info.value)
    assert "float32's precision" in str(info.value) and "largest difference" in str(info.value)

    def as_float32(*args):
        return tuple(v.astype(np.float32) for v in in_float32(*args))

    with pytest.raises(AssertionError, match="returned float32 for float64 input") as info:
        checks.check_forward_train(as_float32, hidden=True)
    assert info.value.mistake is None and info.value.kind == "dtype"


def test_ps02_float64_layer_computed_in_float32_names_no_mistake():
    """Problem set 2: was diagnosed as "moving statistics updated at inference", whose output
    `layer(x, training=False)` is the right one."""
    import keras
    from keras import ops

    checks = _module("ps02_keras_layer")

    class InFloat32(keras.layers.Layer):
        def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, **kwargs):
            super().__init__(**kwargs)
            self.axis, self.momentum, self.epsilon = axis, momentum, epsilon

        def build(self, input_shape):
            c = (input_shape[self.axis],)
            self.gamma = self.add_weight(shape=c, initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=c, initializer="zeros", name="beta")
            self.moving_mean = self.add_weight(shape=c, initializer="zeros", trainable=False,
                                               name="moving_mean")
            self.moving_variance = self.add_weight(shape=c, initializer="ones",
                                                   trainable=False, name="moving_variance")

        def call(self, inputs, training=None):
            x = ops.cast(inputs, "float32")
            ndim = len(inputs.shape)
            axis = self.axis % ndim
            axes = [a for a in range(ndim) if a != axis]
            shape = [1] * ndim
            shape[axis] = -1
            f32 = lambda v: ops.cast(v, "float32")  # noqa: E731
            if training and self.trainable:
                mean, var = ops.mean(x, axis=axes), ops.var(x, axis=axes)
                k = self.momentum
                self.moving_mean.assign(ops.cast(f32(self.moving_mean) * k + mean * (1 - k),
                                                 self.moving_mean.dtype))
                self.moving_variance.assign(ops.cast(f32(self.moving_variance) * k
                                                     + var * (1 - k), self.moving_variance.dtype))
            else:
                mean, var = f32(self.moving_mean), f32(self.moving_variance)
            xhat = (x - ops.reshape(mean, shape)) / ops.sqrt(ops.reshape(var, shape)
                                                             + self.epsilon)
            y = ops.reshape(f32(self.gamma), shape) * xhat + ops.reshape(f32(self.beta), shape)
            return ops.cast(y, inputs.dtype)

    # (The moving statistics and the frozen layer stay within the float64 tolerance here.)
    for check in (checks.check_training, checks.check_inference, checks.check_channels_first):
        check(InFloat32)  # float32 visible cases: right
        with pytest.raises(AssertionError) as info:
            check(InFloat32, hidden=True)
        message = str(info.value)
        assert info.value.mistake is None and "Most likely mistake" not in message, message
        assert info.value.kind == "values" and "float32's precision" in message, message
