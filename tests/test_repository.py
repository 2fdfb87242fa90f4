"""The repository as published: its licences, its documents' links, and the GitHub Actions
workflow that tests the course and publishes the site (validated offline: parsed, not run)."""

import re
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_licence_file_names_each_licence_and_agrees_with_the_package():
    text = (ROOT / "LICENSE").read_text()
    for needle in ("MIT License", "CC BY 4.0", "CC BY-SA 3.0", "Permission is hereby granted"):
        assert needle in text, f"LICENSE does not mention {needle!r}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    assert (ROOT / "course_lib/data/MNIST_LICENSE.txt").exists()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_of_the_documents_resolve(doc):
    text = doc.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    missing = [link for link in local if not (doc.parent / link).exists()]
    assert not missing, f"{doc.name} links to files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documents_point_nowhere_outside_the_repository(doc):
    text = doc.read_text()
    # No link or path climbs out of the repository (a parent folder of the checkout).
    root_depth = len(doc.parent.relative_to(ROOT).parts)
    climbs = [m for m in re.findall(r"((?:\.\./)+)", text) if m.count("../") > root_depth]
    assert not climbs, f"{doc.name} points outside the repository: {climbs}"


def test_readme_is_short_and_shows_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make book" in text and "make test" in text
    assert len(text.splitlines()) <= 80, "README.md is the front door: details go to docs/"


def _workflow():
    (path,) = (ROOT / ".github" / "workflows").glob("*.yml")
    return yaml.safe_load(path.read_text())


def test_workflow_runs_make_test_then_publishes_the_built_site():
    flow = _workflow()
    triggers = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert "main" in triggers["push"]["branches"]
    test, deploy = flow["jobs"]["test"], flow["jobs"]["deploy"]
    runs = " ".join(step.get("run", "") for step in test["steps"])
    assert re.search(r"\bmake test\b", runs) and re.search(r"\bbook\b", runs)
    uses = [step.get("uses", "") for step in test["steps"]]
    assert any(u.startswith("actions/checkout@") for u in uses)
    (upload,) = [s for s in test["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert upload["with"]["path"] == "_build/html"
    assert deploy["needs"] == "test"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in deploy["steps"])
    # Every `uses:` is pinned to a version, and every step is either a `run` or a `uses`.
    for job in flow["jobs"].values():
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), step
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


def test_the_book_excludes_the_repository_documents():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    for name in ("README.md", "CONTRIBUTING.md", "LICENSE", "docs", "coursework", ".github"):
        assert name in config["exclude_patterns"], name


def test_the_introduction_lists_every_chapter():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    chapters = [c["file"] for part in toc["parts"] for c in part["chapters"]
                if c["file"].startswith("chapters/") and not c["file"].endswith(("notation", "bibliography"))]
    intro = (ROOT / "intro.md").read_text()
    missing = [c for c in chapters if f"{{doc}}`{c}`" not in intro]
    assert not missing, f"intro.md does not list {missing}"
