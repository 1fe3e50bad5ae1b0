"""The report stage: notebooks executed by papermill into reports/, figures embedded, run metadata
stripped so that re-executing unchanged inputs leaves the same file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from dogiqa import report
from dogiqa.errors import DogIQAError, ParamError

PLOT_CELL = """import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(2, 2))
ax.plot([1, 2, 3], [3, 1, 2])
plt.show()"""


def _write_notebook(folder: Path, name: str, *sources: str) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    for cell in notebook.cells:
        cell.pop("id", None)
    notebook.nbformat_minor = 4
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    (folder / "notebooks").mkdir(exist_ok=True)
    nbformat.write(notebook, folder / "notebooks" / f"{name}.ipynb")


def _outputs(path: Path) -> list[dict]:
    notebook = nbformat.read(path, as_version=4)
    return [output for cell in notebook.cells for output in cell.get("outputs", [])]


def test_figures_are_embedded_and_reexecution_gives_the_same_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # a shell's choice that would drop the figures
    _write_notebook(tmp_path, "plot", "print('hello')", PLOT_CELL, "1 + 1")
    (tmp_path / "reports").mkdir()
    target = report.execute("plot", output_dir=tmp_path / "reports")
    first = target.read_bytes()
    outputs = _outputs(target)
    assert any("image/png" in output.get("data", {}) for output in outputs)
    assert not report.has_errors(nbformat.read(target, as_version=4))
    notebook = nbformat.read(target, as_version=4)
    nbformat.validate(notebook)
    assert outputs[-1]["output_type"] == "execute_result"
    assert outputs[-1]["execution_count"] is None
    assert "papermill" not in notebook.metadata
    assert all(cell.get("execution_count") is None for cell in notebook.cells)
    assert report.execute("plot", output_dir=tmp_path / "reports").read_bytes() == first
    assert os.environ["MPLBACKEND"] == "Agg"  # restored for the rest of the process


def test_a_failing_cell_is_one_line_naming_the_notebook(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_notebook(tmp_path, "broken", "x = 1", "raise ValueError('no predictions')")
    (tmp_path / "reports").mkdir()
    with pytest.raises(DogIQAError) as error:
        report.execute("broken", output_dir=tmp_path / "reports")
    message = str(error.value)
    assert "\n" not in message
    assert "notebooks/broken.ipynb" in message and "ValueError: no predictions" in message
    assert not (tmp_path / "reports" / "broken.ipynb").exists()  # no half-written report


def test_a_missing_notebook_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DogIQAError, match="notebooks/absent.ipynb: notebook not found"):
        report.execute("absent", output_dir=tmp_path)


def test_the_slow_optional_iri_checker_is_not_imported_and_validation_still_works():
    code = (
        "import sys\n"
        "from dogiqa import report\n"
        "report._skip_iri_format_checker()\n"
        "import nbformat\n"
        "notebook = nbformat.v4.new_notebook()\n"
        "nbformat.validate(notebook)\n"
        "bad = nbformat.from_dict({'cells': 3, 'metadata': {}, 'nbformat': 4,"
        " 'nbformat_minor': 4})\n"
        "try:\n"
        "    nbformat.validate(bad)\n"
        "except nbformat.ValidationError:\n"
        "    print('invalid refused')\n"
        "print(sys.modules.get('rfc3987_syntax', 'absent'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["invalid", "refused", "None"]


def test_parameters_are_injected_after_the_parameters_cell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_notebook(tmp_path, "params", "samples = 2000\nseed = 0", "print(samples, seed)")
    notebook = nbformat.read(tmp_path / "notebooks" / "params.ipynb", as_version=4)
    notebook.cells[0].metadata["tags"] = ["parameters"]
    notebook.metadata["kernelspec"]["language"] = "python"  # papermill reads parameters by it
    nbformat.write(notebook, tmp_path / "notebooks" / "params.ipynb")
    target = report.execute("params", {"samples": 20}, output_dir=tmp_path)
    cells = nbformat.read(target, as_version=4).cells
    assert cells[1].metadata["tags"] == ["injected-parameters"]
    assert cells[-1].outputs[0]["text"] == "20 0\n"
    with pytest.raises(ParamError, match=r"report\.notebooks\.params\.sample: not a parameter"):
        report.execute("params", {"sample": 20}, output_dir=tmp_path)


def test_params_of_every_notebook_are_parameters_of_it_and_tracked_by_its_stage():
    import papermill

    root = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    notebooks = report.validate_params(params)
    assert sorted(notebooks) == sorted(p.stem for p in (root / "notebooks").glob("*.ipynb"))
    for name, values in notebooks.items():
        known = papermill.inspect_notebook(root / "notebooks" / f"{name}.ipynb")
        assert set(values) <= set(known), name
    stages = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    tracked = {
        body["cmd"].split("--notebook ")[1]: body.get("params", [])
        for body in stages.values()
        if "--notebook" in body.get("cmd", "")
    }
    assert sorted(tracked) == sorted(notebooks)
    for name, stage_params in tracked.items():
        assert f"report.notebooks.{name}" in stage_params, name


def test_notebook_params_must_be_mappings():
    with pytest.raises(ParamError, match=r"report\.notebooks\.x: must be a mapping"):
        report.validate_params({"report": {"notebooks": {"x": [1, 2]}}})
    with pytest.raises(ParamError, match="report.notebooks: must map each notebook"):
        report.validate_params({"report": {"notebooks": ["01_upper_bound"]}})


def test_committed_reports_name_files_relative_to_the_project() -> None:
    """What a reader gets from git holds no path of the machine that made it: executed notebooks
    and benchmark results name files relative to the project root."""
    root = Path(__file__).resolve().parents[1] / "reports"
    absolute = re.compile(r"""(?:PosixPath\(|["'])/(?:home|work|tmp|root|Users|mnt)/""")
    found = [
        path.relative_to(root).as_posix()
        for path in sorted([*root.glob("*.ipynb"), *(root / "bench").glob("*.json")])
        if absolute.search(path.read_text(encoding="utf-8"))
    ]
    assert found == []
