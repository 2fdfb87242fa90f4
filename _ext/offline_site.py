"""Sphinx extension: a site that works with no internet and logs no console errors.

- MathJax 3 comes from a local copy, not a CDN. Jupyter Book 1.x keeps Sphinx's default
  ``mathjax_path`` (``https://cdn.jsdelivr.net/npm/mathjax@3/...``), so offline no formula
  renders. The pinned PyPI package ``django-static-mathjax`` (requirements.lock) ships MathJax
  3.2.2's ``es5`` build (``tex-chtml.js``, the CommonHTML fonts, the TeX extensions loaded on
  demand); it is copied to ``_static/mathjax`` and ``mathjax_path`` points at it.
- sphinx-thebe's scripts are dropped when ``launch_buttons.thebe`` is false (Jupyter Book adds
  the extension anyway), and script tags are de-duplicated: sphinx-thebe registers its
  ``const THEBE_JS_URL = ...`` set-up script twice per page, and the second declaration is a
  SyntaxError in the console of every page.
- ``colab_exclude`` (a list of docnames) removes the launch (Colab) button from notebook pages
  that are not experiments for a student to run.
- No console error on a first visit: the theme's colour mode defaults to "auto" (pydata-sphinx-
  theme logs "Got invalid theme mode" when none is stored yet), and the site has a favicon
  (browsers request ``/favicon.ico`` otherwise, a 404).
- ``static/offline_site.css``: the pages readable at phone width (code blocks and display maths
  scroll in their own box; inline code and long words wrap).
"""

import importlib.util
import shutil
from pathlib import Path

from sphinx.util import logging

LOGGER = logging.getLogger(__name__)
MATHJAX_PATH = "mathjax/tex-chtml.js"  # relative to _static
STATIC = Path(__file__).resolve().parent / "static"


def _mathjax_es5():
    """The es5 folder of the MathJax 3 copy shipped by django-static-mathjax."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    return folder if (folder / "tex-chtml.js").is_file() else None


def _configure(app, config):
    config.html_static_path = [*config.html_static_path, str(STATIC)]
    if not config.html_favicon:
        config.html_favicon = str(STATIC / "favicon.svg")
    config.html_context = {"default_mode": "auto", **config.html_context}
    _use_local_mathjax(app, config)


def _use_local_mathjax(app, config):
    if str(config.mathjax_path).startswith(("http://", "https://", "//")):
        if _mathjax_es5() is None:
            LOGGER.warning("offline_site: django-static-mathjax is not installed; MathJax "
                           "would load from a CDN (install requirements.lock)")
            return
        config.mathjax_path = MATHJAX_PATH


def _copy_mathjax(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    if app.config.mathjax_path != MATHJAX_PATH:
        return
    source = _mathjax_es5()
    target = Path(app.outdir) / "_static" / "mathjax"
    if (target / "tex-chtml.js").is_file():
        return  # an incremental build: the copy is there already
    # The combined bundles other than tex-chtml.js are never loaded (the pages are TeX only).
    unused = shutil.ignore_patterns("*svg*", "mml-*.js", "tex-mml-*.js", "tex-chtml-full*.js",
                                    "node-main.js")
    shutil.copytree(source, target, ignore=unused, dirs_exist_ok=True)


def _thebe_enabled(app):
    launch = app.config.html_theme_options.get("launch_buttons", {}) or {}
    return bool(launch.get("thebe"))


def _clean_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if scripts is None:
        return
    drop_thebe = not _thebe_enabled(app)
    seen, kept = set(), []
    for script in scripts:
        filename = str(script)
        body = getattr(script, "attributes", {}).get("body", "")
        if drop_thebe and ("sphinx-thebe" in filename or "THEBE_JS_URL" in body):
            continue
        key = (filename, body)
        if key in seen:
            continue
        seen.add(key)
        kept.append(script)
    context["script_files"] = kept


def _drop_launch_buttons(app, pagename, templatename, context, doctree):
    if pagename in app.config.colab_exclude and "header_buttons" in context:
        context["header_buttons"] = [b for b in context["header_buttons"]
                                     if b.get("label") != "launch-buttons"]


def setup(app):
    app.add_config_value("colab_exclude", [], "html")
    app.connect("config-inited", _configure)
    app.add_css_file("offline_site.css")
    app.connect("build-finished", _copy_mathjax)
    app.connect("html-page-context", _clean_scripts, priority=900)
    # after sphinx-book-theme adds the launch buttons (priority 500)
    app.connect("html-page-context", _drop_launch_buttons, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
