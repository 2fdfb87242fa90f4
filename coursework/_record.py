"""Record mode: the grade cells keep what the learner's code produced, a trusted process judges.

In a notebook a check records and compares in one go (``coursework._core``). When the
course's grader runs a submission it sets ``COURSE_LIB_RECORD_TO`` to a folder: every check then
writes what it would have compared (the records: plain data) to ``<folder>/cell-<n>.jsonl``
(``n`` from ``COURSE_LIB_RECORD_CELL``, set by the grader's runner before each cell) and judges
nothing. The grader reads the file back with :func:`load` in its own process, with its own,
untouched NumPy, and calls the same ``compare`` there.

The file format is JSON, never pickle: loading it cannot run code. Arrays are stored as
dtype, shape and bytes, only for numeric and boolean dtypes; any other object is stored as an
:class:`Opaque` placeholder (its type name and a short repr), which the comparison reports as
"not an array of numbers". So an object with a rigged ``__eq__`` or ``__array__`` never reaches
the judge: what it converts to in the learner's process is what is judged.
"""

import base64
import json
import os

import numpy as np

__all__ = ["RECORD_ENV", "CELL_ENV", "recording", "save", "plain", "load", "Opaque"]

RECORD_ENV = "COURSE_LIB_RECORD_TO"
CELL_ENV = "COURSE_LIB_RECORD_CELL"
MAX_ELEMENTS = 10_000_000  # per array
MAX_TEXT = 4000  # characters per string
MAX_DEPTH = 12


def recording():
    """Is this process a grading run (record mode)?"""
    return bool(os.environ.get(RECORD_ENV))


def save(module, compare, args):
    """Append one call of ``module.compare(*args)`` to this cell's record file."""
    folder = os.environ[RECORD_ENV]
    cell = os.environ.get(CELL_ENV, "unknown")
    line = json.dumps({"module": module, "compare": compare, "args": plain(list(args))})
    with open(os.path.join(folder, f"cell-{cell}.jsonl"), "a") as fh:
        fh.write(line + "\n")


class Opaque:
    """Stands for a value that is not plain data (an object of the learner's own class...)."""

    def __init__(self, kind, text=""):
        self.kind, self.text = str(kind)[:200], str(text)[:200]

    def __repr__(self):
        return f"<{self.kind}>"

    def __eq__(self, other):
        return isinstance(other, Opaque) and (self.kind, self.text) == (other.kind, other.text)

    __hash__ = None


def _array(arr):
    scalar = isinstance(arr, np.generic)
    arr = np.ndarray.view(arr, np.ndarray) if isinstance(arr, np.ndarray) else np.asarray(arr)
    if arr.dtype.kind not in "biufc" or arr.dtype.hasobject:
        if arr.dtype.kind in "US" and arr.size <= 1000:
            return {"__list__": plain(arr.tolist())}
        return {"__opaque__": f"ndarray of dtype {arr.dtype}"}
    if arr.size > MAX_ELEMENTS:
        return {"__opaque__": f"ndarray of {arr.size} elements (too large to record)"}
    out = {"__nd__": arr.dtype.str, "shape": list(arr.shape),
           "data": base64.b64encode(arr.tobytes(order="C")).decode("ascii")}
    if scalar:
        out["scalar"] = True  # a NumPy scalar (np.float64(...)), not a 0-d array
    return out


def plain(value, depth=0):
    """``value`` as JSON-ready plain data (see the module docstring)."""
    if depth > MAX_DEPTH:
        return {"__opaque__": "nested too deeply"}
    t = type(value)
    if value is None or t in (bool, int, float):
        return value
    if t is str:
        return value[:MAX_TEXT]
    if isinstance(value, (np.ndarray, np.generic)):
        return _array(value)
    if isinstance(value, tuple):
        return {"__tuple__": [plain(v, depth + 1) for v in tuple.__iter__(value)]}
    if isinstance(value, list):
        return [plain(v, depth + 1) for v in list.__iter__(value)]
    if isinstance(value, dict):
        return {"__dict__": [[plain(k, depth + 1), plain(v, depth + 1)]
                             for k, v in dict.items(value)]}
    try:  # a tensor, a scalar of another library...: what NumPy makes of it, if numeric
        arr = np.asarray(value)
        if arr.dtype.kind in "biufc" and not arr.dtype.hasobject:
            return _array(arr)
    except Exception:  # noqa: BLE001 - the learner's object refuses: opaque
        pass
    try:
        text = repr(value)[:200]
    except Exception:  # noqa: BLE001
        text = ""
    return {"__opaque__": f"{type(value).__module__}.{type(value).__qualname__}"[:200],
            "repr": text}


# ---------------------------------------------------------------------------------------------
# The trusted side: parse what a grading run wrote


class RecordError(ValueError):
    """The record file is malformed (or was tampered with)."""


def _restore(value, depth=0):
    if depth > MAX_DEPTH + 2:
        raise RecordError("nested too deeply")
    if value is None or type(value) in (bool, int, float):
        return value
    if type(value) is str:
        return value[:MAX_TEXT]
    if type(value) is list:
        return [_restore(v, depth + 1) for v in value]
    if type(value) is not dict or len(value) == 0:
        raise RecordError(f"unexpected {type(value).__name__}")
    if "__nd__" in value:
        dtype = np.dtype(str(value["__nd__"]))
        if dtype.kind not in "biufc" or dtype.hasobject:
            raise RecordError(f"refusing dtype {dtype}")
        shape = tuple(int(s) for s in value["shape"])
        if any(s < 0 for s in shape) or int(np.prod(shape, dtype=np.int64)) > MAX_ELEMENTS:
            raise RecordError(f"bad shape {shape}")
        data = base64.b64decode(str(value["data"]), validate=True)
        if len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise RecordError("array data does not match its shape")
        arr = np.frombuffer(data, dtype=dtype).reshape(shape).copy()
        return arr[()] if value.get("scalar") is True and arr.ndim == 0 else arr
    if "__tuple__" in value:
        return tuple(_restore(v, depth + 1) for v in value["__tuple__"])
    if "__list__" in value:
        return list(_restore(v, depth + 1) for v in value["__list__"])
    if "__dict__" in value:
        out = {}
        for pair in value["__dict__"]:
            k, v = pair
            k = _restore(k, depth + 1)
            if isinstance(k, (list, dict, np.ndarray)):
                k = repr(k)
            out[k] = _restore(v, depth + 1)
        return out
    if "__opaque__" in value:
        # a placeholder whose class has the original's name, so a message can say "a Foo"
        name = str(value["__opaque__"]).rsplit(".", 1)[-1]
        name = name if name.isidentifier() else "object"
        return type(name, (Opaque,), {})(value["__opaque__"], value.get("repr", ""))
    raise RecordError("unknown record entry")


def load(path, max_bytes=64 * 2**20, max_calls=64):
    """The calls recorded in one cell's file: a list of (module, compare, args).

    Raises RecordError if the file is too large or malformed.
    """
    size = os.path.getsize(path)
    if size > max_bytes:
        raise RecordError(f"record file of {size} bytes (limit {max_bytes})")
    calls = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if len(calls) >= max_calls:
                raise RecordError("too many recorded calls")
            entry = json.loads(line)
            if type(entry) is not dict:
                raise RecordError("a record line is not an object")
            module, compare = entry.get("module"), entry.get("compare")
            if type(module) is not str or type(compare) is not str:
                raise RecordError("a record line names no comparison")
            args = _restore(entry.get("args"))
            if type(args) is not list:
                raise RecordError("a record line has no argument list")
            calls.append((module, compare, args))
    return calls
