"""The layer tests again, on the JAX backend (``KERAS_BACKEND=jax``), in one subprocess.

Keras picks its backend once per process, so the layer test modules are re-run by a child
pytest with ``KERAS_BACKEND=jax``; this file is one test in ``make test`` and runs alongside
the others. ``make test-jax`` runs the child directly, with every file of LAYER_TESTS. Tests that need TensorFlow itself
(``tf.distribute``, the Keras test suites) skip themselves there and are listed by -rs.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYER_TESTS = [
    "tests/test_batch_normalization.py",
    "tests/test_batch_renormalization.py",
    "tests/test_layer_normalization.py",
    "tests/test_rms_normalization.py",
    "tests/test_group_normalization.py",
    "tests/test_instance_normalization.py",
    "tests/test_weight_normalization.py",
    "tests/test_weight_standardization.py",
    "tests/test_fixup.py",
    "tests/test_recalibration.py",
    "tests/test_folding.py",
    "tests/test_gradient_clipping.py",
    "tests/test_transformer.py",
]


# `make test` runs the layers' own tests on JAX; the compositions of those layers (Fixup and
# transformer blocks) and the model utilities (folding, recalibration) take about a third of the
# child's time there and run on JAX with `make test-jax`, which runs all of LAYER_TESTS.
COMPOSITIONS = {"tests/test_fixup.py", "tests/test_transformer.py", "tests/test_folding.py",
                "tests/test_recalibration.py"}


# XLA compiles every new shape the tests call a layer with, and most of the child's time is
# that compilation, not the tests' arithmetic. Without the backend optimisations it takes about
# a third less CPU (the group and weight normalization tests: 92 -> 64 CPU-seconds); the
# layers' results are the same up to the tests' tolerances, which compare them with NumPy and
# Keras. `make test-jax` compiles as users do, with XLA's defaults.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


@pytest.mark.slow
def test_layer_tests_pass_on_the_jax_backend():
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + FAST_COMPILE).strip())
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-rs", *[t for t in LAYER_TESTS if t not in COMPOSITIONS]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(f"JAX backend: {summary}")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary, summary
