"""Writing a student's results: the autograded notebook, the gradebook, the verdict record.

Nothing the sandbox wrote is copied anywhere: the autograded notebook holds the source's cells,
the student's answers and own cells, and the grader's verdicts as the test cells' outputs.
"""

import copy
import datetime
import json
import os
import warnings

import nbformat

from instructor.grading.plan import squash as _squash

STATUSES = ("graded", "graded_with_errors", "not_submitted")


def autograded_notebook(plan, result):
    """The source's cells with the student's answers and own cells, and the verdicts as the
    test cells' outputs (for nbgrader generate_feedback; nothing from the sandbox but them)."""
    nb = copy.deepcopy(plan.source)
    cells = []
    merged = result.merged

    def extra(src):
        return nbformat.v4.new_code_cell(src)

    for src in merged.extras.get(-1, []):
        cells.append(extra(src))
    for canon, cell in zip(plan.cells, nb.cells):
        if canon.kind == "answer":
            cell.source = merged.answers.get(canon.gid, "") or canon.stub
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if canon.kind == "test":
            message = result.messages.get(canon.gid, "")
            if result.scores.get(canon.gid, 0.0) >= canon.points and not message:
                cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                                       text=f"{canon.gid}: passed\n")]
            else:
                cell.outputs = [nbformat.v4.new_output(
                    "error", ename="AssertionError", evalue=message,
                    traceback=[f"AssertionError: {message}"])]
        cells.append(cell)
        for src in merged.extras.get(canon.index, []):
            cells.append(extra(src))
    nb.cells = cells
    return nb


def write_gradebook(gb, plan, result):
    """One transaction: the submission (with its timestamp, where known), every test cell's
    auto_score, the answer comments."""
    with warnings.catch_warnings():
        # nbgrader's own API triggers SQLAlchemy's "not in session" autoflush warnings
        warnings.simplefilter("ignore")
        _write_gradebook(gb, plan, result)


def _write_gradebook(gb, plan, result):
    gb.update_or_create_student(result.student)
    extra = {"timestamp": result.timestamp} if result.timestamp is not None else {}
    gb.update_or_create_submission(plan.ps, result.student, **extra)
    notebook = gb.find_submission_notebook(plan.ps, plan.ps, result.student)
    for grade in notebook.grades:
        if grade.name in result.scores:
            grade.auto_score = result.scores[grade.name]
            grade.needs_manual_grade = grade.manual_score is not None
    stubs = {c.gid: c.stub for c in plan.cells if c.kind == "answer"}
    for comment in notebook.comments:
        answer = result.merged.answers.get(comment.name, "") if result.merged else ""
        unchanged = _squash(answer) in ("", _squash(stubs.get(comment.name, "")))
        comment.auto_comment = "No response." if unchanged else None
    gb.db.commit()


def status_of(result):
    """``not_submitted`` (no notebook), ``graded_with_errors`` (the notebook could not be read,
    or did not run to its end: killed for time or memory, its process ended) or ``graded``."""
    if not result.submitted:
        return "not_submitted"
    return "graded_with_errors" if result.errors else "graded"


def iso_utc(moment):
    """A naive UTC datetime (nbgrader's timestamps) as ISO 8601 with its offset, or None."""
    if not isinstance(moment, datetime.datetime):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).isoformat()


class VerdictRecords:
    """``_grading/cache/graded/<ps>/<student>.json``: one student's grading, as JSON.

    What was graded (the submission's SHA-256 and the plan's hash, for skipping and resuming)
    and what the grader decided: the score per test cell, each verdict with the catalogued
    mistake it names, the notes, the status and the submission's timestamp. The class reports
    (``instructor report``) and the grade export read these records; nothing is re-run.
    """

    def __init__(self, course, ps):
        self.ps = ps
        self.folder = os.path.join(course.grading, "cache", "graded", ps)

    def path(self, student):
        return os.path.join(self.folder, f"{student}.json")

    def read(self, student):
        """The record of ``student`` (a dict), or None if there is none or it is unreadable."""
        try:
            with open(self.path(student)) as fh:
                record = json.load(fh)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def all(self):
        """{student: record} for every readable record of the problem set."""
        if not os.path.isdir(self.folder):
            return {}
        out = {}
        for name in sorted(os.listdir(self.folder)):
            if name.endswith(".json"):
                record = self.read(name[: -len(".json")])
                if record is not None:
                    out[name[: -len(".json")]] = record
        return out

    def current(self, student, digest, plan_hash):
        """Was this very submission graded with this very plan?"""
        record = self.read(student)
        return record is not None and record.get("sha256") == digest \
            and record.get("plan") == plan_hash

    def write(self, plan, result):
        """Replace the record of ``result.student`` (atomically)."""
        from instructor.grading import VERSION

        verdicts = {}
        for canon in plan.tests:
            score = float(result.scores.get(canon.gid, 0.0))
            verdicts[canon.gid] = {
                "part": canon.part, "points": canon.points, "score": score,
                "passed": score >= canon.points and not result.messages.get(canon.gid),
                "message": result.messages.get(canon.gid, "")[:4000],
                "mistake": result.mistakes.get(canon.gid), "kind": result.kinds.get(canon.gid)}
        record = {
            "version": VERSION, "ps": plan.ps, "student": result.student,
            "sha256": result.sha256, "plan": plan.hash, "status": status_of(result),
            "score": sum(v["score"] for v in verdicts.values()), "max": plan.points,
            "scores": result.scores, "verdicts": verdicts, "notes": result.notes,
            "errors": result.errors, "timestamp": iso_utc(result.timestamp),
            "seconds": round(result.seconds, 3), "peak_memory": result.peak_memory,
            "timings": {k: round(v, 4) for k, v in result.timings.items()},
            "graded": datetime.datetime.now(datetime.timezone.utc).isoformat()}
        os.makedirs(self.folder, exist_ok=True)
        tmp = self.path(result.student) + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(record, fh)
        os.replace(tmp, self.path(result.student))
        return record

    def notes(self, student):
        record = self.read(student)
        return list(record.get("notes", [])) if record else []

