"""The grading package's structure, without a sandbox: its steps declared once, nbgrader's own
parsing of solution and hidden-test regions, the limits and the version each written in one
place, the mistake a verdict names, and the record protocol's direction (coursework never
imports instructor)."""

import ast
import copy
import json
import runpy
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from traitlets.config import Config

from coursework import _record
from coursework import ps01_numpy_batchnorm as checks
from instructor import grading
from instructor.__main__ import limits as cli_limits
from instructor.__main__ import parser
from instructor.course import Course, CourseError
from instructor.grading import pipeline
from instructor.grading.judge import judge_calls, mistake_name
from instructor.grading.plan import RegionError, hidden_lines, solution_source
from instructor.sandbox import Limits

REPO = Path(__file__).resolve().parents[1]
PS = "ps01_numpy_batchnorm"


def _cell(source, **nbgrader):
    cell = new_code_cell(source)
    if nbgrader:
        cell.metadata["nbgrader"] = {"grade_id": "x", "points": 1, "locked": False,
                                     "schema_version": 3, "grade": False, "solution": False,
                                     **nbgrader}
    return cell


def _nbgrader_error(preprocessor, cell):
    """What nbgrader's own preprocessor raises on ``cell`` (the oracle)."""
    with pytest.raises(RuntimeError) as info:
        preprocessor.preprocess_cell(copy.deepcopy(cell), {"language": "python"}, 0)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# The pipeline is declared in one place


def test_steps_are_declared_once_and_in_phase_order():
    phases = [step.phase for step in grading.STEPS]
    assert phases == sorted(phases, key=("run", "judge", "write").index)
    assert {"ReadSubmission", "RunInSandbox", "Judge", "WriteGradebook"} <= {
        s.__name__ for s in grading.STEPS}
    # nothing else in the package runs a step: grade_class takes them from STEPS
    for path in (REPO / "instructor" / "grading").glob("*.py"):
        tree = ast.parse(path.read_text())
        made = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", None) in {s.__name__ for s in grading.STEPS}]
        assert not made, f"{path.name} builds a step itself"
    with pytest.raises(ValueError, match="WriteGradebook.*Judge|before the judge"):
        pipeline._split((pipeline.WriteGradebook, pipeline.Judge), None)


# ---------------------------------------------------------------------------------------------
# Regions: nbgrader's parser, nbgrader's errors


@pytest.mark.parametrize("source", [
    "x = 1\n### BEGIN HIDDEN TESTS\n### BEGIN HIDDEN TESTS\ny = 2\n### END HIDDEN TESTS",
    "x = 1\n### BEGIN HIDDEN TESTS\ny = 2",
], ids=["nested", "unterminated"])
def test_hidden_test_regions_nbgrader_refuses_raise_its_error(source):
    from nbgrader.preprocessors import ClearHiddenTests

    cell = _cell(source, grade=True)
    expected = _nbgrader_error(ClearHiddenTests(), cell)
    with pytest.raises(RegionError) as info:
        hidden_lines(cell)
    assert expected in str(info.value)


@pytest.mark.parametrize("source", [
    "def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION",
    "def f():\n    ### BEGIN SOLUTION\n    return 1",
], ids=["nested", "unterminated"])
def test_solution_regions_nbgrader_refuses_raise_its_error(source):
    from nbgrader.preprocessors import ClearSolutions

    cell = _cell(source, solution=True)
    expected = _nbgrader_error(ClearSolutions(), cell)
    with pytest.raises(RegionError) as info:
        solution_source(cell)
    assert expected in str(info.value)


def _course_with(tmp_path, source_cells):
    root = tmp_path / "course"
    (root / "solutions" / PS).mkdir(parents=True)
    (root / "exercises" / PS).mkdir(parents=True)
    (root / "nbgrader_config.py").write_text((REPO / "nbgrader_config.py").read_text())
    nb = new_notebook(cells=source_cells)
    for folder in ("solutions", "exercises"):
        nbformat.write(nb, root / folder / PS / f"{PS}.ipynb")
    return Course(root)


@pytest.mark.parametrize("text, said", [
    ("### BEGIN HIDDEN TESTS\nassert 1\n### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS",
     "Encountered nested begin hidden tests statements"),
    ("assert 1\n### BEGIN HIDDEN TESTS\nassert 2", "No end hidden tests statement found"),
])
def test_a_source_with_a_bad_region_is_refused_naming_the_cell(tmp_path, text, said):
    test = _cell(text, grade=True)
    test.metadata["nbgrader"]["grade_id"] = "A_bad_hidden"
    course = _course_with(tmp_path, [new_markdown_cell("intro"), test])
    with pytest.raises(CourseError, match=said) as info:
        grading.Plan(course, PS)
    assert "A_bad_hidden" in str(info.value)


def test_regions_match_an_independent_reading_of_the_source():
    """The hidden lines and the solutions the plan reads with nbgrader's parsers are the lines
    between the markers, and the solution cells without their marker lines."""
    plan = grading.Plan(Course(), PS)
    source = nbformat.read(REPO / "solutions" / PS / f"{PS}.ipynb", as_version=4)
    for canon, cell in zip(plan.cells, source.cells):
        inside, hidden = False, []
        for line in cell.source.split("\n"):
            if "BEGIN HIDDEN TESTS" in line:
                inside = True
            elif "END HIDDEN TESTS" in line:
                inside = False
            elif inside:
                hidden.append(line)
        assert list(canon.hidden) == hidden
        assert canon.solution == "\n".join(
            line for line in cell.source.split("\n")
            if "BEGIN SOLUTION" not in line and "END SOLUTION" not in line)
    assert any(c.hidden for c in plan.tests)


# ---------------------------------------------------------------------------------------------
# Limits and version: one place each


def _config_file():
    """nbgrader_config.py executed on its own (the oracle for what it sets)."""
    return runpy.run_path(str(REPO / "nbgrader_config.py"), init_globals={"get_config": Config})["c"]


def test_cli_defaults_are_the_configured_limits():
    config = _config_file()
    course = Course()
    args = parser().parse_args(["autograde", "ps01"])
    assert (args.timeout, args.notebook_timeout, args.memory) == (None, None, None)
    got = cli_limits(course, args)
    assert got.cell_timeout == config.Execute.timeout
    assert got.notebook_timeout == config.Sandbox.notebook_timeout
    assert got.memory_mb == config.Sandbox.memory_mb
    assert got.max_file_mb == config.Sandbox.max_file_mb
    assert got.max_pids == config.Sandbox.max_pids
    assert got.grace == config.Sandbox.kill_grace
    given = cli_limits(course, parser().parse_args(
        ["autograde", "ps01", "--timeout", "7", "--notebook-timeout", "70", "--memory", "700"]))
    assert (given.cell_timeout, given.notebook_timeout, given.memory_mb) == (7, 70, 700)
    assert given.max_pids == config.Sandbox.max_pids


def test_limits_name_a_missing_or_wrong_setting():
    config = copy.deepcopy(_config_file())
    with pytest.raises(ValueError, match=r"memory_mb = -5"):
        Limits.from_config(config, memory_mb=-5)
    with pytest.raises(ValueError, match="no such limit: 'memory'"):
        Limits.from_config(config, memory=5)
    del config.Sandbox["notebook_timeout"]
    with pytest.raises(ValueError, match=r"c\.Sandbox\.notebook_timeout .* is not set"):
        Limits.from_config(config)


def test_version_is_defined_once_and_in_every_hash_and_record(monkeypatch, tmp_path):
    defined = [p for p in (REPO / "instructor").rglob("*.py")
               if any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "VERSION"
                                                        for t in n.targets)
                      for n in ast.walk(ast.parse(p.read_text())))]
    assert defined == [REPO / "instructor" / "grading" / "__init__.py"]
    course = Course()
    before = grading.Plan(course, PS).hash
    monkeypatch.setattr(grading, "VERSION", grading.VERSION + "-changed")
    assert grading.Plan(course, PS).hash != before
    from instructor.grading.record import VerdictRecords

    plan = grading.Plan(course, PS)
    monkeypatch.setattr(course, "root", str(tmp_path))  # the record goes to a temporary folder
    records = VerdictRecords(course, PS)
    records.write(plan, grading.Result("ann", scores={c.gid: 0.0 for c in plan.tests}))
    assert json.loads(Path(records.path("ann")).read_text())["version"] == grading.VERSION


# ---------------------------------------------------------------------------------------------
# Mistakes named in the verdicts; the record protocol


def _unbiased(x, gamma, beta, eps=1e-3, axis=-1):
    import numpy as np

    axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    mean, var = x.mean(axis=axes), x.var(axis=axes, ddof=1)
    shape = [1] * x.ndim
    shape[axis] = -1
    y = gamma.reshape(shape) * (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return y + beta.reshape(shape), mean, var


def test_the_verdict_names_the_catalogued_mistake(tmp_path, monkeypatch):
    monkeypatch.setenv(_record.RECORD_ENV, str(tmp_path))
    monkeypatch.setenv(_record.CELL_ENV, "3")
    checks.check_forward_train(_unbiased)
    monkeypatch.delenv(_record.RECORD_ENV)
    verdict = judge_calls(_record.load(str(tmp_path / "cell-3.jsonl")))
    labels = {m.label: m for m in checks.SPECS["forward_train"].mistakes}
    assert not verdict.passed and verdict.mistake in labels
    assert labels[verdict.mistake].explanation.split(".")[0] in verdict.message


def test_mistake_name_reads_the_checks_fields_or_else_the_message():
    class Failure(AssertionError):  # the fields of coursework._core.CheckFailure
        def __init__(self, message, mistake=None, kind=None):
            super().__init__(message)
            self.mistake, self.kind = mistake, kind

    likely = "x\nMost likely mistake (wrong order (of outputs)): ..."
    choice = "`answer_q1` = 'c' is not the right answer. Because."
    assert mistake_name(likely, Failure(likely, "wrong order (of outputs)")) == \
        "wrong order (of outputs)"
    assert mistake_name(likely, Failure(likely, None, "values")) is None  # the field decides
    assert mistake_name(choice, Failure(choice, "answer_q1 = 'c'", "answer")) == "answer_q1 = 'c'"
    assert mistake_name(choice, Failure(choice, None, "answer")) is None  # here too
    # checks without the fields: the message is read
    assert mistake_name(likely, AssertionError(likely)) == "wrong order (of outputs)"
    assert mistake_name(choice) == "answer_q1 = 'c'"
    assert mistake_name("`f` raised ValueError: boom") is None


def test_a_wrong_answer_is_named_by_the_checks_field(tmp_path, monkeypatch):
    monkeypatch.setenv(_record.RECORD_ENV, str(tmp_path))
    monkeypatch.setenv(_record.CELL_ENV, "4")
    checks.check_answer("q1", " A ", hidden=True)
    monkeypatch.delenv(_record.RECORD_ENV)
    verdict = judge_calls(_record.load(str(tmp_path / "cell-4.jsonl")))
    assert not verdict.passed and verdict.kind == "answer"
    assert verdict.mistake == "answer_q1 = ' A '"
    assert mistake_name(verdict.message) == verdict.mistake  # what the message says, too


def test_coursework_never_imports_instructor_and_the_grader_uses_its_record_protocol():
    for path in (REPO / "coursework").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "instructor" or n.startswith("instructor.") for n in names), path
    judge_source = (REPO / "instructor" / "grading" / "judge.py").read_text()
    assert "from coursework import _record" in judge_source
