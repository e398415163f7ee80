"""The package's metadata: one version everywhere, the declared license shipped, the
changelog's entry for the version, and the documentation site's pages all in its nav."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # the package depends on tomli there
    import tomli as tomllib

import metarobust

REPO = Path(__file__).resolve().parent.parent


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_version_is_the_same_in_python_pyproject_and_cargo():
    cargo = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]
    assert metarobust.__version__ == pyproject()["project"]["version"] == cargo["version"]


def test_declared_license_is_shipped():
    project = pyproject()["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert not any("License ::" in c for c in project["classifiers"])  # PEP 639: not both


def test_changelog_has_the_current_version():
    text = (REPO / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(metarobust.__version__)}\]", text, re.M)


def test_python_versions_in_classifiers_start_at_requires_python():
    project = pyproject()["project"]
    minor = sorted(int(m) for m in re.findall(r"Python :: 3\.(\d+)$",
                                              "\n".join(project["classifiers"]), re.M))
    assert project["requires-python"] == f">=3.{minor[0]}"


def test_every_docs_page_is_in_the_site_nav():
    nav = (REPO / "mkdocs.yml").read_text()
    pages = {str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md")}
    assert pages and all(f" {page}" in nav for page in pages), pages
