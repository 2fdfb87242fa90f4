"""The class mistake report of one problem set, from the grader's verdict records alone.

``python -m instructor report PS`` (``make report PS=ps01``) reads
``_grading/cache/graded/<ps>/*.json`` (written by ``instructor.grading`` for each student it
graded) and runs nothing. It writes ``_grading/reports/<ps>/report.html`` (one page, its plots
embedded as PNG: no network needed to read it) and ``report.csv``. Per part of the set (the
grade id's prefix: A, B, ...):

* the distribution of the part's scores over the class;
* the share of the class whose verdicts name each catalogued mistake (the checks' "Most likely
  mistake (<name>)", or a wrong multiple-choice answer);
* the most common failures that name no mistake, grouped by their first line with the numbers
  and the case taken out ("`f` raised ValueError: operands could not be broadcast together
  with shapes (N,N) (N,)").

Shares are of the students whose notebook was graded (``graded`` or ``graded_with_errors``);
students without a notebook are counted apart.
"""

import base64
import csv
import datetime
import html
import io
import os
import re
import statistics
from collections import Counter, OrderedDict

from instructor.course import CourseError

SUBMITTED = ("graded", "graded_with_errors")
TOP_FAILURES = 8
CSV_COLUMNS = ("part", "kind", "label", "students", "share", "cells")


def failure_kind(message):
    """A failure's message without what differs between students: its first line, the case
    ("on hidden case 2 (...)") and every number taken out."""
    first = next((line.strip() for line in (message or "").splitlines() if line.strip()), "")
    first = re.sub(r"\s*on (visible|hidden) case \d+( \(.*\))?\.?$", "", first)
    first = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", first)
    return first[:160] or "(no message)"


def _ranked(found, n):
    """[(label, students, share, cells)] from {label: {student: {cells}}}, most common first."""
    out = []
    for label, who in found.items():
        cells = sorted(set().union(*who.values()))
        out.append((label, len(who), len(who) / n if n else 0.0, cells))
    return sorted(out, key=lambda row: (-row[1], row[0]))


def summarize(records):
    """The report's content, computed from verdict records.

    Parameters
    ----------
    records : dict
        {student: verdict record} (``VerdictRecords.all()``).

    Returns
    -------
    dict
        ``students`` (graded), ``statuses`` (Counter), ``totals`` ({student: score}),
        ``max``, and ``parts``: {part: {"max", "cells", "scores" {student: score},
        "mistakes" [(name, students, share, cells)], "failures" [(kind, students, share,
        cells, example)]}}.
    """
    statuses = Counter(r.get("status", "graded") for r in records.values())
    graded = {s: r for s, r in records.items() if r.get("status", "graded") in SUBMITTED}
    parts = OrderedDict()
    for record in records.values():  # the parts and their cells, in the notebook's order
        for gid, verdict in (record.get("verdicts") or {}).items():
            part = parts.setdefault(verdict.get("part") or gid.split("_", 1)[0],
                                    {"cells": OrderedDict()})
            part["cells"].setdefault(gid, float(verdict.get("points", 0) or 0))
    n = len(graded)
    for part in parts.values():
        part["max"] = sum(part["cells"].values())
        part["scores"] = {}
        named, unnamed, examples = {}, {}, {}
        for student, record in graded.items():
            verdicts = record.get("verdicts") or {}
            part["scores"][student] = sum(float(verdicts.get(g, {}).get("score", 0) or 0)
                                          for g in part["cells"])
            for gid in part["cells"]:
                verdict = verdicts.get(gid)
                if not verdict or verdict.get("passed"):
                    continue
                mistake = verdict.get("mistake")
                if mistake:
                    named.setdefault(mistake, {}).setdefault(student, set()).add(gid)
                else:
                    kind = failure_kind(verdict.get("message", ""))
                    unnamed.setdefault(kind, {}).setdefault(student, set()).add(gid)
                    examples.setdefault(kind, verdict.get("message", ""))
        part["mistakes"] = _ranked(named, n)
        part["failures"] = [row + (examples[row[0]],) for row in _ranked(unnamed, n)][:TOP_FAILURES]
    totals = {s: sum(p["scores"][s] for p in parts.values()) for s in graded}
    return {"students": n, "statuses": statuses, "totals": totals,
            "max": sum(p["max"] for p in parts.values()), "parts": parts,
            "versions": sorted({str(r.get("version", "")) for r in records.values()}),
            "graded": sorted(str(r.get("graded", "")) for r in records.values())}


def _png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _distribution(ax, scores, top, title):
    counts = Counter(round(s, 6) for s in scores)
    values = sorted(set(counts) | {0.0, float(top)})
    ax.bar([f"{v:g}" for v in values], [counts.get(v, 0) for v in values], color="#4c72b0")
    ax.set_xlabel(f"score (of {top:g})")
    ax.set_ylabel("students")
    ax.set_title(title)
    ax.yaxis.get_major_locator().set_params(integer=True)


def plot_part(name, part):
    """One figure: the part's score distribution and, where there are any, the share of the
    class with each named mistake. Returns the PNG, base64."""
    from matplotlib.figure import Figure

    panels = 2 if part["mistakes"] else 1
    figure = Figure(figsize=(5.5 * panels, 3.2))
    axes = figure.subplots(1, panels, squeeze=False)[0]
    _distribution(axes[0], list(part["scores"].values()), part["max"], f"Part {name}: scores")
    if part["mistakes"]:
        shown = part["mistakes"][:10][::-1]
        axes[1].barh([label[:40] for label, *_ in shown], [100 * share for _, _, share, _ in shown],
                     color="#dd8452")
        axes[1].set_xlabel("% of the graded class")
        axes[1].set_xlim(0, 100)
        axes[1].set_title(f"Part {name}: named mistakes")
    figure.tight_layout()
    return _png(figure)


def plot_totals(summary):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.2))
    _distribution(figure.subplots(), list(summary["totals"].values()), summary["max"],
                  "Total scores")
    figure.tight_layout()
    return _png(figure)


def _pct(share):
    return f"{100 * share:.0f}%"


def write_csv(summary, path):
    """report.csv: per part, the score distribution, the named mistakes and the top unnamed
    failures (columns :data:`CSV_COLUMNS`)."""
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(CSV_COLUMNS)
        n = summary["students"]
        groups = [("total", summary["totals"], summary["max"], [], [])] + [
            (name, p["scores"], p["max"], p["mistakes"], p["failures"])
            for name, p in summary["parts"].items()]
        for name, scores, top, mistakes, failures in groups:
            for value, count in sorted(Counter(round(s, 6) for s in scores.values()).items()):
                out.writerow([name, "score", f"{value:g}/{top:g}", count,
                              f"{count / n:.4f}" if n else "", ""])
            for label, count, share, cells in mistakes:
                out.writerow([name, "mistake", label, count, f"{share:.4f}", " ".join(cells)])
            for label, count, share, cells, _ in failures:
                out.writerow([name, "unnamed failure", label, count, f"{share:.4f}",
                              " ".join(cells)])


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;
padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}td.n{text-align:right}
img{max-width:100%}pre{white-space:pre-wrap;margin:0;font-size:.85em}.muted{color:#777}"""


def write_html(summary, ps, path):
    """report.html: one self-contained page (inline style, embedded PNG plots)."""
    esc = html.escape
    n = summary["students"]
    statuses = ", ".join(f"{count} {status.replace('_', ' ')}"
                         for status, count in sorted(summary["statuses"].items()))
    totals = list(summary["totals"].values())
    body = [f"<h1>Class report: {esc(ps)}</h1>",
            f"<p>{n} graded notebook(s) ({esc(statuses)}). Generated "
            f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} from the grader's verdict "
            f"records (grader version {esc(', '.join(summary['versions']))}); nothing was "
            "re-run. Shares are of the graded notebooks.</p>"]
    if totals:
        body.append(f"<p>Total: mean {statistics.mean(totals):.2f}, median "
                    f"{statistics.median(totals):g}, min {min(totals):g}, max {max(totals):g} "
                    f"of {summary['max']:g}.</p>")
        body.append(f'<img alt="total scores" src="data:image/png;base64,{plot_totals(summary)}">')
    for name, part in summary["parts"].items():
        scores = list(part["scores"].values())
        full = sum(1 for s in scores if s >= part["max"])
        body.append(f"<h2>Part {esc(name)} ({part['max']:g} points: "
                    f"{esc(', '.join(part['cells']))})</h2>")
        if scores:
            body.append(f"<p>Mean {statistics.mean(scores):.2f} of {part['max']:g}; full marks: "
                        f"{full} ({_pct(full / n)}).</p>")
        body.append(f'<img alt="part {esc(name)}" '
                    f'src="data:image/png;base64,{plot_part(name, part)}">')
        body.append("<h3>Named mistakes</h3>")
        if part["mistakes"]:
            body.append("<table><tr><th>mistake</th><th>students</th><th>share</th>"
                        "<th>test cells</th></tr>")
            for label, count, share, cells in part["mistakes"]:
                body.append(f"<tr><td>{esc(label)}</td><td class=n>{count}</td>"
                            f"<td class=n>{_pct(share)}</td><td>{esc(', '.join(cells))}</td></tr>")
            body.append("</table>")
        else:
            body.append('<p class="muted">No verdict in this part names a catalogued mistake.</p>')
        body.append("<h3>Most common failures that name no mistake</h3>")
        if part["failures"]:
            body.append("<table><tr><th>failure (first line; numbers as N)</th><th>students</th>"
                        "<th>share</th><th>test cells</th><th>an example</th></tr>")
            for label, count, share, cells, example in part["failures"]:
                body.append(f"<tr><td>{esc(label)}</td><td class=n>{count}</td>"
                            f"<td class=n>{_pct(share)}</td><td>{esc(', '.join(cells))}</td>"
                            f"<td><pre>{esc(example[:600])}</pre></td></tr>")
            body.append("</table>")
        else:
            body.append('<p class="muted">None.</p>')
    page = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{esc(ps)}: class "
            f"report</title><style>{_STYLE}</style></head><body>{''.join(body)}</body></html>")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(page)


def write_report(course, ps):
    """Write ``_grading/reports/<ps>/report.html`` and ``report.csv``; returns their paths.

    Raises
    ------
    CourseError
        If there is no verdict record of ``ps`` (grade the class first).
    """
    from instructor.grading.record import VerdictRecords

    records = VerdictRecords(course, ps).all()
    if not records:
        raise CourseError(f"no verdict records of {ps} in "
                          f"{os.path.relpath(VerdictRecords(course, ps).folder, course.root)}/: "
                          f"grade the class first (make autograde PS={ps} SUBMISSIONS=...)")
    summary = summarize(records)
    folder = os.path.join(course.grading, "reports", ps)
    os.makedirs(folder, exist_ok=True)
    page, table = os.path.join(folder, "report.html"), os.path.join(folder, "report.csv")
    write_csv(summary, table)
    write_html(summary, ps, page)
    return page, table, summary
