"""Multiple-choice questions that measure understanding, not test-taking.

For every problem set with a multiple-choice part (a checks module whose ``QUESTIONS`` hold
options and a hashed key), the questions are parsed from the set's source notebook, the
markdown a learner reads, and the key of each is recovered from the checks module (the key
the grader uses). Then, per set:

* at least 4 questions, and the keyed letters are not all the same;
* at most a third of the keys are the longest option (the "pick the longest answer" cue), and
  no key is longer than 1.5 times the median length of its distractors;
* the notebook's questions and options are the ones the checks grade, the solution's answer
  is the key, and every wrong option has an explanation for the learner who picks it.

An option's length is the number of characters of its markdown source, whitespace runs counted
as one. The statistics are printed at the end of the module.
"""

import importlib
import json
import pathlib
import re
import statistics

import pytest

from coursework import _choice

REPO = pathlib.Path(__file__).resolve().parents[1]
MAX_LONGEST_SHARE = 1 / 3
MAX_RATIO = 1.5
MIN_QUESTIONS = 4

QUESTION = re.compile(r"\*\*Q(\d+)\b")
OPTION = re.compile(r"^- \(([a-z])\) (.*)$")


def _module(ps):
    return importlib.import_module(f"coursework.{ps}")


def _is_multiple_choice(ps):
    questions = getattr(_module(ps), "QUESTIONS", None)
    return bool(questions) and all(isinstance(q, dict) and "options" in q and "key" in q
                                   for q in questions.values())


SETS = sorted(p.name for p in (REPO / "solutions").iterdir()
              if (REPO / "coursework" / f"{p.name}.py").is_file())
CHOICE_SETS = [ps for ps in SETS if _is_multiple_choice(ps)]


def _cells(ps):
    path = REPO / "solutions" / ps / f"{ps}.ipynb"
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def parse(ps):
    """``{"q1": {"a": text, ...}, ...}``: the questions of the source notebook's markdown, in
    order. An option is a line ``- (a) text``, continued by the indented lines below it."""
    questions = {}
    for cell in _cells(ps):
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"])
        found = QUESTION.search(source)
        if not found:
            continue
        name = f"q{found.group(1)}"
        assert name not in questions, f"{ps}: {name} is asked twice"
        options, current = {}, None
        for line in source[found.start():].splitlines():
            option = OPTION.match(line)
            if option:
                current = option.group(1)
                options[current] = option.group(2)
            elif current and line.startswith("  ") and line.strip():
                options[current] += " " + line.strip()
            else:
                current = None
        questions[name] = {letter: " ".join(text.split()) for letter, text in options.items()}
    return questions


def key_of(ps, question):
    """The keyed letter, recovered from the hashed key the checks grade with."""
    entry = _module(ps).QUESTIONS[question]
    letters = [letter for letter in entry["options"]
               if _choice.digest(ps, question, letter) == entry["key"]]
    assert len(letters) == 1, f"{ps} {question}: {len(letters)} letters match the key"
    return letters[0]


def lengths_of(questions, keys):
    """Per question: (key, {letter: length}, key length / median distractor length, whether
    the key is the longest option); and the share of keys that are the longest.

    Parameters
    ----------
    questions : dict
        ``{question: {letter: option text}}``, as :func:`parse` returns.
    keys : dict
        ``{question: keyed letter}``.
    """
    rows = {}
    for question, options in questions.items():
        key = keys[question]
        lengths = {letter: len(text) for letter, text in options.items()}
        distractors = [n for letter, n in lengths.items() if letter != key]
        rows[question] = (key, lengths, lengths[key] / statistics.median(distractors),
                          lengths[key] == max(lengths.values()))
    share = sum(row[3] for row in rows.values()) / len(rows)
    return rows, share


def measure(ps):
    """:func:`lengths_of` the questions of set ``ps`` and their keys."""
    questions = parse(ps)
    return lengths_of(questions, {q: key_of(ps, q) for q in questions})


@pytest.fixture(scope="module", autouse=True)
def _statistics(request):
    """Print the length statistics of every set once the module's tests have run."""
    yield
    lines = []
    for ps in CHOICE_SETS:
        rows, share = measure(ps)
        keys = "".join(row[0] for row in rows.values())
        lines.append(f"{ps}: keys {keys}; the longest option in {share:.0%} of the questions")
        for question, (key, lengths, ratio, longest) in rows.items():
            shown = ", ".join(f"{letter} {n}" for letter, n in lengths.items())
            lines.append(f"  {question}: key {key}; lengths {shown}; key / median distractor "
                         f"{ratio:.2f}{'; the longest' if longest else ''}")
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n\nMultiple choice: option lengths (characters)")
            for line in lines:
                reporter.write_line(line)


def test_the_sets_with_multiple_choice_are_found():
    assert CHOICE_SETS
    for ps in SETS:
        questions = getattr(_module(ps), "QUESTIONS", None)
        if questions and ps not in CHOICE_SETS:
            # ps03 grades measured numbers under that name, not letters: none of them has options.
            assert not any(isinstance(q, dict) and "options" in q for q in questions.values())


@pytest.mark.parametrize("ps", CHOICE_SETS)
def test_the_notebook_asks_what_the_checks_grade(ps):
    parsed, graded = parse(ps), _module(ps).QUESTIONS
    assert list(parsed) == sorted(parsed, key=lambda q: int(q[1:])), "questions out of order"
    assert set(parsed) == set(graded)
    for question, options in parsed.items():
        assert "".join(options) == graded[question]["options"], question
        assert all(len(text) >= 3 for text in options.values()), question


@pytest.mark.parametrize("ps", CHOICE_SETS)
def test_at_least_four_questions_and_the_keys_vary(ps):
    questions = parse(ps)
    assert len(questions) >= MIN_QUESTIONS
    assert len({key_of(ps, q) for q in questions}) > 1, "every key is the same letter"


@pytest.mark.parametrize("ps", CHOICE_SETS)
def test_the_key_is_rarely_the_longest_option(ps):
    rows, share = measure(ps)
    longest = [q for q, row in rows.items() if row[3]]
    assert share <= MAX_LONGEST_SHARE, f"the key is the longest option in {longest}"


@pytest.mark.parametrize("ps", CHOICE_SETS)
def test_no_key_is_much_longer_than_its_distractors(ps):
    rows, _ = measure(ps)
    long = {q: round(row[2], 2) for q, row in rows.items() if row[2] > MAX_RATIO}
    assert not long, f"key / median distractor length above {MAX_RATIO}: {long}"


@pytest.mark.parametrize("ps", CHOICE_SETS)
def test_the_solution_answers_with_the_key(ps):
    answers = {}
    for cell in _cells(ps):
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and "### BEGIN SOLUTION" in source:
            solution = source.split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0]
            for name, letter in re.findall(r'^answer_(q\d+) = "([a-z])"$', solution, re.M):
                answers[name] = letter
    assert answers == {q: key_of(ps, q) for q in parse(ps)}


@pytest.mark.parametrize("ps", CHOICE_SETS)
def test_every_wrong_option_is_explained(ps):
    for question, entry in _module(ps).QUESTIONS.items():
        key = key_of(ps, question)
        for letter in entry["options"]:
            why = entry["explanations"].get(letter, "")
            if letter == key:
                assert not why, f"{question}: the key has an explanation of a wrong answer"
            else:
                assert len(why) >= 40, f"{question} ({letter}): no explanation"


def test_the_length_rules_catch_a_key_that_gives_itself_away():
    """The measure on a made-up set whose keys carry the nuance and the others do not."""
    careful = "It depends: {0}, as the chapter measured, with its caveats and the paper's own."
    questions = {f"q{i}": {"a": f"Always {i}.", "b": f"Never {i}.", "c": careful.format(i),
                           "d": f"Only at {i}."} for i in range(1, 5)}
    rows, share = lengths_of(questions, {q: "c" for q in questions})
    assert share == 1.0 > MAX_LONGEST_SHARE
    assert all(row[2] > MAX_RATIO for row in rows.values())
    rows, share = lengths_of(questions, {q: "a" for q in questions})
    assert share == 0.0 and all(row[2] < 1 for row in rows.values())
