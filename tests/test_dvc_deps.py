"""The stages' code deps in dvc.yaml: generated from their imports, and complete.

``dogiqa.dvcdeps`` derives each stage's code from its command (and a report stage's notebook);
these tests check that dvc.yaml lists exactly that code, that a missing entry is caught and
rewritten, and (slow) that DVC itself flags every stage that imports a changed module, with the
importing stages found by Python's own import system rather than by ``dvcdeps``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dogiqa import dvcdeps

ROOT = Path(__file__).resolve().parents[1]


def _copy_project(target: Path, *names: str) -> Path:
    for name in names:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target / name)
    return target


def _without(text: str, dep: str, count: int = 0) -> str:
    """dvc.yaml's text without the list entries ``- dep`` (the first ``count``, or all)."""
    return re.sub(rf"^ *- {re.escape(dep)}\n", "", text, count=count, flags=re.MULTILINE)


def _stage_deps(root: Path) -> dict[str, list[str]]:
    document = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    return {name: body.get("do", body).get("deps", []) for name, body in document["stages"].items()}


def test_dvc_yaml_lists_the_code_of_every_stage() -> None:
    assert dvcdeps.problems(ROOT) == []


def test_closure_follows_registries_lazy_imports_and_nothing_else() -> None:
    score = dvcdeps.closure({"dogiqa.score"})
    # The backend registry names its modules; hf imports the model registry inside its module.
    assert {"dogiqa.scoring.classical", "dogiqa.scoring.hf", "dogiqa.scoring.models"} <= score
    assert "dogiqa.scoring" in score  # the package that holds them runs first
    assert "dogiqa.metrics" not in score
    aggregate = dvcdeps.closure({"dogiqa.aggregate"})
    assert "dogiqa.scoring" not in aggregate and "dogiqa.io" in aggregate


def test_the_dispatcher_adds_only_its_own_imports() -> None:
    entry = dvcdeps.closure({dvcdeps.ENTRY})
    assert {"dogiqa.__main__", "dogiqa.cli", "dogiqa.config", "dogiqa.paths"} <= entry
    assert "dogiqa.score" not in entry  # named in the command table, run only by `score`


def test_report_stages_include_their_notebook_imports() -> None:
    deps = dvcdeps.code_deps("python -m dogiqa report --notebook 06_cpu_mixgrained", ROOT)
    assert deps[0] == "notebooks/06_cpu_mixgrained.ipynb"
    assert {"src/dogiqa/metrics.py", "src/dogiqa/report.py", "src/dogiqa/results.py"} <= set(deps)
    assert "src/dogiqa/resources/paper_tables.yaml" in deps  # read by dogiqa.paper
    assert dvcdeps.code_deps("python -m dvc --version", ROOT) is None


def test_a_missing_code_dep_is_named_and_rewritten(tmp_path: Path) -> None:
    root = _copy_project(tmp_path, "dvc.yaml", "notebooks")
    original = (root / "dvc.yaml").read_text(encoding="utf-8")
    importers = [n for n, deps in _stage_deps(root).items() if "src/dogiqa/metrics.py" in deps]
    assert {"evaluate", "report_main_results", "report_ablations"} <= set(importers)
    (root / "dvc.yaml").write_text(_without(original, "src/dogiqa/metrics.py"))
    found = dvcdeps.problems(root)
    assert sorted(line.split(":")[0] for line in found) == sorted(importers)
    assert all("deps lack src/dogiqa/metrics.py" in line for line in found)

    assert dvcdeps.rewrite(root) == len(importers)
    assert dvcdeps.problems(root) == []
    assert (root / "dvc.yaml").read_text(encoding="utf-8") == original  # comments, data deps kept


def test_cli_check_fails_on_a_stale_dvc_yaml(tmp_path: Path) -> None:
    root = _copy_project(tmp_path, "dvc.yaml", "notebooks", "params.yaml")
    text = (root / "dvc.yaml").read_text(encoding="utf-8")
    (root / "dvc.yaml").write_text(_without(text, "src/dogiqa/schema.py", count=1))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "dogiqa", "dvc-deps", "--check"]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "deps lack src/dogiqa/schema.py" in result.stdout


# --- DVC's own view: appending a comment flags every importing stage ----------------------------

PROBE = """
import importlib, json, sys
from dogiqa import cli, dvcdeps
from dogiqa.paths import notebook
command, name = sys.argv[1], sys.argv[2]
importlib.import_module(cli.COMMANDS[command].module)
if name:
    for module in sorted(dvcdeps.notebook_imports(notebook(name))):
        importlib.import_module(module)
print(json.dumps(sorted(m for m in sys.modules if m == "dogiqa" or m.startswith("dogiqa."))))
"""


def _imported_at_runtime(root: Path, cmd: str) -> set[str]:
    """The package's modules a stage's command has imported once its module (and its notebook's
    imports) are loaded: Python's import system, not dvcdeps' reading of the source."""
    words = cmd.split()
    command = next(w for w in words[3:] if not w.startswith("--"))
    name = words[words.index("--notebook") + 1] if "--notebook" in words else ""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, command, name],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(result.stdout))


def _foreach_items(params: dict, foreach: str) -> object:
    """What a ``foreach: ${dotted.key}`` iterates over, looked up in params.yaml."""
    node = params
    for key in foreach.strip().removeprefix("${").removesuffix("}").split("."):
        node = node[key]
    return node


@pytest.mark.slow
def test_appending_a_comment_flags_every_importing_stage(tmp_path: Path) -> None:
    root = _copy_project(
        tmp_path, "dvc.yaml", "dvc.lock", "params.yaml", ".dvc", ".dvcignore", "src", "notebooks"
    )
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(root / "src")}
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    document = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    runtime = {}
    for name, body in document["stages"].items():
        if "foreach" in body and not _foreach_items(params, body["foreach"]):
            continue  # no stage in the DAG (compare and rank while no run compares)
        cmd = body.get("do", body)["cmd"]
        runtime[name] = _imported_at_runtime(root, cmd) if "python -m dogiqa" in cmd else set()
    modules = ("metrics", "io", "evaluate")
    for module in modules:
        with (root / "src" / "dogiqa" / f"{module}.py").open("a", encoding="utf-8") as handle:
            handle.write("# an appended comment\n")
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    changed = json.loads(status.stdout)
    for module in modules:
        path = f"src/dogiqa/{module}.py"
        flagged = {
            stage.split("@")[0]
            for stage, reasons in changed.items()
            for reason in reasons
            if isinstance(reason, dict) and path in reason.get("changed deps", {})
        }
        importers = {name for name, imported in runtime.items() if f"dogiqa.{module}" in imported}
        assert importers, module
        assert flagged == importers, module
