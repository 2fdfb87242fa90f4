"""The course's autograder: student code runs in a sandbox, verdicts are reached outside it.

Per submission, in this (trusted) process, which never runs student code:

1. read the submitted file (size-capped) and parse it; invalid JSON: every part 0;
2. build the notebook to run from the instructor's source (:func:`merge`): test cells and
   read-only cells ALWAYS from the source, hidden tests included; each answer cell from the
   student, by its nbgrader ``grade_id`` or, where the metadata was stripped (Colab, VS Code),
   by the names it defines; cells the student added run where they were; outputs dropped;
3. run it in a sandbox (``instructor.sandbox``) on a temporary copy of that student's files;
   the checks only *record* there (``coursework._record``);
4. here, with this process's own NumPy: load each test cell's records (plain JSON data), check
   that they are exactly the calls the instructor's test makes (the same checks, hidden flags
   and cases as the solution's run), and judge them with ``course_lib``'s ``compare``;
5. one gradebook transaction per student, and an autograded notebook whose test cells carry
   the verdicts (``nbgrader generate_feedback`` turns it into feedback); nothing the sandbox
   wrote is copied anywhere.

Submissions run in parallel (N sandboxes at once); the gradebook is written by this process
only, one student at a time. A student whose submission and grading inputs are unchanged since
the last run is skipped (``--force`` regrades), so a run that was killed resumes where it
stopped, and re-runs give the same gradebook.
"""

import ast
import concurrent.futures
import contextlib
import copy
import datetime
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import nbformat

from instructor import sandbox
from instructor.course import CourseError

VERSION = "1"  # bump when the grading of an unchanged submission changes
MAX_NOTEBOOK_BYTES = 20 * 2**20
MAX_COPY_BYTES = 100 * 2**20
MAX_RUNS = 3  # runs of one notebook: the first, and two more each without a cell that stopped it
_SKELETON_KEYS = ("check", "hidden", "case", "method")


def _nbg(cell):
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def _gid(cell):
    gid = _nbg(cell).get("grade_id")
    return gid if isinstance(gid, str) else None


def _squash(text):
    return re.sub(r"\s+", " ", text or "").strip()


def _hidden(source):
    """The lines between ### BEGIN HIDDEN TESTS and ### END HIDDEN TESTS."""
    out, inside = [], False
    for line in source.splitlines():
        if "### BEGIN HIDDEN TESTS" in line:
            inside = True
        elif "### END HIDDEN TESTS" in line:
            inside = False
        elif inside:
            out.append(line)
    return out


def _strip_markers(source):
    return "\n".join(line for line in source.splitlines()
                     if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line)


def defines(source):
    """Top-level names a cell defines (def, class, assignment); by regex if it does not parse."""
    names = []
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        names = re.findall(r"^(?:def|class)\s+([A-Za-z_]\w*)", source, re.M)
        names += re.findall(r"^([A-Za-z_]\w*)\s*=", source, re.M)
        return names
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


# ---------------------------------------------------------------------------------------------
# The plan of a problem set: its cells, as the instructor wrote them


@dataclass
class Canon:
    index: int  # position in the source notebook
    kind: str  # "answer" | "test" | "code" | "markdown"
    cell: dict  # the source cell
    stub: str = ""  # an answer cell as released
    names: tuple = ()  # what an answer cell defines

    @property
    def gid(self):
        return _gid(self.cell)

    @property
    def points(self):
        return float(_nbg(self.cell).get("points", 0) or 0)


class Plan:
    """One problem set's grading inputs: the source and release notebooks, their cells."""

    def __init__(self, course, ps):
        self.course, self.ps = course, ps
        source_path, release_path = course.source(ps), course.release(ps)
        if not os.path.exists(source_path):
            raise CourseError(f"no source notebook {source_path}")
        if not os.path.exists(release_path):
            raise CourseError(f"{release_path} does not exist: run `make release PS={ps}`")
        with open(source_path, "rb") as fh:
            source_bytes = fh.read()
        with open(release_path, "rb") as fh:
            release_bytes = fh.read()
        self.source = nbformat.reads(source_bytes.decode("utf-8"), as_version=4)
        self.release = nbformat.reads(release_bytes.decode("utf-8"), as_version=4)
        released = {_gid(c): c for c in self.release.cells if _gid(c)}
        self.cells = []
        for i, cell in enumerate(self.source.cells):
            meta = _nbg(cell)
            if cell.cell_type != "code":
                kind = "answer" if meta.get("solution") else "markdown"
            elif meta.get("solution"):
                kind = "answer"
            elif meta.get("grade"):
                kind = "test"
            else:
                kind = "code"
            canon = Canon(i, kind, cell)
            if kind == "answer":
                stub = released.get(canon.gid)
                canon.stub = stub.source if stub is not None else _strip_markers(cell.source)
                canon.names = tuple(dict.fromkeys(defines(canon.stub) + defines(
                    _strip_markers(cell.source))))
            self.cells.append(canon)
        self.by_gid = {c.gid: c for c in self.cells if c.gid}
        self.tests = [c for c in self.cells if c.kind == "test"]
        self.points = sum(c.points for c in self.tests)
        digest = hashlib.sha256(VERSION.encode())
        digest.update(source_bytes)
        digest.update(release_bytes)
        checks = importlib.import_module("coursework").__file__
        checks = os.path.dirname(os.path.abspath(checks))
        for name in sorted(os.listdir(checks)):
            if name.endswith(".py"):
                with open(os.path.join(checks, name), "rb") as fh:
                    digest.update(name.encode() + fh.read())
        for path in (sandbox.RUNNER, os.path.abspath(__file__)):
            with open(path, "rb") as fh:
                digest.update(fh.read())
        self.hash = digest.hexdigest()
        self.expected = None  # {test grade id: skeleton}, from the solution's run
        released_text = "\n".join(c.source for c in self.release.cells)
        self.secret = sorted({line.strip() for c in self.tests for line in _hidden(c.cell.source)
                              if len(line.strip()) >= 8 and line.strip() not in released_text}
                             | {"### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"},
                             key=len, reverse=True)

    def redact(self, text):
        """``text`` without any line of a hidden test (defence in depth: verdicts quote the
        student's own strings, which their code could have filled with a hidden test's text)."""
        for line in self.secret:
            if line in text:
                text = text.replace(line, "[hidden test]")
        return text

    def solution_notebook(self):
        """The source with its solutions in place (markers removed): full marks expected."""
        nb = copy.deepcopy(self.source)
        for cell in nb.cells:
            if _nbg(cell).get("solution"):
                cell.source = _strip_markers(cell.source)
        return nb


# ---------------------------------------------------------------------------------------------
# Merging a submission into the plan


@dataclass
class Merged:
    run: list  # [{"index", "source", "what"}] in order
    test_index: dict  # test grade id -> index in run
    answers: dict  # answer grade id -> the student's source ("" if missing)
    extras: dict  # canonical index (or -1) -> [sources of the student's own cells after it]
    notes: list = field(default_factory=list)


def merge(plan, nb):
    """The cells to run for submission ``nb`` (a NotebookNode, or None for no notebook)."""
    notes = []
    cells = list(nb.cells) if nb is not None else []
    role = [None] * len(cells)  # ("answer", canon) | ("instructor", canon) | ("extra",) | None
    answers = {}
    with_metadata = sum(1 for c in cells if _gid(c))
    duplicated = set()
    for i, cell in enumerate(cells):
        canon = plan.by_gid.get(_gid(cell))
        if canon is None:
            continue
        if canon.kind == "answer":
            if canon.gid in answers:
                duplicated.add(canon.gid)
                role[i] = ("extra",)
            else:
                answers[canon.gid] = cell
                role[i] = ("answer", canon)
        else:
            if any(r and r[0] == "instructor" and r[1] is canon for r in role[:i]):
                duplicated.add(canon.gid)
            role[i] = ("instructor", canon)
    for gid in sorted(duplicated):
        notes.append(f"duplicated grade id {gid}: the first cell is graded, the copies run as "
                     "the student's own cells" if plan.by_gid[gid].kind == "answer" else
                     f"duplicated grade id {gid}: the instructor's cell is run once")
    # answer cells without metadata: matched by the names they define
    matched = []
    for canon in plan.cells:
        if canon.kind != "answer" or canon.gid in answers or not canon.names:
            continue
        for i, cell in enumerate(cells):
            if role[i] is None and cell.cell_type == "code" and \
                    canon.names[0] in defines(cell.source):
                answers[canon.gid] = cell
                role[i] = ("answer", canon)
                matched.append(f"{canon.gid} (defines {canon.names[0]})")
                break
    if matched:
        why = ("nbgrader metadata missing (Colab, VS Code?)" if with_metadata == 0
               else "answer cells without their nbgrader metadata")
        notes.append(f"{why}: matched {len(matched)} answer cell(s) by content: "
                     + ", ".join(matched))
    # the instructor's cells, without metadata: recognised by their text
    texts = {}
    for canon in plan.cells:
        if canon.kind != "answer":
            texts.setdefault(_squash(canon.cell.source), canon)
            released = next((c for c in plan.release.cells if _gid(c) == canon.gid), None)
            if released is not None:
                texts.setdefault(_squash(released.source), canon)
    for i, cell in enumerate(cells):
        if role[i] is None:
            canon = texts.get(_squash(cell.source))
            role[i] = ("instructor", canon) if canon is not None else ("extra",)
    # the student's own cells stay after the last graded or instructor cell that preceded them
    extras, anchor = {}, -1
    for i, cell in enumerate(cells):
        if role[i][0] == "extra":
            if cell.cell_type == "code" and cell.source.strip():
                extras.setdefault(anchor, []).append(cell.source)
        else:
            anchor = role[i][1].index
    run, test_index, answer_text = [], {}, {}

    def add(source, what):
        run.append({"index": len(run), "source": source, "what": what})

    for src in extras.get(-1, []):
        add(src, "a cell you added")
    for canon in plan.cells:
        if canon.kind == "answer":
            cell = answers.get(canon.gid)
            if cell is None:
                if nb is not None:
                    notes.append(f"answer cell {canon.gid} is missing: the released stub was run")
                answer_text[canon.gid] = ""
                if canon.cell.cell_type == "code":
                    add(canon.stub, f"answer cell {canon.gid} (missing)")
            elif cell.cell_type != "code" and canon.cell.cell_type == "code":
                notes.append(f"answer cell {canon.gid} is a {cell.cell_type} cell in the "
                             "submission: it was not run")
                answer_text[canon.gid] = cell.source
            else:
                answer_text[canon.gid] = cell.source
                if canon.cell.cell_type == "code":
                    add(cell.source, f"answer cell {canon.gid}")
        elif canon.kind in ("test", "code"):
            if canon.kind == "test":
                test_index[canon.gid] = len(run)
            add(canon.cell.source, f"{canon.kind} cell {canon.gid or canon.index}")
        for src in extras.get(canon.index, []):
            add(src, f"a cell you added after {canon.gid or canon.index}")
    return Merged(run, test_index, answer_text, extras, notes)


# ---------------------------------------------------------------------------------------------
# Judging records, in this process


def skeleton(calls):
    """What a test cell's recorded calls must be, without the values: the module, comparison,
    check names, hidden flags and case numbers."""
    def shape(value, depth=0):
        if isinstance(value, dict):
            return {str(k): shape(value[k], depth + 1) for k in _SKELETON_KEYS if k in value}
        if isinstance(value, (list, tuple)) and depth < 2:
            return [shape(v, depth + 1) for v in value]
        if value is None or isinstance(value, (bool, int, str)):
            return value
        return type(value).__name__
    return [[module, name, shape(args)] for module, name, args in calls]


def _cases(skel):
    """How many cases a skeleton's calls recorded."""
    def count(value):
        if isinstance(value, dict):
            return 1 if "check" in value else 0
        if isinstance(value, list):
            return sum(count(v) for v in value)
        return 0
    return sum(count(args) for _, _, args in skel)


def judge(calls):
    """(passed, message) for one test cell's recorded calls, judged with course_lib here."""
    import numpy as np

    done = []
    for module, name, args in calls:
        fn = getattr(importlib.import_module(module), name)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), warnings.catch_warnings(), \
                    np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                fn(*args)
        except AssertionError as exc:
            return False, str(exc)
        except Exception as exc:  # noqa: BLE001 - malformed records: the part fails, we go on
            return False, ("the values your code produced could not be judged "
                           f"({type(exc).__name__}: {str(exc)[:300]})")
        done.append(name)
    return True, ""


@dataclass
class Result:
    student: str
    scores: dict  # test grade id -> points
    messages: dict  # test grade id -> "" (passed) or the verdict
    notes: list
    merged: Merged = None
    sha256: str = ""
    seconds: float = 0.0
    peak_memory: int = 0
    skipped: bool = False
    raw: tuple = None  # (outcome, records, skipped cells, limits) until judged


def _stopped(merged, outcome, limits):
    """(index of the cell the run stopped in or None, why) -- ("", None) if it ran to the end."""
    started = [s.get("cell") for s in outcome.statuses if s.get("event") == "start"]
    ended = {s.get("cell") for s in outcome.statuses if s.get("event") == "end"}
    last = next((c for c in reversed(started) if c not in ended), None)
    if not (isinstance(last, int) and 0 <= last < len(merged.run)):
        last = None
    where = f" in {merged.run[last]['what']}" if last is not None else ""
    if outcome.killed == "cell timeout":
        return last, (f"a cell ran for more than {limits.cell_timeout:g} s and ignored the "
                      f"interrupt{where}: it was killed")
    if outcome.killed == "notebook timeout":
        return None, (f"the notebook ran for more than {limits.notebook_timeout:g} s{where}: "
                      "it was killed")
    if outcome.killed == "memory":
        return last, (f"the notebook used more than {limits.memory_mb} MB of memory{where}: "
                      "it was killed")
    if not any(s.get("event") == "done" for s in outcome.statuses):
        code = outcome.returncode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        return last, f"the notebook's process ended{where} ({how}: os._exit, a crash or a kill)"
    return None, ""


def _describe_stop(merged, outcome, limits):
    return _stopped(merged, outcome, limits)[1]


def load_records(plan, merged, out_dir):
    """{run index of a test cell: its recorded calls, or the RecordError's message} for the
    test cells that wrote a record file (parsed here: plain JSON with size limits)."""
    from coursework import _record

    loaded = {}
    for canon in plan.tests:
        index = merged.test_index[canon.gid]
        path = os.path.join(out_dir, f"cell-{index}.jsonl")
        if os.path.isfile(path) and not os.path.islink(path):
            try:
                loaded[index] = _record.load(path)
            except (ValueError, OSError, TypeError, KeyError, RecursionError) as exc:
                loaded[index] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return loaded


def verdicts(plan, merged, outcome, loaded, limits, skipped=None):
    """{grade id: (points, message)} for every test cell, judged here from the records."""
    skipped = skipped or {}
    stop = _describe_stop(merged, outcome, limits)
    ends = {s.get("cell"): s for s in outcome.statuses if s.get("event") == "end"}
    result = {}
    for canon in plan.tests:
        index = merged.test_index[canon.gid]
        expected = plan.expected.get(canon.gid)
        if not expected:  # the solution recorded nothing here: no trusted verdict is possible
            result[canon.gid] = (0.0, "not graded: the instructor's solution records no check "
                                 "in this test cell (see the grader's warnings)")
            continue
        if index in skipped:
            result[canon.gid] = (0.0, f"the test did not finish: {skipped[index]}")
            continue
        if index not in loaded:
            status = ends.get(index)
            if status is None:
                why = stop or "the notebook stopped before this test cell"
                result[canon.gid] = (0.0, f"the test cell did not run: {why}")
            else:
                error = status.get("error") if isinstance(status.get("error"), str) else None
                result[canon.gid] = (0.0, "the test cell did not run its check: "
                                     + (error[:500] if error else "no result was recorded"))
            continue
        calls = loaded[index]
        if isinstance(calls, str):
            result[canon.gid] = (0.0, f"the test's record is unreadable: {calls}")
            continue
        got = skeleton(calls)
        if got != expected:
            result[canon.gid] = (0.0, "the test cell's checks did not run as written (the "
                                 "notebook changed them, or they stopped early): "
                                 f"{len(got)} check(s) recorded {_cases(got)} case(s); "
                                 f"the test makes {len(expected)} check(s) of {_cases(expected)}")
            continue
        passed, message = judge(calls)
        result[canon.gid] = (canon.points if passed else 0.0, message)
    return result


# ---------------------------------------------------------------------------------------------
# Running one submission


ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONHASHSEED": "0", "LANG": "C.UTF-8",
       "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0", "MPLBACKEND": "Agg",
       "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
# Threads of NumPy's BLAS and TensorFlow per sandbox: the cores shared among the workers.
_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
            "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def execute(plan, merged, files_from, limits, isolate=True, skipped=None):
    """Run ``merged`` in a sandbox on a copy of ``files_from``, the cells of ``skipped``
    replaced by an error; returns (outcome, out_dir, tmp)."""
    skipped = skipped or {}
    tmp = tempfile.mkdtemp(prefix=f"grading-{os.getpid()}-")
    work, out = os.path.join(tmp, "work"), os.path.join(tmp, "out")
    os.makedirs(out)
    _copy_files(files_from, work)
    env = dict(ENV)
    env["KERAS_BACKEND"] = os.environ.get("KERAS_BACKEND", "tensorflow")
    env.update({key: str(limits.threads) for key in _THREADS})
    cells = [{"index": c["index"], "source": c["source"] if c["index"] not in skipped else
              f"raise RuntimeError({('skipped by the grader: ' + skipped[c['index']])!r})"}
             for c in merged.run]
    outcome = sandbox.run(cells, work, out, limits, env, isolate=isolate)
    return outcome, out, tmp


def _sweep_temporary():
    """Remove the temporary copies left by graders that were killed (their pid is gone)."""
    base = tempfile.gettempdir()
    for name in os.listdir(base):
        parts = name.split("-")
        if name.startswith("grading-") and len(parts) >= 3 and parts[1].isdigit() \
                and not os.path.exists(f"/proc/{parts[1]}"):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _copy_files(folders, dest):
    """A private copy of the student's files (and the released data files): plain files only,
    no links, at most MAX_COPY_BYTES."""
    os.makedirs(dest, exist_ok=True)
    total = 0
    for folder in folders:
        if not folder or not os.path.isdir(folder):
            continue
        for root, dirs, files in os.walk(folder, followlinks=False):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
            for name in files:
                src = os.path.join(root, name)
                if os.path.islink(src) or not os.path.isfile(src):
                    continue
                size = os.path.getsize(src)
                if total + size > MAX_COPY_BYTES:
                    continue
                target = os.path.join(dest, os.path.relpath(src, folder))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(src, target)
                total += size


def read_submission(path):
    """(notebook or None, sha256, problem)."""
    if path is None or not os.path.isfile(path):
        return None, "", "no notebook was submitted"
    with open(path, "rb") as fh:
        data = fh.read(MAX_NOTEBOOK_BYTES + 1)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) > MAX_NOTEBOOK_BYTES:
        return None, digest, f"the notebook is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nb = nbformat.reads(data.decode("utf-8"), as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("no list of cells")
        for cell in nb.cells:
            if not isinstance(cell.get("source"), str) or "cell_type" not in cell:
                raise ValueError("a cell without source or type")
    except Exception as exc:  # noqa: BLE001 - any parse failure: every part 0, reported
        return None, digest, ("not a readable notebook (invalid JSON?): "
                              f"{type(exc).__name__}: {str(exc)[:150]}")
    return nb, digest, ""


def run_one(plan, student, path, limits, isolate=True):
    """A worker's part for one student: read, merge, run in the sandbox, load the records.
    Judging (:func:`finish_one`) is left to the main process's thread."""
    start = time.perf_counter()
    nb, digest, problem = read_submission(path)
    merged = merge(plan, nb)
    notes = ([problem] if problem else []) + merged.notes
    result = Result(student, {}, {}, notes, merged, digest)
    if nb is None:
        result.scores = {c.gid: 0.0 for c in plan.tests}
        result.messages = {c.gid: f"not graded: {problem}" for c in plan.tests}
        result.seconds = time.perf_counter() - start
        return result
    folders = [os.path.dirname(plan.course.release(plan.ps)), os.path.dirname(path)]
    # A cell that stops the whole run (killed for time or memory, os._exit, a crash) is
    # skipped and the notebook run again, up to twice: only what depends on it scores 0.
    skipped, peak = {}, 0
    for attempt in range(MAX_RUNS):
        outcome, out, tmp = execute(plan, merged, folders, limits, isolate, skipped)
        peak = max(peak, outcome.peak_memory)
        cell, stop = _stopped(merged, outcome, limits)
        if stop:
            notes.append(stop + ("; the notebook was run again without that cell"
                                 if cell is not None and cell not in skipped
                                 and attempt + 1 < MAX_RUNS else ""))
        if cell is None or cell in skipped or attempt + 1 == MAX_RUNS:
            break
        skipped[cell] = stop
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        loaded = load_records(plan, merged, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.raw = (outcome, loaded, skipped, limits)
    result.seconds, result.peak_memory = time.perf_counter() - start, peak
    return result


def finish_one(plan, result):
    """Judge a run's records (this process, course_lib's compare)."""
    if result.raw is not None:
        outcome, loaded, skipped, limits = result.raw
        judged = verdicts(plan, result.merged, outcome, loaded, limits, skipped)
        result.scores = {g: v[0] for g, v in judged.items()}
        result.messages = {g: plan.redact(v[1]) for g, v in judged.items()}
        result.raw = None
    result.notes = [plan.redact(n) for n in result.notes]
    return result


def grade_one(plan, student, path, limits, isolate=True):
    """Everything for one student except the gradebook (which the main process writes)."""
    return finish_one(plan, run_one(plan, student, path, limits, isolate))


def _reference_cache(plan):
    return os.path.join(plan.course.grading, "cache", f"{plan.ps}-reference.json")


def reference_cached(plan):
    """Load the expected calls from the cache if the plan is unchanged; True if so."""
    try:
        with open(_reference_cache(plan)) as fh:
            stored = json.load(fh)
        if stored.get("hash") == plan.hash:
            plan.expected = stored["expected"]
            return True
    except (OSError, ValueError, KeyError):
        pass
    return False


def reference_run(plan, limits, isolate=True):
    """The solution's run in a sandbox (a worker's part of :func:`reference`)."""
    merged = merge(plan, plan.solution_notebook())
    outcome, out, tmp = execute(plan, merged, [os.path.dirname(plan.course.release(plan.ps))],
                                limits, isolate)
    try:
        loaded = load_records(plan, merged, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return merged, outcome, loaded, limits


def reference_finish(plan, run):
    """The calls each test cell must record, from the solution's run; problems if the solution
    does not get full marks (then nothing is cached)."""
    merged, outcome, loaded, limits = run
    problems, expected = [], {}
    for canon in plan.tests:
        calls = loaded.get(merged.test_index[canon.gid], [])
        if isinstance(calls, str):
            problems.append(f"the solution's record of {canon.gid} is unreadable: {calls}")
            calls = []
        expected[canon.gid] = skeleton(calls)
        if not calls:
            problems.append(f"the solution's run recorded no check in {canon.gid}: every "
                            "submission scores 0 there (a test cell must call a check of "
                            "coursework; plain asserts run in the student's process and "
                            "cannot be trusted)")
            continue
        passed, message = judge(calls)
        if not passed:
            problems.append(f"the solution fails {canon.gid}: {message[:300]}")
    stop = _describe_stop(merged, outcome, limits)
    if stop:
        problems.append(f"the solution's run: {stop}")
    plan.expected = expected
    if not problems:
        os.makedirs(os.path.dirname(_reference_cache(plan)), exist_ok=True)
        with open(_reference_cache(plan), "w") as fh:
            json.dump({"hash": plan.hash, "expected": expected}, fh)
    return problems


def reference(plan, limits, isolate=True):
    """Run the solution once (cached by the plan's hash): the calls each test cell must record,
    and a check that the solution gets full marks."""
    if reference_cached(plan):
        return []
    return reference_finish(plan, reference_run(plan, limits, isolate))


# ---------------------------------------------------------------------------------------------
# Writing results: autograded notebook, gradebook


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
    """One transaction: the submission, every test cell's auto_score, the answer comments."""
    with warnings.catch_warnings():
        # nbgrader's own API triggers SQLAlchemy's "not in session" autoflush warnings
        warnings.simplefilter("ignore")
        _write_gradebook(gb, plan, result)


def _write_gradebook(gb, plan, result):
    gb.update_or_create_student(result.student)
    gb.update_or_create_submission(plan.ps, result.student)
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


class Marks:
    """_grading/cache/graded/<ps>/<student>.json: what was graded, for skipping and resuming."""

    def __init__(self, course, ps):
        self.folder = os.path.join(course.grading, "cache", "graded", ps)

    def path(self, student):
        return os.path.join(self.folder, f"{student}.json")

    def current(self, student, digest, plan_hash):
        try:
            with open(self.path(student)) as fh:
                mark = json.load(fh)
        except (OSError, ValueError):
            return False
        return mark.get("sha256") == digest and mark.get("plan") == plan_hash

    def write(self, result, plan_hash):
        os.makedirs(self.folder, exist_ok=True)
        tmp = self.path(result.student) + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"sha256": result.sha256, "plan": plan_hash, "scores": result.scores,
                       "notes": result.notes,
                       "graded": datetime.datetime.now(datetime.timezone.utc).isoformat()}, fh)
        os.replace(tmp, self.path(result.student))

    def notes(self, student):
        try:
            with open(self.path(student)) as fh:
                return json.load(fh).get("notes", [])
        except (OSError, ValueError):
            return []


def _sha(path):
    if path is None or not os.path.isfile(path):
        return ""
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read(MAX_NOTEBOOK_BYTES + 1)).hexdigest()


def grade_class(course, ps, students, workers=None, limits=None, force=False, isolate=None,
                log=print):
    """Grade ``students`` ({student: notebook path or None}); returns (results, warnings).

    Sandboxes run ``workers`` at a time (default: the number of cores); this process judges
    the records and writes the gradebook, one transaction per student, in completion order.
    """
    limits = limits or sandbox.Limits()
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
    _sweep_temporary()
    marks = Marks(course, ps)
    todo, skipped = [], []
    for student, path in sorted(students.items()):
        if not force and marks.current(student, _sha(path), plan.hash) and \
                os.path.exists(course.autograded(student, ps)):
            skipped.append(student)
        else:
            todo.append((student, path))
    workers = max(1, int(workers or os.cpu_count() or 1))
    limits.threads = max(1, (os.cpu_count() or 1) // workers)
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        # The solution's reference run (when not cached) goes first, beside the students' runs;
        # their records are judged once it is done.
        ref = None if reference_cached(plan) or not todo else \
            pool.submit(reference_run, plan, limits, isolate)
        futures = {pool.submit(run_one, plan, s, p, limits, isolate): s for s, p in todo}
        if ref is not None:
            try:
                warnings_ += reference_finish(plan, ref.result())
            except Exception as exc:
                for future in futures:
                    future.cancel()
                raise CourseError(f"the solution of {ps} could not be run in the sandbox: "
                                  f"{type(exc).__name__}: {exc}") from exc
        for future in concurrent.futures.as_completed(futures):
            student = futures[future]
            try:
                result = finish_one(plan, future.result())
            except Exception as exc:  # noqa: BLE001 - a grader bug: this student only
                warnings_.append(f"{student}: not graded, the grader failed: "
                                 f"{type(exc).__name__}: {exc}")
                continue
            dest = course.autograded(student, ps)
            if os.path.isdir(os.path.dirname(dest)):
                shutil.rmtree(os.path.dirname(dest))
            os.makedirs(os.path.dirname(dest))
            nbformat.write(autograded_notebook(plan, result), dest)
            with course.gradebook() as gb:  # a session per student, as nbgrader's own
                write_gradebook(gb, plan, result)
            marks.write(result, plan.hash)
            results.append(result)
    for student in skipped:
        results.append(Result(student, {}, {}, marks.notes(student), skipped=True))
    return sorted(results, key=lambda r: r.student), warnings_
