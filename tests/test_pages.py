"""The book's pages show the lesson, not the build: plumbing cells are hidden (issue 17).

Static checks of the chapter notebooks (no execution): a code cell the reader sees holds no
top-level ``glue(...)``/``glue_comparison(...)`` call and no ``assert`` (the build's own checks
of the text); those live in cells tagged ``remove-cell``. A glue call inside a loop that also
prints what the reader needs may stay.
"""

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
PLUMBING = ("glue(", "glue_comparison(", "evidence.glue_comparison(", "assert ")


def shown_code_cells(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    for i, cell in enumerate(cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] == "code" and not any(t.startswith("remove") for t in tags):
            yield i, "".join(cell["source"])


def plumbing_statements(source):
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    return [ast.unparse(s)[:80] for s in ast.parse(code).body if ast.unparse(s).startswith(PLUMBING)]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_plumbing_in_view(path):
    found = {i: plumbing_statements(source) for i, source in shown_code_cells(path)}
    found = {i: s for i, s in found.items() if s}
    assert not found, f"{path.name}: cells shown to the reader with glue/assert lines: {found}"


def test_plumbing_statements_are_recognised():
    source = "x = 1\nglue('a', x, display=False)\nfor k in range(2):\n    glue(f'b{k}', k)\nassert x == 1\n"
    assert plumbing_statements(source) == ["glue('a', x, display=False)", "assert x == 1"]
    assert plumbing_statements("%matplotlib inline\nprint(glue)") == []


INCLUDE = re.compile(r"```\{literalinclude\}\s+(\S+)\s*\n((?::[^\n]*\n)*)")


def defined_names(path):
    """Dotted names Sphinx's ``:pyobject:`` can find in ``path``: top-level functions and
    classes, and the methods of those classes."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{item.name}" for item in node.body
                      if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return names


def pyobject_includes(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    for cell in cells:
        if cell["cell_type"] != "markdown":
            continue
        for target, options in INCLUDE.findall("".join(cell["source"])):
            found = re.search(r"^:pyobject:\s*(\S+)", options, re.M)
            if found:
                yield (path.parent / target).resolve(), found.group(1)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_included_code_exists(path):
    """Every ``literalinclude`` with ``:pyobject:`` names a file and an object that exist, so
    a refactor of course_lib that moves a method fails here, not only in the full build."""
    missing = [(str(f.relative_to(ROOT)), name) for f, name in pyobject_includes(path)
               if not f.is_file() or name not in defined_names(f)]
    assert not missing, f"{path.name}: literalinclude targets not found: {missing}"


def test_included_code_check_can_fail(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("class A:\n    def f(self):\n        pass\n\ndef g():\n    pass\n")
    assert defined_names(module) == {"A", "A.f", "g"}
    page = tmp_path / "page.ipynb"
    page.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": [
        "```{literalinclude} m.py\n", ":language: python\n", ":pyobject: A.call\n", "```\n"]}]}))
    assert [(f.name, n) for f, n in pyobject_includes(page)] == [("m.py", "A.call")]
