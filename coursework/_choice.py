"""Multiple-choice questions of the problem sets: the visible check validates the format, the
hidden one the answer, with an explanation of the wrong choice.

The same two steps as the function checks (``coursework._core``): :func:`record_answer`
keeps the learner's answer as plain data, :func:`compare_answer` judges it. The key is stored
hashed only so that reading a checks module does not spoil the questions; it is no secret (the
solutions are in the same repository). Every problem set with a multiple-choice part uses
this module, through :class:`Choices`.
"""

import hashlib

from coursework._core import fail, judge

__all__ = ["digest", "record_answer", "compare_answer", "check_answer", "Choices"]


def digest(ps, question, answer):
    """The stored form of a key: ``digest("ps05_dropout_vs_bn", "q1", "b")``."""
    return hashlib.sha256(f"coursework/{ps}/{question}/{answer}".encode()).hexdigest()


def record_answer(question, answer):
    """Step 1: keep the answer as given."""
    return {"check": question, "returned": answer}


def compare_answer(ps, questions, rec, hidden=False):
    """Step 2: the format (visible) or the answer itself (hidden). ``questions`` maps a name to
    ``{"options": "abcd", "key": digest(...), "explanations": {letter: why it is wrong}}``."""
    __tracebackhide__ = True  # noqa: F841
    question, answer = rec["check"], rec["returned"]
    options = questions[question]["options"]
    name = f"answer_{question}"
    choices = ", ".join(f'"{o}"' for o in options)
    if answer is None:
        fail(f"`{name}` is None: you have not answered yet. Set it to one of {choices}, "
             f"e.g. `{name} = \"{options[0]}\"`.", kind="returned")
    if not isinstance(answer, str):
        fail(f"`{name}` must be a string, one of {choices}; received "
             f"{type(answer).__name__} {answer!r}. Put the letter in quotes.", kind="type")
    letter = answer.strip().lower().strip("()").strip()
    if letter not in options or len(letter) != 1:
        fail(f"`{name}` must be one letter, one of {choices}; received {answer!r}.",
             kind="type")
    if hidden and digest(ps, question, letter) != questions[question]["key"]:
        why = questions[question]["explanations"].get(letter, "")
        fail(f"`{name}` = {answer!r} is not the right answer. {why}",
             mistake=f"{name} = {answer!r}", kind="answer")


def check_answer(ps, questions, question, answer, hidden=False):
    """Record, compare, and say what was checked."""
    __tracebackhide__ = True  # noqa: F841
    compare_answer(ps, questions, record_answer(question, answer), hidden)
    _passed(question, answer, hidden)


def _passed(question, answer, hidden):
    print(f"answer_{question} = {answer!r}: " +
          ("correct." if hidden else "a valid answer (it is graded when you submit)."))


class Choices:
    """The multiple-choice entry points of a problem-set module, over its ``QUESTIONS``.

    The module binds them to its own names, as it does those of ``coursework._core.Checks``::

        _CHOICES = _choice.Choices(__name__, QUESTIONS)
        record_answer, compare_answer, check_answer = (
            _CHOICES.record_answer, _CHOICES.compare_answer, _CHOICES.check_answer)

    The key's digest is salted with the problem set's name, the last part of ``module``
    (``coursework.ps05_dropout_vs_bn``: ``ps05_dropout_vs_bn``). In record mode the grade cell
    records a call of ``<module>.compare_answer``, which the grader makes in its own process.
    """

    def __init__(self, module, questions):
        self.module, self.questions = module, questions
        self.ps = module.rpartition(".")[2]

    def record_answer(self, question, answer):
        """Step 1 for a multiple-choice question: keep the answer as given."""
        return record_answer(question, answer)

    def compare_answer(self, rec, hidden=False):
        """Step 2: the format (visible) or the answer itself (hidden)."""
        __tracebackhide__ = True  # noqa: F841
        compare_answer(self.ps, self.questions, rec, hidden)

    def check_answer(self, question, answer, hidden=False):
        """``check_answer("q1", answer_q1)``: the visible check validates the format, the
        hidden one grades the answer."""
        __tracebackhide__ = True  # noqa: F841
        judge(self.module, "compare_answer", self.record_answer(question, answer), hidden)
        _passed(question, answer, hidden)
