"""Runs one submission's cells inside the grading sandbox (``instructor.sandbox``).

    python -I runner.py JOB.json

This file runs with the student's code in the same process, so nothing it reports is
trusted: the grader uses its status lines only to say which cell stopped the run, and judges
the records the checks wrote (``coursework._record``) in its own process.

Cells run in one IPython ``InteractiveShell`` (magics, ``display``, ``get_ipython`` work as in a
notebook), without a kernel or ZMQ: faster to start, and nothing listens on a socket. Per cell:

* ``COURSE_LIB_RECORD_CELL`` names the cell, so the checks write ``cell-<n>.jsonl``;
* a status line ``{"cell": n, "event": "start"}`` then ``{"cell": n, "event": "end", ...}``;
* a soft time limit (SIGALRM raises KeyboardInterrupt in the cell; the grader kills the whole
  sandbox a little later if the cell ignores it);
* ``sys.stdout``/``sys.stderr`` keep the first few kB (kept for the instructor's report only);
  file descriptors 1 and 2 go to /dev/null, so 10**7 printed lines cost time, not memory.
"""

import json
import os
import signal
import sys
import time

KEEP = 4000  # characters of a cell's output kept for the report


class Capped:
    """A text stream that keeps the first KEEP characters and counts the rest."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, null=None):
        self.parts, self.kept, self.total = [], 0, 0
        self.null = null if null is not None else getattr(self, "null", None)

    def write(self, text):
        text = str(text)
        self.total += len(text)
        if self.kept < KEEP:
            piece = text[: KEEP - self.kept]
            self.parts.append(piece)
            self.kept += len(piece)
        elif self.null is not None:
            # Full: the rest of this cell's output goes to /dev/null through a C-level stream,
            # so 10**7 printed lines take seconds, not minutes.
            if sys.stdout is self:
                sys.stdout = self.null
            if sys.stderr is self:
                sys.stderr = self.null
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False

    def writable(self):
        return True

    def fileno(self):
        raise OSError("no file descriptor while grading")

    def text(self):
        body = "".join(self.parts)
        return body + (f"\n... ({self.total - self.kept} more characters not kept)"
                       if self.total > self.kept else "")


def _alarm(signum, frame):
    raise KeyboardInterrupt("cell time limit")


def main(job_path):
    with open(job_path) as fh:
        job = json.load(fh)
    status = open(job["status"], "a", buffering=1)

    def report(**entry):
        try:
            status.write(json.dumps(entry) + "\n")
        except Exception:  # noqa: BLE001 - the student's code closed it: nothing to report to
            pass

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    null = open(os.devnull, "w")
    out, err = Capped(null), Capped(null)
    sys.stdout, sys.stderr = out, err

    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance(colors="NoColor", history_length=0)
    shell.history_manager.enabled = False
    shell.enable_gui = lambda gui=None: None  # `%matplotlib inline`: figures are not shown here
    signal.signal(signal.SIGALRM, _alarm)
    report(event="ready", t=time.time())
    for cell in job["cells"]:
        index = cell["index"]
        os.environ["COURSE_LIB_RECORD_CELL"] = str(index)
        out.__init__()
        err.__init__()
        sys.stdout, sys.stderr = out, err
        report(cell=index, event="start", t=time.time())
        signal.alarm(max(1, int(job["cell_timeout"])))
        error = None
        try:
            result = shell.run_cell(cell["source"], store_history=True, silent=False)
            exc = result.error_before_exec or result.error_in_exec
            if exc is not None:
                error = f"{type(exc).__name__}: {str(exc)[:500]}"
        except BaseException as exc:  # noqa: BLE001 - e.g. the alarm between two statements
            error = f"{type(exc).__name__}: {str(exc)[:500]}"
        finally:
            signal.alarm(0)
        null.flush()
        report(cell=index, event="end", t=time.time(), error=error,
               stdout=out.text()[:KEEP + 100], stderr=err.text()[:KEEP + 100])
    report(event="done", t=time.time())
    status.close()
    os._exit(0)  # no atexit hooks of the student's code


if __name__ == "__main__":
    main(sys.argv[1])
