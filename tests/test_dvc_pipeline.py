"""`dvc repro` of the upper-bound stage in a temporary copy of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from stage_project import one_run

pytestmark = pytest.mark.slow


def _copy_project(root: Path, target: Path) -> None:
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(root / name, target / name)
    for folder in ("src", "notebooks", ".dvc"):
        shutil.copytree(
            root / folder,
            target / folder,
            ignore=shutil.ignore_patterns("__pycache__", "cache", "tmp", "*.egg-info"),
        )


def _run(args: list[str], cwd: Path, env: dict) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_repro_upper_bound_then_nothing_to_do(project_root, mirror, tmp_path):
    _copy_project(project_root, tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params.update(one_run(["livec"]))  # keep the copy small: images of one dataset only
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(tmp_path / "src")
    env["DOGIQA_MIRROR"] = str(mirror)
    env["DVC_NO_ANALYTICS"] = "1"
    _run(["git", "init", "-q"], tmp_path, env)
    dvc = [sys.executable, "-m", "dvc"]
    _run([*dvc, "repro", "upper_bound"], tmp_path, env)

    table = pd.read_csv(tmp_path / "reports/tables/table1_upper_bound.csv")
    assert list(table.columns) == [
        "formula",
        "K",
        "dataset",
        "srcc",
        "plcc",
        "mean",
        "paper",
        "delta",
    ]
    assert {"code", "paper000", "paper001"} <= set(table["formula"])
    assert set(table["dataset"]) == {"SPAQ", "KonIQ", "LIVEC", "AGIQA", "KADID"}
    code = table[(table["formula"] == "code") & (table["dataset"] != "AGIQA")]
    assert len(code) == 16 and code["delta"].abs().max() < 0.0005

    again = _run([*dvc, "repro", "upper_bound"], tmp_path, env)
    assert "didn't change, skipping" in again or "up to date" in again
    assert "Running stage" not in again
    status = _run([*dvc, "status", "upper_bound"], tmp_path, env)
    assert "up to date" in status
