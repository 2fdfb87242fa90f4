"""The first cell of every chapter and problem set: install course_lib where it is missing.

On Colab (or any Python without course_lib) the cell installs this course's release of
course_lib from the repository named in ``_config.yml`` (``repository.url``), at the branch
named there (``repository.branch``: a ref that every clone of the repository has, unlike a tag
made on one machine); the environment variable ``COURSE_LIB_WHEEL`` replaces
that requirement (the Colab stand-in test points it at a locally built wheel). Where course_lib
is already installed (``make lab``, the book build, grading) the cell does nothing. course_lib
needs only ``keras>=3`` and ``numpy``, so pip leaves Colab's TensorFlow and Keras alone.

    python scripts/install_cell.py            # (re)write the cell in every notebook
    python scripts/install_cell.py --check    # exit 1 if a notebook's cell is missing or stale
    python scripts/install_cell.py PATH...    # only these notebooks

Only the first cell of a notebook is touched (replaced if it is the install cell, else the
cell is inserted before it); the rest of the file is written back byte for byte. The student
releases in ``exercises/`` are not edited here: ``make release PS=psNN`` regenerates them.
"""

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TAG = "install-course-lib"  # marks the cell, so that re-running the script replaces it
# The book shows the pages without the cell (it would stand above the title); Colab and
# Jupyter show it as the notebook's first cell.
TAGS = [TAG, "remove-cell"]


def repository():
    """(url, branch) of the course's repository, from _config.yml: the one place they live."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    repo = config["repository"]
    return repo["url"].rstrip("/"), repo["branch"]


def requirement():
    """The pip requirement of the course's release of course_lib: the repository's branch."""
    url, branch = repository()
    return f"course_lib @ git+{url}@{branch}"


def cell_source():
    return (
        "# Colab or a fresh Python: install course_lib (the course's release) if it is missing;"
        " it never replaces TensorFlow or Keras.\n"
        "import importlib.util, os\n"
        'if importlib.util.find_spec("course_lib") is None:\n'
        f'    course_lib_spec = os.environ.get("COURSE_LIB_WHEEL", "{requirement()}")\n'
        '    %pip install --quiet "{course_lib_spec}"'
    )


def cell():
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": TAG,  # a fixed cell id (nbformat 4.5), so regenerated releases are reproducible
        "metadata": {"tags": list(TAGS)},
        "outputs": [],
        "source": cell_source().splitlines(keepends=True),
    }


def notebooks():
    """Every notebook the cell belongs in: the chapters and the problem-set sources."""
    return sorted((ROOT / "chapters").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*/*.ipynb"))


def is_install_cell(c):
    return TAG in c.get("metadata", {}).get("tags", [])


def _dumps(nb):
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def updated(text):
    """The notebook text with its first cell set to the install cell (nothing else changes)."""
    nb = json.loads(text)
    if nb["cells"] and is_install_cell(nb["cells"][0]):
        nb["cells"][0] = cell()
    else:
        nb["cells"].insert(0, cell())
    return _dumps(nb)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report stale notebooks, write nothing")
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: all of them)")
    args = parser.parse_args(argv)
    stale = []
    for path in [p.resolve() for p in args.paths] or notebooks():
        text = path.read_text(encoding="utf-8")
        new = updated(text)
        if new != text:
            stale.append(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "stale" if args.check else "updated"
    for path in stale:
        print(f"{verb}: {path}")
    if args.check and stale:
        print("run `python scripts/install_cell.py`, then `make release PS=psNN` for each set")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
