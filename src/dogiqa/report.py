"""Report stage: execute the notebooks with papermill into ``reports/``.

Each notebook gets its parameters from params.yaml (``report.notebooks.<name>``), injected by
papermill after the notebook's ``parameters`` cell; its DVC stage tracks that section. The
kernel runs in the project root.

Executed notebooks are committed for people to read, so run metadata (papermill's timings and
timestamps, kernel execution times) is stripped: re-executing an unchanged notebook on unchanged
inputs gives the same file and leaves git clean.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dogiqa import paths, runs
from dogiqa.config import section
from dogiqa.errors import DogIQAError, ParamError
from dogiqa.io import atomic_path

if TYPE_CHECKING:
    import nbformat

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


def validate_params(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``report.notebooks``: notebook name -> the parameters papermill injects into it."""
    sec = section(params, "report")
    notebooks = sec.get("notebooks")
    if not isinstance(notebooks, dict) or not notebooks:
        raise ParamError(
            "report.notebooks", "must map each notebook name to its parameters ({} for none)"
        )
    chosen = {}
    for name, values in notebooks.items():
        values = {} if values is None else values
        if not isinstance(values, dict):
            raise ParamError(f"report.notebooks.{name}", f"must be a mapping, got {values!r}")
        chosen[str(name)] = dict(values)
    return chosen


def _check_parameters(name: str, source: Path, parameters: Mapping[str, Any]) -> None:
    """Every injected parameter must be one the notebook's ``parameters`` cell defines."""
    if not parameters:
        return
    import papermill

    known = papermill.inspect_notebook(source)
    unknown = [key for key in parameters if key not in known]
    if unknown:
        raise ParamError(
            f"report.notebooks.{name}.{unknown[0]}",
            f"not a parameter of {paths.show(source)} (it has {sorted(known)})",
        )


def execute(
    name: str, parameters: Mapping[str, Any] | None = None, output_dir: Path | None = None
) -> Path:
    """Execute ``notebooks/<name>.ipynb`` with ``parameters`` injected after its parameters
    cell into ``reports/<name>.ipynb`` (stripped)."""
    _skip_iri_format_checker()
    import nbformat
    import papermill

    source = paths.notebook(name)
    if not source.exists():
        raise DogIQAError(f"{paths.show(source)}: notebook not found")
    parameters = dict(parameters or {})
    _check_parameters(name, source, parameters)
    target = output_dir / f"{name}.ipynb" if output_dir else paths.report_notebook(name)
    logging.getLogger("papermill").setLevel(logging.WARNING)
    # Inline figures whatever backend the shell chose: reports/ is read without running it.
    with atomic_path(target) as tmp, _kernel_environment(MPLBACKEND=INLINE_BACKEND):
        try:
            papermill.execute_notebook(
                str(source),
                str(tmp),
                parameters=parameters,
                cwd=str(paths.root()),
                progress_bar=False,
                kernel_name="python3",
            )
        except papermill.PapermillExecutionError as exc:
            raise DogIQAError(
                f"{paths.show(source)}: cell {exc.exec_count} failed: {exc.ename}: {exc.evalue}"
            ) from None
        notebook = strip_run_metadata(nbformat.read(tmp, as_version=4))
        nbformat.write(notebook, tmp)
    return target


def run(params: dict[str, Any], only: str | None = None) -> None:
    # The notebooks read the runs: a stale run_datasets (as after `dvc exp run -S
    # runs.NAME.enabled=true`) is refused here, in one line, before any notebook starts.
    runs.validate_params(params)
    notebooks = validate_params(params)
    names = list(notebooks)
    if only is not None:
        if only not in notebooks:
            raise ParamError("report.notebooks", f"does not list {only!r}")
        names = [only]
    for name in names:
        target = execute(name, notebooks[name])
        print(f"executed {paths.show(paths.notebook(name))} -> {paths.show(target)}")
