"""A stand-in for Colab: every chapter and problem-set solution starts in a fresh Python.

Colab gives a student a Python with TensorFlow, Keras, matplotlib and IPython, and nothing of
this course. The stand-in is a virtual environment with only ``tensorflow-cpu``, ``ipykernel``
and ``matplotlib`` installed (the versions of requirements.lock). Before each notebook,
course_lib is uninstalled from it; the notebook is executed with nbclient in a kernel of that
environment, with ``COURSE_LIB_WHEEL`` pointing at a wheel built from this checkout, so that
the notebook's OWN first cell (scripts/install_cell.py) installs course_lib, as on Colab. The
kernel runs in an empty folder outside the repository with no PYTHONPATH, so nothing is
imported from the checkout; a cell appended to each notebook reports where course_lib was
imported from, and the test checks that the install replaced nothing (TensorFlow, Keras and
NumPy keep their versions) and that the data came from the copy bundled in the wheel.

The first notebook's install cell installs course_lib from the wheel into an environment
without it; the notebooks after it run with course_lib left installed (their first cell is the
same cell, which tests/test_colab_links.py checks). Every short notebook runs to its end. The
notebooks whose experiments take half a minute or more alone (:data:`LONG`: nine chapters,
and ps03's solution, which trains a learning-rate sweep) run their install cell and their
set-up cell (imports, data) in the stand-in, and a check that every module any of their
cells imports exists there; the book build runs the chapters to the end in the project's
environment, and tests/test_problem_sets.py runs ps03's solution (the course grader's
reference run, and a student's submission). Running them twice would cost a clean ``make
test`` about ten minutes on two cores. ``COLAB_STANDIN=full`` (``make
test-colab``) runs every notebook to its end here too.

The environment is kept in ``.venv-colab`` (git ignores it) and re-created when the pins
change. Its packages are those of the project's environment: when ``.venv`` holds the pinned
versions (``make`` keeps it so), the three packages, pip and every distribution they depend on
are hard-linked file by file from its site-packages (with their compiled bytecode), which takes
seconds; pip installing them from its cache took about 80 CPU-seconds. Otherwise pip installs
the pins. Per-notebook
times are printed and written to ``_build/artifacts/colab_standin_times.json``.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-colab"
ARTIFACTS = REPO / "_build" / "artifacts"
COLAB_PACKAGES = ("tensorflow_cpu", "ipykernel", "matplotlib")  # what Colab has preinstalled
KERNEL = "colab-standin"
CELL_TIMEOUT = 900  # seconds; the chapters' longest cell takes about a minute
MARKER = "COLAB-STANDIN "

# Notebooks whose experiments take half a minute or more: set-up and imports only, unless
# COLAB_STANDIN=full.
LONG = {"01_internal_covariate_shift", "04_placement", "05_training_vs_inference",
        "06_why_it_helps", "07_limits", "08_alternatives", "09_reproducing_figure_1",
        "11_residual_networks_and_weight_decay", "12_transformers", "ps03_placement"}
FULL = os.environ.get("COLAB_STANDIN", "") == "full"
INSTALLED = []  # the notebooks whose run left course_lib installed in the stand-in
MISSING = "COLAB-STANDIN-MISSING "

REPORT = f"""
import importlib.metadata as _md, json as _json, sys as _sys
import course_lib as _cl
print({MARKER!r} + _json.dumps({{
    "course_lib": _cl.__file__, "prefix": _sys.prefix,
    "versions": {{p: _md.version(p) for p in ("tensorflow-cpu", "keras", "numpy")}},
}}))
"""


def imported_modules(sources):
    """The top-level modules the code cells ``sources`` import, except those a ``try`` guards
    with ``except ImportError`` (the chapters' ``myst_nb`` import, which only the book has).
    IPython's ``%`` and ``!`` lines are skipped."""
    found = set()

    def visit(node, guarded):
        if isinstance(node, ast.Try):
            catches = any(isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                          for h in node.handlers)
            for child in node.body:
                visit(child, guarded or catches)
            for child in node.handlers + node.orelse + node.finalbody:
                visit(child, guarded)
            return
        if not guarded:
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    for source in sources:
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        visit(ast.parse(code), False)
    return sorted(found)


def test_imported_modules_sees_guarded_and_nested_imports():
    sources = ["import numpy as np\nfrom course_lib import evidence\n%pip install x",
               "try:\n    from myst_nb import glue\nexcept ImportError:\n    import json\n",
               "def f():\n    from matplotlib.ticker import NullFormatter\n    import os.path"]
    assert imported_modules(sources) == ["course_lib", "json", "matplotlib", "numpy", "os"]


def _pins():
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.lower().replace("-", "_") in COLAB_PACKAGES:
            pins[name] = version
    assert len(pins) == len(COLAB_PACKAGES), f"requirements.lock lacks one of {COLAB_PACKAGES}"
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def _notebooks():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    excluded = set(config["sphinx"]["config"].get("colab_exclude", []))
    chapters = [p for p in sorted((REPO / "chapters").glob("*.ipynb"))
                if f"chapters/{p.stem}" not in excluded]
    return chapters + sorted((REPO / "solutions").glob("*/*.ipynb"))


def _pip(*args):
    return subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", *args],
                          check=True, capture_output=True, text=True, timeout=1800)


def _closure(names):
    """The distributions of this interpreter's environment that ``names`` need: themselves and
    their dependencies, environment markers evaluated, no extras. None when one is missing or
    not at its pinned version."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found, todo = {}, list(names)
    while todo:
        requirement = Requirement(todo.pop())
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return None
        if not requirement.specifier.contains(dist.version, prereleases=True):
            return None
        found[name] = dist
        for line in dist.requires or []:
            needed = Requirement(line)
            if needed.marker is None or needed.marker.evaluate({"extra": ""}):
                todo.append(line)
    return found


def _link_packages(dists, site):
    """Hard-link each distribution's files (its RECORD) and their compiled bytecode into the
    folder ``site``; copy where a link is impossible (another file system). Scripts outside
    site-packages (``../../../bin/...``) are left out: notebooks run no console scripts."""
    import importlib.util

    for dist in dists.values():
        for entry in dist.files or []:
            relative = Path(str(entry))
            if relative.parts[0] == ".." or "__pycache__" in relative.parts:
                continue
            source = Path(dist.locate_file(entry))
            wanted = [(source, site / relative)]
            if source.suffix == ".py":
                cached = Path(importlib.util.cache_from_source(str(source)))
                wanted.append((cached, site / relative.parent / "__pycache__" / cached.name))
            for src, dst in wanted:
                if not src.is_file() or dst.exists():
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)


def _stand_in():
    """The stand-in environment: created once, re-created when the pins change."""
    pins = _pins()
    stamp = VENV / ".colab-pins"
    if stamp.exists() and stamp.read_text() == "\n".join(pins):
        return
    shutil.rmtree(VENV, ignore_errors=True)
    dists = _closure([*pins, "pip"])
    if dists is None:  # the project's environment lacks a pinned version: pip installs them
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        _pip("install", "--quiet", "--no-compile", *pins)  # then compiled on every core
        subprocess.run([str(VENV / "bin" / "python"), "-c",
                        "import compileall, sysconfig; compileall.compile_dir("
                        "sysconfig.get_path('purelib'), quiet=2, workers=0)"],
                       check=True, capture_output=True, timeout=1800)
    else:
        venv.EnvBuilder(with_pip=False, clear=True).create(VENV)
        site = subprocess.run([str(VENV / "bin" / "python"), "-c",
                               "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              check=True, capture_output=True, text=True).stdout.strip()
        _link_packages(dists, Path(site))
    check = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "check"],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, f"the stand-in misses a dependency:\n{check.stdout}{check.stderr}"
    from packaging.utils import canonicalize_name

    installed = {canonicalize_name(line.split("==")[0]) for line in _freeze().splitlines()}
    assert {canonicalize_name(p.split("==")[0]) for p in pins} <= installed, installed
    stamp.write_text("\n".join(pins))


def _freeze():
    return _pip("freeze").stdout


def _build_wheel(tmp):
    """course_lib's wheel, built from a copy of the package (the checkout gets no build/)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in ("course_lib", "coursework"):
        shutil.copytree(REPO / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(tmp / "dist"), str(src)],
                   check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = (tmp / "dist").glob("course_lib-*.whl")
    with zipfile.ZipFile(wheel) as zf:  # the notebooks load the digits bundled in the wheel
        assert {"course_lib/data/mnist_5k.npz", "course_lib/data/MNIST_LICENSE.txt"} <= set(zf.namelist())
    return wheel


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """(environment variables for the kernel, a scratch folder, {notebook: seconds})."""
    tmp = tmp_path_factory.mktemp("colab")
    start = time.perf_counter()
    _stand_in()
    print(f"\nColab stand-in environment ready in {time.perf_counter() - start:.1f} s")
    wheel = _build_wheel(tmp)
    # A kernel spec for the stand-in's Python, found through JUPYTER_PATH.
    spec = tmp / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(VENV / "bin" / "python"), "-m", "ipykernel_launcher", "-f",
                 "{connection_file}"],
        "display_name": "Colab stand-in", "language": "python",
    }))
    # The kernel inherits the test's environment with these changes (and no PYTHONPATH or
    # VIRTUAL_ENV, see the test); matplotlib keeps ipykernel's inline backend, as on Colab.
    env = {"JUPYTER_PATH": str(tmp / "jupyter"), "COURSE_LIB_WHEEL": str(wheel),
           "PYTHONNOUSERSITE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    times = {}
    yield env, tmp, times
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "colab_standin_times.json").write_text(json.dumps(times, indent=1) + "\n")
    print("\nColab stand-in, seconds per notebook (install cell included):")
    for name, seconds in times.items():
        print(f"  {name:45s} {seconds:7.1f}")


@pytest.mark.slow
@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_on_colab_stand_in(path, colab, monkeypatch):
    from nbclient import NotebookClient

    env, tmp, times = colab
    # The first notebook's install cell installs course_lib into an environment without it.
    # Every notebook's first cell is that same cell (tests/test_colab_links.py checks it byte for
    # byte), so the later notebooks run with course_lib left installed (their install cell finds
    # it and does nothing), which saves a pip install per notebook; COLAB_STANDIN=full
    # uninstalls it before every notebook.
    fresh_install = FULL or not INSTALLED
    if fresh_install:
        subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "uninstall", "--yes", "--quiet",
                        "course_lib"], capture_output=True, timeout=300)
    before = _freeze()
    assert ("course_lib" in before.lower().replace("-", "_")) != fresh_install

    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert "install-course-lib" in first.metadata.get("tags", []), (
        f"{path.name}: the first cell is not the install cell; run scripts/install_cell.py")
    modules = imported_modules([c.source for c in nb.cells[1:] if c.cell_type == "code"])
    if path.stem in LONG and not FULL:  # the install cell and the set-up cell
        setup = next(i for i, c in enumerate(nb.cells) if i > 0 and c.cell_type == "code")
        nb.cells = nb.cells[:setup + 1]
    nb.cells.append(nbformat.v4.new_code_cell(
        "import importlib.util as _u, json as _j\n"
        f"print({MISSING!r} + _j.dumps([m for m in {modules!r} if _u.find_spec(m) is None]))"))
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    workdir = tmp / "work" / path.stem  # outside the repository: nothing imports from it
    workdir.mkdir(parents=True)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "MPLBACKEND"):
        monkeypatch.delenv(name, raising=False)

    client = NotebookClient(nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT, allow_errors=False,
                            resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    client.execute(cwd=str(workdir))
    label = str(path.relative_to(REPO)) + (" (set-up only)" if path.stem in LONG and not FULL else "")
    times[label] = round(time.perf_counter() - start, 1)

    missing = [line for out in nb.cells[-2].outputs if out.output_type == "stream"
               for line in out.text.splitlines() if line.startswith(MISSING)]
    assert missing and json.loads(missing[0][len(MISSING):]) == [], (
        f"{path.name}: modules its cells import are missing on the stand-in: {missing}")
    report = [line for out in nb.cells[-1].outputs if out.output_type == "stream"
              for line in out.text.splitlines() if line.startswith(MARKER)]
    assert report, f"{path.name}: no report from the last cell"
    report = json.loads(report[0][len(MARKER):])
    site = Path(report["course_lib"]).resolve()
    assert site.is_relative_to(VENV.resolve()) and "site-packages" in site.parts, (
        f"{path.name}: course_lib was imported from {site}, not from the stand-in's site-packages")
    after = _freeze()
    assert "course_lib" in after.lower().replace("-", "_"), "the install cell installed nothing"
    INSTALLED.append(path.name)
    for package in ("tensorflow", "keras", "numpy"):
        old = [line for line in before.splitlines() if line.lower().startswith(package + "==")
               or line.lower().startswith(package + "-cpu==")]
        new = [line for line in after.splitlines() if line.lower().startswith(package + "==")
               or line.lower().startswith(package + "-cpu==")]
        assert old == new, f"{path.name}: the install cell changed {package}: {old} -> {new}"
