"""The leaderboard page is a jinja2 template (benchmarks/reporting/templates/) that ships with the package."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from benchmarks.reporting import page as page_module
from benchmarks.reporting.page import TEMPLATE, environment, write_page

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "benchmarks" / "reporting" / "templates"
FILES = (TEMPLATE, "page.css", "page.js")


def test_template_is_found_and_renders(tmp_path: Path) -> None:
    # Found in the package that is imported (the checkout, or site-packages under tox), and the same file as the
    # checkout's: the template ships with the package.
    found = Path(environment().get_template(TEMPLATE).filename).resolve()
    assert found == Path(page_module.__file__).resolve().parent / "templates" / TEMPLATE
    assert found.read_bytes() == (TEMPLATES / TEMPLATE).read_bytes()
    page = write_page({}, {}, tmp_path / "index.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>\n") and page.endswith("</body></html>\n")
    assert "<p>No records yet.</p>" in page
    css, js = ((TEMPLATES / name).read_text(encoding="utf-8").removesuffix("\n") for name in FILES[1:])
    assert f"<style>{css}\n" in page and f"<script>{js}</script>" in page  # inlined: one self-contained file
    assert "{{" not in page and "{%" not in page


def test_a_change_in_the_template_shows_in_the_page(tmp_path: Path) -> None:
    custom = tmp_path / "templates"
    shutil.copytree(TEMPLATES, custom)
    source = (custom / TEMPLATE).read_text(encoding="utf-8")
    (custom / TEMPLATE).write_text(source.replace("<h1>depthbench leaderboards</h1>", "<h1>{{ 'A<B' }}</h1>"),
                                   encoding="utf-8")
    (custom / "page.js").write_text("/* changed {{ not a template }} */\n", encoding="utf-8")
    page = write_page({}, {}, tmp_path / "index.html", templates=custom).read_text(encoding="utf-8")
    assert "<h1>A&lt;B</h1>" in page  # expressions are escaped
    assert "<script>/* changed {{ not a template }} */</script>" in page  # inlined verbatim, not rendered
    default = write_page({}, {}, tmp_path / "default.html").read_text(encoding="utf-8")
    assert "<h1>depthbench leaderboards</h1>" in default


def test_package_data_lists_the_templates() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    data = config["tool"]["setuptools"]["package-data"]["benchmarks"]
    for name in FILES:
        assert f"reporting/templates/{name}" in data
        assert (TEMPLATES / name).is_file()
    assert any(dep.replace(" ", "").startswith("jinja2>=3.1") for dep in config["project"]["dependencies"])

