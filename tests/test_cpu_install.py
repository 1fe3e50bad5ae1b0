"""The default CPU configuration installs and runs without the MLLM and SAM 2 extras.

``make repro`` installs the package without extras (pyproject ``dependencies``); torch,
transformers, SAM 2 and the openai client come only with ``[mllm]``, ``[sam2]`` and ``[test]``.
Here every module the CPU path runs is imported, and ``score-image`` and ``check-params`` run
with the default configuration, in a subprocess where those packages cannot be imported (every
import finder is blind to them, as where they are not installed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from dogiqa import dvcdeps
from dogiqa.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
EXTRAS_ONLY = ("torch", "torchvision", "transformers", "tokenizers", "accelerate", "sam2")
EXTRAS_ONLY += ("hydra", "iopath", "openai", "httpx", "playwright", "pytest")
"""Top-level modules that only the extras install (the CPU path must not import them)."""
GPU_MODULES = ("dogiqa.scoring.hf", "dogiqa.scoring.openai_backend")
GPU_MODULES += ("dogiqa.segmentation.sam2_backend",)

# Every finder of sys.meta_path, blind to the extras' packages: ``import torch`` raises
# ModuleNotFoundError and importlib.util.find_spec("torch") returns None, as where torch is not
# installed (a finder that raised instead would differ from that for find_spec, which
# lazy_loader.load calls; None in sys.modules would differ for scipy, which reads sys.modules).
BLOCKER = """
import runpy, sys
BLOCKED = set({blocked!r})

class CpuOnly:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return self.finder.find_spec(name, path, target)

    def invalidate_caches(self):
        getattr(self.finder, "invalidate_caches", lambda: None)()

sys.meta_path[:] = [CpuOnly(finder) for finder in sys.meta_path]
"""


def run_without_extras(code: str, cwd: Path) -> subprocess.CompletedProcess:
    script = BLOCKER.format(blocked=EXTRAS_ONLY) + code
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def cpu_modules() -> list[str]:
    """Every command's module and every module a report notebook imports, except the MLLM and
    SAM 2 backends (imported only when params choose them)."""
    modules = {command.module for command in COMMANDS.values()}
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        modules |= dvcdeps.notebook_imports(notebook)
    return sorted(m for m in modules if m not in GPU_MODULES)


def test_base_dependencies_leave_out_torch_transformers_and_sam2() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base = {Requirement(spec).name.lower() for spec in project["dependencies"]}
    assert base.isdisjoint({"torch", "torchvision", "transformers", "sam2", "openai"})
    extras = project["optional-dependencies"]
    mllm = {Requirement(spec).name.lower() for spec in extras["mllm"]}
    assert {"torch", "transformers"} <= mllm
    assert "torch" in {Requirement(spec).name.lower() for spec in extras["sam2"]}
    assert "dogiqa[mllm,sam2]" in extras["test"]  # the test install has everything


def test_cpu_modules_import_without_the_extras(tmp_path: Path) -> None:
    modules = cpu_modules()
    assert "dogiqa.score" in modules and "dogiqa.segment" in modules
    code = f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
    code += "import dogiqa.scoring.classical, dogiqa.segmentation.classical\nprint('ok')\n"
    result = run_without_extras(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_blocker_stands_for_a_missing_package(tmp_path: Path) -> None:
    """The blocker really refuses: torch cannot be imported, and find_spec finds nothing (as
    where it is not installed); the MLLM backend imports, but scoring with it needs torch."""
    code = "import importlib.util\nassert importlib.util.find_spec('torch') is None\n"
    code += "import dogiqa.scoring.hf as hf\nhf.pick_device('auto')\n"
    result = run_without_extras(code, tmp_path)
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr and "torch" in result.stderr


@pytest.mark.slow
def test_default_configuration_scores_and_checks_without_the_extras(
    fixtures: Path, tmp_path: Path
) -> None:
    image = fixtures / "images" / "scene1.png"
    code = f"sys.argv = ['dogiqa', 'score-image', {str(image)!r}]\n"
    code += "try:\n    runpy.run_module('dogiqa', run_name='__main__')\n"
    code += "except SystemExit as exc:\n    sys.exit(exc.code)\n"
    result = run_without_extras(code, tmp_path)  # outside the project: packaged configuration
    assert result.returncode == 0, result.stderr
    assert "final score (paper:argmax)" in result.stdout
    check = "sys.argv = ['dogiqa', 'check-params']\n"
    check += "runpy.run_module('dogiqa', run_name='__main__')\n"
    result = run_without_extras(check, ROOT)
    assert result.returncode == 0, result.stderr
    assert "every stage's params are valid" in result.stdout


def test_the_mllm_backend_without_torch_is_refused_in_one_line(tmp_path: Path) -> None:
    """Params that choose the hf backend pass their checks without torch; scoring with them is
    refused with one line naming the extra, not a traceback from inside the backend."""
    code = "from dogiqa import prompts\nfrom dogiqa.errors import DogIQAError\n"
    code += "from dogiqa.scoring import hf\n"
    code += "prompt = next(p for p in map(prompts.get, prompts.prompt_ids()) if p.K == 7)\n"
    code += "try:\n    hf.HFScorer.from_params({'model': 'x'}, prompt.id, 7, 'logits')\n"
    code += "except DogIQAError as exc:\n    print(exc)\n"
    result = run_without_extras(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "install the mllm extra" in result.stdout
