"""Grades an LMS can take: every student x every problem set, with what happened to it.

nbgrader's own export (``_grading/grades.csv``) writes every student x every set with a score,
so a student who did not submit and one who submitted and scored 0 look the same. Here each
pair has a status:

``not_submitted``       no notebook (no folder, or a folder without a notebook): no score
``ungraded``            a notebook was submitted (or resubmitted) and not graded since: no score
``graded``              graded; the score is the gradebook's
``graded_with_errors``  graded, but the notebook did not run to its end (a cell killed for
                        time or memory, the process ended, the notebook unreadable): the score
                        counts what ran; worth a look

and, where the gradebook holds a due date for the set (``c.CourseGrader.duedates`` in
``nbgrader_config.py``, or ``nbgrader db assignment add --duedate``), whether it was late
(its timestamp after the due date plus the student's extension, nbgrader's rule). A
resubmission replaces the submission, the grade and the verdict record: one row per student
and set, always.

Where it comes from: the gradebook (students, sets, scores, timestamps, due dates), the
submitted folders (is there a notebook, and is it the one that was graded) and the verdict
records of ``instructor.grading`` (errors). On a machine sharing a PostgreSQL gradebook with
others, submissions graded elsewhere read ``graded`` (their verdict records are on the
machine that graded them) and their timestamps come from the gradebook.

Two files:

* ``_grading/grades-status.csv``: student, set, score, max, status, timestamp (ISO 8601,
  UTC), late (yes/no; empty without a due date), seconds_late, errors;
* ``_grading/grades-canvas.csv``: Canvas's gradebook import format (see :func:`write_canvas`).
"""

import csv
import datetime
import os
import re
from dataclasses import dataclass

from instructor.course import CourseError

STATUSES = ("not_submitted", "ungraded", "graded", "graded_with_errors")
PLAIN_COLUMNS = ("student", "set", "score", "max", "status", "timestamp", "late",
                 "seconds_late", "errors")
CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
CANVAS_POINTS = "    Points Possible"  # the second row of a Canvas export, as Canvas writes it


@dataclass
class Row:
    """One student's standing on one problem set."""

    student: str
    ps: str
    score: float  # None unless graded
    max: float
    status: str
    timestamp: datetime.datetime = None  # naive UTC
    duedate: datetime.datetime = None  # naive UTC, the extension included
    errors: str = ""
    name: str = ""  # "Last, First" where the gradebook has the names

    @property
    def late(self):
        """True/False, or None where the set has no due date or the time is unknown."""
        if self.duedate is None or self.timestamp is None or self.status == "not_submitted":
            return None
        return self.timestamp > self.duedate

    @property
    def seconds_late(self):
        return max(0.0, (self.timestamp - self.duedate).total_seconds()) if self.late else 0.0


def _iso(moment):
    if moment is None:
        return ""
    return moment.replace(tzinfo=datetime.timezone.utc).isoformat()


def _number(value):
    return "" if value is None else f"{value:g}"


def class_rows(course, sets=None):
    """Every student x every problem set in the gradebook, with its status.

    Parameters
    ----------
    course : instructor.course.Course
    sets : iterable of str, optional
        Only these problem sets (default: every set in the gradebook).

    Returns
    -------
    list of Row
        Sorted by set, then student; exactly one row per (student, set).
    """
    from instructor.grading.record import VerdictRecords
    from instructor.grading.run import sha256
    from instructor.submissions import read_timestamp

    base = os.path.join(course.root, course.coursedir.submitted_directory)
    folders = sorted(os.listdir(base)) if os.path.isdir(base) else []
    rows = []
    with course.gradebook() as gb:
        assignments = sorted(gb.assignments, key=lambda a: a.name)
        known = {a.name for a in assignments}
        wanted = list(sets) if sets is not None else sorted(known)
        for ps in wanted:
            if ps not in known:
                raise CourseError(f"no problem set {ps!r} in the gradebook (it has "
                                  f"{', '.join(sorted(known)) or 'none'}): release it first")
        people = {s.id: s for s in gb.students}
        for assignment in assignments:
            ps = assignment.name
            if ps not in wanted:
                continue
            submissions = {sub.student.id: sub for sub in assignment.submissions}
            records = VerdictRecords(course, ps).all()
            students = set(people) | set(records) | set(submissions) | {
                s for s in folders if os.path.isdir(os.path.join(base, s, ps))}
            for student in sorted(students):
                sub = submissions.get(student)
                record = records.get(student)
                path = course.submitted(student, ps)
                row = Row(student, ps, None, assignment.max_score, "not_submitted")
                person = people.get(student)
                if person is not None and (person.last_name or person.first_name):
                    row.name = ", ".join(n for n in (person.last_name, person.first_name) if n)
                if os.path.isfile(path):  # graded here, or to be
                    row.timestamp = read_timestamp(os.path.dirname(path))[0] or \
                        (sub.timestamp if sub is not None else None)
                    if record is not None and sub is not None \
                            and record.get("sha256") == sha256(path) \
                            and record.get("status") in ("graded", "graded_with_errors"):
                        row.status, row.score = record["status"], sub.score
                        row.errors = "; ".join(record.get("errors") or [])[:300]
                    else:
                        row.status = "ungraded"
                elif sub is not None and (record is None or record.get("status") != "not_submitted") \
                        and sub.timestamp is not None:
                    # graded on another machine sharing this gradebook: the gradebook knows
                    row.status, row.score, row.timestamp = "graded", sub.score, sub.timestamp
                if assignment.duedate is not None:
                    extension = sub.extension if sub is not None else None
                    row.duedate = assignment.duedate + (extension or datetime.timedelta(0))
                rows.append(row)
    return rows


def write_plain(rows, path):
    """The plain CSV: one line per row, the columns of :data:`PLAIN_COLUMNS`."""
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(PLAIN_COLUMNS)
        for row in rows:
            late = {True: "yes", False: "no", None: ""}[row.late]
            out.writerow([row.student, row.ps, _number(row.score), _number(row.max), row.status,
                          _iso(row.timestamp), late,
                          f"{row.seconds_late:.0f}" if row.late else ("0" if late else ""),
                          row.errors])


# ---------------------------------------------------------------------------------------------
# Canvas


@dataclass
class Roster:
    """A Canvas gradebook export ("Export entire gradebook", a CSV), read as a roster: each
    student's Student, ID, SIS User ID, SIS Login ID and Section, and the assignment columns'
    headers ("Name (id)")."""

    students: list  # [{column: value}] in the export's order
    headers: list  # the export's assignment columns

    @classmethod
    def read(cls, path):
        """Read a Canvas export; CourseError naming the file if it is not one."""
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                table = list(csv.reader(fh))
        except OSError as exc:
            raise CourseError(f"roster={path!r}: {exc.strerror}") from None
        if not table or "Student" not in table[0] or not any(
                c in table[0] for c in ("ID", "SIS User ID", "SIS Login ID")):
            raise CourseError(f"roster={path!r} is not a Canvas gradebook export: its first line "
                              "must name the columns Student, ID, SIS User ID, SIS Login ID, "
                              "Section")
        header = table[0]
        students = []
        for line in table[1:]:
            entry = dict(zip(header, line))
            who = entry.get("Student", "").strip()
            if not who or who == "Points Possible" or (
                    "read only" in " ".join(line).lower() and not entry.get("ID", "").strip()):
                continue
            students.append(entry)
        fixed = set(CANVAS_COLUMNS) | {"Integration ID"}
        return cls(students, [h for h in header if h not in fixed])

    def find(self, student):
        """The roster entry of one of our student ids (matched on SIS Login ID, SIS User ID,
        ID, Integration ID, in that order), or None."""
        for column in ("SIS Login ID", "SIS User ID", "ID", "Integration ID"):
            for entry in self.students:
                if entry.get(column, "").strip() == student:
                    return entry
        return None

    def header_for(self, ps):
        """The export's column for ``ps`` ("ps01_numpy_batchnorm (1234)", or one named by the
        set's number, "ps01 (1234)"), or None."""
        short = ps.split("_", 1)[0].lower()
        for header in self.headers:
            name = re.sub(r"\s*\(\d+\)\s*$", "", header).strip().lower()
            if name in (ps.lower(), short):
                return header
        return None


def write_canvas(rows, path, roster=None):
    """The Canvas gradebook import CSV; returns the students missing from ``roster``.

    Canvas's format (Grades > Import; the same columns as its "Export entire gradebook"): the
    columns ``Student, ID, SIS User ID, SIS Login ID, Section``, then one column per
    assignment named ``Name (id)``, where ``id`` is Canvas's assignment id; a second row
    ``Points Possible`` with each assignment's points. Canvas matches a row to a student by
    ID, SIS User ID or SIS Login ID. A column without an id creates a new assignment of that
    name on import. An empty cell sends no score, so a set that was not submitted or not graded
    is left empty, never 0 (Canvas's own missing and late policies then apply); this file has
    no other columns, since Canvas would read any other column as an assignment.

    Parameters
    ----------
    rows : list of Row
    path : str
    roster : Roster, optional
        A Canvas export: its students' ids and sections, and its assignment columns (a set's
        scores go into the column named after it, with Canvas's id). Without one: Student is
        the name in the gradebook (or the id), SIS Login ID our student id, the rest empty,
        and each set a new column named by its id.
    """
    sets = sorted({r.ps for r in rows})
    points = {r.ps: r.max for r in rows}
    headers = [(roster.header_for(ps) if roster else None) or ps for ps in sets]
    scores, names = {}, {}
    for row in rows:
        if row.status in ("graded", "graded_with_errors"):
            scores[(row.student, row.ps)] = row.score
        names.setdefault(row.student, row.name)
    ours = sorted({r.student for r in rows})
    lines, missing, placed = [], [], set()
    if roster is not None:
        matched = {}
        for student in ours:
            entry = roster.find(student)
            if entry is not None:
                matched.setdefault(id(entry), student)
        for entry in roster.students:
            student = matched.get(id(entry))
            fixed = [entry.get(c, "") for c in CANVAS_COLUMNS]
            if student is not None:
                placed.add(student)
            lines.append(fixed + [_number(scores.get((student, ps))) if student else ""
                                  for ps in sets])
    for student in ours:
        if student in placed:
            continue
        if roster is not None:
            missing.append(student)
        lines.append([names.get(student) or student, "", "", student, ""]
                     + [_number(scores.get((student, ps))) for ps in sets])
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(list(CANVAS_COLUMNS) + headers)
        out.writerow([CANVAS_POINTS, "", "", "", ""] + [_number(points[ps]) for ps in sets])
        out.writerows(lines)
    return missing


def summary(rows):
    """{set: {status: count}} and the number of late submissions per set."""
    counts, late = {}, {}
    for row in rows:
        counts.setdefault(row.ps, dict.fromkeys(STATUSES, 0))[row.status] += 1
        late[row.ps] = late.get(row.ps, 0) + (1 if row.late else 0)
    return counts, late
