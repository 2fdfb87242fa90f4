"""nbgrader configuration of the course. The course root is the folder of this file.

    solutions/<ps>/<ps>.ipynb       the ONE source per problem set (solutions, hidden tests)
    exercises/<ps>/<ps>.ipynb       the student version: `make release PS=<ps>` generates it
    _grading/                       grading state, never committed (.gitignore):
        gradebook.db, submitted/<student>/<ps>/, autograded/..., feedback/..., grades.csv,
        cache/ (the course grader's reference runs, and its verdict records: what it graded,
               for resuming and for `make report`), reports/<ps>/ (`make report`)

Drive it through `python -m instructor ...` (or the Makefile targets), which run nbgrader from
this folder with TensorFlow's log lines switched off (in stock nbgrader a grade cell that
writes to stderr scores zero). `instructor autograde` does not run `nbgrader autograde`: it
runs each notebook in a sandbox and judges in its own process (instructor/grading/), then
writes this gradebook and the autograded notebooks that `nbgrader generate_feedback` reads.
The sections Sandbox and CourseGrader below are the course grader's own settings.
"""

import os

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import ClearHiddenTests, GetGrades
from traitlets import List

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

ROOT = os.path.dirname(os.path.abspath(__file__))
GRADING = os.path.join(ROOT, "_grading")
os.makedirs(GRADING, exist_ok=True)  # sqlite creates the database file, not its folder

c.CourseDirectory.root = ROOT
c.CourseDirectory.course_id = "batchnorm-course"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.submitted_directory = "_grading/submitted"
c.CourseDirectory.autograded_directory = "_grading/autograded"
c.CourseDirectory.feedback_directory = "_grading/feedback"
c.CourseDirectory.solution_directory = "_grading/solution"
# One SQLite file by default. Several graders or machines share one PostgreSQL gradebook instead:
# NBGRADER_DB_URL=postgresql+psycopg2://USER:PASSWORD@HOST:5432/DBNAME (see the README, "Grading").
c.CourseDirectory.db_url = os.environ.get("NBGRADER_DB_URL") or \
    "sqlite:///" + os.path.join(GRADING, "gradebook.db")

# The limits of one notebook's run. This is the only place they are written: nbgrader reads
# Execute.timeout (self-checks, nbgrader's own runs); the course grader reads all of them
# through instructor.sandbox.Limits.from_config, and `python -m instructor autograde`'s
# --timeout, --notebook-timeout and --memory override them for one run.
c.Execute.timeout = 120  # seconds per cell (soft: the cell is interrupted, the next one runs)
c.Execute.interrupt_on_timeout = True
c.Sandbox.notebook_timeout = 600  # seconds per notebook (hard: the sandbox is killed)
c.Sandbox.memory_mb = 4096  # per notebook (a cgroup where possible, else RLIMIT_DATA)
c.Sandbox.max_file_mb = 64  # the largest file the student's code may write
c.Sandbox.max_pids = 256  # processes per notebook (cgroup pids controller, where available)
c.Sandbox.kill_grace = 5.0  # seconds after a cell's soft limit before the sandbox is killed

# Due dates, {problem set (its id or number): "YYYY-MM-DD HH:MM[:SS] TIMEZONE"} (nbgrader's format, e.g.
# "2025-10-03 23:59:00 Europe/Berlin"; without a zone: UTC). `make release` and `make autograde`
# record them in the gradebook (nbgrader's Assignment.duedate, which `nbgrader db assignment
# add --duedate` also sets, with per-student extensions); `make grades` marks a submission
# made after its due date (plus extension) late. A set missing here keeps the gradebook's.
c.CourseGrader.duedates = {}


class HideHiddenTests(ClearHiddenTests):
    """ClearHiddenTests, and the tracebacks of cells with hidden tests cut to their last line.

    ClearHiddenTests removes the hidden tests from a cell's source, but an error's traceback
    quotes the cell around the failing line, hidden tests included. The learner keeps what they
    need: the error's type and message (the check's diagnosis).
    """

    # HTMLExporter configures this for every preprocessor; NbGraderPreprocessor declares it
    # without config=True, so traitlets would warn about it (nbgrader's GetGrades does the same).
    display_data_priority = List(GetGrades.display_data_priority.default_value, config=True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and self.begin_test_delimeter in cell.source:
            for output in cell.get("outputs", []):
                if output.output_type == "error":
                    output.traceback = [f"\x1b[0;31m{output.ename}\x1b[0m: {output.evalue}"]
        return super().preprocess_cell(cell, resources, index)


# Feedback never shows hidden tests: neither their source nor a traceback that quotes them.
c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor]
