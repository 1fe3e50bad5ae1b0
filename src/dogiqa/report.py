"""Report stage: execute the notebooks with papermill into ``reports/``.

Executed notebooks are committed for people to read, so run metadata (papermill's timings and
timestamps, kernel execution times) is stripped: re-executing an unchanged notebook on unchanged
inputs gives the same file and leaves git clean.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dogiqa import paths
from dogiqa.config import get_list, section
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.io import atomic_path

if TYPE_CHECKING:
    import nbformat

NOTEBOOKS = Path("notebooks")
VOLATILE_CELL_METADATA = ("papermill", "execution", "ExecuteTime", "collapsed", "scrolled")
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
"""Matplotlib backend of the kernel: ``plt.show()`` embeds the figure in the executed notebook."""


def strip_run_metadata(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop what changes from run to run although the inputs did not."""
    notebook.metadata.pop("papermill", None)
    notebook.metadata.pop("widgets", None)
    language = notebook.metadata.get("language_info", {})
    language.pop("version", None)
    for cell in notebook.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        cell.pop("id", None)
        if cell.cell_type == "code":
            cell.execution_count = None
            for output in cell.get("outputs", []):
                if "execution_count" in output:  # required (may be null) on execute_result
                    output["execution_count"] = None
    notebook.nbformat_minor = min(notebook.nbformat_minor, 4)
    return notebook


def has_errors(notebook: nbformat.NotebookNode) -> bool:
    return any(
        output.get("output_type") == "error"
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )


def _skip_iri_format_checker() -> None:
    """Keep jsonschema from importing ``rfc3987_syntax`` in this process.

    jupyterlab pulls in ``jsonschema[format-nongpl]``, whose ``rfc3987_syntax`` compiles ~35
    Earley grammars at import (about 1.6 s for every report stage, see
    python-jsonschema/jsonschema#1428) for the ``iri`` format checks, which nbformat's notebook
    schema never uses. A ``None`` entry in ``sys.modules`` makes that optional import fail, and
    jsonschema then leaves those two checkers out. Nothing changes once jsonschema is loaded."""
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)


@contextmanager
def _kernel_environment(**variables: str) -> Iterator[None]:
    """Set environment variables for a kernel started inside the block (it inherits them)."""
    saved = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def execute(
    name: str, parameters: dict[str, Any] | None = None, output_dir: Path | None = None
) -> Path:
    """Execute ``notebooks/<name>.ipynb`` into ``reports/<name>.ipynb`` (stripped)."""
    _skip_iri_format_checker()
    import nbformat
    import papermill

    source = NOTEBOOKS / f"{name}.ipynb"
    if not source.exists():
        raise DogIQAError(f"{source}: notebook not found")
    target = (output_dir or paths.REPORTS) / f"{name}.ipynb"
    logging.getLogger("papermill").setLevel(logging.WARNING)
    # Inline figures whatever backend the shell chose: reports/ is read without running it.
    with atomic_path(target) as tmp, _kernel_environment(MPLBACKEND=INLINE_BACKEND):
        try:
            papermill.execute_notebook(
                str(source),
                str(tmp),
                parameters=parameters or {},
                cwd=".",
                progress_bar=False,
                kernel_name="python3",
            )
        except papermill.PapermillExecutionError as exc:
            raise DogIQAError(
                f"{source}: cell {exc.exec_count} failed: {exc.ename}: {exc.evalue}"
            ) from None
        notebook = strip_run_metadata(nbformat.read(tmp, as_version=4))
        nbformat.write(notebook, tmp)
    return target


def run(params: dict[str, Any], only: str | None = None) -> None:
    sec = section(params, "report")
    names = get_list(sec, "report", "notebooks")
    if only is not None:
        if only not in names:
            raise ParamError("report.notebooks", f"does not list {only!r}")
        names = [only]
    for name in names:
        target = execute(name)
        print(f"executed {NOTEBOOKS / (name + '.ipynb')} -> {target}")
