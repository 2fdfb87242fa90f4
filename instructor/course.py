"""The course as nbgrader sees it: its folders, its gradebook, and how nbgrader is run."""

import os
import re
import subprocess
import sys
from contextlib import contextmanager

DEFAULT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# TensorFlow writes log lines to stderr on import; in nbgrader a grade cell with stderr output
# scores zero, so every process we start (nbgrader, and the kernels it starts) gets these.
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}


class CourseError(Exception):
    """A problem the instructor can fix; reported without a traceback."""


def parse_time(text, what="time"):
    """A moment as nbgrader writes it, as a naive UTC datetime (nbgrader's convention).

    Accepts ISO 8601 with or without an offset ("2025-10-03T23:59:00+02:00") and nbgrader's
    "YYYY-MM-DD HH:MM[:SS] ZONE" (an IANA zone name such as Europe/Berlin, or an offset such as
    +0200, read as hours and minutes); without a zone, UTC.

    Raises
    ------
    CourseError
        If ``text`` is not such a moment; the message names ``what`` and the value.
    """
    import dateutil.tz
    from nbgrader.utils import parse_utc

    if not isinstance(text, str) or not text.strip():
        raise CourseError(f"{what} = {text!r}: not a date and time")
    parts = text.strip().split(" ")
    moment = text.strip()
    if len(parts) == 3:
        offset = re.fullmatch(r"([+-])(\d\d):?(\d\d)", parts[2])
        if offset:  # nbgrader's parse_utc would read "+0100" as 100 seconds
            moment = f"{parts[0]} {parts[1]}{offset[1]}{offset[2]}:{offset[3]}"
        elif dateutil.tz.gettz(parts[2]) is None:
            raise CourseError(f"{what} = {text!r}: unknown time zone {parts[2]!r}")
    try:
        return parse_utc(moment)
    except (ValueError, OverflowError) as exc:
        raise CourseError(f"{what} = {text!r}: not a date and time ({exc})") from None


def environment():
    """os.environ, plus quiet TensorFlow and this interpreter's bin/ first on PATH.

    nbgrader's gradebook runs the `alembic` executable, which lives next to the interpreter.
    """
    env = dict(os.environ, **QUIET_TF)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


class Course:
    def __init__(self, root=None):
        self.root = os.path.abspath(root or DEFAULT_ROOT)
        config_file = os.path.join(self.root, "nbgrader_config.py")
        if not os.path.exists(config_file):
            raise CourseError(f"no nbgrader_config.py in {self.root}: not a course root")
        os.environ.update(environment())  # for the gradebook (alembic) and kernels we start
        from nbgrader.coursedir import CourseDirectory
        from traitlets.config.loader import PyFileConfigLoader

        self.config = PyFileConfigLoader("nbgrader_config.py", path=self.root).load_config()
        self.coursedir = CourseDirectory(config=self.config)

    # problem sets --------------------------------------------------------------------------
    def problem_sets(self):
        """The problem sets' ids (``ps01_numpy_batchnorm``, ...): the folders of the sources."""
        base = self.path(self.coursedir.source_directory)
        return sorted(name for name in os.listdir(base)
                      if os.path.exists(os.path.join(base, name, f"{name}.ipynb")))

    def resolve(self, ps):
        """The full id of problem set ``ps``, given in full or by a unique prefix (``ps01``)."""
        known = self.problem_sets()
        if ps in known:
            return ps
        matches = [name for name in known if name.startswith(ps + "_")]
        if len(matches) == 1:
            return matches[0]
        raise CourseError(f"no problem set {ps!r}: the problem sets are {', '.join(known)} "
                          "(the number alone, e.g. ps01, also works)")

    # folders -------------------------------------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def source(self, ps):
        return os.path.join(self.root, self.coursedir.source_directory, ps, f"{ps}.ipynb")

    def release(self, ps):
        return os.path.join(self.root, self.coursedir.release_directory, ps, f"{ps}.ipynb")

    def submitted(self, student, ps):
        return os.path.join(self.root, self.coursedir.submitted_directory, student, ps, f"{ps}.ipynb")

    def autograded(self, student, ps):
        return os.path.join(self.root, self.coursedir.autograded_directory, student, ps, f"{ps}.ipynb")

    def feedback(self, student, ps):
        return os.path.join(self.root, self.coursedir.feedback_directory, student, ps, f"{ps}.html")

    @property
    def grading(self):
        return self.path("_grading")

    # nbgrader ------------------------------------------------------------------------------
    def nbgrader(self, *args):
        """Run ``python -m nbgrader ARGS`` from the course root; raise CourseError if it fails."""
        cmd = [sys.executable, "-m", "nbgrader", *args]
        result = subprocess.run(cmd, cwd=self.root, env=environment(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            errors = [line for line in result.stdout.splitlines() if "| ERROR]" in line]
            detail = "\n".join(errors[-20:]) if errors else result.stdout[-4000:]
            raise CourseError(f"`nbgrader {' '.join(args)}` failed (exit {result.returncode}):\n"
                              + detail)
        for line in result.stdout.splitlines():
            # nbgrader warns that the checksum of every cell with hidden tests "has changed" (it
            # is computed before they are removed; the cell is restored anyway), and --force
            # makes it announce that it replaces what it made before: neither needs attention.
            if ("| WARNING]" in line or "| ERROR]" in line) and "'checksum'" not in line \
                    and "Removing existing" not in line:
                print("  nbgrader:", line)
        return result.stdout

    @contextmanager
    def gradebook(self):
        from nbgrader.api import Gradebook

        with Gradebook(self.coursedir.db_url, self.coursedir.course_id) as gb:
            yield gb

    def duedate(self, ps):
        """The due date ``nbgrader_config.py`` sets for ``ps`` (c.CourseGrader.duedates, keyed by
        a set's id or its number, ``ps01``), as a naive UTC datetime, or None if it sets none.
        CourseError naming the setting if a key is no problem set or a value no moment."""
        section = self.config.CourseGrader if "CourseGrader" in self.config else {}
        dates = section.get("duedates", {}) if hasattr(section, "get") else {}
        if not isinstance(dates, dict):
            raise CourseError(f"c.CourseGrader.duedates = {dates!r} in nbgrader_config.py: a "
                              "dict {problem set: due date} is needed")
        by_set = {}
        for key, value in dates.items():
            try:
                by_set[self.resolve(str(key))] = (key, value)
            except CourseError as exc:
                raise CourseError(f"c.CourseGrader.duedates[{key!r}] in nbgrader_config.py: "
                                  f"{exc}") from None
        key, value = by_set.get(ps, (ps, None))
        if value in (None, ""):
            return None
        return parse_time(value, f"c.CourseGrader.duedates[{key!r}]")

    def record_duedate(self, ps):
        """Write the configured due date of ``ps`` into the gradebook (nbgrader's
        Assignment.duedate); a set without one in the configuration keeps the gradebook's.
        Returns the gradebook's due date (naive UTC) or None."""
        from nbgrader.api import MissingEntry

        due = self.duedate(ps)
        with self.gradebook() as gb:
            try:
                assignment = gb.find_assignment(ps)
            except MissingEntry:
                return due
            if due is not None and assignment.duedate != due:
                gb.update_or_create_assignment(ps, duedate=due)
                return due
            return assignment.duedate

    def has_assignment(self, ps):
        from nbgrader.api import MissingEntry

        with self.gradebook() as gb:
            try:
                assignment = gb.find_assignment(ps)
            except MissingEntry:
                return False
            return any(nb.name == ps for nb in assignment.notebooks)
