"""The book builds from clean, warning-free, with every chapter executed.

The build runs on a copy of the book's sources in a temporary folder, so it starts without a
Jupyter cache (every notebook is executed) and leaves the developer's ``_build`` alone. It runs
``make book``'s two steps: ``scripts/execute_chapters.py`` executes the chapters, one per core,
into the copy's cache, and ``jupyter-book build -W`` renders them. It takes several minutes.
course_lib itself is imported from the editable install in the virtualenv.

The claims ledger's guard (issue 14) is here too: for every row of the ledger,
``test_ledger_row_follows_the_protocol`` re-derives the verdict from the per-seed record its
chapter glued (``course_lib.evidence.check_record``) and checks that the ledger shows it.
``test_ledger_guard_on_a_small_executed_notebook`` tests the same functions without a build.
"""

import ast
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
JUPYTER_BOOK = pathlib.Path(sys.executable).with_name("jupyter-book")
EXECUTE_CHAPTERS = ROOT / "scripts" / "execute_chapters.py"

# What the book is built from: the configuration, the pages, and the files the pages include
# (``literalinclude`` from course_lib/). A page that reads another part of the repository needs
# it added here; the build then fails in this test first, not in CI.
BOOK_SOURCES = ["_config.yml", "_toc.yml", "intro.md", "references.bib", "chapters", "course_lib",
                "_ext", "benchmarks", "exercises"]
IGNORE_PATTERNS = shutil.ignore_patterns(
    "_build", ".jupyter_cache", ".ipynb_checkpoints", "__pycache__", "*.egg-info"
)


def _ignore(folder, names):
    """Skip caches, and sockets or pipes that a running kernel may have left (uncopyable)."""
    special = {n for n in names if not (os.path.isfile(os.path.join(folder, n))
                                        or os.path.isdir(os.path.join(folder, n)))}
    return set(IGNORE_PATTERNS(folder, names)) | special


CHAPTERS = {
    "01_internal_covariate_shift": {"figures": 2},
    "02_the_batchnorm_transform": {"figures": 2},
    "03_batchnorm_in_keras_and_cnns": {"figures": 3},
    "04_placement": {"figures": 1},
    "05_training_vs_inference": {"figures": 2},
    "06_why_it_helps": {"figures": 6},
    "07_limits": {"figures": 3},
    "08_alternatives": {"figures": 2},
    "09_reproducing_figure_1": {"figures": 3},
    "11_residual_networks_and_weight_decay": {"figures": 3},
    "12_transformers": {"figures": 2},
    "10_claims_ledger": {"figures": 1},
    "appendix_benchmarks": {"figures": 0},
}


def build_book(tmp_path):
    """Copy the book sources to ``tmp_path`` and build them as ``make book`` does; return the
    HTML folder."""
    book = tmp_path / "src"
    book.mkdir()
    for name in BOOK_SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, book / name, ignore=_ignore)
        else:
            shutil.copy2(source, book / name)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "0"}
    start = time.perf_counter()
    # As `make book`: the chapters executed into the copy's cache, one per core, then the build.
    executed = subprocess.run(
        [sys.executable, str(EXECUTE_CHAPTERS), "--root", str(book)],
        env=env, capture_output=True, text=True, timeout=1500,
    )
    result = subprocess.run(
        [str(JUPYTER_BOOK), "build", str(book), "-n", "-W", "--keep-going"],
        env=env, capture_output=True, text=True, timeout=1500,  # renders; executes only a chapter step 1 could not
    )
    elapsed = time.perf_counter() - start
    report = [f"make book's two steps from clean: {elapsed:.1f} s"]
    report += ["  " + line.strip() for line in executed.stdout.splitlines()]
    report += ["  " + line.rsplit("/", 1)[-1] for line in result.stdout.splitlines()
               if "Executed notebook in" in line]  # a chapter the first step could not cache
    print("\n" + "\n".join(report))
    artifacts = ROOT / "_build" / "artifacts"  # gitignored; kept after the test for the report
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "book_build_times.txt").write_text("\n".join(report) + "\n")
    assert result.returncode == 0, (
        f"jupyter-book build failed (exit {result.returncode}); warnings are errors (-W).\n"
        f"--- stdout (tail) ---\n{result.stdout[-6000:]}\n--- stderr (tail) ---\n{result.stderr[-6000:]}"
    )
    return book / "_build" / "html"


# --- The ledger's guard: every row's verdict comes from the shared protocol (issue 14) ----------

# Row of the claims ledger -> the chapter that measured it and its glue_comparison key (the keys
# the chapters agreed on; each key K is glued as K_verdict, K_measured, K_rule and K_record).
LEDGER_ROWS = [
    ("1a", "09_reproducing_figure_1", "ch09_faster"),
    ("1b", "09_reproducing_figure_1", "ch09_final"),
    ("2", "06_why_it_helps", "ch06_lr"),
    ("3", "06_why_it_helps", "ch06_init"),
    ("4", "06_why_it_helps", "ch06_regularise"),
    ("5a", "06_why_it_helps", "ch06_vanishing"),
    ("5b", "06_why_it_helps", "ch06_exploding"),
    ("6", "07_limits", "ch07_small_batch"),
    ("7", "08_alternatives", "ch08_small_batch_cnn"),
    ("8", "07_limits", "ch07_rnn"),
    ("9", "04_placement", "ch04_after"),
    ("10", "07_limits", "ch07_memory"),
    ("11", "07_limits", "ch07_compute"),
    ("12", "05_training_vs_inference", "ch05_transfer"),
    ("13", "08_alternatives", "ch08_adabn"),
    ("14", "06_why_it_helps", "ch06_ics"),
    ("15", "11_residual_networks_and_weight_decay", "ch11_zero_gamma"),
    ("16", "11_residual_networks_and_weight_decay", "ch11_weight_decay"),
    ("17", "11_residual_networks_and_weight_decay", "ch11_agc"),
    ("18", "11_residual_networks_and_weight_decay", "ch11_tent"),
    ("19", "12_transformers", "ch12_prenorm"),
    ("20a", "12_transformers", "ch12_warmup"),
    ("20b", "12_transformers", "ch12_warmup_high"),
    ("21a", "12_transformers", "ch12_prenorm_no_warmup"),
    ("21b", "12_transformers", "ch12_prenorm_no_warmup_high"),
    ("22", "12_transformers", "ch12_rmsnorm"),
    ("23", "12_transformers", "ch12_rmsnorm_speed"),
]


def glued_texts(path):
    """Every value glued by a notebook: ``{name: text/plain}``.

    Reads either an executed notebook (the glue outputs carry ``{"scrapbook": {"name": ...,
    "mime_prefix": ...}}`` metadata, their MIME types prefixed with ``mime_prefix``), or the
    ``<notebook>.glue.json`` that myst-nb 1.x writes next to the executed notebook in
    ``<build>/jupyter_execute/``. myst-nb takes the ``display=False`` glue outputs *out* of the
    executed notebook it saves there, so in a book build the ``.glue.json`` is the only record.
    """
    path = pathlib.Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if path.name.endswith(".glue.json"):
        outputs = list(data.values())
    else:
        outputs = [o for cell in data["cells"] if cell["cell_type"] == "code"
                   for o in cell.get("outputs", [])]
    glued = {}
    for output in outputs:
        scrapbook = output.get("metadata", {}).get("scrapbook")
        if not scrapbook:
            continue
        prefix = scrapbook.get("mime_prefix", "")
        mimes = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in output["data"].items()}
        if "text/plain" in mimes:
            text = mimes["text/plain"]
            glued[scrapbook["name"]] = "".join(text) if isinstance(text, list) else text
    return glued


def executed_glue(html_dir, notebook):
    """The glued values of ``chapters/<notebook>`` in a built book (``html_dir`` is its HTML)."""
    folder = pathlib.Path(html_dir).parent / "jupyter_execute" / "chapters"
    glue_file = folder / f"{notebook}.glue.json"
    return glued_texts(glue_file if glue_file.exists() else folder / f"{notebook}.ipynb")


def check_ledger_key(glued, key):
    """Re-derive the verdict glued under ``key`` from its record; return it.

    ``key_record`` must pass ``course_lib.evidence.check_record`` (the shared protocol's id, at
    least ``MIN_SEEDS`` seeds, a rule, mean, interval and verdict that follow from the per-seed
    values), and ``key_verdict``, ``key_measured`` and ``key_rule`` must be what that record
    implies. Raises AssertionError, or the ValueError of ``check_record``.
    """
    from course_lib import evidence

    missing = [f"{key}_{part}" for part in ("verdict", "measured", "rule", "record")
               if f"{key}_{part}" not in glued]
    assert not missing, f"{key}: not glued by evidence.glue_comparison: {missing}"
    record = evidence.record_from_glue(glued[f"{key}_record"])
    redone = evidence.check_record(record)
    assert record["protocol"] == evidence.PROTOCOL and redone.n >= evidence.MIN_SEEDS, record
    shown = {part: ast.literal_eval(glued[f"{key}_{part}"]) for part in ("verdict", "measured", "rule")}
    assert shown == {"verdict": redone.verdict, "measured": redone.describe(), "rule": redone.rule}, (
        f"{key}: the glued strings are not those of its record: {shown}")
    return redone.verdict


def ledger_verdicts(page):
    """``{row: verdict}`` of the claims ledger's table (first cell: the row, last: the verdict)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page, "html.parser")
    for table in soup.select("table"):
        header = [th.get_text(strip=True) for th in table.select("thead th")]
        if header and header[0] == "#" and header[-1] == "verdict":
            return {cells[0].get_text(strip=True): cells[-1].get_text(strip=True)
                    for cells in (row.select("td") for row in table.select("tbody tr"))}
    raise AssertionError("the claims ledger's table (first column '#', last 'verdict') is missing")


def _page(html_dir, name):
    path = html_dir / "chapters" / f"{name}.html"
    assert path.exists(), f"{path} was not built"
    return path.read_text(encoding="utf-8")


def _outputs(page):
    """The text of every cell output block of a page."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(page, "html.parser")
    return [div.get_text() for div in soup.select("div.cell_output")], soup


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """The book, built once for the tests of this file (xdist --dist loadfile keeps them together)."""
    return build_book(tmp_path_factory.mktemp("book"))


@pytest.mark.slow
@pytest.mark.xdist_group("book")
def test_book_builds_warning_free_with_executed_chapters(built_book):
    assert (built_book / "index.html").exists()
    assert (built_book / "intro.html").exists()
    # Every page's printed outputs, kept for comparing two clean builds (determinism).
    printed = ROOT / "_build" / "artifacts" / "book_outputs"
    printed.mkdir(parents=True, exist_ok=True)
    for name, expect in CHAPTERS.items():
        page = _page(built_book, name)
        outputs, soup = _outputs(page)
        (printed / f"{name}.txt").write_text("\n".join(outputs), encoding="utf-8")
        assert outputs, f"{name}: no cell outputs; was the notebook executed?"
        # A figure is in a cell's output, or glued (myst-nb) into a numbered figure of the text.
        images = {id(img) for img in soup.select("div.cell_output img, figure img, div.figure img")}
        assert len(images) >= expect["figures"], f"{name}: {len(images)} figures in the page"
        for text in outputs:
            assert "Traceback" not in text and "Error" not in text, f"{name}: error output:\n{text}"
        assert not soup.select("div.output.stderr"), f"{name}: stderr output in the page"
        # glue roles that did not resolve would be left as literal text.
        assert "{glue" not in soup.get_text(), f"{name}: unresolved glue reference"

    # The measured numbers are printed.
    outputs, _ = _outputs(_page(built_book, "01_internal_covariate_shift"))
    text = "\n".join(outputs)
    accuracies = dict(re.findall(r"(without BN|with BN)\s*: test accuracy ([0-9.]+)", text))
    assert set(accuracies) == {"without BN", "with BN"}, text
    assert all(0.5 < float(a) <= 1.0 for a in accuracies.values()), accuracies

    outputs, _ = _outputs(_page(built_book, "02_the_batchnorm_transform"))
    text = "\n".join(outputs)
    match = re.search(r"largest relative error: ([0-9.e+-]+)", text)
    assert match, "the gradient check's relative error is not printed"
    assert float(match.group(1)) <= 1e-6

    # BN in practice: the measured verdicts are printed, and the search term of the site's
    # browser test is on the training-vs-inference page.
    outputs, _ = _outputs(_page(built_book, "04_placement"))
    assert re.search(r"verdict: .+", "\n".join(outputs)), "the placement verdict is not printed"
    outputs, soup = _outputs(_page(built_book, "05_training_vs_inference"))
    assert "running mean" in soup.get_text()
    assert "after recalibration" in "\n".join(outputs)
    outputs, soup = _outputs(_page(built_book, "09_reproducing_figure_1"))
    text = "\n".join(outputs)
    assert re.search(r"\d+ steps = \d+% of the paper's 50000", text), "the fraction is not printed"
    assert "baseline's final accuracy" in text
    assert (built_book / "chapters" / "notation.html").exists()

    # Evidence: each chapter prints its summary of verdicts, and every row of the claims ledger
    # shows a verdict pasted (cross-page glue) from the chapter that measured it; the verdicts
    # themselves are re-derived by test_ledger_row_follows_the_protocol below.
    from course_lib import evidence

    for name in ("06_why_it_helps", "07_limits", "08_alternatives"):
        _, soup = _outputs(_page(built_book, name))
        summary = [row.select("td")[-1].get_text(strip=True)
                   for row in soup.select("div.cell_output table tbody tr")]
        assert summary and all(v in evidence.VERDICTS for v in summary), (name, summary)
    ledger = ledger_verdicts(_page(built_book, "10_claims_ledger"))
    assert list(ledger) == [row for row, _, _ in LEDGER_ROWS], ledger
    assert all(v in evidence.VERDICTS for v in ledger.values()), ledger

    bibliography = (built_book / "chapters" / "bibliography.html").read_text(encoding="utf-8")
    for title in ["Batch normalization: accelerating", "How does batch normalization help",
                  "Group normalization", "Layer normalization"]:
        assert title.lower() in bibliography.lower(), title


@pytest.mark.slow
@pytest.mark.xdist_group("book")
@pytest.mark.parametrize("row, notebook, key", LEDGER_ROWS, ids=[r for r, _, _ in LEDGER_ROWS])
def test_ledger_row_follows_the_protocol(built_book, row, notebook, key):
    """Each ledger row: its verdict re-derived from its chapter's per-seed record, and shown."""
    verdict = check_ledger_key(executed_glue(built_book, notebook), key)
    shown = ledger_verdicts(_page(built_book, "10_claims_ledger"))
    assert shown.get(row) == verdict, f"ledger row {row} shows {shown.get(row)!r}, {key}: {verdict!r}"


def test_ledger_guard_on_a_small_executed_notebook(tmp_path):
    """The guard's parsing and checks, on a 3-cell notebook executed here (no book build)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("myst_nb")
    from course_lib import evidence

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    notebook.cells = [
        nbformat.v4.new_code_cell("from myst_nb import glue\nfrom course_lib import evidence"),
        nbformat.v4.new_code_cell(
            "plan = evidence.Plan(claim='BN helps', quantity='accuracy, BN − none', threshold=0.0,"
            " unit='points', scale=100)\n"
            "result = plan.compare([0.93, 0.94, 0.95, 0.92, 0.94], [0.91, 0.93, 0.93, 0.91, 0.92],"
            " seeds=range(5))\n"
            "evidence.glue_comparison(glue, 'ch99_claim', result)"),
        nbformat.v4.new_code_cell("glue('ch99_number', 0.5, display=False)\nprint('done')"),
    ]
    nbclient.NotebookClient(notebook, timeout=120, resources={"metadata": {"path": str(ROOT)}}).execute()
    path = tmp_path / "small.ipynb"
    nbformat.write(notebook, path)

    glued = glued_texts(path)
    assert set(glued) == {"ch99_claim_verdict", "ch99_claim_measured", "ch99_claim_rule",
                          "ch99_claim_record", "ch99_number"}
    assert check_ledger_key(glued, "ch99_claim") == "holds"
    # The same values as myst-nb's .glue.json of a book build (prefix stripped, outputs removed).
    glue_json = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            meta = output.get("metadata", {}).get("scrapbook")
            if meta:
                n = len(meta["mime_prefix"])
                glue_json[meta["name"]] = {**output, "data": {k[n:]: v for k, v in output["data"].items()}}
    (tmp_path / "small.glue.json").write_text(json.dumps(glue_json), encoding="utf-8")
    assert glued_texts(tmp_path / "small.glue.json") == glued

    # What the guard must refuse.
    with pytest.raises(AssertionError, match="not glued"):
        check_ledger_key(glued, "ch99_other")
    with pytest.raises(AssertionError, match="glued strings"):
        check_ledger_key({**glued, "ch99_claim_verdict": repr("inconclusive")}, "ch99_claim")
    record = evidence.record_from_glue(glued["ch99_claim_record"])
    for bad, match in [({**record, "verdict": "inconclusive"}, "verdict"),
                       ({**record, "a": record["a"][:4], "b": record["b"][:4], "seeds": [0, 1, 2, 3],
                         "n": 4}, "at least 5 seeds"),
                       ({**record, "protocol": "my-own-rule"}, "protocol"),
                       ({**record, "threshold": -0.05}, "rule")]:
        with pytest.raises(ValueError, match=match):
            check_ledger_key({**glued, "ch99_claim_record": repr(json.dumps(bad))}, "ch99_claim")

    page = ("<table><thead><tr><th>#</th><th>claim</th><th>verdict</th></tr></thead><tbody>"
            "<tr><td>1a</td><td>BN helps</td><td><strong>holds</strong></td></tr>"
            "<tr><td>14</td><td>ICS</td><td><strong>does not hold</strong></td></tr></tbody></table>")
    assert ledger_verdicts(page) == {"1a": "holds", "14": "does not hold"}
    with pytest.raises(AssertionError, match="missing"):
        ledger_verdicts("<p>no table</p>")


@pytest.mark.slow
def test_site_in_a_browser(built_book, tmp_path):
    """Every page in Chromium, offline, at desktop and phone widths (see tests/site_browser.py)."""
    import site_browser

    if not site_browser.browser_available():
        if os.environ.get("CI"):
            pytest.fail(site_browser.MISSING_BROWSER)
        pytest.skip(site_browser.MISSING_BROWSER)
    report, problems = site_browser.check_site(built_book, ROOT, tmp_path, ROOT / "_build" / "artifacts")
    print(f"\nbrowser: {report['pages_checked']} pages checked at 1280 and 390 px, "
          f"{report['console_errors']} console errors; search 'running mean' -> "
          f"{report['search_running_mean'][:3]}")
    for name, shot in report["screenshots"].items():
        print(f"  screenshot _build/artifacts/screenshots/{name}: {shot}")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_colab_links_in_the_built_pages(built_book):
    """Every runnable page links to Colab as _config.yml says, and no other page does.

    The same check runs in the browser test; this one needs no browser.
    """
    import site_browser
    from bs4 import BeautifulSoup

    expected = site_browser.expected_colab_links(ROOT)
    assert expected
    for page in sorted(built_book.rglob("*.html")):
        docname = page.relative_to(built_book).with_suffix("").as_posix()
        if docname.split("/")[0] in ("_static", "_sources", "_images", "reports"):
            continue
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        links = [a["href"] for a in soup.select('a[href*="colab.research.google.com"]')]
        assert links == ([expected[docname]] if docname in expected else []), (docname, links)


@pytest.mark.slow
def test_problem_sets_are_in_the_site_as_released(built_book):
    """Each problem set has a page, made from the student release and never executed."""
    sets = sorted(p.name for p in (ROOT / "exercises").iterdir() if p.is_dir())
    for ps in sets:
        page = built_book / "exercises" / ps / f"{ps}.html"
        assert page.exists(), f"{ps} is not in the site"
        outputs, soup = _outputs(page.read_text(encoding="utf-8"))
        assert not outputs, f"{ps} was executed by the build: {outputs[:1]}"
        assert "YOUR CODE HERE" in soup.get_text(), f"{ps}: the page is not the student release"
        assert "BEGIN SOLUTION" not in soup.get_text()
