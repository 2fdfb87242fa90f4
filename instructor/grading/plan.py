"""The plan of a problem set: its cells as the instructor wrote them, read with nbgrader's own
parsers of the solution and hidden-test regions."""

import ast
import copy
import hashlib
import importlib
import logging
import os
import re
from dataclasses import dataclass

import nbformat

from instructor import sandbox
from instructor.course import CourseError

_HERE = os.path.dirname(os.path.abspath(__file__))


def nbg(cell):
    """A cell's nbgrader metadata ({} if there is none or it is not a dict)."""
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def gid(cell):
    """A cell's nbgrader ``grade_id``, or None."""
    value = nbg(cell).get("grade_id")
    return value if isinstance(value, str) else None


def squash(text):
    """``text`` with every run of whitespace one space, stripped."""
    return re.sub(r"\s+", " ", text or "").strip()


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
# Solution and hidden-test regions, as nbgrader parses them


class RegionError(CourseError):
    """A solution or hidden-test region nbgrader refuses (nested, unterminated, or in a cell
    of the wrong kind); the message is nbgrader's, after the cell it is in."""


_QUIET = logging.getLogger("instructor.grading.regions")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False  # ClearSolutions logs the cell before it raises; the error says it
_TAG = re.compile(r"^(\d+)\x00")


def _regions(preprocessor, cell):
    """(lines of ``cell``, indices of the lines ``preprocessor`` removed).

    The preprocessor is nbgrader's own (ClearSolutions or ClearHiddenTests), run on a copy of
    the cell whose lines carry their index, so what it removed is known line by line and any
    region it refuses raises its own error.
    """
    lines = cell.source.split("\n")  # as nbgrader splits a cell
    tagged = copy.deepcopy(cell)
    tagged.source = "\n".join(f"{i}\x00{line}" for i, line in enumerate(lines))
    preprocessor.preprocess_cell(tagged, {"language": "python"}, 0)
    kept = {int(m.group(1)) for m in map(_TAG.match, tagged.source.split("\n")) if m}
    return lines, [i for i in range(len(lines)) if i not in kept]


def _preprocessors(config=None):
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    kwargs = {"log": _QUIET} if config is None else {"log": _QUIET, "config": config}
    return ClearSolutions(**kwargs), ClearHiddenTests(**kwargs)


def hidden_lines(cell, config=None):
    """The lines of ``cell``'s hidden-test regions, without the markers (nbgrader's
    ClearHiddenTests decides what a region is; :class:`RegionError` if it refuses one)."""
    _, hidden = _preprocessors(config)
    try:
        lines, removed = _regions(hidden, cell)
    except RuntimeError as exc:
        raise RegionError(f"nbgrader's ClearHiddenTests: {exc}") from exc
    marks = (hidden.begin_test_delimeter, hidden.end_test_delimeter)
    return [lines[i] for i in removed if not any(m in lines[i] for m in marks)]


def solution_source(cell, config=None):
    """``cell``'s source with its solution regions' marker lines removed, the solution kept
    (nbgrader's ClearSolutions decides what a region is; :class:`RegionError` if it refuses
    one)."""
    solutions, _ = _preprocessors(config)
    try:
        lines, removed = _regions(solutions, cell)
    except RuntimeError as exc:
        raise RegionError(f"nbgrader's ClearSolutions: {exc}") from exc
    marks = (solutions.begin_solution_delimeter, solutions.end_solution_delimeter)
    markers = {i for i in removed if any(m in lines[i] for m in marks)}
    return "\n".join(line for i, line in enumerate(lines) if i not in markers)


# ---------------------------------------------------------------------------------------------
# The plan


@dataclass
class Canon:
    """One cell of the source notebook and its role in grading."""

    index: int  # position in the source notebook
    kind: str  # "answer" | "test" | "code" | "markdown"
    cell: dict  # the source cell
    stub: str = ""  # an answer cell as released
    names: tuple = ()  # what an answer cell defines
    solution: str = ""  # the source with its solution markers removed
    hidden: tuple = ()  # the lines of its hidden tests

    @property
    def gid(self):
        return gid(self.cell)

    @property
    def points(self):
        return float(nbg(self.cell).get("points", 0) or 0)

    @property
    def part(self):
        """The part of the problem set: the grade id's prefix before the first "_"."""
        return (self.gid or "").split("_", 1)[0]


def grader_files():
    """The files whose content decides how a submission is graded, besides the problem set's
    notebooks and checks: the grading package and the sandbox's runner."""
    own = sorted(os.path.join(_HERE, n) for n in os.listdir(_HERE) if n.endswith(".py"))
    return own + [sandbox.RUNNER]


class Plan:
    """One problem set's grading inputs: the source and release notebooks, their cells.

    Parameters
    ----------
    course : instructor.course.Course
        The course (its folders and nbgrader configuration).
    ps : str
        The problem set's full id.

    Raises
    ------
    CourseError
        If a notebook is missing, or :class:`RegionError` if nbgrader refuses a solution or
        hidden-test region of the source.
    """

    def __init__(self, course, ps):
        from instructor.grading import VERSION

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
        config = getattr(course, "config", None)
        released = {gid(c): c for c in self.release.cells if gid(c)}
        self.cells = []
        for i, cell in enumerate(self.source.cells):
            meta = nbg(cell)
            if cell.cell_type != "code":
                kind = "answer" if meta.get("solution") else "markdown"
            elif meta.get("solution"):
                kind = "answer"
            elif meta.get("grade"):
                kind = "test"
            else:
                kind = "code"
            canon = Canon(i, kind, cell)
            try:
                canon.solution = solution_source(cell, config)
                canon.hidden = tuple(hidden_lines(cell, config))
            except RegionError as exc:
                raise RegionError(f"{source_path}, cell {canon.gid or i}: {exc}") from exc
            if kind == "answer":
                stub = released.get(canon.gid)
                canon.stub = stub.source if stub is not None else canon.solution
                canon.names = tuple(dict.fromkeys(defines(canon.stub) + defines(canon.solution)))
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
        for path in grader_files():
            with open(path, "rb") as fh:
                digest.update(fh.read())
        self.hash = digest.hexdigest()
        self.expected = None  # {test grade id: skeleton}, from the solution's run
        released_text = "\n".join(c.source for c in self.release.cells)
        self.secret = sorted({line.strip() for c in self.tests for line in c.hidden
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
        for canon, cell in zip(self.cells, nb.cells):
            if nbg(cell).get("solution"):
                cell.source = canon.solution
        return nb

    def parts(self):
        """{part: [test cells]} in the order of the notebook."""
        out = {}
        for canon in self.tests:
            out.setdefault(canon.part, []).append(canon)
        return out
