"""release, autograde, feedback and grades, each safe to re-run. release, feedback and grades
are one nbgrader call each; autograde is the course's sandboxed grader (instructor/grader.py)
writing nbgrader's gradebook."""

import os
import time
from collections import OrderedDict

from instructor.course import CourseError
from instructor.submissions import Collected, import_into


def release(course, ps):
    """solutions/PS -> exercises/PS with nbgrader generate_assignment; records PS in the gradebook."""
    from nbgrader.api import MissingEntry

    if not os.path.exists(course.source(ps)):
        raise CourseError(f"no source notebook {course.source(ps)}")
    course.nbgrader("generate_assignment", ps, "--force")
    with course.gradebook() as gb:
        try:
            points = gb.find_assignment(ps).max_score
        except MissingEntry:
            raise CourseError(f"generate_assignment did not record {ps} in the gradebook") from None
    print(f"released {os.path.relpath(course.release(ps), course.root)} "
          f"({points:g} points; recorded in the gradebook)")


def autograde(course, ps, submissions_path, workers=None, limits=None, force=False):
    """Import a class's submissions and grade every submission of PS in _grading/submitted.

    Each notebook runs in a sandbox (``instructor.sandbox``), ``workers`` at a time; this
    process judges what the checks recorded and writes the gradebook (``instructor.grader``).
    Submissions graded before and unchanged since are skipped unless ``force``. Returns 1 if
    something needs the instructor's attention, else 0.
    """
    from instructor import grader

    if not course.has_assignment(ps):
        # _grading/ is never committed: a fresh clone has no gradebook yet.
        print(f"{ps} is not in the gradebook yet: releasing it first.")
        release(course, ps)
    problems = []
    if submissions_path is not None:
        with Collected(submissions_path, ps) as found:
            problems += list(found.problems)
            if not found.submissions:
                raise CourseError(f"no submissions of {ps} found in {submissions_path}"
                                  + "".join(f"\n  {p}" for p in problems))
            for sub in found.submissions:
                if sub.note:
                    print(f"  {sub.student}: {sub.note}")
            import_into(course, ps, found.submissions)
            imported = {s.student for s in found.submissions}
        print(f"imported {len(imported)} submission(s) into "
              f"{course.coursedir.submitted_directory}/")
    else:
        imported = set()

    students = {s: (course.submitted(s, ps) if os.path.exists(course.submitted(s, ps)) else None)
                for s in _submitted_students(course, ps)}
    if not students:
        raise CourseError(f"no submissions of {ps} to grade")
    start = time.perf_counter()
    results, warnings = grader.grade_class(course, ps, students, workers=workers,
                                           limits=limits, force=force)
    seconds = time.perf_counter() - start
    ran = [r for r in results if not r.skipped]
    print(f"autograded {len(results)} submission(s) in {seconds:.1f} s: {len(ran)} run now"
          + (f" ({seconds / len(ran):.1f} s per submission, {workers or os.cpu_count()} at a time)"
             if ran else "")
          + (f", {len(results) - len(ran)} unchanged since the last run (--force regrades them)"
             if len(ran) < len(results) else "") + "\n")
    print(score_table(course, ps, highlight=imported))
    noted = [(r.student, note) for r in results for note in r.notes]
    if noted:
        print("\nNotes on submissions (what was wrong, and what the grader did about it):")
        for student, note in noted:
            print(f"  {student}: {note}")
    for problem in problems + warnings:
        print("WARNING:", problem)
    return 1 if problems or warnings else 0


def _submitted_students(course, ps):
    base = os.path.join(course.root, course.coursedir.submitted_directory)
    if not os.path.isdir(base):
        return []
    return sorted(s for s in os.listdir(base) if os.path.isdir(os.path.join(base, s, ps)))


def scores(course, ps):
    """{student: {"parts": {part: (score, max)}, "score": s, "max": m}} from the gradebook.

    A part is the grade id's prefix before the first "_" (A, B, C, D in ps01_numpy_batchnorm).
    """
    table = OrderedDict()
    with course.gradebook() as gb:
        assignment = gb.find_assignment(ps)
        for sub in sorted(assignment.submissions, key=lambda s: s.student.id):
            parts = OrderedDict()
            for nb in sub.notebooks:
                for grade in sorted(nb.grades, key=lambda g: g.name):
                    part = grade.name.split("_", 1)[0]
                    got, top = parts.get(part, (0.0, 0.0))
                    parts[part] = (got + (grade.score or 0.0), top + grade.max_score)
            table[sub.student.id] = {"parts": parts, "score": sub.score, "max": sub.max_score}
    return table


def score_table(course, ps, highlight=()):
    rows = scores(course, ps)
    if not rows:
        return f"no graded submissions of {ps}"
    parts = list(next(iter(rows.values()))["parts"])
    width = max(len("student"), *(len(s) for s in rows))
    lines = [f"{'student':<{width}}" + "".join(f"{p:>8}" for p in parts) + f"{'total':>9}"]
    lines.append("-" * len(lines[0]))
    for student, row in rows.items():
        cells = "".join(f"{row['parts'][p][0]:g}/{row['parts'][p][1]:g}".rjust(8) for p in parts)
        total = f"{row['score']:g}/{row['max']:g}".rjust(9)
        lines.append(f"{student:<{width}}{cells}{total}" + ("  (new)" if student in highlight else ""))
    return "\n".join(lines)


def feedback(course, ps):
    """HTML feedback for every autograded submission, hidden tests removed (see nbgrader_config)."""
    course.nbgrader("generate_feedback", ps, "--force")
    base = os.path.join(course.root, course.coursedir.feedback_directory)
    made = sorted(s for s in os.listdir(base) if os.path.exists(course.feedback(s, ps))) \
        if os.path.isdir(base) else []
    print(f"feedback for {len(made)} student(s) in {os.path.relpath(base, course.root)}/"
          f"<student>/{ps}/{ps}.html")


def grades(course):
    """Every student's score on every problem set, to _grading/grades.csv (nbgrader export)."""
    dest = os.path.join(course.grading, "grades.csv")
    course.nbgrader("export", f"--to={dest}")
    with open(dest) as fh:
        rows = sum(1 for _ in fh) - 1
    print(f"wrote {os.path.relpath(dest, course.root)} ({rows} rows)")
