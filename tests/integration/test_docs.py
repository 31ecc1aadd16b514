"""The documentation site: the API reference covers the public API and builds with warnings
as errors (broken links, anchors and docstrings included)."""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import subprocess
import sys

import pytest

import mindserve
import mindserve.compat
from paths import ROOT

REFERENCE = os.path.join(ROOT, "docs", "reference")


def documented():
    """The identifiers of every ``::: identifier`` directive of the reference pages."""
    names = []
    for page in sorted(glob.glob(os.path.join(REFERENCE, "*.md"))):
        with open(page, encoding="utf-8") as handle:
            names += re.findall(r"^::: (\S+)", handle.read(), re.M)
    return names


def test_the_reference_documents_every_public_name_once():
    """A name added to mindserve.__all__ or mindserve.compat must get its entry in docs/reference/."""
    names = documented()
    expected = {f"mindserve.{name}" for name in mindserve.__all__}
    expected |= {"mindserve", "mindserve.compat", "mindserve.compat.server", "mindserve.compat.client"}
    expected |= {
        "mindserve.compat.register",
        "mindserve.compat.log",
        "mindserve.prometheus",
        "mindserve.testing",
    }
    expected |= {
        "mindserve.testing.pytest_plugin",
        "mindserve.opentelemetry",
        "mindserve.http",
        "mindserve.ray",
    }
    assert sorted(set(names) ^ expected) == [], "docs/reference/ and the public API differ"
    assert len(names) == len(set(names)), "a name is documented twice"


def mkdocs_missing():
    """The modules the docs build needs that are not installed, as a phrase ("" when none)."""
    return ", ".join(m for m in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python") if not has(m))


def has(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built by ``mkdocs build --strict`` into a temporary directory."""
    missing = mkdocs_missing()
    if missing:
        pytest.skip(f"the docs build needs {missing}: pip install -e '.[docs]' (or '.[test]')")
    directory = tmp_path_factory.mktemp("site")
    build = ["build", "--strict", "--quiet", "-f", os.path.join(ROOT, "mkdocs.yml"), "-d", str(directory)]
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", *build],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return directory


def page(site, path):
    with open(os.path.join(site, path, "index.html"), encoding="utf-8") as handle:
        return handle.read()


def test_the_site_builds_with_warnings_as_errors(site):
    """Every guide and reference page is built; the guides' links to each other resolve."""
    for guide in glob.glob(os.path.join(ROOT, "docs", "*.md")):
        name = os.path.basename(guide)[: -len(".md")]
        assert os.path.exists(os.path.join(site, "" if name == "README" else name, "index.html"))
    for reference in glob.glob(os.path.join(REFERENCE, "*.md")):
        name = os.path.basename(reference)[: -len(".md")]
        assert os.path.exists(os.path.join(site, "reference", "" if name == "index" else name, "index.html"))
    assert os.path.exists(os.path.join(site, "examples", "quickstart.ipynb"))
    assert 'href="examples/quickstart.ipynb"' in page(site, "")


def test_the_reference_renders_docstrings_with_their_roles_as_links(site):
    runtime = page(site, "reference/runtime")
    assert 'id="mindserve.Runtime.infer_async"' in runtime
    assert "Every method is thread-safe." in runtime
    # ":meth:`close`" in Runtime's docstring links to Runtime.close, on the same page.
    assert re.search(r'<a class="autorefs autorefs-internal"[^>]*href="#mindserve\.Runtime\.close"', runtime)
    # ":class:`Observer`" links to another page.
    assert re.search(r'href="\.\./observers/#mindserve\.Observer"', runtime)
    for reference in glob.glob(os.path.join(site, "reference", "**", "index.html"), recursive=True):
        with open(reference, encoding="utf-8") as handle:
            html = handle.read()
        assert not re.search(r":(class|meth|func|mod|data|attr|exc):", html), reference


def test_the_readmes_links_reach_files():
    """README.md is outside the site (the strict build does not see it): its relative links
    must still name files of the repository."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", handle.read())
    local = [t for t in targets if "://" not in t]
    assert "docs/reference/index.md" in local and "examples/quickstart.ipynb" in local
    assert [t for t in local if not os.path.exists(os.path.join(ROOT, t))] == []
