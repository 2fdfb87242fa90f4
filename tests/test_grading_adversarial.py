"""Hostile and broken submissions, all graded in ONE ``instructor autograde`` run of ps01_numpy_batchnorm.

Each case is a submission with the score it deserves and a phrase its verdicts or notes must
contain. The attacks (monkeypatching NumPy, builtins or the checks, replacing showtraceback,
input transformers, pre_run_cell hooks, rigged ``__eq__``, forged records) are made on top of
a KNOWN MISTAKE in Part A (19/25 without the attack): an attack that worked would show as
points. The breakages (invalid JSON, missing or renamed notebooks, edited, deleted, retyped or
duplicated cells, stripped metadata, pre-filled outputs, loops, exits, a memory bomb, 10**7
printed lines) are made on the solution or the mistake. Every case is asserted in the same run,
so each one also shows that the others are unaffected.

Also: the submitted files are unchanged; nothing outside a sandbox was written or reached (the
gradebook, the course, the host's /tmp, a TCP listener on the host); feedback holds neither
hidden tests nor files the kernel wrote; the run resumes after a kill and re-runs are
idempotent.

Run ``python tests/test_grading_adversarial.py`` for the table (case -> score -> message).
"""

import copy
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_problem_sets import (  # noqa: E402
    ENV,
    course,
    grade_id,
    gradebook_scores,
    hidden_lines,
    instructor,
    load_variants,
    outputs_text,
    student,
)

PS = "ps01_numpy_batchnorm"
POINTS = 25.0
MISTAKE = load_variants(PS).MISTAKES["unbiased variance"]
SAID = "unbiased variance"  # in the verdict of Part A for the mistake
OPTIONS = ["--workers", "4", "--timeout", "8", "--notebook-timeout", "180", "--memory", "1024"]


def _insert_after(nb, gid, source):
    i = next(i for i, c in enumerate(nb.cells) if grade_id(c) == gid)
    nb.cells.insert(i + 1, new_code_cell(source))
    return nb


def _answer(nb, gid, source):
    next(c for c in nb.cells if grade_id(c) == gid).source = source.strip("\n")
    return nb


FORWARD_TRAIN = '''
def _bn(x, gamma, beta, eps=1e-3, axis=-1):
    axes = reduction_axes(x.ndim, axis)
    mean, var = x.mean(axis=axes), x.var(axis=axes, ddof=1)
    y = per_feature(gamma, x.ndim, axis) * (x - per_feature(mean, x.ndim, axis)) / np.sqrt(
        per_feature(var, x.ndim, axis) + eps) + per_feature(beta, x.ndim, axis)
    return y, mean, var
'''

SOLUTION_BACKWARD = None  # filled from the source


def cases(root, listener_port):
    """{name: (what to write, expected score, phrase)}; what: a notebook, bytes, or a folder."""
    release = root / "exercises" / PS / f"{PS}.ipynb"
    source = root / "solutions" / PS / f"{PS}.ipynb"

    def good():
        return student(release, source)

    def bad():
        return student(release, source, MISTAKE["cells"])

    solution_cells = {grade_id(c): c.source for c in good().cells
                      if c.metadata.get("nbgrader", {}).get("solution")}

    def wrapped(gid, prefix):
        """The solution's function for ``gid`` with ``prefix`` run first inside it."""
        src = solution_cells[gid]
        head, body = src.split(":\n", 1)
        return head + ":\n" + "\n".join("    " + line for line in prefix.strip().splitlines()) \
            + "\n" + body

    grading = root / "_grading"
    out = {}
    out["solution"] = (good(), 25, "")
    out["blank release"] = (nbformat.read(release, as_version=4), 0, "not implemented yet")
    out["known mistake (unbiased variance)"] = (bad(), 19, SAID)

    # ---- item 2: verdicts student code cannot subvert (all on top of the mistake: 19)
    out["monkeypatch numpy (allclose, isclose, array_equal, testing)"] = (_insert_after(bad(), "setup", '''
import numpy as np
np.allclose = lambda *a, **k: True
np.isclose = lambda a, b, *r, **k: np.ones(np.shape(a), bool)
np.array_equal = lambda *a, **k: True
np.testing.assert_allclose = lambda *a, **k: None
'''), 19, SAID)
    out["monkeypatch builtins and assert"] = (_insert_after(bad(), "setup", '''
import builtins
class Harmless(Exception):
    pass
builtins.AssertionError = Harmless
builtins.all = lambda *a, **k: True
builtins.any = lambda *a, **k: False
'''), 19, SAID)
    out["replace showtraceback and excepthook"] = (_insert_after(bad(), "setup", '''
import sys
ip = get_ipython()
ip.showtraceback = lambda *a, **k: None
ip._showtraceback = lambda *a, **k: None
ip.showsyntaxerror = lambda *a, **k: None
sys.excepthook = lambda *a: None
'''), 19, SAID)
    out["input transformer blanks every later cell"] = (_insert_after(bad(), "setup", '''
get_ipython().input_transformers_cleanup.append(lambda lines: [])
'''), 0, "did not run its check")
    out["input transformer raises with the hidden tests' text"] = (_insert_after(bad(), "setup", '''
def _leak(lines):
    text = "".join(lines)
    if "hidden=True" in text:
        raise ValueError("LEAK " + text)
    return lines
get_ipython().input_transformers_cleanup.append(_leak)
'''), 8, "[hidden test]")
    out["pre_run_cell hook steals hidden tests, disables a check"] = (_insert_after(bad(), "setup", '''
import coursework.ps01_numpy_batchnorm as _c
def _steal(info):
    with open("stolen_hidden_tests.txt", "a") as fh:
        fh.write(info.raw_cell)
    print("STOLEN:", info.raw_cell)
    if "hidden=True" in info.raw_cell:
        _c.check_forward_train = lambda *a, **k: print("all hidden cases pass")
get_ipython().events.register("pre_run_cell", _steal)
'''), 19, "did not run its check")
    out["rigged __eq__ objects returned"] = (_answer(bad(), "A_forward_train", '''
class Always:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __array__(self, *a, **k): raise TypeError("no")
    def __float__(self): return 0.0
def batchnorm_forward_train(x, gamma, beta, eps=1e-3, axis=-1):
    return Always(), Always(), Always()
'''), 19, "not an array of numbers")
    out["ndarray subclass with rigged __eq__ and __sub__"] = (_answer(bad(), "A_forward_train", FORWARD_TRAIN + '''
class Liar(np.ndarray):
    def __eq__(self, other): return np.ones(self.shape, bool)
    def __sub__(self, other): return np.zeros(self.shape)
    def __array__(self, *a, **k): return np.zeros(self.shape)
def batchnorm_forward_train(x, gamma, beta, eps=1e-3, axis=-1):
    return tuple(np.asarray(v).view(Liar) for v in _bn(x, gamma, beta, eps, axis))
'''), 19, SAID)
    out["monkeypatch the in-kernel compare functions"] = (_insert_after(bad(), "setup", '''
import coursework.ps01_numpy_batchnorm as _c, coursework._core as _core
_c.compare = lambda *a, **k: 2
_c.compare_answer = lambda *a, **k: None
_core.compare = lambda *a, **k: 2
_core.fail = lambda *a, **k: None
'''), 19, SAID)
    out["drop the failing hidden cases from the record"] = (_insert_after(bad(), "setup", '''
import coursework.ps01_numpy_batchnorm as _c
_record = _c.record
_c.record = lambda key, fn, hidden=False: _record(key, fn, hidden)[:1] if key == "forward_train" else _record(key, fn, hidden)
'''), 19, "did not run as written")
    out["forge the record files at the end"] = (_insert_after(bad(), "D_q2", '''
import glob, os
for path in glob.glob(os.environ.get("COURSE_LIB_RECORD_TO", ".") + "/cell-*.jsonl"):
    text = open(path).read()
    if "forward_train" in text:
        open(path, "w").write("[]\\n")
'''), 19, "unreadable")

    # ---- isolation: the gradebook, the course, other students, the host, the network
    probes = [grading / "gradebook.db", root / "solutions" / PS / f"{PS}.ipynb",
              grading / "submitted", root / "nbgrader_config.py", REPO / "solutions",
              Path("/tmp")]
    mounted = sorted({str(p) for p in REPO.parents} | {str(REPO)})
    out["read and write the gradebook, sources, other students"] = (_insert_after(good(), "D_q1_answer", f'''
import os, glob, sqlite3
found = []
for p in {[str(p) for p in probes]!r} + ["../../gradebook.db", "../gradebook.db", "/root/.ssh", "/work/main/tests"]:
    if os.path.exists(p) and os.listdir(p if os.path.isdir(p) else os.path.dirname(p) or ".") and p != "/tmp":
        found.append(p)
    try:
        with open(os.path.join(p if os.path.isdir(p) else os.path.dirname(p), "PWNED"), "w") as fh:
            fh.write("x")
    except OSError:
        pass
try:
    db = sqlite3.connect("file:{grading / 'gradebook.db'}?mode=rw", uri=True)
    db.execute("UPDATE grade SET manual_score = 100")
    db.commit()
    found.append("gradebook")
except Exception:
    pass
# The sandbox mounts the course's Python environment and course_lib read-only, so the folders
# above them exist (empty but for that path) when the repository itself lies under /tmp.
mounted = {mounted!r}
found += [p for p in glob.glob("/tmp/*") + glob.glob("/home/*")
          if "student" not in p and "PWNED" not in p  # (its own file, in its own /tmp)
          and p not in mounted]
if found:
    answer_q1 = "a"  # anything found costs this question's 2 points
print(found)
'''), 25, "")
    out["network: connect to a listener on the host"] = (_insert_after(good(), "D_q2_answer", f'''
import socket
reached = False
for host in ("127.0.0.1", {socket.gethostbyname(socket.gethostname())!r}):
    try:
        socket.create_connection((host, {listener_port}), timeout=2).close()
        reached = True
    except OSError:
        pass
if reached:
    answer_q2 = "a"
'''), 25, "")

    # ---- item 4: stderr noise never costs points
    noisy = good()
    for gid in ("A_forward_train", "B_forward_inference", "B_moving_average", "C_backward"):
        _answer(noisy, gid, wrapped(gid, '''
import sys, os, warnings, logging
sys.stderr.write("W tensorflow/core: some log line\\n")
os.write(2, b"I0000 00:00 cpu_feature_guard.cc: oneDNN custom operations are on\\n")
warnings.warn("a deprecation warning")
logging.getLogger("tensorflow").warning("retracing")
'''))
    out["correct answers that write to stderr"] = (noisy, 25, "")

    # ---- item 3: broken submissions
    out["sys.exit() in a cell"] = (_insert_after(good(), "A_forward_train_hidden", "import sys\nsys.exit(1)"), 25, "")
    out["os._exit() in a cell"] = (_insert_after(good(), "B_forward_inference_hidden", "import os\nos._exit(3)"),
                                   25, "run again without that cell")
    out["os._exit() inside the graded backward"] = (_answer(good(), "C_backward", wrapped(
        "C_backward", "import os\nos._exit(3)")), 17, "process ended")
    out["infinite loop (interruptible)"] = (_insert_after(good(), "A_forward_train_visible", "while True:\n    pass"),
                                            25, "")
    out["infinite loop that ignores SIGINT and SIGALRM, in a graded function"] = (_answer(
        good(), "B_moving_average", wrapped("B_moving_average", '''
import signal
for s in (signal.SIGINT, signal.SIGALRM, signal.SIGTERM):
    signal.signal(s, signal.SIG_IGN)
while True:
    try:
        pass
    except BaseException:
        pass
''')), 22, "ignored the interrupt")
    out["memory bomb in a graded function"] = (_answer(good(), "B_forward_inference", wrapped(
        "B_forward_inference", "hog = []\nwhile True:\n    hog.append(bytearray(50 * 2**20))")),
        21, "MB of memory")
    out["10**7 printed lines"] = (_insert_after(good(), "C_backward_hidden", "for i in range(10**7):\n    print(i)"),
                                  25, "")
    out["invalid JSON"] = (b'{"cells": [ {"cell_type": "code", "source": "def batchnorm', 0,
                           "not a readable notebook")
    out["missing notebook (empty folder)"] = ("folder-empty", 0, "no notebook")
    out["renamed notebook"] = (("folder", "homework.ipynb", good()), 25, "")
    edited = bad()
    next(c for c in edited.cells if grade_id(c) == "A_forward_train_visible").source = "pass"
    out["edited test cell"] = (edited, 19, SAID)
    deleted = good()
    deleted.cells = [c for c in deleted.cells
                     if not c.metadata.get("nbgrader", {}).get("grade")]
    out["deleted test cells"] = (deleted, 25, "")
    retyped = bad()
    for c in retyped.cells:
        if c.metadata.get("nbgrader", {}).get("grade"):
            c.cell_type = "markdown"
            c.pop("outputs", None)
            c.pop("execution_count", None)
    out["retyped test cells (markdown)"] = (retyped, 19, SAID)
    dup = good()
    copy_answer = copy.deepcopy(next(c for c in dup.cells if grade_id(c) == "D_q1_answer"))
    copy_test = copy.deepcopy(next(c for c in dup.cells if grade_id(c) == "A_forward_train_visible"))
    copy_test.source = "pass"
    dup.cells += [copy_answer, copy_test]
    out["duplicated grade_ids"] = (dup, 25, "duplicated grade id")
    stripped = good()
    for c in stripped.cells:
        c.metadata = {}
    out["nbgrader metadata stripped (Colab)"] = (stripped, 25, "matched")
    prefilled = bad()
    for c in prefilled.cells:
        if c.metadata.get("nbgrader", {}).get("grade"):
            c.execution_count = 1
            c.outputs = [nbformat.v4.new_output("stream", name="stdout", text="all cases pass\n")]
    out["pre-filled outputs"] = (prefilled, 19, SAID)
    return out


def _slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]


def write_class(root, folder, listener_port):
    """The submissions, one per case; returns {student: (case, score, phrase)}."""
    folder.mkdir(parents=True, exist_ok=True)
    table = {}
    for i, (name, (what, score, phrase)) in enumerate(cases(root, listener_port).items(), 1):
        who = f"s{i:02d}-{_slug(name)}"
        if isinstance(what, bytes):
            (folder / f"{who}.ipynb").write_bytes(what)
        elif what == "folder-empty":
            (folder / who).mkdir()
            (folder / who / "README.txt").write_text("forgot the notebook")
        elif isinstance(what, tuple):
            (folder / who).mkdir()
            nbformat.write(what[2], folder / who / what[1])
        else:
            nbformat.write(what, folder / f"{who}.ipynb")
        table[who] = (name, score, phrase)
    return table


def _hashes(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def said(root, who):
    """The verdicts of a student's test cells and the notes on the submission."""
    path = root / "_grading" / "autograded" / who / PS / f"{PS}.ipynb"
    texts = []
    if path.exists():
        nb = nbformat.read(path, as_version=4)
        texts = [outputs_text(c) for c in nb.cells
                 if c.metadata.get("nbgrader", {}).get("grade")]
    mark = root / "_grading" / "cache" / "graded" / PS / f"{who}.json"
    notes = json.loads(mark.read_text()).get("notes", []) if mark.exists() else []
    return "\n".join(texts + notes)


def first_message(root, who):
    text = said(root, who)
    for line in text.splitlines():
        if line.strip() and "passed" not in line and line.strip() != "AssertionError":
            return line.strip()[:120]
    return ""


class Listener:
    """A TCP server on the host: a sandbox that reaches it is a sandbox with a network."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self):
        self.sock.close()


def run_class(tmp_path):
    root = course(tmp_path, PS)
    instructor(root, "release", PS)
    listener = Listener()
    incoming = tmp_path / "incoming"
    table = write_class(root, incoming, listener.port)
    before = _hashes(incoming)
    host_tmp = set(os.listdir("/tmp"))
    start = time.perf_counter()
    result = instructor(root, "autograde", PS, "--submissions", str(incoming), *OPTIONS,
                        check=False)
    seconds = time.perf_counter() - start
    listener.close()
    return root, incoming, table, before, host_tmp, listener, result, seconds


def _need_sandbox():
    from instructor import sandbox

    ok, why = sandbox.available()
    if not ok:
        pytest.skip(f"no sandbox on this machine, so isolation cannot be tested: {why}")


@pytest.mark.slow
def test_adversarial_class(tmp_path):
    _need_sandbox()
    root, incoming, table, before, host_tmp, listener, result, seconds = run_class(tmp_path)
    out = result.stdout + result.stderr
    assert len(table) >= 20
    assert "locked" not in out.lower() and "Traceback" not in out, out
    scores, n_students, _ = gradebook_scores(root, PS)
    assert n_students == len(table), out
    problems = []
    for who, (name, expected, phrase) in table.items():
        got = sum(s for s, _ in scores[who].values())
        if got != expected:
            problems.append(f"{name}: {got:g}/{POINTS:g}, expected {expected}\n{said(root, who)[:1500]}")
        elif phrase and phrase not in said(root, who):
            problems.append(f"{name}: {phrase!r} not in\n{said(root, who)[:1500]}")
    assert not problems, "\n\n".join(problems) + "\n\n" + out

    # the submitted files are unchanged; nothing was written outside the sandboxes
    assert _hashes(incoming) == before
    assert not list(root.rglob("PWNED")) and not list(REPO.rglob("PWNED"))
    assert not [p for p in set(os.listdir("/tmp")) - host_tmp if "PWNED" in p or "stolen" in p]
    assert listener.connections == 0
    # the kernel never reached the gradebook: no manual scores
    from nbgrader.api import Gradebook

    os.environ["PATH"] = ENV["PATH"]
    with Gradebook("sqlite:///" + str(root / "_grading" / "gradebook.db"), "batchnorm-course") as gb:
        for sub in gb.find_assignment(PS).submissions:
            for nb in sub.notebooks:
                assert all(g.manual_score is None for g in nb.grades)

    # feedback: no hidden tests, no file the kernel wrote
    instructor(root, "feedback", PS)
    source = nbformat.read(root / "solutions" / PS / f"{PS}.ipynb", as_version=4)
    released = (root / "exercises" / PS / f"{PS}.ipynb").read_text()
    secret = [line for line in hidden_lines(source) if line not in released]
    assert secret
    feedback = root / "_grading" / "feedback"
    for page in feedback.rglob("*.html"):
        text = page.read_text()
        assert "HIDDEN TESTS" not in text and not any(line in text for line in secret), page
    files = [p.name for p in (root / "_grading").rglob("*") if p.is_file()]
    assert "stolen_hidden_tests.txt" not in files
    assert {p.name for p in feedback.rglob("*") if p.is_file()} <= {f"{PS}.html"}


@pytest.mark.slow
def test_resume_after_kill_and_idempotent_reruns(tmp_path):
    """A run killed midway leaves a consistent gradebook and the next run finishes the class;
    a forced re-run gives the same scores."""
    root = course(tmp_path, PS)
    instructor(root, "release", PS)
    release = root / "exercises" / PS / f"{PS}.ipynb"
    source = root / "solutions" / PS / f"{PS}.ipynb"
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    expected = {}
    for i in range(8):
        mistake = i % 2 == 1
        nb = student(release, source, MISTAKE["cells"] if mistake else None)
        nbformat.write(nb, incoming / f"st{i}.ipynb")
        expected[f"st{i}"] = 19.0 if mistake else 25.0
    cmd = [sys.executable, "-m", "instructor", "--root", str(root), "autograde", PS,
           "--submissions", str(incoming), "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    marks = root / "_grading" / "cache" / "graded" / PS
    deadline = time.time() + 300
    while time.time() < deadline and len(list(marks.glob("*.json"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(marks.glob("*.json")))
    assert 3 <= done < 8
    scores, n_students, _ = gradebook_scores(root, PS)  # readable, consistent
    assert n_students == 8
    out = instructor(root, "autograde", PS).stdout  # resume: no submissions argument
    assert re.search(r"unchanged since the last run", out), out
    scores, n_students, n_assignments = gradebook_scores(root, PS)
    assert (n_students, n_assignments) == (8, 1)
    totals = {s: sum(v for v, _ in c.values()) for s, c in scores.items()}
    assert totals == expected
    instructor(root, "autograde", PS, "--force")
    scores, n_students, _ = gradebook_scores(root, PS)
    assert {s: sum(v for v, _ in c.values()) for s, c in scores.items()} == expected
    assert n_students == 8


def main():
    """Print the table (case -> score -> message) of one run of the adversarial class."""
    with tempfile.TemporaryDirectory() as tmp:
        root, incoming, table, *_, result, seconds = run_class(Path(tmp))
        scores, _, _ = gradebook_scores(root, PS)
        print(f"{len(table)} submissions of {PS} graded in one run in {seconds:.1f} s "
              f"({' '.join(OPTIONS)})\n")
        print("| case | score | expected | verdict or note |\n|---|---|---|---|")
        for who, (name, expected, phrase) in table.items():
            got = sum(s for s, _ in scores[who].values())
            message = first_message(root, who).replace("|", "\\|")
            print(f"| {name} | {got:g}/{POINTS:g} | {expected} | {message} |")
        if result.returncode:
            print("\n" + result.stdout[-3000:])


if __name__ == "__main__":
    main()
