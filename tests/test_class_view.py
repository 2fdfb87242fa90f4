"""The instructor's view of a class, on a small generated class of ps01 graded for real:
a line per student while grading, the grade exports (statuses, lateness, Canvas's import
format, a late resubmission replacing the grade) and the class mistake report.

The oracles: the class's composition (which student made which catalogued mistake or broke
their notebook how, and when they submitted), the gradebook as nbgrader's API reads it, and
tests/variants/ps01_numpy_batchnorm.py (each mistake's part and message). The fast parts
(the progress lines, the Canvas roster, failure grouping) are tested without a sandbox below.
"""

import ast
import csv
import datetime
import io
import re
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_class  # noqa: E402
import test_problem_sets as sets  # noqa: E402

course, grade_id, gradebook_scores = sets.course, sets.grade_id, sets.gradebook_scores
instructor, load_variants, student = sets.instructor, sets.load_variants, sets.student
broken = bench_class.broken

PS = "ps01_numpy_batchnorm"
POINTS = float(sum(c.metadata["nbgrader"].get("points", 0) for c in nbformat.read(
    REPO / "solutions" / PS / f"{PS}.ipynb", as_version=4).cells
    if c.metadata.get("nbgrader", {}).get("grade")))
PARTS = sorted({c.metadata["nbgrader"]["grade_id"].split("_")[0] for c in nbformat.read(
    REPO / "solutions" / PS / f"{PS}.ipynb", as_version=4).cells
    if c.metadata.get("nbgrader", {}).get("grade")})
MISTAKES = load_variants(PS).MISTAKES
DUE = "2030-01-15 23:59:00 Europe/Berlin"  # 22:59 UTC
ON_TIME = "2030-01-15 20:00:00 UTC"
LATE = "2030-01-16 09:30:00 UTC"
# student -> (kind, mistake variant or None, submitted at)
CLASS = {
    "ann": ("solution", None, ON_TIME),
    "ben": ("alternative", None, ON_TIME),
    "cat": ("mistake", "unbiased variance", ON_TIME),
    "dan": ("mistake", "unbiased variance", LATE),
    "eve": ("mistake", "momentum reversed", ON_TIME),
    "fay": ("mistake", "q1: NaN expected from a zero variance", ON_TIME),
    "gus": ("syntax error", None, ON_TIME),
    "hal": ("exception", None, ON_TIME),
    "ida": ("infinite loop", None, ON_TIME),
    "jon": ("empty", None, ON_TIME),
    "kim": ("no notebook", None, None),
}
STATUS = {"infinite loop": "graded_with_errors", "empty": "graded_with_errors",
          "no notebook": "not_submitted"}
OPTIONS = ["--workers", "2", "--timeout", "3", "--notebook-timeout", "120"]


def _label(name):
    """The catalogued mistake's name a variant's verdict must give."""
    entry = MISTAKES[name]
    found = re.match(r"Most likely mistake \((.*)\)$", entry["message"])
    if found:
        return found.group(1)
    (gid, source), = entry["cells"].items()  # a multiple-choice answer: `answer_qN = "x"`
    tree = ast.parse(source)
    target, value = tree.body[0].targets[0].id, ast.literal_eval(tree.body[0].value)
    return f"{target} = {value!r}"


def _write_class(root, folder, members):
    release = root / "exercises" / PS / f"{PS}.ipynb"
    source = root / "solutions" / PS / f"{PS}.ipynb"
    solution = student(release, source)
    first = next(c for c in solution.cells if c.metadata.get("nbgrader", {}).get("solution"))
    alternative = next(iter(load_variants(PS).ALTERNATIVES.values()))
    for who, (kind, variant, when) in members.items():
        where = folder / who / PS  # nbgrader's own layout, with its timestamp.txt
        where.mkdir(parents=True)
        if when:
            (where / "timestamp.txt").write_text(when + "\n")
        path = where / f"{PS}.ipynb"
        if kind == "solution":
            nbformat.write(solution, path)
        elif kind == "alternative":
            nbformat.write(student(release, source, alternative), path)
        elif kind == "mistake":
            nbformat.write(student(release, source, MISTAKES[variant]["cells"]), path)
        elif kind in ("syntax error", "exception", "infinite loop"):
            nbformat.write(student(release, source,
                                   {grade_id(first): broken(first.source, kind)}), path)
        elif kind == "empty":
            path.write_bytes(b"")
        else:
            (where / "README.txt").write_text("no notebook")


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def _utc(text):
    from nbgrader.utils import parse_utc

    return parse_utc(text)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("class")
    root = course(tmp, PS)
    config = root / "nbgrader_config.py"
    config.write_text(config.read_text() + f"\nc.CourseGrader.duedates = {{{PS!r}: {DUE!r}}}\n")
    instructor(root, "release", PS)
    incoming = tmp / "incoming"
    _write_class(root, incoming, CLASS)
    out = instructor(root, "autograde", PS, "--submissions", str(incoming), *OPTIONS,
                     check=False)
    assert out.returncode in (0, 1), out.stdout + out.stderr
    return root, tmp, out.stdout


@pytest.mark.slow
def test_a_line_per_student_as_each_is_graded(graded):
    root, _, out = graded
    scores, n, _ = gradebook_scores(root, PS)
    lines = re.findall(r"^\[\s*(\d+)/(\d+)\] (\S+)  (\S+)  ([\d.]+) s  ~([\d:]+) left", out, re.M)
    assert sorted(who for _, _, who, *_ in lines) == sorted(CLASS), out
    assert [int(done) for done, *_ in lines] == list(range(1, len(CLASS) + 1))
    for _, total, who, score, *_ in lines:
        assert int(total) == len(CLASS)
        assert score == f"{sum(s for s, _ in scores[who].values()):g}/{POINTS:g}"
    assert out.index("] ") < out.index("autograded ")  # before the final table


@pytest.mark.slow
def test_the_exports_tell_every_status_apart(graded):
    root, tmp, _ = graded
    instructor(root, "grades")
    scores, _, _ = gradebook_scores(root, PS)
    totals = {who: sum(s for s, _ in cells.values()) for who, cells in scores.items()}
    rows = _rows(root / "_grading" / "grades-status.csv")
    assert rows[0] == ["student", "set", "score", "max", "status", "timestamp", "late",
                       "seconds_late", "errors"]
    table = {r[0]: dict(zip(rows[0], r)) for r in rows[1:]}
    assert len(rows) - 1 == len(table) == len(CLASS)
    due = _utc(DUE)
    for who, (kind, _, when) in CLASS.items():
        row = table[who]
        assert row["status"] == STATUS.get(kind, "graded"), (who, row)
        if kind == "no notebook":
            assert row["score"] == "" and row["late"] == "" and row["timestamp"] == ""
            continue
        assert float(row["score"]) == totals[who]
        assert _utc(row["timestamp"]) == _utc(when)
        assert row["late"] == ("yes" if _utc(when) > due else "no"), (who, row)
    assert float(table["dan"]["seconds_late"]) == (_utc(LATE) - due).total_seconds()
    assert "interrupted" in table["ida"]["errors"] and "readable" in table["jon"]["errors"]

    canvas = _rows(root / "_grading" / "grades-canvas.csv")
    assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", PS]
    assert canvas[1][0].strip() == "Points Possible" and float(canvas[1][5]) == POINTS
    by_login = {r[3]: r for r in canvas[2:]}
    assert len(by_login) == len(canvas) - 2 == len(CLASS)
    for who in CLASS:
        expected = "" if table[who]["status"] == "not_submitted" else f"{totals[who]:g}"
        assert by_login[who][5] == expected

    # a submission that reached _grading/submitted but was not graded (nbgrader collect)
    extra = root / "_grading" / "submitted" / "zed" / PS
    extra.mkdir(parents=True)
    (extra / f"{PS}.ipynb").write_bytes(
        (root / "_grading" / "submitted" / "ann" / PS / f"{PS}.ipynb").read_bytes())
    instructor(root, "grades")
    table = {r[0]: r for r in _rows(root / "_grading" / "grades-status.csv")[1:]}
    assert table["zed"][4] == "ungraded" and table["zed"][2] == ""
    import shutil

    shutil.rmtree(extra.parent)


@pytest.mark.slow
def test_canvas_roster_gives_ids_sections_and_the_assignment_column(graded):
    root, tmp, _ = graded
    roster = tmp / "canvas-export.csv"
    header = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Problem set 0 (41)",
              "ps01 (4242)"]
    body = [["    Points Possible", "", "", "", "", "10", "25"],
            ["Ann, A", "101", "S-ann", "ann", "Sec 1", "", ""],
            ["Cat, C", "103", "S-cat", "cat", "Sec 2", "", ""],
            ["Zoe, Z", "199", "S-zoe", "zoe", "Sec 2", "", ""]]
    with open(roster, "w", newline="") as fh:
        csv.writer(fh).writerows([header] + body)
    out = instructor(root, "grades", "--roster", str(roster)).stdout
    canvas = _rows(root / "_grading" / "grades-canvas.csv")
    assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "ps01 (4242)"]
    rows = {r[3]: r for r in canvas[2:]}
    assert rows["ann"][:5] == ["Ann, A", "101", "S-ann", "ann", "Sec 1"]
    assert rows["zoe"][5] == ""  # in Canvas, not in this class: no score sent
    assert set(rows) == set(CLASS) | {"zoe"} and len(canvas) - 2 == len(rows)
    missing = sorted(set(CLASS) - {"ann", "cat"})
    assert f"{len(missing)} student(s) are not in the Canvas roster" in out


@pytest.mark.slow
def test_the_class_report_from_the_verdict_records(graded, monkeypatch):
    root, _, _ = graded
    from instructor import commands, sandbox
    from instructor.course import Course

    def no_run(*args, **kwargs):
        raise AssertionError("the report ran a notebook")

    monkeypatch.setattr(sandbox, "run", no_run)
    commands.report(Course(root), PS)
    folder = root / "_grading" / "reports" / PS
    rows = _rows(folder / "report.csv")
    assert rows[0] == ["part", "kind", "label", "students", "share", "cells"]
    graded_n = sum(1 for kind, *_ in CLASS.values() if kind != "no notebook")
    scores, _, _ = gradebook_scores(root, PS)
    for part in PARTS:
        # the score distribution: the gradebook's part totals, counted
        expected = {}
        for who, (kind, *_rest) in CLASS.items():
            if kind == "no notebook":
                continue
            got = sum(s for g, (s, _) in scores[who].items() if g.startswith(part + "_"))
            expected[got] = expected.get(got, 0) + 1
        found = {float(r[2].split("/")[0]): int(r[3]) for r in rows[1:]
                 if r[0] == part and r[1] == "score"}
        assert found == expected, part
    # each catalogued mistake in its part: the students who made it, of the graded class
    made = {}
    for kind, variant, _ in CLASS.values():
        if kind == "mistake":
            key = (MISTAKES[variant]["part"][0], _label(variant))
            made[key] = made.get(key, 0) + 1
    named = {(r[0], r[2]): (int(r[3]), float(r[4])) for r in rows[1:] if r[1] == "mistake"}
    for key, count in made.items():
        assert named[key] == (count, round(count / graded_n, 4)), (key, named)
    unnamed = [r for r in rows[1:] if r[1] == "unnamed failure" and r[0] == "A"]
    assert any("raised ValueError" in r[2] for r in unnamed), unnamed
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1 + len(PARTS)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "unbiased variance" in page


@pytest.mark.slow
def test_a_late_resubmission_replaces_the_grade(graded):
    root, tmp, _ = graded
    again = tmp / "resubmitted"
    _write_class(root, again, {"ann": ("mistake", "momentum reversed", LATE)})
    instructor(root, "autograde", PS, "--submissions", str(again), *OPTIONS)
    scores, n_students, _ = gradebook_scores(root, PS)
    assert n_students == len(CLASS) and sorted(scores) == sorted(CLASS)
    ann = sum(s for s, _ in scores["ann"].values())
    assert ann < POINTS
    instructor(root, "grades")
    rows = [r for r in _rows(root / "_grading" / "grades-status.csv")[1:] if r[0] == "ann"]
    assert len(rows) == 1
    assert float(rows[0][2]) == ann and rows[0][6] == "yes" and _utc(rows[0][5]) == _utc(LATE)
    canvas = [r for r in _rows(root / "_grading" / "grades-canvas.csv")[2:] if r[3] == "ann"]
    assert len(canvas) == 1 and canvas[0][5] == f"{ann:g}"
    nbgrader_rows = [r for r in _rows(root / "_grading" / "grades.csv")[1:] if "ann" in r]
    assert len(nbgrader_rows) == 1


# ---------------------------------------------------------------------------------------------
# Without a sandbox


class _Result:
    def __init__(self, student, score, seconds, notes=(), failure="", status="graded"):
        self.student, self.score, self.seconds = student, score, seconds
        self.notes, self.failure = list(notes), failure
        self.record = {"max": 25.0, "status": status}


def test_progress_prints_a_line_per_student_with_the_time_left():
    from instructor import progress

    clock = iter([0.0, 0.0, 10.0, 30.0, 45.0])  # made, entered, then one per student
    out = io.StringIO()
    with progress.Progress(3, stream=out, bar=False, clock=lambda: next(clock)) as bar:
        bar(_Result("ann", 25.0, 4.2), 1, 3)
        bar(_Result("ben", 19.0, 3.0, ["duplicated grade id x"]), 2, 3)
        bar(_Result("cy", 0.0, 9.9, failure="KeyError: 'x'"), 3, 3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[1/3] ann  25/25  4.2 s  ~0:20 left"  # 10 s per student so far, 2 to go
    assert lines[1] == "[2/3] ben  19/25  3.0 s  ~0:15 left  duplicated grade id x"
    assert lines[2].startswith("[3/3] cy  NOT GRADED") and "KeyError" in lines[2]
    with pytest.raises(ValueError, match="total=-1"):
        progress.Progress(-1)


def test_progress_bar_on_a_terminal_uses_rich():
    from instructor.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    with Progress(2, stream=out) as bar:
        assert bar._progress is not None  # rich's Progress, live
        bar(_Result("ann", 25.0, 1.0), 1, 2)
        bar(_Result("ben", 25.0, 1.0), 2, 2)
    assert "ann" in out.getvalue() and "ben" in out.getvalue()


def test_failures_are_grouped_without_their_numbers_and_cases():
    from instructor.report import failure_kind

    a = "`f` raised ValueError: shapes (2,3) (4,)\n  on hidden case 2 (x of shape (2, 3))"
    b = "`f` raised ValueError: shapes (5,3) (7,)\n  on visible case 1 (x)"
    assert failure_kind(a) == failure_kind(b) == "`f` raised ValueError: shapes (N,N) (N,)"


def test_roster_refuses_a_file_that_is_not_a_canvas_export(tmp_path):
    from instructor.course import CourseError
    from instructor.export import Roster

    path = tmp_path / "r.csv"
    path.write_text("name,score\nann,3\n")
    with pytest.raises(CourseError, match="not a Canvas gradebook export"):
        Roster.read(str(path))
    with pytest.raises(CourseError, match="roster="):
        Roster.read(str(tmp_path / "missing.csv"))


def test_due_dates_are_read_by_set_id_or_number_and_checked(tmp_path):
    import shutil

    from instructor.course import Course, CourseError

    (tmp_path / "solutions").mkdir()
    shutil.copytree(REPO / "solutions" / PS, tmp_path / "solutions" / PS)
    config = (REPO / "nbgrader_config.py").read_text()
    (tmp_path / "nbgrader_config.py").write_text(
        config + "\nc.CourseGrader.duedates = {'ps01': '2030-01-15 23:59 +0100'}\n")
    assert Course(tmp_path).duedate(PS) == datetime.datetime(2030, 1, 15, 22, 59)
    (tmp_path / "nbgrader_config.py").write_text(
        config + "\nc.CourseGrader.duedates = {'ps99': '2030-01-15 23:59'}\n")
    with pytest.raises(CourseError, match=r"duedates\['ps99'\].*no problem set"):
        Course(tmp_path).duedate(PS)


def test_a_due_date_with_an_unknown_zone_is_refused():
    from instructor.course import CourseError, parse_time

    assert parse_time("2030-01-15 23:59:00 Europe/Berlin", "due") == datetime.datetime(2030, 1, 15, 22, 59)
    with pytest.raises(CourseError, match="due = '2030-01-15 23:59:00 Mars/Olympus'"):
        parse_time("2030-01-15 23:59:00 Mars/Olympus", "due")
    with pytest.raises(CourseError, match="not a date"):
        parse_time("soon", "due")
