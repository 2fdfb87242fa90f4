"""Grading throughput: stock ``nbgrader autograde`` vs the course's grader. `make bench-grading`.

Not a test. One run, on one machine, of the same class twice:

* stock: a temporary course, the submissions placed in ``_grading/submitted``, ONE serial
  ``nbgrader autograde PS --force`` (a kernel per notebook, the checks judging in the kernel);
* ours: another temporary course, ONE ``python -m instructor autograde PS --submissions DIR``
  (import, the solution's reference run with a cold cache, sandboxed runs ``--workers`` at a
  time, judging in the trusted process), everything included.

The class: ``--students`` notebooks (default 20) of the heaviest problem set (default ps03_placement),
cycling through the solution, the alternatives and the mistakes of ``tests/variants/PS.py``.
It prints seconds, submissions per minute, the throughput ratio (goal >= 2.5x), the peak memory
of each process tree (sum of RSS over the command and all its descendants, sampled every
0.1 s) and whether both graders gave every student the same score; writes
``benchmarks/grading_results.json``. Run on an otherwise idle machine (other load skews both).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
from test_problem_sets import ENV, gradebook_scores, load_variants, student  # noqa: E402

RESULTS = Path(__file__).with_name("grading_results.json")


def _tree_rss(pid):
    """Total resident memory (bytes) of ``pid`` and all its descendants, from /proc."""
    children, rss = {}, {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/statm") as fh:
                resident = int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        rss[int(entry)] = resident
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


def measure(cmd, cwd):
    """(seconds, peak tree RSS in bytes, completed process) of one command."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            done.wait(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    thread.start()
    out, _ = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    return seconds, peak[0], proc.returncode, out


def make_course(base, ps):
    root = base / "course"
    (root / "solutions").mkdir(parents=True)
    shutil.copy(REPO / "nbgrader_config.py", root)
    shutil.copytree(REPO / "solutions" / ps, root / "solutions" / ps)
    subprocess.run([sys.executable, "-m", "instructor", "--root", str(root), "release", ps],
                   cwd=REPO, env=ENV, check=True, stdout=subprocess.DEVNULL)
    return root


def make_class(root, ps, n, folder):
    release = root / "exercises" / ps / f"{ps}.ipynb"
    source = root / "solutions" / ps / f"{ps}.ipynb"
    variants = load_variants(ps)
    kinds = [None] + list(getattr(variants, "ALTERNATIVES", {}).values()) + \
        [m["cells"] for m in getattr(variants, "MISTAKES", {}).values()]
    folder.mkdir(parents=True)
    for i in range(n):
        nbformat.write(student(release, source, kinds[i % len(kinds)]), folder / f"s{i:03d}.ipynb")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ps", default="ps03_placement")
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--workers", type=int, default=None,
                        help="the course grader's workers (default: the number of cores)")
    args = parser.parse_args()
    cores = os.cpu_count()
    print(f"{args.students} submissions of {args.ps}; {cores} cores "
          f"(a shared machine skews both numbers alike)")

    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        tmp = Path(tmp)
        stock_root = make_course(tmp / "stock", args.ps)
        ours_root = make_course(tmp / "ours", args.ps)
        incoming = tmp / "incoming"
        make_class(ours_root, args.ps, args.students, incoming)
        for nb in sorted(incoming.glob("*.ipynb")):
            dest = stock_root / "_grading" / "submitted" / nb.stem / args.ps / f"{args.ps}.ipynb"
            dest.parent.mkdir(parents=True)
            shutil.copy(nb, dest)

        stock = measure([sys.executable, "-m", "nbgrader", "autograde", args.ps, "--force"],
                        stock_root)
        print(f"stock nbgrader autograde (serial): {stock[0]:.1f} s, peak {stock[1] / 2**20:.0f} MiB"
              f" (exit {stock[2]})")
        cmd = [sys.executable, "-m", "instructor", "--root", str(ours_root), "autograde",
               args.ps, "--submissions", str(incoming)]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        ours = measure(cmd, REPO)
        print(f"instructor autograde ({args.workers or cores} workers): {ours[0]:.1f} s, "
              f"peak {ours[1] / 2**20:.0f} MiB (exit {ours[2]})")
        if ours[2]:
            print(ours[3][-3000:])

        def totals(root):
            try:
                scores, _, _ = gradebook_scores(root, args.ps)
            except Exception as exc:  # noqa: BLE001 - report, do not hide the timings
                print(f"  could not read {root}'s gradebook: {exc}")
                return {}
            return {s: sum(v or 0 for v, _ in cells.values()) for s, cells in scores.items()}

        a, b = totals(stock_root), totals(ours_root)
        same = sum(1 for s in a if a.get(s) == b.get(s))
        differ = {s: (a.get(s), b.get(s)) for s in sorted(set(a) | set(b)) if a.get(s) != b.get(s)}

    ratio = stock[0] / ours[0]
    result = {
        "problem_set": args.ps, "students": args.students, "cores": cores,
        "workers": args.workers or cores, "machine": platform.platform(),
        "stock_seconds": round(stock[0], 2), "ours_seconds": round(ours[0], 2),
        "stock_per_minute": round(60 * args.students / stock[0], 2),
        "ours_per_minute": round(60 * args.students / ours[0], 2),
        "throughput_ratio": round(ratio, 2),
        "stock_peak_mib": round(stock[1] / 2**20), "ours_peak_mib": round(ours[1] / 2**20),
        "same_scores": same, "differing_scores": differ,
    }
    print(f"\nthroughput: {result['stock_per_minute']} vs {result['ours_per_minute']} submissions "
          f"per minute = {ratio:.2f}x (goal >= 2.5x)")
    print(f"peak memory: stock {result['stock_peak_mib']} MiB, ours {result['ours_peak_mib']} MiB "
          f"({(ours[1] / max(stock[1], 1)):.2f}x)")
    print(f"same score from both graders: {same} of {args.students}"
          + (f"; differing (stock, ours): {differ}" if differ else ""))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
