"""A student's self-check: run the notebook as released and report the visible tests.

The test cells are put back as released (a student's edits to them count for nothing at
grading either), hidden tests are removed (in case the notebook holds them), the notebook is
executed top to bottom in a fresh kernel, and each visible test cell is reported with its
message. Hidden tests are never run or shown. The student's file is not modified.
"""

import copy
import os

import nbformat

from instructor.course import CourseError


def _grade_id(cell):
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _has_code(source):
    return any(line.strip() and not line.strip().startswith("#") for line in source.splitlines())


def prepare(student_nb, released_nb):
    """The student's notebook with test and read-only cells as released, hidden tests stripped.

    Returns (notebook, names of test cells missing from the student's notebook).
    """
    from nbgrader import utils
    from nbgrader.preprocessors import ClearHiddenTests

    released = {_grade_id(c): c for c in released_nb.cells
                if _grade_id(c) and (utils.is_grade(c) or utils.is_locked(c))}
    nb = copy.deepcopy(student_nb)
    for cell in nb.cells:
        gid = _grade_id(cell)
        if gid in released and not utils.is_solution(released[gid]):
            cell.source = released[gid].source
            cell.cell_type = released[gid].cell_type
            cell.metadata["nbgrader"] = copy.deepcopy(released[gid].metadata["nbgrader"])
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    present = {_grade_id(c) for c in nb.cells}
    missing = [gid for gid, c in released.items() if utils.is_grade(c) and gid not in present]
    nb, _ = ClearHiddenTests().preprocess(nb, {})
    return nb, missing


def _message(cell):
    for out in cell.outputs:
        if out.output_type == "error":
            return f"{out.ename}: {out.evalue}"
        if out.output_type == "stream" and out.name == "stderr":
            return "wrote to stderr (a grade cell with stderr output scores 0):\n" + out.text.strip()
    return ""


def run(course, ps, notebook=None, timeout=None):
    """Execute and report; returns the exit status (0: every visible test passes)."""
    from nbclient import NotebookClient
    from nbgrader import utils

    released_path = course.release(ps)
    if not os.path.exists(released_path):
        raise CourseError(f"{released_path} does not exist: run `make release PS={ps}` first")
    path = os.path.abspath(notebook or released_path)
    if not os.path.exists(path):
        raise CourseError(f"no such notebook: {path}")
    nb, missing = prepare(nbformat.read(path, as_version=4),
                          nbformat.read(released_path, as_version=4))

    print(f"Self-check of {os.path.relpath(path)} against the visible tests of {ps}")
    if timeout is None:
        from instructor.sandbox import Limits

        try:
            timeout = Limits.from_config(course.config).cell_timeout
        except ValueError as exc:
            raise CourseError(str(exc)) from None
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", allow_errors=True,
        resources={"metadata": {"path": os.path.dirname(path)}},
        # as nbgrader runs kernels; the log level hides ipykernel's start-up warnings
        extra_arguments=["--HistoryManager.hist_file=:memory:", "--IPKernelApp.log_level=ERROR"])
    try:
        client.execute()
    except Exception as exc:  # noqa: BLE001 - e.g. a cell timing out: report, then what ran
        print(f"  execution stopped: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    passed = failed = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        gid = _grade_id(cell) or "(unnamed cell)"
        if not utils.is_grade(cell):
            msg = _message(cell)
            if msg and not msg.startswith("NotImplementedError"):
                print(f"  note  {gid}: {msg.splitlines()[0]}")
            continue
        if not _has_code(cell.source):
            continue  # a cell of hidden tests only: it runs when the work is graded
        score, max_points = utils.determine_grade(cell)
        if cell.execution_count is None:
            failed += 1
            print(f"  FAIL  {gid}\n        not run: the notebook stopped before this cell")
        elif score is not None and score >= max_points:
            passed += 1
            print(f"  PASS  {gid}")
        else:
            failed += 1
            print(f"  FAIL  {gid}")
            msg = _message(cell) or "did not pass"
            print("\n".join("        " + line for line in msg.splitlines()))
    for gid in missing:
        print(f"  note  test cell {gid} is missing from your notebook; it is restored and run "
              "when your work is graded")
    print(f"\n{passed} of {passed + failed} visible test cells pass. Hidden tests, run when "
          "your work is graded, check the same functions on other inputs (and the answers to "
          "multiple-choice questions).")
    return 0 if failed == 0 else 1
