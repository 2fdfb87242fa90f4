"""The grader's fast parts, without a sandbox: records as plain data (coursework._record),
record mode of the checks, merging a submission into the source, and judging records.
(The sandboxed runs are in test_grading_adversarial.py.)"""

import json

import nbformat
import numpy as np
import pytest

from coursework import _record
from coursework import ps01_numpy_batchnorm as checks
from instructor import grading
from instructor.course import Course
from instructor.grading.judge import count_cases, judge, skeleton
from instructor.grading.merge import merge
from instructor.grading.plan import gid


def _round_trip(value):
    return _record._restore(json.loads(json.dumps(_record.plain(value))))


def test_plain_data_round_trips():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)[:, ::2, 1:]  # not contiguous
    back = _round_trip({"a": (x, np.float64(1.5), np.array(2.0), [1, "s", None, True])})
    y, scalar, zero_d, rest = back["a"]
    assert y.dtype == np.float32 and y.shape == (2, 2, 3) and np.array_equal(y, x)
    assert type(scalar) is np.float64 and scalar == 1.5
    assert isinstance(zero_d, np.ndarray) and zero_d.shape == ()
    assert rest == [1, "s", None, True]


def test_rigged_objects_become_opaque():
    class Always:
        def __eq__(self, other):
            return True

        def __array__(self, *args, **kwargs):
            raise TypeError("no")

    class Liar(np.ndarray):
        def __eq__(self, other):
            return True

    opaque = _round_trip(Always())
    assert isinstance(opaque, _record.Opaque) and type(opaque).__name__ == "Always"
    assert opaque != 1.0 and np.asarray(opaque).dtype == object
    liar = _round_trip(np.arange(3.0).view(Liar))
    assert type(liar) is np.ndarray and not np.array_equal(liar, np.zeros(3))
    assert isinstance(_round_trip(np.array([object()])), _record.Opaque)


@pytest.mark.parametrize("entry, problem", [
    ({"__nd__": "|O", "shape": [1], "data": ""}, "refusing dtype"),
    ({"__nd__": "<f8", "shape": [3], "data": "AAAAAAAAAAA="}, "does not match"),
    ({"__pickle__": "x"}, "unknown"),
])
def test_malformed_records_are_refused(tmp_path, entry, problem):
    path = tmp_path / "cell-0.jsonl"
    path.write_text(json.dumps({"module": "m", "compare": "c", "args": [entry]}) + "\n")
    with pytest.raises(_record.RecordError, match=problem):
        _record.load(str(path))
    path.write_text("[]\n")
    with pytest.raises(_record.RecordError, match="not an object"):
        _record.load(str(path))
    path.write_text("x" * 100)
    with pytest.raises(_record.RecordError, match="bytes"):
        _record.load(str(path), max_bytes=10)


def _unbiased(x, gamma, beta, eps=1e-3, axis=-1):
    axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    mean, var = x.mean(axis=axes), x.var(axis=axes, ddof=1)
    shape = [1] * x.ndim
    shape[axis] = -1
    y = gamma.reshape(shape) * (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return y + beta.reshape(shape), mean, var


def test_record_mode_records_and_the_grader_judges(tmp_path, monkeypatch):
    monkeypatch.setenv(_record.RECORD_ENV, str(tmp_path))
    monkeypatch.setenv(_record.CELL_ENV, "7")
    checks.check_forward_train(_unbiased, hidden=True)  # records; judges nothing
    monkeypatch.delenv(_record.RECORD_ENV)
    calls = _record.load(str(tmp_path / "cell-7.jsonl"))
    passed, message = judge(calls)
    assert not passed and "unbiased variance" in message
    skel = skeleton(calls)
    assert count_cases(skel) == len(checks.cases("forward_train", hidden=True))
    fewer = [(m, n, [a[0], a[1][:1]]) for m, n, a in calls]
    assert skeleton(fewer) != skel  # dropping cases is seen


def test_merge_takes_tests_from_the_source_and_answers_by_content():
    plan = grading.Plan(Course(), "ps01_numpy_batchnorm")
    nb = nbformat.read(plan.course.release("ps01_numpy_batchnorm"), as_version=4)
    answers = sum(1 for c in nb.cells if c.cell_type == "code"
                  and c.metadata.get("nbgrader", {}).get("solution"))
    for cell in nb.cells:
        if gid(cell) == "A_forward_train":
            cell.source = "def batchnorm_forward_train(x, gamma, beta, eps=1e-3, axis=-1):\n    return 1"
        if gid(cell) == "A_forward_train_visible":
            cell.source = "pass  # edited"
        cell.metadata = {}  # Colab stripped every cell's metadata
    nb.cells.append(nbformat.v4.new_code_cell("print('mine')"))
    merged = merge(plan, nb)
    sources = [c["source"] for c in merged.run]
    visible = merged.run[merged.test_index["A_forward_train_visible"]]["source"]
    assert visible.endswith("checks.check_forward_train(batchnorm_forward_train)")  # as released
    # (without metadata the edited copy cannot be told from a cell of the student's own: it runs
    # too, where it was, and cannot change a verdict)
    test = merged.run[merged.test_index["A_forward_train_hidden"]]["source"]
    assert "hidden=True" in test  # hidden tests come from the source
    assert any("return 1" in s for s in sources) and sources[-1] == "print('mine')"
    assert any(f"matched {answers} answer cell(s) by content" in n for n in merged.notes)
    assert plan.redact("x " + plan.secret[0]) == "x [hidden test]"
