"""The book's pages show the lesson, not the build: plumbing cells are hidden (issue 17).

Static checks of the chapter notebooks (no execution): a code cell the reader sees holds no
top-level ``glue(...)``/``glue_comparison(...)`` call and no ``assert`` (the build's own checks
of the text); those live in cells tagged ``remove-cell``. A glue call inside a loop that also
prints what the reader needs may stay.
"""

import ast
import json
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
