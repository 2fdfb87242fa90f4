"""The machinery behind the problem-set checks: call a learner's function, then judge it.

A check is two steps, kept apart on purpose:

* :func:`record` calls the learner's function on the fixed, seeded inputs of a :class:`Spec`
  and keeps what came back (the outputs, or the exception). It judges nothing.
* :func:`compare` recomputes the expected outputs with the reference, compares them with the
  record and, when something is wrong, explains it: a missing ``return``, a wrong type, shape
  or precision, an exception, what differs and by how much, and the catalogued
  :class:`Mistake` that explains the learner's outputs -- named only when it explains all of
  them, on every case compared, never on a partial or rounding-size match.

A record holds plain data only (a case index, the returned arrays, strings), so that
:func:`compare` can run in a separate, trusted process: the course's grader
(``instructor.grading``) reads the records a submission wrote (``coursework._record``) and
calls :func:`compare` in its own process. When the learner writes
something other than a function of arrays (a Keras layer class, a function of a model), the
spec's ``driver`` builds what a case needs from its plain arguments, runs the learner's code
and returns arrays, so the record stays plain data; the reference runs the same driver on the
oracle. Nothing here prints to stderr: in nbgrader a grade cell that writes to stderr scores
zero.

A failed check raises :class:`CheckFailure`, an ``AssertionError`` whose ``mistake`` field holds
the label of the mistake its message names (or None) and whose ``kind`` says what failed; the
grader records both with each verdict.
"""

import contextlib
import io
import itertools
import os
import re
import sys
import traceback
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Case", "Output", "Mistake", "Spec", "Problem", "Checks", "CheckFailure", "record",
           "compare", "judge", "fail", "named", "tolerance", "close", "show"]

_HERE = os.path.dirname(os.path.abspath(__file__))
_NUMPY = os.path.dirname(os.path.abspath(np.__file__))

# (rtol, atol as a fraction of the largest |expected| value), by the precision of the inputs.
# float32 allows for the rounding of any sensible implementation (one-pass variance
# included); every catalogued mistake changes some output by at least 1%.
_TOLERANCE = {np.dtype(np.float32): (1e-3, 1e-4), np.dtype(np.float64): (1e-6, 1e-8)}
# Looser, to recognise a mistake made in another precision or order of operations.
_MATCH_TOLERANCE = {np.dtype(np.float32): (2e-3, 2e-4), np.dtype(np.float64): (1e-5, 1e-7)}


class Problem(Exception):
    """Raised by a driver for what the learner's code did wrong outside an exception of its own
    (``call`` returned None, ``build`` created no ``self.gamma``): the message is shown as is,
    after the name of the learner's function or class."""


@dataclass(frozen=True)
class Case:
    """One set of fixed inputs: positional arguments in the order of the notebook's signature."""

    label: str  # for the learner: "images, channels first: x of shape (3, 4, 5, 6), axis=1"
    names: tuple  # argument names, as in the notebook
    args: tuple  # argument values
    dtype: np.dtype  # the precision the outputs are judged at
    features: int = 0  # C, the length of per-feature outputs (0: none)
    tolerance: tuple = None  # (rtol, atol as a fraction of the largest |expected|): overrides dtype's

    def arguments(self):
        """Fresh copies of the arguments, so a function that writes into them changes nothing here."""
        return [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in self.args]


@dataclass(frozen=True)
class Output:
    """One returned value. ``per_feature`` outputs have shape (C,); the keepdims shape is accepted."""

    name: str
    per_feature: bool = False
    entries: str = "features"  # what one value of a per-feature output is, for the message


@dataclass(frozen=True)
class Mistake:
    """A known mistake, and the outputs it produces (same signature as the graded function)."""

    label: str  # short name, shown in the message: "unbiased variance"
    explanation: str  # what is wrong and what to do instead
    outputs: Callable


@dataclass(frozen=True)
class Spec:
    """Everything needed to check one graded function."""

    key: str
    function: str  # its name in the notebook
    outputs: tuple  # of Output, in return order
    order: tuple  # indices of ``outputs`` in the order they are judged (statistics before y)
    reference: Callable  # same signature; returns a tuple of float64 arrays
    cases: Callable  # cases(hidden: bool) -> list of Case
    mistakes: tuple = ()
    hints: tuple = ()  # (output name, hint when no catalogued mistake matches)
    oracle: str = "course_lib.reference"  # where the expected values come from, for the message
    # What record calls: ``driver(fn, *case.args)`` instead of ``fn(*case.args)``. A driver turns
    # what the learner wrote (a Keras layer class, a function taking a model) into plain data:
    # it builds the objects a case needs from the case's plain arguments and returns arrays.
    driver: Callable = None
    # exception_hint(case, error) -> extra text for an exception's message, or None for the
    # default hint (per-feature broadcasting along `axis`).
    exception_hint: Callable = None
    verb: str = "returned"  # "`fn` returned the wrong `y`"; a layer's state is "gave" instead
    # The problem set states a precision rule for this function ("float64 in, float64 out"): a
    # float output narrower than the case's dtype fails, even with values within tolerance.
    precision: bool = False
    features: str = "C = x.shape[axis]"  # what the length of a per-feature output is

    @property
    def returns(self):
        names = ", ".join(o.name for o in self.outputs)
        return f"`return {names}`"


# ---------------------------------------------------------------------------------------------
# Step 1: record what the learner's function returns on fixed inputs


def record(spec, fn, hidden=False):
    """Call ``fn`` on each fixed input of ``spec``; return one plain-data record per case."""
    return [_call(spec, fn, i, case, hidden) for i, case in enumerate(spec.cases(hidden))]


def _call(spec, fn, index, case, hidden):
    rec = {"check": spec.key, "hidden": bool(hidden), "case": index, "returned": None,
           "error": None, "mutated": [], "module": getattr(fn, "__module__", None)}
    if not callable(fn):
        rec["error"] = {"type": "TypeError", "message": f"`{spec.function}` is {type(fn).__name__}, "
                        "not a function", "where": ""}
        return rec
    args = case.arguments()
    call = fn if spec.driver is None else (lambda *a: spec.driver(fn, *a))
    # Warnings (a division by zero, say) would go to stderr, and any stderr output zeroes an
    # nbgrader grade cell; the outputs are judged instead.
    with warnings.catch_warnings(), np.errstate(all="ignore"), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            rec["returned"] = call(*args)
        except Exception as exc:  # noqa: BLE001 - whatever the learner's code raises is reported
            rec["error"] = _describe_exception(exc)
    rec["mutated"] = [name for name, before, after in zip(case.names, case.args, args)
                      if isinstance(before, np.ndarray)
                      and not np.array_equal(before, after, equal_nan=True)]
    return rec


def _library_paths():
    """Folders whose frames are not the learner's code: the checks, NumPy, Keras, TensorFlow."""
    paths = [_HERE, _NUMPY]
    for name in ("keras", "tensorflow", "tf_keras", "jax", "torch", "optree", "absl"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            paths.append(os.path.dirname(os.path.abspath(module.__file__)))
    return tuple(paths)


def _describe_exception(exc):
    """Type, message, and the last line of the learner's own code in the traceback."""
    where = ""
    libraries = _library_paths()
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = os.path.abspath(frame.filename)
        if not path.startswith(libraries):
            code = (frame.line or "").strip()
            where = f"line {frame.lineno}" + (f": `{code}`" if code else "")
            break
    return {"type": type(exc).__name__, "message": _unwrap(str(exc)), "where": where}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _unwrap(message):
    """The learner's own message, out of the wrapping Keras puts around an error in call():
    "Exception encountered when calling X.call().\n\n<message>\n\nArguments received by ..."
    (and without its terminal colour codes)."""
    message = _ANSI.sub("", message)
    head = "Exception encountered when calling"
    if message.startswith(head) and "\n\n" in message:
        inner = message.split("\n\n", 1)[1]
        inner = inner.split("\n\nArguments received by", 1)[0]
        return inner.strip()
    return message


# ---------------------------------------------------------------------------------------------
# Step 2: compare with the reference and explain


class CheckFailure(AssertionError):
    """The verdict of a failed check: ``str(failure)`` is the message for the learner.

    An ``AssertionError``, so a grade cell fails as with a plain ``assert``; it also carries,
    for whoever records verdicts (the course's grader), what the message says in plain fields.

    Parameters
    ----------
    message : str
        What the learner reads.
    mistake : str or None
        The label of the catalogued mistake that the message names (the ``label`` in
        "Most likely mistake (label): ..."), or None when the message names no mistake. A
        mistake is named only when it explains every output of every case compared (see
        :func:`compare`), so this field is never a guess. For a wrong multiple-choice answer
        (``kind == "answer"``), the answer given: ``answer_q1 = 'b'``.
    kind : str or None
        What failed, in one word or two: "values", "shape", "dtype", "type", "nan",
        "exception", "not implemented", "returned", "mutated", "reference" (a function
        check); "answer" (a wrong multiple-choice letter); "measured" (a measured number
        that differs from the grader's recomputation); "behaviour" (a model that behaves
        wrongly); None when not said.

    Attributes
    ----------
    mistake, kind
        As given.
    """

    def __init__(self, message, mistake=None, kind=None):
        super().__init__(message)
        self.mistake, self.kind = mistake, kind

    def __reduce__(self):
        return type(self), (str(self), self.mistake, self.kind)


def fail(message, mistake=None, kind=None):
    """Raise the verdict (:class:`CheckFailure`). The other frames of the checks carry
    ``__tracebackhide__``, so in a notebook the traceback shows the test cell's line, this line,
    and the message.

    Parameters
    ----------
    message : str
        What the learner reads.
    mistake : str, optional
        The label of the catalogued mistake the message names, if it names one (for a wrong
        multiple-choice answer, the answer given).
    kind : str, optional
        What failed (see :class:`CheckFailure`).
    """
    raise CheckFailure(message, mistake=mistake, kind=kind)


def named(message):
    """The label of the mistake a message names ("Most likely mistake (label): ..."), or None.

    For the checks that write their diagnosis themselves (a measured answer, a model's
    behaviour), so that their :class:`CheckFailure` carries the label too.
    """
    head = "Most likely mistake ("
    start = message.find(head)
    if start < 0:
        return None
    start += len(head)
    end = message.find("): ", start)
    return message[start:end] if end > start else None


@dataclass
class _Finding:
    """What is wrong with one record: the head of the message, and what may explain it."""

    text: str
    kind: str
    output: int = None  # the index of the output concerned, for a catalogued mistake to explain
    note: str = ""  # said after the explanation (the returned precision, for instance)


@dataclass
class _Item:
    """A record whose outputs are all arrays of numbers, ready to be explained."""

    hidden: bool
    index: int
    case: Case
    received: tuple  # float arrays, shapes fitted where the spec accepts the shape
    expected: tuple  # float64 arrays, from the reference


def compare(spec, records):
    """Raise :class:`CheckFailure` with a learner-oriented message unless every record is right.

    The first failing record is described: what differs (where and by how much), a wrong
    shape, a lost precision, an exception. A catalogued :class:`Mistake` is named only when it
    *explains* the learner's outputs on every record that could be compared: on each output
    its prediction matches the learner's (within the match tolerance), it differs from the
    right output exactly where the learner's does, and it accounts for that difference (the
    learner's output is far closer to the mistake's than to the right one). A difference no
    mistake explains (a lost precision, a shape bug, a value off by some amount) is described,
    never given a mistake's name.

    Parameters
    ----------
    spec : Spec
        The check.
    records : list of dict
        What :func:`record` returned (plain data), all visible or all hidden.

    Returns
    -------
    int
        The number of cases checked.
    """
    __tracebackhide__ = True  # noqa: F841 - IPython hides this frame in tracebacks
    cases = {}
    findings, items = [], []
    for rec in records:
        hidden = rec["hidden"]
        if hidden not in cases:
            cases[hidden] = spec.cases(hidden)
        finding, item = _judge(spec, cases[hidden][rec["case"]], rec)
        if finding is not None and finding.kind == "not implemented":
            fail(finding.text, kind=finding.kind)  # the same on every case: say it once
        if item is not None:
            items.append(item)
        if finding is not None:
            findings.append(finding)
    if findings:
        first = findings[0]
        message, mistake = first.text, None
        if first.output is not None:
            mistake, explanation = _diagnose(spec, items, first.output)
            message += "\n" + explanation
        if first.note:
            message += "\n" + first.note
        kind = "hidden" if records[0]["hidden"] else "visible"
        if len(findings) > 1:
            message += (f"\n\n({len(findings)} of {len(records)} {kind} cases fail; the first is "
                        "shown.)")
        fail(message, mistake=mistake, kind=first.kind)
    return len(records)


def judge(module, name, *args):
    """``module.name(*args)``: the comparison step of a check, as a grade cell runs it.

    In a grading run (record mode, see ``coursework._record``) the arguments -- the
    records -- are saved for the grader, which calls the same function in its own trusted
    process; nothing is judged here and the number of records is returned.
    """
    __tracebackhide__ = True  # noqa: F841
    from coursework import _record

    if _record.recording():
        _record.save(module, name, args)
        records = args[1] if name == "compare" and len(args) > 1 else None
        return len(records) if isinstance(records, list) else 1
    return getattr(sys.modules[module], name)(*args)


def _not_implemented(rec):
    err = rec["error"]
    return err is not None and err["type"] == "NotImplementedError" and not err["message"]


def tolerance(dtype, match=False):
    table = _MATCH_TOLERANCE if match else _TOLERANCE
    return table.get(np.dtype(dtype), table[np.dtype(np.float32)])


def _where(spec, case, rec):
    kind = "hidden" if rec["hidden"] else "visible"
    return f"{kind} case {rec['case'] + 1} ({case.label})"


# Computed once per process: the cases are fixed, so are the reference's outputs and each
# mistake's. Keyed by the spec's id; the spec is kept in the value, so the id stays its own.
_EXPECTED = {}
_PREDICTED = {}


def _readonly(arrays):
    out = tuple(np.asarray(a, dtype=np.float64) for a in arrays)
    for a in out:
        a.flags.writeable = False
    return out


def _expected(spec, case, hidden, index):
    key = (id(spec), bool(hidden), index)
    if key not in _EXPECTED:
        _EXPECTED[key] = (spec, _readonly(spec.reference(*case.args)))
    return _EXPECTED[key][1]


def _predicted(spec, number, item):
    """The outputs mistake ``number`` of ``spec`` gives on the item's case, or None if it raises
    there (the mistake cannot happen on that input: the learner's code would raise too)."""
    key = (id(spec), item.hidden, item.index, number)
    if key not in _PREDICTED:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                outputs = _readonly(spec.mistakes[number].outputs(*item.case.args))
        except Exception:  # noqa: BLE001 - whatever the model of the mistake raises
            outputs = None
        _PREDICTED[key] = (spec, outputs)
    return _PREDICTED[key][1]


def _judge(spec, case, rec):
    """(finding or None, item or None) for one record: what is wrong with it, and the record
    as arrays when every output is an array of numbers (so that a mistake may explain it)."""
    fn, where = f"`{spec.function}`", _where(spec, case, rec)
    if rec["error"] is not None:
        kind = "not implemented" if _not_implemented(rec) else "exception"
        return _Finding(_exception_message(spec, case, rec, where), kind), None
    module = rec.get("module") or ""
    if module == "course_lib" or module.startswith("course_lib."):
        return _Finding(f"{fn} is course_lib's reference implementation ({module}). "
                        "Write your own: the problem set grades your implementation.",
                        "reference"), None
    if rec["mutated"]:
        names = ", ".join(f"`{n}`" for n in rec["mutated"])
        return _Finding(f"{fn} modified its input {names} in place on {where}. Compute new "
                        "arrays instead (`x = x - mean`, not `x -= mean`): the caller still "
                        "needs its inputs.", "mutated"), None

    received, problem = _unpack(spec, rec["returned"])
    if problem:
        return _Finding(f"{fn} {problem}\n  on {where}", "returned"), None
    expected = _expected(spec, case, rec["hidden"], rec["case"])

    # Types and shapes first: a wrong shape usually means a wrong reduction axis.
    arrays, problems = [], []
    for out, value, exp in zip(spec.outputs, received, expected):
        arr, problem = _as_array(value)
        kind = "type" if problem else None
        if problem is None:
            fitted, problem = _fit_shape(arr, exp, out, case)
            arr = arr if fitted is None else fitted
            kind = "shape" if problem else None
        arrays.append(arr)
        problems.append((kind, problem))
    item = None
    if all(kind != "type" for kind, _ in problems):
        item = _Item(bool(rec["hidden"]), rec["case"], case, tuple(arrays), expected)
    for i in spec.order:
        kind, problem = problems[i]
        if problem:
            out = spec.outputs[i]
            text = (f"{fn} {spec.verb} `{out.name}` {problem} on {where}.\n"
                    f"  expected shape: {expected[i].shape}{_shape_note(out, case, spec)}")
            return _Finding(text, kind, output=i if kind == "shape" else None), item

    for i in spec.order:
        out, arr, exp = spec.outputs[i], arrays[i], expected[i]
        if _close(arr, exp, case.dtype, tol=case.tolerance):
            continue
        lines = [f"{fn} {spec.verb} the wrong `{out.name}` on {where}.",
                 f"  expected: {_show(exp)}  (shape {exp.shape}, from {spec.oracle})",
                 f"  received: {_show(arr)}  (shape {arr.shape}, dtype {arr.dtype})"]
        finite = np.isfinite(arr)
        if not finite.all() and np.isfinite(exp).all():
            lines.append(f"  `{out.name}` contains {'NaN' if np.isnan(arr).any() else 'inf'}: "
                         "a division by zero or the square root of a negative number. Is epsilon "
                         "added to the variance inside the square root?")
            return _Finding("\n".join(lines), "nan", output=i), item
        lost = _lost_precision(spec, case, arr)
        if lost and _close(arr, exp, arr.dtype):
            # Right to the precision returned: the precision is what is wrong.
            largest = float(np.max(np.abs(arr - exp)))
            rtol = (tolerance(case.dtype) if case.tolerance is None else case.tolerance)[0]
            return _Finding(f"{fn} {spec.verb} {lost} on {where}: `{out.name}` is {arr.dtype}, "
                            f"and its values agree with the expected ones to {arr.dtype}'s "
                            f"precision only (largest difference {largest:.3g}; the tolerance "
                            f"for {np.dtype(case.dtype).name} is rtol={rtol:g}). "
                            + _precision_rule(case), "dtype"), item
        lines += _differences(spec, case, out, arr, exp)
        right = [f"`{o.name}`" for j, o in enumerate(spec.outputs)
                 if j != i and _close(arrays[j], expected[j], case.dtype, tol=case.tolerance)]
        if right:
            lines.append(f"  right: {', '.join(right)}")
        note = _precision_note(spec, case, arrays, expected, where)
        return _Finding("\n".join(lines), "values", output=i, note=note), item

    # Every value is right: the precision is judged last.
    for i in spec.order:
        lost = _lost_precision(spec, case, arrays[i])
        if lost:
            out = spec.outputs[i]
            return _Finding(f"{fn} {spec.verb} {lost} on {where}: `{out.name}` is "
                            f"{arrays[i].dtype}. " + _precision_rule(case), "dtype"), item
    return None, item


def _lost_precision(spec, case, arr):
    """'float32 for float64 input' when the spec states a precision rule and the returned
    floats are narrower than the inputs', else ''."""
    want = np.dtype(case.dtype)
    if (not spec.precision or arr.dtype.kind != "f" or want.kind != "f"
            or arr.dtype.itemsize >= want.itemsize):
        return ""
    return f"{arr.dtype.name} for {want.name} input"


def _precision_rule(case):
    want = np.dtype(case.dtype).name
    return (f"The problem set asks for {want} out: keep the input's precision (do not convert "
            f"to a narrower dtype such as float32).")


def _precision_note(spec, case, arrays, expected, where):
    """For a wrong value: the returned precision, when it is narrower than the rule asks."""
    for i in spec.order:
        lost = _lost_precision(spec, case, arrays[i])
        if lost:
            return (f"Also: `{spec.outputs[i].name}` is {lost} on {where}. "
                    + _precision_rule(case))
    return ""


def _differences(spec, case, out, arr, exp):
    """Where the values differ, and by how much (plain facts, no guess)."""
    rtol, atol = tolerance(case.dtype) if case.tolerance is None else case.tolerance
    finite = np.abs(exp[np.isfinite(exp)])
    scale = max(float(np.max(finite)) if finite.size else 0.0, 1.0)
    diff = np.abs(arr - exp)
    bad = ~np.isclose(arr, exp, rtol=rtol, atol=atol * scale)
    at = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    largest = float(diff.max())
    relative = largest / max(float(np.abs(exp).max()), np.finfo(float).tiny)
    lines = [f"  largest difference: {largest:.4g} at index {tuple(int(j) for j in at)} "
             f"(relative to the largest expected value: {relative:.2g})",
             f"  values outside the tolerance (rtol={rtol:g}): {int(bad.sum())} of {bad.size}"]
    if out.per_feature and arr.ndim == 1 and 0 < bad.sum() < bad.size:
        features = [int(j) for j in np.flatnonzero(bad)]
        shown = ", ".join(map(str, features[:8])) + (", ..." if len(features) > 8 else "")
        lines.append(f"  {out.entries} that differ: {shown}")
    if (np.dtype(case.dtype) == np.float64 and case.tolerance is None
            and _close(arr, exp, np.float32)):
        lines.append("  (the values agree to float32's precision, not to the float64 tolerance "
                     f"rtol={rtol:g})")
    return lines


def _exception_message(spec, case, rec, where):
    err = rec["error"]
    if err["type"] == "NotImplementedError" and not err["message"]:
        return (f"`{spec.function}` is not implemented yet: replace `raise NotImplementedError()` "
                "with your code.")
    if err["type"] == Problem.__name__:
        return f"`{spec.function}` {err['message']}\n  on {where}"
    text = f"`{spec.function}` raised {err['type']}: {err['message']}\n  on {where}"
    if err["where"]:
        text += f"\n  in your code at {err['where']}"
    message = err["message"]
    args = dict(zip(case.names, case.args))
    if spec.exception_hint is not None:
        hint = spec.exception_hint(case, err)
        if hint is not None:
            return text + (f"\n{hint}" if hint else "")
    if ("broadcast" in message or "shape" in message) and "axis" in args:
        axis, ndim = args["axis"], np.ndim(case.args[0 if case.names[0] == "x" else 1])
        if axis % ndim != ndim - 1:
            text += ("\nHint: per-feature arrays (gamma, beta, mean, var) have shape (C,) and "
                     "broadcast only against the LAST axis of x. Here axis="
                     f"{axis}: reshape them with `per_feature(v, x.ndim, axis)`, or keep the "
                     "reduced axes with `keepdims=True`.")
        else:
            text += ("\nHint: per-feature arrays (gamma, beta, mean, var) have shape (C,), "
                     "C = x.shape[axis]: reduce over every axis except `axis`, "
                     "`reduction_axes(x.ndim, axis)`.")
    elif "positional argument" in message:
        text += "\nHint: keep the function's signature exactly as given in the notebook."
    return text


def _unpack(spec, returned):
    """The returned value as a tuple of len(spec.outputs), or a problem statement."""
    n = len(spec.outputs)
    if returned is None:
        return None, f"returned None: did you forget {spec.returns}?"
    if n == 1:
        if isinstance(returned, (tuple, list)) and len(returned) == 1 and isinstance(returned[0], np.ndarray):
            return (returned[0],), None  # `return (y,)`: harmless
        if isinstance(returned, (tuple, list)) and len(returned) != 1 and not _numeric_list(returned):
            return None, (f"returned a {type(returned).__name__} of {len(returned)} values; "
                          f"expected a single array ({spec.returns}).")
        return (returned,), None
    if not isinstance(returned, (tuple, list)):
        shape = f" of shape {np.shape(returned)}" if isinstance(returned, np.ndarray) else ""
        return None, (f"returned a single {type(returned).__name__}{shape}; expected {n} values "
                      f"({spec.returns}).")
    if len(returned) != n:
        return None, (f"returned {len(returned)} values; expected {n}, in this order: "
                      f"{spec.returns}.")
    return tuple(returned), None


def _numeric_list(value):
    try:
        return np.asarray(value).dtype.kind in "fiu"
    except Exception:  # noqa: BLE001 - ragged or odd objects: not a numeric list
        return False


def _as_array(value):
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - e.g. a ragged list
        return None, f"as a {type(value).__name__}, which is not an array of numbers"
    if arr.dtype.kind not in "fiub":
        return None, f"as a {type(value).__name__} of dtype {arr.dtype}, not an array of numbers"
    return arr.astype(np.float64) if arr.dtype.kind in "iub" else arr, None


def _fit_shape(arr, expected, out, case):
    if arr.shape == expected.shape:
        return arr, None
    if out.per_feature and arr.size == expected.size and np.squeeze(arr).shape == expected.shape:
        return arr.reshape(expected.shape), None  # keepdims=True shape: accepted
    return None, f"with shape {arr.shape}"


def _shape_note(out, case, spec=None):
    if out.per_feature:
        features = spec.features if spec is not None else "C = x.shape[axis]"
        count = f" = {case.features}" if case.features else ""
        return f" -- one value per feature ({features}{count})"
    return ""


def _close(received, expected, dtype, match=False, tol=None):
    """Equal within the tolerance of ``dtype`` (``match``: the looser one, used to recognise a
    mistake's prediction, where a NaN also matches a NaN the prediction has at that place)."""
    received = np.asarray(received, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if received.shape != expected.shape:
        return False
    rtol, atol = tolerance(dtype, match) if tol is None else \
        ((2 * tol[0], 2 * tol[1]) if match else tol)
    finite = np.abs(expected[np.isfinite(expected)])  # an inf would make the tolerance inf
    scale = float(np.max(finite)) if finite.size else 0.0
    return bool(np.allclose(received, expected, rtol=rtol, atol=atol * max(scale, 1.0),
                            equal_nan=match))


def _squeezed(a):
    try:
        return np.squeeze(np.asarray(a, dtype=np.float64))
    except Exception:  # noqa: BLE001 - not numeric
        return None


def _same(received, candidate, dtype, tol=None):
    """Does a returned value equal a mistake's output? Squeezed, so keepdims shapes match too."""
    received = _squeezed(received)
    return received is not None and _close(received, np.squeeze(candidate), dtype, match=True,
                                           tol=tol)


def _right(value, expected, case):
    """Is ``value`` the expected output, as the check judges it (keepdims shapes accepted)?"""
    value = _squeezed(value)
    return value is not None and _close(value, np.squeeze(expected), case.dtype,
                                        tol=case.tolerance)


def close(received, expected, dtype=np.float32, tol=None):
    """Public form of the comparison the checks use (float64, tolerance scaled by |expected|)."""
    return _close(received, expected, dtype, tol=tol)


def show(a, n=5):
    """An array, shortened for a message: its first ``n`` values."""
    return _show(a, n)


def _accounts_for(received, predicted, expected, case):
    """Does the prediction of a mistake account for one returned output?

    Right outputs must be predicted right; a wrong output must be predicted wrong, match the
    prediction within the match tolerance, and lie far closer to it than to the right one
    (so that a difference of rounding size, which the match tolerance would let through, is
    never put down to a mistake that leaves this output unchanged).
    """
    if _right(received, expected, case):
        return _right(predicted, expected, case)
    if _right(predicted, expected, case) or not _same(received, predicted, case.dtype,
                                                      case.tolerance):
        return False
    r, p, e = _squeezed(received), np.squeeze(predicted), np.squeeze(expected)
    if r.shape != e.shape:
        return True  # a shape only the mistake gives, and the mistake's values
    with np.errstate(all="ignore"):
        to_mistake = np.nan_to_num(np.abs(r - p), nan=0.0)  # NaN where it predicts NaN
        to_right = np.nan_to_num(np.abs(r - e), nan=np.inf)
        return bool(np.max(to_mistake, initial=0.0) <= 0.5 * np.max(to_right, initial=0.0))


def _explains(spec, number, items):
    """Does mistake ``number`` explain every output of every compared record?"""
    for item in items:
        predicted = _predicted(spec, number, item)
        if predicted is None or len(predicted) != len(item.expected):
            return False
        if not all(_accounts_for(r, p, e, item.case)
                   for r, p, e in zip(item.received, predicted, item.expected)):
            return False
    return True


def _diagnose(spec, items, output):
    """(label, text): the catalogued mistake that explains every compared record, or (None,
    the check's hint for ``output``) when none does."""
    if items:
        for number, mistake in enumerate(spec.mistakes):
            if _explains(spec, number, items):
                return mistake.label, f"Most likely mistake ({mistake.label}): {mistake.explanation}"
        if len(spec.outputs) > 1:
            for perm in _permutations(len(spec.outputs)):
                if all(all(_right(item.received[p], e, item.case)
                           for p, e in zip(perm, item.expected)) for item in items):
                    return "wrong order", ("Most likely mistake (wrong order): your values are "
                                           "right but returned in the wrong order; "
                                           f"{spec.returns}.")
    return None, _generic_hint(spec, spec.outputs[output])


def _permutations(n):
    return [p for p in itertools.permutations(range(n)) if p != tuple(range(n))]


def _generic_hint(spec, out):
    hints = dict(spec.hints)
    hint = hints.get(out.name)
    return f"No catalogued mistake explains this. Hint: {hint}" if hint else \
        "No catalogued mistake explains this; compare your code with the equations above."


def _show(a, n=5):
    flat = np.asarray(a).ravel()
    body = np.array2string(flat[:n], precision=4, separator=", ", suppress_small=False)
    return body[:-1] + ", ...]" if flat.size > n else body


# ---------------------------------------------------------------------------------------------
# The entry points of a problem-set module


class Checks:
    """The entry points of a problem-set module, by check key, over the module's ``SPECS``.

    The module binds them to its own names (``cases, record, compare, _check =
    _CHECKS.cases, ...``): the tests call them there, and the grader calls ``module.compare``
    (see :func:`judge`). A module whose ``record`` or ``compare`` does more (ps02_keras_layer, ps06_inference)
    defines its own instead. ``label(key, fn)`` names what passed in the printed verdict
    (default: the spec's function).
    """

    def __init__(self, module, specs, label=None):
        self.module, self.specs, self.label = module, specs, label

    def cases(self, key, hidden=False):
        """The fixed inputs of one check (a list of ``Case``)."""
        return self.specs[key].cases(hidden)

    def record(self, key, fn, hidden=False):
        """Step 1: call the learner's function on the fixed inputs; return plain-data records."""
        return record(self.specs[key], fn, hidden)

    def compare(self, key, records):
        """Step 2: compare the records with the reference; raise AssertionError with a diagnosis."""
        __tracebackhide__ = True  # noqa: F841
        return compare(self.specs[key], records)

    def check(self, key, fn, hidden):
        """What a ``check_*`` function does: record, judge, and print that every case passes."""
        __tracebackhide__ = True  # noqa: F841
        # The module's own record and compare, looked up by name when the check runs (judge
        # does the same for compare), so ps06_inference's record is the one that runs.
        records = sys.modules[self.module].record(key, fn, hidden)
        n = judge(self.module, "compare", key, records)
        name = self.specs[key].function if self.label is None else self.label(key, fn)
        print(f"{name}: all {n} {'hidden' if hidden else 'visible'} cases pass.")
