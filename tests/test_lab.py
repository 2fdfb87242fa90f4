"""`make lab`: JupyterLab on the problem sets with nbgrader's student extensions only.

The virtual environment has all of nbgrader's extensions installed (instructors use the same
environment). `make lab` adds ``lab/`` to ``JUPYTER_CONFIG_PATH``, which switches off the
instructor's parts, the formgrader (server and lab extension) and the create-assignment toolbar,
and keeps the student's: the assignment list, the course list and the Validate button.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = Path(sys.executable).with_name("jupyter")
INSTRUCTOR_ONLY = {"@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment"}


def test_make_lab_opens_the_problem_sets_with_the_student_config():
    recipe = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    assert re.search(r"JUPYTER_CONFIG_PATH=\S*/lab\b", recipe), recipe
    assert re.search(r"jupyter lab .*exercises/", recipe), recipe


def test_student_config_switches_off_the_instructor_extensions():
    page = json.loads((ROOT / "lab" / "labconfig" / "page_config.json").read_text())
    assert {k for k, off in page["disabledExtensions"].items() if off} == INSTRUCTOR_ONLY
    server = json.loads((ROOT / "lab" / "jupyter_server_config.json").read_text())
    assert server["ServerApp"]["jpserver_extensions"] == {
        "nbgrader.server_extensions.formgrader": False}

    env = dict(os.environ, JUPYTER_CONFIG_PATH=str(ROOT / "lab"))
    listed = subprocess.run([str(JUPYTER), "labextension", "list"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    text = listed.stdout + listed.stderr
    assert "@jupyter/nbgrader" in text, "nbgrader's lab extension is not installed"
    disabled = text.split("Disabled extensions:")[-1] if "Disabled extensions:" in text else ""
    for plugin in INSTRUCTOR_ONLY:
        assert plugin in disabled, f"{plugin} is not disabled:\n{text}"
    for plugin in ("assignment-list", "validate-assignment"):
        assert f"@jupyter/nbgrader:{plugin}" not in disabled
