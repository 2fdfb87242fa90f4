"""The built site in a real browser: Debian's Chromium, driven by Selenium and chromedriver.

Used by tests/test_book.py after it has built the book (one build for both tests). The site is
served on localhost by ``http.server``; Chromium resolves no other host
(``--host-resolver-rules``), so the site is checked as a student with no internet sees it, and
a page that needed a CDN would log a console error. Nothing is downloaded: Selenium is given
``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (apt packages ``chromium`` and
``chromium-driver``; ``make browser`` installs them when run as root).

Per page, at desktop (1280 px) and phone (390 px) widths: HTTP 200; no SEVERE console entry;
no request left localhost; every image loaded and has alt text; headings in order; with maths,
MathJax (the local copy) rendered it; on a notebook page meant to be run, the Colab link derived
from _config.yml; at phone width nothing but code blocks, maths and tables (each scrolling in
its own box) is wider than the screen. Screenshots go to ``_build/artifacts/screenshots``.
"""

import functools
import http.server
import json
import re
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import yaml

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DESKTOP = (1280, 900)
PHONE = (390, 844)
MISSING_BROWSER = (
    "Chromium and chromedriver are not installed (/usr/bin/chromium, /usr/bin/chromedriver): "
    "run `sudo make browser` (apt-get install chromium chromium-driver) to run the browser checks"
)


def browser_available():
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


# ---------------------------------------------------------------------------------------------
# What the pages should hold, from the configuration


def expected_colab_links(root):
    """{docname: Colab URL} for every page a student can run, derived from _config.yml/_toc.yml."""
    config = yaml.safe_load((root / "_config.yml").read_text())
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    repo = config["repository"]
    owner, name = repo["url"].rstrip("/").split("github.com/")[1].split("/")[:2]
    prefix = repo.get("path_to_book", "").strip("/")
    prefix = f"{prefix}/" if prefix else ""
    colab = config["launch_buttons"]["colab_url"].rstrip("/")
    excluded = set(config["sphinx"]["config"].get("colab_exclude", []))
    docnames = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return {
        doc: f"{colab}/github/{owner}/{name}/blob/{repo['branch']}/{prefix}{doc}.ipynb"
        for doc in docnames
        if (root / f"{doc}.ipynb").exists() and doc not in excluded
    }


# ---------------------------------------------------------------------------------------------
# Serving and driving


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a browser that closes a connection early (BrokenPipeError) is not a site error


class Site:
    """``_build/html`` served on an ephemeral localhost port, for the duration of a ``with``."""

    def __init__(self, html_dir):
        self.html_dir = Path(html_dir)

    def __enter__(self):
        handler = functools.partial(_Quiet, directory=str(self.html_dir))
        self.server = _Server(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/"
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def pages(self):
        skip = {"_static", "_sources", "_images"}
        return sorted(str(p.relative_to(self.html_dir)) for p in self.html_dir.rglob("*.html")
                      if not skip & set(p.relative_to(self.html_dir).parts))


def chromium(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--disable-extensions", "--hide-scrollbars",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 # offline: every host but localhost fails to resolve
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                 f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    return driver


def set_width(driver, size, mobile):
    width, height = size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


# JavaScript run in each page once it has loaded. MathJax typesets after DOMContentLoaded; its
# startup promise resolves when every formula is rendered.
_SETTLE = """
const done = arguments[arguments.length - 1];
const fonts = document.fonts ? document.fonts.ready : Promise.resolve();
const mathjax = (window.MathJax && MathJax.startup && MathJax.startup.promise)
    ? MathJax.startup.promise : Promise.resolve();
Promise.all([fonts, mathjax]).then(() => done(true), (e) => done(String(e)));
"""

_INSPECT = """
const article = document.querySelector('article.bd-article') || document.querySelector('main');
const headings = [...article.querySelectorAll('h1, h2, h3, h4, h5, h6')]
    .filter(h => h.offsetParent !== null || h.closest('details'))
    .map(h => [Number(h.tagName[1]), h.textContent.trim().replace(/[#¶]$/, '').slice(0, 60)]);
const images = [...document.querySelectorAll('img')].map(img => ({
    src: img.getAttribute('src'), alt: img.getAttribute('alt'),
    inArticle: !!img.closest('article'), loaded: img.complete && img.naturalWidth > 0,
    caption: !!(img.closest('figure') && img.closest('figure').querySelector('figcaption')),
}));
const colab = [...document.querySelectorAll('a[href*="colab.research.google.com"]')].map(a => a.href);
const resources = performance.getEntriesByType('resource').map(r => r.name);
const texSource = document.querySelectorAll('.math, span.math, div.math').length;
return {
    title: document.title, headings, images, colab, resources, texSource,
    mathjax: document.querySelectorAll('mjx-container').length,
    mathjaxErrors: document.querySelectorAll('mjx-merror').length,
    mathjaxSrc: [...document.scripts].map(s => s.src).filter(s => /mathjax/i.test(s)),
};
"""

# At phone width: is the page wider than the screen? If so, find the culprit by hiding elements
# one at a time, depth first (the first child whose removal ends the overflow, and so on). And
# are code blocks and display maths readable: each fits or scrolls in its own box.
_OVERFLOW = """
const width = document.documentElement.clientWidth;
const culprit = [];
const probe = (root, depth) => {
    for (const el of root.children) {
        const old = el.style.display;
        el.style.display = 'none';
        const fits = document.documentElement.scrollWidth <= width + 1;
        el.style.display = old;
        if (fits) {
            culprit.push(el.tagName.toLowerCase() + [...el.classList].map(c => '.' + c).join('')
                         + ' "' + (el.textContent || '').trim().slice(0, 50).replace(/\\s+/g, ' ') + '"');
            if (depth < 15) probe(el, depth + 1);
            return;
        }
    }
};
const scrollWidth = document.documentElement.scrollWidth;
if (scrollWidth > width + 1) probe(document.body, 0);
const article = document.querySelector('article.bd-article') || document.querySelector('main');
const unscrollable = [...article.querySelectorAll('pre, mjx-container[display="true"]')]
    .filter(el => el.offsetParent !== null && el.scrollWidth > el.clientWidth + 1
                  && !['auto', 'scroll'].includes(getComputedStyle(el).overflowX)
                  && !['auto', 'scroll'].includes(getComputedStyle(el.parentElement).overflowX))
    .map(el => el.tagName.toLowerCase() + ' "' + el.textContent.trim().slice(0, 40) + '"');
const pre = [...article.querySelectorAll('pre')].filter(p => p.offsetParent !== null);
const smallest = pre.length ? Math.min(...pre.map(p => parseFloat(getComputedStyle(p).fontSize))) : null;
return {scrollWidth, width, culprit: culprit.slice(-3), unscrollable: unscrollable.slice(0, 5),
        smallestCodeFont: smallest};
"""


def _console(driver):
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _status(url):
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - localhost only
        return response.status


def heading_problems(headings):
    """Headings out of order: not starting at h1, more than one h1, or a level skipped."""
    problems = []
    levels = [level for level, _ in headings]
    if not levels:
        return ["no heading"]
    if levels[0] != 1:
        problems.append(f"first heading is h{levels[0]}")
    if levels.count(1) > 1:
        problems.append(f"{levels.count(1)} h1 headings")
    for (prev, _), (level, text) in zip(headings, headings[1:]):
        if level > prev + 1:
            problems.append(f"h{level} '{text}' follows h{prev}")
    return problems


def pixel_spread(png):
    """(standard deviation of the grey levels, number of distinct colours) of a screenshot."""
    from PIL import Image, ImageStat

    image = Image.open(png).convert("RGB")
    grey = ImageStat.Stat(image.convert("L")).stddev[0]
    colours = len(image.getcolors(maxcolors=1 << 20) or [])
    return grey, colours


def check_site(html_dir, root, tmp_path, artifacts):
    """Drive Chromium over every page; return a report (dict) and a list of problems."""
    artifacts = Path(artifacts)
    shots = artifacts / "screenshots"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    colab = expected_colab_links(root)
    problems, report = [], {"pages": {}, "console_errors": 0}
    driver = chromium(tmp_path)
    try:
        with Site(html_dir) as site:
            pages = site.pages()
            for page in pages:
                url = site.base + page
                docname = page[:-len(".html")]
                status = _status(url)
                entry = report["pages"][page] = {"status": status}
                if status != 200:
                    problems.append(f"{page}: HTTP {status}")
                for label, size, mobile in (("desktop", DESKTOP, False), ("phone", PHONE, True)):
                    set_width(driver, size, mobile)
                    driver.get(url)
                    settled = driver.execute_async_script(_SETTLE)
                    if settled is not True:
                        problems.append(f"{page} ({label}): MathJax failed: {settled}")
                    info = driver.execute_script(_INSPECT)
                    errors = _console(driver)
                    report["console_errors"] += len(errors)
                    for error in errors:
                        problems.append(f"{page} ({label}): console error: {error['message'][:300]}")
                    external = [r for r in info["resources"] if not r.startswith(site.base)
                                and not r.startswith("data:")]
                    if external:
                        problems.append(f"{page} ({label}): requests left localhost: {external[:5]}")
                    if label == "phone":
                        layout = driver.execute_script(_OVERFLOW)
                        entry["phone"] = layout
                        if layout["scrollWidth"] > layout["width"] + 1:
                            problems.append(f"{page}: wider than a phone ({layout['scrollWidth']} > "
                                            f"{layout['width']} px), because of {layout['culprit']}")
                        if layout["unscrollable"]:
                            problems.append(f"{page}: wider than its box and not scrollable at phone "
                                            f"width: {layout['unscrollable']}")
                        if layout["smallestCodeFont"] is not None and layout["smallestCodeFont"] < 11:
                            problems.append(f"{page}: code at {layout['smallestCodeFont']} px on a phone")
                        continue
                    # desktop: the content checks (the same HTML at both widths)
                    entry.update(title=info["title"], images=len(info["images"]),
                                 maths=info["mathjax"], headings=len(info["headings"]))
                    if page in ("genindex.html", "search.html"):
                        continue
                    for problem in heading_problems(info["headings"]):
                        problems.append(f"{page}: headings out of order: {problem}")
                    for img in info["images"]:
                        if not img["loaded"]:
                            problems.append(f"{page}: image did not load: {img['src']}")
                        if img["alt"] is None:
                            problems.append(f"{page}: image without an alt attribute: {img['src']}")
                        elif img["inArticle"] and not img["caption"] and (
                                not img["alt"].strip() or img["alt"].endswith((".png", ".svg", ".jpg"))):
                            problems.append(f"{page}: figure without alt text or caption: {img['src']} "
                                            '(give the cell that draws it the metadata '
                                            '"mystnb": {"image": {"alt": "..."}})')
                    if info["texSource"] and not info["mathjax"]:
                        problems.append(f"{page}: maths on the page but nothing rendered by MathJax")
                    if info["mathjaxErrors"]:
                        problems.append(f"{page}: {info['mathjaxErrors']} MathJax errors")
                    if info["mathjax"] and not all(s.startswith(site.base) for s in info["mathjaxSrc"]):
                        problems.append(f"{page}: MathJax not loaded from the site: {info['mathjaxSrc']}")
                    if docname in colab:
                        if colab[docname] not in info["colab"]:
                            problems.append(f"{page}: no Colab link {colab[docname]} (found {info['colab']})")
                    elif info["colab"]:
                        problems.append(f"{page}: a Colab link on a page that is not a notebook to run: "
                                        f"{info['colab']}")
            report["pages_checked"] = len(pages)

            # Search: the training-vs-inference chapter is found for "running mean".
            set_width(driver, DESKTOP, False)
            driver.get(site.base + "search.html?q=running+mean")
            # Sphinx lists the hits one by one, then writes "Search finished, found N page(s)".
            hits, summary, deadline = [], "", time.monotonic() + 60
            while time.monotonic() < deadline:
                summary, hits = driver.execute_script(
                    "const s = document.querySelector('#search-results .search-summary');"
                    "return [s ? s.textContent : '', [...document.querySelectorAll("
                    "'#search-results li a')].map(a => a.getAttribute('href'))]")
                if re.search(r"found \d+ page|did not match", summary):
                    break
                time.sleep(0.5)
            report["search_summary"] = summary
            report["search_running_mean"] = hits
            if not any("05_training_vs_inference" in h for h in hits):
                problems.append(f"search for 'running mean' does not list chapter 05: {hits}")
            for error in _console(driver):
                report["console_errors"] += 1
                problems.append(f"search.html: console error: {error['message'][:300]}")

            # Two screenshots: a chapter at desktop width, a problem set at phone width.
            report["screenshots"] = {}
            for name, page, size, mobile in (
                    ("chapter05_desktop.png", "chapters/05_training_vs_inference.html", DESKTOP, False),
                    ("ps01_numpy_batchnorm_phone.png", "exercises/ps01_numpy_batchnorm/ps01_numpy_batchnorm.html", PHONE, True)):
                set_width(driver, size, mobile)
                driver.get(site.base + page)
                driver.execute_async_script(_SETTLE)
                path = shots / name
                driver.save_screenshot(str(path))
                grey, colours = pixel_spread(path)
                report["screenshots"][name] = {"page": page, "size": size, "grey_stddev": round(grey, 1),
                                               "colours": colours}
                if grey < 10 or colours < 16:
                    problems.append(f"screenshot {name} looks blank (grey stddev {grey:.1f}, "
                                    f"{colours} colours)")
    finally:
        driver.quit()
    report["problems"] = problems
    (artifacts / "browser_report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report, problems


if __name__ == "__main__":  # check an already-built site: python tests/site_browser.py _build/html
    import sys
    import tempfile

    root = Path(__file__).resolve().parents[1]
    html = Path(sys.argv[1] if len(sys.argv) > 1 else root / "_build" / "html")
    with tempfile.TemporaryDirectory() as tmp:
        result, found = check_site(html, root, Path(tmp), root / "_build" / "artifacts")
    print(json.dumps({k: v for k, v in result.items() if k != "pages"}, indent=1))
    print(f"{result.get('pages_checked')} pages, {result['console_errors']} console errors, "
          f"{len(found)} problems")
    sys.exit(1 if found else 0)
