"""The instructor tools' fast parts: finding submissions, preparing a self-check, and the
feedback preprocessor of nbgrader_config.py. (The nbgrader runs are in
test_problem_sets.py.)"""

import copy
import runpy
import shutil
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output
from traitlets.config import Config

from instructor.course import CourseError
from instructor.selfcheck import prepare
from instructor.submissions import Collected, readable

REPO = Path(__file__).resolve().parents[1]
PS = "ps01_numpy_batchnorm"


def _nb(text="x = 1"):
    return nbformat.writes(new_notebook(cells=[new_code_cell(text)]))


def _tree(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _found(source):
    with Collected(source, PS) as found:
        return {s.student: Path(s.notebook).relative_to(source) if Path(source).is_dir()
                else Path(s.notebook).name for s in found.submissions}, found.problems


def test_folder_layouts(tmp_path):
    _tree(tmp_path, {"ann.ipynb": _nb(), f"ben/{PS}.ipynb": _nb(), f"cy/{PS}/{PS}.ipynb": _nb(),
                     "dee/Untitled.ipynb": _nb(), ".ipynb_checkpoints/x.ipynb": _nb(),
                     "notes.txt": "not a notebook"})
    found, problems = _found(tmp_path)
    assert found == {"ann": Path("ann.ipynb"), "ben": Path(f"ben/{PS}.ipynb"),
                     "cy": Path(f"cy/{PS}/{PS}.ipynb"), "dee": Path("dee/Untitled.ipynb")}
    assert problems == []


def test_zip_with_a_wrapping_folder(tmp_path):
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("export/ann.ipynb", _nb())
        zf.writestr(f"export/ben/{PS}.ipynb", _nb())
        zf.writestr("__MACOSX/._ann.ipynb", "junk")
    with Collected(archive, PS) as found:
        assert [s.student for s in found.submissions] == ["ann", "ben"]
        assert all(readable(s.notebook) is None for s in found.submissions)
        unpacked = found.submissions[0].notebook
        assert Path(unpacked).exists()
    assert not Path(unpacked).exists()  # the unpacked copy is cleaned up


def test_problems_are_reported(tmp_path):
    _tree(tmp_path, {"ann.ipynb": _nb(), f"ann/{PS}.ipynb": _nb(), "bad id!.ipynb": _nb(),
                     "two/a.ipynb": _nb(), "two/b.ipynb": _nb()})
    found, problems = _found(tmp_path)
    assert list(found) == ["ann"]
    assert len(problems) == 3
    assert any("two submissions" in p for p in problems)
    assert any("not a usable student id" in p for p in problems)
    assert any("several notebooks" in p for p in problems)


def test_unreadable_notebook_and_unsafe_zip(tmp_path):
    (tmp_path / "broken.ipynb").write_text("{not json")
    assert readable(tmp_path / "broken.ipynb") is not None
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escape.ipynb", _nb())
    with pytest.raises(CourseError, match="outside"):
        Collected(archive, PS)
    with pytest.raises(CourseError, match="no such"):
        Collected(tmp_path / "missing", PS)


def test_self_check_runs_tests_as_released():
    source = nbformat.read(REPO / "solutions" / PS / f"{PS}.ipynb", as_version=4)
    released = nbformat.read(REPO / "exercises" / PS / f"{PS}.ipynb", as_version=4)
    student = copy.deepcopy(source)  # the solution, hidden tests and all
    test_cell = next(c for c in student.cells
                     if c.metadata.get("nbgrader", {}).get("grade_id") == "C_backward_visible")
    test_cell.source = "pass  # a student 'fixed' the test"
    student.cells = [c for c in student.cells
                     if c.metadata.get("nbgrader", {}).get("grade_id") != "D_q2"]

    nb, missing = prepare(student, released)
    text = "\n".join(c.source for c in nb.cells)
    assert "HIDDEN TESTS" not in text and "hidden=True" not in text
    assert "checks.check_backward(batchnorm_backward)" in text  # restored as released
    assert "BEGIN SOLUTION" in text  # the student's own code is kept
    assert missing == ["D_q2"]


def test_feedback_preprocessor_hides_tracebacks_of_hidden_test_cells(tmp_path):
    shutil.copy(REPO / "nbgrader_config.py", tmp_path)  # it creates _grading/ next to itself
    config = runpy.run_path(str(tmp_path / "nbgrader_config.py"), init_globals={"get_config": Config})
    hide = config["HideHiddenTests"]()
    source = ("from coursework import ps01_numpy_batchnorm as checks\n### BEGIN HIDDEN TESTS\n"
              "checks.check_backward(f, hidden=True)\n### END HIDDEN TESTS")
    error = new_output("error", ename="AssertionError", evalue="wrong dx",
                       traceback=["----> 3 checks.check_backward(f, hidden=True)",
                                  "AssertionError: wrong dx"])
    cell = new_code_cell(source, outputs=[copy.deepcopy(error)])
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": "t", "points": 1, "solution": False,
                                 "locked": True, "schema_version": 3}
    visible = new_code_cell("f()", outputs=[copy.deepcopy(error)])
    nb = new_notebook(cells=[cell, visible])
    nb, _ = hide.preprocess(nb, {})
    assert "hidden=True" not in nbformat.writes(nb.cells[0])
    assert nb.cells[0].outputs[0].traceback == ["\x1b[0;31mAssertionError\x1b[0m: wrong dx"]
    assert nb.cells[1].outputs[0].traceback == error.traceback  # other cells keep theirs
    assert config["c"].CourseDirectory.source_directory == "solutions"
    assert config["c"].CourseDirectory.release_directory == "exercises"
