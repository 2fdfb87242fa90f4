"""Running one submission: reading it, and running its merged cells in a sandbox
(``instructor.sandbox``) on a private copy of that student's files."""

import hashlib
import os
import shutil
import tempfile
import warnings

import nbformat

from instructor import sandbox

MAX_NOTEBOOK_BYTES = 20 * 2**20
MAX_COPY_BYTES = 100 * 2**20
MAX_RUNS = 3  # runs of one notebook: the first, and two more each without a cell that stopped it
TIME_LIMIT = "KeyboardInterrupt: cell time limit"  # a cell's error when the runner's alarm stops it


def stopped(merged, outcome, limits):
    """(index of the cell the run stopped in or None, why); (None, "") if it ran to the end."""
    started = [s.get("cell") for s in outcome.statuses if s.get("event") == "start"]
    ended = {s.get("cell") for s in outcome.statuses if s.get("event") == "end"}
    last = next((c for c in reversed(started) if c not in ended), None)
    if not (isinstance(last, int) and 0 <= last < len(merged.run)):
        last = None
    where = f" in {merged.run[last]['what']}" if last is not None else ""
    if outcome.killed == "cell timeout":
        return last, (f"a cell ran for more than {limits.cell_timeout:g} s and ignored the "
                      f"interrupt{where}: it was killed")
    if outcome.killed == "notebook timeout":
        return None, (f"the notebook ran for more than {limits.notebook_timeout:g} s{where}: "
                      "it was killed")
    if outcome.killed == "memory":
        return last, (f"the notebook used more than {limits.memory_mb} MB of memory{where}: "
                      "it was killed")
    if not any(s.get("event") == "done" for s in outcome.statuses):
        code = outcome.returncode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        return last, f"the notebook's process ended{where} ({how}: os._exit, a crash or a kill)"
    return None, ""


def describe_stop(merged, outcome, limits):
    """Why the run stopped before its end ("" if it did not)."""
    return stopped(merged, outcome, limits)[1]


ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONHASHSEED": "0", "LANG": "C.UTF-8",
       "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0", "MPLBACKEND": "Agg",
       "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
# Threads of NumPy's BLAS and TensorFlow per sandbox: the cores shared among the workers.
_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
            "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def execute(plan, merged, files_from, limits, isolate=True, skipped=None):
    """Run ``merged`` in a sandbox on a copy of ``files_from``, the cells of ``skipped``
    replaced by an error; returns (outcome, out_dir, tmp)."""
    skipped = skipped or {}
    tmp = tempfile.mkdtemp(prefix=f"grading-{os.getpid()}-")
    work, out = os.path.join(tmp, "work"), os.path.join(tmp, "out")
    os.makedirs(out)
    _copy_files(files_from, work)
    env = dict(ENV)
    env["KERAS_BACKEND"] = os.environ.get("KERAS_BACKEND", "tensorflow")
    env.update({key: str(limits.threads) for key in _THREADS})
    cells = [{"index": c["index"], "source": c["source"] if c["index"] not in skipped else
              f"raise RuntimeError({('skipped by the grader: ' + skipped[c['index']])!r})"}
             for c in merged.run]
    outcome = sandbox.run(cells, work, out, limits, env, isolate=isolate)
    return outcome, out, tmp


def sweep_temporary():
    """Remove the temporary copies left by graders that were killed (their pid is gone)."""
    base = tempfile.gettempdir()
    for name in os.listdir(base):
        parts = name.split("-")
        if name.startswith("grading-") and len(parts) >= 3 and parts[1].isdigit() \
                and not os.path.exists(f"/proc/{parts[1]}"):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _copy_files(folders, dest):
    """A private copy of the student's files (and the released data files): plain files only,
    no links, at most MAX_COPY_BYTES."""
    os.makedirs(dest, exist_ok=True)
    total = 0
    for folder in folders:
        if not folder or not os.path.isdir(folder):
            continue
        for root, dirs, files in os.walk(folder, followlinks=False):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
            for name in files:
                src = os.path.join(root, name)
                if os.path.islink(src) or not os.path.isfile(src):
                    continue
                size = os.path.getsize(src)
                if total + size > MAX_COPY_BYTES:
                    continue
                target = os.path.join(dest, os.path.relpath(src, folder))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(src, target)
                total += size


def read_submission(path):
    """(notebook or None, sha256, problem)."""
    if path is None or not os.path.isfile(path):
        return None, "", "no notebook was submitted"
    with open(path, "rb") as fh:
        data = fh.read(MAX_NOTEBOOK_BYTES + 1)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) > MAX_NOTEBOOK_BYTES:
        return None, digest, f"the notebook is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nb = nbformat.reads(data.decode("utf-8"), as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("no list of cells")
        for cell in nb.cells:
            if not isinstance(cell.get("source"), str) or "cell_type" not in cell:
                raise ValueError("a cell without source or type")
    except Exception as exc:  # noqa: BLE001 - any parse failure: every part 0, reported
        return None, digest, ("not a readable notebook (invalid JSON?): "
                              f"{type(exc).__name__}: {str(exc)[:150]}")
    return nb, digest, ""



def sha256(path):
    """The SHA-256 of the file at ``path`` as read for grading ("" if there is none)."""
    if path is None or not os.path.isfile(path):
        return ""
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read(MAX_NOTEBOOK_BYTES + 1)).hexdigest()


def run_submission(plan, merged, folders, limits, isolate=True):
    """Run ``merged`` in the sandbox; a cell that stops the whole run (killed for time or
    memory, os._exit, a crash) is skipped and the notebook run again, up to twice, so only
    what depends on it scores 0.

    Returns
    -------
    tuple
        (outcome, the folder of the records, the temporary folder to remove, {skipped cell:
        why}, notes, errors, peak memory in bytes); ``errors`` say why the notebook did not
        run to its end.
    """
    skipped, peak, notes, errors = {}, 0, [], []
    for attempt in range(MAX_RUNS):
        outcome, out, tmp = execute(plan, merged, folders, limits, isolate, skipped)
        peak = max(peak, outcome.peak_memory)
        cell, stop = stopped(merged, outcome, limits)
        if stop:
            errors.append(stop)
            notes.append(stop + ("; the notebook was run again without that cell"
                                 if cell is not None and cell not in skipped
                                 and attempt + 1 < MAX_RUNS else ""))
        if cell is None or cell in skipped or attempt + 1 == MAX_RUNS:
            break
        skipped[cell] = stop
        shutil.rmtree(tmp, ignore_errors=True)
    return outcome, out, tmp, skipped, notes, errors + interrupted(merged, outcome, limits), peak


def interrupted(merged, outcome, limits):
    """The cells the soft time limit interrupted (the run went on with the next cell), as
    errors: "a cell ran for more than 120 s in answer cell A_x: it was interrupted"."""
    out = []
    for status in outcome.statuses:
        if status.get("event") == "end" and status.get("error") == TIME_LIMIT:
            cell = status.get("cell")
            what = merged.run[cell]["what"] if isinstance(cell, int) \
                and 0 <= cell < len(merged.run) else "a cell"
            out.append(f"a cell ran for more than {limits.cell_timeout:g} s in {what}: it was "
                       "interrupted")
    return out
