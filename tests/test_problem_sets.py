"""Every problem set's nbgrader pipeline, end to end, in a temporary course folder.

One slow test per problem set found in ``solutions/`` (a set added later is picked up by
itself). Each set comes with ``tests/variants/<ps>.py``, the contract between the authors of
the sets and this test:

    ALTERNATIVES = {name: {grade_id_of_solution_cell: new_source, ...}}
        correct implementations written differently from the solution: full marks.
    MISTAKES = {name: {"cells": {grade_id: new_source}, "message": "...", "part": grade_id}}
        one catalogued mistake each. ``part`` is the grade id of a test cell (or a tuple of
        them); the part is that cell with its ``_visible``/``_hidden`` sibling. Every named
        cell loses points, ``message`` appears in the outputs of the part's cells, and every
        test cell outside the part keeps all its points.

Cells a variant does not name keep the solution's source (markers removed). Per set:

1. the release fails validation, every visible test of it (``nbgrader.validator.Validator``,
   what a student's Validate button runs; ``nbgrader validate`` exits 0 either way); it holds
   no solution, hidden test or output, and its points add up. The source's own tests, hidden
   ones included, pass in step 3: the solution scores full marks there, and the course
   grader's reference run executes the source (validating the source as well ran the solution
   a third time, 20-30 s of a TensorFlow set's test under load);
2. regenerating the release reproduces the committed ``exercises/<ps>`` byte for byte;
3. ONE ``instructor autograde`` call (one ``nbgrader autograde --force``) grades the class:
   the solution (full marks), the blank release (0), every alternative (full marks), every
   mistake (as above); the originals are not modified;
4. feedback (``generate_feedback``) shows no hidden-test source and keeps the diagnoses;
5. a student's self-check (``instructor check``) runs the visible tests only.

It prints, per set: the points and the autograding seconds per submission.
``test_rerun_regrades_the_class`` checks the instructor's re-runs once, on ps01_numpy_batchnorm,
and that ``grades.csv`` agrees with the gradebook (the export does not depend on the set).
"""

import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
VARIANTS = Path(__file__).resolve().parent / "variants"
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0",
           PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
# Sets whose notebooks are NumPy only (no Keras or TensorFlow import anywhere in them).
NUMPY_ONLY = {"ps01_numpy_batchnorm", "ps04_alternatives", "ps07_modern_networks"}
TIMEOUT = 1800  # seconds for one nbgrader call (a class of ~16 Keras notebooks under load)


def problem_sets():
    return sorted(p.name for p in (REPO / "solutions").iterdir()
                  if (p / f"{p.name}.ipynb").is_file())


# ----------------------------------------------------------------------------------------------
# Helpers


def instructor(root, *args, check=True):
    """`python -m instructor --root ROOT ARGS`, run from the repository (as `make` does)."""
    result = subprocess.run([sys.executable, "-m", "instructor", "--root", str(root), *args],
                            cwd=REPO, env=ENV, text=True, capture_output=True, timeout=TIMEOUT)
    if check and result.returncode != 0:
        raise AssertionError(f"instructor {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def nbgrader(root, *args):
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, env=ENV,
                          text=True, capture_output=True, timeout=TIMEOUT, check=True)


def grade_id(cell):
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def is_test(cell):
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("grade"))


def family(gid):
    """A test cell and its sibling: "A_x_visible" and "A_x_hidden" are one part, "A_x"."""
    return re.sub(r"_(visible|hidden)$", "", gid)


def hidden_lines(nb):
    """Source lines inside the hidden-test regions of a notebook."""
    lines = []
    for cell in nb.cells:
        inside = False
        for line in cell.source.splitlines():
            if "BEGIN HIDDEN TESTS" in line:
                inside = True
            elif "END HIDDEN TESTS" in line:
                inside = False
            elif inside and line.strip():
                lines.append(line.strip())
    return lines


def visible_code(cell):
    """Does a test cell run code outside its hidden-test region (comments aside)?"""
    inside = False
    for line in cell.source.splitlines():
        if "BEGIN HIDDEN TESTS" in line:
            inside = True
        elif "END HIDDEN TESTS" in line:
            inside = False
        elif not inside and line.strip() and not line.strip().startswith("#"):
            return True
    return False


def load_variants(ps):
    path = VARIANTS / f"{ps}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(f"variants_{ps}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def student(release, source, cells=None):
    """The release with each solution cell filled in as in the source (markers removed), then
    the cells of ``cells`` ({grade_id: source}) replaced."""
    nb = nbformat.read(release, as_version=4)
    solutions = {grade_id(c): c.source for c in nbformat.read(source, as_version=4).cells
                 if c.metadata.get("nbgrader", {}).get("solution")}
    for cell in nb.cells:
        gid = grade_id(cell)
        if gid in solutions:
            cell.source = "\n".join(line for line in solutions[gid].splitlines()
                                    if "### BEGIN SOLUTION" not in line
                                    and "### END SOLUTION" not in line)
    cells = dict(cells or {})
    for cell in nb.cells:
        gid = grade_id(cell)
        if gid in cells:
            assert cell.metadata["nbgrader"].get("solution"), f"{gid} is not a solution cell"
            cell.source = cells.pop(gid).strip("\n")
    assert not cells, f"no such cells in the release: {sorted(cells)}"
    return nb


def gradebook_scores(root, ps):
    """{student: {grade_id: (score, max_score)}} and the number of students and assignments."""
    from nbgrader.api import Gradebook

    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = ENV["PATH"]  # the gradebook runs `alembic`
    try:
        url = "sqlite:///" + str(root / "_grading" / "gradebook.db")
        with Gradebook(url, "batchnorm-course") as gb:
            out = {}
            for sub in gb.find_assignment(ps).submissions:
                (notebook,) = sub.notebooks
                out[sub.student.id] = {g.name: (g.score, g.max_score) for g in notebook.grades}
            return out, len(gb.students), len(gb.assignments)
    finally:
        os.environ["PATH"] = old_path


def outputs_text(cell):
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "error":
            parts += [out.ename, out.evalue]
        elif out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(str(out.data.get("text/plain", "")))
    return "\n".join(parts)


def course(tmp_path, ps):
    root = tmp_path / "course"
    (root / "solutions").mkdir(parents=True)
    shutil.copy(REPO / "nbgrader_config.py", root)
    shutil.copytree(REPO / "solutions" / ps, root / "solutions" / ps)
    return root


def validator(root):
    from nbgrader.validator import Validator
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(root)).load_config()
    return Validator(config=config)


# ----------------------------------------------------------------------------------------------
# The pipeline, one set at a time


@pytest.mark.slow
@pytest.mark.parametrize("ps", problem_sets())
def test_problem_set(ps, tmp_path, monkeypatch, capsys):
    for key in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"):
        monkeypatch.setenv(key, ENV[key])  # the Validator runs kernels from this process
    variants = load_variants(ps)
    root = course(tmp_path, ps)
    source_path = root / "solutions" / ps / f"{ps}.ipynb"
    release_path = root / "exercises" / ps / f"{ps}.ipynb"
    source = nbformat.read(source_path, as_version=4)
    tests = [c for c in source.cells if is_test(c)]
    points = sum(c.metadata["nbgrader"].get("points", 0) for c in tests)
    gids = [grade_id(c) for c in tests]

    # (2) the release is generated, and reproduces the committed one
    nbgrader(root, "generate_assignment", ps, "--force")
    committed = REPO / "exercises" / ps / f"{ps}.ipynb"
    assert committed.exists(), f"exercises/{ps} is missing: run `make release PS={ps}`"
    # The committed release came from an earlier run, so equal bytes also show the generation
    # is reproducible.
    assert release_path.read_bytes() == committed.read_bytes(), \
        f"exercises/{ps} is stale: run `make release PS={ps}`"

    # (1) validation of the release (the source's tests pass in (3): full marks)
    result = validator(root).validate(str(release_path))
    with_code = [c for c in tests if visible_code(c)]
    assert len(result.get("failed", [])) == len(with_code), result  # every visible test fails
    release = nbformat.read(release_path, as_version=4)
    text = json.dumps(release.cells)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert not any(line in text for line in hidden_lines(source) if "hidden=True" in line)
    assert all(not c.get("outputs") for c in source.cells + release.cells)
    assert sum(c.metadata["nbgrader"].get("points", 0) for c in release.cells if is_test(c)) == points
    if ps in NUMPY_ONLY:
        code = "\n".join(c.source for c in source.cells if c.cell_type == "code")
        assert not re.search(r"^\s*(import|from)\s+(keras|tensorflow)", code, re.M)

    # (3) the class, in ONE autograde call
    alternatives = getattr(variants, "ALTERNATIVES", {}) if variants else {}
    mistakes = getattr(variants, "MISTAKES", {}) if variants else {}
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    names = {"solution": None, "blank": None}
    notebooks = {incoming / "solution.ipynb": student(release_path, source_path),
                 incoming / "blank.ipynb": nbformat.read(release_path, as_version=4)}
    for i, (name, cells) in enumerate(alternatives.items(), start=1):
        names[f"alternative{i}"] = name
        notebooks[incoming / f"alternative{i}.ipynb"] = student(release_path, source_path, cells)
    for i, (name, mistake) in enumerate(mistakes.items(), start=1):
        names[f"mistake{i}"] = name
        notebooks[incoming / f"mistake{i}.ipynb"] = student(release_path, source_path,
                                                            mistake["cells"])
    for path, nb in notebooks.items():
        nbformat.write(nb, path)
    before = {p: p.read_bytes() for p in notebooks}
    start = time.perf_counter()
    out = instructor(root, "autograde", ps, "--submissions", str(incoming)).stdout
    autograde_seconds = time.perf_counter() - start
    assert {p: p.read_bytes() for p in notebooks} == before, "the originals were modified"
    assert "WARNING:" not in out, out  # the instructor's own warnings (a kernel that died...)
    with capsys.disabled():
        print(f"\n[{ps}] {points:g} points; autograde: {len(notebooks)} submissions in "
              f"{autograde_seconds:.1f} s, {autograde_seconds / len(notebooks):.1f} s per "
              f"submission ({len(alternatives)} alternatives, {len(mistakes)} mistakes)")

    scores, n_students, n_assignments = gradebook_scores(root, ps)
    assert (n_students, n_assignments) == (len(notebooks), 1)
    with capsys.disabled():
        for who, name in names.items():
            total = sum(s for s, _ in scores[who].values())
            print(f"  {who:>14} {total:5g}/{points:g}  {name or ''}")
    for who in names:
        assert re.search(rf"^{who}\s", out, re.M), f"{who} missing from the score table:\n{out}"
    problems = []
    full = {gid: (float(c.metadata["nbgrader"]["points"]),) * 2 for gid, c in zip(gids, tests)}
    for who in ["solution"] + [s for s in names if s.startswith("alternative")]:
        if scores[who] != full:
            lost = {g: s for g, s in scores[who].items() if s[0] != s[1]}
            problems.append(f"{who} ({names[who] or 'the solution'}) lost points: {lost}")
    if sum(s for s, _ in scores["blank"].values()) != 0:
        problems.append(f"the blank release scores points: {scores['blank']}")
    for i, (name, mistake) in enumerate(mistakes.items(), start=1):
        who = f"mistake{i}"
        named = mistake["part"] if isinstance(mistake["part"], (tuple, list)) else (mistake["part"],)
        unknown = [g for g in named if g not in gids]
        if unknown:
            problems.append(f"{who} ({name}): no test cells {unknown}")
            continue
        part = {g for g in gids if family(g) in {family(n) for n in named}}
        for gid in named:
            if scores[who][gid][0] >= scores[who][gid][1]:
                problems.append(f"{who} ({name}): {gid} kept its points")
        others = {g: s for g, s in scores[who].items() if g not in part and s[0] != s[1]}
        if others:
            problems.append(f"{who} ({name}): lost points outside its part: {others}")
        graded = nbformat.read(root / "_grading" / "autograded" / who / ps / f"{ps}.ipynb",
                               as_version=4)
        said = "\n".join(outputs_text(c) for c in graded.cells if grade_id(c) in part)
        if mistake["message"] not in said:
            problems.append(f"{who} ({name}): {mistake['message']!r} is not in the outputs of "
                            f"{sorted(part)}:\n{said[:2000]}")
    assert not problems, "\n".join(problems)

    # (4) feedback: no hidden-test source anywhere, the diagnoses kept; grades.csv
    instructor(root, "feedback", ps)
    released = release_path.read_text()
    secret = [line for line in hidden_lines(source) if line not in released]
    for who in names:
        page = (root / "_grading" / "feedback" / who / ps / f"{ps}.html").read_text()
        for line in secret:
            assert line not in page and html.escape(line) not in page, (who, line)
        assert "HIDDEN TESTS" not in page, who
    for i, mistake in enumerate(mistakes.values(), start=1):
        page = (root / "_grading" / "feedback" / f"mistake{i}" / ps / f"{ps}.html").read_text()
        message = mistake["message"]
        assert any(m in page for m in (message, html.escape(message),
                                       html.escape(message, quote=False))), (i, message)

    # (5) a student's self-check: visible tests only
    visible_mistake = next((i for i, m in enumerate(mistakes.values(), start=1)
                            if any(g.endswith("_visible") for g in
                                   (m["part"] if isinstance(m["part"], (tuple, list))
                                    else (m["part"],)))), None)
    if visible_mistake is not None:
        mistake = list(mistakes.values())[visible_mistake - 1]
        result = instructor(root, "check", ps, "--notebook",
                            str(incoming / f"mistake{visible_mistake}.ipynb"), check=False)
        assert result.returncode == 1, result.stdout
        failing = re.findall(r"FAIL  (\S+)", result.stdout)
        named = mistake["part"] if isinstance(mistake["part"], (tuple, list)) else (mistake["part"],)
        assert failing and all(family(g) in {family(n) for n in named} for g in failing), \
            result.stdout
        assert mistake["message"] in result.stdout
        assert result.stdout.count("PASS") + len(failing) == len(with_code), result.stdout
        assert not any(line in result.stdout for line in hidden_lines(source)
                       if "hidden=True" in line)
        assert "_hidden" not in result.stdout and result.stderr == ""

    if variants is None:
        pytest.fail(f"tests/variants/{ps}.py is missing: it defines the ALTERNATIVES and "
                    "MISTAKES this test grades (see this file's docstring)")


# ----------------------------------------------------------------------------------------------
# The instructor's re-runs, once (they do not depend on the set)


@pytest.mark.slow
def test_rerun_regrades_the_class(tmp_path):
    """Release again, then a late resubmission: the one autograde call regrades everybody;
    nobody is lost or doubled. The self-check of a blank release fails every visible test."""
    ps = "ps01_numpy_batchnorm"
    root = course(tmp_path, ps)
    source_path = root / "solutions" / ps / f"{ps}.ipynb"
    incoming = tmp_path / "incoming"
    (incoming / "bob").mkdir(parents=True)
    instructor(root, "release", ps)
    release_path = root / "exercises" / ps / f"{ps}.ipynb"
    mistake = load_variants(ps).MISTAKES["unbiased variance"]
    nbformat.write(student(release_path, source_path), incoming / "alice.ipynb")
    nbformat.write(student(release_path, source_path, mistake["cells"]),
                   incoming / "bob" / f"{ps}.ipynb")  # another accepted layout
    instructor(root, "autograde", ps, "--submissions", str(incoming))
    scores, n_students, _ = gradebook_scores(root, ps)
    totals = {s: sum(v for v, _ in cells.values()) for s, cells in scores.items()}
    assert totals["alice"] == 25.0 and totals["bob"] == 19.0 and n_students == 2

    instructor(root, "release", ps)  # again: the gradebook keeps everything
    late = tmp_path / "late"
    late.mkdir()
    nbformat.write(student(release_path, source_path), late / "bob.ipynb")
    out = instructor(root, "autograde", ps, "--submissions", str(late)).stdout
    assert "autograded 2 submission(s)" in out
    scores, n_students, n_assignments = gradebook_scores(root, ps)
    assert (n_students, n_assignments) == (2, 1)
    assert {s: sum(v for v, _ in cells.values()) for s, cells in scores.items()} == {
        "alice": 25.0, "bob": 25.0}
    instructor(root, "grades")
    rows = [r.split(",") for r in (root / "_grading" / "grades.csv").read_text().splitlines()]
    body = [dict(zip(rows[0], r)) for r in rows[1:]]
    assert len(body) == 2
    assert {r["student_id"]: float(r["score"]) for r in body if r["assignment"] == ps} == {
        who: sum(s for s, _ in cells.values()) for who, cells in scores.items()}

    result = instructor(root, "check", ps, check=False)  # the blank release
    assert result.returncode == 1 and result.stdout.count("FAIL") == 8
    assert "not implemented yet" in result.stdout
