"""The grading pipeline: its steps, declared once in :data:`STEPS`, and :func:`grade_class`,
which runs them for a class (see the package's docstring for what each step does)."""

import concurrent.futures
import os
import shutil
import time
from dataclasses import dataclass, field

import nbformat

from instructor import sandbox
from instructor.course import CourseError
from instructor.grading import run as running
from instructor.grading.judge import load_records, reference_cached, reference_finish, reference_run, verdicts
from instructor.grading.merge import Merged, merge
from instructor.grading.plan import Plan
from instructor.grading.record import VerdictRecords, autograded_notebook, write_gradebook


@dataclass
class Result:
    """One student's grading, filled in by the steps."""

    student: str
    scores: dict = field(default_factory=dict)  # test grade id -> points
    messages: dict = field(default_factory=dict)  # test grade id -> "" (passed) or the verdict
    notes: list = field(default_factory=list)  # on the submission, for the instructor
    merged: Merged = None
    sha256: str = ""
    seconds: float = 0.0  # the run steps (reading, merging, the sandbox, loading records)
    peak_memory: int = 0
    skipped: bool = False  # unchanged since it was last graded: not graded again
    raw: tuple = None  # (outcome, records, skipped cells) until judged
    path: str = None  # the submitted notebook (None: the student's folder holds none)
    nb: object = None  # the parsed notebook (None: none, or unreadable)
    problem: str = ""  # why there is no notebook to run
    submitted: bool = True  # False: no notebook was submitted
    errors: list = field(default_factory=list)  # why the notebook did not run to its end
    mistakes: dict = field(default_factory=dict)  # test grade id -> catalogued mistake named
    kinds: dict = field(default_factory=dict)  # test grade id -> what failed, where said
    timestamp: object = None  # when it was submitted (naive UTC, nbgrader's convention)
    timings: dict = field(default_factory=dict)  # step name -> seconds
    failure: str = ""  # the grader itself failed on this submission
    record: dict = None  # the verdict record written
    work: tuple = None  # (records folder, temporary folder) between the run and loading

    @property
    def score(self):
        return sum(self.scores.values())


@dataclass
class Grading:
    """What the steps share for one problem set: the course, the plan, the limits."""

    course: object
    plan: Plan
    limits: sandbox.Limits
    isolate: bool
    records: VerdictRecords


class Step:
    """One step of grading a submission.

    ``phase`` says where it runs: ``"run"`` steps in a worker thread, several students at
    once; ``"judge"`` and ``"write"`` steps in the calling thread, one student at a time, as
    the runs finish. An exception in a run or judge step is that student's alone (reported,
    the class goes on); in a write step it stops the run (a full disk or a gradebook that
    cannot be reached is not the student's doing).
    """

    phase = "run"

    def __init__(self, grading):
        self.grading = grading

    @property
    def plan(self):
        return self.grading.plan

    def __call__(self, result):
        raise NotImplementedError


class ReadSubmission(Step):
    """Read the submitted file (size-capped) and its timestamp; parse it. A notebook given in
    memory (the solution's) is not read."""

    def __call__(self, result):
        from instructor.submissions import read_timestamp

        if result.nb is not None:
            return
        nb, digest, problem = running.read_submission(result.path)
        result.nb, result.sha256, result.problem = nb, digest, problem
        result.submitted = result.path is not None and os.path.isfile(result.path)
        if problem:
            result.notes.append(problem)
            if result.submitted:
                result.errors.append(problem)
        if result.submitted:
            result.timestamp, note = read_timestamp(os.path.dirname(result.path))
            if note:
                result.notes.append(note)


class MergeIntoSource(Step):
    """The cells to run: the instructor's source with the student's answers."""

    def __call__(self, result):
        result.merged = merge(self.plan, result.nb)
        result.notes += result.merged.notes


class RunInSandbox(Step):
    """Run the merged cells in a sandbox on a copy of the student's files."""

    def __call__(self, result):
        if result.nb is None:
            return
        folders = [os.path.dirname(self.plan.course.release(self.plan.ps))]
        if result.path is not None:
            folders.append(os.path.dirname(result.path))
        outcome, out, tmp, skipped, notes, errors, peak = running.run_submission(
            self.plan, result.merged, folders, self.grading.limits, self.grading.isolate)
        result.work = (out, tmp)
        result.raw = (outcome, None, skipped)
        result.notes += notes
        result.errors += errors
        result.peak_memory = peak


class LoadRecords(Step):
    """Parse what the checks recorded (plain JSON with size limits); remove the run's copy."""

    def __call__(self, result):
        if result.work is None:
            return
        out, tmp = result.work
        try:
            outcome, _, skipped = result.raw
            result.raw = (outcome, load_records(self.plan, result.merged, out), skipped)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            result.work = None


class Judge(Step):
    """Judge each test cell's records here, against what the solution records."""

    phase = "judge"

    def __call__(self, result):
        if result.raw is None:
            result.scores = {c.gid: 0.0 for c in self.plan.tests}
            result.messages = {c.gid: f"not graded: {result.problem}" for c in self.plan.tests}
            result.kinds = {c.gid: "no notebook" for c in self.plan.tests}
            return
        outcome, loaded, skipped = result.raw
        judged = verdicts(self.plan, result.merged, outcome, loaded,
                                  self.grading.limits, skipped)
        result.scores = {g: v[0] for g, v in judged.items()}
        result.messages = {g: v[1] for g, v in judged.items()}
        result.mistakes = {g: v[2] for g, v in judged.items() if v[2]}
        result.kinds = {g: v[3] for g, v in judged.items() if v[3]}
        result.raw = None


class Redact(Step):
    """No line of a hidden test in a verdict, a mistake's name or a note."""

    phase = "judge"

    def __call__(self, result):
        result.messages = {g: self.plan.redact(m) for g, m in result.messages.items()}
        result.mistakes = {g: self.plan.redact(m) for g, m in result.mistakes.items()}
        result.notes = [self.plan.redact(n) for n in result.notes]
        result.errors = [self.plan.redact(n) for n in result.errors]


class WriteAutograded(Step):
    """The autograded notebook, replacing the student's earlier one."""

    phase = "write"

    def __call__(self, result):
        dest = self.grading.course.autograded(result.student, self.plan.ps)
        if os.path.isdir(os.path.dirname(dest)):
            shutil.rmtree(os.path.dirname(dest))
        os.makedirs(os.path.dirname(dest))
        nbformat.write(autograded_notebook(self.plan, result), dest)


class WriteGradebook(Step):
    """One gradebook transaction (a session per student, as nbgrader's own)."""

    phase = "write"

    def __call__(self, result):
        with self.grading.course.gradebook() as gb:
            write_gradebook(gb, self.plan, result)


class WriteVerdictRecord(Step):
    """The verdict record, last: its presence says the student was graded completely."""

    phase = "write"

    def __call__(self, result):
        result.record = self.grading.records.write(self.plan, result)


# The pipeline, in order: the one place its steps are declared.
STEPS = (ReadSubmission, MergeIntoSource, RunInSandbox, LoadRecords,
         Judge, Redact,
         WriteAutograded, WriteGradebook, WriteVerdictRecord)

_PHASES = ("run", "judge", "write")


def _split(steps, grading):
    made = [cls(grading) for cls in steps]
    order = [_PHASES.index(s.phase) for s in made]
    if order != sorted(order):
        raise ValueError(f"steps={[type(s).__name__ for s in made]}: every run step must come "
                         "before the judge steps, and those before the write steps")
    return ([s for s in made if s.phase == "run"], [s for s in made if s.phase == "judge"],
            [s for s in made if s.phase == "write"])


def _apply(steps, result):
    for step in steps:
        start = time.perf_counter()
        step(result)
        result.timings[type(step).__name__] = time.perf_counter() - start
    return result


def _run_phase(steps, result):
    """The run steps of one student (in a worker thread); their time is ``result.seconds``."""
    start = time.perf_counter()
    try:
        return _apply(steps, result)
    finally:
        result.seconds = time.perf_counter() - start
        if result.work is not None:  # a step failed between the run and loading its records
            shutil.rmtree(result.work[1], ignore_errors=True)


def grade_class(course, ps, students, workers=None, limits=None, force=False, isolate=None,
                log=print, on_result=None, steps=STEPS):
    """Grade ``students`` with the pipeline's steps; returns (results, warnings).

    Parameters
    ----------
    course : instructor.course.Course
        The course.
    ps : str
        The problem set's full id.
    students : dict
        {student: path of the submitted notebook, or None if their folder holds none}.
    workers : int, optional
        Sandboxes at once (default: the number of cores).
    limits : instructor.sandbox.Limits, optional
        Default: the course's configured limits (``Limits.from_config``).
    force : bool
        Regrade submissions unchanged since they were last graded.
    isolate : bool, optional
        Run in bubblewrap (default: where it works, else a loud warning).
    log : callable
        Where the warning about a missing sandbox is printed.
    on_result : callable, optional
        Called as ``on_result(result, done, total)`` in this thread as each student's grading
        ends (``result.failure`` says if the grader failed on it), for progress reports.
    steps : sequence of Step classes
        The pipeline (default :data:`STEPS`).

    Returns
    -------
    tuple
        (results sorted by student, the skipped ones included; warnings for the instructor).
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers={workers!r}: a positive number of sandboxes is needed")
    limits = limits or sandbox.Limits.from_config(course.config)
    warnings_ = []
    if isolate is None:
        ok, why = sandbox.available()
        isolate = ok
        if not ok:
            warnings_.append(f"NO SANDBOX: {why}. Student code runs as this user, with its "
                             "files and the network reachable; only the time, memory and "
                             "output limits apply.")
            log("WARNING: " + warnings_[-1])
    plan = Plan(course, ps)
    sandbox.Cgroups.sweep()
    running.sweep_temporary()
    records = VerdictRecords(course, ps)
    todo, skipped = [], []
    for student, path in sorted(students.items()):
        if not force and records.current(student, running.sha256(path), plan.hash) and \
                os.path.exists(course.autograded(student, ps)):
            skipped.append(student)
        else:
            todo.append((student, path))
    workers = max(1, int(workers or os.cpu_count() or 1))
    limits.threads = max(1, (os.cpu_count() or 1) // workers)
    grading = Grading(course, plan, limits, isolate, records)
    run_steps, judge_steps, write_steps = _split(steps, grading)
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        # The solution's reference run (when not cached) goes first, beside the students' runs;
        # their records are judged once it is done.
        ref = None if reference_cached(plan) or not todo else \
            pool.submit(reference_run, plan, limits, isolate)
        futures = {pool.submit(_run_phase, run_steps, Result(s, path=p)): s for s, p in todo}
        if ref is not None:
            try:
                warnings_ += reference_finish(plan, ref.result())
            except Exception as exc:
                for future in futures:
                    future.cancel()
                raise CourseError(f"the solution of {ps} could not be run in the sandbox: "
                                  f"{type(exc).__name__}: {exc}") from exc
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            student = futures[future]
            try:
                result = _apply(judge_steps, future.result())
            except Exception as exc:  # noqa: BLE001 - a grader bug: this student only
                warnings_.append(f"{student}: not graded, the grader failed: "
                                 f"{type(exc).__name__}: {exc}")
                if on_result is not None:
                    on_result(Result(student, failure=f"{type(exc).__name__}: {exc}"),
                              done, len(futures))
                continue
            _apply(write_steps, result)
            results.append(result)
            if on_result is not None:
                on_result(result, done, len(futures))
    for student in skipped:
        results.append(Result(student, notes=records.notes(student), skipped=True))
    return sorted(results, key=lambda r: r.student), warnings_
