"""What the tests of the coursework checks modules (``tests/test_checks_<ps>.py``) share.

Assertions about a module's fixed inputs, its catalogue of mistakes, its records and its
silence on stderr, which each test file calls with its own problem set's functions; and the
standard tests of a multiple-choice part. Each test file with a multiple-choice part writes
its answer key out in plain letters, ``KEY = {"q1": "b", ...}``: the oracle, independent of
the hashed keys the checks module grades with. It binds the tests to its own names::

    globals().update(multiple_choice_tests(checks, KEY))

so that pytest collects them in that file. Not a test module itself (no ``test_`` prefix).
"""

import json
import pickle
import sys

import numpy as np
import pytest


def fixed_cases(checks, key, hidden):
    """The cases of check ``key``, after asserting that two calls give the same inputs."""
    first, second = checks.cases(key, hidden), checks.cases(key, hidden)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        for u, v in zip(a.args, b.args):
            if isinstance(u, dict):
                assert u.keys() == v.keys()
                for name in u:
                    np.testing.assert_array_equal(u[name], v[name])
            else:
                np.testing.assert_array_equal(u, v)
    return first


def assert_every_mistake_shows(spec, cases, rtol=1e-2):
    """Every catalogued mistake of ``spec`` changes some output on ``cases`` by more than
    ``rtol``. A mistake that raises ValueError on a case cannot happen there (the learner's
    code would raise too): that case is passed over."""
    for mistake in spec.mistakes:
        differs = False
        for case in cases:
            expected = spec.reference(*case.args)
            try:
                with np.errstate(all="ignore"):
                    got = mistake.outputs(*case.args)
            except ValueError:
                continue
            assert len(got) == len(expected), mistake.label
            differs |= any(np.shape(g) != np.shape(e) or not np.allclose(g, e, rtol=rtol)
                           for g, e in zip(got, expected))
        assert differs, mistake.label


def assert_records_are_plain_data(checks, key, wrong, label, hidden=True):
    """The records of ``wrong`` survive pickling (as when handed to a trusted process), and
    ``compare`` alone names the mistake ``label`` from them. Returns the restored records."""
    restored = pickle.loads(pickle.dumps(checks.record(key, wrong, hidden=hidden)))
    with pytest.raises(AssertionError, match=label):
        checks.compare(key, restored)
    return restored


def noisy(fn):
    """``fn``, printing to stderr and raising a NumPy warning first, as a learner's code may."""
    def noisy_fn(*args, **kwargs):
        print("debug", file=sys.stderr)
        np.log(-np.ones(2))  # RuntimeWarning
        return fn(*args, **kwargs)
    return noisy_fn


def assert_quiet(capfd, check, wrong, right, cases=2):
    """A check writes nothing to stderr (in nbgrader, stderr zeroes a grade cell): not when it
    fails on noisy code, not when it passes."""
    with pytest.raises(AssertionError):
        check(noisy(wrong))
    check(right)
    out, err = capfd.readouterr()
    assert err == ""
    assert f"all {cases} visible cases pass" in out

STYLES = {"lower": str, "upper": str.upper, "padded": lambda s: f" ({s}) "}


def multiple_choice_tests(checks, key):
    """The tests of ``checks``'s questions against ``key``, by test name.

    Parameters
    ----------
    checks : module
        The problem set's checks module (``coursework.ps05_dropout_vs_bn``): its
        ``QUESTIONS``, ``check_answer``, ``record_answer`` and ``compare_answer``.
    key : dict
        ``{question: the right letter}``, written out in the test file.

    Returns
    -------
    dict
        ``{test name: test function}``: every question is keyed; the right answers pass, in
        any of the accepted styles; a wrong one passes the visible (format) check and fails the
        hidden one with an explanation, the kind "answer" and the answer as the mistake; the
        format is checked visibly; a record is plain data.
    """
    first = next(iter(key))
    options = checks.QUESTIONS[first]["options"]
    outside = next(letter for letter in "abcdefghijklmnopqrstuvwxyz" if letter not in options)
    wrong = [(q, a) for q in key for a in checks.QUESTIONS[q]["options"] if a != key[q]]

    def test_every_question_is_keyed():
        assert set(key) == set(checks.QUESTIONS)

    @pytest.mark.parametrize("question", list(key))
    @pytest.mark.parametrize("style", list(STYLES.values()), ids=list(STYLES))
    def test_right_answers_pass(question, style):
        checks.check_answer(question, style(key[question]))
        checks.check_answer(question, style(key[question]), hidden=True)

    @pytest.mark.parametrize("question,answer", wrong)
    def test_wrong_answers_pass_the_format_check_and_fail_hidden_with_an_explanation(
            question, answer):
        checks.check_answer(question, answer)
        with pytest.raises(AssertionError, match="is not the right answer. .{40,}") as info:
            checks.check_answer(question, answer, hidden=True)
        assert info.value.kind == "answer"
        assert info.value.mistake == f"answer_{question} = {answer!r}"

    @pytest.mark.parametrize("answer,match", [(None, "you have not answered yet"),
                                              (3, "must be a string"),
                                              (outside, "must be one letter"),
                                              (options[:2], "must be one letter")])
    def test_answer_format_is_checked_visibly(answer, match):
        with pytest.raises(AssertionError, match=match):
            checks.check_answer(first, answer)

    def test_answer_records_are_plain_data():
        rec = checks.record_answer(first, key[first])
        assert json.loads(json.dumps(rec)) == rec
        checks.compare_answer(rec, hidden=True)

    tests = [test_every_question_is_keyed, test_right_answers_pass,
             test_wrong_answers_pass_the_format_check_and_fail_hidden_with_an_explanation,
             test_answer_format_is_checked_visibly, test_answer_records_are_plain_data]
    return {test.__name__: test for test in tests}
