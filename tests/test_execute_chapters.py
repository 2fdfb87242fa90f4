"""scripts/execute_chapters.py, the parallel execution step of ``make book`` (no execution here)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "execute_chapters.py"
spec = importlib.util.spec_from_file_location("execute_chapters", SCRIPT)
execute_chapters = importlib.util.module_from_spec(spec)
spec.loader.exec_module(execute_chapters)


def test_every_chapter_is_executed_once_and_the_long_ones_first():
    found = execute_chapters.chapters()
    assert sorted(found) == sorted((ROOT / "chapters").glob("*.ipynb"))
    stems = [p.stem for p in found]
    # A renamed chapter must not silently fall to the end of the order.
    assert set(execute_chapters.LONGEST_FIRST) <= set(stems), set(execute_chapters.LONGEST_FIRST) - set(stems)
    assert stems[:len(execute_chapters.LONGEST_FIRST)] == list(execute_chapters.LONGEST_FIRST)


def test_the_timeout_is_the_builds():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert execute_chapters.timeout() == config["execute"]["timeout"]
    assert config["execute"]["execute_notebooks"] == "cache"  # the cache this script fills


def test_a_bad_jobs_argument_names_itself():
    result = subprocess.run([sys.executable, str(SCRIPT), "--jobs", "0"], capture_output=True, text=True)
    assert result.returncode == 2 and "--jobs must be at least 1. Received: --jobs=0" in result.stderr


def test_a_bad_root_argument_names_itself(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--root", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and f"Received: --root={tmp_path}" in result.stderr


def test_another_root_is_executed_into_its_own_cache(tmp_path):
    """A one-cell book in a temporary folder: its chapter lands in ITS cache, which then
    matches the notebook as the build's lookup does."""
    import nbformat
    from jupyter_cache import get_cache

    (tmp_path / "chapters").mkdir()
    (tmp_path / "_config.yml").write_text("execute:\n  timeout: 60\n")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "chapters" / "one.ipynb")
    result = subprocess.run([sys.executable, str(SCRIPT), "--root", str(tmp_path), "--jobs", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chapters/one.ipynb: executed in" in result.stdout, result.stdout
    cache = get_cache(str(tmp_path / "_build" / ".jupyter_cache"))
    record = cache.match_cache_notebook(nbformat.read(tmp_path / "chapters" / "one.ipynb", as_version=4))
    outputs = cache.get_cache_bundle(record.pk).nb.cells[0].outputs
    assert outputs[0]["text"] == "42\n"
