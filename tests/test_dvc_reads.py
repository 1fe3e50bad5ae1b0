"""Every file a stage reads is covered by its deps: ``dvc repro`` of a small copy of the study with
an audit hook in every process of every stage.

``sys.addaudithook`` (installed from a ``sitecustomize`` module on PYTHONPATH, so that it reaches
the stage commands, their worker processes and the notebooks' kernels, which inherit the
environment) records each file a process opens, with ``DVC_STAGE``, the variable DVC sets for a
stage's command (dvc/stage/run.py, ``prepare_kwargs``). Python's imports open the sources (or
their cached bytecode) the same way, so the code a stage runs is checked together with its data.
A read is covered when dvc.lock lists the file, or a folder holding it, among the stage's deps.
Not deps by design: the stage's own outputs and the files it wrote itself (the download stage
verifies what it fetched), its per-image cache (``data/cache``), params files (params.yaml and
the profiles file, whose entries are the stage's param deps), and files outside the project (the
mirror, the environment).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from stage_project import one_run

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

SITECUSTOMIZE = """
import os
import sys

_LOG = os.environ.get("DOGIQA_AUDIT_LOG")
_STAGE = os.environ.get("DVC_STAGE")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _install():
    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # before the hook: no recursion

    def record(kind, path):
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if isinstance(path, (str, os.PathLike)):
            path = os.path.abspath(os.fspath(path))
            os.write(fd, f"{_STAGE}\\t{kind}\\t{path}\\n".encode())

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if mode is None and not os.path.isabs(path) and not os.path.exists(path):
                return  # os.open relative to a dir_fd, which the event does not carry (rmtree)
            if isinstance(mode, str):
                writes = any(c in mode for c in "wax+")
            else:
                writes = bool((flags or 0) & _WRITE_FLAGS)
            record("write" if writes else "read", path)
        elif event == "os.rename":
            record("write", args[1])

    sys.addaudithook(hook)


if _LOG and _STAGE:
    _install()
"""

SMALL = {
    **one_run(["livec"]),  # every label set (Table 1), the images of LIVE Challenge
    "sample": {"size": 4},
    "evaluate": {"bootstrap_samples": 0},
    "score": {"classical": {"scorer": "piqe"}},
    "report": {
        "notebooks": {
            "03_ablations": {"qbench_datasets": ["livec"]},
            "06_cpu_mixgrained": {"bootstrap_samples": 20},
        }
    },
}
"""Changes to params.yaml for a run of a few minutes: four LIVE Challenge images."""


def _merge(base: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and key not in ("runs", "run_datasets"):
            _merge(base[key], value)
        else:
            base[key] = value


def _small_project(root: Path) -> None:
    for name in ("dvc.yaml", ".dvcignore", "README.md"):  # README: the site's front page
        shutil.copy(ROOT / name, root / name)
    for name in ("src", "notebooks", "reports/bench"):  # bench: measured outside the pipeline
        # Not the editable install's metadata (src/*.egg-info): a fresh checkout has none until
        # ``pip install -e`` writes it, and no stage reads it through the project.
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
        shutil.copytree(ROOT / name, root / name, ignore=ignore)
    (root / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", root / ".dvc" / "config")
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    _merge(params, SMALL)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def _source_of(path: str) -> str:
    """``src/x/__pycache__/m.cpython-311.pyc`` -> ``src/x/m.py`` (the import read the source's
    cached bytecode)."""
    parts = Path(path)
    if parts.parent.name == "__pycache__" and parts.suffix == ".pyc":
        return (parts.parent.parent / f"{parts.name.split('.')[0]}.py").as_posix()
    return path


def _covered(path: str, entries: list[str]) -> bool:
    return any(path == e or path.startswith(e.rstrip("/") + "/") for e in entries)


def test_every_file_a_stage_reads_is_a_dep(tmp_path: Path, mirror: Path) -> None:
    root = tmp_path / "study"
    root.mkdir()
    _small_project(root)
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    log = tmp_path / "opened.tsv"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": f"{audit}{os.pathsep}{root / 'src'}",
        "DOGIQA_MIRROR": str(mirror),
        "DOGIQA_AUDIT_LOG": str(log),
        "DVC_NO_ANALYTICS": "1",
    }
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    reads: dict[str, set[str]] = defaultdict(set)
    written: dict[str, set[str]] = defaultdict(set)
    for line in log.read_text(encoding="utf-8").splitlines():
        stage, kind, path = line.split("\t")
        if not Path(path).is_relative_to(root) or Path(path).is_dir():
            continue  # outside the project, or a folder opened to list it
        relative = _source_of(Path(path).relative_to(root).as_posix())
        (written if kind == "write" else reads)[stage].add(relative)
    assert set(reads) == set(lock), "the hook did not reach every stage"
    # It sees imports and a kernel's reads (notebook 01 reads a raw label file of AGIQA-3k).
    assert "src/dogiqa/metrics.py" in reads["evaluate@cpu-livec"]
    assert "data/raw/agiqa/data.csv" in reads["report_upper_bound"]

    uncovered = {}
    for stage, files in reads.items():
        deps = [d["path"] for d in lock[stage].get("deps", [])]
        outs = [o["path"] for o in lock[stage].get("outs", [])]
        params_files = list(lock[stage].get("params", {}))  # params.yaml, profiles.yaml
        ignored = [*outs, "data/cache", *params_files]
        missing = sorted(
            f
            for f in files - written[stage]
            if not _covered(f, deps) and not _covered(f, ignored) and ".tmp." not in f
        )
        if missing:
            uncovered[stage] = missing
    assert uncovered == {}
