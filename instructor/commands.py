"""release, autograde, feedback and grades: each one nbgrader call, each safe to re-run."""

import os
import time
from collections import OrderedDict

from instructor.course import CourseError
from instructor.submissions import Collected, import_into, readable


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


def autograde(course, ps, submissions_path):
    """Import a class's submissions and grade them all with ONE `nbgrader autograde` call.

    Every submission in _grading/submitted is (re)graded, so importing a few late ones keeps
    the others. Returns 1 if something needs the instructor's attention, else 0.
    """
    if not course.has_assignment(ps):
        # _grading/ is never committed: a fresh clone has no gradebook yet.
        print(f"{ps} is not in the gradebook yet: releasing it first.")
        release(course, ps)
    with Collected(submissions_path, ps) as found:
        problems = list(found.problems)
        good = []
        for sub in found.submissions:
            why = readable(sub.notebook)
            if why:
                problems.append(f"{sub.notebook}: not a readable notebook ({why}); skipped")
                continue
            good.append(sub)
            if sub.note:
                print(f"  {sub.student}: {sub.note}")
        if not good:
            raise CourseError(f"no submissions of {ps} found in {submissions_path}"
                              + "".join(f"\n  {p}" for p in problems))
        import_into(course, ps, good)
    print(f"imported {len(good)} submission(s) into {course.coursedir.submitted_directory}/")

    graded = _submitted_students(course, ps)
    start = time.perf_counter()
    try:
        course.nbgrader("autograde", ps, "--force")
    except CourseError as exc:  # e.g. one kernel died: the others are graded; show the table
        problems.append(str(exc))
    seconds = time.perf_counter() - start
    print(f"autograded {len(graded)} submission(s) in {seconds:.1f} s "
          f"({seconds / len(graded):.1f} s per submission)\n")
    print(score_table(course, ps, highlight={s.student for s in good}))
    for problem in problems:
        print("WARNING:", problem)
    return 1 if problems else 0


def _submitted_students(course, ps):
    base = os.path.join(course.root, course.coursedir.submitted_directory)
    return sorted(s for s in os.listdir(base)
                  if os.path.exists(os.path.join(base, s, ps, f"{ps}.ipynb")))


def scores(course, ps):
    """{student: {"parts": {part: (score, max)}, "score": s, "max": m}} from the gradebook.

    A part is the grade id's prefix before the first "_" (A, B, C, D in ps01).
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
