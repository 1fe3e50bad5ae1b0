"""Paths anchored on the project root: the same files from any folder of the project."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dogiqa import paths

ROOT = Path(__file__).resolve().parents[1]


def test_root_is_found_from_a_subfolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert paths.root() == tmp_path
    assert paths.labels_table("livec") == tmp_path / "data" / "labels" / "livec.csv"
    assert paths.show(paths.labels_table("livec")) == "data/labels/livec.csv"
    assert paths.show("/elsewhere/x.jpg") == "/elsewhere/x.jpg"


def test_without_a_project_the_working_directory_is_the_root(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert paths.root() == tmp_path
    assert paths.regions_table("x", base=Path("elsewhere")) == Path(
        "elsewhere/data/regions/cpu/x.csv"
    )


def test_every_per_dataset_output_comes_from_stage_file_in_its_runs_folder() -> None:
    base = Path("/p")
    assert paths.summary("scores", "livec", base=base, run="paper") == (
        base / "data/scores/paper/livec.summary.json"
    )
    assert paths.metrics_file("livec", base=base) == base / "reports/metrics/cpu/livec.json"
    assert paths.plot_file("livec", base=base, run="m") == base / "reports/plots/m/livec.csv"
    assert paths.stage_cache("score", "livec", base=base, run="m") == (
        base / "data/cache/score/m/livec.jsonl"
    )
    assert paths.labels_table("livec", base=base) == base / "data/labels/livec.csv"  # shared
    # Drawn from labels and other models' cached outputs, not from a run's: shared too.
    assert paths.stage_file("selections", "spaq", base=base, run="paper") == (
        base / "data/selections/spaq.csv"
    )
    for kind in paths.STAGE_DIRS:
        folder = base / paths.STAGE_DIRS[kind]
        expected = folder if kind in paths.SHARED_KINDS else folder / "r"
        assert paths.stage_file(kind, "d", base=base, run="r").parent == expected
        # Two runs never share a per-run output.
        if kind not in paths.SHARED_KINDS:
            assert paths.stage_file(kind, "d", run="a") != paths.stage_file(kind, "d", run="b")


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "dogiqa", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_cli_reads_the_projects_params_from_a_subfolder_and_params_from_anywhere(tmp_path):
    inside = _run(ROOT / "notebooks", "check-params")
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout == "params.yaml: every stage's params are valid\n"
    outside = _run(tmp_path, "--params", str(ROOT / "params.yaml"), "check-params")
    assert outside.returncode == 0, outside.stderr
    missing = _run(tmp_path, "check-params")
    assert missing.returncode == 2
    assert (
        missing.stderr.strip() == "dogiqa check-params: error: params: params.yaml: file not found"
    )


LAYOUT_PREFIXES = ("data/", "reports/", "notebooks/", "params.yaml", "dvc.yaml")


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=str)
def test_notebooks_name_no_path_relative_to_the_working_directory(notebook: Path) -> None:
    """A notebook opened from notebooks/ must not read "data/..." from there: every project path
    comes from dogiqa.paths."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    literals = [
        node.value
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    assert [s for s in literals if s.startswith(LAYOUT_PREFIXES)] == []


def test_a_notebook_run_from_the_notebooks_folder_reads_the_project(tmp_path: Path) -> None:
    """What jupyter lab does: the kernel starts in notebooks/; paths still lead to the root."""
    import nbformat
    import papermill

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("sample: {size: 3}\n")
    table = paths.table("probe", base=tmp_path)
    table.parent.mkdir(parents=True)
    table.write_text("a\n1\n")
    (tmp_path / "notebooks").mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "import pandas as pd\n"
            "from dogiqa import paths, results\n"
            "print(results.study_params()['sample'], int(pd.read_csv(paths.table('probe')).a[0]))"
        )
    ]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    source = tmp_path / "notebooks" / "probe.ipynb"
    nbformat.write(notebook, source)
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(source), str(out), cwd=str(tmp_path / "notebooks"), progress_bar=False
    )
    outputs = nbformat.read(out, as_version=4).cells[0].outputs
    assert outputs[0]["text"] == "{'size': 3} 1\n"
