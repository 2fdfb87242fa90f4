"""Judging records in this (trusted) process, with ``course_lib``'s ``compare`` and this
process's own NumPy; and the solution's reference run, which says what each test cell must
record."""

import contextlib
import importlib
import io
import json
import os
import re
import shutil
import warnings
from typing import NamedTuple

_SKELETON_KEYS = ("check", "hidden", "case", "method")


def skeleton(calls):
    """What a test cell's recorded calls must be, without the values: the module, comparison,
    check names, hidden flags and case numbers."""
    def shape(value, depth=0):
        if isinstance(value, dict):
            return {str(k): shape(value[k], depth + 1) for k in _SKELETON_KEYS if k in value}
        if isinstance(value, (list, tuple)) and depth < 2:
            return [shape(v, depth + 1) for v in value]
        if value is None or isinstance(value, (bool, int, str)):
            return value
        return type(value).__name__
    return [[module, name, shape(args)] for module, name, args in calls]


def count_cases(skel):
    """How many cases a skeleton's calls recorded."""
    def count(value):
        if isinstance(value, dict):
            return 1 if "check" in value else 0
        if isinstance(value, list):
            return sum(count(v) for v in value)
        return 0
    return sum(count(args) for _, _, args in skel)


_cases = count_cases


class Verdict(NamedTuple):
    """One test cell's verdict: passed, the message ("" if passed), the catalogued mistake
    the message names (None if it names none) and what failed, in a word or two, where the
    check says ("values", "shape", "exception", "answer"...; None otherwise)."""

    passed: bool
    message: str
    mistake: str = None
    kind: str = None


_LIKELY = "Most likely mistake ("
_CHOICE = re.compile(r"`(answer_\w+)` = ('[^'\n]{0,40}'|\"[^\"\n]{0,40}\") is not the right answer")


def mistake_name(message, error=None):
    """The catalogued mistake a verdict names, or None.

    Where the check's error carries the fields of ``coursework._core.CheckFailure``, its
    ``mistake``: the label, the answer given for a wrong multiple-choice answer
    (``answer_q1 = 'a'``), or None (then the message names none, whatever it says). Only from
    an error without those fields (a plain ``AssertionError``) is the message read instead:
    ``Most likely mistake (<name>): ...`` or a wrong answer.
    """
    text = message or ""
    if hasattr(error, "mistake"):
        named = error.mistake
        label = getattr(named, "label", named)  # a label, or a coursework Mistake itself
        if isinstance(label, str) and label.strip():
            return label.strip()[:200]
        return None
    start = text.find(_LIKELY)
    if start >= 0:
        depth, i = 1, start + len(_LIKELY)
        for j in range(i, min(len(text), i + 200)):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            if depth == 0:
                return text[i:j].strip() or None
    found = _CHOICE.search(text)
    if found:
        return f"{found.group(1)} = {found.group(2)}"
    return None


def judge_calls(calls):
    """The :class:`Verdict` of one test cell's recorded calls, judged with course_lib here.

    Parameters
    ----------
    calls : list of (str, str, list)
        The calls the test cell recorded: module, comparison function, arguments.
    """
    import numpy as np

    for module, name, args in calls:
        fn = getattr(importlib.import_module(module), name)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), warnings.catch_warnings(), \
                    np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                fn(*args)
        except AssertionError as exc:
            kind = getattr(exc, "kind", None)
            return Verdict(False, str(exc), mistake_name(str(exc), exc),
                           kind if isinstance(kind, str) else None)
        except Exception as exc:  # noqa: BLE001 - malformed records: the part fails, we go on
            return Verdict(False, "the values your code produced could not be judged "
                           f"({type(exc).__name__}: {str(exc)[:300]})")
    return Verdict(True, "")


def judge(calls):
    """(passed, message) for one test cell's recorded calls (see :func:`judge_calls`)."""
    verdict = judge_calls(calls)
    return verdict.passed, verdict.message


def load_records(plan, merged, out_dir):
    """{run index of a test cell: its recorded calls, or the RecordError's message} for the
    test cells that wrote a record file (parsed here: plain JSON with size limits)."""
    from coursework import _record

    loaded = {}
    for canon in plan.tests:
        index = merged.test_index[canon.gid]
        path = os.path.join(out_dir, f"cell-{index}.jsonl")
        if os.path.isfile(path) and not os.path.islink(path):
            try:
                loaded[index] = _record.load(path)
            except (ValueError, OSError, TypeError, KeyError, RecursionError) as exc:
                loaded[index] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return loaded


def verdicts(plan, merged, outcome, loaded, limits, skipped=None):
    """{grade id: Verdict and points} for every test cell, judged here from the records.

    Returns
    -------
    dict
        {grade id: (points, message, mistake, kind)} (see :class:`Verdict`).
    """
    from instructor.grading.run import describe_stop

    skipped = skipped or {}
    stop = describe_stop(merged, outcome, limits)
    ends = {s.get("cell"): s for s in outcome.statuses if s.get("event") == "end"}
    result = {}
    for canon in plan.tests:
        index = merged.test_index[canon.gid]
        expected = plan.expected.get(canon.gid)
        if not expected:  # the solution recorded nothing here: no trusted verdict is possible
            result[canon.gid] = (0.0, "not graded: the instructor's solution records no check "
                                 "in this test cell (see the grader's warnings)", None, None)
            continue
        if index in skipped:
            result[canon.gid] = (0.0, f"the test did not finish: {skipped[index]}", None, None)
            continue
        if index not in loaded:
            status = ends.get(index)
            if status is None:
                why = stop or "the notebook stopped before this test cell"
                result[canon.gid] = (0.0, f"the test cell did not run: {why}", None,
                                     "not run")
            else:
                error = status.get("error") if isinstance(status.get("error"), str) else None
                result[canon.gid] = (0.0, "the test cell did not run its check: "
                                     + (error[:500] if error else "no result was recorded"),
                                     None, "not run")
            continue
        calls = loaded[index]
        if isinstance(calls, str):
            result[canon.gid] = (0.0, f"the test's record is unreadable: {calls}", None,
                                 "record")
            continue
        got = skeleton(calls)
        if got != expected:
            result[canon.gid] = (0.0, "the test cell's checks did not run as written (the "
                                 "notebook changed them, or they stopped early): "
                                 f"{len(got)} check(s) recorded {count_cases(got)} case(s); "
                                 f"the test makes {len(expected)} check(s) of "
                                 f"{count_cases(expected)}", None, "record")
            continue
        verdict = judge_calls(calls)
        result[canon.gid] = (canon.points if verdict.passed else 0.0, verdict.message,
                             verdict.mistake, verdict.kind)
    return result


# ---------------------------------------------------------------------------------------------
# The solution's reference run: what each test cell must record


def _reference_cache(plan):
    return os.path.join(plan.course.grading, "cache", f"{plan.ps}-reference.json")


def reference_cached(plan):
    """Load the expected calls from the cache if the plan is unchanged; True if so."""
    try:
        with open(_reference_cache(plan)) as fh:
            stored = json.load(fh)
        if stored.get("hash") == plan.hash:
            plan.expected = stored["expected"]
            return True
    except (OSError, ValueError, KeyError):
        pass
    return False


def reference_run(plan, limits, isolate=True):
    """The solution's run in a sandbox (a worker's part of :func:`reference`)."""
    from instructor.grading.merge import merge
    from instructor.grading.run import execute

    merged = merge(plan, plan.solution_notebook())
    outcome, out, tmp = execute(plan, merged, [os.path.dirname(plan.course.release(plan.ps))],
                                limits, isolate)
    try:
        loaded = load_records(plan, merged, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return merged, outcome, loaded, limits


def reference_finish(plan, run):
    """The calls each test cell must record, from the solution's run; problems if the solution
    does not get full marks (then nothing is cached)."""
    from instructor.grading import VERSION
    from instructor.grading.run import describe_stop

    merged, outcome, loaded, limits = run
    problems, expected = [], {}
    for canon in plan.tests:
        calls = loaded.get(merged.test_index[canon.gid], [])
        if isinstance(calls, str):
            problems.append(f"the solution's record of {canon.gid} is unreadable: {calls}")
            calls = []
        expected[canon.gid] = skeleton(calls)
        if not calls:
            problems.append(f"the solution's run recorded no check in {canon.gid}: every "
                            "submission scores 0 there (a test cell must call a check of "
                            "coursework; plain asserts run in the student's process and "
                            "cannot be trusted)")
            continue
        passed, message = judge(calls)
        if not passed:
            problems.append(f"the solution fails {canon.gid}: {message[:300]}")
    stop = describe_stop(merged, outcome, limits)
    if stop:
        problems.append(f"the solution's run: {stop}")
    plan.expected = expected
    if not problems:
        os.makedirs(os.path.dirname(_reference_cache(plan)), exist_ok=True)
        with open(_reference_cache(plan), "w") as fh:
            json.dump({"hash": plan.hash, "version": VERSION, "expected": expected}, fh)
    return problems


def reference(plan, limits, isolate=True):
    """Run the solution once (cached by the plan's hash): the calls each test cell must record,
    and a check that the solution gets full marks."""
    if reference_cached(plan):
        return []
    return reference_finish(plan, reference_run(plan, limits, isolate))
