"""Progress while a class is graded: one line per student as their grading ends, and on a
terminal a ``rich`` progress bar with the time left under the lines."""

import sys
import time


def _clock(seconds):
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """``on_result`` for :func:`instructor.grading.grade_class`; a context manager.

    Each line: ``[done/total] student  score/max  seconds  ~time left  notes``. The time left
    is the wall time so far per finished student times the students still to go (several
    sandboxes run at once, so it is not the sum of their seconds).

    Parameters
    ----------
    total : int
        Students to grade.
    stream : file, optional
        Where the lines go (default: sys.stdout).
    bar : bool, optional
        Show rich's progress bar (default: when ``stream`` is a terminal).
    clock : callable, optional
        Seconds, for the time left (default: time.perf_counter).
    """

    def __init__(self, total, stream=None, bar=None, clock=time.perf_counter):
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise ValueError(f"total={total!r}: a number of students is needed")
        self.total, self.stream = total, stream or sys.stdout
        self.bar = self.stream.isatty() if bar is None else bar
        self.clock = clock
        self.start = clock()
        self.done = 0
        self._progress = self._task = None
        self.width = len(str(total))

    def __enter__(self):
        self.start = self.clock()
        if self.bar and self.total:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self._progress = Bar(TextColumn("grading"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                                 console=Console(file=self.stream), transient=True)
            self._progress.start()
            self._task = self._progress.add_task("grading", total=self.total)
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def line(self, result, done, total):
        """The line for one student (``result`` from the grading pipeline)."""
        elapsed = self.clock() - self.start
        left = elapsed / done * (total - done) if done else 0.0
        head = f"[{done:>{len(str(total))}}/{total}] {result.student}"
        if result.failure:
            return f"{head}  NOT GRADED ({result.seconds:.1f} s): the grader failed: " \
                   f"{result.failure[:200]}"
        top = result.record.get("max") if result.record else None
        score = f"{result.score:g}/{top:g}" if top is not None else f"{result.score:g}"
        status = (result.record or {}).get("status", "")
        notes = "; ".join(result.notes)
        notes = notes[:160] + ("..." if len(notes) > 160 else "")
        return (f"{head}  {score}  {result.seconds:.1f} s  ~{_clock(left)} left"
                + (f"  [{status.replace('_', ' ')}]" if status and status != "graded" else "")
                + (f"  {notes}" if notes else ""))

    def __call__(self, result, done, total):
        self.done = done
        text = self.line(result, done, total)
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
            self._progress.update(self._task, completed=done, total=total)
        else:
            print(text, file=self.stream, flush=True)
