"""release, autograde, feedback, grades and report, each safe to re-run. release and feedback
are one nbgrader call each; autograde is the course's sandboxed grader (``instructor.grading``)
writing nbgrader's gradebook; grades is nbgrader's export plus the course's own (statuses,
Canvas); report reads the grader's verdict records."""

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
    due = course.record_duedate(ps)
    print(f"released {os.path.relpath(course.release(ps), course.root)} "
          f"({points:g} points; recorded in the gradebook"
          + (f", due {due.isoformat(' ')} UTC" if due is not None else "") + ")")


def autograde(course, ps, submissions_path, workers=None, limits=None, force=False):
    """Import a class's submissions and grade every submission of PS in _grading/submitted.

    Each notebook runs in a sandbox (``instructor.sandbox``), ``workers`` at a time; this
    process judges what the checks recorded and writes the gradebook (``instructor.grading``).
    A line per student is printed as each is graded (on a terminal, under a progress bar).
    Submissions graded before and unchanged since are skipped unless ``force``. Returns 1 if
    something needs the instructor's attention, else 0.
    """
    from instructor import grading
    from instructor.progress import Progress

    if not course.has_assignment(ps):
        # _grading/ is never committed: a fresh clone has no gradebook yet.
        print(f"{ps} is not in the gradebook yet: releasing it first.")
        release(course, ps)
    else:
        course.record_duedate(ps)
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
    with Progress(len(students)) as progress:
        results, warnings = grading.grade_class(course, ps, students, workers=workers,
                                                limits=limits, force=force,
                                                on_result=progress)
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


def grades(course, roster=None):
    """Every student's score on every problem set: nbgrader's export (_grading/grades.csv),
    and the course's (``instructor.export``): _grading/grades-status.csv (status, timestamp,
    late) and _grading/grades-canvas.csv (Canvas's gradebook import format).

    Parameters
    ----------
    course : instructor.course.Course
    roster : str, optional
        A Canvas gradebook export, for Canvas's student ids, sections and assignment ids
        (default: _grading/canvas-roster.csv where it exists).
    """
    from instructor import export

    dest = os.path.join(course.grading, "grades.csv")
    for ps in sorted(_gradebook_sets(course)):
        course.record_duedate(ps)
    course.nbgrader("export", f"--to={dest}")
    with open(dest) as fh:
        rows = sum(1 for _ in fh) - 1
    print(f"wrote {os.path.relpath(dest, course.root)} ({rows} rows, nbgrader's export)")
    if roster is None and os.path.isfile(os.path.join(course.grading, "canvas-roster.csv")):
        roster = os.path.join(course.grading, "canvas-roster.csv")
    table = export.class_rows(course)
    plain = os.path.join(course.grading, "grades-status.csv")
    canvas = os.path.join(course.grading, "grades-canvas.csv")
    export.write_plain(table, plain)
    missing = export.write_canvas(table, canvas,
                                  export.Roster.read(roster) if roster is not None else None)
    counts, late = export.summary(table)
    print(f"wrote {os.path.relpath(plain, course.root)} ({len(table)} rows: student x set, "
          f"with status) and {os.path.relpath(canvas, course.root)} (Canvas import"
          + (f", roster {os.path.relpath(roster, course.root)}" if roster else ", no roster")
          + ")")
    for ps, by_status in counts.items():
        print(f"  {ps}: " + ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in by_status.items())
              + (f", {late[ps]} late" if late.get(ps) else ""))
    if missing:
        print(f"WARNING: {len(missing)} student(s) are not in the Canvas roster (matched on SIS "
              f"Login ID, SIS User ID, ID): {', '.join(missing[:20])}"
              + (" ..." if len(missing) > 20 else ""))


def _gradebook_sets(course):
    with course.gradebook() as gb:
        return [a.name for a in gb.assignments]


def report(course, ps):
    """The class mistake report of ``ps`` from the grader's verdict records (nothing re-run):
    _grading/reports/<ps>/report.html and report.csv."""
    from instructor.report import write_report

    page, table, summary = write_report(course, ps)
    print(f"wrote {os.path.relpath(page, course.root)} and {os.path.relpath(table, course.root)} "
          f"({summary['students']} graded notebook(s), {len(summary['parts'])} part(s))")
