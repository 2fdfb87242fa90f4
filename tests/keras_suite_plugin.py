"""Pytest plugin: run Keras's own layer tests with course_lib's classes in place of Keras's.

Loaded by ``tests/test_keras_suites.py`` in a subprocess, as
``python -m pytest -p keras_suite_plugin <keras test file>`` with ``tests/`` on ``PYTHONPATH``
and ``COURSE_LIB_SUBSTITUTE=BatchNormalization`` (comma-separated class names). The classes
are swapped at configure time, before pytest imports the test modules, everywhere those
modules and users look them up: ``keras.layers``, ``keras.src.layers`` (the test modules do
``from keras.src import layers``) and the defining Keras module. Each course_lib class lives
in the module of the same name as Keras's (``course_lib.batch_normalization`` for
``keras.src.layers.normalization.batch_normalization``).
"""

import importlib
import os

MODULES = {
    "BatchNormalization": "batch_normalization",
    "LayerNormalization": "layer_normalization",
    "GroupNormalization": "group_normalization",
    "RMSNormalization": "rms_normalization",
}

SUBSTITUTED = {}


def pytest_configure(config):
    import keras
    import keras.src.layers

    names = [n for n in os.environ.get("COURSE_LIB_SUBSTITUTE", "").split(",") if n]
    for name in names:
        ours = getattr(importlib.import_module(f"course_lib.{MODULES[name]}"), name)
        theirs = importlib.import_module(f"keras.src.layers.normalization.{MODULES[name]}")
        for module in (keras.layers, keras.src.layers, theirs):
            setattr(module, name, ours)
        SUBSTITUTED[name] = f"{ours.__module__}.{ours.__qualname__}"


def pytest_report_header(config):
    subs = ", ".join(f"{k} -> {v}" for k, v in SUBSTITUTED.items()) or "none"
    return f"course_lib substitutes: {subs}"
