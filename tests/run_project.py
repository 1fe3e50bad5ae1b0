"""A small git + DVC copy of the study for tests of runs: the real dvc.yaml (its run stages and
the report stages asked for), the package, a few LIVE Challenge photos in ``data/raw`` with their
labels, and params.yaml with the runs given. Commands run as a user runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from stage_project import ROOT, real_images, write_labels

from dogiqa import paths, runs

RUN_STAGES = ("segment", "count_regions", "score", "aggregate", "evaluate")
GIT = ["git", "-c", "user.name=dogiqa", "-c", "user.email=dogiqa@example.org"]


def env_for(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(root / "src")
    env["DVC_NO_ANALYTICS"] = "1"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"  # DVC's HTTP client honours proxies
    return env


def run(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args, cwd=root, env=env_for(root), capture_output=True, text=True, timeout=900
    )
    if check:
        assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(root, sys.executable, "-m", "dvc", *args, check=check)


def dogiqa(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run(root, sys.executable, "-m", "dogiqa", *args)


def ran(result: subprocess.CompletedProcess) -> list[str]:
    """The stages a ``dvc repro`` ran, in order."""
    lines = result.stdout.splitlines()
    return [line.split("'")[1] for line in lines if line.startswith("Running stage '")]


def commit(root: Path, message: str) -> None:
    run(root, *GIT, "add", "-A")
    run(root, *GIT, "commit", "-q", "-m", message)


def make_project(
    root: Path,
    declared: dict[str, dict[str, Any]],
    profiles: dict[str, dict[str, Any]] | None = None,
    reports: tuple[str, ...] = (),
    images: int = 3,
) -> Path:
    """The project in ``root`` (a git repository with one commit): runs ``declared``, extra
    ``profiles``, the run stages and the report stages named in ``reports``."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("src", "notebooks"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    (root / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copy(ROOT / ".dvcignore", root / ".dvcignore")
    (root / ".gitignore").write_text("__pycache__/\n/data/cache/\n/.dvc/cache/\n/.dvc/tmp/\n")
    document = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    keep = set(RUN_STAGES) | set(reports)
    if "report_main_results" in reports:  # its paired tests read published predictions
        keep.add("download_external")
    stages = {name: body for name, body in document["stages"].items() if name in keep}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    if {"report_main_results", "report_ablations"} & set(reports):  # others' published metrics
        table = paths.table("external_metrics", base=root)
        table.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(paths.table("external_metrics", base=ROOT), table)
    if profiles:
        target = root / "src" / "dogiqa" / "resources" / "profiles.yaml"
        known = yaml.safe_load(target.read_text(encoding="utf-8"))
        target.write_text(yaml.safe_dump({**known, **profiles}, sort_keys=False))
    folder = paths.raw_dir("livec", base=root) / "Images"
    folder.mkdir(parents=True)
    rows = []
    for photo in real_images(images):
        shutil.copy(photo, folder / photo.name)
        rows.append((photo.name, (folder / photo.name).relative_to(root).as_posix()))
    write_labels(root, rows)
    write_study_params(root, declared)
    run(root, "git", "init", "-q")
    commit(root, "a small study")
    return root


def write_study_params(root: Path, declared: dict[str, dict[str, Any]]) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["runs"] = declared
    params["run_datasets"] = runs.stage_items(runs.declared(params))
    params["sample"]["size"] = 0
    params["evaluate"]["bootstrap_samples"] = 0
    params["evaluate"]["logistic"] = False  # a 4-parameter fit needs more than a few images
    params["score"]["classical"]["scorer"] = "piqe"
    params["report"]["notebooks"]["06_cpu_mixgrained"]["bootstrap_samples"] = 20
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def run_outputs(root: Path, run_name: str) -> dict[str, tuple[int, bytes]]:
    """Every file of a run (its stage outputs and caches): modification time and bytes."""
    folders = [paths.at(folder / run_name, root) for folder in paths.STAGE_DIRS.values()]
    cached = ("segment", "count_regions", "score")
    folders += [paths.at(paths.CACHE / stage / run_name, root) for stage in cached]
    found = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if path.is_file():
                found[path.relative_to(root).as_posix()] = (
                    path.stat().st_mtime_ns,
                    path.read_bytes(),
                )
    return found
