"""Keras's own test modules for its normalization layers, run against course_lib's classes.

Each suite runs in a subprocess (``tests/keras_suite_plugin.py`` swaps the class before the
Keras test module is imported) on the current ``KERAS_BACKEND``. A test passes only if every
Keras test passes, except the ones listed in ``EXPECTED_FAILURES`` with an out-of-scope
reason; an expected failure that starts passing fails too, so the list cannot go stale.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

HERE = pathlib.Path(__file__).parent
SUITES = {
    "BatchNormalization": "batch_normalization",
    "LayerNormalization": "layer_normalization",
    "GroupNormalization": "group_normalization",
    "RMSNormalization": "rms_normalization",
}

# "TestClass::test_name" -> why the failure is out of scope (never a bug of ours).
EXPECTED_FAILURES = {
    "LayerNormalizationTest::test_invalid_axis": (
        "Keras raises TypeError for a non-integer `axis`; course_lib raises ValueError naming the "
        "argument and the value, the house convention for every bad argument."
    ),
    "LayerNormalizationTest::test_output_with_rms_scaling": (
        "Keras deprecated `rms_scaling=True` because it 'incorrectly scales the input by the "
        "variance, not the root mean square' (its own warning); course_lib computes the root "
        "mean square, as keras.layers.RMSNormalization does, and is tested against that layer."
    ),
    "GroupNormalizationTest::test_groups_not_a_multiple_of_dim_error": (
        "Keras's message states the relation backwards ('must be a multiple of the number of "
        "channels'); course_lib says `groups` must divide the channel count and names both values."
    ),
}


def _keras_test_file(module):
    spec = importlib.util.find_spec("keras")
    path = pathlib.Path(spec.origin).parent / "src/layers/normalization" / f"{module}_test.py"
    if not path.exists():
        pytest.skip(f"this Keras release does not ship {path.name}")
    return path


def _run_suite(name, module, tmp_path):
    report = tmp_path / "report.xml"
    env = {
        **os.environ,
        "COURSE_LIB_SUBSTITUTE": name,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_ENABLE_ONEDNN_OPTS": "0",
    }
    command = [
        sys.executable, "-m", "pytest", str(_keras_test_file(module)),
        "-c", os.devnull, "--rootdir", str(tmp_path), "-p", "no:cacheprovider",
        "-p", "keras_suite_plugin", "-p", "no:xdist", "-W", "ignore", "-rfE",
        f"--junitxml={report}",
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if not report.exists():
        pytest.fail(f"the Keras suite did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results = {}
    for case in ET.parse(report).iter("testcase"):
        test_id = f"{case.get('classname').split('.')[-1]}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome, message = tag, (child.get("message") or "")[:300]
        results[test_id] = (outcome, message)
    return results, proc


@pytest.mark.parametrize("name", list(SUITES))
def test_keras_suite_passes_with_course_lib_class(name, tmp_path):
    module = SUITES[name]
    if not (HERE.parent / "course_lib" / f"{module}.py").exists():
        pytest.skip(f"course_lib/{module}.py does not exist yet: no course_lib.{name} to test")
    results, proc = _run_suite(name, module, tmp_path)
    assert f"course_lib substitutes: {name} -> course_lib.{module}.{name}" in proc.stdout
    failed = {t: msg for t, (outcome, msg) in results.items() if outcome in ("failure", "error")}
    classes = {test_id.split("::")[0] for test_id in results}
    expected = {t for t in EXPECTED_FAILURES if t.split("::")[0] in classes}
    unexpected = {t: msg for t, msg in failed.items() if t not in EXPECTED_FAILURES}
    fixed = sorted(expected - set(failed))
    passed = sum(outcome == "passed" for outcome, _ in results.values())
    print(f"{name}: {passed} passed, {len(failed)} failed ({len(failed) - len(unexpected)} "
          f"expected), {len(results) - passed - len(failed)} skipped")
    assert not unexpected, "Keras tests failing with course_lib." + name + ":\n" + "\n".join(
        f"  {t}: {msg}" for t, msg in sorted(unexpected.items()))
    assert not fixed, f"expected failures that now pass (remove them): {fixed}"
    assert passed > 0
