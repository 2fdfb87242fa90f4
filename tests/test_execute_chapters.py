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
