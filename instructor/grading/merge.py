"""Merging a submission into the plan: the cells to run, rebuilt from the instructor's source.

Test cells and read-only cells always come from the source (hidden tests included); each
answer cell comes from the student by its nbgrader ``grade_id`` or, where the metadata was
stripped (Colab, VS Code), by the names it defines; cells the student added run where they
were; outputs are dropped.
"""

from dataclasses import dataclass, field

from instructor.grading.plan import defines
from instructor.grading.plan import gid as _gid
from instructor.grading.plan import squash as _squash


@dataclass
class Merged:
    """The notebook to run for one submission."""

    run: list  # [{"index", "source", "what"}] in order
    test_index: dict  # test grade id -> index in run
    answers: dict  # answer grade id -> the student's source ("" if missing)
    extras: dict  # canonical index (or -1) -> [sources of the student's own cells after it]
    notes: list = field(default_factory=list)


def merge(plan, nb):
    """The cells to run for submission ``nb`` (a NotebookNode, or None for no notebook)."""
    notes = []
    cells = list(nb.cells) if nb is not None else []
    role = [None] * len(cells)  # ("answer", canon) | ("instructor", canon) | ("extra",) | None
    answers = {}
    with_metadata = sum(1 for c in cells if _gid(c))
    duplicated = set()
    for i, cell in enumerate(cells):
        canon = plan.by_gid.get(_gid(cell))
        if canon is None:
            continue
        if canon.kind == "answer":
            if canon.gid in answers:
                duplicated.add(canon.gid)
                role[i] = ("extra",)
            else:
                answers[canon.gid] = cell
                role[i] = ("answer", canon)
        else:
            if any(r and r[0] == "instructor" and r[1] is canon for r in role[:i]):
                duplicated.add(canon.gid)
            role[i] = ("instructor", canon)
    for gid in sorted(duplicated):
        notes.append(f"duplicated grade id {gid}: the first cell is graded, the copies run as "
                     "the student's own cells" if plan.by_gid[gid].kind == "answer" else
                     f"duplicated grade id {gid}: the instructor's cell is run once")
    # answer cells without metadata: matched by the names they define
    matched = []
    for canon in plan.cells:
        if canon.kind != "answer" or canon.gid in answers or not canon.names:
            continue
        for i, cell in enumerate(cells):
            if role[i] is None and cell.cell_type == "code" and \
                    canon.names[0] in defines(cell.source):
                answers[canon.gid] = cell
                role[i] = ("answer", canon)
                matched.append(f"{canon.gid} (defines {canon.names[0]})")
                break
    if matched:
        why = ("nbgrader metadata missing (Colab, VS Code?)" if with_metadata == 0
               else "answer cells without their nbgrader metadata")
        notes.append(f"{why}: matched {len(matched)} answer cell(s) by content: "
                     + ", ".join(matched))
    # the instructor's cells, without metadata: recognised by their text
    texts = {}
    for canon in plan.cells:
        if canon.kind != "answer":
            texts.setdefault(_squash(canon.cell.source), canon)
            released = next((c for c in plan.release.cells if _gid(c) == canon.gid), None)
            if released is not None:
                texts.setdefault(_squash(released.source), canon)
    for i, cell in enumerate(cells):
        if role[i] is None:
            canon = texts.get(_squash(cell.source))
            role[i] = ("instructor", canon) if canon is not None else ("extra",)
    # the student's own cells stay after the last graded or instructor cell that preceded them
    extras, anchor = {}, -1
    for i, cell in enumerate(cells):
        if role[i][0] == "extra":
            if cell.cell_type == "code" and cell.source.strip():
                extras.setdefault(anchor, []).append(cell.source)
        else:
            anchor = role[i][1].index
    run, test_index, answer_text = [], {}, {}

    def add(source, what):
        run.append({"index": len(run), "source": source, "what": what})

    for src in extras.get(-1, []):
        add(src, "a cell you added")
    for canon in plan.cells:
        if canon.kind == "answer":
            cell = answers.get(canon.gid)
            if cell is None:
                if nb is not None:
                    notes.append(f"answer cell {canon.gid} is missing: the released stub was run")
                answer_text[canon.gid] = ""
                if canon.cell.cell_type == "code":
                    add(canon.stub, f"answer cell {canon.gid} (missing)")
            elif cell.cell_type != "code" and canon.cell.cell_type == "code":
                notes.append(f"answer cell {canon.gid} is a {cell.cell_type} cell in the "
                             "submission: it was not run")
                answer_text[canon.gid] = cell.source
            else:
                answer_text[canon.gid] = cell.source
                if canon.cell.cell_type == "code":
                    add(cell.source, f"answer cell {canon.gid}")
        elif canon.kind in ("test", "code"):
            if canon.kind == "test":
                test_index[canon.gid] = len(run)
            add(canon.cell.source, f"{canon.kind} cell {canon.gid or canon.index}")
        for src in extras.get(canon.index, []):
            add(src, f"a cell you added after {canon.gid or canon.index}")
    return Merged(run, test_index, answer_text, extras, notes)
