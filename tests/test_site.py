"""Site stage: the executed notebooks and tables as a static website, read in a real browser.

The browser check runs Debian's Chromium (``apt-get install chromium``), driven by Playwright
over the DevTools protocol, on the site built from the committed executed notebooks and served
from a loopback HTTP server; any request to another host is refused and counted. It writes a
screenshot of the index to ``build/site-check/index.png`` (``build/`` is ignored by git) for a
person to look at, and skips with the reason where no Chromium or no Playwright is installed.
"""

from __future__ import annotations

import base64
import csv
import functools
import http.server
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urlsplit

import nbformat
import pytest
import yaml

from dogiqa import site
from dogiqa.config import load_params
from dogiqa.errors import DogIQAError, ParamError

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
CHROMIUM = Path(os.environ.get("DOGIQA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = ROOT / "build" / "site-check" / "index.png"
# A 2x1 red PNG: a figure output that must come through as an image file.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAABCAIAAAB7QOjdAAAAEElEQVR4nGP4z8DAwMDAAAAHAgEAkYlTaQAAAABJRU5ErkJggg=="
)


# --- inputs -----------------------------------------------------------------------------------


def test_readme_marks_the_summary_the_site_shows() -> None:
    summary = site.readme_summary(ROOT / "README.md")
    assert "What reproduces" in summary
    assert "<!--" not in summary


def test_summary_joins_every_marked_part(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "# T\n<!-- site -->\nfirst\n<!-- /site -->\nnot shown\n<!-- site -->\n- b\n<!-- /site -->\n"
    )
    assert site.readme_summary(readme) == "first\n\n- b\n"


def test_readme_without_marks_is_one_line(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# nothing marked\n")
    with pytest.raises(DogIQAError, match="no part marked") as err:
        site.readme_summary(readme)
    assert "\n" not in str(err.value)


def test_missing_executed_notebook_names_it(tmp_path: Path) -> None:
    (tmp_path / "01_a.ipynb").write_text("{}")
    with pytest.raises(DogIQAError, match="02_b.ipynb: executed notebook not found"):
        site.executed_notebooks(["01_a", "02_b"], reports=tmp_path)


@pytest.mark.parametrize("notebooks", [{}, ["01_a"], "01_a", {"01_a": 3}, {"../x": {}}])
def test_bad_notebook_list_names_the_param(notebooks: object) -> None:
    with pytest.raises(ParamError, match=r"report\.notebooks"):
        site.validate_params({"report": {"notebooks": notebooks}})


def test_dvc_stage_depends_on_everything_the_site_shows() -> None:
    """The stage is last in dvc.yaml and reruns when a published notebook, table or the
    README's summary changes (DVC takes no glob, so each notebook is listed)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages)[-1] == "site"
    stage = stages["site"]
    names = site.validate_params(load_params(ROOT / "params.yaml"))
    wanted = {f"reports/{name}.ipynb" for name in names}
    wanted |= {"src/dogiqa/site.py", "src/dogiqa/resources/site.css", "README.md"}
    wanted |= {"reports/tables", "reports/bench"}
    assert wanted <= set(stage["deps"]), (
        f"add to the site stage's deps: {wanted - set(stage['deps'])}"
    )
    assert "report.notebooks" in stage["params"]
    assert stage["outs"] == [{"reports/site": {"cache": False}}]


# --- build ------------------------------------------------------------------------------------


def _notebook(path: Path, title: str, *extra_markdown: str) -> Path:
    notebook = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("plot()")
    code.outputs = [
        nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(PNG).decode()})
    ]
    notebook.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\nText."),
        code,
        *(nbformat.v4.new_markdown_cell(text) for text in extra_markdown),
    ]
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, path)
    return path


@pytest.fixture
def small_reports(tmp_path: Path) -> Path:
    """A reports/ folder as the pipeline leaves it: notebooks, a table with and one without
    Markdown, a benchmark."""
    reports = tmp_path / "reports"
    (reports / "tables").mkdir(parents=True)
    (reports / "bench").mkdir()
    _notebook(reports / "01_first.ipynb", "First")
    _notebook(reports / "02_second.ipynb", "Second")
    (reports / "tables" / "table1_x.csv").write_text("a,b\n1,2\n3,4\n")
    (reports / "tables" / "table1_x.md").write_text(
        "|   a |   b |\n|----:|----:|\n|   1 |   2 |\n|   3 |   4 |\n"
    )
    (reports / "tables" / "sweep.csv").write_text("k,v\n2,0.5\n")
    (reports / "bench" / "speed.json").write_text('{"seconds": 1.5}\n')
    return reports


def _build(reports: Path, target: Path, names: tuple[str, ...] = ("01_first", "02_second")) -> Path:
    notebooks = site.executed_notebooks(names, reports=reports)
    return site.build(notebooks, "Summary.\n", target=target, reports=reports)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_build_is_byte_identical_and_has_a_page_per_input(
    small_reports: Path, tmp_path: Path
) -> None:
    first = _files(_build(small_reports, tmp_path / "one"))
    second = _files(_build(small_reports, tmp_path / "two"))
    assert first == second
    for page in (
        "index.html",
        "01_first.html",
        "02_second.html",
        "tables/table1_x.html",
        "tables/sweep.html",
        "bench/index.html",
        ".nojekyll",
    ):
        assert page in first
    assert ".buildinfo" not in first
    assert any(name.startswith("_images/") and body == PNG for name, body in first.items())
    assert not any(str(tmp_path).encode() in body for body in first.values())
    sweep = first["tables/sweep.html"].decode()
    assert "<table" in sweep and "<p>0.5</p>" in sweep  # a CSV without Markdown: csv-table


@pytest.mark.slow
def test_rebuild_replaces_the_old_site(small_reports: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    _build(small_reports, target)
    (target / "stale.html").write_text("old")
    _build(small_reports, target, names=("01_first",))
    assert not (target / "stale.html").exists()
    assert not (target / "02_second.html").exists()
    assert (target / "01_first.html").exists()


@pytest.mark.slow
def test_broken_link_fails_the_build_in_one_line(small_reports: Path, tmp_path: Path) -> None:
    """The README's marked parts go onto the index: a link there must lead into the site."""
    notebooks = site.executed_notebooks(["01_first"], reports=small_reports)
    with pytest.raises(DogIQAError, match="site build failed: .*nothing.md") as err:
        site.build(notebooks, "See [this](nothing.md).\n", tmp_path / "site", small_reports)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_page_that_needs_the_network_is_refused(small_reports: Path, tmp_path: Path) -> None:
    """Math would make Sphinx load MathJax from a CDN, which an offline reader cannot reach."""
    _notebook(small_reports / "01_first.ipynb", "First", "```{math}\nx^2\n```")
    with pytest.raises(DogIQAError, match=r"01_first\.html would load https://.*mathjax.* offline"):
        _build(small_reports, tmp_path / "site")
    assert not (tmp_path / "site").exists()


# --- in a browser -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def study_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built from the committed executed notebooks, tables and README."""
    names = site.validate_params(load_params(ROOT / "params.yaml"))
    notebooks = site.executed_notebooks(names, reports=REPORTS)
    summary = site.readme_summary(ROOT / "README.md")
    return site.build(
        notebooks, summary, target=tmp_path_factory.mktemp("site") / "site", reports=REPORTS
    )


@pytest.mark.slow
def test_study_site_rebuilds_byte_identical(study_site: Path, tmp_path: Path) -> None:
    names = site.validate_params(load_params(ROOT / "params.yaml"))
    again = site.build(
        site.executed_notebooks(names, reports=REPORTS),
        site.readme_summary(ROOT / "README.md"),
        target=tmp_path / "site",
        reports=REPORTS,
    )
    assert _files(again) == _files(study_site)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(study_site: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(study_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (Debian) to run it")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip: dev extra)"
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Visit:
    """What a reader's browser met on one page."""

    problems: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    links: set[str] = field(default_factory=set)
    table_rows: int = 0


IMAGES = "els => els.map(e => [e.currentSrc || e.src, e.complete ? e.naturalWidth : 0])"


def _visit(context: Any, base: str, name: str) -> Visit:
    visit = Visit()
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and visit.problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda exc: visit.problems.append(f"script error: {exc}"))
    page.on("requestfailed", lambda request: visit.problems.append(f"failed: {request.url}"))
    response = page.goto(base + name, wait_until="load")
    if response is None or not response.ok:
        visit.problems.append("page did not load")
    for src, width in page.eval_on_selector_all("img", IMAGES):
        if width <= 0:
            visit.problems.append(f"image not loaded: {src}")
    visit.ids = set(
        page.eval_on_selector_all("[id], a[name]", "els => els.map(e => e.id || e.name)")
    )
    visit.links = set(page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"))
    visit.table_rows = page.eval_on_selector_all("article table tbody tr", "els => els.length")
    if name == "index.html":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.close()
    return visit


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200
    except urllib.error.URLError:
        return False


def _broken_links(visits: dict[str, Visit], base: str) -> Iterator[str]:
    """Links into the site whose page (or file) is missing, or whose anchor is not on it."""
    for name, visit in visits.items():
        for href in sorted(visit.links):
            if not href.startswith(base):
                continue  # another site (the theme's credits): not part of this one
            address, fragment = urldefrag(href)
            target = urlsplit(address).path.removeprefix("/")
            target = target + "index.html" if target == "" or target.endswith("/") else target
            if target in visits:
                if fragment and fragment not in visits[target].ids:
                    yield f"{name}: link to a missing anchor {href}"
            elif not _http_ok(address):
                yield f"{name}: broken link {href}"


def _csv_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


@pytest.mark.slow
def test_every_page_reads_well_in_chromium(browser: Any, served: str, study_site: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    offsite: list[str] = []

    def only_loopback(route: Any) -> None:
        if route.request.url.startswith((served, "data:")):
            route.continue_()
        else:
            offsite.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    pages = sorted(p.relative_to(study_site).as_posix() for p in study_site.rglob("*.html"))
    visits = {name: _visit(context, served, name) for name in pages}
    context.close()

    problems = [f"{name}: {problem}" for name, v in visits.items() for problem in v.problems]
    problems += _broken_links(visits, served)
    for notebook in site.validate_params(load_params(ROOT / "params.yaml")):
        if f"{notebook}.html" not in visits:
            problems.append(f"no page for notebook {notebook}")
    for table in sorted((REPORTS / "tables").glob("table*.csv")):
        shown = visits.get(f"tables/{table.stem}.html", Visit()).table_rows
        if shown != _csv_rows(table):
            problems.append(f"paper table {table.stem}: {shown} rows shown of {_csv_rows(table)}")
    problems += [f"asked another host for {url}" for url in offsite]
    assert not problems, "\n".join(problems[:20])
    assert SCREENSHOT.stat().st_size > 0
