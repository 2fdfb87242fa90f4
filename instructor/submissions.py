"""Find a class's submissions in a folder or a .zip, and copy them where nbgrader expects them.

Accepted layouts (the originals are never modified):

    DIR/<student>.ipynb
    DIR/<student>/<ps>.ipynb          (or the only notebook in DIR/<student>/)
    DIR/<student>/<ps>/<ps>.ipynb     (nbgrader's own layout)
    a .zip of any of these, possibly inside one top-level folder

When a submission was made: nbgrader's ``timestamp.txt`` beside the notebook (or in the
student's folder) where there is one, else the notebook file's modification time (for a .zip,
the time stored with the file in the archive, read as this machine's local time). The import
writes it to ``_grading/submitted/<student>/<ps>/timestamp.txt``, where nbgrader keeps it too.
"""

import datetime
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass

import nbformat

from instructor.course import CourseError, parse_time

TIMESTAMP = "timestamp.txt"

STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")
_SKIP = {"__MACOSX", ".ipynb_checkpoints"}


@dataclass(frozen=True)
class Submission:
    student: str
    notebook: str  # path of the student's notebook (in the original folder or the unpacked zip);
    # None for a student's folder that holds no notebook (graded 0)
    note: str = ""
    timestamp: datetime.datetime = None  # when it was submitted (naive UTC), if known


def read_timestamp(folder):
    """(when the submission in ``folder`` was made, as naive UTC, or None; a note or "").

    Reads nbgrader's ``timestamp.txt`` in ``folder``.
    """
    path = os.path.join(folder, TIMESTAMP)
    if not os.path.isfile(path):
        return None, ""
    with open(path, errors="replace") as fh:
        text = fh.read(200).strip()
    try:
        return parse_time(text, TIMESTAMP), ""
    except CourseError as exc:
        return None, f"the submission time is unknown: {exc}"


def _submitted_at(notebook):
    """(naive UTC datetime, note) of a notebook found in a class's folder."""
    notes = []
    for folder in (os.path.dirname(notebook), os.path.dirname(os.path.dirname(notebook))):
        when, note = read_timestamp(folder)
        if when is not None:
            return when, ""
        if note:
            notes.append(note)
    mtime = os.path.getmtime(notebook)
    when = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).replace(tzinfo=None)
    return when, "; ".join(notes)


def _visible(names):
    return sorted(n for n in names if n not in _SKIP and not n.startswith("."))


def _find(folder, ps):
    found, problems = {}, []

    def add(student, path, note=""):
        if not STUDENT_ID.match(student):
            problems.append(f"{path}: {student!r} is not a usable student id (letters, digits, "
                            "'_', '-', '.', '@', '+'; starting with a letter or digit)")
        elif student in found:
            problems.append(f"student {student!r} has two submissions: {found[student].notebook} "
                            f"and {path}")
        else:
            when, problem = _submitted_at(path)
            found[student] = Submission(student, path, "; ".join(n for n in (note, problem) if n),
                                        when)

    for name in _visible(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and name.endswith(".ipynb"):
            add(name[: -len(".ipynb")], path)
        elif os.path.isdir(path):
            nested = os.path.join(path, ps, f"{ps}.ipynb")
            direct = os.path.join(path, f"{ps}.ipynb")
            notebooks = [n for n in _visible(os.listdir(path)) if n.endswith(".ipynb")]
            if os.path.isfile(direct):
                add(name, direct)
            elif os.path.isfile(nested):
                add(name, nested)
            elif len(notebooks) == 1:
                add(name, os.path.join(path, notebooks[0]),
                    note=f"used {notebooks[0]} as {ps}.ipynb")
            elif notebooks:
                problems.append(f"{path}: several notebooks and none is {ps}.ipynb: {notebooks}")
            elif STUDENT_ID.match(name) and name not in found:
                found[name] = Submission(name, None, note=f"no notebook in {name}/: graded 0")
    return found, problems


def _holds(folder, ps):
    """Is ``folder`` one student's submission (DIR/<ps>.ipynb or DIR/<ps>/<ps>.ipynb)?"""
    return (os.path.isfile(os.path.join(folder, f"{ps}.ipynb"))
            or os.path.isfile(os.path.join(folder, ps, f"{ps}.ipynb")))


class Collected:
    """The submissions found under ``source`` (a folder or a .zip); a context manager."""

    def __init__(self, source, ps):
        self.source = os.path.abspath(source)
        self._tmp = None
        if not os.path.exists(self.source):
            raise CourseError(f"no such folder or file: {source}")
        folder = self.source
        if os.path.isfile(self.source):
            if not zipfile.is_zipfile(self.source):
                raise CourseError(f"{source} is neither a folder nor a .zip file")
            self._tmp = tempfile.TemporaryDirectory(prefix="submissions-")
            folder = self._tmp.name
            _safe_extract(self.source, folder)
        while True:  # a zip (or folder) that wraps everything in one folder: look inside
            entries = _visible(os.listdir(folder))
            inner = os.path.join(folder, entries[0]) if len(entries) == 1 else None
            if not (inner and os.path.isdir(inner)) or _holds(inner, ps):
                break
            folder = inner
        found, problems = _find(folder, ps)
        self.submissions = [found[s] for s in sorted(found)]
        self.problems = problems

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._tmp is not None:
            self._tmp.cleanup()


def _safe_extract(zip_path, dest):
    """Extract a .zip into ``dest`` (nothing outside it), keeping each file's stored time."""
    dest = os.path.realpath(dest)
    with zipfile.ZipFile(zip_path) as zf:
        for member in zf.infolist():
            target = os.path.realpath(os.path.join(dest, member.filename))
            if os.path.commonpath([dest, target]) != dest:
                raise CourseError(f"{zip_path}: refusing to extract {member.filename!r} outside "
                                  "the target folder")
        zf.extractall(dest)
        for member in zf.infolist():
            target = os.path.join(dest, member.filename)
            if not member.is_dir() and os.path.isfile(target):
                try:
                    moment = time.mktime(member.date_time + (0, 0, -1))
                    os.utime(target, (moment, moment))
                except (OverflowError, ValueError, OSError):
                    pass


def readable(path):
    """None if ``path`` is a notebook nbformat can read, else the reason."""
    try:
        nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - any parse failure is reported, not raised
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def import_into(course, ps, submissions):
    """Copy each notebook to _grading/submitted/<student>/<ps>/<ps>.ipynb with its
    ``timestamp.txt`` (replacing an earlier import of the same student: a resubmission
    replaces the submission, it never adds one) and add the students to the gradebook. A
    student without a notebook gets an empty folder (graded 0), unless an earlier import
    brought one."""
    for sub in submissions:
        dest = course.submitted(sub.student, ps)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if sub.notebook is not None:
            shutil.copyfile(sub.notebook, dest)
            stamp = os.path.join(os.path.dirname(dest), TIMESTAMP)
            if sub.timestamp is not None:
                with open(stamp, "w") as fh:
                    fh.write(sub.timestamp.replace(tzinfo=datetime.timezone.utc).isoformat(" ")
                             + "\n")
            elif os.path.exists(stamp):
                os.remove(stamp)
    with course.gradebook() as gb:
        for sub in submissions:
            gb.update_or_create_student(sub.student)
