"""Multiple-choice questions of the problem sets: the visible check validates the format, the
hidden one the answer, with an explanation of the wrong choice.

The same two steps as the function checks (``coursework._core``): :func:`record_answer`
keeps the learner's answer as plain data, :func:`compare_answer` judges it. The key is stored
hashed only so that reading a checks module does not spoil the questions; it is no secret (the
solutions are in the same repository). Every problem set with a multiple-choice part uses
this module.
"""

import hashlib

from coursework._core import fail

__all__ = ["digest", "record_answer", "compare_answer", "check_answer"]


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
        fail(f"`{name}` = {answer!r} is not the right answer. {why}", kind="answer")


def check_answer(ps, questions, question, answer, hidden=False):
    """Record, compare, and say what was checked."""
    __tracebackhide__ = True  # noqa: F841
    compare_answer(ps, questions, record_answer(question, answer), hidden)
    print(f"answer_{question} = {answer!r}: " +
          ("correct." if hidden else "a valid answer (it is graded when you submit)."))
