"""The machinery behind the problem-set checks: call a learner's function, then judge it.

A check is two steps, kept apart on purpose:

* :func:`record` calls the learner's function on the fixed, seeded inputs of a :class:`Spec`
  and keeps what came back (the outputs, or the exception). It judges nothing.
* :func:`compare` recomputes the expected outputs with the reference, compares them with the
  record and, when something is wrong, explains it: a missing ``return``, a wrong type or
  shape, an exception, or the catalogued :class:`Mistake` whose outputs match the learner's.

A record holds plain data only (a case index, the returned arrays, strings), so that a later
version can run :func:`compare` in a separate, trusted process. When the learner writes
something other than a function of arrays (a Keras layer class, a function of a model), the
spec's ``driver`` builds what a case needs from its plain arguments, runs the learner's code
and returns arrays, so the record stays plain data; the reference runs the same driver on the
oracle. Nothing here prints to stderr: in nbgrader a grade cell that writes to stderr scores
zero.
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

__all__ = ["Case", "Output", "Mistake", "Spec", "Problem", "Checks", "record", "compare", "judge",
           "fail", "tolerance", "close", "show"]

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


def compare(spec, records):
    """Raise AssertionError with a learner-oriented message unless every record is right.

    Returns the number of cases checked.
    """
    __tracebackhide__ = True  # noqa: F841 - IPython hides this frame in tracebacks
    cases = {}
    failures = []
    for rec in records:
        hidden = rec["hidden"]
        if hidden not in cases:
            cases[hidden] = spec.cases(hidden)
        message = _judge(spec, cases[hidden][rec["case"]], rec)
        if message and _not_implemented(rec):
            fail(message)  # the same on every case: say it once
        if message:
            failures.append(message)
    if failures:
        kind = "hidden" if records[0]["hidden"] else "visible"
        more = (f"\n\n({len(failures)} of {len(records)} {kind} cases fail; the first is shown.)"
                if len(failures) > 1 else "")
        fail(failures[0] + more)
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


def fail(message):
    """Raise the verdict. The other frames of the checks carry ``__tracebackhide__``, so in a
    notebook the traceback shows the test cell's line, this line, and the message."""
    raise AssertionError(message)


def _not_implemented(rec):
    err = rec["error"]
    return err is not None and err["type"] == "NotImplementedError" and not err["message"]


def tolerance(dtype, match=False):
    table = _MATCH_TOLERANCE if match else _TOLERANCE
    return table.get(np.dtype(dtype), table[np.dtype(np.float32)])


def _where(spec, case, rec):
    kind = "hidden" if rec["hidden"] else "visible"
    return f"{kind} case {rec['case'] + 1} ({case.label})"


def _judge(spec, case, rec):
    """None if the record is right, else the message."""
    fn, where = f"`{spec.function}`", _where(spec, case, rec)
    if rec["error"] is not None:
        return _exception_message(spec, case, rec, where)
    module = rec.get("module") or ""
    if module == "course_lib" or module.startswith("course_lib."):
        return (f"{fn} is course_lib's reference implementation ({module}). "
                "Write your own: the problem set grades your implementation.")
    if rec["mutated"]:
        names = ", ".join(f"`{n}`" for n in rec["mutated"])
        return (f"{fn} modified its input {names} in place on {where}. Compute new arrays "
                "instead (`x = x - mean`, not `x -= mean`): the caller still needs its inputs.")

    received, problem = _unpack(spec, rec["returned"])
    if problem:
        return f"{fn} {problem}\n  on {where}"
    expected = tuple(np.asarray(e, dtype=np.float64) for e in spec.reference(*case.args))

    # Types and shapes first: a wrong shape usually means a wrong reduction axis.
    arrays = [None] * len(received)
    for i in spec.order:
        out, value = spec.outputs[i], received[i]
        arr, problem = _as_array(value)
        if problem is None:
            arr, problem = _fit_shape(arr, expected[i], out, case)
        if problem:
            diagnosis = _diagnose(spec, case, received, expected, i)
            return (f"{fn} {spec.verb} `{out.name}` {problem} on {where}.\n"
                    f"  expected shape: {expected[i].shape}{_shape_note(out, case, spec)}\n"
                    + (diagnosis or _generic_hint(spec, out)))
        arrays[i] = arr

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
            return "\n".join(lines)
        diff = np.abs(arr - exp)
        at = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
        lines.append(f"  largest difference: {float(diff.max()):.4g} at index {tuple(int(j) for j in at)}")
        if (np.dtype(case.dtype) == np.float64 and arr.dtype.itemsize < 8
                and case.tolerance is None and _close(arr, exp, np.float32)):
            lines.append(f"Most likely mistake (lost precision): `{out.name}` is {arr.dtype} for "
                         "float64 inputs. Keep the input's dtype: do not convert to float32.")
            return "\n".join(lines)
        lines.append(_diagnose(spec, case, received, expected, i) or _generic_hint(spec, out))
        return "\n".join(lines)
    return None


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
    received = np.asarray(received, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if received.shape != expected.shape:
        return False
    rtol, atol = tolerance(dtype, match) if tol is None else \
        ((2 * tol[0], 2 * tol[1]) if match else tol)
    finite = np.abs(expected[np.isfinite(expected)])  # an inf would make the tolerance inf
    scale = float(np.max(finite)) if finite.size else 0.0
    return bool(np.allclose(received, expected, rtol=rtol, atol=atol * max(scale, 1.0)))


def _same(received, candidate, dtype, tol=None):
    """Does a returned value equal a mistake's output? Squeezed, so keepdims shapes match too."""
    try:
        received = np.squeeze(np.asarray(received, dtype=np.float64))
    except Exception:  # noqa: BLE001 - not numeric: matches nothing
        return False
    return _close(received, np.squeeze(candidate), dtype, match=True, tol=tol)


def close(received, expected, dtype=np.float32, tol=None):
    """Public form of the comparison the checks use (float64, tolerance scaled by |expected|)."""
    return _close(received, expected, dtype, tol=tol)


def show(a, n=5):
    """An array, shortened for a message: its first ``n`` values."""
    return _show(a, n)


def _diagnose(spec, case, received, expected, first_wrong):
    """The message naming the catalogued mistake whose outputs match the learner's, or ''."""
    full, partial = None, None
    for mistake in spec.mistakes:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                candidate = tuple(np.asarray(c, dtype=np.float64) for c in mistake.outputs(*case.args))
        except Exception:  # noqa: BLE001 - this mistake cannot happen on this input (it would raise)
            continue
        if all(_same(c, e, case.dtype, case.tolerance) for c, e in zip(candidate, expected)):
            continue  # indistinguishable from the right answer on this case
        matches = [_same(r, c, case.dtype, case.tolerance) for r, c in zip(received, candidate)]
        if all(matches):
            full = mistake
            break
        if partial is None and matches[first_wrong]:
            partial = mistake
    if full:
        return f"Most likely mistake ({full.label}): {full.explanation}"
    if partial:
        return (f"Most likely mistake ({partial.label}): {partial.explanation}\n"
                "(Your other outputs do not match this mistake exactly, so there may be a second "
                "problem.)")
    if len(received) > 1:
        for perm in _permutations(len(received)):
            if all(_same(received[p], e, case.dtype, case.tolerance)
                   for p, e in zip(perm, expected)):
                return ("Most likely mistake (wrong order): your values are right but returned in "
                        f"the wrong order; {spec.returns}.")
    return ""


def _permutations(n):
    return [p for p in itertools.permutations(range(n)) if p != tuple(range(n))]


def _generic_hint(spec, out):
    hints = dict(spec.hints)
    hint = hints.get(out.name)
    return f"No common mistake matches this output. {hint}" if hint else \
        "No common mistake matches this output; compare your code with the equations above."


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
        records = getattr(sys.modules[self.module], "record")(key, fn, hidden)
        n = judge(self.module, "compare", key, records)
        name = self.specs[key].function if self.label is None else self.label(key, fn)
        print(f"{name}: all {n} {'hidden' if hidden else 'visible'} cases pass.")
