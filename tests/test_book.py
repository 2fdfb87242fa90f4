"""The book builds from clean, warning-free, with every chapter executed.

The build runs on a copy of the book's sources in a temporary folder, so it starts without a
Jupyter cache (every notebook is executed) and leaves the developer's ``_build`` alone. It takes
about a minute. course_lib itself is imported from the editable install in the virtualenv.
"""

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
    "02_the_batchnorm_transform": {"figures": 1},
    "03_batchnorm_in_keras_and_cnns": {"figures": 2},
    "04_placement": {"figures": 1},
    "05_training_vs_inference": {"figures": 2},
    "06_why_it_helps": {"figures": 6},
    "07_limits": {"figures": 3},
    "08_alternatives": {"figures": 1},
    "09_reproducing_figure_1": {"figures": 3},
    "10_claims_ledger": {"figures": 1},
    "appendix_benchmarks": {"figures": 0},
}


def build_book(tmp_path):
    """Copy the book sources to ``tmp_path`` and build them as CI does; return the HTML folder."""
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
    result = subprocess.run(
        [str(JUPYTER_BOOK), "build", str(book), "-n", "-W", "--keep-going"],
        env=env, capture_output=True, text=True, timeout=1500,  # ~7 min alone; make test runs beside it
    )
    elapsed = time.perf_counter() - start
    report = [f"jupyter-book build from clean: {elapsed:.1f} s"]
    report += ["  " + line.rsplit("/", 1)[-1] for line in result.stdout.splitlines()
               if "Executed notebook in" in line]
    print("\n" + "\n".join(report))
    artifacts = ROOT / "_build" / "artifacts"  # gitignored; kept after the test for the report
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "book_build_times.txt").write_text("\n".join(report) + "\n")
    assert result.returncode == 0, (
        f"jupyter-book build failed (exit {result.returncode}); warnings are errors (-W).\n"
        f"--- stdout (tail) ---\n{result.stdout[-6000:]}\n--- stderr (tail) ---\n{result.stderr[-6000:]}"
    )
    return book / "_build" / "html"


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
        images = soup.select("div.cell_output img")
        assert len(images) >= expect["figures"], f"{name}: {len(images)} figures in the outputs"
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
    # shows a verdict pasted (cross-page glue) from the chapter that measured it.
    verdicts = ("holds", "holds with caveats", "does not hold")
    for name in ("06_why_it_helps", "07_limits", "08_alternatives"):
        _, soup = _outputs(_page(built_book, name))
        summary = [row.select("td")[-1].get_text(strip=True)
                   for row in soup.select("div.cell_output table tbody tr")]
        assert summary and all(v in verdicts for v in summary), (name, summary)
    _, soup = _outputs(_page(built_book, "10_claims_ledger"))
    ledger = [row.select("td")[-1].get_text(strip=True) for row in soup.select("table tbody tr")]
    assert len(ledger) == 13 and all(v in verdicts for v in ledger), ledger

    bibliography = (built_book / "chapters" / "bibliography.html").read_text(encoding="utf-8")
    for title in ["Batch normalization: accelerating", "How does batch normalization help",
                  "Group normalization", "Layer normalization"]:
        assert title.lower() in bibliography.lower(), title


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
    from bs4 import BeautifulSoup

    import site_browser

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
