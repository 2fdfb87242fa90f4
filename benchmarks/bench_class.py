"""A class-sized grading run: `make bench-class` (not a test).

For each problem set (default ps01_numpy_batchnorm and ps02_keras_layer): a temporary course,
a generated class of ``--students`` submissions (default 300), ONE ``python -m instructor
autograde PS --submissions DIR`` (import, the solution's reference run with a cold cache,
sandboxed runs ``--workers`` at a time, judging and writing in the grader's process), then
``instructor grades`` and ``instructor report``. It prints and writes
(``benchmarks/class_results.json``):

* wall time, submissions per minute, peak memory (sum of RSS over the command and all its
  descendants, sampled every 0.1 s);
* nothing lost: every generated student is in the gradebook exactly once, in the status
  export exactly once with the status their kind must get, and in the progress lines once;
  the solution and the alternatives score full marks, every mistake loses points;
* where the time goes, from the verdict records (seconds in the sandbox per submission;
  judging and writing in the grader's one main thread);
* what N machines sharing one PostgreSQL gradebook would take (:func:`projection`).

The class (deterministic, ``--seed``): the solution and the alternatives of
``tests/variants/PS.py`` (correct, written differently), its catalogued mistakes, and broken
notebooks: a syntax error, an exception raised in the graded code, an infinite loop in it
(the per-cell limit of nbgrader_config.py interrupts it, ``--timeout`` overrides), and an
empty (0-byte) file. ``--mix`` sets the shares.

Run it with a small class first (``--students 20``): at 300 per set on 2 cores it takes
about an hour, most of it ps02's Keras runs and the infinite loops' time limits.
"""

import argparse
import ast
import csv
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))
from bench_grading import make_course, measure  # noqa: E402
from test_problem_sets import ENV, grade_id, load_variants, student  # noqa: E402

RESULTS = Path(__file__).with_name("class_results.json")
SETS = ("ps01_numpy_batchnorm", "ps02_keras_layer")
# Shares of the class, by kind (normalised): what a class hands in.
MIX = {"solution": 0.35, "alternative": 0.15, "mistake": 0.38, "syntax error": 0.04,
       "exception": 0.04, "infinite loop": 0.01, "empty": 0.03}
BROKEN = ("syntax error", "exception", "infinite loop", "empty")
# The status each kind must get in the export (instructor.export)
STATUS = {"infinite loop": "graded_with_errors", "empty": "graded_with_errors"}
PROGRESS = re.compile(r"^\[\s*\d+/\d+\] (\S+)  ", re.M)


def _first_function_body(source):
    """(line index, indentation) of the first statement of the first function in ``source``."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None),
                                                          ast.Constant):
                first = node.body[1] if len(node.body) > 1 else first  # after a docstring
            line = source.splitlines()[first.lineno - 1]
            return first.lineno - 1, line[: len(line) - len(line.lstrip())]
    raise ValueError("no function in the answer cell")


def broken(source, kind):
    """The solution's first answer cell ``source``, broken as ``kind`` says."""
    if kind == "syntax error":
        return source.replace("):", ")", 1) if "):" in source else source + "\n)"
    index, indent = _first_function_body(source)
    lines = source.splitlines()
    if kind == "exception":
        insert = [f'{indent}raise ValueError("operands could not be broadcast together")']
    elif kind == "infinite loop":
        insert = [f"{indent}i = 0", f"{indent}while i < 10:", f"{indent}    i * 2"]
    else:
        raise ValueError(f"kind={kind!r}: one of 'syntax error', 'exception', 'infinite loop'")
    return "\n".join(lines[:index] + insert + lines[index:])


def kinds_for(n, mix, seed):
    """``n`` kinds drawn to the shares of ``mix`` (largest remainders), shuffled by ``seed``."""
    total = sum(mix.values())
    if n < 0 or total <= 0 or any(v < 0 for v in mix.values()):
        raise ValueError(f"n={n!r}, mix={mix!r}: a class size >= 0 and shares >= 0 are needed")
    exact = {k: n * v / total for k, v in mix.items()}
    counts = {k: int(v) for k, v in exact.items()}
    if n >= len([v for v in mix.values() if v > 0]):  # a small class still has one of each
        for k, v in mix.items():
            if v > 0 and counts[k] == 0:
                counts[k] = 1
                biggest = max(counts, key=counts.get)
                counts[biggest] -= 1
    left = max(0, n - sum(counts.values()))
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[:left]:
        counts[k] += 1
    out = [k for k, c in counts.items() for _ in range(c)]
    random.Random(seed).shuffle(out)
    return out


def make_class(root, ps, n, folder, mix=None, seed=0):
    """Write ``n`` submissions of ``ps`` to ``folder``; returns {student: (kind, variant name,
    cells)} (cells: the answer cells the variant changed, {grade id: source})."""
    release = root / "exercises" / ps / f"{ps}.ipynb"
    source = root / "solutions" / ps / f"{ps}.ipynb"
    variants = load_variants(ps)
    alternatives = list(getattr(variants, "ALTERNATIVES", {}).items())
    mistakes = list(getattr(variants, "MISTAKES", {}).items())
    solution = student(release, source)
    first = next(c for c in solution.cells if c.cell_type == "code"
                 and c.metadata.get("nbgrader", {}).get("solution"))
    folder.mkdir(parents=True, exist_ok=True)
    seen = {"alternative": 0, "mistake": 0}
    table = {}
    for i, kind in enumerate(kinds_for(n, mix or MIX, seed)):
        who = f"s{i:03d}"
        name, cells = "", None
        if kind == "alternative" and alternatives:
            name, cells = alternatives[seen[kind] % len(alternatives)]
        elif kind == "mistake" and mistakes:
            name, entry = mistakes[seen[kind] % len(mistakes)]
            cells = entry["cells"]
        elif kind in ("syntax error", "exception", "infinite loop"):
            cells = {grade_id(first): broken(first.source, kind)}
        seen[kind] = seen.get(kind, 0) + 1
        path = folder / f"{who}.ipynb"
        if kind == "empty":
            path.write_bytes(b"")
        else:
            nbformat.write(student(release, source, cells), path)
        table[who] = (kind, name, cells)
    return table


def _records(root, ps):
    folder = root / "_grading" / "cache" / "graded" / ps
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def check_class(root, ps, table, out, points):
    """Problems with the run: a student lost, doubled, or graded against their kind."""
    from nbgrader.api import Gradebook

    problems = []
    os.environ["PATH"] = ENV["PATH"]
    url = os.environ.get("NBGRADER_DB_URL") or "sqlite:///" + str(root / "_grading" / "gradebook.db")
    with Gradebook(url, "batchnorm-course") as gb:
        subs = gb.find_assignment(ps).submissions
        ids = [s.student.id for s in subs]
        scores = {s.student.id: s.score for s in subs}
    if sorted(ids) != sorted(table):
        problems.append(f"gradebook: {len(ids)} submissions, {len(set(ids))} students; expected "
                        f"{len(table)} once each (missing {sorted(set(table) - set(ids))[:5]})")
    with open(root / "_grading" / "grades-status.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["set"] == ps]
    if sorted(r["student"] for r in rows) != sorted(table):
        problems.append(f"grades-status.csv: {len(rows)} rows of {ps} for {len(table)} students")
    status = {r["student"]: r["status"] for r in rows}
    lines = PROGRESS.findall(out)
    if sorted(lines) != sorted(table):
        problems.append(f"progress: {len(lines)} lines for {len(table)} students")
    for who, (kind, name, _) in table.items():
        want = STATUS.get(kind, "graded")
        if status.get(who) != want:
            problems.append(f"{who} ({kind} {name}): status {status.get(who)}, expected {want}")
        got = scores.get(who)
        if kind in ("solution", "alternative") and got != points:
            problems.append(f"{who} ({kind} {name}): {got}/{points:g}, expected full marks")
        if kind == "mistake" and not (got is not None and got < points):
            problems.append(f"{who} (mistake {name}): {got}/{points:g}, expected fewer points")
    return problems


def projection(records, setup_seconds, cores, machines=(1, 2, 4, 8, 16)):
    """What N machines like this one, sharing one PostgreSQL gradebook, would take.

    The model. Each machine gets a disjoint 1/N of the class and runs ``cores`` sandboxes at a
    time; its main thread judges and writes one student at a time (one gradebook
    transaction each). So a machine's time is its setup (release, the solution's reference
    run: paid on every machine) plus the largest of:

    * its sandboxes' work, sum(run seconds) / (N * cores) (a balanced split);
    * its main thread's work, sum(judge + write seconds) / N (serial per machine);
    * the slowest single submission (a notebook killed at its time limit): no split helps.

    The gradebook: the N main threads write concurrently, one short transaction per student
    on different rows, which PostgreSQL runs side by side; the model takes the measured
    seconds per write (here SQLite) as the cost on the server too, so it only binds when
    N * (write seconds) approaches the time between two students on a machine.
    """
    run = [r.get("seconds", 0.0) for r in records.values()]
    main = [sum(v for k, v in (r.get("timings") or {}).items()
                if k in ("Judge", "Redact", "WriteAutograded", "WriteGradebook",
                         "WriteVerdictRecord")) for r in records.values()]
    writes = [(r.get("timings") or {}).get("WriteGradebook", 0.0) for r in records.values()]
    n = len(records)
    out = []
    for m in machines:
        bounds = {"sandboxes": sum(run) / (m * cores), "main thread": sum(main) / m,
                  "slowest submission": max(run, default=0.0)}
        limit = max(bounds, key=bounds.get)
        wall = setup_seconds + bounds[limit]
        out.append({"machines": m, "seconds": round(wall, 1),
                    "per_minute": round(60 * n / wall, 1) if wall else None,
                    "bound_by": limit,
                    "db_writes_per_second": round(n / wall, 2) if wall else None})
    return out, {"run_seconds_mean": statistics.mean(run) if run else 0.0,
                 "run_seconds_max": max(run, default=0.0),
                 "main_seconds_mean": statistics.mean(main) if main else 0.0,
                 "gradebook_write_seconds_mean": statistics.mean(writes) if writes else 0.0}


def bench_set(base, ps, args):
    root = make_course(base / ps, ps)
    incoming = base / ps / "incoming"
    table = make_class(root, ps, args.students, incoming, seed=args.seed)
    kinds = {}
    for kind, _, _ in table.values():
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"\n{ps}: {args.students} submissions: "
          + ", ".join(f"{c} {k}" for k, c in sorted(kinds.items())))
    cmd = [sys.executable, "-m", "instructor", "--root", str(root), "autograde", ps,
           "--submissions", str(incoming)]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    if args.timeout:
        cmd += ["--timeout", str(args.timeout)]
    seconds, peak, code, out = measure(cmd, REPO)
    print(f"  autograde: {seconds:.1f} s ({60 * args.students / seconds:.1f} submissions per "
          f"minute), peak {peak / 2**20:.0f} MiB, exit {code}")
    if code not in (0, 1):
        print(out[-3000:])
    subprocess.run([sys.executable, "-m", "instructor", "--root", str(root), "grades"],
                   cwd=REPO, env=ENV, check=True, stdout=subprocess.DEVNULL)
    report_start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "instructor", "--root", str(root), "report", ps],
                   cwd=REPO, env=ENV, check=True, stdout=subprocess.DEVNULL)
    report_seconds = time.perf_counter() - report_start
    from nbformat import read

    tests = [c for c in read(root / "solutions" / ps / f"{ps}.ipynb", as_version=4).cells
             if c.metadata.get("nbgrader", {}).get("grade")]
    points = float(sum(c.metadata["nbgrader"].get("points", 0) for c in tests))
    problems = check_class(root, ps, table, out, points)
    records = _records(root, ps)
    cores = args.workers or os.cpu_count() or 1
    # The model's fixed part, calibrated so that it reproduces this run at N=1: what the
    # students' runs and the main thread do not explain (the import, the grader's start, the
    # solution's reference run, the last worker finishing alone).
    at_one, _ = projection(records, 0.0, cores, machines=(1,))
    setup = max(0.0, seconds - at_one[0]["seconds"])
    table_n, parts = projection(records, setup, cores)
    print(f"  nothing lost: {'yes' if not problems else 'NO'}"
          + "".join(f"\n    {p}" for p in problems[:20]))
    print(f"  sandbox seconds per submission: mean {parts['run_seconds_mean']:.2f}, max "
          f"{parts['run_seconds_max']:.1f}; main thread per submission "
          f"{parts['main_seconds_mean'] * 1000:.0f} ms (gradebook write "
          f"{parts['gradebook_write_seconds_mean'] * 1000:.0f} ms); setup {setup:.1f} s; "
          f"report {report_seconds:.1f} s")
    print("  projected, N machines like this one sharing a PostgreSQL gradebook:")
    for row in table_n:
        print(f"    N={row['machines']:>2}: {row['seconds']:8.1f} s, {row['per_minute']:7.1f} "
              f"per minute (bound by {row['bound_by']})")
    return {"problem_set": ps, "students": args.students, "kinds": kinds,
            "seconds": round(seconds, 1), "per_minute": round(60 * args.students / seconds, 2),
            "peak_mib": round(peak / 2**20), "exit": code, "nothing_lost": not problems,
            "problems": problems[:50], "report_seconds": round(report_seconds, 1),
            "setup_seconds": round(setup, 1),
            **{k: round(v, 4) for k, v in parts.items()}, "projection": table_n}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ps", nargs="+", default=list(SETS))
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--workers", type=int, default=None,
                        help="sandboxes at once (default: the number of cores)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per cell (default: nbgrader_config.py's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS), help="where the JSON results go")
    args = parser.parse_args()
    if args.students < 1:
        parser.error(f"--students {args.students}: at least one")
    print(f"{os.cpu_count()} cores; a class of {args.students} per set; "
          f"{args.workers or os.cpu_count()} sandboxes at once")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-class-") as tmp:
        for ps in args.ps:
            results.append(bench_set(Path(tmp), ps, args))
    Path(args.out).write_text(json.dumps({
        "machine": platform.platform(), "cores": os.cpu_count(),
        "workers": args.workers or os.cpu_count(), "timeout": args.timeout,
        "mix": MIX, "sets": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
