"""Site stage: the executed notebooks, tables and benchmarks as a static website (``reports/site``).

Sphinx with MyST-NB renders each executed notebook that ``report.notebooks`` lists from its
stored outputs (nothing is re-executed), one page per table in ``reports/tables`` and one page of
the benchmark results in ``reports/bench``; the index carries the parts of ``README.md`` marked
``<!-- site -->`` ... ``<!-- /site -->``, so the summary of what reproduces has one source.

Offline: the Furo theme, Sphinx's search and MyST-NB's styles ship as files in their wheels and
are copied into the site, so neither the build nor a reader's browser fetches anything. Sphinx
would take MathJax from a CDN for a page with math; the stage refuses any page that would load
something from another host (``check_offline``), and any Sphinx warning (a broken link, say).

Deterministic: the build starts from a fresh environment in a temporary folder; the pages carry
no date, no absolute path and no random id (figures are named by the hash of their bytes), and
Sphinx's per-build record (``.buildinfo``) is left out. A rebuild of unchanged inputs gives the
same bytes; the site is then swapped into place whole, so a failed build leaves the old one.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dogiqa import paths, report
from dogiqa.errors import DogIQAError, ParamError

SITE = paths.REPORTS / "site"
README = Path("README.md")
SUMMARY = re.compile(r"<!-- site -->\n(.*?)<!-- /site -->", re.DOTALL)
TITLE = "Dog-IQA study"

SPHINX_CONFIG: dict[str, Any] = {
    "project": TITLE,
    "html_title": TITLE,
    "language": "en",
    # myst_nb renders notebooks and Markdown; githubpages writes .nojekyll, without which
    # GitHub Pages would drop the _static and _images folders.
    "extensions": ["myst_nb", "sphinx.ext.githubpages"],
    "html_theme": "furo",
    # Show the stored outputs: the report stages executed the notebooks already.
    "nb_execution_mode": "off",
    "nb_merge_streams": True,
    "html_static_path": ["_static"],
    "html_css_files": ["site.css"],
    "html_copy_source": False,
    "html_show_sourcelink": False,
    "html_show_copyright": False,
    "html_last_updated_fmt": None,
}
PAPER_TABLE_PREFIX = "table"
"""Tables named ``table*`` are the papers' tables (``table1_upper_bound``, ...); listed first."""


def validate_params(params: dict[str, Any]) -> list[str]:
    """The executed notebooks to publish: those of ``report.notebooks`` (names without
    ``.ipynb``), in its order."""
    names = list(report.validate_params(params))
    for name in names:
        if not name or "/" in name:
            raise ParamError("report.notebooks", f"keys must be notebook names, got {name!r}")
    return names


def readme_summary(readme: Path | None = None) -> str:
    """The README's parts marked for the site, joined: one source for what reproduces."""
    readme = readme if readme is not None else paths.at(README)
    if not readme.exists():
        raise DogIQAError(f"{paths.show(readme)}: not found")
    parts = SUMMARY.findall(readme.read_text(encoding="utf-8"))
    if not parts:
        raise DogIQAError(f"{readme}: no part marked <!-- site --> ... <!-- /site --> for the site")
    return "\n".join(part.strip() + "\n" for part in parts)


def executed_notebooks(names: Iterable[str], reports: Path | None = None) -> list[Path]:
    reports = reports if reports is not None else paths.at(paths.REPORTS)
    found = [reports / f"{name}.ipynb" for name in names]
    absent = [paths.show(path) for path in found if not path.exists()]
    if absent:
        raise DogIQAError(
            f"{', '.join(absent)}: executed notebook not found (run the report stage)"
        )
    return found


def _toctree(entries: Iterable[str], caption: str) -> str:
    lines = "\n".join(entries)
    return f"```{{toctree}}\n:caption: {caption}\n:maxdepth: 1\n\n{lines}\n```\n"


def index_page(summary: str, notebooks: list[Path], sections: list[str]) -> str:
    return (
        f"# {TITLE}\n\n{summary}\n"
        + _toctree((path.stem for path in notebooks), "Notebooks")
        + "\n"
        + _toctree(sections, "Tables and benchmarks")
    )


def table_page(csv: Path) -> str:
    """One table: its Markdown rendering when the pipeline wrote one, else the CSV itself."""
    markdown = csv.with_suffix(".md")
    if markdown.exists():
        body = markdown.read_text(encoding="utf-8")
    else:
        body = f"```{{csv-table}}\n:file: {csv.name}\n:header-rows: 1\n```\n"
    return (
        f"# {csv.stem}\n\n"
        f"The pipeline writes this table to `reports/tables/{csv.name}` "
        f"({{download}}`CSV <{csv.name}>`).\n\n{body}"
    )


def tables_listing(stems: list[str]) -> str:
    paper = [stem for stem in stems if stem.startswith(PAPER_TABLE_PREFIX)]
    other = [stem for stem in stems if not stem.startswith(PAPER_TABLE_PREFIX)]
    page = (
        "# Tables\n\nEvery table the pipeline writes to `reports/tables/`, as a page and as CSV. "
        "A `paper` column holds a paper's printed value, `reproduced` this study's, `source` "
        "where it comes from.\n\n"
    )
    if paper:
        page += _toctree(paper, "The papers' tables") + "\n"
    if other:
        page += _toctree(other, "More tables of the study") + "\n"
    return page


def write_tables(tables: Path, target: Path) -> list[str]:
    """A page per ``reports/tables/*.csv`` and a page listing them; returns the listing's name."""
    csvs = sorted(tables.glob("*.csv"))
    if not csvs:
        return []
    target.mkdir()
    for csv in csvs:
        shutil.copyfile(csv, target / csv.name)
        (target / f"{csv.stem}.md").write_text(table_page(csv), encoding="utf-8")
    listing = tables_listing([csv.stem for csv in csvs])
    (target / "index.md").write_text(listing, encoding="utf-8")
    return [f"{target.name}/index"]


def write_benchmarks(bench: Path, target: Path) -> list[str]:
    """One page with every ``reports/bench/*.json`` result file."""
    results = sorted(bench.glob("*.json"))
    if not results:
        return []
    target.mkdir()
    page = io.StringIO()
    page.write(
        "# Benchmarks\n\nSpeed and memory measured by `benchmarks/` (`make bench`), "
        "as written to `reports/bench/`.\n\n"
    )
    for result in results:
        shutil.copyfile(result, target / result.name)
        page.write(
            f"## {result.stem}\n\n`reports/bench/{result.name}`\n\n"
            f"```{{literalinclude}} {result.name}\n:language: json\n```\n\n"
        )
    (target / "index.md").write_text(page.getvalue(), encoding="utf-8")
    return [f"{target.name}/index"]


def write_sources(source: Path, summary: str, notebooks: list[Path], reports: Path) -> None:
    """Lay out the Sphinx source folder: notebooks, table and benchmark pages, the index."""
    for notebook in notebooks:
        shutil.copyfile(notebook, source / notebook.name)
    static = source / "_static"
    static.mkdir()
    css = resources.files("dogiqa.resources").joinpath("site.css").read_text(encoding="utf-8")
    (static / "site.css").write_text(css, encoding="utf-8")
    sections = write_tables(reports / "tables", source / "tables")
    sections += write_benchmarks(reports / "bench", source / "bench")
    (source / "index.md").write_text(index_page(summary, notebooks, sections), encoding="utf-8")


def sphinx_build(source: Path, output: Path, doctrees: Path) -> None:
    """Build HTML with Sphinx; any warning (a broken link, an unreadable output) fails it."""
    from sphinx.application import Sphinx
    from sphinx.errors import SphinxError
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    warnings = io.StringIO()
    try:
        with patch_docutils(source), docutils_namespace():
            app = Sphinx(
                source,
                None,
                output,
                doctrees,
                "html",
                confoverrides=dict(SPHINX_CONFIG),
                status=None,
                warning=warnings,
                freshenv=True,
                warningiserror=True,
            )
            app.build(force_all=True)
    except SphinxError as exc:
        raise DogIQAError(f"site build failed: {exc}") from None
    problems = warnings.getvalue().strip()
    if problems or app.statuscode:
        raise DogIQAError(f"site build failed: {problems.splitlines()[0] if problems else ''}")
    # Sphinx's record for incremental builds; every build here starts fresh.
    (output / ".buildinfo").unlink(missing_ok=True)


class _LoadedURLs(HTMLParser):
    """The URLs a page loads by itself (scripts, styles, images, frames), not the ones it links."""

    SOURCES = {"script": "src", "img": "src", "iframe": "src", "source": "src", "embed": "src"}
    LOADING_LINKS = {"stylesheet", "icon", "preload", "modulepreload", "manifest"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "link" and self.LOADING_LINKS & set(values.get("rel", "").split()):
            self.urls.append(values.get("href", ""))
        elif tag in self.SOURCES and values.get(self.SOURCES[tag]):
            self.urls.append(values[self.SOURCES[tag]])


def network_loads(site: Path) -> Iterator[tuple[Path, str]]:
    """(page, URL) for every asset a page would fetch from another host."""
    for page in sorted(site.rglob("*.html")):
        parser = _LoadedURLs()
        parser.feed(page.read_text(encoding="utf-8"))
        for url in parser.urls:
            if urlsplit(url).netloc:
                yield page.relative_to(site), url


def check_offline(site: Path) -> None:
    """Refuse a site that needs the network (MathJax from a CDN, say): it is read offline."""
    for page, url in network_loads(site):
        raise DogIQAError(f"site: {page} would load {url} from the network; it must work offline")


def _remove_empty_dirs(root: Path) -> None:
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def _replace_dir(new: Path, target: Path) -> None:
    """Put the folder ``new`` at ``target``, removing the old one only once the new one is there."""
    old = target.with_name(f".old.{target.name}")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def build(
    notebooks: list[Path],
    summary: str,
    target: Path | None = None,
    reports: Path | None = None,
) -> Path:
    """Build the site into ``target`` (default ``reports/site``, replaced whole on success)."""
    target = target if target is not None else paths.at(SITE)
    reports = reports if reports is not None else paths.at(paths.REPORTS)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp.site.", dir=target.parent) as tmp:
        work = Path(tmp)
        source, output = work / "source", work / "html"
        source.mkdir()
        write_sources(source, summary, notebooks, reports)
        sphinx_build(source, output, work / "doctrees")
        check_offline(output)
        # Sphinx leaves _sources/ empty when no source is copied; git would not keep it.
        _remove_empty_dirs(output)
        # mkdtemp made the folder private; give the site the mode of a plain mkdir.
        os.chmod(output, 0o777 & ~_umask())
        _replace_dir(output, target)
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def run(params: dict[str, Any]) -> Path:
    names = validate_params(params)
    notebooks = executed_notebooks(names)
    summary = readme_summary()
    target = build(notebooks, summary)
    pages = sum(1 for _ in target.rglob("*.html"))
    size = sum(path.stat().st_size for path in target.rglob("*") if path.is_file())
    print(f"site: {pages} pages, {size / 1e6:.1f} MB -> {paths.show(target)}/index.html")
    return target
